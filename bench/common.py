"""Shared helpers for the benchmarks: fresh databases on each engine, timing, the result table."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from erpsync.dialects import dialect_for

SERVERS = {
    "mariadb": os.environ.get("ERPSYNC_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306"),
    "postgresql": os.environ.get("ERPSYNC_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432"),
}
T = TypeVar("T")


@contextmanager
def scratch_database(engine: str) -> Iterator[str]:
    """A new empty database on ``engine`` (a temporary SQLite file, or a server database), dropped after."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield str(Path(folder) / "bench.sqlite")
        return
    url = make_url(SERVERS[engine])
    dialect = dialect_for(url)
    url = dialect.normalize_url(url).set(database=f"erpsync_bench_{uuid.uuid4().hex[:8]}")
    admin = create_engine(dialect.maintenance_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        dialect.create_database(conn, str(url.database))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            dialect.drop_database(conn, str(url.database))
        admin.dispose()


def timed(action: Callable[..., T], *args: Any) -> tuple[float, T]:
    """Seconds ``action(*args)`` took, and what it returned."""
    started = time.perf_counter()
    result = action(*args)
    return time.perf_counter() - started, result


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """The benchmark's results as a table on stdout (Markdown-friendly when piped)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)

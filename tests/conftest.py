"""Fixtures: a fresh, uniquely named database on SQLite, MariaDB and PostgreSQL.

Server URLs come from ERPSYNC_TEST_MARIADB and ERPSYNC_TEST_POSTGRESQL
(defaults: the local services). An unreachable server skips its tests, except
under CI=true, where it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from erpsync.db import Database, open_database
from erpsync.dialects import Dialect, dialect_for
from erpsync.i18n import set_language
from erpsync.schema import init_schema

ENGINES = ("sqlite", "mariadb", "postgresql")
SERVERS = {
    "mariadb": os.environ.get("ERPSYNC_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306"),
    "postgresql": os.environ.get("ERPSYNC_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432"),
}
_reachable: dict[str, str | None] = {}


@pytest.fixture(autouse=True)
def _language_reset() -> Iterator[None]:
    """A test's ``--lang`` does not leak into the next test run by the same worker."""
    yield
    set_language(None)


def server_url(engine: str) -> URL:
    """The test server of ``engine``, without a database, normalized by its dialect."""
    url = make_url(SERVERS[engine])
    return dialect_for(url).normalize_url(url)


def _require_server(engine: str) -> None:
    if engine not in _reachable:
        url = server_url(engine)
        dialect = dialect_for(url)
        try:
            engine_ = dialect.create_engine(dialect.maintenance_url(url))
            with engine_.connect():
                pass
            engine_.dispose()
            _reachable[engine] = None
        except OperationalError as exc:
            _reachable[engine] = str(exc.orig).splitlines()[0]
    problem = _reachable[engine]
    if problem is not None:
        message = f"{engine} test server {SERVERS[engine]} unreachable: {problem}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def _admin(url: URL) -> Iterator[tuple[Dialect, Connection]]:
    dialect = dialect_for(url)
    admin = create_engine(dialect.maintenance_url(url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield dialect, conn
    finally:
        admin.dispose()


def drop_database(url: URL) -> None:
    """Drop the server database ``url`` names."""
    with _admin(url) as (dialect, conn):
        dialect.drop_database(conn, str(url.database))


@contextmanager
def fresh_database(engine: str, tmp_path: Path) -> Iterator[str]:
    """An empty, uniquely named database for ``engine``: its URL, or its file path for SQLite."""
    if engine == "sqlite":
        yield str(tmp_path / f"erp-{uuid.uuid4().hex[:8]}.sqlite")
        return
    _require_server(engine)
    url = server_url(engine).set(database=f"erpsync_test_{uuid.uuid4().hex[:12]}")
    with _admin(url) as (dialect, conn):
        dialect.create_database(conn, str(url.database))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        drop_database(url)


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[Database]:
    """A fresh MariaDB database, for what only MariaDB has (its server modes, its temporary tables)."""
    with fresh_database("mariadb", tmp_path) as url, open_database(url, create=True) as database:
        yield database


@pytest.fixture
def postgresql(tmp_path: Path) -> Iterator[Database]:
    """A fresh PostgreSQL database, for what only PostgreSQL has (its types, its planner)."""
    with fresh_database("postgresql", tmp_path) as url, open_database(url, create=True) as database:
        yield database


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each test that uses a database runs once per engine."""
    return str(request.param)


@pytest.fixture
def db_url(engine_name: str, tmp_path: Path) -> Iterator[str]:
    """The URL (or, for SQLite, the file path) of a fresh empty database."""
    with fresh_database(engine_name, tmp_path) as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A fresh empty database, open."""
    with open_database(db_url, create=True) as database:
        yield database


@pytest.fixture
def erp_db(db: Database) -> Database:
    """A fresh database holding the empty reference schema."""
    init_schema(db)
    return db

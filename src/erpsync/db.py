"""Opening a database named by a URL or a file path, with errors users can act on.

Every command that works on a database takes it the same way: a SQLAlchemy URL
(``sqlite:///…``, ``mysql+pymysql://…``, ``postgresql+psycopg://…``) or a plain
file path, which means SQLite.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from os import PathLike, fspath
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from erpsync.dialects import Dialect, dialect_for
from erpsync.errors import BadUrl, DatabaseNotFound, ErpSyncError

T = TypeVar("T")

URL_HINT = (
    "write sqlite:///path/to/file.db, a plain file path, mysql+pymysql://user:password@host/db "
    "or postgresql+psycopg://user@host/db"
)


Target = str | PathLike[str] | URL
"""A database as callers name it: a URL (string or SQLAlchemy ``URL``) or a SQLite file path."""


def parse_url(target: Target) -> URL:
    """A SQLAlchemy URL for ``target``: a URL as given, or a file path as SQLite."""
    if isinstance(target, URL):
        return target
    if isinstance(target, PathLike):
        target = fspath(target)
    if "://" not in target:
        if not target.strip():
            raise BadUrl(
                "{url} is not a database URL or a file path: {reason}", URL_HINT, url="''", reason="empty"
            )
        return URL.create("sqlite", database=str(Path(target).expanduser()))
    try:
        url = make_url(target)
        _ = url.port  # a non-numeric port fails here rather than at connect time
        return url
    except (ArgumentError, ValueError) as exc:
        raise BadUrl(
            "{url} is not a database URL or a file path: {reason}",
            URL_HINT,
            url=target,
            reason=str(exc).splitlines()[0],
        ) from None


def display(url: URL) -> str:
    """How a database is named in messages: the file path, or the URL without password."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


class Database:
    """An open database: its URL, its dialect and a SQLAlchemy engine.

    Use ``connect()`` to read and ``begin()`` to write: both turn driver errors
    into ``ErpSyncError``s, and ``begin()`` commits only if the block succeeds.
    """

    def __init__(self, url: URL, dialect: Dialect, engine: Engine) -> None:
        self.url = url
        self.dialect = dialect
        self.engine = engine

    @property
    def name(self) -> str:
        """The database as shown to users (no password)."""
        return display(self.url)

    def quote(self, identifier: str) -> str:
        """The one quoting helper: ``identifier`` quoted for this engine if it needs it."""
        return self.engine.dialect.identifier_preparer.quote(identifier)

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn driver errors raised inside the block into one-line ``ErpSyncError``s."""
        try:
            yield
        except DBAPIError as exc:
            raise self.dialect.translate_error(exc, self.url) from exc

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reading (a transaction is begun on first use and rolled back)."""
        with self.translate_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed if the block succeeds, else rolled back.

        On SQLite the transaction takes the write lock at once (BEGIN IMMEDIATE),
        waiting up to 30 s for another program's write to finish.
        """
        with self.translate_errors(), self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    def run_transaction(self, work: Callable[[Connection], T], attempts: int = 5) -> T:
        """``work(conn)`` in a transaction, run again if the engine aborted it to break a deadlock.

        InnoDB and PostgreSQL abort one of two transactions that wait on each
        other and ask for it to be restarted; ``work`` must do nothing outside
        the transaction, so running it again is safe.
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.begin() as conn:
                    return work(conn)
            except ErpSyncError as exc:
                cause = exc.__cause__
                if attempt == attempts or not (
                    isinstance(cause, DBAPIError) and self.dialect.is_retryable(cause)
                ):
                    raise
                time.sleep(random.uniform(0.02, 0.1) * attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.name!r})"


def open_database(target: Target, *, create: bool = False) -> Database:
    """Open the database named by ``target`` and check that it answers.

    A SQLite file must exist unless ``create`` is true (then its folder must).
    Raises ``BadUrl``, ``DatabaseNotFound``, ``ConnectionFailed`` or
    ``AuthenticationFailed`` with a hint, before anything is written.
    """
    raw = parse_url(target)
    dialect = dialect_for(raw)
    url = dialect.normalize_url(raw)
    if not dialect.is_server:
        _check_sqlite_path(url, create=create)
    elif not url.database:
        raise BadUrl(
            "{url} is not a database URL or a file path: {reason}",
            "add the database name at the end of the URL, e.g. {example}",
            url=display(url),
            reason="the URL names no database",
            example=display(url.set(database="erp")),
        )
    try:
        engine = dialect.create_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise BadUrl(
            "{url} is not a database URL or a file path: {reason}",
            URL_HINT,
            url=display(url),
            reason=str(exc).splitlines()[0],
        ) from None
    db = Database(url, dialect, engine)
    try:
        with db.connect() as conn:
            conn.execute(text("SELECT 1" if dialect.is_server else "SELECT count(*) FROM sqlite_master"))
    except BaseException:
        engine.dispose()
        raise
    return db


def _check_sqlite_path(url: URL, *, create: bool) -> None:
    path = url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    file = Path(path)
    if file.is_file():
        return
    if file.exists():
        raise DatabaseNotFound(
            "cannot open SQLite database {path}: {reason}",
            "check that the file is a SQLite database and that you may read and write it",
            path=path,
            reason="not a file",
        )
    if not create:
        raise DatabaseNotFound(
            "SQLite database file {path} does not exist",
            "check the path, or create the database with: erpsync db init {path}",
            path=path,
        )
    if not file.parent.is_dir():
        raise DatabaseNotFound(
            "folder {path} does not exist",
            "create the folder first, or choose another path",
            path=str(file.parent),
        )


def create_server_database(target: Target) -> bool:
    """Create the MariaDB or PostgreSQL database ``target`` names, if it is missing.

    Returns True if it was created. SQLite files are created by ``open_database``.
    """
    url = parse_url(target)
    dialect = dialect_for(url)
    url = dialect.normalize_url(url)
    if not dialect.is_server or not url.database:
        return False
    try:
        open_database(url).close()
        return False
    except DatabaseNotFound:
        pass
    server = Database(url, dialect, dialect.create_engine(dialect.maintenance_url(url)))
    with server, server.translate_errors(), server.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        dialect.create_database(conn, url.database)
    return True

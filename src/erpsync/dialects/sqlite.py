"""SQLite: the office PCs' embedded database."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import Engine, String, create_engine, event, func
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from erpsync.dialects.base import Dialect, first_line
from erpsync.errors import DatabaseError, ErpSyncError

# The driver has no adapter for Decimal; text keeps the exact value and SQLite's
# NUMERIC affinity stores it as a number.
sqlite3.register_adapter(Decimal, str)


class SQLite(Dialect):
    """SQLite through the standard library's sqlite3 module."""

    name = "sqlite"
    label = "SQLite"
    backends = ("sqlite",)
    driver = "sqlite+pysqlite"
    is_server = False
    paramstyle_mark: ClassVar[str] = "?"

    def create_engine(self, url: URL) -> Engine:
        """An engine whose transactions really are transactions.

        pysqlite's own transaction handling defers BEGIN and commits before DDL;
        erpsync turns it off and emits BEGIN itself (the recipe of SQLAlchemy's
        documentation), enables foreign keys and waits for a busy database
        instead of failing at once while the ERP writes.
        """
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA foreign_keys = ON")

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine

    def zero_pad(self, number: ColumnElement[Any], width: int) -> ColumnElement[str]:
        return func.printf(f"%0{width}d", number, type_=String)

    def translate_error(self, exc: DBAPIError, url: URL) -> ErpSyncError:
        reason = first_line(exc.orig)
        if "not a database" in reason or "unable to open" in reason:
            return DatabaseError(
                "cannot open SQLite database {path}: {reason}",
                "check that the file is a SQLite database and that you may read and write it",
                path=url.database,
                reason=reason,
            )
        return super().translate_error(exc, url)

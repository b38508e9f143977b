"""SQLite: the office PCs' embedded database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from itertools import chain
from typing import Any, ClassVar

from sqlalchemy import Engine, String, Table, create_engine, event, func
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from erpsync.dialects.base import Dialect, column_list, execute_many, first_line
from erpsync.errors import DatabaseError, ErpSyncError

# The driver has no adapter for Decimal; text keeps the exact value and SQLite's
# NUMERIC affinity stores it as a number.
sqlite3.register_adapter(Decimal, str)
# Explicit ISO adapters (Python 3.12 deprecates the implicit ones), in SQLAlchemy's own layout.
sqlite3.register_adapter(datetime, lambda value: value.isoformat(sep=" "))
sqlite3.register_adapter(date, lambda value: value.isoformat())


class SQLite(Dialect):
    """SQLite through the standard library's sqlite3 module."""

    name = "sqlite"
    label = "SQLite"
    backends = ("sqlite",)
    driver = "sqlite+pysqlite"
    is_server = False
    snapshot_isolation = None  # a read transaction already sees one state
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
            # A writer takes the write lock at once: upgrading a read lock later fails with
            # "database is locked" without waiting while another program holds a pending write.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine

    max_values: ClassVar[int] = 999
    """Bound values one statement may hold on any SQLite (999 before 3.32, 32,766 since)."""

    def bulk_insert(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        """Multi-row ``INSERT``s of up to ``max_values`` values, the rest one row a statement.

        ``executemany`` of a one-row ``INSERT`` runs the statement, and lets go
        of the GIL and takes it back, once a row: a few rows a statement make a
        bulk load a third faster.
        """
        batch = list(rows)
        if not batch:
            return 0
        width = len(columns)
        per = max(1, self.max_values // width)
        whole = len(batch) - len(batch) % per
        target = column_list(conn, table, columns)
        if whole:
            values = list(chain.from_iterable(batch[:whole]))
            row = f"({', '.join([self.paramstyle_mark] * width)})"
            sql = f"INSERT INTO {target} VALUES {', '.join([row] * per)}"
            execute_many(conn, sql, [values[i : i + per * width] for i in range(0, len(values), per * width)])
        if whole < len(batch):
            execute_many(conn, self.insert_sql(target, width), batch[whole:])
        return len(batch)

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

    # -- sync: change capture (issue 5) -----------------------------------------------------

    def gid_sql(self, prefix: str, number: str) -> str:
        return f"{prefix} || printf('%016x', {number})"

    def install_capture(
        self,
        conn: Connection,
        number: int,
        table: str,
        keys: Sequence[str],
        columns: Sequence[tuple[str, bool]],
    ) -> None:
        """Row triggers; a separate one logs the old key when an UPDATE changes the key."""
        q = conn.dialect.identifier_preparer.quote
        wall = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
        key_columns = ", ".join(f"k{i}" for i in range(len(keys)))
        insert = f"INSERT INTO erpsync_l{number} (m, w, {key_columns}) VALUES"
        new, old = (", ".join(f"{side}.{q(k)}" for k in keys) for side in ("NEW", "OLD"))
        mask = " | ".join(
            f"((OLD.{q(c)} IS NOT NEW.{q(c)}) << {min(i, 62)})" for i, (c, _) in enumerate(columns)
        )
        key_changed = " OR ".join(f"OLD.{q(k)} IS NOT NEW.{q(k)}" for k in keys)
        self.remove_capture(conn, number, table)
        on = q(table)
        for sql in (
            f"CREATE TRIGGER erpsync_{number}_i AFTER INSERT ON {on} BEGIN {insert} (-1, {wall}, {new}); END",
            f"CREATE TRIGGER erpsync_{number}_u AFTER UPDATE ON {on} BEGIN {insert} "
            f"(CASE WHEN {key_changed} THEN -1 ELSE {mask or 0} END, {wall}, {new}); END",
            f"CREATE TRIGGER erpsync_{number}_k AFTER UPDATE OF {', '.join(q(k) for k in keys)} ON {on} "
            f"WHEN {key_changed} BEGIN {insert} (-2, {wall}, {old}); END",
            f"CREATE TRIGGER erpsync_{number}_d AFTER DELETE ON {on} BEGIN {insert} (-2, {wall}, {old}); END",
        ):
            conn.exec_driver_sql(sql)

    def remove_capture(self, conn: Connection, number: int, table: str) -> None:
        for suffix in "iukd":
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS erpsync_{number}_{suffix}")

    def mute_capture(self, conn: Connection, number: int | None = None) -> None:
        """Drop the capture triggers inside the transaction; ``unmute_capture`` recreates them.

        The transaction holds SQLite's write lock from its first write to its
        commit, so no other program can write while the triggers are away, and a
        rollback brings them back with everything else.
        """
        pattern = f"erpsync_{number}_[iukd]" if number is not None else "erpsync_[0-9]*_[iukd]"
        rows = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name GLOB ?", (pattern,)
        ).all()
        for name, _ in rows:
            conn.exec_driver_sql(f"DROP TRIGGER {conn.dialect.identifier_preparer.quote(name)}")
        conn.info["erpsync_muted"] = [sql for _, sql in rows]

    def unmute_capture(self, conn: Connection) -> None:
        for sql in conn.info.pop("erpsync_muted", []):
            conn.exec_driver_sql(sql)

    def catalog_rows(self, conn: Connection, tables: Sequence[str]) -> list[tuple[Any, ...]]:
        marks = ", ".join("?" for _ in tables)
        rows = conn.exec_driver_sql(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'table' AND lower(name) IN ({marks}) "
            "ORDER BY name",
            tuple(t.lower() for t in tables),
        )
        return [tuple(row) for row in rows]

    def unique_keys(self, conn: Connection, table: str) -> list[tuple[str, ...]]:
        """From ``PRAGMA index_list``: SQLAlchemy misses the unnamed ``UNIQUE`` of a column."""
        q = conn.dialect.identifier_preparer.quote
        found: list[tuple[str, ...]] = []
        for row in conn.exec_driver_sql(f"PRAGMA index_list({q(table)})").all():
            if row[2] and row[3] != "pk" and not row[4]:
                info = conn.exec_driver_sql(f"PRAGMA index_info({q(row[1])})").all()
                if all(r[2] is not None for r in info):
                    found.append(tuple(r[2] for r in sorted(info)))
        return list(dict.fromkeys(found))

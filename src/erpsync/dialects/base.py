"""The interface every engine implements, with the behaviour they share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    Select,
    String,
    Subquery,
    Table,
    cast,
    create_engine,
    func,
    literal,
    select,
)
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import ReflectedColumn
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ColumnElement

from erpsync.errors import DatabaseError, ErpSyncError

UPDATE_TABLE = "erpsync_update"
"""The temporary table of ``joined_update``."""
JOINED_UPDATES = "erpsync_joined_updates"
"""Whether the connection's server allows ``joined_update`` (``Connection.info``)."""


class Dialect:
    """One database engine: URL handling, connection setup, bulk paths and error wording."""

    name: ClassVar[str]
    label: ClassVar[str]
    backends: ClassVar[tuple[str, ...]]
    driver: ClassVar[str]
    is_server: ClassVar[bool] = True
    snapshot_isolation: ClassVar[str | None] = "REPEATABLE READ"
    """The isolation level under which several SELECTs read one consistent state."""

    def normalize_url(self, url: URL) -> URL:
        """The URL with erpsync's driver and options (``mysql://`` → ``mysql+pymysql://``)."""
        return url.set(drivername=self.driver)

    def engine_options(self) -> dict[str, Any]:
        """Extra keyword arguments for ``create_engine``."""
        return {}

    def create_engine(self, url: URL) -> Engine:
        """An engine for ``url`` with the per-connection setup this engine needs."""
        return create_engine(url, **self.engine_options())

    def fold(self, name: str) -> str:
        """How the engine stores an unquoted identifier (PostgreSQL lowers it)."""
        return name

    def table_options(self) -> dict[str, Any]:
        """Keyword arguments for ``sqlalchemy.Table`` (storage engine, charset)."""
        return {}

    def bulk_insert(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        """Insert ``rows`` (tuples in the order of the column keys ``columns``) the fastest way.

        The default is the DB-API ``executemany``; returns the number of rows.
        """
        batch = list(rows)
        if not batch:
            return 0
        execute_many(conn, self.insert_sql(column_list(conn, table, columns), len(columns)), batch)
        return len(batch)

    paramstyle_mark: ClassVar[str] = "%s"

    def insert_sql(self, target: str, count: int) -> str:
        """An INSERT of one row of ``count`` bound values into ``target`` (``table (col, …)``,
        quoted), the values given taking the place of those the engine would generate."""
        return f"INSERT INTO {target} VALUES ({', '.join([self.paramstyle_mark] * count)})"

    join_update_rows: ClassVar[int | None] = None
    """From how many rows ``bulk_update`` tries ``joined_update`` (``None``: never)."""

    def bulk_update(
        self,
        conn: Connection,
        table: Table,
        where: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Set ``columns`` of the rows of ``table`` found by ``where`` (column names).

        Each row holds the new values of ``columns``, then the values of
        ``where``. On SQLite, in the process, one ``UPDATE`` per row
        (``executemany``) is the fastest. On a server each statement is a round
        trip: many rows go in one ``UPDATE`` joined to them (``joined_update``),
        where the server allows it.
        """
        if self.join_update_rows is not None and len(rows) >= self.join_update_rows:
            # a key listed twice ends with its last values, as with one UPDATE after the other
            latest = list({tuple(row[len(columns) :]): row for row in rows}.values())
            if self.joined_update(conn, table, where, columns, latest):
                return
        quote = conn.dialect.identifier_preparer.quote
        assignments = ", ".join(f"{quote(n)} = {self.paramstyle_mark}" for n in columns)
        condition = " AND ".join(f"{quote(w)} = {self.paramstyle_mark}" for w in where)
        execute_many(conn, f"UPDATE {quote(table.name)} SET {assignments} WHERE {condition}", rows)

    def joined_update(
        self,
        conn: Connection,
        table: Table,
        where: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> bool:
        """``bulk_update`` in one statement (each key listed once); False if the server refuses it,
        having written nothing.

        The rows are loaded into a temporary table by ``bulk_insert`` (the engine's fastest
        load; values convert as they do for new rows), made as ``SELECT … LIMIT 0`` of the
        table: its columns have the table's types, so a text too long is refused, not cut.
        Then one ``UPDATE`` joined to it key to key. A server that refuses the temporary
        table (no right to create one) is noted on the connection and gets one ``UPDATE``
        per row. The first try on a connection is made in a savepoint, so a refusal leaves
        the transaction usable; a deadlock, which ends the whole transaction (savepoint
        included, on MariaDB), is raised as it is, for the batch to be applied again.
        """
        allowed = conn.info.get(JOINED_UPDATES)
        if allowed is False or (allowed is None and not self.allows_joined_updates(conn)):
            conn.info[JOINED_UPDATES] = False
            return False
        quote = conn.dialect.identifier_preparer.quote
        names = [*columns, *where]
        create, update, drop = self.joined_update_sql(
            quote(table.name), [quote(n) for n in where], [quote(n) for n in columns]
        )
        savepoint = conn.begin_nested() if allowed is None else None
        try:
            conn.exec_driver_sql(drop)  # one left by a failed batch (MariaDB's outlive a rollback)
            conn.exec_driver_sql(create)
        except DBAPIError as exc:
            if savepoint is None or self.is_retryable(exc):  # not a refusal (a deadlock ended it all)
                raise
            savepoint.rollback()
            conn.info[JOINED_UPDATES] = False
            return False
        if savepoint is not None:
            savepoint.commit()
            conn.info[JOINED_UPDATES] = True
        temporary = Table(
            UPDATE_TABLE, sa.MetaData(), *[Column(n) for n in names], schema=self.temporary_schema
        )
        self.bulk_insert(conn, temporary, names, rows)
        conn.exec_driver_sql(update)
        conn.exec_driver_sql(drop)
        return True

    temporary_schema: ClassVar[str | None] = None
    """Where the session's temporary tables are, when it can be named (``pg_temp``)."""

    def allows_joined_updates(self, conn: Connection) -> bool:
        """Whether ``joined_update`` may be tried on this connection (checked once per connection)."""
        return True

    def joined_update_sql(self, table: str, where: list[str], columns: list[str]) -> tuple[str, str, str]:
        """``joined_update``'s statements, identifiers quoted: create ``UPDATE_TABLE`` (empty, with
        the ``columns`` and ``where`` of ``table``), update ``table`` from it, drop it if it exists."""
        raise NotImplementedError

    def after_explicit_ids(self, conn: Connection, table: Table) -> None:
        """Make the next generated id follow rows inserted with explicit ids."""

    def reserve_ids(self, conn: Connection, table: Table) -> int:
        """The largest id in use in ``table``, with new inserts by others held off until commit.

        The caller then inserts ids ``max + 1 …`` itself. On SQLite the
        transaction already holds the database's write lock once it has written.
        """
        pk = single_pk(table)
        return int(conn.execute(select(func.coalesce(func.max(pk), 0))).scalar_one())

    def new_ids(self, conn: Connection, table: Table, old: Subquery) -> Select[Any] | None:
        """Fresh ids for the copies of the rows whose ids ``old`` lists: (old_id, new_id), by rank.

        The default reserves the block above the largest id (the caller's
        transaction already holds SQLite's write lock). None means the engine
        numbers an ordered ``INSERT … SELECT`` consecutively itself (see
        ``first_inserted_id``), so the ERP's own inserts can never collide.
        """
        base = self.reserve_ids(conn, table)
        return select(
            old.c.old_id, (literal(base) + func.row_number().over(order_by=old.c.old_id)).label("new_id")
        )

    def first_inserted_id(self, conn: Connection) -> int:
        """The first id the engine gave in the last INSERT on ``conn``."""
        raise NotImplementedError

    def zero_pad(self, number: ColumnElement[Any], width: int) -> ColumnElement[str]:
        """``number`` as text, left-padded with zeros to ``width`` digits (never truncated)."""
        text_ = cast(number, String)
        return func.lpad(text_, func.greatest(width, func.length(text_)), "0", type_=String)

    def analyze(self, conn: Connection, table: Table) -> None:
        """Refresh the planner's statistics of a table that just grew a lot."""

    def is_retryable(self, exc: DBAPIError) -> bool:
        """Whether the engine aborted the transaction to break a deadlock (run it again)."""
        return False

    def translate_error(self, exc: DBAPIError, url: URL) -> ErpSyncError:
        """A one-line, user-facing error for a driver error."""
        return DatabaseError(
            "{engine} error: {reason}",
            engine=self.label,
            reason=first_line(exc.orig),
        )

    # -- server-side databases (unused by SQLite) ------------------------------------------

    def address(self, url: URL) -> str:
        """Where the server is, for messages: ``host:port``."""
        return f"{url.host or 'localhost'}:{url.port or self.default_port}"

    default_port: ClassVar[int] = 0

    def create_database(self, conn: Connection, name: str) -> None:
        """Create the database ``name`` on the server ``conn`` is connected to."""
        conn.exec_driver_sql(f"CREATE DATABASE {conn.dialect.identifier_preparer.quote(name)}")

    def drop_database(self, conn: Connection, name: str) -> None:
        """Drop the database ``name`` if it exists."""
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {conn.dialect.identifier_preparer.quote(name)}")

    def maintenance_url(self, url: URL) -> URL:
        """A URL on the same server that does not need ``url``'s database to exist."""
        return URL.create(url.drivername, url.username, url.password, url.host, url.port, query=url.query)

    # -- sync: change capture and row identity (issue 5) ----------------------------------

    def reflect_table(self, conn: Connection, md: MetaData, name: str) -> Table:
        """Synced table ``name``, reflected with the column types sync reads and writes it with.

        Its key's types are also those of the key columns of ``erpsync_r<n>`` and
        ``erpsync_l<n>``, which are compared with it.
        """
        return Table(name, md, autoload_with=conn, listeners=[("column_reflect", floats_as_floats)])

    def match_collations(self, conn: Connection, table: Table) -> None:
        """Give ``table``, one of erpsync's tables already in the database, the text collations
        its definition names where the database's differ (made by an older erpsync).

        Nothing by default: only MariaDB gave erpsync's tables a collation of their own.
        """

    def gid_type(self) -> sa.types.TypeEngine[str]:
        """The column type of global row ids: 32 ASCII characters compared byte for byte."""
        return sa.String(32)

    def gid_sql(self, prefix: str, number: str) -> str:
        """SQL for a global id: the text ``prefix`` then ``number`` (an integer) in 16 hex digits."""
        raise NotImplementedError

    def install_capture(
        self,
        conn: Connection,
        number: int,
        table: str,
        keys: Sequence[str],
        columns: Sequence[tuple[str, bool]],
    ) -> None:
        """Create the triggers that log every write of ``table`` into ``erpsync_l<number>``.

        Each logged row holds the primary key (``keys``), the bit mask of the
        ``columns`` an UPDATE changed (``columns`` in bit order, each with whether
        it holds text), ``-1`` for an INSERT, ``-2`` for a DELETE, and the wall
        clock in milliseconds. Replaces triggers of the same names.
        """
        raise NotImplementedError

    def remove_capture(self, conn: Connection, number: int, table: str) -> None:
        """Drop the triggers (and trigger functions) ``install_capture`` made, nothing else."""
        raise NotImplementedError

    def upgrade_capture(self, conn: Connection) -> None:
        """Bring the capture triggers of a node of version 2 or older up to date, in place.

        Nothing on this engine. Done in ``conn``'s transaction, when the node is
        opened: in place rather than dropped and created again, so no write goes
        unlogged on an engine whose DDL commits by itself.
        """

    def mute_capture(self, conn: Connection, number: int | None = None) -> None:
        """Keep the capture triggers from logging what ``conn`` writes until ``unmute_capture``.

        ``number`` limits it to the triggers of synced table ``number`` where that is cheaper.

        Sync applies changes that already carry their clock and origin: logging
        them again would make them look like local edits.
        """
        raise NotImplementedError

    def unmute_capture(self, conn: Connection) -> None:
        """Log ``conn``'s writes again; call before the transaction ends."""
        raise NotImplementedError

    stores_nul: ClassVar[bool] = True
    """Whether text may hold NUL characters (PostgreSQL's may not)."""

    binds_arrays: ClassVar[bool] = False
    """Whether a list binds as one array parameter (``col = ANY(%s)``), cheaper than a long ``IN``."""

    def catalog_rows(self, conn: Connection, tables: Sequence[str]) -> list[tuple[Any, ...]]:
        """The catalog's description of ``tables``' columns, to notice a change of shape cheaply."""
        raise NotImplementedError

    def unique_keys(self, conn: Connection, table: str) -> list[tuple[str, ...]]:
        """The column sets of ``table``'s unique constraints and unique indexes."""
        inspector = sa.inspect(conn)
        found = [tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)]
        for index in inspector.get_indexes(table):
            names = index["column_names"]
            if index.get("unique") and names and all(isinstance(c, str) for c in names):
                found.append(tuple(str(c) for c in names))
        return list(dict.fromkeys(k for k in found if k))

    # -- stored procedures (erpsync.procedures) ---------------------------------------------

    @property
    def has_stored_procedures(self) -> bool:
        """Whether the engine has stored procedures: the servers do, SQLite does not."""
        return self.is_server

    def script_statements(self, script: str) -> list[str]:
        """One of erpsync's SQL scripts as the statements to send, in order (default: in one go)."""
        return [script]

    def stored_procedures(self, conn: Connection) -> set[str]:
        """The names, in lower case, of the stored procedures of the connection's database."""
        return set()

    def check_procedures_supported(self, conn: Connection) -> None:
        """Refuse, before anything is written, a server that cannot run erpsync's procedures."""


def floats_as_floats(inspector: Any, table: Table, column: ReflectedColumn) -> None:
    """A ``column_reflect`` listener: a floating-point column reads as the float it holds.

    MariaDB's reflected ``DOUBLE`` reads a Decimal rounded to 10 places (1e-12 becomes 0),
    which sync would send and verify would compare.
    """
    type_ = column["type"]
    if isinstance(type_, sqltypes.Float) and type_.asdecimal:
        column["type"] = type_.adapt(type(type_), asdecimal=False)


def execute_many(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """The DB-API ``executemany`` in ``conn``'s transaction, without SQLAlchemy's per-row work."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with driver_errors(conn, sql):
            cursor.executemany(sql, rows)
    finally:
        cursor.close()


def fetch_columns(conn: Connection, statement: sa.Select[Any]) -> dict[str, Sequence[Any]]:
    """The result of ``statement`` column by column, by name: the values of
    ``conn.execute(...).all()`` without SQLAlchemy's per-row work (the read side of ``execute_many``).

    The driver's tuples are taken from the cursor and turned into columns, then
    the column types' result conversions (SQLite's decimals and dates) run on
    whole columns: about half the time SQLAlchemy takes to build a ``Row`` a row.
    """
    result = conn.execute(statement)
    try:
        keys = list(result.keys())
        rows = result.cursor.fetchall()
        described = result.cursor.description
    finally:
        result.close()
    if not rows:
        return dict.fromkeys(keys, ())
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    dialect = conn.dialect
    for i, (column, description) in enumerate(zip(statement.selected_columns, described, strict=True)):
        process = column.type.dialect_impl(dialect).result_processor(dialect, description[1])
        if process:
            columns[i] = list(map(process, columns[i]))
    return dict(zip(keys, columns, strict=True))


@contextmanager
def driver_errors(conn: Connection, sql: str) -> Iterator[None]:
    """Wrap errors of a raw DB-API call as SQLAlchemy does, so callers translate them as usual."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, dialect=conn.dialect) from exc


def single_pk(table: Table) -> Column[Any]:
    """The one primary-key column of ``table``."""
    (column,) = table.primary_key.columns
    return column


def column_list(conn: Connection, table: Table, keys: Sequence[str]) -> str:
    """``table (col, …)`` quoted for ``conn``, from column keys (the spec's spelling)."""
    preparer = conn.dialect.identifier_preparer
    return f"{preparer.format_table(table)} ({', '.join(preparer.quote(table.c[key].name) for key in keys)})"


def first_line(error: object) -> str:
    """The first line of a driver message, without the driver's decorations."""
    if isinstance(error, BaseException) and error.args and isinstance(error.args[-1], str):
        text = error.args[-1]
    else:
        text = str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__

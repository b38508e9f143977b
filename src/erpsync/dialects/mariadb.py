"""MariaDB (and MySQL), through PyMySQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, MetaData, Select, String, Subquery, Table, cast, func, select
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.dialects.mysql import CHAR
from sqlalchemy.dialects.mysql.types import _StringType
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import ReflectedColumn
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from erpsync.dialects.base import (
    UPDATE_TABLE,
    Dialect,
    column_list,
    driver_errors,
    first_line,
    floats_as_floats,
    single_pk,
)
from erpsync.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    ErpSyncError,
    UnsupportedEngine,
)

# PyMySQL error numbers (MariaDB's and the client's).
CANNOT_CONNECT = {2002, 2003, 2005, 2006, 2013}
ACCESS_DENIED = {1044, 1045, 1698}
UNKNOWN_DATABASE = 1049
DEADLOCK = {1213, 1205}  # deadlock found; lock wait timeout exceeded
STATEMENT_CHARACTERS = 250_000
"""Characters of a bulk ``INSERT``: at most 1 MB in UTF-8, what PyMySQL's ``executemany`` sends."""


class MariaDB(Dialect):
    """MariaDB 10.x / MySQL 8 with InnoDB and utf8mb4."""

    name = "mariadb"
    label = "MariaDB"
    backends = ("mysql", "mariadb")
    driver = "mysql+pymysql"
    default_port = 3306

    def engine_options(self) -> dict[str, Any]:
        return {"pool_recycle": 3600, "connect_args": {"connect_timeout": 10, "charset": "utf8mb4"}}

    def table_options(self) -> dict[str, Any]:
        return {
            "mysql_engine": "InnoDB",
            "mysql_charset": "utf8mb4",
            "mysql_collate": "utf8mb4_unicode_ci",
        }

    def bulk_insert(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        """Multi-row ``INSERT``s whose values are rendered column by column.

        PyMySQL binds parameters by writing them as literals on the client, and
        its ``executemany`` looks up the type of every value: two thirds of a
        bulk load's time. Here a column of integers or of text is rendered in
        one pass with PyMySQL's own escaping, any other value by PyMySQL itself,
        and the rows go in statements of at most 1 MB, as ``executemany`` sends.
        """
        batch = list(rows)
        if not batch:
            return 0
        raw = conn.connection.dbapi_connection
        head = f"INSERT INTO {column_list(conn, table, columns)} VALUES "
        rendered = [
            f"({','.join(values)})"
            for values in zip(*[_literals(raw, column) for column in zip(*batch, strict=True)], strict=True)
        ]
        cursor = raw.cursor()  # type: ignore[union-attr]
        try:
            with driver_errors(conn, head):
                start, size = 0, 0
                for i, row in enumerate(rendered):
                    if size + len(row) > STATEMENT_CHARACTERS and i > start:
                        cursor.execute(head + ",".join(rendered[start:i]))
                        start, size = i, 0
                    size += len(row) + 1
                cursor.execute(head + ",".join(rendered[start:]))
        finally:
            cursor.close()
        return len(batch)

    join_update_rows = 20

    def allows_joined_updates(self, conn: Connection) -> bool:
        """Not under ``sql_safe_updates``, which refuses an ``UPDATE … JOIN`` without ``WHERE``."""
        return not conn.exec_driver_sql("SELECT @@sql_safe_updates").scalar()

    def joined_update_sql(self, table: str, where: list[str], columns: list[str]) -> tuple[str, str, str]:
        """The temporary table's primary key joins it key to key (and satisfies
        ``innodb_force_primary_key``); a temporary table is not transactional: ``DROP TEMPORARY``."""
        keys = ", ".join(where)
        return (
            f"CREATE TEMPORARY TABLE {UPDATE_TABLE} (PRIMARY KEY ({keys})) "
            f"AS SELECT {', '.join([*columns, *where])} FROM {table} LIMIT 0",
            f"UPDATE {table} t JOIN {UPDATE_TABLE} u ON {' AND '.join(f't.{w} = u.{w}' for w in where)} "
            f"SET {', '.join(f't.{c} = u.{c}' for c in columns)}",
            f"DROP TEMPORARY TABLE IF EXISTS {UPDATE_TABLE}",
        )

    def is_retryable(self, exc: DBAPIError) -> bool:
        return bool(exc.orig is not None and exc.orig.args and exc.orig.args[0] in DEADLOCK)

    def new_ids(self, conn: Connection, table: Table, old: Subquery) -> Select[Any] | None:
        """InnoDB numbers a bulk insert consecutively under lock modes 0 and 1 with an increment of 1.

        In interleaved mode 2 (Galera, some tuned servers) erpsync reserves a block
        instead; then an insert by another program into the same table during the
        copy may fail with a duplicate key (see docs/duplication.md).
        """
        mode, increment = conn.exec_driver_sql(
            "SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment"
        ).one()
        return None if int(mode) <= 1 and int(increment) == 1 else super().new_ids(conn, table, old)

    def first_inserted_id(self, conn: Connection) -> int:
        return int(conn.exec_driver_sql("SELECT LAST_INSERT_ID()").scalar_one())

    def reserve_ids(self, conn: Connection, table: Table) -> int:
        """Lock the last index record and the gap above it: others' inserts wait for our commit."""
        pk = single_pk(table)
        last = conn.execute(select(pk).order_by(pk.desc()).limit(1).with_for_update()).scalar()
        return int(last or 0)

    def zero_pad(self, number: ColumnElement[Any], width: int) -> ColumnElement[str]:
        text_ = cast(number, CHAR)
        return func.lpad(text_, func.greatest(width, func.char_length(text_)), "0", type_=String)

    def translate_error(self, exc: DBAPIError, url: URL) -> ErpSyncError:
        code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
        reason = first_line(exc.orig)
        if code in CANNOT_CONNECT:
            return ConnectionFailed(
                "cannot reach the {engine} server at {address}: {reason}",
                "check the host and port, and that the server is running",
                engine=self.label,
                address=self.address(url),
                reason=reason,
            )
        if code in ACCESS_DENIED:
            return AuthenticationFailed(
                "{engine} refused the login of user {user}: {reason}",
                "check the user name and password in the URL",
                engine=self.label,
                user=url.username,
                reason=reason,
            )
        if code == UNKNOWN_DATABASE:
            return DatabaseNotFound(
                "database {name} does not exist on the {engine} server at {address}",
                "check the name, or create it with: erpsync db init {url} --create-database",
                name=url.database,
                engine=self.label,
                address=self.address(url),
                url=url.render_as_string(hide_password=True),
            )
        return super().translate_error(exc, url)

    # -- sync: change capture (issue 5) -----------------------------------------------------

    def reflect_table(self, conn: Connection, md: MetaData, name: str) -> Table:
        """With each text column's charset and collation, from the catalog.

        ``SHOW CREATE TABLE`` names them only where they differ from the table's
        defaults; a key column made from the type would take those of erpsync's
        tables, and joined to the application's key it would fail (an illegal mix
        of collations) or compare otherwise than the key does.
        """
        collations = _collations(conn, name)

        def collated(inspector: Any, table: Table, column: ReflectedColumn) -> None:
            type_ = column["type"]
            if isinstance(type_, _StringType) and column["name"] in collations:
                charset, collation = collations[column["name"]]
                column["type"] = type_.adapt(type(type_), charset=charset, collation=collation)

        listeners = [("column_reflect", floats_as_floats), ("column_reflect", collated)]
        return Table(name, md, autoload_with=conn, listeners=listeners)

    def match_collations(self, conn: Connection, table: Table) -> None:
        """An older erpsync gave the key columns the collation of erpsync's tables (utf8mb4_unicode_ci)
        whatever the application key's: the columns that differ are altered in one statement."""
        q = conn.dialect.identifier_preparer.quote
        stored = _collations(conn, table.name)
        changes = [
            f"MODIFY {q(c.name)} {c.type.compile(conn.dialect)} {'NULL' if c.nullable else 'NOT NULL'}"
            for c in table.columns
            if isinstance(c.type, _StringType)
            and c.type.collation is not None
            and c.name in stored
            and stored[c.name][1] != c.type.collation
        ]
        if changes:
            conn.exec_driver_sql(f"ALTER TABLE {q(table.name)} {', '.join(changes)}")

    def gid_type(self) -> sa.types.TypeEngine[str]:
        return mysql_types.VARCHAR(32, charset="ascii", collation="ascii_bin")

    def gid_sql(self, prefix: str, number: str) -> str:
        return f"CONCAT({prefix}, LPAD(LOWER(HEX({number})), 16, '0'))"

    def install_capture(
        self,
        conn: Connection,
        number: int,
        table: str,
        keys: Sequence[str],
        columns: Sequence[tuple[str, bool]],
    ) -> None:
        """Row triggers that skip logging while the session variable ``@erpsync_mute`` is set.

        Text is compared as bytes: the tables' case-insensitive collation would
        otherwise take ``'dupont'`` → ``'Dupont'`` for no change.
        """
        q = conn.dialect.identifier_preparer.quote
        wall = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"
        key_columns = ", ".join(f"k{i}" for i in range(len(keys)))
        insert = f"INSERT INTO erpsync_l{number} (m, w, {key_columns}) VALUES"
        new, old = (", ".join(f"{side}.{q(k)}" for k in keys) for side in ("NEW", "OLD"))

        def same(column: str, text: bool) -> str:
            cast_ = "BINARY " if text else ""
            return f"{cast_}OLD.{q(column)} <=> {cast_}NEW.{q(column)}"

        mask = " | ".join(f"((NOT ({same(c, t)})) << {min(i, 62)})" for i, (c, t) in enumerate(columns))
        key_changed = " OR ".join(f"NOT ({same(k, True)})" for k in keys)
        self.remove_capture(conn, number, table)
        on = q(table)
        for sql in (
            f"CREATE TRIGGER erpsync_{number}_i AFTER INSERT ON {on} FOR EACH ROW "
            f"IF @erpsync_mute IS NULL THEN {insert} (-1, {wall}, {new}); END IF",
            f"CREATE TRIGGER erpsync_{number}_u AFTER UPDATE ON {on} FOR EACH ROW "
            f"IF @erpsync_mute IS NULL THEN IF {key_changed} THEN {insert} (-2, {wall}, {old}); "
            f"{insert} (-1, {wall}, {new}); ELSE {insert} ({mask or 0}, {wall}, {new}); END IF; END IF",
            f"CREATE TRIGGER erpsync_{number}_d AFTER DELETE ON {on} FOR EACH ROW "
            f"IF @erpsync_mute IS NULL THEN {insert} (-2, {wall}, {old}); END IF",
        ):
            conn.exec_driver_sql(sql)

    def remove_capture(self, conn: Connection, number: int, table: str) -> None:
        for suffix in "iud":
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS erpsync_{number}_{suffix}")

    def mute_capture(self, conn: Connection, number: int | None = None) -> None:
        conn.exec_driver_sql("SET @erpsync_mute = 1")

    def unmute_capture(self, conn: Connection) -> None:
        conn.exec_driver_sql("SET @erpsync_mute = NULL")

    def catalog_rows(self, conn: Connection, tables: Sequence[str]) -> list[tuple[Any, ...]]:
        marks = ", ".join("%s" for _ in tables)
        rows = conn.exec_driver_sql(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME IN ({marks}) ORDER BY TABLE_NAME, ORDINAL_POSITION",
            tuple(tables),
        )
        return [tuple(row) for row in rows]

    def script_statements(self, script: str) -> list[str]:
        return split_script(script)

    def stored_procedures(self, conn: Connection) -> set[str]:
        rows = conn.exec_driver_sql(
            "SELECT ROUTINE_NAME FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE = 'PROCEDURE'"
        )
        return {str(name).lower() for name in rows.scalars()}

    def check_procedures_supported(self, conn: Connection) -> None:
        """The procedures use MariaDB's CREATE OR REPLACE and @@in_transaction: MariaDB 10.5+."""
        version = str(conn.exec_driver_sql("SELECT VERSION()").scalar_one())
        numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:2] if part.isdigit())
        if "mariadb" not in version.lower() or numbers < PROCEDURES_MINIMUM:
            raise UnsupportedEngine(
                "the procedures need MariaDB {minimum} or later; this server is {version}",
                "use erpsync duplicate, which works on any MariaDB or MySQL server",
                minimum=".".join(map(str, PROCEDURES_MINIMUM)),
                version=version,
            )


PROCEDURES_MINIMUM = (10, 5)


def split_script(script: str) -> list[str]:
    """The statements of a script, split as the ``mysql`` client does.

    Honours ``DELIMITER`` lines (a routine body ends at ``$$``, not at its first
    ``;``) and skips comment lines between statements.
    """
    delimiter = ";"
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("--")):
            continue
        if not current and stripped.upper().startswith("DELIMITER "):
            delimiter = stripped.split()[1]
            continue
        if stripped.endswith(delimiter):
            current.append(line.rstrip()[: -len(delimiter)])
            statements.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def _collations(conn: Connection, table: str) -> dict[str, tuple[str, str]]:
    """Column → (charset, collation) of the text columns of ``table``, from the catalog."""
    found = conn.exec_driver_sql(
        "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLLATION_NAME IS NOT NULL",
        (table,),
    )
    return {str(column): (str(charset), str(collation)) for column, charset, collation in found}


def _literals(raw: Any, column: Sequence[Any]) -> list[str]:
    """One column's values as the SQL literals PyMySQL writes for bound parameters."""
    from pymysql.constants import SERVER_STATUS  # not at import: a PC on SQLite never loads PyMySQL
    from pymysql.converters import escape_string

    kinds = set(map(type, column)) - {type(None)}
    if not kinds:  # a column of NULLs: most clock columns of a batch's metadata
        return ["NULL"] * len(column)
    if kinds == {int}:
        return ["NULL" if v is None else str(v) for v in column]
    if kinds == {str}:
        if raw.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
            return ["NULL" if v is None else "'" + v.replace("'", "''") + "'" for v in column]
        return ["NULL" if v is None else "'" + escape_string(v) + "'" for v in column]
    return [raw.escape(v) for v in column]

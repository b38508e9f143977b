"""PostgreSQL, through psycopg 3."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import Connection, Select, Subquery, Table, cast, func, select
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from erpsync.dialects.base import UPDATE_TABLE, Dialect, column_list, driver_errors, single_pk
from erpsync.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    ErpSyncError,
)

UNDEFINED_FUNCTION = "42883"
"""SQLSTATE of a missing operator, or of a type without equality (``GROUP BY`` on json)."""


class PostgreSQL(Dialect):
    """PostgreSQL 12+; unquoted names, so the spec's SQL works in psql as written."""

    name = "postgresql"
    label = "PostgreSQL"
    backends = ("postgresql", "postgres")
    driver = "postgresql+psycopg"
    default_port = 5432

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": {"connect_timeout": 10}}

    def fold(self, name: str) -> str:
        return name.lower()

    def bulk_insert(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        """COPY FROM STDIN: several times faster than any INSERT for bulk loads."""
        sql = f"COPY {column_list(conn, table, columns)} FROM STDIN"
        count = 0
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with driver_errors(conn, sql), cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        finally:
            cursor.close()
        return count

    def insert_sql(self, target: str, count: int) -> str:
        """``OVERRIDING SYSTEM VALUE``: a ``GENERATED ALWAYS`` identity column refuses the ids
        sync gives otherwise (COPY takes them as they are); harmless on any other table."""
        marks = ", ".join([self.paramstyle_mark] * count)
        return f"INSERT INTO {target} OVERRIDING SYSTEM VALUE VALUES ({marks})"

    join_update_rows = 20
    temporary_schema = "pg_temp"

    def joined_update_sql(self, table: str, where: list[str], columns: list[str]) -> tuple[str, str, str]:
        """Loaded by COPY, the table joined by the rows' keys (a nested loop on the table's
        primary key); named in ``pg_temp``, so no other table of that name is used or dropped.

        Values reach the columns as COPY's text, as new rows do: a value the column's type
        cannot read (``1.5``, left by SQLite in an integer column) is refused, where one
        ``UPDATE`` per row (batches of fewer than 20 rows) rounds it.
        """
        temporary = f"{self.temporary_schema}.{UPDATE_TABLE}"
        return (
            f"CREATE TEMPORARY TABLE {UPDATE_TABLE} AS SELECT {', '.join([*columns, *where])} "
            f"FROM {table} LIMIT 0",
            f"UPDATE {table} t SET {', '.join(f'{c} = u.{c}' for c in columns)} FROM {temporary} u "
            f"WHERE {' AND '.join(f't.{w} = u.{w}' for w in where)}",
            f"DROP TABLE IF EXISTS {temporary}",
        )

    def after_explicit_ids(self, conn: Connection, table: Table) -> None:
        """Move the id sequence past the largest id, as MariaDB and SQLite do by themselves."""
        quote = conn.dialect.identifier_preparer.quote
        for column in table.primary_key.columns:
            if column.autoincrement is True or (
                column.autoincrement == "auto" and len(table.primary_key.columns) == 1
            ):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence(%(t)s, %(c)s), "
                    f"COALESCE((SELECT MAX({quote(column.name)}) FROM {quote(table.name)}), 0) + 1,"
                    f" false)",
                    {"t": quote(table.name), "c": column.name},
                )

    def is_retryable(self, exc: DBAPIError) -> bool:
        return getattr(exc.orig, "sqlstate", None) in ("40P01", "40001")  # deadlock, serialization

    def new_ids(self, conn: Connection, table: Table, old: Subquery) -> Select[Any] | None:
        """Ids drawn from the table's own sequence: never handed out twice, no table lock.

        ``nextval`` runs once per copied row; old and new ids are paired by rank,
        so the copies keep the order of the originals.
        """
        quote = conn.dialect.identifier_preparer.quote
        sequence = conn.execute(
            select(func.pg_get_serial_sequence(quote(table.name), single_pk(table).name))
        ).scalar()
        if sequence is None:
            return super().new_ids(conn, table, old)
        # A sequence left behind by rows inserted with explicit ids would hand out ids in use:
        # move it past the largest id, only when it is behind (never backwards).
        high = select(func.max(single_pk(table))).scalar_subquery()
        behind = high > func.coalesce(func.pg_sequence_last_value(cast(sequence, REGCLASS)), 0)
        conn.execute(select(func.setval(sequence, high)).where(behind))
        ranked_old = select(old.c.old_id, func.row_number().over(order_by=old.c.old_id).label("r")).subquery()
        count = select(func.count()).select_from(old).scalar_subquery()
        drawn = (
            select(func.nextval(sequence).label("v")).select_from(func.generate_series(1, count)).subquery()
        )
        ranked_new = select(drawn.c.v, func.row_number().over(order_by=drawn.c.v).label("r")).subquery()
        return select(ranked_old.c.old_id, ranked_new.c.v.label("new_id")).join_from(
            ranked_old, ranked_new, ranked_old.c.r == ranked_new.c.r
        )

    def reserve_ids(self, conn: Connection, table: Table) -> int:
        """Block others' writes to ``table`` until commit; the high-water mark of ids and sequence."""
        quote = conn.dialect.identifier_preparer.quote
        pk = single_pk(table)
        conn.exec_driver_sql(f"LOCK TABLE {quote(table.name)} IN EXCLUSIVE MODE")
        row = conn.exec_driver_sql(
            f"SELECT GREATEST(COALESCE(MAX({quote(pk.name)}), 0), "
            f"COALESCE(pg_sequence_last_value(pg_get_serial_sequence(%(t)s, %(c)s)), 0)) "
            f"FROM {quote(table.name)}",
            {"t": quote(table.name), "c": pk.name},
        ).scalar_one()
        return int(row)

    def analyze(self, conn: Connection, table: Table) -> None:
        conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(table.name)}")

    def maintenance_url(self, url: URL) -> URL:
        return url.set(database="postgres")

    def drop_database(self, conn: Connection, name: str) -> None:
        """Drop ``name`` even if sessions are still connected to it (PostgreSQL 13+)."""
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")

    def translate_error(self, exc: DBAPIError, url: URL) -> ErpSyncError:
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        text = str(orig)
        reason = _server_reason(text)
        if (
            sqlstate in ("28P01", "28000")
            or "authentication failed" in text
            or ("role" in text and "does not exist" in text)
        ):
            return AuthenticationFailed(
                "{engine} refused the login of user {user}: {reason}",
                "check the user name and password in the URL",
                engine=self.label,
                user=url.username,
                reason=reason,
            )
        if sqlstate == "3D000" or ("database" in text and "does not exist" in text):
            return DatabaseNotFound(
                "database {name} does not exist on the {engine} server at {address}",
                "check the name, or create it with: erpsync db init {url} --create-database",
                name=url.database,
                engine=self.label,
                address=self.address(url),
                url=url.render_as_string(hide_password=True),
            )
        if sqlstate is None:  # failed before the server said anything: host, port, network
            return ConnectionFailed(
                "cannot reach the {engine} server at {address}: {reason}",
                "check the host and port, and that the server is running",
                engine=self.label,
                address=self.address(url),
                reason=reason,
            )
        return super().translate_error(exc, url)

    # -- sync: change capture (issue 5) -----------------------------------------------------

    binds_arrays: ClassVar[bool] = True
    stores_nul: ClassVar[bool] = False

    def gid_type(self) -> sa.types.TypeEngine[str]:
        return sa.String(32, collation="C")

    def gid_sql(self, prefix: str, number: str) -> str:
        return f"{prefix} || lpad(to_hex({number}), 16, '0')"

    def install_capture(
        self,
        conn: Connection,
        number: int,
        table: str,
        keys: Sequence[str],
        columns: Sequence[tuple[str, bool]],
    ) -> None:
        """Statement triggers over transition tables: one INSERT … SELECT per statement.

        A bulk UPDATE of 100,000 rows logs them in one set-based statement instead
        of 100,000 calls of a row trigger. The functions return at once while the
        transaction-local setting ``erpsync.mute`` is on. They run without JIT: a
        session caches their plan with the size of its first statement, and a plan
        made for a bulk UPDATE would JIT-compile every later one-row write (12 ms).
        A column whose type has no equality (json) is compared as text (``_comparable``).
        """
        q = conn.dialect.identifier_preparer.quote
        wall = "(extract(epoch from statement_timestamp()) * 1000)::bigint"
        key_columns = ", ".join(f"k{i}" for i in range(len(keys)))
        insert = f"INSERT INTO erpsync_l{number} (m, w, {key_columns})"
        comparable = _comparable(conn, table, [c for c, _ in columns])

        def changed(column: str) -> str:
            as_text = "" if column in comparable else "::text"
            return f"o.{q(column)}{as_text} IS DISTINCT FROM n.{q(column)}{as_text}"

        mask = " | ".join(
            f"(({changed(c)})::int::bigint << {min(i, 62)})" for i, (c, _) in enumerate(columns)
        )
        first = q(keys[0])
        on_key = " AND ".join(f"o.{q(k)} = n.{q(k)}" for k in keys)
        bodies = {
            "i": f"{insert} SELECT -1, {wall}, {', '.join(f'n.{q(k)}' for k in keys)} FROM erpsync_new n",
            "u": f"{insert} SELECT CASE WHEN o.{first} IS NULL THEN -1 WHEN n.{first} IS NULL THEN -2 "
            f"ELSE {mask or 0} END, {wall}, {', '.join(f'COALESCE(n.{q(k)}, o.{q(k)})' for k in keys)} "
            f"FROM erpsync_new n FULL JOIN erpsync_old o ON {on_key}",
            "d": f"{insert} SELECT -2, {wall}, {', '.join(f'o.{q(k)}' for k in keys)} FROM erpsync_old o",
        }
        events = {
            "i": ("INSERT", "NEW TABLE AS erpsync_new"),
            "u": ("UPDATE", "OLD TABLE AS erpsync_old NEW TABLE AS erpsync_new"),
            "d": ("DELETE", "OLD TABLE AS erpsync_old"),
        }
        self.remove_capture(conn, number, table)
        for suffix, body in bodies.items():
            name = f"erpsync_{number}_{suffix}"
            conn.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $erpsync$ BEGIN "
                "IF current_setting('erpsync.mute', true) = 'on' THEN RETURN NULL; END IF; "
                f"{body}; RETURN NULL; END $erpsync$"
            )
            event, transition = events[suffix]
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} AFTER {event} ON {q(table)} REFERENCING {transition} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )

    def remove_capture(self, conn: Connection, number: int, table: str) -> None:
        for suffix in "iud":
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS erpsync_{number}_{suffix}() CASCADE")

    def upgrade_capture(self, conn: Connection) -> None:
        """Node version 3 runs the capture functions without JIT (see ``install_capture``).

        Only the functions this role may alter: ``ALTER FUNCTION`` needs their
        owner, and the others keep JIT until the owner runs ``erpsync node init``.
        """
        q = conn.dialect.identifier_preparer.quote
        functions = conn.exec_driver_sql(
            "SELECT DISTINCT n.nspname, p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE t.tgname ~ '^erpsync_[0-9]+_[iud]$' "
            "AND pg_has_role(p.proowner, 'USAGE') AND NOT coalesce(p.proconfig @> '{jit=off}', false)"
        ).all()
        for schema, name in functions:
            conn.exec_driver_sql(f"ALTER FUNCTION {q(schema)}.{q(name)}() SET jit = off")

    def mute_capture(self, conn: Connection, number: int | None = None) -> None:
        conn.exec_driver_sql("SELECT set_config('erpsync.mute', 'on', true)")

    def unmute_capture(self, conn: Connection) -> None:
        conn.exec_driver_sql("SELECT set_config('erpsync.mute', 'off', true)")

    def catalog_rows(self, conn: Connection, tables: Sequence[str]) -> list[tuple[Any, ...]]:
        rows = conn.exec_driver_sql(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace s ON s.oid = c.relnamespace "
            "WHERE s.nspname = current_schema() AND c.relname = ANY(%(t)s) "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum",
            {"t": list(tables)},
        )
        return [tuple(row) for row in rows]

    def stored_procedures(self, conn: Connection) -> set[str]:
        rows = conn.exec_driver_sql(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.prokind = 'p'"
        )
        return {str(name).lower() for name in rows.scalars()}


def _comparable(conn: Connection, table: str, columns: Sequence[str]) -> set[str]:
    """The ``columns`` of ``table`` whose type has an equality, for the triggers to compare.

    Others are compared as text: json, xml, point, polygon have no ``=`` (comparing them
    would fail every UPDATE of the table), box, circle, path one by area or size (it would
    miss changes), and the ``=`` of arrays of those fails only when it runs. PostgreSQL
    says which: ``GROUP BY`` needs the equality of the type's default operator class,
    arrays and composite types included. Probed on no rows, each try in a savepoint: all
    the columns at once, then, if that fails, one by one.
    """
    q = conn.dialect.identifier_preparer.quote

    def compares(names: Sequence[str]) -> bool:
        tried = ", ".join(f"t.{q(c)} IS DISTINCT FROM t.{q(c)}" for c in names)
        grouped = ", ".join(f"t.{q(c)}" for c in names)
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(f"SELECT {tried} FROM {q(table)} t WHERE false GROUP BY {grouped}")
        except DBAPIError as exc:
            savepoint.rollback()
            if getattr(exc.orig, "sqlstate", None) != UNDEFINED_FUNCTION:
                raise
            return False
        savepoint.commit()
        return True

    if not columns or compares(columns):
        return set(columns)
    return {c for c in columns if compares([c])}


def _server_reason(text: str) -> str:
    """The line of a psycopg message that says why (its connection errors span lines)."""
    if "FATAL:" in text:
        return text.rsplit("FATAL:", 1)[1].strip().splitlines()[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else text).removeprefix("connection failed:").strip()

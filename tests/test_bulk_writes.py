"""The engines' bulk writes (fill, import, sync): every value comes back as it went in."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from erpsync.db import Database
from erpsync.dialects.base import JOINED_UPDATES, UPDATE_TABLE

TEXTS = [
    "plain",
    "l'Église d'Orléans",
    'double "quotes"',
    "back\\slash and trailing \\",
    "\\'",
    "'); DROP TABLE awkward; --",
    "%s %(name)s %% {0}",
    "line\nbreak\r\nand tab\t",
    "ctrl-z \x1a end",
    "émoji 🚚 漢字",
    "",
    " trailing space ",
]


def _table() -> Table:
    return Table(
        "awkward",
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("label", Text),
        Column("code", String(40)),
        Column("big", BigInteger),
        Column("amount", Numeric(12, 2)),
        Column("ratio", Float),
        Column("flag", Boolean),
        Column("day", Date),
        Column("moment", DateTime),
        Column("blob", LargeBinary),
    )


def _rows(engine: str, count: int) -> list[tuple[object, ...]]:
    texts = TEXTS + (["NUL \x00 inside"] if engine != "postgresql" else [])  # PostgreSQL text has no NUL
    rows: list[tuple[object, ...]] = []
    for i in range(count):
        label = texts[i % len(texts)] + ("x" * 300 if i % 7 == 0 else "")
        rows.append(
            (
                i + 1,
                label,
                None if i % 4 == 0 else f"C-{i:05d}'",
                -(2**62) + i if i % 2 else 2**62 - i,
                None if i % 5 == 0 else Decimal(f"{i}.{i % 100:02d}"),
                None if i % 3 == 0 else i / 8,
                None if i % 6 == 0 else bool(i % 2),
                date(2026, 1 + i % 12, 1 + i % 28),
                datetime(2026, 11, 22, i % 24, i % 60, i % 60),
                None if i % 2 else bytes([i % 256, 0, 39, 92]),
            )
        )
    return rows


def test_awkward_values_round_trip_in_every_statement(db: Database, engine_name: str) -> None:
    """Quotes, backslashes, NUL, percent signs, non-ASCII and big integers, over several statements."""
    _round_trip(db, engine_name, "")


def test_awkward_values_round_trip_under_no_backslash_escapes(mariadb: Database) -> None:
    _round_trip(mariadb, "mariadb", "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")


def _round_trip(db: Database, engine: str, setting: str) -> None:
    table = _table()
    table.create(db.engine)
    rows = _rows(engine, 2500)  # over 1 MB of text on MariaDB: several statements
    columns = [c.key for c in table.columns]
    with db.engine.begin() as conn:
        if setting:
            conn.execute(text(setting))
        assert db.dialect.bulk_insert(conn, table, columns, rows) == len(rows)
    with db.connect() as conn:
        back = [tuple(row) for row in conn.execute(select(table).order_by(table.c.id))]
    assert back == rows


@pytest.mark.parametrize("count", [5, 500], ids=["one-by-one", "joined"])
def test_bulk_update_sets_the_last_values_given_for_each_key(
    db: Database, engine_name: str, count: int
) -> None:
    """Only the columns named change; a key listed twice ends with its last values, as one
    UPDATE after the other would leave it."""
    table = _table()
    table.create(db.engine)
    rows = _rows(engine_name, count)
    with db.engine.begin() as conn:
        db.dialect.bulk_insert(conn, table, [c.key for c in table.columns], rows)
    changes = [(f"{row[1]} v2", -i, row[0]) for i, row in enumerate(rows)]  # label, big, then the key id
    changes.append(("the last word", 7, rows[0][0]))
    with db.engine.begin() as conn:
        db.dialect.bulk_update(conn, table, ["id"], ["label", "big"], changes)
        db.dialect.bulk_update(conn, table, ["id"], ["code"], [("again", rows[-1][0])])
    expected = [list(row) for row in rows]
    for i, row in enumerate(expected):
        row[1], row[3] = f"{row[1]} v2", -i
    expected[0][1], expected[0][3] = "the last word", 7
    expected[-1][2] = "again"
    with db.connect() as conn:
        back = [list(row) for row in conn.execute(select(table).order_by(table.c.id))]
    assert back == expected


@pytest.mark.parametrize("refusal", ["sql_safe_updates", "no CREATE TEMPORARY TABLES"])
def test_a_mariadb_server_refusing_the_temporary_table_gets_one_update_per_row(
    mariadb: Database, refusal: str
) -> None:
    db = mariadb
    table = _table()
    table.create(db.engine)
    rows = _rows("mariadb", 50)
    with db.engine.begin() as conn:
        db.dialect.bulk_insert(conn, table, [c.key for c in table.columns], rows)
    account = db.url.set(username="erpsync_limited", password="limited-pw")
    with db.engine.begin() as conn:
        conn.execute(text("DROP USER IF EXISTS 'erpsync_limited'@'%'"))
        conn.execute(text("CREATE USER 'erpsync_limited'@'%' IDENTIFIED BY 'limited-pw'"))
        conn.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{db.url.database}`.* TO 'erpsync_limited'@'%'")
        )
    try:
        limited = create_engine(account if refusal != "sql_safe_updates" else db.url)
        with limited.begin() as conn:
            if refusal == "sql_safe_updates":
                conn.execute(text("SET SESSION sql_safe_updates = 1"))
            db.dialect.bulk_update(conn, table, ["id"], ["label"], [(f"v{row[0]}", row[0]) for row in rows])
        limited.dispose()
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP USER 'erpsync_limited'@'%'"))
    with db.connect() as conn:
        assert [tuple(r) for r in conn.execute(select(table.c.id, table.c.label).order_by(table.c.id))] == [
            (row[0], f"v{row[0]}") for row in rows
        ]


def test_a_postgresql_role_without_temporary_tables_gets_one_update_per_row(postgresql: Database) -> None:
    """The refused temporary table is rolled back to a savepoint: the transaction goes on."""
    db = postgresql
    table = _table()
    table.create(db.engine)
    rows = _rows("postgresql", 50)
    role = f"limited_{db.url.database}"
    with db.engine.begin() as conn:
        db.dialect.bulk_insert(conn, table, [c.key for c in table.columns], rows[:-1])
        conn.execute(text(f'REVOKE TEMPORARY ON DATABASE "{db.url.database}" FROM PUBLIC'))
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT SELECT, INSERT, UPDATE ON awkward TO "{role}"'))
    limited = create_engine(db.url.set(username=role))
    try:
        with limited.begin() as conn:
            db.dialect.bulk_insert(conn, table, [c.key for c in table.columns], rows[-1:])
            db.dialect.bulk_update(conn, table, ["id"], ["label"], [(f"v{row[0]}", row[0]) for row in rows])
            assert conn.info[JOINED_UPDATES] is False  # the refusal was met, and the rows still updated
    finally:
        limited.dispose()
        with db.engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
    with db.connect() as conn:
        assert [tuple(r) for r in conn.execute(select(table.c.id, table.c.label).order_by(table.c.id))] == [
            (row[0], f"v{row[0]}") for row in rows
        ]


def test_postgresql_updates_through_its_own_temporary_table_whatever_the_search_path(
    postgresql: Database,
) -> None:
    """A table of the temporary table's name, in a schema searched first, is neither used nor touched."""
    db = postgresql
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, code varchar(20))"))
        conn.execute(text("INSERT INTO t SELECT g, 'c' FROM generate_series(1, 30) g"))
        conn.execute(text(f"CREATE TABLE public.{UPDATE_TABLE} (code varchar(20), id int)"))
    table = Table("t", MetaData(), autoload_with=db.engine)
    with db.engine.begin() as conn:
        conn.execute(text("SET LOCAL search_path = public, pg_temp"))
        db.dialect.bulk_update(conn, table, ["id"], ["code"], [(f"v{i}", i) for i in range(1, 31)])
    with db.connect() as conn:
        assert conn.execute(text("SELECT id, code FROM t ORDER BY id")).all() == [
            (i, f"v{i}") for i in range(1, 31)
        ]
        assert conn.execute(text(f"SELECT count(*) FROM public.{UPDATE_TABLE}")).scalar() == 0


def test_postgresql_updates_many_rows_as_it_updates_one(postgresql: Database) -> None:
    """A value too long is refused, not cut; arrays and a mix of aware and naive times are kept."""
    db = postgresql
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, code varchar(5), tags int[], at timestamptz)"))
        conn.execute(text("INSERT INTO t SELECT g, 'c', ARRAY[g], NULL FROM generate_series(1, 30) g"))
    table = Table("t", MetaData(), autoload_with=db.engine)
    paris = timezone(timedelta(hours=2))
    with db.engine.begin() as conn:
        conn.execute(text("SET TIME ZONE 'UTC'"))
        db.dialect.bulk_update(conn, table, ["id"], ["tags"], [([i, i], i) for i in range(1, 31)])
        db.dialect.bulk_update(
            conn,
            table,
            ["id"],
            ["at"],
            [(datetime(2026, 1, 1, 12, tzinfo=paris if i % 2 else None), i) for i in range(1, 31)],
        )
    with db.connect() as conn:
        found = {r.id: (r.tags, r.at.hour) for r in conn.execute(text("SELECT id, tags, at FROM t"))}
    assert found == {i: ([i, i], 10 if i % 2 else 12) for i in range(1, 31)}
    with pytest.raises(DBAPIError, match="too long"), db.engine.begin() as conn:
        db.dialect.bulk_update(conn, table, ["id"], ["code"], [("abcdefgh", i) for i in range(1, 31)])
    with db.connect() as conn:
        assert conn.execute(text("SELECT DISTINCT code FROM t")).scalars().all() == ["c"]

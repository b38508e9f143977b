"""MariaDB columns whose reflected type says less than the column: text keys' collations, doubles.

A text key in any charset and collation is copied into erpsync's tables with
that collation, so they join and compare as the key does; a ``DOUBLE`` leaves
MariaDB as the float it holds, not rounded to 10 places.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from erpsync.db import Database, open_database
from erpsync.errors import DatabaseError
from erpsync.sync.node import Node, init_node
from erpsync.sync.session import sync
from erpsync.sync.verify import verify
from tests.conftest import fresh_database
from tests.sync_support import execute, rows, same

TABLES = (
    "CREATE TABLE t_country (code VARCHAR(10) {collate} NOT NULL PRIMARY KEY, name VARCHAR(40)) {options}",
    "CREATE TABLE t_code (code VARCHAR(10) {collate} NOT NULL, n INTEGER NOT NULL, label VARCHAR(40), "
    "PRIMARY KEY (code, n)) {options}",
)
GENERAL = "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
"""The default of Debian's server, written out: the test does not depend on the server's."""
COLLATIONS = (
    # the key column's COLLATE, the tables' options, and three keys the collation tells apart
    pytest.param("", GENERAL, ("FR", "ss", "ß"), id="general_ci"),
    pytest.param("", "COLLATE utf8mb4_unicode_520_ci", ("FR", "DE", "ÅR"), id="unicode_520"),
    pytest.param("", "CHARACTER SET latin1", ("FR", "u", "ü"), id="latin1"),  # one key in utf8mb4_unicode_ci
    pytest.param("COLLATE utf8mb4_bin", GENERAL, ("FR", "abc", "ABC"), id="bin_column"),
)
CODES = ("AA", "BB", "CC")
"""The text keys of ``t_code``, ASCII: MariaDB 10.11 finds no non-ASCII text of a latin1 column in
a list of several ``(code, n)`` rows, a server bug of its own."""


@contextmanager
def server_and_peers(tmp_path: Path) -> Iterator[tuple[Database, Database, Database]]:
    """A MariaDB database, a SQLite one and a PostgreSQL one, not nodes yet."""
    with ExitStack() as stack:
        dbs = [
            stack.enter_context(open_database(stack.enter_context(fresh_database(e, tmp_path)), create=True))
            for e in ("mariadb", "sqlite", "postgresql")
        ]
        yield dbs[0], dbs[1], dbs[2]


def collations(db: Database, *tables: str) -> set[str]:
    """The collations of the columns ``code`` and ``k0`` of ``tables``."""
    marks = ", ".join(f":t{i}" for i in range(len(tables)))
    found = rows(
        db,
        "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        f"AND TABLE_NAME IN ({marks}) AND COLUMN_NAME IN ('code', 'k0')",
        **{f"t{i}": name for i, name in enumerate(tables)},
    )
    return {str(r[0]) for r in found}


def metadata_tables(db: Database, table: str) -> tuple[str, str]:
    """The shadow and log tables of synced table ``table``."""
    synced = Node(db).table(table)
    return synced.shadow.name, synced.log.name


def contents(db: Database) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """The rows of ``t_country`` and ``t_code``, in no order (each collation orders its own way)."""
    countries = rows(db, "SELECT code, name FROM t_country")
    return set(countries), set(rows(db, "SELECT code, n, label FROM t_code"))


@pytest.mark.parametrize(("collate", "options", "keys"), COLLATIONS)
def test_text_keys_sync_in_their_own_collation(
    tmp_path: Path, collate: str, options: str, keys: tuple[str, str, str]
) -> None:
    (a, b, c), (x, y, z) = keys, CODES
    with server_and_peers(tmp_path) as (maria, lite, pg):
        execute(maria, *(t.format(collate=collate, options=options) for t in TABLES))
        for peer in (lite, pg):
            execute(peer, *(t.format(collate="", options="") for t in TABLES))
        # rows there before the node (registered), rows written after (captured)
        execute(
            maria,
            "INSERT INTO t_country VALUES (:a, 'first'), (:b, 'second')",
            "INSERT INTO t_code VALUES (:x, 1, 'one'), (:x, 2, 'two'), (:y, 1, 'three')",
            a=a,
            b=b,
            x=x,
            y=y,
        )
        for db, name in ((maria, "server"), (lite, "pc"), (pg, "pg")):
            init_node(db, name)
        for table in ("t_country", "t_code"):
            assert len(collations(maria, table, *metadata_tables(maria, table))) == 1
        execute(
            maria,
            "INSERT INTO t_country VALUES (:c, 'third')",
            "UPDATE t_country SET name = 'premier' WHERE code = :a",
            "INSERT INTO t_code VALUES (:z, 1, 'four')",
            "UPDATE t_code SET label = 'deux' WHERE code = :x AND n = 2",
            "DELETE FROM t_code WHERE code = :y",
            a=a,
            c=c,
            x=x,
            y=y,
            z=z,
        )
        sync(lite, maria)
        sync(pg, maria)
        countries = {(a, "premier"), (b, "second"), (c, "third")}
        codes = {(x, 1, "one"), (x, 2, "deux"), (z, 1, "four")}
        for db in (maria, lite, pg):
            assert contents(db) == (countries, codes)
        same(maria, lite, pg)

        # the PC's writes, applied on the server by key
        execute(
            lite,
            "UPDATE t_country SET name = 'troisième' WHERE code = :c",
            "DELETE FROM t_country WHERE code = :b",
            "UPDATE t_code SET label = 'un' WHERE code = :x AND n = 1",
            "INSERT INTO t_code VALUES (:z, 2, 'five')",
            b=b,
            c=c,
            x=x,
            z=z,
        )
        sync(lite, maria)
        sync(pg, maria)
        countries = {(a, "premier"), (c, "troisième")}
        codes = {(x, 1, "un"), (x, 2, "deux"), (z, 1, "four"), (z, 2, "five")}
        for db in (maria, lite, pg):
            assert contents(db) == (countries, codes)
        same(maria, lite, pg)


def test_node_init_again_gives_an_older_nodes_key_columns_the_keys_collation(tmp_path: Path) -> None:
    country = TABLES[0]
    with server_and_peers(tmp_path) as (maria, lite, _):
        execute(
            maria,
            country.format(collate="", options=GENERAL),
            "INSERT INTO t_country VALUES ('FR', 'France')",
        )
        execute(lite, country.format(collate="", options=""))
        init_node(maria, "server")
        init_node(lite, "pc")
        shadow, log = metadata_tables(maria, "t_country")
        for name in (shadow, log):  # as an older erpsync made them: in the collation of erpsync's tables
            execute(maria, f"ALTER TABLE {name} MODIFY k0 VARCHAR(10) COLLATE utf8mb4_unicode_ci NULL")
        execute(maria, "INSERT INTO t_country VALUES ('DE', 'Allemagne')")
        with pytest.raises(DatabaseError, match="Illegal mix of collations"):
            sync(lite, maria)

        init_node(maria, None)
        assert collations(maria, "t_country", shadow, log) == {"utf8mb4_general_ci"}
        sync(lite, maria)
        assert set(rows(lite, "SELECT code, name FROM t_country")) == {("FR", "France"), ("DE", "Allemagne")}
        same(maria, lite)

        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(maria.engine, "before_cursor_execute", record)
        init_node(maria, None)  # already matching: nothing is rebuilt
        event.remove(maria.engine, "before_cursor_execute", record)
        assert statements
        assert not [s for s in statements if s.startswith("ALTER TABLE")]


DOUBLES = (
    1 / 3,
    0.1 + 0.2,
    1e-12,
    6.02214076e23,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -123456789.12345679,
)
MEASURES = "CREATE TABLE t_measure (id INTEGER NOT NULL PRIMARY KEY, d {double}, r {real})"


def test_doubles_travel_exactly(tmp_path: Path) -> None:
    with server_and_peers(tmp_path) as (maria, lite, pg):
        execute(maria, MEASURES.format(double="DOUBLE", real="REAL"))
        execute(lite, MEASURES.format(double="DOUBLE", real="REAL"))
        execute(pg, MEASURES.format(double="DOUBLE PRECISION", real="DOUBLE PRECISION"))
        insert = "INSERT INTO t_measure VALUES (:i, :d, :r)"
        half = len(DOUBLES) // 2
        for i, v in enumerate(DOUBLES[:half]):  # registered
            execute(maria, insert, i=i, d=v, r=-v)
        for db, name in ((maria, "server"), (lite, "pc"), (pg, "pg")):
            init_node(db, name)
        for i, v in enumerate(DOUBLES[half:], start=half):  # captured
            execute(maria, insert, i=i, d=v, r=-v)
        sync(lite, maria)
        sync(pg, maria)
        expected = [(i, v, -v) for i, v in enumerate(DOUBLES)]
        for db in (maria, lite, pg):
            assert rows(db, "SELECT id, d, r FROM t_measure ORDER BY id") == expected
        same(maria, lite, pg)

        # written elsewhere, arriving on MariaDB
        execute(lite, "UPDATE t_measure SET d = :v WHERE id = 0", v=2 / 3)
        execute(pg, "INSERT INTO t_measure VALUES (100, :v, NULL)", v=1e-15)
        sync(lite, maria)
        sync(pg, maria)
        sync(lite, maria)
        for db in (maria, lite, pg):
            assert rows(db, "SELECT id, d, r FROM t_measure WHERE id IN (0, 100) ORDER BY id") == [
                (0, 2 / 3, -1 / 3),
                (100, 1e-15, None),
            ]
        same(maria, lite, pg)

        # a difference in the 15th significant digit is a difference
        execute(maria, "UPDATE t_measure SET d = :v WHERE id = 0", v=0.666666666666667)
        report = verify(lite, maria)
        assert not report.same
        assert len(report.tables["t_measure"].different) == 1

"""MariaDB columns whose reflected type says less than the column: doubles.

A ``DOUBLE`` leaves MariaDB as the float it holds, not rounded to 10 places.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from erpsync.db import Database, open_database
from erpsync.sync.node import init_node
from erpsync.sync.session import sync
from erpsync.sync.verify import verify
from tests.conftest import fresh_database
from tests.sync_support import execute, rows, same


@contextmanager
def server_and_peers(tmp_path: Path) -> Iterator[tuple[Database, Database, Database]]:
    """A MariaDB database, a SQLite one and a PostgreSQL one, not nodes yet."""
    with ExitStack() as stack:
        dbs = [
            stack.enter_context(open_database(stack.enter_context(fresh_database(e, tmp_path)), create=True))
            for e in ("mariadb", "sqlite", "postgresql")
        ]
        yield dbs[0], dbs[1], dbs[2]


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

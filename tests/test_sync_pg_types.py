"""PostgreSQL's own column types: types without an equality, ``GENERATED ALWAYS`` identity columns.

The capture triggers compare each column of an updated row: a type that has no ``=`` (json,
point, xml) must not make the application's UPDATE fail, nor one whose ``=`` compares areas
(box, circle) hide a change. Sync inserts rows with their ids: an identity column
``GENERATED ALWAYS`` must take them on every path, and the ids the application draws next
must not collide with them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.exc import SAWarning

from erpsync.db import Database
from erpsync.sync import conflicts
from erpsync.sync.node import Node, init_node
from erpsync.sync.policies import PolicyOverride
from erpsync.sync.session import sync
from erpsync.sync.undo import undo_last
from tests.sync_support import databases, execute, rows, same, value

# Every type that has no equality of its own, or none that tells two values apart, and
# control columns whose types have one (compared directly, as before).
SHAPES = (
    ("title", "TEXT", "'a'", "'b'"),
    ("body", "JSON", """'{"x": 1}'""", """'{"x": 2}'"""),
    ('"Notes"', "JSON", "'[1]'", "'[1, 2]'"),
    ("at", "POINT", "'(1,2)'", "'(3,4)'"),
    ("area", "BOX", "'(0,0),(1,1)'", "'(1,1),(2,2)'"),  # the same area: box = box is true
    ("ring", "CIRCLE", "'<(0,0),1>'", "'<(5,5),1>'"),  # the same area
    ("route", "PATH", "'[(0,0),(1,1)]'", "'[(2,2),(3,3)]'"),  # as many points
    ("shape", "POLYGON", "'((0,0),(1,0),(0,1))'", "'((0,0),(2,0),(0,2))'"),
    ("edge", "LSEG", "'[(0,0),(1,1)]'", "'[(0,0),(2,2)]'"),
    ("axis", "LINE", "'{1,-1,0}'", "'{1,-1,1}'"),
    ("doc", "XML", "'<a/>'", "'<b/>'"),
    ("tags", "JSON[]", """ARRAY['{"t": 1}'::json]""", """ARRAY['{"t": 2}'::json]"""),
    ("spots", "POINT[]", "ARRAY['(1,1)'::point]", "ARRAY['(2,2)'::point]"),
    ("areas", "BOX[]", "ARRAY['(0,0),(1,1)'::box]", "ARRAY['(1,1),(2,2)'::box]"),
    ("counts", "INTEGER[]", "'{1,2}'", "'{1,3}'"),
    ("meta", "JSONB", """'{"y": 1}'""", """'{"y": 2}'"""),
    ("amount", "NUMERIC(10,2)", "1.50", "2.50"),
)
DOC = (
    f"CREATE TABLE doc (id INTEGER PRIMARY KEY, {', '.join(f'{c} {t}' for c, t, _, _ in SHAPES)})",
    f"INSERT INTO doc VALUES (1, {', '.join(old for _, _, old, _ in SHAPES)})",
)


@pytest.fixture(autouse=True)
def _unknown_types() -> Iterator[None]:
    """SQLAlchemy reflects point, box, xml … as NullType, with a warning: they sync as text."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Did not recognize type", SAWarning)
        yield


def logged_masks(db: Database, table: str) -> list[int]:
    """The column masks the capture logged for ``table`` since the last fold, in order."""
    log = Node(db).table(table).log.name
    return [int(m) for (m,) in rows(db, f"SELECT m FROM {db.quote(log)} ORDER BY seq")]


def bit(db: Database, table: str, column: str) -> int:
    """The mask bit of ``column`` (stored name) of synced ``table``."""
    names = [c.name for c in Node(db).table(table).columns]
    return 1 << names.index(column)


def test_updates_of_columns_without_equality_work_and_are_captured(tmp_path: Path) -> None:
    with databases(tmp_path, "postgresql", erp=False) as (pg,):
        execute(pg, *DOC)
        init_node(pg, "serveur")
        init_node(pg, None)  # again: the same triggers
        for column, _, _, new in SHAPES:
            execute(pg, f"UPDATE doc SET {column} = {new} WHERE id = 1")
        execute(pg, "UPDATE doc SET title = title")  # the same values: no column changed
        names = [column.strip('"') for column, _, _, _ in SHAPES]
        assert logged_masks(pg, "doc") == [*(bit(pg, "doc", c) for c in names), 0]


def test_a_box_moved_without_changing_its_area_is_captured(tmp_path: Path) -> None:
    measured = [shape for shape in SHAPES if shape[0] in ("area", "ring", "route")]  # they have an =
    with databases(tmp_path, "postgresql", erp=False) as (pg,):
        execute(
            pg,
            f"CREATE TABLE fig (id INTEGER PRIMARY KEY, {', '.join(f'{c} {t}' for c, t, _, _ in measured)})",
        )
        execute(pg, f"INSERT INTO fig VALUES (1, {', '.join(old for _, _, old, _ in measured)})")
        init_node(pg, "serveur")
        execute(pg, f"UPDATE fig SET {', '.join(f'{c} = {new}' for c, _, _, new in measured)}")
        assert logged_masks(pg, "fig") == [0b111]


def test_a_table_of_json_syncs_with_sqlite_both_ways(tmp_path: Path) -> None:
    query = "SELECT id, title, body FROM doc ORDER BY id"
    with databases(tmp_path, "postgresql", "sqlite", erp=False) as (pg, lite):
        execute(pg, "CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(20), body JSON)")
        execute(lite, "CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(20), body JSON)")
        init_node(pg, "serveur")
        init_node(lite, "pc")
        execute(pg, """INSERT INTO doc VALUES (1, 'a', '{"x": 1}')""")
        sync(lite, pg)
        execute(pg, """UPDATE doc SET body = '{"x": 2}' WHERE id = 1""")
        execute(lite, """INSERT INTO doc VALUES (2, 'b', '{"y": [1, 2]}')""")
        sync(lite, pg)
        execute(lite, "UPDATE doc SET title = 'c' WHERE id = 2")
        sync(lite, pg)
        same(pg, lite)
        assert rows(pg, query) == [(1, "a", {"x": 2}), (2, "c", {"y": [1, 2]})]
        assert [(i, t, b.replace(" ", "")) for i, t, b in rows(lite, query)] == [
            (1, "a", '{"x":2}'),
            (2, "c", '{"y":[1,2]}'),
        ]


def test_values_of_every_such_type_reach_the_other_server(tmp_path: Path) -> None:
    with databases(tmp_path, "postgresql", "postgresql", erp=False) as (a, b):
        for db in (a, b):
            execute(db, DOC[0])
        execute(a, DOC[1])
        init_node(a, "a")
        init_node(b, "b")
        sync(b, a)
        for column, _, _, new in SHAPES:
            execute(a, f"UPDATE doc SET {column} = {new} WHERE id = 1")
        sync(b, a)
        same(a, b)
        for column, type_, _, new in SHAPES:
            assert value(b, f"SELECT {column}::text = CAST({new} AS {type_})::text FROM doc"), column


# -- GENERATED ALWAYS AS IDENTITY -----------------------------------------------------------------

TREE = (
    "CREATE TABLE t (id INTEGER {id} PRIMARY KEY, x VARCHAR(20) UNIQUE, parent_id INTEGER REFERENCES t (id))"
)
ALWAYS = "GENERATED ALWAYS AS IDENTITY"
TREE_ROWS = "SELECT c.x, p.x FROM t c LEFT JOIN t p ON p.id = c.parent_id ORDER BY c.x"


@contextmanager
def identity_pair(tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """A PostgreSQL node whose ids are ``GENERATED ALWAYS``, holding row 1 ``'server'``, and
    a SQLite node, both with a self-referencing table (its new rows are inserted one by one)."""
    with databases(tmp_path, "postgresql", "sqlite", erp=False) as (pg, lite):
        execute(pg, TREE.format(id=ALWAYS))
        execute(lite, TREE.format(id=""))
        init_node(pg, "serveur")
        init_node(lite, "pc")
        execute(pg, "INSERT INTO t (x) VALUES ('server')")
        yield pg, lite


def draws_a_free_id(pg: Database) -> None:
    """The application's next row gets an id of its own, above every id the sync wrote."""
    top = value(pg, "SELECT MAX(id) FROM t")
    execute(pg, "INSERT INTO t (x) VALUES ('next')")
    assert value(pg, "SELECT id FROM t WHERE x = 'next'") == top + 1


def test_rows_of_a_self_referencing_table_are_inserted_with_their_ids(tmp_path: Path) -> None:
    with identity_pair(tmp_path) as (pg, lite):
        execute(lite, "INSERT INTO t (id, x) VALUES (1, 'root')", "INSERT INTO t VALUES (7, 'leaf', 1)")
        sync(pg, lite)
        same(pg, lite)
        assert rows(pg, TREE_ROWS) == [("leaf", "root"), ("root", None), ("server", None)]
        assert value(pg, "SELECT id FROM t WHERE x = 'leaf'") == 7  # free here: kept
        draws_a_free_id(pg)


def test_a_row_whose_business_key_is_held_is_inserted_with_its_id(tmp_path: Path) -> None:
    with databases(tmp_path, "postgresql", "sqlite", erp=False) as (pg, lite):
        execute(pg, f"CREATE TABLE t (id INTEGER {ALWAYS} PRIMARY KEY, x VARCHAR(20) UNIQUE)")
        execute(lite, "CREATE TABLE t (id INTEGER PRIMARY KEY, x VARCHAR(20) UNIQUE)")
        init_node(pg, "serveur")
        init_node(lite, "pc")
        execute(pg, "INSERT INTO t (x) VALUES ('same')")
        execute(lite, "INSERT INTO t VALUES (5, 'same')")
        summary = sync(pg, lite)  # the server receives first: it holds the business key
        assert summary.tables["t"].renumbered == 1
        same(pg, lite)
        assert rows(pg, "SELECT id, x FROM t ORDER BY id") == [(1, "same"), (5, "same-2")]
        draws_a_free_id(pg)


def test_an_undo_puts_rows_back_with_their_ids(tmp_path: Path) -> None:
    with identity_pair(tmp_path) as (pg, lite):
        execute(lite, "INSERT INTO t (id, x) VALUES (1, 'root')", "INSERT INTO t VALUES (7, 'leaf', 1)")
        sync(pg, lite)
        execute(lite, "DELETE FROM t WHERE x = 'leaf'")
        sync(pg, lite)
        assert value(pg, "SELECT COUNT(*) FROM t WHERE x = 'leaf'") == 0
        report = undo_last(pg)
        assert report is not None and report.reinserted == 1
        assert value(pg, "SELECT id FROM t WHERE x = 'leaf'") == 7
        draws_a_free_id(pg)


def test_a_row_deleted_here_comes_back_with_the_peers_values(tmp_path: Path) -> None:
    with identity_pair(tmp_path) as (pg, lite):
        sync(pg, lite)
        execute(pg, "DELETE FROM t WHERE x = 'server'")
        execute(lite, "UPDATE t SET x = 'edited' WHERE x = 'server'")
        manual = [PolicyOverride.parse("manual")]
        assert sync(pg, lite, pull=True, push=False, policies=manual).conflicts == 1
        (queued,) = conflicts.list_conflicts(pg)
        conflicts.resolve(pg, queued.id, "remote")
        assert rows(pg, "SELECT x FROM t") == [("edited",)]
        draws_a_free_id(pg)


def test_the_rows_of_an_identity_column_travel_back_to_sqlite(tmp_path: Path) -> None:
    with identity_pair(tmp_path) as (pg, lite):
        execute(lite, "INSERT INTO t (id, x) VALUES (1, 'root')", "INSERT INTO t VALUES (2, 'leaf', 1)")
        sync(pg, lite)
        execute(pg, "INSERT INTO t (x, parent_id) SELECT 'child', id FROM t WHERE x = 'leaf'")
        sync(lite, pg)
        same(pg, lite)
        assert rows(lite, TREE_ROWS) == [
            ("child", "leaf"),
            ("leaf", "root"),
            ("root", None),
            ("server", None),
        ]

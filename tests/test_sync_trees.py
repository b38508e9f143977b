"""Tables that reference themselves (trees), keyed by integers or by text, and tables that reference
each other (a cycle of foreign keys), on every engine."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from erpsync.db import Database
from erpsync.errors import ErpSyncError
from erpsync.sync.node import init_node
from erpsync.sync.policies import PolicyOverride
from erpsync.sync.session import sync
from erpsync.sync.undo import undo_last
from erpsync.transport.folder import exchange
from erpsync.transport.server import running
from tests.conftest import ENGINES
from tests.sync_support import databases, execute, pairs, rows, same

PAIRS = [p for p in pairs(ENGINES) if p[0] != p[1]]
NODES = (
    "CREATE TABLE t_node (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(20) NOT NULL, parent_id INTEGER, "
    "FOREIGN KEY (parent_id) REFERENCES t_node (id))"
)
CATEGORIES = (
    "CREATE TABLE t_cat (code VARCHAR(20) NOT NULL PRIMARY KEY, label VARCHAR(40), parent_code VARCHAR(20), "
    "FOREIGN KEY (parent_code) REFERENCES t_cat (code))"
)
TREE = "SELECT c.name, p.name FROM t_node c LEFT JOIN t_node p ON p.id = c.parent_id ORDER BY c.name"


@contextmanager
def two(tmp_path: Path, engines: tuple[str, str], schema: str) -> Iterator[tuple[Database, Database]]:
    """Two fresh nodes on ``engines`` holding ``schema``, no rows."""
    with databases(tmp_path, *engines, erp=False) as (a, b):
        for n, db in enumerate((a, b)):
            execute(db, schema)
            init_node(db, f"n{n}")
        yield a, b


@pytest.mark.parametrize("engines", PAIRS, ids="-".join)
def test_a_subtree_deleted_children_first_is_deleted_everywhere(
    tmp_path: Path, engines: tuple[str, str]
) -> None:
    with two(tmp_path, engines, NODES) as (a, b):
        execute(
            a,
            "INSERT INTO t_node VALUES (1, 'root', NULL)",
            "INSERT INTO t_node VALUES (2, 'child', 1)",
            "INSERT INTO t_node VALUES (3, 'grandchild', 2)",
            "INSERT INTO t_node VALUES (4, 'other root', NULL)",
            "INSERT INTO t_node VALUES (5, 'itself', NULL)",
        )
        execute(a, "UPDATE t_node SET parent_id = 5 WHERE id = 5")  # a row pointing at itself
        sync(a, b)
        assert len(rows(b, "SELECT id FROM t_node")) == 5
        # the application deletes a subtree children first, and the row pointing at itself (which
        # MariaDB refuses unless it points elsewhere first)
        if engines[0] == "mariadb":
            execute(a, "UPDATE t_node SET parent_id = NULL WHERE id = 5")
        execute(a, *(f"DELETE FROM t_node WHERE id = {i}" for i in (3, 2, 1, 5)))
        sync(a, b)
        sync(a, b)
        same(a, b)
        for db in (a, b):
            assert rows(db, TREE) == [("other root", None)]


@pytest.mark.parametrize("engines", PAIRS, ids="-".join)
def test_a_row_moved_under_a_parent_created_since_follows_it(
    tmp_path: Path, engines: tuple[str, str]
) -> None:
    with two(tmp_path, engines, NODES) as (a, b):
        execute(a, "INSERT INTO t_node VALUES (1, 'child', NULL)")
        execute(b, "INSERT INTO t_node VALUES (1, 'colliding', NULL)")  # takes id 1 there first
        sync(a, b)
        execute(
            a,
            "INSERT INTO t_node VALUES (10, 'parent', NULL)",
            "UPDATE t_node SET parent_id = 10 WHERE id = 1",
        )
        sync(a, b)
        same(a, b)
        for db in (a, b):
            assert rows(db, TREE) == [("child", "parent"), ("colliding", None), ("parent", None)]


@pytest.mark.parametrize("engines", PAIRS, ids="-".join)
def test_a_tree_keyed_by_text_arrives_parents_first(tmp_path: Path, engines: tuple[str, str]) -> None:
    with two(tmp_path, engines, CATEGORIES) as (a, b):
        execute(a, "INSERT INTO t_cat VALUES ('shoes', 'Shoes', NULL)")  # first in the log
        execute(a, "INSERT INTO t_cat VALUES ('clothing', 'Clothing', NULL)")
        execute(a, "UPDATE t_cat SET parent_code = 'clothing' WHERE code = 'shoes'")
        execute(b, "INSERT INTO t_cat VALUES ('boots', 'Boots', NULL)")
        execute(b, "INSERT INTO t_cat VALUES ('footwear', 'Footwear', NULL)")
        execute(b, "UPDATE t_cat SET parent_code = 'footwear' WHERE code = 'boots'")
        sync(a, b)
        execute(b, "UPDATE t_cat SET parent_code = 'shoes' WHERE code = 'boots'")
        execute(
            a,
            "INSERT INTO t_cat VALUES ('hats', 'Hats', NULL)",
            "UPDATE t_cat SET parent_code = 'hats' WHERE code = 'clothing'",
        )
        sync(b, a)
        same(a, b)
        for db in (a, b):
            assert rows(db, "SELECT code, parent_code FROM t_cat ORDER BY code") == [
                ("boots", "shoes"),
                ("clothing", "hats"),
                ("footwear", None),
                ("hats", None),
                ("shoes", "clothing"),
            ]


def departments(db: Database, empty: str = "") -> None:
    """A department and its manager, the manager in the department: foreign keys in a cycle
    (SQLite takes a reference to a table not created yet, the servers a key added after)."""
    emp = f"CREATE TABLE t_emp (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(20), dept_id INTEGER{empty}"
    dept = f"CREATE TABLE t_dept (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(20), boss_id INTEGER{empty}"
    if db.dialect.is_server:
        add = "ALTER TABLE t_emp ADD FOREIGN KEY (dept_id) REFERENCES t_dept (id)"
        execute(db, emp + ")", dept + ", FOREIGN KEY (boss_id) REFERENCES t_emp (id))", add)
    else:
        execute(db, emp + " REFERENCES t_dept (id))", dept + " REFERENCES t_emp (id))")


def hire(db: Database, name: str) -> None:
    """Department 1, its manager 1 in it and a clerk 2, as an application writes them: the
    manager first, then the department, then the manager's department."""
    execute(
        db,
        f"INSERT INTO t_emp VALUES (1, 'boss-{name}', NULL)",
        f"INSERT INTO t_dept VALUES (1, 'dept-{name}', 1)",
        "UPDATE t_emp SET dept_id = 1 WHERE id = 1",
        f"INSERT INTO t_emp VALUES (2, 'clerk-{name}', 1)",
    )


STAFF = (
    "SELECT d.name, b.name, e.name FROM t_emp e JOIN t_dept d ON d.id = e.dept_id "
    "JOIN t_emp b ON b.id = d.boss_id ORDER BY e.name"
)


@pytest.mark.parametrize("via", ["direct", "http", "folder"])
def test_tables_referencing_each_other_sync(tmp_path: Path, via: str) -> None:
    """Each node hires a department with the same ids: every row arrives, under its own rows."""
    with databases(tmp_path, "sqlite", "postgresql", "mariadb", erp=False) as nodes:
        for n, db in enumerate(nodes):
            departments(db)
            init_node(db, f"n{n}")
            hire(db, "abc"[n])
        a, b, c = nodes
        if via == "folder":
            (tmp_path / "partage").mkdir()
            folder = (tmp_path / "partage").as_uri()
            for _ in range(2):
                for db in nodes:
                    exchange(db, folder)
        elif via == "http":
            with running(b) as url:
                for db in (a, c, a):
                    sync(db, url)
        else:
            for one, other in ((a, b), (b, c), (a, b)):
                sync(one, other)
        same(*nodes)
        expected = [(f"dept-{n}", f"boss-{n}", f"{role}-{n}") for role in ("boss", "clerk") for n in "abc"]
        for db in nodes:
            assert rows(db, STAFF) == expected


def test_a_cycle_through_columns_never_empty_stops_the_sync_with_the_reason(tmp_path: Path) -> None:
    with databases(tmp_path, "sqlite", "sqlite", erp=False) as (a, b):
        for n, db in enumerate((a, b)):
            departments(db, " NOT NULL")
            init_node(db, f"n{n}")
        execute(  # foreign keys checked at commit: the only way to write such rows
            a,
            "PRAGMA defer_foreign_keys = ON",
            "INSERT INTO t_emp VALUES (1, 'boss', 1)",
            "INSERT INTO t_dept VALUES (1, 'dept', 1)",
        )
        cycle = r"of t_(emp and t_dept|dept and t_emp): they reference each other"
        with pytest.raises(ErpSyncError, match=cycle) as refused:
            sync(a, b)
        assert re.search(r"--exclude t_(emp|dept) on every node", refused.value.hint)
        assert rows(b, "SELECT id FROM t_emp UNION ALL SELECT id FROM t_dept") == []


@pytest.mark.parametrize("engines", PAIRS, ids="-".join)
def test_the_undo_of_a_sync_puts_a_tree_back_as_it_was(tmp_path: Path, engines: tuple[str, str]) -> None:
    with two(tmp_path, engines, NODES) as (a, b):
        execute(
            a,
            "INSERT INTO t_node VALUES (1, 'root', NULL)",
            "INSERT INTO t_node VALUES (2, 'child', 1)",
            "INSERT INTO t_node VALUES (3, 'grandchild', 2)",
        )
        sync(b, a, push=False)
        assert undo_last(b) is not None  # the three levels it brought go: none keeps another
        assert rows(b, TREE) == []
        sync(a, b)  # the undo was a local edit of b: the tree goes from a too, children first
        assert rows(a, TREE) == []
        assert undo_last(a) is not None  # and comes back, parents first
        assert rows(a, TREE) == [("child", "root"), ("grandchild", "child"), ("root", None)]


def test_rows_of_a_cycle_arrive_complete_under_no_overwrite(tmp_path: Path) -> None:
    keep = [PolicyOverride.parse("no-overwrite")]
    with databases(tmp_path, "sqlite", "postgresql", erp=False) as nodes:
        for n, db in enumerate(nodes):
            departments(db)
            init_node(db, f"n{n}")
            hire(db, "ab"[n])
        a, b = nodes
        assert sync(a, b, policies=keep).conflicts == 0
        same(a, b)
        expected = [(f"dept-{n}", f"boss-{n}", f"{role}-{n}") for role in ("boss", "clerk") for n in "ab"]
        assert rows(a, STAFF) == rows(b, STAFF) == expected

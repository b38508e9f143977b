"""Tables that reference themselves (trees), keyed by integers or by text, on every pair of engines."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from erpsync.db import Database, open_database
from erpsync.errors import ErpSyncError
from erpsync.sync.node import init_node
from erpsync.sync.session import sync
from tests.conftest import ENGINES, fresh_database
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


def test_tables_referencing_each_other_stop_the_sync_with_the_reason(tmp_path: Path) -> None:
    schema = (
        "CREATE TABLE t_emp (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(20), dept_id INTEGER)",
        "CREATE TABLE t_dept (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(20), boss_id INTEGER, "
        "FOREIGN KEY (boss_id) REFERENCES t_emp (id))",
        "ALTER TABLE t_emp ADD FOREIGN KEY (dept_id) REFERENCES t_dept (id)",
    )
    with (
        fresh_database("postgresql", tmp_path) as a_url,
        fresh_database("postgresql", tmp_path) as b_url,
        open_database(a_url) as a,
        open_database(b_url) as b,
    ):
        for n, db in enumerate((a, b)):
            execute(db, *schema)
            init_node(db, f"n{n}")
        execute(
            a,
            "INSERT INTO t_emp VALUES (1, 'Alice', NULL)",
            "INSERT INTO t_dept VALUES (1, 'R&D', 1)",
            "UPDATE t_emp SET dept_id = 1 WHERE id = 1",
        )
        cycle = r"of t_(emp and t_dept|dept and t_emp): they reference each other"
        with pytest.raises(ErpSyncError, match=cycle) as refused:
            sync(a, b)
        assert re.search(r"--exclude t_(emp|dept) on every node", refused.value.hint)
        assert rows(b, "SELECT id FROM t_emp UNION ALL SELECT id FROM t_dept") == []

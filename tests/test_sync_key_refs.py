"""Primary keys made of references: a link table keyed by two rows, a table sharing its parent's id.

Their key values are other rows' local ids, which differ from node to node when
ids collide: the key must follow the rows it references, never the numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from erpsync.db import Database, open_database
from erpsync.sync import conflicts
from erpsync.sync.adopt import adopt
from erpsync.sync.encoding import encoder, natural_gid, row_text
from erpsync.sync.node import VERSION, Node, init_node
from erpsync.sync.policies import PolicyOverride
from erpsync.sync.session import sync
from erpsync.transport.folder import exchange
from erpsync.transport.server import running
from tests.conftest import ENGINES, fresh_database
from tests.sync_support import databases, execute, rows, same, value

SCHEMA = (
    "CREATE TABLE t_item (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(50) NOT NULL)",
    "CREATE TABLE t_tag (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(50) NOT NULL)",
    # every column is in the key: a row holds no value besides the two rows it links
    "CREATE TABLE t_item_tag (item_id INTEGER NOT NULL, tag_id INTEGER NOT NULL, "
    "PRIMARY KEY (item_id, tag_id), FOREIGN KEY (item_id) REFERENCES t_item (id), "
    "FOREIGN KEY (tag_id) REFERENCES t_tag (id))",
    # one row per item, keyed by the item's own id
    "CREATE TABLE t_item_note (item_id INTEGER NOT NULL PRIMARY KEY, note VARCHAR(50), "
    "FOREIGN KEY (item_id) REFERENCES t_item (id))",
)
LINKS = (
    "SELECT i.name, t.name FROM t_item_tag x JOIN t_item i ON i.id = x.item_id "
    "JOIN t_tag t ON t.id = x.tag_id ORDER BY i.name, t.name"
)
NOTES = "SELECT i.name, n.note FROM t_item_note n JOIN t_item i ON i.id = n.item_id ORDER BY i.name"


@contextmanager
def three(tmp_path: Path) -> Iterator[list[Database]]:
    """A node per engine, each with item 1 and tag 1 of its own, linked, and a note on the item.

    The first node's rows exist before it becomes a node (registered), the others' are
    written after (captured).
    """
    with databases(tmp_path, *ENGINES, erp=False) as dbs:
        for n, (db, engine) in enumerate(zip(dbs, ENGINES, strict=True)):
            execute(db, *SCHEMA)
            own = (
                f"INSERT INTO t_item VALUES (1, 'item-{engine}')",
                f"INSERT INTO t_tag VALUES (1, 'tag-{engine}')",
                "INSERT INTO t_item_tag VALUES (1, 1)",
                f"INSERT INTO t_item_note VALUES (1, 'note-{engine}')",
            )
            if n == 0:
                execute(db, *own)
            init_node(db, engine)
            if n > 0:
                execute(db, *own)
        yield dbs


def test_links_and_shared_ids_follow_their_rows_when_ids_collide(tmp_path: Path) -> None:
    with three(tmp_path) as (lite, maria, pg):
        sync(lite, maria)
        sync(maria, pg)
        sync(lite, maria)
        same(lite, maria, pg)
        for db in (lite, maria, pg):
            assert rows(db, LINKS) == [(f"item-{e}", f"tag-{e}") for e in sorted(ENGINES)]
            assert rows(db, NOTES) == [(f"item-{e}", f"note-{e}") for e in sorted(ENGINES)]
            assert len(rows(db, "SELECT item_id FROM t_item_note")) == 3

        # a link added across rows of two nodes, a link removed, a note edited
        pg_item = rows(pg, "SELECT id FROM t_item WHERE name = 'item-postgresql'")[0][0]
        lite_tag = rows(pg, "SELECT id FROM t_tag WHERE name = 'tag-sqlite'")[0][0]
        execute(pg, f"INSERT INTO t_item_tag VALUES ({pg_item}, {lite_tag})")
        execute(lite, "DELETE FROM t_item_tag WHERE item_id = 1 AND tag_id = 1")
        execute(maria, "UPDATE t_item_note SET note = 'edited' WHERE item_id = 1")
        sync(pg, lite)
        sync(maria, pg)
        sync(lite, maria)
        same(lite, maria, pg)
        for db in (lite, maria, pg):
            assert rows(db, LINKS) == [
                ("item-mariadb", "tag-mariadb"),
                ("item-postgresql", "tag-postgresql"),
                ("item-postgresql", "tag-sqlite"),
            ]
            assert rows(db, NOTES) == [
                ("item-mariadb", "edited"),
                ("item-postgresql", "note-postgresql"),
                ("item-sqlite", "note-sqlite"),
            ]


def test_links_travel_through_an_http_hub_and_a_shared_folder(tmp_path: Path) -> None:
    folder = tmp_path / "partage"
    folder.mkdir()
    with three(tmp_path) as (lite, maria, pg), running(maria) as url:
        sync(lite, url)
        sync(pg, url)
        sync(lite, url)
        for _ in range(2):
            for db in (lite, pg):
                exchange(db, folder.as_uri())
        same(lite, maria, pg)
        for db in (lite, maria, pg):
            assert rows(db, LINKS) == [(f"item-{e}", f"tag-{e}") for e in sorted(ENGINES)]


def test_a_copy_adopted_by_primary_key_pairs_its_links(tmp_path: Path) -> None:
    with (
        fresh_database("sqlite", tmp_path) as a_url,
        fresh_database("postgresql", tmp_path) as b_url,
        open_database(a_url, create=True) as a,
        open_database(b_url) as b,
    ):
        for db in (a, b):  # the server began as a copy of the PC
            execute(db, *SCHEMA, *(f"INSERT INTO t_item VALUES ({n}, 'item-{n}')" for n in (1, 2)))
            execute(db, "INSERT INTO t_tag VALUES (1, 'tag')", "INSERT INTO t_item_tag VALUES (1, 1), (2, 1)")
            execute(db, "INSERT INTO t_item_note VALUES (2, 'note')")
        init_node(a, "pc")
        adopt(b, a, "serveur", "pk")
        assert not sync(a, b).conflicts
        same(a, b)
        for db in (a, b):  # paired, not doubled
            assert rows(db, LINKS) == [("item-1", "tag"), ("item-2", "tag")]
            assert rows(db, NOTES) == [("item-2", "note")]


def test_a_node_of_an_older_erpsync_takes_the_global_ids_its_peers_derive(tmp_path: Path) -> None:
    with three(tmp_path) as (lite, maria, _):
        sync(lite, maria)
        expected = rows(lite, "SELECT gid, k0, k1 FROM erpsync_r3 ORDER BY gid")
        with lite.begin() as conn:  # as version 3 made them: derived from the local ids
            table = Node(lite, conn).table("t_item_tag", conn)
            encoders = [encoder(k.type) for k in table.keys]
            for gid, *key in expected:
                old = natural_gid(table.key, row_text(encoders, key))
                conn.execute(text("UPDATE erpsync_r3 SET gid = :o WHERE gid = :g"), {"o": old, "g": gid})
            conn.execute(text("UPDATE erpsync_node SET version = 3"))
        assert rows(lite, "SELECT gid, k0, k1 FROM erpsync_r3 ORDER BY gid") != expected
        Node(lite)
        assert rows(lite, "SELECT gid, k0, k1 FROM erpsync_r3 ORDER BY gid") == expected
        assert value(lite, "SELECT version FROM erpsync_node") == VERSION
        same(lite, maria)


def test_a_row_deleted_here_and_edited_there_comes_back_under_its_own_rows(tmp_path: Path) -> None:
    """``manual``: taking the peer's side of a delete brings the row back under the key it has
    here, translated from the rows it references (the tombstone keeps no key)."""
    manual = [PolicyOverride.parse("manual")]
    with databases(tmp_path, "sqlite", "postgresql", erp=False) as (a, b):
        for n, db in enumerate((a, b)):
            execute(db, *SCHEMA)
            init_node(db, f"n{n}")
        execute(a, "INSERT INTO t_item VALUES (1, 'item-a')")
        execute(
            b,
            "INSERT INTO t_item VALUES (1, 'item-b')",
            "INSERT INTO t_tag VALUES (1, 'tag-b')",
            "INSERT INTO t_item_tag VALUES (1, 1)",
            "INSERT INTO t_item_note VALUES (1, 'note-b')",
        )
        sync(a, b)
        here = value(a, "SELECT id FROM t_item WHERE name = 'item-b'")
        execute(a, f"DELETE FROM t_item_note WHERE item_id = {here}", "DELETE FROM t_item_tag")
        execute(b, "UPDATE t_item_note SET note = 'edited' WHERE item_id = 1")
        execute(b, "DELETE FROM t_item_tag", "INSERT INTO t_item_tag VALUES (1, 1)")  # again, later
        sync(a, b, policies=manual)
        assert [c.kind for c in conflicts.list_conflicts(a)] == ["delete", "delete"]
        for queued in conflicts.list_conflicts(a):
            conflicts.resolve(a, queued.id, "remote")
        sync(a, b, policies=manual)
        same(a, b)
        for db in (a, b):
            assert rows(db, NOTES) == [("item-b", "edited")]
            assert rows(db, LINKS) == [("item-b", "tag-b")]

"""Two nodes syncing: identities, references, clocks, deletes, idempotence, interruptions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erpsync.db import Database
from erpsync.errors import SchemaMismatch
from erpsync.sync.apply import apply_batch
from erpsync.sync.changeset import Batch
from erpsync.sync.node import Node
from erpsync.sync.peer import LocalPeer
from erpsync.sync.session import read_ahead, sync
from tests.sync_support import add_client, add_project, client_tree, execute, nodes, rows, same, value

PAIRS = [("sqlite", "sqlite"), ("sqlite", "mariadb"), ("postgresql", "sqlite"), ("mariadb", "postgresql")]


@pytest.fixture(params=PAIRS, ids=["-".join(p) for p in PAIRS])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Database]]:
    """Two nodes, the first with demo data, already synced once."""
    with nodes(tmp_path, *request.param, scale=1, seed=7) as dbs:
        sync(dbs[0], dbs[1])
        yield dbs


def test_first_sync_copies_everything_and_second_has_nothing_to_do(pair: list[Database]) -> None:
    a, b = pair
    same(a, b)
    assert value(b, "SELECT count(*) FROM tb_LigneCommande") == value(
        a, "SELECT count(*) FROM tb_LigneCommande"
    )
    summary = sync(a, b)
    assert summary.nothing_to_do and summary.batches == 0
    # what sync applied was not captured again as local edits
    for db in pair:
        node = Node(db)
        for number, _, _, _ in node.rows:
            assert value(db, f"SELECT count(*) FROM erpsync_l{number}") == 0


def test_colliding_ids_both_survive_with_their_children(pair: list[Database]) -> None:
    a, b = pair
    add_project(a, "PRJ-A")
    add_project(b, "PRJ-B")
    version_a = value(
        a, "SELECT v.id FROM tb_Version v JOIN tb_Projet p ON p.id = v.fkProjet WHERE NumProjet = 'PRJ-A'"
    )
    version_b = value(
        b, "SELECT v.id FROM tb_Version v JOIN tb_Projet p ON p.id = v.fkProjet WHERE NumProjet = 'PRJ-B'"
    )
    assert version_a == version_b  # the same id on both sides, for different rows
    add_client(a, 9000, "CLI-A", "Alpha", version_a)
    add_client(b, 9000, "CLI-B", "Beta", version_b)
    execute(
        a,
        "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
        "VALUES (9000, 'CMD-A', '2026-02-01', 'VALIDEE', 10.50)",
    )
    execute(
        b,
        "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
        "VALUES (9000, 'CMD-B', '2026-02-01', 'VALIDEE', 20.25)",
    )
    sync(a, b)
    same(a, b)
    for db in pair:
        tree = client_tree(db)
        assert ("CLI-A", "Alpha", "PRJ-A") in tree and ("CLI-B", "Beta", "PRJ-B") in tree
        orders = rows(
            db,
            "SELECT o.NumCommande, c.Code FROM tb_Commande o JOIN tb_Client c ON c.id = o.fkClient "
            "WHERE NumCommande IN ('CMD-A', 'CMD-B') ORDER BY 1",
        )
        assert orders == [("CMD-A", "CLI-A"), ("CMD-B", "CLI-B")]
    # each row keeps its id where it is free: 9000 stays where it was created
    assert value(a, "SELECT Code FROM tb_Client WHERE id = 9000") == "CLI-A"
    assert value(b, "SELECT Code FROM tb_Client WHERE id = 9000") == "CLI-B"


def test_each_node_keeps_its_edit_of_a_different_column(pair: list[Database]) -> None:
    a, b = pair
    execute(a, "UPDATE tb_Client SET Email = 'compta@alpha.fr' WHERE Code = 'CLI-00001'")
    execute(b, "UPDATE tb_Client SET Telephone = '01 02 03 04 05' WHERE Code = 'CLI-00001'")
    execute(a, "UPDATE tb_Client SET RaisonSociale = 'Nom A' WHERE Code = 'CLI-00002'")
    execute(b, "UPDATE tb_Client SET RaisonSociale = 'Nom B' WHERE Code = 'CLI-00002'")  # later: wins
    summary = sync(a, b)
    assert summary.conflicts == 0
    same(a, b)
    for db in pair:
        assert rows(db, "SELECT Email, Telephone FROM tb_Client WHERE Code = 'CLI-00001'") == [
            ("compta@alpha.fr", "01 02 03 04 05")
        ]
        assert value(db, "SELECT RaisonSociale FROM tb_Client WHERE Code = 'CLI-00002'") == "Nom B"


def test_thousands_of_rows_edited_on_both_sides_merge_column_by_column(pair: list[Database]) -> None:
    """Bulk edits go the servers' set-based way (a temporary table joined in one UPDATE)."""
    a, b = pair
    lines = "SELECT id, Quantite, Designation FROM tb_LigneCommande ORDER BY id"
    before = {row[0]: row[1:] for row in rows(a, lines)}
    assert len(before) > 1000
    execute(a, "UPDATE tb_LigneCommande SET Quantite = Quantite + 1")
    execute(b, "UPDATE tb_LigneCommande SET Designation = 'révisé' WHERE id % 2 = 0")
    execute(b, "UPDATE tb_Commande SET Statut = 'EXPEDIEE'")
    summary = sync(a, b)
    assert summary.conflicts == 0
    same(a, b)
    for db in pair:
        after = {row[0]: row[1:] for row in rows(db, lines)}
        assert after == {
            id_: (quantity + 1, "révisé" if id_ % 2 == 0 else name)
            for id_, (quantity, name) in before.items()
        }
        assert rows(db, "SELECT DISTINCT Statut FROM tb_Commande") == [("EXPEDIEE",)]
    assert sync(a, b).nothing_to_do


def test_reading_ahead_keeps_the_order_and_fails_where_the_reading_failed() -> None:
    """What a transfer from a server or a network peer goes through: the next batch read in a thread."""
    reading_second = threading.Event()

    def batches() -> Iterator[Any]:
        yield 0
        reading_second.set()
        yield from range(1, 3)
        raise ConnectionResetError("the peer hung up")

    ahead = read_ahead(batches())
    assert next(ahead) == 0
    assert reading_second.wait(5)  # read while the caller still works on the first one
    assert [next(ahead) for _ in range(2)] == [1, 2]
    with pytest.raises(ConnectionResetError, match="hung up"):
        next(ahead)


def test_a_caller_that_stops_does_not_wait_for_the_read_under_way() -> None:
    """Ctrl-C or an error while a slow peer sends the next batch: no wait; the stream ends after."""
    reading, closed = threading.Event(), threading.Event()

    def batches() -> Iterator[Any]:
        try:
            yield 0
            reading.set()
            time.sleep(3)  # the next batch, slow to come
            yield 1
        finally:
            closed.set()

    ahead = read_ahead(batches())
    assert next(ahead) == 0
    assert reading.wait(5)
    started = time.monotonic()
    ahead.close()
    assert time.monotonic() - started < 1
    assert closed.wait(10)  # once the read is done, the reading thread closes the stream


def test_update_against_delete_the_later_wins(pair: list[Database]) -> None:
    a, b = pair
    # deleted on A, then edited on B (later): the row comes back on A
    execute(a, "DELETE FROM tb_LigneCommande WHERE NumLigne = 1 AND fkCommande = 1")
    execute(b, "UPDATE tb_LigneCommande SET Designation = 'Corrigée' WHERE NumLigne = 1 AND fkCommande = 1")
    # edited on A, then deleted on B (later): the row goes on both
    execute(a, "UPDATE tb_LigneCommande SET Designation = 'Modifiée' WHERE NumLigne = 1 AND fkCommande = 2")
    execute(b, "DELETE FROM tb_LigneCommande WHERE NumLigne = 1 AND fkCommande = 2")
    sync(a, b)
    same(a, b)
    for db in pair:
        assert (
            value(db, "SELECT Designation FROM tb_LigneCommande WHERE NumLigne = 1 AND fkCommande = 1")
            == "Corrigée"
        )
        assert value(db, "SELECT count(*) FROM tb_LigneCommande WHERE NumLigne = 1 AND fkCommande = 2") == 0


def test_a_deleted_parent_comes_back_when_the_other_node_added_a_child(pair: list[Database]) -> None:
    a, b = pair
    add_client(a, 8000, "CLI-GONE", "Bientôt supprimé")
    sync(a, b)
    client_b = value(b, "SELECT id FROM tb_Client WHERE Code = 'CLI-GONE'")
    execute(a, "DELETE FROM tb_Client WHERE Code = 'CLI-GONE'")
    execute(
        b,
        "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
        "VALUES (:c, 'CMD-ORPHAN', '2026-03-01', 'BROUILLON', 1)",
        c=client_b,
    )
    sync(a, b)
    sync(a, b)
    same(a, b)
    for db in pair:
        assert rows(
            db,
            "SELECT c.Code FROM tb_Commande o JOIN tb_Client c ON c.id = o.fkClient "
            "WHERE o.NumCommande = 'CMD-ORPHAN'",
        ) == [("CLI-GONE",)]


def test_a_parent_and_its_children_deleted_together_go_everywhere(pair: list[Database]) -> None:
    a, b = pair
    client = value(a, "SELECT id FROM tb_Client WHERE Code = 'CLI-00003'")
    orders = f"SELECT id FROM tb_Commande WHERE fkClient = {client}"
    execute(
        a,
        f"DELETE FROM tb_LigneCommande WHERE fkCommande IN ({orders})",
        f"DELETE FROM tb_Commande WHERE fkClient = {client}",
        f"DELETE FROM tb_Client WHERE id = {client}",
    )
    summary = sync(a, b)
    assert summary.tables["tb_client"].changed_there == 1
    same(a, b)
    assert value(b, "SELECT count(*) FROM tb_Client WHERE Code = 'CLI-00003'") == 0


def test_a_batch_applied_twice_changes_nothing_more(pair: list[Database]) -> None:
    a, b = pair
    execute(a, "UPDATE tb_Commande SET Statut = 'EN LITIGE' WHERE id <= 20")
    source, target = LocalPeer(a, owned=False), LocalPeer(b, owned=False)
    hello = source.hello()
    since = target.cursors(hello.node_id).get(("tb_commande", 0), 0)
    (batch,) = list(source.changes("tb_commande", 0, since, hello.seq, target.hello().node_id, 5000))
    first = apply_batch(target.node, batch, {})
    again = apply_batch(target.node, batch, {})
    assert first.updated == 20 and again.replayed and again.changed == 0
    anonymous = Batch("", batch.source, batch.table, batch.stream, batch.columns, batch.rows, 0, 0)
    assert apply_batch(target.node, anonymous, {}).changed == 0  # same rows again: nothing to do
    assert sync(a, b).tables.get("tb_commande") is None or sync(a, b).nothing_to_do
    same(a, b)


class Interrupted(Exception):
    pass


class FlakyPeer(LocalPeer):
    """A peer whose connection drops after ``allowed`` batches."""

    def __init__(self, db: Database, allowed: int) -> None:
        super().__init__(db, owned=False)
        self.allowed = allowed

    def apply(self, batch, policies, **options):  # type: ignore[no-untyped-def]
        if self.allowed == 0:
            raise Interrupted
        self.allowed -= 1
        return super().apply(batch, policies, **options)


def test_an_interrupted_sync_resumes_where_it_stopped(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=8) as (a, b):
        with pytest.raises(Interrupted):
            sync(a, FlakyPeer(b, allowed=2), pull=False, batch_rows=500)
        applied = value(b, "SELECT count(*) FROM tb_LigneCommande")
        summary = sync(a, b, batch_rows=500)
        lines = value(a, "SELECT count(*) FROM tb_LigneCommande")
        assert summary.tables["tb_lignecommande"].sent == lines - applied  # only what was missing
        same(a, b)


def test_relay_through_a_third_node_raises_no_false_conflict(tmp_path: Path) -> None:
    from erpsync.sync.policies import PolicyOverride

    manual = [PolicyOverride.parse("manual")]
    with nodes(tmp_path, "sqlite", "mariadb", "postgresql", scale=1, seed=9) as (pc1, pc2, pc3):
        assert sync(pc1, pc2, policies=manual).conflicts == 0
        assert sync(pc2, pc3, policies=manual).conflicts == 0
        execute(pc1, "UPDATE tb_Client SET Email = 'relais@pc1.fr' WHERE Code = 'CLI-00004'")
        assert sync(pc1, pc2, policies=manual).conflicts == 0
        assert sync(pc2, pc3, policies=manual).conflicts == 0
        execute(pc3, "UPDATE tb_Client SET Email = 'retour@pc3.fr' WHERE Code = 'CLI-00004'")
        assert sync(pc3, pc2, policies=manual).conflicts == 0
        assert sync(pc2, pc1, policies=manual).conflicts == 0
        assert sync(pc1, pc3, policies=manual).conflicts == 0
        same(pc1, pc2, pc3)
        assert value(pc1, "SELECT Email FROM tb_Client WHERE Code = 'CLI-00004'") == "retour@pc3.fr"
        assert value(pc1, "SELECT count(*) FROM erpsync_conflict") == 0


def test_rows_edited_in_different_columns_are_relayed_whole(tmp_path: Path) -> None:
    """Each row of a batch keeps the clock of the column it changed, whatever columns the
    other rows of the batch changed: relayed through a third node, every edit arrives."""
    with nodes(tmp_path, "sqlite", "mariadb", "postgresql", scale=1, seed=9) as (pc1, pc2, pc3):
        sync(pc1, pc2)
        sync(pc2, pc3)
        execute(
            pc1,
            "UPDATE tb_Client SET Email = 'relais@pc1.fr' WHERE Code = 'CLI-00004'",
            "UPDATE tb_Client SET Telephone = '0102030405' WHERE Code = 'CLI-00005'",
            "UPDATE tb_Client SET Email = 'autre@pc1.fr', Telephone = '0607080910' WHERE Code = 'CLI-00006'",
        )
        sync(pc1, pc2)
        sync(pc2, pc3)
        same(pc1, pc2, pc3)
        assert rows(pc3, "SELECT Telephone FROM tb_Client WHERE Code = 'CLI-00005'") == [("0102030405",)]
        assert rows(pc3, "SELECT Email, Telephone FROM tb_Client WHERE Code = 'CLI-00006'") == [
            ("autre@pc1.fr", "0607080910")
        ]


def test_schema_mismatch_names_tables_and_columns(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (a, b):
        execute(b, "ALTER TABLE tb_Client ADD COLUMN Fax VARCHAR(20)")
        execute(b, "CREATE TABLE tb_Extra (id INTEGER PRIMARY KEY, x TEXT)")
        from erpsync.sync.node import init_node

        init_node(b, "pc2")
        with pytest.raises(SchemaMismatch) as caught:
            sync(a, b)
        message = caught.value.message
        assert "tb_client.fax exists on the peer only" in message
        assert "tb_extra is synced on the peer only" in message
        assert "\n" not in message and caught.value.hint

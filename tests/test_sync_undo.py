"""Undo of a sync, and the sync history: receipts on every engine, refusals, convergence after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import MetaData, Table, inspect, select, text

from erpsync.cli import cli
from erpsync.db import Database, open_database
from erpsync.errors import DatabaseNotFound
from erpsync.sync import history
from erpsync.sync.changeset import from_json, to_json
from erpsync.sync.history import recent
from erpsync.sync.node import VERSION, init_node
from erpsync.sync.peer import LocalPeer
from erpsync.sync.session import sync
from erpsync.sync.undo import UndoRefused, undo_last
from erpsync.sync.verify import verify
from tests.conftest import fresh_database
from tests.sync_support import execute, nodes, rows, value


def seed(db: Database) -> None:
    """A small ERP: 2 projects, 2 versions, 3 clients, 3 orders, 6 lines (explicit ids)."""
    execute(
        db,
        "INSERT INTO tb_Utilisateur (id, Login, Nom) VALUES (1, 'marie', 'Marie')",
        "INSERT INTO tb_Projet (id, NumProjet, Libelle, fkCreateur, DateCreation) VALUES "
        "(1, 'PRJ-1', 'Extension', 1, '2026-01-05 10:00:00'), "
        "(2, 'PRJ-2', 'Rénovation', 1, '2026-01-06 11:30:00')",
        "INSERT INTO tb_Version (id, fkProjet, NumVersion, Libelle, DateCreation) VALUES "
        "(1, 1, 'V1', 'Initiale', '2026-01-05 10:00:00'), (2, 2, 'V1', 'Initiale', '2026-01-06 11:30:00')",
        "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale, Email) VALUES "
        "(1, 1, 'CLI-1', 'Dupont SA', 'dupont@example.fr'), (2, 1, 'CLI-2', 'Martin', NULL), "
        "(3, 2, 'CLI-3', 'Éloïse & Fils', NULL)",
        "INSERT INTO tb_Commande (id, fkClient, NumCommande, DateCommande, Statut, MontantHT) VALUES "
        "(1, 1, 'CMD-1', '2026-02-01', 'VALIDEE', 120.50), "
        "(2, 2, 'CMD-2', '2026-02-02', 'BROUILLON', 99.99), (3, 3, 'CMD-3', '2026-02-03', 'VALIDEE', 0.10)",
        "INSERT INTO tb_LigneCommande (id, fkCommande, NumLigne, Reference, Designation, Quantite, "
        "PrixUnitaire) VALUES (1, 1, 1, 'R1', 'Vis', 10.00, 0.25), (2, 1, 2, 'R2', 'Écrou', 3.50, 1.10), "
        "(3, 1, 3, NULL, 'Rondelle', 1.00, 0.05), (4, 2, 1, 'R4', 'Tôle', 2.00, 45.00), "
        "(5, 2, 2, 'R5', 'Joint', 8.00, 3.20), (6, 3, 1, 'R6', 'Câble', 12.75, 2.40)",
    )


def change(db: Database) -> None:
    """Inserts, updates and deletes, as the ERP makes them on the peer."""
    execute(
        db,
        "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale) VALUES (50, 2, 'CLI-50', 'Nouveau')",
        "INSERT INTO tb_Commande (id, fkClient, NumCommande, DateCommande, Statut, MontantHT) "
        "VALUES (50, 50, 'CMD-50', '2026-03-01', 'NOUVELLE', 12.30)",
        "UPDATE tb_Client SET RaisonSociale = 'Dupont et Cie', Email = 'contact@dupont.fr' WHERE id = 1",
        "UPDATE tb_LigneCommande SET Quantite = 7.25 WHERE id = 2",
        "DELETE FROM tb_LigneCommande WHERE id = 3",
        "DELETE FROM tb_LigneCommande WHERE fkCommande = 2",
        "DELETE FROM tb_Commande WHERE id = 2",
    )


def contents(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every application table, ordered by primary key.

    Except the numbering counters: a sync moves them past the numbers it receives, and no
    undo moves them back (a number drawn is never drawn again).
    """
    with db.connect() as conn:
        md = MetaData()
        out = {}
        for name in inspect(conn).get_table_names():
            if name.lower().startswith("erpsync_") or name.lower() == "tb_numerotation":
                continue
            table = Table(name, md, autoload_with=conn)
            out[name.lower()] = [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key))]
        return out


@pytest.fixture
def pair(engine_name: str, tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """A peer on SQLite holding the small ERP, and a node on each engine that pulled it once."""
    with nodes(tmp_path, "sqlite", engine_name) as (peer, node):
        seed(peer)
        sync(node, peer)
        yield peer, node


def test_undo_returns_the_node_to_its_content_and_the_next_sync_carries_it(
    pair: tuple[Database, Database],
) -> None:
    peer, node = pair
    before = contents(node)
    change(peer)
    summary = sync(node, peer)
    assert summary.received == 8 and contents(node) != before
    report = undo_last(node)
    assert report is not None and report.sync.id == summary.id
    assert (report.deleted, report.restored, report.reinserted) == (2, 2, 4)
    assert contents(node) == before  # exactly: ids, values, NULLs, decimals, dates
    assert [r.direction for r in recent(node, 2)] == ["undo", "sync"]
    assert recent(node, 2)[1].undone_by == report.undo_id
    # the undo is a local edit: the next sync sends it, and receives nothing undone again
    again = sync(node, peer)
    assert again.received == 0 and again.sent == 8
    assert verify(node, peer).same
    assert contents(node) == before
    assert value(peer, "SELECT RaisonSociale FROM tb_Client WHERE id = 1") == "Dupont SA"
    assert value(peer, "SELECT COUNT(*) FROM tb_Client WHERE Code = 'CLI-50'") == 0
    assert value(peer, "SELECT COUNT(*) FROM tb_LigneCommande") == 6
    assert sync(node, peer).nothing_to_do


def test_undo_refuses_rows_changed_since_unless_forced(pair: tuple[Database, Database]) -> None:
    peer, node = pair
    before = contents(node)
    change(peer)
    sync(node, peer)
    execute(node, "UPDATE tb_Client SET Telephone = '0102030405' WHERE id = 1")
    edited = contents(node)
    with pytest.raises(
        UndoRefused, match=r"(?i)^1 rows changed since sync \w{8} of .*: tb_Client 1; nothing was undone"
    ):
        undo_last(node)
    assert contents(node) == edited  # nothing written
    assert recent(node, 1)[0].direction == "sync"  # not marked undone
    report = undo_last(node, force=True)
    assert report is not None and [r.lower() for r in report.overwritten] == ["tb_client 1"]
    assert contents(node) == before
    sync(node, peer)
    assert verify(node, peer).same


def test_a_row_deleted_behind_the_capture_comes_back_with_the_sync_and_goes_with_its_undo(
    pair: tuple[Database, Database],
) -> None:
    """A row the node lost without a trace is inserted again by the next sync that brings it,
    next to rows it updates; undoing that sync removes it and restores the others."""
    peer, node = pair
    with node.begin() as conn:  # as with the triggers dropped by hand
        node.dialect.mute_capture(conn)
        conn.exec_driver_sql("DELETE FROM tb_LigneCommande WHERE id = 6")
        node.dialect.unmute_capture(conn)
    before = contents(node)
    execute(peer, "UPDATE tb_LigneCommande SET Quantite = Quantite + 1 WHERE id IN (1, 6)")
    summary = sync(node, peer)
    assert summary.received == 2
    assert rows(node, "SELECT id, Quantite FROM tb_LigneCommande WHERE id IN (1, 6) ORDER BY id") == rows(
        peer, "SELECT id, Quantite FROM tb_LigneCommande WHERE id IN (1, 6) ORDER BY id"
    )
    report = undo_last(node)
    assert report is not None and (report.deleted, report.restored) == (1, 1)
    assert contents(node) == before


def test_a_mariadb_time_column_is_updated_and_the_update_undone(tmp_path: Path) -> None:
    """PyMySQL reads a TIME as a duration: the receipt keeps it, the undo writes it back."""
    table = "CREATE TABLE t_slot (id INTEGER PRIMARY KEY, start_at TIME, label VARCHAR(20))"
    with (
        fresh_database("sqlite", tmp_path) as a_url,
        fresh_database("mariadb", tmp_path) as b_url,
        open_database(a_url, create=True) as pc,
        open_database(b_url) as hub,
    ):
        execute(hub, table, "INSERT INTO t_slot VALUES (1, '08:30:00', 'matin'), (2, '14:00:00', 'soir')")
        execute(pc, table)
        init_node(hub, "hub")
        init_node(pc, "pc")
        sync(pc, hub)
        execute(pc, "UPDATE t_slot SET start_at = '09:15:00', label = 'matinée' WHERE id = 1")
        sync(pc, hub)
        assert verify(pc, hub).same
        assert rows(hub, "SELECT label, CAST(start_at AS CHAR) FROM t_slot WHERE id = 1") == [
            ("matinée", "09:15:00")
        ]
        undo_last(hub)
        assert rows(hub, "SELECT id, label, CAST(start_at AS CHAR) FROM t_slot ORDER BY id") == [
            (1, "matin", "08:30:00"),
            (2, "soir", "14:00:00"),
        ]


def test_rows_added_since_that_refer_to_a_row_the_sync_added_keep_it(pair: tuple[Database, Database]) -> None:
    peer, node = pair
    change(peer)
    sync(node, peer)
    execute(
        node,
        "INSERT INTO tb_Commande (id, fkClient, NumCommande, DateCommande, Statut, MontantHT) "
        "VALUES (60, 50, 'CMD-60', '2026-03-02', 'NOUVELLE', 1.00)",
    )
    with pytest.raises(UndoRefused, match=r"(?i)tb_Client 50 \(rows added since refer to it\)"):
        undo_last(node)
    report = undo_last(node, force=True)
    assert report is not None and [r.lower() for r in report.kept] == ["tb_client 50"]
    assert rows(node, "SELECT id FROM tb_Commande ORDER BY id") == [(1,), (2,), (3,), (60,)]
    assert value(node, "SELECT RaisonSociale FROM tb_Client WHERE id = 1") == "Dupont SA"
    sync(node, peer)
    assert verify(node, peer).same


def test_each_undo_reverts_the_sync_before_until_nothing_is_left(pair: tuple[Database, Database]) -> None:
    peer, node = pair
    empty = {name: [] for name in contents(node)}
    after_first = contents(node)
    execute(peer, "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale) VALUES (60, 1, 'CLI-60', 'A')")
    sync(node, peer, push=False)
    after_second = contents(node)
    execute(
        peer,
        "UPDATE tb_Client SET RaisonSociale = 'B' WHERE id = 60",  # a row the sync before added
        "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale) VALUES (61, 1, 'CLI-61', 'C')",
    )
    sync(node, peer, push=False)
    sync(node, peer)  # nothing to do: recorded, changes nothing here, is not what undo reverts
    for expected in (after_second, after_first, empty):
        assert undo_last(node) is not None
        assert contents(node) == expected
    assert undo_last(node) is None
    assert [r.direction for r in recent(node, 7)] == ["undo", "undo", "undo", "sync", "pull", "pull", "sync"]


def test_an_interrupted_sync_is_recorded_and_undone(pair: tuple[Database, Database]) -> None:
    peer, node = pair
    before = contents(node)
    execute(
        peer,
        *[f"INSERT INTO tb_Utilisateur (id, Login, Nom) VALUES ({i}, 'u{i}', 'U')" for i in range(10, 16)],
    )

    class Unplugged(Exception):
        pass

    def progress(label: str, done: int, total: int) -> None:
        if label == "Receiving" and done >= 2:
            raise Unplugged("network cable pulled")

    with pytest.raises(Unplugged):
        sync(node, peer, progress=progress, batch_rows=2)
    record = recent(node, 1)[0]
    assert (record.result, record.message, record.changed) == ("error", "Unplugged: network cable pulled", 2)
    assert value(node, "SELECT COUNT(*) FROM tb_Utilisateur") == 3
    assert undo_last(node) is not None
    assert contents(node) == before
    sync(node, peer)  # the rest arrives; the two undone rows are deleted on the peer, not received again
    assert verify(node, peer).same
    assert rows(node, "SELECT id FROM tb_Utilisateur ORDER BY id") == [(1,), (12,), (13,), (14,), (15,)]


def test_a_sync_killed_midway_is_undone_once_it_is_clearly_stopped(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (peer, node):
        seed(peer)
        before = contents(node)
        source, target = LocalPeer(peer, owned=False), LocalPeer(node, owned=False)
        run = history.Run(target.node, history.PULL, "pc1")
        run.begin()  # what sync() records before its first write; the process then dies
        hello = source.hello()
        for table, stream, _ in source.plan({}, hello.seq, target.node.node_id)[:2]:
            for batch in source.changes(table, stream, 0, hello.seq, target.node.node_id, 100):
                batch.sync_id = run.id
                target.apply(batch, {})
        assert recent(node, 1)[0].result is None and contents(node) != before
        with pytest.raises(UndoRefused, match="is still running"):
            undo_last(node)
        execute(node, "UPDATE erpsync_sync SET finished = finished - 180000")  # three minutes later
        assert undo_last(node) is not None
        assert contents(node) == before


def test_a_push_is_recorded_and_can_be_undone_on_the_receiving_node(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (pc, server):
        seed(pc)
        sync(pc, server)
        before = contents(server)
        change(pc)
        summary = sync(pc, server, pull=False)
        mine, theirs = recent(pc, 1)[0], recent(server, 1)[0]
        assert (mine.id, mine.direction, mine.sent, mine.changed) == (summary.id, "push", 8, 0)
        assert (theirs.id, theirs.direction, theirs.received, theirs.changed) == (summary.id, "remote", 8, 8)
        assert theirs.peer_name == "pc1" and theirs.result == "ok"
        assert undo_last(pc) is None or undo_last(pc) is None  # the PC's own syncs changed nothing there
        assert undo_last(server) is not None
        assert contents(server) == before


def test_failed_syncs_are_recorded_and_batches_carry_their_sync(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (a, b):
        missing = str(tmp_path / "gone.sqlite")
        with pytest.raises(DatabaseNotFound):
            sync(a, missing)
        record = recent(a, 1)[0]
        assert (record.result, record.peer_name, record.peer_id) == ("error", missing, None)
        assert record.message is not None and "does not exist" in record.message
        seed(a)
        source, target = LocalPeer(a, owned=False), LocalPeer(b, owned=False)
        hello = source.hello()
        (table, stream, _), *_ = [p for p in source.plan({}, hello.seq, target.node.node_id) if p[2]]
        batch = next(iter(source.changes(table, stream, 0, hello.seq, target.node.node_id, 100)))
        batch.sync_id = history.new_id()
        assert from_json(to_json(batch)).sync_id == batch.sync_id


def test_node_init_adds_the_history_to_an_older_node(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (a, b):
        for db in (a, b):
            with db.begin() as conn:
                conn.execute(text("DROP TABLE erpsync_sync"))
                conn.execute(text("DROP TABLE erpsync_receipt"))
                conn.execute(text("UPDATE erpsync_node SET version = 1"))
        init_node(a, None)  # node init again brings it up to date
        assert {"erpsync_sync", "erpsync_receipt"} <= set(inspect(a.engine).get_table_names())
        seed(a)
        sync(b, a)  # an older node is brought up to date when opened
        assert value(b, "SELECT version FROM erpsync_node") == VERSION
        assert [r.direction for r in recent(b)] == ["sync"] and undo_last(b) is not None


# -- the command line ------------------------------------------------------------------------------


def run(*args: str, lang: str = "en") -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--lang", lang, *args])
    return result.exit_code, result.stdout, result.stderr


def test_sync_undo_and_history_from_the_cli(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (peer, node):
        seed(peer)
        a, b = str(peer.url.database), str(node.url.database)
        code, out, _ = run("sync", "undo", b)
        assert code == 0 and out == f"Nothing to undo on {b}: no sync changed it, or every one was undone.\n"
        code, out, err = run("sync", "--no-backup", b, a)  # options before DB reach the sync
        assert code == 0, err
        assert "Backup taken" not in out
        change(peer)
        code, out, err = run("sync", b, a)
        assert code == 0, err
        assert "Backup taken before the sync: " in out
        execute(node, "UPDATE tb_LigneCommande SET Designation = 'Vis inox' WHERE id = 2")
        code, out, err = run("sync", "undo", b)
        assert code == 1 and out == ""
        assert err.startswith("Error: 1 rows changed since sync ") and "tb_lignecommande 2" in err.lower()
        assert "Try: check them, then undo anyway with --force" in err
        code, out, err = run("sync", "undo", b, "--force", lang="fr")
        assert code == 0, err
        assert out.startswith("Synchronisation ") and "2 lignes qu'elle avait ajoutées supprimées" in out
        assert "modifications faites depuis, écrasées : tb_lignecommande 2" in out.lower()
        code, out, _ = run("sync", "history", b)
        assert code == 0 and out.startswith(f"Syncs of {b}, newest first:\n")
        assert " undo of a sync with pc1: 0 received, 0 sent, 8 changed here; undid " in out
        assert " sync with pc1: 8 received, 0 sent, 8 changed here; ok (undone)\n" in out
        assert "backup before it: " in out
        code, out, _ = run("sync", "--help")
        assert code == 0 and "erpsync sync DB PEER" in out and "undo" in out and "history" in out

"""The shared-folder transport: nodes exchanging change files through one folder (ERP_LAUNCHER_SYNC)."""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from pathlib import Path

import pytest

from erpsync.db import Database
from erpsync.errors import SchemaMismatch
from erpsync.sync.node import Node, init_node
from erpsync.sync.session import sync
from erpsync.transport import PeerAddress, open_peer
from erpsync.transport.folder import (
    FolderFileCorrupt,
    FolderSummary,
    FolderUnavailable,
    NotALivePeer,
    apply_file,
    exchange,
    folder_path,
    probe,
)
from tests.sync_support import (
    add_client,
    add_project,
    client_tree,
    databases,
    execute,
    nodes,
    rows,
    same,
    value,
)


def shared(tmp_path: Path) -> str:
    folder = tmp_path / "ERP_LAUNCHER_SYNC"
    folder.mkdir(exist_ok=True)
    return folder.as_uri()


def files_of(folder: str, db: Database) -> list[Path]:
    return sorted((folder_path(folder) / "erpsync" / Node(db).node_id).glob("*.jsonl.gz"))


def round_of(folder: str, *dbs: Database) -> list[FolderSummary]:
    """Each node exchanges once, in turn, as the service on each PC would."""
    return [exchange(db, folder) for db in dbs]


ENGINES = [("sqlite", "sqlite", "sqlite"), ("sqlite", "mariadb", "postgresql")]


@pytest.mark.parametrize("engines", ENGINES, ids=["-".join(e) for e in ENGINES])
def test_three_nodes_converge_through_one_folder(tmp_path: Path, engines: tuple[str, ...]) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, *engines, scale=1, seed=3) as (pc1, pc2, pc3):
        first = exchange(pc1, folder)
        assert first.written is not None and first.written.startswith("00000001_0_")
        assert not first.notes and sum(t.sent for t in first.tables.values()) > 1000
        round_of(folder, pc2, pc3)
        same(pc1, pc2, pc3)
        # offline edits on every PC, colliding ids included, then a client under another PC's project
        add_project(pc1, "PRJ-PC1")
        add_project(pc2, "PRJ-PC2")
        execute(pc3, "UPDATE tb_Client SET Email = 'pc3@example.fr' WHERE id = 1")
        execute(pc1, "UPDATE tb_Client SET Telephone = '0102030405' WHERE id = 1")
        round_of(folder, pc1, pc2, pc3)
        version = value(
            pc3,
            "SELECT v.id FROM tb_Version v JOIN tb_Projet p ON p.id = v.fkProjet WHERE NumProjet = 'PRJ-PC2'",
        )
        add_client(pc3, 9001, "CLI-PC3", "Client de PC3", version)
        for _ in range(2):
            summaries = round_of(folder, pc1, pc2, pc3)
        assert not any(s.notes for s in summaries)
        same(pc1, pc2, pc3)
        for db in (pc1, pc2, pc3):
            assert ("CLI-PC3", "Client de PC3", "PRJ-PC2") in client_tree(db)
            assert rows(db, "SELECT Email, Telephone FROM tb_Client WHERE id = 1") == [
                ("pc3@example.fr", "0102030405")
            ]
        # every node has imported everything: each node's files are gone, a last exchange has nothing to do
        round_of(folder, pc1, pc2, pc3)
        assert [files_of(folder, db) for db in (pc1, pc2, pc3)] == [[], [], []]
        assert all(s.nothing_to_do for s in round_of(folder, pc1, pc2, pc3))


def test_changes_relayed_through_the_folder_are_not_written_again(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=4) as (pc1, pc2):
        round_of(folder, pc1, pc2)
        summary = exchange(pc2, folder)
        assert summary.written is None and summary.nothing_to_do  # pc1's rows came from pc1's file


def test_a_child_read_before_its_parent_waits_for_the_other_file(tmp_path: Path) -> None:
    """alpha's file references a project from zeta's: read first (by name), it is applied after zeta's."""
    folder = shared(tmp_path)
    with databases(tmp_path, "sqlite", "sqlite", "sqlite") as (zeta, alpha, third):
        for db, name in ((zeta, "zeta"), (alpha, "alpha"), (third, "third")):
            init_node(db, name)
        add_project(zeta, "PRJ-Z")
        round_of(folder, zeta, alpha)
        version = value(alpha, "SELECT id FROM tb_Version")
        add_client(alpha, 7, "CLI-A", "Alpha", version)
        exchange(alpha, folder)
        summary = exchange(third, folder)
        assert not summary.notes and summary.files_read == 2
        exchange(zeta, folder)
        same(zeta, alpha, third)
        assert client_tree(third) == {("CLI-A", "Alpha", "PRJ-Z")}


def test_a_file_waiting_for_rows_no_file_holds_stays_pending(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", "sqlite") as (pc1, pc2, pc3):
        add_project(pc1, "PRJ-1")
        round_of(folder, pc1, pc2)
        add_client(pc2, 5, "CLI-2", "Deux", value(pc2, "SELECT id FROM tb_Version"))
        exchange(pc2, folder)
        # pc1's file has not reached this PC's view of the share yet (a slow replica, a copy in progress)
        hidden = tmp_path / "later"
        hidden.mkdir()
        for path in files_of(folder, pc1):
            path.rename(hidden / path.name)
        summary = exchange(pc3, folder)
        gap, waiting = summary.notes
        assert gap == "pc1: its files after change 0 were removed; it writes them again at its next sync"
        assert waiting.startswith("pc2: file 0000000") and "1 rows it references (tb_version)" in waiting
        assert value(pc3, "SELECT count(*) FROM tb_Client") == 0  # nothing of the waiting batch
        for path in hidden.iterdir():
            path.rename(folder_path(folder) / "erpsync" / Node(pc1).node_id / path.name)
        assert not exchange(pc3, folder).notes
        exchange(pc1, folder)
        same(pc1, pc2, pc3)


def test_a_row_deleted_here_and_used_elsewhere_comes_back(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite") as (pc1, pc2):
        add_project(pc1, "PRJ-1")
        round_of(folder, pc1, pc2)
        version = value(pc2, "SELECT id FROM tb_Version")
        add_client(pc2, 3, "CLI-3", "Trois", version)  # pc2 uses the version while pc1 deletes it
        execute(pc1, "DELETE FROM tb_Version")
        for _ in range(3):
            round_of(folder, pc1, pc2)
        same(pc1, pc2)
        assert client_tree(pc1) == {("CLI-3", "Trois", "PRJ-1")}


def test_a_half_written_temp_file_is_ignored(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=5) as (pc1, pc2):
        exchange(pc1, folder)
        directory = files_of(folder, pc1)[0].parent
        complete = files_of(folder, pc1)[0].read_bytes()
        # pc1 is writing its next file: a temporary name, half of the bytes
        (directory / ".00000002.1a2b3c4d.tmp").write_bytes(complete[: len(complete) // 2])
        summary = exchange(pc2, folder)
        assert not summary.notes and summary.files_read == 1
        same(pc1, pc2)
        # pc1's own leftover of a crash is removed once it is old; pc2 never touches pc1's folder
        old = time.time() - 7200
        os.utime(directory / ".00000002.1a2b3c4d.tmp", (old, old))
        exchange(pc2, folder)
        assert (directory / ".00000002.1a2b3c4d.tmp").exists()
        exchange(pc1, folder)
        assert not (directory / ".00000002.1a2b3c4d.tmp").exists()


def test_a_file_applied_twice_changes_nothing(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=6) as (pc1, pc2):
        exchange(pc1, folder)
        (file,) = files_of(folder, pc1)
        first = apply_file(pc2, file)
        assert sum(t.received for t in first.tables.values()) > 1000
        seq = value(pc2, "SELECT seq FROM erpsync_node")
        before = rows(pc2, "SELECT id, Code, RaisonSociale, Email FROM tb_Client ORDER BY id")
        again = apply_file(pc2, file)
        assert all(t.changed_here == 0 for t in again.tables.values())
        assert value(pc2, "SELECT seq FROM erpsync_node") == seq
        assert rows(pc2, "SELECT id, Code, RaisonSociale, Email FROM tb_Client ORDER BY id") == before
        summary = exchange(pc2, folder)  # the cursor says it is applied: not even read
        assert summary.files_read == 0 and sum(t.received for t in summary.tables.values()) == 0
        same(pc1, pc2)


@pytest.mark.parametrize("damage", ["cut", "garbage", "count"])
def test_a_damaged_file_gives_a_clear_error_and_nothing_is_applied(tmp_path: Path, damage: str) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=7) as (pc1, pc2):
        exchange(pc1, folder)
        (file,) = files_of(folder, pc1)
        data = file.read_bytes()
        if damage == "cut":
            file.write_bytes(data[: len(data) * 2 // 3])
        elif damage == "garbage":
            file.write_bytes(data[:100] + b"\x00" * 50 + data[150:])
        else:  # valid gzip, a batch line dropped: the end mark no longer counts what is there
            lines = gzip.decompress(data).splitlines(keepends=True)
            file.write_bytes(gzip.compress(b"".join(lines[:1] + lines[2:])))
        with pytest.raises(FolderFileCorrupt) as caught:
            exchange(pc2, folder)
        message = caught.value.message
        assert file.name in message and "nothing was applied" in message and "\n" not in message
        assert "delete the file" in caught.value.hint
        assert value(pc2, "SELECT count(*) FROM tb_Client") == 0
        assert value(pc2, "SELECT count(*) FROM erpsync_cursor") == 0
        # pc2's own changes still went out, and its node.json says what it has imported (nothing)
        assert (folder_path(folder) / "erpsync" / Node(pc2).node_id / "node.json").exists()
        # deleting the damaged file, as the hint says: pc1 writes what it held again
        file.unlink()
        assert exchange(pc2, folder).notes[0].startswith("pc1: its files after change 0 were removed")
        catch_up = exchange(pc1, folder)
        assert catch_up.written is not None and re.match(r"\d{8}_0_", catch_up.written)
        assert not exchange(pc2, folder).notes
        same(pc1, pc2)


def test_a_file_of_an_older_format_is_refused_and_written_again_once_deleted(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=7) as (pc1, pc2):
        exchange(pc1, folder)
        (file,) = files_of(folder, pc1)
        head, *rest = gzip.decompress(file.read_bytes()).splitlines(keepends=True)
        old = json.dumps({**json.loads(head), "format": 2}).encode() + b"\n"
        file.write_bytes(gzip.compress(b"".join([old, *rest])))
        with pytest.raises(FolderFileCorrupt) as caught:
            exchange(pc2, folder)
        assert "written by an older erpsync (format 2)" in caught.value.message
        assert "update erpsync on pc1, then delete the file" in caught.value.hint
        assert value(pc2, "SELECT count(*) FROM tb_Client") == 0
        assert value(pc2, "SELECT count(*) FROM erpsync_cursor") == 0
        file.unlink()
        exchange(pc2, folder)
        exchange(pc1, folder)
        exchange(pc2, folder)
        same(pc1, pc2)


def test_a_schema_that_differs_is_named_and_nothing_is_applied(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with databases(tmp_path, "sqlite", "sqlite") as (pc1, pc2):
        execute(pc2, "ALTER TABLE tb_Client ADD COLUMN Fax VARCHAR(20)")
        init_node(pc1, "pc1")
        init_node(pc2, "pc2")
        add_project(pc1, "PRJ-1")
        exchange(pc1, folder)
        with pytest.raises(SchemaMismatch) as caught:
            exchange(pc2, folder)
        assert "tb_client.fax" in caught.value.message.lower()
        assert value(pc2, "SELECT count(*) FROM tb_Projet") == 0


def test_a_new_node_gets_what_was_already_cleaned_up(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", "postgresql", scale=1, seed=8) as (pc1, pc2, late):
        add_project(pc2, "PRJ-2")
        for _ in range(2):
            round_of(folder, pc1, pc2)
        assert files_of(folder, pc1) == [] and files_of(folder, pc2) == []  # both imported: removed
        first = exchange(late, folder)
        assert {n.split(":")[0] for n in first.notes} == {"pc1", "pc2"}
        round_of(folder, pc1, pc2)  # each sees a node that needs its older changes: a catch-up file
        assert re.match(r"\d{8}_0_", files_of(folder, pc1)[0].name)
        assert not exchange(late, folder).notes
        same(pc1, pc2, late)


def test_sync_and_open_peer_with_a_folder_address(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=9) as (pc1, pc2):
        pushed = sync(pc1, PeerAddress(folder, name="dossier"), pull=False)
        assert isinstance(pushed, FolderSummary) and pushed.written
        pulled = sync(pc2, folder, push=False)
        assert isinstance(pulled, FolderSummary) and pulled.written is None
        same(pc1, pc2)
        with pytest.raises(NotALivePeer, match="shared folder"):
            open_peer(folder)


def test_folder_addresses_and_a_missing_folder(tmp_path: Path) -> None:
    assert folder_path("file:///C:/ERP/ERP_LAUNCHER_SYNC").as_posix() == "C:/ERP/ERP_LAUNCHER_SYNC"
    assert folder_path("file://serveur/partage/ERP%20SYNC").as_posix() == "//serveur/partage/ERP SYNC"
    assert folder_path("file:///srv/erp/sync") == Path("/srv/erp/sync")
    with databases(tmp_path, "sqlite") as (pc1,):
        init_node(pc1, "pc1")
        with pytest.raises(FolderUnavailable) as caught:
            exchange(pc1, (tmp_path / "absent").as_uri())
        assert "absent" in caught.value.message and caught.value.hint
        assert not (tmp_path / "absent").exists()
        found = probe(shared(tmp_path), pc1)
        assert found.writable and found.nodes == []


def test_files_are_json_lines_with_a_header_and_an_end_mark(tmp_path: Path) -> None:
    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", scale=1, seed=2) as (pc1,):
        exchange(pc1, folder)
        (file,) = files_of(folder, pc1)
        lines = [json.loads(line) for line in gzip.decompress(file.read_bytes()).splitlines()]
        header, end = lines[0], lines[-1]
        assert header["erpsync"] == "changes" and header["node_id"] == Node(pc1).node_id
        assert header["fingerprint"] == Node(pc1).fingerprint and header["since"] == 0
        assert end == {
            "end": True,
            "batches": len(lines) - 2,
            "rows": sum(len(b["gids"]) for b in lines[1:-1]),
        }
        state = json.loads((file.parent / "node.json").read_text(encoding="utf-8"))
        assert state["name"] == "pc1" and state["exported"] == header["upto"] and state["number"] == 1


def test_the_sync_command_takes_a_folder(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from erpsync.cli import cli

    folder = shared(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=10) as (pc1, pc2):
        for db in (pc1, pc2):
            result = CliRunner().invoke(cli, ["--lang", "en", "sync", str(db.url.database), folder])
            assert result.exit_code == 0, result.output
            assert f"with {folder_path(folder)}" in result.output.replace("\n", "")
        same(pc1, pc2)

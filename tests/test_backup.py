"""Backups: taken while another process writes, verified, restored; damaged ones refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from erpsync.backup import BackupFailed, create_backup, list_backups, prune, restore_backup, verify_backup
from erpsync.db import Database
from erpsync.errors import SchemaMismatch
from erpsync.fill import fill

WRITER = """
import sys, time
from pathlib import Path
from sqlalchemy import text
from erpsync.db import open_database
url, stop = sys.argv[1], Path(sys.argv[2])
with open_database(url) as db:
    n = 0
    deadline = time.monotonic() + 60
    while not stop.exists() and time.monotonic() < deadline:
        with db.begin() as conn:
            conn.execute(text("INSERT INTO tb_Utilisateur (Login, Nom) VALUES (:l, 'W')"), {"l": f"w{n}"})
        n += 1
        if n == 5:
            Path(sys.argv[2] + ".started").touch()
"""


def count(db: Database, table: str = "tb_Utilisateur") -> int:
    with db.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def test_backup_while_another_process_writes_then_verify_and_restore(
    erp_db: Database, db_url: str, tmp_path: Path
) -> None:
    fill(erp_db, scale=1, seed=8)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, db_url, str(stop)])
    try:
        for _ in range(300):
            if Path(f"{stop}.started").exists():
                break
            time.sleep(0.05)
        path, made = create_backup(erp_db, tmp_path / "backups")
        time.sleep(0.3)
    finally:
        stop.touch()
        writer.wait(timeout=30)
    assert verify_backup(path) == made
    after_writes = count(erp_db)
    assert after_writes > made.rows["tb_Utilisateur"]  # the writer went on after the backup
    before = restore_backup(erp_db, path, folder=tmp_path / "backups")
    assert count(erp_db) == made.rows["tb_Utilisateur"]
    assert count(erp_db, "tb_LigneCommande") == made.rows["tb_LigneCommande"]
    assert verify_backup(before).rows["tb_Utilisateur"] == after_writes
    assert [b.reason for b in list_backups(tmp_path / "backups")] == ["before restore", "manual"]


def test_a_truncated_backup_is_detected_and_nothing_is_restored(erp_db: Database, tmp_path: Path) -> None:
    fill(erp_db, scale=1, seed=9)
    path, _ = create_backup(erp_db, tmp_path / "backups")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with erp_db.begin() as conn:
        conn.execute(text("DELETE FROM tb_LigneCommande WHERE id < 100"))
    lines = count(erp_db, "tb_LigneCommande")
    with pytest.raises(BackupFailed, match="truncated or damaged"):
        verify_backup(path)
    with pytest.raises(BackupFailed, match="truncated or damaged"):
        restore_backup(erp_db, path, folder=tmp_path / "backups")
    assert count(erp_db, "tb_LigneCommande") == lines
    assert len(list_backups(tmp_path / "backups")) == 1  # nothing was even backed up


def test_restore_refuses_a_backup_of_another_schema_unless_forced(erp_db: Database, tmp_path: Path) -> None:
    fill(erp_db, scale=1, seed=10)
    path, made = create_backup(erp_db, tmp_path / "backups")
    with erp_db.begin() as conn:
        conn.execute(text("CREATE TABLE tb_Extra (id INTEGER PRIMARY KEY, Note VARCHAR(20))"))
        conn.execute(text("DELETE FROM tb_LigneCommande"))
    with pytest.raises(SchemaMismatch, match="another schema"):
        restore_backup(erp_db, path, folder=tmp_path / "backups")
    assert count(erp_db, "tb_LigneCommande") == 0
    restore_backup(erp_db, path, force=True, folder=tmp_path / "backups")
    assert count(erp_db, "tb_LigneCommande") == made.rows["tb_LigneCommande"]


def test_retention_keeps_the_last_backups(erp_db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    for _ in range(4):
        create_backup(erp_db, folder, keep_last=2)
    kept = list_backups(folder)
    assert len(kept) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [b.file for b in kept] + [f"{b.file}.json" for b in kept]
    )
    assert prune(folder, keep_days=0) == [kept[1].file]  # the newest is always kept


def test_retention_only_counts_the_backups_of_the_same_database(tmp_path: Path) -> None:
    from erpsync.db import open_database
    from erpsync.schema import init_schema

    folder = tmp_path / "shared"
    names = {}
    for name in ("zeta", "alpha"):
        with open_database(tmp_path / f"{name}.sqlite", create=True) as db:
            init_schema(db)
            names[name] = db.name
            for _ in range(2):
                made, _ = create_backup(db, folder, keep_last=1)
    kept = {b.database: b.file for b in list_backups(folder)}
    assert set(kept) == set(names.values()) and len(list_backups(folder)) == 2
    assert made.name == kept[names["alpha"]]  # the backup just made is kept


def test_damaged_manifests_are_skipped_and_never_delete_anything(erp_db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    good, _ = create_backup(erp_db, folder)
    (folder / "edited.json").write_text('{"file": "", "method": "export", "created": "yesterday"}')
    (folder / "escape.json").write_text(
        good.with_name(good.name + ".json").read_text().replace(good.name, "..")
    )
    create_backup(erp_db, folder, keep_last=1)
    assert len(list_backups(folder)) == 1
    assert folder.is_dir() and (folder / "edited.json").exists()
    with pytest.raises(BackupFailed, match=r"manifest .* is damaged"):
        verify_backup(folder / "escape.json")
    assert not list(folder.glob("*.partial"))


# -- backups before a sync (issue 7) -----------------------------------------------------------------


def test_a_sync_that_writes_is_backed_up_first_and_retention_applies(
    engine_name: str, tmp_path: Path
) -> None:
    from erpsync.config import BackupConfig
    from erpsync.sync.history import recent
    from erpsync.sync.session import sync
    from tests.sync_support import add_client, add_project, execute, nodes

    folder = tmp_path / "before-sync"
    config = BackupConfig(folder=str(folder), keep_last=2)
    with nodes(tmp_path, "sqlite", engine_name) as (peer, node):
        add_project(peer, "PRJ-1")
        summary = sync(node, peer, backup=config)
        assert summary.backup is not None and summary.backup.parent == folder
        made = verify_backup(summary.backup)
        assert made.reason == "before sync" and made.rows["tb_Projet"] == 0  # taken before the first write
        assert recent(node, 1)[0].backup == summary.backup
        # nothing to do: no backup, the sync stays a few queries
        assert sync(node, peer, backup=config).backup is None
        # a pure push writes on the peer only: no backup here
        execute(node, "UPDATE tb_Projet SET Libelle = 'Changé ici'")
        assert sync(node, peer, pull=False, backup=config).backup is None
        for code in ("CLI-1", "CLI-2"):
            add_client(peer, 100 + int(code[-1]), code, "Client")
            assert sync(node, peer, backup=config).backup is not None
        kept = list_backups(folder)
        assert len(kept) == 2 and {b.reason for b in kept} == {"before sync"}
        assert kept[0].rows["tb_Client"] == 1 and kept[1].rows["tb_Client"] == 0
        add_client(peer, 103, "CLI-3", "Client")
        assert sync(node, peer, backup=BackupConfig(before_sync=False, folder=str(folder))).backup is None
        assert sync(node, peer).backup is None  # the library backs up only when asked
        assert len(list_backups(folder)) == 2


def test_the_cli_backs_up_before_sync_as_erpsync_toml_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from erpsync.cli import cli
    from tests.sync_support import add_client, add_project, nodes

    with nodes(tmp_path, "sqlite", "sqlite") as (peer, node):
        a, b = str(peer.url.database), str(node.url.database)
        add_project(peer, "PRJ-1")
        monkeypatch.chdir(tmp_path)
        (tmp_path / "erpsync.toml").write_text(
            f'[node]\nname = "pc2"\ndatabase = "{b}"\n\n[backup]\nfolder = "saved"\nkeep_last = 1\n',
            encoding="utf-8",
        )
        for n in (1, 2):
            add_client(peer, 100 + n, f"CLI-{n}", "Client")
            result = CliRunner().invoke(cli, ["--lang", "en", "pull", "pc2", a])
            assert result.exit_code == 0, result.stderr
            assert f"Backup taken before the sync: {tmp_path / 'saved'}{os.sep}" in result.stdout
        assert len(list_backups(tmp_path / "saved")) == 1  # keep_last = 1
        add_client(peer, 103, "CLI-3", "Client")
        result = CliRunner().invoke(cli, ["--lang", "en", "sync", "pc2", a, "--no-backup"])
        assert result.exit_code == 0 and "Backup taken" not in result.stdout
        (tmp_path / "erpsync.toml").write_text(
            f'[node]\nname = "pc2"\ndatabase = "{b}"\n\n[backup]\nbefore_sync = false\n', encoding="utf-8"
        )
        add_client(peer, 104, "CLI-4", "Client")
        result = CliRunner().invoke(cli, ["--lang", "en", "sync", b, a])
        assert result.exit_code == 0 and "Backup taken" not in result.stdout
        assert len(list_backups(tmp_path / "saved")) == 1


def test_a_node_restored_from_an_older_backup_still_sends_its_new_rows(
    engine_name: str, tmp_path: Path
) -> None:
    from erpsync.sync.session import sync
    from erpsync.sync.verify import verify
    from tests.sync_support import add_project, nodes, rows, same

    with nodes(tmp_path, engine_name, "sqlite") as (node, peer):
        add_project(node, "PRJ-1")
        sync(node, peer)
        saved, _ = create_backup(node, tmp_path / "saved")
        add_project(node, "PRJ-2")  # reaches the peer, then the restore takes it away here
        sync(node, peer)
        restore_backup(node, saved, folder=tmp_path / "saved")
        add_project(node, "PRJ-3")  # its change sequence and global id must be new to the peer
        sync(node, peer)
        projects = "SELECT NumProjet FROM tb_Projet ORDER BY NumProjet"
        assert rows(peer, projects) == [("PRJ-1",), ("PRJ-2",), ("PRJ-3",)]
        assert rows(node, projects) == [("PRJ-1",), ("PRJ-3",)]
        # what the restore took away comes back from the peer with verify --repair
        assert verify(node, peer, repair=True).repaired == 2  # PRJ-2 and its version
        same(node, peer)

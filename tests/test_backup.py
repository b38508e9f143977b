"""Backups: taken while another process writes, verified, restored; damaged ones refused."""

from __future__ import annotations

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

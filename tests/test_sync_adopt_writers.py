"""Adoption of existing copies, and writes made by other programs while sync runs."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from erpsync.db import Database
from erpsync.fill import fill
from erpsync.sync.adopt import adopt
from erpsync.sync.node import init_node
from erpsync.sync.session import sync
from tests.sync_support import databases, execute, nodes, same, value

LINES = "SELECT count(*) FROM tb_LigneCommande"


@pytest.mark.parametrize(
    "engines", [("sqlite", "postgresql"), ("mariadb", "sqlite")], ids=["sqlite-pg", "maria-sqlite"]
)
def test_adopting_a_copy_by_primary_key_pairs_rows_instead_of_duplicating(
    engines: tuple[str, str], tmp_path: Path
) -> None:
    with databases(tmp_path, *engines) as (pc, server):
        fill(pc, scale=1, seed=21)
        fill(server, scale=1, seed=21)  # the server began as a copy of the PC
        init_node(pc, "pc")
        execute(server, "UPDATE tb_Client SET Email = 'serveur@copie.fr' WHERE id = 3")  # differs
        # added on one side only (by pk, rows with the same id would be taken for the same row)
        execute(server, "INSERT INTO tb_Utilisateur (id, Login, Nom) VALUES (500, 'web', 'Site web')")
        execute(pc, "INSERT INTO tb_Utilisateur (id, Login, Nom) VALUES (600, 'poste', 'Poste')")
        lines = value(pc, LINES)
        result = adopt(server, pc, "serveur", "pk")
        assert result.paired >= lines and result.differing == 1 and result.own == 1
        summary = sync(pc, server)
        assert summary.tables["tb_lignecommande"].changed_here == 0  # nothing sent twice
        same(pc, server)
        assert value(pc, LINES) == lines and value(server, LINES) == lines
        assert value(pc, "SELECT count(*) FROM tb_Utilisateur WHERE Login IN ('web', 'poste')") == 2
        assert (
            value(pc, "SELECT Email FROM tb_Client WHERE id = 3") == "serveur@copie.fr"
        )  # the copy's, newer


def test_adopting_by_natural_key_pairs_rows_whose_ids_differ(tmp_path: Path) -> None:
    with databases(tmp_path, "sqlite", "sqlite") as (pc, copy):
        fill(pc, scale=1, seed=22)
        fill(copy, scale=1, seed=22)
        execute(copy, "UPDATE tb_LigneCommande SET id = id + 100000")  # same lines, other ids
        init_node(pc, "pc")
        lines = value(pc, LINES)
        adopt(copy, pc, "copie", "natural")
        sync(pc, copy)
        same(pc, copy)
        assert value(pc, LINES) == lines and value(copy, LINES) == lines


def test_adopting_from_a_peer_with_another_schema_changes_nothing(tmp_path: Path) -> None:
    from erpsync.errors import SchemaMismatch

    with databases(tmp_path, "sqlite", "sqlite") as (pc, copy):
        init_node(pc, "pc")
        execute(copy, "ALTER TABLE tb_Client ADD COLUMN Fax VARCHAR(20)")
        with pytest.raises(SchemaMismatch, match=r"tb_client\.fax"):
            adopt(copy, pc, "copie", "pk")
        assert value(copy, "SELECT count(*) FROM sqlite_master WHERE name LIKE 'erpsync%'") == 0


# -- other programs writing ---------------------------------------------------------------------------

CLIENTS = {
    "sqlite": "sqlite3",
    "mariadb": "mariadb",
    "postgresql": "psql",
}


def client_command(url: str, engine: str, sql: str) -> list[str]:
    """The engine's own command-line client running ``sql`` on the database ``url``."""
    if engine == "sqlite":
        return ["sqlite3", "-cmd", ".timeout 20000", url, sql]
    parsed = make_url(url)
    if engine == "mariadb":
        return [
            "mariadb",
            "-h",
            parsed.host or "127.0.0.1",
            "-P",
            str(parsed.port or 3306),
            "-u",
            parsed.username or "root",
            str(parsed.database),
            "-e",
            sql,
        ]
    return [
        "psql",
        "-q",
        "-h",
        parsed.host or "127.0.0.1",
        "-p",
        str(parsed.port or 5432),
        "-U",
        parsed.username or "postgres",
        "-d",
        str(parsed.database),
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ]


@pytest.mark.parametrize("engine", ["sqlite", "mariadb", "postgresql"])
def test_rows_written_by_the_engines_own_client_during_syncs_are_not_lost(
    engine: str, tmp_path: Path
) -> None:
    if shutil.which(CLIENTS[engine]) is None:
        pytest.skip(f"{CLIENTS[engine]} is not installed")
    other = "postgresql" if engine == "sqlite" else "sqlite"
    with nodes(tmp_path, engine, other, scale=1, seed=23) as (writer_db, peer):
        sync(writer_db, peer)
        url = (
            writer_db.url.database
            if engine == "sqlite"
            else writer_db.url.render_as_string(hide_password=False)
        )
        assert url is not None
        failures: list[str] = []

        def write() -> None:
            for i in range(12):
                sql = (
                    "INSERT INTO tb_Client (fkVersion, Code, RaisonSociale) "
                    f"VALUES (1, 'EXT-{i:03d}', 'Externe {i}');"
                    f"UPDATE tb_Client SET Telephone = '0{i}' WHERE Code = 'CLI-00001';"
                    f"DELETE FROM tb_Client WHERE Code = 'EXT-{i - 3:03d}';"
                )
                done = subprocess.run(
                    client_command(url, engine, sql), capture_output=True, text=True, check=False
                )
                if done.returncode != 0 or "Error" in done.stderr:
                    failures.append(done.stderr)

        thread = threading.Thread(target=write)
        thread.start()
        while thread.is_alive():
            sync(writer_db, peer)
        thread.join()
        assert failures == []
        sync(writer_db, peer)
        same(writer_db, peer)
        expected = [f"EXT-{i:03d}" for i in range(9, 12)]
        for db in (writer_db, peer):
            codes = [r for (r,) in _codes(db)]
            assert codes == expected
            assert value(db, "SELECT Telephone FROM tb_Client WHERE Code = 'CLI-00001'") == "011"


def _codes(db: Database) -> list[tuple[str]]:
    from tests.sync_support import rows

    return rows(db, "SELECT Code FROM tb_Client WHERE Code LIKE 'EXT-%' ORDER BY Code")  # type: ignore[return-value]

"""The sync commands as a user sees them: node, sync, pull, push, conflicts, verify."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from erpsync.cli import cli
from erpsync.db import open_database
from erpsync.fill import fill
from erpsync.schema import init_schema
from tests.sync_support import execute, value


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--lang", "en", *args])
    return result.exit_code, result.stdout, result.stderr


def make_db(path: Path, scale: int = 0) -> str:
    with open_database(path, create=True) as db:
        init_schema(db)
        if scale:
            fill(db, scale=scale, seed=5)
    return str(path)


def test_node_init_sync_and_nothing_to_do(tmp_path: Path) -> None:
    a, b = make_db(tmp_path / "a.sqlite", scale=1), make_db(tmp_path / "b.sqlite")
    code, out, err = run("node", "init", a, "--name", "PC-ACCUEIL")
    assert code == 0, err
    assert out.startswith(f"{a} is now sync node PC-ACCUEIL.\nSynced tables (rows given a global id now): ")
    assert "tb_LigneCommande (4,0" in out or "tb_LigneCommande (" in out
    code, out, _ = run("node", "init", a)
    assert code == 0 and out.startswith(f"Node PC-ACCUEIL on {a} is up to date.\n")
    assert run("node", "init", b, "--name", "SERVEUR")[0] == 0
    code, out, err = run("sync", a, b)
    assert code == 0, err
    assert f"Sync of PC-ACCUEIL ({a}) with SERVEUR ({b})" in out
    assert "tb_LigneCommande" in out.replace("tb_lignecommande", "tb_LigneCommande")
    code, out, _ = run("sync", a, b)
    assert code == 0 and out.startswith(f"Nothing to do: PC-ACCUEIL ({a}) and SERVEUR ({b}) are in sync (")
    code, out, _ = run("verify", a, b)
    assert code == 0 and out.rstrip().endswith("Same rows on both nodes.")
    code, out, _ = run("node", "status", b)
    assert code == 0 and "Peer PC-ACCUEIL: last sync" in out
    code, out, _ = run("node", "uninstall", b)
    assert code == 0 and out == f"{b} is no longer a sync node (22 tables removed).\n"


def test_errors_are_one_line_with_a_hint(tmp_path: Path) -> None:
    a, b = make_db(tmp_path / "a.sqlite"), make_db(tmp_path / "b.sqlite")
    code, out, err = run("sync", a, b)
    assert code == 1 and out == ""
    assert err == f"Error: {a} is not a sync node\nTry: make it one with: erpsync node init {a} --name NAME\n"
    code, _, err = run("node", "init", a)
    assert code == 1 and err.startswith("Error: a new node needs a name\nTry: add --name")
    run("node", "init", a, "--name", "A")
    code, _, err = run("sync", a, a)
    assert code == 1 and "are the same node" in err
    run("node", "init", b, "--name", "B")
    code, _, err = run("sync", a, b, "--policy", "tb_Client=sometimes")
    assert code == 1 and err.startswith("Error: unknown conflict policy sometimes\nTry: use one of: lww, ")
    result = CliRunner().invoke(cli, ["--lang", "fr", "sync", a, b, "--policy", "x=jamais"])
    assert result.stderr.startswith("Erreur : politique de conflit inconnue : jamais\nEssayez : ")
    code, _, err = run("sync", a, "http://[::1")
    assert code == 1 and err.startswith("Error: http://[::1 is not a valid peer address: Invalid IPv6 URL\n")
    # a password in a peer's URL is shown and recorded as ***
    code, _, err = run("sync", a, "postgresql+psycopg://erp:S3CRET@127.0.0.1:1/erp")
    assert code == 1 and "S3CRET" not in err
    code, out, _ = run("sync", "history", a)
    assert code == 0 and "erp:***@127.0.0.1:1" in out and "S3CRET" not in out


def test_manual_conflict_listed_shown_and_resolved_from_the_cli(tmp_path: Path) -> None:
    a, b = make_db(tmp_path / "a.sqlite", scale=1), make_db(tmp_path / "b.sqlite")
    run("node", "init", a, "--name", "A")
    run("node", "init", b, "--name", "B")
    run("sync", a, b)
    with open_database(a) as db_a, open_database(b) as db_b:
        execute(db_a, "UPDATE tb_Client SET Email = 'a@a.fr' WHERE Code = 'CLI-00001'")
        execute(db_b, "UPDATE tb_Client SET Email = 'b@b.fr', Telephone = '09' WHERE Code = 'CLI-00001'")
    code, out, _ = run("pull", a, b, "--policy", "manual")
    assert code == 0 and "1 conflicts to look at: erpsync conflicts list" in out
    code, out, _ = run("conflicts", "list", a)
    assert code == 0 and "tb_Client" in out and "update" in out and "email" in out
    code, out, _ = run("conflicts", "show", a, "1")
    assert code == 0 and "a@a.fr" in out and "b@b.fr" in out
    code, out, _ = run("conflicts", "resolve", a, "1", "--take", "remote")
    assert code == 0 and out.startswith("Conflict 1 settled: the remote version is kept")
    with open_database(a) as db_a:
        assert value(db_a, "SELECT Email FROM tb_Client WHERE Code = 'CLI-00001'") == "b@b.fr"
    code, out, _ = run("conflicts", "list", a)
    assert out == f"No conflicts in {a}.\n"
    code, _, err = run("conflicts", "resolve", a, "1", "--take", "local")
    assert code == 1 and "already settled" in err
    run("sync", a, b)
    assert run("verify", a, b)[0] == 0


def test_verify_lists_differences_and_repairs_them(tmp_path: Path) -> None:
    a, b = make_db(tmp_path / "a.sqlite", scale=1), make_db(tmp_path / "b.sqlite")
    run("node", "init", a, "--name", "A")
    run("node", "init", b, "--name", "B")
    run("sync", a, b)
    with open_database(b) as db_b:  # a write that bypasses capture (the triggers dropped meanwhile)
        db_b.dialect.mute_capture  # noqa: B018 - documents what the test simulates
        with db_b.begin() as conn:
            db_b.dialect.mute_capture(conn)
            conn.exec_driver_sql("UPDATE tb_Client SET RaisonSociale = 'Divergente' WHERE id = 2")
            db_b.dialect.unmute_capture(conn)
    code, out, _ = run("verify", a, b)
    assert code == 1 and "different" in out
    code, out, _ = run("verify", a, b, "--repair")
    assert code == 0 and "Repaired 1 rows." in out and out.rstrip().endswith("Same rows on both nodes.")

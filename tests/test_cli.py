"""The command line as a user sees it: exact messages, exit codes, languages, --debug."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner

from erpsync.cli import cli
from erpsync.i18n import set_language, tr


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_init_fill_summary_on_a_new_sqlite_file(tmp_path: Path) -> None:
    db = str(tmp_path / "demo.sqlite")
    code, out, _ = run("--lang", "en", "db", "init", db)
    assert code == 0
    assert out == (
        f"Schema created on {db}: tb_Utilisateur, tb_Projet, tb_Version, tb_Client, "
        "tb_Commande, tb_LigneCommande, tb_Logs, tb_Numerotation.\n"
    )
    code, out, _ = run("--lang", "en", "db", "init", db)
    assert (code, out) == (0, f"Schema already in place on {db}; nothing to do.\n")
    code, out, _ = run("--lang", "en", "db", "fill", db, "--scale", "1", "--seed", "1")
    assert code == 0
    assert f"Contents of {db}" in out
    assert "tb_LigneCommande" in out and "Total excl. tax (sum of MontantHT)" in out
    code, out, _ = run("--lang", "fr", "db", "summary", db)
    assert code == 0 and f"Contenu de {db}" in out and "Total HT (somme des MontantHT)" in out


def test_numbers_are_written_as_each_language_writes_them(tmp_path: Path) -> None:
    """12,345.67 in English; 12 345,67 in French, where a comma is the decimal point."""
    db = str(tmp_path / "demo.sqlite")
    assert run("--lang", "en", "db", "init", db)[0] == 0
    assert run("--lang", "en", "db", "fill", db, "--scale", "1", "--seed", "1")[0] == 0
    with sqlite3.connect(db) as conn:
        lines = conn.execute("SELECT COUNT(*) FROM tb_LigneCommande").fetchone()[0]
        total = conn.execute("SELECT printf('%.2f', SUM(MontantHT)) FROM tb_Commande").fetchone()[0]
    units, cents = total.split(".")
    assert lines >= 1000 and int(units) >= 1000
    code, out, _ = run("--lang", "en", "db", "summary", db)
    assert code == 0 and f"{lines:,}" in out and f"{int(units):,}.{cents}" in out
    code, out, _ = run("--lang", "fr", "db", "summary", db)
    nbsp = "\u00a0"
    assert code == 0 and f"{lines:,}".replace(",", nbsp) in out
    assert f"{int(units):,}".replace(",", nbsp) + f",{cents}" in out
    assert f"{lines:,}" not in out


def test_messages_write_their_numbers_in_the_language() -> None:
    backup = "Backup {file} made ({method}, {rows:,} rows)."
    done = "Done in {seconds:.1f} s, {batches} batches."
    try:
        set_language("en")
        assert (
            tr(backup, file="a.db", method="copy", rows=1234567) == "Backup a.db made (copy, 1,234,567 rows)."
        )
        assert tr(done, seconds=0.61, batches=1200) == "Done in 0.6 s, 1200 batches."
        set_language("fr")
        assert tr(backup, file="a.db", method="copy", rows=1234567) == (
            "Sauvegarde a.db faite (copy, 1\u00a0234\u00a0567 lignes)."
        )
        assert tr(done, seconds=0.61, batches=1200) == "Terminé en 0,6 s, 1200 lots."
        assert tr("unknown level {level!r}", level=Decimal("2.5")) == "niveau inconnu Decimal('2.5')"
    finally:
        set_language(None)


def test_error_is_one_line_with_a_hint_and_exit_1(tmp_path: Path) -> None:
    db = str(tmp_path / "absent.sqlite")
    code, out, err = run("--lang", "en", "db", "summary", db)
    assert code == 1 and out == ""
    assert err == (
        f"Error: SQLite database file {db} does not exist\n"
        f"Try: check the path, or create the database with: erpsync db init {db}\n"
    )
    code, _, err = run("--lang", "fr", "db", "summary", db)
    assert err.startswith(f"Erreur : le fichier de base SQLite {db} n'existe pas\nEssayez : ")


def test_language_comes_from_lang_variable(tmp_path: Path) -> None:
    db = str(tmp_path / "absent.sqlite")
    result = CliRunner(env={"LANG": "fr_FR.UTF-8", "LC_ALL": ""}).invoke(cli, ["db", "summary", db])
    assert result.stderr.startswith("Erreur : ")


def test_schema_mismatch_from_the_cli(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tb_Projet (id INTEGER PRIMARY KEY, Titre TEXT)")
    code, _, err = run("--lang", "en", "db", "init", str(db))
    assert code == 1
    first, second = err.splitlines()
    assert first.startswith("Error: the database already holds tb_Projet with another shape: ")
    assert "tb_Projet: missing column NumProjet" in first
    assert second == "Try: use an empty database, or rename or drop these tables; nothing was changed"
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == [
            "tb_Projet"
        ]


def test_debug_shows_sql_and_traceback(tmp_path: Path) -> None:
    db = str(tmp_path / "demo.sqlite")
    run("db", "init", db)
    code, _, err = run("--debug", "db", "summary", db)
    assert code == 0
    assert "SQL: SELECT count(*)" in err
    code, _, err = run("--debug", "--lang", "en", "db", "fill", db, "--scale", "-1")
    assert code == 1
    assert "Traceback" in err and "Error: --scale must be 0 or more, not -1" in err


def test_bad_option_value_is_a_usage_error() -> None:
    code, _, err = run("db", "fill", "x.sqlite", "--scale", "lots")
    assert code == 2 and "'lots' is not a valid integer" in err


def test_every_command_has_help() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "db" in out
    for group, command in (
        ("db", "init"),
        ("db", "fill"),
        ("db", "summary"),
        ("duplicate", "copy"),
        ("duplicate", "map"),
        ("duplicate", "undo"),
        ("duplicate", "runs"),
    ):
        code, out, _ = run(group, command, "--help")
        assert code == 0 and "DB" in out


def test_the_installed_command_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "erpsync", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout == "erpsync 0.1.0\n"


def test_duplicate_from_the_command_line(tmp_path: Path) -> None:
    import json

    db = str(tmp_path / "erp.sqlite")
    run("db", "init", db)
    run("db", "fill", db, "--scale", "1")
    code, out, _ = run("--lang", "en", "duplicate", db, "client", "1", "--dry-run")
    assert code == 0 and "Dry run: nothing was written." in out
    code, out, _ = run("duplicate", db, "client", "1", "--user", "admin", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["run_id"] == 1 and result["rows"]["tb_Client"] == 1 and not result["dry_run"]
    assert result["numbers"]["tb_Client"]["count"] == 1
    code, out, _ = run("duplicate", "map", db, "1", "EqClient", "1")
    assert (code, out) == (0, f"{result['new_id']}\n")
    code, out, _ = run("--lang", "en", "duplicate", "runs", db)
    assert code == 0 and "admin" in out and "done" in out
    code, out, _ = run("--lang", "en", "duplicate", "undo", db, "1")
    assert code == 0 and "Undo of run 1" in out
    code, _, err = run("--lang", "en", "duplicate", db, "projet", "0")
    assert code == 1
    assert err == (
        "Error: tb_Projet id 0 is not valid: ids are whole numbers from 1\n"
        "Try: give the id of an existing tb_Projet row\n"
    )
    code, _, err = run("--lang", "fr", "duplicate", db, "version", "1", "--into", "999")
    assert code == 1 and err.startswith("Erreur : --into 999 : aucune ligne de tb_Projet n'a l'id 999\n")
    code, _, err = run("--lang", "en", "duplicate", db, "client", "1", "--edge", "tb_Commande")
    assert code == 1 and "not of the form NAME=VALUE" in err
    code, _, err = run("duplicate", db, "client", "1", "--format", "CLIENT=CLI-{x}")
    assert code == 1 and "must contain {n} once" in err


def test_passwords_are_never_printed(tmp_path: Path) -> None:
    from tests.conftest import fresh_database

    with fresh_database("postgresql", tmp_path) as url:
        # The local PostgreSQL trusts every login, so any password is accepted: the one to hide.
        secret = url.replace("postgres@", "postgres:S3cretPw@")
        assert run("db", "init", secret)[0] == 0
        outputs = [
            run("--lang", "en", "duplicate", "runs", secret),
            run("export", secret, str(tmp_path / "e")),
            run("import", str(tmp_path / "e"), secret),
            run("db", "summary", secret),
        ]
        assert all(code == 0 for code, _, _ in outputs)
        assert not any("S3cretPw" in out + err for _, out, err in outputs)


def test_backup_and_export_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "erp.sqlite")
    run("db", "init", db)
    run("db", "fill", db, "--scale", "1")
    folder = str(tmp_path / "bk")
    code, out, _ = run("--lang", "en", "backup", "create", db, "--folder", folder, "--keep-last", "3")
    assert code == 0 and out.startswith(f"Backup {folder}/erp-") and "(sqlite-backup, " in out
    backup = out.split()[1]
    code, out, _ = run("--lang", "fr", "backup", "list", db, "--folder", folder)
    assert code == 0 and "Sauvegardes dans" in out and "manuelle" in out
    code, out, _ = run("--lang", "en", "backup", "verify", backup)
    assert code == 0 and "is intact" in out
    code, out, _ = run("--lang", "en", "backup", "restore", db, backup, "--folder", folder)
    assert code == 0 and out.startswith(f"Restored {db} from {backup}")
    code, out, _ = run("--lang", "en", "export", db, str(tmp_path / "ex"), "--format", "csv")
    assert code == 0 and "tb_LigneCommande.csv.gz" in out
    code, _, err = run("--lang", "en", "import", str(tmp_path / "nowhere"), db)
    assert code == 1 and err.startswith("Error: ") and "no manifest.json" in err

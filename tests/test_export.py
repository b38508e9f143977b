"""Export and import: exact types across engines, byte-identical re-export, merge, damaged input."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from sqlalchemy import text

from erpsync.db import Database, open_database
from erpsync.errors import InvalidArgument, SchemaMismatch
from erpsync.export import export_database, import_database
from erpsync.fill import fill
from erpsync.schema import init_schema

AWKWARD = [
    # Unicode beyond Latin-1, quotes, separators, a newline, an empty string and NULLs.
    "INSERT INTO tb_Utilisateur (id, Login, Nom, Prenom, Email) VALUES "
    "(90000, 'zoë', 'Ørsted « l''ancien »', '', NULL)",
    "INSERT INTO tb_Projet (id, NumProjet, Libelle, fkCreateur, DateCreation) VALUES "
    "(90000, 'PRJ-X', 'Chantier 🏗️ — \"A\", B;C\nsuite', NULL, '2025-12-31 23:59:59')",
    "INSERT INTO tb_Version (id, fkProjet, NumVersion, Libelle, DateCreation) VALUES "
    "(90000, 90000, 'V1', NULL, '2024-02-29 00:00:00')",
    "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale, Email, Telephone) VALUES "
    "(90000, 90000, 'CLI-X', 'Société Générale d''Électricité', NULL, '\\N')",
    "INSERT INTO tb_Commande (id, fkClient, NumCommande, DateCommande, Statut, MontantHT) VALUES "
    "(90000, 90000, 'CMD-X', '2026-01-01', 'VALIDEE', 9999999999999.99)",
    "INSERT INTO tb_LigneCommande (id, fkCommande, NumLigne, Reference, Designation, Quantite, "
    "PrixUnitaire) VALUES (90000, 90000, 1, NULL, 'Remise 0,01 €', 0.01, 9999999999999.99)",
]


def source(tmp_path: Path) -> Path:
    """A SQLite database with demo data and awkward values, exported; returns the export folder."""
    with open_database(tmp_path / "source.sqlite", create=True) as db:
        init_schema(db)
        fill(db, scale=1, seed=2)
        with db.begin() as conn:
            for statement in AWKWARD:
                conn.execute(text(statement))
        export_database(db, tmp_path / "export")
    return tmp_path / "export"


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.gz"))}


def test_round_trip_through_every_engine_gives_identical_files(erp_db: Database, tmp_path: Path) -> None:
    exported = source(tmp_path)
    report = import_database(exported, erp_db, mode="replace")
    assert report.added["tb_LigneCommande"] > 1000
    again = export_database(erp_db, tmp_path / "again")
    assert files(tmp_path / "again") == files(exported)
    first = (exported / "manifest.json").read_text()
    assert again.schema_fingerprint in first
    with erp_db.connect() as conn:
        nom, prenom, email = conn.execute(
            text("SELECT Nom, Prenom, Email FROM tb_Utilisateur WHERE id = 90000")
        ).one()
        libelle = conn.execute(text("SELECT Libelle FROM tb_Projet WHERE id = 90000")).scalar_one()
        montant = conn.execute(text("SELECT MontantHT FROM tb_Commande WHERE id = 90000")).scalar_one()
    assert (nom, prenom, email) == ("Ørsted « l'ancien »", "", None)
    assert libelle == 'Chantier 🏗️ — "A", B;C\nsuite'
    assert f"{montant:.2f}" == "9999999999999.99"
    line = gzip.decompress((exported / "tb_Commande.jsonl.gz").read_bytes()).decode().splitlines()[-1]
    assert line == '[90000,90000,"CMD-X","2026-01-01","VALIDEE","9999999999999.99"]'


def test_csv_export_imports_to_the_same_data(erp_db: Database, tmp_path: Path) -> None:
    exported = source(tmp_path)
    with open_database(tmp_path / "source.sqlite") as db:
        export_database(db, tmp_path / "csv", fmt="csv")
    import_database(tmp_path / "csv", erp_db, mode="replace")
    export_database(erp_db, tmp_path / "again")
    assert files(tmp_path / "again") == files(exported)


def test_merge_adds_exactly_the_missing_rows_and_overwrites_nothing(erp_db: Database, tmp_path: Path) -> None:
    # Two copies diverged from one base: the export (A) has rows the target (B) lacks,
    # B has rows of its own, and one client was edited differently on each side.
    with open_database(tmp_path / "a.sqlite", create=True) as a:
        init_schema(a)
        fill(a, scale=1, seed=4)
        base = tmp_path / "base"
        export_database(a, base)
        fill(a, scale=1, seed=5)  # rows only A has
        with a.begin() as conn:
            conn.execute(text("UPDATE tb_Client SET RaisonSociale = 'Edited on A' WHERE id = 1"))
        export_database(a, tmp_path / "a")
    import_database(base, erp_db, mode="replace")
    with erp_db.begin() as conn:
        conn.execute(text("UPDATE tb_Client SET RaisonSociale = 'Edited on B' WHERE id = 1"))
    before = {t: _count(erp_db, t) for t in ("tb_Projet", "tb_Client", "tb_LigneCommande")}
    report = import_database(tmp_path / "a", erp_db, mode="merge")
    with open_database(tmp_path / "a.sqlite") as a:
        expected = {t: _count(a, t) - before[t] for t in before}
    assert {t: report.added[t] for t in before} == expected
    assert report.differing["tb_Client"] == [[1]]
    with erp_db.connect() as conn:
        assert (
            conn.execute(text("SELECT RaisonSociale FROM tb_Client WHERE id = 1")).scalar_one()
            == "Edited on B"
        )
    assert import_database(tmp_path / "a", erp_db, mode="merge").added["tb_LigneCommande"] == 0


def _count(db: Database, table: str) -> int:
    with db.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def test_a_truncated_file_is_detected_and_nothing_is_imported(erp_db: Database, tmp_path: Path) -> None:
    exported = source(tmp_path)
    lines = exported / "tb_LigneCommande.jsonl.gz"
    lines.write_bytes(lines.read_bytes()[: lines.stat().st_size // 2])
    with pytest.raises(InvalidArgument, match="truncated or damaged") as caught:
        import_database(exported, erp_db, mode="replace")
    assert "tb_LigneCommande.jsonl.gz" in str(caught.value)
    assert _count(erp_db, "tb_Projet") == 0 and _count(erp_db, "tb_Utilisateur") == 0


def test_a_damaged_manifest_or_a_folder_without_one(erp_db: Database, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"no manifest\.json"):
        import_database(tmp_path, erp_db)
    exported = source(tmp_path)
    (exported / "manifest.json").write_text("{ not json")
    with pytest.raises(InvalidArgument, match=r"manifest of .* is damaged"):
        import_database(exported, erp_db)


def test_a_schema_mismatch_is_refused(db: Database, tmp_path: Path) -> None:
    exported = source(tmp_path)
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE tb_Utilisateur (id INTEGER PRIMARY KEY, Login VARCHAR(50))"))
    with pytest.raises(SchemaMismatch, match="tb_Projet: missing table") as caught:
        import_database(exported, db)
    assert "tb_Utilisateur: missing column Nom" in str(caught.value)
    assert _count(db, "tb_Utilisateur") == 0


def test_export_refuses_a_folder_that_is_not_empty(erp_db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(InvalidArgument, match="not empty"):
        export_database(erp_db, folder)
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_an_export_is_one_consistent_state_while_the_erp_writes(
    erp_db: Database, db_url: str, tmp_path: Path
) -> None:
    import threading

    fill(erp_db, scale=1, seed=6)
    writers: list[threading.Thread] = []

    def erp_adds_an_order() -> None:
        with open_database(db_url) as erp, erp.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tb_Commande (id, fkClient, NumCommande, DateCommande, Statut, "
                    "MontantHT) VALUES (90001, 1, 'CMD-NEW', '2026-05-05', 'VALIDEE', 10)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO tb_LigneCommande (fkCommande, NumLigne, Designation, Quantite, "
                    "PrixUnitaire) VALUES (90001, 1, 'Ajout', 1, 10)"
                )
            )

    def progress(label: str, done: int, total: int) -> None:
        if label == "tb_Commande" and not writers:  # after the orders, before their lines
            writers.append(threading.Thread(target=erp_adds_an_order))
            writers[0].start()
            writers[0].join(timeout=2)  # done at once on a server; SQLite's waits for the export

    export_database(erp_db, tmp_path / "export", progress=progress)
    writers[0].join(timeout=60)
    with open_database(tmp_path / "copy.sqlite", create=True) as copy:
        init_schema(copy)
        import_database(tmp_path / "export", copy, mode="replace")  # foreign keys checked on load
        assert _count(copy, "tb_LigneCommande") == _count(erp_db, "tb_LigneCommande") - 1


def test_a_value_that_cannot_be_exported_is_named_and_leaves_nothing(tmp_path: Path) -> None:
    with open_database(tmp_path / "erp.sqlite", create=True) as db:
        init_schema(db)
        fill(db, scale=1, seed=1)
        with db.begin() as conn:
            conn.execute(text("UPDATE tb_Version SET DateCreation = '15/03/2025' WHERE id = 2"))
        with pytest.raises(InvalidArgument) as caught:
            export_database(db, tmp_path / "out")
        assert str(caught.value).startswith("tb_Version row 2: column DateCreation holds '15/03/2025'")
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
        with db.begin() as conn:
            conn.execute(text("UPDATE tb_Version SET DateCreation = '2025-03-15 00:00:00' WHERE id = 2"))
        export_database(db, tmp_path / "out")
        assert (tmp_path / "out" / "manifest.json").is_file()


def test_merge_never_hangs_rows_under_an_unrelated_parent(erp_db: Database, tmp_path: Path) -> None:
    """Two PCs filled independently: same ids, other content. An order B added under its client 1
    is not attached to A's client 1 (another company), nor its line; counters only move forward."""
    with open_database(tmp_path / "b.sqlite", create=True) as b:
        init_schema(b)
        fill(b, scale=1, seed=7)
        with b.begin() as conn:
            conn.execute(text("UPDATE tb_Numerotation SET DernierNumero = 5000 WHERE TypeNumero = 'CLIENT'"))
            conn.execute(
                text(
                    "INSERT INTO tb_Commande (id, fkClient, NumCommande, DateCommande, Statut, "
                    "MontantHT) VALUES (90001, 1, 'CMD-B-1', '2026-05-05', 'VALIDEE', 10)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO tb_LigneCommande (id, fkCommande, NumLigne, Designation, Quantite, "
                    "PrixUnitaire) VALUES (90001, 90001, 1, 'Ajout', 1, 10)"
                )
            )
        export_database(b, tmp_path / "b")
    fill(erp_db, scale=1, seed=0)
    report = import_database(tmp_path / "b", erp_db, mode="merge")
    assert [1] in report.differing["tb_Client"]
    assert report.orphaned == {"tb_Commande": [[90001]], "tb_LigneCommande": [[90001]]}
    assert _count(erp_db, "tb_Commande WHERE id = 90001") == 0
    with erp_db.connect() as conn:
        counter = conn.execute(
            text("SELECT DernierNumero FROM tb_Numerotation WHERE TypeNumero = 'CLIENT'")
        ).scalar_one()
    assert counter == 5000

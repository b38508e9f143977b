"""Deep duplication on each engine, checked with SQL written independently of the engine."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, inspect, text

from erpsync.db import Database, open_database
from erpsync.duplicate import duplicate, list_runs, lookup, undo
from erpsync.errors import ChangedSinceRun, InvalidArgument, NotFound
from erpsync.fill import fill
from erpsync.numbering import NumberFormat, generate
from erpsync.schema import init_schema

TODAY = date(2026, 3, 15)
# A tree by business content: everything but ids, foreign keys and the numbers a copy gets anew.
TREE = """
SELECT p.Libelle, p.fkCreateur, v.NumVersion, v.Libelle, cl.RaisonSociale, cl.Email, cl.Telephone,
       co.DateCommande, co.Statut, co.MontantHT, l.NumLigne, l.Reference, l.Designation,
       l.Quantite, l.PrixUnitaire
FROM tb_Projet p
JOIN tb_Version v ON v.fkProjet = p.id
LEFT JOIN tb_Client cl ON cl.fkVersion = v.id
LEFT JOIN tb_Commande co ON co.fkClient = cl.id
LEFT JOIN tb_LigneCommande l ON l.fkCommande = co.id
WHERE p.id = :id
"""


def canonical(value: object) -> str:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return f"{Decimal(str(value)):.2f}"
    return str(value)


def rows(db: Database, sql: str, **params: object) -> list[tuple[str, ...]]:
    with db.connect() as conn:
        return sorted(tuple(canonical(v) for v in row) for row in conn.execute(text(sql), params))


def scalar(db: Database, sql: str, **params: object) -> object:
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def snapshot(db: Database) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, to compare a whole database before and after."""
    with db.connect() as conn:
        names = inspect(conn).get_table_names()
    return {name.lower(): rows(db, f"SELECT * FROM {db.quote(name)}") for name in names}


@pytest.fixture
def filled(erp_db: Database) -> Database:
    fill(erp_db, scale=1, seed=11)
    return erp_db


def test_deep_copy_of_a_project_has_the_same_tree_under_new_ids_and_numbers(filled: Database) -> None:
    result = duplicate(filled, "projet", 1, user="admin", today=TODAY)
    new = result.new_id
    assert new is not None and new != 1
    original, copy = rows(filled, TREE, id=1), rows(filled, TREE, id=new)
    assert copy == original and len(original) > 100
    assert result.rows["tb_LigneCommande"] == scalar(
        filled,
        "SELECT COUNT(*) FROM tb_LigneCommande l JOIN tb_Commande co ON co.id = l.fkCommande "
        "JOIN tb_Client cl ON cl.id = co.fkClient JOIN tb_Version v ON v.id = cl.fkVersion "
        "WHERE v.fkProjet = :id",
        id=new,
    )
    # New business numbers, none shared with the original, in the default formats.
    old_codes = set(
        rows(
            filled,
            "SELECT cl.Code FROM tb_Client cl JOIN tb_Version v ON v.id = cl.fkVersion WHERE v.fkProjet = 1",
        )
    )
    new_codes = set(
        rows(
            filled,
            "SELECT cl.Code FROM tb_Client cl JOIN tb_Version v ON v.id = cl.fkVersion "
            "WHERE v.fkProjet = :id",
            id=new,
        )
    )
    assert len(new_codes) == len(old_codes) and not new_codes & old_codes
    assert (
        scalar(filled, "SELECT NumProjet FROM tb_Projet WHERE id = :id", id=new)
        == result.numbers["tb_Projet"].first
    )
    assert str(result.numbers["tb_Projet"].first).startswith("PRJ-2026-")
    assert (
        scalar(
            filled,
            "SELECT COUNT(*) FROM tb_Commande WHERE NumCommande LIKE 'CMD-2026-%' AND fkClient IN "
            "(SELECT cl.id FROM tb_Client cl JOIN tb_Version v ON v.id = cl.fkVersion "
            "WHERE v.fkProjet = :id)",
            id=new,
        )
        == result.rows["tb_Commande"]
    )
    # The original is untouched and still complete.
    assert rows(filled, TREE, id=1) == original


def test_a_version_copied_into_another_project(filled: Database) -> None:
    version = scalar(filled, "SELECT MIN(id) FROM tb_Version WHERE fkProjet = 1")
    subtree = TREE.replace(
        "FROM tb_Projet p\nJOIN tb_Version v ON v.fkProjet = p.id",
        "FROM tb_Version v JOIN tb_Projet p ON p.id = v.fkProjet",
    ).replace("WHERE p.id = :id", "WHERE v.id = :id")
    subtree = subtree.replace("SELECT p.Libelle, p.fkCreateur, ", "SELECT ")
    result = duplicate(filled, "version", int(str(version)), into=2, today=TODAY)
    assert scalar(filled, "SELECT fkProjet FROM tb_Version WHERE id = :id", id=result.new_id) == 2
    assert rows(filled, subtree, id=result.new_id) == rows(filled, subtree, id=version)


def test_copied_clients_get_the_next_codes_as_in_the_spec(erp_db: Database) -> None:
    with erp_db.begin() as conn:
        conn.execute(text("INSERT INTO tb_Utilisateur (id, Login, Nom) VALUES (1, 'admin', 'Admin')"))
        conn.execute(
            text(
                "INSERT INTO tb_Projet (id, NumProjet, Libelle, fkCreateur, DateCreation) "
                "VALUES (1, 'PRJ-1', 'Projet', 1, '2026-01-05 10:00:00')"
            )
        )
        for vid in (5, 10):
            conn.execute(
                text(
                    "INSERT INTO tb_Version (id, fkProjet, NumVersion, DateCreation) "
                    "VALUES (:v, 1, 'V1', '2026-01-05 10:00:00')"
                ),
                {"v": vid},
            )
        for cid, code in ((1, "CLI-001"), (2, "CLI-002")):
            conn.execute(
                text(
                    "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale) "
                    "VALUES (:i, 5, :c, 'Dupont SARL')"
                ),
                {"i": cid, "c": code},
            )
        conn.execute(
            text("INSERT INTO tb_Numerotation (TypeNumero, Annee, DernierNumero) VALUES ('CLIENT', 0, 2)")
        )
    for cid in (1, 2):
        duplicate(erp_db, "client", cid, into=10, formats={"CLIENT": NumberFormat("CLI-{n:03d}")})
    assert rows(erp_db, "SELECT Code, fkVersion FROM tb_Client WHERE fkVersion = 10") == [
        ("CLI-003", "10.00"),
        ("CLI-004", "10.00"),
    ]


def test_shallow_copies_the_record_alone(filled: Database) -> None:
    result = duplicate(filled, "client", 1, deep=False, today=TODAY)
    assert result.rows == {"tb_Client": 1}
    assert scalar(filled, "SELECT COUNT(*) FROM tb_Commande WHERE fkClient = :id", id=result.new_id) == 0
    assert scalar(filled, "SELECT fkVersion FROM tb_Client WHERE id = :id", id=result.new_id) == scalar(
        filled, "SELECT fkVersion FROM tb_Client WHERE id = 1"
    )


FAILING_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER boom BEFORE INSERT ON tb_LigneCommande WHEN NEW.Reference = 'BOOM' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    ],
    "mariadb": [
        "CREATE TRIGGER boom BEFORE INSERT ON tb_LigneCommande FOR EACH ROW BEGIN "
        "IF NEW.Reference = 'BOOM' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'; "
        "END IF; END"
    ],
    "postgresql": [
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.Reference = 'BOOM' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER boom BEFORE INSERT ON tb_LigneCommande FOR EACH ROW EXECUTE FUNCTION boom()",
    ],
}


def test_a_failure_at_the_deepest_level_leaves_the_database_as_it_was(filled: Database) -> None:
    last_line = scalar(
        filled,
        "SELECT MAX(l.id) FROM tb_LigneCommande l JOIN tb_Commande co ON co.id = l.fkCommande "
        "JOIN tb_Client cl ON cl.id = co.fkClient JOIN tb_Version v ON v.id = cl.fkVersion "
        "WHERE v.fkProjet = 1",
    )
    with filled.begin() as conn:
        conn.execute(text("UPDATE tb_LigneCommande SET Reference = 'BOOM' WHERE id = :id"), {"id": last_line})
        for statement in FAILING_TRIGGER[filled.dialect.name]:
            conn.exec_driver_sql(statement)
    before = snapshot(filled)
    with pytest.raises(Exception, match="injected failure"):
        duplicate(filled, "projet", 1, user="alice", today=TODAY)
    after = snapshot(filled)
    after.pop("tb_logs"), before.pop("tb_logs")  # compared below: it gains the failure row
    for name in set(after) - set(before):
        assert after.pop(name) == [], f"{name} holds rows after a failed copy"
    assert after == before
    failure = rows(filled, "SELECT Operation, TableCible, IdSource, Succes, Utilisateur FROM tb_Logs")
    assert failure == [("DUPLICATION_PROJET", "tb_Projet", "1.00", "0.00", "alice")]
    assert "injected failure" in str(scalar(filled, "SELECT Message FROM tb_Logs"))


@pytest.mark.parametrize(
    ("level", "source", "into", "error", "words"),
    [
        ("projet", None, None, InvalidArgument, ["tb_Projet", "None"]),
        ("projet", 0, None, InvalidArgument, ["tb_Projet", "0"]),
        ("client", -3, None, InvalidArgument, ["tb_Client", "-3"]),
        ("commande", 999_999, None, NotFound, ["tb_Commande", "999999"]),
        ("version", 1, 999_999, NotFound, ["tb_Projet", "999999"]),
        ("projet", 1, 2, InvalidArgument, ["projet has no parent"]),
        ("lignes", 1, None, InvalidArgument, ["lignes"]),
    ],
)
def test_bad_requests_are_refused_before_anything_is_written(
    filled: Database,
    level: str,
    source: int | None,
    into: int | None,
    error: type[Exception],
    words: list[str],
) -> None:
    before = snapshot(filled)
    with pytest.raises(error) as caught:
        duplicate(filled, level, source, into=into)
    for word in words:
        assert word in str(caught.value)
    assert snapshot(filled) == before


def test_success_is_journaled(filled: Database) -> None:
    result = duplicate(filled, "commande", 3, user="bob", today=TODAY)
    assert rows(
        filled, "SELECT Operation, TableCible, IdSource, IdNouveau, Succes, Utilisateur FROM tb_Logs"
    ) == [("DUPLICATION_COMMANDE", "tb_Commande", "3.00", f"{result.new_id}.00", "1.00", "bob")]
    assert scalar(filled, "SELECT COUNT(*) FROM tb_Logs WHERE DateLog IS NOT NULL") == 1


def test_saved_map_lookup_and_undo(filled: Database) -> None:
    before = snapshot(filled)
    result = duplicate(filled, "projet", 1, today=TODAY)
    assert result.run_id is not None
    client = int(
        str(
            scalar(
                filled,
                "SELECT MIN(cl.id) FROM tb_Client cl JOIN tb_Version v ON v.id = cl.fkVersion "
                "WHERE v.fkProjet = 1",
            )
        )
    )
    copied = lookup(filled, result.run_id, "EqClient", client)
    assert lookup(filled, result.run_id, "tb_Client", client) == copied
    assert scalar(filled, "SELECT RaisonSociale FROM tb_Client WHERE id = :id", id=copied) == scalar(
        filled, "SELECT RaisonSociale FROM tb_Client WHERE id = :id", id=client
    )
    with pytest.raises(NotFound, match="did not copy"):
        lookup(filled, result.run_id, "EqClient", 999_999)
    deleted = undo(filled, result.run_id)
    assert deleted == result.rows
    after = snapshot(filled)
    for name in ("tb_logs", "tb_numerotation", "erpsync_dup_run", "erpsync_dup_map", "erpsync_dup_step"):
        after.pop(name, None)
        before.pop(name, None)
    assert after == before
    assert [run.status for run in list_runs(filled)] == ["undone"]
    with pytest.raises(InvalidArgument, match="was undone"):
        lookup(filled, result.run_id, "EqClient", client)
    with pytest.raises(InvalidArgument, match="already undone"):
        undo(filled, result.run_id)
    with pytest.raises(NotFound, match="no duplication run 42"):
        undo(filled, 42)


def test_undo_refuses_copies_changed_since_unless_forced(filled: Database) -> None:
    result = duplicate(filled, "client", 1, today=TODAY)
    assert result.run_id is not None
    with filled.begin() as conn:
        conn.execute(
            text(
                "UPDATE tb_LigneCommande SET Quantite = Quantite + 1 WHERE fkCommande IN "
                "(SELECT id FROM tb_Commande WHERE fkClient = :c)"
            ),
            {"c": result.new_id},
        )
    with pytest.raises(ChangedSinceRun, match="tb_LigneCommande"):
        undo(filled, result.run_id)
    assert scalar(filled, "SELECT COUNT(*) FROM tb_Client WHERE id = :id", id=result.new_id) == 1
    undo(filled, result.run_id, force=True)
    assert scalar(filled, "SELECT COUNT(*) FROM tb_Client WHERE id = :id", id=result.new_id) == 0


def test_dry_run_counts_what_a_copy_does_and_writes_nothing(filled: Database) -> None:
    before = snapshot(filled)
    preview = duplicate(filled, "version", 2, dry_run=True, today=TODAY)
    assert snapshot(filled) == before and preview.run_id is None
    result = duplicate(filled, "version", 2, today=TODAY)
    assert preview.rows == result.rows
    assert preview.numbers == result.numbers


def add_attachments(db: Database) -> Table:
    """A table added later under tb_Commande, which also refers to the client."""
    fold = db.dialect.fold
    metadata = MetaData()
    metadata.reflect(db.engine, only=[fold("tb_Commande"), fold("tb_Client")])
    table = Table(
        fold("tb_PieceJointe"),
        metadata,
        Column("id", Integer, primary_key=True),
        Column(fold("fkCommande"), Integer, ForeignKey(f"{fold('tb_Commande')}.id"), nullable=False),
        Column(fold("fkClient"), Integer, ForeignKey(f"{fold('tb_Client')}.id")),
        Column(fold("NomFichier"), String(100), nullable=False),
    )
    with db.begin() as conn:
        table.create(conn)
        conn.execute(
            text(
                "INSERT INTO tb_PieceJointe (fkCommande, fkClient, NomFichier) "
                "SELECT co.id, co.fkClient, 'devis.pdf' FROM tb_Commande co"
            )
        )
    return table


def test_a_table_added_under_commande_is_copied_and_points_to_the_copies(filled: Database) -> None:
    add_attachments(filled)
    result = duplicate(filled, "client", 1, today=TODAY)
    copied = {name.lower(): count for name, count in result.rows.items()}  # PostgreSQL folds new names
    assert copied["tb_piecejointe"] == copied["tb_commande"] > 0
    assert (
        rows(
            filled,
            "SELECT pj.fkClient, co.fkClient FROM tb_PieceJointe pj JOIN tb_Commande co "
            "ON co.id = pj.fkCommande WHERE co.fkClient = :c",
            c=result.new_id,
        )
        == [(f"{result.new_id}.00", f"{result.new_id}.00")] * result.rows["tb_Commande"]
    )
    skipped = duplicate(filled, "client", 1, edges={"tb_PieceJointe": "skip"}, today=TODAY)
    assert "tb_piecejointe" not in {name.lower() for name in skipped.rows}


def test_shallow_edge_copies_children_but_not_grandchildren(filled: Database) -> None:
    result = duplicate(filled, "client", 1, edges={"tb_Commande": "shallow"}, today=TODAY)
    assert set(result.rows) == {"tb_Client", "tb_Commande"}


@pytest.mark.parametrize("engine", ["mariadb", "postgresql"])
def test_concurrent_duplications_never_draw_the_same_number(engine: str, tmp_path: Path) -> None:
    from tests.conftest import fresh_database

    with fresh_database(engine, tmp_path) as url:
        with open_database(url) as db:
            init_schema(db)
            fill(db, scale=1, seed=5)
        errors: list[BaseException] = []
        numbers: list[str] = []

        def worker(client_ids: list[int]) -> None:
            try:
                with open_database(url) as db:
                    for cid in client_ids:
                        duplicate(db, "client", cid, today=TODAY)
                    numbers.extend(generate(db, "COMMANDE", on=TODAY) for _ in range(10))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=worker, args=([1, 2, 3, 4],)),
            threading.Thread(target=worker, args=([5, 6, 7, 8],)),
            threading.Thread(target=worker, args=([9, 10, 11, 12],)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with open_database(url) as db:
            codes = rows(db, "SELECT Code FROM tb_Client") + rows(db, "SELECT NumCommande FROM tb_Commande")
            assert not [n for n, c in Counter(codes).items() if c > 1]
            assert len(set(numbers)) == 30
            assert not set(numbers) & {c[0] for c in codes}


def test_the_same_copy_on_every_engine_gives_the_same_result(filled: Database, tmp_path: Path) -> None:
    with open_database(tmp_path / "reference.sqlite", create=True) as reference:
        init_schema(reference)
        fill(reference, scale=1, seed=11)
        expected = duplicate(reference, "projet", 2, today=TODAY)
        expected_tree = rows(reference, TREE, id=expected.new_id)
        expected_numbers = rows(reference, "SELECT Code FROM tb_Client WHERE id > 0 ORDER BY id")
    result = duplicate(filled, "projet", 2, today=TODAY)
    assert (result.rows, result.numbers, result.new_id) == (expected.rows, expected.numbers, expected.new_id)
    assert rows(filled, TREE, id=result.new_id) == expected_tree
    assert rows(filled, "SELECT Code FROM tb_Client WHERE id > 0 ORDER BY id") == expected_numbers


def test_numbering_inside_the_callers_transaction_rolls_back_with_it(erp_db: Database) -> None:
    assert generate(erp_db, "PROJET", on=TODAY) == "PRJ-2026-00001"  # its own transaction
    with pytest.raises(RuntimeError), erp_db.begin() as conn:
        assert generate(conn, "PROJET", on=TODAY) == "PRJ-2026-00002"  # the caller's transaction
        raise RuntimeError("the caller fails")
    assert generate(erp_db, "PROJET", on=TODAY) == "PRJ-2026-00002"
    assert generate(erp_db, "CLIENT", fmt=NumberFormat("CLI-{n:03d}")) == "CLI-001"
    with pytest.raises(InvalidArgument, match="must contain"):
        NumberFormat("CLI-{n}-{n}")


def test_the_erp_can_insert_while_a_copy_runs(filled: Database, db_url: str) -> None:
    """An insert by another program during the copy gets its own id; neither side fails."""
    outcome: list[object] = []

    def erp_insert() -> None:
        try:
            with open_database(db_url) as erp, erp.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO tb_Client (fkVersion, Code, RaisonSociale) "
                        "SELECT MIN(id), 'ERP-1', 'Saisie pendant copie' FROM tb_Version WHERE fkProjet = 2"
                    )
                )
            outcome.append("ok")
        except Exception as exc:  # reported by the assertion below
            outcome.append(exc)

    threads: list[threading.Thread] = []

    def progress(label: str, done: int, total: int) -> None:
        if label == "tb_Client" and not threads:
            threads.append(threading.Thread(target=erp_insert))
            threads[0].start()
            time.sleep(0.2)  # let the ERP's insert start while the copy holds its locks

    result = duplicate(filled, "projet", 1, progress=progress, today=TODAY)
    threads[0].join(timeout=60)
    assert outcome == ["ok"]
    assert rows(filled, TREE, id=result.new_id) == rows(filled, TREE, id=1)
    assert scalar(filled, "SELECT COUNT(*) FROM tb_Client WHERE Code = 'ERP-1'") == 1

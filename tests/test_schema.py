"""`db init`: the reference schema on each engine, idempotent, refusing other shapes."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from erpsync.db import Database
from erpsync.errors import DatabaseError, SchemaMismatch, SchemaMissing
from erpsync.schema import ERP_TABLES, init_schema, require_schema

FOREIGN_KEYS = {
    ("tb_projet", "fkcreateur"): "tb_utilisateur",
    ("tb_version", "fkprojet"): "tb_projet",
    ("tb_client", "fkversion"): "tb_version",
    ("tb_commande", "fkclient"): "tb_client",
    ("tb_lignecommande", "fkcommande"): "tb_commande",
}
UNIQUE = {
    ("tb_projet", "numprojet"),
    ("tb_commande", "numcommande"),
    ("tb_client", "code"),
    ("tb_utilisateur", "login"),
}


def test_init_creates_every_table_then_does_nothing(db: Database) -> None:
    first = init_schema(db)
    assert first.created == ERP_TABLES and first.existing == ()
    second = init_schema(db)
    assert second.created == () and second.existing == ERP_TABLES
    with db.connect() as conn:
        names = {name.lower() for name in inspect(conn).get_table_names()}
    assert names == {name.lower() for name in ERP_TABLES}


def test_names_are_the_specs_and_spec_sql_runs_unchanged(erp_db: Database) -> None:
    with erp_db.connect() as conn:
        conn.execute(text("SELECT id, NumProjet, Libelle, fkCreateur, DateCreation FROM tb_Projet"))
        conn.execute(
            text(
                "SELECT id, fkCommande, NumLigne, Reference, Designation, Quantite, "
                "PrixUnitaire FROM tb_LigneCommande"
            )
        )
        if erp_db.dialect.name == "mariadb":  # MariaDB keeps the spec's spelling exactly
            assert "tb_LigneCommande" in inspect(conn).get_table_names()


def test_foreign_keys_are_indexed_and_business_keys_unique(erp_db: Database) -> None:
    with erp_db.connect() as conn:
        inspector = inspect(conn)
        tables = {name.lower(): name for name in inspector.get_table_names()}
        found_fks = {}
        for table in FOREIGN_KEYS.keys() | {(t, "") for t, _ in UNIQUE}:
            name = tables[table[0]]
            for fk in inspector.get_foreign_keys(name):
                found_fks[(table[0], fk["constrained_columns"][0].lower())] = fk["referred_table"].lower()
        assert {k: v for k, v in found_fks.items() if k in FOREIGN_KEYS} == FOREIGN_KEYS
        for table, column in FOREIGN_KEYS:
            leading = {ix["column_names"][0].lower() for ix in inspector.get_indexes(tables[table])}
            assert column in leading, f"no index on {table}.{column}"
        for table, column in UNIQUE:
            uniques = {
                tuple(c.lower() for c in u["column_names"])
                for u in inspector.get_unique_constraints(tables[table])
            }
            uniques |= {
                tuple(c.lower() for c in ix["column_names"])
                for ix in inspector.get_indexes(tables[table])
                if ix["unique"]
            }
            assert (column,) in uniques, f"{table}.{column} is not unique"


def test_unique_business_key_is_enforced(erp_db: Database) -> None:
    with erp_db.begin() as conn:
        conn.execute(text("INSERT INTO tb_Utilisateur (Login, Nom) VALUES ('admin', 'Admin')"))
    with pytest.raises(DatabaseError) as caught, erp_db.begin() as conn:
        conn.execute(text("INSERT INTO tb_Utilisateur (Login, Nom) VALUES ('admin', 'Autre')"))
    assert isinstance(caught.value.__cause__, IntegrityError)


def test_init_refuses_an_existing_table_of_another_shape_and_writes_nothing(db: Database) -> None:
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE tb_Client (id INTEGER PRIMARY KEY, Nom VARCHAR(50), Code INTEGER)"))
    with pytest.raises(SchemaMismatch) as caught:
        init_schema(db)
    message = str(caught.value)
    assert "tb_Client" in message
    assert "missing column RaisonSociale" in message
    assert "unexpected column nom" in message.lower()
    assert "Code is INTEGER, expected VARCHAR(20)" in message
    assert "\n" not in message
    assert "nothing was changed" in caught.value.hint
    with db.connect() as conn:
        assert [n.lower() for n in inspect(conn).get_table_names()] == ["tb_client"]


def test_missing_tables_are_created_beside_matching_ones(erp_db: Database) -> None:
    with erp_db.begin() as conn:
        conn.execute(text("DROP TABLE tb_Numerotation"))
    result = init_schema(erp_db)
    assert result.created == ("tb_Numerotation",)


def test_commands_that_need_the_schema_say_how_to_create_it(db: Database) -> None:
    with pytest.raises(SchemaMissing) as caught:
        require_schema(db)
    assert "erpsync db init" in caught.value.hint

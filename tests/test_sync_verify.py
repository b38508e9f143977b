"""verify and --repair across engines; a schema that is not the ERP's, with a natural key."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Numeric, text

from erpsync.db import Database
from erpsync.sync.encoding import encoder
from erpsync.sync.node import Node, init_node
from erpsync.sync.session import sync
from erpsync.sync.verify import verify
from tests.conftest import fresh_database
from tests.sync_support import execute, nodes, rows, same, value


def bypass(db: Database, sql: str) -> None:
    """A write the capture does not see (as with triggers dropped by hand)."""
    with db.begin() as conn:
        db.dialect.mute_capture(conn)
        conn.exec_driver_sql(sql)
        db.dialect.unmute_capture(conn)


def test_verify_across_three_engines_finds_and_repairs_differences(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "mariadb", "postgresql", scale=1, seed=31) as (lite, maria, pg):
        sync(lite, maria)
        sync(lite, pg)
        same(lite, maria, pg)  # decimals, dates and text compare equal across engines
        bypass(maria, "UPDATE tb_LigneCommande SET PrixUnitaire = 1234.56 WHERE id = 7")
        bypass(maria, "DELETE FROM tb_LigneCommande WHERE id = 8")
        bypass(pg, "INSERT INTO tb_Utilisateur (Login, Nom) VALUES ('fantome', 'Fantôme')")
        report = verify(lite, maria)
        lines = report.tables["tb_LigneCommande"]
        assert (len(lines.different), len(lines.only_here), len(lines.only_there)) == (1, 1, 0)
        fixed = verify(lite, maria, repair=True)
        assert fixed.repaired == 2
        assert verify(lite, maria).same
        assert value(maria, "SELECT PrixUnitaire FROM tb_LigneCommande WHERE id = 7") != 1234.56
        # a row the capture missed on PostgreSQL is not known to it as a node row: registering finds it
        init_node(pg, "pc3")
        assert not verify(lite, pg).same
        verify(lite, pg, repair=True)
        assert verify(lite, pg).same
        assert value(lite, "SELECT count(*) FROM tb_Utilisateur WHERE Login = 'fantome'") == 1


NATURAL = (
    "CREATE TABLE t_tag (code VARCHAR(10) NOT NULL, lang VARCHAR(2) NOT NULL, label VARCHAR(50), "
    "PRIMARY KEY (code, lang))",
    "CREATE TABLE t_item (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(50) NOT NULL, parent INTEGER, "
    "tag_code VARCHAR(10), tag_lang VARCHAR(2), FOREIGN KEY (parent) REFERENCES t_item (id), "
    "FOREIGN KEY (tag_code, tag_lang) REFERENCES t_tag (code, lang))",
)


def test_any_schema_with_primary_keys_syncs_natural_keys_and_self_references(tmp_path: Path) -> None:
    from erpsync.db import open_database

    with (
        fresh_database("sqlite", tmp_path) as a_url,
        fresh_database("postgresql", tmp_path) as b_url,
        open_database(a_url, create=True) as a,
        open_database(b_url) as b,
    ):
        for db in (a, b):
            execute(db, *NATURAL)
            execute(db, "CREATE TABLE t_nokey (x INTEGER)")
        execute(a, "INSERT INTO t_tag VALUES ('red', 'fr', 'rouge'), ('red', 'en', 'red')")
        execute(
            b, "INSERT INTO t_tag VALUES ('red', 'fr', 'ROUGE'), ('blue', 'fr', 'bleu')"
        )  # same key, later
        execute(
            a, "INSERT INTO t_item VALUES (1, 'racine', NULL, 'red', 'fr'), (2, 'enfant', 1, 'red', 'en')"
        )
        execute(b, "INSERT INTO t_item VALUES (1, 'autre racine', NULL, 'blue', 'fr')")
        report = init_node(a, "a")
        assert report.skipped == ["t_nokey"]
        init_node(b, "b")
        sync(a, b)
        same(a, b)
        for db in (a, b):
            assert rows(db, "SELECT code, lang, label FROM t_tag ORDER BY code, lang") == [
                ("blue", "fr", "bleu"),
                ("red", "en", "red"),
                ("red", "fr", "ROUGE"),
            ]
            tree = rows(
                db,
                "SELECT c.name, p.name FROM t_item c LEFT JOIN t_item p ON p.id = c.parent ORDER BY c.name",
            )
            assert tree == [("autre racine", None), ("enfant", "racine"), ("racine", None)]


@pytest.mark.parametrize("other", ["mariadb", "postgresql"])
def test_a_date_primary_key_syncs_from_sqlite(tmp_path: Path, other: str) -> None:
    """A table keyed by a date (SQLite keeps it as text): registered, paired by its key, synced."""
    from erpsync.db import open_database

    table = "CREATE TABLE t_rate (day DATE NOT NULL PRIMARY KEY, rate NUMERIC(10, 4))"
    with (
        fresh_database("sqlite", tmp_path) as a_url,
        fresh_database(other, tmp_path) as b_url,
        open_database(a_url, create=True) as a,
        open_database(b_url) as b,
    ):
        execute(a, table, "INSERT INTO t_rate VALUES ('2026-01-01', 1.1), ('2026-01-02', 1.2)")
        execute(b, table, "INSERT INTO t_rate VALUES ('2026-01-02', 1.25), ('2026-01-03', 1.3)")
        init_node(a, "a")
        init_node(b, "b")
        sync(a, b)
        same(a, b)
        assert value(a, "SELECT count(*) FROM t_rate") == 3
        execute(
            a,
            "UPDATE t_rate SET rate = 2.1 WHERE day = '2026-01-01'",
            "INSERT INTO t_rate VALUES ('2026-01-04', 1.4)",
        )
        sync(a, b)
        same(a, b)
        assert str(value(b, "SELECT rate FROM t_rate WHERE day = '2026-01-01'")) == "2.1000"


def test_decimals_of_any_size_are_compared_exactly(tmp_path: Path) -> None:
    """More than 28 significant digits (the default context's): spelled in full, never rounded."""
    from erpsync.db import open_database

    digits = "12345678901234567890.1234567891"
    with (
        fresh_database("postgresql", tmp_path) as a_url,
        fresh_database("mariadb", tmp_path) as b_url,
        open_database(a_url) as a,
        open_database(b_url) as b,
    ):
        for db in (a, b):
            execute(db, "CREATE TABLE t_amount (id INTEGER NOT NULL PRIMARY KEY, v DECIMAL(30, 10))")
            init_node(db, db.dialect.name)
        execute(a, f"INSERT INTO t_amount VALUES (1, {digits})")
        sync(a, b)
        same(a, b)
        assert str(value(b, "SELECT v FROM t_amount")) == digits
        bypass(b, f"UPDATE t_amount SET v = {digits[:-1]}2 WHERE id = 1")  # the 30th digit differs
        assert verify(a, b).tables["t_amount"].different
    unscaled = encoder(Numeric())
    assert unscaled(Decimal("1" * 40 + ".5")) != unscaled(Decimal("1" * 40 + ".4"))


@pytest.mark.parametrize(
    ("other", "here", "there", "literal"),
    [("postgresql", "BLOB", "BYTEA", "X'00ff10'"), ("mariadb", "BOOLEAN", "BOOLEAN", "1")],
    ids=["blob-bytea", "boolean-tinyint"],
)
def test_the_same_column_declared_on_two_engines_syncs(
    tmp_path: Path, other: str, here: str, there: str, literal: str
) -> None:
    """Bytes are one family whatever the engine calls them; MariaDB stores a boolean as TINYINT."""
    from erpsync.db import open_database

    table = "CREATE TABLE t_file (id INTEGER NOT NULL PRIMARY KEY, v {})"
    with (
        fresh_database("sqlite", tmp_path) as a_url,
        fresh_database(other, tmp_path) as b_url,
        open_database(a_url, create=True) as a,
        open_database(b_url) as b,
    ):
        execute(a, table.format(here), f"INSERT INTO t_file VALUES (1, {literal})")
        execute(b, table.format(there))
        init_node(a, "pc")
        init_node(b, "serveur")
        sync(a, b)
        same(a, b)
        assert rows(a, "SELECT v FROM t_file") == rows(b, "SELECT v FROM t_file")
        # a node whose fingerprint an older erpsync computed gets this one's when opened
        with a.begin() as conn:
            old = {**Node(a, conn).shapes()["t_file"]}
            old["columns"] = {"v": f"{here} NULL"}
            conn.execute(
                text("UPDATE erpsync_table SET settings = :s WHERE no = 1"),
                {"s": replace(Node(a, conn).table("t_file", conn).settings, shape=old).to_json()},
            )
            conn.execute(text("UPDATE erpsync_node SET version = 3, fingerprint = 'old'"))
        execute(a, "DELETE FROM t_file")
        sync(a, b)
        assert value(b, "SELECT count(*) FROM t_file") == 0

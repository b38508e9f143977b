"""Conflict policies, manual conflicts, update against delete, business keys created twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from erpsync import numbering
from erpsync.db import Database
from erpsync.sync import conflicts
from erpsync.sync.node import init_node, set_policy
from erpsync.sync.policies import PolicyOverride
from erpsync.sync.session import sync
from tests.sync_support import databases, execute, nodes, rows, same, value

EMAIL = "SELECT Email FROM tb_Client WHERE Code = 'CLI-00001'"
ROW = "SELECT RaisonSociale, Email, Telephone FROM tb_Client WHERE Code = 'CLI-00001'"


def policy(text: str) -> list[PolicyOverride]:
    return [PolicyOverride.parse(text)]


@pytest.fixture
def two(tmp_path: Path) -> Iterator[list[Database]]:
    """Two SQLite nodes holding the same demo data."""
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=11) as dbs:
        sync(dbs[0], dbs[1])
        yield dbs


def edit_both(a: Database, b: Database) -> None:
    """A changes the name and the email of a client; B then changes its email and phone."""
    execute(a, "UPDATE tb_Client SET RaisonSociale = 'A SARL', Email = 'a@a.fr' WHERE Code = 'CLI-00001'")
    execute(b, "UPDATE tb_Client SET Email = 'b@b.fr', Telephone = '02' WHERE Code = 'CLI-00001'")


def test_lww_keeps_the_latest_write_of_each_column(two: list[Database]) -> None:
    a, b = two
    edit_both(a, b)
    assert sync(a, b).conflicts == 0
    for db in two:
        assert rows(db, ROW) == [("A SARL", "b@b.fr", "02")]


def test_prefer_local_makes_the_whole_local_row_win_everywhere(two: list[Database]) -> None:
    a, b = two
    phone = value(a, "SELECT Telephone FROM tb_Client WHERE Code = 'CLI-00001'")
    edit_both(a, b)
    sync(a, b, policies=policy("prefer-local"))
    same(a, b)
    for db in two:
        assert rows(db, ROW) == [("A SARL", "a@a.fr", phone)]


def test_prefer_remote_makes_the_whole_peer_row_win_everywhere(two: list[Database]) -> None:
    a, b = two
    name = value(a, "SELECT RaisonSociale FROM tb_Client WHERE Code = 'CLI-00001'")
    edit_both(a, b)
    sync(a, b, policies=policy("tb_Client=prefer-remote"))
    same(a, b)
    for db in two:
        assert rows(db, ROW) == [(name, "b@b.fr", "02")]


def test_no_overwrite_adds_missing_rows_and_keeps_existing_ones(two: list[Database]) -> None:
    a, b = two
    edit_both(a, b)
    execute(b, "INSERT INTO tb_Client (fkVersion, Code, RaisonSociale) VALUES (1, 'CLI-NEW', 'Nouveau')")
    summary = sync(a, b, policies=policy("no-overwrite"))
    assert summary.conflicts == 2  # one difference noted on each side
    assert rows(a, ROW)[0][:2] == ("A SARL", "a@a.fr")
    assert rows(b, ROW)[0][1:] == ("b@b.fr", "02")
    assert value(a, "SELECT RaisonSociale FROM tb_Client WHERE Code = 'CLI-NEW'") == "Nouveau"
    (noted,) = conflicts.list_conflicts(a)
    assert noted.kind == "review" and noted.detail["remote"]["email"] == "b@b.fr"
    conflicts.resolve(a, noted.id, "remote")  # take the peer's version after review
    assert value(a, EMAIL) == "b@b.fr"


def test_manual_queues_only_the_column_both_changed(two: list[Database]) -> None:
    a, b = two
    edit_both(a, b)
    summary = sync(a, b, pull=True, push=False, policies=policy("manual"))
    assert summary.conflicts == 1
    # the columns only one side changed merged; the one both changed waits
    assert rows(a, ROW) == [("A SARL", "a@a.fr", "02")]
    (queued,) = conflicts.list_conflicts(a)
    assert (queued.kind, queued.columns, queued.table) == ("update", ["email"], "tb_Client")
    assert queued.detail["local"]["email"] == "a@a.fr" and queued.detail["remote"]["email"] == "b@b.fr"
    assert queued.detail["base_unknown"] == ["email"]  # both rewrote it: the old value is not kept
    assert queued.detail["base"]["telephone"] == queued.detail["local"]["telephone"]  # the peer changed it
    conflicts.resolve(a, queued.id, "local")
    assert conflicts.list_conflicts(a) == []
    sync(a, b, policies=policy("manual"))
    same(a, b)
    assert value(b, EMAIL) == "a@a.fr"
    assert conflicts.list_conflicts(b) == []  # B's copy of the conflict closed when A's choice arrived


def test_manual_update_against_delete_is_queued_and_can_bring_the_row_back(two: list[Database]) -> None:
    a, b = two
    line = "SELECT count(*) FROM tb_LigneCommande WHERE fkCommande = 1 AND NumLigne = 1"
    execute(a, "DELETE FROM tb_LigneCommande WHERE fkCommande = 1 AND NumLigne = 1")
    execute(b, "UPDATE tb_LigneCommande SET Quantite = 99 WHERE fkCommande = 1 AND NumLigne = 1")
    summary = sync(a, b, pull=True, push=False, policies=policy("manual"))
    assert summary.conflicts == 1 and value(a, line) == 0
    (queued,) = conflicts.list_conflicts(a)
    assert queued.kind == "delete" and queued.detail["deleted"] == "local"
    conflicts.resolve(a, queued.id, "remote")
    assert value(a, line) == 1
    sync(a, b, policies=policy("manual"))
    same(a, b)
    assert value(b, "SELECT Quantite FROM tb_LigneCommande WHERE fkCommande = 1 AND NumLigne = 1") == 99


def test_configured_column_policy_applies_without_option(two: list[Database]) -> None:
    a, b = two
    set_policy(a, "tb_Client.Email", "manual")
    edit_both(a, b)
    assert sync(a, b).conflicts >= 1
    (queued,) = conflicts.list_conflicts(a)
    assert queued.columns == ["email"] and queued.policy == "manual"


# -- business keys created on two nodes -------------------------------------------------------------


def order(db: Database, number: str, amount: str) -> None:
    execute(
        db,
        "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
        "VALUES (1, :n, '2026-04-01', 'BROUILLON', :m)",
        n=number,
        m=amount,
    )


@pytest.mark.parametrize(
    "engines", [("sqlite", "sqlite"), ("postgresql", "mariadb")], ids=["sqlite", "servers"]
)
def test_the_same_business_number_created_twice_is_renumbered(
    engines: tuple[str, str], tmp_path: Path
) -> None:
    with nodes(tmp_path, *engines, scale=1, seed=12) as (a, b):
        sync(a, b)
        order(a, "CMD-2026-77777", "10.00")
        order(b, "CMD-2026-77777", "20.00")  # created later: this one is renumbered
        summary = sync(a, b)
        assert summary.tables["tb_commande"].renumbered >= 1
        sync(a, b)
        same(a, b)
        for db in (a, b):
            found = rows(
                db,
                "SELECT NumCommande, MontantHT FROM tb_Commande WHERE MontantHT IN (10, 20) "
                "AND DateCommande = '2026-04-01' ORDER BY MontantHT",
            )
            assert len(found) == 2 and found[0][0] == "CMD-2026-77777"
            assert found[1][0] != "CMD-2026-77777" and found[1][0].startswith("CMD-2026-")
        journal = rows(b, "SELECT Operation, Message FROM tb_Logs WHERE Operation = 'SYNC_RENUMBER'")
        assert journal and "CMD-2026-77777" in journal[0][1]


@pytest.mark.parametrize("engine", ["sqlite", "mariadb", "postgresql"])
def test_numbers_received_move_the_local_counters_forward(engine: str, tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", engine, scale=1, seed=14) as (server, pc):
        sync(pc, server)  # a new PC receives the server's clients and orders
        for kind, column, table in (
            ("CLIENT", "Code", "tb_Client"),
            ("COMMANDE", "NumCommande", "tb_Commande"),
        ):
            fmt = numbering.DEFAULT_FORMATS[kind]
            year, n = fmt.parse(numbering.generate(pc, kind)) or (0, 0)
            received = [fmt.parse(r[0]) for r in rows(pc, f"SELECT {column} FROM {table}")]
            assert n == 1 + max(m for y, m in filter(None, received) if y == year)


@pytest.mark.parametrize(
    "engines", [("sqlite", "sqlite"), ("postgresql", "mariadb")], ids=["sqlite", "servers"]
)
def test_a_code_freed_by_a_delete_and_reused_in_one_sync_converges(
    engines: tuple[str, str], tmp_path: Path
) -> None:
    with nodes(tmp_path, *engines, scale=1, seed=15) as (hub, pc):
        sync(pc, hub)
        gone, code = rows(pc, "SELECT id, Code FROM tb_Client ORDER BY id DESC")[0]
        execute(
            pc,
            "DELETE FROM tb_LigneCommande WHERE fkCommande IN "
            "(SELECT id FROM tb_Commande WHERE fkClient = :c)",
            "DELETE FROM tb_Commande WHERE fkClient = :c",
            "DELETE FROM tb_Client WHERE id = :c",
            "UPDATE tb_Client SET Code = :code WHERE id = 1",
            c=gone,
            code=code,
        )
        # the hub receives "client 1 takes the code" before "the client holding it is deleted"
        sync(pc, hub)
        sync(pc, hub)
        same(pc, hub)


def test_manual_business_number_collision_is_queued_and_can_be_swapped(two: list[Database]) -> None:
    a, b = two
    order(a, "CMD-2026-88888", "10.00")
    order(b, "CMD-2026-88888", "20.00")
    summary = sync(a, b, pull=True, push=False, policies=policy("manual"))
    assert summary.conflicts == 1
    (queued,) = conflicts.list_conflicts(a)
    assert queued.kind == "unique" and queued.detail["value"] == "CMD-2026-88888"
    # the incoming row holds a new number meanwhile; take it back for the peer's row
    conflicts.resolve(a, queued.id, "remote")
    numbers = dict(
        rows(a, "SELECT MontantHT, NumCommande FROM tb_Commande WHERE DateCommande = '2026-04-01'")
    )
    assert numbers[20] == "CMD-2026-88888" or str(numbers.get(20.0, "")) == "CMD-2026-88888"
    sync(a, b, policies=policy("manual"))
    sync(a, b, policies=policy("manual"))
    same(a, b)


def test_codes_differing_only_by_case_do_not_stop_a_sync_into_mariadb(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "mariadb", scale=1, seed=13) as (a, b):
        sync(a, b)
        # SQLite's unique index tells 'CLI-abc' from 'CLI-ABC'; MariaDB's collation does not
        execute(
            a, "INSERT INTO tb_Client (fkVersion, Code, RaisonSociale) VALUES (1, 'CLI-abc', 'Minuscules')"
        )
        execute(
            a, "INSERT INTO tb_Client (fkVersion, Code, RaisonSociale) VALUES (1, 'CLI-ABC', 'Majuscules')"
        )
        summary = sync(a, b)
        assert summary.tables["tb_client"].renumbered == 1
        sync(a, b)
        same(a, b)
        assert (
            value(b, "SELECT count(*) FROM tb_Client WHERE RaisonSociale IN ('Minuscules', 'Majuscules')")
            == 2
        )


@pytest.mark.parametrize("other", ["sqlite", "postgresql", "mariadb"])
def test_a_business_key_alone_in_its_row_renumbered_under_manual_converges(
    tmp_path: Path, other: str
) -> None:
    """The renumbered column is the row's only one: the sender's write stays in its history."""
    manual = [PolicyOverride.parse("manual")]
    table = "CREATE TABLE t_code (id INTEGER NOT NULL PRIMARY KEY, ref VARCHAR(20) NOT NULL UNIQUE)"
    with databases(tmp_path, "sqlite", other, erp=False) as (a, b):
        for n, db in enumerate((a, b)):
            execute(db, table)
            init_node(db, f"n{n}")
        execute(a, "INSERT INTO t_code VALUES (1, 'N')")
        execute(b, "INSERT INTO t_code VALUES (5, 'N')")
        assert sync(a, b, policies=manual).conflicts == 1  # the collision, queued
        assert sync(a, b, policies=manual).conflicts == 0
        same(a, b)
        assert rows(a, "SELECT id, ref FROM t_code ORDER BY id") == [(1, "N"), (5, "N-2")]
        assert [c.kind for c in conflicts.list_conflicts(a) + conflicts.list_conflicts(b)] == ["unique"]

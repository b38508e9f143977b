"""Convergence, property-tested: random writes on random nodes of mixed engines, random syncs.

Four nodes (two SQLite, MariaDB, PostgreSQL) receive random inserts of clients
and orders (with colliding ids and colliding business numbers), updates of
random columns and deletes, while random pairs sync, some syncs interrupted,
some repeated. Once every node has synced with every other:

- ``verify`` finds no difference between any two nodes;
- no row is lost (a row nobody deleted is on every node) or duplicated;
- under ``lww``, each column of a row nobody deleted holds the last write.

``ERPSYNC_STATEFUL_EXAMPLES`` and ``ERPSYNC_STATEFUL_STEPS`` make a longer search
(the default keeps the suite short on two cores).
"""

from __future__ import annotations

import itertools
import os
import time
from contextlib import ExitStack, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from erpsync.db import Database
from erpsync.sync.session import sync
from tests.sync_support import execute, nodes, rows, same, value
from tests.test_sync_core import FlakyPeer, Interrupted

ENGINES = ("sqlite", "mariadb", "postgresql", "sqlite")
IDS = st.integers(min_value=9000, max_value=9004)
CODES = st.sampled_from(["CLI-X1", "CLI-X2", "CLI-X3"])
NUMBERS = st.sampled_from(["CMD-2026-90001", "CMD-2026-90002"])
NODE = st.integers(min_value=0, max_value=len(ENGINES) - 1)
PICK = st.integers(min_value=0, max_value=10_000)
AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2)
TEXTS = st.one_of(st.none(), st.text(alphabet="abcdéèxyz@.-' ", min_size=1, max_size=12))


class SyncMachine(RuleBasedStateMachine):
    """Nodes, the writes made on them, and the syncs between them."""

    tmp_path: Path

    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        self.dbs: list[Database] = []
        self.counter = itertools.count()
        self.writes: list[tuple[int, str, str, Any]] = []  # (time, token, column, value)
        self.deleted: set[str] = set()
        self.tokens: set[str] = set()

    @initialize()
    def start(self) -> None:
        self.dbs = self.stack.enter_context(nodes(SyncMachine.tmp_path, *ENGINES))
        base = self.dbs[0]
        execute(
            base,
            "INSERT INTO tb_Projet (id, NumProjet, Libelle, DateCreation) VALUES (1, 'PRJ-2026-00001', 'P', "
            "'2026-01-02 03:04:05')",
            "INSERT INTO tb_Version (id, fkProjet, NumVersion, DateCreation) "
            "VALUES (1, 1, 'V1', '2026-01-02 03:04:05')",
        )
        for other in self.dbs[1:]:
            sync(base, other)

    def teardown(self) -> None:
        try:
            if self.dbs:
                self.converge()
        finally:
            self.stack.close()

    # -- writes ------------------------------------------------------------------------------------

    def write(self, db: Database, *statements: str, **params: Any) -> None:
        execute(db, *statements, **params)
        time.sleep(0.003)  # distinct milliseconds: the clock then orders writes as they happened

    def present(self, db: Database, sql: str) -> list[str]:
        return [r[0] for r in rows(db, sql)]

    @rule(node=NODE, id_=IDS, code=CODES, email=TEXTS, phone=TEXTS)
    def insert_client(self, node: int, id_: int, code: str, email: str | None, phone: str | None) -> None:
        db = self.dbs[node]
        token = f"C{next(self.counter)}"
        if value(db, "SELECT count(*) FROM tb_Client WHERE id = :i", i=id_):
            id_ = 0  # taken here: the database gives one
        if value(db, "SELECT count(*) FROM tb_Client WHERE Code = :c", c=code):
            code = f"CLI-{token}"
        columns = "fkVersion, Code, RaisonSociale, Email, Telephone"
        params = {"c": code, "t": token, "e": email, "p": phone}
        if id_:
            self.write(
                db, f"INSERT INTO tb_Client (id, {columns}) VALUES (:i, 1, :c, :t, :e, :p)", i=id_, **params
            )
        else:
            self.write(db, f"INSERT INTO tb_Client ({columns}) VALUES (1, :c, :t, :e, :p)", **params)
        now = time.time_ns()
        self.writes += [(now, token, "email", email), (now, token, "telephone", phone)]
        self.tokens.add(token)

    @rule(node=NODE, pick=PICK, number=NUMBERS, amount=AMOUNTS)
    def insert_order(self, node: int, pick: int, number: str, amount: Decimal) -> None:
        db = self.dbs[node]
        clients = self.present(db, "SELECT id FROM tb_Client ORDER BY id")
        if not clients:
            return
        token = f"O{next(self.counter)}"
        if value(db, "SELECT count(*) FROM tb_Commande WHERE NumCommande = :n", n=number):
            number = f"CMD-{token}"
        self.write(
            db,
            "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
            "VALUES (:c, :n, '2026-05-06', :t, :m)",
            c=clients[pick % len(clients)],
            n=number,
            t=token,
            m=amount,
        )
        self.writes.append((time.time_ns(), token, "montantht", amount))
        self.tokens.add(token)

    @rule(node=NODE, pick=PICK, column=st.sampled_from(["Email", "Telephone"]), text=TEXTS)
    def update_client(self, node: int, pick: int, column: str, text: str | None) -> None:
        db = self.dbs[node]
        tokens = self.present(
            db, "SELECT RaisonSociale FROM tb_Client WHERE RaisonSociale LIKE 'C%' ORDER BY 1"
        )
        if tokens:
            token = tokens[pick % len(tokens)]
            self.write(db, f"UPDATE tb_Client SET {column} = :v WHERE RaisonSociale = :t", v=text, t=token)
            self.writes.append((time.time_ns(), token, column.lower(), text))

    @rule(node=NODE, pick=PICK, amount=AMOUNTS)
    def update_order(self, node: int, pick: int, amount: Decimal) -> None:
        db = self.dbs[node]
        tokens = self.present(db, "SELECT Statut FROM tb_Commande ORDER BY 1")
        if tokens:
            token = tokens[pick % len(tokens)]
            self.write(db, "UPDATE tb_Commande SET MontantHT = :m WHERE Statut = :t", m=amount, t=token)
            self.writes.append((time.time_ns(), token, "montantht", amount))

    @rule(node=NODE, pick=PICK)
    def delete_client(self, node: int, pick: int) -> None:
        db = self.dbs[node]
        tokens = self.present(
            db, "SELECT RaisonSociale FROM tb_Client WHERE RaisonSociale LIKE 'C%' ORDER BY 1"
        )
        if not tokens:
            return
        token = tokens[pick % len(tokens)]
        client = value(db, "SELECT id FROM tb_Client WHERE RaisonSociale = :t", t=token)
        orders = self.present(db, f"SELECT Statut FROM tb_Commande WHERE fkClient = {client}")
        self.write(
            db,
            f"DELETE FROM tb_Commande WHERE fkClient = {client}",
            f"DELETE FROM tb_Client WHERE id = {client}",
        )
        self.deleted.update([token, *orders])

    # -- syncs -------------------------------------------------------------------------------------

    @rule(a=NODE, b=NODE, twice=st.booleans())
    def sync_pair(self, a: int, b: int, twice: bool) -> None:
        if a != b:
            sync(self.dbs[a], self.dbs[b], batch_rows=3)
            if twice:
                assert sync(self.dbs[a], self.dbs[b], batch_rows=3).nothing_to_do

    @rule(a=NODE, b=NODE, allowed=st.integers(min_value=0, max_value=3))
    def interrupted_sync(self, a: int, b: int, allowed: int) -> None:
        if a != b:
            with suppress(Interrupted):
                sync(self.dbs[a], FlakyPeer(self.dbs[b], allowed), batch_rows=2)

    # -- the end -----------------------------------------------------------------------------------

    def converge(self) -> None:
        pairs = [(i, j) for i in range(len(self.dbs)) for j in range(len(self.dbs)) if i < j]
        for _ in range(2):
            for i, j in pairs:
                sync(self.dbs[i], self.dbs[j])
        same(*self.dbs)
        kept = self.tokens - self.deleted
        latest: dict[tuple[str, str], Any] = {}
        for _, token, column, written in sorted(self.writes, key=lambda w: w[0]):
            latest[(token, column)] = written
        for db in self.dbs:
            clients = rows(
                db, "SELECT RaisonSociale, Email, Telephone FROM tb_Client WHERE RaisonSociale LIKE 'C%'"
            )
            orders = rows(db, "SELECT Statut, MontantHT FROM tb_Commande")
            names = [c[0] for c in clients] + [o[0] for o in orders]
            assert len(names) == len(set(names)), "a row was duplicated"
            assert kept <= set(names), f"rows lost: {sorted(kept - set(names))}"
            for token, email, phone in clients:
                if token in kept:
                    assert (email, phone) == (latest[(token, "email")], latest[(token, "telephone")])
            for token, amount in orders:
                if token in kept:
                    assert Decimal(str(amount)).quantize(Decimal("0.01")) == latest[(token, "montantht")]


def test_nodes_converge_whatever_the_writes_and_syncs(tmp_path: Path) -> None:
    SyncMachine.tmp_path = tmp_path
    run_state_machine_as_test(
        SyncMachine,
        settings=settings(
            max_examples=int(os.environ.get("ERPSYNC_STATEFUL_EXAMPLES", "6")),
            stateful_step_count=int(os.environ.get("ERPSYNC_STATEFUL_STEPS", "14")),
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

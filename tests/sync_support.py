"""Helpers for the sync tests: several fresh nodes on chosen engines, plain SQL, comparisons."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from erpsync.db import Database, open_database
from erpsync.fill import fill
from erpsync.schema import init_schema
from erpsync.sync.node import init_node
from erpsync.sync.verify import verify
from tests.conftest import fresh_database


@contextmanager
def databases(tmp_path: Path, *engines: str, erp: bool = True) -> Iterator[list[Database]]:
    """Fresh databases, one per engine given (not nodes yet), holding the empty ERP schema
    unless ``erp`` is false."""
    with ExitStack() as stack:
        dbs = []
        for engine in engines:
            url = stack.enter_context(fresh_database(engine, tmp_path))
            db = stack.enter_context(open_database(url, create=True))
            if erp:
                init_schema(db)
            dbs.append(db)
        yield dbs


@contextmanager
def nodes(tmp_path: Path, *engines: str, scale: int = 0, seed: int = 0) -> Iterator[list[Database]]:
    """Fresh nodes ``pc1``, ``pc2`` … on ``engines``; with ``scale``, the first holds demo data."""
    with databases(tmp_path, *engines) as dbs:
        if scale:
            fill(dbs[0], scale=scale, seed=seed)
        for i, db in enumerate(dbs, start=1):
            init_node(db, f"pc{i}")
        yield dbs


def rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of a query, as tuples."""
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def value(db: Database, sql: str, **params: Any) -> Any:
    """The single value of a query."""
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def execute(db: Database, *statements: str, **params: Any) -> None:
    """Run statements in one transaction, as the ERP would (captured by the triggers).

    Then wait a few milliseconds: writes made on two nodes within the same
    millisecond are concurrent for the clock (the larger node id wins), and the
    tests that say "the later write wins" mean later by the clock.
    """
    with db.begin() as conn:
        for sql in statements:
            conn.execute(text(sql), params)
    time.sleep(0.004)


def add_client(db: Database, id_: int, code: str, name: str, version: int = 1) -> None:
    """Insert a client with an explicit id under version ``version``."""
    execute(
        db,
        "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale) VALUES (:i, :v, :c, :n)",
        i=id_,
        v=version,
        c=code,
        n=name,
    )


def add_project(db: Database, num: str) -> None:
    """A project with one version (the ids the database gives)."""
    execute(
        db,
        "INSERT INTO tb_Projet (NumProjet, Libelle, DateCreation) "
        "VALUES (:n, 'Projet', '2026-01-05 10:00:00')",
        n=num,
    )
    execute(
        db,
        "INSERT INTO tb_Version (fkProjet, NumVersion, Libelle, DateCreation) "
        "SELECT id, 'V1', 'Version', '2026-01-05 10:00:00' FROM tb_Projet WHERE NumProjet = :n",
        n=num,
    )


def same(*dbs: Database) -> None:
    """Assert that every pair of nodes holds the same rows (verify finds nothing)."""
    for other in dbs[1:]:
        report = verify(dbs[0], other)
        problems = {name: diff for name, diff in report.tables.items() if not diff.same}
        assert report.same, problems


def client_tree(db: Database) -> set[tuple[Any, ...]]:
    """(client code, name, project number) of every client: who hangs under whom, by business keys."""
    return set(
        rows(
            db,
            "SELECT c.Code, c.RaisonSociale, p.NumProjet FROM tb_Client c "
            "JOIN tb_Version v ON v.id = c.fkVersion JOIN tb_Projet p ON p.id = v.fkProjet",
        )
    )


def pairs(engines: Sequence[str]) -> list[tuple[str, str]]:
    """Engine pairs that cover each engine on each side."""
    return [(a, b) for a in engines for b in engines if a == "sqlite" or b == "sqlite" or a == b][:5]

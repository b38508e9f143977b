"""``erpsync demo``: an online hub and two office PCs on SQLite, offline edits, a sync over HTTP.

What it shows is what a company sees on its first days with erpsync: the PCs
receive the server's data, work offline, both create a client with the same
id and an order with the same number, both edit the same order, and the sync
settles it all without losing a row. Every step narrates itself; the three
databases and their erpsync.toml stay in the folder to explore afterwards.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from erpsync import numbering
from erpsync.config import ClientConfig, Config, NodeConfig, PeerConfig, ServeConfig, save_config
from erpsync.db import Database, open_database
from erpsync.errors import InvalidArgument
from erpsync.fill import fill
from erpsync.i18n import number, tr
from erpsync.schema import init_schema
from erpsync.sync.node import init_node
from erpsync.sync.session import SyncSummary, sync
from erpsync.sync.verify import verify
from erpsync.transport import PeerAddress

HUB, PC1, PC2 = "SERVEUR", "PC-ACCUEIL", "PC-ATELIER"
FILES = {HUB: "serveur", PC1: "pc-accueil", PC2: "pc-atelier"}

Narrator = Callable[[str, SyncSummary | None], None]
"""Receives each step's text (translated; may be empty) and, after a sync, its summary."""


@dataclass
class DemoResult:
    """Where the demo left its nodes, and whether they ended identical."""

    folder: Path
    databases: dict[str, Path]
    converged: bool


def run_demo(folder: Path, *, force: bool = False, say: Narrator | None = None) -> DemoResult:
    """Build the three nodes in ``folder``, edit offline, sync through the hub over HTTP on
    loopback, and check the result."""
    from erpsync.transport.server import running  # FastAPI loads only when a demo runs

    narrate: Narrator = say or (lambda message, summary: None)
    folder = Path(folder)
    paths = {name: folder / f"{base}.sqlite" for name, base in FILES.items()}
    _prepare(folder, paths, force)
    dbs = {name: open_database(path, create=True) for name, path in paths.items()}
    try:
        _set_up(dbs, narrate)
        tokens = {PC1: secrets.token_urlsafe(16), PC2: secrets.token_urlsafe(16)}
        with running(dbs[HUB], tokens=tokens) as url:
            narrate(tr("The hub {hub} answers on {url}.", hub=HUB, url=url), None)
            for pc in (PC1, PC2):
                narrate(tr("{pc} receives the hub's data.", pc=pc), _sync(dbs[pc], url, tokens[pc]))
            edits = _offline_edits(dbs, narrate)
            narrate(tr("Both PCs come back online and sync with the hub, then {pc} once more.", pc=PC1), None)
            for pc in (PC1, PC2, PC1):
                narrate("", _sync(dbs[pc], url, tokens[pc]))
            for line in _outcomes(dbs, edits):
                narrate(line, None)
            converged = all(verify(dbs[HUB], dbs[pc]).same for pc in (PC1, PC2))
            narrate(
                tr("verify: the three nodes hold the same rows.")
                if converged
                else tr("verify: the nodes differ; run erpsync verify to see the rows."),
                None,
            )
        _write_configs(folder, paths, tokens)
        return DemoResult(folder, paths, converged)
    finally:
        for db in dbs.values():
            db.close()


def _prepare(folder: Path, paths: dict[str, Path], force: bool) -> None:
    """Refuse to overwrite an earlier demo unless ``force``; then remove only the demo's own files."""
    ours = [*paths.values(), *(folder / f"{base}.toml" for base in FILES.values())]
    found = [p for p in ours if p.exists()]
    if found and not force:
        raise InvalidArgument(
            "{folder} already holds a demo ({file})",
            "run erpsync demo --force to start it again, or give another folder",
            folder=str(folder),
            file=found[0].name,
        )
    folder.mkdir(parents=True, exist_ok=True)
    for path in found:
        path.unlink()
    for path in paths.values():  # SQLite's journal files of an interrupted earlier run
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            extra.unlink(missing_ok=True)


def _set_up(dbs: dict[str, Database], narrate: Narrator) -> None:
    hub = dbs[HUB]
    init_schema(hub)
    filled = fill(hub, scale=1, seed=2026)
    init_node(hub, HUB)
    narrate(
        tr(
            "{hub}, the online server, holds the company's data: {rows} rows ({detail}).",
            hub=HUB,
            rows=number(sum(filled.rows.values())),
            detail=", ".join(f"{t} {number(n)}" for t, n in filled.rows.items() if n),
        ),
        None,
    )
    for pc in (PC1, PC2):
        init_schema(dbs[pc])
        init_node(dbs[pc], pc)
    narrate(tr("{a} and {b} are two office PCs with an empty ERP database.", a=PC1, b=PC2), None)


def _sync(db: Database, url: str, token: str) -> SyncSummary:
    return sync(db, PeerAddress(url, token, HUB))


@dataclass
class _Edits:
    """What the offline edits were, to check and tell what became of them."""

    client_id: int
    clients: dict[str, str]
    codes: dict[str, str]
    number: str
    orders: dict[str, str]
    order_id: int
    statuses: dict[str, str]


def _offline_edits(dbs: dict[str, Database], narrate: Narrator) -> _Edits:
    one, two = dbs[PC1], dbs[PC2]
    client_id = int(_row(one, "SELECT max(id) FROM tb_Client")[0]) + 1
    version = int(_row(one, "SELECT min(id) FROM tb_Version")[0])
    clients = {PC1: "Boulangerie Martin", PC2: "Garage Lefèvre"}
    orders = {PC1: "990.00", PC2: "1450.00"}
    order_id = int(_row(one, "SELECT min(id) FROM tb_Commande WHERE Statut = 'BROUILLON'")[0])
    statuses = {PC1: "VALIDEE", PC2: "EXPEDIEE"}
    number = ""
    codes = {}
    for pc, db in ((PC1, one), (PC2, two)):
        with db.begin() as conn:
            code = codes[pc] = numbering.generate(conn, numbering.CLIENT)
            conn.execute(
                text(
                    "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale, Email) "
                    "VALUES (:id, :v, :code, :name, :email)"
                ),
                {"id": client_id, "v": version, "code": code, "name": clients[pc], "email": None},
            )
            number = numbering.generate(conn, numbering.COMMANDE)
            conn.execute(
                text(
                    "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
                    "VALUES (:client, :number, CURRENT_DATE, 'BROUILLON', :amount)"
                ),
                {"client": client_id, "number": number, "amount": orders[pc]},
            )
            conn.execute(
                text("UPDATE tb_Commande SET Statut = :s WHERE id = :id"), {"s": statuses[pc], "id": order_id}
            )
        time.sleep(0.01)  # the PCs' edits are a few milliseconds apart: PC2's is the later one
    narrate(
        tr(
            "Offline, each PC creates a client with the same id {id} ({a}: {name_a}, {b}: {name_b}), "
            "each gives its new order the same number {number}, and both change the status of order "
            "{order} ({a}: {status_a}, then {b}: {status_b}).",
            id=client_id,
            a=PC1,
            b=PC2,
            name_a=clients[PC1],
            name_b=clients[PC2],
            number=number,
            order=order_id,
            status_a=statuses[PC1],
            status_b=statuses[PC2],
        ),
        None,
    )
    return _Edits(client_id, clients, codes, number, orders, order_id, statuses)


def _outcomes(dbs: dict[str, Database], edits: _Edits) -> list[str]:
    """How each collision and conflict was settled, read back from the three databases."""
    lines = []
    for pc, name in edits.clients.items():
        found = {
            node: _row(db, "SELECT id, Code FROM tb_Client WHERE RaisonSociale = :n", n=name)
            for node, db in dbs.items()
        }
        lines.append(
            tr(
                "Client {name} (created on {pc} as id {id}, code {code}): {where}.",
                name=name,
                pc=pc,
                id=edits.client_id,
                code=edits.codes[pc],
                where=", ".join(f"{node} id {found[node][0]} {found[node][1]}" for node in dbs),
            )
        )
    for pc, amount in edits.orders.items():
        number = _row(dbs[HUB], "SELECT NumCommande FROM tb_Commande WHERE MontantHT = :m", m=amount)[0]
        lines.append(
            tr("Order of {pc} ({amount} €) keeps number {number}.", pc=pc, amount=amount, number=number)
            if number == edits.number
            else tr("Order of {pc} ({amount} €) is renumbered {number}.", pc=pc, amount=amount, number=number)
        )
    journal = _row(
        dbs[HUB],
        "SELECT count(*) FROM tb_Logs WHERE Operation = 'SYNC_RENUMBER'",
    )[0]
    lines.append(tr("The journal (tb_Logs) records {n} renumberings (SYNC_RENUMBER).", n=journal))
    statuses = {
        _row(db, "SELECT Statut FROM tb_Commande WHERE id = :id", id=edits.order_id)[0] for db in dbs.values()
    }
    lines.append(
        tr(
            "Order {order}: status {status} on every node: the later edit wins (lww, column by column).",
            order=edits.order_id,
            status=" / ".join(sorted(statuses)),
        )
    )
    return lines


def _row(db: Database, sql: str, **params: Any) -> tuple[Any, ...]:
    with db.connect() as conn:
        return tuple(conn.execute(text(sql), params).one())


def _write_configs(folder: Path, paths: dict[str, Path], tokens: dict[str, str]) -> None:
    """An erpsync.toml per node, so the user can go on: status, serve, sync, service.

    The hub lists the PCs as clients of erpsync serve (their tokens), not as
    peers: the PCs sync with it, the hub's service has nobody to sync with.
    """
    hub_url = "http://127.0.0.1:8765"
    configs = {
        HUB: Config(
            node=NodeConfig(name=HUB, database=paths[HUB].name),  # beside its erpsync.toml
            serve=ServeConfig(clients=[ClientConfig(name=pc, token=tokens[pc]) for pc in (PC1, PC2)]),
        ),
        **{
            pc: Config(
                node=NodeConfig(name=pc, database=paths[pc].name),
                peers=[PeerConfig(name=HUB, url=hub_url, token=tokens[pc])],
            )
            for pc in (PC1, PC2)
        },
    }
    for name, config in configs.items():
        save_config(config, folder / f"{FILES[name]}.toml", origin="Written by erpsync demo")

"""``erpsync status`` (this node at a glance) and ``erpsync peers test`` ("tester connexions réseau")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from erpsync import service
from erpsync.cli.output import console, err_console, resolve_database, resolve_peer
from erpsync.cli.service import config_path
from erpsync.config import Config, load_config
from erpsync.db import open_database
from erpsync.errors import InvalidArgument, NotFound
from erpsync.i18n import number, tr
from erpsync.status import PeerCheck, check_peer, node_report
from erpsync.transport import PeerAddress


def _config(ctx: click.Context) -> Config | None:
    path = config_path(ctx)
    return load_config(path) if path.is_file() else None


def _this_node(ctx: click.Context, db: str | None, config: Config | None) -> str:
    """The database given, else the node of the configuration file."""
    if db is not None:
        return db
    if config is None:
        raise InvalidArgument(
            "no database given and no configuration file {path}",
            "give the database (erpsync status DB), or write erpsync.toml with: erpsync config init",
            path=str(config_path(ctx)),
        )
    return config.node.database


def _optional(resolve: Any) -> Any:
    return lambda ctx, param, value: None if value is None else resolve(ctx, param, value)


@click.command("status")
@click.argument("db", metavar="[DB]", required=False, callback=_optional(resolve_database))
@click.pass_context
def status_command(ctx: click.Context, db: str | None) -> None:
    """This node: changes not synced yet, last sync with each peer, open conflicts, last backup."""
    config = _config(ctx)
    target = _this_node(ctx, db, config)
    own = config is not None and target == config.node.database
    folder = Path(config.backup.folder) if own and config and config.backup.folder else None
    with open_database(target) as database:
        report = node_report(database, backup_folder=folder)
    grid = Table(show_header=False, title=tr("Node {name}", name=report.name))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row(tr("Node id"), report.node_id)
    grid.add_row(tr("Database"), report.database)
    pending = ", ".join(f"{t} {number(n)}" for t, n in report.pending.items())
    grid.add_row(tr("Changed here since the last sync"), pending or tr("nothing"))
    grid.add_row(tr("Open conflicts"), str(report.open_conflicts))
    last = report.last_backup
    grid.add_row(
        tr("Last backup"),
        f"{last.created:%Y-%m-%d %H:%M:%S} ({last.file})"
        if last
        else tr("none in {folder}", folder=str(report.backup_folder)),
    )
    if own:
        found = service.status(config_path(ctx))
        grid.add_row(
            tr("Service"),
            tr("running, next sync at {when}", when=service.shown(found.state.next_run))
            if found.running and found.state
            else tr("not running"),
        )
    console.print(grid)
    if report.peers:
        table = Table(title=tr("Last sync with each peer"))
        for title in ("Peer", "When", "Received", "Sent", "Result"):
            table.add_column(tr(title), justify="right" if title in ("Received", "Sent") else "left")
        for peer in report.peers:
            table.add_row(
                peer.name,
                f"{peer.when:%Y-%m-%d %H:%M:%S}" if peer.when else "-",
                "-" if peer.received is None else number(peer.received),
                "-" if peer.sent is None else number(peer.sent),
                tr(peer.result) if peer.result else "-",
            )
        console.print(table)
        for peer in report.peers:
            if peer.result == "error" and peer.message:
                console.print(tr("{peer}: {reason}", peer=peer.name, reason=peer.message), markup=False)
    else:
        console.print(tr("No sync yet."))
    if report.open_conflicts:
        console.print(tr("To look at the conflicts: erpsync conflicts list {db}", db=report.database))


@click.group("peers")
def peers_group() -> None:
    """Test the connections to the peers of erpsync.toml."""


def _mark(value: bool | None) -> str:
    return "-" if value is None else tr("ok") if value else tr("FAILED")


@peers_group.command("test")
@click.argument("peer", metavar="[PEER]", required=False, callback=_optional(resolve_peer))
@click.option(
    "--db",
    "db",
    metavar="DB",
    callback=_optional(resolve_database),
    help="This node's database (default: the node of erpsync.toml).",
)
@click.pass_context
def test_command(ctx: click.Context, peer: PeerAddress | None, db: str | None) -> None:
    """For each peer (or PEER): reachability, authentication, version, schema and latency."""
    config = _config(ctx)
    target = _this_node(ctx, db, config)
    if peer is not None:
        addresses = [peer]
    else:
        addresses = [PeerAddress(p.url, p.secret(), p.name) for p in (config.peers if config else [])]
    if not addresses:
        raise NotFound(
            "{path} lists no peers",
            "add a [[peers]] section; erpsync config init writes an example",
            path=str(config_path(ctx)),
        )
    checks: list[PeerCheck] = []
    with open_database(target) as database:
        for address in addresses:
            with err_console.status(tr("Testing {peer}…", peer=address.name or address.url)):
                checks.append(check_peer(database, address))
    table = Table(title=tr("Connections of {db}", db=database.name))
    for title in ("Peer", "Address", "Reachable", "Authentication", "Version", "Schema", "Latency", "Result"):
        table.add_column(tr(title), justify="right" if title == "Latency" else "left")
    for check in checks:
        table.add_row(
            check.name,
            check.url,
            _mark(check.reachable),
            _mark(check.authenticated),
            check.version or "-",
            _mark(check.schema),
            "-" if check.latency is None else f"{check.latency * 1000:.0f} ms",
            _mark(check.ok),
        )
    console.print(table)
    for check in checks:
        if not check.ok:
            console.print(tr("{peer}: {reason}", peer=check.name, reason=check.reason), markup=False)
            if check.hint:
                console.print(tr("  Try: {hint}", hint=check.hint), markup=False)
    if not all(c.ok for c in checks):
        raise click.exceptions.Exit(1)

"""``erpsync node``, ``sync``, ``pull``, ``push``, ``conflicts`` and ``verify``."""

from __future__ import annotations

from collections.abc import Sequence

import click
from rich.table import Table

from erpsync.cli.output import DB_ARGUMENT, console, progress_bar, resolve_database, resolve_peer
from erpsync.db import open_database
from erpsync.i18n import tr
from erpsync.sync import conflicts as conflict_store
from erpsync.sync.adopt import adopt
from erpsync.sync.node import init_node, node_status, set_policy, uninstall_node
from erpsync.sync.policies import POLICIES, PolicyOverride
from erpsync.sync.session import SyncSummary, sync
from erpsync.sync.verify import VerifyReport, verify
from erpsync.transport import PeerAddress

PEER_ARGUMENT = click.argument("peer", metavar="PEER", callback=resolve_peer)
DB_PEER_ARGUMENT = click.argument("peer", metavar="PEER", callback=resolve_database)
POLICY_OPTION = click.option(
    "--policy",
    "policies",
    multiple=True,
    metavar="[TABLE[.COLUMN]=]POLICY",
    help=f"Conflict policy for this sync ({', '.join(POLICIES)}); repeat for several tables.",
)


def _names(values: Sequence[str]) -> list[str]:
    """Table names given as repeated options or comma-separated lists."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


# -- node -----------------------------------------------------------------------------------------


@click.group("node")
def node_group() -> None:
    """Make a database a sync node, show it, or remove what sync added."""


@node_group.command("init")
@DB_ARGUMENT
@click.option("--name", help="The node's name, as other nodes show it (e.g. PC-ACCUEIL).")
@click.option("--tables", multiple=True, metavar="TABLE[,TABLE…]", help="Sync only these tables.")
@click.option("--exclude", multiple=True, metavar="TABLE[,TABLE…]", help="Do not sync these tables.")
@click.option(
    "--adopt-from",
    "adopt_from",
    metavar="PEER",
    callback=lambda ctx, param, value: None if value is None else resolve_database(ctx, param, value),
    help="This database is a copy of node PEER: pair identical rows instead of duplicating them.",
)
@click.option(
    "--match-by",
    type=click.Choice(["pk", "natural"]),
    default="pk",
    show_default=True,
    help="With --adopt-from: pair rows by primary key, or by business key / identical values.",
)
def node_init(
    db: str,
    name: str | None,
    tables: tuple[str, ...],
    exclude: tuple[str, ...],
    adopt_from: str | None,
    match_by: str,
) -> None:
    """Install the capture triggers and erpsync's tables; register the rows already there."""
    with open_database(db) as database:
        if adopt_from:
            with progress_bar() as progress:
                result = adopt(
                    database, adopt_from, name, match_by, _names(tables) or None, _names(exclude), progress
                )
            console.print(
                tr(
                    "{db} is now node {name}, adopted from {peer}: "
                    "{paired} rows paired, {new} rows of its own.",
                    db=database.name,
                    name=result.name,
                    peer=result.peer,
                    paired=f"{result.paired:,}",
                    new=f"{result.own:,}",
                )
            )
            return
        report = init_node(database, name, _names(tables) or None, _names(exclude))
    if report.created:
        console.print(tr("{db} is now sync node {name}.", db=database.name, name=report.name))
    else:
        console.print(tr("Node {name} on {db} is up to date.", db=database.name, name=report.name))
    synced = ", ".join(f"{t} ({n:,})" for t, n in report.registered.items())
    console.print(tr("Synced tables (rows given a global id now): {tables}", tables=synced or "-"))
    if report.skipped:
        console.print(tr("Left out, no primary key: {tables}", tables=", ".join(report.skipped)))
    if report.removed:
        console.print(tr("No longer synced: {tables}", tables=", ".join(report.removed)))


@node_group.command("uninstall")
@DB_ARGUMENT
def node_uninstall(db: str) -> None:
    """Remove the triggers and every sync table; the application's data is left as it is."""
    with open_database(db) as database:
        dropped = uninstall_node(database)
    console.print(tr("{db} is no longer a sync node ({n} tables removed).", db=database.name, n=len(dropped)))


@node_group.command("status")
@DB_ARGUMENT
def node_status_command(db: str) -> None:
    """Show the node: its synced tables and policies, its peers, pending changes and conflicts."""
    with open_database(db) as database:
        status = node_status(database)
    console.print(tr("Node {name} ({id}) on {db}", name=status.name, id=status.node_id, db=database.name))
    table = Table()
    for title in ("Table", "Rows", "Policy", "Column policies"):
        table.add_column(tr(title))
    for row in status.tables:
        table.add_row(
            row.name, f"{row.rows:,}", row.policy, ", ".join(f"{c}={p}" for c, p in row.columns.items())
        )
    console.print(table)
    for peer in status.peers:
        console.print(tr("Peer {name}: last sync {when}", name=peer[0], when=peer[1] or "-"))
    console.print(tr("Open conflicts: {n}", n=status.open_conflicts))


@node_group.command("policy")
@DB_ARGUMENT
@click.argument("target", metavar="TABLE[.COLUMN]")
@click.argument("policy", type=click.Choice(POLICIES), metavar="POLICY")
def node_policy(db: str, target: str, policy: str) -> None:
    """Set the conflict policy of a table, or of one of its columns (lww, manual, …)."""
    with open_database(db) as database:
        set_policy(database, target, policy)
    console.print(tr("Policy of {target} on {db}: {policy}.", target=target, db=database.name, policy=policy))


# -- sync, pull, push ---------------------------------------------------------------------------------


def _run(db: str, peer: PeerAddress, policies: tuple[str, ...], pull: bool, push: bool) -> None:
    overrides = [PolicyOverride.parse(p) for p in policies]
    with open_database(db) as database:
        with progress_bar() as progress:
            summary = sync(database, peer, pull=pull, push=push, policies=overrides, progress=progress)
        print_summary(summary, db)


def print_summary(summary: SyncSummary, db: str) -> None:
    """The rows received and sent per table, the conflicts, and what to do next."""
    if summary.nothing_to_do:
        console.print(
            tr(
                "Nothing to do: {local} and {peer} are in sync ({seconds:.2f} s).",
                local=summary.local,
                peer=summary.peer,
                seconds=summary.seconds,
            )
        )
        return
    table = Table(title=tr("Sync of {local} with {peer}", local=summary.local, peer=summary.peer))
    for title in ("Table", "Received", "Sent", "Conflicts", "Renumbered", "Restored"):
        table.add_column(tr(title), justify="left" if title == "Table" else "right")
    for name, counts in summary.tables.items():
        if counts.received or counts.sent or counts.conflicts:
            table.add_row(
                name,
                f"{counts.received:,}",
                f"{counts.sent:,}",
                f"{counts.conflicts:,}",
                f"{counts.renumbered:,}",
                f"{counts.restored:,}",
            )
    console.print(table)
    console.print(
        tr("Done in {seconds:.1f} s, {batches} batches.", seconds=summary.seconds, batches=summary.batches)
    )
    if summary.conflicts:
        console.print(tr("{n} conflicts to look at: erpsync conflicts list {db}", n=summary.conflicts, db=db))


@click.command("sync")
@DB_ARGUMENT
@PEER_ARGUMENT
@POLICY_OPTION
def sync_command(db: str, peer: PeerAddress, policies: tuple[str, ...]) -> None:
    """Exchange changes with PEER both ways: pull, then push."""
    _run(db, peer, policies, pull=True, push=True)


@click.command("pull")
@DB_ARGUMENT
@PEER_ARGUMENT
@POLICY_OPTION
def pull_command(db: str, peer: PeerAddress, policies: tuple[str, ...]) -> None:
    """Apply PEER's changes to DB."""
    _run(db, peer, policies, pull=True, push=False)


@click.command("push")
@DB_ARGUMENT
@PEER_ARGUMENT
@POLICY_OPTION
def push_command(db: str, peer: PeerAddress, policies: tuple[str, ...]) -> None:
    """Apply DB's changes to PEER."""
    _run(db, peer, policies, pull=False, push=True)


# -- conflicts ----------------------------------------------------------------------------------------


@click.group("conflicts")
def conflicts_group() -> None:
    """List, show and settle the conflicts kept for a person."""


@conflicts_group.command("list")
@DB_ARGUMENT
@click.option("--all", "all_", is_flag=True, help="Also the conflicts already settled.")
def conflicts_list(db: str, all_: bool) -> None:
    """The open conflicts of DB (all of them with --all)."""
    with open_database(db) as database:
        found = conflict_store.list_conflicts(database, all_=all_)
    if not found:
        console.print(tr("No conflicts in {db}.", db=database.name))
        return
    table = Table()
    for title in ("Id", "Table", "Row", "Kind", "Columns", "Peer", "Status"):
        table.add_column(tr(title))
    for c in found:
        status = c.status if c.resolution is None else f"{c.status} ({c.resolution})"
        table.add_row(str(c.id), c.table, str(c.key), c.kind, ", ".join(c.columns), c.peer, status)
    console.print(table)


@conflicts_group.command("show")
@DB_ARGUMENT
@click.argument("conflict_id", metavar="ID", type=int)
def conflicts_show(db: str, conflict_id: int) -> None:
    """The base, local and remote values of conflict ID."""
    with open_database(db) as database:
        c = conflict_store.get_conflict(database, conflict_id)
    console.print(
        tr(
            "Conflict {id}: {kind} on {table} row {key} (policy {policy}, peer {peer}, {status}).",
            id=c.id,
            kind=c.kind,
            table=c.table,
            key=c.key,
            policy=c.policy,
            peer=c.peer,
            status=c.status,
        )
    )
    deleted = c.detail.get("deleted")
    if deleted:
        console.print(tr("Deleted on the local node.") if deleted == "local" else tr("Deleted on the peer."))
    if c.kind == "unique":
        console.print(
            tr(
                "{column} {value} was also used by another row; this row was renumbered {new}.",
                column=c.detail.get("column"),
                value=c.detail.get("value"),
                new=c.detail.get("renumbered"),
            )
        )
        return
    local, remote, base = (c.detail.get(k) or {} for k in ("local", "remote", "base"))
    columns = c.columns or sorted(set(local) | set(remote))
    table = Table()
    for title in ("Column", "Base", "Local", "Remote"):
        table.add_column(tr(title))
    unknown = set(c.detail.get("base_unknown") or [])
    for column in columns:
        shown = "?" if column in unknown else _show(base.get(column))
        table.add_row(column, shown, _show(local.get(column)), _show(remote.get(column)))
    console.print(table)


def _show(value: object) -> str:
    return "NULL" if value is None else str(value)


@conflicts_group.command("resolve")
@DB_ARGUMENT
@click.argument("conflict_id", metavar="ID", type=int)
@click.option("--take", type=click.Choice(["local", "remote"]), required=True, help="The version to keep.")
def conflicts_resolve(db: str, conflict_id: int, take: str) -> None:
    """Settle conflict ID by keeping the local or the remote version (it then wins everywhere)."""
    with open_database(db) as database:
        conflict_store.resolve(database, conflict_id, take)
    console.print(
        tr(
            "Conflict {id} settled: the {side} version is kept; the next syncs carry it to the other nodes.",
            id=conflict_id,
            side=tr(take),
        )
    )


# -- verify -----------------------------------------------------------------------------------------


@click.command("verify")
@DB_ARGUMENT
@DB_PEER_ARGUMENT
@click.option("--repair", is_flag=True, help="Fix the rows that differ through the normal apply path.")
def verify_command(db: str, peer: str, repair: bool) -> None:
    """Compare the synced tables of DB and PEER, across engines, and list the rows that differ."""
    with open_database(db) as database:
        with progress_bar() as progress:
            report = verify(database, peer, repair=repair, progress=progress)
        print_verify(report)
        if repair and report.repaired:
            again = verify(database, peer)
            console.print(tr("Repaired {n} rows.", n=report.repaired))
            print_verify(again)
            report = again
    if not report.same:
        raise click.exceptions.Exit(1)


def print_verify(report: VerifyReport) -> None:
    """One line per table, then the rows that differ."""
    table = Table(title=tr("{here} against {there}", here=report.here, there=report.there))
    for title in ("Table", "Rows here", "Rows there", "Only here", "Only there", "Different"):
        table.add_column(tr(title), justify="left" if title == "Table" else "right")
    for name, diff in report.tables.items():
        table.add_row(
            name,
            f"{diff.rows_here:,}",
            f"{diff.rows_there:,}",
            str(len(diff.only_here)),
            str(len(diff.only_there)),
            str(len(diff.different)),
        )
    console.print(table)
    for name, diff in report.tables.items():
        for label, gids in (
            ("only here", diff.only_here),
            ("only there", diff.only_there),
            ("different", diff.different),
        ):
            for gid in gids[:20]:
                console.print(f"  {name} {gid}: {tr(label)}")
            if len(gids) > 20:
                console.print(tr("  … and {n} more", n=len(gids) - 20))
    if report.same:
        console.print(tr("Same rows on both nodes."))

"""``erpsync node``, ``sync`` (and ``sync undo``, ``sync history``), ``pull``, ``push``,
``conflicts`` and ``verify``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from erpsync.cli.output import DB_ARGUMENT, console, progress_bar, resolve_database, resolve_peer
from erpsync.config import DEFAULT_PATH, BackupConfig, load_config
from erpsync.db import open_database
from erpsync.i18n import number, tr
from erpsync.sync import conflicts as conflict_store
from erpsync.sync.adopt import adopt
from erpsync.sync.history import SyncRecord, recent
from erpsync.sync.node import init_node, node_status, set_policy, uninstall_node
from erpsync.sync.policies import POLICIES, PolicyOverride
from erpsync.sync.session import SyncSummary, sync
from erpsync.sync.undo import undo_last
from erpsync.sync.verify import VerifyReport, verify
from erpsync.transport import PeerAddress
from erpsync.transport.folder import FolderSummary

PEER_ARGUMENT = click.argument("peer", metavar="PEER", callback=resolve_peer)
POLICY_OPTION = click.option(
    "--policy",
    "policies",
    multiple=True,
    metavar="[TABLE[.COLUMN]=]POLICY",
    help=f"Conflict policy for this sync ({', '.join(POLICIES)}); repeat for several tables.",
)
NO_BACKUP_OPTION = click.option(
    "--no-backup",
    is_flag=True,
    help="Skip the backup of DB taken before the sync writes to it ([backup] in erpsync.toml).",
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
                    paired=number(result.paired),
                    new=number(result.own),
                )
            )
            return
        report = init_node(database, name, _names(tables) or None, _names(exclude))
    if report.created:
        console.print(tr("{db} is now sync node {name}.", db=database.name, name=report.name))
    else:
        console.print(tr("Node {name} on {db} is up to date.", db=database.name, name=report.name))
    synced = ", ".join(f"{t} ({number(n)})" for t, n in report.registered.items())
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
            row.name, number(row.rows), row.policy, ", ".join(f"{c}={p}" for c, p in row.columns.items())
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


def _backup_config(no_backup: bool) -> BackupConfig | None:
    """The ``[backup]`` settings of the configuration file in use, else the defaults (a backup
    before every sync that writes, in the default folder)."""
    if no_backup:
        return None
    root = click.get_current_context().find_root()
    given = (root.obj or {}).get("config")
    if given:
        return load_config(Path(given)).backup
    return load_config(DEFAULT_PATH).backup if DEFAULT_PATH.is_file() else BackupConfig()


def _run(
    db: str, peer: PeerAddress, policies: tuple[str, ...], pull: bool, push: bool, no_backup: bool
) -> None:
    overrides = [PolicyOverride.parse(p) for p in policies]
    backup = _backup_config(no_backup)
    with open_database(db) as database:
        with progress_bar() as progress:
            summary = sync(
                database, peer, pull=pull, push=push, policies=overrides, progress=progress, backup=backup
            )
        print_summary(summary, db)


def print_summary(summary: SyncSummary, db: str) -> None:
    """The rows received and sent per table, the conflicts, and what to do next."""
    if isinstance(summary, FolderSummary):  # files a shared folder leaves for a later sync
        for note in summary.notes:
            console.print(note, markup=False)
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
                number(counts.received),
                number(counts.sent),
                number(counts.conflicts),
                number(counts.renumbered),
                number(counts.restored),
            )
    console.print(table)
    console.print(
        tr("Done in {seconds:.1f} s, {batches} batches.", seconds=summary.seconds, batches=summary.batches)
    )
    if summary.backup is not None:
        console.print(tr("Backup taken before the sync: {path}", path=str(summary.backup)))
    if summary.conflicts:
        console.print(tr("{n} conflicts to look at: erpsync conflicts list {db}", n=summary.conflicts, db=db))


class _SyncGroup(click.Group):
    """``erpsync sync DB PEER`` runs a sync; ``erpsync sync undo DB`` and ``sync history DB``
    are subcommands: a first word that is not one of them is the sync's DB."""

    default = "run"

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return self.default, self.commands[self.default], args

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("erpsync sync", "DB PEER [--policy …] [--no-backup] | undo DB | history DB")


@click.group(
    "sync",
    cls=_SyncGroup,
    context_settings={"ignore_unknown_options": True},
    epilog="Options of the sync: erpsync sync run --help",
    short_help="Exchange changes with PEER both ways; undo the last sync.",
)
def sync_command() -> None:
    """Exchange changes with PEER both ways (erpsync sync DB PEER), undo the last sync, list the syncs.

    Before a sync writes to DB, DB is backed up (see [backup] in erpsync.toml, or --no-backup).
    """


@sync_command.command("run", short_help="Pull, then push: erpsync sync DB PEER (the default).")
@DB_ARGUMENT
@PEER_ARGUMENT
@POLICY_OPTION
@NO_BACKUP_OPTION
def sync_run(db: str, peer: PeerAddress, policies: tuple[str, ...], no_backup: bool) -> None:
    """Exchange changes with PEER both ways: pull, then push (the default: erpsync sync DB PEER)."""
    _run(db, peer, policies, pull=True, push=True, no_backup=no_backup)


@sync_command.command("undo", short_help="Revert the last sync that changed DB.")
@DB_ARGUMENT
@click.option(
    "--force", is_flag=True, help="Revert rows changed since the sync too (their later changes are lost)."
)
def sync_undo(db: str, force: bool) -> None:
    """Revert the last sync that changed DB, in one transaction; again, the one before it."""
    with open_database(db) as database:
        report = undo_last(database, force=force)
    if report is None:
        console.print(
            tr("Nothing to undo on {db}: no sync changed it, or every one was undone.", db=database.name)
        )
        return
    done = report.sync
    console.print(
        tr(
            "Undid sync {id} of {when} with {peer}: {deleted} rows it added deleted, "
            "{restored} rows it changed restored, {reinserted} rows it deleted put back.",
            id=done.id[:8],
            when=f"{done.started:%Y-%m-%d %H:%M:%S}",
            peer=done.peer_name or done.peer_id or "?",
            deleted=report.deleted,
            restored=report.restored,
            reinserted=report.reinserted,
        )
    )
    if report.overwritten:
        console.print(tr("Changes made since, overwritten: {rows}", rows=", ".join(report.overwritten)))
    if report.kept:
        console.print(tr("Kept, rows added since refer to them: {rows}", rows=", ".join(report.kept)))
    console.print(tr("The next sync with {peer} carries the undo to it.", peer=done.peer_name or "?"))


@sync_command.command("history", short_help="The last syncs of DB and their undos.")
@DB_ARGUMENT
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Syncs shown.")
def sync_history(db: str, limit: int) -> None:
    """The last syncs of DB (run here or by a peer), and their undos, newest first."""
    with open_database(db) as database:
        records = recent(database, limit)
    if not records:
        console.print(tr("No sync recorded on {db} yet.", db=database.name))
        return
    console.print(tr("Syncs of {db}, newest first:", db=database.name))
    for record in records:
        console.print(
            tr(
                "{id}  {when}  {direction} {peer}: {received} received, {sent} sent, {changed} changed here; "
                "{result}",
                id=record.id[:8],
                when=f"{record.started:%Y-%m-%d %H:%M:%S}",
                direction=_direction(record.direction),
                peer=record.peer_name or record.peer_id or "-",
                received=number(record.received),
                sent=number(record.sent),
                changed=number(record.changed),
                result=_result(record),
            ),
            markup=False,
        )
        if record.backup is not None:
            console.print(tr("          backup before it: {path}", path=str(record.backup)), markup=False)


def _direction(direction: str) -> str:
    texts = {
        "sync": tr("sync with"),
        "pull": tr("pull from"),
        "push": tr("push to"),
        "remote": tr("sync run by"),
        "undo": tr("undo of a sync with"),
    }
    return texts.get(direction, direction)


def _result(record: SyncRecord) -> str:
    if record.direction == "undo":
        return tr("undid {id}", id=(record.message or "")[:8])
    if record.result is None:
        text = tr("unfinished")
    elif record.result == "error":
        text = tr("error: {message}", message=record.message or "")
    elif record.conflicts:
        text = tr("ok, {n} conflicts", n=record.conflicts)
    else:
        text = tr("ok")
    if record.undone_by:
        text += " " + tr("(undone)")
    return text


@click.command("pull")
@DB_ARGUMENT
@PEER_ARGUMENT
@POLICY_OPTION
@NO_BACKUP_OPTION
def pull_command(db: str, peer: PeerAddress, policies: tuple[str, ...], no_backup: bool) -> None:
    """Apply PEER's changes to DB (backed up first, unless --no-backup)."""
    _run(db, peer, policies, pull=True, push=False, no_backup=no_backup)


@click.command("push")
@DB_ARGUMENT
@PEER_ARGUMENT
@POLICY_OPTION
def push_command(db: str, peer: PeerAddress, policies: tuple[str, ...]) -> None:
    """Apply DB's changes to PEER (which keeps what it changed, for erpsync sync undo there)."""
    _run(db, peer, policies, pull=False, push=True, no_backup=True)


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
@PEER_ARGUMENT
@click.option("--repair", is_flag=True, help="Fix the rows that differ through the normal apply path.")
def verify_command(db: str, peer: PeerAddress, repair: bool) -> None:
    """Compare the synced tables of DB and PEER, across engines, and list the rows that differ.

    PEER is a database, or a node served over http(s):// or ssh://, as for sync.
    """
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
            number(diff.rows_here),
            number(diff.rows_there),
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

"""``sync``, ``pull`` and ``push``: exchanging changes with a peer, batch by batch.

1. Both nodes fold their capture logs and say hello; different schema
   fingerprints stop everything before a row is read.
2. Pull: the peer's changes after this node's cursor for it, up to the peer's
   change sequence at hello time, are read in batches (rows present parents
   first, then tombstones children first) and applied here, each batch in one
   transaction that also moves the cursor.
3. Push: the same in the other direction; the peer keeps the cursor.

A sync with nothing to do costs a few small queries whatever the size of the
databases: cursors equal to the sender's sequence mean no table is read.
An interrupted sync resumes where the last applied batch left off.

The node that runs the sync decides the policies: its own configuration, then
``--policy`` overrides; ``prefer-local`` means "this node wins" in both
directions.

Every sync is recorded in the node's history (``history``), failed ones too.
Before the first local write — only when the pull has rows to apply, so a sync
with nothing to do stays a few queries — the local database is backed up when
a ``BackupConfig`` asks for it. Batches carry the sync's id: each side keeps
receipts of what they changed under it, so ``erpsync sync undo`` can revert it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from erpsync.backup import create_backup
from erpsync.config import BackupConfig
from erpsync.db import Database
from erpsync.errors import ErpSyncError
from erpsync.sync import fingerprint, history
from erpsync.sync.apply import ApplyResult, ConcurrentWrite, PolicyMap
from erpsync.sync.changeset import ALIVE, BATCH_ROWS, GONE, Batch, no_cycle_collection
from erpsync.sync.node import Node
from erpsync.sync.peer import Hello, LocalPeer, Peer
from erpsync.sync.policies import LWW, PolicyOverride, swap
from erpsync.transport import PeerAddress, open_peer, shown_url

ProgressCallback = Callable[[str, int, int], None]
MAX_DEPTH = 20
RETRIES = 5
READ_AHEAD = 4
"""Batches ``read_ahead`` may hold read and not yet applied: enough for the small tables at the
start of a transfer to arrive while the first one is applied, and the big ones' first batches
to be read meanwhile."""


class SameNode(ErpSyncError):
    """Both sides of a sync are the same node."""


@dataclass
class TableCounts:
    """Rows exchanged for one table."""

    received: int = 0
    sent: int = 0
    changed_here: int = 0
    changed_there: int = 0
    conflicts: int = 0
    renumbered: int = 0
    restored: int = 0
    skipped: int = 0

    def add(self, result: ApplyResult, rows: int, *, incoming: bool) -> None:
        """Count one applied batch."""
        if incoming:
            self.received += rows
            self.changed_here += result.changed
        else:
            self.sent += rows
            self.changed_there += result.changed
        self.conflicts += result.conflicts
        self.renumbered += result.renumbered
        self.restored += result.restored
        self.skipped += result.skipped


@dataclass
class SyncSummary:
    """What a sync did."""

    local: str
    peer: str
    tables: dict[str, TableCounts] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0
    id: str = ""
    """The sync's id in the history of both nodes."""
    backup: Path | None = None
    """The backup of the local database taken before the sync wrote to it."""

    def table(self, name: str) -> TableCounts:
        """The counts of one table (created on first use)."""
        return self.tables.setdefault(name, TableCounts())

    @property
    def conflicts(self) -> int:
        """Conflicts recorded on both sides."""
        return sum(t.conflicts for t in self.tables.values())

    @property
    def received(self) -> int:
        """Rows received from the peer."""
        return sum(t.received for t in self.tables.values())

    @property
    def sent(self) -> int:
        """Rows sent to the peer."""
        return sum(t.sent for t in self.tables.values())

    @property
    def nothing_to_do(self) -> bool:
        """Whether no row travelled."""
        return all(t.received == 0 and t.sent == 0 for t in self.tables.values())


def policies_of(node: Node, overrides: Sequence[PolicyOverride] = ()) -> PolicyMap:
    """The policy map of a node's configuration with ``overrides`` applied, from its own view."""
    policies: PolicyMap = {}
    for _, name, policy, settings in node.rows:
        policies[name.lower()] = policy
        for column, column_policy in settings.column_policies.items():
            policies[f"{name.lower()}.{column}"] = column_policy
    for override in overrides:
        if override.table is None:
            policies = {"": override.policy}
        elif override.column is None:
            policies = {k: v for k, v in policies.items() if k.split(".")[0] != override.table}
            policies[override.table] = override.policy
        else:
            policies[f"{override.table}.{override.column}"] = override.policy
    return policies


def sync(
    db: Database,
    peer: Database | str | PeerAddress | Peer,
    *,
    pull: bool = True,
    push: bool = True,
    policies: Sequence[PolicyOverride] = (),
    progress: ProgressCallback | None = None,
    batch_rows: int = BATCH_ROWS,
    backup: BackupConfig | None = None,
) -> SyncSummary:
    """Exchange changes between node ``db`` and ``peer`` (pull, then push).

    ``peer`` is an open ``Database``, an address (a database URL or path,
    ``http(s)://``, ``ssh://``, ``file://``) or any ``Peer``. With ``backup``
    (``before_sync`` true), the local database is backed up, and the backups
    pruned as it says, after hello and plan and before the first local write;
    the summary names the backup. A pure push writes on the peer only: no
    backup here. The sync is recorded in the history, with its error if it fails.
    """
    address = PeerAddress(peer) if isinstance(peer, str) else peer
    if isinstance(address, PeerAddress) and address.scheme == "file":  # many nodes' files, no live node
        from erpsync.transport.folder import exchange

        return exchange(
            db,
            address,
            pull=pull,
            push=push,
            policies=policies,
            progress=progress,
            batch_rows=batch_rows,
            backup=backup,
        )
    started = time.perf_counter()
    local = LocalPeer(db, owned=False)
    direction = history.SYNC if pull and push else history.PULL if pull else history.PUSH
    run = history.Run(local.node, direction, _name_of(peer))
    summary = SyncSummary(local.label, _name_of(peer) or "?", id=run.id)
    try:
        _sync(db, local, peer, run, summary, pull, push, policies, progress, batch_rows, backup)
    except BaseException as exc:
        summary.seconds = time.perf_counter() - started
        _finish(run, summary, exc)
        raise
    summary.seconds = time.perf_counter() - started
    _finish(run, summary, None)
    return summary


def _name_of(peer: Database | str | PeerAddress | Peer) -> str | None:
    """How the history names a peer before it has answered."""
    if isinstance(peer, Database):
        return peer.name
    if isinstance(peer, PeerAddress):
        return peer.name or shown_url(peer.url)
    return shown_url(peer) if isinstance(peer, str) else None


def _finish(run: history.Run, summary: SyncSummary, error: BaseException | None) -> None:
    """Record the sync's outcome; a failure to record never hides the sync's own error."""
    try:
        run.finish(summary.received, summary.sent, summary.conflicts, error)
    except Exception:
        if error is None:
            raise


def _sync(
    db: Database,
    local: LocalPeer,
    peer: Database | str | PeerAddress | Peer,
    run: history.Run,
    summary: SyncSummary,
    pull: bool,
    push: bool,
    policies: Sequence[PolicyOverride],
    progress: ProgressCallback | None,
    batch_rows: int,
    backup: BackupConfig | None,
) -> None:
    if isinstance(peer, Database):
        remote: Peer = LocalPeer(peer, owned=False)
    elif isinstance(peer, str | PeerAddress):
        remote = open_peer(peer)
    else:
        remote = peer
    summary.peer = remote.label
    run.peer_name = remote.label

    before_write = backup_then_begin(db, backup, summary, run)

    try:
        here, there = local.hello(), remote.hello()
        run.peer, run.peer_name = there.node_id, there.name
        if here.node_id == there.node_id:
            raise SameNode(
                "{db} and {peer} are the same node",
                "give the database of another node",
                db=db.name,
                peer=remote.label,
            )
        fingerprint.check(local.label, here, remote.label, there)
        mine = policies_of(local.node, policies)
        report = progress or (lambda label, done, total: None)
        if pull:
            transfer(
                remote,
                there,
                local,
                here,
                mine,
                summary,
                report,
                incoming=True,
                batch_rows=batch_rows,
                before_write=before_write,
            )
        if push:
            if pull:  # what the pull merged here goes back in the same sync
                here = local.hello()
            theirs = {k: swap(v) for k, v in mine.items()}
            transfer(
                local, here, remote, there, theirs, summary, report, incoming=False, batch_rows=batch_rows
            )
        if not summary.nothing_to_do or not local.cursors(there.node_id):
            url = (
                remote.db.url.render_as_string(hide_password=True) if isinstance(remote, LocalPeer) else None
            )
            local.met(there.node_id, there.name, url)
            remote.met(here.node_id, here.name, None)
    finally:
        if remote is not peer:
            remote.close()


def backup_then_begin(
    db: Database, backup: BackupConfig | None, summary: SyncSummary, run: history.Run
) -> Callable[[], None]:
    """What to do before a sync's first local write: back up ``db`` if ``backup`` asks, then
    record the sync as running (its receipts start there)."""

    def before_write() -> None:
        if backup is not None and backup.before_sync:
            folder = Path(backup.folder) if backup.folder else None
            path, _ = create_backup(
                db, folder, reason="before sync", keep_last=backup.keep_last, keep_days=backup.keep_days
            )
            summary.backup = run.backup = path
        run.begin()

    return before_write


def transfer(
    source: Peer,
    source_hello: Hello,
    target: Peer,
    target_hello: Hello,
    policies: PolicyMap,
    summary: SyncSummary,
    progress: ProgressCallback,
    *,
    incoming: bool,
    batch_rows: int = BATCH_ROWS,
    before_write: Callable[[], None] | None = None,
) -> None:
    """Send ``source``'s changes after ``target``'s cursors to ``target``.

    ``before_write`` runs once, before the first batch, when there are rows to send.
    """
    since = target.cursors(source_hello.node_id)
    plan = source.plan(since, source_hello.seq, target_hello.node_id)
    total = sum(count for _, _, count in plan)
    label = "Receiving" if incoming else "Sending"
    done = 0
    if total and before_write is not None:
        before_write()
    if total:
        progress(label, 0, total)
    empty = [(table, stream) for table, stream, count in plan if count == 0]
    if empty:
        target.advance(source_hello.node_id, empty, source_hello.seq)

    def batches() -> Generator[Batch, None, None]:
        for table, stream, count in plan:
            if count:
                start = since.get((table, stream), 0)
                for batch in source.changes(
                    table, stream, start, source_hello.seq, target_hello.node_id, batch_rows
                ):
                    batch.sync_id = summary.id
                    target.prepare(batch, policies)
                    yield batch

    # with a network peer, the next batches (of the next tables too) are read and encoded
    # while this one is applied
    reading = batches() if source.in_process and target.in_process else read_ahead(batches())
    # a stream left midway (an error, a stop) ends now, not when collected
    with closing(reading), no_cycle_collection():
        for batch in reading:
            result = apply_with_references(source, target, batch, policies)
            summary.table(batch.table).add(result, len(batch.rows), incoming=incoming)
            summary.batches += 1
            done += len(batch.rows)
            progress(label, min(done, total), total)


_Read = tuple[Batch | None, BaseException | None]
"""A batch read (``None``: no more), or what reading raised."""


def read_ahead(batches: Generator[Batch, None, None]) -> Generator[Batch, None, None]:
    """``batches``, read in a thread (up to ``READ_AHEAD`` ahead) while the caller applies them.

    Reading and applying each take about half of a transfer. When one side is
    a server or a network peer, this process mostly waits on it (the GIL is
    free), so they overlap; with SQLite on both sides both are Python work in
    this process and the threads would only take turns. Batches are still
    applied one at a time, in order. A caller that stops (an error, Ctrl-C)
    does not wait for the read under way: the thread ends the stream once that
    read is done, and dies with the process.
    """
    wanted: queue.SimpleQueue[bool] = queue.SimpleQueue()
    ready: queue.SimpleQueue[_Read] = queue.SimpleQueue()
    stopped = threading.Event()

    def read() -> None:
        try:
            while wanted.get() and not stopped.is_set():
                try:
                    ready.put((next(batches, None), None))
                except BaseException as exc:  # handed to the caller, raised there
                    ready.put((None, exc))
                    return
        finally:
            batches.close()

    threading.Thread(target=read, name="erpsync-read", daemon=True).start()
    for _ in range(READ_AHEAD):
        wanted.put(True)
    try:
        while True:
            batch, error = _next_ready(ready)
            if error is not None:
                raise error
            if batch is None:
                return
            wanted.put(True)
            yield batch
    finally:
        stopped.set()
        wanted.put(False)


def _next_ready(ready: queue.SimpleQueue[_Read]) -> _Read:
    """The next result, waiting in short steps: Ctrl-C is only seen between them on Windows."""
    while True:
        try:
            return ready.get(timeout=0.25)
        except queue.Empty:
            continue


def apply_with_references(
    source: Peer,
    target: Peer,
    batch: Batch,
    policies: PolicyMap,
    *,
    restore: bool = False,
    waiting: tuple[Batch, ...] = (),
    loosened: list[Batch] | None = None,
) -> ApplyResult:
    """Apply ``batch``; first fetch and apply the referenced rows the target lacks.

    Rows the target has deleted come back (``restore``); rows gone on the source
    too make the rows referencing them wait for their own deletion. ``waiting``:
    the batches waiting for this one. When the rows it needs are rows waiting
    for it (foreign keys in a cycle: a department and its manager), it goes in
    without those references (``apply_batch``'s ``loose``) and is applied again
    once the batch that waited is in (``loosened``: those batches so far).
    """
    top = loosened is None
    loosened = [] if loosened is None else loosened
    skip: set[str] = set()
    loose: set[str] = set()
    for _ in range(RETRIES + MAX_DEPTH):
        try:
            result = target.apply(
                batch, policies, restore=restore, skip=frozenset(skip), loose=frozenset(loose)
            )
        except ConcurrentWrite:
            continue
        except ErpSyncError as exc:
            if loose:  # a reference of the cycle that may not be left empty (NOT NULL)
                raise _cycle(batch, waiting, loose) from exc
            raise
        if not result.missing:
            if loose:
                loosened.append(batch)
            if top:  # the rows that went in loose: their state again, which no policy keeps out
                for pending in loosened:
                    lww = {k: v for k, v in policies.items() if k.split(".")[0] != pending.table}
                    lww[pending.table] = LWW
                    apply_with_references(source, target, pending, lww, restore=True)
            return result
        if len(waiting) >= MAX_DEPTH:
            break
        needed = {gid for gids in result.missing.values() for gid in gids}
        waited = needed & {r.gid for other in waiting for r in other.rows}
        if waited:
            loose |= waited
            continue
        for table, gids in result.missing.items():
            fetched = source.fetch(table, gids)
            present = [r for r in fetched.rows if r.alive]
            skip.update(set(gids) - {r.gid for r in present})
            if present:
                fetched.rows = present
                fetched.stream = ALIVE
                fetched.sync_id = batch.sync_id
                chain = (*waiting, batch)
                apply_with_references(
                    source, target, fetched, policies, restore=True, waiting=chain, loosened=loosened
                )
    raise ErpSyncError(
        "cannot apply changes of {table}: the rows they reference keep changing",
        "run the sync again",
        table=batch.table,
    )


def _cycle(batch: Batch, waiting: tuple[Batch, ...], loose: set[str]) -> ErpSyncError:
    """The error of rows referencing each other through columns that cannot be left empty."""
    other = next(b for b in waiting if loose & {r.gid for r in b.rows})
    return ErpSyncError(
        "cannot apply the rows of {table} and {other}: they reference each other "
        "(foreign keys in both directions) through columns that cannot be left empty, "
        "so neither can be written first",
        "leave one of the tables out (erpsync node init DB --exclude {other} on every node), "
        "or let one of the two references be NULL",
        table=batch.table,
        other=other.table,
    )


__all__ = ["ALIVE", "GONE", "SyncSummary", "TableCounts", "policies_of", "sync"]

"""Applying a batch of remote row states: one transaction, idempotent, capture muted.

For each row the remote state is merged with the local one (see
``policies``): new rows are inserted (keeping their id where it is free here),
present rows take the columns the policy gives the remote side, tombstones
delete rows unless the policy or a reference keeps them. References arrive as
global ids and are resolved to local keys; a batch that references rows this
node does not have (or has deleted) is not applied: the result names them,
the session fetches them from the sender and applies the batch again.

The batch, the clocks it brings, the peer's cursor and the batch id are
written in one transaction: applied twice, or after an interrupted sync, a
batch changes nothing more. The capture triggers are muted meanwhile, so
applied changes keep their origin and clock instead of becoming local edits.

A batch of a sync (``Batch.sync_id``) also keeps, in the same transaction, a
receipt of what it changed: the state before of every row it inserts, updates
or deletes (see ``history``), read where the batch already reads the rows or
in one extra query per batch, so undo can revert the sync.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import DBAPIError

from erpsync.errors import ErpSyncError
from erpsync.sync import conflicts, history
from erpsync.sync.capture import IN_LIMIT, Key, _chunks, fold, key_in
from erpsync.sync.changeset import ALIVE, Batch, RowChange, no_cycle_collection
from erpsync.sync.encoding import encoder
from erpsync.sync.hlc import Stamp
from erpsync.sync.inserts import Inserts
from erpsync.sync.keys import Incoming, journal_renumbering, settle
from erpsync.sync.meta import BATCHES, CURSORS
from erpsync.sync.model import SyncTable
from erpsync.sync.node import SELF, Node, NodeState
from erpsync.sync.policies import (
    LWW,
    MANUAL,
    NO_OVERWRITE,
    PREFER_LOCAL,
    PREFER_REMOTE,
    Relation,
    Side,
    Versions,
    compare,
    decide_column,
    implied,
    merged,
)
from erpsync.sync.rows import TableRows

PolicyMap = dict[str, str]
"""Policies seen from the applying node: ``""`` (every table), ``"table"``, ``"table.column"``."""


def policy_for(policies: PolicyMap, table: SyncTable, column: str | None = None) -> str:
    """The policy of a table, or of one of its columns, under ``policies``."""
    if column is not None and f"{table.key}.{column}" in policies:
        return policies[f"{table.key}.{column}"]
    return policies.get(table.key, policies.get("", LWW))


class ConcurrentWrite(ErpSyncError):
    """A program wrote rows of the batch while it was being applied; the batch is applied again."""


@dataclass
class ApplyResult:
    """What applying one batch did."""

    table: str
    stream: int
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    conflicts: int = 0
    renumbered: int = 0
    restored: int = 0
    skipped: int = 0
    """Rows not applied because a row they reference is deleted on the sender too."""
    replayed: bool = False
    """The batch had been applied already: nothing was done."""
    missing: dict[str, list[str]] = field(default_factory=dict)
    """Referenced rows this node lacks (table → global ids): nothing was applied."""

    @property
    def changed(self) -> int:
        """Rows written."""
        return self.inserted + self.updated + self.deleted


class _Missing(Exception):
    """Rolls the transaction back when references cannot be resolved."""


def apply_batch(
    node: Node,
    batch: Batch,
    policies: PolicyMap,
    *,
    restore: bool = False,
    skip: frozenset[str] = frozenset(),
    loose: frozenset[str] = frozenset(),
) -> ApplyResult:
    """Apply ``batch`` to ``node`` in one transaction and move the sender's cursor.

    ``restore`` forces rows back to life with a new clock: used for rows fetched
    because something references them. Rows referencing a global id in ``skip``
    (gone on the sender as well) are left out: their own deletion follows.
    ``loose``: rows waiting for this batch to be in (foreign keys in a cycle): a
    new row referencing one is written with that reference empty, and a clock
    older than any, so applying its state again sets it; a row present here
    referencing one is left as it is.
    """
    result = ApplyResult(batch.table, batch.stream)
    try:
        with no_cycle_collection(), node.write() as conn:
            if batch.batch_id and _replayed(node, conn, batch.batch_id, result):
                return result
            state = node.lock(conn)
            fold(node, conn, state)
            table = node.table(batch.table, conn)
            rows = TableRows(conn, node, table, state)
            source = rows.number(batch.source)
            receipt = history.Receipt(state.seq) if batch.sync_id else None
            node.dialect.mute_capture(conn, table.number)
            try:
                work = _Apply(rows, batch, policies, source, result, restore, skip, receipt, loose)
                touched = work.run()
            except BaseException:
                # MariaDB's mute is the session's; on PostgreSQL the failed transaction refuses
                # the statement (its rollback unmutes): the error to report is the first one
                with contextlib.suppress(DBAPIError):
                    node.dialect.unmute_capture(conn)
                raise
            node.dialect.unmute_capture(conn)
            journal_renumbering(rows, work.renumbered)
            _check_concurrent(conn, table, touched)
            if receipt is not None:
                receipt.complete(conn, table, state.seq, work.local)
                history.save_receipt(node, conn, batch, table, receipt, state.seq)
            if batch.batch_id:
                _advance(node, conn, batch, source, result)
            node.save(conn, state)
    except _Missing:
        pass
    return result


def _replayed(node: Node, conn: Connection, batch_id: str, result: ApplyResult) -> bool:
    batches = node.meta[BATCHES]
    if conn.execute(select(batches.c.batch_id).where(batches.c.batch_id == batch_id)).first() is None:
        return False
    result.replayed = True
    return True


def _advance(node: Node, conn: Connection, batch: Batch, source: int, result: ApplyResult) -> None:
    cursors = node.meta[CURSORS]
    table_no = node.table(batch.table, conn).number
    where = (cursors.c.peer == source) & (cursors.c.tbl == table_no) & (cursors.c.stream == batch.stream)
    current = conn.execute(select(cursors.c.seq).where(where)).scalar()
    if current is None:
        conn.execute(insert(cursors).values(peer=source, tbl=table_no, stream=batch.stream, seq=batch.upto))
    elif batch.upto > current:
        conn.execute(update(cursors).where(where).values(seq=batch.upto))
    now = int(time.time() * 1000)
    batches = node.meta[BATCHES]
    summary = json.dumps({k: v for k, v in asdict(result).items() if k != "missing"})
    conn.execute(insert(batches).values(batch_id=batch.batch_id, peer=source, applied=now, result=summary))


def _local(value: Any, new_keys: dict[str, Key]) -> Any:
    """A reference to a row of the batch still held as its global id, as that row's local id."""
    return new_keys[value][0] if isinstance(value, str) and value in new_keys else value


def _check_concurrent(conn: Connection, table: SyncTable, touched: list[Key]) -> None:
    """Fail if another program logged a write to one of the rows just applied.

    Its change would be overwritten without a trace; the session applies the
    batch again, after folding that write, so it is merged like any other.
    """
    log = table.log
    if not touched or conn.execute(select(log.c.seq).limit(1)).first() is None:
        return
    columns = [log.c[f"k{i}"] for i in range(len(table.keys))]
    for part in _chunks(touched, IN_LIMIT):
        if conn.execute(select(log.c.seq).where(key_in(columns, part)).limit(1)).first() is not None:
            raise ConcurrentWrite(
                "rows of {table} were changed by another program during the sync",
                "run the sync again",
                table=table.name,
            )


class _Apply(Inserts):
    """The work of one batch."""

    def __init__(
        self,
        rows: TableRows,
        batch: Batch,
        policies: PolicyMap,
        source: int,
        result: ApplyResult,
        restore: bool,
        skip: frozenset[str],
        receipt: history.Receipt | None = None,
        loose: frozenset[str] = frozenset(),
    ) -> None:
        self.rows = rows
        self.loose = loose
        self.receipt = receipt
        self.local: dict[str, Mapping[str, Any]] = {}
        """The rows' metadata before the batch, by global id."""
        self.images: dict[Key, tuple[Key, tuple[Any, ...]]] = {}
        """Before-images of present rows read before the batch wrote (``_present``), by key."""
        self.skip = skip
        self.table = rows.table
        self.batch = batch
        self.policies = policies
        self.source = source
        self.result = result
        self.restore = restore
        self.state: NodeState = rows.state
        self.renumbered: list[Any] = []
        positions = {c: i for i, c in enumerate(batch.columns)}
        try:
            self.order = [positions[c.key] for c in self.table.columns]
        except KeyError as exc:
            raise ErpSyncError(
                "the batch for {table} lacks column {column}",
                "the nodes' schemas differ: run erpsync node init on both",
                table=self.table.name,
                column=exc.args[0],
            ) from None
        self.in_order = self.order == list(range(len(self.order)))
        self.encoders = [encoder(c.type) for c in self.table.columns]
        self.column_policies = [policy_for(policies, self.table, c.key) for c in self.table.columns]
        self.shadow_keys = [f"k{i}" for i in range(len(self.table.keys))]
        self.ref_slots = [
            (i, self.table.parents[c.ref].key) for i, c in enumerate(self.table.columns) if c.ref is not None
        ]
        self.key_encoders = [encoder(k.type) for k in self.table.keys]
        self.shadow_inserts: list[dict[str, Any]] = []
        self.shadow_updates: list[dict[str, Any]] = []
        self.touched: list[Key] = []

    def local_order(self, row: RowChange) -> RowChange:
        """The row with values and clocks in this node's column order."""
        if row.values is None or row.clocks is None or self.in_order:
            return row
        values, clocks = row.values, row.clocks
        return RowChange(
            row.gid,
            row.key,
            tuple(values[i] for i in self.order),
            tuple(clocks[i] for i in self.order),
            row.deleted,
            row.seen,
        )

    def run(self) -> list[Key]:
        rows = list(self.batch.rows) if self.in_order else [self.local_order(r) for r in self.batch.rows]
        latest = max(map(max, filter(None, [r.clocks for r in rows])), default=None)
        deleted = max(filter(None, [r.deleted for r in rows]), default=None)
        for stamp in (latest, deleted):
            if stamp is not None:
                self.state.see(stamp.hlc)
        local = self.local = self.rows.shadows(r.gid for r in rows)
        if self.batch.stream == ALIVE:
            self._alive([r for r in rows if r.values is not None], local)
            gone = [r for r in rows if r.values is None]  # fetched rows can be tombstones
        else:
            gone = rows
        if gone:
            self._gone(gone, local)
        self.rows.write_shadows(self.shadow_inserts, self.shadow_updates)
        return self.touched

    # -- rows present on the sender ------------------------------------------------------------

    def _alive(self, rows: list[RowChange], local: dict[str, Mapping[str, Any]]) -> None:
        refs, dropped = self._resolve_references(rows)
        if dropped:
            rows = [r for r in rows if r.gid not in dropped]
            self.result.skipped += len(dropped)
        if self.loose:
            rows = self._loosen(rows, local)
        inserts: list[tuple[RowChange, Mapping[str, Any] | None, bool]] = []
        merges: list[tuple[RowChange, Mapping[str, Any]]] = []
        for r in rows:
            mine = local.get(r.gid)
            if mine is None:
                inserts.append((r, None, False))
            elif mine["deleted"]:
                revive, restamp = self._revive(r, mine, refs)
                if revive:
                    inserts.append((r, mine, restamp))
                else:
                    self.result.unchanged += 1
            else:
                merges.append((r, mine))
        if merges:  # rows deleted behind the capture's back (triggers dropped by hand): insert again
            present = self._present([self._key(mine) for _, mine in merges])
            gone = [(r, mine) for r, mine in merges if self._key(mine) not in present]
            if gone:
                merges = [(r, mine) for r, mine in merges if self._key(mine) in present]
                inserts += [(r, mine, False) for r, mine in gone]
        fresh = [r for r, mine, restamp in inserts if mine is None and not restamp]
        if fresh and not self.table.self_refs:
            done = self._fast_inserts(fresh, refs)
            inserts = [item for item in inserts if item[0].gid not in done]
            if self.receipt is not None:
                self.receipt.added(done)
        incoming = self._merge(merges, refs)
        new_rows = [self._incoming(r, refs, restamp) for r, _, restamp in inserts]
        incoming += new_rows
        collisions = settle(self.rows, incoming, policy_for(self.policies, self.table) == MANUAL)
        for key, gid, values, slot in collisions.local_changes:
            if self.receipt is not None:
                seq = self.rows.shadows([gid])[gid]["seq"]
                self._remember([(gid, key)], history.UPDATED, {gid: seq})
            self.rows.update_app([(key, values)])
            self.rows.restamp([gid], [slot])
        self.result.renumbered += len(collisions.renumbered)
        self.renumbered = collisions.renumbered
        by_gid = {i.gid: i for i in incoming}
        # a row of a tree moved under a parent the batch inserts: its reference is set once it is
        later = self.table.self_refs if inserts else []
        deferred = self._write_updates(
            [i for i in (by_gid.get(r.gid) for r, _ in merges) if i and (i.writes or i.restamped)], later
        )
        conflicts.close_superseded(self.rows, [i.gid for i in incoming if i.whole])
        if self.receipt is not None:
            for r, mine, _ in inserts:
                self.receipt.absent(r.gid, int(mine["seq"]) if mine is not None else 0)
        new_keys = self._write_inserts([(r, mine, by_gid[r.gid]) for r, mine, _ in inserts], refs)
        resolved = [(key, {n: _local(v, new_keys) for n, v in values.items()}) for key, values in deferred]
        self.rows.update_app(resolved)
        for item in collisions.renumbered:
            if item.queued:
                conflicts.record(
                    self.rows,
                    item.gid,
                    conflicts.UNIQUE,
                    MANUAL,
                    self.source,
                    {
                        "column": item.column,
                        "value": item.old,
                        "renumbered": item.new,
                        "other": item.other_gid,
                    },
                )
                self.result.conflicts += 1

    def _loosen(self, rows: list[RowChange], local: dict[str, Mapping[str, Any]]) -> list[RowChange]:
        """``rows`` without their references to ``loose`` rows (see ``apply_batch``)."""
        out = []
        unwritten = Stamp(0, self.rows.node.node_id)
        for r in rows:
            assert r.values is not None and r.clocks is not None
            slots = [i for i, _ in self.ref_slots if r.values[i] in self.loose]
            if not slots:
                out.append(r)
            elif r.gid in local and not local[r.gid]["deleted"]:
                self.result.unchanged += 1
            else:
                values, clocks = list(r.values), list(r.clocks)
                for i in slots:
                    values[i], clocks[i] = None, unwritten
                out.append(replace(r, values=tuple(values), clocks=tuple(clocks)))
        return out

    def _present(self, keys: list[Key]) -> set[Key]:
        """Which of ``keys`` the table holds, read with their before-images for ``_remember``
        (the batch has written nothing yet)."""
        self.images = history.before_images(self.rows, keys)
        return set(self.images)

    def _resolve_references(self, rows: list[RowChange]) -> tuple[dict[str, dict[str, Key]], set[str]]:
        """Global ids of referenced rows → local keys; missing ones end the batch (see module doc).

        Also returns the rows to leave out, those referencing a row in ``skip``.
        """
        resolved: dict[str, dict[str, Key]] = {}
        missing: dict[str, set[str]] = {}
        dropped: set[str] = set()
        table = self.table
        columns: list[tuple[SyncTable, list[Any]]] = [
            (table.parents[c.ref], [None if r.values is None else r.values[i] for r in rows])
            for i, c in enumerate(table.columns)
            if c.ref is not None
        ]
        columns += [
            (parent, [None if r.key is None else r.key[i] for r in rows]) for i, parent in table.key_refs
        ]
        in_batch = {r.gid for r in rows} if any(parent is table for parent, _ in columns) else set()
        for parent, values in columns:
            if self.skip:
                dropped.update(r.gid for r, v in zip(rows, values, strict=True) if v in self.skip)
            gids = (
                {v for r, v in zip(rows, values, strict=True) if r.gid not in dropped}
                if dropped
                else set(values)
            )
            gids.discard(None)
            known = self.rows.keys_of(parent, gids)
            table_refs = resolved.setdefault(parent.key, {})
            for gid in gids:
                key = known.get(gid)
                if key is not None:
                    table_refs[gid] = key
                elif not (parent is self.table and gid in in_batch) and gid not in self.loose:
                    missing.setdefault(parent.key, set()).add(gid)
        if missing:
            self.result.missing = {t: sorted(g) for t, g in missing.items()}
            raise _Missing
        return resolved, dropped

    def _revive(
        self, r: RowChange, mine: Mapping[str, Any], refs: dict[str, dict[str, Key]]
    ) -> tuple[bool, bool]:
        """Whether a row deleted here comes back, and whether with a new clock."""
        if self.restore:
            return True, True
        assert r.clocks is not None
        latest = max(r.clocks)
        deleted = self.rows.deleted_stamp(mine) or Stamp(0, "")
        concurrent = latest.hlc > (mine["ds"] or 0)
        policy = policy_for(self.policies, self.table)
        if concurrent and policy == PREFER_LOCAL:
            self._tombstone_update(mine, Stamp(self.state.stamp(), self.rows.node.node_id), restamp=True)
            return False, False
        if concurrent and policy == PREFER_REMOTE:
            return True, latest < deleted
        if concurrent and policy == MANUAL:
            remote = self._local_values(r, refs)
            key = None if self.table.surrogate else self._allocate([r], refs)[0]  # a natural key comes back
            conflicts.record_row(
                self.rows,
                r,
                conflicts.DELETE,
                MANUAL,
                self.source,
                remote=remote,
                local_deleted=True,
                key=key,
            )
            self.result.conflicts += 1
            return False, False
        if latest > deleted:
            return True, False
        if r.deleted is not None and r.deleted > deleted:
            self._tombstone_update(mine, r.deleted)
        return False, False

    def _merge(
        self, merges: list[tuple[RowChange, Mapping[str, Any]]], refs: dict[str, dict[str, Key]]
    ) -> list[Incoming]:
        """Decide, column by column, what each present row takes from the remote state."""
        decided: list[tuple[RowChange, Mapping[str, Any], list[Stamp], Relation, list[Side], Versions]] = []
        for r, mine in merges:
            assert r.clocks is not None
            stamps = self.rows.stamps(mine)
            ours = self.rows.versions(mine, stamps)
            theirs = r.versions or implied(r.clocks)
            versions = merged(ours, theirs)
            rel, sides = compare(stamps, ours, r.clocks, theirs)
            if r.deleted is not None and r.deleted != self.rows.deleted_stamp(mine):
                our_delete = self.rows.deleted_stamp(mine)
                if our_delete is None or r.deleted > our_delete:
                    self.shadow_updates.append(
                        {"gid": r.gid, "dh": r.deleted.hlc, "dn": self.rows.number(r.deleted.node)}
                    )
            if rel in (Relation.EQUAL, Relation.LOCAL_NEWER):
                self.result.unchanged += 1
                if versions != ours:  # the peer had seen writes this row's history lacks
                    self.shadow_updates.append(
                        {"gid": r.gid, "vv": self.rows.versions_text(versions, stamps)}
                    )
                continue
            decided.append((r, mine, stamps, rel, sides, versions))
        no_overwrite = NO_OVERWRITE in self.column_policies
        needs_values = [
            self._key(mine) for r, mine, _, rel, _, _ in decided if rel is Relation.CONCURRENT or no_overwrite
        ]
        current = self.rows.app_values(needs_values) if needs_values else {}
        out = []
        for r, mine, stamps, rel, sides, versions in decided:
            here = current.get(self._key(mine)) if current else None
            incoming = self._merge_row(r, mine, stamps, rel, sides, refs, here)
            incoming.versions = versions
            out.append(incoming)
        return out

    def _merge_row(
        self,
        r: RowChange,
        mine: Mapping[str, Any],
        stamps: list[Stamp],
        rel: Relation,
        sides: list[Side],
        refs: dict[str, dict[str, Key]],
        current: tuple[Any, ...] | None,
    ) -> Incoming:
        assert r.values is not None and r.clocks is not None
        remote = self._local_values(r, refs)
        values: list[Any] = list(current) if current is not None else list(remote)
        new_stamps: list[Stamp | None] = list(stamps)
        writes: set[int] = set()
        restamp: set[int] = set()
        differing: list[int] = []
        for i, policy in enumerate(self.column_policies):
            if sides[i] is Side.SAME:
                continue
            same = current is not None and self.encoders[i](current[i]) == self.encoders[i](remote[i])
            decision = decide_column(policy, rel, sides[i], stamps[i], r.clocks[i], same)
            if decision.conflict:
                differing.append(i)
            elif decision.take_remote:
                values[i] = remote[i]
                new_stamps[i] = None if decision.restamp else r.clocks[i]
                writes.add(i)
            elif decision.restamp:
                restamp.add(i)
        for i in restamp:
            new_stamps[i] = None
        changed = len(sides) - sides.count(Side.SAME)
        whole = not restamp and not differing and len(writes) == changed
        incoming = Incoming(r.gid, self._key(mine), values, new_stamps, writes, whole)
        if differing:
            kind = conflicts.REVIEW if self._all(differing, NO_OVERWRITE) else conflicts.UPDATE
            conflicts.record_row(
                self.rows,
                r,
                kind,
                self._policy_name(differing),
                self.source,
                local=current,
                remote=remote,
                sides=sides,
                columns=differing,
            )
            self.result.conflicts += 1
        return incoming

    def _all(self, slots: list[int], policy: str) -> bool:
        return all(self.column_policies[i] == policy for i in slots)

    def _policy_name(self, slots: list[int]) -> str:
        return self.column_policies[slots[0]]

    def _incoming(self, r: RowChange, refs: dict[str, dict[str, Key]], restamp: bool) -> Incoming:
        assert r.clocks is not None
        values = self._local_values(r, refs)
        stamps: list[Stamp | None] = [None] * len(values) if restamp else list(r.clocks)
        incoming = Incoming(r.gid, None, values, stamps, set(range(len(values))), not restamp)
        incoming.versions = r.versions or implied(r.clocks)  # kept even if a renumbering restamps
        return incoming

    def _local_values(self, r: RowChange, refs: dict[str, dict[str, Key]]) -> list[Any]:
        """The remote values with references turned into local keys (self-references stay gids)."""
        assert r.values is not None
        values = list(r.values)
        for i, parent in self.ref_slots:
            if values[i] is not None:
                key = refs.get(parent, {}).get(values[i])
                if key is not None:
                    values[i] = key[0]
        return values

    def _key(self, mine: Mapping[str, Any]) -> Key:
        return tuple([mine[k] for k in self.shadow_keys])

    # -- writing -------------------------------------------------------------------------------

    def _write_updates(self, rows: list[Incoming], later: list[int]) -> list[tuple[Key, dict[str, Any]]]:
        """Write the rows merged; the columns ``later`` are returned instead, to be set after the
        batch's new rows are in (they may reference one)."""
        changes, deferred = [], []
        names = [c.name for c in self.table.columns]
        for row in rows:
            assert row.key is not None
            now, after = sorted(row.writes.difference(later)), row.writes.intersection(later)
            changes.append((row.key, {names[i]: row.values[i] for i in now}))
            if after:
                deferred.append((row.key, {names[i]: row.values[i] for i in after}))
            meta = self.rows.clock_values(row.stamps)
            meta["vv"] = self.rows.versions_text(row.versions, row.stamps)
            meta["src"] = self.source if row.whole else None
            mine = self.local[row.gid]
            # only what changes: each value bound costs (NULLs most), and the servers load less
            changed = {k: v for k, v in meta.items() if mine[k] != v}
            changed["gid"], changed["seq"] = row.gid, self.state.next_seq()
            self.shadow_updates.append(changed)
            if row.writes:
                self.touched.append(row.key)
        if self.receipt is not None:
            self._remember([(row.gid, row.key) for row in rows if row.writes and row.key], history.UPDATED)
        self.rows.update_app(changes)
        self.result.updated += sum(1 for row in rows if row.writes)
        return deferred

    def _remember(self, rows: list[tuple[str, Key]], kind: str, seqs: dict[str, int] | None = None) -> None:
        """Keep the before-image of present rows about to be updated or deleted (for undo).

        One query per batch, none for the rows ``_present`` read; the values are kept
        as the driver returns them, so undo writes back exactly what was there. A row's
        first image in a batch is the one kept: read before the batch, it is the right one.
        """
        assert self.receipt is not None
        found = self.images
        missing = [key for _, key in rows if tuple(key) not in found]
        if missing:
            found = {**found, **history.before_images(self.rows, missing)}
        for gid, key in rows:
            image = found.get(tuple(key)) or history.find_image(found, self.key_encoders, key)
            mine = self.local.get(gid)
            seq = seqs[gid] if seqs and gid in seqs else int(mine["seq"]) if mine is not None else 0
            self.receipt.image(gid, kind, seq, *image)

    # -- tombstones ----------------------------------------------------------------------------

    def _gone(self, rows: list[RowChange], local: dict[str, Mapping[str, Any]]) -> None:
        to_delete: list[tuple[RowChange, Mapping[str, Any]]] = []
        policy = policy_for(self.policies, self.table)
        for r in rows:
            assert r.deleted is not None
            mine = local.get(r.gid)
            if mine is None:
                deleted = {"dh": r.deleted.hlc, "dn": self.rows.number(r.deleted.node), "ds": r.seen}
                self.shadow_inserts.append(
                    {"gid": r.gid, "seq": self.state.next_seq(), "deleted": 1, "src": self.source, **deleted}
                )
                continue
            if mine["deleted"]:
                ours = self.rows.deleted_stamp(mine)
                if ours is None or r.deleted > ours:
                    self._tombstone_update(mine, r.deleted, seen=r.seen)
                else:
                    self.result.unchanged += 1
                continue
            latest = max(self.rows.stamps(mine))
            concurrent = latest.hlc > (r.seen or 0)
            if policy == NO_OVERWRITE:
                remove = False
                conflicts.record_row(self.rows, r, conflicts.REVIEW, policy, self.source, remote_deleted=True)
                self.result.conflicts += 1
            elif concurrent and policy == PREFER_LOCAL:
                remove = False
                self.rows.restamp([r.gid])
            elif concurrent and policy == PREFER_REMOTE:
                remove = True
            elif concurrent and policy == MANUAL:
                remove = False
                conflicts.record_row(self.rows, r, conflicts.DELETE, policy, self.source, remote_deleted=True)
                self.result.conflicts += 1
            else:
                remove = r.deleted > latest
            if remove:
                to_delete.append((r, mine))
            else:
                self.result.unchanged += 1
                if r.deleted > (self.rows.deleted_stamp(mine) or Stamp(0, "")):
                    self.shadow_updates.append(
                        {"gid": r.gid, "dh": r.deleted.hlc, "dn": self.rows.number(r.deleted.node)}
                    )
        if not to_delete:
            return
        keys = [self._key(mine) for _, mine in to_delete]
        kept = self.rows.kept(keys)
        removed: list[Key] = []
        gone_rows: list[tuple[str, Key]] = []
        for (r, mine), key in zip(to_delete, keys, strict=True):
            if key in kept:  # still referenced here: keep it, and bring it back where it was deleted
                self.rows.restamp([r.gid])
                conflicts.record_row(
                    self.rows,
                    r,
                    conflicts.RESTORE,
                    policy,
                    self.source,
                    remote_deleted=True,
                    status=conflicts.RESOLVED,
                )
                self.result.restored += 1
                continue
            assert r.deleted is not None
            self._tombstone_update(mine, r.deleted, seen=r.seen, src=self.source)
            removed.append(key)
            gone_rows.append((r.gid, key))
        if self.receipt is not None:
            self._remember(gone_rows, history.DELETED)
        self.rows.delete_app(removed)
        self.touched += removed
        self.result.deleted += len(removed)

    def _tombstone_update(
        self,
        mine: Mapping[str, Any],
        deleted: Stamp,
        *,
        seen: int | None = None,
        restamp: bool = False,
        src: int | None = None,
    ) -> None:
        width = len(self.table.columns)
        values: dict[str, Any] = {
            "gid": mine["gid"],
            "deleted": 1,
            "dh": deleted.hlc,
            "dn": self.rows.number(deleted.node) if deleted.node else SELF,
            "seq": self.state.next_seq(),
            "src": None if restamp else src,
            "vv": None,
            "bh": None,
            "bn": None,
            **{f"k{i}": None for i in range(len(self.table.keys))},
            **{f"{p}{i}": None for i in range(width) for p in "cn"},
        }
        if not mine["deleted"]:
            values["ds"] = max(self.rows.stamps(mine)).hlc
        elif seen is not None:
            values["ds"] = max(seen, mine["ds"] or 0)
        self.shadow_updates.append(values)

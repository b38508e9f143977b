"""``erpsync sync undo``: revert the last sync that changed rows on this node, in one transaction.

The sync's receipts (``history``) hold, for every row it changed, the row's
state before: absent, or its key and values. Undo puts that state back —
rows the sync added are deleted, rows it changed get their values back, rows
it deleted come back with their ids and global ids — and writes it as a
local edit: new clocks, new change sequences. The next sync therefore sends
the reverted state to the peers (where it wins, being the latest write)
instead of receiving the undone changes again: the cursors stay where the
sync left them, the undone changes are not sent again.

A row changed since the sync (a local edit, a later sync, a conflict
resolution) is not overwritten unless ``force``: undo refuses and names it.
A row is unchanged since when its change sequence is still the one the sync
gave it — or one that, by the receipts, stands for the same content (a later
sync that touched only its metadata, an undo that put it back).

Undone, the sync is marked so; undo again reverts the sync before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, update

from erpsync.db import Database
from erpsync.errors import ErpSyncError
from erpsync.i18n import tr
from erpsync.sync import history
from erpsync.sync.apply import ConcurrentWrite, _check_concurrent
from erpsync.sync.capture import Key, fold
from erpsync.sync.history import CONTENT, DELETED, RESTORED, UPDATED, Entry, SyncRecord
from erpsync.sync.meta import HISTORY
from erpsync.sync.model import SyncTable
from erpsync.sync.node import SELF, Node
from erpsync.sync.rows import TableRows

RETRIES = 5
SHOWN = 10
RUNNING = timedelta(minutes=2)
"""An unfinished sync with a batch applied more recently than this is taken for running."""
"""Rows named in a refusal."""


class UndoRefused(ErpSyncError):
    """The last sync cannot be undone as things are (rows changed since, ids taken, receipts gone)."""


@dataclass
class UndoReport:
    """What ``undo_last`` did."""

    sync: SyncRecord
    """The sync undone."""
    undo_id: str
    deleted: int = 0
    """Rows the sync had added, deleted."""
    restored: int = 0
    """Rows the sync had changed, given their values back."""
    reinserted: int = 0
    """Rows the sync had deleted, put back with their ids."""
    overwritten: list[str] = field(default_factory=list)
    """Rows changed since the sync, reverted anyway (``force``)."""
    kept: list[str] = field(default_factory=list)
    """Rows the sync had added, kept because rows added since reference them (``force``)."""


@dataclass(slots=True)
class _Row:
    """One row of the sync: its state before, and what it is now."""

    table: SyncTable
    gid: str
    last_hi: int
    before: Entry | None = None
    """The first entry that changed its content: its image is the state before the sync."""
    shadow: Mapping[str, Any] | None = None
    changed: bool = False

    @property
    def label(self) -> str:
        """How a refusal names the row: table and key."""
        key: Any = None
        if self.shadow is not None and not self.shadow["deleted"]:
            key = tuple(self.shadow[f"k{i}"] for i in range(len(self.table.keys)))
        elif self.before is not None and self.before.key is not None:
            key = self.before.key
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        return f"{self.table.name} {key if key is not None else self.gid}"

    @property
    def present_now(self) -> bool:
        return self.shadow is not None and not self.shadow["deleted"]

    def key_now(self) -> Key:
        assert self.shadow is not None
        return tuple(self.shadow[f"k{i}"] for i in range(len(self.table.keys)))


def undo_last(db: Database, *, force: bool = False) -> UndoReport | None:
    """Revert the last sync that changed rows on ``db``; ``None`` when there is none left to undo.

    Refuses (``UndoRefused``, nothing written) when rows it changed changed
    since, unless ``force``; rows it added that rows added since reference are
    then kept. Always refuses to put back a row whose id another row took since.
    """
    node = Node(db)
    for _ in range(RETRIES):
        try:
            return _Undo(node, force).run()
        except ConcurrentWrite:
            continue
    raise UndoRefused(
        "rows of {db} kept changing during the undo; nothing was undone",
        "run erpsync sync undo again when the ERP is less busy",
        db=db.name,
    )


class _Undo:
    """One attempt, in one transaction."""

    def __init__(self, node: Node, force: bool) -> None:
        self.node = node
        self.force = force
        self.problems: list[str] = []
        self.taken: list[str] = []

    def run(self) -> UndoReport | None:
        node = self.node
        with node.write() as conn:
            self.conn = conn
            self.state = state = node.lock(conn)
            fold(node, conn, state)
            found = history.last_written(node, conn)
            if found is None:
                return None
            _, target = found
            self._refuse_if_running(target)
            self.report = UndoReport(target, history.new_id())
            rows = self._rows(target)
            self._check(rows)
            lo = state.seq
            node.dialect.mute_capture(conn)
            try:
                restored = self._revert(rows)
            finally:
                node.dialect.unmute_capture(conn)
            self._refuse_if_needed(target)
            for items in restored.values():
                table = items[0][0].table
                keys = [k for _, k in items if k is not None]
                _check_concurrent(conn, table, keys)
                entries = [[row.gid, RESTORED, row.before.before_seq] for row, _ in items if row.before]
                history.save_entries(node, conn, self.report.undo_id, table.number, lo, state.seq, entries)
            self._record(target)
            node.save(conn, state)
        return self.report

    # -- what the sync did, and what changed since ------------------------------------------

    def _rows(self, target: SyncRecord) -> dict[int, dict[str, _Row]]:
        node, conn = self.node, self.conn
        entries = history.read_receipts(node, conn, target.id)
        if not entries:
            raise UndoRefused(
                "the receipts of sync {id} of {when} are no longer kept ({days} days); it cannot be undone",
                "restore the backup taken before it: erpsync backup list DB",
                id=target.id[:8],
                when=f"{target.started:%Y-%m-%d %H:%M}",
                days=history.RECEIPT_DAYS,
            )
        tables = {t.number: t for t in node.tables(conn)}
        out: dict[int, dict[str, _Row]] = {}
        for entry in entries:
            table = tables.get(entry.tbl)
            if table is None:
                continue  # a table no longer synced: its rows are left as they are
            row = out.setdefault(entry.tbl, {}).setdefault(entry.gid, _Row(table, entry.gid, entry.hi))
            row.last_hi = max(row.last_hi, entry.hi)
            if row.before is None and entry.kind in CONTENT:
                row.before = entry
        first = history.first_receipt(node, conn, target.id)
        assert first is not None
        self.later: dict[tuple[int, str], list[Entry]] = {}
        for entry in history.receipts_after(node, conn, first, target.id):
            self.later.setdefault((entry.tbl, entry.gid), []).append(entry)
        return out

    def _same_content(self, tbl: int, gid: str, seq: int, last_hi: int) -> bool:
        """Whether a row at change sequence ``seq`` holds what the sync left (see module doc)."""
        chain = self.later.get((tbl, gid), [])
        for _ in range(len(chain) + 1):
            if seq <= last_hi:
                return True
            entry = next((e for e in reversed(chain) if e.lo < seq <= e.hi), None)
            if entry is None or entry.kind in CONTENT:
                return False
            seq = entry.before_seq
        return False

    def _check(self, rows: dict[int, dict[str, _Row]]) -> None:
        for tbl, by_gid in rows.items():
            table = next(iter(by_gid.values())).table
            shadows = TableRows(self.conn, self.node, table, self.state).shadows(list(by_gid))
            for gid, row in by_gid.items():
                row.shadow = shadows.get(gid)
                seq = None if row.shadow is None else int(row.shadow["seq"])
                row.changed = seq is None or not self._same_content(tbl, gid, seq, row.last_hi)
                if row.changed and row.before is not None:
                    if self.force:
                        self.report.overwritten.append(row.label)
                    else:
                        self.problems.append(row.label)

    def _refuse_if_running(self, target: SyncRecord) -> None:
        """A sync still applying batches (its record unfinished, a batch applied a moment ago)
        would go on changing rows after the undo."""
        last = target.finished or target.started
        if target.result is None and datetime.now() - last < RUNNING:
            raise UndoRefused(
                "sync {id} with {peer} is still running (last batch at {when}); nothing was undone",
                "wait for it to end; if its process was stopped, undo it {minutes} minutes after that batch",
                id=target.id[:8],
                peer=target.peer_name or "?",
                when=f"{last:%H:%M:%S}",
                minutes=int(RUNNING.total_seconds() // 60),
            )

    def _refuse_if_needed(self, target: SyncRecord) -> None:
        when = f"{target.started:%Y-%m-%d %H:%M}"
        if self.taken:
            raise UndoRefused(
                "sync {id} of {when} cannot be undone: the ids of {rows} were taken by rows added since; "
                "nothing was undone",
                "delete or renumber those rows, then run erpsync sync undo again",
                id=target.id[:8],
                when=when,
                rows=_listed(self.taken),
            )
        if self.problems:
            raise UndoRefused(
                "{n} rows changed since sync {id} of {when}: {rows}; nothing was undone",
                "check them, then undo anyway with --force (rows that rows added since refer to are kept)",
                n=len(self.problems),
                id=target.id[:8],
                when=when,
                rows=_listed(self.problems),
            )

    # -- putting the state before back ----------------------------------------------------------

    def _revert(self, rows: dict[int, dict[str, _Row]]) -> dict[int, list[tuple[_Row, Key | None]]]:
        """Deletes children first, re-inserts parents first, updates, then the deletes that had
        to wait for the updates (a row moved back off a parent the sync had added)."""
        order = [t for t in self.node.tables(self.conn) if t.number in rows]
        deletes: dict[int, list[_Row]] = {}
        reinserts: dict[int, list[_Row]] = {}
        updates: dict[int, list[_Row]] = {}
        done: dict[int, list[tuple[_Row, Key | None]]] = {}
        for table in order:
            for row in rows[table.number].values():
                if row.before is None or (row.changed and not self.force):
                    continue
                if row.before.kind not in (UPDATED, DELETED):
                    (deletes if row.present_now else updates).setdefault(table.number, []).append(row)
                elif row.present_now:
                    updates.setdefault(table.number, []).append(row)
                else:
                    reinserts.setdefault(table.number, []).append(row)
        waiting: dict[int, list[_Row]] = {}
        for table in reversed(order):
            if table.number in deletes:
                waiting[table.number] = self._delete(table, deletes[table.number], done, final=False)
        for table in order:
            if table.number in reinserts:
                self._reinsert(table, reinserts[table.number], done)
        for table in order:
            if table.number in updates:
                self._update(table, updates[table.number], done)
        for table in reversed(order):
            if waiting.get(table.number):
                self._delete(table, waiting[table.number], done, final=True)
        return done

    def _rows_of(self, table: SyncTable) -> TableRows:
        cache: dict[int, TableRows] = self.__dict__.setdefault("_table_rows", {})
        if table.number not in cache:
            cache[table.number] = TableRows(self.conn, self.node, table, self.state)
        return cache[table.number]

    def _delete(
        self,
        table: SyncTable,
        items: list[_Row],
        done: dict[int, list[tuple[_Row, Key | None]]],
        *,
        final: bool,
    ) -> list[_Row]:
        """Delete rows the sync added, unless still referenced (then returned, or refused/kept)."""
        rows = self._rows_of(table)
        keys = [row.key_now() for row in items]
        referenced = rows.kept(keys)
        waiting = [row for row in items if row.key_now() in referenced]
        if final:
            for row in waiting:
                if self.force:
                    self.report.kept.append(row.label)
                else:
                    self.problems.append(f"{row.label} ({tr('rows added since refer to it')})")
        chosen = [row for row in items if row.key_now() not in referenced]
        if not chosen:
            return waiting
        rows.delete_app([row.key_now() for row in chosen])
        width = len(table.columns)
        tombstones = []
        for row in chosen:
            assert row.shadow is not None
            tombstones.append(
                {
                    "gid": row.gid,
                    "deleted": 1,
                    "dh": self.state.stamp(),
                    "dn": SELF,
                    "ds": max(rows.stamps(row.shadow)).hlc,
                    "seq": self.state.next_seq(),
                    "src": None,
                    "vv": None,
                    "bh": None,
                    "bn": None,
                    **{f"k{i}": None for i in range(len(table.keys))},
                    **{f"{p}{i}": None for i in range(width) for p in "cn"},
                }
            )
            done.setdefault(table.number, []).append((row, row.key_now()))
        rows.write_shadows([], tombstones)
        self.report.deleted += len(chosen)
        return waiting

    def _reinsert(
        self, table: SyncTable, items: list[_Row], done: dict[int, list[tuple[_Row, Key | None]]]
    ) -> None:
        """Put rows the sync deleted back, with their ids and global ids."""
        rows = self._rows_of(table)
        images = [row.before for row in items if row.before is not None]
        taken = history.before_images(rows, [tuple(e.key or ()) for e in images])
        free: list[_Row] = []
        for row in items:
            assert row.before is not None and row.before.key is not None
            if tuple(row.before.key) in taken:
                self.taken.append(row.label)
            else:
                free.append(row)
        if not free:
            return
        app_rows = []
        shadow_updates, shadow_inserts = [], []
        width = len(table.columns)
        for row in free:
            assert row.before is not None and row.before.key is not None and row.before.values is not None
            app = {k.name: v for k, v in zip(table.keys, row.before.key, strict=True)}
            app.update({c.name: v for c, v in zip(table.columns, row.before.values, strict=True)})
            app_rows.append(app)
            meta: dict[str, Any] = {
                "deleted": 0,
                "bh": self.state.stamp(),
                "bn": SELF,
                "seq": self.state.next_seq(),
                "src": None,
                "vv": None,
                **{f"k{i}": v for i, v in enumerate(row.before.key)},
                **{f"{p}{i}": None for i in range(width) for p in "cn"},
            }
            if row.shadow is None:
                shadow_inserts.append({"gid": row.gid, **meta})
            else:
                shadow_updates.append({"gid": row.gid, **meta})
            done.setdefault(table.number, []).append((row, tuple(row.before.key)))
        rows.insert_app(app_rows, convert=False)  # the values as the driver had returned them
        if table.surrogate:
            self.node.dialect.after_explicit_ids(self.conn, table.app)
        rows.write_shadows(shadow_inserts, shadow_updates)
        self.report.reinserted += len(free)

    def _update(
        self, table: SyncTable, items: list[_Row], done: dict[int, list[tuple[_Row, Key | None]]]
    ) -> None:
        """Give rows the sync changed their values back; the columns that differ get a new clock.

        Rows already as they were (a tombstone the sync left a tombstone, values
        written back by hand) only get a new change sequence, which the receipt
        of the undo ties to their state before.
        """
        rows = self._rows_of(table)
        present = [row for row in items if row.present_now]
        current = history.before_images(rows, [row.key_now() for row in present]) if present else {}
        changes: list[dict[str, Any]] = []
        shadows: list[dict[str, Any]] = []
        key_names = [k.name for k in table.keys]
        for row in items:
            if row.shadow is None:
                continue  # no trace of it left here: nothing to tie to its state before
            meta: dict[str, Any] = {"gid": row.gid, "seq": self.state.next_seq()}
            if row.present_now and row.before is not None and row.before.values is not None:
                key = row.key_now()
                now = current[key][1] if key in current else None
                old = row.before.values
                slots = [i for i in range(len(table.columns)) if now is None or now[i] != old[i]]
                if slots:
                    change = {table.columns[i].name: old[i] for i in slots}
                    changes.append({**change, **dict(zip(key_names, key, strict=True))})
                    stamps = rows.stamps(row.shadow)
                    fresh: list[Any] = [None if i in slots else s for i, s in enumerate(stamps)]
                    meta.update(rows.clock_values(fresh), src=None)
                    meta["vv"] = rows.versions_text(rows.versions(row.shadow, stamps), fresh)
                done.setdefault(table.number, []).append((row, key))
                self.report.restored += 1
            else:
                done.setdefault(table.number, []).append((row, None))
            shadows.append(meta)
        rows.update_rows(table.app, key_names, changes)  # raw values, as the receipt kept them
        rows.write_shadows([], shadows)

    def _record(self, target: SyncRecord) -> None:
        """The undo in the history, and the sync marked undone."""
        history_t = self.node.meta[HISTORY]
        now = history.now_ms()
        report = self.report
        self.conn.execute(
            insert(history_t).values(
                sync_id=report.undo_id,
                peer=target.peer_id,
                peer_name=target.peer_name,
                direction=history.UNDO,
                started=now,
                finished=now,
                received=0,
                sent=0,
                changed=report.deleted + report.restored + report.reinserted,
                conflicts=0,
                result=history.OK,
                message=target.id,
            )
        )
        self.conn.execute(
            update(history_t).where(history_t.c.sync_id == target.id).values(undone_by=report.undo_id)
        )


def _listed(labels: list[str]) -> str:
    shown = ", ".join(labels[:SHOWN])
    return shown if len(labels) <= SHOWN else tr("{rows} and {n} more", rows=shown, n=len(labels) - SHOWN)


__all__ = ["UndoRefused", "UndoReport", "undo_last"]

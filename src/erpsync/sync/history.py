"""The history of the syncs of a node, and the receipts that let the last one be undone.

Every sync run on a node is recorded in ``erpsync_sync`` (peer, times,
direction, rows received and sent, conflicts, result, backup taken), failed
ones too. A node that *applies* batches of a sync run by its peer (a push)
records it as well, direction ``remote``, so a server can undo what a PC
pushed to it.

Each batch applied under a sync id keeps a **receipt** in ``erpsync_receipt``,
in the batch's own transaction: for every row it changes, the row's state
before (``absent``, or its local key and values) and its change sequence
before. The change sequences the batch handed out are the range ``(lo, hi]``
(the node row is locked, so no one else hands any out meanwhile): a row whose
sequence is still in that range has not changed since. Undo reads them
(``erpsync.sync.undo``).

A receipt is one row per batch: JSON, compressed — one insert whatever the
size of the batch, the hot path of a first sync stays fast. Receipts are kept
30 days, the history 90.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from erpsync.db import Database
from erpsync.errors import ErpSyncError
from erpsync.sync.capture import IN_LIMIT, Key, _chunks
from erpsync.sync.changeset import Batch, _decode, dumps, encode_rows
from erpsync.sync.encoding import Encoder, row_text
from erpsync.sync.meta import HISTORY, RECEIPTS
from erpsync.sync.model import SyncTable
from erpsync.sync.node import Node
from erpsync.sync.rows import TableRows

SYNC, PULL, PUSH, REMOTE, UNDO = "sync", "pull", "push", "remote", "undo"
"""Directions: run here (both ways, pull, push), run by the peer that sent batches here, an undo."""
OK, ERROR = "ok", "error"
RECEIPT_DAYS = 30
HISTORY_DAYS = 90
PRUNE_EVERY = 100
"""Syncs with nothing to do prune the history once in this many."""
_DAY_MS = 86_400_000

ABSENT, UPDATED, DELETED, META, RESTORED = "i", "u", "d", "m", "r"
"""Kinds of receipt entries: the row was absent before (the batch inserted or revived it), it
was updated, it was deleted; only its metadata changed (content as before); an undo gave it
back the content it had at the entry's sequence."""
CONTENT = (ABSENT, UPDATED, DELETED)


def new_id() -> str:
    """A sync id: unique across nodes, so both sides of a sync can file it under the same id."""
    return uuid.uuid4().hex


def now_ms() -> int:
    """The wall clock in milliseconds, as the history stores times."""
    return int(time.time() * 1000)


def _datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000)


@dataclass(frozen=True)
class SyncRecord:
    """One sync as the history keeps it."""

    id: str
    peer_id: str | None
    """The peer's node id (``None`` when the sync failed before the peer answered)."""
    peer_name: str | None
    direction: str
    """``sync``, ``pull``, ``push`` (run here), ``remote`` (run by the peer), ``undo``."""
    started: datetime
    finished: datetime | None
    received: int
    sent: int
    changed: int
    """Rows this sync changed on this node (what undo would revert)."""
    conflicts: int
    result: str | None
    """``ok``, ``error``, or ``None`` while running (or when the process was killed)."""
    message: str | None
    """The error, in one line, when ``result`` is ``error``; for an undo, the sync it undid."""
    backup: Path | None
    undone_by: str | None
    """The id of the undo that reverted this sync."""

    @property
    def wrote(self) -> bool:
        """Whether the sync changed rows here (and so can be undone)."""
        return self.direction != UNDO and self.changed > 0


def _record(row: Any) -> SyncRecord:
    started = _datetime(row.started)
    assert started is not None
    return SyncRecord(
        id=row.sync_id,
        peer_id=row.peer,
        peer_name=row.peer_name,
        direction=row.direction,
        started=started,
        finished=_datetime(row.finished),
        received=int(row.received),
        sent=int(row.sent),
        changed=int(row.changed),
        conflicts=int(row.conflicts),
        result=row.result,
        message=row.message,
        backup=Path(row.backup) if row.backup else None,
        undone_by=row.undone_by,
    )


def recent(db: Database, limit: int = 20) -> list[SyncRecord]:
    """The node's last ``limit`` syncs and undos, newest first."""
    node = Node(db)
    history = node.meta[HISTORY]
    with db.connect() as conn:
        found = conn.execute(select(history).order_by(history.c.no.desc()).limit(limit)).all()
    return [_record(row) for row in found]


def last_written(node: Node, conn: Connection) -> tuple[int, SyncRecord] | None:
    """The latest sync that changed rows here and is not undone yet, with its history number."""
    history = node.meta[HISTORY]
    row = conn.execute(
        select(history)
        .where(history.c.direction != UNDO, history.c.changed > 0, history.c.undone_by.is_(None))
        .order_by(history.c.no.desc())
        .limit(1)
    ).first()
    return None if row is None else (int(row.no), _record(row))


# -- the sync run here ------------------------------------------------------------------------------


class Run:
    """The history row of a sync run by this node: written once it writes, finished at the end.

    A sync that writes nothing here costs one insert, at the end.
    """

    def __init__(self, node: Node, direction: str, peer_name: str | None) -> None:
        self.node = node
        self.id = new_id()
        self.started = now_ms()
        self.direction = direction
        self.peer: str | None = None
        self.peer_name = peer_name
        self.backup: Path | None = None
        self._recorded = False

    def begin(self) -> None:
        """Record the sync as running: before its first local write, so even a killed sync
        leaves its record (and its receipts a way back)."""
        with self.node.write() as conn:
            conn.execute(insert(self.node.meta[HISTORY]).values(**self._values(), result=None))
        self._recorded = True

    def finish(
        self,
        received: int,
        sent: int,
        conflicts: int,
        error: BaseException | None = None,
    ) -> None:
        """Record the outcome (``error``: the exception that stopped the sync)."""
        values = self._values(finished=now_ms(), received=received, sent=sent, conflicts=conflicts)
        values["result"] = OK if error is None else ERROR
        values["message"] = None if error is None else one_line(error)
        history = self.node.meta[HISTORY]
        pruning = bool(received or sent)  # a sync with nothing to do stays one insert, mostly
        with self.node.write() as conn:
            if self._recorded:
                values.pop("changed")
                conn.execute(update(history).where(history.c.sync_id == self.id).values(**values))
            else:
                inserted = conn.execute(insert(history).values(**values)).inserted_primary_key
                pruning = pruning or inserted is None or int(inserted[0]) % PRUNE_EVERY == 0
                self._recorded = True
            if pruning:
                prune(self.node, conn)

    def _values(self, **extra: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "sync_id": self.id,
            "peer": self.peer,
            "peer_name": self.peer_name,
            "direction": self.direction,
            "started": self.started,
            "received": 0,
            "sent": 0,
            "changed": 0,
            "conflicts": 0,
            "backup": str(self.backup) if self.backup else None,
        }
        values.update(extra)
        return values


def one_line(error: BaseException) -> str:
    """An exception as the history keeps it: its message's first line."""
    if isinstance(error, ErpSyncError):
        text = error.message
    elif isinstance(error, KeyboardInterrupt):
        text = "interrupted"
    else:
        text = f"{type(error).__name__}: {error}"
    return (text.splitlines() or [type(error).__name__])[0][:500]


def prune(node: Node, conn: Connection) -> None:
    """Forget receipts older than ``RECEIPT_DAYS`` (those syncs can no longer be undone) and
    history older than ``HISTORY_DAYS``."""
    history, receipts = node.meta[HISTORY], node.meta[RECEIPTS]
    now = now_ms()
    old = select(history.c.sync_id).where(history.c.started < now - RECEIPT_DAYS * _DAY_MS)
    conn.execute(delete(receipts).where(receipts.c.sync_id.in_(old)))
    conn.execute(delete(history).where(history.c.started < now - HISTORY_DAYS * _DAY_MS))


# -- receipts -----------------------------------------------------------------------------------------


class Receipt:
    """The before-images of the rows one batch changes, gathered while it applies.

    ``added`` takes the rows new to the node (the bulk path of a first sync:
    only their global ids are kept); the other rows keep their kind, their
    change sequence before, and for an update or a delete their key and values.
    The first image of a row in the batch is its state before the batch.
    """

    __slots__ = ("_seen", "images", "lo", "new", "rows")

    def __init__(self, lo: int) -> None:
        self.lo = lo
        """The node's change sequence before the batch: every sequence it hands out is above."""
        self.new: list[str] = []
        self.rows: list[list[Any]] = []
        self.images: dict[str, list[Any]] = {}
        self._seen: set[str] = set()

    def added(self, gids: Iterable[str]) -> None:
        """Rows this node had never seen, inserted by the batch."""
        self.new.extend(gids)

    def absent(self, gid: str, before_seq: int) -> None:
        """A row not present before (a tombstone, or deleted behind the capture's back) inserted."""
        if gid not in self._seen:
            self._seen.add(gid)
            self.rows.append([gid, ABSENT, before_seq])

    def image(self, gid: str, kind: str, before_seq: int, key: Sequence[Any], values: Sequence[Any]) -> None:
        """A present row about to be updated or deleted: its key and values now."""
        if gid not in self._seen:
            self._seen.add(gid)
            self.rows.append([gid, kind, before_seq])
            self.images[gid] = [key, values]  # encoded by data()

    def meta(self, gid: str, before_seq: int) -> None:
        """A row whose metadata only the batch changed (a new clock, a tombstone's stamp)."""
        if gid not in self._seen:
            self._seen.add(gid)
            self.rows.append([gid, META, before_seq])

    @property
    def entries(self) -> int:
        """Rows listed."""
        return len(self.new) + len(self.rows)

    @property
    def changed(self) -> int:
        """Rows whose content the batch changed."""
        return len(self.new) + sum(1 for row in self.rows if row[1] != META)

    def complete(self, conn: Connection, table: SyncTable, hi: int, before: dict[str, Any]) -> None:
        """List the rows whose metadata alone the batch changed.

        Skipped when the batch handed out exactly one change sequence per row
        listed (the usual case): then no other row was touched.
        """
        if hi - self.lo == self.entries:
            return
        shadow = table.shadow
        new = set(self.new)
        found = conn.execute(
            select(shadow.c.gid).where(shadow.c.deleted.in_((0, 1)), shadow.c.seq > self.lo)
        ).scalars()
        for gid in found:
            if gid not in new:
                mine = before.get(gid)
                self.meta(gid, int(mine["seq"]) if mine is not None else 0)

    def data(self) -> bytes:
        """The receipt as stored: compressed JSON, keys and values encoded as ``changeset``
        encodes a batch's, column by column (decimals, dates and bytes tagged)."""
        pairs = self.images.values()
        keys = encode_rows([key for key, _ in pairs])
        values = encode_rows([row for _, row in pairs])
        images = {gid: [k, v] for gid, k, v in zip(self.images, keys, values, strict=True)}
        return _compressed({"new": self.new, "rows": self.rows, "images": images})


def _compressed(data: dict[str, Any]) -> bytes:
    return zlib.compress(dumps(data), 1)


def before_images(rows: TableRows, keys: Sequence[Key]) -> dict[Key, tuple[Key, tuple[Any, ...]]]:
    """The key and values of present rows, by key, as the driver returns them (one query a batch).

    Raw values go back exactly as they were read: a SQLite date kept as text
    stays that text, a decimal its digits. Plain tuples off the DB-API cursor:
    this runs for every batch that updates or deletes rows.
    """
    table = rows.table
    names = [rows.quote(k.name) for k in table.keys]
    columns = [rows.quote(c.name) for c in table.columns]
    select_sql = f"SELECT {', '.join(names + columns)} FROM {rows.quote(table.app.name)} WHERE "
    width, mark = len(names), rows.mark
    out: dict[Key, tuple[Key, tuple[Any, ...]]] = {}
    cursor = rows.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if width == 1 and rows.node.dialect.binds_arrays:
            queries = [
                (f"{names[0]} = ANY({mark})", [[k[0] for k in part]]) for part in _chunks(keys, 50_000)
            ]
        else:
            one = "(" + ", ".join([mark] * width) + ")" if width > 1 else mark
            target = f"({', '.join(names)})" if width > 1 else names[0]
            queries = [
                (f"{target} IN ({', '.join([one] * len(part))})", [v for k in part for v in k])
                for part in _chunks(keys, IN_LIMIT)
            ]
        for where, params in queries:
            cursor.execute(select_sql + where, params)
            for found in cursor.fetchall():
                values = tuple(found)
                out[values[:width]] = (values[:width], values[width:])
    finally:
        cursor.close()
    return out


def find_image(
    found: dict[Key, tuple[Key, tuple[Any, ...]]], encoders: Sequence[Encoder], key: Key
) -> tuple[Key, tuple[Any, ...]]:
    """The image of ``key`` when it was given in another spelling than the driver's (a typed date)."""
    wanted = row_text(encoders, key)
    for stored, image in found.items():
        if row_text(encoders, stored) == wanted:
            return image
    raise ErpSyncError(  # pragma: no cover - the rows were just read under these keys
        "row {key} of a synced table vanished during the sync", "run the sync again", key=key
    )


def save_receipt(
    node: Node, conn: Connection, batch: Batch, table: SyncTable, receipt: Receipt, hi: int
) -> None:
    """Store a batch's receipt and count it in the sync's history (in the batch's transaction).

    The batch of a sync run by the peer creates that sync's record here.
    """
    history, receipts = node.meta[HISTORY], node.meta[RECEIPTS]
    if receipt.entries:
        conn.execute(
            insert(receipts).values(
                sync_id=batch.sync_id, tbl=table.number, lo=receipt.lo, hi=hi, data=receipt.data()
            )
        )
    now = now_ms()
    counted = conn.execute(
        update(history)
        .where(history.c.sync_id == batch.sync_id)
        .values(
            received=history.c.received + len(batch.rows),
            changed=history.c.changed + receipt.changed,
            finished=now,
        )
    )
    if counted.rowcount == 0:
        conn.execute(
            insert(history).values(
                sync_id=batch.sync_id,
                peer=batch.source,
                peer_name=batch.names.get(batch.source),
                direction=REMOTE,
                started=now,
                finished=now,
                received=len(batch.rows),
                sent=0,
                changed=receipt.changed,
                conflicts=0,
                result=OK,
            )
        )
        prune(node, conn)


@dataclass(slots=True)
class Entry:
    """One row of a stored receipt."""

    tbl: int
    lo: int
    hi: int
    gid: str
    kind: str
    before_seq: int
    key: tuple[Any, ...] | None = None
    values: tuple[Any, ...] | None = None


def read_receipts(node: Node, conn: Connection, sync_id: str) -> list[Entry]:
    """The entries of a sync's receipts, in the order they were applied."""
    receipts = node.meta[RECEIPTS]
    found = conn.execute(select(receipts).where(receipts.c.sync_id == sync_id).order_by(receipts.c.no)).all()
    return [entry for row in found for entry in _entries(row)]


def first_receipt(node: Node, conn: Connection, sync_id: str) -> int | None:
    """The number of a sync's first receipt."""
    receipts = node.meta[RECEIPTS]
    found = conn.execute(
        select(receipts.c.no).where(receipts.c.sync_id == sync_id).order_by(receipts.c.no).limit(1)
    ).scalar()
    return None if found is None else int(found)


def receipts_after(node: Node, conn: Connection, first: int, sync_id: str) -> list[Entry]:
    """The entries of the receipts of other syncs (and undos) kept since receipt ``first``."""
    receipts = node.meta[RECEIPTS]
    found = conn.execute(
        select(receipts).where(receipts.c.no > first, receipts.c.sync_id != sync_id).order_by(receipts.c.no)
    ).all()
    return [entry for row in found for entry in _entries(row)]


def _entries(row: Any) -> list[Entry]:
    try:
        data = json.loads(zlib.decompress(row.data))  # not orjson: old receipts hold untagged big integers
    except (zlib.error, ValueError) as exc:
        raise ErpSyncError(
            "a receipt of sync {id} is damaged: {reason}",
            "the sync cannot be undone; restore the backup taken before it",
            id=row.sync_id,
            reason=str(exc),
        ) from None
    tbl, lo, hi = int(row.tbl), int(row.lo), int(row.hi)
    out = [Entry(tbl, lo, hi, gid, ABSENT, 0) for gid in data["new"]]
    images = data["images"]
    for gid, kind, before_seq in data["rows"]:
        entry = Entry(tbl, lo, hi, gid, kind, int(before_seq))
        image = images.get(gid)
        if image is not None:
            entry.key = tuple(_decode(v) for v in image[0])
            entry.values = tuple(_decode(v) for v in image[1])
        out.append(entry)
    return out


def save_entries(
    node: Node, conn: Connection, sync_id: str, tbl: int, lo: int, hi: int, rows: list[list[Any]]
) -> None:
    """Store entries written directly (an undo's ``RESTORED`` rows)."""
    if rows:
        data = _compressed({"new": [], "rows": rows, "images": {}})
        conn.execute(insert(node.meta[RECEIPTS]).values(sync_id=sync_id, tbl=tbl, lo=lo, hi=hi, data=data))

"""Changes as they travel between nodes: batches of row states, read after a cursor.

A batch holds the *current state* of rows of one table that changed after
the receiver's cursor: rows are read when sent, so ten edits of a row travel
once. Each row carries its global id, its values (a column that references a
surrogate-key table carries the referenced row's global id, not a local id),
the clock of each column and, for deleted rows, the tombstone's clock.

Two streams per table: rows present (sent parents first) and tombstones (sent
children first), so every batch can apply in one transaction with foreign keys
checked. Each stream has its own cursor: the sender's change sequence up to
which the receiver has applied that table's stream.

Batches are plain data: ``to_json`` / ``from_json`` carry them over HTTP, SSH
or a shared folder.
"""

from __future__ import annotations

import base64
import gc
import json
import math
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import orjson
from sqlalchemy import and_, or_, select, text
from sqlalchemy.sql.elements import ColumnElement

from erpsync.dialects.base import fetch_columns
from erpsync.sync.capture import fold
from erpsync.sync.hlc import Stamp
from erpsync.sync.meta import NODE, shadow_name
from erpsync.sync.model import SyncTable, dependency_order, parents_of
from erpsync.sync.node import Node
from erpsync.sync.policies import parse_versions

ALIVE, GONE = 0, 1
"""The two streams: rows present, and tombstones."""
STREAMS = (ALIVE, GONE)
BATCH_ROWS = 10_000
"""Rows a batch: one transaction and one request each; fewer, larger batches spare a PC's disk its
flushes and a link to the online server its round trips."""

Cursors = dict[tuple[str, int], int]
"""(table, stream) → the sender's change sequence applied up to."""


def clock_slots(width: int) -> int:
    """How many clocks a row of ``width`` non-key columns has: one a column, and a row whose
    columns are all in its key (a link table's) one, the clock of its own write."""
    return width or 1


@dataclass(slots=True)
class RowChange:
    """One row's state as a node sends it."""

    gid: str
    key: tuple[Any, ...] | None
    """The sender's primary key: the row's identity for a natural key, a hint for a surrogate one."""
    values: tuple[Any, ...] | None
    """In the batch's column order; ``None`` for a tombstone."""
    clocks: tuple[Stamp, ...] | None
    """One per column (``clock_slots``)."""
    deleted: Stamp | None = None
    """The largest delete seen for this row (kept even when a later write revived it)."""
    seen: int | None = None
    """For a tombstone: the largest write clock the deleting node had seen."""
    versions: dict[str, int] | None = None
    """The row's version vector when it says more than the clocks (see ``policies.compare``)."""

    @property
    def alive(self) -> bool:
        """Whether the row exists (not a tombstone)."""
        return self.values is not None

    def last_write(self) -> int:
        """The clock of the row's latest write."""
        return max((c.hlc for c in self.clocks or ()), default=0)


@dataclass
class Batch:
    """Rows of one table and stream, applied in one transaction, identified for idempotence."""

    batch_id: str
    source: str
    """The node id of the sender."""
    table: str
    stream: int
    columns: tuple[str, ...]
    rows: list[RowChange]
    since: int
    upto: int
    """The receiver's cursor for this table and stream once the batch is applied."""
    names: dict[str, str] = field(default_factory=dict)
    """Node names by node id, for messages."""
    sync_id: str = ""
    """The sync it belongs to, set by the session: the receiver keeps what the batch changes
    under this id in its history, so the sync can be undone there (empty: not recorded)."""


def plan(node: Node, since: Cursors, upto: int, for_node: str | None = None) -> list[tuple[str, int, int]]:
    """(table, stream, rows to send) for every stream whose cursor is behind ``upto``.

    Rows present go parents first, tombstones children first; rows whose state
    came from ``for_node`` are not counted (they are not sent back). Needs no
    reflection: a sync with little to do stays cheap.
    """
    order = dependency_order({name.lower(): parents_of(settings.shape) for _, name, _, settings in node.rows})
    numbers = {name.lower(): number for number, name, _, _ in node.rows}
    out = []
    with node.db.connect() as conn:
        skip = next((no for no, nid in node.peer_ids(conn).items() if nid == for_node), -1)
        for stream in STREAMS:
            for key in order if stream == ALIVE else list(reversed(order)):
                start = since.get((key, stream), 0)
                if start >= upto:
                    continue
                count = conn.execute(
                    text(
                        f"SELECT COUNT(*) FROM {node.db.quote(shadow_name(numbers[key]))} "
                        "WHERE deleted = :d AND seq > :a AND seq <= :b AND (src IS NULL OR src <> :p)"
                    ),
                    {"d": stream, "a": start, "b": upto, "p": skip},
                ).scalar_one()
                out.append((key, stream, int(count)))
    return out


def current_seq(node: Node) -> int:
    """Fold the capture logs, then return the node's change sequence (the snapshot to send up to)."""
    with node.write() as conn:
        state = node.lock(conn)
        if fold(node, conn, state):
            node.save(conn, state)
    with node.db.connect() as conn:
        return int(conn.execute(select(node.meta[NODE].c.seq)).scalar_one())


def read_changes(
    node: Node,
    table: SyncTable,
    stream: int,
    since: int,
    upto: int,
    for_node: str | None,
    batch_rows: int = BATCH_ROWS,
) -> Generator[Batch, None, None]:
    """The batches of one table and stream between ``since`` and ``upto``.

    Rows whose state came entirely from ``for_node`` are not sent back to it.
    Each batch is read in a short transaction of its own (keyset pagination on
    the change sequence), so a long sync never holds a lock on the sender. The
    generator keeps no reference to a batch it gave: the receiver's is the only
    one (see ``wire.batch_lines``).
    """
    start = since
    while start < upto:
        read = [_read_batch(node, table, stream, start, upto, for_node, batch_rows)]
        start = read[0].upto
        yield read.pop()


def _read_batch(
    node: Node, table: SyncTable, stream: int, start: int, upto: int, for_node: str | None, batch_rows: int
) -> Batch:
    """The batch of ``read_changes`` that starts after ``start``."""
    with node.db.connect() as conn, no_cycle_collection():
        ids = node.peer_ids(conn)
        skip = next((no for no, nid in ids.items() if nid == for_node), None)
        columns = fetch_columns(conn, _query(table, stream, start, upto, skip, batch_rows))
        seqs = columns["seq"]
        last = seqs[-1] if len(seqs) == batch_rows else upto
        changes = _changes(table, columns, ids, stream)
    return Batch(
        batch_id=f"{node.node_id}:{table.key}:{stream}:{start}:{last}",
        source=node.node_id,
        table=table.key,
        stream=stream,
        columns=tuple(c.key for c in table.columns),
        rows=changes,
        since=start,
        upto=last,
        names={node.node_id: node.name},
    )


def fetch_rows(node: Node, table: SyncTable, gids: list[str]) -> Batch:
    """The current state of the rows ``gids`` (present or tombstones), for a receiver missing them."""
    with node.db.connect() as conn:
        ids = node.peer_ids(conn)
        s = table.shadow
        columns = fetch_columns(conn, _query(table, None, 0, 0, None, None).where(s.c.gid.in_(gids)))
    changes = _changes(table, columns, ids, None)
    return Batch(
        batch_id="",
        source=node.node_id,
        table=table.key,
        stream=ALIVE,
        columns=tuple(c.key for c in table.columns),
        rows=changes,
        since=0,
        upto=0,
        names={node.node_id: node.name},
    )


_SENT = ("gid", "seq", "deleted", "bh", "bn", "dh", "dn", "ds", "vv")
"""The columns of a shadow row read to send it (with its columns' clocks)."""


def _query(
    table: SyncTable, stream: int | None, start: int, upto: int, skip: int | None, limit: int | None
) -> Any:
    s, app = table.shadow, table.app
    on = and_(*[app.c[k.name] == s.c[f"k{i}"] for i, k in enumerate(table.keys)])
    joined = s.outerjoin(app, on)
    columns: list[Any] = [s.c[name] for name in _SENT]  # not the local key nor the source: not sent
    columns += [s.c[f"{kind}{i}"] for i in range(len(table.columns)) for kind in "cn"]
    columns += [app.c[k.name].label(f"a_k{i}") for i, k in enumerate(table.keys)]
    for i, referenced in table.key_refs:  # a key column referencing a synced row travels as its gid
        alias = referenced.shadow.alias(f"q{i}")
        joined = joined.outerjoin(alias, alias.c.k0 == app.c[table.keys[i].name])
        columns.append(alias.c.gid.label(f"a_g{i}"))
    for i, column in enumerate(table.columns):
        if column.ref is not None:
            parent = table.parents[column.ref].shadow.alias(f"p{i}")
            joined = joined.outerjoin(parent, parent.c.k0 == app.c[column.name])
            columns += [app.c[column.name].label(f"v{i}"), parent.c.gid.label(f"g{i}")]
        else:
            columns.append(app.c[column.name].label(f"v{i}"))
    query = select(*columns).select_from(joined)
    conditions: list[ColumnElement[bool]] = []
    if stream is not None:
        conditions += [s.c.deleted == stream, s.c.seq > start, s.c.seq <= upto]
    if skip is not None:
        conditions.append(or_(s.c.src.is_(None), s.c.src != skip))
    query = query.where(*conditions).order_by(s.c.seq)
    return query.limit(limit) if limit else query


def _changes(
    table: SyncTable, columns: dict[str, Sequence[Any]], ids: dict[int, str], stream: int | None
) -> list[RowChange]:
    """The ``RowChange``s of the result of ``_query``, built column by column (the hot loop of a send).

    ``stream`` is the stream read (``None``: each row's own, as ``fetch_rows``
    reads both). A row present is left out when its key or a reference names a
    row not folded yet (it goes once it is) or it was deleted since the last
    fold (its tombstone goes next time).
    """
    gids = columns["gid"]
    n, width = len(gids), len(table.columns)
    deleted = _stamps(columns["dh"], columns["dn"], ids, None)
    gone = [stream == GONE] * n if stream is not None else [bool(d) for d in columns["deleted"]]
    keys = list(
        zip(*[columns[f"a_g{i}" if k.ref else f"a_k{i}"] for i, k in enumerate(table.keys)], strict=True)
    )
    # a reference travels as the global id of the row it names
    values = list(
        zip(*[columns[f"g{i}" if c.ref else f"v{i}"] for i, c in enumerate(table.columns)], strict=True)
    )
    base = _stamps(columns["bh"], columns["bn"], ids, _NO_CLOCK)
    slots = clock_slots(width)
    clocks = [(b,) * slots for b in base]
    stamped = [
        (i, _stamps(columns[f"c{i}"], columns[f"n{i}"], ids, None))
        for i in range(width)
        if columns[f"c{i}"].count(None) < n  # a column written since the row was
    ]
    for j in sorted({j for _, column in stamped for j, stamp in enumerate(column) if stamp is not None}):
        own = {i: column[j] for i, column in stamped}
        clocks[j] = tuple(own.get(i) or base[j] for i in range(width))
    left_out = [None in key for key in keys]
    for i, spec in enumerate(table.columns):
        if spec.ref is not None:  # references a row not folded yet
            named = zip(columns[f"v{i}"], columns[f"g{i}"], strict=True)
            left_out = [
                out or (v is not None and g is None) for out, (v, g) in zip(left_out, named, strict=True)
            ]
    vv = columns["vv"]
    versions = [None] * n if vv.count(None) == n else [parse_versions(v, ids) if v else None for v in vv]
    seen = columns["ds"]
    return [
        RowChange(gid, None, None, None, tombstone, ds)
        if is_gone
        else RowChange(gid, key, row, clock, tombstone, None, version)
        for gid, is_gone, out, key, row, clock, tombstone, ds, version in zip(
            gids, gone, left_out, keys, values or [()] * n, clocks, deleted, seen, versions, strict=True
        )
        if is_gone or not out
    ]


def _stamps(
    hlcs: Sequence[Any], numbers: Sequence[Any], ids: dict[int, str], missing: Stamp | None
) -> list[Any]:
    """A column of clocks (``missing`` where there is none)."""
    if hlcs.count(None) == len(hlcs):
        return [missing] * len(hlcs)
    return [missing if h is None else Stamp(h, ids[k]) for h, k in zip(hlcs, numbers, strict=True)]


_NO_CLOCK = Stamp(0, "")
"""The clock of a row present before its node was set up."""


# -- JSON, for transports ------------------------------------------------------------------------
#
# A batch is one JSON object holding its rows column by column: ``gids`` (one per row), then
# ``keys``, ``values``, ``clocks``, ``deleted``, ``seen`` and ``versions``, each a *part*: the
# rows that have the field (``at``: their positions, ``null`` when every row has it) and their
# contents. Keys and values are columns; a column of JSON's own types travels as it is; a column
# of decimals, dates, times, bytes, non-finite floats or integers beyond 64 bits as one-key
# objects, ``{"$d": ["8.00", null, ...]}`` when all its values are of one such type, else value by
# value (``{"$d": "8.00"}``), so everything comes back exact. Clocks are ``hlc`` and ``node``
# columns, one clock for a row whose columns all share it (a row written once: most rows), else
# ``null`` there and the row's clocks, one ``[hlc, node]`` per column, in ``mixed``; nodes are
# indexes into ``nodes``. Column by column, a batch costs little Python code per value either
# way, and no row is taken apart and put together again.

_NATIVE = frozenset({str, int, bool, type(None)})
"""Types JSON carries exactly as they are (integers within 64 bits, checked apart)."""
_INT_LOW, _INT_HIGH = -(2**63), 2**64
"""Integers orjson reads back exactly; others are tagged (orjson would read them as floats)."""


def _b64(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode()


_TAGS: dict[type, tuple[str, Callable[[Any], str]]] = {
    Decimal: ("$d", str),
    datetime: ("$dt", datetime.isoformat),
    date: ("$date", date.isoformat),
    time: ("$t", time.isoformat),
    bytes: ("$b", _b64),
    bytearray: ("$b", _b64),
    memoryview: ("$b", _b64),
    float: ("$f", repr),
    int: ("$i", str),
    timedelta: ("$td", lambda v: str(v // timedelta(microseconds=1))),  # MariaDB's TIME
}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "$d": Decimal,
    "$dt": datetime.fromisoformat,
    "$date": date.fromisoformat,
    "$t": time.fromisoformat,
    "$b": base64.b64decode,
    "$f": float,
    "$i": int,
    "$td": lambda text: timedelta(microseconds=int(text)),
}


def _encode(value: Any) -> Any:
    """One value as JSON carries it: as is, or tagged."""
    kind = type(value)
    if kind in _NATIVE:
        if kind is int and not _INT_LOW <= value < _INT_HIGH:
            return {"$i": str(value)}
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$f": repr(value)}
    for cls in (Decimal, datetime, date, time, timedelta, bytes, bytearray, memoryview):  # subclasses too
        if isinstance(value, cls):
            tag, spell = _TAGS[cls]
            return {tag: spell(value)}
    return value


def _decode(value: Any) -> Any:
    if type(value) is not dict:
        return value
    ((tag, text),) = value.items()
    return _DECODERS[tag](text)


def _encode_column(column: Sequence[Any]) -> Sequence[Any]:
    """The values of one column as JSON carries them; untouched when none needs a tag."""
    kinds = set(map(type, column))
    if kinds <= _NATIVE | {float}:
        ints = [v for v in column if type(v) is int] if int in kinds else ()
        if (not ints or (min(ints) >= _INT_LOW and max(ints) < _INT_HIGH)) and (
            float not in kinds or all(math.isfinite(v) for v in column if type(v) is float)
        ):
            return column
    kinds.discard(type(None))
    if len(kinds) == 1 and (kind := next(iter(kinds))) in _TAGS and kind not in (int, float):
        tag, spell = _TAGS[kind]
        return [None if v is None else {tag: spell(v)} for v in column]
    return [_encode(v) for v in column]


def _decode_column(column: Sequence[Any]) -> Sequence[Any]:
    return [_decode(v) for v in column] if dict in set(map(type, column)) else column


def encode_rows(rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """Rows of one table's values as JSON carries them, value by value, encoded column by column."""
    if not rows or not rows[0]:
        return [() for _ in rows]
    return list(zip(*[_encode_column(c) for c in zip(*rows, strict=True)], strict=True))


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause the cycle collector while a batch is read, encoded, decoded or applied.

    A batch is tens of thousands of lists, tuples and dicts, none in a cycle;
    each 700 allocations would otherwise start a collection that walks the
    young objects and, now and then, the whole heap (a server's is a million
    objects): half the time of ``from_json``, a third of reading a batch and a
    sixth of applying one. Threads pausing it together leave it on when the
    first one that found it on is done.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def dumps(document: dict[str, Any]) -> bytes:
    """JSON as UTF-8, by orjson where it can (bytes: what a stream, a file or zlib takes)."""
    try:
        return orjson.dumps(document)
    except TypeError:  # what orjson does not write (lone surrogates): the standard library does
        return json.dumps(document, separators=(",", ":")).encode()


def loads(text: str | bytes) -> Any:
    """A JSON document, by orjson where it can."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # lone surrogates: read, for the receiver's checks to refuse
        return json.loads(text)


def to_json(batch: Batch) -> bytes:
    """A batch as JSON (decimals, dates and bytes tagged so they come back exact)."""
    with no_cycle_collection():
        return dumps(_document(batch))


def _document(batch: Batch) -> dict[str, Any]:
    nodes: dict[str, int] = {}
    width = len(batch.columns)

    def node(n: str) -> int:
        return nodes.setdefault(n, len(nodes))

    hlcs: list[int | None] = []
    numbers: list[int | None] = []
    mixed: list[list[list[int]]] = []
    at, clocks = _part([r.clocks for r in batch.rows])
    for c in clocks:
        first = c[0] if c else None
        if first is not None and len(c) == width and c.count(first) == width:
            hlcs.append(first.hlc)
            numbers.append(node(first.node))
        else:
            hlcs.append(None)
            numbers.append(None)
            mixed.append([[s.hlc, node(s.node)] for s in c])
    deleted_at, deleted = _part([r.deleted for r in batch.rows])
    seen_at, seen = _part([r.seen for r in batch.rows])
    versions_at, versions = _part([r.versions for r in batch.rows])
    return {
        "id": batch.batch_id,
        "source": batch.source,
        "table": batch.table,
        "stream": batch.stream,
        "columns": list(batch.columns),
        "since": batch.since,
        "upto": batch.upto,
        "names": batch.names,
        "sync": batch.sync_id,
        "gids": [r.gid for r in batch.rows],
        "keys": _columns([r.key for r in batch.rows]),
        "values": _columns([r.values for r in batch.rows]),
        "clocks": {"at": at, "hlc": hlcs, "node": numbers, "mixed": mixed},
        "deleted": {
            "at": deleted_at,
            "hlc": [d.hlc for d in deleted],
            "node": [node(d.node) for d in deleted],
        },
        "seen": {"at": seen_at, "items": seen},
        "versions": {"at": versions_at, "items": [{str(node(n)): h for n, h in v.items()} for v in versions]},
        "nodes": list(nodes),
    }


def _part(items: list[Any]) -> tuple[list[int] | None, list[Any]]:
    """The items that are not ``None``, and their positions (``None``: every item is there)."""
    present = [item for item in items if item is not None]
    if len(present) == len(items):
        return None, present
    return [i for i, item in enumerate(items) if item is not None], present


def _columns(tuples: list[tuple[Any, ...] | None]) -> dict[str, Any]:
    """A part of keys or values: the rows that have them, column by column."""
    at, present = _part(tuples)
    return {"at": at, "columns": [_wire_column(c) for c in zip(*present, strict=True)]}


def _wire_column(column: Sequence[Any]) -> Any:
    """A column as JSON carries it: one tag for the whole column when it needs one."""
    kinds = set(map(type, column)) - {type(None)}
    if len(kinds) == 1 and (kind := next(iter(kinds))) in _TAGS and kind not in (int, float):
        tag, spell = _TAGS[kind]
        return {tag: [None if v is None else spell(v) for v in column]}
    return _encode_column(column)


def from_json(text: str | bytes) -> Batch:
    """A batch read back from ``to_json`` (a malformed one raises ValueError, KeyError, TypeError…)."""
    with no_cycle_collection():
        return batch_of(loads(text))


def batch_of(data: Any) -> Batch:
    """The batch a JSON document read by ``loads`` holds (a malformed one raises, as ``from_json``)."""
    nodes = data["nodes"]
    width = len(data["columns"])
    gids = data["gids"]
    n = len(gids)
    clocks = data["clocks"]
    if len(clocks["mixed"]) != clocks["hlc"].count(None):
        raise ValueError("one list of mixed clocks is needed for each row without one clock")
    mixed = iter(clocks["mixed"])
    stamps: list[tuple[Stamp, ...]] = [
        (Stamp(h, nodes[number]),) * width
        if h is not None
        else tuple([Stamp(hlc, nodes[number]) for hlc, number in next(mixed)])
        for h, number in zip(clocks["hlc"], clocks["node"], strict=True)
    ]
    deleted = data["deleted"]
    versions = data["versions"]
    rows = list(
        map(
            RowChange,
            gids,
            _rows(data["keys"], n),
            _rows(data["values"], n),
            _spread(clocks["at"], stamps, n),
            _spread(
                deleted["at"],
                [Stamp(h, nodes[number]) for h, number in zip(deleted["hlc"], deleted["node"], strict=True)],
                n,
            ),
            _spread(data["seen"]["at"], data["seen"]["items"], n),
            _spread(versions["at"], [{nodes[int(k)]: h for k, h in v.items()} for v in versions["items"]], n),
        )
    )
    return Batch(
        batch_id=data["id"],
        source=data["source"],
        table=data["table"],
        stream=data["stream"],
        columns=tuple(data["columns"]),
        rows=rows,
        since=data["since"],
        upto=data["upto"],
        names=data.get("names", {}),
        sync_id=data.get("sync", ""),
    )


def _spread(at: list[int] | None, items: list[Any], n: int) -> list[Any]:
    """The inverse of ``_part``: ``n`` items, ``None`` where a row has none."""
    if at is None:
        if len(items) != n:
            raise ValueError(f"{len(items)} items for {n} rows")
        return items
    if any(type(i) is not int for i in at) or any(a >= b for a, b in pairwise(at)) or (at and at[0] < 0):
        raise ValueError("positions must be increasing row numbers")
    out: list[Any] = [None] * n
    for i, item in zip(at, items, strict=True):
        out[i] = item
    return out


def _rows(part: dict[str, Any], n: int) -> list[tuple[Any, ...] | None]:
    """A part of keys or values back as one tuple per row (``None`` where a row has none)."""
    at, columns = part["at"], part["columns"]
    count = n if at is None else len(at)
    decoded = [_unwire_column(c) for c in columns]
    tuples = list(zip(*decoded, strict=True)) if decoded else [()] * count
    if len(tuples) != count:
        raise ValueError(f"{len(tuples)} rows of values for {count}")
    return _spread(at, tuples, n)


def _unwire_column(column: Any) -> Sequence[Any]:
    if type(column) is dict:
        ((tag, texts),) = column.items()
        if type(texts) is not list:
            raise ValueError(f"{tag} needs a list of values")
        decode = _DECODERS[tag]
        return [None if v is None else decode(v) for v in texts]
    if type(column) is not list:
        raise ValueError("a column must be a list")
    return _decode_column(column)

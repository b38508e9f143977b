"""Folding the capture log into row identities and per-column clocks.

The triggers only append (key, column mask, wall clock) to ``erpsync_l<n>``:
that keeps every write of the ERP cheap. Before sync reads or applies changes
it folds the log, in key order of arrival: new rows get a global id, updated
columns get a clock, deleted rows become tombstones, and each row touched gets
a new change sequence number (what peers' cursors follow). The row's current
state is what counts, so a row inserted and deleted between two syncs leaves
nothing, and ten edits of a row travel once.

Clocks are assigned here rather than in the triggers: the node's clock only
moves forward when sync applies remote changes, and sync always folds first,
so each log entry gets ``max(its wall clock, previous clock + 1)`` exactly as
if the trigger had computed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.sql.elements import ColumnElement

from erpsync.sync.encoding import encoder, natural_gid, row_text
from erpsync.sync.model import SyncTable
from erpsync.sync.node import SELF, Node, NodeState

CHUNK = 5000
"""Log entries folded per round (memory stays bounded whatever the log holds)."""
IN_LIMIT = 1000
"""Keys per ``IN (…)`` list."""
INSERTED, DELETED = -1, -2
ALL_REST = 62
"""Mask bit 62 stands for every column from the 63rd on."""

Key = tuple[Any, ...]


@dataclass
class _Entry:
    """What the log says happened to one key in a round."""

    inserted: int | None = None
    deleted: int | None = None
    reinserted: bool = False
    columns: dict[int, int] = field(default_factory=dict)


def fold(node: Node, conn: Connection, state: NodeState, tables: Sequence[SyncTable] | None = None) -> int:
    """Fold the capture logs of ``tables`` (default: all); return the rows changed."""
    changed = 0
    chosen = list(tables if tables is not None else node.tables(conn))
    if not pending(node, conn, chosen):
        return 0
    for table in chosen:
        while True:
            log = table.log
            rows = conn.execute(
                select(log.c.seq, log.c.m, log.c.w, *[log.c[f"k{i}"] for i in range(len(table.keys))])
                .order_by(log.c.seq)
                .limit(CHUNK)
            ).all()
            if not rows:
                break
            changed += _fold_round(node, conn, state, table, rows)
            seqs = [r[0] for r in rows]
            if seqs[-1] - seqs[0] + 1 == len(seqs):
                conn.execute(delete(log).where(log.c.seq.between(seqs[0], seqs[-1])))
            else:
                for part in _chunks(seqs, IN_LIMIT):
                    conn.execute(delete(log).where(log.c.seq.in_(part)))
            if len(rows) < CHUNK:
                break
    return changed


def pending(node: Node, conn: Connection, tables: Sequence[SyncTable] | None = None) -> bool:
    """Whether any capture log holds entries not folded yet (one query for all logs)."""
    logs = [t.log for t in (tables if tables is not None else node.tables(conn))]
    if not logs:
        return False
    probes = ", ".join(f"EXISTS (SELECT 1 FROM {node.db.quote(log.name)})" for log in logs)
    return any(conn.exec_driver_sql(f"SELECT {probes}").one())


def _fold_round(node: Node, conn: Connection, state: NodeState, table: SyncTable, rows: Sequence[Any]) -> int:
    width = len(table.columns)
    entries: dict[Key, _Entry] = {}
    clock = state.hlc
    for row in rows:
        mask, wall, key = row[1], row[2], tuple(row[3:])
        clock = max(wall << 16, clock + 1)
        entry = entries.setdefault(key, _Entry())
        if mask == DELETED:
            entry.deleted = clock
        elif mask == INSERTED:
            entry.reinserted = entry.reinserted or entry.deleted is not None
            entry.inserted = clock
            entry.columns.clear()
        else:
            for i in _bits(mask, width):
                entry.columns[i] = clock
    state.see(clock)
    keys = list(entries)
    present = _present(conn, table, keys)
    shadows = _shadows(conn, table, keys)
    new_rows: list[dict[str, Any]] = []
    tombstones: list[dict[str, Any]] = []
    updates: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    fresh = [k for k in keys if k in present and (k not in shadows or entries[k].reinserted)]
    natural = {} if table.surrogate else natural_gids(conn, table, fresh)
    for key, entry in entries.items():
        shadow = shadows.get(key)
        exists = key in present
        if shadow is not None and (not exists or entry.reinserted):
            last_write = max([shadow["bh"] or 0, *[shadow[f"c{i}"] or 0 for i in range(width)]])
            gone = {"b_gid": shadow["gid"], "dh": entry.deleted or clock, "ds": last_write}
            tombstones.append({**gone, "seq": state.next_seq()})
            shadow = None
        if not exists:
            continue
        if shadow is None:
            gid = f"{node.prefix}{_next_gid(state):016x}" if table.surrogate else natural.get(key)
            if gid is None:
                continue  # references a row sync does not know (a foreign key not enforced)
            first = entry.inserted or max(entry.columns.values(), default=clock)
            row = {"gid": gid, "seq": state.next_seq(), "deleted": 0, "bh": first, "bn": SELF}
            row.update({f"k{i}": v for i, v in enumerate(key)})
            row.update({f"c{i}": c for i, c in entry.columns.items()})
            row.update({f"n{i}": SELF for i in entry.columns})
            new_rows.append(row)
            continue
        columns = dict.fromkeys(range(width), entry.inserted) if entry.inserted else {}
        columns.update(entry.columns)
        if not columns:
            continue  # an UPDATE that changed nothing
        slots = tuple(sorted(columns))
        values: dict[str, Any] = {"b_gid": shadow["gid"], "seq": state.next_seq()}
        values.update({f"c{i}": columns[i] for i in slots})
        values.update({f"n{i}": SELF for i in slots})
        versions = _versions_after(shadow, columns, width)
        if versions is not None:
            values["vv"] = versions
        updates.setdefault((*slots, -1 if versions is not None else 0), []).append(values)
    shadow_t = table.shadow
    if tombstones:
        cleared = {f"{p}{i}": None for i in range(width) for p in "cn"}
        conn.execute(
            update(shadow_t)
            .where(shadow_t.c.gid == bindparam("b_gid"))
            .values(deleted=1, dn=SELF, src=None, vv=None, bh=None, bn=None, **cleared, **_nulls(table)),
            tombstones,
        )
    if new_rows:
        if not table.surrogate:  # a natural key deleted earlier comes back under its global id
            for part in _chunks([r["gid"] for r in new_rows], IN_LIMIT):
                conn.execute(delete(shadow_t).where(shadow_t.c.gid.in_(part)))
        for group in same_keys(new_rows):
            conn.execute(insert(shadow_t), group)
    for group in updates.values():
        conn.execute(update(shadow_t).where(shadow_t.c.gid == bindparam("b_gid")).values(src=None), group)
    return len(tombstones) + len(new_rows) + sum(len(g) for g in updates.values())


def _versions_after(shadow: Any, columns: dict[int, int], width: int) -> str | None:
    """The version vector to store after local writes to ``columns``, or ``None`` if implied.

    The writes the row had seen stay seen even when a local edit overwrites
    them: another node holding one of them must not take it for concurrent.
    """

    def stamps(row: dict[str, Any]) -> dict[int, int]:
        out: dict[int, int] = {}
        base = (row["bn"], row["bh"])
        for i in range(width):
            number, clock = (row[f"n{i}"], row[f"c{i}"]) if row[f"c{i}"] is not None else base
            if number is not None and clock is not None and clock > out.get(number, 0):
                out[number] = clock
        return out

    before: dict[int, int] = stamps(dict(shadow))
    if shadow["vv"]:
        for part in shadow["vv"].split(","):
            number, _, clock = part.partition(":")
            before[int(number)] = max(before.get(int(number), 0), int(clock))
    after_row = dict(shadow)
    for i, clock in columns.items():
        after_row[f"c{i}"], after_row[f"n{i}"] = clock, SELF
    after = stamps(after_row)
    full = dict(after)
    for number, clock in before.items():
        full[number] = max(full.get(number, 0), clock)
    if full == after:
        return None
    return ",".join(f"{n}:{c}" for n, c in sorted(full.items()))


def natural_gids(conn: Connection, table: SyncTable, keys: Sequence[Key]) -> dict[Key, str]:
    """The global ids of rows of a natural-key table, by local key: derived from the key.

    A key column that references another synced table counts as that row's
    global id, the same on every node; a key whose referenced row has none
    (it references no row sync knows) is left out.
    """
    texts = [encoder(k.type) for k in table.keys]
    wire = {key: list(key) for key in keys}
    for i, parent in table.key_refs:
        texts[i] = str
        gids = gids_of(conn, parent, {key[i] for key in keys})
        for key, values in wire.items():
            values[i] = gids.get(key[i])
    return {
        key: natural_gid(table.key, row_text(texts, values))
        for key, values in wire.items()
        if all(values[i] is not None for i, _ in table.key_refs)
    }


def gids_of(conn: Connection, table: SyncTable, keys: Iterable[Any]) -> dict[Any, str]:
    """Global ids of present rows of ``table`` by their (single-column) local key."""
    s = table.shadow
    found: dict[Any, str] = {}
    for part in _chunks(list(keys), IN_LIMIT):
        for gid, key in conn.execute(select(s.c.gid, s.c.k0).where(s.c.k0.in_(part))):
            found[key] = gid
    return found


def _next_gid(state: NodeState) -> int:
    state.gids += 1
    return state.gids


def _nulls(table: SyncTable) -> dict[str, None]:
    return {f"k{i}": None for i in range(len(table.keys))}


def _bits(mask: int, width: int) -> Iterable[int]:
    for i in range(min(width, ALL_REST)):
        if mask >> i & 1:
            yield i
    if width > ALL_REST and mask >> ALL_REST & 1:
        yield from range(ALL_REST, width)


def values_at(keys: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """The values of a row at ``keys`` (positions, or names of a mapping), as a tuple, in C
    (``itemgetter`` gives a bare value for one key)."""
    if len(keys) > 1:
        return itemgetter(*keys)
    if keys:
        (key,) = keys
        return lambda row: (row[key],)
    return lambda row: ()


def same_keys(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``rows`` grouped by the columns they hold, one statement per group."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return list(groups.values())


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def key_in(columns: Sequence[ColumnElement[Any]], keys: Sequence[Key]) -> ColumnElement[bool]:
    """``(columns) IN keys``, written as a plain ``IN`` for one column."""
    if len(columns) == 1:
        return columns[0].in_([k[0] for k in keys])
    return tuple_(*columns).in_(keys)


def _present(conn: Connection, table: SyncTable, keys: Sequence[Key]) -> set[Key]:
    columns = [table.app.c[k.name] for k in table.keys]
    found: set[Key] = set()
    for part in _chunks(keys, IN_LIMIT):
        found.update(tuple(r) for r in conn.execute(select(*columns).where(key_in(columns, part))))
    return found


def _shadows(conn: Connection, table: SyncTable, keys: Sequence[Key]) -> dict[Key, Any]:
    shadow = table.shadow
    columns = [shadow.c[f"k{i}"] for i in range(len(table.keys))]
    found: dict[Key, Any] = {}
    for part in _chunks(keys, IN_LIMIT):
        for row in conn.execute(select(shadow).where(key_in(columns, part))):
            mapping = row._mapping
            found[tuple(mapping[f"k{i}"] for i in range(len(columns)))] = mapping
    return found


def max_seq(conn: Connection, table: SyncTable) -> int:
    """The largest change sequence in ``table``'s row metadata."""
    return int(conn.execute(select(func.coalesce(func.max(table.shadow.c.seq), 0))).scalar_one())

"""Adoption: making a copy of a node a node itself, without duplicating every row.

The usual start: the online database began as a copy of one PC's database
(or two PCs hold copies of the same data). Initialising the copy as a new
node would give every row a new global id, and the first sync would insert
every row a second time. Adoption pairs the copy's rows with the peer's
instead, table by table, parents first, and gives each paired row the
peer's global id:

- ``pk``: rows with the same primary key are the same row;
- ``natural``: rows with the same business key (the table's first unique key
  other than the primary key) are the same row; in a table without one,
  rows whose values are all identical (references compared through the
  rows they point to) are the same row.

Paired rows with identical values take the peer's clocks: the first sync has
nothing to send for them. Paired rows that differ are settled by the policy:
``prefer-remote`` takes the peer's values now; ``manual`` and
``no-overwrite`` keep these values and record the difference; ``lww`` and
``prefer-local`` keep these values as the latest. Rows left unpaired on
either side are new rows: the first sync copies them across.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from erpsync.db import Database
from erpsync.errors import ErpSyncError
from erpsync.sync import conflicts, fingerprint
from erpsync.sync.capture import Key, gids_of
from erpsync.sync.changeset import ALIVE, RowChange, read_changes
from erpsync.sync.encoding import encoder
from erpsync.sync.hlc import Stamp
from erpsync.sync.model import SyncTable
from erpsync.sync.node import Node, init_node, register_rows, uninstall_node
from erpsync.sync.peer import LocalPeer
from erpsync.sync.policies import LWW, MANUAL, NO_OVERWRITE, PREFER_REMOTE
from erpsync.sync.rows import TableRows

ProgressCallback = Callable[[str, int, int], None]


class AdoptionFailed(ErpSyncError):
    """The copy cannot be adopted from that peer."""


@dataclass
class AdoptResult:
    """What adoption did."""

    name: str
    peer: str
    paired: int = 0
    differing: int = 0
    own: int = 0
    """Rows of this node left unpaired: new rows the first sync sends."""


def adopt(
    db: Database,
    peer: Database | str,
    name: str | None,
    match_by: str = "pk",
    tables: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> AdoptResult:
    """Make ``db`` a node whose rows take the global ids of their copies on node ``peer``."""
    if match_by not in ("pk", "natural"):
        raise AdoptionFailed(
            "--match-by must be pk or natural, not {value}", "write --match-by pk", value=match_by
        )
    source = LocalPeer(peer)
    try:
        there = source.hello()
        init_node(db, name or f"{there.name}-copy", tables, exclude, register=False)
        local = LocalPeer(db, owned=False)
        here = local.hello()
        try:
            fingerprint.check(local.label, here, source.label, there)
        except ErpSyncError:
            uninstall_node(db)
            raise
        node = local.node
        result = AdoptResult(node.name, source.label)
        policies = {t.key: t.policy for t in node.tables()}
        for n, table in enumerate(node.tables()):
            if progress:
                progress("Pairing rows", n, len(node.tables()))
            _adopt_table(node, source, there.seq, table, match_by, policies.get(table.key, LWW), result)
        with node.write() as conn:
            state = node.lock(conn)
            for table in node.tables(conn):
                result.own += register_rows(node, conn, table, state)
            node.save(conn, state)
        return result
    finally:
        source.close()


def _adopt_table(
    node: Node,
    source: LocalPeer,
    upto: int,
    table: SyncTable,
    match_by: str,
    policy: str,
    result: AdoptResult,
) -> None:
    other = source.node.table(table.key)
    if not table.surrogate:
        return  # a natural key gives the same global id on both nodes already
    encoders = [str if c.ref is not None else encoder(c.type) for c in table.columns]
    unique = next((u for u in table.uniques if all(c in table._index for c in u)), None)
    slots = [table.index(c) for c in unique] if unique and match_by == "natural" else None
    with node.write() as conn:
        state = node.lock(conn)
        rows = TableRows(conn, node, table, state)
        index = _local_index(rows, encoders, slots) if match_by == "natural" else {}
        taken: set[Key] = set()
        for batch in read_changes(source.node, other, ALIVE, 0, upto, None):
            source_rows = [_reorder(batch.columns, table, r) for r in batch.rows]
            if match_by == "pk":
                keys = [r.key for r in source_rows if r.key is not None]
                present = rows.app_values([tuple(k) for k in keys])
                pairs = [
                    (r, tuple(r.key)) for r in source_rows if r.key is not None and tuple(r.key) in present
                ]
            else:
                present = {}
                pairs = []
                for r in source_rows:
                    key = index.get(_identity(r.values or (), encoders, slots))
                    if key is not None and key not in taken:
                        pairs.append((r, key))
                present = rows.app_values([k for _, k in pairs])
            _pair(rows, table, pairs, present, encoders, policy, result, taken)
        node.save(conn, state)


def _reorder(columns: Sequence[str], table: SyncTable, row: RowChange) -> RowChange:
    order = [list(columns).index(c.key) for c in table.columns]
    assert row.values is not None and row.clocks is not None
    return RowChange(
        row.gid,
        row.key,
        tuple(row.values[i] for i in order),
        tuple(row.clocks[i] for i in order),
        row.deleted,
        row.seen,
    )


def _identity(
    values: Sequence[Any], encoders: Sequence[Callable[[Any], str]], slots: list[int] | None
) -> str:
    chosen = slots if slots is not None else range(len(values))
    return "\x1f".join(encoders[i](values[i]) for i in chosen)


def _local_index(
    rows: TableRows, encoders: Sequence[Callable[[Any], str]], slots: list[int] | None
) -> dict[str, Key]:
    """Business key (or all values, references as global ids) → local key, for natural matching."""
    table = rows.table
    app = table.app
    from sqlalchemy import select

    query = select(*rows.key_columns, *[app.c[c.name] for c in table.columns])
    width = len(rows.key_columns)
    found = [(tuple(r[:width]), list(r[width:])) for r in rows.conn.execute(query)]
    for i, column in enumerate(table.columns):
        if column.ref is not None:
            gids = gids_of(rows.conn, table.parents[column.ref], {v[i] for _, v in found if v[i] is not None})
            for _, values in found:
                if values[i] is not None:
                    values[i] = gids.get(values[i], f"?{values[i]}")
    index: dict[str, Key] = {}
    for key, values in found:
        index.setdefault(_identity(values, encoders, slots), key)
    return index


def _pair(
    rows: TableRows,
    table: SyncTable,
    pairs: list[tuple[RowChange, Key]],
    present: dict[Key, tuple[Any, ...]],
    encoders: Sequence[Callable[[Any], str]],
    policy: str,
    result: AdoptResult,
    taken: set[Key],
) -> None:
    refs = {i: table.parents[c.ref] for i, c in enumerate(table.columns) if c.ref is not None}
    inserts = []
    for remote, key in pairs:
        if key in taken or key not in present:
            continue
        taken.add(key)
        assert remote.values is not None and remote.clocks is not None
        local = list(present[key])
        for i, parent in refs.items():
            if local[i] is not None:
                local[i] = gids_of(rows.conn, parent, [local[i]]).get(local[i])
        stamps: list[Stamp | None] = list(remote.clocks)
        differing = [i for i in range(len(local)) if encoders[i](local[i]) != encoders[i](remote.values[i])]
        if differing:
            result.differing += 1
            if policy == PREFER_REMOTE:
                values = {}
                for i in differing:
                    value = remote.values[i]
                    if i in refs and value is not None:
                        found = rows.keys_of(refs[i], [value]).get(value)
                        value = found[0] if found else None
                    values[table.columns[i].name] = value
                rows.update_app([(key, values)])
            else:
                for i in differing:
                    stamps[i] = None
                if policy in (MANUAL, NO_OVERWRITE):
                    inserts.append((remote, key, stamps, differing, local))
                    continue
        inserts.append((remote, key, stamps, [], local))
    shadow_rows = []
    for remote, key, stamps, _, _ in inserts:
        row = {"gid": remote.gid, **{f"k{i}": v for i, v in enumerate(key)}}
        row.update(rows.clock_values(stamps), seq=rows.state.next_seq(), deleted=0)
        shadow_rows.append(row)
        result.paired += 1
    rows.write_shadows(shadow_rows, [])
    for remote, _key, _stamps, differing, local in inserts:
        if differing:
            kind = conflicts.UPDATE if policy == MANUAL else conflicts.REVIEW
            conflicts.record_row(
                rows,
                remote,
                kind,
                policy,
                rows.number(remote.clocks[0].node if remote.clocks else ""),
                local=local,
                remote=list(remote.values or ()),
                columns=differing,
            )

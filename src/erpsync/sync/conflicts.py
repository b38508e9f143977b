"""Conflicts kept for a person, and how they are settled.

Kinds:

``update``
    both nodes changed the same columns of a row (``manual``): kept with the
    base, local and remote values; the local values stay until resolved;
``delete``
    one node deleted a row the other changed (``manual``);
``unique``
    two rows were given the same business number on two nodes (``manual``):
    the incoming row holds a new number meanwhile;
``review``
    under ``no-overwrite``, the peer's version of a row differs from this
    node's, which was kept (for review; resolve to take the peer's);
``restore``
    a delete was not applied because other rows still reference the row
    (recorded already resolved, for the record).

Resolving writes the chosen version as a new local edit with a new clock, so
it wins on every node at the next syncs; a node that had queued the same
conflict closes it when the winning version reaches it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from erpsync.db import Database
from erpsync.errors import ErpSyncError, InvalidArgument
from erpsync.sync.changeset import RowChange, _decode, _encode
from erpsync.sync.meta import CONFLICTS
from erpsync.sync.node import Node
from erpsync.sync.policies import Side
from erpsync.sync.rows import TableRows

UPDATE, DELETE, UNIQUE, REVIEW, RESTORE = "update", "delete", "unique", "review", "restore"
OPEN, RESOLVED = "open", "resolved"
LOCAL, REMOTE = "local", "remote"


class NoSuchConflict(ErpSyncError):
    """A conflict id that does not exist, or is already settled."""


@dataclass(frozen=True)
class Conflict:
    """One recorded conflict."""

    id: int
    table: str
    gid: str
    kind: str
    policy: str
    status: str
    peer: str
    detected: int
    resolution: str | None
    detail: dict[str, Any]

    @property
    def key(self) -> Any:
        """The row's local key, when it has one here."""
        key = self.detail.get("key")
        return key[0] if isinstance(key, list) and len(key) == 1 else key

    @property
    def columns(self) -> list[str]:
        """The columns in conflict (empty for a whole-row conflict)."""
        return list(self.detail.get("columns", []))


def record(
    rows: TableRows,
    gid: str,
    kind: str,
    policy: str,
    peer: int,
    detail: dict[str, Any],
    status: str = OPEN,
) -> None:
    """Store a conflict found while applying a batch (inside its transaction)."""
    table = rows.node.meta[CONFLICTS]
    now = int(time.time() * 1000)
    if status == OPEN:  # one open conflict per row: the latest state replaces an older one
        rows.conn.execute(
            update(table)
            .where(table.c.tbl == rows.table.number, table.c.gid == gid, table.c.status == OPEN)
            .values(status=RESOLVED, resolved=now, resolution="superseded")
        )
    rows.conn.execute(
        table.insert().values(
            tbl=rows.table.number,
            gid=gid,
            kind=kind,
            policy=policy,
            status=status,
            peer=peer,
            detected=now,
            resolved=now if status != OPEN else None,
            resolution="automatic" if status != OPEN else None,
            detail=json.dumps(_jsonable(detail)),
        )
    )


def record_row(
    rows: TableRows,
    remote_row: RowChange,
    kind: str,
    policy: str,
    peer: int,
    *,
    local: Sequence[Any] | None = None,
    remote: Sequence[Any] | None = None,
    sides: Sequence[Side] | None = None,
    columns: Sequence[int] | None = None,
    local_deleted: bool = False,
    remote_deleted: bool = False,
    status: str = OPEN,
    key: Sequence[Any] | None = None,
) -> None:
    """Store a conflict about one row, with its local, remote and base values by column.

    ``key``: the local key the row takes here when the tombstone here keeps none (a
    natural key to bring back); else the row's own.
    """
    table = rows.table
    names = [c.key for c in table.columns]
    shadow = rows.shadows([remote_row.gid]).get(remote_row.gid)
    if key is None and shadow is not None:
        key = [shadow[f"k{i}"] for i in range(len(table.keys))]
    if local is None and key is not None and not local_deleted:
        local = rows.app_values([tuple(key)]).get(tuple(key))
    detail: dict[str, Any] = {
        "key": list(key) if key is not None else None,
        "columns": [names[i] for i in columns or []],
    }
    if local is not None:
        detail["local"] = dict(zip(names, local, strict=True))
    if remote is not None:
        detail["remote"] = dict(zip(names, remote, strict=True))
    if local is not None and remote is not None and sides is not None:
        # the value both had before: the unchanged side's, when only one side changed the column;
        # unknown for a column both rewrote (capture logs keys, not old values)
        base: dict[str, Any] = {}
        for i, name in enumerate(names):
            if sides[i] is Side.REMOTE:
                base[name] = local[i]
            elif sides[i] in (Side.LOCAL, Side.SAME):
                base[name] = remote[i]
        detail["base"] = base
        detail["base_unknown"] = [names[i] for i, side in enumerate(sides) if side is Side.BOTH]
    detail["deleted"] = LOCAL if local_deleted else REMOTE if remote_deleted else None
    record(rows, remote_row.gid, kind, policy, peer, detail, status)


def close_superseded(rows: TableRows, gids: Sequence[str]) -> None:
    """Close the open conflicts of rows that just caught up with a version newer than both sides."""
    table = rows.node.meta[CONFLICTS]
    probe = select(table.c.id).where(table.c.tbl == rows.table.number, table.c.status == OPEN).limit(1)
    if not gids or rows.conn.execute(probe).first() is None:
        return
    rows.conn.execute(
        update(table)
        .where(table.c.tbl == rows.table.number, table.c.status == OPEN, table.c.gid.in_(list(gids)))
        .values(status=RESOLVED, resolved=int(time.time() * 1000), resolution="superseded")
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return _encode(value)


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)).startswith("$"):
        return _decode(value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def list_conflicts(db: Database, *, all_: bool = False) -> list[Conflict]:
    """The open conflicts of node ``db`` (every conflict with ``all_``), oldest first."""
    node = Node(db)
    table = node.meta[CONFLICTS]
    names = {no: name for no, name, _, _ in node.rows}
    query = select(table).order_by(table.c.id)
    if not all_:
        query = query.where(table.c.status == OPEN)
    with db.connect() as conn:
        peers = {no: nid for no, nid in node.peer_ids(conn).items()}
        peer_names = _peer_names(node, conn)
        return [
            Conflict(
                id=int(r.id),
                table=names.get(r.tbl, str(r.tbl)),
                gid=r.gid,
                kind=r.kind,
                policy=r.policy,
                status=r.status,
                peer=peer_names.get(r.peer) or peers.get(r.peer, ""),
                detected=int(r.detected),
                resolution=r.resolution,
                detail=_from_json(json.loads(r.detail)),
            )
            for r in conn.execute(query)
        ]


def _peer_names(node: Node, conn: Any) -> dict[int, str]:
    peers = node.meta["erpsync_peer"]
    return {int(r.no): r.name for r in conn.execute(select(peers.c.no, peers.c.name)) if r.name}


def get_conflict(db: Database, conflict_id: int) -> Conflict:
    """One conflict by id."""
    for conflict in list_conflicts(db, all_=True):
        if conflict.id == conflict_id:
            return conflict
    raise NoSuchConflict(
        "there is no conflict {id} in {db}",
        "list the open conflicts with: erpsync conflicts list {db}",
        id=conflict_id,
        db=db.name,
    )


def resolve(db: Database, conflict_id: int, take: str) -> Conflict:
    """Settle conflict ``conflict_id`` by keeping the ``local`` or the ``remote`` version."""
    from erpsync.sync.resolve import settle_conflict

    if take not in (LOCAL, REMOTE):
        raise InvalidArgument(
            "--take must be local or remote, not {value}", "write --take local or --take remote", value=take
        )
    conflict = get_conflict(db, conflict_id)
    if conflict.status != OPEN:
        raise NoSuchConflict(
            "conflict {id} is already settled ({resolution})",
            "list the open conflicts with: erpsync conflicts list {db}",
            id=conflict_id,
            resolution=conflict.resolution,
            db=db.name,
        )
    settle_conflict(Node(db), conflict, take)
    return get_conflict(db, conflict_id)

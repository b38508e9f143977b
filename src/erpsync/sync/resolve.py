"""Settling a recorded conflict: the chosen version becomes a new local edit.

Whatever is chosen is written with a new clock (and a new change sequence),
so the next syncs carry it to every node, where it wins; a node that queued
the same conflict closes it when this version reaches it.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update

from erpsync import journal
from erpsync.errors import ErpSyncError
from erpsync.i18n import tr
from erpsync.sync.capture import fold
from erpsync.sync.conflicts import DELETE, LOCAL, OPEN, REMOTE, RESTORE, REVIEW, UNIQUE, UPDATE, Conflict
from erpsync.sync.keys import _fresh
from erpsync.sync.meta import CONFLICTS
from erpsync.sync.node import SELF, Node
from erpsync.sync.rows import TableRows


class CannotResolve(ErpSyncError):
    """The chosen version cannot be written as it is."""


def settle_conflict(node: Node, conflict: Conflict, take: str) -> None:
    """Write the ``take`` side of ``conflict`` as a local edit and close the conflict."""
    with node.write() as conn:
        state = node.lock(conn)
        fold(node, conn, state)
        rows = TableRows(conn, node, node.table(conflict.table, conn), state)
        node.dialect.mute_capture(conn, node.table(conflict.table, conn).number)
        try:
            _settle(rows, conflict, take)
        finally:
            node.dialect.unmute_capture(conn)
        table = node.meta[CONFLICTS]
        conn.execute(
            update(table)
            .where(table.c.id == conflict.id, table.c.status == OPEN)
            .values(status="resolved", resolved=int(time.time() * 1000), resolution=take)
        )
        node.save(conn, state)


def _settle(rows: TableRows, conflict: Conflict, take: str) -> None:
    shadow = rows.shadows([conflict.gid]).get(conflict.gid)
    if shadow is None:
        raise CannotResolve(
            "the row of conflict {id} is no longer known here", "close it with --take local", id=conflict.id
        )
    table = rows.table
    alive = not shadow["deleted"]
    key = tuple(shadow[f"k{i}"] for i in range(len(table.keys)))
    detail = conflict.detail
    remote: dict[str, Any] = detail.get("remote") or {}
    if conflict.kind == UNIQUE:
        if take == REMOTE:
            _swap_numbers(rows, conflict, key)
        return
    if conflict.kind == RESTORE:
        return
    remote_deleted = detail.get("deleted") == REMOTE
    local_deleted = detail.get("deleted") == LOCAL or not alive
    if take == LOCAL:
        if local_deleted:
            _delete_again(rows, shadow)
        else:
            slots = [table.index(c) for c in conflict.columns] or None
            rows.restamp([conflict.gid], slots)
        return
    if remote_deleted:
        if alive:
            if rows.referenced([key]):
                raise CannotResolve(
                    "the row of conflict {id} cannot be deleted: other rows still reference it",
                    "delete or move the rows that reference it first, or keep it with --take local",
                    id=conflict.id,
                )
            rows.delete_app([key])
            _delete_again(rows, shadow)
        return
    if local_deleted:
        _revive(rows, conflict, remote)
        return
    if conflict.kind in (UPDATE, REVIEW, DELETE):
        columns = conflict.columns or list(remote)
        values = {table.column(c).name: remote[c] for c in columns}
        rows.update_app([(key, values)])
        rows.restamp([conflict.gid], [table.index(c) for c in columns])


def _delete_again(rows: TableRows, shadow: Any) -> None:
    """Make a deletion win everywhere: a tombstone with a new clock."""
    width = len(rows.table.columns)
    last = max(rows.stamps(shadow)).hlc if not shadow["deleted"] else shadow["ds"]
    values: dict[str, Any] = {
        "gid": shadow["gid"],
        "deleted": 1,
        "dh": rows.state.stamp(),
        "dn": SELF,
        "ds": last,
        "seq": rows.state.next_seq(),
        "src": None,
        "vv": None,
        "bh": None,
        "bn": None,
        **{f"k{i}": None for i in range(len(rows.table.keys))},
        **{f"{p}{i}": None for i in range(width) for p in "cn"},
    }
    rows.write_shadows([], [values])


def _revive(rows: TableRows, conflict: Conflict, remote: dict[str, Any]) -> None:
    """Bring back a row deleted here with the peer's values, under a new local id if needed."""
    table = rows.table
    if not remote and table.columns:
        raise CannotResolve(
            "conflict {id} holds no values to restore", "keep the deletion with --take local", id=conflict.id
        )
    if table.surrogate:
        key: tuple[Any, ...] = (rows.node.dialect.reserve_ids(rows.conn, table.app) + 1,)
    else:
        key = tuple(conflict.detail.get("key") or ())
        if not key or None in key:
            raise CannotResolve(
                "conflict {id} holds no key to restore", "keep the deletion with --take local", id=conflict.id
            )
    row = {k.name: v for k, v in zip(table.keys, key, strict=True)}
    row.update({table.column(c).name: v for c, v in remote.items()})
    rows.insert_app([row])
    if table.surrogate:
        rows.node.dialect.after_explicit_ids(rows.conn, table.app)
    now = rows.state.stamp()
    width = len(table.columns)
    values: dict[str, Any] = {
        "gid": conflict.gid,
        "deleted": 0,
        "bh": now,
        "bn": SELF,
        "seq": rows.state.next_seq(),
        "src": None,
        "vv": None,
        **{f"k{i}": v for i, v in enumerate(key)},
        **{f"{p}{i}": None for i in range(width) for p in "cn"},
    }
    rows.write_shadows([], [values])


def _swap_numbers(rows: TableRows, conflict: Conflict, key: tuple[Any, ...]) -> None:
    """Give the incoming row the number it came with; renumber the local row that kept it."""
    table = rows.table
    detail = conflict.detail
    column = next(
        c for c in table.columns if c.name == detail["column"] or c.key == str(detail["column"]).lower()
    )
    slot = table.index(column.key)
    other = rows.shadows([detail["other"]]).get(detail["other"])
    if other is None or other["deleted"]:
        holder_key = None
    else:
        holder_key = tuple(other[f"k{i}"] for i in range(len(table.keys)))
    old = detail["value"]
    if holder_key is not None:
        new = _fresh(rows, slot, old, set(), [])
        rows.update_app([(holder_key, {column.name: new})])
        rows.restamp([detail["other"]], [slot])
        message = tr(
            "sync: {column} {old} was also created on another node; this row is renumbered {new}",
            column=f"{table.name}.{column.name}",
            old=old,
            new=new,
        )
        journal_key = holder_key[0] if isinstance(holder_key[0], int) else None
        if "tb_logs" in {t.lower() for t in rows.conn.dialect.get_table_names(rows.conn)}:
            journal.log(rows.conn, "SYNC_RENUMBER", table.name, journal_key, journal_key, message, True, None)
    rows.update_app([(key, {column.name: old})])
    rows.restamp([conflict.gid], [slot])

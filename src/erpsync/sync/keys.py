"""Unique business keys created on two nodes while offline (two ``CMD-2026-00007``).

Two different rows (different global ids) that hold the same value of a
unique column cannot both be stored. Sync never fails and never drops a row
for it: of the two, the one that took the value later (by the clock of that
column; ties go to the larger node id) is renumbered, and the journal says so.
Every node decides the same way, so every node renumbers the same row.

The new value comes from the applying node's numbering series when the column
has one (``NumProjet``, ``NumCommande``, client ``Code``: see
``node.DEFAULT_SERIES``), else the old value with a ``-2``, ``-3`` … suffix.
Under ``manual`` the incoming row is the one renumbered, and the collision is
queued so a person can give the number to the other row instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.sql import sqltypes

from erpsync import journal, numbering
from erpsync.i18n import tr
from erpsync.schema import erp_tables
from erpsync.sync.capture import IN_LIMIT, Key, _chunks, key_in
from erpsync.sync.hlc import Stamp
from erpsync.sync.rows import TableRows

MAX_TRIES = 1000


@dataclass(slots=True)
class Incoming:
    """A row about to be written by apply: its values may still be renumbered."""

    gid: str
    key: Key | None
    """Its local key when it exists here already."""
    values: list[Any]
    stamps: list[Stamp | None]
    """``None``: to be written with a new local clock."""
    writes: set[int]
    """The columns apply writes (all for a new row)."""
    whole: bool = False
    """The row ends up exactly as the sender has it (so it is not sent back to the sender)."""
    versions: dict[str, int] = field(default_factory=dict)
    """The row's version vector once merged."""

    @property
    def restamped(self) -> bool:
        """Whether some column gets a new local clock."""
        return None in self.stamps


@dataclass
class Renumbering:
    """One row renumbered to settle a collision."""

    table: str
    gid: str
    key: Key | None
    column: str
    old: Any
    new: Any
    incoming: bool
    other_gid: str
    queued: bool = False


@dataclass
class Collisions:
    """What ``settle`` did: rows renumbered, here (``local``) and in the batch."""

    renumbered: list[Renumbering] = field(default_factory=list)
    local_changes: list[tuple[Key, str, dict[str, Any], int]] = field(default_factory=list)
    """(key, gid, {column: new value}, column slot) of local rows renumbered."""


def settle(rows: TableRows, incoming: Sequence[Incoming], manual: bool) -> Collisions:
    """Find and settle the collisions of ``incoming`` rows with local rows, on every unique key."""
    out = Collisions()
    table = rows.table
    if table.settings.series and _has_numbering(rows):
        schema = erp_tables(rows.node.dialect)
        for column, kind in table.settings.series.items():
            slot = table.index(column)
            numbering.catch_up(
                rows.conn, schema, kind, (r.values[slot] for r in incoming if slot in r.writes)
            )
    taken_in_batch: set[tuple[int, Any]] = set()
    for unique in table.uniques:
        if any(c not in table._index for c in unique):
            continue  # includes a key column: the key settles it
        slots = [table.index(c) for c in unique]
        wanted: dict[tuple[Any, ...], Incoming] = {}
        for candidate in incoming:
            if candidate.writes.intersection(slots):
                value = tuple(candidate.values[i] for i in slots)
                if None in value:
                    continue
                other = wanted.get(_norm(value))
                if other is not None:  # twice in one batch (values equal for a case-insensitive index)
                    later = max((other, candidate), key=lambda c: _stamp(c, slots))
                    keeper = other if later is candidate else candidate
                    new = _renumber(rows, later, slots[-1], keeper.gid, manual, taken_in_batch, incoming, out)
                    taken_in_batch.add((slots[-1], new))
                    if later is other:
                        wanted[_norm(value)] = candidate
                    continue
                wanted[_norm(value)] = candidate
        if not wanted:
            continue
        holders = _holders(rows, slots, list(wanted.values()))
        for value, (holder_key, holder_values) in holders.items():
            found = wanted.get(value)
            if found is None or found.key == holder_key:
                continue
            row = found
            shadow = rows.shadows_by_key([holder_key]).get(holder_key)
            holder_gid = shadow["gid"] if shadow is not None else ""
            vacating = next((r for r in incoming if r.gid == holder_gid), None)
            if vacating is not None and _norm(tuple(vacating.values[i] for i in slots)) != value:
                continue  # the holder gives the value up in this very batch
            theirs = max(rows.stamps(shadow)[i] for i in slots) if shadow is not None else Stamp(0, "")
            slot = slots[-1]
            if manual or _stamp(row, slots) > theirs:
                new = _renumber(rows, row, slot, holder_gid, manual, taken_in_batch, incoming, out)
            else:
                new = _fresh(rows, slot, holder_values[slot], taken_in_batch, incoming)
                out.local_changes.append((holder_key, holder_gid, {table.columns[slot].name: new}, slot))
                out.renumbered.append(
                    Renumbering(
                        table.name,
                        holder_gid,
                        holder_key,
                        table.columns[slot].name,
                        row.values[slot],
                        new,
                        False,
                        row.gid,
                    )
                )
            taken_in_batch.add((slot, new))
    return out


def _renumber(
    rows: TableRows,
    row: Incoming,
    slot: int,
    other_gid: str,
    queued: bool,
    taken: set[tuple[int, Any]],
    incoming: Sequence[Incoming],
    out: Collisions,
) -> Any:
    """Give incoming ``row`` a fresh value of column ``slot``, written with a new local clock."""
    old = row.values[slot]
    row.values[slot] = new = _fresh(rows, slot, old, taken, incoming)
    row.stamps[slot] = None
    row.writes.add(slot)
    row.whole = False  # renumbered here: the sender must get the new number back
    table = rows.table
    out.renumbered.append(
        Renumbering(table.name, row.gid, row.key, table.columns[slot].name, old, new, True, other_gid, queued)
    )
    return new


def _norm(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """Values as a unique index may compare them: trailing spaces and case ignored (MariaDB's
    collations). On a case-sensitive engine this may renumber two values differing only by case."""
    return tuple(v.strip().lower() if isinstance(v, str) else v for v in value)


def _stamp(row: Incoming, slots: list[int]) -> Stamp:
    """When a row took its value of the unique key (a new local write counts as the latest)."""
    return max((s for s in (row.stamps[i] for i in slots) if s is not None), default=Stamp(1 << 62, ""))


def _holders(
    rows: TableRows, slots: list[int], wanted: list[Incoming]
) -> dict[tuple[Any, ...], tuple[Key, tuple[Any, ...]]]:
    table = rows.table
    app = table.app
    columns = [app.c[table.columns[i].name] for i in slots]
    all_columns = [app.c[c.name] for c in table.columns]
    width = len(rows.key_columns)
    values = [tuple(r.values[i] for i in slots) for r in wanted]
    found: dict[tuple[Any, ...], tuple[Key, tuple[Any, ...]]] = {}
    for part in _chunks(values, IN_LIMIT):
        query = select(*rows.key_columns, *all_columns).where(key_in(columns, part))
        for row in rows.conn.execute(query):
            current = tuple(row[width:])
            found[_norm(tuple(current[i] for i in slots))] = (tuple(row[:width]), current)
    return found


def catch_up(rows: TableRows, columns: Sequence[Sequence[Any]]) -> None:
    """Move this node's numbering counters past the business numbers of rows being written
    (their values by column).

    A PC that received the server's orders must not draw one of their numbers next.
    """
    table = rows.table
    if not columns or not table.settings.series or not _has_numbering(rows):
        return
    schema = erp_tables(rows.node.dialect)
    for column, kind in table.settings.series.items():
        numbering.catch_up(rows.conn, schema, kind, columns[table.index(column)])


def _fresh(
    rows: TableRows, slot: int, old: Any, taken: set[tuple[int, Any]], incoming: Sequence[Incoming]
) -> Any:
    """A value for column ``slot`` that no row holds: from its numbering series, or suffixed."""
    table = rows.table
    column = table.columns[slot]
    kind = table.settings.series.get(column.key)
    length = getattr(column.type, "length", None) if isinstance(column.type, sqltypes.String) else None
    in_batch = {r.values[slot] for r in incoming}
    for attempt in range(2, MAX_TRIES):
        if kind is not None and _has_numbering(rows):
            fmt = numbering.DEFAULT_FORMATS[kind]
            year = _year_of(fmt, str(old))
            n = numbering.reserve(
                rows.conn, erp_tables(rows.node.dialect), kind, numbering.series_year(fmt, year)
            )
            candidate: Any = fmt.render(n, year)
        elif isinstance(old, int):
            candidate = old + attempt * 1_000_000
        else:
            suffix = f"-{attempt}"
            text = str(old)
            candidate = (text[: length - len(suffix)] if length else text) + suffix
        if (slot, candidate) in taken or candidate in in_batch:
            continue
        app = table.app
        holder = rows.conn.execute(select(app.c[column.name]).where(app.c[column.name] == candidate)).first()
        if holder is None:
            return candidate
    raise RuntimeError(f"no free value found for {table.name}.{column.name}")


def _has_numbering(rows: TableRows) -> bool:
    cache: dict[str, bool] = rows.node.__dict__.setdefault("_has_numbering", {})
    if "yes" not in cache:
        names = {n.lower() for n in inspect(rows.conn).get_table_names()}
        cache["yes"] = "tb_numerotation" in names
    return cache["yes"]


def _year_of(fmt: numbering.NumberFormat, value: str) -> int:
    if fmt.yearly:
        found = re.search(r"(19|20)\d\d", value)
        if found:
            return int(found.group(0))
    return date.today().year


def journal_renumbering(rows: TableRows, renumbered: Sequence[Renumbering]) -> None:
    """One ``tb_Logs`` row per renumbering, when the database has the ERP journal."""
    if not renumbered or "tb_logs" not in {n.lower() for n in inspect(rows.conn).get_table_names()}:
        return
    for r in renumbered:
        key = r.key[0] if r.key and isinstance(r.key[0], int) else None
        template = (
            "sync: {column} {old} was also created on another node; this row is renumbered {new} "
            "(manual policy: a conflict is queued)"
            if r.queued
            else "sync: {column} {old} was also created on another node; this row is renumbered {new}"
        )
        message = tr(template, column=f"{r.table}.{r.column}", old=r.old, new=r.new)
        journal.log(rows.conn, "SYNC_RENUMBER", r.table, key, key, message, True, None)

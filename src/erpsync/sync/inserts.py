"""Inserting rows new to a node (or coming back): local keys, bulk path, business keys.

Part of applying a batch (``apply``): a mixin of its worker, kept apart
because the bulk path for new rows is the hot loop of a first sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import compress, repeat
from operator import itemgetter
from typing import Any

from erpsync.sync.capture import Key
from erpsync.sync.changeset import RowChange, clock_slots
from erpsync.sync.keys import Incoming, catch_up
from erpsync.sync.model import SyncColumn, SyncTable
from erpsync.sync.node import SELF, NodeState
from erpsync.sync.rows import TableRows


class Inserts:
    """Writing new rows, for ``apply._Apply``."""

    rows: TableRows
    table: SyncTable
    state: NodeState
    source: int
    restore: bool
    touched: list[Key]
    renumbered: list[Any]
    shadow_inserts: list[dict[str, Any]]
    shadow_updates: list[dict[str, Any]]
    result: Any

    def _write_inserts(
        self,
        items: list[tuple[RowChange, Mapping[str, Any] | None, Incoming]],
        refs: dict[str, dict[str, Key]],
    ) -> dict[str, Key]:
        """Insert new rows (and rows coming back); return their local keys by global id."""
        if not items:
            return {}
        keys = self._allocate([r for r, _, _ in items], refs)
        app_rows = []
        translated = [i for i in self.table.self_refs if self.table.columns[i].ref]  # still global ids
        gid_keys = {r.gid: k for (r, _, _), k in zip(items, keys, strict=True)}
        for (r, mine, incoming), key in zip(items, keys, strict=True):
            for i in translated:
                value = incoming.values[i]
                if isinstance(value, str) and value in gid_keys:
                    incoming.values[i] = gid_keys[value][0]
            row = {k.name: v for k, v in zip(self.table.keys, key, strict=True)}
            row.update({c.name: incoming.values[i] for i, c in enumerate(self.table.columns)})
            app_rows.append(row)
            clocks = self.rows.clock_values(incoming.stamps)
            meta = {
                **{f"k{i}": v for i, v in enumerate(key)},
                **clocks,
                "vv": self.rows.versions_text(incoming.versions, incoming.stamps),
                "seq": self.state.next_seq(),
                "deleted": 0,
                "src": None if incoming.restamped else self.source,
            }
            deleted = r.deleted
            if mine is not None:
                ours = self.rows.deleted_stamp(mine)
                if ours is not None and (deleted is None or ours > deleted):
                    deleted = ours
                self.result.restored += 1 if self.restore else 0
            if deleted is not None:
                meta.update(dh=deleted.hlc, dn=self.rows.number(deleted.node))
            if mine is None:
                self.shadow_inserts.append({"gid": r.gid, **meta})
            else:
                self.shadow_updates.append({"gid": r.gid, **meta})
            self.touched.append(key)
        for item in self.renumbered:
            if item.key is None and item.gid in gid_keys:
                item.key = gid_keys[item.gid]
        self.rows.insert_app(app_rows)
        if self.table.surrogate:
            self.rows.node.dialect.after_explicit_ids(self.rows.conn, self.table.app)
        self.result.inserted += len(items)
        return gid_keys

    def _fast_inserts(self, rows: list[RowChange], refs: dict[str, dict[str, Key]]) -> set[str]:
        """Insert rows new to this node in bulk; return the global ids done.

        The common case of a first sync or of a batch of new rows, worked column by
        column (references resolved, values converted, a comprehension per column): one
        set query per unique key, the engine's bulk path. Rows whose business key is
        already held here are left to the general path (renumbering).
        """
        table = self.table
        columns = [list(c) for c in zip(*[r.values or () for r in rows], strict=True)]
        for i, column in enumerate(table.columns):
            if column.ref is not None:
                found = refs.get(table.parents[column.ref].key, {})
                columns[i] = [None if v is None else found[v][0] for v in columns[i]]
        held_back = self._held_business_keys(columns)
        if held_back:
            chosen = [n for n in range(len(rows)) if n not in held_back]
            rows = [rows[n] for n in chosen]
            columns = [[column[n] for n in chosen] for column in columns]
        if not rows:
            return set()
        catch_up(self.rows, columns)
        keys = self._allocate(rows, refs)
        raw_keys = [list(c) for c in zip(*keys, strict=True)]
        app_rows = list(
            zip(
                *self._converted(table.keys, raw_keys),
                *self._converted(table.columns, columns),
                strict=True,
            )
        )
        self.touched.extend(keys)
        number = self.rows.number
        clocks = [r.clocks or () for r in rows]
        firsts = [c[0] for c in clocks]
        numbers = {n: number(n) if n else SELF for n in {f.node for f in firsts}}
        width = clock_slots(len(table.columns))
        # most rows were written once: one clock for every column, nothing else to store
        once = [
            count == width and not r.versions and r.deleted is None
            for count, r in zip(map(tuple.count, clocks, firsts), rows, strict=True)
        ]
        seqs = self.state.next_seqs(len(rows))
        nodes = map(numbers.__getitem__, map(itemgetter(1), firsts))
        shared = (repeat(0), repeat(self.source), map(itemgetter(0), firsts), nodes)
        # Python's sqlite3 binds NULL slowly: each shape of row lists only the columns it fills
        fixed = ("gid", *(f"k{j}" for j in range(len(table.keys))), "seq", "deleted", "src", "bh", "bn")
        plain = list(compress(zip([r.gid for r in rows], *raw_keys, seqs, *shared, strict=False), once))
        shadow_rows: dict[tuple[str, ...], list[tuple[Any, ...]]] = {fixed: plain}
        for n in [n for n, simple in enumerate(once) if not simple]:
            r = rows[n]
            stored = self.rows.clock_values(list(clocks[n]))
            row = (r.gid, *keys[n], seqs[n], 0, self.source, stored["bh"], stored["bn"])
            extra = {k: v for k, v in stored.items() if k[0] in "cn" and v is not None}
            if r.versions:
                extra["vv"] = self.rows.versions_text(r.versions, list(clocks[n]))
            if r.deleted is not None:
                extra.update(dh=r.deleted.hlc, dn=number(r.deleted.node))
            shadow_rows.setdefault((*fixed, *extra), []).append((*row, *extra.values()))
        key_names = [k.name for k in table.keys]
        self.rows.bulk_insert(table.app, [*key_names, *(c.name for c in table.columns)], app_rows)
        if table.surrogate:
            self.rows.node.dialect.after_explicit_ids(self.rows.conn, table.app)
        for names, group in shadow_rows.items():
            self.rows.bulk_insert(table.shadow, list(names), group)
        self.result.inserted += len(rows)
        return {r.gid for r in rows}

    def _converted(self, definitions: Sequence[SyncColumn], columns: list[list[Any]]) -> list[list[Any]]:
        """``columns`` of values converted for the driver as SQLAlchemy would (``None`` kept)."""
        out = []
        for definition, values in zip(definitions, columns, strict=True):
            convert = self.rows.processors.get(definition.name)
            out.append(values if convert is None else [None if v is None else convert(v) for v in values])
        return out

    def _held_business_keys(self, columns: list[list[Any]]) -> set[int]:
        """Indexes of new rows (their values by column) whose unique business key a local row holds."""
        table = self.table
        held: set[int] = set()
        for unique in table.uniques:
            if any(c not in table._index for c in unique):
                continue
            slots = [table.index(c) for c in unique]
            wanted: dict[tuple[Any, ...], int] = {}
            values = list(zip(*(columns[i] for i in slots), strict=True))
            for n, value in enumerate(values):
                if None not in value:
                    if _loose(value) in wanted:  # twice in the batch: let the general path sort it out
                        held.add(n)
                    wanted[_loose(value)] = n
            if not wanted:
                continue
            names = [self.rows.quote(table.columns[i].name) for i in slots]
            sql = f"SELECT {', '.join(names)} FROM {self.rows.quote(table.app.name)} WHERE"
            found = self.rows.select_in(sql, names, [values[n] for n in wanted.values()])
            for row in found:
                match = wanted.get(_loose(tuple(row.values())))
                if match is not None:
                    held.add(match)
        return held

    def _allocate(self, rows: list[RowChange], refs: dict[str, dict[str, Key]]) -> list[Key]:
        """Local keys for new rows: the sender's id where it is free here, else the next free one;
        a natural key as it is, its references to other synced rows turned into their local ids."""
        if not self.table.surrogate:
            natural = [list(r.key or ()) for r in rows]
            for i, parent in self.table.key_refs:
                local = refs.get(parent.key, {})
                for key in natural:
                    key[i] = local[key[i]][0]
            return [tuple(key) for key in natural]
        top = self.rows.node.dialect.reserve_ids(self.rows.conn, self.table.app)
        hints = [r.key[0] if r.key else None for r in rows]
        column = self.rows.quote(self.rows.key_columns[0].name)
        sql = f"SELECT {column} AS k FROM {self.rows.quote(self.table.app.name)} WHERE"
        found = self.rows.select_in(sql, [column], [(h,) for h in hints if h is not None])
        taken: set[Any] = {r["k"] for r in found}
        if not taken and None not in hints and len(set(hints)) == len(hints):
            return [(hint,) for hint in hints]  # the common case: every id is free here
        keys: list[Key] = []
        used: set[Any] = set()
        pending: list[int] = []
        for i, hint in enumerate(hints):
            if hint is not None and hint not in taken and hint not in used:
                used.add(hint)
                keys.append((hint,))
            else:
                keys.append(())
                pending.append(i)
        following = max([top, *[k for k in used if isinstance(k, int)]]) + 1
        for i in pending:
            keys[i] = (following,)
            following += 1
        return keys


def _loose(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """A unique value as a case- and trailing-space-insensitive index would compare it."""
    return tuple(v.strip().lower() if isinstance(v, str) else v for v in value)

"""Reading and writing one synced table's rows and their metadata, in sets.

Shared by apply and by conflict resolution. Every method works on many rows
at once (``IN`` lists, ``executemany``), never one query per row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, inspect, select

from erpsync.dialects.base import execute_many
from erpsync.sync.capture import IN_LIMIT, Key, _chunks, key_in, same_keys, values_at
from erpsync.sync.changeset import clock_slots
from erpsync.sync.hlc import Stamp
from erpsync.sync.model import SyncTable
from erpsync.sync.node import SELF, Node, NodeState
from erpsync.sync.policies import Versions, format_versions, implied, merged, parse_versions


class TableRows:
    """One synced table's rows in one write transaction."""

    def __init__(self, conn: Connection, node: Node, table: SyncTable, state: NodeState) -> None:
        self.conn = conn
        self.node = node
        self.table = table
        self.state = state
        self.ids = node.peer_ids(conn)
        self.key_columns = [table.app.c[k.name] for k in table.keys]
        self.mark = node.dialect.paramstyle_mark
        self.quote = node.db.quote
        dialect = conn.dialect
        self.processors: dict[str, Callable[[Any], Any] | None] = {
            c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.app.columns
        }
        self._numbers: dict[str, int] = {v: k for k, v in self.ids.items()}
        self.clock_columns = [(f"c{i}", f"n{i}") for i in range(len(table.columns))]
        self._column_clocks = values_at([c for c, _ in self.clock_columns])

    # -- plain DB-API: the hot paths skip SQLAlchemy's per-row parameter handling -------------

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        """``executemany`` on the transaction's own DB-API connection."""
        if params:
            execute_many(self.conn, sql, params)

    def select_in(
        self, sql: str, columns: Sequence[str], values: Sequence[Sequence[Any]]
    ) -> list[dict[str, Any]]:
        """Rows of ``sql`` (ending in ``WHERE``) whose ``columns`` are one of ``values``, as dicts."""
        out: list[dict[str, Any]] = []
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if len(columns) == 1 and self.node.dialect.binds_arrays:  # one parameter, however many values
                for part in _chunks(values, 50_000):
                    cursor.execute(f"{sql} {columns[0]} = ANY({self.mark})", [[row[0] for row in part]])
                    names = [d[0] for d in cursor.description]
                    out.extend(dict(zip(names, row, strict=True)) for row in cursor.fetchall())
                return out
            for part in _chunks(values, IN_LIMIT):
                one = "(" + ", ".join([self.mark] * len(columns)) + ")" if len(columns) > 1 else self.mark
                target = f"({', '.join(columns)})" if len(columns) > 1 else columns[0]
                cursor.execute(
                    f"{sql} {target} IN ({', '.join([one] * len(part))})", [v for row in part for v in row]
                )
                names = [d[0] for d in cursor.description]
                out.extend(dict(zip(names, row, strict=True)) for row in cursor.fetchall())
        finally:
            cursor.close()
        return out

    def bulk_insert(self, table: Table, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        """Insert tuples the engine's fastest way (COPY on PostgreSQL); values already converted."""
        if rows:
            self.node.dialect.bulk_insert(self.conn, table, columns, rows)

    def insert_rows(self, table: str, rows: list[dict[str, Any]], processors: bool = False) -> None:
        """Insert dicts (column name → value) into ``table``, grouped by their keys."""
        for group in same_keys(rows):
            names = list(group[0])
            convert = [self.processors.get(n) if processors else None for n in names]
            target = f"{self.quote(table)} ({', '.join(self.quote(n) for n in names)})"
            self.many(self.node.dialect.insert_sql(target, len(names)), _params(group, names, convert))

    def update_rows(
        self, table: Table, where: Sequence[str], rows: list[dict[str, Any]], processors: bool = False
    ) -> None:
        """Update ``table``: each dict holds the ``where`` columns' values and the columns to set."""
        for group in same_keys(rows):
            names = [n for n in group[0] if n not in where]
            if not names:
                continue
            convert = [self.processors.get(n) if processors else None for n in names] + [None] * len(where)
            params = _params(group, [*names, *where], convert)
            self.node.dialect.bulk_update(self.conn, table, where, names, params)

    # -- metadata ----------------------------------------------------------------------------

    def shadows(self, gids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        """The metadata rows of ``gids`` that exist here (present rows and tombstones)."""
        sql = f"SELECT * FROM {self.quote(self.table.shadow.name)} WHERE"
        return {r["gid"]: r for r in self.select_in(sql, ["gid"], [(g,) for g in gids])}

    def shadows_by_key(self, keys: Sequence[Key]) -> dict[Key, Mapping[str, Any]]:
        """The metadata rows of present rows, by local key."""
        width = len(self.table.keys)
        sql = f"SELECT * FROM {self.quote(self.table.shadow.name)} WHERE"
        found = self.select_in(sql, [f"k{i}" for i in range(width)], keys)
        return {tuple(m[f"k{i}"] for i in range(width)): m for m in found}

    def stamp_of(self, hlc: int | None, number: int | None) -> Stamp:
        """A stored (clock, node number) as a ``Stamp``."""
        if hlc is None or number is None:
            return Stamp(0, "")
        return Stamp(hlc, self.ids[number])

    def stamps(self, shadow: Mapping[str, Any]) -> list[Stamp]:
        """The clock of each column of a present row."""
        base = self.stamp_of(shadow["bh"], shadow["bn"])
        if self._column_clocks(shadow).count(None) == len(self.clock_columns):  # a row written once
            return [base] * clock_slots(len(self.clock_columns))
        return [
            base if shadow[c] is None else self.stamp_of(shadow[c], shadow[n]) for c, n in self.clock_columns
        ]

    def versions(self, shadow: Mapping[str, Any], stamps: Sequence[Stamp] | None = None) -> Versions:
        """A present row's version vector: the stored one, else the one its clocks imply."""
        stored = parse_versions(shadow["vv"], self.ids)
        return (
            stored if stored is not None else implied(stamps if stamps is not None else self.stamps(shadow))
        )

    def versions_text(self, versions: Versions, stamps: Sequence[Stamp | None]) -> str | None:
        """How to store ``versions``: ``None`` when the column clocks imply it already."""
        known = [s for s in stamps if s is not None]
        if None in stamps:  # restamped columns carry this node's new clock
            known.append(Stamp(self.state.hlc, self.node.node_id))
        clocks = implied(known)
        full = merged(versions, clocks)
        return None if full == clocks else format_versions(full, self.number)

    def deleted_stamp(self, shadow: Mapping[str, Any]) -> Stamp | None:
        """The largest delete seen for a row, if any."""
        return self.stamp_of(shadow["dh"], shadow["dn"]) if shadow["dh"] is not None else None

    def number(self, node_id: str) -> int:
        """The local number of a node id (registered on first sight)."""
        number = self._numbers.get(node_id)
        if number is None:
            number = self._numbers[node_id] = self.node.peer_number(self.conn, node_id)
            self.ids[number] = node_id
        return number

    def clock_values(self, stamps: Sequence[Stamp | None]) -> dict[str, Any]:
        """``bh``/``bn`` and ``c<i>``/``n<i>`` for a row whose columns have ``stamps``.

        ``None`` means "a new local write now". The most common clock becomes the
        row's base, so a row written in one go stores one clock.
        """
        now = Stamp(self.state.stamp(), self.node.node_id) if None in stamps else None
        resolved = [now if s is None else s for s in stamps]
        if not resolved:
            base: Stamp | None = now or Stamp(self.state.hlc, "")
        elif resolved.count(resolved[0]) * 2 > len(resolved):  # the usual case: no need to count the others
            base = resolved[0]
        else:
            base = Counter(resolved).most_common(1)[0][0]
        assert base is not None
        values: dict[str, Any] = {"bh": base.hlc, "bn": self.number(base.node) if base.node else SELF}
        for (c, n), stamp in zip(self.clock_columns, resolved, strict=bool(self.clock_columns)):
            assert stamp is not None
            if stamp == base:
                values[c] = values[n] = None
            else:
                values[c], values[n] = stamp.hlc, self.number(stamp.node)
        return values

    def write_shadows(self, inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        """Insert new metadata rows and update existing ones (their ``gid`` names the row)."""
        self.insert_rows(self.table.shadow.name, inserts)
        self.update_rows(self.table.shadow, ["gid"], updates)

    def restamp(self, gids: Sequence[str], columns: Iterable[int] | None = None) -> None:
        """Write the current values of ``columns`` (default all) again, with a new local clock.

        A value that wins although its clock is older is given a new one, so it
        also wins on every node it reaches.
        """
        slots = list(range(len(self.table.columns)) if columns is None else columns)
        if not gids:
            return
        now = self.state.stamp()
        stored = {gid: m["vv"] for gid, m in self.shadows(gids).items() if m["vv"]}
        rows = []
        for gid in gids:
            row: dict[str, Any] = {"gid": gid, "seq": self.state.next_seq(), "src": None}
            if len(slots) == len(self.table.columns):
                row.update(
                    bh=now, bn=SELF, **{f"c{i}": None for i in slots}, **{f"n{i}": None for i in slots}
                )
            else:
                row.update({f"c{i}": now for i in slots}, **{f"n{i}": SELF for i in slots})
            if gid in stored:
                versions = parse_versions(stored[gid], self.ids) or {}
                versions[self.node.node_id] = now
                row["vv"] = format_versions(versions, self.number)
            rows.append(row)
        self.write_shadows([], rows)

    # -- references ----------------------------------------------------------------------------

    def keys_of(self, table: SyncTable, gids: Iterable[str]) -> dict[str, Key | None]:
        """Local keys of ``gids`` in ``table``; ``None`` for a tombstone; absent if unknown."""
        width = len(table.keys)
        keys = ", ".join(f"k{i}" for i in range(width))
        sql = f"SELECT gid, deleted, {keys} FROM {self.quote(table.shadow.name)} WHERE"
        return {
            r["gid"]: None if r["deleted"] else tuple(r[f"k{i}"] for i in range(width))
            for r in self.select_in(sql, ["gid"], [(g,) for g in gids])
        }

    def kept(self, keys: Sequence[Key]) -> set[Key]:
        """Which of ``keys``, deleted together, other rows keep: still referenced by a row
        staying (rows of a tree deleted with their children do not keep them)."""
        leaving = set(keys)
        while True:
            kept = self.referenced(keys, leaving)
            if not leaving & kept:
                return kept
            leaving -= kept

    def referenced(self, keys: Sequence[Key], leaving: Collection[Key] = ()) -> set[Key]:
        """Which of ``keys`` are still referenced by a row of any table (synced or not), rows of
        this table in ``leaving`` (deleted with them) not counted."""
        out: set[Key] = set()
        for child, columns, parent_columns in self.node_references(self.table.app.name):
            index = [[c.name for c in self.key_columns].index(p) for p in parent_columns]
            wanted = list({tuple(k[i] for i in index) for k in keys})
            child_columns = [child.c[c] for c in columns]
            own = [child.c[c.name] for c in self.key_columns] if child.name == self.table.app.name else []
            for part in _chunks(wanted, IN_LIMIT):
                found = self.conn.execute(
                    select(*child_columns, *own).distinct().where(key_in(child_columns, part))
                )
                width = len(child_columns)
                hits = {tuple(r[:width]) for r in found if tuple(r[width:]) not in leaving or not own}
                out.update(k for k in keys if tuple(k[i] for i in index) in hits)
        return out

    def node_references(self, name: str) -> list[tuple[Table, list[str], list[str]]]:
        """(child table, its columns, the referenced columns) for every foreign key to ``name``."""
        cache: dict[str, list[tuple[Table, list[str], list[str]]]] = self.node.__dict__.setdefault(
            "_references", {}
        )
        if name not in cache:
            inspector = inspect(self.conn)
            found = []
            for child in inspector.get_table_names():
                for fk in inspector.get_foreign_keys(child):
                    if str(fk["referred_table"]).lower() == name.lower():
                        table = Table(child, self.node._md, autoload_with=self.conn)
                        found.append((table, list(fk["constrained_columns"]), list(fk["referred_columns"])))
            cache[name] = found
        return cache[name]

    # -- application rows ------------------------------------------------------------------------

    def app_values(self, keys: Sequence[Key]) -> dict[Key, tuple[Any, ...]]:
        """The current values of present rows (non-key columns in clock order), by key."""
        app = self.table.app
        columns = [app.c[c.name] for c in self.table.columns]
        width = len(self.key_columns)
        found: dict[Key, tuple[Any, ...]] = {}
        for part in _chunks(keys, IN_LIMIT):
            query = select(*self.key_columns, *columns).where(key_in(self.key_columns, part))
            for row in self.conn.execute(query):
                found[tuple(row[:width])] = tuple(row[width:])
        return found

    def insert_app(self, rows: list[dict[str, Any]], convert: bool = True) -> None:
        """Insert application rows (dicts by column name), a tree's parents first, converted as
        SQLAlchemy would unless ``convert`` is false (values as the driver returned them)."""
        self.insert_rows(self.table.app.name, self._parents_first(rows), processors=convert)

    def _parents_first(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of a table referencing itself, each after the row it references."""
        slots = self.table.self_refs
        if not slots or len(self.key_columns) != 1:
            return rows
        return tree_order(rows, [self.table.columns[i].name for i in slots], self.key_columns[0].name)

    def update_app(self, changes: list[tuple[Key, dict[str, Any]]]) -> None:
        """Update application rows: (key, {column name: value}), grouped by the columns set."""
        names = [c.name for c in self.key_columns]
        rows = [{**values, **dict(zip(names, key, strict=True))} for key, values in changes if values]
        self.update_rows(self.table.app, names, rows, processors=True)

    def delete_app(self, keys: Sequence[Key]) -> None:
        """Delete application rows by key; rows of a tree go children first."""
        names = [self.quote(c.name) for c in self.key_columns]
        where = " AND ".join(f"{n} = {self.mark}" for n in names)
        sql = f"DELETE FROM {self.quote(self.table.app.name)} WHERE {where}"
        self.many(sql, [tuple(k) for k in self._untie(keys)])

    def _untie(self, keys: Sequence[Key]) -> Sequence[Key]:
        """Rows of a tree deleted together, ready to go: ordered children first, and a nullable
        reference from one to another (a row pointing at itself) set to NULL, which MariaDB needs
        even for a row referencing itself."""
        slots = self.table.self_refs
        if not keys or not slots or len(self.key_columns) != 1:
            return keys
        app, key = self.table.app, self.key_columns[0]
        refs = [app.c[self.table.columns[i].name] for i in slots]
        found = [
            dict(r._mapping)
            for part in _chunks(keys, IN_LIMIT)
            for r in self.conn.execute(select(key, *refs).where(key_in([key], part)))
        ]
        leaving = {row[key.name] for row in found}
        for ref in refs:
            tied = [row for row in found if row[ref.name] in leaving]
            if ref.nullable and tied:
                self.update_app([((row[key.name],), {ref.name: None}) for row in tied])
                for row in tied:
                    row[ref.name] = None
        return [(row[key.name],) for row in reversed(self._parents_first(found))]


def tree_order(rows: list[dict[str, Any]], refs: Sequence[str], key: str) -> list[dict[str, Any]]:
    """Rows of one table ordered so that a row comes after the rows of the list it references
    through the columns ``refs`` (a tree: parents first); a cycle is broken where it is met."""
    by_key = {row[key]: row for row in rows}
    done: list[dict[str, Any]] = []
    placed: set[Any] = set()
    for start in rows:
        stack, visiting = [start], {start[key]}
        while stack:  # depth first without recursion: a chain may be as long as the batch
            row = stack[-1]
            ahead = (by_key.get(row[name]) for name in refs)
            parent = next(
                (p for p in ahead if p is not None and p[key] not in placed and p[key] not in visiting), None
            )
            if parent is not None:
                stack.append(parent)
                visiting.add(parent[key])
                continue
            stack.pop()
            if row[key] not in placed:
                placed.add(row[key])
                done.append(row)
    return done


def _params(
    rows: list[dict[str, Any]], names: Sequence[str], processors: Sequence[Callable[[Any], Any] | None]
) -> list[Sequence[Any]]:
    """The values of ``names`` in each row, converted where a processor is given (not ``None``s)."""
    get = itemgetter(*names)
    params: list[Sequence[Any]] = list(map(get, rows)) if len(names) > 1 else [(r[names[0]],) for r in rows]
    slots = [(i, p) for i, p in enumerate(processors) if p is not None]
    if not slots:
        return params
    out: list[Sequence[Any]] = []
    for values in params:
        converted = list(values)
        for i, p in slots:
            if converted[i] is not None:
                converted[i] = p(converted[i])
        out.append(converted)
    return out

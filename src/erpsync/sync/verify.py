"""``verify``: do two nodes hold the same rows? Chunked checksums, then the rows that differ.

Rows are compared by global id, over a canonical encoding of their values
(see ``encoding``): local ids are left out (they may differ by design) and a
column referencing another synced table compares the referenced row's global
id. So a SQLite PC, a MariaDB server and a PostgreSQL server can be compared.

Each side sums a 64-bit hash of every row into buckets (by global id); only
buckets whose count or sum differ are listed row by row, as with
pt-table-checksum. ``repair`` then fixes the rows that differ through the
normal apply path: a row present on one side only is copied to the other;
a row that differs takes this node's values (written again with a new clock,
so the next syncs agree).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from erpsync.db import Database
from erpsync.sync.capture import fold
from erpsync.sync.changeset import _query
from erpsync.sync.encoding import NULL, encoder, row_hash
from erpsync.sync.model import SyncTable
from erpsync.sync.node import Node
from erpsync.sync.rows import TableRows

MASK = (1 << 64) - 1
ProgressCallback = Callable[[str, int, int], None]


def buckets_for(rows: int) -> int:
    """How many buckets to split a table of ``rows`` rows into (about 1,000 rows each)."""
    return max(16, min(4096, rows // 1000))


def bucket_of(gid: str, buckets: int) -> int:
    """The bucket of a global id (the same on every node)."""
    return int.from_bytes(hashlib.blake2b(gid.encode(), digest_size=4).digest(), "big") % buckets


def row_texts(node: Node, table: SyncTable) -> Iterator[tuple[str, str]]:
    """(global id, canonical text) of every row present, streamed."""
    encoders: list[Callable[[Any], str]] = [encoder(c.type) for c in table.columns]
    keys = [encoder(k.type) for k in table.keys]
    query = _query(table, None, 0, 0, None, None).where(table.shadow.c.deleted == 0)
    with node.db.connect() as conn:
        result = conn.execution_options(yield_per=5000).execute(query)
        for row in result:
            m = row._mapping
            if m["a_k0"] is None:
                continue
            parts = [] if table.surrogate else [keys[i](m[f"a_k{i}"]) for i in range(len(keys))]
            for i, column in enumerate(table.columns):
                if column.ref is not None:
                    parts.append(NULL if m[f"v{i}"] is None else str(m[f"g{i}"]))
                else:
                    parts.append(encoders[i](m[f"v{i}"]))
            yield m["gid"], "\x1f".join(parts)


def checksums(node: Node, table: SyncTable, buckets: int) -> dict[int, tuple[int, int]]:
    """bucket → (rows, sum of row hashes) for one table."""
    out: dict[int, tuple[int, int]] = {}
    for gid, text in row_texts(node, table):
        bucket = bucket_of(gid, buckets)
        count, total = out.get(bucket, (0, 0))
        out[bucket] = (count + 1, (total + row_hash(gid + "\x1e" + text)) & MASK)
    return out


def row_hashes(node: Node, table: SyncTable, buckets: int, wanted: set[int]) -> dict[str, int]:
    """global id → row hash, for the rows in the ``wanted`` buckets."""
    return {
        gid: row_hash(gid + "\x1e" + text)
        for gid, text in row_texts(node, table)
        if bucket_of(gid, buckets) in wanted
    }


def table_count(node: Node, table: SyncTable) -> int:
    """Rows present in a synced table, by its metadata."""
    from sqlalchemy import func, select

    with node.db.connect() as conn:
        s = table.shadow
        return int(conn.execute(select(func.count()).where(s.c.deleted == 0)).scalar_one())


@dataclass
class TableDiff:
    """How one table differs between the two nodes."""

    rows_here: int = 0
    rows_there: int = 0
    only_here: list[str] = field(default_factory=list)
    only_there: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """Whether the table holds the same rows on both nodes."""
        return not (self.only_here or self.only_there or self.different)


@dataclass
class VerifyReport:
    """What ``verify`` found (and repaired)."""

    here: str
    there: str
    tables: dict[str, TableDiff] = field(default_factory=dict)
    repaired: int = 0

    @property
    def same(self) -> bool:
        """Whether every synced table holds the same rows on both nodes."""
        return all(t.same for t in self.tables.values())


def prepare(node: Node) -> None:
    """Fold the capture logs, so the rows compared are the rows the node knows."""
    with node.write() as conn:
        state = node.lock(conn)
        if fold(node, conn, state):
            node.save(conn, state)


def verify(
    db: Database, peer: Database | str, *, repair: bool = False, progress: ProgressCallback | None = None
) -> VerifyReport:
    """Compare the synced tables of node ``db`` and node ``peer``; with ``repair``, fix them."""
    from erpsync.sync import fingerprint
    from erpsync.sync.peer import LocalPeer

    here = LocalPeer(db, owned=False)
    there = LocalPeer(peer)
    try:
        hello_here, hello_there = here.hello(), there.hello()
        fingerprint.check(here.label, hello_here, there.label, hello_there)
        report = VerifyReport(here.label, there.label)
        tables = here.node.tables()
        for n, table in enumerate(tables):
            if progress:
                progress("Comparing", n, len(tables))
            report.tables[table.name] = _compare(here.node, there.node, table)
        if progress:
            progress("Comparing", len(tables), len(tables))
        if repair and not report.same:
            report.repaired = _repair(here, there, report)
    finally:
        there.close()
    return report


def _compare(here: Node, there: Node, table: SyncTable) -> TableDiff:
    other = there.table(table.key)
    diff = TableDiff(table_count(here, table), table_count(there, other))
    buckets = buckets_for(max(diff.rows_here, diff.rows_there))
    mine, theirs = checksums(here, table, buckets), checksums(there, other, buckets)
    wanted = {b for b in set(mine) | set(theirs) if mine.get(b) != theirs.get(b)}
    if not wanted:
        return diff
    a, b = row_hashes(here, table, buckets, wanted), row_hashes(there, other, buckets, wanted)
    diff.only_here = sorted(set(a) - set(b))
    diff.only_there = sorted(set(b) - set(a))
    diff.different = sorted(g for g in set(a) & set(b) if a[g] != b[g])
    return diff


def _repair(here: Any, there: Any, report: VerifyReport) -> int:
    """Copy rows present on one side only; give differing rows this node's values."""
    from erpsync.sync.session import apply_with_references

    fixed = 0
    for name, diff in report.tables.items():
        if diff.same:
            continue
        table = here.node.table(name)
        ours = diff.only_here + diff.different
        if ours:
            touch(here.node, table, ours)
            apply_with_references(here, there, here.fetch(table.key, ours), {}, restore=True)
        if diff.only_there:
            apply_with_references(there, here, there.fetch(table.key, diff.only_there), {}, restore=True)
        fixed += len(ours) + len(diff.only_there)
    return fixed


def touch(node: Node, table: SyncTable, gids: list[str]) -> None:
    """Give rows a new local clock, as if just written here (their values will win)."""
    with node.write() as conn:
        state = node.lock(conn)
        fold(node, conn, state)
        TableRows(conn, node, table, state).restamp(gids)
        node.save(conn, state)

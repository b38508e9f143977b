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

The other node is a database (read here, as fast as this node) or a peer served
over HTTP or SSH, which computes its counts, checksums and row hashes itself
(``erpsync.transport.operations.Operations.verify``): only sums and hashes
travel, and with ``repair`` the rows that differ, through the peer's fetch and apply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from erpsync.db import Database
from erpsync.errors import ErpSyncError
from erpsync.sync.capture import fold
from erpsync.sync.changeset import _query
from erpsync.sync.encoding import NULL, encoder, row_hash
from erpsync.sync.model import SyncTable
from erpsync.sync.node import Node
from erpsync.sync.rows import TableRows

if TYPE_CHECKING:
    from erpsync.sync.peer import LocalPeer, Peer
    from erpsync.transport import PeerAddress

MASK = (1 << 64) - 1
MAX_BUCKETS = 4096
"""The most buckets a table is split into."""
ProgressCallback = Callable[[str, int, int], None]


def buckets_for(rows: int) -> int:
    """How many buckets to split a table of ``rows`` rows into (about 1,000 rows each)."""
    return max(16, min(MAX_BUCKETS, rows // 1000))


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
            parts = (
                []
                if table.surrogate
                else [str(m[f"a_g{i}"]) if k.ref else keys[i](m[f"a_k{i}"]) for i, k in enumerate(table.keys)]
            )
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
class Sums:
    """One table's side of a comparison, as one request answers it.

    Asked with no buckets: the row count only; with buckets: the count and
    each bucket's (rows, sum of row hashes); with wanted buckets: the count
    and the row hashes of those buckets.
    """

    rows: int
    checksums: dict[int, tuple[int, int]] = field(default_factory=dict)
    hashes: dict[str, int] = field(default_factory=dict)


def sums(node: Node, table: SyncTable, buckets: int = 0, wanted: Collection[int] | None = None) -> Sums:
    """``Sums`` of one table of a node read here (what a served node answers to ``verify``)."""
    out = Sums(table_count(node, table))
    if buckets and wanted is None:
        out.checksums = checksums(node, table, buckets)
    elif buckets and wanted:
        out.hashes = row_hashes(node, table, buckets, set(wanted))
    return out


@runtime_checkable
class Checksummed(Protocol):
    """A peer that computes a table's ``Sums`` itself (``HttpPeer``, ``SshPeer``)."""

    def verify(self, table: str, buckets: int = 0, wanted: Collection[int] | None = None) -> Sums:
        """The ``Sums`` of synced table ``table`` (see ``Sums``)."""
        ...


class Side(Protocol):
    """The three reads a comparison makes of one node, local or remote."""

    def count(self, table: SyncTable) -> int:
        """Rows present in the table."""
        ...

    def checksums(self, table: SyncTable, buckets: int) -> dict[int, tuple[int, int]]:
        """bucket → (rows, sum of row hashes)."""
        ...

    def row_hashes(self, table: SyncTable, buckets: int, wanted: set[int]) -> dict[str, int]:
        """global id → row hash, for the rows of the ``wanted`` buckets."""
        ...


class NodeSide:
    """A node read in this process: its rows are streamed and hashed here."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def count(self, table: SyncTable) -> int:
        return table_count(self.node, self.node.table(table.key))

    def checksums(self, table: SyncTable, buckets: int) -> dict[int, tuple[int, int]]:
        return checksums(self.node, self.node.table(table.key), buckets)

    def row_hashes(self, table: SyncTable, buckets: int, wanted: set[int]) -> dict[str, int]:
        return row_hashes(self.node, self.node.table(table.key), buckets, wanted)


class RemoteSide:
    """A peer over the network: it hashes its own rows, only the sums and hashes travel."""

    def __init__(self, peer: Checksummed) -> None:
        self.peer = peer

    def count(self, table: SyncTable) -> int:
        return self.peer.verify(table.key).rows

    def checksums(self, table: SyncTable, buckets: int) -> dict[int, tuple[int, int]]:
        return self.peer.verify(table.key, buckets).checksums

    def row_hashes(self, table: SyncTable, buckets: int, wanted: set[int]) -> dict[str, int]:
        return self.peer.verify(table.key, buckets, sorted(wanted)).hashes


class CannotVerify(ErpSyncError):
    """The peer cannot be compared (a shared folder, or a transport without the operation)."""


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
    db: Database,
    peer: Database | str | PeerAddress,
    *,
    repair: bool = False,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Compare the synced tables of node ``db`` and node ``peer``; with ``repair``, fix them.

    ``peer`` is a database, or any address ``open_peer`` reads: a database URL
    or SQLite path, ``http(s)://`` (``erpsync serve``) or ``ssh://``.
    """
    from erpsync.sync import fingerprint
    from erpsync.sync.peer import LocalPeer
    from erpsync.transport import open_peer

    here = LocalPeer(db, owned=False)
    there: Peer = LocalPeer(peer) if isinstance(peer, Database) else open_peer(peer)
    try:
        side = _side_of(there)
        hello_here, hello_there = here.hello(), there.hello()
        fingerprint.check(here.label, hello_here, there.label, hello_there)
        report = VerifyReport(here.label, there.label)
        tables = here.node.tables()
        mine = NodeSide(here.node)
        for n, table in enumerate(tables):
            if progress:
                progress("Comparing", n, len(tables))
            report.tables[table.name] = _compare(mine, side, table)
        if progress:
            progress("Comparing", len(tables), len(tables))
        if repair and not report.same:
            report.repaired = _repair(here, there, report)
    finally:
        there.close()
    return report


def _side_of(peer: Peer) -> Side:
    from erpsync.sync.peer import LocalPeer

    if isinstance(peer, LocalPeer):  # a database: read here, with no request in between
        return NodeSide(peer.node)
    if isinstance(peer, Checksummed):
        return RemoteSide(peer)
    raise CannotVerify(
        "{peer} cannot be compared with verify",
        "give a database, an http(s):// address (erpsync serve) or an ssh:// address",
        peer=peer.label,
    )


def _compare(here: Side, there: Side, table: SyncTable) -> TableDiff:
    diff = TableDiff(here.count(table), there.count(table))
    buckets = buckets_for(max(diff.rows_here, diff.rows_there))
    mine, theirs = here.checksums(table, buckets), there.checksums(table, buckets)
    wanted = {b for b in set(mine) | set(theirs) if mine.get(b) != theirs.get(b)}
    if not wanted:
        return diff
    a, b = here.row_hashes(table, buckets, wanted), there.row_hashes(table, buckets, wanted)
    diff.only_here = sorted(set(a) - set(b))
    diff.only_there = sorted(set(b) - set(a))
    diff.different = sorted(g for g in set(a) & set(b) if a[g] != b[g])
    return diff


def _repair(here: LocalPeer, there: Peer, report: VerifyReport) -> int:
    """Copy rows present on one side only; give differing rows this node's values.

    Only this node's rows are given a new clock (``touch``): the peer, local
    or remote, is written through its ``apply`` only.
    """
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

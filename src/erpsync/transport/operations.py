"""The operations a served node answers: one implementation for every channel (HTTP, SSH).

Each call reads the node afresh from its database and keeps nothing once it
returns, so several ``erpsync serve`` processes can serve one MariaDB or
PostgreSQL hub behind a load balancer: cursors, batch ids, peers and clocks
live in the database, and every operation is either a read or idempotent. The
only thing kept between calls is the reflected table definitions, reused
while the node's schema digest, fingerprint and table settings are unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, MetaData, Table

from erpsync.db import Database
from erpsync.sync.model import SyncTable, UnknownTable
from erpsync.sync.node import Node
from erpsync.sync.peer import LocalPeer
from erpsync.sync.verify import sums
from erpsync.transport import wire


class _Reflection:
    """Reflected synced tables, shared by the requests of one process, keyed by what they derive from."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: object = None
        self.tables: list[SyncTable] | None = None
        self.fixed: dict[str, Table] | None = None
        """erpsync's own tables (``meta.fixed_tables``): the same for every request."""


class _ServedNode(Node):
    """A node read at the start of a request; its reflected tables come from the process-wide cache."""

    def __init__(self, db: Database, shared: _Reflection) -> None:
        if shared.fixed is None:
            super().__init__(db)
            shared.fixed = self.meta
        else:  # Node.__init__ with the process's own tables: building them again took most of a
            # small request (a sync with nothing to do is three), and statements on the same Table
            # objects reuse their compiled SQL
            self.db = db
            self.dialect = db.dialect
            self.meta = shared.fixed
            self._md = MetaData()
            self._tables = None
            self._peers = {}
            with db.connect() as conn:
                self._load(conn)
            self._upgrade()
        self._shared = shared
        self._key = (
            self.node_id,
            self.digest,
            self.fingerprint,
            tuple((no, name, policy, settings.to_json()) for no, name, policy, settings in self.rows),
        )

    def tables(self, conn: Connection | None = None) -> list[SyncTable]:
        shared = self._shared
        with shared.lock:
            if shared.key == self._key and shared.tables is not None:
                return shared.tables
        tables = super().tables(conn)
        with shared.lock:
            shared.key, shared.tables = self._key, tables
        return tables


class _ServedPeer(LocalPeer):
    """``LocalPeer`` over a node read for one request (the database stays open for the process)."""

    def __init__(self, db: Database, node: Node) -> None:  # no super().__init__: the node is given
        self.db = db
        self.owned = False
        self.node = node


class Operations:
    """The sync protocol's operations on one database, each a plain request and response."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._reflection = _Reflection()

    def warm(self) -> None:
        """Reflect the synced tables now rather than in the first sync's requests (``serve``, at start)."""
        self._peer().node.tables()

    def _peer(self) -> _ServedPeer:
        return _ServedPeer(self.db, _ServedNode(self.db, self._reflection))

    def hello(self) -> wire.HelloOut:
        """Fold pending changes and describe the node."""
        return wire.hello_out(self._peer().hello())

    def cursors(self, node_id: str) -> wire.CursorsOut:
        """Up to where this node has applied ``node_id``'s changes."""
        return wire.CursorsOut(cursors=wire.cursors_out(self._peer().cursors(node_id)))

    def plan(self, request: wire.PlanIn) -> wire.PlanOut:
        """What to send to ``for_node``."""
        peer = self._peer()
        plan = peer.plan(wire.cursors_in(request.since), request.upto, request.for_node)
        return wire.PlanOut(plan=plan)

    def changes(
        self, table: str, stream: int, since: int, upto: int, for_node: str, batch_rows: int
    ) -> Iterator[bytes]:
        """The changes stream of one table and stream, one batch per line.

        The table is checked before the first line, so an unknown one is an
        error response rather than a cut stream.
        """
        peer = self._peer()
        return wire.batch_lines(peer.changes(table, stream, since, upto, for_node, batch_rows))

    def fetch(self, request: wire.FetchIn) -> wire.BatchOut:
        """The current state of rows a receiver lacks."""
        return wire.BatchOut(batch=wire.batch_text(self._peer().fetch(request.table, request.gids)))

    def advance(self, request: wire.AdvanceIn) -> wire.Done:
        """Move cursors with nothing to apply."""
        peer = self._peer()
        synced = {name.lower() for _, name, _, _ in peer.node.rows}
        for table, _ in request.streams:
            if table.lower() not in synced:
                raise UnknownTable(
                    "table {table} is not synced by {db}",
                    "list the synced tables with: erpsync node status {db}",
                    table=table,
                    db=peer.node.name,
                )
        streams = [(table.lower(), stream) for table, stream in request.streams]
        peer.advance(request.node_id, streams, request.upto)
        return wire.Done()

    def apply(self, request: wire.ApplyIn) -> wire.ApplyOut:
        """Apply a batch: idempotent by batch id, so a retried request changes nothing more."""
        peer = self._peer()
        batch = wire.read_batch(request.batch, nul=peer.node.dialect.stores_nul)
        wire.check_fits(batch, peer.node.table(batch.table))
        result = peer.apply(
            batch,
            dict(request.policies),
            restore=request.restore,
            skip=frozenset(request.skip),
            loose=frozenset(request.loose),
        )
        return wire.apply_out(result)

    def met(self, request: wire.MetIn) -> wire.Done:
        """Note a sync with a node."""
        self._peer().met(request.node_id, request.name, request.url)
        return wire.Done()

    def verify(self, request: wire.VerifyIn) -> wire.VerifyOut:
        """A synced table's row count, bucket checksums or row hashes, for ``erpsync verify``."""
        node = self._peer().node
        return wire.verify_out(sums(node, node.table(request.table), request.buckets, request.wanted))

    def call(self, op: str, args: Mapping[str, Any]) -> BaseModel | Iterator[bytes]:
        """Operation ``op`` with its arguments as a stream channel (SSH) carries them.

        HTTP routes each operation by path and query; a stream channel names it
        in a ``wire.CallIn``. The arguments are checked against the same wire
        models, then the same method answers: a model, or the changes stream's lines.
        """
        if op not in _CALLS:
            raise wire.MalformedRequest(
                "no operation {op}", "the operations are: {ops}", op=op[:50], ops=", ".join(_CALLS)
            )
        model, method = _CALLS[op]
        try:
            request = model.model_validate(args) if model is not None else None
        except ValidationError as exc:
            raise wire.malformed_request(exc, "send the request erpsync.transport.ssh sends") from None
        return method(self, request)


_Method = Callable[[Operations, Any], BaseModel | Iterator[bytes]]
_CALLS: dict[str, tuple[type[BaseModel] | None, _Method]] = {
    "hello": (None, lambda ops, _: ops.hello()),
    "cursors": (wire.CursorsIn, lambda ops, r: ops.cursors(r.node)),
    "plan": (wire.PlanIn, Operations.plan),
    "changes": (
        wire.ChangesIn,
        lambda ops, r: ops.changes(r.table, r.stream, r.since, r.upto, r.for_node, r.batch_rows),
    ),
    "fetch": (wire.FetchIn, Operations.fetch),
    "advance": (wire.AdvanceIn, Operations.advance),
    "apply": (wire.ApplyIn, Operations.apply),
    "met": (wire.MetIn, Operations.met),
    "verify": (wire.VerifyIn, Operations.verify),
}
"""Each operation a ``wire.CallIn`` names: the model of its arguments, and the method answering it."""

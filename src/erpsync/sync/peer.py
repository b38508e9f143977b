"""The other side of a sync, as a small interface transports implement.

A peer answers five questions, each a plain-data request and response, so
the HTTP, SSH and shared-folder transports (issue 6) implement the same
``Peer`` over their channel:

- ``hello``: who it is and the fingerprint of its schema (after folding its log);
- ``cursors``: up to where it has applied another node's changes;
- ``plan`` / ``changes``: its changes after given cursors, in batches;
- ``fetch``: the current state of given rows (referenced rows a receiver lacks);
- ``apply``: apply a batch, idempotently by batch id, and move the sender's cursor.

``LocalPeer`` is a database opened in this process (a URL or a SQLite file).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, select, update

from erpsync.db import Database, open_database
from erpsync.sync import changeset
from erpsync.sync.apply import ApplyResult, ConcurrentWrite, PolicyMap, apply_batch
from erpsync.sync.capture import fold
from erpsync.sync.changeset import Batch, Cursors
from erpsync.sync.meta import BATCHES, CURSORS, NODE, PEERS, log_name
from erpsync.sync.node import Node

PROTOCOL = 3
"""Version of what nodes send each other: 2 sends keys referencing other rows as their global ids,
3 sends batches column by column (``changeset.to_json``)."""


@dataclass(frozen=True)
class Hello:
    """What a node says about itself before a sync."""

    node_id: str
    name: str
    fingerprint: str
    shapes: dict[str, dict[str, Any]]
    seq: int
    """Its change sequence now: changes are sent up to it."""
    protocol: int = PROTOCOL


class Peer(Protocol):
    """A node sync talks to."""

    @property
    def label(self) -> str:
        """How it is named in messages."""

    @property
    def in_process(self) -> bool:
        """Whether its work runs on this process's CPU (SQLite opened here), not on a server's."""

    def hello(self) -> Hello:
        """Fold pending changes, then describe the node."""

    def cursors(self, node_id: str) -> Cursors:
        """What this node has applied of ``node_id``'s changes, per table and stream."""

    def plan(self, since: Cursors, upto: int, for_node: str) -> list[tuple[str, int, int]]:
        """(table, stream, rows) to send to ``for_node`` after ``since``, up to ``upto``."""

    def changes(
        self, table: str, stream: int, since: int, upto: int, for_node: str, batch_rows: int
    ) -> Generator[Batch, None, None]:
        """The batches of one table and stream."""

    def fetch(self, table: str, gids: list[str]) -> Batch:
        """The current state of rows ``gids``."""

    def advance(self, node_id: str, streams: list[tuple[str, int]], upto: int) -> None:
        """Move this node's cursors for ``node_id``'s ``streams`` to ``upto`` (nothing to send there)."""

    def prepare(self, batch: Batch, policies: PolicyMap) -> None:
        """Do ahead what sending ``batch`` to ``apply`` under ``policies`` costs (encoding it).

        The session calls it in its reading thread as batches are read, so a
        network peer encodes the next batch while the server applies this one.
        """

    def apply(
        self,
        batch: Batch,
        policies: PolicyMap,
        *,
        restore: bool = False,
        skip: frozenset[str] = frozenset(),
        loose: frozenset[str] = frozenset(),
    ) -> ApplyResult:
        """Apply ``batch`` (see ``apply.apply_batch``)."""

    def met(self, node_id: str, name: str, url: str | None) -> None:
        """Note a sync with node ``node_id``."""

    def close(self) -> None:
        """Release connections."""


class LocalPeer:
    """A node reached through a database URL or a SQLite path, in this process."""

    def __init__(self, target: Database | str, *, owned: bool | None = None) -> None:
        self.db = target if isinstance(target, Database) else open_database(target)
        self.owned = not isinstance(target, Database) if owned is None else owned
        self.node = Node(self.db)

    @property
    def label(self) -> str:
        return f"{self.node.name} ({self.db.name})"

    @property
    def in_process(self) -> bool:
        return self.db.dialect.name == "sqlite"

    def hello(self) -> Hello:
        node = self.node
        with self.db.connect() as conn:
            node.check_schema(conn)
            logs = [self.db.quote(log_name(number)) for number, _, _, _ in node.rows]
            probes = ", ".join(f"EXISTS (SELECT 1 FROM {log})" for log in logs)
            dirty = bool(logs) and any(conn.exec_driver_sql(f"SELECT {probes}").one())
        if dirty:
            for _ in range(3):
                try:
                    with node.write() as conn:
                        state = node.lock(conn)
                        fold(node, conn, state)
                        node.save(conn, state)
                    break
                except ConcurrentWrite:  # pragma: no cover - fold raises no such error
                    continue
        with self.db.connect() as conn:
            seq = int(conn.execute(select(node.meta[NODE].c.seq)).scalar_one())
        return Hello(node.node_id, node.name, node.fingerprint, node.shapes(), seq)

    def cursors(self, node_id: str) -> Cursors:
        node = self.node
        cursors = node.meta[CURSORS]
        peers = node.meta[PEERS]
        names = {no: name.lower() for no, name, _, _ in node.rows}
        with self.db.connect() as conn:
            rows = conn.execute(
                select(cursors.c.tbl, cursors.c.stream, cursors.c.seq)
                .join(peers, peers.c.no == cursors.c.peer)
                .where(peers.c.node_id == node_id)
            ).all()
        return {(names[r.tbl], int(r.stream)): int(r.seq) for r in rows if r.tbl in names}

    def plan(self, since: Cursors, upto: int, for_node: str) -> list[tuple[str, int, int]]:
        return changeset.plan(self.node, since, upto, for_node)

    def changes(
        self, table: str, stream: int, since: int, upto: int, for_node: str, batch_rows: int
    ) -> Generator[Batch, None, None]:
        return changeset.read_changes(
            self.node, self.node.table(table), stream, since, upto, for_node, batch_rows
        )

    def fetch(self, table: str, gids: list[str]) -> Batch:
        return changeset.fetch_rows(self.node, self.node.table(table), gids)

    def advance(self, node_id: str, streams: list[tuple[str, int]], upto: int) -> None:
        node = self.node
        cursors = node.meta[CURSORS]
        numbers = {name.lower(): number for number, name, _, _ in node.rows}
        with node.write() as conn:
            peer = node.peer_number(conn, node_id)
            for table, stream in streams:
                where = (
                    (cursors.c.peer == peer)
                    & (cursors.c.tbl == numbers[table])
                    & (cursors.c.stream == stream)
                )
                if conn.execute(update(cursors).where(where).values(seq=upto)).rowcount == 0:
                    values = {"peer": peer, "tbl": numbers[table], "stream": stream, "seq": upto}
                    conn.execute(cursors.insert().values(**values))

    def apply(
        self,
        batch: Batch,
        policies: PolicyMap,
        *,
        restore: bool = False,
        skip: frozenset[str] = frozenset(),
        loose: frozenset[str] = frozenset(),
    ) -> ApplyResult:
        return apply_batch(self.node, batch, policies, restore=restore, skip=skip, loose=loose)

    def prepare(self, batch: Batch, policies: PolicyMap) -> None:
        """Nothing to encode: the batch is applied as it is."""

    def met(self, node_id: str, name: str, url: str | None) -> None:
        peers = self.node.meta[PEERS]
        with self.node.write() as conn:
            self.node.peer_number(conn, node_id, name)
            values: dict[str, Any] = {"name": name, "last_sync": datetime.now().isoformat(timespec="seconds")}
            if url is not None:
                values["url"] = url
            conn.execute(update(peers).where(peers.c.node_id == node_id).values(**values))
            batches = self.node.meta[BATCHES]  # ids of batches applied more than 30 days ago
            month_ago = int(datetime.now().timestamp() * 1000) - 30 * 86_400_000
            conn.execute(delete(batches).where(batches.c.applied < month_ago))

    def close(self) -> None:
        if self.owned:
            self.db.close()

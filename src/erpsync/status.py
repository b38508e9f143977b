"""``erpsync status`` and ``erpsync peers test``: how this node stands, and whether its peers answer.

``node_report`` reads only what the node keeps anyway, in a few small queries:
the capture logs (rows changed here since the last sync: each sync folds
them), the sync history (``erpsync.sync.history``), the open conflicts and the
backup folder's manifests. It needs no peer.

``check_peer`` is the spec's "tester connexions réseau": it opens each peer the
way sync does (``open_peer``, or the shared folder's ``probe``) and times its
``hello``. Only the ``Peer`` interface is used, so every transport is tested
the same way; each failure is one line with a hint.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from erpsync import __version__
from erpsync.backup import Backup, default_folder, list_backups
from erpsync.db import Database
from erpsync.errors import AuthenticationFailed, BadUrl, ConnectionFailed, DatabaseNotFound, ErpSyncError
from erpsync.i18n import tr
from erpsync.sync import fingerprint, history
from erpsync.sync.meta import CONFLICTS, PEERS, log_name
from erpsync.sync.node import SELF, Node
from erpsync.sync.peer import PROTOCOL
from erpsync.transport import PeerAddress, open_peer, shown_url
from erpsync.transport.folder import FORMAT, probe


@dataclass
class PeerSync:
    """The last sync with one peer, as the history (or, before it, the peer table) tells."""

    name: str
    when: datetime | None
    received: int | None = None
    sent: int | None = None
    result: str | None = None
    """``ok``, ``error``, None while running or when only the date is known."""
    message: str | None = None
    direction: str | None = None


@dataclass
class NodeReport:
    """What ``erpsync status`` shows."""

    name: str
    node_id: str
    database: str
    pending: dict[str, int]
    """Rows changed here since the last sync (any peer), by table; tables without any are left out."""
    peers: list[PeerSync]
    open_conflicts: int
    backup_folder: Path
    last_backup: Backup | None = None


def node_report(db: Database, *, backup_folder: Path | None = None, history_rows: int = 200) -> NodeReport:
    """This node, its changes not synced yet, its last sync with each peer, conflicts and last backup."""
    node = Node(db)
    pending = {}
    with db.connect() as conn:
        for number, name, _, settings in node.rows:
            keys = ", ".join(f"k{i}" for i in range(max(len(settings.shape.get("key") or ()), 1)))
            log = db.quote(log_name(number))
            count = conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM (SELECT DISTINCT {keys} FROM {log}) t"
            ).scalar()
            if count:
                pending[name] = int(count)
        conflicts = node.meta[CONFLICTS]
        open_conflicts = conn.execute(
            select(func.count()).select_from(conflicts).where(conflicts.c.status == "open")
        ).scalar_one()
        peers_t = node.meta[PEERS]
        known = conn.execute(
            select(peers_t.c.node_id, peers_t.c.name, peers_t.c.last_sync).where(peers_t.c.no != SELF)
        ).all()
    peers: dict[str, PeerSync] = {}
    for record in history.recent(db, history_rows):  # newest first: the first one per peer wins
        key = record.peer_id or record.peer_name or "?"
        if key not in peers and record.direction != history.UNDO:
            peers[key] = PeerSync(
                record.peer_name or key,
                record.finished or record.started,
                record.received,
                record.sent,
                record.result,
                record.message,
                record.direction,
            )
    # nodes met before the history existed, or only through a shared folder; not those whose
    # changes only came relayed by a peer: this node never synced with them
    for row in known:
        if row.node_id not in peers and row.last_sync is not None:
            when = _parse(row.last_sync)
            peers[row.node_id] = PeerSync(row.name or row.node_id[:8], when)
    folder = Path(backup_folder) if backup_folder else default_folder(db)
    backups = list_backups(folder, db.name) if folder.is_dir() else []
    return NodeReport(
        node.name,
        node.node_id,
        db.name,
        pending,
        sorted(peers.values(), key=lambda p: p.name.lower()),
        int(open_conflicts),
        folder,
        backups[0] if backups else None,
    )


def _parse(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


# -- peers test ---------------------------------------------------------------------------------------


@dataclass
class PeerCheck:
    """What ``erpsync peers test`` found for one peer; ``None`` where the test did not get that far."""

    name: str
    url: str
    reachable: bool | None = None
    authenticated: bool | None = None
    version: str | None = None
    schema: bool | None = None
    latency: float | None = None
    """Seconds the ``hello`` took."""
    node: str | None = None
    """The peer's node name (or the nodes using a shared folder)."""
    reason: str | None = None
    hint: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return self.reason is None


def _kind(exc: ErpSyncError) -> str:
    """``unreachable``, ``refused`` (it answered but refused the login or token) or ``other``."""
    from erpsync.transport.http import PeerUnreachable, TlsFailed, TokenRefused  # httpx: only now

    if isinstance(exc, AuthenticationFailed | TokenRefused):
        return "refused"
    if isinstance(exc, ConnectionFailed | DatabaseNotFound | BadUrl | PeerUnreachable | TlsFailed):
        return "unreachable"
    return "other"


def check_peer(db: Database, address: PeerAddress) -> PeerCheck:
    """Reach ``address``, authenticate, compare versions and schemas, time its ``hello``."""
    check = PeerCheck(address.name or address.url, shown_url(address.url))
    node = Node(db)
    if address.scheme == "file":
        return _test_folder(check, db, address)
    try:
        peer = open_peer(address, retries=0)  # reachable now or not: no waiting on retries
    except ErpSyncError as exc:
        return _failed(check, exc)
    try:
        started = time.perf_counter()
        hello = peer.hello()
        check.latency = time.perf_counter() - started
    except ErpSyncError as exc:
        return _failed(check, exc)
    finally:
        peer.close()
    check.reachable = check.authenticated = True
    check.node = hello.name
    version = getattr(peer, "version", None) or __version__
    check.version = tr("erpsync {version}, protocol {protocol}", version=version, protocol=hello.protocol)
    if hello.protocol != PROTOCOL:
        check.reason = tr(
            "it speaks sync protocol {theirs}, this erpsync {mine}", theirs=hello.protocol, mine=PROTOCOL
        )
        check.hint = tr("install the same erpsync version on both")
        return check
    if hello.node_id == node.node_id:
        check.reason = tr("it is this node itself")
        check.hint = tr("give the address of another node")
        return check
    check.schema = hello.fingerprint == node.fingerprint
    if not check.schema:
        found = fingerprint.differences(node.shapes(), hello.shapes) or [tr("the schema fingerprints differ")]
        check.details = found
        check.reason = tr("it does not sync the same tables: {differences}", differences="; ".join(found))
        check.hint = tr(
            "make the schemas the same (erpsync db init on both), then run erpsync node init on both"
        )
    return check


def _failed(check: PeerCheck, exc: ErpSyncError) -> PeerCheck:
    kind = _kind(exc)
    check.reachable = kind != "unreachable"
    check.authenticated = False if kind == "refused" else None
    check.reason, check.hint = exc.message, exc.hint
    return check


def _test_folder(check: PeerCheck, db: Database, address: PeerAddress) -> PeerCheck:
    """A shared folder: reachable, writable (its "authentication"), and the schema of the nodes using it."""
    try:
        found = probe(address, db)
    except ErpSyncError as exc:
        check.reachable = False
        check.reason, check.hint = exc.message, exc.hint
        return check
    check.reachable = check.authenticated = found.writable
    check.latency = found.seconds
    check.version = tr("shared folder, format {format}", format=FORMAT)
    check.node = ", ".join(name for name, _, _ in found.nodes) or "-"
    known = [same for _, same, _ in found.nodes if same is not None]
    check.schema = all(known) if known else None
    if not all(known):
        others = [name for name, same, _ in found.nodes if same is False]
        check.reason = tr("{nodes} sync other tables than this node", nodes=", ".join(others))
        check.hint = tr(
            "make the schemas the same (erpsync db init on both), then run erpsync node init on both"
        )
    return check


def check_peers(db: Database, addresses: Sequence[PeerAddress]) -> list[PeerCheck]:
    """``check_peer`` for each address, in order."""
    return [check_peer(db, address) for address in addresses]

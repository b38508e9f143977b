"""The sync service (the spec's ERP_LAUNCHER_SYNC loop): sync with every configured peer, every interval.

``run`` reads ``erpsync.toml`` at each cycle (an edit needs no restart), syncs
this node with each peer in turn — database, HTTP, SSH or shared folder, all
through ``erpsync.sync.session.sync`` with the file's policies and backup
settings — then sleeps ``sync.interval`` seconds plus a random jitter, so the
PCs of an office do not all sync at once.

A peer that fails is retried after 1, 2, 4 … intervals (at most an hour),
and never stops the others. Ctrl-C stops the service: between syncs at once;
during a sync, after the batch being applied when ``stop`` is used (the CLI
sets it on the first Ctrl-C; a second one stops at once, the batch in flight
is rolled back).

The state — last and next run, each peer's result, failures and next try —
is a small JSON file beside the configuration (``erpsync.state.json``),
rewritten atomically. Not in the node's database: ``service status`` must
answer while the database is down or locked by a long sync, the file works
the same for every engine, and the heartbeat written every few seconds would
otherwise be a write transaction on the ERP's database. A heartbeat thread
keeps it fresh, so ``service status`` tells a running service from one that
stopped or was killed, on Windows as on Linux, with no PID check. A lock on
``erpsync.service.lock`` (the OS releases it when the process ends, however it
ends) keeps a second service from starting in the same instant.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from erpsync.config import DEFAULT_PATH, Config, load_config
from erpsync.db import Database, open_database
from erpsync.errors import ErpSyncError
from erpsync.i18n import tr
from erpsync.progress import ProgressCallback
from erpsync.sync.policies import PolicyOverride
from erpsync.sync.session import SyncSummary, sync
from erpsync.transport import PeerAddress, shown_url
from erpsync.transport.folder import FolderSummary, read_json, write_json

HEARTBEAT = 5.0
"""Seconds between two writes of the heartbeat."""
ALIVE_WITHIN = 15.0
"""A service whose heartbeat is older than this has stopped (killed, crashed, machine off)."""
MAX_BACKOFF = 3600.0
STATE_FORMAT = 1

log = logging.getLogger("erpsync.service")

OK, FAILED, INTERRUPTED = "ok", "failed", "interrupted"


class ServiceRunning(ErpSyncError):
    """Another service already runs with this configuration."""


class StopRequested(KeyboardInterrupt):
    """Ctrl-C deferred to the end of the batch being applied (raised from the progress callback)."""


def _now() -> datetime:
    return datetime.now().astimezone()


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _moment(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.astimezone()


def shown(value: str | None) -> str:
    """A stored time as people read it (local time, to the second)."""
    moment = _moment(value) if value else None
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class PeerState:
    """How the syncs with one peer went."""

    url: str
    result: str | None = None
    """``ok``, ``failed``, ``interrupted``, or None before the first try."""
    message: str | None = None
    hint: str | None = None
    last_try: str | None = None
    last_ok: str | None = None
    failures: int = 0
    """Failures in a row."""
    retry_at: str | None = None
    """While it is down: not tried before this time."""
    received: int = 0
    sent: int = 0
    conflicts: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class ServiceState:
    """What ``erpsync.state.json`` holds."""

    config: str
    pid: int | None = None
    host: str = ""
    running: bool = False
    started: str | None = None
    heartbeat: str | None = None
    stopped: str | None = None
    last_run: str | None = None
    next_run: str | None = None
    cycles: int = 0
    peers: dict[str, PeerState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The state as stored."""
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceState:
        """A stored state; fields it does not know are ignored (a newer erpsync wrote it)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "peers"}
        peers = {}
        for name, value in (data.get("peers") or {}).items():
            if isinstance(value, dict) and "url" in value:
                fields = PeerState.__dataclass_fields__
                peers[str(name)] = PeerState(**{k: v for k, v in value.items() if k in fields})
        return cls(**known, peers=peers)

    @property
    def alive(self) -> bool:
        """Whether the service that wrote it is running: it says so and its heartbeat is fresh."""
        beat = _moment(self.heartbeat) if self.heartbeat else None
        return self.running and beat is not None and _now() - beat < timedelta(seconds=ALIVE_WITHIN)


def state_path(config_path: Path) -> Path:
    """The state file of the service of ``config_path``: ``erpsync.state.json`` beside ``erpsync.toml``."""
    config_path = Path(config_path)
    return config_path.with_name(f"{config_path.stem}.state.json")


def read_state(config_path: Path = DEFAULT_PATH) -> ServiceState | None:
    """The service's state, or None if it never ran with this configuration."""
    data = read_json(state_path(config_path))
    if data is None:
        return None
    try:
        return ServiceState.from_json(data)
    except (TypeError, ValueError):
        return None


@dataclass
class ServiceStatus:
    """``erpsync service status``: running or not, and what its state file says."""

    running: bool
    state: ServiceState | None
    path: Path

    @property
    def died(self) -> bool:
        """Whether it stopped without saying so (killed, crashed, machine switched off)."""
        return self.state is not None and self.state.running and not self.running


def status(config_path: Path = DEFAULT_PATH) -> ServiceStatus:
    """Whether the service of ``config_path`` runs, with its last and next run and each peer's result."""
    state = read_state(config_path)
    return ServiceStatus(state is not None and state.alive, state, state_path(config_path))


def policy_overrides(config: Config) -> list[PolicyOverride]:
    """The configuration's policies, as ``--policy`` options would give them.

    ``sync.policy`` counts only when written in the file: the default must not
    hide the per-table policies set with ``erpsync node policy``.
    """
    out = []
    if "policy" in config.sync.model_fields_set:
        out.append(PolicyOverride.parse(config.sync.policy))
    out += [PolicyOverride.parse(f"{target}={policy}") for target, policy in config.sync.policies.items()]
    return out


def backoff(failures: int, interval: float) -> float:
    """Seconds before a peer that failed ``failures`` times in a row is tried again: 1, 2, 4 … intervals."""
    return float(min(interval * 2 ** max(failures - 1, 0), max(MAX_BACKOFF, interval)))


class Service:
    """One service run: its configuration, its state file, its stop flag.

    ``interval`` and ``jitter`` override the file's (tests use fractions of a
    second); ``say`` gets one line per sync, in the user's language;
    ``on_cycle`` is called after each cycle but the last.
    """

    def __init__(
        self,
        config_path: Path = DEFAULT_PATH,
        *,
        interval: float | None = None,
        jitter: float | None = None,
        stop: threading.Event | None = None,
        say: Callable[[str], None] | None = None,
        progress: ProgressCallback | None = None,
        on_cycle: Callable[[ServiceState], None] | None = None,
    ) -> None:
        self.path = Path(config_path)
        self.config = load_config(self.path)
        self.interval = interval
        self.jitter = jitter
        self.stop = stop or threading.Event()
        self.say = say or log.info
        self.progress = progress
        self.on_cycle = on_cycle
        self.lock = threading.Lock()
        self.state = read_state(self.path) or ServiceState(str(self.path))
        self.state.config = str(self.path)

    # -- the loop --------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> ServiceState:
        """Sync every interval until Ctrl-C or ``stop`` (one cycle with ``once``); the final state."""
        guard = FileLock(self.path.with_name(f"{self.path.stem}.service.lock"), thread_local=False)
        try:
            guard.acquire(timeout=0)
        except Timeout:
            raise self._already_running(read_state(self.path) or self.state) from None
        try:
            if self.state.alive and self.state.pid != os.getpid():  # another PC, through a shared folder
                raise self._already_running(self.state)
            return self._run(once)
        finally:
            guard.release()

    def _already_running(self, state: ServiceState) -> ServiceRunning:
        return ServiceRunning(
            "the service already runs with {config} (process {pid} on {host}, seen at {when})",
            "stop it first; see it with: erpsync service status",
            config=str(self.path),
            pid=state.pid,
            host=state.host,
            when=shown(state.heartbeat),
        )

    def _run(self, once: bool) -> ServiceState:
        with self.lock:
            self.state.pid, self.state.host = os.getpid(), platform.node()
            self.state.running, self.state.stopped = True, None
            self.state.started = self.state.heartbeat = _text(_now())
            self._save()
        beating = threading.Event()
        heart = threading.Thread(target=self._beat, args=(beating,), name="erpsync-heartbeat", daemon=True)
        heart.start()
        self.say(
            tr(
                "Service started: node {name}, {peers} peers, a sync every {interval} s.",
                name=self.config.node.name,
                peers=len(self.config.peers),
                interval=f"{self._interval():g}",
            )
        )
        try:
            while not self.stop.is_set():
                started = _now()
                self._cycle(started)
                if once or self.stop.is_set():
                    break
                interval = self._interval()
                jitter = random.uniform(0, self._jitter())
                wake = max(started + timedelta(seconds=interval), _now()) + timedelta(seconds=jitter)
                with self.lock:
                    self.state.next_run = _text(wake)
                    self._save()
                if self.on_cycle is not None:
                    self.on_cycle(self.state)
                self.say(tr("Next sync at {when}.", when=shown(self.state.next_run)))
                self._sleep_until(wake)
        except KeyboardInterrupt:
            pass
        finally:
            beating.set()
            heart.join()
            with self.lock:
                self.state.running, self.state.next_run = False, None
                self.state.stopped = _text(_now())
                self._save()
        if not once or self.stop.is_set():
            self.say(tr("Service stopped."))
        return self.state

    def _interval(self) -> float:
        return float(self.interval if self.interval is not None else self.config.sync.interval)

    def _jitter(self) -> float:
        return float(self.jitter if self.jitter is not None else self.config.sync.jitter)

    def _sleep_until(self, wake: datetime) -> None:
        """Sleep in short steps: Ctrl-C (a signal handler runs between them) and ``stop`` end it at once."""
        while not self.stop.is_set():
            left = (wake - _now()).total_seconds()
            if left <= 0:
                return
            self.stop.wait(min(left, 0.25))

    def _beat(self, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT):
            with self.lock:
                self.state.heartbeat = _text(_now())
                with contextlib.suppress(OSError):  # a full disk or a locked file: the next beat tries
                    self._save()

    def _save(self) -> None:
        self.state.heartbeat = _text(_now())
        write_json(state_path(self.path), self.state.to_json())

    # -- one cycle -------------------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            self.config = load_config(self.path)
        except ErpSyncError as exc:
            self.say(
                tr(
                    "The configuration cannot be read, the previous one is kept: {message}",
                    message=exc.message,
                )
            )

    def _cycle(self, started: datetime) -> None:
        self._reload()
        config = self.config
        with self.lock:
            self.state.last_run = _text(started)
            self.state.cycles += 1
            names = {p.name for p in config.peers}
            self.state.peers = {n: s for n, s in self.state.peers.items() if n in names}
            self._save()
        try:
            db = open_database(config.node.database)
        except ErpSyncError as exc:
            self.say(tr("This node's database cannot be opened: {message}", message=exc.message))
            return
        with db:
            for peer in config.peers:
                if self.stop.is_set():
                    return
                address = PeerAddress(peer.url, peer.secret(), peer.name)
                self._sync_one(db, peer.name, address, started)

    def _sync_one(self, db: Database, name: str, address: PeerAddress, started: datetime) -> None:
        with self.lock:
            peer = self.state.peers.setdefault(name, PeerState(shown_url(address.url)))
            peer.url = shown_url(address.url)
        retry = _moment(peer.retry_at) if peer.retry_at else None
        if retry is not None and retry > started:
            self.say(tr("{peer}: down, next try at {when}.", peer=name, when=shown(peer.retry_at)))
            return
        tried = _now()
        try:
            summary = sync(
                db,
                address,
                policies=policy_overrides(self.config),
                progress=self._progress,
                backup=self.config.backup,
            )
        except KeyboardInterrupt:
            with self.lock:
                peer.result, peer.last_try = INTERRUPTED, _text(tried)
                peer.message, peer.hint = tr("stopped during the sync"), None
                self._save()
            self.say(tr("{peer}: interrupted; the next sync resumes where it stopped.", peer=name))
            raise
        except Exception as exc:  # one peer failing never stops the others
            self._failed(peer, name, exc, started, tried)
            return
        self._succeeded(peer, name, summary, tried)

    def _progress(self, label: str, done: int, total: int) -> None:
        """Called after each batch: where a stop request takes effect."""
        if self.progress is not None:
            self.progress(label, done, total)
        if self.stop.is_set():
            raise StopRequested

    def _failed(self, peer: PeerState, name: str, exc: Exception, started: datetime, tried: datetime) -> None:
        if isinstance(exc, ErpSyncError):
            message, hint = exc.message, exc.hint
        else:
            message, hint = (
                f"{type(exc).__name__}: {exc}",
                tr("run again with --debug to see the SQL and the traceback"),
            )
        with self.lock:
            peer.failures += 1
            peer.result, peer.message, peer.hint = FAILED, message.splitlines()[0] if message else "", hint
            peer.last_try = _text(tried)
            peer.retry_at = _text(started + timedelta(seconds=backoff(peer.failures, self._interval())))
            peer.notes = []
            self._save()
        self.say(
            tr(
                "{peer}: failed ({n} in a row): {message}; next try at {when}.",
                peer=name,
                n=peer.failures,
                message=peer.message,
                when=shown(peer.retry_at),
            )
        )

    def _succeeded(self, peer: PeerState, name: str, summary: SyncSummary, tried: datetime) -> None:
        received = sum(t.received for t in summary.tables.values())
        sent = sum(t.sent for t in summary.tables.values())
        notes = list(summary.notes) if isinstance(summary, FolderSummary) else []
        with self.lock:
            peer.result, peer.message, peer.hint = OK, None, None
            peer.last_try = peer.last_ok = _text(tried)
            peer.failures, peer.retry_at = 0, None
            peer.received, peer.sent, peer.conflicts = received, sent, summary.conflicts
            peer.seconds, peer.notes = round(summary.seconds, 3), notes
            self._save()
        if summary.nothing_to_do:
            self.say(tr("{peer}: nothing to do ({seconds:.2f} s).", peer=name, seconds=summary.seconds))
        else:
            self.say(
                tr(
                    "{peer}: {received} rows received, {sent} sent, {conflicts} conflicts ({seconds:.1f} s).",
                    peer=name,
                    received=received,
                    sent=sent,
                    conflicts=summary.conflicts,
                    seconds=summary.seconds,
                )
            )
        for note in notes:
            self.say(tr("{peer}: {reason}", peer=name, reason=note))

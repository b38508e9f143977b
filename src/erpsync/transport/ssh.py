"""``SshPeer``: a node reached through the system ssh client, the way rsync reaches its remote side.

``ssh://[user@]host[:port]/PATH`` runs ``erpsync serve --stdio PATH`` on the
host and speaks the HTTP protocol's requests, framed, over the connection's
stdin and stdout (``erpsync.transport.stdio``): the online server needs no
open HTTP port, and SSH authenticates (keys; no token). PATH names the remote
node's database: an absolute path (``/srv/erp/erp.sqlite``), one under the
remote user's home (``/~/erp.sqlite``), a Windows path (``/C:/ERP/erp.sqlite``),
or a bare name (``/SERVEUR``): the node of that name in the remote erpsync.toml,
which keeps a MariaDB or PostgreSQL password on the server.

Options in the URL's query: ``erpsync=`` the remote command (default
``erpsync``), ``identity=`` a private key, ``config=`` the remote
erpsync.toml. ``ERPSYNC_SSH`` replaces the ssh program and adds options, like
rsync's ``-e``; ``~/.ssh/config`` applies as usual.

Only ``subprocess`` and threads: no fork, no signals, no POSIX-only call, so
PCs on Windows (10 and later ship OpenSSH's ssh.exe) run it as Linux does.
A connection broken after it worked is opened again and the request retried
(every operation is a read or idempotent); a changes stream resumes after the
last batch received.
"""

from __future__ import annotations

import os
import queue
import random
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Collection, Generator, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ValidationError

from erpsync.errors import ErpSyncError, InvalidArgument
from erpsync.i18n import tr
from erpsync.sync import changeset
from erpsync.sync.apply import ApplyResult, PolicyMap
from erpsync.sync.changeset import Batch, Cursors
from erpsync.sync.peer import PROTOCOL, Hello
from erpsync.sync.verify import Sums
from erpsync.transport import stdio, wire
from erpsync.transport.http import NotAPeer, PeerUnreachable, TokenRefused

Model = TypeVar("Model", bound=BaseModel)
SSH_ENV = "ERPSYNC_SSH"
"""The ssh program and options to run (like rsync's ``-e``), e.g. ``ssh -i C:/keys/erp -p 2222``."""
OPTIONS = ("erpsync", "identity", "config")
MAX_FRAME = 1 << 30
"""The largest answer accepted: a sanity bound, far above any batch."""
_NODE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_HOME = re.compile(r"~[A-Za-z0-9._-]*")
_WINDOWS_PATH = re.compile(r"[A-Za-z]:[/\\]")
_DEFAULTS = ("BatchMode=yes", "ConnectTimeout=10", "ServerAliveInterval=15", "ServerAliveCountMax=4")
_MISSING = ("command not found", "is not recognized as", "No such file or directory")
_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)
"""On Windows, ssh.exe opens no console window when the service runs without one."""


class SshMissing(ErpSyncError):
    """The ssh client cannot be run."""


class KeyRefused(TokenRefused):
    """The SSH server refused this PC's key."""


class HostKeyFailed(PeerUnreachable):
    """The SSH server's host key is unknown or has changed."""


class RemoteErpsyncMissing(NotAPeer):
    """SSH works, but the remote host has no erpsync where the URL says."""


# -- the address ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshAddress:
    """An ``ssh://`` peer URL, parsed: where to connect, and what to run there."""

    host: str
    user: str | None
    port: int | None
    target: str
    """The remote node: the DB argument of ``erpsync serve --stdio``."""
    erpsync: str = "erpsync"
    identity: str | None = None
    config: str | None = None

    @classmethod
    def parse(cls, url: str) -> SshAddress:
        """The address, or one ``InvalidArgument`` saying what is wrong."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        host = parts.hostname or ""
        if parts.scheme.lower() != "ssh" or not host or host.startswith("-") or port == -1:
            raise InvalidArgument(
                "{url} is not an SSH peer address",
                "write ssh://user@host/path/to/erp.sqlite, ssh://user@host:2222/~/erp.sqlite "
                "or ssh://user@host/NODE (a node of the remote erpsync.toml)",
                url=url,
            )
        path = unquote(parts.path)[1:]
        if not path:
            raise InvalidArgument(
                "{url} names no remote database",
                "add its path or node name: ssh://user@host/srv/erp/erp.sqlite or ssh://user@host/SERVEUR",
                url=url,
            )
        if _NODE_NAME.fullmatch(path) or _WINDOWS_PATH.match(path) or _HOME.match(path):
            target = path
        else:
            target = "/" + path
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - set(OPTIONS))
        if unknown:
            raise InvalidArgument(
                "unknown option {option} in {url}",
                "the options of an ssh:// peer are erpsync=, identity= and config=",
                option=unknown[0],
                url=url,
            )
        options = {name: values[-1] for name, values in query.items()}
        return cls(
            host=host,
            user=unquote(parts.username) if parts.username else None,
            port=port,
            target=target,
            erpsync=options.get("erpsync") or "erpsync",
            identity=options.get("identity"),
            config=options.get("config"),
        )

    @property
    def shown(self) -> str:
        """The URL without its options, for messages."""
        who = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        path = self.target if self.target.startswith("/") else "/" + self.target
        return f"ssh://{who}{host}{port}{path}"

    def remote_command(self) -> str:
        """What the remote shell runs (POSIX quoting, as ssh hands it a single line)."""
        words = [shlex.quote(word) for word in split_command(self.erpsync, posix=True)]
        if self.config:
            words += ["--config", _quote_path(self.config)]
        return " ".join([*words, "serve", "--stdio", _quote_path(self.target)])

    def command(self, ssh: Sequence[str]) -> list[str]:
        """The local command line: ssh, its options, the host, the remote command.

        The options given (``ERPSYNC_SSH``, ``~/.ssh/config``) come first and so
        win over these defaults: no prompt (a service has no one to answer it),
        no terminal (the frames are binary), keepalives so a dead connection ends.
        """
        command = list(ssh)
        if self.identity:
            command += ["-i", self.identity]
        if self.port:
            command += ["-p", str(self.port)]
        if self.user:
            command += ["-l", self.user]
        for option in _DEFAULTS:
            command += ["-o", option]
        return [*command, "-T", "-x", "--", self.host, self.remote_command()]


def _quote_path(path: str) -> str:
    """A path quoted for the remote shell, a leading ``~`` or ``~user`` left for it to expand."""
    home = _HOME.match(path)
    if home and (len(path) == home.end() or path[home.end()] == "/"):
        rest = path[home.end() + 1 :]
        return home.group() + ("/" + shlex.quote(rest) if rest else "")
    return shlex.quote(path)


def split_command(text: str, *, posix: bool | None = None) -> list[str]:
    """A command line split into words (Windows paths with backslashes kept as they are)."""
    posix = os.name != "nt" if posix is None else posix
    words = shlex.split(text, posix=posix)
    return words if posix else [w[1:-1] if len(w) > 1 and w[0] == w[-1] == '"' else w for w in words]


def ssh_program() -> list[str]:
    """The ssh client and its options: ``ERPSYNC_SSH``, else ssh on the PATH (or Windows' own)."""
    given = os.environ.get(SSH_ENV, "").strip()
    if given:
        return split_command(given)
    found = shutil.which("ssh")
    if found is None and os.name == "nt":
        bundled = Path(os.environ.get("SYSTEMROOT", r"C:\Windows")) / "System32" / "OpenSSH" / "ssh.exe"
        found = str(bundled) if bundled.is_file() else None
    return [found or "ssh"]


# -- the connection ------------------------------------------------------------------------------


class _Broken(Exception):
    """The connection ended or stopped answering (the reason, when there is one beyond ssh's stderr)."""

    def __init__(self, reason: str = "", *, hung: bool = False) -> None:
        super().__init__(reason)
        self.hung = hung
        """Nothing came in time: ssh is still running, and must be ended rather than waited for."""


class _Channel:
    """One ssh process running ``erpsync serve --stdio`` remotely: its pipes, and what it said on stderr.

    Both output pipes are read by threads: stderr must be drained or a chatty
    remote could fill it and stall, and stdout through a queue gives reads a
    timeout on every platform (Windows pipes have no ``select``). The queue is
    bounded, so a server streaming faster than batches are applied waits
    (about 4 MiB ahead) rather than filling this process's memory.
    """

    def __init__(self, command: list[str], timeout: float) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            creationflags=_NO_WINDOW,
        )
        self.timeout = timeout
        self.chunks: queue.Queue[bytes] = queue.Queue(maxsize=64)
        self.buffer = bytearray()
        self.ended = False
        self.closing = False
        """Set when the connection ends: what still comes is read and dropped, so the process can exit."""
        self.stderr: deque[str] = deque(maxlen=50)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.threads = [
            threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._collect, args=(self.process.stderr,), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        try:
            while chunk := stream.read1(1 << 16):  # type: ignore[attr-defined]
                if not self.closing:
                    self.chunks.put(chunk)
        except (OSError, ValueError):
            pass
        finally:
            self.chunks.put(b"")

    def _collect(self, stream: IO[bytes]) -> None:
        with suppress(OSError, ValueError):
            for line in stream:
                text = line.decode("utf-8", "replace").strip()
                if text:
                    self.stderr.append(text)

    def read(self, size: int) -> bytes:
        """``size`` bytes, or fewer at the end of the stream; ``_Broken`` when nothing comes in time."""
        while len(self.buffer) < size and not self.ended:
            try:
                chunk = self.chunks.get(timeout=self.timeout)
            except queue.Empty:
                raise _Broken(
                    tr("no answer in {seconds} s", seconds=round(self.timeout)), hung=True
                ) from None
            if chunk:
                self.buffer += chunk
            else:
                self.ended = True
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def frame(self) -> tuple[int, bytes]:
        """The next frame; ``_Broken`` when the stream ends or is garbled (ssh's stderr says why)."""
        try:
            received = stdio.read_frame(self.read, MAX_FRAME)
        except stdio.FrameError as exc:
            raise _Broken(str(exc)) from None
        if received is None:
            raise _Broken()
        return received

    def send(self, data: bytes) -> None:
        stream = self.process.stdin
        assert stream is not None
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):  # BrokenPipeError, or closed: the process is gone
            raise _Broken() from None

    def finish(self, *, now: bool = False) -> tuple[int, list[str]]:
        """End the process, its exit status and stderr lines.

        Its stdin closes, so the remote erpsync stops once it has answered;
        ``now`` ends ssh at once instead (a stream left midway would go on).
        """
        self.closing = True
        with suppress(queue.Empty):  # a reader waiting for room in the queue goes on, and drops the rest
            while True:
                self.chunks.get_nowait()
        if self.process.stdin is not None:
            with suppress(OSError, ValueError):
                self.process.stdin.close()
        if now:
            self.process.kill()
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for thread in self.threads:
            thread.join(timeout=2)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                with suppress(OSError, ValueError):
                    stream.close()
        return code, list(self.stderr)


# -- the peer ------------------------------------------------------------------------------------


class SshPeer:
    """A node reached through ssh at ``url`` (``ssh://[user@]host[:port]/PATH[?options]``)."""

    in_process = False

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        ssh: Sequence[str] | None = None,
    ) -> None:
        self.address = SshAddress.parse(url)
        self._given = (url, ssh)
        self.url = self.address.shown
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.command = self.address.command(ssh if ssh is not None else ssh_program())
        self.version: str | None = None
        self._channel: _Channel | None = None
        self._worked = False
        """A connection succeeded once: a later failure to connect is the network's, and retried."""
        self._busy = threading.Lock()
        """Held while a request, or a stream of changes, has the connection."""
        self._spare: SshPeer | None = None
        """A second connection, for a request made while a stream of changes is open (a fetch)."""
        self._applies = wire.ApplyRequests(lambda request: request.model_dump_json().encode())

    @property
    def label(self) -> str:
        """The peer's node name (once known) and its address."""
        return f"{self.name} ({self.url})" if self.name else self.url

    # -- Peer ------------------------------------------------------------------------------------

    def hello(self) -> Hello:
        data = self._call("hello", None, wire.HelloOut)
        hello = wire.hello_in(data, self.label)
        self.name, self.version = data.name, data.version
        return hello

    def cursors(self, node_id: str) -> Cursors:
        return wire.cursors_in(self._call("cursors", wire.CursorsIn(node=node_id), wire.CursorsOut).cursors)

    def plan(self, since: Cursors, upto: int, for_node: str) -> list[tuple[str, int, int]]:
        request = wire.PlanIn(since=wire.cursors_out(since), upto=upto, for_node=for_node)
        return self._call("plan", request, wire.PlanOut).plan

    def changes(
        self, table: str, stream: int, since: int, upto: int, for_node: str, batch_rows: int
    ) -> Generator[Batch, None, None]:
        """The batches, one frame each; a connection broken midway is opened again after the last batch.

        The stream holds the connection until it ends or is closed; one asked
        for meanwhile (a stream left open by a caller) goes on the spare one.
        """
        if not self._busy.acquire(blocking=False):
            yield from self._second().changes(table, stream, since, upto, for_node, batch_rows)
            return
        try:
            yield from self._stream(table, stream, since, upto, for_node, batch_rows)
        finally:
            self._busy.release()

    def _stream(
        self, table: str, stream: int, since: int, upto: int, for_node: str, batch_rows: int
    ) -> Iterator[Batch]:
        start, failures = since, 0
        while start < upto:
            request = stdio.frame(
                stdio.REQUEST,
                _call_text(
                    "changes",
                    wire.ChangesIn(
                        table=table,
                        stream=stream,
                        since=start,
                        upto=upto,
                        for_node=for_node,
                        batch_rows=batch_rows,
                    ),
                ),
            )
            channel: _Channel | None = None
            in_step = False
            try:
                channel = self._open()
                channel.send(request)
                while True:
                    kind, payload = channel.frame()
                    if kind == stdio.BATCH:
                        batch = self._batch(payload)
                        if not start < batch.upto <= upto:
                            raise self._not_a_peer(f"batch up to {batch.upto} after {start}")
                        start, failures = batch.upto, 0
                        yield batch
                    elif kind == stdio.END:
                        in_step = True
                        break
                    else:
                        in_step = kind == stdio.ERROR
                        raise self._unexpected(kind, payload)
            except (_Broken, PeerUnreachable) as exc:
                problem = self._retryable(exc)
                failures += 1
                if failures > self.retries:
                    raise problem from None
                self._pause(failures - 1)
                continue
            finally:
                if not in_step and channel is not None and self._channel is channel:
                    self._drop(now=True)  # the rest of this stream would answer the next request
            if start < upto:
                raise self._not_a_peer(tr("the stream of changes ended early"))

    def fetch(self, table: str, gids: list[str]) -> Batch:
        data = self._call("fetch", wire.FetchIn(table=table, gids=gids), wire.BatchOut)
        return self._batch(data.batch.encode())

    def advance(self, node_id: str, streams: list[tuple[str, int]], upto: int) -> None:
        self._call("advance", wire.AdvanceIn(node_id=node_id, streams=streams, upto=upto), wire.Done)

    def apply(
        self,
        batch: Batch,
        policies: PolicyMap,
        *,
        restore: bool = False,
        skip: frozenset[str] = frozenset(),
        loose: frozenset[str] = frozenset(),
    ) -> ApplyResult:
        request = self._applies.request(batch, policies, restore=restore, skip=skip, loose=loose)
        return wire.apply_in(self._call("apply", request, wire.ApplyOut))

    def prepare(self, batch: Batch, policies: PolicyMap) -> None:
        self._applies.prepare(batch, policies)

    def met(self, node_id: str, name: str, url: str | None) -> None:
        self._call("met", wire.MetIn(node_id=node_id, name=name, url=url), wire.Done)

    def verify(self, table: str, buckets: int = 0, wanted: Collection[int] | None = None) -> Sums:
        """A synced table's sums, computed by the remote node (``erpsync.sync.verify.Sums``)."""
        request = wire.VerifyIn(table=table, buckets=buckets, wanted=None if wanted is None else list(wanted))
        return wire.verify_in(self._call("verify", request, wire.VerifyOut))

    def close(self) -> None:
        """End the connection: the remote erpsync sees its stdin close and stops."""
        self._drop()
        if self._spare is not None:
            self._spare.close()

    # -- requests --------------------------------------------------------------------------------

    def _call(self, op: str, body: BaseModel | bytes | None, model: type[Model]) -> Model:
        """One request and its answer; on a second connection while a stream of changes is open.

        The stream's next frames would otherwise be read as the answer: a pull
        fetches the parents a batch lacks while the rest of the stream is coming.
        """
        if not self._busy.acquire(blocking=False):
            return self._second()._call(op, body, model)
        try:
            return self._ask(op, body, model)
        finally:
            self._busy.release()

    def _second(self) -> SshPeer:
        """The spare connection's peer, started on first use, closed with this one."""
        if self._spare is None:
            url, ssh = self._given
            self._spare = SshPeer(
                url, name=self.name, timeout=self.timeout, retries=self.retries, backoff=self.backoff, ssh=ssh
            )
            self._spare._worked = self._worked  # one connection worked: a failure to open is retried
        return self._spare

    def _ask(self, op: str, body: BaseModel | bytes | None, model: type[Model]) -> Model:
        """One request and its answer, retried on a new connection when the connection breaks."""
        request = stdio.frame(stdio.REQUEST, _call_text(op, body))
        for attempt in range(self.retries + 1):
            try:
                channel = self._open()
                channel.send(request)
                kind, payload = channel.frame()
                break
            except (_Broken, PeerUnreachable) as exc:
                problem = self._retryable(exc)
                if attempt == self.retries:
                    raise problem from None
                self._pause(attempt)
        else:  # pragma: no cover - the loop breaks or raises
            raise AssertionError("unreachable")
        if kind != stdio.ANSWER:
            raise self._unexpected(kind, payload)
        try:
            return model.model_validate_json(payload)
        except ValidationError as exc:
            raise self._not_a_peer(str(exc).splitlines()[0]) from None

    def _open(self) -> _Channel:
        """The connection, started if need be: ssh runs, the remote erpsync greets."""
        if self._channel is None:
            self._channel = self._start()
            self._worked = True
        return self._channel

    def _retryable(self, exc: _Broken | PeerUnreachable) -> ErpSyncError:
        """The error of a failed exchange, raised at once unless trying again may help.

        A connection that breaks, or cannot be opened again after one worked,
        is the network's fault: retried. A first connection that fails (wrong
        key, no erpsync there, host down) is reported at once.
        """
        if isinstance(exc, _Broken):
            return self._lost(exc)
        if not self._worked:
            raise exc
        return exc

    def _start(self) -> _Channel:
        try:
            channel = _Channel(self.command, self.timeout)
        except OSError as exc:
            raise SshMissing(
                "cannot run the ssh client {ssh}: {reason}",
                "install OpenSSH's client (on Windows: Settings, Apps, Optional features, OpenSSH Client), "
                "or name the ssh program in ERPSYNC_SSH",
                ssh=self.command[0],
                reason=exc.strerror or str(exc),
            ) from None
        try:
            first = channel.read(len(stdio.MAGIC))
            if first != stdio.MAGIC:
                raise self._not_erpsync(channel, first)
            kind, payload = channel.frame()
            if kind != stdio.GREETING:
                raise self._unexpected(kind, payload)
            greeting = wire.Greeting.model_validate_json(payload)
        except _Broken as broken:
            if broken.hung:  # ssh connects, but erpsync never greets
                channel.finish(now=True)
                raise self._unreachable(str(broken)) from None
            raise self._failed_start(channel, str(broken)) from None
        except ValidationError as exc:
            channel.finish()
            raise self._not_a_peer(str(exc).splitlines()[0]) from None
        except ErpSyncError:
            channel.finish()
            raise
        if greeting.protocol != PROTOCOL:
            channel.finish()
            raise wire.ProtocolMismatch(
                "peer {peer} speaks sync protocol {theirs}, this erpsync speaks {ours}",
                "install the same erpsync version on both nodes (the peer runs {version})",
                peer=self.label,
                theirs=greeting.protocol,
                ours=PROTOCOL,
                version=greeting.version,
            )
        return channel

    def _drop(self, *, now: bool = False) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.finish(now=now)

    def _lost(self, broken: _Broken) -> ErpSyncError:
        """The error of a connection that broke after it worked (the channel is dropped)."""
        channel, self._channel = self._channel, None
        assert channel is not None
        code, lines = channel.finish(now=broken.hung)
        reason = str(broken) or _last(lines) or tr("ssh exited with status {code}", code=code)
        return self._unreachable(reason)

    def _failed_start(self, channel: _Channel, reason: str) -> ErpSyncError:
        """Why ssh or the remote erpsync stopped before greeting, from the exit status and stderr."""
        code, lines = channel.finish()
        text = "\n".join(lines)
        last = _last(lines) or reason or tr("ssh exited with status {code}", code=code)
        if "--stdio" in text and ("No such option" in text or "no such option" in text):
            return wire.ProtocolMismatch(
                "erpsync on peer {peer} is too old to serve over SSH ({reason})",
                "install the same erpsync version on both nodes",
                peer=self.label,
                reason=last,
            )
        if code == 127 or any(sign in text for sign in _MISSING):
            return RemoteErpsyncMissing(
                "peer {peer} has no erpsync at {command}: {reason}",
                "install erpsync there, or give its path in the URL: ?erpsync=/opt/erpsync/.venv/bin/erpsync",
                peer=self.label,
                command=self.address.erpsync,
                reason=last,
            )
        if code == 255:  # ssh's own failure: the connection or the login
            if "Permission denied" in text or "Too many authentication failures" in text:
                return KeyRefused(
                    "peer {peer} refused this PC's SSH key: {reason}",
                    "add this PC's public key to ~/.ssh/authorized_keys of the remote user, "
                    "or give the key with ?identity=C:/Users/me/.ssh/id_ed25519 (or in ERPSYNC_SSH)",
                    peer=self.label,
                    reason=last,
                )
            if "Host key verification failed" in text or "HOST IDENTIFICATION HAS CHANGED" in text:
                return HostKeyFailed(
                    "the SSH host key of peer {peer} cannot be checked: {reason}",
                    "connect once with ssh to {host}, check the key it shows and accept it",
                    peer=self.label,
                    host=self.address.host,
                    reason=last,
                )
            return self._unreachable(last)
        return self._not_a_peer(last)

    def _not_erpsync(self, channel: _Channel, first: bytes) -> ErpSyncError:
        """The remote side printed something other than erpsync's first line."""
        if not first:
            return self._failed_start(channel, "")
        shown = (first + bytes(channel.buffer[:200])).decode("utf-8", "replace").strip().splitlines()
        channel.finish()
        line = shown[0][:120] if shown else ""
        if first.startswith(b"erpsync-stdio "):
            return wire.ProtocolMismatch(
                "peer {peer} frames its answers as {theirs}, this erpsync as {ours}",
                "install the same erpsync version on both nodes",
                peer=self.label,
                theirs=line,
                ours=stdio.MAGIC.decode().strip(),
            )
        return NotAPeer(
            "peer {peer} does not answer as erpsync serve --stdio: it printed {text}",
            "the remote user's shell startup files must print nothing (as for rsync); "
            "check the path of erpsync (?erpsync=)",
            peer=self.label,
            text=repr(line),
        )

    def _unexpected(self, kind: int, payload: bytes) -> ErpSyncError:
        """The error an answer other than the one expected stands for."""
        if kind == stdio.ERROR:
            try:
                return wire.remote_error(wire.ErrorOut.model_validate_json(payload), self.label)
            except ValidationError as exc:
                return self._not_a_peer(str(exc).splitlines()[0])
        return self._not_a_peer(f"frame {chr(kind)!r}")

    def _batch(self, payload: bytes) -> Batch:
        try:
            return changeset.from_json(payload.decode())
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError) as exc:
            raise self._not_a_peer(f"{type(exc).__name__}: {exc}") from None

    def _pause(self, attempt: int) -> None:
        time.sleep(min(self.backoff * 2**attempt, 30.0) * random.uniform(0.5, 1.0))

    def _unreachable(self, reason: str) -> PeerUnreachable:
        return PeerUnreachable(
            "cannot reach peer {peer} over SSH: {reason}",
            "check the host, port and user in the URL, and that the SSH server runs there",
            peer=self.label,
            reason=reason,
        )

    def _not_a_peer(self, reason: str) -> NotAPeer:
        return NotAPeer(
            "peer {peer} does not answer as erpsync serve --stdio: {reason}",
            "check the URL and that the remote erpsync is the same version as this one",
            peer=self.label,
            reason=reason,
        )


def _call_text(op: str, body: BaseModel | bytes | None) -> bytes:
    """A ``wire.CallIn`` as JSON, the body serialized once (a batch is large; ``bytes``: it is)."""
    args = body if isinstance(body, bytes) else b"{}" if body is None else body.model_dump_json().encode()
    return b'{"op":"' + op.encode() + b'","args":' + args + b"}"


def _last(lines: list[str]) -> str:
    """The last line of stderr, with the one before when it is the remote erpsync's hint."""
    if not lines:
        return ""
    if len(lines) > 1 and lines[-1].startswith(("Try: ", "Essayez : ")):
        return f"{lines[-2]} ({lines[-1]})"
    return lines[-1]

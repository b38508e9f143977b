"""``HttpPeer``: a node served by ``erpsync serve``, reached over HTTP or HTTPS.

Implements ``erpsync.sync.peer.Peer`` with httpx. Network errors and 5xx
answers are retried with exponential backoff: every operation is a read or
idempotent (apply by batch id, advance and met by value), so a retry never
applies anything twice. A changes stream cut in the middle resumes after the
last batch received; a sync stopped altogether resumes, when run again, from
the cursors of the batches applied.

A self-signed server certificate is trusted by adding ``?ca=/path/cert.pem``
to the peer's URL (or through ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import random
import ssl
import time
import zlib
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ValidationError

from erpsync import __version__
from erpsync.errors import ErpSyncError, InvalidArgument
from erpsync.i18n import tr
from erpsync.sync import changeset
from erpsync.sync.apply import ApplyResult, PolicyMap
from erpsync.sync.changeset import Batch, Cursors
from erpsync.sync.peer import PROTOCOL, Hello
from erpsync.sync.verify import Sums
from erpsync.transport import shown_url, wire

Model = TypeVar("Model", bound=BaseModel)
GZIP_ABOVE = 16 * 1024
"""Request bodies larger than this are sent gzip-compressed."""


class PeerUnreachable(ErpSyncError):
    """The peer does not answer (down, wrong address, firewall, timeout)."""


class TokenRefused(ErpSyncError):
    """The peer refused this node's token (401)."""


class TlsFailed(ErpSyncError):
    """The TLS handshake with the peer failed (certificate, or HTTP spoken to HTTPS)."""


class NotAPeer(ErpSyncError):
    """The address answers, but not with erpsync's protocol."""


class HttpPeer:
    """A node reached through ``erpsync serve`` at ``url``, authenticated by ``token``."""

    in_process = False

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        name: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not _port_ok(parts.netloc):
            raise InvalidArgument(
                "{url} is not the address of a served node",
                "write http://host:port or https://host:port, the address erpsync serve prints",
                url=shown_url(url),
            )
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.name = name
        self.retries = retries
        self.backoff = backoff
        self.version: str | None = None
        headers = {
            "User-Agent": f"erpsync/{__version__}",
            wire.PROTOCOL_HEADER: str(PROTOCOL),
            "Accept-Encoding": "gzip",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._applies = wire.ApplyRequests(_body)
        self.client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            verify=_verify(parts.scheme, parse_qs(parts.query).get("ca", [None])[0]),
        )

    @property
    def label(self) -> str:
        """The peer's node name (once known) and its URL."""
        url = shown_url(self.url)
        return f"{self.name} ({url})" if self.name else url

    # -- Peer ------------------------------------------------------------------------------------

    def hello(self) -> Hello:
        data = self._call("GET", "/hello", wire.HelloOut)
        hello = wire.hello_in(data, self.label)
        self.name, self.version = data.name, data.version
        return hello

    def cursors(self, node_id: str) -> Cursors:
        data = self._call("GET", "/cursors", wire.CursorsOut, params={"node": node_id})
        return wire.cursors_in(data.cursors)

    def plan(self, since: Cursors, upto: int, for_node: str) -> list[tuple[str, int, int]]:
        request = wire.PlanIn(since=wire.cursors_out(since), upto=upto, for_node=for_node)
        return self._call("POST", "/plan", wire.PlanOut, body=request).plan

    def changes(
        self, table: str, stream: int, since: int, upto: int, for_node: str, batch_rows: int
    ) -> Generator[Batch, None, None]:
        """The batches, streamed; a stream cut short is asked for again after the last batch received."""
        start, failures = since, 0
        while start < upto:
            params: dict[str, str | int] = {
                "table": table,
                "stream": stream,
                "since": start,
                "upto": upto,
                "for_node": for_node,
                "batch_rows": batch_rows,
            }
            problem: Exception | None = None
            try:
                with self.client.stream("GET", wire.PREFIX + "/changes", params=params) as response:
                    if response.status_code != 200:
                        response.read()
                        problem = self._error_of(response)
                        if response.status_code < 500:
                            raise problem
                    else:
                        for line in _lines(response.iter_bytes()):
                            batch = _batch(line, self.label)
                            if not start < batch.upto <= upto:
                                raise self._not_a_peer(f"batch up to {batch.upto} after {start}")
                            start, failures = batch.upto, 0
                            yield batch
            except httpx.RequestError as exc:
                problem = self._transport_problem(exc)
                if isinstance(problem, TlsFailed):
                    raise problem from None
            if start < upto:  # cut short (or refused with a 5xx): ask again for the rest
                failures += 1
                if failures > self.retries:
                    raise problem or self._unreachable(tr("the stream of changes ended early"))
                self._pause(failures - 1)

    def fetch(self, table: str, gids: list[str]) -> Batch:
        data = self._call("POST", "/fetch", wire.BatchOut, body=wire.FetchIn(table=table, gids=gids))
        return _batch(data.batch.encode(), self.label)

    def advance(self, node_id: str, streams: list[tuple[str, int]], upto: int) -> None:
        request = wire.AdvanceIn(node_id=node_id, streams=streams, upto=upto)
        self._call("POST", "/advance", wire.Done, body=request)

    def apply(
        self,
        batch: Batch,
        policies: PolicyMap,
        *,
        restore: bool = False,
        skip: frozenset[str] = frozenset(),
        loose: frozenset[str] = frozenset(),
    ) -> ApplyResult:
        body = self._applies.request(batch, policies, restore=restore, skip=skip, loose=loose)
        return wire.apply_in(self._call("POST", "/apply", wire.ApplyOut, body=body))

    def prepare(self, batch: Batch, policies: PolicyMap) -> None:
        self._applies.prepare(batch, policies)

    def met(self, node_id: str, name: str, url: str | None) -> None:
        self._call("POST", "/met", wire.Done, body=wire.MetIn(node_id=node_id, name=name, url=url))

    def close(self) -> None:
        self.client.close()

    # -- verify ----------------------------------------------------------------------------------

    def verify(self, table: str, buckets: int = 0, wanted: Collection[int] | None = None) -> Sums:
        """A synced table's sums, computed by the served node (``erpsync.sync.verify.Sums``)."""
        request = wire.VerifyIn(table=table, buckets=buckets, wanted=None if wanted is None else list(wanted))
        return wire.verify_in(self._call("POST", "/verify", wire.VerifyOut, body=request))

    # -- requests --------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        model: type[Model],
        *,
        body: BaseModel | _Body | None = None,
        params: dict[str, str] | None = None,
    ) -> Model:
        """One request, retried on network errors and 5xx answers, its answer checked against ``model``."""
        sent = _Body(None, {}) if body is None else body if isinstance(body, _Body) else _body(body)
        response = self._send(
            lambda: self.client.request(
                method, wire.PREFIX + path, content=sent.content, params=params, headers=sent.headers
            )
        )
        if response.status_code != 200:
            raise self._error_of(response)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise self._not_a_peer(str(exc).splitlines()[0]) from None

    def _send(self, request: Callable[[], httpx.Response]) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = request()
            except httpx.RequestError as exc:
                problem = self._transport_problem(exc)
                if isinstance(problem, TlsFailed) or attempt == self.retries:
                    raise problem from None
            else:
                if response.status_code < 500 or attempt == self.retries:
                    return response
            self._pause(attempt)
        raise AssertionError("unreachable")

    def _pause(self, attempt: int) -> None:
        time.sleep(min(self.backoff * 2**attempt, 30.0) * random.uniform(0.5, 1.0))

    def _error_of(self, response: httpx.Response) -> ErpSyncError:
        """The error an answer other than 200 stands for."""
        if response.status_code == 401:
            return TokenRefused(
                "peer {peer} refused the token",
                "check the token of peer {peer}: token or token_env in erpsync.toml, or ERPSYNC_TOKEN",
                peer=self.label,
            )
        try:
            data = wire.ErrorOut.model_validate_json(response.content)
        except ValidationError:
            return self._not_a_peer(f"HTTP {response.status_code} {response.text[:200]}")
        return wire.remote_error(data, self.label)

    def _transport_problem(self, exc: httpx.RequestError) -> ErpSyncError:
        reason = _reason(exc)
        if _is_tls(exc):
            return TlsFailed(
                "secure connection to peer {peer} failed: {reason}",
                "check the certificate; for a self-signed one add ?ca=/path/to/cert.pem to the peer's URL",
                peer=self.label,
                reason=reason,
            )
        if isinstance(exc, httpx.DecodingError):
            return self._not_a_peer(reason)
        return self._unreachable(reason)

    def _unreachable(self, reason: str) -> PeerUnreachable:
        return PeerUnreachable(
            "cannot reach peer {peer}: {reason}",
            "check the address and the network, and that erpsync serve runs there",
            peer=self.label,
            reason=reason,
        )

    def _not_a_peer(self, reason: str) -> NotAPeer:
        return NotAPeer(
            "peer {peer} does not answer as erpsync serve: {reason}",
            "check the URL: it must be the address of an erpsync serve of a compatible version",
            peer=self.label,
            reason=reason,
        )


@dataclass(frozen=True)
class _Body:
    """A request body as sent, with its headers."""

    content: bytes | None
    headers: dict[str, str]


def _body(model: BaseModel) -> _Body:
    """``model`` as JSON, gzip-compressed when larger than ``GZIP_ABOVE``."""
    content = model.model_dump_json().encode()
    if len(content) <= GZIP_ABOVE:
        return _Body(content, {"Content-Type": "application/json"})
    packer = zlib.compressobj(wire.GZIP_LEVEL, zlib.DEFLATED, 31)
    content = packer.compress(content) + packer.flush()
    return _Body(content, {"Content-Type": "application/json", "Content-Encoding": "gzip"})


def _port_ok(netloc: str) -> bool:
    try:
        return urlsplit(f"//{netloc}").port is not None or ":" not in netloc.rsplit("]", 1)[-1]
    except ValueError:  # not a number, or out of range
        return False


def _verify(scheme: str, ca: str | None) -> ssl.SSLContext | bool:
    """How to check the server's certificate: the system's CAs, or the one file ``?ca=`` names."""
    if scheme != "https":
        return False  # plain HTTP: no certificate to check (and no CA bundle to load)
    if ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(
            "cannot read the certificate {path}: {reason}",
            "give the server's certificate as a PEM file: ?ca=/path/to/cert.pem",
            path=ca,
            reason=getattr(exc, "strerror", None) or str(exc),
        ) from None


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "[SSL" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Complete lines of a byte stream (a partial last line, from a cut stream, is dropped)."""
    buffer = bytearray()
    scanned = 0
    for chunk in chunks:
        buffer += chunk
        while (end := buffer.find(b"\n", scanned)) >= 0:
            yield bytes(buffer[:end])
            del buffer[: end + 1]
            scanned = 0
        scanned = len(buffer)


def _batch(text: bytes, peer: str) -> Batch:
    try:
        return changeset.from_json(text.decode())
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError) as exc:
        raise NotAPeer(
            "peer {peer} does not answer as erpsync serve: {reason}",
            "check the URL: it must be the address of an erpsync serve of a compatible version",
            peer=peer,
            reason=_reason(exc),
        ) from None

"""``erpsync serve``: one node over HTTP, as an ASGI application on uvicorn.

Every operation of ``erpsync.sync.peer.Peer`` is an endpoint under ``/v1``
(see ``operations.Operations``, which the SSH transport shares); the OpenAPI
description is at ``/openapi.json``. The server keeps nothing between
requests but its database connection pool, so several processes can serve one
hub database behind a load balancer.

Security: each peer sends ``Authorization: Bearer TOKEN``; tokens are
compared in constant time (``hmac.compare_digest``) before a byte of the body
is read. A server refuses to listen on a non-loopback address without tokens.
Bodies are limited in size (decompressed, for gzip bodies too): 413 beyond.
Every error is ``{"error": …, "hint": …}`` with a 4xx status, and nothing is
applied: a library error is a 409 or a 422, never a 5xx for bad input.
"""

from __future__ import annotations

import gc
import hmac
import ipaddress
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from erpsync import __version__
from erpsync.config import DEFAULT_MAX_BODY, DEFAULT_SERVE_PORT
from erpsync.db import Database, open_database
from erpsync.errors import ErpSyncError, InvalidArgument
from erpsync.i18n import tr
from erpsync.sync.changeset import BATCH_ROWS
from erpsync.sync.peer import PROTOCOL
from erpsync.transport import wire
from erpsync.transport.operations import Operations

DEFAULT_HOST = "127.0.0.1"
SHARED = "shared"
"""The name of the single token given by ``--token`` or ``ERPSYNC_TOKEN``."""


class NoAuthentication(ErpSyncError):
    """A server would listen on the network with no token."""


class CannotListen(ErpSyncError):
    """The address or port cannot be bound."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, tokens: Mapping[str, str] | None) -> None:
    """Refuse to serve a node to the network without authentication."""
    if not tokens and not is_loopback(host):
        raise NoAuthentication(
            "erpsync serve refuses to listen on {host} without a token",
            "give --token (or set ERPSYNC_TOKEN), or list the peers' tokens in erpsync.toml; "
            "or listen on 127.0.0.1",
            host=host,
        )


# -- the application ----------------------------------------------------------------------------


def _error(status: int, body: wire.ErrorOut, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


class _Guard:
    """Checks a request before the application reads it: token, protocol, body size and encoding.

    A pure ASGI middleware, so an unauthenticated or oversized request is
    answered without its body being read, let alone parsed.
    """

    def __init__(self, app: ASGIApp, tokens: Mapping[str, str] | None, max_body: int) -> None:
        self.app = app
        self.tokens = [token.encode() for token in (tokens or {}).values()]
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(wire.PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        encoding = headers.get("content-encoding", "identity").strip().lower()
        gzipped = encoding == "gzip"
        if not gzipped and encoding not in ("", "identity"):
            body = wire.error_body(
                "unsupported request encoding {encoding}", "send the body plain or gzip", encoding=encoding
            )
            await _error(415, body)(scope, receive, send)
            return
        await self.app(scope, _LimitedBody(receive, self.max_body, gzipped), send)

    def _refusal(self, headers: Mapping[str, str]) -> ASGIApp | None:
        if self.tokens:
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            presented = token.strip().encode() if scheme.lower() == "bearer" else b""
            accepted = False
            for expected in self.tokens:  # every token compared: no early exit to time
                accepted |= hmac.compare_digest(presented, expected)
            if not accepted:
                body = wire.error_body(
                    "missing or wrong token",
                    "check the token of this peer (token or token_env in erpsync.toml, or ERPSYNC_TOKEN)",
                )
                return _error(401, body, {"WWW-Authenticate": "Bearer"})
        protocol = headers.get(wire.PROTOCOL_HEADER.lower())
        if protocol is not None and protocol.strip() != str(PROTOCOL):
            body = wire.error_out(
                wire.ProtocolMismatch(
                    "this server speaks sync protocol {ours}, the client {theirs}",
                    "install the same erpsync version on both nodes (the peer runs {version})",
                    ours=PROTOCOL,
                    theirs=protocol.strip()[:20],
                    version=__version__,
                )
            )
            return _error(409, body)
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body):
            return _error(413, _too_large(self.max_body))
        return None


def _too_large(limit: int) -> wire.ErrorOut:
    return wire.error_body(
        "the request body exceeds {limit} bytes",
        "send smaller batches (batch rows), or raise max_body in the [serve] section of the server",
        limit=limit,
    )


class _LimitedBody:
    """``receive`` with the body counted (and gunzipped) on the fly: 413 past the limit."""

    def __init__(self, receive: Receive, limit: int, gzipped: bool) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0
        self.inflate = zlib.decompressobj(wbits=31) if gzipped else None

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] != "http.request":
            return message
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.inflate is not None:
            try:
                body = self.inflate.decompress(body, self.limit - self.seen + 1)
            except zlib.error:
                raise HTTPException(400, "the request body is not valid gzip") from None
            if self.inflate.unconsumed_tail:
                body += b"?"  # more than the limit: counted as such below
            if not more and not self.inflate.eof and len(body) + self.seen <= self.limit:
                raise HTTPException(400, "the request body is not valid gzip")
        self.seen += len(body)
        if self.seen > self.limit:
            raise HTTPException(413, str(self.limit))
        return {**message, "body": body}


def create_app(
    db: Database, *, tokens: Mapping[str, str] | None = None, max_body: int = DEFAULT_MAX_BODY
) -> FastAPI:
    """The ASGI application serving node ``db``.

    ``tokens`` maps a peer's name to its secret; ``None`` or empty means no
    authentication (for a server on loopback only: see ``check_listen``).
    """
    ops = Operations(db)
    app = FastAPI(
        title="erpsync",
        version=__version__,
        description="One erpsync node: the sync protocol's operations, as in erpsync.sync.peer.Peer.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.operations = ops
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": wire.ErrorOut, "description": text}
        for status, text in (
            (401, "missing or wrong token"),
            (409, "the nodes' states must be settled first (schema, protocol, concurrent write)"),
            (413, "body too large"),
            (422, "malformed request"),
        )
    }

    @app.get("/health", response_model=wire.Done, tags=["service"])
    def health() -> wire.Done:
        """For load balancers: the server answers and reaches its database (no token needed)."""
        with db.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return wire.Done()

    @app.get(f"{wire.PREFIX}/hello", response_model=wire.HelloOut, responses=errors, tags=["sync"])
    def hello() -> wire.HelloOut:
        """Fold pending changes, then describe the node: id, name, schema fingerprint, sequence."""
        return ops.hello()

    @app.get(f"{wire.PREFIX}/cursors", response_model=wire.CursorsOut, responses=errors, tags=["sync"])
    def cursors(
        node: Annotated[str, Query(min_length=1, max_length=36, pattern=wire.NO_NUL)],
    ) -> wire.CursorsOut:
        """Up to where this node has applied node ``node``'s changes, per table and stream."""
        return ops.cursors(node)

    @app.post(f"{wire.PREFIX}/plan", response_model=wire.PlanOut, responses=errors, tags=["sync"])
    def plan(request: wire.PlanIn) -> wire.PlanOut:
        """How many rows of each table and stream there are to send to ``for_node``."""
        return ops.plan(request)

    @app.get(
        f"{wire.PREFIX}/changes",
        responses={
            **errors,
            200: {
                "description": "one batch (changeset.to_json) per line, gzip-compressed when accepted",
                "content": {wire.NDJSON: {"schema": {"type": "string"}}},
            },
        },
        response_class=StreamingResponse,
        tags=["sync"],
    )
    def changes(
        request: Request,
        table: Annotated[str, Query(min_length=1, max_length=128, pattern=wire.NO_NUL)],
        stream: Annotated[int, Query(ge=0, le=1)],
        since: Annotated[int, Query(ge=0, le=2**63 - 1)],
        upto: Annotated[int, Query(ge=0, le=2**63 - 1)],
        for_node: Annotated[str, Query(min_length=1, max_length=36, pattern=wire.NO_NUL)],
        batch_rows: Annotated[int, Query(ge=1, le=50_000)] = BATCH_ROWS,
    ) -> StreamingResponse:
        """The batches of one table and stream after ``since``, up to ``upto``, streamed."""
        lines = ops.changes(table, stream, since, upto, for_node, batch_rows)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return StreamingResponse(_gzip(lines), media_type=wire.NDJSON, headers=headers)
        return StreamingResponse(lines, media_type=wire.NDJSON)

    @app.post(f"{wire.PREFIX}/fetch", response_model=wire.BatchOut, responses=errors, tags=["sync"])
    def fetch(request: wire.FetchIn) -> wire.BatchOut:
        """The current state of rows (present or deleted) a receiver lacks."""
        return ops.fetch(request)

    @app.post(f"{wire.PREFIX}/advance", response_model=wire.Done, responses=errors, tags=["sync"])
    def advance(request: wire.AdvanceIn) -> wire.Done:
        """Move this node's cursors for a sender's streams that had nothing to send."""
        return ops.advance(request)

    @app.post(f"{wire.PREFIX}/apply", response_model=wire.ApplyOut, responses=errors, tags=["sync"])
    def apply(request: wire.ApplyIn) -> wire.ApplyOut:
        """Apply a batch in one transaction, with the sender's cursor; idempotent by batch id."""
        return ops.apply(request)

    @app.post(f"{wire.PREFIX}/met", response_model=wire.Done, responses=errors, tags=["sync"])
    def met(request: wire.MetIn) -> wire.Done:
        """Record a sync with a node."""
        return ops.met(request)

    @app.post(f"{wire.PREFIX}/verify", response_model=wire.VerifyOut, responses=errors, tags=["verify"])
    def verify(request: wire.VerifyIn) -> wire.VerifyOut:
        """A synced table's row count; its bucket checksums, or the row hashes of the wanted buckets."""
        return ops.verify(request)

    _install_error_handlers(app)
    _document_security(app, bool(tokens))
    app.add_middleware(GZipMiddleware, minimum_size=4096, compresslevel=wire.GZIP_LEVEL)
    app.add_middleware(_Guard, tokens=tokens, max_body=max_body)
    return app


def _gzip(lines: Iterator[bytes]) -> Iterator[bytes]:
    """Compress a stream line by line, flushed after each so a batch arrives whole and at once."""
    packer = zlib.compressobj(wire.GZIP_LEVEL, zlib.DEFLATED, 31)
    for line in lines:
        yield packer.compress(line) + packer.flush(zlib.Z_SYNC_FLUSH)
    yield packer.flush()


def _install_error_handlers(app: FastAPI) -> None:
    def library_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ErpSyncError)
        return _error(wire.status_of(exc), wire.error_out(exc))

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            body = wire.error_body(
                "no route {method} {path}",
                "the routes are listed in /openapi.json",
                method=request.method,
                path=request.url.path,
            )
        elif exc.status_code == 405:
            body = wire.error_body(
                "{method} is not allowed on {path}",
                "the routes are listed in /openapi.json",
                method=request.method,
                path=request.url.path,
            )
        elif exc.status_code == 413:
            body = _too_large(int(exc.detail))
        else:
            body = wire.error_body(
                "the request was refused: {reason}", "check the request", reason=tr(str(exc.detail))
            )
        return _error(exc.status_code, body, exc.headers)

    def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(wire.problem_of(e) for e in exc.errors()[:10])
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        body = wire.error_body(
            "malformed request: {problems}",
            "send the request described in /openapi.json",
            problems=problems,
        )
        return _error(status, body)

    def unexpected(_request: Request, exc: Exception) -> Response:  # a bug: uvicorn logs the traceback
        body = wire.error_body(
            "internal error of the server: {reason}",
            "look at the server's log, and report the problem",
            reason=f"{type(exc).__name__}: {exc}",
        )
        return _error(500, body)

    app.add_exception_handler(ErpSyncError, library_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


def _document_security(app: FastAPI, required: bool) -> None:
    """Declare the bearer token in the OpenAPI description (checked by ``_Guard``, not per route)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            if required:
                components = schema.setdefault("components", {})
                components["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
                for path, operations in schema.get("paths", {}).items():
                    if path.startswith(wire.PREFIX + "/"):
                        for operation in operations.values():
                            operation["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# -- running it ----------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or one clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off only for sockets that say
    # so, and with it on every answer after the first waits 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let another program take the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CannotListen(
            "cannot listen on {host}:{port}: {reason}",
            "choose another --port, or stop the program using it",
            host=host,
            port=port,
            reason=exc.strerror or str(exc),
        ) from None
    return sock


def url_of(sock: socket.socket, host: str, *, tls: bool) -> str:
    """The base URL a bound socket answers at."""
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def _config(
    app: ASGIApp, *, cert: str | Path | None, key: str | Path | None, log_level: str
) -> uvicorn.Config:
    if (cert is None) != (key is None):
        raise InvalidArgument(
            "--cert and --key go together", "give both the certificate and its private key, or neither"
        )
    for path in (cert, key):
        if path is not None and not Path(path).is_file():
            raise InvalidArgument(
                "no file {path}", "give the path of the PEM certificate and key files", path=str(path)
            )
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=log_level in ("debug", "info"),
        lifespan="off",
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
        timeout_graceful_shutdown=5,
    )


def serve(
    db: Database,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_SERVE_PORT,
    tokens: Mapping[str, str] | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    log_level: str = "warning",
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve node ``db`` until interrupted (Ctrl-C); ``ready`` gets the base URL once listening."""
    check_listen(host, tokens)
    app = create_app(db, tokens=tokens, max_body=max_body)
    app.state.operations.warm()
    config = _config(app, cert=cert, key=key, log_level=log_level)
    try:
        config.load()
    except OSError as exc:  # the certificate or key cannot be read or does not match
        raise InvalidArgument(
            "cannot use the certificate {cert}: {reason}",
            "give a PEM certificate and the private key that matches it",
            cert=str(cert),
            reason=exc.strerror or str(exc),
        ) from None
    sock = bind(host, port)
    gc.freeze()  # the modules and the app live as long as the process: no collection walks them again
    try:
        if ready is not None:
            ready(url_of(sock, host, tls=cert is not None))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def serving(
    app: ASGIApp,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields its base URL, stops at the end."""
    config = _config(app, cert=cert, key=key, log_level="warning")
    sock = bind(host, port)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="erpsync-serve", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise CannotListen(
                    "cannot listen on {host}:{port}: {reason}",
                    "choose another --port, or stop the program using it",
                    host=host,
                    port=port,
                    reason=tr("the server did not start"),
                )
            time.sleep(0.01)
        yield url_of(sock, host, tls=cert is not None)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def running(
    db: Database | str,
    *,
    tokens: dict[str, str] | None = None,
    host: str = DEFAULT_HOST,
    port: int = 0,
) -> Iterator[str]:
    """Serve node ``db`` (a ``Database``, a URL or a SQLite path) in a background thread.

    Yields the base URL (``http://127.0.0.1:PORT``); the server stops, and a
    database opened here closes, when the block ends. For tests and the demo.
    """
    check_listen(host, tokens)
    database = db if isinstance(db, Database) else open_database(db)
    try:
        with serving(create_app(database, tokens=tokens), host=host, port=port) as url:
            yield url
    finally:
        if database is not db:
            database.close()

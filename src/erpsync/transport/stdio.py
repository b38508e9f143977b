"""``erpsync serve --stdio``: one node answering on stdin and stdout, the far end of an ``ssh://`` peer.

Like rsync, the SSH transport runs erpsync on the remote host through the
system ssh client and talks to it over the connection's stdin and stdout: the
server needs no open HTTP port and no token (SSH authenticates, with keys).

What travels is the HTTP protocol's, framed:

- the server's first bytes are ``MAGIC``, so a remote shell whose startup
  files print something (the classic rsync trap) is told apart at once from
  an erpsync of another framing version; then a ``GREETING`` frame (sync
  protocol, erpsync version), or an ``ERROR`` frame when the node cannot be
  opened;
- each ``REQUEST`` (a ``wire.CallIn``: the operation and the body HTTP would
  carry) gets one ``ANSWER`` (the operation's wire model) or one ``ERROR``
  (``wire.ErrorOut``); ``changes`` gets one ``BATCH`` frame per batch
  (``changeset.to_json`` text), then ``END`` (or an ``ERROR`` in its place).

A frame is a 6-byte header (payload length, 4 bytes big-endian; kind; encoding)
and its payload; payloads over 16 KiB are deflated (zlib level 1), as HTTP
bodies are gzipped. Requests are answered one at a time by the same
``Operations`` the HTTP server calls.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import zlib
from collections.abc import Callable
from typing import BinaryIO

from pydantic import BaseModel, ValidationError

from erpsync import __version__
from erpsync.config import DEFAULT_MAX_BODY
from erpsync.db import Database, open_database
from erpsync.errors import ErpSyncError
from erpsync.sync.node import Node
from erpsync.sync.peer import PROTOCOL
from erpsync.transport import wire
from erpsync.transport.operations import Operations

FRAMING = 1
MAGIC = b"erpsync-stdio %d\n" % FRAMING
"""The server's first bytes; the number is the framing's version, not the sync protocol's."""
HEADER = struct.Struct(">IBB")
REQUEST, ANSWER, BATCH, END, ERROR, GREETING = b"QABEXG"
KINDS = frozenset((REQUEST, ANSWER, BATCH, END, ERROR, GREETING))
PLAIN, DEFLATE = 0, 1
DEFLATE_ABOVE = 16 * 1024
"""Payloads larger than this are deflated (a batch about tenfold)."""

log = logging.getLogger(__name__)


class FrameError(Exception):
    """The byte stream is not a well-formed frame (cut short, unknown kind or encoding, bad deflate)."""


class FrameTooLarge(FrameError):
    """A frame's payload is larger than the reader accepts."""

    def __init__(self, size: int) -> None:
        super().__init__(f"a frame of {size} bytes")
        self.size = size


def frame(kind: int, payload: bytes) -> bytes:
    """A frame, its payload deflated when large."""
    if len(payload) > DEFLATE_ABOVE:
        packed = zlib.compress(payload, wire.GZIP_LEVEL)
        return HEADER.pack(len(packed), kind, DEFLATE) + packed
    return HEADER.pack(len(payload), kind, PLAIN) + payload


def read_frame(read: Callable[[int], bytes], limit: int) -> tuple[int, bytes] | None:
    """The next frame's kind and payload from ``read`` (which returns fewer bytes only at the end).

    ``None`` at a clean end of stream. A payload larger than ``limit``
    (deflated or not) raises ``FrameTooLarge`` once its bytes are consumed, so
    the stream stays in step; anything malformed raises ``FrameError``.
    """
    header = read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise FrameError("the stream ended inside a frame header")
    size, kind, encoding = HEADER.unpack(header)
    if kind not in KINDS or encoding not in (PLAIN, DEFLATE):
        raise FrameError(f"unknown frame kind {kind} or encoding {encoding}")
    if size > limit:
        _skip(read, size)
        raise FrameTooLarge(size)
    payload = read(size)
    if len(payload) < size:
        raise FrameError("the stream ended inside a frame")
    if encoding == DEFLATE:
        inflate = zlib.decompressobj()
        try:
            payload = inflate.decompress(payload, limit + 1)
        except zlib.error as exc:
            raise FrameError(f"a frame is not valid deflate data: {exc}") from None
        if len(payload) > limit or inflate.unconsumed_tail:
            raise FrameTooLarge(len(payload))
        if not inflate.eof:
            raise FrameError("a deflated frame is cut short")
    return kind, payload


def _skip(read: Callable[[int], bytes], size: int) -> None:
    while size > 0:
        chunk = read(min(size, 1 << 20))
        if not chunk:
            raise FrameError("the stream ended inside a frame")
        size -= len(chunk)


# -- the server ----------------------------------------------------------------------------------


class _Out:
    """The frames' stream: every frame flushed at once (a batch is a frame the client waits for)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def raw(self, data: bytes) -> None:
        self.stream.write(data)
        self.stream.flush()

    def send(self, kind: int, payload: bytes) -> None:
        self.raw(frame(kind, payload))

    def model(self, kind: int, model: BaseModel) -> None:
        self.send(kind, model.model_dump_json().encode())

    def error(self, exc: ErpSyncError) -> None:
        self.model(ERROR, wire.error_out(exc))


def serve_stdio(
    target: Database | str,
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Answer the requests on ``stdin`` (default: the process's) until it closes.

    ``target`` is a ``Database`` or a URL or SQLite path, opened here so that
    a node that cannot be opened is reported to the client as an error frame
    (then raised). Without ``stdout``, the process's standard output is kept
    for frames and everything else printed goes to stderr.
    """
    source = stdin if stdin is not None else sys.stdin.buffer
    out = _Out(stdout if stdout is not None else _claim_stdout())
    out.raw(MAGIC)
    database: Database | None = None
    try:
        database = target if isinstance(target, Database) else open_database(target)
        Node(database)  # a database that is not a node is refused before the first request
    except ErpSyncError as exc:
        out.error(exc)
        if database is not None and database is not target:
            database.close()
        raise
    try:
        out.model(GREETING, wire.Greeting(protocol=PROTOCOL, version=__version__))
        _answer_all(Operations(database), source, out, max_body)
    except BrokenPipeError:  # the client went away: nothing more to answer
        pass
    finally:
        if database is not target:
            database.close()


def _answer_all(ops: Operations, source: BinaryIO, out: _Out, max_body: int) -> None:
    while True:
        try:
            received = read_frame(source.read, max_body)
        except FrameTooLarge:
            out.model(ERROR, _too_large(max_body))
            continue
        except FrameError as exc:  # out of step with the client: answer, then stop
            out.error(wire.MalformedRequest("malformed request: {problems}", _HINT, problems=str(exc)))
            return
        if received is None:
            return
        kind, payload = received
        if kind != REQUEST:
            out.error(wire.MalformedRequest("malformed request: {problems}", _HINT, problems=f"frame {kind}"))
            return
        _answer(ops, payload, out)


_HINT = "send the request erpsync.transport.ssh sends"


def _too_large(limit: int) -> wire.ErrorOut:
    return wire.error_body(
        "the request body exceeds {limit} bytes",
        "send smaller batches (batch rows), or raise max_body in the [serve] section of the server",
        limit=limit,
    )


def _answer(ops: Operations, payload: bytes, out: _Out) -> None:
    """One request's answer; an error becomes an error frame, and the server goes on."""
    try:
        call = wire.CallIn.model_validate_json(payload)
        result = ops.call(call.op, call.args)
        if isinstance(result, BaseModel):
            out.model(ANSWER, result)
            return
        for line in result:
            out.send(BATCH, line)
        out.send(END, b"")
    except ValidationError as exc:
        out.error(wire.malformed_request(exc, _HINT))
    except ErpSyncError as exc:
        out.error(exc)
    except BrokenPipeError:
        raise
    except Exception as exc:  # a bug: logged with its traceback on stderr, answered as HTTP's 500
        log.exception("erpsync serve --stdio: request failed")
        out.model(
            ERROR,
            wire.error_body(
                "internal error of the server: {reason}",
                "look at the server's log, and report the problem",
                reason=f"{type(exc).__name__}: {exc}",
            ),
        )


def _claim_stdout() -> BinaryIO:
    """The process's stdout, for frames only: anything else printed there goes to stderr instead.

    A stray ``print`` or warning on stdout would corrupt the frames, so the
    original stdout is duplicated for them and file descriptor 1 (and
    ``sys.stdout``) made to point at stderr.
    """
    sys.stdout.flush()
    try:
        fd = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (embedded, tests): use it as it is
        return sys.stdout.buffer
    sys.stdout = sys.stderr
    if sys.platform == "win32":  # no newline translation on the frames
        import msvcrt

        msvcrt.setmode(fd, os.O_BINARY)
        msvcrt.setmode(sys.stdin.fileno(), os.O_BINARY)
    return os.fdopen(fd, "wb")

"""What travels between a client and ``erpsync serve``: the one wire encoding of the sync protocol.

Every request and response body is a pydantic model here, so the server
validates what it receives, the client what it gets back, and the OpenAPI
description is generated from the same classes. A batch always travels as the
text of ``erpsync.sync.changeset.to_json`` (in a ``batch`` string, or as one
line of the changes stream): values have one encoding, the changeset's.

Errors travel as ``{"error", "hint", "kind", "template", "params"}``: the
message in the server's language, and its English id with parameters so the
client shows it in its own user's language.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from erpsync import __version__
from erpsync.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    ErpSyncError,
    SchemaMismatch,
)
from erpsync.i18n import tr
from erpsync.sync import changeset
from erpsync.sync.apply import ApplyResult, ConcurrentWrite, PolicyMap
from erpsync.sync.changeset import BATCH_ROWS, GONE, Batch, Cursors, no_cycle_collection
from erpsync.sync.meta import GID_LENGTH, SYNC_ID_LENGTH
from erpsync.sync.model import SyncTable
from erpsync.sync.node import NotANode, SchemaChanged
from erpsync.sync.peer import PROTOCOL, Hello
from erpsync.sync.policies import POLICIES
from erpsync.sync.verify import MAX_BUCKETS, Sums

PREFIX = "/v1"
"""Every operation's path starts with it; a new protocol gets a new prefix."""
PROTOCOL_HEADER = "X-Erpsync-Protocol"
NDJSON = "application/x-ndjson"
GZIP_LEVEL = 1
"""Level 1 compresses a batch about tenfold at a fraction of the cost of level 6 (14-fold)."""

NO_NUL = r"^[^\x00]*$"
"""Text a database can store: PostgreSQL refuses NUL characters."""
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
Stream = Annotated[int, Field(ge=0, le=1, description="0: rows present, 1: tombstones")]
TableName = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]
NodeId = Annotated[str, Field(min_length=1, max_length=36, pattern=NO_NUL)]
Gid = Annotated[str, Field(min_length=1, max_length=GID_LENGTH, pattern=NO_NUL)]
Policy = Annotated[str, Field(pattern="^(" + "|".join(POLICIES) + ")$")]


class MalformedRequest(ErpSyncError):
    """A request body or parameter is not what the protocol says."""


class ProtocolMismatch(ErpSyncError):
    """The two sides speak different versions of the sync protocol."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HelloOut(_Wire):
    """A node describing itself: ``erpsync.sync.peer.Hello`` plus the erpsync version."""

    node_id: str
    name: str
    fingerprint: str
    shapes: dict[str, dict[str, Any]]
    seq: int
    protocol: int
    version: str


class CursorsOut(_Wire):
    """(table, stream, sequence applied up to) of one peer's changes."""

    cursors: list[tuple[str, int, int]]


class CursorsIn(_Wire):
    """Whose changes: the query of ``GET /v1/cursors``, as a stream channel (SSH) sends it."""

    node: NodeId


class PlanIn(_Wire):
    """What to send to ``for_node``, after its cursors ``since``, up to ``upto``."""

    since: list[tuple[TableName, Stream, Seq]] = Field(default_factory=list, max_length=10_000)
    upto: Seq
    for_node: NodeId


class PlanOut(_Wire):
    """(table, stream, rows to send), parents first for rows present, children first for tombstones."""

    plan: list[tuple[str, int, int]]


class ChangesIn(_Wire):
    """Which batches: the query of ``GET /v1/changes``, as a stream channel (SSH) sends it."""

    table: TableName
    stream: Stream
    since: Seq
    upto: Seq
    for_node: NodeId
    batch_rows: int = Field(default=BATCH_ROWS, ge=1, le=50_000)


class FetchIn(_Wire):
    """Rows a receiver lacks, by global id."""

    table: TableName
    gids: list[Gid] = Field(max_length=100_000)


class BatchOut(_Wire):
    """A batch, as ``changeset.to_json`` text."""

    batch: str


class AdvanceIn(_Wire):
    """Move the cursors of ``node_id``'s ``streams`` to ``upto``: nothing to send there."""

    node_id: NodeId
    streams: list[tuple[TableName, Stream]] = Field(max_length=10_000)
    upto: Seq


class ApplyIn(_Wire):
    """A batch to apply (idempotent by its id) under the sender's policies, seen from the receiver."""

    batch: str = Field(description="the batch as erpsync.sync.changeset.to_json text")
    policies: dict[str, Policy] = Field(default_factory=dict, max_length=10_000)
    restore: bool = False
    skip: list[Gid] = Field(default_factory=list, max_length=100_000)
    loose: list[Gid] = Field(default_factory=list, max_length=100_000)


class ApplyOut(_Wire):
    """``erpsync.sync.apply.ApplyResult``."""

    table: str
    stream: int
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    conflicts: int = 0
    renumbered: int = 0
    restored: int = 0
    skipped: int = 0
    replayed: bool = False
    missing: dict[str, list[str]] = Field(default_factory=dict)


class MetIn(_Wire):
    """A sync with node ``node_id`` took place."""

    node_id: NodeId
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    url: str | None = Field(default=None, max_length=500, pattern=NO_NUL)


class VerifyIn(_Wire):
    """One synced table's sums for ``erpsync verify``: see ``erpsync.sync.verify.Sums``."""

    table: TableName
    buckets: int = Field(default=0, ge=0, le=MAX_BUCKETS, description="0: the row count only")
    wanted: list[Annotated[int, Field(ge=0, lt=MAX_BUCKETS)]] | None = Field(
        default=None, max_length=MAX_BUCKETS, description="the buckets whose row hashes are wanted"
    )


class VerifyOut(_Wire):
    """The row count, and the bucket checksums or the wanted buckets' row hashes."""

    rows: int
    checksums: list[tuple[int, int, int]] = Field(
        default_factory=list, description="(bucket, rows, sum of row hashes modulo 2**64)"
    )
    hashes: dict[str, int] = Field(default_factory=dict, description="global id: row hash")


class Done(_Wire):
    """An operation that returns nothing succeeded."""

    ok: bool = True


class ErrorOut(_Wire):
    """Why a request failed."""

    error: str
    hint: str
    kind: str = "ErpSyncError"
    template: str | None = None
    hint_template: str | None = None
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


Operation = Literal["hello", "cursors", "plan", "changes", "fetch", "advance", "apply", "met", "verify"]


class CallIn(_Wire):
    """One request on a stream channel (``erpsync serve --stdio``): the operation and its body.

    ``args`` is what HTTP carries in the query or the body (``CursorsIn``,
    ``PlanIn``, ``ChangesIn``…), checked against that model by the server.
    """

    op: Operation
    args: dict[str, Any] = Field(default_factory=dict)


class Greeting(_Wire):
    """What ``erpsync serve --stdio`` says first, before any request."""

    model_config = ConfigDict(extra="ignore")  # a later version may say more: its protocol is still read

    protocol: int
    version: str


# -- conversions ---------------------------------------------------------------------------------


def apply_request(
    batch: Batch, policies: PolicyMap, *, restore: bool, skip: frozenset[str], loose: frozenset[str]
) -> ApplyIn:
    """What a client sends to apply ``batch`` there (``erpsync.sync.peer.Peer.apply``)."""
    return ApplyIn(
        batch=batch_text(batch), policies=policies, restore=restore, skip=sorted(skip), loose=sorted(loose)
    )


Encoded = TypeVar("Encoded")


class ApplyRequests(Generic[Encoded]):
    """Apply requests of batches encoded ahead (``Peer.prepare``), taken once by ``apply``.

    Encoding a batch costs the client about as much as a tenth of the server's
    apply: done in the session's reading thread, it overlaps the server's work
    on the batch before instead of following it. Only the first try of a batch
    (no ``restore``, ``skip`` or ``loose``, the same policies) takes it.
    """

    def __init__(self, encode: Callable[[ApplyIn], Encoded]) -> None:
        self.encode = encode
        self.ready: dict[str, tuple[PolicyMap, Encoded]] = {}

    def prepare(self, batch: Batch, policies: PolicyMap) -> None:
        """Encode the request that applies ``batch`` under ``policies``."""
        if batch.batch_id:
            request = apply_request(batch, policies, restore=False, skip=frozenset(), loose=frozenset())
            self.ready[batch.batch_id] = (dict(policies), self.encode(request))

    def request(
        self, batch: Batch, policies: PolicyMap, *, restore: bool, skip: frozenset[str], loose: frozenset[str]
    ) -> Encoded:
        """The encoded request that applies ``batch`` so, prepared or made now."""
        ready = self.ready.pop(batch.batch_id, None)
        if ready is not None and ready[0] == policies and not (restore or skip or loose):
            return ready[1]
        return self.encode(apply_request(batch, policies, restore=restore, skip=skip, loose=loose))


def hello_out(hello: Hello) -> HelloOut:
    """A hello as sent."""
    return HelloOut(
        node_id=hello.node_id,
        name=hello.name,
        fingerprint=hello.fingerprint,
        shapes=hello.shapes,
        seq=hello.seq,
        protocol=hello.protocol,
        version=__version__,
    )


def hello_in(data: HelloOut, peer: str) -> Hello:
    """A hello as received, refused when the protocol differs."""
    if data.protocol != PROTOCOL:
        raise ProtocolMismatch(
            "peer {peer} speaks sync protocol {theirs}, this erpsync speaks {ours}",
            "install the same erpsync version on both nodes (the peer runs {version})",
            peer=peer,
            theirs=data.protocol,
            ours=PROTOCOL,
            version=data.version,
        )
    return Hello(data.node_id, data.name, data.fingerprint, data.shapes, data.seq, data.protocol)


def cursors_out(cursors: Cursors) -> list[tuple[str, int, int]]:
    """Cursors as a list of (table, stream, seq)."""
    return [(table, stream, seq) for (table, stream), seq in sorted(cursors.items())]


def cursors_in(items: Iterable[tuple[str, int, int]]) -> Cursors:
    """Cursors back from (table, stream, seq) triples."""
    return {(table, stream): seq for table, stream, seq in items}


def apply_out(result: ApplyResult) -> ApplyOut:
    """An apply result as sent."""
    known = ApplyOut.model_fields
    return ApplyOut(**{f.name: getattr(result, f.name) for f in fields(result) if f.name in known})


def apply_in(data: ApplyOut) -> ApplyResult:
    """An apply result as received."""
    known = {f.name for f in fields(ApplyResult)}
    return ApplyResult(**{k: v for k, v in data.model_dump().items() if k in known})


def verify_out(sums: Sums) -> VerifyOut:
    """A table's verify sums as sent."""
    checksums = [(bucket, rows, total) for bucket, (rows, total) in sorted(sums.checksums.items())]
    return VerifyOut(rows=sums.rows, checksums=checksums, hashes=sums.hashes)


def verify_in(data: VerifyOut) -> Sums:
    """A table's verify sums as received."""
    checksums = {bucket: (rows, total) for bucket, rows, total in data.checksums}
    return Sums(data.rows, checksums, dict(data.hashes))


def batch_text(batch: Batch) -> str:
    """A batch as it travels."""
    return changeset.to_json(batch).decode()


def batch_lines(batches: Iterator[Batch]) -> Iterator[bytes]:
    """The changes stream: one batch per line (``to_json`` escapes every newline inside strings).

    The cycle collector is paused while each batch is read and encoded, not across the yields:
    a client gone midway leaves the stream unclosed, and the collector must not stay off with
    it. The reader keeps no reference to a batch it gave (``read_changes``), so the batch is
    freed inside the pause and turning the collector on again does not walk it.
    """
    while True:
        with no_cycle_collection():
            batch = next(batches, None)
            if batch is None:
                return
            line = changeset.to_json(batch) + b"\n"
            del batch
        yield line


_flat = itertools.chain.from_iterable
_VALUE_TYPES = frozenset({str, int, float, bool, Decimal, datetime, date, time, bytes, type(None)})
_INT64 = 2**63


def read_batch(text: str | bytes, *, nul: bool = False) -> Batch:
    """A batch from its text, checked: a malformed one is refused before anything is applied.

    ``from_json`` trusts its input (it reads what ``to_json`` wrote); a server
    gets text from the network, so every field is checked for the type and
    size the apply code and the databases expect. ``nul``: whether the values'
    text may hold NUL characters (the receiving engine stores them); ids and
    names never may.
    """
    with no_cycle_collection():
        try:
            data = changeset.loads(text)
            batch = changeset.batch_of(data)
            problem = _batch_problem(batch, data, nul)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError) as exc:
            raise _malformed("the batch is not valid: {reason}", reason=_reason(exc)) from None
    if problem:
        raise _malformed("the batch is not valid: {reason}", reason=problem)
    return batch


def _batch_problem(batch: Batch, data: dict[str, Any], nul: bool) -> str | None:
    """What is wrong with a batch read from the network, if anything.

    Checked column by column (types gathered in sets, ranges by min and max),
    values on the batch's columns and clocks on the document's, where a row
    written once has one clock rather than one a column: about 0.6 µs a row.
    """
    if not isinstance(batch.batch_id, str) or len(batch.batch_id) > 200:
        return "id must be text of at most 200 characters"
    if not isinstance(batch.source, str) or not 0 < len(batch.source) <= 36:
        return "source must be a node id"
    if not isinstance(batch.table, str) or not batch.table:
        return "table must be a table name"
    if type(batch.stream) is not int or batch.stream not in (0, 1):
        return "stream must be 0 or 1"
    if not _int64s([batch.since, batch.upto], signed=False):
        return "since and upto must be change sequences"
    if not all(isinstance(c, str) for c in batch.columns):
        return "columns must be column names"
    if not isinstance(batch.names, dict) or not all(
        isinstance(v, str) and len(v) <= 100 and len(k) <= 36 for k, v in batch.names.items()
    ):
        return "names must map node ids to names"
    if not isinstance(batch.sync_id, str) or len(batch.sync_id) > SYNC_ID_LENGTH:
        return f"sync must be a sync id of at most {SYNC_ID_LENGTH} characters"
    rows = batch.rows
    width = len(batch.columns)
    gids = [r.gid for r in rows]
    if set(map(type, gids)) - {str} or any(not 0 < n <= GID_LENGTH for n in set(map(len, gids))):
        return "every row needs a global id of at most 32 characters"
    present = [r for r in rows if r.values is not None]
    values = [r.values or () for r in present]
    clocks = [r.clocks or () for r in present]
    slots = changeset.clock_slots(width)
    if set(map(len, values)) - {width} or set(map(len, clocks)) - {slots}:
        return f"rows present need {width} values and {slots} clocks"
    if any(r.clocks is not None or r.deleted is None for r in rows if r.values is None):
        return "a tombstone has a delete clock and no column clocks"
    if batch.stream == GONE and present:
        return "the tombstone stream holds tombstones only"
    keys = [r.key for r in rows if r.key is not None]
    if 0 in set(map(len, keys)):
        return "a key needs at least one value"
    value_texts: list[str] = []
    for column in [*zip(*values, strict=True), list(_flat(keys))]:
        if not _plain(column, value_texts):
            return "values must be text, numbers, dates, times, bytes or null"
    nodes = data["nodes"]
    if type(nodes) is not list or set(map(type, nodes)) - {str} or any(len(n) > 36 for n in nodes):
        return "clocks must name nodes by id"
    if not _int64s(_clock_values(data), signed=False):
        return "clocks must be whole numbers"
    names = [batch.batch_id, batch.source, batch.table, batch.sync_id, *batch.columns]
    names += [*batch.names, *batch.names.values(), *gids, *nodes]
    ids, stored = "".join(names), "".join(value_texts)
    try:
        ids.encode()
        stored.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): valid JSON, not storable text
        return "text must be valid Unicode"
    if "\x00" in ids or (not nul and "\x00" in stored):
        return "text must not hold NUL characters"
    return None


def _clock_values(data: dict[str, Any]) -> list[Any]:
    """Every clock of a batch document: its rows' clocks, delete clocks, seen and versions."""
    clocks, versions = data["clocks"], data["versions"]["items"]
    hlcs = clocks["hlc"]
    return [
        *(hlcs if not clocks["mixed"] else [h for h in hlcs if h is not None]),
        *(hlc for hlc, _ in _flat(clocks["mixed"])),
        *data["deleted"]["hlc"],
        *data["seen"]["items"],
        *(h for v in versions for h in v.values()),
    ]


def check_fits(batch: Batch, table: SyncTable) -> None:
    """Refuse a batch whose keys or references do not fit ``table`` (checked before it is applied)."""
    width = len(table.keys)
    keys = [r.key or () for r in batch.rows if r.key is not None or r.values is not None]
    if set(map(len, keys)) - {width}:  # a row present without a key has one of no value
        raise _malformed(
            "the batch is not valid: {reason}", reason=f"rows of {table.key} have keys of {width} values"
        )
    refs = {c.key for c in table.columns if c.ref is not None}
    present = [r.values for r in batch.rows if r.values is not None]
    for i, name in enumerate(batch.columns):
        if isinstance(name, str) and name.lower() in refs and not _gids_or_none([v[i] for v in present]):
            row = next(r for r in batch.rows if r.values is not None and not _gids_or_none([r.values[i]]))
            raise _malformed(
                "the batch is not valid: {reason}", reason=f"row {row.gid}: references must be global ids"
            )


def _gids_or_none(column: list[Any]) -> bool:
    """Whether every value of a column is a global id or null."""
    if set(map(type, column)) - {str, type(None)} or "" in column:
        return False
    return max(map(len, filter(None, column)), default=0) <= GID_LENGTH


def _plain(column: Sequence[Any], texts: list[str]) -> bool:
    """Whether a column holds only values the databases store; its text is added to ``texts``."""
    kinds = set(map(type, column))
    if kinds - _VALUE_TYPES:
        return False
    if kinds <= {str, type(None)}:
        texts += filter(None, column)  # C's loop: an empty text holds nothing to refuse
    else:
        texts += [v for v in column if type(v) is str]
    if int in kinds and not _int64s(
        column if kinds == {int} else [v for v in column if type(v) is int], signed=True
    ):
        return False
    return float not in kinds or all(math.isfinite(v) for v in column if type(v) is float)


def _int64s(values: Sequence[Any], *, signed: bool) -> bool:
    if not values:
        return True
    if set(map(type, values)) - {int}:
        return False
    low: int = min(values)
    high: int = max(values)
    return low >= (-_INT64 if signed else 0) and high < _INT64


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _malformed(message: str, **params: object) -> MalformedRequest:
    return MalformedRequest(message, "send the batch as erpsync.sync.changeset.to_json writes it", **params)


# -- errors --------------------------------------------------------------------------------------

_CONFLICT = (ConcurrentWrite, ProtocolMismatch, SchemaChanged, SchemaMismatch, NotANode)
_UNAVAILABLE = (ConnectionFailed, AuthenticationFailed, DatabaseNotFound)


def status_of(exc: ErpSyncError) -> int:
    """The HTTP status of a library error: 409 for a state to settle, 503 when the database is down.

    Anything else is the request's fault (422): a library error is never a 5xx
    for bad input.
    """
    if isinstance(exc, _CONFLICT):
        return 409
    if isinstance(exc, _UNAVAILABLE):
        return 503
    return 422


def error_out(exc: ErpSyncError) -> ErrorOut:
    """A library error as sent: rendered, and as ids with parameters for the client's language."""
    return ErrorOut(
        error=exc.message,
        hint=exc.hint,
        kind=type(exc).__name__,
        template=exc.template,
        hint_template=exc.hint_template,
        params={k: _param(v) for k, v in exc.params.items()},
    )


def error_body(message: str, hint: str, **params: object) -> ErrorOut:
    """An error of the server itself (authentication, size, route), from English ids."""
    return error_out(ErpSyncError(message, hint, **params))


def malformed_request(exc: ValidationError, hint: str) -> MalformedRequest:
    """A request that does not match its model, with its first problems named."""
    problems = "; ".join(problem_of(e) for e in exc.errors()[:10])
    return MalformedRequest("malformed request: {problems}", hint, problems=problems)


def problem_of(error: Any) -> str:
    """One validation error as ``where: what``."""
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "args")) or "body"
    return f"{where}: {error.get('msg', 'invalid')}"


def _param(value: object) -> str | int | float | bool | None:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


class PeerRefused(ErpSyncError):
    """The peer refused a request and said why (in this user's language when the message is known here)."""

    def __init__(self, data: ErrorOut, peer: str) -> None:
        self.remote = data
        self.peer = peer
        super().__init__(data.template or data.error, data.hint_template or data.hint, **data.params)

    @property
    def message(self) -> str:
        try:
            text = super().message
        except (KeyError, IndexError, ValueError):  # a message this version does not know
            text = self.remote.error
        return tr("peer {peer}: {message}", peer=self.peer, message=text)

    @property
    def hint(self) -> str:
        try:
            return super().hint
        except (KeyError, IndexError, ValueError):
            return self.remote.hint


def remote_error(data: ErrorOut, peer: str) -> ErpSyncError:
    """On the client, the error the server sent: of the same class where the session cares."""
    params = dict(data.params)
    if data.kind == "ConcurrentWrite":
        return ConcurrentWrite(data.template or data.error, data.hint_template, **params)
    if data.kind == "ProtocolMismatch" and data.template:
        return ProtocolMismatch(data.template, data.hint_template, **params)
    return PeerRefused(data, peer)

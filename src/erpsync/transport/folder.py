"""The shared-folder transport (the spec's ERP_LAUNCHER_SYNC): PCs exchange their changes as files.

Each node writes only in a subfolder of its own, named by its node id, so PCs
never write the same file of a Windows share::

    <shared folder>/erpsync/<node id>/node.json                     who it is, what it exported and imported
    <shared folder>/erpsync/<node id>/00000007_1200_1450.jsonl.gz   its changes with sequence in (1200, 1450]

A change file is gzip-compressed JSON lines: a header (node, sequence range,
schema fingerprint), the batches of ``changeset.to_json`` (rows present parents
first, then tombstones children first, as the live sync sends them) and an end
mark counting them. It is written under a temporary name in the same folder,
flushed to disk, then renamed: readers only look at complete names, so they
never read a file half-written.

An exchange imports the files of the other nodes, then exports this node's
changes since its last file. Nothing needs a cursor of its own:

- *imported*: the batches apply through ``apply_batch``, which moves this
  node's cursor for the writing node in the same transaction (the cursors a
  direct sync uses too); a file whose range ends at or before the cursor is
  skipped, a batch id applied before changes nothing;
- *exported*: ``node.json`` holds the sequence the node's last file ends at.

A folder is not a live node, so it cannot be asked for a row a batch
references (the live sync's ``fetch``). A batch whose referenced rows are
missing here waits: other nodes' files are applied first (the row often comes
from one of them), then the files still waiting are searched for the rows;
what is still missing stays pending, named in the summary, for a later
exchange. Rows whose state came whole from another node of the folder are not
written again (that node's files carry them).

Each node publishes in ``node.json`` up to where it has imported every other
node, and deletes its own files once every node that used the folder in the
last 30 days has imported them. A node that needs changes from files already
deleted (a new PC, one back after a month, a damaged file removed by hand)
gets a catch-up file from each other node at their next exchange.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import select

from erpsync import __version__
from erpsync.config import BackupConfig
from erpsync.db import Database
from erpsync.errors import ErpSyncError, InvalidArgument, SchemaMismatch
from erpsync.i18n import tr
from erpsync.progress import ProgressCallback
from erpsync.sync import fingerprint, history
from erpsync.sync.apply import ApplyResult, ConcurrentWrite, PolicyMap
from erpsync.sync.changeset import (
    ALIVE,
    BATCH_ROWS,
    STREAMS,
    Batch,
    RowChange,
    from_json,
    plan,
    read_changes,
    to_json,
)
from erpsync.sync.peer import Hello, LocalPeer
from erpsync.sync.policies import PolicyOverride
from erpsync.sync.session import RETRIES, SyncSummary, backup_then_begin, policies_of
from erpsync.transport import PeerAddress

FORMAT = 3
"""Version of the change files: 2 holds keys referencing other rows as their global ids, 3 batches
column by column (``changeset.to_json``); a file of another format is refused, nothing applied."""
SUBFOLDER = "erpsync"
STATE = "node.json"
STALE_AFTER = timedelta(days=30)
"""A node silent this long no longer keeps files from being deleted (it gets a catch-up when back)."""
_FILE = re.compile(r"^(\d{8})_(\d+)_(\d+)\.jsonl\.gz$")
_NODE_DIR = re.compile(r"^[0-9a-fA-F-]{32,36}$")
_TEMP_AGE = 3600.0
"""Seconds after which a temporary file of this node is a leftover of a crash, and removed."""


class FolderUnavailable(ErpSyncError):
    """The shared folder does not exist, cannot be reached or cannot be written."""


class FolderFileCorrupt(ErpSyncError):
    """A change file in the shared folder cannot be read: nothing of the exchange was applied."""


class NotALivePeer(ErpSyncError):
    """A shared folder was used where a node that answers is needed."""


def folder_path(address: str | PeerAddress) -> Path:
    """The folder a ``file://`` URL names: ``file:///C:/ERP/SYNC``, ``file://server/share/SYNC``, ``file:///srv/sync``."""
    url = address.url if isinstance(address, PeerAddress) else address
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        raise InvalidArgument(
            "{url} is not a shared folder",
            "write file:///C:/path/to/folder, file://server/share/folder or file:///path/to/folder",
            url=url,
        )
    path = unquote(parts.path)
    if parts.netloc and parts.netloc.lower() != "localhost":
        return Path(f"//{parts.netloc}{path}")
    if re.match(r"^/[A-Za-z]:", path):
        path = path[1:]
    return Path(path)


# -- what is in the folder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeFile:
    """One change file: its number among its node's files and the sequence range it covers.

    ``path`` is None for a range the node exported with no row for the folder
    (listed in its ``node.json``): readers move their cursor over it, so a gap
    in the ranges always means files that were deleted.
    """

    path: Path | None
    number: int
    since: int
    upto: int

    @property
    def name(self) -> str:
        """The file's name, or the range for an empty one."""
        return self.path.name if self.path else f"({self.since}, {self.upto}]"

    @staticmethod
    def name_for(number: int, since: int, upto: int) -> str:
        """The file name, which carries the range so readers choose files without opening them."""
        return f"{number:08d}_{since}_{upto}.jsonl.gz"


@dataclass
class Entry:
    """A node's subfolder and what its ``node.json`` says."""

    node_id: str
    path: Path
    name: str
    fingerprint: str | None = None
    exported: int = 0
    number: int = 0
    imported: dict[str, int] = field(default_factory=dict)
    updated: datetime | None = None
    files: list[ChangeFile] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        """Whether the node has not exchanged for ``STALE_AFTER``."""
        return self.updated is not None and datetime.now(UTC) - self.updated > STALE_AFTER


def _list_files(directory: Path) -> list[ChangeFile]:
    found = []
    try:
        names = [p.name for p in directory.iterdir()]
    except FileNotFoundError:
        return []
    for name in names:
        match = _FILE.match(name)
        if match:
            number, since, upto = (int(g) for g in match.groups())
            found.append(ChangeFile(directory / name, number, since, upto))
    return sorted(found, key=lambda f: (f.number, f.upto))


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON file, or None when absent or unreadable (a Windows reader may meet a rename)."""
    for attempt in range(5):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
        except FileNotFoundError:
            return None
        except PermissionError:
            time.sleep(0.05 * (attempt + 1))
        except (OSError, ValueError):
            return None
    return None


def _entry(directory: Path) -> Entry:
    data = read_json(directory / STATE) or {}
    node_id = directory.name
    updated = None
    try:
        updated = datetime.fromisoformat(str(data["updated"]))
        updated = updated if updated.tzinfo else updated.replace(tzinfo=UTC)
    except (KeyError, ValueError):  # no node.json yet (its first exchange failed): the folder's date
        with contextlib.suppress(OSError):
            updated = datetime.fromtimestamp(directory.stat().st_mtime, UTC)
    imported = data.get("imported")
    files = _list_files(directory)
    for item in data.get("empty") or []:
        if isinstance(item, list) and len(item) == 3 and all(isinstance(v, int) for v in item):
            files.append(ChangeFile(None, *item))
    files.sort(key=lambda f: (f.number, f.upto))
    return Entry(
        node_id=node_id,
        path=directory,
        name=str(data.get("name") or node_id[:8]),
        fingerprint=data.get("fingerprint"),
        exported=max([_int(data.get("exported")), *(f.upto for f in files)]),
        number=max([_int(data.get("number")), *(f.number for f in files)]),
        imported={str(k): _int(v) for k, v in imported.items()} if isinstance(imported, dict) else {},
        updated=updated,
        files=files,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class SharedFolder:
    """The ``erpsync`` subfolder of a shared folder and the nodes that use it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / SUBFOLDER
        if not root.is_dir():
            raise FolderUnavailable(
                "shared folder {path} does not exist or cannot be reached",
                "check the path in erpsync.toml and that the share is connected; "
                "erpsync creates its subfolder there, not the shared folder itself",
                path=str(root),
            )

    def entries(self) -> list[Entry]:
        """Every node's subfolder, by name."""
        try:
            dirs = [p for p in self.base.iterdir() if p.is_dir() and _NODE_DIR.match(p.name)]
        except FileNotFoundError:
            return []
        return sorted((_entry(d) for d in dirs), key=lambda e: (e.name.lower(), e.node_id))

    def own(self, node_id: str) -> Entry:
        """This node's subfolder, created if needed (with a clear error when it cannot be)."""
        directory = self.base / node_id
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FolderUnavailable(
                "cannot write in the shared folder {path}: {reason}",
                "check that this PC's user may create and delete files there",
                path=str(self.root),
                reason=exc.strerror or str(exc),
            ) from None
        _remove_leftovers(directory)
        return _entry(directory)


def _remove_leftovers(directory: Path) -> None:
    """Temporary files of a crashed exchange of this node (never another node's)."""
    now = time.time()
    for path in directory.glob(".*.tmp"):
        try:
            if now - path.stat().st_mtime > _TEMP_AGE:
                path.unlink()
        except OSError:
            pass


# -- writing: temporary name, flush to disk, rename ----------------------------------------------


def _replace(source: Path, target: Path) -> None:
    """Rename over ``target``; on Windows a reader holding it open makes this fail for a moment."""
    for attempt in range(10):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if attempt == 9:
                raise
            time.sleep(0.05 * (attempt + 1))


def _temporary(directory: Path, stem: str) -> Path:
    return directory / f".{stem}.{uuid.uuid4().hex[:8]}.tmp"


def _sync_to_disk(raw: IO[bytes]) -> None:
    raw.flush()
    os.fsync(raw.fileno())


def write_json(target: Path, data: dict[str, Any]) -> None:
    """Write a small JSON file atomically: a temporary name beside it, flushed to disk, renamed."""
    temporary = _temporary(target.parent, target.stem)
    try:
        with open(temporary, "wb") as raw:
            raw.write(json.dumps(data, indent=2, ensure_ascii=False).encode() + b"\n")
            _sync_to_disk(raw)
        _replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _write_changes(
    directory: Path, number: int, since: int, upto: int, header: dict[str, Any], batches: Iterable[Batch]
) -> tuple[ChangeFile | None, int]:
    """Write the batches as change file ``number``; None when they hold no row (nothing is left behind)."""
    temporary = _temporary(directory, f"{number:08d}")
    rows = count = 0
    try:
        with open(temporary, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=5, mtime=0) as gz:
                gz.write(_line(header))
                for batch in batches:
                    gz.write(to_json(batch) + b"\n")
                    count += 1
                    rows += len(batch.rows)
                gz.write(_line({"end": True, "batches": count, "rows": rows}))
            _sync_to_disk(raw)
        if rows == 0:
            return None, 0
        target = directory / ChangeFile.name_for(number, since, upto)
        _replace(temporary, target)
        return ChangeFile(target, number, since, upto), rows
    finally:
        temporary.unlink(missing_ok=True)


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What a change file says of itself (checked before anything is applied)."""

    node_id: str
    name: str
    fingerprint: str
    shapes: dict[str, dict[str, Any]]
    rows: int


def _damaged(file: ChangeFile, name: str, reason: str) -> FolderFileCorrupt:
    return FolderFileCorrupt(
        "file {file} of {name} in the shared folder is damaged ({reason}); nothing was applied",
        "delete the file: {name} writes the changes it held again at its next sync",
        file=file.name,
        name=name,
        reason=reason,
    )


def scan(file: ChangeFile, entry: Entry) -> Header | None:
    """Read a whole change file and check it; None if its node deleted it meanwhile.

    Raises ``FolderFileCorrupt`` for a file cut short, not gzip, not JSON, or
    whose header or end mark does not match its name and content.
    """
    if file.path is None:
        return None
    rows = batches = 0
    try:
        with gzip.open(file.path, "rb") as gz:
            lines = iter(gz)
            head = json.loads(next(lines))
            if not isinstance(head, dict) or head.get("erpsync") != "changes":
                raise _damaged(file, entry.name, tr("not an erpsync change file"))
            if _int(head.get("format")) > FORMAT:
                raise FolderFileCorrupt(
                    "file {file} was written by a newer erpsync (format {format})",
                    "update erpsync on this PC",
                    file=file.name,
                    format=head.get("format"),
                )
            if _int(head.get("format")) < FORMAT:
                raise FolderFileCorrupt(
                    "file {file} was written by an older erpsync (format {format})",
                    "update erpsync on {name}, then delete the file: "
                    "{name} writes the changes it held again at its next sync",
                    file=file.name,
                    format=head.get("format"),
                    name=entry.name,
                )
            if (head.get("node_id"), head.get("since"), head.get("upto")) != (
                entry.node_id,
                file.since,
                file.upto,
            ):
                raise _damaged(file, entry.name, tr("its header does not match its name"))
            end = None
            for line in lines:
                if end is not None:
                    raise _damaged(file, entry.name, tr("data after the end mark"))
                if line.startswith(b'{"end"'):
                    end = json.loads(line)
                    continue
                batch = from_json(line.decode())
                if batch.source != entry.node_id:
                    raise _damaged(file, entry.name, tr("a batch of another node"))
                batches += 1
                rows += len(batch.rows)
            if end is None:
                raise _damaged(file, entry.name, tr("the end mark is missing: the file is cut short"))
            if (end.get("batches"), end.get("rows")) != (batches, rows):
                raise _damaged(file, entry.name, tr("the end mark does not count what the file holds"))
            return Header(
                entry.node_id,
                str(head.get("name") or entry.name),
                str(head["fingerprint"]),
                dict(head["shapes"]),
                rows,
            )
    except FileNotFoundError:
        return None
    except FolderFileCorrupt:
        raise
    except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError, IndexError, StopIteration) as exc:
        raise _damaged(file, entry.name, str(exc) or type(exc).__name__) from None


def _batches(file: ChangeFile) -> Iterator[Batch]:
    """The batches of a file ``scan`` has checked."""
    assert file.path is not None
    with gzip.open(file.path, "rb") as gz:
        lines = iter(gz)
        next(lines)
        for line in lines:
            if not line.startswith(b'{"end"'):
                yield from_json(line.decode())


# -- the exchange -----------------------------------------------------------------------------------


@dataclass
class FolderSummary(SyncSummary):
    """What an exchange through a shared folder did."""

    written: str | None = None
    """The change file this node wrote, if it had changes."""
    files_read: int = 0
    removed: int = 0
    """Files of this node deleted because every node has imported them."""
    notes: list[str] = field(default_factory=list)
    """Files left pending for a later exchange, and why (in the user's language)."""

    @property
    def nothing_to_do(self) -> bool:
        """Whether no row travelled and nothing waits."""
        return super().nothing_to_do and not self.notes


def exchange(
    db: Database,
    folder: str | PeerAddress | Path,
    *,
    pull: bool = True,
    push: bool = True,
    policies: Sequence[PolicyOverride] = (),
    progress: ProgressCallback | None = None,
    batch_rows: int = BATCH_ROWS,
    backup: BackupConfig | None = None,
) -> FolderSummary:
    """Import the other nodes' change files from ``folder`` (``pull``), then write this node's (``push``).

    ``folder`` is a ``file://`` URL or a path. A damaged file or a schema that
    differs stops the import before anything is applied (this node's changes
    are still written); a file waiting for rows no file holds yet stays for a
    later exchange and is named in ``notes``. As with any peer, the exchange
    is recorded in the node's history, and with ``backup`` the database is
    backed up before the first row is applied.
    """
    started = time.perf_counter()
    root = folder if isinstance(folder, Path) else folder_path(folder)
    local = LocalPeer(db, owned=False)
    direction = history.SYNC if pull and push else history.PULL if pull else history.PUSH
    label = folder.name if isinstance(folder, PeerAddress) and folder.name else str(root)
    run = history.Run(local.node, direction, label)
    summary = FolderSummary(local.label, label, id=run.id)

    before_write = backup_then_begin(db, backup, summary, run)

    error: BaseException | None = None
    try:
        _exchange(local, root, folder, summary, pull, push, policies, progress, batch_rows, before_write)
    except BaseException as exc:
        error = exc
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        try:
            run.finish(summary.received, summary.sent, summary.conflicts, error)
        except ErpSyncError:
            if error is None:
                raise
    return summary


def _exchange(
    local: LocalPeer,
    root: Path,
    folder: str | PeerAddress | Path,
    summary: FolderSummary,
    pull: bool,
    push: bool,
    policies: Sequence[PolicyOverride],
    progress: ProgressCallback | None,
    batch_rows: int,
    before_write: Callable[[], None],
) -> None:
    url = root.absolute().as_uri() if isinstance(folder, Path) else _url(folder)
    shared = SharedFolder(root)
    hello = local.hello()
    own = shared.own(hello.node_id)
    others = [e for e in shared.entries() if e.node_id != hello.node_id]
    report = progress or (lambda label, done, total: None)
    failure: ErpSyncError | None = None
    if pull:
        work = _Import(local, hello, others, policies_of(local.node, policies), summary, report)
        work.before_write = before_write
        try:
            work.run()
        except (FolderFileCorrupt, SchemaMismatch) as exc:
            failure = exc  # nothing was applied; this node's changes still go out
    if push:
        hello = local.hello()  # what the import merged goes out in the same exchange
        _export(local, hello, own, others, summary, report, batch_rows)
    _publish(local, hello, own, others)
    summary.removed = _clean(own, others)
    for entry in _live(others):
        local.met(entry.node_id, entry.name, url)
    if failure is not None:
        raise failure


def _url(address: str | PeerAddress) -> str:
    return address.url if isinstance(address, PeerAddress) else address


def _live(others: list[Entry]) -> list[Entry]:
    return [e for e in others if not e.stale]


def _walk(files: Sequence[ChangeFile], cursor: int) -> tuple[list[ChangeFile], int]:
    """The files to read, in order, from ``cursor`` on, and the cursor reached (short of a gap)."""
    todo: list[ChangeFile] = []
    while True:
        nxt = next((f for f in files if f.since <= cursor < f.upto), None)
        if nxt is None:
            return todo, cursor
        todo.append(nxt)
        cursor = nxt.upto


def _applied_upto(local: LocalPeer, node_id: str) -> int:
    """Up to where this node has applied every stream of ``node_id``'s changes."""
    cursors = local.cursors(node_id)
    streams = [(name.lower(), s) for _, name, _, _ in local.node.rows for s in STREAMS]
    return min((cursors.get(k, 0) for k in streams), default=0)


# -- export -----------------------------------------------------------------------------------------


def _export(
    local: LocalPeer,
    hello: Hello,
    own: Entry,
    others: list[Entry],
    summary: FolderSummary,
    progress: ProgressCallback,
    batch_rows: int,
) -> None:
    """Write this node's changes since its last file, from further back if a node needs a catch-up."""
    start = own.exported
    for entry in _live(others):
        reached = entry.imported.get(hello.node_id, 0)
        if _walk(own.files, reached)[1] < own.exported:
            start = min(start, reached)  # files it needs were deleted: write them again
    if start >= hello.seq:
        return
    node = local.node
    since = {(name.lower(), s): start for _, name, _, _ in node.rows for s in STREAMS}
    work = [(t, s, n) for t, s, n in plan(node, since, hello.seq, None) if n]
    total = sum(n for _, _, n in work)
    members = {e.node_id for e in _live(others)}
    with node.db.connect() as conn:
        skip = [no for no, nid in node.peer_ids(conn).items() if nid in members]
    counted = {"done": 0}

    def batches() -> Iterator[Batch]:
        for table, stream, _ in work:
            shadow = node.table(table).shadow
            for batch in read_changes(node, node.table(table), stream, start, hello.seq, None, batch_rows):
                read = len(batch.rows)
                if skip and batch.rows:
                    with node.db.connect() as conn:
                        theirs = set(
                            conn.execute(
                                select(shadow.c.gid).where(
                                    shadow.c.deleted == stream,
                                    shadow.c.seq > batch.since,
                                    shadow.c.seq <= batch.upto,
                                    shadow.c.src.in_(skip),
                                )
                            ).scalars()
                        )
                    if theirs:
                        batch.rows = [r for r in batch.rows if r.gid not in theirs]
                if batch.rows:
                    summary.table(table).sent += len(batch.rows)
                    summary.batches += 1
                    yield batch
                counted["done"] += read
                progress("Sending", min(counted["done"], total), total)

    if total:
        progress("Sending", 0, total)
    header = {
        "erpsync": "changes",
        "format": FORMAT,
        "node_id": hello.node_id,
        "name": hello.name,
        "number": own.number + 1,
        "since": start,
        "upto": hello.seq,
        "fingerprint": hello.fingerprint,
        "shapes": hello.shapes,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__,
    }
    written, _ = _write_changes(own.path, own.number + 1, start, hello.seq, header, batches())
    last = own.files[-1] if own.files else None
    if written is not None:
        own.files.append(written)
        summary.written = written.name
    elif last is not None and last.path is None and last.upto == start:  # extend the empty range
        own.files[-1] = ChangeFile(None, last.number, last.since, hello.seq)
    else:
        own.files.append(ChangeFile(None, own.number + 1, start, hello.seq))
    own.number = own.files[-1].number
    own.exported = max(own.exported, hello.seq)


def _publish(local: LocalPeer, hello: Hello, own: Entry, others: list[Entry]) -> None:
    """Write ``node.json``: who this node is, what it has exported, and what it has imported."""
    own.imported = {e.node_id: _applied_upto(local, e.node_id) for e in others}
    own.updated = datetime.now(UTC)
    write_json(
        own.path / STATE,
        {
            "erpsync": "node",
            "format": FORMAT,
            "node_id": hello.node_id,
            "name": hello.name,
            "fingerprint": hello.fingerprint,
            "updated": own.updated.isoformat(timespec="seconds"),
            "exported": own.exported,
            "number": own.number,
            "imported": own.imported,
            "empty": [[f.number, f.since, f.upto] for f in own.files if f.path is None],
            "version": __version__,
        },
    )


def _clean(own: Entry, others: list[Entry]) -> int:
    """Delete this node's files that every node using the folder has imported; the count deleted."""
    live = _live(others)
    if not live:
        return 0  # the first node to join reads them
    reached = min(e.imported.get(own.node_id, 0) for e in live)
    removed = 0
    kept = []
    for file in own.files:
        if file.upto > reached:
            kept.append(file)
        elif file.path is not None:
            try:
                file.path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError:  # a reader has it open (Windows): next time
                kept.append(file)
    own.files = kept
    return removed


# -- import -----------------------------------------------------------------------------------------


@dataclass
class _Source:
    """Another node's files still to apply here."""

    entry: Entry
    name: str
    todo: list[ChangeFile]
    cursors: dict[tuple[str, int], int]
    waiting: dict[str, list[str]] | None = None
    """The rows the file at the head of ``todo`` waits for (table → global ids)."""
    blocked: set[str] = field(default_factory=set)
    """The rows of the batch that waits: what the rows it waits for cannot wait for in turn."""
    skip: set[str] = field(default_factory=set)
    """Rows its node deleted since: rows referencing them wait for their own deletion, in its files."""
    gap: int | None = None
    """The cursor reached when files it needs were deleted: waiting for a catch-up."""


class _Import:
    """Applies the other nodes' files: check them all, then apply in an order that satisfies references."""

    def __init__(
        self,
        local: LocalPeer,
        hello: Hello,
        others: list[Entry],
        policies: PolicyMap,
        summary: FolderSummary,
        progress: ProgressCallback,
    ) -> None:
        self.local = local
        self.hello = hello
        self.others = others
        self.policies = policies
        self.summary = summary
        self.progress = progress
        self.streams = [(name.lower(), s) for _, name, _, _ in local.node.rows for s in STREAMS]
        self.brought: set[tuple[str, str]] = set()
        self.done = 0
        self.total = 0
        self.before_write: Callable[[], None] | None = None
        """Run once, before the first batch is applied (the backup, the history record)."""

    def run(self) -> None:
        sources = [s for s in (self._source(e) for e in self.others) if s.todo or s.gap is not None]
        for source in sources:  # every file is checked before anything is applied
            for file in [f for f in source.todo if f.path is not None]:
                header = scan(file, source.entry)
                if header is None:
                    source.todo.remove(file)
                    continue
                source.name = header.name
                fingerprint.check(self.local.label, self.hello, f"{header.name} ({file.name})", header)
                self.total += header.rows
        if self.total:
            self.progress("Receiving", 0, self.total)
        while True:  # a file waiting for rows another node's file brings is tried again after it
            mark = self.summary.batches
            for source in sources:
                while source.todo and self._apply_file(source, source.todo[0]):
                    source.todo.pop(0)
            stuck = [s for s in sources if s.todo]
            if not stuck:
                break
            if self.summary.batches == mark and not self._bring_missing(sources, stuck):
                break
        for source in sources:
            if source.todo:
                waiting = source.waiting or {}
                self.summary.notes.append(
                    tr(
                        "{name}: file {file} waits for {count} rows it references ({tables}) "
                        "that no file holds yet; it is applied at a later sync",
                        name=source.name,
                        file=source.todo[0].name,
                        count=sum(len(g) for g in waiting.values()),
                        tables=", ".join(sorted(waiting)),
                    )
                )
            elif source.gap is not None:
                self.summary.notes.append(
                    tr(
                        "{name}: its files after change {seq} were removed; "
                        "it writes them again at its next sync",
                        name=source.name,
                        seq=source.gap,
                    )
                )

    def _source(self, entry: Entry) -> _Source:
        cursors = self.local.cursors(entry.node_id)
        start = min((cursors.get(k, 0) for k in self.streams), default=0)
        todo, reached = _walk(entry.files, start)
        source = _Source(entry, entry.name, todo, cursors)
        if entry.exported > reached:
            source.gap = reached
        return source

    def _apply_file(self, source: _Source, file: ChangeFile) -> bool:
        """Apply what this node lacks of ``file``; False when a batch waits for referenced rows."""
        if file.path is None:
            self._advance(source, file)
            return True
        try:
            for batch in _batches(file):
                key = (batch.table, batch.stream)
                if batch.upto <= source.cursors.get(key, 0):
                    continue
                result = self._apply(batch, frozenset(source.skip))
                if result.missing:
                    source.waiting, source.blocked = result.missing, {r.gid for r in batch.rows}
                    return False
                source.cursors[key] = max(source.cursors.get(key, 0), batch.upto)
                self.summary.table(batch.table).add(result, len(batch.rows), incoming=True)
                self.summary.batches += 1
                self.done += len(batch.rows)
                self.progress("Receiving", min(self.done, self.total), self.total)
        except FileNotFoundError:  # its node deleted it: every node had imported it, this one too
            return True
        self._advance(source, file)
        self.summary.files_read += 1
        return True

    def _advance(self, source: _Source, file: ChangeFile) -> None:
        """Move every stream's cursor to the end of ``file`` (streams it held no batch of)."""
        behind = [k for k in self.streams if source.cursors.get(k, 0) < file.upto]
        if behind:
            self.local.advance(source.entry.node_id, behind, file.upto)
            source.cursors.update(dict.fromkeys(behind, file.upto))
        source.waiting = None
        source.blocked.clear()
        source.skip.clear()

    def _apply(
        self,
        batch: Batch,
        skip: frozenset[str],
        *,
        restore: bool = False,
        loose: frozenset[str] = frozenset(),
    ) -> ApplyResult:
        if self.before_write is not None:
            self.before_write()
            self.before_write = None
        batch.sync_id = self.summary.id
        for _ in range(RETRIES):
            try:
                return self.local.apply(batch, self.policies, restore=restore, skip=skip, loose=loose)
            except ConcurrentWrite:
                continue
        return self.local.apply(batch, self.policies, restore=restore, skip=skip, loose=loose)

    def _bring_missing(self, sources: list[_Source], stuck: list[_Source]) -> bool:
        """Unblock waiting files with rows found in the files still to apply; False if nothing changed.

        A row present in some file is applied first (brought back to life if
        deleted here, as the live sync does with a fetched row). A row whose
        latest state in the waiting file's own node is a tombstone is gone
        there too: the rows referencing it are left out, their deletion follows.
        """
        wanted: dict[str, set[str]] = {}
        for source in stuck:
            for table, gids in (source.waiting or {}).items():
                wanted.setdefault(table, set()).update(g for g in gids if (table, g) not in self.brought)
        if not any(wanted.values()):
            return False
        latest = _find_rows([f for s in sources for f in s.todo], wanted)
        blocked = {gid for source in stuck for gid in source.blocked}
        moved = False
        for batch in latest:
            alive = [r for r in batch.rows if r.alive and (batch.table, r.gid) not in self.brought]
            if not alive:
                continue
            batch.rows = alive
            result = self._apply(batch, frozenset(), restore=True)
            waited = {gid for gids in result.missing.values() for gid in gids} & blocked
            if waited:  # foreign keys in a cycle: in without those references; its own file sets them
                result = self._apply(batch, frozenset(), restore=True, loose=frozenset(waited))
            if not result.missing:
                self.brought.update((batch.table, r.gid) for r in alive)
                self.summary.table(batch.table).restored += result.restored
                moved = True
        for source in stuck:
            gone = {
                r.gid
                for batch in latest
                if batch.source == source.entry.node_id
                for r in batch.rows
                if not r.alive
            }
            if gone - source.skip:
                source.skip |= gone
                moved = True
        return moved


def _find_rows(files: Sequence[ChangeFile], wanted: dict[str, set[str]]) -> list[Batch]:
    """The latest state of the rows ``wanted`` (table → global ids) in each node's files to apply."""
    latest: dict[tuple[str, str, str], tuple[Batch, RowChange]] = {}
    for file in files:
        if file.path is None:
            continue
        try:
            with gzip.open(file.path, "rb") as gz:
                lines = iter(gz)
                next(lines)
                for line in lines:
                    if line.startswith(b'{"end"'):
                        continue
                    batch = from_json(line)
                    gids = wanted.get(batch.table) or set()
                    for row in batch.rows if gids else ():
                        if row.gid in gids:
                            latest[(batch.source, batch.table, row.gid)] = (batch, row)
        except FileNotFoundError:
            continue
    grouped: dict[tuple[Any, ...], tuple[Batch, list[RowChange]]] = {}
    for batch, row in latest.values():
        grouped.setdefault((batch.source, batch.table, batch.columns), (batch, []))[1].append(row)
    return [replace(b, batch_id="", stream=ALIVE, rows=rows, since=0, upto=0) for b, rows in grouped.values()]


# -- one file, and a look at the folder ----------------------------------------------------------------


def apply_file(db: Database, path: Path, *, policies: Sequence[PolicyOverride] = ()) -> SyncSummary:
    """Apply one change file whatever the cursors say (batches applied before change nothing)."""
    path = Path(path)
    match = _FILE.match(path.name)
    if not match:
        raise InvalidArgument(
            "{path} is not an erpsync change file", "give a NNNNNNNN_FROM_TO.jsonl.gz file", path=str(path)
        )
    number, since, upto = (int(g) for g in match.groups())
    file = ChangeFile(path, number, since, upto)
    entry = Entry(path.parent.name, path.parent, path.parent.name[:8])
    local = LocalPeer(db, owned=False)
    hello = local.hello()
    header = scan(file, entry)
    if header is None:
        raise InvalidArgument("{path} does not exist", "check the path", path=str(path))
    fingerprint.check(local.label, hello, f"{header.name} ({file.name})", header)
    summary = FolderSummary(local.label, str(path))
    work = _Import(local, hello, [], policies_of(local.node, policies), summary, lambda *_: None)
    source = _Source(entry, header.name, [file], {})
    if not work._apply_file(source, file):
        raise ErpSyncError(
            "{file} references rows this database does not have: {tables}",
            "apply the files of the nodes it came from first",
            file=path.name,
            tables=", ".join(sorted(source.waiting or {})),
        )
    return summary


@dataclass
class FolderProbe:
    """What ``erpsync peers test`` reports of a shared folder."""

    path: str
    writable: bool
    nodes: list[tuple[str, bool | None, bool]]
    """(name, same schema as this node or None if unknown, stale) of every other node using it."""
    seconds: float


def probe(folder: str | PeerAddress | Path, db: Database | None = None) -> FolderProbe:
    """Reach the folder, write and delete a file there, and list the nodes using it."""
    started = time.perf_counter()
    root = folder if isinstance(folder, Path) else folder_path(folder)
    shared = SharedFolder(root)
    try:
        shared.base.mkdir(exist_ok=True)
        test = _temporary(shared.base, "probe")
        test.write_bytes(b"erpsync\n")
        test.unlink()
    except OSError as exc:
        raise FolderUnavailable(
            "cannot write in the shared folder {path}: {reason}",
            "check that this PC's user may create and delete files there",
            path=str(root),
            reason=exc.strerror or str(exc),
        ) from None
    mine: str | None = None
    me: str | None = None
    if db is not None:
        local = LocalPeer(db, owned=False)
        mine, me = local.node.fingerprint, local.node.node_id
    nodes = [
        (e.name, None if e.fingerprint is None or mine is None else e.fingerprint == mine, e.stale)
        for e in shared.entries()
        if e.node_id != me
    ]
    return FolderProbe(str(root), True, nodes, time.perf_counter() - started)

"""Backups before every sync, their verification, and verified restore.

One backup is a file and its manifest ``NAME.json`` (when, which database, how,
checksum, schema fingerprint, rows per table):

- SQLite: a copy made with SQLite's online backup API, consistent while the
  ERP keeps writing;
- PostgreSQL: ``pg_dump -Fc`` reading the snapshot of erpsync's own
  transaction, so the row counts of the manifest are those of the dump;
- MariaDB: ``mariadb-dump --single-transaction``, gzip-compressed; the row
  counts are read from the dump itself;
- where the dump tool is not installed: erpsync's portable export.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import inspect, select, text, update

from erpsync.db import Database, open_database
from erpsync.errors import ErpSyncError, InvalidArgument, NotFound, SchemaMismatch
from erpsync.export import (
    checksum,
    describe_database,
    export_database,
    gzip_writer,
    import_database,
    read_manifest,
)
from erpsync.sync.meta import NODE, fixed_tables

Method = Literal["sqlite-backup", "pg_dump", "mariadb-dump", "export"]
SQLITE: Method = "sqlite-backup"
PG_DUMP: Method = "pg_dump"
MARIADB_DUMP: Method = "mariadb-dump"
EXPORT: Method = "export"


class BackupFailed(ErpSyncError):
    """A backup or a restore could not be made, or a backup is damaged."""


class Backup(BaseModel):
    """A backup file (or export folder) and what its manifest says of it (validated when read)."""

    model_config = ConfigDict(frozen=True)

    file: str
    method: Method
    created: datetime
    database: str
    engine: str
    sha256: str
    schema_fingerprint: str
    rows: dict[str, int]
    reason: str = "manual"

    @field_validator("file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or value in (".", "..") or Path(value).name != value or "\\" in value:
            raise ValueError("must be a file name inside the backup folder")
        return value

    def manifest_path(self, folder: Path) -> Path:
        return folder / f"{self.file}.json"


def default_folder(db: Database) -> Path:
    """Where backups go unless told otherwise: beside a SQLite file, else ./backups/DBNAME."""
    if db.dialect.name == "sqlite" and db.url.database:
        path = Path(db.url.database)
        return path.parent / "backups" / path.stem
    return Path("backups") / str(db.url.database)


def create_backup(
    db: Database,
    folder: Path | None = None,
    *,
    reason: str = "manual",
    keep_last: int | None = None,
    keep_days: int | None = None,
) -> tuple[Path, Backup]:
    """Back up ``db`` into ``folder``; then apply the retention (keep the last N, and/or N days)."""
    folder = Path(folder) if folder else default_folder(db)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now()
    base = f"{Path(str(db.url.database)).stem}-{stamp:%Y%m%d-%H%M%S-%f}"
    maker = {"sqlite": _sqlite, "postgresql": _postgresql, "mariadb": _mariadb}[db.dialect.name]
    file, method, fingerprint, rows = maker(db, folder, base)
    backup = Backup(
        file=file.name,
        method=method,
        created=stamp.replace(microsecond=0),
        database=db.name,
        engine=db.dialect.name,
        sha256=checksum(file),
        schema_fingerprint=fingerprint,
        rows=rows,
        reason=reason,
    )
    with _written(backup.manifest_path(folder)) as partial:
        partial.write_text(backup.model_dump_json(indent=2) + "\n", encoding="utf-8")
    prune(folder, keep_last=keep_last, keep_days=keep_days, database=db.name)
    return folder / backup.file, backup


def _sqlite(db: Database, folder: Path, base: str) -> tuple[Path, Method, str, dict[str, int]]:
    target = folder / f"{base}.sqlite"
    with _written(target) as partial:
        source = sqlite3.connect(str(db.url.database))
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        with open_database(partial) as snapshot, snapshot.connect() as conn:
            fingerprint, rows = describe_database(conn, snapshot)
    return target, SQLITE, fingerprint, rows


def _postgresql(db: Database, folder: Path, base: str) -> tuple[Path, Method, str, dict[str, int]]:
    tool = shutil.which("pg_dump")
    if tool is None:
        return _export(db, folder, base)
    target = folder / f"{base}.dump"
    url = db.url
    with db.connect() as conn, _written(target) as partial:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        fingerprint, rows = describe_database(conn, db)
        command = [tool, "--format=custom", f"--snapshot={snapshot}", f"--file={partial}", "--no-password"]
        _run([*command, str(url.database)], _pg_env(db))
    return target, PG_DUMP, fingerprint, rows


def _mariadb(db: Database, folder: Path, base: str) -> tuple[Path, Method, str, dict[str, int]]:
    tool = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    if tool is None:
        return _export(db, folder, base)
    target = folder / f"{base}.sql.gz"
    url = db.url
    command = [
        tool,
        "--single-transaction",
        "--routines",
        "--triggers",
        "--hex-blob",
        "--skip-dump-date",
        f"--host={url.host or 'localhost'}",
        f"--port={url.port or 3306}",
        *_mysql_user(db),
        str(url.database),
    ]
    with _written(target) as partial, gzip_writer(partial) as out:
        _run(command, _mysql_env(db), sink=out)
    with db.connect() as conn:
        fingerprint, _ = describe_database(conn, db)
    return target, MARIADB_DUMP, fingerprint, _mariadb_dump_rows(target)


def _export(db: Database, folder: Path, base: str) -> tuple[Path, Method, str, dict[str, int]]:
    target = folder / f"{base}.export"
    manifest = export_database(db, target)
    return target, EXPORT, manifest.schema_fingerprint, {t.name: t.rows for t in manifest.tables}


# -- reading backups ------------------------------------------------------------------------


def list_backups(folder: Path, database: str | None = None) -> list[Backup]:
    """The backups in ``folder`` (of ``database`` only, if given), newest first.

    Manifests that do not validate are skipped: a hand-edited file must not stop
    the other backups from being listed or kept.
    """
    backups = []
    for path in Path(folder).glob("*.json"):
        try:
            backup = Backup.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        if database is None or backup.database == database:
            backups.append(backup)
    return sorted(backups, key=lambda b: (b.created, b.file), reverse=True)


def load_backup(path: Path) -> tuple[Path, Backup]:
    """A backup named by its file or its manifest."""
    path = Path(path)
    manifest = path if path.suffix == ".json" else path.with_name(path.name + ".json")
    try:
        backup = Backup.model_validate_json(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(
            "no backup at {path}", "list backups with: erpsync backup list DB", path=str(path)
        ) from None
    except ValueError as exc:
        raise BackupFailed(
            "the manifest {path} is damaged: {reason}",
            "use another backup",
            path=str(manifest),
            reason=str(exc).splitlines()[0],
        ) from None
    return manifest.parent / backup.file, backup


def verify_backup(path: Path) -> Backup:
    """Check a backup: checksum, readability, integrity and rows per table against its manifest."""
    file, backup = load_backup(path)
    if not file.exists() or checksum(file) != backup.sha256:
        raise BackupFailed(
            "backup {file} is missing, truncated or damaged: its checksum differs from its manifest",
            "use another backup",
            file=str(file),
        )
    counters: dict[str, Callable[[Path], dict[str, int]]] = {
        SQLITE: _sqlite_rows,
        PG_DUMP: _pg_dump_rows,
        MARIADB_DUMP: _mariadb_dump_rows,
        EXPORT: lambda folder: {t.name: t.rows for t in read_manifest(folder).tables},
    }
    rows = counters[backup.method](file)
    if not _same_rows(rows, backup.rows):
        raise BackupFailed(
            "backup {file} does not hold the rows its manifest lists", "use another backup", file=str(file)
        )
    return backup


def _same_rows(found: dict[str, int], expected: dict[str, int], *, only_expected: bool = False) -> bool:
    """Whether row counts match, table names compared case-insensitively."""
    got = {k.lower(): v for k, v in found.items()}
    want = {k.lower(): v for k, v in expected.items()}
    return {k: got.get(k) for k in want} == want if only_expected else got == want


def _sqlite_rows(file: Path) -> dict[str, int]:
    with open_database(file) as copy, copy.connect() as conn:
        problems = [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupFailed(
                "backup {file} is damaged: {reason}",
                "use another backup",
                file=str(file),
                reason="; ".join(problems[:3]),
            )
        return describe_database(conn, copy)[1]


def _pg_dump_rows(file: Path) -> dict[str, int]:
    """Rows per table from the COPY blocks of the dump, read through pg_restore."""
    tool = shutil.which("pg_restore")
    if tool is None:
        raise BackupFailed("pg_restore is not installed", "install the PostgreSQL client tools")
    rows: dict[str, int] = {}
    current: str | None = None
    process = subprocess.Popen(
        [tool, "--data-only", "--file=-", str(file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    assert process.stdout is not None
    for line in process.stdout:
        if current is None:
            found = re.match(r"COPY (?:\w+\.)?\"?(\w+)\"? ", line)
            if found:
                current = found.group(1)
                rows[current] = 0
        elif line == "\\.\n":
            current = None
        else:
            rows[current] += 1
    if process.wait() != 0:
        raise BackupFailed(
            "backup {file} cannot be read: {reason}",
            "use another backup",
            file=str(file),
            reason=(process.stderr.read() if process.stderr else "").strip()[:200],
        )
    return {name: count for name, count in rows.items() if not name.lower().startswith("erpsync_")}


_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_INSERT = re.compile(r"INSERT INTO `([^`]+)` VALUES\s*")
_SPACE = re.compile(r"\s+")


def _mariadb_dump_rows(file: Path) -> dict[str, int]:
    """Rows per table, counted in the INSERT statements of a mariadb-dump.

    Strings are blanked out first (the dump escapes quotes and newlines inside
    them), so what separates two rows is ``),(``; a statement ends with ``;``.
    """
    rows: dict[str, int] = {}
    table: str | None = None
    parts: list[str] = []
    try:
        with gzip.open(file, "rt", encoding="utf-8", errors="replace") as dump:
            for line in dump:
                if table is None:
                    found = _INSERT.match(line)
                    if found:
                        table, parts = found.group(1), [line[found.end() :]]
                    elif line.startswith("CREATE TABLE `"):
                        rows.setdefault(line.split("`")[1], 0)
                else:
                    parts.append(line)
                if table is not None and line.rstrip().endswith(";"):
                    values = _SPACE.sub("", _STRING.sub("''", "".join(parts)))
                    rows[table] = rows.get(table, 0) + values.count("),(") + 1
                    table = None
    except (OSError, EOFError) as exc:
        raise BackupFailed(
            "backup {file} cannot be read: {reason}", "use another backup", file=str(file), reason=str(exc)
        ) from None
    return {name: count for name, count in rows.items() if not name.lower().startswith("erpsync_")}


# -- restore and retention -------------------------------------------------------------------


def restore_backup(db: Database, path: Path, *, force: bool = False, folder: Path | None = None) -> Path:
    """Restore ``db`` from a verified backup, after backing up its current state.

    Refuses a backup whose schema differs from the database's unless ``force``.
    Returns the backup of the state before the restore.
    """
    file, backup = load_backup(path)
    verify_backup(path)
    if backup.engine != db.dialect.name and backup.method != EXPORT:
        raise InvalidArgument(
            "backup {file} is of a {engine} database; it cannot be restored into {target}",
            "restore it into a database of the same engine",
            file=backup.file,
            engine=backup.engine,
            target=db.name,
        )
    with db.connect() as conn:
        current, _ = describe_database(conn, db)
    if current != backup.schema_fingerprint and not force:
        raise SchemaMismatch(
            "backup {file} was taken with another schema than {db} has now; nothing was restored",
            "restore it anyway with --force",
            file=backup.file,
            db=db.name,
        )
    before, _ = create_backup(db, folder, reason="before restore")
    counters = _node_counters(db)
    try:
        _restore(db, file, backup.method)
    except ErpSyncError as exc:
        raise BackupFailed(
            "restoring {file} failed ({reason}); the state before the restore is in {before}",
            "restore {before} to go back",
            file=backup.file,
            reason=exc.message,
            before=str(before),
        ) from exc
    db.engine.dispose()
    with db.connect() as conn:
        _, rows = describe_database(conn, db)
    if not _same_rows(rows, backup.rows, only_expected=True):
        raise BackupFailed(
            "the restored database does not hold the rows of backup {file}; the state before "
            "the restore is in {before}",
            "restore {before} to go back",
            file=backup.file,
            before=str(before),
        )
    if counters is not None:
        _keep_counters(db, counters)
    return before


_COUNTERS = ("hlc", "seq", "gids")
"""A sync node's clock, change sequence and global-id counter: they never go back."""


def _node_counters(db: Database) -> dict[str, Any] | None:
    """The node id and counters of ``db`` when it is a sync node."""
    node = fixed_tables(db.dialect)[NODE]
    with db.connect() as conn:
        if not inspect(conn).has_table(node.name):
            return None
        row = conn.execute(select(node.c.node_id, *(node.c[c] for c in _COUNTERS))).first()
    return None if row is None else dict(row._mapping)


def is_sync_node(db: Database) -> bool:
    """Whether ``db`` is a sync node (what a restore must tell its user)."""
    return _node_counters(db) is not None


def _keep_counters(db: Database, before: dict[str, Any]) -> None:
    """Move a restored node's counters back up to where they were before the restore.

    Its peers hold cursors up to the old change sequence and rows with the global
    ids it gave out since the backup: going back would hide its next changes from
    them and give two rows one global id.
    """
    node = fixed_tables(db.dialect)[NODE]
    after = _node_counters(db)
    if after is None or after["node_id"] != before["node_id"]:
        return  # not the same node: its own counters are its own
    with db.begin() as conn:
        conn.execute(update(node).values({c: max(before[c], after[c]) for c in _COUNTERS}))


def _restore(db: Database, file: Path, method: str) -> None:
    """Load a backup into ``db`` with the tool that made it."""
    url = db.url
    if method == SQLITE:
        source = sqlite3.connect(file)
        target = sqlite3.connect(str(url.database))
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
    elif method == PG_DUMP:
        restore = [
            shutil.which("pg_restore") or "pg_restore",
            "--clean",
            "--if-exists",
            "--single-transaction",
        ]
        _run([*restore, "--no-owner", "--no-password", f"--dbname={url.database}", str(file)], _pg_env(db))
    elif method == MARIADB_DUMP:
        client = shutil.which("mariadb") or shutil.which("mysql") or "mariadb"
        command = [
            client,
            f"--host={url.host or 'localhost'}",
            f"--port={url.port or 3306}",
            *_mysql_user(db),
        ]
        with gzip.open(file, "rb") as dump:
            _run([*command, str(url.database)], _mysql_env(db), feed=dump)
    else:
        import_database(file, db, mode="replace")


def prune(
    folder: Path, *, keep_last: int | None = None, keep_days: int | None = None, database: str | None = None
) -> list[str]:
    """Delete the backups (of ``database``, if given) beyond the last ``keep_last`` and older
    than ``keep_days`` days.

    With both, a backup is kept if either rule keeps it; the newest is always kept.
    """
    if keep_last is None and keep_days is None:
        return []
    backups = list_backups(folder, database)
    limit = datetime.now() - timedelta(days=keep_days) if keep_days is not None else None
    removed = []
    for index, backup in enumerate(backups):
        kept_by_count = keep_last is not None and index < keep_last
        kept_by_age = limit is not None and backup.created >= limit
        if index == 0 or kept_by_count or kept_by_age:
            continue
        target = Path(folder) / backup.file
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        backup.manifest_path(Path(folder)).unlink(missing_ok=True)
        removed.append(backup.file)
    return removed


# -- helpers ---------------------------------------------------------------------------------


@contextmanager
def _written(target: Path) -> Iterator[Path]:
    """A temporary path renamed to ``target`` once the block succeeds, deleted if it fails:
    an interrupted backup never looks like a good one, and leaves nothing behind."""
    partial = target.with_name(target.name + ".partial")
    try:
        yield partial
        partial.replace(target)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial)
        else:
            partial.unlink(missing_ok=True)


def _pg_env(db: Database) -> dict[str, str]:
    url = db.url
    env = dict(
        os.environ, PGHOST=url.host or "localhost", PGPORT=str(url.port or 5432), PGDATABASE=str(url.database)
    )
    if url.username:
        env["PGUSER"] = url.username
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return env


def _mysql_user(db: Database) -> list[str]:
    return [f"--user={db.url.username}"] if db.url.username else []


def _mysql_env(db: Database) -> dict[str, str]:
    env = dict(os.environ)
    if db.url.password:
        env["MYSQL_PWD"] = str(db.url.password)
    return env


def _run(
    command: list[str],
    env: dict[str, str],
    *,
    feed: io.BufferedIOBase | None = None,
    sink: io.BufferedIOBase | None = None,
) -> None:
    """Run a dump or restore tool, streaming ``feed`` into it or its output into ``sink``.

    (Passing a gzip file object straight to subprocess would hand over the raw file
    underneath it.) A failure becomes a one-line BackupFailed.
    """
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE if sink else subprocess.DEVNULL,
            stderr=errors,
        )
        if feed is not None:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # the tool failed: its message says why
                shutil.copyfileobj(feed, process.stdin, 1 << 20)
            process.stdin.close()
        if sink is not None:
            assert process.stdout is not None
            shutil.copyfileobj(process.stdout, sink, 1 << 20)
        code = process.wait()
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace").strip().splitlines()
    if code != 0:
        raise BackupFailed(
            "{tool} failed: {reason}",
            "run again with --debug, or check the server",
            tool=Path(command[0]).name,
            reason=message[-1] if message else code,
        )

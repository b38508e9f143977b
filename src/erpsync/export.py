"""A complete, portable export of a database, and its import (replace, or merge without replacement).

An export is a folder: ``manifest.json`` (schema and fingerprint, row counts,
checksums) and one gzip-compressed file per table, JSON Lines by default (one
JSON array per row) or CSV. Values are written in one canonical spelling
(decimals at the column's scale, dates and date-times in ISO form, Unicode as
is, NULL as null), rows in primary-key order and gzip headers without a
timestamp, so exporting the same data from SQLite, MariaDB or PostgreSQL gives
byte-identical table files.

Import checks every file against the manifest before writing anything, then
loads everything in one transaction. ``merge`` is the spec's "fusion sans
remplacement": it adds the rows that are missing, overwrites nothing, and
reports the rows that differ.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, delete, func, select, tuple_, update
from sqlalchemy.sql import sqltypes

from erpsync import __version__
from erpsync.db import Database
from erpsync.errors import InvalidArgument, SchemaMismatch
from erpsync.progress import ProgressCallback
from erpsync.schema import ERP_TABLES, erp_tables, reflect_application, type_signature
from erpsync.sync.encoding import encoder

FORMATS = ("jsonl", "csv")
MANIFEST = "manifest.json"
CHUNK = 5000
CSV_NULL = "\\N"


@dataclass(frozen=True)
class TableManifest:
    """One exported table: its columns (canonical names and types), rows and checksums."""

    name: str
    columns: list[dict[str, Any]]
    primary_key: list[str]
    rows: int
    file: str
    sha256: str


@dataclass
class Manifest:
    """What an export holds; written as manifest.json."""

    format: str
    tables: list[TableManifest]
    schema_fingerprint: str
    source: str = ""
    created: str = ""
    erpsync: str = __version__

    def to_json(self) -> str:
        data = {
            "erpsync_export": 1,
            "erpsync": self.erpsync,
            "created": self.created,
            "source": self.source,
            "format": self.format,
            "schema_fingerprint": self.schema_fingerprint,
            "tables": [t.__dict__ for t in self.tables],
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def application_tables(conn: Connection) -> list[Table]:
    """The tables to export, parents before children (erpsync's own tables excluded)."""
    return list(reflect_application(conn).sorted_tables)


def canonical_names(db: Database) -> dict[str, tuple[str, dict[str, str]]]:
    """Stored table name (lower) → (spec table name, {stored column (lower) → spec column})."""
    out = {}
    for spec in ERP_TABLES:
        table = erp_tables(db.dialect)[spec]
        out[table.name.lower()] = (spec, {c.name.lower(): c.key for c in table.columns})
    return out


def _describe(table: Table, names: dict[str, tuple[str, dict[str, str]]]) -> tuple[str, list[dict[str, Any]]]:
    spec, columns = names.get(table.name.lower(), (table.name, {}))
    described = [
        {
            "name": columns.get(c.name.lower(), c.name),
            "type": type_signature(c.type),
            "nullable": bool(c.nullable),
        }
        for c in table.columns
    ]
    return spec, described


def fingerprint(tables: Sequence[tuple[str, list[dict[str, Any]]]]) -> str:
    """A hash of table names, column names and types, compared case-insensitively."""
    text = "\n".join(
        f"{name.lower()}:" + ",".join(f"{c['name'].lower()} {c['type']}" for c in columns)
        for name, columns in sorted(tables, key=lambda t: t[0].lower())
    )
    return hashlib.sha256(text.encode()).hexdigest()


def describe_database(conn: Connection, db: Database) -> tuple[str, dict[str, int]]:
    """The schema fingerprint of ``db`` and the rows of each table, read through ``conn``."""
    names = canonical_names(db)
    described, rows = [], {}
    for table in application_tables(conn):
        spec, columns = _describe(table, names)
        described.append((spec, columns))
        rows[spec] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    return fingerprint(described), rows


def _json_value(column_type: sqltypes.TypeEngine[Any]) -> Callable[[Any], Any]:
    """A raw driver value → its JSON value: ints and booleans as such, the rest canonical text.

    Values come straight from the driver (SQLite gives floats and ISO strings,
    the servers Decimal and datetime); the common cases are formatted directly,
    anything unusual goes through the canonical encoder.
    """
    text = encoder(column_type)
    if isinstance(column_type, sqltypes.Boolean):
        return lambda v: None if v is None else bool(v)
    if isinstance(column_type, sqltypes.Integer):
        return lambda v: None if v is None else int(v)
    if isinstance(column_type, sqltypes.Numeric) and not isinstance(column_type, sqltypes.Float):
        if column_type.scale is None:
            return lambda v: None if v is None else text(v)
        spec = f".{column_type.scale}f"
        return lambda v: (
            None if v is None else format(v, spec) if isinstance(v, int | float | Decimal) else text(v)
        )
    if isinstance(column_type, sqltypes.DateTime):
        return lambda v: None if v is None else _iso_datetime(v) if isinstance(v, str) else text(v)
    if isinstance(column_type, sqltypes.Date):
        return lambda v: None if v is None else v[:10] if isinstance(v, str) and len(v) >= 10 else text(v)
    if isinstance(column_type, sqltypes.String) and not isinstance(column_type, sqltypes._Binary):
        return lambda v: v if v is None or isinstance(v, str) else text(v)
    return lambda v: None if v is None else text(v)


def _iso_datetime(value: str) -> str:
    """``2026-01-05 10:00:00`` from SQLite's stored text, with or without microseconds or a T."""
    if len(value) >= 19 and value[10] in " T":
        return f"{value[:10]} {value[11:19]}"
    return encoder(sqltypes.DateTime())(value)


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@contextmanager
def gzip_writer(path: Path) -> Iterator[gzip.GzipFile]:
    """Gzip without a file name or timestamp in the header: the same rows give the same bytes."""
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as out,
    ):
        yield out


def export_database(
    db: Database, out: Path, *, fmt: str = "jsonl", progress: ProgressCallback | None = None
) -> Manifest:
    """Write every application table of ``db`` into the folder ``out`` (created; must be empty)."""
    if fmt not in FORMATS:
        raise InvalidArgument("unknown export format {fmt!r}", "use jsonl or csv", fmt=fmt)
    out = Path(out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise InvalidArgument("{path} is not empty", "export into a new or empty folder", path=str(out))
    names = canonical_names(db)
    manifests: list[TableManifest] = []
    with _written_folder(out) as partial, db.connect() as conn:
        if db.dialect.snapshot_isolation:  # every table read in the same state
            conn = conn.execution_options(isolation_level=db.dialect.snapshot_isolation)
        for table in application_tables(conn):
            spec, columns = _describe(table, names)
            file = partial / f"{spec}.{fmt}.gz"
            count = _export_table(conn, table, spec, file, fmt, [c["name"] for c in columns], progress)
            pk_names = [columns[list(table.columns).index(c)]["name"] for c in table.primary_key.columns]
            manifests.append(TableManifest(spec, columns, pk_names, count, file.name, checksum(file)))
        manifest = Manifest(
            fmt,
            manifests,
            fingerprint([(t.name, t.columns) for t in manifests]),
            source=f"{db.dialect.label} {db.name}",
            created=datetime.now().replace(microsecond=0).isoformat(sep=" "),
        )
        (partial / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _export_table(
    conn: Connection,
    table: Table,
    spec: str,
    file: Path,
    fmt: str,
    header: list[str],
    progress: ProgressCallback | None,
) -> int:
    """Write one table's rows in primary-key order; returns how many."""
    convert = [_json_value(c.type) for c in table.columns]
    count = 0
    with gzip_writer(file) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        writer = csv.writer(text, lineterminator="\n") if fmt == "csv" else None
        if writer:
            writer.writerow(header)
        order = list(table.primary_key.columns) or list(table.columns)
        query = str(select(table).order_by(*order).compile(conn))
        result = conn.execution_options(stream_results=True).exec_driver_sql(query)
        while rows := result.fetchmany(CHUNK):
            try:
                values = [[f(v) for f, v in zip(convert, row, strict=True)] for row in rows]
            except (ValueError, TypeError, ArithmeticError):
                raise _bad_value(spec, header, convert, rows) from None
            if writer:
                writer.writerows([_csv_cell(v) for v in row] for row in values)
            else:
                text.write("".join(_JSON.encode(row) + "\n" for row in values))
            count += len(rows)
            if progress:
                progress(spec, count, count)
    return count


def _bad_value(
    spec: str, header: list[str], convert: list[Callable[[Any], Any]], rows: Sequence[Any]
) -> InvalidArgument:
    """Name the table, row and column whose value has no canonical form (a date that is not one…)."""
    for row in rows:
        for name, f, value in zip(header, convert, row, strict=True):
            try:
                f(value)
            except (ValueError, TypeError, ArithmeticError):
                return InvalidArgument(
                    "{table} row {key}: column {column} holds {value!r}, which is not a valid {column} value",
                    "correct the value in the database, then export again",
                    table=spec,
                    key=row[0],
                    column=name,
                    value=value,
                )
    return InvalidArgument(
        "{table} holds a value that cannot be exported", "check the table's values", table=spec
    )


@contextmanager
def _written_folder(target: Path) -> Iterator[Path]:
    """A temporary folder renamed to ``target`` when complete; removed if the export fails."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        if target.is_dir():
            target.rmdir()  # empty, checked above
        partial.replace(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _csv_cell(value: Any) -> Any:
    """NULL is written \\N; text starting with a backslash gets one more, so \\N stays text."""
    if value is None:
        return CSV_NULL
    return "\\" + value if isinstance(value, str) and value.startswith("\\") else value


def _csv_value(cell: str) -> str | None:
    if cell == CSV_NULL:
        return None
    return cell[1:] if cell.startswith("\\") else cell


def checksum(path: Path) -> str:
    """SHA-256 of a file, or of the files of a folder in name order."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            with file.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()


# -- import ---------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did, per table: rows added, rows already there, rows that differ, and
    rows not added because a row they belong to differs (merge)."""

    mode: str
    added: dict[str, int] = field(default_factory=dict)
    identical: dict[str, int] = field(default_factory=dict)
    differing: dict[str, list[list[Any]]] = field(default_factory=dict)
    orphaned: dict[str, list[list[Any]]] = field(default_factory=dict)


def read_manifest(folder: Path) -> Manifest:
    """The manifest of an export, after checking that every table file is complete and intact."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest(
            data["format"],
            [TableManifest(**t) for t in data["tables"]],
            data["schema_fingerprint"],
            data.get("source", ""),
            data.get("created", ""),
            data.get("erpsync", ""),
        )
    except FileNotFoundError:
        raise InvalidArgument(
            "{path} is not an erpsync export: it has no manifest.json",
            "give the folder written by: erpsync export DB FOLDER",
            path=str(folder),
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            "the manifest of {path} is damaged: {reason}",
            "export the data again",
            path=str(folder),
            reason=str(exc),
        ) from None
    for table in manifest.tables:
        file = folder / table.file
        if not file.is_file() or checksum(file) != table.sha256:
            raise InvalidArgument(
                "{file} is missing, truncated or damaged (its checksum differs from the "
                "manifest); nothing was imported",
                "export the data again",
                file=str(file),
            )
    return manifest


def _python_value(column_type: sqltypes.TypeEngine[Any]) -> Callable[[Any], Any]:
    """JSON or CSV value → the Python value the driver expects for ``column_type``."""
    if isinstance(column_type, sqltypes.Boolean):
        return lambda v: None if v is None else v in (True, 1, "1", "True", "true")
    if isinstance(column_type, sqltypes.Integer):
        return lambda v: None if v is None else int(v)
    if isinstance(column_type, sqltypes.Float):
        return lambda v: None if v is None else float(v)
    if isinstance(column_type, sqltypes.Numeric):
        return lambda v: None if v is None else Decimal(str(v))
    if isinstance(column_type, sqltypes.DateTime):
        return lambda v: None if v is None else datetime.fromisoformat(v)
    if isinstance(column_type, sqltypes.Date):
        return lambda v: None if v is None else date.fromisoformat(v)
    if isinstance(column_type, sqltypes.Time):
        return lambda v: None if v is None else time.fromisoformat(v)
    if isinstance(column_type, sqltypes._Binary):
        return lambda v: None if v is None else bytes.fromhex(v)
    return lambda v: v


def _rows(folder: Path, table: TableManifest, fmt: str) -> Iterator[list[Any]]:
    with gzip.open(folder / table.file, "rt", encoding="utf-8", newline="") as text:
        if fmt == "csv":
            reader = csv.reader(text)
            next(reader)
            for row in reader:
                yield [_csv_value(v) for v in row]
        else:
            for line in text:
                yield json.loads(line)


def import_database(
    folder: Path, db: Database, *, mode: str = "replace", progress: ProgressCallback | None = None
) -> ImportReport:
    """Load an export into ``db`` in one transaction.

    ``replace`` empties the exported tables and loads them; ``merge`` adds the
    rows whose primary key is missing, leaves existing rows as they are and
    reports those whose content differs. The target must have the exported
    tables and columns (create the ERP schema with ``erpsync db init``).
    """
    if mode not in ("replace", "merge"):
        raise InvalidArgument("unknown import mode {mode!r}", "use replace or merge", mode=mode)
    folder = Path(folder)
    manifest = read_manifest(folder)
    report = ImportReport(mode)
    held: dict[str, set[tuple[Any, ...]]] = {}  # merge: keys of rows kept as they were, per table
    with db.begin() as conn:
        targets = _match_tables(conn, manifest)
        if mode == "replace":
            for _, table, _ in reversed(targets):
                conn.execute(delete(table))
        for entry, table, columns in targets:
            convert = [_python_value(c.type) for c in columns]
            rows = (
                [f(v) for f, v in zip(convert, row, strict=True)]
                for row in _rows(folder, entry, manifest.format)
            )
            keys = [c.key for c in columns]
            if mode == "replace":
                report.added[entry.name] = db.dialect.bulk_insert(conn, table, keys, (tuple(r) for r in rows))
            else:
                _merge_table(conn, db, entry, table, columns, rows, report, held)
            db.dialect.after_explicit_ids(conn, table)
            if progress:
                progress(entry.name, entry.rows, entry.rows)
    return report


def _match_tables(conn: Connection, manifest: Manifest) -> list[tuple[TableManifest, Table, list[Any]]]:
    """Each exported table with its target table and columns in export order; refuse any mismatch."""
    present = {t.name.lower(): t for t in application_tables(conn)}
    problems: list[str] = []
    matched = []
    for entry in manifest.tables:
        table = present.get(entry.name.lower())
        if table is None:
            problems.append(f"{entry.name}: missing table")
            continue
        by_name = {c.name.lower(): c for c in table.columns}
        columns = []
        for column in entry.columns:
            target = by_name.pop(column["name"].lower(), None)
            if target is None:
                problems.append(f"{entry.name}: missing column {column['name']}")
            elif type_signature(target.type) != column["type"]:
                problems.append(
                    f"{entry.name}.{column['name']} is {type_signature(target.type)}, "
                    f"the export has {column['type']}"
                )
            else:
                columns.append(target)
        problems += [f"{entry.name}: column {name} is not in the export" for name in by_name]
        matched.append((entry, table, columns))
    if problems:
        raise SchemaMismatch(
            "the export does not match the database: {differences}",
            "import into a database with the same schema (erpsync db init creates the ERP "
            "schema); nothing was imported",
            differences="; ".join(problems),
        )
    return matched


def _merge_table(
    conn: Connection,
    db: Database,
    entry: TableManifest,
    table: Table,
    columns: list[Any],
    rows: Iterator[list[Any]],
    report: ImportReport,
    held: dict[str, set[tuple[Any, ...]]],
) -> None:
    """Insert the rows whose primary key is missing; compare the others, chunk by chunk.

    A row whose parent was kept as it was locally (same id, other content) is not
    added: it would hang under an unrelated row. It is reported, and so are its
    own children. Numbering counters are the exception to "overwrite nothing":
    they only move forward, so numbers drawn later never collide with imported ones.
    """
    pk_positions = [i for i, c in enumerate(columns) if c.primary_key]
    pk_columns = [columns[i] for i in pk_positions]
    parents = [
        (i, next(iter(c.foreign_keys)).column.table.name.lower())
        for i, c in enumerate(columns)
        if len(c.foreign_keys) == 1
    ]
    encoders = [encoder(c.type) for c in columns]
    counter = next((i for i, c in enumerate(columns) if c.name.lower() == "derniernumero"), None)
    counters = entry.name.lower() == "tb_numerotation" and counter is not None
    added = identical = 0
    differing: list[list[Any]] = []
    orphaned: list[list[Any]] = []
    kept = held.setdefault(table.name.lower(), set())
    while chunk := [row for _, row in zip(range(CHUNK), rows, strict=False)]:
        keys = [tuple(row[i] for i in pk_positions) for row in chunk]
        existing = {
            tuple(found[i] for i in pk_positions): list(found)
            for found in conn.execute(select(*columns).where(tuple_(*pk_columns).in_(keys)))
        }
        missing = []
        for key, row in zip(keys, chunk, strict=True):
            if key in existing:
                here = existing[key]
                if [e(v) for e, v in zip(encoders, here, strict=True)] == [
                    e(v) for e, v in zip(encoders, row, strict=True)
                ]:
                    identical += 1
                elif counters and counter is not None and row[counter] > here[counter]:
                    conn.execute(
                        update(table)
                        .where(*[c == v for c, v in zip(pk_columns, key, strict=True)])
                        .values({columns[counter].key: row[counter]})
                    )
                    differing.append(list(key))
                else:
                    differing.append(list(key))
                    kept.add(key)
            elif any((row[i],) in held.get(parent, ()) for i, parent in parents):
                orphaned.append(list(key))
                kept.add(key)
            else:
                missing.append(tuple(row))
        added += db.dialect.bulk_insert(conn, table, [c.key for c in columns], missing)
    report.added[entry.name] = added
    report.identical[entry.name] = identical
    if differing:
        report.differing[entry.name] = differing
    if orphaned:
        report.orphaned[entry.name] = orphaned

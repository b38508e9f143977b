"""``erpsync export`` and ``erpsync import``: a portable copy of the data, and loading it back."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from erpsync.cli.output import DB_ARGUMENT, console, progress_bar
from erpsync.db import open_database
from erpsync.export import FORMATS, export_database, import_database
from erpsync.i18n import number, tr


@click.command("export")
@DB_ARGUMENT
@click.argument("out", metavar="FOLDER", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="jsonl",
    show_default=True,
    help="One gzip file per table: JSON Lines, or CSV (NULL written \\N).",
)
def export_command(db: str, out: Path, fmt: str) -> None:
    """Export every table of DB into FOLDER, with a manifest of counts and checksums."""
    with open_database(db) as database, progress_bar() as progress:
        manifest = export_database(database, out, fmt=fmt, progress=progress)
    table = Table(title=tr("Export of {db} into {folder}", db=database.name, folder=str(out)))
    table.add_column(tr("Table"))
    table.add_column(tr("Rows"), justify="right")
    table.add_column(tr("File"))
    for entry in manifest.tables:
        table.add_row(entry.name, number(entry.rows), entry.file)
    console.print(table)


@click.command("import")
@click.argument("folder", metavar="FOLDER", type=click.Path(path_type=Path))
@DB_ARGUMENT
@click.option(
    "--mode",
    type=click.Choice(["replace", "merge"]),
    default="merge",
    show_default=True,
    help="replace: the tables get exactly the export's rows; merge: add the missing rows, "
    "overwrite nothing, report the differences.",
)
def import_command(folder: Path, db: str, mode: str) -> None:
    """Load an export into DB, in one transaction; nothing is written if any file is damaged."""
    with open_database(db) as database, progress_bar() as progress:
        report = import_database(folder, database, mode=mode, progress=progress)
    table = Table(
        title=tr("Import of {folder} into {db} ({mode})", folder=str(folder), db=database.name, mode=mode)
    )
    table.add_column(tr("Table"))
    table.add_column(tr("Rows added"), justify="right")
    if mode == "merge":
        table.add_column(tr("Already there"), justify="right")
        table.add_column(tr("Different, kept as they are"), justify="right")
        table.add_column(tr("Not added: their parent differs"), justify="right")
    for name, added in report.added.items():
        extra = [
            number(report.identical.get(name, 0)),
            number(len(report.differing.get(name, []))),
            number(len(report.orphaned.get(name, []))),
        ]
        table.add_row(name, number(added), *(extra if mode == "merge" else []))
    console.print(table)
    for name, keys in report.differing.items():
        shown = ", ".join(str(k[0] if len(k) == 1 else tuple(k)) for k in keys[:20])
        more = "…" if len(keys) > 20 else ""
        console.print(tr("{table}: rows that differ (ids): {ids}", table=name, ids=shown + more))

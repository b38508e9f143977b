"""``erpsync backup``: create, list, verify and restore backups."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from erpsync.backup import (
    create_backup,
    default_folder,
    is_sync_node,
    list_backups,
    restore_backup,
    verify_backup,
)
from erpsync.cli.output import DB_ARGUMENT, console
from erpsync.db import open_database
from erpsync.i18n import number, tr

FOLDER = click.option(
    "--folder",
    type=click.Path(path_type=Path),
    help="Where backups are kept (default: backups/ beside a SQLite file, else ./backups/DB).",
)


@click.group()
def backup() -> None:
    """Back up a database, check a backup, restore one."""


@backup.command("create")
@DB_ARGUMENT
@FOLDER
@click.option("--keep-last", type=click.IntRange(min=1), help="Then delete all but the last N backups.")
@click.option("--keep-days", type=click.IntRange(min=0), help="Then delete backups older than N days.")
def create_command(db: str, folder: Path | None, keep_last: int | None, keep_days: int | None) -> None:
    """Back up DB (SQLite backup API, pg_dump or mariadb-dump) with a manifest of its rows."""
    with open_database(db) as database:
        path, made = create_backup(database, folder, keep_last=keep_last, keep_days=keep_days)
    console.print(
        tr(
            "Backup {file} made ({method}, {rows:,} rows).",
            file=str(path),
            method=made.method,
            rows=sum(made.rows.values()),
        )
    )


@backup.command("list")
@DB_ARGUMENT
@FOLDER
def list_command(db: str, folder: Path | None) -> None:
    """List the backups of DB, newest first."""
    with open_database(db) as database:
        where = folder or default_folder(database)
    table = Table(title=tr("Backups in {folder}", folder=str(where)))
    for column in ("File", "When", "Method", "Rows", "Reason"):
        table.add_column(tr(column), justify="right" if column == "Rows" else "left")
    for item in list_backups(where):
        table.add_row(
            item.file,
            f"{item.created:%Y-%m-%d %H:%M:%S}",
            item.method,
            number(sum(item.rows.values())),
            tr(item.reason),
        )
    console.print(table)


@backup.command("verify")
@click.argument("path", metavar="BACKUP", type=click.Path(path_type=Path))
def verify_command(path: Path) -> None:
    """Check a backup: checksum, integrity, and rows per table against its manifest."""
    checked = verify_backup(path)
    console.print(
        tr(
            "Backup {file} is intact: {rows:,} rows in {tables} tables, as its manifest says.",
            file=checked.file,
            rows=sum(checked.rows.values()),
            tables=len(checked.rows),
        )
    )


@backup.command("restore")
@DB_ARGUMENT
@click.argument("path", metavar="BACKUP", type=click.Path(path_type=Path))
@FOLDER
@click.option(
    "--force", is_flag=True, help="Restore even if the backup's schema differs from the database's."
)
def restore_command(db: str, path: Path, folder: Path | None, force: bool) -> None:
    """Restore DB from BACKUP, after verifying it and backing up the current state."""
    with open_database(db) as database:
        before = restore_backup(database, path, force=force, folder=folder)
    console.print(
        tr(
            "Restored {db} from {file}; its previous state is in {before}.",
            db=database.name,
            file=str(path),
            before=str(before),
        )
    )
    if is_sync_node(database):
        console.print(
            tr(
                "{db} is a sync node: its peers do not send it back its own changes made since the "
                "backup; to get them back, run erpsync verify {db} PEER --repair with each peer.",
                db=database.name,
            )
        )

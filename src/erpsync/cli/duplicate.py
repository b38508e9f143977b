"""``erpsync duplicate``: deep-copy a projet, version, client or commande; query and undo runs."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from erpsync.cli.output import DB_ARGUMENT, console, progress_bar
from erpsync.db import open_database
from erpsync.duplicate import (
    LEVELS,
    DuplicationResult,
    duplicate,
    list_runs,
    lookup,
    undo,
)
from erpsync.errors import InvalidArgument
from erpsync.i18n import number, tr


class _DefaultGroup(click.Group):
    """A group whose default command runs when the first word is not a subcommand,
    so ``erpsync duplicate DB projet 7`` and ``erpsync duplicate undo DB 3`` both work."""

    default = "copy"

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return self.default, self.commands[self.default], args

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("erpsync duplicate", "DB LEVEL ID [OPTIONS] | map | undo | runs …")


@click.group(cls=_DefaultGroup, epilog="Options of the copy: erpsync duplicate copy --help")
def duplicate_group() -> None:
    """Deep-copy a record tree: erpsync duplicate DB projet|version|client|commande ID."""


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key or not setting:
            raise InvalidArgument(
                "{option} {value!r} is not of the form NAME=VALUE",
                "e.g. {option} tb_LigneCommande=skip",
                option=option,
                value=value,
            )
        out[key] = setting
    return out


@duplicate_group.command("copy")
@DB_ARGUMENT
@click.argument("level", type=click.Choice(list(LEVELS)))
@click.argument("source_id", metavar="ID", type=int)
@click.option("--shallow", is_flag=True, help="Copy the record alone, without its descendants.")
@click.option(
    "--into",
    type=int,
    metavar="PARENT_ID",
    help="Put the copy under this parent (a version, "
    "client or commande goes under a projet, version or client).",
)
@click.option("--user", metavar="LOGIN", help="Recorded in the journal (tb_Logs).")
@click.option(
    "--edge",
    "edges",
    multiple=True,
    metavar="TABLE[.COLUMN]=MODE",
    help="How to follow a child table: deep, shallow or skip (repeatable).",
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    metavar="TYPE=TEMPLATE",
    help="Number format, e.g. CLIENT=CLI-{n:03d} (types: PROJET, CLIENT, COMMANDE).",
)
@click.option(
    "--dry-run", is_flag=True, help="Show what would be copied and the numbers drawn; write nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def copy_command(
    db: str,
    level: str,
    source_id: int,
    shallow: bool,
    into: int | None,
    user: str | None,
    edges: tuple[str, ...],
    formats: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Copy a projet, version, client or commande with all its descendants."""
    with open_database(db) as database, progress_bar(transient=True) as progress:
        result = duplicate(
            database,
            level,
            source_id,
            into=into,
            deep=not shallow,
            user=user,
            edges=_pairs(edges, "--edge"),
            formats=_pairs(formats, "--format"),
            dry_run=dry_run,
            progress=None if as_json else progress,
        )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        _print_result(result)


def _print_result(result: DuplicationResult) -> None:
    table = Table(
        title=tr(
            "Dry run of the copy of {level} {id}" if result.dry_run else "Copy of {level} {id}",
            level=result.level,
            id=result.source_id,
        )
    )
    table.add_column(tr("Table"))
    table.add_column(tr("Rows"), justify="right")
    table.add_column(tr("New numbers"))
    for name, count in result.rows.items():
        numbers = result.numbers.get(name)
        shown = (
            ""
            if numbers is None
            else (
                f"{numbers.column} {numbers.first}"
                if numbers.count == 1
                else f"{numbers.column} {numbers.first} … {numbers.last}"
            )
        )
        table.add_row(name, number(count), shown)
    console.print(table)
    if result.dry_run:
        console.print(tr("Dry run: nothing was written."))
    else:
        console.print(
            tr(
                "Run {run}: {level} {id} copied as {new_id} in {seconds:.2f} s.",
                run=result.run_id,
                level=result.level,
                id=result.source_id,
                new_id=result.new_id,
                seconds=result.seconds,
            )
        )


@duplicate_group.command("map")
@DB_ARGUMENT
@click.argument("run_id", metavar="RUN", type=int)
@click.argument("table", metavar="TABLE")
@click.argument("old_id", metavar="OLD_ID", type=int)
def map_command(db: str, run_id: int, table: str, old_id: int) -> None:
    """Print the id of the copy of TABLE row OLD_ID made by run RUN (TABLE: EqClient, tb_Client…)."""
    with open_database(db) as database:
        click.echo(lookup(database, run_id, table, old_id))


@duplicate_group.command("undo")
@DB_ARGUMENT
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--force", is_flag=True, help="Undo even if the copies were changed since.")
@click.option("--user", metavar="LOGIN", help="Recorded in the journal (tb_Logs).")
def undo_command(db: str, run_id: int, force: bool, user: str | None) -> None:
    """Delete exactly the rows a duplication run created, in one transaction."""
    with open_database(db) as database:
        deleted = undo(database, run_id, force=force, user=user)
    table = Table(title=tr("Undo of run {run}", run=run_id))
    table.add_column(tr("Table"))
    table.add_column(tr("Rows deleted"), justify="right")
    for name, count in deleted.items():
        table.add_row(name, number(count))
    console.print(table)


@duplicate_group.command("runs")
@DB_ARGUMENT
def runs_command(db: str) -> None:
    """List the duplication runs recorded in the database, newest first."""
    with open_database(db) as database:
        runs = list_runs(database)
    table = Table(title=tr("Duplication runs of {db}", db=database.name))
    for column in ("Run", "When", "Level", "Source", "Copy", "User", "Status"):
        table.add_column(tr(column))
    for run in runs:
        table.add_row(
            str(run.run_id),
            f"{run.started_at:%Y-%m-%d %H:%M}",
            run.level,
            str(run.source_id),
            str(run.new_id or ""),
            run.user or "",
            tr(run.status),
        )
    console.print(table)

"""``erpsync db``: create the reference schema, fill it with demo data, show what it holds."""

from __future__ import annotations

import time

import click
from rich.table import Table

from erpsync.cli.output import DB_ARGUMENT, console, progress_bar
from erpsync.db import Database, create_server_database, display, open_database, parse_url
from erpsync.fill import fill
from erpsync.i18n import number, tr
from erpsync.schema import init_schema
from erpsync.summary import summarize


@click.group()
def db() -> None:
    """Create, fill and inspect the ERP database."""


@db.command("init")
@DB_ARGUMENT
@click.option(
    "--create-database", is_flag=True, help="Create the MariaDB/PostgreSQL database first if it is missing."
)
def init(db: str, create_database: bool) -> None:
    """Create the reference ERP schema; do nothing if it is already there as expected."""
    if create_database and create_server_database(db):
        console.print(tr("Database {name} created.", name=display(parse_url(db))))
    with open_database(db, create=True) as database:
        result = init_schema(database)
    if not result.created:
        message = tr("Schema already in place on {db}; nothing to do.", db=database.name)
    elif result.existing:
        message = tr(
            "Created missing tables on {db}: {tables}.", db=database.name, tables=", ".join(result.created)
        )
    else:
        message = tr("Schema created on {db}: {tables}.", db=database.name, tables=", ".join(result.created))
    console.print(message)


@db.command("fill")
@DB_ARGUMENT
@click.option(
    "--scale",
    type=int,
    default=1,
    show_default=True,
    help="Units of ordinary demo projects (3 projects, about 4,000 lines per unit).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the random generator: same seed, same data.",
)
@click.option(
    "--big-project",
    "big_project",
    type=int,
    default=0,
    metavar="LINES",
    help="Also build one project whose tree holds LINES LigneCommande (the benchmarks use 1000000).",
)
def fill_command(db: str, scale: int, seed: int, big_project: int) -> None:
    """Add realistic French demo data, then show what the database holds."""
    with open_database(db) as database:
        started = time.perf_counter()
        with progress_bar() as progress:
            fill(database, scale=scale, seed=seed, big_project=big_project, progress=progress)
        console.print(
            tr("Filled {db} in {seconds:.1f} s.", db=database.name, seconds=time.perf_counter() - started)
        )
        print_summary(database)


@db.command("summary")
@DB_ARGUMENT
def summary(db: str) -> None:
    """Show the rows of each ERP table and the total of the orders."""
    with open_database(db) as database:
        print_summary(database)


def print_summary(database: Database) -> None:
    """A table of the rows per ERP table and the sum of MontantHT."""
    result = summarize(database)
    table = Table(title=tr("Contents of {db}", db=database.name))
    table.add_column(tr("Table"))
    table.add_column(tr("Rows"), justify="right")
    for name, count in result.rows.items():
        table.add_row(name, number(count))
    table.add_section()
    table.add_row(tr("Total excl. tax (sum of MontantHT)"), number(result.total_ht, ",.2f"))
    console.print(table)

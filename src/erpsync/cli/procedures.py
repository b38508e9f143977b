"""``erpsync procedures``: install or remove the specification's stored procedures."""

from __future__ import annotations

import click

from erpsync import procedures as library
from erpsync.cli.output import DB_ARGUMENT, console
from erpsync.i18n import tr

PRINT_OPTION = click.option(
    "--print",
    "print_sql",
    is_flag=True,
    help="Write the SQL to stdout for a database administrator instead of running it (no connection).",
)


@click.group("procedures")
def procedures() -> None:
    """The stored procedures SP_DupliquerProjet … on MariaDB and PostgreSQL."""


@procedures.command("install")
@DB_ARGUMENT
@PRINT_OPTION
def install(db: str, print_sql: bool) -> None:
    """Install the procedures, or replace those already there."""
    if print_sql:
        click.echo(library.sql_text(db, "install"), nl=False)
        return
    result = library.install(db)
    console.print(
        tr(
            "Installed {n} procedures on {db}: {names}.",
            n=len(result.routines),
            db=result.database,
            names=", ".join(result.routines),
        )
    )


@procedures.command("uninstall")
@DB_ARGUMENT
@PRINT_OPTION
def uninstall(db: str, print_sql: bool) -> None:
    """Remove the procedures; the record of past duplications is kept."""
    if print_sql:
        click.echo(library.sql_text(db, "uninstall"), nl=False)
        return
    result = library.uninstall(db)
    console.print(tr("Removed the procedures from {db}.", db=result.database))

"""The ``erpsync`` command: parses options, calls the library, prints in French or English.

Each command is a thin wrapper over one library function. Errors raised by
the library (``ErpSyncError``) become ``Error: …`` and ``Try: …`` lines on
stderr and exit status 1; ``--debug`` adds the traceback and every SQL statement.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from erpsync import __version__
from erpsync.cli import db as db_commands
from erpsync.cli.backup import backup
from erpsync.cli.config import config
from erpsync.cli.demo import demo_command
from erpsync.cli.duplicate import duplicate_group
from erpsync.cli.output import err_console
from erpsync.cli.procedures import procedures
from erpsync.cli.serve import serve_command
from erpsync.cli.service import service_group
from erpsync.cli.status import peers_group, status_command
from erpsync.cli.sync import (
    conflicts_group,
    node_group,
    pull_command,
    push_command,
    sync_command,
    verify_command,
)
from erpsync.cli.transfer import export_command, import_command
from erpsync.errors import ErpSyncError
from erpsync.i18n import set_language, tr


class _Group(click.Group):
    """The top-level group: the one place where errors become a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ErpSyncError as exc:
            _report(ctx, exc.message, exc.hint)
        except KeyboardInterrupt:
            err_console.print(tr("Interrupted."))
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug: still one line, the traceback under --debug
            _report(
                ctx,
                f"{type(exc).__name__}: {exc}",
                tr("run again with --debug to see the SQL and the traceback"),
            )
        ctx.exit(1)


def _report(ctx: click.Context, message: str, hint: str) -> None:
    if ctx.obj and ctx.obj.get("debug"):
        err_console.print_exception(show_locals=False)
    err_console.print(tr("Error: {message}", message=message), markup=False)
    if hint:
        err_console.print(tr("Try: {hint}", hint=hint), markup=False)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and every SQL statement.")
@click.option("--lang", type=click.Choice(["fr", "en"]), help="Language of messages (default: from LANG).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="ERPSYNC_CONFIG",
    help="Configuration file (default: erpsync.toml in this folder, or ERPSYNC_CONFIG).",
)
@click.version_option(__version__, prog_name="erpsync", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, debug: bool, lang: str | None, config_path: str | None) -> None:
    """Sync and deep-copy the data of an ERP across SQLite PCs and a MariaDB or PostgreSQL server."""
    ctx.obj = {"debug": debug, "config": config_path}
    set_language(lang)
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("SQL: %(message)s"))
        logger = logging.getLogger("sqlalchemy.engine")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


cli.add_command(db_commands.db)
cli.add_command(duplicate_group, name="duplicate")
cli.add_command(procedures)
cli.add_command(export_command)
cli.add_command(import_command)
cli.add_command(backup)
cli.add_command(config)
cli.add_command(serve_command)
cli.add_command(demo_command)
cli.add_command(service_group)
cli.add_command(status_command)
cli.add_command(peers_group)
for _command in (node_group, sync_command, pull_command, push_command, conflicts_group, verify_command):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``erpsync`` console script."""
    cli()

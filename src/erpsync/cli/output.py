"""Consoles, tables and progress bars shared by the commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from erpsync.fill import ProgressCallback
from erpsync.i18n import tr

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(transient: bool = True) -> Iterator[ProgressCallback]:
    """A Rich progress display fed by the library's ``progress(label, done, total)`` calls.

    Silent when stderr is not a terminal (a log file, a scheduled task).
    """
    if not err_console.is_terminal:
        yield lambda label, done, total: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(tr(label), total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield update


DB_ARGUMENT = click.argument("db", metavar="DB")
"""The database every command works on: a SQLAlchemy URL or a SQLite file path."""

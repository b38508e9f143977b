"""Consoles, tables and progress bars shared by the commands."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

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

from erpsync.config import DEFAULT_PATH, Config, load_config
from erpsync.i18n import tr
from erpsync.progress import ProgressCallback
from erpsync.transport import TOKEN_ENV, PeerAddress

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


def _config_of(ctx: click.Context, value: str) -> Config | None:
    """The configuration file when ``value`` may be a node name in it (not a URL or a path)."""
    if "://" in value or Path(value).exists() or not value.replace("-", "").replace("_", "").isalnum():
        return None
    root = ctx.find_root()
    path = Path((root.obj or {}).get("config") or DEFAULT_PATH)
    return load_config(path) if path.is_file() else None


def resolve_database(ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A database URL, a SQLite path, or the name of a node in the configuration file.

    ``PC1`` means this node's database when erpsync.toml (or ``--config``) names
    this node PC1, or the URL of peer PC1 when that URL is a database.
    """
    config = _config_of(ctx, value)
    if config is None:
        return value
    if value.lower() == config.node.name.lower():
        return config.node.database
    for peer in config.peers:
        if peer.name.lower() == value.lower() and urlsplit(peer.url).scheme.split("+")[0] in DATABASE_SCHEMES:
            return peer.url
    return value


def resolve_peer(ctx: click.Context, param: click.Parameter, value: str) -> PeerAddress:
    """A peer's address: a peer named in the configuration (with its token), or a URL or path.

    A URL given directly takes its token from ``ERPSYNC_TOKEN``.
    """
    config = _config_of(ctx, value)
    if config is not None:
        for peer in config.peers:
            if peer.name.lower() == value.lower():
                return PeerAddress(peer.url, peer.secret(), peer.name)
    return PeerAddress(resolve_database(ctx, param, value), os.environ.get(TOKEN_ENV) or None)


DATABASE_SCHEMES = ("sqlite", "mysql", "mariadb", "postgresql", "postgres")
DB_ARGUMENT = click.argument("db", metavar="DB", callback=resolve_database)
"""The database every command works on: a URL, a SQLite file path, or a node named in erpsync.toml."""

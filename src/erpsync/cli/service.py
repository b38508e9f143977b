"""``erpsync service run`` and ``erpsync service status``: the periodic sync with every configured peer."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.table import Table

from erpsync import service
from erpsync.cli.output import console
from erpsync.config import DEFAULT_PATH
from erpsync.i18n import number, tr

NOT_RUNNING = 3
"""Exit status of ``service status`` when the service does not run (as ``systemctl status``)."""


def config_path(ctx: click.Context) -> Path:
    """The configuration file: ``--config``, else ERPSYNC_CONFIG (Click reads it), else ./erpsync.toml."""
    given = (ctx.find_root().obj or {}).get("config")
    return Path(given) if given else DEFAULT_PATH


@click.group("service")
def service_group() -> None:
    """Sync with every peer of erpsync.toml at each interval, or see how the service runs."""


@contextmanager
def _ctrl_c(stop: threading.Event, say: Callable[[str], None]) -> Iterator[None]:
    """First Ctrl-C: stop after the batch being applied. Second: stop at once (that batch rolls back).

    SIGINT (and Ctrl-Break's SIGBREAK on Windows) are the signals a console
    sends on every platform; the handlers are put back afterwards.
    """

    def handler(_signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        say(tr("Stopping after the current batch (Ctrl-C again to stop at once)."))

    signals: list[int] = [signal.SIGINT]
    if hasattr(signal, "SIGBREAK"):  # Windows
        signals.append(signal.SIGBREAK)
    previous: dict[int, Any] = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread (embedded): Ctrl-C stays a KeyboardInterrupt
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@service_group.command("run")
@click.option("--once", is_flag=True, help="Sync once with every peer, then stop (for a scheduled task).")
@click.option(
    "--log",
    "log_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also append each line to this file (a service started with the machine has no console).",
)
@click.pass_context
def run_command(ctx: click.Context, once: bool, log_file: Path | None) -> None:
    """Sync with every peer at each interval (sync.interval, default 300 s) until Ctrl-C."""
    stop = threading.Event()

    def say(line: str) -> None:
        stamped = f"{datetime.now():%Y-%m-%d %H:%M:%S} {line}"
        console.print(stamped, markup=False)
        if log_file is not None:
            with log_file.open("a", encoding="utf-8") as out:
                out.write(stamped + "\n")

    with _ctrl_c(stop, say):
        state = service.Service(config_path(ctx), stop=stop, say=say).run(once=once)
    if once and any(p.result == service.FAILED for p in state.peers.values()):
        raise click.exceptions.Exit(1)


@service_group.command("status")
@click.pass_context
def status_command(ctx: click.Context) -> None:
    """Whether the service runs, its last and next run, and how the last sync with each peer went."""
    path = config_path(ctx)
    found = service.status(path)
    state = found.state
    if state is None:
        console.print(tr("The service has never run with {config}.", config=str(path)))
        raise click.exceptions.Exit(NOT_RUNNING)
    if found.running:
        console.print(
            tr(
                "Service: running (process {pid} on {host}, since {since}).",
                pid=state.pid,
                host=state.host,
                since=service.shown(state.started),
            )
        )
    elif found.died:
        console.print(
            tr(
                "Service: not running; it stopped without a word (killed, crashed or machine off), "
                "last seen at {when}.",
                when=service.shown(state.heartbeat),
            )
        )
    else:
        console.print(tr("Service: not running (stopped at {when}).", when=service.shown(state.stopped)))
    console.print(
        tr(
            "Last run: {last}. Next run: {next}.",
            last=service.shown(state.last_run),
            next=service.shown(state.next_run) if found.running else "-",
        )
    )
    if state.peers:
        table = Table()
        for title in (
            "Peer",
            "Result",
            "Last try",
            "Last success",
            "Received",
            "Sent",
            "Failures",
            "Next try",
        ):
            table.add_column(
                tr(title), justify="right" if title in ("Received", "Sent", "Failures") else "left"
            )
        for name, peer in state.peers.items():
            table.add_row(
                name,
                tr(peer.result) if peer.result else "-",
                service.shown(peer.last_try),
                service.shown(peer.last_ok),
                number(peer.received),
                number(peer.sent),
                str(peer.failures),
                service.shown(peer.retry_at),
            )
        console.print(table)
        for name, peer in state.peers.items():
            for line in ([peer.message] if peer.message else []) + peer.notes:
                console.print(tr("{peer}: {reason}", peer=name, reason=line), markup=False)
    if not found.running:
        raise click.exceptions.Exit(NOT_RUNNING)

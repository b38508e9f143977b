"""``erpsync demo``."""

from __future__ import annotations

from pathlib import Path

import click

from erpsync.cli.output import console
from erpsync.cli.sync import print_summary
from erpsync.demo import FILES, HUB, PC1, run_demo
from erpsync.i18n import tr
from erpsync.sync.session import SyncSummary


@click.command("demo")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default="erpsync-demo")
@click.option("--force", is_flag=True, help="Start again over an earlier demo in FOLDER.")
def demo_command(folder: Path, force: bool) -> None:
    """An online hub and two PCs on SQLite, offline edits on both, a sync over HTTP on loopback.

    Everything stays in FOLDER (default: erpsync-demo) to explore afterwards.
    """

    def say(message: str, summary: SyncSummary | None) -> None:
        if message:
            console.print(message)
        if summary is not None:
            print_summary(summary, summary.local)

    result = run_demo(folder, force=force, say=say)
    console.print()
    console.print(tr("The demo's nodes are in {folder}. To go on:", folder=str(result.folder)))
    hub, pc = (result.folder / f"{FILES[name]}.toml" for name in (HUB, PC1))
    console.print(f"  erpsync --config {hub} serve {HUB}")
    console.print(f"  erpsync --config {pc} sync {PC1} {HUB}")
    console.print(f"  erpsync --config {pc} status")
    console.print(f"  erpsync verify {result.databases[PC1]} {result.databases[HUB]}")
    if not result.converged:
        raise SystemExit(1)

"""``erpsync config``: write an example, check a file, convert the old scripts' configuration."""

from __future__ import annotations

from pathlib import Path

import click

from erpsync.cli.output import console
from erpsync.config import DEFAULT_PATH, import_legacy, load_config, save_config, write_example
from erpsync.errors import InvalidArgument
from erpsync.i18n import tr

PATH = click.argument("path", metavar="FILE", type=click.Path(path_type=Path), default=DEFAULT_PATH)


@click.group()
def config() -> None:
    """Write, check and convert the configuration file (erpsync.toml)."""


@config.command("init")
@PATH
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_command(path: Path, force: bool) -> None:
    """Write a commented example configuration to FILE (default: erpsync.toml)."""
    write_example(path, force=force)
    console.print(
        tr("Wrote {path}: edit it, then check it with: erpsync config check {path}", path=str(path))
    )


@config.command("check")
@PATH
def check_command(path: Path) -> None:
    """Validate FILE and show what it configures."""
    loaded = load_config(path)
    console.print(
        tr(
            "{path} is valid: node {name} on {db}, {peers} peers, a sync every {interval} s.",
            path=str(path),
            name=loaded.node.name,
            db=loaded.node.database,
            peers=len(loaded.peers),
            interval=loaded.sync.interval,
        )
    )
    for peer in loaded.peers:
        missing = peer.token_env and peer.secret() is None
        note = tr(" (environment variable {var} is not set)", var=peer.token_env) if missing else ""
        console.print(f"  {peer.name}: {peer.url}{note}")


@config.command("import-legacy")
@click.argument("legacy", metavar="OLD_FILE", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_PATH,
    show_default=True,
    help="The erpsync.toml to write.",
)
@click.option("--database", help="This node's database, if the old file does not name it.")
@click.option("--name", help="This node's name, if the old file does not give it.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def import_legacy_command(
    legacy: Path, out: Path, database: str | None, name: str | None, force: bool
) -> None:
    """Convert network_config.json or erp_launcher_config.json into erpsync.toml."""
    converted = import_legacy(legacy, database=database, name=name)
    if out.exists() and not force:
        raise InvalidArgument(
            "{path} already exists", "choose another path, or overwrite it with --force", path=str(out)
        )
    save_config(converted, out, origin="Converted by erpsync config import-legacy")
    console.print(
        tr(
            "Wrote {path} from {legacy}: {peers} peers, a sync every {interval} s.",
            path=str(out),
            legacy=str(legacy),
            peers=len(converted.peers),
            interval=converted.sync.interval,
        )
    )

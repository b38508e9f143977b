"""``erpsync serve``: this node over HTTP(S), for the peers that sync with it."""

from __future__ import annotations

import sys
from contextlib import suppress
from pathlib import Path

import click

from erpsync.cli.output import DB_ARGUMENT, console, err_console
from erpsync.config import DEFAULT_PATH, Config, ServeConfig, load_config
from erpsync.db import open_database
from erpsync.errors import InvalidArgument
from erpsync.i18n import tr
from erpsync.sync.node import Node
from erpsync.transport import TOKEN_ENV


def _configuration(ctx: click.Context) -> Config | None:
    """erpsync.toml: the one ``--config`` names (which must exist), else the one here if any."""
    given = (ctx.find_root().obj or {}).get("config")
    if given:
        return load_config(Path(given))
    return load_config(DEFAULT_PATH) if DEFAULT_PATH.is_file() else None


@click.command("serve")
@DB_ARGUMENT
@click.option(
    "--host", help="Address to listen on (default 127.0.0.1; 0.0.0.0: every interface, needs tokens)."
)
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default 8765; 0: any free port).")
@click.option("--cert", type=click.Path(dir_okay=False), help="TLS certificate (PEM): serve HTTPS.")
@click.option("--key", type=click.Path(dir_okay=False), help="The certificate's private key (PEM).")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    help=f"A token every peer may use (or {TOKEN_ENV}); per-peer tokens come from erpsync.toml.",
)
@click.option("--max-body", type=click.IntRange(1024), help="Largest request accepted, in bytes.")
@click.option(
    "--stdio",
    is_flag=True,
    help="Answer one peer on stdin and stdout instead of listening: what ssh:// peers run here.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="info logs every request.",
)
@click.pass_context
def serve_command(
    ctx: click.Context,
    db: str,
    host: str | None,
    port: int | None,
    cert: str | None,
    key: str | None,
    token: str | None,
    max_body: int | None,
    stdio: bool,
    log_level: str,
) -> None:
    """Serve node DB over HTTP until Ctrl-C, for peers syncing with http(s)://HOST:PORT.

    Peers authenticate with a token: those of the clients and peers listed in
    erpsync.toml (token or token_env), and --token. Without any, only this
    machine may connect. With --stdio, answer the one peer on stdin and stdout
    (ssh:// peers run this through ssh, which authenticates them).
    """
    config = _configuration(ctx)
    settings = config.serve if config is not None else ServeConfig()
    if stdio:
        if host or port is not None or cert or key:
            raise InvalidArgument(
                "--stdio takes no --host, --port, --cert or --key",
                "ssh carries the connection and authenticates the peer: drop these options",
            )
        from erpsync.transport.stdio import serve_stdio

        serve_stdio(db, max_body=max_body or settings.max_body)
        return

    from erpsync.transport.server import SHARED, serve  # the web stack loads for this command only

    tokens, unset = config.accepted_tokens() if config is not None else ({}, [])
    for name, variable in unset:
        err_console.print(
            tr("Peer {name} cannot connect: environment variable {var} is not set.", name=name, var=variable),
            markup=False,
        )
    if token:
        tokens[SHARED] = token
    with open_database(db) as database:
        node = Node(database)  # refuses a database that is not a node, before listening

        def ready(url: str) -> None:
            console.print(
                tr("Serving node {name} ({db}) on {url}.", name=node.name, db=database.name, url=url)
            )
            if tokens:
                console.print(tr("Peers allowed: {names}.", names=", ".join(sorted(tokens))))
            else:
                console.print(tr("No token: only this machine can connect."))
            sys.stdout.flush()

        with suppress(KeyboardInterrupt):  # Ctrl-C is how a server is stopped: not an error
            serve(
                database,
                host=host or settings.host,
                port=settings.port if port is None else port,
                tokens=tokens,
                cert=cert or settings.cert,
                key=key or settings.key,
                max_body=max_body or settings.max_body,
                log_level=log_level,
                ready=ready,
            )
    console.print(tr("Stopped."))

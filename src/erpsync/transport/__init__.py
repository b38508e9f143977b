"""Peers by address: a database URL or SQLite path, ``http(s)://``, ``ssh://`` or ``file://``.

Every transport implements ``erpsync.sync.peer.Peer``, so sync, pull, push,
the service and ``peers test`` work the same whatever the channel;
``open_peer`` picks the transport from the address's scheme.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from erpsync.errors import InvalidArgument
from erpsync.sync.peer import LocalPeer, Peer

TOKEN_ENV = "ERPSYNC_TOKEN"
"""Where a token comes from when a peer is given by URL on the command line."""


@dataclass(frozen=True)
class PeerAddress:
    """Where a peer is, and the secret it expects."""

    url: str
    token: str | None = None
    name: str | None = None
    """Its name in the configuration, when it comes from there."""

    @property
    def scheme(self) -> str:
        """``http``, ``https``, ``ssh``, ``file``, or ``""`` for a database."""
        scheme = self.url.split("://", 1)[0].split("+")[0].lower() if "://" in self.url else ""
        return scheme if scheme in ("http", "https", "ssh", "file") else ""


def shown_url(url: str) -> str:
    """``url`` as messages and the sync history show it: a password in it becomes ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1)))


def open_peer(address: PeerAddress | str, *, retries: int | None = None) -> Peer:
    """The peer at ``address``; a plain string takes its token from ``ERPSYNC_TOKEN``.

    ``retries``: how often a network peer tries again after a network error
    (default: the transport's own).
    """
    again: dict[str, Any] = {} if retries is None else {"retries": retries}
    if isinstance(address, str):
        address = PeerAddress(address, os.environ.get(TOKEN_ENV) or None)
    if "://" in address.url:
        try:
            urlsplit(address.url)  # each transport checks the rest of its address
        except ValueError as exc:
            raise InvalidArgument(
                "{url} is not a valid peer address: {reason}",
                "write http(s)://host:port, ssh://user@host/path, file:///shared/folder or a database URL",
                url=shown_url(address.url),
                reason=str(exc),
            ) from None
    if address.scheme in ("http", "https"):
        from erpsync.transport.http import HttpPeer  # httpx is loaded only for network peers

        return HttpPeer(address.url, address.token, name=address.name, **again)
    if address.scheme == "ssh":  # SSH authenticates (keys): no token
        from erpsync.transport.ssh import SshPeer

        return SshPeer(address.url, name=address.name, **again)
    if address.scheme == "file":  # many nodes' files, not one node: see erpsync.transport.folder
        from erpsync.transport.folder import NotALivePeer

        raise NotALivePeer(
            "{url} is a shared folder, not a node that answers",
            "sync with it with erpsync sync DB {url} or the service: its files are exchanged",
            url=address.url,
        )
    return LocalPeer(address.url)

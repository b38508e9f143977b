"""The configuration file, ``erpsync.toml``: this node, its peers, policies, interval, backups.

Validated with pydantic; every wrong field is reported at once, one per line
of the message, naming the field and what is expected. Tokens may be written
in the file or, better, read from an environment variable (``token_env``).
The old formats of the scripts erpsync replaces (``network_config.json``,
``erp_launcher_config.json``) are read by ``import_legacy``. A relative path in
the file (a SQLite database, the backup folder, a certificate) is relative to
the file's folder, not to where the command runs: a service started by the
Task Scheduler or systemd finds the same files as the user in a terminal.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path, PureWindowsPath
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from erpsync.db import parse_url
from erpsync.errors import BadUrl, ErpSyncError, InvalidArgument, NotFound
from erpsync.sync.policies import POLICIES

DEFAULT_PATH = Path("erpsync.toml")
DEFAULT_SERVE_PORT = 8765
DEFAULT_MAX_BODY = 64 * 1024 * 1024
"""A request to ``erpsync serve`` larger than this (decompressed) gets 413; a 10,000-row batch is a few MB."""
PEER_SCHEMES = ("http", "https", "ssh", "file", "sqlite", "mysql", "mariadb", "postgresql", "postgres")


class ConfigInvalid(ErpSyncError):
    """The configuration file does not parse or holds wrong values."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(kind: str, names: list[str]) -> None:
    lowered = [n.lower() for n in names]
    duplicates = sorted({n for n in lowered if lowered.count(n) > 1})
    if duplicates:
        raise ValueError(f"{kind} names must be unique: {', '.join(duplicates)}")


class NodeConfig(_Model):
    """This node: its name and its database (URL or SQLite file path)."""

    name: str = Field(min_length=1, max_length=64)
    database: str = Field(min_length=1)


class _Secret(_Model):
    """A named node and its token, written in the file or read from an environment variable."""

    name: str = Field(min_length=1, max_length=64)
    token: str | None = None
    token_env: str | None = None

    @model_validator(mode="after")
    def _one_token(self) -> _Secret:
        if self.token and self.token_env:
            raise ValueError("give token or token_env, not both")
        return self

    def secret(self) -> str | None:
        """The token, from the file or from its environment variable."""
        return os.environ.get(self.token_env) if self.token_env else self.token


class PeerConfig(_Secret):
    """A node this one syncs with (its token is sent to it, and accepted from it by erpsync serve)."""

    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        scheme = parts.scheme.split("+")[0]
        if "://" not in value or scheme not in PEER_SCHEMES:
            raise ValueError(
                "must be http(s)://host:port, ssh://user@host/path, file:///shared/folder or a database URL"
            )
        if scheme == "ssh" and (not parts.hostname or parts.path in ("", "/")):
            raise ValueError("must be ssh://user@host[:port]/path/of/the/database or ssh://user@host/NODE")
        return value


class ClientConfig(_Secret):
    """A node that syncs with this one through erpsync serve, which does not sync with it (a hub's PC)."""

    @model_validator(mode="after")
    def _a_token(self) -> ClientConfig:
        if not self.token and not self.token_env:
            raise ValueError("give token or token_env: the client authenticates with it")
        return self


class SyncConfig(_Model):
    """When and how this node syncs."""

    interval: int = Field(default=300, ge=5, description="seconds between two syncs of the service")
    jitter: int = Field(default=30, ge=0)
    policy: str = "lww"
    policies: dict[str, str] = Field(default_factory=dict)
    tables: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"{value!r} is not a policy: use " + ", ".join(POLICIES))
        return value

    @field_validator("policies")
    @classmethod
    def _policies(cls, value: dict[str, str]) -> dict[str, str]:
        for policy in value.values():
            cls._policy(policy)
        return value


class BackupConfig(_Model):
    """Backups taken before every sync that writes."""

    before_sync: bool = True
    folder: str | None = None
    keep_last: int | None = Field(default=20, ge=1)
    keep_days: int | None = Field(default=None, ge=0)


class ServeConfig(_Model):
    """How ``erpsync serve`` listens; its command-line options override these."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=DEFAULT_SERVE_PORT, ge=0, le=65535)
    cert: str | None = None
    key: str | None = None
    max_body: int = Field(default=DEFAULT_MAX_BODY, ge=1024, description="bytes")
    clients: list[ClientConfig] = Field(default_factory=list)
    """Nodes allowed to connect that this one does not sync with (a hub's PCs)."""

    @model_validator(mode="after")
    def _cert_and_key(self) -> ServeConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give cert and key together, or neither")
        return self

    @model_validator(mode="after")
    def _unique_clients(self) -> ServeConfig:
        _unique("client", [c.name for c in self.clients])
        return self


class Config(_Model):
    """The whole file."""

    node: NodeConfig
    sync: SyncConfig = SyncConfig()
    peers: list[PeerConfig] = Field(default_factory=list)
    backup: BackupConfig = BackupConfig()
    serve: ServeConfig = ServeConfig()

    @model_validator(mode="after")
    def _unique_peers(self) -> Config:
        _unique("peer", [p.name for p in self.peers])
        return self

    def accepted_tokens(self) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """The tokens erpsync serve accepts, by name, and the (name, variable) of those not set.

        Its clients' (``[[serve.clients]]``) and its peers' (a PC listed as a
        peer on the LAN syncs both ways, so it also connects here).
        """
        tokens: dict[str, str] = {}
        unset: list[tuple[str, str]] = []
        for entry in [*self.serve.clients, *self.peers]:
            secret = entry.secret()
            if secret and secret not in tokens.values():
                tokens[entry.name if entry.name not in tokens else f"{entry.name} (peer)"] = secret
            elif not secret and entry.token_env:
                unset.append((entry.name, entry.token_env))
        return tokens, unset

    def beside(self, folder: Path) -> Config:
        """The configuration with its relative paths made relative to ``folder`` (the file's)."""
        serve = self.serve.model_copy(
            update={"cert": _beside(folder, self.serve.cert), "key": _beside(folder, self.serve.key)}
        )
        database = _database_beside(folder, self.node.database)
        return self.model_copy(
            update={
                "node": self.node.model_copy(update={"database": database}),
                "peers": [p.model_copy(update={"url": _database_beside(folder, p.url)}) for p in self.peers],
                "backup": self.backup.model_copy(update={"folder": _beside(folder, self.backup.folder)}),
                "serve": serve,
            }
        )

    def peer(self, name: str) -> PeerConfig:
        """The peer called ``name`` (case-insensitive)."""
        for peer in self.peers:
            if peer.name.lower() == name.lower():
                return peer
        raise NotFound(
            "no peer {name} in the configuration",
            "the peers are: {names}",
            name=name,
            names=", ".join(p.name for p in self.peers) or "-",
        )


def _beside(folder: Path, path: str | None) -> str | None:
    """``path`` (``~`` expanded) relative to ``folder`` when it is relative; a Windows path with a
    drive is not, on any system."""
    if path is None:
        return None
    path = str(Path(path).expanduser())
    return path if Path(path).is_absolute() or PureWindowsPath(path).is_absolute() else str(folder / path)


def _database_beside(folder: Path, database: str) -> str:
    """A SQLite file named by a relative path or URL, made relative to ``folder``; any other address as is."""
    try:
        url = parse_url(database)
    except BadUrl:  # left for open_database to refuse when it is used
        return database
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return database
    path = _beside(folder, url.database)
    return url.set(database=path).render_as_string(hide_password=False) if "://" in database else str(path)


def load_config(path: Path = DEFAULT_PATH) -> Config:
    """Read and validate a configuration file; its relative paths are relative to its folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(
            "no configuration file {path}", "write one with: erpsync config init {path}", path=str(path)
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid(
            "{path} is not valid TOML: {reason}", "fix the line it names", path=str(path), reason=str(exc)
        ) from None
    return validate(data, str(path)).beside(path.absolute().parent)


def validate(data: dict[str, Any], origin: str) -> Config:
    """A ``Config`` from parsed data, or one ``ConfigInvalid`` naming every wrong field."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {_what(e)}" for e in exc.errors()]
        raise ConfigInvalid(
            "{path} has {count} wrong fields: {problems}",
            "fix them; erpsync config init writes a commented example",
            path=origin,
            count=len(problems),
            problems="; ".join(problems),
        ) from None


def _where(location: tuple[int | str, ...]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _what(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required"
    return str(error["msg"]).removeprefix("Value error, ")


EXAMPLE = """\
# erpsync configuration: this node, the nodes it syncs with, and how.
# Check it with: erpsync config check

[node]
name = "PC1"                      # how the other nodes call this one
database = "C:/ERP/erp.sqlite"    # a SQLite file, or a URL such as mysql+pymysql://user:pw@host/erp

[sync]
interval = 300                    # seconds between two syncs of the service (the old scripts: 300)
jitter = 30                       # up to this many seconds added, so PCs do not all sync at once
policy = "lww"                    # lww, no-overwrite, prefer-local, prefer-remote or manual
# exclude = ["tb_Logs"]           # tables not to sync

[sync.policies]                   # per table, or per column
# tb_Client = "no-overwrite"      # the old "fusion sans remplacement"
# "tb_Commande.Statut" = "manual"

[[peers]]
name = "serveur"
url = "https://erp.example.fr:8443"
token_env = "ERPSYNC_TOKEN_SERVEUR"   # read the token from this environment variable

# [[peers]]                       # the server through SSH (keys; no token, no open HTTP port)
# name = "serveur-ssh"
# url = "ssh://erp@erp.example.fr/srv/erp/erp.sqlite"
#   or "ssh://erp@erp.example.fr/SERVEUR" (the node SERVEUR of the server's erpsync.toml);
#   options: ?erpsync=/opt/erpsync/.venv/bin/erpsync&identity=C:/Users/me/.ssh/id_ed25519

# [[peers]]
# name = "PC2"
# url = "http://192.168.1.101:8001"
# token = "…"

[backup]
before_sync = true                # a backup of the local database before every sync that writes
keep_last = 20                    # keep the 20 newest backups
# keep_days = 30                  # and/or those of the last 30 days
# folder = "C:/ERP/backups"

# [serve]                         # erpsync serve: this node over HTTP, for its clients and peers
# host = "0.0.0.0"                # every interface: needs tokens (127.0.0.1 by default)
# port = 8765
# cert = "C:/ERP/tls/cert.pem"    # HTTPS with this certificate and key
# key = "C:/ERP/tls/key.pem"
# max_body = 67108864             # bytes; larger requests get 413

# [[serve.clients]]               # a node that syncs with this one, which does not sync with it:
# name = "PC3"                    # a hub lists its PCs here, not under [[peers]]
# token_env = "ERPSYNC_TOKEN_PC3" # (erpsync serve also accepts the tokens of the [[peers]] above)
"""


def write_example(path: Path = DEFAULT_PATH, *, force: bool = False) -> Path:
    """Write the commented example configuration (refusing to overwrite a file unless ``force``)."""
    path = Path(path)
    if path.exists() and not force:
        raise InvalidArgument(
            "{path} already exists", "choose another path, or overwrite it with --force", path=str(path)
        )
    path.write_text(EXAMPLE, encoding="utf-8")
    return path


def import_legacy(file: Path, *, database: str | None = None, name: str | None = None) -> Config:
    """A configuration from the old scripts' ``network_config.json`` or ``erp_launcher_config.json``."""
    file = Path(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(
            "no file {path}",
            "give the path of network_config.json or erp_launcher_config.json",
            path=str(file),
        ) from None
    except ValueError as exc:
        raise ConfigInvalid(
            "{path} is not valid JSON: {reason}", "check the file", path=str(file), reason=str(exc)
        ) from None
    if not isinstance(data, dict):
        raise ConfigInvalid("{path} is not an old erpsync configuration", "check the file", path=str(file))
    pcs = data.get("pc_list") or data.get("pcs") or data.get("peers") or []
    peers = []
    for pc in pcs if isinstance(pcs, list) else []:
        if not isinstance(pc, dict) or not (pc.get("ip") or pc.get("host")):
            continue
        host, port = pc.get("ip") or pc.get("host"), pc.get("port", 8001)
        peers.append({"name": str(pc.get("name") or host), "url": f"http://{host}:{port}"})
    folder = data.get("shared_folder") or data.get("dossier_partage") or data.get("sync_folder")
    if folder:
        peers.append({"name": "dossier-partage", "url": Path(str(folder)).absolute().as_uri()})
    node_name = (
        name
        or data.get("pc_name")
        or data.get("nom_pc")
        or data.get("name")
        or os.environ.get("COMPUTERNAME", "PC")
    )
    db = database or data.get("db_path") or data.get("database") or data.get("local_db") or "erp.sqlite"
    interval = data.get("sync_interval") or data.get("interval") or 300
    return validate(
        {
            "node": {"name": str(node_name), "database": str(db)},
            "sync": {"interval": int(interval)},
            "peers": peers,
        },
        str(file),
    )


def save_config(config: Config, path: Path, *, origin: str) -> None:
    """Write ``config`` to ``path``, readable by its owner only: it may hold tokens."""
    path.write_text(to_toml(config, origin=origin), encoding="utf-8")
    path.chmod(0o600)


def to_toml(config: Config, *, origin: str = "Converted by erpsync config import-legacy") -> str:
    """A configuration as TOML text (for import-legacy and the demo), its first line saying who wrote it."""
    lines = [
        f"# {origin}; check it with: erpsync config check",
        "",
        "[node]",
        f"name = {_toml(config.node.name)}",
        f"database = {_toml(config.node.database)}",
        "",
        "[sync]",
        f"interval = {config.sync.interval}",
        f"jitter = {config.sync.jitter}",
        f"policy = {_toml(config.sync.policy)}",
    ]
    for peer in config.peers:
        lines += ["", "[[peers]]", f"name = {_toml(peer.name)}", f"url = {_toml(peer.url)}"]
        lines += _token_lines(peer)
    backup = config.backup
    lines += ["", "[backup]", f"before_sync = {str(backup.before_sync).lower()}"]
    if backup.keep_last is not None:
        lines.append(f"keep_last = {backup.keep_last}")
    serve = config.serve
    changed = {
        name: value
        for name, value in serve.model_dump(exclude={"clients"}).items()
        if value != ServeConfig.model_fields[name].default
    }
    if changed:
        lines += ["", "[serve]"]
        lines += [f"{name} = {_toml(v) if isinstance(v, str) else v}" for name, v in changed.items()]
    for client in serve.clients:
        lines += ["", "[[serve.clients]]", f"name = {_toml(client.name)}", *_token_lines(client)]
    return "\n".join(lines) + "\n"


def _token_lines(entry: _Secret) -> list[str]:
    if entry.token_env:
        return [f"token_env = {_toml(entry.token_env)}"]
    return [f"token = {_toml(entry.token)}"] if entry.token else []


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)

"""Sync over SSH: a real sshd on loopback, the system ssh client, ``erpsync serve --stdio`` remotely.

Each xdist worker starts its own sshd (temporary host key, authorized key
and configuration, 127.0.0.1 only); the remote command is this venv's
erpsync. Without sshd the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from erpsync.cli import cli
from erpsync.db import Database
from erpsync.errors import InvalidArgument
from erpsync.i18n import set_language
from erpsync.status import check_peer
from erpsync.sync.node import Node
from erpsync.sync.peer import PROTOCOL, LocalPeer
from erpsync.sync.session import sync
from erpsync.sync.verify import verify
from erpsync.transport import PeerAddress, open_peer, stdio, wire
from erpsync.transport.http import NotAPeer, PeerUnreachable, TokenRefused
from erpsync.transport.ssh import SSH_ENV, KeyRefused, RemoteErpsyncMissing, SshAddress, SshPeer
from tests.sync_support import add_client, add_project, execute, nodes, rows, same, value

SSHD = Path("/usr/sbin/sshd")
ERPSYNC = str(Path(sys.executable).with_name("erpsync"))
"""This venv's erpsync: the remote command (sshd gives the remote shell a bare PATH)."""


# -- the server --------------------------------------------------------------------------------------


@dataclass
class Sshd:
    """An sshd on 127.0.0.1, and the keys of a PC it accepts and of one it does not."""

    port: int
    key: Path
    stranger: Path
    folder: Path
    user: str

    def ssh(self, key: Path | None = None) -> str:
        """An ``ERPSYNC_SSH`` for this server: no known_hosts, no agent, no user configuration."""
        return shlex.join(
            [
                "ssh",
                "-F",
                "none",
                "-i",
                str(key or self.key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ]
        )

    def url(self, target: str, *, erpsync: str = ERPSYNC, **options: str) -> str:
        """``ssh://user@127.0.0.1:PORT/TARGET?erpsync=…``."""
        query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in {"erpsync": erpsync, **options}.items())
        return f"ssh://{self.user}@127.0.0.1:{self.port}/{target.lstrip('/')}?{query}"


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    missing = [p for p in (str(SSHD), "ssh", "ssh-keygen") if shutil.which(p) is None]
    if missing:
        message = f"SSH tests need OpenSSH: {', '.join(missing)} not found (apt-get install openssh-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("sshd")
    host_key, key, stranger = (_keygen(folder / name) for name in ("host_key", "pc_key", "stranger_key"))
    (folder / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nX11Forwarding no\nPrintMotd no\nMaxStartups 100\nMaxSessions 100\n"
    )
    log = (folder / "sshd.log").open("w")
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(port)], stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"sshd did not start: {(folder / 'sshd.log').read_text()}") from None
                time.sleep(0.05)
        yield Sshd(port, key, stranger, folder, getpass.getuser())
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def server(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Sshd:
    """The sshd, with this PC's key in ``ERPSYNC_SSH``."""
    monkeypatch.setenv(SSH_ENV, sshd.ssh())
    return sshd


def remote(server: Sshd, db: Database, tmp_path: Path) -> str:
    """The ssh:// URL of node ``db``: its SQLite path, or its name in a remote erpsync.toml."""
    if not db.dialect.is_server:
        return server.url(str(db.url.database))
    config = tmp_path / "serveur.toml"
    url = db.url.render_as_string(hide_password=False)
    config.write_text(f'[node]\nname = "SERVEUR"\ndatabase = "{url}"\n', encoding="utf-8")
    return server.url("SERVEUR", config=str(config))


def counts(db: Database) -> dict[str, int]:
    tables = ["tb_Projet", "tb_Version", "tb_Client", "tb_Commande", "tb_LigneCommande"]
    return {t: value(db, f"SELECT count(*) FROM {t}") for t in tables}


def _lines(db: Database, count: int) -> None:
    """One order holding ``count`` lines, written as the ERP would (captured)."""
    add_project(db, "PRJ-SSH")
    add_client(db, 5000, "CLI-SSH", "Client SSH", value(db, "SELECT max(id) FROM tb_Version"))
    execute(
        db,
        "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
        "VALUES (5000, 'CMD-SSH', '2026-02-01', 'Brouillon', 0)",
    )
    order = value(db, "SELECT id FROM tb_Commande WHERE NumCommande = 'CMD-SSH'")
    with db.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO tb_LigneCommande (fkCommande, NumLigne, Reference, Designation, Quantite, "
            "PrixUnitaire) VALUES (?, ?, ?, ?, ?, ?)",
            [(order, n, f"REF-{n:05d}", f"Article {n}", "2.50", "19.90") for n in range(1, count + 1)],
        )


# -- syncing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("remote_engine", ["sqlite", "mariadb", "postgresql"])
def test_a_pc_syncs_with_a_node_over_ssh_and_both_converge(
    remote_engine: str, server: Sshd, tmp_path: Path
) -> None:
    with nodes(tmp_path, remote_engine, "sqlite", scale=1, seed=3) as (hub, pc):
        address = PeerAddress(remote(server, hub, tmp_path), name="serveur")
        peer = open_peer(address)  # one connection for every sync below
        try:
            assert isinstance(peer, SshPeer) and peer.label.startswith("serveur (ssh://")
            assert peer.hello() == LocalPeer(hub).hello() and peer.label.startswith("pc1 (ssh://")
            first = sync(pc, peer)
            lines = value(hub, "SELECT count(*) FROM tb_LigneCommande")
            assert first.tables["tb_lignecommande"].received == lines > 0
            same(hub, pc)
            add_project(pc, "PRJ-PC")
            add_client(pc, 7000, "CLI-PC", "Client du PC")
            add_client(hub, 7000, "CLI-SRV", "Client du serveur")
            execute(pc, "UPDATE tb_Commande SET Statut = 'Livrée' WHERE id = 1")
            execute(hub, "UPDATE tb_Commande SET Statut = 'Annulée' WHERE id = 1")
            second = sync(pc, peer)
            assert second.tables["tb_client"].received >= 1 and second.tables["tb_client"].sent >= 1
            assert sync(pc, peer).nothing_to_do
        finally:
            peer.close()
        same(hub, pc)
        for db in (hub, pc):
            codes = {r[0] for r in rows(db, "SELECT Code FROM tb_Client WHERE Code IN ('CLI-PC', 'CLI-SRV')")}
            assert codes == {"CLI-PC", "CLI-SRV"}
            assert value(db, "SELECT Statut FROM tb_Commande WHERE id = 1") == "Annulée"
        check = check_peer(pc, address)  # erpsync peers test, through the address
        assert check.ok and check.reachable and check.authenticated and check.schema, check
        assert check.node == "pc1" and check.version is not None


def test_verify_over_ssh_finds_the_row_that_differs_and_repairs_it(server: Sshd, tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite", scale=1) as (hub, pc):
        url = remote(server, hub, tmp_path)
        sync(pc, url)
        assert verify(pc, url).same
        with hub.begin() as conn:  # a write that bypasses capture (the triggers dropped meanwhile)
            hub.dialect.mute_capture(conn)
            conn.exec_driver_sql("UPDATE tb_Client SET RaisonSociale = 'Divergente' WHERE id = 2")
            hub.dialect.unmute_capture(conn)
        report = verify(pc, url)
        assert len(report.tables["tb_Client"].different) == 1 and report.there.startswith("pc1 (ssh://")
        assert verify(pc, url, repair=True).repaired == 1
        assert verify(pc, url).same
        assert value(hub, "SELECT count(*) FROM tb_Client WHERE RaisonSociale = 'Divergente'") == 0


@pytest.mark.parametrize("batch_rows", [1, 5000], ids=["stream-goes-on", "last-batch"])
def test_a_pull_fetches_a_parent_deleted_here_while_the_stream_of_changes_is_open(
    batch_rows: int, server: Sshd, tmp_path: Path
) -> None:
    """The fetch of a missing parent must not read the rest of the open stream as its answer."""
    with nodes(tmp_path, "sqlite", "sqlite", scale=1) as (hub, pc):
        url = remote(server, hub, tmp_path)
        add_client(hub, 8000, "CLI-GONE", "Bientôt supprimé")
        sync(pc, url)
        execute(pc, "DELETE FROM tb_Client WHERE Code = 'CLI-GONE'")
        for n in range(3):
            execute(
                hub,
                "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
                "VALUES (8000, :num, '2026-03-01', 'BROUILLON', 1)",
                num=f"CMD-ORPHAN-{n}",
            )
        sync(pc, url, push=False, batch_rows=batch_rows)
        sync(pc, url)
        same(hub, pc)
        for db in (hub, pc):
            assert rows(
                db,
                "SELECT DISTINCT c.Code FROM tb_Commande o JOIN tb_Client c ON c.id = o.fkClient "
                "WHERE o.NumCommande LIKE 'CMD-ORPHAN-%'",
            ) == [("CLI-GONE",)]


def test_a_stream_left_open_does_not_block_the_next_one(server: Sshd, tmp_path: Path) -> None:
    """A library caller that keeps a half-read stream: the next stream goes on a second connection."""
    with nodes(tmp_path, "sqlite", scale=1) as (hub,):
        peer = SshPeer(remote(server, hub, tmp_path))
        try:
            upto = peer.hello().seq
            left_open = peer.changes("tb_lignecommande", 0, 0, upto, "pc", 100)
            first = next(left_open)
            again = list(peer.changes("tb_lignecommande", 0, 0, upto, "pc", 100))
            assert again[0].rows == first.rows and len(again) > 1
            left_open.close()
            assert [b.upto for b in peer.changes("tb_lignecommande", 0, 0, upto, "pc", 100)] == [
                b.upto for b in again
            ]
        finally:
            peer.close()


def test_a_push_of_thousands_of_rows_in_small_batches(server: Sshd, tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (pc, hub):
        _lines(pc, 2000)
        summary = sync(pc, remote(server, hub, tmp_path), pull=False, batch_rows=100)
        assert summary.tables["tb_lignecommande"].sent == 2000
        assert value(hub, "SELECT count(*) FROM erpsync_batch") >= 20
        assert counts(hub) == counts(pc)
        same(pc, hub)


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_a_connection_cut_midway_is_opened_again_and_nothing_is_lost_or_doubled(
    direction: str, server: Sshd, tmp_path: Path
) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (pc, hub):
        _lines(pc if direction == "push" else hub, 600)
        peer = SshPeer(remote(server, hub, tmp_path), retries=2, backoff=0.05)
        cut: list[int] = []

        def progress(_label: str, done: int, _total: int) -> None:
            if done >= 200 and not cut and peer._channel is not None:
                cut.append(done)
                peer._channel.process.kill()  # the network drops the connection

        try:
            summary = sync(
                pc, peer, pull=direction == "pull", push=direction == "push", progress=progress, batch_rows=30
            )
        finally:
            peer.close()
        assert cut
        moved = summary.tables["tb_lignecommande"]
        assert (moved.sent if direction == "push" else moved.received) == 600
        assert counts(hub) == counts(pc) and counts(pc)["tb_LigneCommande"] == 600
        same(pc, hub)


def test_a_changes_stream_left_midway_ends_its_connection_and_the_next_call_opens_another(
    server: Sshd, tmp_path: Path
) -> None:
    with nodes(tmp_path, "sqlite") as (hub,):
        _lines(hub, 1000)
        peer = SshPeer(remote(server, hub, tmp_path))
        try:
            hello = peer.hello()
            stream = peer.changes("tb_lignecommande", 0, 0, hello.seq, "x" * 36, 10)
            assert len(next(stream).rows) == 10
            channel = peer._channel
            started = time.monotonic()
            stream.close()  # the batches still coming must not answer the next request
            assert time.monotonic() - started < 3 and peer._channel is None
            assert channel is not None and channel.process.poll() is not None
            assert peer.hello() == hello
        finally:
            peer.close()


# -- errors ----------------------------------------------------------------------------------------


def test_a_wrong_key_is_one_clear_line_and_nothing_is_written(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SSH_ENV, sshd.ssh(sshd.stranger))
    with nodes(tmp_path, "sqlite", "sqlite", scale=1) as (hub, pc):
        url = remote(sshd, hub, tmp_path)
        before = counts(hub), counts(pc)
        with pytest.raises(KeyRefused) as refused:
            sync(pc, url)
        assert isinstance(refused.value, TokenRefused)  # erpsync peers test: "refused"
        shown = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{hub.url.database}"
        assert str(refused.value) == f"peer {shown} refused this PC's SSH key: " + str(
            refused.value.params["reason"]
        )
        assert "Permission denied" in str(refused.value) and "\n" not in str(refused.value)
        assert "authorized_keys" in refused.value.hint
        result = CliRunner().invoke(cli, ["--lang", "en", "sync", str(pc.url.database), url])
        assert result.exit_code == 1
        assert result.stderr.splitlines()[0].startswith(f"Error: peer {shown} refused this PC's SSH key: ")
        assert result.stderr.splitlines()[1].startswith("Try: add this PC's public key")
        assert (counts(hub), counts(pc)) == before
        assert value(hub, "SELECT count(*) FROM erpsync_batch") == 0
        assert value(pc, "SELECT count(*) FROM erpsync_batch") == 0


def test_a_missing_remote_erpsync_names_the_option_to_set(server: Sshd, tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (hub, pc):
        for command, says in (("/opt/nowhere/erpsync", "No such file or directory"), ("erpsync-absent", "")):
            with pytest.raises(RemoteErpsyncMissing) as missing:
                sync(pc, server.url(str(hub.url.database), erpsync=command))
            message = str(missing.value)
            assert f"has no erpsync at {command}: " in message and says in message and "\n" not in message
            assert "?erpsync=" in missing.value.hint


def _fake_erpsync(folder: Path, name: str, output: bytes) -> str:
    """A remote program started as ``erpsync serve --stdio`` would be: it says ``output``, then waits."""
    script = folder / name
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.buffer.write({output!r})\nsys.stdout.flush()\n"
        "sys.stdin.buffer.read()\n"  # until the connection ends
    )
    script.chmod(0o755)
    return str(script)


def test_a_remote_that_does_not_speak_this_protocol_is_told_apart(server: Sshd, tmp_path: Path) -> None:
    greeting = wire.Greeting(protocol=PROTOCOL + 1, version="9.9").model_dump_json().encode()
    with nodes(tmp_path, "sqlite", "sqlite") as (hub, pc):
        path = str(hub.url.database)
        newer = _fake_erpsync(tmp_path, "newer", stdio.MAGIC + stdio.frame(stdio.GREETING, greeting))
        with pytest.raises(
            wire.ProtocolMismatch, match=rf"speaks sync protocol {PROTOCOL + 1}, this erpsync"
        ):
            sync(pc, server.url(path, erpsync=newer))
        framed = _fake_erpsync(tmp_path, "framed", b"erpsync-stdio 2\n")
        with pytest.raises(wire.ProtocolMismatch, match="frames its answers as erpsync-stdio 2"):
            sync(pc, server.url(path, erpsync=framed))
        with pytest.raises(
            NotAPeer, match="does not answer as erpsync serve --stdio: it printed 'serve --stdio"
        ):
            sync(pc, server.url(path, erpsync="echo"))
        mute = _fake_erpsync(tmp_path, "mute", stdio.MAGIC)
        started = time.monotonic()
        with pytest.raises(PeerUnreachable, match="no answer in 1 s"):
            SshPeer(server.url(path, erpsync=mute), timeout=1).hello()
        assert time.monotonic() - started < 5


def test_the_remote_nodes_errors_arrive_as_one_line_in_this_users_language(
    server: Sshd, tmp_path: Path
) -> None:
    with nodes(tmp_path, "sqlite") as (pc,):
        absent = tmp_path / "absent.sqlite"
        set_language("fr")
        with pytest.raises(wire.PeerRefused) as refused:
            sync(pc, server.url(str(absent)))
        assert str(refused.value).endswith(f"le fichier de base SQLite {absent} n'existe pas")
        assert refused.value.hint.startswith("vérifiez le chemin")
        assert not absent.exists()


def test_an_unreachable_host_is_one_line(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SSH_ENV, sshd.ssh())
    peer = SshPeer(f"ssh://root@127.0.0.1:{_free_port()}/srv/erp.sqlite")
    with pytest.raises(PeerUnreachable) as unreachable:
        peer.hello()
    assert "Connection refused" in str(unreachable.value) and "\n" not in str(unreachable.value)
    monkeypatch.setenv(SSH_ENV, "/nowhere/ssh")
    with pytest.raises(Exception, match="cannot run the ssh client /nowhere/ssh"):
        SshPeer("ssh://h/x.sqlite").hello()


# -- the stdio server alone ------------------------------------------------------------------------


def test_serve_stdio_refuses_malformed_requests_and_applies_nothing(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite") as (hub,):
        path = str(hub.url.database)
        command = [ERPSYNC, "--lang", "en", "serve", "--stdio", "--max-body", "4096", path]
        requests = [
            b'{"op": "apply", "args": {"batch": "{}"}}',
            b'{"op": "nothing", "args": {}}',
            b'{"op": "cursors", "args": {"node": ""}}',
            b"not json",
            b'{"op": "advance", "args": {"node_id": "n", "streams": [["tb_x", 0]], "upto": 1}}',
            b'{"op": "apply", "args": {"batch": "' + b" " * 5000 + b'"}}',
            b'{"op": "hello"}',
        ]
        sent = b"".join(stdio.frame(stdio.REQUEST, r) for r in requests)
        done = subprocess.run(command, input=sent, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert out.startswith(stdio.MAGIC)
        position = len(stdio.MAGIC)

        def read(size: int) -> bytes:
            nonlocal position
            position += size
            return out[position - size : position]

        frames = []
        while (received := stdio.read_frame(read, 1 << 20)) is not None:
            frames.append(received)
        assert [kind for kind, _ in frames] == [stdio.GREETING, *[stdio.ERROR] * 6, stdio.ANSWER]
        errors = [wire.ErrorOut.model_validate_json(payload).error for _, payload in frames[1:7]]
        assert errors[0].startswith("the batch is not valid")
        assert errors[1].startswith("malformed request: op: Input should be 'hello'")
        assert errors[2].startswith("malformed request: node: String should have at least 1 character")
        assert errors[3].startswith("malformed request: body: Invalid JSON")
        assert errors[4].startswith("table tb_x is not synced by ")
        assert errors[5] == "the request body exceeds 4096 bytes"
        assert wire.HelloOut.model_validate_json(frames[-1][1]).node_id == Node(hub).node_id
        assert value(hub, "SELECT count(*) FROM erpsync_batch") == 0
        result = CliRunner().invoke(cli, ["--lang", "en", "serve", "--stdio", "--port", "1", path])
        assert result.exit_code == 1 and "Error: --stdio takes no --host, --port" in result.stderr


# -- addresses and messages ------------------------------------------------------------------------


def test_ssh_urls_name_the_remote_node_and_quote_the_remote_command() -> None:
    cases = {
        "ssh://erp@serveur/srv/erp/erp.sqlite": "erpsync serve --stdio /srv/erp/erp.sqlite",
        "ssh://serveur:2222/~/erp.sqlite": "erpsync serve --stdio ~/erp.sqlite",
        "ssh://serveur/C:/ERP/erp.sqlite": "erpsync serve --stdio C:/ERP/erp.sqlite",
        "ssh://serveur/SERVEUR?config=~/erp/erpsync.toml": (
            "erpsync --config ~/erp/erpsync.toml serve --stdio SERVEUR"
        ),
        "ssh://serveur/mon%20erp/x.sqlite?erpsync=python3+-m+erpsync": (
            "python3 -m erpsync serve --stdio '/mon erp/x.sqlite'"
        ),
        "ssh://serveur/x;rm -rf ~.sqlite": "erpsync serve --stdio '/x;rm -rf ~.sqlite'",
    }
    for url, command in cases.items():
        assert SshAddress.parse(url).remote_command() == command, url
    address = SshAddress.parse("ssh://erp@[::1]:2222/SERVEUR?identity=/k/id&erpsync=/opt/e/erpsync")
    assert address.shown == "ssh://erp@[::1]:2222/SERVEUR"
    assert address.command(["ssh", "-v"])[:7] == ["ssh", "-v", "-i", "/k/id", "-p", "2222", "-l"]
    assert address.command(["ssh"])[-4:] == ["-x", "--", "::1", "/opt/e/erpsync serve --stdio SERVEUR"]
    for bad, says in (
        ("ssh://serveur", "names no remote database"),
        ("ssh:///x.sqlite", "is not an SSH peer address"),
        ("ssh://-oProxyCommand=x/x.sqlite", "is not an SSH peer address"),
        ("ssh://serveur:port/x.sqlite", "is not an SSH peer address"),
        ("ssh://serveur/x.sqlite?cle=1", "unknown option cle in"),
    ):
        with pytest.raises(InvalidArgument, match=says):
            open_peer(bad)

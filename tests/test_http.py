"""Sync over HTTP: real ``erpsync serve`` servers on loopback (threads or processes), real databases.

Covers the network issue's HTTP points: convergence of three nodes through a
hub, a server killed mid-transfer, refusals that apply nothing, two server
processes on one hub, TLS, the loopback rule, and a schemathesis run against
the OpenAPI description.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from erpsync.cli import cli
from erpsync.db import Database
from erpsync.errors import ErpSyncError, InvalidArgument
from erpsync.sync import changeset
from erpsync.sync.node import Node
from erpsync.sync.peer import PROTOCOL, LocalPeer
from erpsync.sync.session import sync
from erpsync.sync.verify import verify
from erpsync.transport import PeerAddress, open_peer, wire
from erpsync.transport.http import HttpPeer, NotAPeer, PeerUnreachable, TlsFailed, TokenRefused
from erpsync.transport.server import NoAuthentication, create_app, running, serving
from tests.sync_support import add_client, add_project, execute, nodes, rows, same, value

TOKENS = {"pc1": "jeton-pc1-8f2d", "pc2": "jeton-pc2-51ac"}


# -- helpers ---------------------------------------------------------------------------------------


@dataclass
class Served:
    """An ``erpsync serve`` process."""

    process: subprocess.Popen[str]
    url: str
    port: int

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def start_server(db: str, *args: str, port: int = 0, env: dict[str, str] | None = None) -> Served:
    """``erpsync serve DB`` in a process of its own; returns once it listens.

    Its log goes to a file rather than a pipe nobody reads, which could fill and stall it.
    """
    command = [sys.executable, "-m", "erpsync", "--lang", "en", "serve", db, "--port", str(port), *args]
    with tempfile.TemporaryFile(mode="w+") as log:  # the process keeps its own handle
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **(env or {})}
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r" on (https?://[^ ]+:(\d+))\.$", line.strip())
        if not found:
            process.kill()
            process.wait(timeout=10)
            log.seek(0)
            raise AssertionError(f"erpsync serve did not start: {line!r} {log.read()}")
    return Served(process, found.group(1), int(found.group(2)))


@contextmanager
def server_process(db: str, *args: str, **kwargs: Any) -> Iterator[Served]:
    served = start_server(db, *args, **kwargs)
    try:
        yield served
    finally:
        served.kill()


def url_of(db: Database) -> str:
    return db.url.render_as_string(hide_password=False) if db.dialect.is_server else str(db.url.database)


def counts(db: Database) -> dict[str, int]:
    tables = ["tb_Projet", "tb_Version", "tb_Client", "tb_Commande", "tb_LigneCommande"]
    return {t: value(db, f"SELECT count(*) FROM {t}") for t in tables}


def batches_applied(db: Database) -> int:
    return int(value(db, "SELECT count(*) FROM erpsync_batch"))


class CuttingProxy:
    """A TCP relay on loopback that cuts its first connection after ``cut`` bytes from the server.

    A real network fault in the middle of a changes stream, with no mock: the
    client sees its stream end early and must resume after the last batch.
    """

    def __init__(self, target_port: int, cut: int) -> None:
        self.target_port = target_port
        self.cut = cut
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.relayed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.connections += 1
            limit = self.cut if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, limit), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                self.relayed += len(data) if limit is not None or self.connections == 1 else 0
                if limit is not None and sent + len(data) >= limit:
                    target.sendall(data[: limit - sent])
                    self.cuts += 1
                    break
                target.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, target):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


# -- convergence -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_engine", ["mariadb", "sqlite", "postgresql"])
def test_three_nodes_converge_through_a_hub_over_http(hub_engine: str, tmp_path: Path) -> None:
    with nodes(tmp_path, hub_engine, "sqlite", "sqlite", scale=1, seed=3) as (hub, pc1, pc2):
        with running(hub, tokens=TOKENS) as url:
            one, two = PeerAddress(url, TOKENS["pc1"]), PeerAddress(url, TOKENS["pc2"])
            first = sync(pc1, one)
            assert first.tables["tb_lignecommande"].received == value(
                hub, "SELECT count(*) FROM tb_LigneCommande"
            )
            sync(pc2, two)
            same(hub, pc1, pc2)
            # offline work on both PCs, with a colliding id and a conflicting edit
            add_project(pc1, "PRJ-PC1")
            add_client(pc1, 7000, "CLI-P1", "Client du PC1")
            add_client(pc2, 7000, "CLI-P2", "Client du PC2")
            execute(pc1, "UPDATE tb_Commande SET Statut = 'Livrée' WHERE id = 1")
            execute(pc2, "UPDATE tb_Commande SET Statut = 'Annulée' WHERE id = 1")
            execute(pc2, "UPDATE tb_Client SET Email = 'pc2@exemple.fr' WHERE id = 1")
            sync(pc1, one)
            sync(pc2, two)
            assert sync(pc1, one).tables["tb_client"].received >= 1
            sync(pc2, two)
            assert sync(pc1, one).nothing_to_do and sync(pc2, two).nothing_to_do
        same(hub, pc1, pc2)
        order = value(hub, "SELECT NumCommande FROM tb_Commande WHERE id = 1")
        for db in (hub, pc1, pc2):
            codes = {r[0] for r in rows(db, "SELECT Code FROM tb_Client WHERE Code LIKE 'CLI-P%'")}
            assert codes == {"CLI-P1", "CLI-P2"}
            assert value(db, "SELECT Statut FROM tb_Commande WHERE NumCommande = :n", n=order) == "Annulée"
            assert value(db, "SELECT Email FROM tb_Client WHERE Code = :c", c=_code(hub)) == "pc2@exemple.fr"
            assert value(db, "SELECT count(*) FROM tb_Projet WHERE NumProjet = 'PRJ-PC1'") == 1


@pytest.mark.parametrize("hub_engine", ["sqlite", "mariadb", "postgresql"])
def test_text_holding_nul_goes_over_http_to_an_engine_that_stores_it(hub_engine: str, tmp_path: Path) -> None:
    """SQLite and MariaDB store NUL in text, as a direct sync carries it; PostgreSQL refuses it."""
    with nodes(tmp_path, hub_engine, "sqlite") as (hub, pc), running(hub, tokens=TOKENS) as url:
        sync(pc, PeerAddress(url, TOKENS["pc1"]))
        add_project(pc, "PRJ-NUL")
        execute(pc, "UPDATE tb_Projet SET Libelle = :t WHERE NumProjet = 'PRJ-NUL'", t="avant\x00après")
        found = "SELECT Libelle FROM tb_Projet WHERE NumProjet = 'PRJ-NUL'"
        if hub_engine == "postgresql":
            with pytest.raises(ErpSyncError, match="text must not hold NUL characters"):
                sync(pc, PeerAddress(url, TOKENS["pc1"]))
            assert rows(hub, found) == []
        else:
            sync(pc, PeerAddress(url, TOKENS["pc1"]))
            assert value(hub, found) == "avant\x00après"


def _code(db: Database) -> str:
    return str(value(db, "SELECT Code FROM tb_Client WHERE Email = 'pc2@exemple.fr'"))


def test_open_peer_gives_an_http_peer_and_hello_names_the_node(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (hub, _pc), running(hub, tokens=TOKENS) as url:
        peer = open_peer(PeerAddress(url + "/", TOKENS["pc1"], name="serveur"))
        try:
            assert isinstance(peer, HttpPeer)
            assert peer.label == f"serveur ({url})"
            hello = peer.hello()
            assert (hello.node_id, hello.name) == (Node(hub).node_id, "pc1")
            assert peer.label == f"pc1 ({url})"
            assert hello == LocalPeer(hub).hello()
        finally:
            peer.close()


# -- interruptions ---------------------------------------------------------------------------------


def test_server_killed_mid_push_then_restarted_resumes(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (pc, hub):
        _lines(pc, 1500)
        total = counts(pc)
        served = start_server(url_of(hub), "--token", "t")
        try:
            killed: list[int] = []

            def progress(_label: str, done: int, _total: int) -> None:
                if done >= 500 and not killed:
                    killed.append(done)
                    served.kill()

            peer = HttpPeer(served.url, "t", retries=1, backoff=0.05)
            with pytest.raises(PeerUnreachable) as failure:
                sync(pc, peer, pull=False, progress=progress, batch_rows=50)
            peer.close()
            assert "\n" not in str(failure.value) and str(failure.value).startswith("cannot reach peer ")
            applied = batches_applied(hub)
            assert applied > 0 and counts(hub)["tb_LigneCommande"] < 1500
            served = start_server(url_of(hub), "--token", "t", port=served.port)
            second = sync(pc, PeerAddress(served.url, "t"), pull=False, batch_rows=50)
        finally:
            served.kill()
        resent = sum(t.sent for t in second.tables.values())
        assert 0 < resent < sum(total.values())  # resumed after the last batch applied
        assert counts(hub) == total  # nothing lost, nothing twice
        same(pc, hub)


def test_a_changes_stream_cut_in_the_middle_resumes_after_the_last_batch(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (hub, pc):
        _lines(hub, 1200)
        with server_process(url_of(hub)) as served:
            proxy = CuttingProxy(served.port, cut=20_000)
            try:
                peer = HttpPeer(f"http://127.0.0.1:{proxy.port}", retries=3, backoff=0.05)
                summary = sync(pc, peer, push=False, batch_rows=40)
                peer.close()
            finally:
                proxy.close()
        assert proxy.cuts == 1 and proxy.connections >= 2, proxy.relayed
        assert summary.tables["tb_lignecommande"].received == 1200
        assert counts(pc) == counts(hub)
        same(pc, hub)


def test_a_client_gone_midway_leaves_the_servers_cycle_collector_on(tmp_path: Path) -> None:
    # the server pauses Python's cycle collector while it reads and encodes a batch: a stream
    # the client drops must not leave it off (a long-running server would never free a cycle)
    with nodes(tmp_path, "sqlite") as (hub,):
        _lines(hub, 1200)
        with running(hub) as url, httpx.Client(base_url=url) as client:  # the server is in this process
            seq = client.get("/v1/hello").json()["seq"]
            params = {"table": "tb_lignecommande", "stream": 0, "since": 0, "upto": seq, "for_node": "pc"}
            for _ in range(3):
                with client.stream("GET", "/v1/changes", params={**params, "batch_rows": 40}) as response:
                    assert response.status_code == 200
                    next(response.iter_bytes())
            deadline = time.monotonic() + 2
            while not gc.isenabled() and time.monotonic() < deadline:
                time.sleep(0.02)
        assert gc.isenabled(), "the cycle collector stayed off after the client went away"


def _lines(db: Database, count: int) -> None:
    """One project holding ``count`` order lines, written as the ERP would (captured)."""
    add_project(db, "PRJ-LIGNES")
    version = value(db, "SELECT max(id) FROM tb_Version")
    add_client(db, 5000, "CLI-LIGNES", "Client des lignes", version)
    execute(
        db,
        "INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT) "
        "VALUES (5000, 'CMD-LIGNES', '2026-02-01', 'Brouillon', 0)",
    )
    order = value(db, "SELECT id FROM tb_Commande WHERE NumCommande = 'CMD-LIGNES'")
    with db.begin() as conn:  # SQLite
        conn.exec_driver_sql(
            "INSERT INTO tb_LigneCommande (fkCommande, NumLigne, Reference, Designation, Quantite, "
            "PrixUnitaire) VALUES (?, ?, ?, ?, ?, ?)",
            [(order, n, f"REF-{n:05d}", f"Article {n}", "2.50", "19.90") for n in range(1, count + 1)],
        )


# -- refusals --------------------------------------------------------------------------------------


def _a_batch(tmp_path: Path) -> str:
    """A real batch from another node, as it travels."""
    tmp_path.mkdir()
    with nodes(tmp_path, "sqlite") as (other,):
        add_project(other, "PRJ-LOT")
        peer = LocalPeer(other)
        hello = peer.hello()
        return wire.batch_text(next(peer.changes("tb_projet", 0, 0, hello.seq, "x" * 36, 100)))


def test_refused_requests_get_a_4xx_and_apply_nothing(tmp_path: Path) -> None:
    batch = _a_batch(tmp_path / "other")
    with nodes(tmp_path, "sqlite") as (hub,):
        before = counts(hub)
        app = create_app(hub, tokens=TOKENS, max_body=64 * 1024)
        good = {"Authorization": f"Bearer {TOKENS['pc1']}"}
        json_ = {**good, "Content-Type": "application/json"}
        body = json.dumps({"batch": batch, "policies": {}, "restore": False, "skip": []})
        with serving(app) as url, httpx.Client(base_url=url) as client:
            refused = {
                "no token": client.post("/v1/apply", content=body),
                "wrong token": client.post("/v1/apply", content=body, headers={"Authorization": "Bearer x"}),
                "malformed JSON": client.post("/v1/apply", content=body[:-5], headers=json_),
                "wrong field": client.post("/v1/apply", content='{"lot": 1}', headers=json_),
                "broken batch": client.post("/v1/apply", json={"batch": batch[:-9]}, headers=good),
                "batch of nonsense": client.post(
                    "/v1/apply", json={"batch": batch.replace('"tb_projet"', '"tb_inconnue"')}, headers=good
                ),
                "reference not a global id": client.post(
                    "/v1/apply", json={"batch": _with_value(batch, "fkcreateur", 12)}, headers=good
                ),
                "key too long": client.post(
                    "/v1/apply", json={"batch": _with_key_column(batch)}, headers=good
                ),
                "unknown policy": client.post(
                    "/v1/apply", json={"batch": batch, "policies": {"": "gagnant"}}, headers=good
                ),
                "oversized": client.post("/v1/apply", json={"batch": batch + " " * 70_000}, headers=good),
                "gzip bomb": client.post(
                    "/v1/apply",
                    content=gzip.compress(b'{"batch": "' + b" " * 1_000_000 + b'"}'),
                    headers={**good, "Content-Encoding": "gzip", "Content-Type": "application/json"},
                ),
                "not gzip": client.post(
                    "/v1/apply", content=body, headers={**json_, "Content-Encoding": "gzip"}
                ),
                "unknown route": client.get("/v1/nothing-here", headers=good),
                "unknown table": client.post(
                    "/v1/advance", json={"node_id": "n", "streams": [["tb_x", 0]], "upto": 1}, headers=good
                ),
                "wrong protocol": client.get("/v1/hello", headers={**good, wire.PROTOCOL_HEADER: "99"}),
            }
            nothing_applied = counts(hub) == before and batches_applied(hub) == 0
            accepted = client.post("/v1/apply", content=body, headers=json_)
        statuses = {name: response.status_code for name, response in refused.items()}
        assert statuses == {
            "no token": 401,
            "wrong token": 401,
            "malformed JSON": 400,
            "wrong field": 422,
            "broken batch": 422,
            "batch of nonsense": 422,
            "reference not a global id": 422,
            "key too long": 422,
            "unknown policy": 422,
            "oversized": 413,
            "gzip bomb": 413,
            "not gzip": 400,
            "unknown route": 404,
            "unknown table": 422,
            "wrong protocol": 409,
        }
        for name, response in refused.items():
            error = response.json()
            assert error["error"] and error["hint"] and "\n" not in error["error"], name
        assert refused["wrong token"].json()["error"] == "missing or wrong token"
        assert refused["oversized"].json()["error"] == "the request body exceeds 65536 bytes"
        assert refused["unknown route"].json()["error"] == "no route GET /v1/nothing-here"
        assert refused["batch of nonsense"].json()["error"].startswith("table tb_inconnue is not synced by ")
        assert (
            refused["reference not a global id"].json()["error"].endswith(": references must be global ids")
        )
        assert refused["key too long"].json()["error"].endswith("rows of tb_projet have keys of 1 values")
        assert nothing_applied
        assert accepted.status_code == 200 and accepted.json()["inserted"] == 1
        assert counts(hub)["tb_Projet"] == before["tb_Projet"] + 1


def _with_key_column(batch: str) -> str:
    data = json.loads(batch)
    data["keys"]["columns"].append([7])
    return json.dumps(data)


def _with_value(batch: str, column: str, new: Any) -> str:
    data = json.loads(batch)
    data["values"]["columns"][data["columns"].index(column)] = [new]
    return json.dumps(data)


def test_apply_over_http_is_idempotent_by_batch_id(tmp_path: Path) -> None:
    text = _a_batch(tmp_path / "other")
    with nodes(tmp_path, "sqlite") as (hub,), running(hub) as url:
        peer = HttpPeer(url)
        try:
            batch = changeset.from_json(text)
            first, again = peer.apply(batch, {}), peer.apply(batch, {})
        finally:
            peer.close()
        assert (first.inserted, first.replayed) == (1, False)
        assert (again.inserted, again.replayed) == (0, True)
        assert value(hub, "SELECT count(*) FROM tb_Projet WHERE NumProjet = 'PRJ-LOT'") == 1


def test_client_errors_are_one_clear_line(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (hub, pc):
        with running(hub, tokens=TOKENS) as url:
            with pytest.raises(TokenRefused) as refused:
                sync(pc, PeerAddress(url, "pas-le-bon", name="serveur"))
            assert str(refused.value) == f"peer serveur ({url}) refused the token"
            assert refused.value.hint.startswith("check the token of peer serveur")
            with pytest.raises(TokenRefused):
                sync(pc, PeerAddress(url))  # no token at all
            sock = socket.create_server(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
            with pytest.raises(PeerUnreachable) as unreachable:
                sync(pc, HttpPeer(f"http://127.0.0.1:{port}", retries=1, backoff=0.01))
            assert str(unreachable.value).startswith(f"cannot reach peer http://127.0.0.1:{port}: ")
            assert "\n" not in str(unreachable.value)
            peer = HttpPeer(url, TOKENS["pc1"])
            peer.client.headers[wire.PROTOCOL_HEADER] = "7"
            with pytest.raises(wire.ProtocolMismatch) as mismatch:
                peer.hello()
            peer.close()
            assert str(mismatch.value) == f"this server speaks sync protocol {PROTOCOL}, the client 7"
            hello = wire.HelloOut(
                node_id="n", name="n", fingerprint="", shapes={}, seq=0, protocol=PROTOCOL + 1, version="9.0"
            )
            with pytest.raises(
                wire.ProtocolMismatch,
                match=f"speaks sync protocol {PROTOCOL + 1}, this erpsync speaks {PROTOCOL}",
            ):
                wire.hello_in(hello, "serveur")
        with pytest.raises(InvalidArgument, match="is not the address of a served node"):
            HttpPeer("http://serveur:port")
        # a port that answers something other than erpsync
        with serving(_not_erpsync) as other, pytest.raises(NotAPeer, match="does not answer as erpsync"):
            sync(pc, HttpPeer(other, retries=0))


async def _not_erpsync(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": b"<html>un autre site</html>"})


def test_errors_are_translated_on_the_client(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (hub, pc), running(hub, tokens=TOKENS) as url:
        result = CliRunner().invoke(
            cli, ["--lang", "fr", "sync", url_of(pc), url], env={"ERPSYNC_TOKEN": "x"}
        )
        assert result.exit_code == 1
        assert result.stderr.splitlines()[0] == f"Erreur : le nœud {url} a refusé le jeton"


# -- several servers, one hub ----------------------------------------------------------------------


@pytest.mark.parametrize("hub_engine", ["mariadb", "postgresql"])
def test_two_server_processes_on_one_hub_with_clients_alternating(hub_engine: str, tmp_path: Path) -> None:
    with nodes(tmp_path, hub_engine, "sqlite", "sqlite", scale=1, seed=11) as (hub, pc1, pc2):
        env = {"ERPSYNC_TOKEN": "partage"}
        with server_process(url_of(hub), env=env) as a, server_process(url_of(hub), env=env) as b:
            servers = [PeerAddress(a.url, "partage"), PeerAddress(b.url, "partage")]
            sync(pc1, servers[0])
            sync(pc2, servers[1])
            for round_ in range(4):
                add_client(pc1, 8000 + round_, f"CLI-1-{round_}", "Du PC1")
                add_client(pc2, 9000 + round_, f"CLI-2-{round_}", "Du PC2")
                execute(pc1, f"UPDATE tb_Client SET Telephone = '01-{round_}' WHERE id = 1")
                sync(pc1, servers[round_ % 2], batch_rows=7)
                sync(pc2, servers[(round_ + 1) % 2], batch_rows=7)
            sync(pc1, servers[0])
            assert sync(pc2, servers[1]).nothing_to_do and sync(pc1, servers[1]).nothing_to_do
        same(hub, pc1, pc2)
        assert value(hub, "SELECT count(*) FROM tb_Client WHERE Code LIKE 'CLI-_-_'") == 8
        assert value(pc2, "SELECT Telephone FROM tb_Client WHERE id = 1") == "01-3"


# -- TLS and the loopback rule ---------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with nodes(tmp_path, "sqlite", "sqlite", scale=1) as (hub, pc):
        with server_process(url_of(hub), "--cert", str(cert), "--key", str(key), "--token", "t") as served:
            assert served.url.startswith("https://127.0.0.1:")
            with pytest.raises(TlsFailed) as untrusted:
                sync(pc, PeerAddress(served.url, "t"))
            assert "certificate" in str(untrusted.value) and "?ca=" in untrusted.value.hint
            plain = served.url.replace("https://", "http://")
            with pytest.raises((PeerUnreachable, NotAPeer)):
                sync(pc, HttpPeer(plain, "t", retries=0))
            summary = sync(pc, PeerAddress(f"{served.url}?ca={cert}", "t"))
            assert summary.tables["tb_lignecommande"].received > 0
        same(hub, pc)


def test_serve_refuses_the_network_without_a_token(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite") as (hub,):
        result = CliRunner().invoke(
            cli, ["--lang", "en", "serve", url_of(hub), "--host", "0.0.0.0"], env={"ERPSYNC_TOKEN": ""}
        )
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            "Error: erpsync serve refuses to listen on 0.0.0.0 without a token",
            "Try: give --token (or set ERPSYNC_TOKEN), or list the peers' tokens in erpsync.toml; "
            "or listen on 127.0.0.1",
        ]
        with pytest.raises(NoAuthentication), running(hub, host="0.0.0.0"):
            pass
        result = CliRunner().invoke(cli, ["--lang", "en", "serve", url_of(hub), "--cert", "c.pem"])
        assert result.exit_code == 1 and "Error: --cert and --key go together" in result.stderr


def test_serve_takes_the_peers_tokens_from_the_configuration(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (hub, pc):
        config = tmp_path / "erpsync.toml"
        config.write_text(
            f'[node]\nname = "pc1"\ndatabase = "{url_of(hub)}"\n\n'
            '[[peers]]\nname = "PC2"\nurl = "http://127.0.0.1:1"\ntoken_env = "JETON_PC2"\n\n'
            '[[peers]]\nname = "PC3"\nurl = "http://127.0.0.1:2"\ntoken_env = "JETON_PC3_ABSENT"\n',
            encoding="utf-8",
        )
        with server_process(
            url_of(hub), env={"ERPSYNC_CONFIG": str(config), "JETON_PC2": "s3cret"}
        ) as served:
            assert served.process.stdout is not None
            assert served.process.stdout.readline().strip() == "Peers allowed: PC2."
            with pytest.raises(TokenRefused):
                sync(pc, PeerAddress(served.url, "autre"))
            assert sync(pc, PeerAddress(served.url, "s3cret")).nothing_to_do


def test_serve_accepts_the_tokens_of_its_clients_and_of_its_peers(tmp_path: Path) -> None:
    """A hub lists its PCs as [[serve.clients]] (it does not sync with them); a LAN peer's token works too."""
    with nodes(tmp_path, "sqlite", "sqlite") as (hub, pc):
        config = tmp_path / "erpsync.toml"
        config.write_text(
            f'[node]\nname = "SERVEUR"\ndatabase = "{url_of(hub)}"\n\n'
            '[[peers]]\nname = "PC9"\nurl = "http://127.0.0.1:1"\ntoken = "jeton-pair"\n\n'
            '[[serve.clients]]\nname = "PC1"\ntoken_env = "JETON_PC1"\n\n'
            '[[serve.clients]]\nname = "PC2"\ntoken = "jeton-pc2"\n\n'
            '[[serve.clients]]\nname = "PC3"\ntoken_env = "JETON_PC3_ABSENT"\n',
            encoding="utf-8",
        )
        env = {"ERPSYNC_CONFIG": str(config), "JETON_PC1": "jeton-pc1"}
        with server_process(url_of(hub), env=env) as served:
            assert served.process.stdout is not None
            assert served.process.stdout.readline().strip() == "Peers allowed: PC1, PC2, PC9."
            for token in ("jeton-pc1", "jeton-pc2", "jeton-pair"):
                assert sync(pc, PeerAddress(served.url, token)).nothing_to_do
            with pytest.raises(TokenRefused):
                sync(pc, PeerAddress(served.url, "jeton-pc3"))


# -- the OpenAPI description -----------------------------------------------------------------------


def test_openapi_describes_every_operation_and_the_token(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite") as (hub,), running(hub, tokens=TOKENS) as url:
        description = httpx.get(url + "/openapi.json").json()
    paths = description["paths"]
    operations = {f"{method.upper()} {path}" for path, item in paths.items() for method in item}
    assert operations == {
        "GET /health",
        "GET /v1/hello",
        "GET /v1/cursors",
        "POST /v1/plan",
        "GET /v1/changes",
        "POST /v1/fetch",
        "POST /v1/advance",
        "POST /v1/apply",
        "POST /v1/met",
        "POST /v1/verify",
    }
    assert paths["/v1/apply"]["post"]["security"] == [{"token": []}]
    assert "security" not in paths["/health"]["get"]
    assert description["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    """Every operation, with valid and invalid inputs generated from the OpenAPI description."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    failures: list[str] = []
    calls = 0
    with nodes(tmp_path, "sqlite", scale=1) as (hub,), running(hub, tokens=TOKENS) as url:
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        headers = {"Authorization": f"Bearer {TOKENS['pc1']}"}
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

                @settings(
                    max_examples=25,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def call(case: Any) -> None:
                    nonlocal calls
                    calls += 1
                    response = case.call(base_url=url, headers=headers)
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.path}: {response.status_code} {response.text}")

                with suppress(Unsatisfiable):  # no invalid input for an operation without parameters
                    call()
    assert calls > 200
    assert failures == []


# -- verify over HTTP ------------------------------------------------------------------------------


def _diverge(db: Database, name: str) -> None:
    """A write that bypasses capture (as if the triggers had been dropped meanwhile)."""
    with db.begin() as conn:
        db.dialect.mute_capture(conn)
        conn.exec_driver_sql(
            f"UPDATE tb_Client SET RaisonSociale = '{name}' WHERE id = (SELECT min(id) FROM tb_Client)"
        )
        db.dialect.unmute_capture(conn)


def test_verify_over_http_lists_the_rows_that_differ_and_repairs_them(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite", scale=1) as (hub, pc), running(hub, tokens=TOKENS) as url:
        server = PeerAddress(url, TOKENS["pc2"])
        sync(pc, server)
        report = verify(pc, server)
        assert report.same and report.there == f"pc1 ({url})"
        assert report.tables["tb_Client"].rows_there == report.tables["tb_Client"].rows_here > 0
        _diverge(pc, "Divergente")
        report = verify(pc, server)
        assert not report.same
        different = report.tables["tb_Client"].different
        assert len(different) == 1 and not report.tables["tb_Client"].only_here
        report = verify(pc, server, repair=True)
        assert report.repaired == 1
        assert verify(pc, server).same
        assert value(hub, "SELECT count(*) FROM tb_Client WHERE RaisonSociale = 'Divergente'") == 1


def test_verify_command_takes_an_http_peer_and_its_token_from_the_configuration(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite", scale=1) as (hub, pc), running(hub, tokens=TOKENS) as url:
        config = tmp_path / "erpsync.toml"
        config.write_text(
            f'[node]\nname = "pc2"\ndatabase = "{url_of(pc)}"\n\n'
            f'[[peers]]\nname = "SERVEUR"\nurl = "{url}"\ntoken = "{TOKENS["pc2"]}"\n',
            encoding="utf-8",
        )
        env = {"ERPSYNC_CONFIG": str(config)}
        runner = CliRunner()
        assert runner.invoke(cli, ["--lang", "en", "sync", "pc2", "SERVEUR"], env=env).exit_code == 0
        result = runner.invoke(cli, ["--lang", "en", "verify", "pc2", "SERVEUR"], env=env)
        assert result.exit_code == 0 and "Same rows on both nodes." in result.stdout
        _diverge(hub, "Divergente sur le serveur")
        result = runner.invoke(cli, ["--lang", "en", "verify", "pc2", "SERVEUR"], env=env)
        assert result.exit_code == 1 and "different" in result.stdout
        result = runner.invoke(cli, ["--lang", "en", "verify", "pc2", url, "--repair"], env=env)
        assert result.exit_code == 1, "a URL given directly takes its token from ERPSYNC_TOKEN"
        env["ERPSYNC_TOKEN"] = TOKENS["pc1"]
        result = runner.invoke(cli, ["--lang", "en", "verify", "pc2", url, "--repair"], env=env)
        assert result.exit_code == 0, result.output
        assert "Repaired 1 rows." in result.stdout
        assert result.stdout.rstrip().endswith("Same rows on both nodes.")
        assert value(hub, "SELECT count(*) FROM tb_Client WHERE RaisonSociale LIKE 'Divergente%'") == 0

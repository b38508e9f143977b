"""``erpsync status`` and ``erpsync peers test`` on real nodes, folders and servers."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.engine import make_url

from erpsync import __version__
from erpsync.cli import cli
from erpsync.config import BackupConfig
from erpsync.db import Database
from erpsync.status import check_peer, check_peers, node_report
from erpsync.sync.node import init_node, set_policy
from erpsync.sync.peer import PROTOCOL
from erpsync.sync.session import sync
from erpsync.transport import PeerAddress
from erpsync.transport.folder import exchange
from erpsync.transport.server import running
from tests.conftest import fresh_database
from tests.sync_support import databases, execute, nodes

DOWN = "mysql+pymysql://erp@127.0.0.1:1/erp"


def url(db: Database) -> str:
    return db.url.render_as_string(hide_password=False)


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def write_config(path: Path, db: Database, peers: dict[str, str], backups: Path | None = None) -> Path:
    lines = ["[node]", 'name = "pc1"', f"database = {json.dumps(url(db))}", ""]
    for name, address in peers.items():
        lines += ["[[peers]]", f"name = {json.dumps(name)}", f"url = {json.dumps(address)}", ""]
    if backups:
        lines += ["[backup]", f"folder = {json.dumps(str(backups))}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_status_shows_pending_changes_last_syncs_conflicts_and_the_last_backup(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=21) as (pc2, pc1):
        config = write_config(tmp_path / "erpsync.toml", pc1, {"pc2": url(pc2)}, backups)
        code, out = run_cli("--lang", "en", "--config", str(config), "status")
        assert code == 0 and "No sync yet." in out and "none in" in out
        set_policy(pc1, "tb_Client", "manual")
        sync(pc1, pc2, backup=BackupConfig(folder=str(backups)))
        execute(pc1, "UPDATE tb_Client SET Email = 'ici@example.fr' WHERE id = 1")
        execute(pc2, "UPDATE tb_Client SET Email = 'la-bas@example.fr' WHERE id = 1")
        sync(pc1, pc2)
        execute(pc1, "UPDATE tb_Client SET Telephone = '0102030405' WHERE id IN (2, 3)")
        execute(pc1, "UPDATE tb_Client SET Telephone = '0607080910' WHERE id = 2")
        report = node_report(pc1, backup_folder=backups)
        assert report.name == "pc2" and report.database == pc1.name  # (the second node created)
        assert report.pending == {"tb_Client": 2}  # rows, not writes
        assert report.open_conflicts == 1
        assert report.last_backup is not None and report.last_backup.reason == "before sync"
        (peer,) = report.peers
        assert peer.name.startswith("pc1") and peer.result == "ok" and peer.when is not None
        assert peer.received == 1 and peer.sent == 1  # each side's edit of the email
        code, out = run_cli("--lang", "en", "--config", str(config), "status")
        assert code == 0, out
        for text in ("Changed here since the last sync", "tb_Client 2", "Open conflicts", "Last backup"):
            assert text in out
        assert "erpsync conflicts list" in out and "Service" in out and "not running" in out
        code, out = run_cli("--lang", "fr", "status", str(pc1.url.database))
        assert code == 0 and "Conflits ouverts" in out and "Dernière synchronisation avec chaque nœud" in out


def test_status_lists_the_peers_this_node_synced_with_not_those_it_heard_of(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite", "sqlite", scale=1, seed=23) as (hub, pc1, pc2):
        sync(pc1, hub)
        sync(pc2, hub)
        execute(pc2, "UPDATE tb_Client SET Email = 'pc2@example.fr' WHERE id = 1")
        sync(pc2, hub)
        assert sync(pc1, hub).received == 1  # pc2's edit, through the hub: pc1 knows pc2, never met it
        assert [p.name for p in node_report(pc1).peers] == ["pc1"]  # the hub (the first node created)
        assert [p.name for p in node_report(hub).peers] == ["pc2", "pc3"]


def test_status_without_a_database_or_configuration_says_what_to_do(tmp_path: Path) -> None:
    code, out = run_cli("--lang", "en", "--config", str(tmp_path / "absent.toml"), "status")
    assert code == 1
    assert "Error: no database given and no configuration file" in out and "Try: give the database" in out


def test_peers_test_reports_each_peer_in_one_row(tmp_path: Path) -> None:
    folder = tmp_path / "ERP_LAUNCHER_SYNC"
    folder.mkdir()
    with (
        nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=22) as (pc1, pc2),
        databases(tmp_path, "sqlite", "sqlite") as (other, plain),
    ):
        execute(other, "ALTER TABLE tb_Client ADD COLUMN Fax VARCHAR(20)")
        init_node(other, "autre")
        exchange(pc2, folder.as_uri())
        peers = {
            "pc2": url(pc2),
            "serveur": DOWN,
            "autre": url(other),
            "sans-noeud": url(plain),
            "dossier": folder.as_uri(),
        }
        config = write_config(tmp_path / "erpsync.toml", pc1, peers)
        checks = {c.name: c for c in check_peers(pc1, [PeerAddress(u, None, n) for n, u in peers.items()])}
        good = checks["pc2"]
        assert good.ok and good.reachable and good.authenticated and good.schema
        assert good.node == "pc2" and good.latency is not None and good.latency > 0
        assert good.version == f"erpsync {__version__}, protocol {PROTOCOL}"
        down = checks["serveur"]
        assert not down.ok and down.reachable is False and "127.0.0.1:1" in (down.reason or "") and down.hint
        other_check = checks["autre"]
        assert other_check.reachable and other_check.schema is False and "fax" in (other_check.reason or "")
        plain_check = checks["sans-noeud"]
        assert (
            plain_check.reachable and not plain_check.ok and "not a sync node" in (plain_check.reason or "")
        )
        shared = checks["dossier"]
        assert shared.ok and shared.node == "pc2" and shared.schema is True
        code, out = run_cli("--lang", "en", "--config", str(config), "peers", "test")
        assert code == 1
        assert "serveur: cannot reach the MariaDB server at 127.0.0.1:1" in out.replace("\n", " ")
        assert "  Try: check the host and port" in out and "autre: it does not sync the same tables" in out
        code, out = run_cli("--lang", "fr", "--config", str(config), "peers", "test", "pc2")
        assert code == 0 and out.startswith("Connexions de ") and "serveur" not in out


def test_peers_test_authentication_over_http_and_mariadb(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (pc1, hub), running(hub, tokens={"pc1": "s3cret"}) as address:
        good = check_peer(pc1, PeerAddress(address, "s3cret", "hub"))
        assert (
            good.ok and good.authenticated and good.version == f"erpsync {__version__}, protocol {PROTOCOL}"
        )
        bad = check_peer(pc1, PeerAddress(address, "wrong", "hub"))
        assert bad.reachable is True and bad.authenticated is False and bad.hint and not bad.ok
        with fresh_database("mariadb", tmp_path) as server:
            login = check_peer(
                pc1, PeerAddress(make_url(server).set(password="definitely-wrong").render_as_string(False))
            )
            assert login.reachable is True and login.authenticated is False and "root" in (login.reason or "")

"""The sync service: every configured peer at each interval, backoff for a peer that is down, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from erpsync import service
from erpsync.backup import list_backups
from erpsync.cli import cli
from erpsync.config import load_config
from erpsync.db import Database
from erpsync.service import ServiceRunning, ServiceState
from erpsync.sync.policies import PolicyOverride
from tests.sync_support import add_project, nodes, same, value

DOWN = "mysql+pymysql://erp@127.0.0.1:1/erp"
"""A MariaDB server that is not there: connection refused at once."""


def write_config(path: Path, db: Database, peers: dict[str, str], extra: str = "") -> Path:
    lines = ["[node]", 'name = "pc1"', f"database = {json.dumps(str(db.url.database))}", "", "[sync]"]
    lines += ["interval = 5", "jitter = 0", extra, ""]
    for name, url in peers.items():
        lines += ["[[peers]]", f"name = {json.dumps(name)}", f"url = {json.dumps(url)}", ""]
    lines += ["[backup]", f"folder = {json.dumps(str(path.parent / 'backups'))}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def url(db: Database) -> str:
    return db.url.render_as_string(hide_password=False)


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--lang", "en", *args])
    return result.exit_code, result.output


def test_a_down_peer_is_backed_off_and_the_other_is_synced(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=11) as (pc1, pc2):
        config = write_config(tmp_path / "erpsync.toml", pc1, {"serveur": DOWN, "pc2": url(pc2)})
        lines: list[str] = []
        cycles: list[ServiceState] = []

        def after_cycle(state: ServiceState) -> None:
            cycles.append(state)
            if state.cycles == 2:
                add_project(pc2, "PRJ-NEW")  # a change while the service runs goes at the next cycle
            if state.cycles >= 6:
                raise KeyboardInterrupt

        state = service.Service(config, interval=0.3, jitter=0, say=lines.append, on_cycle=after_cycle).run()
        same(pc1, pc2)
        assert value(pc1, "SELECT count(*) FROM tb_Projet WHERE NumProjet = 'PRJ-NEW'") == 1
        assert state.cycles == 6 and not state.running and state.stopped
        down, up = state.peers["serveur"], state.peers["pc2"]
        assert up.result == "ok" and up.failures == 0 and up.retry_at is None and up.last_ok
        assert down.result == "failed" and "127.0.0.1:1" in (down.message or "") and down.hint
        assert 2 <= down.failures < state.cycles  # tried at 1, 2, 4 … intervals, not every cycle
        assert down.retry_at is not None and down.retry_at > (state.last_run or "")
        assert any(line.startswith("serveur: down, next try at") for line in lines)
        assert any(line.startswith("serveur: failed (2 in a row)") for line in lines)
        assert lines[0].startswith("Service started: node pc1, 2 peers") and lines[-1] == "Service stopped."
        # the file says the same, and [backup] was honoured: a backup before the sync that wrote
        stored = service.read_state(config)
        assert stored is not None and stored.peers["serveur"].failures == down.failures
        assert list_backups(tmp_path / "backups")


def test_once_syncs_every_peer_a_single_time_and_status_reads_the_state(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=12) as (pc1, pc2):
        config = write_config(tmp_path / "erpsync.toml", pc1, {"pc2": url(pc2)})
        code, out = run_cli("--config", str(config), "service", "status")
        assert code == 3 and "The service has never run with" in out
        code, out = run_cli(
            "--config", str(config), "service", "run", "--once", "--log", str(tmp_path / "s.log")
        )
        assert code == 0, out
        assert "pc2: " in out and "rows received" in out and "Service stopped." not in out
        assert "rows received" in (tmp_path / "s.log").read_text(encoding="utf-8")
        same(pc1, pc2)
        code, out = run_cli("--config", str(config), "service", "status")
        assert code == 3 and "Service: not running (stopped at" in out and "pc2" in out
        # a peer down makes --once fail (a scheduled task shows it), the others are still synced
        write_config(config, pc1, {"serveur": DOWN, "pc2": url(pc2)})
        add_project(pc2, "PRJ-ONCE")
        code, out = run_cli("--config", str(config), "service", "run", "--once")
        assert code == 1 and "serveur: failed (1 in a row)" in out
        assert value(pc1, "SELECT count(*) FROM tb_Projet WHERE NumProjet = 'PRJ-ONCE'") == 1


def test_ctrl_c_between_syncs_stops_at_once(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (pc1, pc2):
        config = write_config(tmp_path / "erpsync.toml", pc1, {"pc2": url(pc2)})

        def ctrl_c(_state: ServiceState) -> None:
            raise KeyboardInterrupt

        started = time.monotonic()
        state = service.Service(config, interval=60, jitter=0, on_cycle=ctrl_c).run()
        assert time.monotonic() - started < 10
        assert state.cycles == 1 and not state.running and state.next_run is None
        assert not service.status(config).running


def test_a_stop_during_a_sync_takes_effect_after_the_current_batch(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=13) as (pc2, pc1):
        config = write_config(tmp_path / "erpsync.toml", pc1, {"pc2": url(pc2)})
        stop = threading.Event()
        batches: list[int] = []

        def first_batch_then_ctrl_c(label: str, done: int, total: int) -> None:
            if done:
                batches.append(done)
                stop.set()  # what the first Ctrl-C does in the CLI

        state = service.Service(config, interval=60, stop=stop, progress=first_batch_then_ctrl_c).run()
        assert len(batches) == 1 and state.peers["pc2"].result == "interrupted"
        assert value(pc1, "SELECT count(*) FROM tb_Utilisateur") > 0
        assert value(pc1, "SELECT count(*) FROM tb_LigneCommande") == 0
        state = service.Service(config).run(once=True)  # the next run resumes where it stopped
        assert state.peers["pc2"].result == "ok"
        same(pc1, pc2)


def test_a_folder_peer_and_a_second_service_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ERP_LAUNCHER_SYNC"
    folder.mkdir()
    with nodes(tmp_path, "sqlite", "sqlite", scale=1, seed=14) as (pc1, pc2):
        configs = []
        for i, db in enumerate((pc1, pc2), start=1):
            (tmp_path / f"pc{i}").mkdir()
            configs.append(
                write_config(tmp_path / f"pc{i}" / "erpsync.toml", db, {"dossier": folder.as_uri()})
            )
        for config in (*configs, configs[0]):
            assert service.Service(config).run(once=True).peers["dossier"].result == "ok"
        same(pc1, pc2)
        # another process's service, alive: refused
        path = service.state_path(configs[0])
        data = json.loads(path.read_text(encoding="utf-8"))
        data.update(running=True, pid=os.getpid() + 1, heartbeat=service._text(service._now()))
        path.write_text(json.dumps(data), encoding="utf-8")
        assert service.status(configs[0]).running
        with pytest.raises(ServiceRunning, match="already runs"):
            service.Service(configs[0]).run(once=True)
        # once its heartbeat is old, it is known to have stopped without a word
        data["heartbeat"] = "2020-01-01T00:00:00+00:00"
        path.write_text(json.dumps(data), encoding="utf-8")
        found = service.status(configs[0])
        assert not found.running and found.died
        code, out = run_cli("--config", str(configs[0]), "service", "status")
        assert code == 3 and "stopped without a word" in out


def test_a_second_service_started_in_the_same_instant_is_refused(tmp_path: Path) -> None:
    """The lock file, not the heartbeat, decides: the first one has not written its state yet."""
    with nodes(tmp_path, "sqlite", "sqlite") as (pc1, pc2):
        config = write_config(tmp_path / "erpsync.toml", pc1, {"pc2": url(pc2)})
        stop, cycled = threading.Event(), threading.Event()
        first = service.Service(config, interval=60, stop=stop, on_cycle=lambda _state: cycled.set())
        running = threading.Thread(target=first.run)
        running.start()
        try:
            assert cycled.wait(30)
            with pytest.raises(ServiceRunning, match="already runs"):
                service.Service(config).run(once=True)  # same process: the heartbeat check lets it through
        finally:
            stop.set()
            running.join()
        assert service.Service(config).run(once=True).peers["pc2"].result == "ok"  # the lock is free again


def test_the_configuration_policies_and_backoff() -> None:
    from erpsync.config import validate

    config = validate(
        {
            "node": {"name": "pc1", "database": "erp.sqlite"},
            "sync": {"policies": {"tb_Client": "no-overwrite", "tb_Commande.Statut": "manual"}},
        },
        "test",
    )
    assert service.policy_overrides(config) == [
        PolicyOverride("no-overwrite", "tb_client"),
        PolicyOverride("manual", "tb_commande", "statut"),
    ]
    config = validate({"node": {"name": "pc1", "database": "x"}, "sync": {"policy": "lww"}}, "test")
    assert service.policy_overrides(config) == [PolicyOverride("lww")]
    assert [service.backoff(n, 300) for n in (1, 2, 3, 4, 5, 6, 9)] == [
        300,
        600,
        1200,
        2400,
        3600,
        3600,
        3600,
    ]
    assert service.backoff(3, 7200) == 7200


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_the_command_cleanly(tmp_path: Path) -> None:
    with nodes(tmp_path, "sqlite", "sqlite") as (pc1, pc2):
        config = write_config(tmp_path / "erpsync.toml", pc1, {"pc2": url(pc2)})
        env = {**os.environ, "ERPSYNC_CONFIG": str(config), "LANG": "en_US.UTF-8"}
        process = subprocess.Popen(
            [sys.executable, "-m", "erpsync", "service", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not ((state := service.read_state(config)) and state.next_run):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            code, out = run_cli("--config", str(config), "service", "status")
            assert code == 0 and "Service: running (process" in out
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, output
        assert "Stopping after the current batch" in output and output.rstrip().endswith("Service stopped.")
        assert not service.status(config).running
        assert load_config(config).node.name == "pc1"

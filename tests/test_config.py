"""The configuration file: the example validates, each wrong field is named, old formats convert."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from erpsync.cli import cli
from erpsync.config import (
    ClientConfig,
    Config,
    ConfigInvalid,
    NodeConfig,
    PeerConfig,
    ServeConfig,
    import_legacy,
    load_config,
    to_toml,
    validate,
    write_example,
)
from erpsync.errors import InvalidArgument, NotFound


def test_the_written_example_is_valid(tmp_path: Path) -> None:
    path = write_example(tmp_path / "erpsync.toml")
    config = load_config(path)
    assert (config.node.name, config.sync.interval, config.sync.policy) == ("PC1", 300, "lww")
    assert [p.name for p in config.peers] == ["serveur"]
    assert config.serve.clients == []
    text = path.read_text()
    commented = validate(tomllib.loads(re.sub(r"(?m)^# (?=\[|[A-Za-z_]+ = )", "", text)), "x")
    assert [c.name for c in commented.serve.clients] == ["PC3"]
    assert [p.name for p in commented.peers] == ["serveur", "serveur-ssh", "PC2"]
    assert config.backup.before_sync and config.backup.keep_last == 20
    with pytest.raises(InvalidArgument, match="already exists"):
        write_example(path)


def test_every_wrong_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[node]\nname = ""\n[sync]\ninterval = 1\npolicy = "win"\ncolour = "blue"\n'
        '[sync.policies]\ntb_Client = "merge"\n'
        '[[peers]]\nname = "a"\nurl = "ftp://x"\n'
        '[[peers]]\nname = "b"\nurl = "http://127.0.0.1:8001"\ntoken = "t"\ntoken_env = "T"\n'
    )
    with pytest.raises(ConfigInvalid) as caught:
        load_config(path)
    message = str(caught.value)
    for expected in (
        "node.name:",
        "node.database: required",
        "sync.interval:",
        "sync.policy: 'win' is not a policy",
        "sync.colour: unknown field",
        "sync.policies: 'merge' is not a policy",
        "peers[0].url: must be",
        "peers[1]: give token or token_env, not both",
    ):
        assert expected in message
    assert "\n" not in message


def test_peer_names_are_unique_and_tokens_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigInvalid, match="peer names must be unique: pc2"):
        validate(
            {
                "node": {"name": "PC1", "database": "erp.sqlite"},
                "peers": [{"name": "PC2", "url": "http://h:1"}, {"name": "pc2", "url": "http://h:2"}],
            },
            "x",
        )
    config = validate(
        {
            "node": {"name": "PC1", "database": "erp.sqlite"},
            "peers": [{"name": "srv", "url": "https://h:8443", "token_env": "ERPSYNC_T"}],
        },
        "x",
    )
    monkeypatch.setenv("ERPSYNC_T", "s3cret")
    assert config.peer("SRV").secret() == "s3cret"
    with pytest.raises(NotFound, match="no peer nope"):
        config.peer("nope")


def test_a_hubs_clients_give_their_tokens_to_serve_without_being_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"node": {"name": "SERVEUR", "database": "hub.sqlite"}}
    with pytest.raises(ConfigInvalid) as caught:
        validate(
            {
                **base,
                "serve": {
                    "clients": [
                        {"name": "PC1"},
                        {"name": "PC2", "token": "a", "token_env": "B"},
                        {"name": "pc3", "token": "c"},
                        {"name": "PC3", "token": "d"},
                        {"name": "PC4", "url": "http://h:1", "token": "e"},
                    ]
                },
            },
            "x",
        )
    message = str(caught.value)
    for expected in (
        "serve.clients[0]: give token or token_env: the client authenticates with it",
        "serve.clients[1]: give token or token_env, not both",
        "serve.clients[4].url: unknown field",
    ):
        assert expected in message
    assert "\n" not in message
    with pytest.raises(ConfigInvalid, match="serve: client names must be unique: pc3"):
        validate(
            {**base, "serve": {"clients": [{"name": "pc3", "token": "c"}, {"name": "PC3", "token": "d"}]}},
            "x",
        )
    config = validate(
        {
            **base,
            "peers": [
                {"name": "PC1", "url": "http://pc1:8765", "token": "lan-pc1"},
                {"name": "PC2", "url": "http://pc2:8765", "token": "t-pc2"},
                {"name": "PC3", "url": "http://pc3:8765", "token_env": "ABSENT_PC3"},
            ],
            "serve": {
                "port": 9000,
                "clients": [{"name": "PC1", "token_env": "T_PC1"}, {"name": "PC2", "token": "t-pc2"}],
            },
        },
        "x",
    )
    monkeypatch.setenv("T_PC1", "client-pc1")
    monkeypatch.delenv("ABSENT_PC3", raising=False)
    tokens, unset = config.accepted_tokens()
    assert tokens == {"PC1": "client-pc1", "PC2": "t-pc2", "PC1 (peer)": "lan-pc1"}
    assert unset == [("PC3", "ABSENT_PC3")]
    path = tmp_path / "erpsync.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    assert load_config(path) == config.beside(tmp_path)
    assert load_config(path).node.database == str(tmp_path / "hub.sqlite")
    hub = Config(
        node=NodeConfig(name="SERVEUR", database="hub.sqlite"),
        serve=ServeConfig(clients=[ClientConfig(name="PC1", token="s")]),
        peers=[PeerConfig(name="srv2", url="ssh://erp@srv2/SERVEUR")],
    )
    path.write_text(to_toml(hub), encoding="utf-8")
    assert load_config(path) == hub.beside(tmp_path) and "[serve]" not in path.read_text()
    with pytest.raises(ConfigInvalid, match=r"peers\[0\]\.url: must be ssh://user@host"):
        validate({**base, "peers": [{"name": "s", "url": "ssh://erp@srv2"}]}, "x")


def test_relative_paths_are_relative_to_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service started elsewhere (Task Scheduler starts in System32) finds the same files."""
    folder = tmp_path / "ERP"
    folder.mkdir()
    path = folder / "erpsync.toml"
    path.write_text(
        '[node]\nname = "PC1"\ndatabase = "data/erp.sqlite"\n'
        '[[peers]]\nname = "copie"\nurl = "sqlite:///copie.sqlite"\n'
        '[[peers]]\nname = "serveur"\nurl = "http://serveur:8765"\n'
        '[[peers]]\nname = "base"\nurl = "mysql+pymysql://erp@serveur/erp"\n'
        '[backup]\nfolder = "~/sauvegardes"\n'
        '[serve]\ncert = "tls/cert.pem"\nkey = "/etc/erp/key.pem"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "home"))
    config = load_config(Path("ERP") / "erpsync.toml")
    assert config.node.database == str(folder / "data" / "erp.sqlite")
    assert [p.url for p in config.peers] == [
        f"sqlite:///{folder / 'copie.sqlite'}",
        "http://serveur:8765",
        "mysql+pymysql://erp@serveur/erp",
    ]
    assert config.backup.folder == str(tmp_path / "home" / "sauvegardes")  # ~ is the user's folder
    assert (config.serve.cert, config.serve.key) == (str(folder / "tls" / "cert.pem"), "/etc/erp/key.pem")
    elsewhere = folder / "data"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # anywhere but the file's folder
    result = CliRunner().invoke(cli, ["--lang", "en", "--config", str(path), "db", "init", "PC1"])
    assert result.exit_code == 0, result.output
    assert (folder / "data" / "erp.sqlite").exists() and not (elsewhere / "data").exists()


def test_toml_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("[node\nname = 1\n")
    with pytest.raises(ConfigInvalid, match="not valid TOML"):
        load_config(tmp_path / "broken.toml")
    with pytest.raises(NotFound, match="no configuration file") as caught:
        load_config(tmp_path / "absent.toml")
    assert "erpsync config init" in caught.value.hint


def test_network_config_json_converts(tmp_path: Path) -> None:
    legacy = tmp_path / "network_config.json"
    legacy.write_text(
        json.dumps(
            {
                "pc_list": [
                    {"name": "PC1", "ip": "192.168.1.100", "port": 8001},
                    {"name": "PC2", "ip": "192.168.1.101", "port": 8002},
                ],
                "sync_interval": 30,
                "last_sync": None,
            }
        )
    )
    config = import_legacy(legacy, database="C:/ERP/erp.sqlite", name="PC3")
    assert [(p.name, p.url) for p in config.peers] == [
        ("PC1", "http://192.168.1.100:8001"),
        ("PC2", "http://192.168.1.101:8002"),
    ]
    assert (config.node.name, config.node.database, config.sync.interval) == ("PC3", "C:/ERP/erp.sqlite", 30)
    out = tmp_path / "erpsync.toml"
    out.write_text(to_toml(config))
    assert load_config(out) == config


def test_erp_launcher_config_json_converts(tmp_path: Path) -> None:
    legacy = tmp_path / "erp_launcher_config.json"
    shared = tmp_path / "partage"
    legacy.write_text(
        json.dumps(
            {
                "sync_interval": 300,
                "shared_folder": str(shared),
                "db_path": "erp.sqlite",
                "pc_name": "ACCUEIL",
            }
        )
    )
    config = import_legacy(legacy)
    assert config.node.name == "ACCUEIL" and config.node.database == "erp.sqlite"
    assert [(p.name, p.url) for p in config.peers] == [("dossier-partage", shared.as_uri())]
    legacy.write_text("[1, 2")
    with pytest.raises(ConfigInvalid, match="not valid JSON"):
        import_legacy(legacy)


def test_config_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    path = str(tmp_path / "erpsync.toml")
    result = runner.invoke(cli, ["--lang", "en", "config", "init", path])
    assert result.exit_code == 0 and "erpsync config check" in result.stdout
    result = runner.invoke(cli, ["--lang", "en", "config", "check", path])
    assert (
        result.exit_code == 0
        and "node PC1" in result.stdout
        and "ERPSYNC_TOKEN_SERVEUR is not set" in result.stdout
    )
    result = runner.invoke(cli, ["--lang", "en", "config", "init", path])
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {path} already exists")


def test_a_command_takes_the_database_by_its_node_name(tmp_path: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "erp.sqlite"
    assert runner.invoke(cli, ["db", "init", str(db)]).exit_code == 0
    path = tmp_path / "erpsync.toml"
    path.write_text(f'[node]\nname = "ACCUEIL"\ndatabase = {json.dumps(str(db))}\n')
    result = runner.invoke(cli, ["--lang", "en", "--config", str(path), "db", "summary", "accueil"])
    assert result.exit_code == 0 and f"Contents of {db}" in result.stdout
    result = runner.invoke(cli, ["--lang", "en", "--config", str(path), "db", "summary", "elsewhere"])
    assert result.exit_code == 1 and "SQLite database file elsewhere does not exist" in result.stderr

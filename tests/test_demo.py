"""``erpsync demo``: the README's main command, run as a new user would."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from erpsync.cli import cli
from erpsync.config import load_config


def test_demo_syncs_two_pcs_through_an_http_hub_and_settles_every_collision(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["--lang", "en", "demo", str(folder)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "answers on http://127.0.0.1:" in out
    assert "is renumbered CMD-" in out and "keeps number CMD-" in out
    assert "verify: the three nodes hold the same rows." in out
    contents = []
    for name in ("serveur", "pc-accueil", "pc-atelier"):
        with sqlite3.connect(folder / f"{name}.sqlite") as conn:
            clients = conn.execute(
                "SELECT RaisonSociale, Code FROM tb_Client WHERE RaisonSociale IN "
                "('Boulangerie Martin', 'Garage Lefèvre') ORDER BY 1"
            ).fetchall()
            orders = conn.execute(
                "SELECT NumCommande FROM tb_Commande WHERE MontantHT IN (990, 1450) ORDER BY MontantHT"
            ).fetchall()
            contents.append((clients, orders))
    clients, orders = contents[0]
    assert len(clients) == 2 and clients[0][1] != clients[1][1]  # both clients kept, distinct codes
    assert len(orders) == 2 and orders[0] != orders[1]
    assert contents[1] == contents[0] and contents[2] == contents[0]
    config = load_config(folder / "pc-accueil.toml")
    assert config.node.name == "PC-ACCUEIL" and config.peers[0].name == "SERVEUR"
    if os.name == "posix":  # the files hold tokens: readable by their owner only
        assert (folder / "pc-accueil.toml").stat().st_mode & 0o077 == 0


def test_demo_refuses_to_overwrite_an_earlier_demo(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "serveur.sqlite").write_bytes(b"earlier work")
    result = CliRunner().invoke(cli, ["--lang", "fr", "demo", str(folder)])
    assert result.exit_code != 0
    assert "contient déjà une démo" in result.output and "--force" in result.output
    assert (folder / "serveur.sqlite").read_bytes() == b"earlier work"

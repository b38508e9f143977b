"""Bad input: a clear one-line error with a hint, and nothing written."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

import erpsync
from erpsync import i18n
from erpsync.db import create_server_database, open_database
from erpsync.errors import (
    AuthenticationFailed,
    BadUrl,
    ConnectionFailed,
    DatabaseError,
    DatabaseNotFound,
    ErpSyncError,
    InvalidArgument,
    UnsupportedEngine,
)
from tests.conftest import drop_database, fresh_database, server_url

SOURCE = Path(__file__).resolve().parents[1] / "src" / "erpsync"


def one_line(error: ErpSyncError) -> None:
    assert error.message and "\n" not in error.message
    assert error.hint and "\n" not in error.hint


@pytest.mark.parametrize("target", ["", "mysql+pymysql://root@127.0.0.1:abc/x", "://nothing"])
def test_malformed_urls(target: str) -> None:
    with pytest.raises(BadUrl) as caught:
        open_database(target)
    one_line(caught.value)


def test_unsupported_engine() -> None:
    with pytest.raises(UnsupportedEngine, match="oracle"):
        open_database("oracle://scott:tiger@127.0.0.1/orcl")


@pytest.mark.parametrize("engine", ["mariadb", "postgresql"])
def test_server_url_without_database(engine: str) -> None:
    with pytest.raises(BadUrl, match="names no database") as caught:
        open_database(server_url(engine))
    one_line(caught.value)


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    target = tmp_path / "absent.sqlite"
    with pytest.raises(DatabaseNotFound) as caught:
        open_database(target)
    assert "erpsync db init" in caught.value.hint
    assert not target.exists()


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatabaseNotFound, match="folder"):
        open_database(tmp_path / "no" / "such" / "erp.sqlite", create=True)
    assert not (tmp_path / "no").exists()


def test_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("not a database, just some notes\n" * 100)
    before = target.read_bytes()
    with pytest.raises(DatabaseError, match="not a database") as caught:
        open_database(target)
    one_line(caught.value)
    assert target.read_bytes() == before


@pytest.mark.parametrize("engine", ["mariadb", "postgresql"])
def test_unreachable_server(engine: str) -> None:
    url = server_url(engine).set(host="127.0.0.1", port=1, database="erp")
    with pytest.raises(ConnectionFailed, match=re.escape("127.0.0.1:1")) as caught:
        open_database(url)
    one_line(caught.value)


@pytest.mark.parametrize(
    ("engine", "change", "who"),
    [
        ("mariadb", {"password": "definitely-wrong"}, "root"),
        # The local PostgreSQL trusts every login, so a wrong password cannot fail: a wrong user can.
        ("postgresql", {"username": "nobody_here"}, "nobody_here"),
    ],
)
def test_wrong_login(engine: str, change: dict[str, str], who: str, tmp_path: Path) -> None:
    with fresh_database(engine, tmp_path) as url:
        with pytest.raises(AuthenticationFailed, match=who) as caught:
            open_database(make_url(url).set(**change))
        one_line(caught.value)


@pytest.mark.parametrize("engine", ["mariadb", "postgresql"])
def test_unknown_database_is_named_and_can_be_created(engine: str, tmp_path: Path) -> None:
    with fresh_database(engine, tmp_path) as url:
        missing = make_url(url).set(database=f"{make_url(url).database}_absent")
        with pytest.raises(DatabaseNotFound, match=str(missing.database)) as caught:
            open_database(missing)
        assert "--create-database" in caught.value.hint
        try:
            assert create_server_database(missing) is True
            assert create_server_database(missing) is False
            open_database(missing).close()
        finally:
            drop_database(missing)


def message_ids() -> set[str]:
    """Every literal passed as message or hint to tr(), to any ErpSyncError class of the package
    or to the server's error_body(), as Python reads it."""

    def names(cls: type) -> set[str]:
        return {cls.__name__}.union(*(names(sub) for sub in cls.__subclasses__()))

    for module in pkgutil.walk_packages(erpsync.__path__, "erpsync."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)  # every module, so every error class is known
    error_classes = names(ErpSyncError) | {"error_body"}
    ids = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            count = 1 if name == "tr" else 2 if name in error_classes else 0
            for arg in node.args[:count]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    ids.add(arg.value)
    return ids


def test_every_message_has_a_french_translation() -> None:
    ids = message_ids()
    assert len(ids) > 400
    assert sorted(i for i in ids if i not in i18n.FRENCH) == []


def test_a_sqlite_writer_waits_for_another_programs_pending_write(tmp_path: Path) -> None:
    """erpsync's write transactions wait (up to 30 s) instead of failing with "database is locked"."""
    import sqlite3
    import threading
    import time

    from sqlalchemy import text

    from erpsync.schema import init_schema

    path = tmp_path / "erp.sqlite"
    with open_database(path, create=True) as db:
        init_schema(db)
        held = threading.Event()

        def erp_writes() -> None:
            erp = sqlite3.connect(path, isolation_level=None)
            erp.execute("BEGIN IMMEDIATE")
            erp.execute("INSERT INTO tb_Utilisateur (Login, Nom) VALUES ('erp', 'ERP')")
            held.set()
            time.sleep(0.5)
            erp.execute("COMMIT")
            erp.close()

        thread = threading.Thread(target=erp_writes)
        thread.start()
        held.wait(5)
        with db.begin() as conn:
            count = conn.execute(text("SELECT COUNT(*) FROM tb_Utilisateur")).scalar_one()
            conn.execute(text("INSERT INTO tb_Utilisateur (Login, Nom) VALUES ('erpsync', 'E')"))
        thread.join()
        assert count == 1  # it waited for the ERP's commit, then saw its row


def test_number_formats_pad_with_zeros_only() -> None:
    from erpsync.numbering import NumberFormat

    assert NumberFormat("C{n:05d}").render(89, 2026) == "C00089"
    for wrong in ("C{n:5d}", "C{n:x}", "C{n:0d}", "C{annee}"):
        with pytest.raises(InvalidArgument):
            NumberFormat(wrong)

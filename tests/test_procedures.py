"""The stored procedures, called through real MariaDB and PostgreSQL connections.

Calls go through a connection in autocommit mode, as from the ``mysql`` or
``psql`` client, with bound parameters. Results are checked with plain SQL
written here, not with erpsync's code.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from erpsync import procedures
from erpsync.cli import cli
from erpsync.db import Database, open_database
from erpsync.dialects.mariadb import split_script
from erpsync.duplicate import duplicate, list_runs, lookup, undo
from erpsync.errors import InvalidArgument
from erpsync.fill import fill
from erpsync.numbering import generate
from erpsync.procedures import ROUTINES, NoStoredProcedures
from erpsync.schema import init_schema
from tests.conftest import fresh_database

SERVERS = ("mariadb", "postgresql")
YEAR = date.today().year

# How many OUT parameters each procedure has (given as @variables on MariaDB, NULLs on PostgreSQL).
OUTS = {
    "SP_DupliquerProjet": 2,
    "SP_DupliquerVersion": 2,
    "SP_DupliquerClient": 2,
    "SP_DupliquerCommande": 2,
    "SP_DupliquerLignesCommande": 2,
    "SP_GenererNumero": 1,
    "SP_GetEqMapping": 2,
    "SP_LogOperation": 0,
}

# A tree by business content: every column but ids, parent keys and the new business numbers.
_LINE = "l.NumLigne, l.Reference, l.Designation, l.Quantite, l.PrixUnitaire"
_COMMANDE = f"co.DateCommande, co.Statut, co.MontantHT, {_LINE}"
_CLIENT = f"cl.RaisonSociale, cl.Email, cl.Telephone, {_COMMANDE}"
_VERSION = f"v.NumVersion, v.Libelle, v.DateCreation, {_CLIENT}"
_BELOW_COMMANDE = "LEFT JOIN tb_LigneCommande l ON l.fkCommande = co.id"
_BELOW_CLIENT = f"LEFT JOIN tb_Commande co ON co.fkClient = cl.id {_BELOW_COMMANDE}"
_BELOW_VERSION = f"LEFT JOIN tb_Client cl ON cl.fkVersion = v.id {_BELOW_CLIENT}"
TREES = {
    "projet": f"SELECT p.Libelle, p.fkCreateur, p.DateCreation, {_VERSION} FROM tb_Projet p "
    f"LEFT JOIN tb_Version v ON v.fkProjet = p.id {_BELOW_VERSION} WHERE p.id = :id",
    "version": f"SELECT {_VERSION} FROM tb_Version v {_BELOW_VERSION} WHERE v.id = :id",
    "client": f"SELECT {_CLIENT} FROM tb_Client cl {_BELOW_CLIENT} WHERE cl.id = :id",
    "commande": f"SELECT {_COMMANDE} FROM tb_Commande co {_BELOW_COMMANDE} WHERE co.id = :id",
}
PARENT = {
    "version": "SELECT fkProjet FROM tb_Version WHERE id = :id",
    "client": "SELECT fkVersion FROM tb_Client WHERE id = :id",
    "commande": "SELECT fkClient FROM tb_Commande WHERE id = :id",
}


# -- helpers ----------------------------------------------------------------------------------


def canonical(value: object) -> str:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return f"{Decimal(value):.2f}"
    return str(value)


def tree(db: Database, level: str, row_id: int) -> list[tuple[str, ...]]:
    with db.connect() as conn:
        rows = conn.execute(text(TREES[level]), {"id": row_id})
        return sorted(tuple(canonical(v) for v in row) for row in rows)


def scalar(db: Database, sql: str, **params: object) -> object:
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def snapshot(db: Database) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table (temporary tables excepted), to compare a database before and after."""
    with db.connect() as conn:
        names = inspect(conn).get_table_names()
        return {
            name.lower(): sorted(
                tuple(canonical(v) for v in row)
                for row in conn.execute(text(f"SELECT * FROM {db.quote(name)}"))
            )
            for name in names
        }


def logs(db: Database) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT Operation, TableCible, IdSource, IdNouveau, Message, Succes, Utilisateur "
                    "FROM tb_Logs ORDER BY id"
                )
            )
        ]


@dataclass
class Call:
    """What a CALL gave back: its OUT parameters and the warnings it left."""

    outs: tuple[object, ...]
    warnings: list[str] = field(default_factory=list)


def call(conn: Connection, name: str, *args: object) -> Call:
    """``CALL name(args…, outs…)`` with bound parameters, as a SQL client would."""
    marks = [f":a{i}" for i in range(len(args))]
    params = {f"a{i}": value for i, value in enumerate(args)}
    count = OUTS[name]
    if conn.dialect.name == "mysql":
        outs = [f"@erpsync_test_out{i}" for i in range(count)]
        conn.execute(text(f"CALL {name}({', '.join(marks + outs)})"), params)
        warnings = [str(row[2]) for row in conn.execute(text("SHOW WARNINGS"))]
        values = tuple(conn.execute(text(f"SELECT {', '.join(outs)}")).one()) if outs else ()
        return Call(values, warnings)
    notices: list[str] = []
    raw = conn.connection.dbapi_connection
    assert raw is not None

    def collect(diagnostic: object) -> None:
        notices.append(str(getattr(diagnostic, "message_primary", "")))

    raw.add_notice_handler(collect)  # type: ignore[attr-defined]
    try:
        result = conn.execute(text(f"CALL {name}({', '.join(marks + ['NULL'] * count)})"), params)
        values = tuple(result.one()) if count else ()
    finally:
        raw.remove_notice_handler(collect)  # type: ignore[attr-defined]
    return Call(values, notices)


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def erp(server: str, tmp_path: Path) -> Iterator[Database]:
    """A fresh database with demo data (fill scale 1) and the procedures installed."""
    with fresh_database(server, tmp_path) as url, open_database(url) as db:
        init_schema(db)
        fill(db, scale=1, seed=0)
        procedures.install(db)
        yield db


@pytest.fixture
def client_conn(erp: Database) -> Iterator[Connection]:
    """A session like a SQL client's: autocommit, its own temporary tables."""
    with erp.engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def pick(db: Database, sql: str) -> int:
    value = scalar(db, sql)
    assert isinstance(value, int)
    return value


# -- install, uninstall, SQLite -----------------------------------------------------------------


def test_install_is_idempotent_and_uninstall_removes_them(server: str, tmp_path: Path) -> None:
    with fresh_database(server, tmp_path) as url, open_database(url) as db:
        init_schema(db)
        assert procedures.install(db).routines == ROUTINES
        assert procedures.install(url).routines == ROUTINES  # again, from a URL
        assert procedures.uninstall(db).routines == ()
        assert procedures.uninstall(db).routines == ()
        with db.connect() as conn:
            names = {name.lower() for name in inspect(conn).get_table_names()}
        assert {"erpsync_dup_run", "erpsync_dup_map", "erpsync_dup_step"} <= names  # runs are kept
        assert procedures.install(db).routines == ROUTINES


def test_install_needs_the_erp_schema(server: str, tmp_path: Path) -> None:
    with fresh_database(server, tmp_path) as url, open_database(url) as db:
        with pytest.raises(Exception, match="missing tables") as caught:
            procedures.install(db)
        assert "erpsync db init" in caught.value.hint  # type: ignore[attr-defined]


def test_sqlite_has_no_stored_procedures(tmp_path: Path) -> None:
    path = tmp_path / "erp.sqlite"
    for action in (procedures.install, procedures.uninstall):
        with pytest.raises(NoStoredProcedures) as caught:
            action(str(path))
        assert "SQLite has no stored procedures" in caught.value.message
        assert "erpsync duplicate" in caught.value.hint
    with pytest.raises(NoStoredProcedures):
        procedures.sql_text(str(path))
    assert not path.exists()
    result = CliRunner().invoke(cli, ["--lang", "en", "procedures", "install", str(path)])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: SQLite has no stored procedures, so SP_DupliquerProjet and the others cannot be installed\n"
        "Try: duplicate from erpsync instead, e.g. erpsync duplicate DB projet 7 (same copy, same journal)\n"
    )


def test_the_sql_files_are_readable_set_based_and_shipped() -> None:
    for engine in SERVERS:
        url = f"{'mysql+pymysql' if engine == 'mariadb' else 'postgresql+psycopg'}://u@h/db"
        script = procedures.sql_text(url)
        assert script.startswith("-- ====")
        for routine in ROUTINES:
            assert f"PROCEDURE {routine}(" in script
        code = "\n".join(line for line in script.upper().splitlines() if not line.lstrip().startswith("--"))
        assert "CURSOR" not in code and "ENGINE=MEMORY" not in code
        assert "END WHILE" not in code and "END REPEAT" not in code
        # PostgreSQL's one loop drops earlier versions of the routines; no loop touches data.
        assert code.count("END LOOP") == (1 if engine == "postgresql" else 0)
        assert "sp_dupliquerprojet" in procedures.sql_text(url, "uninstall").lower()
    statements = split_script(procedures.sql_text("mysql://u@h/db"))
    creates = [s for s in statements if s.startswith("CREATE OR REPLACE")]
    assert len(creates) == len(ROUTINES) + 12  # the spec's eight and erpsync's helpers
    assert all(not s.endswith(("$$", ";")) for s in statements)


def test_cli_install_uninstall_and_print(server: str, tmp_path: Path) -> None:
    runner = CliRunner()
    with fresh_database(server, tmp_path) as url, open_database(url) as db:
        init_schema(db)
        result = runner.invoke(cli, ["--lang", "en", "procedures", "install", url])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == (
            f"Installed 8 procedures on {db.name}: SP_DupliquerProjet, SP_DupliquerVersion, "
            "SP_DupliquerClient, SP_DupliquerCommande, SP_DupliquerLignesCommande, SP_GenererNumero, "
            "SP_LogOperation, SP_GetEqMapping.\n"
        )
        result = runner.invoke(cli, ["--lang", "fr", "procedures", "uninstall", url])
        assert (result.exit_code, result.stdout) == (0, f"Procédures supprimées de {db.name}.\n")
        assert procedures.installed_routines(db) == ()
        result = runner.invoke(cli, ["procedures", "install", url, "--print"])
        assert result.exit_code == 0 and result.stdout == procedures.sql_text(db)
        assert procedures.installed_routines(db) == ()  # --print runs nothing
    for command in ("install", "uninstall"):
        result = runner.invoke(cli, ["procedures", command, "--help"])
        assert result.exit_code == 0 and "DB" in result.stdout and "--print" in result.stdout


# -- duplications -------------------------------------------------------------------------------


def test_deep_copy_of_a_project(erp: Database, client_conn: Connection) -> None:
    source = pick(erp, "SELECT MIN(id) FROM tb_Projet")
    before = tree(erp, "projet", source)
    counts = {t: scalar(erp, f"SELECT COUNT(*) FROM {t}") for t in ("tb_Version", "tb_Client", "tb_Commande")}

    new_id, erreur = call(client_conn, "SP_DupliquerProjet", source, "admin").outs
    assert erreur == 0 and isinstance(new_id, int) and new_id != source

    assert tree(erp, "projet", new_id) == before == tree(erp, "projet", source)
    num = str(scalar(erp, "SELECT NumProjet FROM tb_Projet WHERE id = :id", id=new_id))
    assert re.fullmatch(rf"PRJ-{YEAR}-\d{{5}}", num)
    codes = [
        str(c)
        for c in client_conn.execute(
            text(
                "SELECT cl.Code FROM tb_Client cl JOIN tb_Version v ON v.id = cl.fkVersion "
                "WHERE v.fkProjet = :p"
            ),
            {"p": new_id},
        ).scalars()
    ]
    assert codes and all(re.fullmatch(r"CLI-\d{5}", c) for c in codes)
    assert scalar(erp, "SELECT COUNT(*) FROM tb_Commande WHERE NumCommande LIKE :n", n=f"CMD-{YEAR}-%") > 0  # type: ignore[operator]

    # The run and its id maps, in erpsync's tables and in the session's mapping tables.
    run = client_conn.execute(
        text(
            "SELECT run_id, level, source_table, source_id, new_id, deep, user_login, status "
            "FROM erpsync_dup_run"
        )
    ).one()
    assert tuple(run)[1:] == ("projet", "tb_Projet", source, new_id, 1, "admin", "done")
    mapped = dict(
        client_conn.execute(
            text("SELECT table_name, COUNT(*) FROM erpsync_dup_map WHERE run_id = :r GROUP BY table_name"),
            {"r": run.run_id},
        ).all()
    )
    copied = {t: int(scalar(erp, f"SELECT COUNT(*) FROM {t}")) - int(n) for t, n in counts.items()}  # type: ignore[call-overload]
    assert mapped == {"tb_Projet": 1, **copied}
    eq_version = sorted(client_conn.execute(text("SELECT idPrev, idNext FROM EqVersion")).all())
    saved = sorted(
        client_conn.execute(
            text(
                "SELECT old_id, new_id FROM erpsync_dup_map WHERE run_id = :r AND table_name = 'tb_Version'"
            ),
            {"r": run.run_id},
        ).all()
    )
    assert eq_version == saved and len(saved) == copied["tb_Version"]

    lines = len(before)
    assert logs(erp)[-1] == (
        "DUPLICATION_PROJET",
        "tb_Projet",
        source,
        new_id,
        f"OK: run {run.run_id}, {1 + sum(copied.values()) + lines} rows in 5 tables",
        1,
        "admin",
    )


def test_version_copied_into_another_project(erp: Database, client_conn: Connection) -> None:
    version = pick(erp, "SELECT MIN(id) FROM tb_Version")
    target = pick(erp, "SELECT MAX(id) FROM tb_Projet")
    assert scalar(erp, PARENT["version"], id=version) != target
    before = tree(erp, "version", version)

    new_id, erreur = call(client_conn, "SP_DupliquerVersion", version, target, "bob").outs
    assert erreur == 0 and isinstance(new_id, int)
    assert scalar(erp, PARENT["version"], id=new_id) == target
    assert tree(erp, "version", new_id) == before == tree(erp, "version", version)
    assert logs(erp)[-1][:4] == ("DUPLICATION_VERSION", "tb_Version", version, new_id)


@pytest.mark.parametrize("level", ["client", "commande"])
def test_client_and_commande_under_the_same_or_another_parent(
    erp: Database, client_conn: Connection, level: str
) -> None:
    table = {"client": "tb_Client", "commande": "tb_Commande"}[level]
    parent_table = {"client": "tb_Version", "commande": "tb_Client"}[level]
    procedure = f"SP_Dupliquer{level.capitalize()}"
    source = pick(erp, f"SELECT MIN(id) FROM {table}")
    parent = scalar(erp, PARENT[level], id=source)
    other = pick(erp, f"SELECT MAX(id) FROM {parent_table}")
    before = tree(erp, level, source)

    same_id, erreur = call(client_conn, procedure, source, None, "carol").outs
    assert erreur == 0 and scalar(erp, PARENT[level], id=same_id) == parent
    other_id, erreur = call(client_conn, procedure, source, other, "carol").outs
    assert erreur == 0 and scalar(erp, PARENT[level], id=other_id) == other
    for copy in (same_id, other_id):
        assert isinstance(copy, int)
        assert tree(erp, level, copy) == before
    number = "Code" if level == "client" else "NumCommande"
    numbers = {
        scalar(erp, f"SELECT {number} FROM {table} WHERE id = :id", id=i) for i in (source, same_id, other_id)
    }
    assert len(numbers) == 3  # each copy has a number of its own
    if level == "commande":  # MontantHT is copied as is
        amounts = {
            scalar(erp, "SELECT MontantHT FROM tb_Commande WHERE id = :id", id=i) for i in (source, other_id)
        }
        assert len(amounts) == 1


def test_lines_of_a_commande_into_another(erp: Database, client_conn: Connection) -> None:
    source = pick(erp, "SELECT MIN(id) FROM tb_Commande")
    target = pick(erp, "SELECT MAX(id) FROM tb_Commande")
    line = (
        "SELECT NumLigne, Reference, Designation, Quantite, PrixUnitaire FROM tb_LigneCommande "
        "WHERE fkCommande = :c"
    )
    with erp.connect() as conn:
        source_lines = sorted(conn.execute(text(line), {"c": source}).all())
        target_lines = sorted(conn.execute(text(line), {"c": target}).all())
    count, erreur = call(client_conn, "SP_DupliquerLignesCommande", source, target, "dave").outs
    assert (count, erreur) == (len(source_lines), 0)
    with erp.connect() as conn:
        assert sorted(conn.execute(text(line), {"c": target}).all()) == sorted(source_lines + target_lines)
    assert logs(erp)[-1][:6] == (
        "DUPLICATION_LIGNESCOMMANDE",
        "tb_LigneCommande",
        source,
        target,
        f"OK: {count} lines copied into tb_Commande {target}",
        1,
    )


# -- refusals and failures ----------------------------------------------------------------------

INVALID_CALLS = [
    ("SP_DupliquerProjet", [None, "u"], "p_IdSource = NULL is not the id of a tb_Projet row"),
    ("SP_DupliquerProjet", [0, "u"], "p_IdSource = 0 is not the id of a tb_Projet row"),
    ("SP_DupliquerProjet", [-3, "u"], "p_IdSource = -3 is not the id of a tb_Projet row"),
    ("SP_DupliquerProjet", [999999, "u"], "p_IdSource = 999999 is not the id of a tb_Projet row"),
    ("SP_DupliquerVersion", [999999, None, "u"], "p_IdSource = 999999 is not the id of a tb_Version row"),
    ("SP_DupliquerVersion", [1, 999999, "u"], "p_IdProjetCible = 999999 is not the id of a tb_Projet row"),
    ("SP_DupliquerClient", [None, None, "u"], "p_IdSource = NULL is not the id of a tb_Client row"),
    ("SP_DupliquerClient", [1, 999999, "u"], "p_IdVersionCible = 999999 is not the id of a tb_Version row"),
    ("SP_DupliquerCommande", [0, None, "u"], "p_IdSource = 0 is not the id of a tb_Commande row"),
    ("SP_DupliquerCommande", [1, 999999, "u"], "p_IdClientCible = 999999 is not the id of a tb_Client row"),
    ("SP_DupliquerLignesCommande", [999999, 1, "u"], "p_IdCommandeSource = 999999 is not the id"),
    ("SP_DupliquerLignesCommande", [1, 999999, "u"], "p_IdCommandeCible = 999999 is not the id"),
]


def test_invalid_ids_are_refused_and_nothing_is_written(erp: Database, client_conn: Connection) -> None:
    before = snapshot(erp)
    for name, args, message in INVALID_CALLS:
        result = call(client_conn, name, *args)
        assert result.outs == (None, 1), name
        assert any(f"{name}: {message}" in w and "nothing was copied" in w for w in result.warnings), (
            name,
            result.warnings,
        )
    assert snapshot(erp) == before


FAILING_TRIGGER = {
    "mariadb": [
        "CREATE TRIGGER erpsync_test_boom BEFORE INSERT ON tb_LigneCommande FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom: no new lines today'"
    ],
    "postgresql": [
        "CREATE FUNCTION erpsync_test_boom() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'boom: no new lines today'; END $$",
        "CREATE TRIGGER erpsync_test_boom BEFORE INSERT ON tb_LigneCommande "
        "FOR EACH ROW EXECUTE FUNCTION erpsync_test_boom()",
    ],
}


def add_failing_trigger(db: Database) -> None:
    """Make every insert into tb_LigneCommande, the deepest level, fail."""
    with db.begin() as conn:
        for statement in FAILING_TRIGGER[db.dialect.name]:
            conn.execution_options(no_parameters=True).exec_driver_sql(statement)


def test_failure_at_the_deepest_level_writes_nothing_but_the_journal(
    erp: Database, client_conn: Connection, server: str
) -> None:
    source = pick(erp, "SELECT MIN(id) FROM tb_Projet")
    add_failing_trigger(erp)
    before = snapshot(erp)

    if server == "mariadb":  # EXIT HANDLER: ROLLBACK, journal, RESIGNAL
        with pytest.raises(DBAPIError, match="boom: no new lines today"):
            call(client_conn, "SP_DupliquerProjet", source, "eve")
    else:  # the subtransaction is rolled back; p_erreur = 1 and a WARNING
        result = call(client_conn, "SP_DupliquerProjet", source, "eve")
        assert result.outs == (None, 1)
        assert any("SP_DupliquerProjet: boom: no new lines today" in w for w in result.warnings)

    after = snapshot(erp)
    journal = after.pop("tb_logs")
    assert after == {k: v for k, v in before.items() if k != "tb_logs"}  # counters included
    assert len(journal) == len(before["tb_logs"]) + 1
    failure = logs(erp)[-1]
    assert failure[:4] == ("DUPLICATION_PROJET", "tb_Projet", source, -1)
    assert "boom: no new lines today" in str(failure[4])
    assert failure[5:] == (0, "eve")


def test_inside_the_callers_transaction(erp: Database, server: str) -> None:
    """No COMMIT of its own: a success is undone with the caller's rollback; a failure undoes
    only the procedure's own work and leaves the caller's transaction to the caller."""
    source = pick(erp, "SELECT MIN(id) FROM tb_Commande")
    before = snapshot(erp)
    with erp.engine.connect() as conn:
        conn.execute(text("INSERT INTO tb_Utilisateur (Login, Nom) VALUES ('tx_user', 'Caller')"))
        new_id, erreur = call(conn, "SP_DupliquerCommande", source, None, "tx").outs
        assert erreur == 0 and isinstance(new_id, int)
        conn.rollback()
    assert snapshot(erp) == before

    add_failing_trigger(erp)
    with erp.engine.connect() as conn:
        conn.execute(text("INSERT INTO tb_Utilisateur (Login, Nom) VALUES ('tx_user', 'Caller')"))
        if server == "mariadb":
            with pytest.raises(DBAPIError, match="boom"):
                call(conn, "SP_DupliquerCommande", source, None, "tx")
        else:
            assert call(conn, "SP_DupliquerCommande", source, None, "tx").outs == (None, 1)
        conn.commit()  # the caller keeps its own work and the failure row
    assert scalar(erp, "SELECT COUNT(*) FROM tb_Utilisateur WHERE Login = 'tx_user'") == 1
    assert scalar(erp, "SELECT COUNT(*) FROM tb_Commande") == len(before["tb_commande"])
    assert logs(erp)[-1][:4] == ("DUPLICATION_COMMANDE", "tb_Commande", source, -1)


# -- utilities ----------------------------------------------------------------------------------


def test_get_eq_mapping_sees_procedure_and_python_runs(erp: Database, client_conn: Connection) -> None:
    source = pick(erp, "SELECT MIN(id) FROM tb_Projet")
    client = pick(
        erp,
        "SELECT MIN(cl.id) FROM tb_Client cl JOIN tb_Version v ON v.id = cl.fkVersion "
        f"WHERE v.fkProjet = {source}",
    )
    call(client_conn, "SP_DupliquerProjet", source, "a")
    in_session = client_conn.execute(
        text("SELECT idNext FROM EqClient WHERE idPrev = :c"), {"c": client}
    ).scalar()
    assert call(client_conn, "SP_GetEqMapping", "EqClient", client).outs == (in_session, 1)
    assert call(client_conn, "SP_GetEqMapping", "tb_client", client).outs == (in_session, 1)
    assert call(client_conn, "SP_GetEqMapping", "EqClient", 999999).outs == (None, 0)
    first_run = int(scalar(erp, "SELECT MAX(run_id) FROM erpsync_dup_run"))  # type: ignore[arg-type]
    assert lookup(erp, first_run, "EqClient", client) == in_session  # Python reads the procedures' map
    assert any(run.run_id == first_run and run.level == "projet" for run in list_runs(erp))
    with pytest.raises(InvalidArgument, match="stored procedure"):  # no fingerprints to undo it safely
        undo(erp, first_run)

    # A later duplication in Python: other sessions see it; this session still sees its own run.
    result = duplicate(erp, "projet", source, user="py")
    assert result.run_id is not None
    by_python = lookup(erp, result.run_id, "EqClient", client)
    assert by_python != in_session
    assert call(client_conn, "SP_GetEqMapping", "EqClient", client).outs == (in_session, 1)
    with erp.engine.connect() as other:
        other = other.execution_options(isolation_level="AUTOCOMMIT")
        assert call(other, "SP_GetEqMapping", "EqClient", client).outs == (by_python, 1)
        projet = call(other, "SP_GetEqMapping", "EqProjet", source).outs
        assert projet == (result.new_id, 1)

    with pytest.raises(DBAPIError, match="unknown mapping table 'EqNothing'"):
        call(client_conn, "SP_GetEqMapping", "EqNothing", 1)


def test_numbers_come_from_the_same_series_as_python(erp: Database, client_conn: Connection) -> None:
    first = generate(erp, "PROJET")
    (second,) = call(client_conn, "SP_GenererNumero", "PROJET", 0).outs
    third = generate(erp, "PROJET")
    n = int(first.rsplit("-", 1)[1])
    assert (first, second, third) == tuple(f"PRJ-{YEAR}-{i:05d}" for i in (n, n + 1, n + 2))
    (code,) = call(client_conn, "SP_GenererNumero", "CLIENT", 1).outs
    assert re.fullmatch(r"CLI-\d{5}", str(code))

    # p_InTransaction = 1 inside a transaction: the number is given back if it rolls back.
    with erp.engine.connect() as conn:
        (drawn,) = call(conn, "SP_GenererNumero", "COMMANDE", 1).outs
        conn.rollback()
    (again,) = call(client_conn, "SP_GenererNumero", "COMMANDE", 1).outs
    assert drawn == again

    with pytest.raises(DBAPIError, match="unknown number type 'FACTURE'"):
        call(client_conn, "SP_GenererNumero", "FACTURE", 0)


def test_log_operation(erp: Database, client_conn: Connection) -> None:
    call(client_conn, "SP_LogOperation", "DUPLICATION_CLIENT", "tb_Client", 1, 42, "OK", 1, "admin")
    call(client_conn, "SP_LogOperation", "DUPLICATION_CLIENT", "tb_Client", 1, -1, "Erreur FK", 0, "admin")
    assert logs(erp)[-2:] == [
        ("DUPLICATION_CLIENT", "tb_Client", 1, 42, "OK", 1, "admin"),
        ("DUPLICATION_CLIENT", "tb_Client", 1, -1, "Erreur FK", 0, "admin"),
    ]


# -- the procedures and the Python engine agree ---------------------------------------------------


def test_procedures_and_python_engine_give_the_same_copies(erp: Database, client_conn: Connection) -> None:
    projet = pick(erp, "SELECT MIN(id) FROM tb_Projet")
    cases = [
        ("projet", projet, None),
        ("version", pick(erp, "SELECT MIN(id) FROM tb_Version"), pick(erp, "SELECT MAX(id) FROM tb_Projet")),
        ("client", pick(erp, "SELECT MAX(id) FROM tb_Client"), None),
        (
            "commande",
            pick(erp, "SELECT MIN(id) FROM tb_Commande"),
            pick(erp, "SELECT MAX(id) FROM tb_Client"),
        ),
    ]
    for level, source, into in cases:
        before = counters(client_conn)
        python = duplicate(erp, level, source, into=into, user="same")
        middle = counters(client_conn)
        args: list[object] = [source] if level == "projet" else [source, into]
        new_id, erreur = call(client_conn, f"SP_Dupliquer{level.capitalize()}", *args, "same").outs
        after = counters(client_conn)
        assert erreur == 0 and python.new_id is not None and isinstance(new_id, int)

        # The same copies, under the same parent.
        assert tree(erp, level, new_id) == tree(erp, level, python.new_id) == tree(erp, level, source)
        if level != "projet":
            assert scalar(erp, PARENT[level], id=new_id) == scalar(erp, PARENT[level], id=python.new_id)
        # The same quantity of numbers drawn from the one series of each type.
        assert {k: middle[k] - before.get(k, 0) for k in middle} == {k: after[k] - middle[k] for k in after}
        # The same run record and id maps (run ids and new ids aside).
        runs = client_conn.execute(
            text(
                "SELECT r.level, r.source_table, r.source_id, r.deep, r.user_login, r.status, m.table_name, "
                "COUNT(*) FROM erpsync_dup_run r JOIN erpsync_dup_map m ON m.run_id = r.run_id "
                "WHERE r.run_id IN (:a, :b) GROUP BY r.run_id, r.level, r.source_table, r.source_id, r.deep, "
                "r.user_login, r.status, m.table_name ORDER BY r.run_id, m.table_name"
            ),
            {"a": python.run_id, "b": scalar(erp, "SELECT MAX(run_id) FROM erpsync_dup_run")},
        ).all()
        half = len(runs) // 2
        assert half and runs[:half] == runs[half:]
        # The same journal rows (the run id in the message aside).
        *_, by_python, by_sql = logs(erp)
        assert by_python[:3] == by_sql[:3] and by_python[5:] == by_sql[5:]
        assert re.sub(r"run \d+", "run N", str(by_python[4])) == re.sub(r"run \d+", "run N", str(by_sql[4]))


def counters(conn: Connection) -> dict[str, int]:
    """This year's numbering counters (and the yearless one of CLIENT)."""
    rows = conn.execute(
        text("SELECT TypeNumero, DernierNumero FROM tb_Numerotation WHERE Annee IN (0, :y)"), {"y": YEAR}
    )
    return {str(kind): int(last) for kind, last in rows}


CLIENTS = {"mariadb": "mysql", "postgresql": "psql"}


@pytest.mark.parametrize("server", SERVERS)
def test_a_dba_installs_the_printed_sql_with_the_engines_client(server: str, tmp_path: Path) -> None:
    """`erpsync procedures install DB --print | mysql DB` (or psql) works, and erpsync reads its runs."""
    program = shutil.which(CLIENTS[server])
    if program is None:
        pytest.skip(f"{CLIENTS[server]} is not installed")
    with fresh_database(server, tmp_path) as url, open_database(url) as db:
        init_schema(db)
        fill(db, scale=1, seed=0)
        script = CliRunner().invoke(cli, ["procedures", "install", url, "--print"]).stdout
        u = make_url(url)
        if server == "mariadb":
            command = [
                program,
                "-h",
                str(u.host),
                "-P",
                str(u.port or 3306),
                "-u",
                str(u.username),
                str(u.database),
            ]
        else:
            command = [
                program,
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-h",
                str(u.host),
                "-p",
                str(u.port or 5432),
                "-U",
                str(u.username),
                "-d",
                str(u.database),
                "-f",
                "-",
            ]
        subprocess.run(command, input=script, text=True, check=True, capture_output=True)
        assert procedures.installed_routines(db) == ROUTINES

        source = pick(db, "SELECT MIN(id) FROM tb_Commande")
        with db.engine.connect() as conn:
            new_id, erreur = call(
                conn.execution_options(isolation_level="AUTOCOMMIT"),
                "SP_DupliquerCommande",
                source,
                None,
                "dba",
            ).outs
        assert erreur == 0
        run = int(scalar(db, "SELECT MAX(run_id) FROM erpsync_dup_run"))  # type: ignore[arg-type]
        assert lookup(db, run, "EqCommande", source) == new_id


def test_concurrent_duplications_get_their_own_ids_and_numbers(erp: Database) -> None:
    """Sessions duplicating at the same moment: every copy complete, every id map right."""
    with erp.connect() as conn:
        projets = [int(p) for p in conn.execute(text("SELECT id FROM tb_Projet")).scalars()]
    barrier = threading.Barrier(len(projets))
    results: dict[int, tuple[object, ...] | str] = {}

    def work(projet: int) -> None:
        try:
            with erp.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                barrier.wait()
                results[projet] = call(conn, "SP_DupliquerProjet", projet, "t").outs
        except Exception as exc:  # reported below, with the others
            results[projet] = str(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in projets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for projet, outcome in results.items():
        assert isinstance(outcome, tuple) and outcome[1] == 0, outcome
        assert tree(erp, "projet", int(outcome[0])) == tree(erp, "projet", projet)  # type: ignore[call-overload]
    for table, columns in (("tb_Client", "RaisonSociale, Email"), ("tb_Commande", "DateCommande, MontantHT")):
        pairs = [c.strip() for c in columns.split(",")]
        differ = " OR ".join(f"o.{c} <> n.{c}" for c in pairs)
        wrong = scalar(
            erp,
            f"SELECT COUNT(*) FROM erpsync_dup_map m JOIN {table} o ON o.id = m.old_id "
            f"JOIN {table} n ON n.id = m.new_id WHERE m.table_name = '{table}' AND ({differ})",
        )
        assert wrong == 0


def test_a_project_without_versions(erp: Database, client_conn: Connection) -> None:
    with erp.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tb_Projet (NumProjet, Libelle, DateCreation) "
                "VALUES ('PRJ-VIDE', 'Projet vide', '2026-01-02 03:04:05')"
            )
        )
    empty = pick(erp, "SELECT id FROM tb_Projet WHERE NumProjet = 'PRJ-VIDE'")
    new_id, erreur = call(client_conn, "SP_DupliquerProjet", empty, "z").outs
    assert erreur == 0 and isinstance(new_id, int)
    assert tree(erp, "projet", new_id) == tree(erp, "projet", empty)
    assert str(logs(erp)[-1][4]).endswith(", 1 rows in 5 tables")

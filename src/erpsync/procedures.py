"""The specification's stored procedures (SP_DupliquerProjet …), installed on MariaDB and PostgreSQL.

The SQL lives in ``erpsync/sql/`` as files a database administrator can read
and run by hand; ``sql_text`` returns them and ``install`` / ``uninstall`` run
them. SQLite has no stored procedures: there, ``erpsync duplicate`` does the
same job from Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from sqlalchemy import Connection, text

from erpsync.db import Database, Target, open_database, parse_url
from erpsync.dialects import Dialect, dialect_for
from erpsync.duplicate.runs import ensure_run_tables
from erpsync.errors import ErpSyncError, UnsupportedEngine
from erpsync.schema import require_schema

Action = Literal["install", "uninstall"]

# The procedures users call, in the specification's spelling.
ROUTINES = (
    "SP_DupliquerProjet",
    "SP_DupliquerVersion",
    "SP_DupliquerClient",
    "SP_DupliquerCommande",
    "SP_DupliquerLignesCommande",
    "SP_GenererNumero",
    "SP_LogOperation",
    "SP_GetEqMapping",
)

MARIADB_MINIMUM = (10, 5)


class NoStoredProcedures(ErpSyncError):
    """The engine has no stored procedures (SQLite)."""


@dataclass(frozen=True)
class ProceduresResult:
    """What ``install`` or ``uninstall`` left in the database: the spec's routines present."""

    database: str
    routines: tuple[str, ...]


def sql_text(target: Database | Dialect | Target, action: Action = "install") -> str:
    """The SQL script that installs (or removes) the procedures on the engine of ``target``.

    ``target`` may be an open database, a dialect, or a URL (no connection is made).
    """
    dialect = _dialect(target)
    name = f"{dialect.name}_{'procedures' if action == 'install' else 'uninstall'}.sql"
    return resources.files("erpsync").joinpath("sql", name).read_text(encoding="utf-8")


def install(target: Database | Target) -> ProceduresResult:
    """Install the procedures, replacing those already there (running it twice changes nothing).

    ``target`` is an open database or one to open (its engine is checked first,
    so SQLite is refused before its file is looked at). On PostgreSQL the whole
    script runs in one transaction. On MariaDB each CREATE commits by itself
    (MariaDB's DDL is not transactional); every statement replaces its routine
    atomically, so a rerun repairs an interrupted install.
    """
    with _opened(target) as db:
        require_schema(db)
        if db.dialect.name == "mariadb":
            _check_mariadb(db)
        ensure_run_tables(
            db
        )  # erpsync's own definition wins; the script's CREATE … IF NOT EXISTS is for DBAs
        _run(db, sql_text(db, "install"))
        return ProceduresResult(db.name, installed_routines(db))


def uninstall(target: Database | Target) -> ProceduresResult:
    """Remove the procedures (nothing happens if they are not there).

    The record of past duplications (``erpsync_dup_run``, ``erpsync_dup_map``) is kept.
    """
    with _opened(target) as db:
        _run(db, sql_text(db, "uninstall"))
        return ProceduresResult(db.name, installed_routines(db))


def installed_routines(db: Database) -> tuple[str, ...]:
    """The routines of ``ROUTINES`` present in the database, in the specification's spelling."""
    if db.dialect.name == "mariadb":
        query = text(
            "SELECT ROUTINE_NAME FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE = 'PROCEDURE'"
        )
    else:
        query = text(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.prokind = 'p'"
        )
    with db.connect() as conn:
        present = {str(name).lower() for name in conn.execute(query).scalars()}
    return tuple(name for name in ROUTINES if name.lower() in present)


def mariadb_statements(script: str) -> list[str]:
    """The statements of a MariaDB script, as the ``mysql`` client splits them.

    Honours ``DELIMITER`` lines (a routine body ends at ``$$``, not at its first
    ``;``) and skips comment lines between statements.
    """
    delimiter = ";"
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("--")):
            continue
        if not current and stripped.upper().startswith("DELIMITER "):
            delimiter = stripped.split()[1]
            continue
        if stripped.endswith(delimiter):
            current.append(line.rstrip()[: -len(delimiter)])
            statements.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


@contextmanager
def _opened(target: Database | Target) -> Iterator[Database]:
    """``target`` itself if open, else opened (after checking its engine) and closed after."""
    if isinstance(target, Database):
        _dialect(target)
        yield target
        return
    _dialect(target)
    with open_database(target) as db:
        yield db


def _dialect(target: Database | Dialect | Target) -> Dialect:
    if isinstance(target, Database):
        dialect = target.dialect
    elif isinstance(target, Dialect):
        dialect = target
    else:
        dialect = dialect_for(parse_url(target))
    if dialect.name == "sqlite":
        raise NoStoredProcedures(
            "SQLite has no stored procedures, so SP_DupliquerProjet and the others cannot be installed",
            "duplicate from erpsync instead, e.g. erpsync duplicate DB projet 7 (same copy, same journal)",
        )
    if dialect.name not in ("mariadb", "postgresql"):
        raise UnsupportedEngine(
            "erpsync does not support {scheme} databases",
            "use SQLite, MariaDB (mysql+pymysql://…) or PostgreSQL (postgresql+psycopg://…)",
            scheme=dialect.name,
        )
    return dialect


def _check_mariadb(db: Database) -> None:
    """Refuse MySQL and old MariaDB before any statement runs (they would fail half-way)."""
    with db.connect() as conn:
        version = str(conn.execute(text("SELECT VERSION()")).scalar_one())
    numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:2] if part.isdigit())
    if "mariadb" not in version.lower() or numbers < MARIADB_MINIMUM:
        raise UnsupportedEngine(
            "the procedures need MariaDB {minimum} or later; this server is {version}",
            "use erpsync duplicate, which works on any MariaDB or MySQL server",
            minimum=".".join(map(str, MARIADB_MINIMUM)),
            version=version,
        )


def _run(db: Database, script: str) -> None:
    """Run a whole script: statement by statement on MariaDB, in one transaction on PostgreSQL."""
    with db.begin() as conn:
        if db.dialect.name == "mariadb":
            for statement in mariadb_statements(script):
                _execute(conn, statement)
        else:
            _execute(conn, script)


def _execute(conn: Connection, sql: str) -> None:
    """Run ``sql`` as written: no parameters, so the driver leaves ``%`` in it alone."""
    conn.execution_options(no_parameters=True).exec_driver_sql(sql)

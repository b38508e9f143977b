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

from erpsync.db import Database, Target, open_database, parse_url
from erpsync.dialects import Dialect, dialect_for
from erpsync.duplicate.runs import ensure_run_tables
from erpsync.errors import ErpSyncError
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
    folder = resources.files("erpsync").joinpath("sql")
    uninstall = folder.joinpath(f"{dialect.name}_uninstall.sql").read_text(encoding="utf-8")
    if action == "uninstall":
        return uninstall
    # A script may include the uninstall one with psql's \ir, for a DBA; erpsync inlines it.
    script = folder.joinpath(f"{dialect.name}_procedures.sql").read_text(encoding="utf-8")
    return script.replace(f"\\ir {dialect.name}_uninstall.sql", uninstall)


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
        with db.connect() as conn:
            db.dialect.check_procedures_supported(conn)
        # erpsync's own definition of its run tables wins; the script's CREATE … IF NOT EXISTS
        # is there for a DBA who runs it by hand.
        ensure_run_tables(db)
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
    with db.connect() as conn:
        present = db.dialect.stored_procedures(conn)
    return tuple(name for name in ROUTINES if name.lower() in present)


@contextmanager
def _opened(target: Database | Target) -> Iterator[Database]:
    """``target`` itself if open, else opened (after checking its engine) and closed after."""
    _dialect(target)
    if isinstance(target, Database):
        yield target
        return
    with open_database(target) as db:
        yield db


def _dialect(target: Database | Dialect | Target) -> Dialect:
    if isinstance(target, Database):
        dialect = target.dialect
    elif isinstance(target, Dialect):
        dialect = target
    else:
        dialect = dialect_for(parse_url(target))
    if not dialect.has_stored_procedures:
        raise NoStoredProcedures(
            "SQLite has no stored procedures, so SP_DupliquerProjet and the others cannot be installed",
            "duplicate from erpsync instead, e.g. erpsync duplicate DB projet 7 (same copy, same journal)",
        )
    return dialect


def _run(db: Database, script: str) -> None:
    """Run a whole script in one transaction (on MariaDB each CREATE commits by itself anyway).

    No parameters are passed, so the driver leaves the ``%`` of the SQL alone.
    """
    with db.begin() as conn:
        for statement in db.dialect.script_statements(script):
            conn.execution_options(no_parameters=True).exec_driver_sql(statement)

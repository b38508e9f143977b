"""Every duplication run, saved: its old → new id maps, its steps, and how to undo it.

``erpsync_dup_map`` holds the spec's EqVersion, EqClient, EqCommande… for every
run (table_name says which), and doubles as the mapping table the copy joins
on, so saving it costs nothing extra. Leaf tables that nothing copied refers
to (the order lines) keep no map: their copies are found through their
parent's map. ``erpsync_dup_step`` records each table copied with a
fingerprint of the copies, so ``undo`` can tell whether they changed since.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    delete,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ColumnElement

from erpsync import journal
from erpsync.db import Database
from erpsync.duplicate.plan import EQ_NAMES, LEVELS, find_table
from erpsync.errors import ChangedSinceRun, DatabaseError, InvalidArgument, NotFound
from erpsync.schema import ERP_TABLES, reflect_application

DONE = "done"
UNDONE = "undone"


@dataclass(frozen=True)
class RunTables:
    """erpsync's own duplication tables, as stored by one engine."""

    metadata: MetaData
    run: Table
    map: Table
    step: Table


def run_tables() -> RunTables:
    """The run, map and step tables (their names are lower case on every engine)."""
    metadata = MetaData()
    run = Table(
        "erpsync_dup_run",
        metadata,
        Column("run_id", Integer, primary_key=True),
        Column("level", String(20), nullable=False),
        Column("source_table", String(64), nullable=False),
        Column("source_id", Integer, nullable=False),
        Column("new_id", Integer),
        Column("deep", SmallInteger, nullable=False),
        Column("user_login", String(50)),
        Column("started_at", DateTime, nullable=False),
        Column("status", String(20), nullable=False),
    )
    id_map = Table(
        "erpsync_dup_map",
        metadata,
        Column("run_id", Integer, primary_key=True, autoincrement=False),
        Column("table_name", String(64), primary_key=True),
        Column("old_id", Integer, primary_key=True, autoincrement=False),
        Column("new_id", Integer, nullable=False),
        Index("ix_erpsync_dup_map_new", "run_id", "table_name", "new_id"),
        mysql_engine="InnoDB",
    )
    step = Table(
        "erpsync_dup_step",
        metadata,
        Column("run_id", Integer, primary_key=True, autoincrement=False),
        Column("step_no", Integer, primary_key=True, autoincrement=False),
        Column("table_name", String(64), nullable=False),
        Column("parent_table", String(64)),
        Column("parent_column", String(64)),
        Column("mapped", SmallInteger, nullable=False),
        Column("row_count", Integer, nullable=False),
        Column("fingerprint", String(4000), nullable=False),
        mysql_engine="InnoDB",
    )
    return RunTables(metadata, run, id_map, step)


RUNS = run_tables()


def ensure_run_tables(db: Database) -> None:
    """Create erpsync's duplication tables if missing (before the copy's transaction:
    DDL would commit it on MariaDB)."""
    for attempt in range(1, 4):
        try:
            with db.begin() as conn:
                RUNS.metadata.create_all(conn, checkfirst=True)
            return
        except DatabaseError:
            # Another process created some of them at the same moment: check again, create the rest.
            if attempt == 3:
                raise


def canonical(name: str) -> str:
    """The spec's spelling of a reference table name (PostgreSQL stores it lower case)."""
    return next((spec for spec in ERP_TABLES if spec.lower() == name.lower()), name)


def copies_of(
    table: Table, run_id: int, mapped: bool, parent: str | None, column: str | None
) -> ColumnElement[bool]:
    """The rows of ``table`` that run ``run_id`` created."""
    m = RUNS.map
    if mapped:
        (pk,) = table.primary_key.columns
        ids = select(m.c.new_id).where(m.c.run_id == run_id, m.c.table_name == canonical(table.name))
        return pk.in_(ids)
    assert parent is not None and column is not None
    parents = select(m.c.new_id).where(m.c.run_id == run_id, m.c.table_name == parent)
    return table.c[column].in_(parents)


def fingerprint(conn: Connection, table: Table, where: ColumnElement[bool]) -> str:
    """Row count, sums of the numeric columns and total length of the text columns of some rows.

    Measured right after a copy and again before undoing it: a difference means
    rows were added, deleted or edited since (dates and keys are not included).
    """
    aggregates: list[ColumnElement[Any]] = [func.count()]
    for column in table.columns:
        if column.primary_key or column.foreign_keys:
            continue
        if isinstance(column.type, sqltypes.Numeric | sqltypes.Integer):
            aggregates.append(func.sum(column))
        elif isinstance(column.type, sqltypes.String):
            aggregates.append(func.sum(func.length(column)))
    row = conn.execute(select(*aggregates).select_from(table).where(where)).one()
    return json.dumps([None if v is None else f"{Decimal(str(v)):.4f}" for v in row])


@dataclass(frozen=True)
class Run:
    """One recorded duplication."""

    run_id: int
    level: str
    source_table: str
    source_id: int
    new_id: int | None
    deep: bool
    user: str | None
    started_at: datetime
    status: str

    @classmethod
    def from_row(cls, row: Any) -> Run:
        return cls(
            row.run_id,
            row.level,
            row.source_table,
            row.source_id,
            row.new_id,
            bool(row.deep),
            row.user_login,
            row.started_at,
            row.status,
        )


def _have_run_tables(conn: Connection) -> bool:
    return all(inspect(conn).has_table(name) for name in RUNS.metadata.tables)


def list_runs(db: Database) -> list[Run]:
    """Every recorded duplication, newest first."""
    r = RUNS.run
    with db.connect() as conn:
        if not _have_run_tables(conn):
            return []
        rows = conn.execute(select(r).order_by(r.c.run_id.desc())).all()
    return [Run.from_row(row) for row in rows]


def map_table_name(name: str) -> str:
    """A table as users name it in a map query: EqClient, tb_Client or the level client."""
    lowered = name.lower()
    for eq, table in EQ_NAMES.items():
        if lowered == eq.lower():
            return table
    return LEVELS.get(lowered, canonical(name))


def lookup(db: Database, run_id: int, table: str, old_id: int) -> int:
    """The id run ``run_id`` gave to the copy of ``table`` row ``old_id`` (SP_GetEqMapping)."""
    name = map_table_name(table)
    m = RUNS.map
    with db.connect() as conn:
        if _get_run(conn, run_id).status != DONE:  # its ids may belong to later copies now
            raise InvalidArgument(
                "run {run} was undone: its copies no longer exist",
                "list runs with: erpsync duplicate runs DB",
                run=run_id,
            )
        new_id = conn.execute(
            select(m.c.new_id).where(m.c.run_id == run_id, m.c.table_name == name, m.c.old_id == old_id)
        ).scalar()
    if new_id is None:
        raise NotFound(
            "run {run} did not copy {table} row {id}",
            "list what a run copied with: erpsync duplicate runs DB",
            run=run_id,
            table=name,
            id=old_id,
        )
    return int(new_id)


def undo(db: Database, run_id: int, *, force: bool = False, user: str | None = None) -> dict[str, int]:
    """Delete exactly the rows run ``run_id`` created, children first, in one transaction.

    Refuses if those rows changed since the run (their fingerprint differs),
    unless ``force``. Returns the rows deleted per table.
    """
    s = RUNS.step
    with db.begin() as conn:
        run = _get_run(conn, run_id)
        if run.status != DONE:
            raise InvalidArgument(
                "run {run} was already undone", "list runs with: erpsync duplicate runs DB", run=run_id
            )
        steps = conn.execute(select(s).where(s.c.run_id == run_id).order_by(s.c.step_no)).all()
        if not steps:
            raise InvalidArgument(
                "run {run} has no recorded steps (it was made by a stored procedure)",
                "delete its rows by hand, using: erpsync duplicate map DB {run} TABLE OLD_ID",
                run=run_id,
            )
        metadata = reflect_application(conn)
        selections = []
        for step in steps:
            table = find_table(metadata, step.table_name)
            where = copies_of(table, run_id, bool(step.mapped), step.parent_table, step.parent_column)
            selections.append((step, table, where))
        changed = [
            step.table_name
            for step, table, where in selections
            if fingerprint(conn, table, where) != step.fingerprint
        ]
        if changed and not force:
            raise ChangedSinceRun(
                "the copies made by run {run} changed since in {tables}; nothing was deleted",
                "check them, then undo anyway with --force",
                run=run_id,
                tables=", ".join(changed),
            )
        deleted = {}
        for step, table, where in reversed(selections):
            deleted[step.table_name] = conn.execute(delete(table).where(where)).rowcount
        conn.execute(update(RUNS.run).where(RUNS.run.c.run_id == run_id).values(status=UNDONE))
        journal.log(
            conn,
            "ANNULATION_DUPLICATION",
            run.source_table,
            run.source_id,
            run.new_id,
            f"run {run_id}: {sum(deleted.values())} rows deleted",
            True,
            user,
        )
    return dict(reversed(list(deleted.items())))


def _get_run(conn: Connection, run_id: int) -> Run:
    r = RUNS.run
    row = conn.execute(select(r).where(r.c.run_id == run_id)).first() if _have_run_tables(conn) else None
    if row is None:
        raise NotFound("no duplication run {run}", "list runs with: erpsync duplicate runs DB", run=run_id)
    return Run.from_row(row)

"""The copy itself: a fixed number of set-based statements per table, in one transaction.

Per table of the plan: reserve a block of ids above the largest in use, write
the old → new map with ``ROW_NUMBER()`` in one ``INSERT … SELECT``, then copy
the rows in one ``INSERT … SELECT`` joining that map (new id) and the parent's
map (new parent). Leaf tables nothing refers to skip the map and let the
database number their copies. Business numbers are drawn as one block per
table from the counters and built in SQL from each row's rank.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Select, String, Table, and_, func, insert, literal, select, update
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause

from erpsync import journal, numbering
from erpsync.db import Database
from erpsync.dialects import Dialect
from erpsync.dialects.base import single_pk
from erpsync.duplicate.plan import (
    LEVELS,
    NUMBERED,
    Plan,
    Step,
    build_plan,
    find_table,
)
from erpsync.duplicate.runs import DONE, RUNS, canonical, copies_of, ensure_run_tables, fingerprint
from erpsync.errors import InvalidArgument, NotFound, SchemaMismatch
from erpsync.numbering import DEFAULT_FORMATS, NumberFormat, series_year
from erpsync.progress import ProgressCallback
from erpsync.schema import erp_tables, reflect_application


@dataclass(frozen=True)
class Numbers:
    """The business numbers given to the copies of one table."""

    column: str
    first: str
    last: str
    count: int


@dataclass
class DuplicationResult:
    """What a duplication did (or, for a dry run, would do)."""

    level: str
    source_id: int
    run_id: int | None
    new_id: int | None
    rows: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, Numbers] = field(default_factory=dict)
    dry_run: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the CLI's ``--json``)."""
        return {
            "level": self.level,
            "source_id": self.source_id,
            "run_id": self.run_id,
            "new_id": self.new_id,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "numbers": {t: n.__dict__ for t, n in self.numbers.items()},
            "seconds": round(self.seconds, 3),
        }


def duplicate(
    db: Database,
    level: str,
    source_id: int | None,
    *,
    into: int | None = None,
    deep: bool = True,
    user: str | None = None,
    edges: Mapping[str, str] | None = None,
    formats: Mapping[str, str | NumberFormat] | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    today: date | None = None,
) -> DuplicationResult:
    """Copy the ``level`` record ``source_id`` (and, if ``deep``, all its descendants).

    The copy goes under ``into`` (a parent of the level above) or under the same
    parent. One transaction: on any failure nothing is written, and the failure
    is journaled in tb_Logs afterwards. ``dry_run`` counts and writes nothing.
    ``edges`` maps a child table (or ``table.column``) to deep, shallow or skip;
    ``formats`` maps PROJET, CLIENT or COMMANDE to a number format.
    """
    started = time.perf_counter()
    fmts = {**DEFAULT_FORMATS, **_formats(formats or {})}
    today = today or date.today()
    with db.connect() as conn:
        plan, parent_column = _validate(conn, level, source_id, into, deep, edges)
    assert source_id is not None
    result = DuplicationResult(level, source_id, None, None, dry_run=dry_run)
    if dry_run:
        with db.connect() as conn:
            _dry_run(conn, db.dialect, plan, source_id, fmts, today.year, result)
        result.seconds = time.perf_counter() - started
        return result
    operation = f"DUPLICATION_{level.upper()}"
    root_parent = (parent_column, into) if into is not None else None
    ensure_run_tables(db)

    def work(conn: Connection) -> _Copier:
        copier = _Copier(conn, db.dialect, plan, source_id, fmts, today.year)
        copier.start_run(level, deep, user)
        for index, step in enumerate(plan.steps):  # a bar per level, complete once it is copied
            if progress:
                progress(canonical(step.name), 0, 1)
            copier.copy(step, root_parent if index == 0 else None)
            if progress:
                progress(canonical(step.name), 1, 1)
        copier.finish()
        journal.log(
            conn,
            operation,
            canonical(plan.root.name),
            source_id,
            copier.new_id,
            f"OK: run {copier.run_id}, {sum(copier.rows.values())} rows in {len(plan.steps)} tables",
            True,
            user,
        )
        return copier

    try:
        copier = db.run_transaction(work)
    except Exception as exc:
        with contextlib.suppress(Exception):  # the copy's own error is the one to report
            journal.log_failure(db, operation, canonical(plan.root.name), source_id, str(exc), user)
        raise
    result.run_id, result.new_id, result.numbers = copier.run_id, copier.new_id, copier.numbers
    result.rows = {canonical(s.name): copier.rows[s.name] for s in plan.steps}
    result.seconds = time.perf_counter() - started
    return result


def _formats(formats: Mapping[str, str | NumberFormat]) -> dict[str, NumberFormat]:
    out = {}
    for kind, fmt in formats.items():
        if kind.upper() not in DEFAULT_FORMATS:
            raise InvalidArgument("unknown number type {kind!r}", "use PROJET, CLIENT or COMMANDE", kind=kind)
        out[kind.upper()] = fmt if isinstance(fmt, NumberFormat) else NumberFormat(fmt)
    return out


def _validate(
    conn: Connection,
    level: str,
    source_id: int | None,
    into: int | None,
    deep: bool,
    edges: Mapping[str, str] | None,
) -> tuple[Plan, str]:
    """Check the request against the database before anything is written."""
    if level not in LEVELS:
        raise InvalidArgument(
            "unknown level {level!r}", "use one of: {levels}", level=level, levels=", ".join(LEVELS)
        )
    metadata = reflect_application(conn)
    root = find_table(metadata, LEVELS[level])
    _check_id(conn, root, source_id, None)
    names = list(LEVELS.values())
    parent_column = ""
    if into is not None:
        position = names.index(LEVELS[level])
        if position == 0:
            raise InvalidArgument(
                "--into {id}: a projet has no parent",
                "duplicate a version, client or commande to put it under another parent",
                id=into,
            )
        parent = find_table(metadata, names[position - 1])
        parent_column = next((fk.parent.name for fk in root.foreign_keys if fk.column.table is parent), "")
        if not parent_column:
            raise SchemaMismatch(
                "{table} has no foreign key to {parent}: --into cannot tell where the copy goes",
                "add the foreign key to the schema, or copy without --into",
                table=canonical(root.name),
                parent=canonical(parent.name),
            )
        _check_id(conn, parent, into, level)
    return build_plan(metadata, root.name, deep=deep, edges=edges), parent_column


def _check_id(conn: Connection, table: Any, value: int | None, child_level: str | None) -> None:
    name = canonical(table.name)
    if value is None or value < 1:
        raise InvalidArgument(
            "{table} id {id} is not valid: ids are whole numbers from 1",
            "give the id of an existing {table} row",
            table=name,
            id=value,
        )
    pk = single_pk(table)
    if conn.execute(select(pk).where(pk == value)).first() is None:
        if child_level:
            raise NotFound(
                "--into {id}: there is no {table} row with id {id}",
                "a {level} goes under a {table}: give the id of an existing one",
                table=name,
                id=value,
                level=child_level,
            )
        raise NotFound(
            "there is no {table} row with id {id}",
            "check the id, e.g. with: erpsync db summary DB",
            table=name,
            id=value,
        )


class _Copier:
    """Runs the statements of one duplication inside one transaction."""

    def __init__(
        self,
        conn: Connection,
        dialect: Dialect,
        plan: Plan,
        source_id: int,
        formats: Mapping[str, NumberFormat],
        year: int,
    ) -> None:
        self.conn, self.dialect, self.plan = conn, dialect, plan
        self.source_id, self.formats, self.year = source_id, formats, year
        self.schema = erp_tables(dialect)
        self.run_id = 0
        self.new_id: int | None = None
        self.rows: dict[str, int] = {}
        self.numbers: dict[str, Numbers] = {}

    def start_run(self, level: str, deep: bool, user: str | None) -> None:
        # The run row is the transaction's first write: on SQLite it takes the write lock
        # before any id is reserved.
        inserted = self.conn.execute(
            insert(RUNS.run).values(
                level=level,
                source_table=canonical(self.plan.root.name),
                source_id=self.source_id,
                deep=1 if deep else 0,
                user_login=user,
                started_at=datetime.now().replace(microsecond=0),
                status=DONE,
            )
        )
        key = inserted.inserted_primary_key
        assert key is not None
        self.run_id = int(key[0])
        # Hold the source row until the commit: the ERP cannot delete it half-way through the copy.
        root = self.plan.root.table
        locked = select(single_pk(root)).where(single_pk(root) == self.source_id).with_for_update(read=True)
        if self.conn.execute(locked).first() is None:
            _check_id(self.conn, root, self.source_id, None)

    def copy(self, step: Step, root_parent: tuple[str, int] | None) -> None:
        """Copy one table: a fixed number of statements, whatever the number of rows."""
        table, m, pm = step.table, RUNS.map.alias("m"), RUNS.map.alias("pm")
        name = canonical(table.name)
        selection: FromClause = table
        where: list[ColumnElement[bool]] = []
        if step.via is None:
            where.append(single_pk(table) == self.source_id)
        else:
            selection = selection.join(
                pm,
                and_(
                    pm.c.run_id == self.run_id,
                    pm.c.table_name == canonical(step.via.parent.name),
                    pm.c.old_id == step.via.column,
                ),
            )
        source = selection
        pk = single_pk(table) if step.mapped else None
        old = (
            None if pk is None else select(pk.label("old_id")).select_from(selection).where(*where).subquery()
        )
        allocated = None if old is None else self.dialect.new_ids(self.conn, table, old)
        if allocated is not None:  # ids chosen before the insert: write the map, join it
            self._write_map(table, allocated)
            source = source.join(m, and_(m.c.run_id == self.run_id, m.c.table_name == name, m.c.old_id == pk))
        rank = func.row_number().over(order_by=list(table.primary_key.columns))
        count: int | None = None
        if step.number is not None:
            count = self.conn.execute(select(func.count()).select_from(selection).where(*where)).scalar_one()
        columns: list[str] = []
        values: list[ColumnElement[Any]] = []
        for index, remap in enumerate(step.remap):
            alias = RUNS.map.alias(f"r{index}")
            source = source.outerjoin(
                alias,
                and_(
                    alias.c.run_id == self.run_id,
                    alias.c.table_name == canonical(remap.parent.name),
                    alias.c.old_id == remap.column,
                ),
            )
            columns.append(remap.column.name)
            values.append(func.coalesce(alias.c.new_id, remap.column))
        for column in table.columns:
            if column.name in columns:
                continue
            if column.primary_key and allocated is not None:
                value: ColumnElement[Any] = m.c.new_id
            elif (
                column.primary_key and len(table.primary_key) == 1 and column.autoincrement in (True, "auto")
            ):
                continue  # the database numbers the copies
            elif step.via is not None and column is step.via.column:
                value = pm.c.new_id
            elif root_parent is not None and column.name == root_parent[0]:
                value = literal(root_parent[1])
            elif step.number is not None and column is step.number[0]:
                value = self._number_expression(step, rank, int(count or 0))
            else:
                value = column
            columns.append(column.name)
            values.append(value)
        rows = select(*values).select_from(source).where(*where)
        engine_ids = pk is not None and allocated is None
        if engine_ids:
            rows = rows.order_by(pk)  # the engine gives consecutive ids in this order
        inserted = self.conn.execute(
            insert(table).from_select(columns, rows).execution_options(preserve_rowcount=True)
        )
        self.rows[table.name] = inserted.rowcount if count is None else count
        if engine_ids and old is not None:
            first = self.dialect.first_inserted_id(self.conn)
            offset = first - 1 + func.row_number().over(order_by=old.c.old_id)
            self._write_map(table, select(old.c.old_id, offset.label("new_id")))
        if step.via is None and pk is not None:
            self.new_id = int(
                self.conn.execute(
                    select(RUNS.map.c.new_id).where(
                        RUNS.map.c.run_id == self.run_id, RUNS.map.c.table_name == name
                    )
                ).scalar_one()
            )

    def _write_map(self, table: Table, ids: Select[Any]) -> None:
        """One INSERT … SELECT of the (old_id, new_id) pairs of ``table`` into the run's map."""
        pairs = ids.subquery()
        self.conn.execute(
            insert(RUNS.map).from_select(
                ["run_id", "table_name", "old_id", "new_id"],
                select(
                    literal(self.run_id),
                    literal(canonical(table.name), String),
                    pairs.c.old_id,
                    pairs.c.new_id,
                ),
            )
        )
        self.dialect.analyze(self.conn, RUNS.map)

    def _number_expression(self, step: Step, rank: ColumnElement[Any], count: int) -> ColumnElement[str]:
        assert step.number is not None
        column, kind = step.number
        fmt = self.formats[kind]
        first = (
            numbering.reserve(self.conn, self.schema, kind, series_year(fmt, self.year), count)
            if count
            else 1
        )
        prefix, width, suffix = fmt.sql_parts(self.year)
        if count:
            self.numbers[canonical(step.name)] = _numbers(
                step.name, column.name, fmt, first, count, self.year
            )
        padded = self.dialect.zero_pad(rank + (first - 1), width)
        return literal(prefix, String) + padded + literal(suffix, String)

    def finish(self) -> None:
        """Record the steps with fingerprints of the copies, and the new root id."""
        for number, step in enumerate(self.plan.steps):
            parent = canonical(step.via.parent.name) if step.via else None
            column = step.via.column.name if step.via else None
            where = copies_of(step.table, self.run_id, step.mapped, parent, column)
            self.conn.execute(
                insert(RUNS.step).values(
                    run_id=self.run_id,
                    step_no=number,
                    table_name=canonical(step.name),
                    parent_table=parent,
                    parent_column=column,
                    mapped=1 if step.mapped else 0,
                    row_count=self.rows[step.name],
                    fingerprint=fingerprint(self.conn, step.table, where),
                )
            )
        self.conn.execute(update(RUNS.run).where(RUNS.run.c.run_id == self.run_id).values(new_id=self.new_id))


def _numbers(table: str, column: str, fmt: NumberFormat, first: int, count: int, year: int) -> Numbers:
    """The numbers ``first`` … ``first + count - 1``, the column named as the spec writes it
    (``Code``, not PostgreSQL's ``code``)."""
    rule = NUMBERED.get(canonical(table))
    name = rule[0] if rule and rule[0].lower() == column.lower() else column
    return Numbers(name, fmt.render(first, year), fmt.render(first + count - 1, year), count)


def _dry_run(
    conn: Connection,
    dialect: Dialect,
    plan: Plan,
    source_id: int,
    formats: Mapping[str, NumberFormat],
    year: int,
    result: DuplicationResult,
) -> None:
    """Count what would be copied and peek at the numbers that would be drawn."""
    schema = erp_tables(dialect)
    selection: dict[str, ColumnElement[bool]] = {}
    for step in plan.steps:
        table = step.table
        if step.via is None:
            where = single_pk(table) == source_id
        else:
            parent = step.via.parent
            where = step.via.column.in_(select(single_pk(parent)).where(selection[parent.name]))
        selection[table.name] = where
        count = int(conn.execute(select(func.count()).select_from(table).where(where)).scalar_one())
        result.rows[canonical(table.name)] = count
        if step.number is not None and count:
            column, kind = step.number
            fmt = formats[kind]
            first = numbering.peek(conn, schema, kind, series_year(fmt, year))
            result.numbers[canonical(table.name)] = _numbers(table.name, column.name, fmt, first, count, year)

"""Time the stored procedure SP_DupliquerProjet on a 1,000,000-line project against the floor.

    python -m bench.procedures --lines 1000000 --engines mariadb,postgresql [--repeat 3]

For each server engine, each measurement on a fresh database holding one
project of LINES lines (``fill(scale=0, big_project=LINES)``, seed 0):

- set-based: erpsync's ``CALL SP_DupliquerProjet(1, …)``, from a session in
  autocommit mode as a SQL client would call it (the procedure's own
  transaction, its id maps and journal row included);
- cursor loop: the same copy written the way the specification describes it
  (``bench/cursor_loop_<engine>.sql``: one cursor turn and one CALL per
  version, client and commande, a MEMORY mapping table per procedure on
  MariaDB, one number drawn per row);
- floor: bench.duplicate's plain ``INSERT INTO t SELECT … FROM t`` of the same
  rows at every level, without any mapping, in one transaction.

``bench.duplicate`` prints this table after its own (``print_procedures``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from bench.common import print_table, scratch_database, timed
from erpsync import procedures
from erpsync.db import Database, open_database
from erpsync.fill import fill
from erpsync.schema import init_schema

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ProcedureTimes:
    """Seconds for one engine: erpsync's procedure, the spec's cursor loop, and the floor."""

    engine: str
    rows: int
    set_based: float
    cursor_loop: float
    floor: float

    @property
    def ratio(self) -> float:
        """Set-based time over the floor's (target: 1.5 or less)."""
        return self.set_based / self.floor


def _fresh(url: str, lines: int) -> None:
    """The benchmark project, the procedures, and one read of every table (no cold cache)."""
    from bench.duplicate import warm

    with open_database(url, create=True) as db:
        init_schema(db)
        fill(db, scale=0, big_project=lines)
        procedures.install(db)
    warm(url)


def _call_projet(db: Database, procedure: str) -> float:
    """Seconds of ``CALL procedure(1, 'bench', …)`` in autocommit mode; checks it succeeded."""
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if db.dialect.name == "mariadb":
            seconds, _ = timed(lambda: conn.execute(text(f"CALL {procedure}(1, 'bench', @new_id, @erreur)")))
            new_id, erreur = conn.execute(text("SELECT @new_id, @erreur")).one()
        else:
            seconds, row = timed(lambda: conn.execute(text(f"CALL {procedure}(1, 'bench')")).one())
            new_id, erreur = row
    assert erreur == 0 and new_id, f"{procedure} failed"
    return seconds


def _install_cursor_loop(db: Database) -> None:
    script = (HERE / f"cursor_loop_{db.dialect.name}.sql").read_text(encoding="utf-8")
    with db.begin() as conn:
        for statement in db.dialect.script_statements(script):
            conn.execution_options(no_parameters=True).exec_driver_sql(statement)


def procedure_times(engine: str, lines: int, repeat: int = 1) -> ProcedureTimes:
    """Measure the set-based procedure, the cursor loop and the floor, each on a fresh database.

    With ``repeat`` > 1 each is measured that many times (in turn) and the best time kept:
    on a machine shared with other work, the best is the least disturbed.
    """
    from bench.duplicate import floor

    set_based, cursor_loop, base, rows = [], [], [], 0
    for _ in range(repeat):
        with scratch_database(engine) as url:
            _fresh(url, lines)
            with open_database(url) as db:
                set_based.append(_call_projet(db, "SP_DupliquerProjet"))
                rows = _rows_copied(db)
        with scratch_database(engine) as url:
            _fresh(url, lines)
            with open_database(url) as db:
                _install_cursor_loop(db)
                cursor_loop.append(_call_projet(db, "bench_curseur_projet"))
        with scratch_database(engine) as url:
            _fresh(url, lines)
            base.append(floor(url))
    return ProcedureTimes(engine, rows, min(set_based), min(cursor_loop), min(base))


def _rows_copied(db: Database) -> int:
    """Rows the procedure created: those of its id maps, and the lines of the copied commandes."""
    with db.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT (SELECT COUNT(*) FROM erpsync_dup_map) + (SELECT COUNT(*) "
                    "FROM tb_LigneCommande WHERE fkCommande IN "
                    "(SELECT new_id FROM erpsync_dup_map WHERE table_name = 'tb_Commande'))"
                )
            ).scalar_one()
        )


COLUMNS = [
    "engine",
    "rows copied",
    "SP_DupliquerProjet (s)",
    "floor: INSERT…SELECT (s)",
    "ratio",
    "cursor loop, as the spec (s)",
    "set-based speed-up",
]


def row(times: ProcedureTimes) -> list[str]:
    """One line of the table."""
    return [
        times.engine,
        f"{times.rows:,}",
        f"{times.set_based:.2f}",
        f"{times.floor:.2f}",
        f"{times.ratio:.2f}",
        f"{times.cursor_loop:.2f}",
        f"{times.cursor_loop / times.set_based:.1f}×",
    ]


def print_procedures(engines: list[str], lines: int, repeat: int = 1) -> None:
    """Measure and print the table for ``engines`` (MariaDB and PostgreSQL: SQLite has no procedures)."""
    results = [procedure_times(engine, lines, repeat) for engine in engines if engine != "sqlite"]
    if results:
        best = f", best of {repeat}" if repeat > 1 else ""
        print_table(
            f"stored procedures: CALL SP_DupliquerProjet on a tree of {lines:,} lines{best}",
            COLUMNS,
            [row(r) for r in results],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--engines", default="mariadb,postgresql")
    parser.add_argument("--repeat", type=int, default=1, help="Measure each N times, keep the best.")
    args = parser.parse_args()
    print_procedures(args.engines.split(","), args.lines, args.repeat)


if __name__ == "__main__":
    main()

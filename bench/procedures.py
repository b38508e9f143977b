"""Time the stored procedure SP_DupliquerProjet on a 1,000,000-line project against the floor.

    python -m bench.procedures --lines 1000000 --engines mariadb,postgresql

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
    statements = procedures.mariadb_statements(script) if db.dialect.name == "mariadb" else [script]
    with db.begin() as conn:
        for statement in statements:
            conn.execution_options(no_parameters=True).exec_driver_sql(statement)


def procedure_times(engine: str, lines: int) -> ProcedureTimes:
    """Measure the set-based procedure, the cursor loop and the floor, each on a fresh database."""
    from bench.duplicate import floor

    with scratch_database(engine) as url:
        _fresh(url, lines)
        with open_database(url) as db:
            set_based = _call_projet(db, "SP_DupliquerProjet")
            with db.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT (SELECT COUNT(*) FROM erpsync_dup_map) + (SELECT COUNT(*) "
                        "FROM tb_LigneCommande WHERE fkCommande IN "
                        "(SELECT new_id FROM erpsync_dup_map WHERE table_name = 'tb_Commande'))"
                    )
                ).scalar_one()
    with scratch_database(engine) as url:
        _fresh(url, lines)
        with open_database(url) as db:
            _install_cursor_loop(db)
            cursor_loop = _call_projet(db, "bench_curseur_projet")
    with scratch_database(engine) as url:
        _fresh(url, lines)
        base = floor(url)
    return ProcedureTimes(engine, int(rows), set_based, cursor_loop, base)


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


def print_procedures(engines: list[str], lines: int) -> None:
    """Measure and print the table for ``engines`` (MariaDB and PostgreSQL: SQLite has no procedures)."""
    results = [procedure_times(engine, lines) for engine in engines if engine != "sqlite"]
    if results:
        print_table(
            f"stored procedures: CALL SP_DupliquerProjet on a tree of {lines:,} lines",
            COLUMNS,
            [row(r) for r in results],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--engines", default="mariadb,postgresql")
    args = parser.parse_args()
    print_procedures(args.engines.split(","), args.lines)


if __name__ == "__main__":
    main()

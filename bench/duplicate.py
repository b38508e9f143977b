"""Time ``erpsync duplicate DB projet 1`` on a 1,000,000-line project against a set-based floor.

    python -m bench.duplicate --lines 1000000 --engines sqlite,mariadb,postgresql

For each engine, on a fresh database holding one project of LINES lines (10
versions, a client per 1,000 lines, a commande per 50):

- erpsync: the library's deep copy of the project, run in a child process
  that also reports its peak memory (ru_maxrss);
- floor: a plain ``INSERT INTO t (…) SELECT … FROM t`` of the same rows at
  every level, without any id mapping (the unique business numbers get a
  suffix so they stay unique), in one transaction;
- row by row: the copy as a user would write it in Python, one SELECT and one
  INSERT per row, measured on a 100,000-line project and scaled to LINES;
- peak memory of the erpsync process copying the 100,000-line project, to
  show it does not grow with the tree.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from typing import Any

from sqlalchemy import Connection, MetaData, Table, insert, select, text

from bench.common import print_table, scratch_database, timed
from erpsync.db import open_database
from erpsync.duplicate import duplicate, undo
from erpsync.fill import fill
from erpsync.schema import init_schema

LEVELS = ["tb_Projet", "tb_Version", "tb_Client", "tb_Commande", "tb_LigneCommande"]
UNIQUE = {"tb_Projet": "NumProjet", "tb_Client": "Code", "tb_Commande": "NumCommande"}


def child(url: str) -> None:
    """Run in a separate process: copy project 1, print seconds, peak RSS and the run id as JSON."""
    with open_database(url) as db:
        result = duplicate(db, "projet", 1)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": result.seconds,
                "peak_mib": peak_kib / 1024,
                "run_id": result.run_id,
                "rows": sum(result.rows.values()),
            }
        )
    )


def erpsync_copy(url: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.duplicate", "--child", url], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out))


def tables(conn: Connection) -> dict[str, Table]:
    metadata = MetaData()
    metadata.reflect(conn)
    return {
        name: next(t for t in metadata.tables.values() if t.name.lower() == name.lower()) for name in LEVELS
    }


def floor(url: str) -> float:
    """A plain INSERT … SELECT of every row of the project, level by level, no mapping."""
    with open_database(url) as db:

        def copy_all() -> None:
            with db.begin() as conn:
                for name, table in tables(conn).items():
                    columns = [c for c in table.columns if not c.primary_key]
                    values = [
                        c + "-f" if c.name.lower() == UNIQUE.get(name, "").lower() else c for c in columns
                    ]
                    conn.execute(insert(table).from_select([c.name for c in columns], select(*values)))

        seconds, _ = timed(copy_all)
    return seconds


def row_by_row(url: str) -> float:
    """The copy as a Python loop would do it: read each row, insert its copy, keep the new id."""
    with open_database(url) as db:

        def copy_tree() -> None:
            with db.begin() as conn:
                t = tables(conn)

                def copy(name: str, row: Any, parent_column: str | None, parent_id: int | None) -> int:
                    table = t[name]
                    values = {c.name: row._mapping[c.name] for c in table.columns if not c.primary_key}
                    if parent_column:
                        values[parent_column] = parent_id
                    if name in UNIQUE:
                        column = next(c.name for c in table.columns if c.name.lower() == UNIQUE[name].lower())
                        values[column] = f"{values[column]}-r"
                    key = conn.execute(insert(table), values).inserted_primary_key
                    assert key is not None
                    return int(key[0])

                def children(
                    name: str, fk: str, parent_old: int, parent_new: int, rest: list[tuple[str, str]]
                ) -> None:
                    table = t[name]
                    column = next(c for c in table.columns if c.name.lower() == fk.lower())
                    for row in conn.execute(select(table).where(column == parent_old)).all():
                        new = copy(name, row, column.name, parent_new)
                        if rest:
                            children(*rest[0], row.id, new, rest[1:])

                project = conn.execute(select(t["tb_Projet"]).where(t["tb_Projet"].c.id == 1)).one()
                new_project = copy("tb_Projet", project, None, None)
                children(
                    "tb_Version",
                    "fkProjet",
                    1,
                    new_project,
                    [
                        ("tb_Client", "fkVersion"),
                        ("tb_Commande", "fkClient"),
                        ("tb_LigneCommande", "fkCommande"),
                    ],
                )

        seconds, _ = timed(copy_tree)
    return seconds


def warm(url: str) -> None:
    """Read every table once so that neither the copy nor the floor pays for a cold cache."""
    with open_database(url) as db, db.connect() as conn:
        for name in LEVELS:
            conn.execute(text(f"SELECT COUNT(*), MAX(id) FROM {name}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--python-lines", type=int, default=100_000)
    parser.add_argument("--engines", default="sqlite,mariadb,postgresql")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    out = []
    for engine in args.engines.split(","):
        with scratch_database(engine) as small_url:
            with open_database(small_url, create=True) as db:
                init_schema(db)
                fill(db, scale=0, big_project=args.python_lines)
            small = erpsync_copy(small_url)
            slow = row_by_row(small_url) * args.lines / args.python_lines
        with scratch_database(engine) as url:
            with open_database(url, create=True) as db:
                init_schema(db)
                fill(db, scale=0, big_project=args.lines)
            warm(url)
            ours = erpsync_copy(url)
            with open_database(url) as db:
                undo(db, ours["run_id"])
            base = floor(url)
        out.append(
            [
                engine,
                f"{ours['rows']:,}",
                f"{ours['seconds']:.2f}",
                f"{base:.2f}",
                f"{ours['seconds'] / base:.2f}",
                f"{slow:.0f}",
                f"{slow / ours['seconds']:.0f}×",
                f"{small['peak_mib']:.0f} / {ours['peak_mib']:.0f}",
            ]
        )
    print_table(
        f"duplicate projet: a tree of {args.lines:,} lines",
        [
            "engine",
            "rows copied",
            "erpsync (s)",
            "floor: INSERT…SELECT (s)",
            "ratio",
            f"row by row (s, from {args.python_lines:,})",
            "erpsync speed-up",
            f"peak MiB ({args.python_lines:,} / {args.lines:,} lines)",
        ],
        out,
    )
    # The stored procedures of issue 4 on the same project, where the engine has them.
    from bench.procedures import print_procedures

    print_procedures(args.engines.split(","), args.lines)


if __name__ == "__main__":
    main()

"""Time ``erpsync db fill --big-project N`` against a plain executemany of the same rows.

    python -m bench.fill --lines 1000000 --engines sqlite,mariadb,postgresql

The floor inserts exactly the rows the fill generates (materialized beforehand,
so generating them is not timed) with the DB-API ``executemany``, in one
transaction, into a fresh copy of the schema. The fill's time includes
generating the data, drawing the business numbers and the bulk path of each
engine (COPY on PostgreSQL).
"""

from __future__ import annotations

import argparse

from bench.common import print_table, scratch_database, timed
from erpsync.db import open_database
from erpsync.fill import Batch, generate_batches
from erpsync.fill import fill as erpsync_fill
from erpsync.schema import erp_tables, init_schema


def generated_rows(lines: int, seed: int) -> list[Batch]:
    """Every batch the fill would insert into an empty database, kept in memory."""
    with scratch_database("sqlite") as path, open_database(path, create=True) as db:
        init_schema(db)
        with db.begin() as conn:
            return list(generate_batches(conn, erp_tables(db.dialect), seed=seed, big_project=lines))


def floor(engine: str, batches: list[Batch]) -> float:
    """Seconds for a plain executemany of ``batches`` into a fresh schema."""
    with scratch_database(engine) as url, open_database(url, create=True) as db:
        init_schema(db)
        schema = erp_tables(db.dialect)
        quote = db.quote
        mark = "?" if engine == "sqlite" else "%s"

        def insert_all() -> None:
            with db.begin() as conn:
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                for table, columns, rows in batches:
                    t = schema[table]
                    names = ", ".join(quote(t.c[c].name) for c in columns)
                    marks = ", ".join([mark] * len(columns))
                    cursor.executemany(f"INSERT INTO {quote(t.name)} ({names}) VALUES ({marks})", rows)

        seconds, _ = timed(insert_all)
        return seconds


def measure_fill(engine: str, lines: int, seed: int) -> float:
    with scratch_database(engine) as url, open_database(url, create=True) as db:
        init_schema(db)
        seconds, result = timed(lambda: erpsync_fill(db, scale=0, seed=seed, big_project=lines))
        assert result.rows["tb_LigneCommande"] == lines
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    batches = generated_rows(args.lines, args.seed)
    total = sum(len(rows) for _, _, rows in batches)
    out = []
    for engine in args.engines.split(","):
        base = floor(engine, batches)
        ours = measure_fill(engine, args.lines, args.seed)
        out.append(
            [engine, f"{total:,}", f"{ours:.2f}", f"{base:.2f}", f"{ours / base:.2f}", f"{total / ours:,.0f}"]
        )
    print_table(
        f"db fill --big-project {args.lines:,} (one transaction)",
        ["engine", "rows", "erpsync fill (s)", "floor: executemany (s)", "ratio", "rows/s (fill)"],
        out,
    )


if __name__ == "__main__":
    main()

"""Sync benchmarks: capture overhead, apply throughput, no-op sync, memory of a big sync.

    python -m bench.sync --engines sqlite,mariadb,postgresql

- capture: 100,000 inserts (one executemany), 100,000 updates as one UPDATE
  statement and then as 100,000 single-row UPDATEs (executemany), 1,000
  single-row transactions, each on the reference schema without triggers, with
  triggers that do nothing (the floor of any capture by triggers) and with
  erpsync's; the ratios are against no trigger.
- apply: 100,000 changed rows (a fresh ``--big-project``) read from a SQLite
  node, then applied to a fresh node on each engine, as a sync applies them
  (under a sync id: receipts kept for undo); then the same 100,000 lines
  updated in two columns on the source, read and applied again; changes per
  second of the apply alone and of the whole push (read + apply).
- big: a 1,000,000-line project synced from a SQLite node to an empty SQLite
  node (time, peak memory of the syncing process), then a sync with nothing
  to do between them (median of 20, after opening both databases).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.common import print_table, scratch_database, timed
from erpsync.db import Database, open_database
from erpsync.fill import fill
from erpsync.schema import ERP_TABLES, erp_tables, init_schema
from erpsync.sync import history
from erpsync.sync.apply import apply_batch
from erpsync.sync.changeset import Batch
from erpsync.sync.node import init_node
from erpsync.sync.peer import LocalPeer
from erpsync.sync.session import sync

ROWS = 100_000
TRANSACTIONS = 1_000
SYNCED = ERP_TABLES[:6]
"""The reference tables a node syncs and ``fill`` fills (the journal and the counters are not)."""
UPDATE_LINES = "UPDATE tb_LigneCommande SET Quantite = Quantite + 1, Designation = Designation || '.'"


# -- capture overhead --------------------------------------------------------------------------------


def _prepare(db: Database) -> None:
    """One client and one order to hang 100,000 lines under."""
    with db.begin() as conn:
        day = "'2026-01-01'"
        conn.execute(
            text(f"INSERT INTO tb_Projet (id, NumProjet, Libelle, DateCreation) VALUES (1, 'P1', 'P', {day})")
        )
        conn.execute(
            text(f"INSERT INTO tb_Version (id, fkProjet, NumVersion, DateCreation) VALUES (1, 1, 'V', {day})")
        )
        conn.execute(
            text("INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale) VALUES (1, 1, 'C', 'C')")
        )
        conn.execute(
            text(
                "INSERT INTO tb_Commande (id, fkClient, NumCommande, DateCommande, Statut, MontantHT) "
                "VALUES (1, 1, 'O', '2026-01-01', 'X', 0)"
            )
        )


def _inserts(db: Database) -> float:
    mark = db.dialect.paramstyle_mark
    rows = [
        (i, 1, i, f"REF-{i}", f"Article {i}", Decimal("1.00"), Decimal("9.90")) for i in range(1, ROWS + 1)
    ]
    columns = "id, fkCommande, NumLigne, Reference, Designation, Quantite, PrixUnitaire"
    sql = f"INSERT INTO tb_LigneCommande ({columns}) VALUES ({', '.join([mark] * 7)})"

    def run() -> None:
        with db.begin() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(sql, rows)
            cursor.close()
            db.dialect.after_explicit_ids(conn, erp_tables(db.dialect)["tb_LigneCommande"])

    return timed(run)[0]


def _updates(db: Database) -> float:
    def run() -> None:
        with db.begin() as conn:
            conn.execute(text("UPDATE tb_LigneCommande SET Quantite = Quantite + 1"))

    return timed(run)[0]


def _row_updates(db: Database) -> float:
    """100,000 single-row UPDATE statements in one transaction (executemany), as an ERP writes."""
    mark = db.dialect.paramstyle_mark
    sql = f"UPDATE tb_LigneCommande SET PrixUnitaire = {mark} WHERE id = {mark}"
    params = [(Decimal("10.50"), i) for i in range(1, ROWS + 1)]

    def run() -> None:
        with db.begin() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(sql, params)
            cursor.close()

    return timed(run)[0]


def _transactions(db: Database) -> float:
    def run() -> None:
        for i in range(TRANSACTIONS):
            with db.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO tb_LigneCommande (fkCommande, NumLigne, Designation, Quantite, "
                        "PrixUnitaire) VALUES (1, :n, 'Ligne', 1, 2)"
                    ),
                    {"n": i},
                )

    return timed(run)[0]


def _empty_triggers(db: Database) -> None:
    """The cheapest trigger of the kind erpsync installs, on every write of the lines.

    What any capture by triggers costs before it logs anything: row triggers
    on SQLite and MariaDB, statement triggers with transition tables on
    PostgreSQL.
    """
    name = db.dialect.name
    with db.begin() as conn:
        if name == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION bench_nothing() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RETURN NULL; END $$"
            )
        for event, transition in (("INSERT", "NEW"), ("UPDATE", "OLD TABLE AS o NEW"), ("DELETE", "OLD")):
            on = f"bench_{event} AFTER {event} ON tb_LigneCommande"
            conn.exec_driver_sql(
                {
                    "sqlite": f"CREATE TRIGGER {on} BEGIN SELECT 1; END",
                    "mariadb": f"CREATE TRIGGER {on} FOR EACH ROW BEGIN END",
                    "postgresql": f"CREATE TRIGGER {on} REFERENCING {transition} TABLE AS n "
                    "FOR EACH STATEMENT EXECUTE FUNCTION bench_nothing()",
                }[name]
            )


def capture(engine: str) -> list[list[str]]:
    """Seconds without triggers, with empty triggers and with erpsync's, for each workload.

    The one-row updates follow the one-statement update, as an ERP's writes
    follow a price revision in the same session.
    """
    workloads = [
        (f"{ROWS:,} inserts", _inserts),
        (f"{ROWS:,} updates, one statement", _updates),
        (f"{ROWS:,} 1-row updates", _row_updates),
        (f"{TRANSACTIONS:,} 1-row txns", _transactions),
    ]
    results: dict[str, list[float]] = {label: [] for label, _ in workloads}
    for setup in (None, _empty_triggers, lambda db: init_node(db, "bench")):
        with scratch_database(engine) as url, open_database(url, create=True) as db:
            init_schema(db)
            _prepare(db)
            if setup is not None:
                setup(db)
            for label, workload in workloads:
                results[label].append(workload(db))
    return [
        [engine, label, *(f"{s:.2f}" for s in seconds), *(f"{s / seconds[0]:.2f}" for s in seconds[1:])]
        for label, seconds in results.items()
    ]


# -- apply throughput ----------------------------------------------------------------------------------


def apply_throughput(source: Database, engine: str) -> list[list[str]]:
    """Apply the source node's new rows to a fresh node on ``engine``, then the same rows updated.

    Beside each, the floor: the same application rows written without sync (``_floor``).
    """
    new_rows, updates = _floor_rows(source)
    floors = _floor(engine, new_rows, updates)
    with scratch_database(engine) as url, open_database(url, create=True) as target:
        init_schema(target)
        init_node(target, f"target-{engine}")
        a, b = LocalPeer(source, owned=False), LocalPeer(target, owned=False)
        there = b.hello()
        since = 0
        out = []
        for label, floor in zip(("new rows", "updated rows"), floors, strict=True):
            upto = a.hello().seq
            read_seconds, batches = timed(_read, a, since, upto, there.node_id)
            apply_seconds, _ = timed(_apply, b, batches)
            rows = sum(len(batch.rows) for batch in batches)
            out.append(
                [
                    f"sqlite → {engine}",
                    label,
                    f"{rows:,}",
                    f"{read_seconds:.2f}",
                    f"{apply_seconds:.2f}",
                    f"{rows / apply_seconds:,.0f}",
                    f"{floor:.2f}",
                    f"{apply_seconds / floor:.1f}",
                    f"{rows / (read_seconds + apply_seconds):,.0f}",
                ]
            )
            since = upto
            with source.engine.begin() as conn:  # every line changed in two columns, as a price revision
                conn.execute(text(UPDATE_LINES))
    return out


Rows = dict[str, tuple[list[str], list[tuple[Any, ...]]]]
"""Table → (columns, rows), parents first."""


def _floor_rows(source: Database) -> tuple[Rows, list[tuple[Any, ...]]]:
    """The source's application rows, and the new values ``UPDATE_LINES`` gives the lines, by id."""
    tables = erp_tables(source.dialect)
    out: Rows = {}
    with source.connect() as conn:
        for name in SYNCED:
            result = conn.execute(tables[name].select())
            out[name] = (list(result.keys()), [tuple(r) for r in result])
        updates = [
            (q + 1, d + ".", i)
            for i, q, d in conn.execute(text("SELECT id, Quantite, Designation FROM tb_LigneCommande"))
        ]
    return out, updates


def _floor(engine: str, new_rows: Rows, updates: list[tuple[Any, ...]]) -> tuple[float, float]:
    """Seconds to write the same application rows without any sync metadata, batches of 5,000 in
    a transaction each, on a fresh schema: inserted by the engine's bulk path (the one apply
    uses), then the lines' two columns updated by key (one ``UPDATE`` joined to the batch on
    a server, ``executemany`` on SQLite, as apply does)."""
    with scratch_database(engine) as url, open_database(url, create=True) as db:
        init_schema(db)
        tables = erp_tables(db.dialect)

        def insert() -> None:
            for name, (columns, rows) in new_rows.items():
                for start in range(0, len(rows), 5000):
                    with db.begin() as conn:
                        db.dialect.bulk_insert(conn, tables[name], columns, rows[start : start + 5000])

        def update() -> None:
            lines = tables["tb_LigneCommande"]
            key, columns = lines.c["id"].name, [lines.c[c].name for c in ("Quantite", "Designation")]
            for start in range(0, len(updates), 5000):
                with db.begin() as conn:
                    db.dialect.bulk_update(conn, lines, [key], columns, updates[start : start + 5000])

        return timed(insert)[0], timed(update)[0]


def session_extension(lines: int) -> list[list[str]] | None:
    """The SQLite session extension (through APSW, when installed) applying the same changes.

    The reference the issue names (it "applies about 161,000/s"), measured here: a
    changeset of a fresh ``lines``-line project, applied to an empty copy of the schema,
    then one of the lines updated by ``UPDATE_LINES``, applied to that copy, each in one
    call (one transaction), foreign keys checked.
    """
    try:
        import apsw
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(Path(folder) / f"{n}.sqlite") for n in ("source", "plain", "target")]
        with open_database(paths[0], create=True) as db:
            init_schema(db)
            fill(db, scale=0, seed=1, big_project=lines)
        for path in paths[1:]:
            with open_database(path, create=True) as db:
                init_schema(db)
        plain, target = apsw.Connection(paths[1]), apsw.Connection(paths[2])
        target.execute("PRAGMA foreign_keys = ON")
        out = []
        for label, change in (
            ("new rows", lambda: plain.execute(_copy_all(paths[0]))),
            ("updated rows", lambda: plain.execute(UPDATE_LINES)),
        ):
            session = apsw.Session(plain, "main")
            session.attach()
            with plain:
                change()
            changeset = session.changeset()
            session.close()
            changes = sum(1 for _ in apsw.Changeset.iter(changeset))
            seconds, _ = timed(lambda: apsw.Changeset.apply(changeset, target))  # noqa: B023
            out.append([label, f"{changes:,}", f"{seconds:.2f}", f"{changes / seconds:,.0f}"])
        return out


def _copy_all(path: str) -> str:
    """SQL copying every reference table of the SQLite database ``path``, parents first."""
    path = path.replace("'", "''")
    return f"ATTACH '{path}' AS src; " + " ".join(f"INSERT INTO {n} SELECT * FROM src.{n};" for n in SYNCED)


def _read(source: LocalPeer, since: int, upto: int, for_node: str) -> list[Batch]:
    """Every batch ``source`` has for ``for_node`` after ``since``, as one sync reads them."""
    sync_id = history.new_id()
    batches = []
    for table, stream, count in source.plan({}, upto, for_node):
        if count:
            batches += list(source.changes(table, stream, since, upto, for_node, 5000))
    for batch in batches:
        batch.sync_id = sync_id
    return batches


def _apply(target: LocalPeer, batches: list[Batch]) -> None:
    for batch in batches:
        result = apply_batch(target.node, batch, {})
        assert not result.missing and not result.conflicts


# -- a big node: sync of 1,000,000 changes, then a sync with nothing to do -----------------------------


def _peak_rss_mb() -> str:
    try:
        import resource
    except ImportError:  # Windows: not measured
        return "n/a"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f}"


def _sync_in_child(a: str, b: str, queue: Any) -> None:
    """Run the big sync in a process of its own, so its peak memory is its own."""
    before = _peak_rss_mb()
    with open_database(a) as source, open_database(b) as target:
        seconds, summary = timed(lambda: sync(source, target))
    queue.put((seconds, sum(t.sent for t in summary.tables.values()), before, _peak_rss_mb()))


def big(lines: int) -> list[list[str]]:
    """The 1,000,000-line sync, and the no-op sync that follows."""
    with scratch_database("sqlite") as a_url, scratch_database("sqlite") as b_url:
        with open_database(a_url, create=True) as a, open_database(b_url, create=True) as b:
            init_schema(a)
            init_schema(b)
            fill(a, scale=0, seed=1, big_project=lines)
            init_seconds, _ = timed(lambda: init_node(a, "big"))
            init_node(b, "copy")
        queue: Any = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=_sync_in_child, args=(a_url, b_url, queue)
        )
        child.start()
        seconds, rows, rss_before, rss_peak = queue.get()
        child.join()
        with open_database(a_url) as a, open_database(b_url) as b:
            sync(a, b)
            times = []
            for _ in range(20):
                elapsed, summary = timed(lambda: sync(a, b))
                assert summary.nothing_to_do
                times.append(elapsed)
        return [
            ["node init (register every row)", f"{init_seconds:.2f} s", ""],
            [f"sync of {rows:,} changes", f"{seconds:.1f} s", f"{rows / seconds:,.0f} rows/s"],
            ["peak memory of the syncing process", f"{rss_peak} MB", f"(after opening: {rss_before} MB)"],
            ["sync with nothing to do (median of 20)", f"{statistics.median(times) * 1000:.1f} ms", ""],
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,mariadb,postgresql")
    parser.add_argument("--parts", default="capture,apply,big")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the big node")
    args = parser.parse_args()
    engines = args.engines.split(",")
    parts = args.parts.split(",")
    run: dict[str, Callable[[], None]] = {}

    def run_capture() -> None:
        rows = [row for engine in engines for row in capture(engine)]
        print_table(
            "Capture overhead (seconds; ratios against no trigger)",
            ["engine", "workload", "no trigger", "empty trigger", "erpsync", "empty ratio", "erpsync ratio"],
            rows,
        )

    def run_apply() -> None:
        rows = []
        for engine in engines:  # a fresh source each time: the updates change its rows' clocks
            with scratch_database("sqlite") as url, open_database(url, create=True) as source:
                init_schema(source)
                fill(source, scale=0, seed=1, big_project=ROWS)
                init_node(source, "source")
                rows += apply_throughput(source, engine)
        print_table(
            f"Apply throughput ({ROWS:,}-line project, batches of 5,000)",
            [
                "direction",
                "changes",
                "rows",
                "read (s)",
                "apply (s)",
                "apply rows/s",
                "floor (s)",
                "apply / floor",
                "push rows/s",
            ],
            rows,
        )
        reference = session_extension(ROWS) if "sqlite" in engines else None
        if reference is not None:
            print_table(
                "The SQLite session extension (APSW) applying the same changes, for reference",
                ["changes", "rows", "apply (s)", "rows/s"],
                reference,
            )

    def run_big() -> None:
        print_table(
            f"A node of {args.lines:,} lines (SQLite → SQLite)", ["measure", "value", ""], big(args.lines)
        )

    run = {"capture": run_capture, "apply": run_apply, "big": run_big}
    from bench import sync_http  # --parts http: sync over HTTP (issue 6)

    run["http"] = lambda: sync_http.run(["throughput", "noop"], ROWS, args.lines)
    for part in parts:
        run[part]()


if __name__ == "__main__":
    main()

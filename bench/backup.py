"""Backup and export of a 1,000,000-line database, beside the engines' own tools, in one run.

    python -m bench.backup --lines 1000000 --engines sqlite,mariadb,postgresql

For each engine, on a database holding the 1,000,000-line project:
- the engine's own tool alone: ``sqlite3 DB ".backup FILE"``, ``mariadb-dump
  --single-transaction | gzip``, ``pg_dump -Fc``;
- ``erpsync backup create`` (the same tools, plus the manifest: schema
  fingerprint, row counts, checksum);
- ``erpsync backup verify`` (checksum, integrity, rows read back from the backup);
- ``erpsync export`` (portable gzip JSON Lines, one file per table).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import print_table, scratch_database, timed
from erpsync.backup import create_backup, verify_backup
from erpsync.db import open_database
from erpsync.export import export_database
from erpsync.fill import fill
from erpsync.schema import init_schema


def size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )


def native(engine: str, url: str, out: Path) -> Path:
    """The engine's own backup tool, as an administrator would run it."""
    db_url = open_database(url).url
    if engine == "sqlite":
        target = out / "native.sqlite"
        subprocess.run(["sqlite3", str(db_url.database), f".backup '{target}'"], check=True)
        return target
    if engine == "postgresql":
        target = out / "native.dump"
        env = dict(
            os.environ, PGHOST=db_url.host or "", PGPORT=str(db_url.port), PGUSER=db_url.username or ""
        )
        subprocess.run(["pg_dump", "-Fc", f"--file={target}", str(db_url.database)], check=True, env=env)
        return target
    target = out / "native.sql.gz"
    dump = subprocess.Popen(
        [
            "mariadb-dump",
            "--single-transaction",
            f"--host={db_url.host}",
            f"--port={db_url.port}",
            f"--user={db_url.username}",
            str(db_url.database),
        ],
        stdout=subprocess.PIPE,
    )
    assert dump.stdout is not None
    with gzip.open(target, "wb") as out_file:
        shutil.copyfileobj(dump.stdout, out_file, 1 << 20)
    assert dump.wait() == 0
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,mariadb,postgresql")
    args = parser.parse_args()
    out = []
    for engine in args.engines.split(","):
        with scratch_database(engine) as url, tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            with open_database(url, create=True) as db:
                init_schema(db)
                fill(db, scale=0, big_project=args.lines)
                tool_seconds, tool_file = timed(native, engine, url, work)
                ours_seconds, (backup_file, _) = timed(create_backup, db, work / "erpsync")
                verify_seconds, _ = timed(verify_backup, backup_file)
                export_seconds, _ = timed(export_database, db, work / "export")
            out.append(
                [
                    engine,
                    f"{tool_seconds:.2f}",
                    f"{size(tool_file) / 2**20:.1f}",
                    f"{ours_seconds:.2f}",
                    f"{size(backup_file) / 2**20:.1f}",
                    f"{ours_seconds / tool_seconds:.2f}",
                    f"{verify_seconds:.2f}",
                    f"{export_seconds:.2f}",
                    f"{size(work / 'export') / 2**20:.1f}",
                ]
            )
    print_table(
        f"backup and export of a {args.lines:,}-line database",
        [
            "engine",
            "native tool (s)",
            "native (MiB)",
            "erpsync backup (s)",
            "backup (MiB)",
            "ratio",
            "verify (s)",
            "erpsync export (s)",
            "export (MiB)",
        ],
        out,
    )


if __name__ == "__main__":
    main()

"""Sync over HTTP: push and pull throughput on loopback, and a sync with nothing to do against a big node.

    python -m bench.sync_http [--rows 100000] [--lines 1000000] [--parts throughput,noop]

- throughput: a fresh 100,000-line project (``fill --big-project``) on a
  SQLite node, pushed to a fresh SQLite node directly (both databases in this
  process: the floor), pushed over HTTP to a fresh node served by ``erpsync
  serve`` in a process of its own, and pulled over HTTP by a fresh node from
  the source served the same way; changes per second, and the ratio of each
  time to the floor's.
- noop: a 1,000,000-line node served over HTTP, a client node already in sync
  with it (synced directly first, then once over HTTP); the median of 20 syncs
  with nothing to do, each opening its HTTP client as ``erpsync sync`` does.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from bench.common import print_table, scratch_database, timed
from erpsync.db import open_database
from erpsync.fill import fill
from erpsync.schema import init_schema
from erpsync.sync.node import init_node
from erpsync.sync.session import sync

ROWS = 100_000
LINES = 1_000_000


@contextmanager
def served(db: str) -> Iterator[str]:
    """``erpsync serve DB --port 0`` in a separate process; yields its URL once ``/health`` answers."""
    command = [sys.executable, "-m", "erpsync", "--lang", "en", "serve", db, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if " on http" not in line:
            raise RuntimeError(f"erpsync serve did not start: {line!r}")
        url = line.split(" on ", 1)[1].strip().rstrip(".")
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}/health does not answer")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _node(path: str, name: str, big_project: int = 0) -> None:
    """A SQLite node, empty or holding a fresh project of ``big_project`` lines."""
    with open_database(path, create=True) as db:
        init_schema(db)
        if big_project:
            fill(db, scale=0, seed=1, big_project=big_project)
        init_node(db, name)


def throughput(rows: int = ROWS) -> list[list[str]]:
    """Direct push (the floor), push over HTTP and pull over HTTP of a fresh ``rows``-line project."""
    results: list[tuple[str, int, float]] = []
    with scratch_database("sqlite") as source_path:
        _node(source_path, "source", rows)
        with scratch_database("sqlite") as target_path:
            _node(target_path, "direct")
            with open_database(source_path) as source, open_database(target_path) as target:
                seconds, summary = timed(lambda: sync(source, target, pull=False))
            results.append(("push, direct (floor)", summary.sent, seconds))
        with scratch_database("sqlite") as target_path:
            _node(target_path, "pushed")
            with served(target_path) as url, open_database(source_path) as source:
                seconds, summary = timed(lambda: sync(source, url, pull=False))
            results.append(("push over HTTP", summary.sent, seconds))
        with scratch_database("sqlite") as target_path:
            _node(target_path, "pulled")
            with served(source_path) as url, open_database(target_path) as target:
                seconds, summary = timed(lambda: sync(target, url, push=False))
            results.append(("pull over HTTP", summary.received, seconds))
    floor = results[0][2]
    return [
        [label, f"{n:,}", f"{seconds:.2f}", f"{n / seconds:,.0f}", f"{seconds / floor:.2f}"]
        for label, n, seconds in results
    ]


def noop(lines: int = LINES, repeat: int = 20) -> list[list[str]]:
    """A sync with nothing to do over HTTP against a node of ``lines`` lines (median of ``repeat``)."""
    with scratch_database("sqlite") as big_path, scratch_database("sqlite") as client_path:
        _node(big_path, "big", lines)
        _node(client_path, "client")
        with open_database(big_path) as big, open_database(client_path) as client:
            rows = sync(client, big).received
        with served(big_path) as url, open_database(client_path) as client:
            sync(client, url)  # the first HTTP sync records the peer: not timed
            times = []
            for _ in range(repeat):
                seconds, summary = timed(lambda: sync(client, url))
                assert summary.nothing_to_do
                times.append(seconds * 1000)
    return [
        [
            f"sync with nothing to do, node of {rows:,} rows",
            f"{statistics.median(times):.1f}",
            f"{min(times):.1f}",
            f"{max(times):.1f}",
        ]
    ]


def run(parts: list[str], rows: int = ROWS, lines: int = LINES) -> None:
    """Measure and print the parts asked for."""
    if "throughput" in parts:
        print_table(
            f"Sync over loopback HTTP, SQLite → SQLite ({rows:,}-line project, server in another process)",
            ["transfer", "changes", "seconds", "changes/s", "time / direct push"],
            throughput(rows),
        )
    if "noop" in parts:
        print_table(
            f"Sync with nothing to do over HTTP (ms, {20} runs)",
            ["measure", "median", "min", "max"],
            noop(lines),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="lines of the pushed and pulled project")
    parser.add_argument("--lines", type=int, default=LINES, help="lines of the big node")
    parser.add_argument("--parts", default="throughput,noop")
    args = parser.parse_args()
    run(args.parts.split(","), args.rows, args.lines)


if __name__ == "__main__":
    main()

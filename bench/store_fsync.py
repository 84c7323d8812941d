"""Benchmark: durable writes/s of SQLiteStore against the disk's fsync floor.

The floor is raw SQLite in WAL mode with synchronous=FULL committing one row per
transaction: one fsync per write. SQLiteStore's group commit lets concurrent writers
share fsyncs, so with many writers it should beat the floor by a wide margin.

Run from the repository root (the database goes in a temporary directory under --dir,
which must be on the disk you want to measure; tmpfs would measure nothing):

    .venv/bin/python bench/store_fsync.py [--dir .] [--seconds 3] [--value-size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from control_plane.storage import SQLiteStore

CONCURRENCY = (1, 8, 50, 200)


def fsync_floor(path: Path, seconds: float, value: bytes) -> float:
    """Single-row commits per second, each one fsynced."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, value BLOB)")
    commits = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (value) VALUES (?)", (value,))
        conn.execute("COMMIT")
        commits += 1
    conn.close()
    return commits / elapsed


async def store_rate(path: Path, writers: int, seconds: float, value: bytes) -> tuple[float, float]:
    """(durable writes per second, mean writes per commit) with ``writers`` concurrent writers."""
    async with SQLiteStore(str(path)) as store:
        deadline = time.perf_counter() + seconds

        async def write(n: int) -> int:
            done = 0
            revision = await store.create(f"/bench/{n}", value)
            while time.perf_counter() < deadline:
                revision = await store.update(f"/bench/{n}", value, expected_revision=revision)
                done += 1
            return done

        started = time.perf_counter()
        writes = sum(await asyncio.gather(*(write(n) for n in range(writers))))
        elapsed = time.perf_counter() - started
        stats = store.stats
    return writes / elapsed, stats.writes / max(1, stats.commits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="where to put the temporary databases")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--value-size", type=int, default=512, help="bytes per value")
    args = parser.parse_args()
    value = b"x" * args.value_size
    with tempfile.TemporaryDirectory(prefix="skiff-bench-", dir=args.dir) as tmp:
        floor = fsync_floor(Path(tmp) / "floor.db", args.seconds, value)
        print(f"fsync floor (raw SQLite, WAL, synchronous=FULL, 1 row/commit): {floor:,.0f} commits/s")
        print(f"{'writers':>8} {'writes/s':>10} {'x floor':>8} {'writes/commit':>14}")
        for writers in CONCURRENCY:
            rate, per_commit = asyncio.run(store_rate(Path(tmp) / f"store-{writers}.db", writers, args.seconds, value))
            print(f"{writers:>8} {rate:>10,.0f} {rate / floor:>8.2f} {per_commit:>14.1f}")


if __name__ == "__main__":
    main()

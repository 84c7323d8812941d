"""What only the SQLite store does: persistence across restarts and group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from control_plane.storage import KeyValue, SQLiteStore, StoreError, WatchEvent

from .streams import take


async def test_state_and_revisions_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    async with SQLiteStore(path, compaction_window=1_000) as store:
        for i in range(5):
            await store.create(f"/a/{i}", b"v1")
        await store.update("/a/0", b"v2", expected_revision=1)
        await store.delete("/a/1")
        await store.compact(2)

    async with SQLiteStore(path, compaction_window=1_000, ring_size=3) as store:
        assert (store.current_revision, store.compacted_revision) == (7, 2)
        assert await store.get("/a/0") == KeyValue("/a/0", b"v2", 1, 6)
        assert await store.get("/a/1") is None
        assert [kv.key for kv in (await store.list("/a/", revision=5)).items] == [f"/a/{i}" for i in range(5)]
        # Replay reaches behind the (small) ring buffer into the log, then goes live.
        events = store.watch("/a/", after_revision=2)
        assert [e.revision for e in await take(events, 5)] == [3, 4, 5, 6, 7]
        assert await store.create("/a/new", b"v") == 8
        assert await take(events, 1) == [WatchEvent("PUT", "/a/new", 8, b"v", None, 8)]


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    async with SQLiteStore(str(tmp_path / "store.db")) as store:
        revisions = await asyncio.gather(*(store.create(f"/a/{i}", b"v") for i in range(200)))
        assert sorted(revisions) == list(range(1, 201))
        stats = store.stats
        assert stats.writes == 200
        assert stats.commits <= 20, stats
        assert stats.largest_batch >= 10, stats


async def test_close_commits_queued_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    store = SQLiteStore(path)
    await store.start()
    writes = [asyncio.create_task(store.create(f"/a/{i}", b"v")) for i in range(100)]
    await asyncio.sleep(0)  # every write is queued
    await store.close()
    assert sorted(await asyncio.gather(*writes)) == list(range(1, 101))
    with pytest.raises(StoreError):
        await store.create("/a/late", b"v")
    async with SQLiteStore(path) as reopened:
        assert len((await reopened.list("/a/")).items) == 100


async def test_a_cancelled_write_is_still_committed(tmp_path: Path) -> None:
    async with SQLiteStore(str(tmp_path / "store.db")) as store:
        write = asyncio.create_task(store.create("/a/x", b"v"))
        await asyncio.sleep(0)
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        assert await store.create("/a/y", b"v") == 2
        assert await store.get("/a/x") == KeyValue("/a/x", b"v", 1, 1)


class _FailingCommits:
    """Wraps the writer's connection: the next ``failures`` COMMITs fail like a broken disk."""

    def __init__(self, conn: sqlite3.Connection, failures: int):
        self._conn = conn
        self.failures = failures

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)

    def close(self) -> None:
        self._conn.close()


async def test_a_failed_commit_fails_its_batch_and_loses_no_revision(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    async with SQLiteStore(path) as store:
        await store.create("/a/before", b"v")
        writer = store._writer
        assert writer is not None
        writer._conn = _FailingCommits(writer._conn, failures=1)  # type: ignore[assignment]
        results = await asyncio.gather(*(store.create(f"/a/{i}", b"v") for i in range(5)), return_exceptions=True)
        failed = [r for r in results if isinstance(r, StoreError)]
        assert failed and all("disk I/O error" in str(r) for r in failed)
        committed = {f"/a/{i}" for i, r in enumerate(results) if isinstance(r, int)}
        assert len(committed) + len(failed) == 5
        # Revisions continue with no hole where the failed batch was.
        assert await store.create("/a/after", b"v") == 2 + len(committed)
    async with SQLiteStore(path) as reopened:
        log = await take(reopened.watch("", 0), reopened.current_revision)
        assert [e.revision for e in log] == list(range(1, 3 + len(committed)))
        assert {e.key for e in log} == {"/a/before", "/a/after"} | committed

"""The embedded store: SQLite in WAL mode, fsync on every commit, group commit.

Writes go through one writer thread (``sqlite_writer``) and return once committed;
reads run on a small pool of read-only connections (``sqlite_reads``), except gets of
recently written keys, answered from the committed writes kept in memory; watches are
served by a ``WatchHub`` fed with each committed batch, falling back to the revision
log for history older than its ring buffer.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
from collections import OrderedDict
from functools import partial
from types import TracebackType
from typing import Any

from control_plane.storage import sqlite_reads as reads
from control_plane.storage.interface import KeyValue, ListResult, StoreError, WatchEvent
from control_plane.storage.semantics import Applied, CompactOp, WriteOp, check_key
from control_plane.storage.sqlite_schema import open_writer
from control_plane.storage.sqlite_writer import Batch, GroupCommitWriter
from control_plane.storage.stats import StoreStats
from control_plane.storage.watch_hub import WatchHub, WatchStream


class SQLiteStore:
    def __init__(
        self,
        path: str,
        *,
        compaction_window: int = 100_000,  # revisions kept readable by list/watch
        ring_size: int = 10_000,  # recent events kept in memory for watch starts
        max_watch_backlog: int = 10_000,  # a watcher this far behind is cut off
        read_workers: int = 4,
        max_batch: int = 1000,  # operations per commit at most
        latest_size: int = 10_000,  # recently written keys whose current value is kept in memory
    ):
        self._path = path
        self._compaction_window = compaction_window
        self._ring_size = ring_size
        self._read_workers = read_workers
        self._max_batch = max_batch
        self._hub = WatchHub(self._load_history, ring_size=ring_size, max_backlog=max_watch_backlog)
        # The current value of recently written keys, from the committed batches as they are
        # published: a get of one of them needs no read from the database. Filled only from
        # published writes (never from reads, which may be older), so it is never stale: a
        # write is published before it is acknowledged.
        self._latest: OrderedDict[str, KeyValue] = OrderedDict()
        self._latest_size = latest_size
        self._reads: reads.ReadPool | None = None
        self._writer: GroupCommitWriter | None = None

    async def __aenter__(self) -> SQLiteStore:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._writer is not None:
            raise StoreError(f"store {self._path} was already started; open a new SQLiteStore")
        try:
            conn = await asyncio.to_thread(open_writer, self._path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self._path}: {exc}") from exc
        self._reads = reads.ReadPool(self._path, self._read_workers)
        try:
            revision, compacted, recent = await self._reads.run(partial(reads.recent_events, count=self._ring_size))
        except BaseException:
            conn.close()
            self._reads.stop()
            await asyncio.to_thread(self._reads.close)
            self._reads = None
            raise
        self._hub.reset(revision, compacted, recent)
        self._writer = GroupCommitWriter(
            conn,
            asyncio.get_running_loop(),
            self._on_batch,
            revision=revision,
            compacted=compacted,
            compaction_window=self._compaction_window,
            max_batch=self._max_batch,
        )
        self._writer.start()

    async def close(self) -> None:
        """Commit what is queued, stop the writer, end every watch, close connections."""
        writer = self._writer
        if writer is not None:
            writer.stop()
            # Batches posted before the thread exits run on the loop before this returns.
            await asyncio.to_thread(writer.join)
        self._hub.close()
        pool, self._reads = self._reads, None
        if pool is not None:
            pool.stop()
            await asyncio.to_thread(pool.close)

    @property
    def current_revision(self) -> int:
        return self._hub.revision

    @property
    def compacted_revision(self) -> int:
        return self._hub.compacted_revision

    @property
    def stats(self) -> StoreStats:
        writer = self._writer
        return StoreStats(
            writes=writer.writes if writer else 0,
            commits=writer.commits if writer else 0,
            largest_batch=writer.largest_batch if writer else 0,
            watchers=self._hub.watcher_count,
            watchers_cut_off=self._hub.cut_off,
        )

    async def get(self, key: str) -> KeyValue | None:
        latest = self._latest.get(key)
        if latest is not None:
            self._pool()  # closed is closed, cached or not
            return latest
        return await self._pool().run(partial(reads.get, key=key))

    async def list(self, prefix: str, *, revision: int = 0, start_key: str = "", limit: int = 0) -> ListResult:
        read = partial(reads.list_range, prefix=prefix, revision=revision, start_key=start_key, limit=limit)
        return await self._pool().run(read)

    async def create(self, key: str, value: bytes) -> int:
        applied = await self._write(WriteOp("create", key, value))
        return applied.event.revision

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        applied = await self._write(WriteOp("update", key, value, expected_revision))
        return applied.event.revision

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[int, KeyValue]:
        applied = await self._write(WriteOp("delete", key, expected_revision=expected_revision))
        assert applied.prev is not None  # a delete only succeeds on an existing key
        return applied.event.revision, applied.prev

    def watch(self, prefix: str, after_revision: int) -> WatchStream:
        return self._hub.watch(prefix, after_revision)

    async def compact(self, revision: int) -> None:
        await self._submit(CompactOp(revision))

    async def _write(self, op: WriteOp) -> Applied:
        check_key(op.key)
        applied: Applied = await self._submit(op)
        return applied

    async def _submit(self, op: WriteOp | CompactOp) -> Any:
        if self._writer is None:
            raise StoreError("store is not started or already closed")
        # If the caller is cancelled the write still happens; only the answer is lost.
        return await self._writer.submit(op)

    def _on_batch(self, batch: Batch) -> None:
        """On the loop: publish a committed batch to watchers, then answer its writers,
        so a writer that saw its revision can watch from it and find its own event."""
        self._hub.compacted_revision = batch.compacted
        self._remember(batch.events)
        self._hub.publish(batch.events)
        for future, outcome in batch.results:
            if future.done():
                continue  # the caller was cancelled
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _remember(self, events: builtins.list[WatchEvent]) -> None:
        latest = self._latest
        for ev in events:
            if ev.type == "DELETE" or ev.value is None:
                latest.pop(ev.key, None)
            else:
                latest[ev.key] = KeyValue(ev.key, ev.value, ev.create_revision, ev.revision)
                latest.move_to_end(ev.key)
        while len(latest) > self._latest_size:
            latest.popitem(last=False)

    async def _load_history(self, prefix: str, after: int, up_to: int, limit: int) -> builtins.list[WatchEvent]:
        return await self._pool().run(partial(reads.load_events, prefix=prefix, after=after, up_to=up_to, limit=limit))

    def _pool(self) -> reads.ReadPool:
        if self._reads is None:
            raise StoreError("store is not started or already closed")
        return self._reads

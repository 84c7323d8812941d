"""An in-memory store with the SQLite store's semantics and no durability, for unit
tests of the components built on the store."""

from __future__ import annotations

import asyncio
import builtins
from bisect import bisect_right
from types import TracebackType

from control_plane.storage.interface import KeyValue, ListResult, StoreError, WatchEvent
from control_plane.storage.semantics import (
    Applied,
    WriteOp,
    apply_op,
    auto_compact_target,
    check_compactable,
    check_key,
    check_readable,
)
from control_plane.storage.stats import StoreStats
from control_plane.storage.watch_hub import WatchHub, WatchStream


class MemoryStore:
    def __init__(
        self,
        *,
        compaction_window: int = 100_000,
        ring_size: int = 10_000,
        max_watch_backlog: int = 10_000,
    ):
        self._state: dict[str, KeyValue] = {}
        self._log: builtins.list[Applied] = []  # revisions after the compacted one, in order
        self._window = compaction_window
        self._hub = WatchHub(self._load_history, ring_size=ring_size, max_backlog=max_watch_backlog)
        self._writes = 0
        self._open = False

    async def __aenter__(self) -> MemoryStore:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        self._hub.close()

    @property
    def current_revision(self) -> int:
        return self._hub.revision

    @property
    def compacted_revision(self) -> int:
        return self._hub.compacted_revision

    @property
    def stats(self) -> StoreStats:
        return StoreStats(
            writes=self._writes,
            commits=self._writes,
            largest_batch=1 if self._writes else 0,
            watchers=self._hub.watcher_count,
            watchers_cut_off=self._hub.cut_off,
        )

    async def get(self, key: str) -> KeyValue | None:
        self._check_open()
        return self._state.get(key)

    async def list(self, prefix: str, *, revision: int = 0, start_key: str = "", limit: int = 0) -> ListResult:
        self._check_open()
        current = self.current_revision
        if revision in (0, current):
            state, revision = self._state, current
        else:
            check_readable(revision, current, self.compacted_revision)
            state = self._state_at(revision)
        low = max(prefix, start_key)
        keys = sorted(k for k in state if k.startswith(prefix) and k >= low)
        more = 0 < limit < len(keys)
        if more:
            keys = keys[:limit]
        return ListResult([state[k] for k in keys], revision, more)

    async def create(self, key: str, value: bytes) -> int:
        return (await self._write(WriteOp("create", key, value))).event.revision

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        return (await self._write(WriteOp("update", key, value, expected_revision))).event.revision

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[int, KeyValue]:
        applied = await self._write(WriteOp("delete", key, expected_revision=expected_revision))
        assert applied.prev is not None  # a delete only succeeds on an existing key
        return applied.event.revision, applied.prev

    def watch(self, prefix: str, after_revision: int) -> WatchStream:
        return self._hub.watch(prefix, after_revision)

    async def compact(self, revision: int) -> None:
        self._check_open()
        check_compactable(revision, self.current_revision)
        self._compact_to(revision)

    async def _write(self, op: WriteOp) -> Applied:
        applied = self._apply(op)
        # Yield like a real commit would, so concurrent writers interleave in tests; as
        # with SQLite, a writer cancelled here has still written.
        await asyncio.sleep(0)
        return applied

    def _apply(self, op: WriteOp) -> Applied:
        self._check_open()
        check_key(op.key)
        applied = apply_op(op, self._state.get(op.key), self.current_revision + 1)
        current = applied.current
        if current is None:
            del self._state[op.key]
        else:
            self._state[op.key] = current
        self._log.append(applied)
        self._writes += 1
        target = auto_compact_target(applied.event.revision, self.compacted_revision, self._window)
        if target is not None:
            self._compact_to(target)
        self._hub.publish([applied.event])
        return applied

    def _compact_to(self, revision: int) -> None:
        if revision <= self.compacted_revision:
            return
        del self._log[: self._log_index(revision)]
        self._hub.compacted_revision = revision

    def _log_index(self, revision: int) -> int:
        """Index of the first log entry after ``revision``."""
        return bisect_right(self._log, revision, key=lambda applied: applied.event.revision)

    def _state_at(self, revision: int) -> dict[str, KeyValue]:
        state = dict(self._state)
        for applied in reversed(self._log[self._log_index(revision) :]):  # undo, newest first
            if applied.prev is None:
                state.pop(applied.event.key, None)
            else:
                state[applied.event.key] = applied.prev
        return state

    async def _load_history(self, prefix: str, after: int, up_to: int, limit: int) -> builtins.list[WatchEvent]:
        check_readable(after, self.current_revision, self.compacted_revision)
        found: builtins.list[WatchEvent] = []
        for applied in self._log[self._log_index(after) :]:
            event = applied.event
            if event.revision > up_to or len(found) >= limit:
                break
            if event.key.startswith(prefix):
                found.append(event)
        return found

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("store is not started or already closed")

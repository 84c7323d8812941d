"""Group commit: the one thread that writes to SQLite.

The writer takes every operation queued so far, applies each in order with its own
checks inside ONE transaction, commits once (one fsync) and only then hands the
results back to the event loop, so concurrent writers share fsyncs and no write is
acknowledged before it is durable. A failed check fails only its own operation: checks
run before anything is written, so there is nothing to undo.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control_plane.storage.interface import KeyValue, StoreError, WatchEvent
from control_plane.storage.semantics import (
    Applied,
    CompactOp,
    WriteOp,
    apply_op,
    auto_compact_target,
    check_compactable,
)

log = logging.getLogger(__name__)

# Bounds one automatic compaction step so that it never stalls a batch for long.
AUTO_COMPACT_MAX_ROWS = 10_000

Outcome = Applied | StoreError | None  # None: a compaction that succeeded
Request = tuple[WriteOp | CompactOp, "asyncio.Future[Any]"]


@dataclass(frozen=True)
class Batch:
    """What one commit did, handed to the event loop."""

    results: list[tuple[asyncio.Future[Any], Outcome]]
    events: list[WatchEvent]
    revision: int
    compacted: int


class GroupCommitWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[Batch], None],
        *,
        revision: int,
        compacted: int,
        compaction_window: int,
        max_batch: int = 1000,
    ):
        self._conn = conn
        self._loop = loop
        self._on_batch = on_batch
        self._revision = revision
        self._compacted = compacted
        self._window = compaction_window
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="skiff-store-writer", daemon=True)
        # Written by the writer thread only; reading a slightly stale value is fine.
        self.writes = 0
        self.commits = 0
        self.largest_batch = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: WriteOp | CompactOp) -> asyncio.Future[Any]:
        """Queue ``op`` (from the loop thread); the future resolves once it is durable."""
        if self._stopping:
            raise StoreError("store is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((op, future))
        return future

    def stop(self) -> None:
        """Let the writer finish what is queued, then exit (see ``join``)."""
        if not self._stopping:
            self._stopping = True
            self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        """Loop contract: block for one request, drain the rest, commit them as one batch;
        exit after the stop marker, having committed everything queued before it."""
        try:
            while True:
                request = self._queue.get()
                if request is None:
                    return
                batch = [request]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        request = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if request is None:
                        stop = True
                        break
                    batch.append(request)
                self._post(self._commit(batch))
                if stop:
                    return
        finally:
            self._conn.close()

    def _commit(self, batch: list[Request]) -> Batch:
        start_revision, start_compacted = self._revision, self._compacted
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            results = [(future, self._apply(op)) for op, future in batch]
            if self._revision != start_revision:
                self._conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (self._revision,))
            self._auto_compact()
            self._conn.execute("COMMIT")
        except Exception as exc:  # the disk or the database failed: nothing in the batch was written
            log.error("store write batch of %d failed, rolling back: %s", len(batch), exc)
            self._rollback()
            self._revision, self._compacted = start_revision, start_compacted
            failed: list[tuple[asyncio.Future[Any], Outcome]] = [
                (future, StoreError(f"write failed: {exc}")) for _, future in batch
            ]
            return Batch(failed, [], self._revision, self._compacted)
        events = [outcome.event for _, outcome in results if isinstance(outcome, Applied)]
        if events or self._compacted != start_compacted:
            self.commits += 1
        self.writes += len(events)
        self.largest_batch = max(self.largest_batch, len(events))
        return Batch(results, events, self._revision, self._compacted)

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    def _apply(self, op: WriteOp | CompactOp) -> Outcome:
        try:
            if isinstance(op, CompactOp):
                check_compactable(op.revision, self._revision)
                self._compact_to(op.revision)
                return None
            applied = apply_op(op, self._current(op.key), self._revision + 1)
        except StoreError as exc:
            return exc
        self._write(applied)
        self._revision += 1
        return applied

    def _current(self, key: str) -> KeyValue | None:
        sql = "SELECT key, value, create_revision, mod_revision FROM kv WHERE key = ?"
        row = self._conn.execute(sql, (key,)).fetchone()
        return KeyValue(*row) if row else None

    def _write(self, applied: Applied) -> None:
        ev = applied.event
        prev_mod_revision = applied.prev.mod_revision if applied.prev else None
        self._conn.execute(
            "INSERT INTO log (revision, key, type, value, create_revision, prev_value, prev_mod_revision)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ev.revision, ev.key, ev.type, ev.value, ev.create_revision, ev.prev_value, prev_mod_revision),
        )
        if ev.type == "DELETE":
            self._conn.execute("DELETE FROM kv WHERE key = ?", (ev.key,))
        else:
            self._conn.execute(
                "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision",
                (ev.key, ev.value, ev.create_revision, ev.revision),
            )

    def _auto_compact(self) -> None:
        target = auto_compact_target(self._revision, self._compacted, self._window)
        if target is not None:
            self._compact_to(min(target, self._compacted + AUTO_COMPACT_MAX_ROWS))

    def _compact_to(self, revision: int) -> None:
        if revision <= self._compacted:
            return
        self._conn.execute("DELETE FROM log WHERE revision <= ?", (revision,))
        self._conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (revision,))
        self._compacted = revision

    def _post(self, batch: Batch) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_batch, batch)
        except RuntimeError:
            log.warning("event loop closed; %d store results not delivered", len(batch.results))

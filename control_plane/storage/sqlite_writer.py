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
# Keys looked up per query (SQLite allows 999 parameters in old builds).
READ_CHUNK = 500

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
        # Requests travel in lists: those submitted during one event-loop iteration are
        # handed to the thread at once, so a burst wakes it once rather than per write.
        self._queue: queue.SimpleQueue[list[Request] | None] = queue.SimpleQueue()
        self._pending: list[Request] = []
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
        if not self._pending:
            self._loop.call_soon(self._hand_over)
        self._pending.append((op, future))
        return future

    def _hand_over(self) -> None:
        """On the loop: pass what was submitted since the last hand-over to the thread."""
        pending, self._pending = self._pending, []
        if pending:
            self._queue.put(pending)

    def stop(self) -> None:
        """Let the writer finish what is queued, then exit (see ``join``)."""
        if not self._stopping:
            self._stopping = True
            self._hand_over()
            self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        """Loop contract: block for requests, drain the rest, commit them in batches of at
        most ``max_batch``; exit after the stop marker, having committed everything queued
        before it."""
        try:
            backlog: list[Request] = []
            stop = False
            while True:
                if not backlog:
                    if stop:
                        return
                    requests = self._queue.get()
                    if requests is None:
                        return
                    backlog = requests
                while not stop and len(backlog) < self._max_batch:
                    try:
                        requests = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if requests is None:
                        stop = True
                    else:
                        backlog += requests
                batch, backlog = backlog[:self._max_batch], backlog[self._max_batch:]
                self._post(self._commit(batch))
        finally:
            self._conn.close()

    def _commit(self, batch: list[Request]) -> Batch:
        start_revision, start_compacted = self._revision, self._compacted
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            writes = _BatchWrites(self._read_current({op.key for op, _ in batch if isinstance(op, WriteOp)}))
            results = [(future, self._apply(op, writes)) for op, future in batch]
            writes.flush(self._conn)
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

    def _apply(self, op: WriteOp | CompactOp, writes: _BatchWrites) -> Outcome:
        try:
            if isinstance(op, CompactOp):
                check_compactable(op.revision, self._revision)
                writes.flush(self._conn)  # the batch's earlier writes reach the log before it is cut
                self._compact_to(op.revision)
                return None
            applied = apply_op(op, writes.current(op.key), self._revision + 1)
        except StoreError as exc:
            return exc
        writes.add(applied)
        self._revision += 1
        return applied

    def _read_current(self, keys: set[str]) -> dict[str, KeyValue | None]:
        """The stored state of ``keys`` (None: absent), in as few queries as possible."""
        current: dict[str, KeyValue | None] = dict.fromkeys(keys)
        wanted = list(keys)
        for i in range(0, len(wanted), READ_CHUNK):
            chunk = wanted[i:i + READ_CHUNK]
            sql = ("SELECT key, value, create_revision, mod_revision FROM kv WHERE key IN "
                   f"({','.join('?' * len(chunk))})")
            for row in self._conn.execute(sql, chunk):
                current[row[0]] = KeyValue(*row)
        return current

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


class _BatchWrites:
    """The writes of one batch: each operation is checked against the state the batch's
    earlier operations left (kept here), and the rows go to SQLite together, a statement
    per table rather than per operation, before the commit (or a compaction) needs them."""

    def __init__(self, current: dict[str, KeyValue | None]):
        self._state = current  # every key the batch writes: its state so far
        self._log_rows: list[tuple[Any, ...]] = []
        self._touched: dict[str, None] = {}  # keys written since the last flush, in order

    def current(self, key: str) -> KeyValue | None:
        return self._state[key]

    def add(self, applied: Applied) -> None:
        ev = applied.event
        prev_mod_revision = applied.prev.mod_revision if applied.prev else None
        self._log_rows.append((ev.revision, ev.key, ev.type, ev.value, ev.create_revision, ev.prev_value,
                               prev_mod_revision))
        self._state[ev.key] = applied.current
        self._touched[ev.key] = None

    def flush(self, conn: sqlite3.Connection) -> None:
        if self._log_rows:
            conn.executemany(
                "INSERT INTO log (revision, key, type, value, create_revision, prev_value, prev_mod_revision)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", self._log_rows)
            self._log_rows = []
        if not self._touched:
            return
        final = [(key, self._state[key]) for key in self._touched]
        self._touched = {}
        # The key's final state replaces the row whole: a key deleted and created again in
        # one batch takes its new create_revision.
        conn.executemany("INSERT OR REPLACE INTO kv (key, value, create_revision, mod_revision) VALUES (?, ?, ?, ?)",
                         [(kv.key, kv.value, kv.create_revision, kv.mod_revision) for _, kv in final if kv is not None])
        conn.executemany("DELETE FROM kv WHERE key = ?", [(key,) for key, kv in final if kv is None])

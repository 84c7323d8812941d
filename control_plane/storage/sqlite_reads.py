"""Reads against the SQLite store, off the event loop.

Each read runs in a transaction on a read-only connection owned by a worker thread, so
the revision it reports and the rows it returns come from the same WAL snapshot;
readers never wait for the writer.

Reads submitted during one event-loop iteration travel to a worker together and share
one transaction (each read is still consistent, and sees every write acknowledged
before it was submitted), and their answers come back together: one thread wake-up and
one loop wake-up per batch rather than per read, which is most of a point read's cost.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from control_plane.storage.interface import CompactedError, KeyValue, ListResult, StoreError, WatchEvent
from control_plane.storage.semantics import check_readable
from control_plane.storage.sqlite_schema import EVENT_COLUMNS, event_from_row, open_reader, read_meta

T = TypeVar("T")
Read = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]

log = logging.getLogger(__name__)


class ReadPool:
    """A few threads, each with its own read-only connection."""

    def __init__(self, path: str, workers: int = 4):
        self._path = path
        self._pending: list[Read] = []
        self._queue: queue.SimpleQueue[list[Read] | None] = queue.SimpleQueue()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"skiff-store-read-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    async def run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        if self._stopped:
            raise StoreError(f"store {self._path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._hand_over)
        self._pending.append((read, future))
        return await future

    def _hand_over(self) -> None:
        """On the loop: give the reads submitted since the last hand-over to a worker."""
        pending, self._pending = self._pending, []
        if pending:
            self._queue.put(pending)

    def stop(self) -> None:
        """On the loop: hand over what is submitted, refuse new reads, let the workers
        finish and exit (``close`` waits for them)."""
        if not self._stopped:
            self._stopped = True
            self._hand_over()
            for _ in self._threads:
                self._queue.put(None)

    def _work(self) -> None:
        """Loop contract: take a batch of reads, run them in one transaction, post the
        answers to the loop at once; exit at the stop marker."""
        conn: sqlite3.Connection | None = None
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            try:
                if conn is None:
                    conn = open_reader(self._path)
                    with self._lock:
                        self._conns.append(conn)
                conn.execute("BEGIN")
            except sqlite3.Error as exc:
                error = StoreError(f"read from store {self._path} failed: {exc}")
                results = [(future, None, error) for _, future in batch]
            else:
                for read, future in batch:
                    try:
                        results.append((future, read(conn), None))
                    except (sqlite3.Error, UnicodeEncodeError) as exc:
                        results.append((future, None, StoreError(f"read from store {self._path} failed: {exc}")))
                    except Exception as exc:  # e.g. CompactedError: the reader's answer
                        results.append((future, None, exc))
                _end_transaction(conn, self._path)
            self._post(results)

    def _post(self, results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        if not results:
            return
        loop = results[0][0].get_loop()  # the reads of a batch come from one loop iteration
        try:
            loop.call_soon_threadsafe(_deliver, results)
        except RuntimeError:
            log.warning("event loop closed; %d store read results not delivered", len(results))

    def close(self) -> None:
        """Blocking: waits for the reads handed over (call ``stop`` on the loop first, or
        reads submitted in the current loop iteration are never answered)."""
        self._stopped = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


def _end_transaction(conn: sqlite3.Connection, path: str) -> None:
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        log.warning("ending a read transaction on %s failed: %s; rolling back", path, exc)
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open


def _deliver(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():
            continue  # the reader was cancelled
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (None: no bound).

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, like Python."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip past them
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


def _key_range(prefix: str, start_key: str, column: str) -> tuple[str, list[Any]]:
    low = max(prefix, start_key)
    high = prefix_end(prefix)
    if high is None:
        return f"{column} >= ?", [low]
    return f"{column} >= ? AND {column} < ?", [low, high]


def get(conn: sqlite3.Connection, key: str) -> KeyValue | None:
    row = conn.execute("SELECT key, value, create_revision, mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
    return KeyValue(*row) if row else None


def list_range(conn: sqlite3.Connection, prefix: str, revision: int, start_key: str, limit: int) -> ListResult:
    current, compacted = read_meta(conn)
    fetch = limit + 1 if limit > 0 else -1  # one extra row tells whether there is more
    if revision in (0, current):
        where, args = _key_range(prefix, start_key, "key")
        sql = f"SELECT key, value, create_revision, mod_revision FROM kv WHERE {where} ORDER BY key LIMIT ?"
        rows = conn.execute(sql, [*args, fetch]).fetchall()
        revision = current
    else:
        check_readable(revision, current, compacted)
        rows = _list_past(conn, prefix, revision, start_key, fetch)
    more = 0 < limit < len(rows)
    items = [KeyValue(*row) for row in (rows[:limit] if more else rows)]
    return ListResult(items, revision, more)


def _list_past(conn: sqlite3.Connection, prefix: str, revision: int, start_key: str, fetch: int) -> list[Any]:
    """The keys as of ``revision``: the current state, except that a key written since
    takes its state from before the first such write (absent if that write created it)."""
    where, args = _key_range(prefix, start_key, "key")
    sql = f"""
        WITH changed AS (
            SELECT key, MIN(revision) AS first_after FROM log
            WHERE revision > ? AND {where}
            GROUP BY key
        )
        SELECT key, value, create_revision, mod_revision FROM kv
        WHERE {where} AND key NOT IN (SELECT key FROM changed)
        UNION ALL
        SELECT log.key, log.prev_value, log.create_revision, log.prev_mod_revision
        FROM changed JOIN log ON log.revision = changed.first_after
        WHERE log.prev_mod_revision IS NOT NULL
        ORDER BY 1
        LIMIT ?
    """
    return conn.execute(sql, [revision, *args, *args, fetch]).fetchall()


def load_events(conn: sqlite3.Connection, prefix: str, after: int, up_to: int, limit: int) -> list[WatchEvent]:
    """Watch history: events under ``prefix`` with after < revision <= up_to."""
    _, compacted = read_meta(conn)
    if after < compacted:
        raise CompactedError(after, compacted)
    where, args = _key_range(prefix, "", "key")
    sql = f"SELECT {EVENT_COLUMNS} FROM log WHERE revision > ? AND revision <= ? AND {where} ORDER BY revision LIMIT ?"
    return [event_from_row(row) for row in conn.execute(sql, [after, up_to, *args, limit])]


def recent_events(conn: sqlite3.Connection, count: int) -> tuple[int, int, list[WatchEvent]]:
    """(current revision, compacted revision, the last ``count`` events), to warm the ring buffer."""
    current, compacted = read_meta(conn)
    rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM log ORDER BY revision DESC LIMIT ?", (count,)).fetchall()
    return current, compacted, [event_from_row(row) for row in reversed(rows)]

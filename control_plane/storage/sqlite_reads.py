"""Reads against the SQLite store, off the event loop.

Each read runs in one transaction on a read-only connection owned by a worker thread,
so the revision it reports and the rows it returns come from the same WAL snapshot;
readers never wait for the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from control_plane.storage.interface import CompactedError, KeyValue, ListResult, StoreError, WatchEvent
from control_plane.storage.semantics import check_readable
from control_plane.storage.sqlite_schema import EVENT_COLUMNS, event_from_row, open_reader, read_meta

T = TypeVar("T")


class ReadPool:
    """A few threads, each with its own read-only connection."""

    def __init__(self, path: str, workers: int = 4):
        self._path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skiff-store-read")

    async def run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, read)

    def _run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return read(conn)
            finally:
                conn.execute("COMMIT")
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise StoreError(f"read from store {self._path} failed: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_reader(self._path)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Blocking: waits for running reads."""
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


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

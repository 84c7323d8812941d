"""The SQLite schema and how connections to it are opened.

``log`` holds every write (one row per revision) with the key's previous value and
mod_revision, so a read at a past revision can undo later writes; ``kv`` is the current
state; ``meta`` holds the current and compacted revisions, so both survive restarts
even when compaction has emptied the log.
"""

from __future__ import annotations

import sqlite3

from control_plane.storage.interface import WatchEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('PUT', 'DELETE')),
    value BLOB,                 -- NULL for DELETE
    create_revision INTEGER NOT NULL,
    prev_value BLOB,            -- NULL when the write created the key
    prev_mod_revision INTEGER   -- NULL when the write created the key
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
"""

EVENT_COLUMNS = "revision, key, type, value, prev_value, create_revision"


def _connect(path: str) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit. check_same_thread is off because a
    # connection is opened in one thread and used (by one thread at a time) in another.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def open_writer(path: str) -> sqlite3.Connection:
    """The one connection that writes: WAL, and an fsync on every commit."""
    conn = _connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(SCHEMA)
    return conn


def open_reader(path: str) -> sqlite3.Connection:
    conn = _connect(path)
    conn.execute("PRAGMA query_only = ON")
    return conn


def read_meta(conn: sqlite3.Connection) -> tuple[int, int]:
    """(current revision, compacted revision)."""
    rows = dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('revision', 'compacted')"))
    return rows["revision"], rows["compacted"]


def event_from_row(row: tuple[int, str, str, bytes | None, bytes | None, int]) -> WatchEvent:
    revision, key, kind, value, prev_value, create_revision = row
    return WatchEvent("PUT" if kind == "PUT" else "DELETE", key, revision, value, prev_value, create_revision)

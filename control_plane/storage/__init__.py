"""The key-value store behind the API server: the contract, and its SQLite and
in-memory backends."""

from control_plane.storage.interface import (
    CompactedError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionConflictError,
    Store,
    StoreError,
    WatchEvent,
)
from control_plane.storage.memory import MemoryStore
from control_plane.storage.sqlite import SQLiteStore
from control_plane.storage.stats import StoreStats
from control_plane.storage.watch_hub import WatcherTooSlowError

__all__ = [
    "CompactedError",
    "FutureRevisionError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "ListResult",
    "MemoryStore",
    "RevisionConflictError",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreStats",
    "WatchEvent",
    "WatcherTooSlowError",
]

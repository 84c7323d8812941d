"""Rules every store backend applies the same way: the compare-and-swap checks of a
write, which revisions are readable, and when automatic compaction kicks in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from control_plane.storage.interface import (
    CompactedError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionConflictError,
    StoreError,
    WatchEvent,
)


@dataclass(frozen=True)
class WriteOp:
    kind: Literal["create", "update", "delete"]
    key: str
    value: bytes = b""
    expected_revision: int = 0  # 0 = unconditional (update/delete only)


@dataclass(frozen=True)
class CompactOp:
    revision: int


@dataclass(frozen=True)
class Applied:
    """A write that passed its checks: the event it makes and the key's state before it.

    ``prev`` is kept in the log so a read at a past revision can undo later writes."""

    event: WatchEvent
    prev: KeyValue | None

    @property
    def current(self) -> KeyValue | None:
        """The key's state after this write (None once deleted)."""
        ev = self.event
        if ev.type == "DELETE" or ev.value is None:
            return None
        return KeyValue(ev.key, ev.value, ev.create_revision, ev.revision)


def check_key(key: str) -> None:
    """Refuse keys SQLite cannot store up front, so one bad write cannot fail a whole batch."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StoreError(f"key {key!r} is not valid UTF-8: {exc.reason}") from None
    if not key:
        raise StoreError("empty key")


def apply_op(op: WriteOp, current: KeyValue | None, revision: int) -> Applied:
    """Check ``op`` against the key's ``current`` state and return the write it makes at
    ``revision``. Raises KeyExistsError / KeyNotFoundError / RevisionConflictError."""
    if op.kind == "create":
        if current is not None:
            raise KeyExistsError(op.key)
        return Applied(WatchEvent("PUT", op.key, revision, op.value, None, revision), None)
    if current is None:
        raise KeyNotFoundError(op.key)
    if op.expected_revision and op.expected_revision != current.mod_revision:
        raise RevisionConflictError(op.key, op.expected_revision, current.mod_revision)
    if op.kind == "update":
        event = WatchEvent("PUT", op.key, revision, op.value, current.value, current.create_revision)
    else:
        event = WatchEvent("DELETE", op.key, revision, None, current.value, current.create_revision)
    return Applied(event, current)


def check_readable(revision: int, current: int, compacted: int) -> None:
    """A past revision R can be read while every log entry after R is still kept."""
    if revision > current:
        raise FutureRevisionError(revision, current)
    if revision < compacted:
        raise CompactedError(revision, compacted)


def check_compactable(revision: int, current: int) -> None:
    if revision > current:
        raise FutureRevisionError(revision, current)


def auto_compact_target(revision: int, compacted: int, window: int) -> int | None:
    """The revision to compact to so that ``window`` revisions stay readable, or None.

    Waits until a tenth of the window (at most 1000 revisions) is due, so the deletes
    come in ranges rather than one row per write."""
    step = max(1, min(1000, window // 10))
    target = revision - window
    if target - compacted < step:
        return None
    return target

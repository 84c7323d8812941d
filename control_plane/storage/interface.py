"""The store contract the API server is written against.

Shaped after etcd's KV + watch API so an etcd backend can slot in: every write makes
a new, strictly increasing revision; an object's resourceVersion is the revision of
its last write (its ``mod_revision``); a watch replays the revision log from a point
and then follows it live; compaction drops log history older than a revision.

Values are opaque bytes (the API server stores JSON). Keys are strings; prefixes end
with "/" so that ``/ns/a/`` never matches ``/ns/ab/...``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the revision the list was read at
    more: bool  # True when ``limit`` cut the list short


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    key: str
    revision: int  # revision of this write
    value: bytes | None  # the new value; None for DELETE
    prev_value: bytes | None  # the value before this write; None when created
    create_revision: int  # of the key this write touched

    @property
    def created(self) -> bool:
        return self.type == "PUT" and self.prev_value is None


class StoreError(Exception):
    pass


class KeyExistsError(StoreError):
    def __init__(self, key: str):
        super().__init__(f"key {key} already exists")
        self.key = key


class KeyNotFoundError(StoreError):
    def __init__(self, key: str):
        super().__init__(f"key {key} not found")
        self.key = key


class RevisionConflictError(StoreError):
    """The key's mod_revision was not the expected one (optimistic concurrency)."""

    def __init__(self, key: str, expected: int, actual: int):
        super().__init__(f"key {key}: expected revision {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class CompactedError(StoreError):
    """The revision asked for is older than the oldest one kept."""

    def __init__(self, requested: int, compacted: int):
        super().__init__(f"revision {requested} has been compacted (oldest kept: {compacted})")
        self.requested = requested
        self.compacted = compacted


class FutureRevisionError(StoreError):
    def __init__(self, requested: int, current: int):
        super().__init__(f"revision {requested} is newer than the current revision {current}")
        self.requested = requested
        self.current = current


class Store(Protocol):
    """All methods are coroutines safe to call concurrently from one event loop.

    A write returns only once it is durable (committed and fsynced); writes issued
    concurrently may share one commit (group commit).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def current_revision(self) -> int: ...

    @property
    def compacted_revision(self) -> int: ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(self, prefix: str, *, revision: int = 0, start_key: str = "", limit: int = 0) -> ListResult:
        """Keys under ``prefix`` in key order, as of ``revision`` (0 = now), starting at
        ``start_key`` (inclusive) when given; at most ``limit`` items when > 0.
        Raises CompactedError / FutureRevisionError for revisions out of range."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Create; returns the new revision. Raises KeyExistsError."""
        ...

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        """Compare-and-swap on the key's mod_revision (0 = unconditional).
        Raises KeyNotFoundError, RevisionConflictError."""
        ...

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[int, KeyValue]:
        """Delete; returns (revision, the deleted value). Raises KeyNotFoundError,
        RevisionConflictError."""
        ...

    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[WatchEvent]:
        """Every write under ``prefix`` with revision > ``after_revision``, in order,
        then live ones as they commit. Raises CompactedError (on first iteration) if
        history after ``after_revision`` has been compacted away."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget history at and below ``revision`` (current values are kept)."""
        ...

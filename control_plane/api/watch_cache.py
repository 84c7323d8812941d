"""Decoded and encoded forms of recent store events, shared by every watch.

Every watcher of a resource receives the same store events; without sharing, each one
would parse the stored JSON (twice for an update: the new and the previous value) and
serialize the object again. Here each (revision, new-or-previous value) is parsed and
serialized once per process, and the bytes are reused by every watcher that sends it.

Objects handed out are shared: callers must not modify them.
"""

from __future__ import annotations

from typing import Any

from control_plane.api import json_codec
from control_plane.storage.interface import WatchEvent

# Enough for every watcher to find a whole published batch (the store commits at most
# 1000 writes at once) while memory stays bounded.
CACHE_SIZE = 4096


class EventCache:
    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        # (revision, previous?) -> [object, its JSON or None]; insertion order = age
        self._entries: dict[tuple[int, bool], list[Any]] = {}

    def _entry(self, ev: WatchEvent, previous: bool) -> list[Any]:
        key = (ev.revision, previous)
        entry = self._entries.get(key)
        if entry is None:
            raw = ev.prev_value if previous else ev.value
            assert raw is not None
            obj: dict[str, Any] = json_codec.loads(raw, json_nesting=False)  # stored: json read it before
            # An event's objects, even the previous value, carry the event's revision (as Kubernetes sends).
            obj["metadata"]["resourceVersion"] = str(ev.revision)
            entry = [obj, None]
            entries = self._entries
            if len(entries) >= self._size:
                del entries[next(iter(entries))]
            entries[key] = entry
        return entry

    def object(self, ev: WatchEvent, previous: bool) -> dict[str, Any]:
        """The event's new (or previous) value with its resourceVersion; shared, read-only."""
        obj: dict[str, Any] = self._entry(ev, previous)[0]
        return obj

    def encoded(self, ev: WatchEvent, previous: bool) -> bytes:
        """``object(ev, previous)`` as compact JSON."""
        entry = self._entry(ev, previous)
        if entry[1] is None:
            entry[1] = json_codec.dumps(entry[0])
        data: bytes = entry[1]
        return data

"""What a controller wrote itself, until its informer has caught up.

A controller reads its informer's cache, which lags behind the controller's own writes:
right after creating a pod the cache may not show it yet, and a second sync would create
another. Kubernetes answers this with "expectations"; `OwnWrites` is the same guard in
the shape of an overlay: every object the controller writes (the server's reply) and
every object it deletes is remembered, and `view`/`overlay` show the cache as it will
look once the informer has caught up. An entry is dropped when the informer delivers a
version at least as new (resourceVersions are store revisions and only grow), when it
delivers the deletion, or after ``ttl`` seconds, so a lost event never wedges a sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from skiff.client.informer import object_key

Obj = dict[str, Any]
DEFAULT_TTL = 60.0


def _revision(obj: Mapping[str, Any] | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


@dataclass
class _Entry:
    obj: Obj | None  # None: deleted by us
    revision: int
    at: float


class OwnWrites:
    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    # ---- recording ---------------------------------------------------------------------

    def written(self, obj: Mapping[str, Any]) -> None:
        """The server's reply to a create, update or patch by this controller."""
        if not isinstance(obj, Mapping) or not (obj.get("metadata") or {}).get("name"):
            return
        self._entries[object_key(obj)] = _Entry(dict(obj), _revision(obj), self._clock())

    def deleted(self, key: str) -> None:
        """``namespace/name`` deleted (gone at once, not lingering) by this controller."""
        self._entries[key] = _Entry(None, 0, self._clock())

    # ---- informer events ---------------------------------------------------------------

    def observe(self, obj: Mapping[str, Any]) -> None:
        """An add or update delivered by the informer."""
        key = object_key(obj)
        entry = self._entries.get(key)
        if entry is not None and entry.obj is not None and _revision(obj) >= entry.revision:
            del self._entries[key]

    def observe_delete(self, obj: Mapping[str, Any]) -> None:
        self._entries.pop(object_key(obj), None)

    # ---- reading -----------------------------------------------------------------------

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.at > self.ttl:
            del self._entries[key]
            return None
        return entry

    def view(self, key: str, cached: Obj | None) -> Obj | None:
        """The object under ``key`` as the informer will show it once caught up."""
        entry = self._live(key)
        if entry is None:
            return cached
        if entry.obj is None:
            return None
        if cached is not None and _revision(cached) >= entry.revision:
            return cached
        return entry.obj

    def overlay(self, cached: Iterable[Obj], match: Callable[[Obj], bool]) -> list[Obj]:
        """``cached`` (the objects of one scope, e.g. a Job's pods) with our own newer
        writes substituted, our deletions removed and our creations not yet seen added;
        ``match`` says which written objects belong to the scope."""
        out: list[Obj] = []
        seen: set[str] = set()
        for obj in cached:
            key = object_key(obj)
            seen.add(key)
            fresh = self.view(key, obj)
            if fresh is not None and match(fresh):
                out.append(fresh)
        for key in list(self._entries):
            if key in seen:
                continue
            entry = self._live(key)
            if entry is not None and entry.obj is not None and match(entry.obj):
                out.append(entry.obj)
        return out

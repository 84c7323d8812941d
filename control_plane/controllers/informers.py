"""Indexes over a shared informer's cache, kept current by the informer's own handlers.

Controllers ask "the pods of namespace X" on every sync; scanning every cached pod of the
cluster for that is what client-go's namespace indexer avoids, and so does this.
"""

from __future__ import annotations

from typing import Any

from control_plane.controllers.workload_pods import meta
from skiff.client.informer import Informer, object_key

Obj = dict[str, Any]


class NamespaceIndex:
    """The informer's objects grouped by namespace. Build it before the informer starts
    (the usual case: in a controller's constructor); objects already cached are indexed
    at once too."""

    def __init__(self, informer: Informer) -> None:
        self._by_ns: dict[str, dict[str, Obj]] = {}
        for obj in informer.list():
            self._put(obj)
        informer.add_handlers(on_add=self._put, on_update=lambda old, new: self._put(new), on_delete=self._drop)

    def _put(self, obj: Obj) -> None:
        md = meta(obj)
        self._by_ns.setdefault(str(md.get("namespace") or ""), {})[str(md.get("name"))] = obj

    def _drop(self, obj: Obj) -> None:
        md = meta(obj)
        ns = str(md.get("namespace") or "")
        objs = self._by_ns.get(ns)
        if objs is not None:
            objs.pop(str(md.get("name")), None)
            if not objs:
                del self._by_ns[ns]

    def list(self, namespace: str) -> list[Obj]:
        return list((self._by_ns.get(namespace) or {}).values())


def _revision(obj: Obj) -> int | None:
    try:
        return int(meta(obj).get("resourceVersion") or "")
    except ValueError:
        return None


class WrittenVersions:
    """The resourceVersion of this controller's latest write to each object, until the
    informer's cache shows that version or a newer one.

    A sync that starts from a cached copy older than our own last write would compute
    from data we know is stale and end in a conflict; `stale` says to skip it instead:
    the watch event of our write is on its way and queues the key again. resourceVersions
    are store revisions, so they compare as integers.
    """

    def __init__(self) -> None:
        self._written: dict[str, int] = {}

    def wrote(self, obj: Obj) -> None:
        rv = _revision(obj)
        if rv is not None:
            key = object_key(obj)
            self._written[key] = max(rv, self._written.get(key, 0))

    def stale(self, cached: Obj) -> bool:
        key = object_key(cached)
        written = self._written.get(key)
        if written is None:
            return False
        rv = _revision(cached)
        if rv is None or rv >= written:
            del self._written[key]
            return False
        return True

    def forget(self, obj: Obj) -> None:
        self._written.pop(object_key(obj), None)

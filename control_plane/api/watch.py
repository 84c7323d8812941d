"""Watch: Kubernetes' event stream over a store watch.

Semantics (Kubernetes' "resourceVersion semantics" for watch):
- ``resourceVersion`` unset or "0": start with synthetic ADDED events for the objects
  that exist now, then follow;
- ``resourceVersion=N``: every change after N; N older than the kept history ends
  with an ERROR event carrying a 410 Expired Status (what clients relist on);
- ``sendInitialEvents=true`` (with ``resourceVersionMatch=NotOlderThan`` and bookmarks):
  the ADDED events, then a BOOKMARK annotated ``k8s.io/initial-events-end: "true"``;
- label and field selectors turn a change that moves an object into (out of) the
  selection into ADDED (DELETED), as Kubernetes' watch cache does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from control_plane.api import errors
from control_plane.api.objects import ListOptions, Objects, matches
from control_plane.api.watch_cache import EventCache
from control_plane.storage.interface import CompactedError, StoreError, WatchEvent
from skiff.api.resources import ResourceType

log = logging.getLogger(__name__)

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass
class WatchOptions:
    list_options: ListOptions
    allow_bookmarks: bool = False
    send_initial_events: bool | None = None
    timeout_seconds: float = 1800.0
    bookmark_interval: float = 10.0


Event = tuple[str, dict[str, Any]]
# (type, object, the object's JSON when already encoded: shared by the watchers of a store event)
Item = tuple[str, dict[str, Any], bytes | None]

INITIAL_BATCH = 500  # initial ADDED events sent per write
MAX_BATCH = 1000  # store events taken per write, at most


def error_event(err: errors.ApiError) -> Event:
    return "ERROR", err.to_status()


class WatchStream:
    """Produces the events of one watch request, in order, as (type, object) pairs."""

    def __init__(self, objects: Objects, rt: ResourceType, namespace: str | None, opts: WatchOptions,
                 clock: Callable[[], float] = time.monotonic):
        self.objects = objects
        self.rt = rt
        self.namespace = namespace
        self.opts = opts
        self.clock = clock
        self.last_revision = 0
        self.cache: EventCache = objects.event_cache
        lo = opts.list_options
        self._selective = lo.label_selector is not None or lo.field_selector is not None

    def validate(self) -> None:
        o = self.opts
        lo = o.list_options
        if o.send_initial_events is not None:
            if lo.resource_version_match != "NotOlderThan":
                raise errors.invalid("ListOptions", "", [errors.Cause(
                    "resourceVersionMatch", "FieldValueForbidden",
                    "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")])
            if o.send_initial_events and not o.allow_bookmarks:
                raise errors.invalid("ListOptions", "", [errors.Cause(
                    "allowWatchBookmarks", "FieldValueForbidden",
                    "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true")])
        elif lo.resource_version_match:
            raise errors.invalid("ListOptions", "", [errors.Cause(
                "resourceVersionMatch", "FieldValueForbidden",
                "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")])

    def _bookmark(self, annotations: dict[str, str] | None = None) -> Event:
        md: dict[str, Any] = {"resourceVersion": str(self.last_revision)}
        if annotations:
            md["annotations"] = annotations
        return "BOOKMARK", {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": md}

    async def events(self) -> AsyncIterator[Event]:
        """The events one by one (objects of store events are shared by all watchers: read-only)."""
        async for batch in self.batches():
            for etype, obj, _ in batch:
                yield etype, obj

    async def batches(self) -> AsyncIterator[list[Item]]:
        """The events in order, in batches of those ready at once (a server writes each
        batch at once: one TLS record and one send instead of one per event)."""
        lo = self.opts.list_options
        rv = lo.resource_version
        initial = self.opts.send_initial_events
        if initial is None:
            initial = rv in ("", "0")
        start = 0
        if initial:
            listed = await self.objects.list(self.rt, self.namespace, ListOptions(
                label_selector=lo.label_selector, field_selector=lo.field_selector))
            start = int(listed["metadata"]["resourceVersion"])
            self.last_revision = start
            items = listed["items"]
            for i in range(0, len(items), INITIAL_BATCH):
                yield [("ADDED", obj, None) for obj in items[i:i + INITIAL_BATCH]]
            if self.opts.send_initial_events:
                yield [self._item(self._bookmark({INITIAL_EVENTS_END: "true"}))]
        else:
            try:
                start = int(rv)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion: {rv!r}") from None
            self.last_revision = start
        async for batch in self._follow(start):
            yield batch

    @staticmethod
    def _item(event: Event) -> Item:
        return event[0], event[1], None

    async def _follow(self, start: int) -> AsyncIterator[list[Item]]:
        deadline = self.clock() + self.opts.timeout_seconds
        watch = self.objects.store.watch(self.rt.list_prefix(self.namespace), start)
        it = watch.__aiter__()
        # Events the store has ready beyond the first awaited one (its WatchStream can say).
        take_ready: Callable[[int], list[WatchEvent]] | None = getattr(it, "take_ready", None)
        next_event: asyncio.Task[WatchEvent] | None = None
        try:
            while True:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return
                if next_event is None:
                    next_event = asyncio.ensure_future(it.__anext__())
                wait = min(remaining, self.opts.bookmark_interval) if self.opts.allow_bookmarks else remaining
                done, _ = await asyncio.wait({next_event}, timeout=wait)
                if not done:
                    if self.opts.allow_bookmarks and remaining > wait:
                        yield [self._item(self._bookmark())]
                    continue
                task, next_event = next_event, None
                try:
                    store_event = task.result()
                except StopAsyncIteration:
                    return
                except CompactedError as e:
                    yield [self._item(error_event(errors.gone(f"too old resource version: {start} ({e.compacted})")))]
                    return
                except StoreError as e:  # e.g. this watcher fell too far behind: the client re-watches
                    log.info("ending watch on %s: %s", self.rt.plural, e)
                    return
                store_events = [store_event]
                if take_ready is not None:
                    store_events += take_ready(MAX_BATCH - 1)
                batch: list[Item] = []
                for ev in store_events:
                    self.last_revision = ev.revision
                    item = self._convert(ev)
                    if item is not None:
                        batch.append(item)
                if batch:
                    yield batch
        finally:
            if next_event is not None:
                next_event.cancel()
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except (StopAsyncIteration, RuntimeError, StoreError):
                    pass

    def _convert(self, ev: WatchEvent) -> Item | None:
        kind = self._kind(ev)
        if kind is None:
            return None
        etype, previous = kind
        cache = self.cache
        return etype, cache.object(ev, previous), cache.encoded(ev, previous)

    def _kind(self, ev: WatchEvent) -> tuple[str, bool] | None:
        """(event type, whether it carries the previous value) or None when the watcher
        does not see the change."""
        if not self._selective:  # everything matches: no need to look inside
            if ev.type == "DELETE":
                return ("DELETED", True) if ev.prev_value is not None else None
            if ev.value is None:
                return None
            return ("ADDED", False) if ev.prev_value is None else ("MODIFIED", False)
        lo = self.opts.list_options
        cache = self.cache
        new_ok = ev.value is not None and matches(self.rt, cache.object(ev, False), lo)
        old_ok = ev.prev_value is not None and matches(self.rt, cache.object(ev, True), lo)
        if ev.type == "DELETE":
            return ("DELETED", True) if old_ok else None
        if ev.value is None:
            return None
        if new_ok and ev.prev_value is None:
            return "ADDED", False
        if new_ok and old_ok:
            return "MODIFIED", False
        if new_ok:
            return "ADDED", False
        if old_ok:
            return "DELETED", False  # left the selection: its latest state, as Kubernetes sends
        return None

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
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from control_plane.api import errors
from control_plane.api.objects import ListOptions, Objects, matches
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
            for obj in listed["items"]:
                yield "ADDED", obj
            if self.opts.send_initial_events:
                yield self._bookmark({INITIAL_EVENTS_END: "true"})
        else:
            try:
                start = int(rv)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion: {rv!r}") from None
            self.last_revision = start
        async for event in self._follow(start):
            yield event

    async def _follow(self, start: int) -> AsyncIterator[Event]:
        deadline = self.clock() + self.opts.timeout_seconds
        watch = self.objects.store.watch(self.rt.list_prefix(self.namespace), start)
        it = watch.__aiter__()
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
                        yield self._bookmark()
                    continue
                task, next_event = next_event, None
                try:
                    store_event = task.result()
                except StopAsyncIteration:
                    return
                except CompactedError as e:
                    yield error_event(errors.gone(f"too old resource version: {start} ({e.compacted})"))
                    return
                except StoreError as e:  # e.g. this watcher fell too far behind: the client re-watches
                    log.info("ending watch on %s: %s", self.rt.plural, e)
                    return
                self.last_revision = store_event.revision
                converted = self._convert(store_event)
                if converted is not None:
                    yield converted
        finally:
            if next_event is not None:
                next_event.cancel()
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except (StopAsyncIteration, RuntimeError, StoreError):
                    pass

    def _convert(self, ev: WatchEvent) -> Event | None:
        lo = self.opts.list_options
        new = _decode(ev.value, ev.revision) if ev.value is not None else None
        old = _decode(ev.prev_value, ev.revision) if ev.prev_value is not None else None
        new_ok = new is not None and matches(self.rt, new, lo)
        old_ok = old is not None and matches(self.rt, old, lo)
        if ev.type == "DELETE":
            return ("DELETED", old) if old_ok and old is not None else None
        if new is None:
            return None
        if new_ok and old is None:
            return "ADDED", new
        if new_ok and old_ok:
            return "MODIFIED", new
        if new_ok:
            return "ADDED", new
        if old_ok:
            return "DELETED", new  # left the selection: its latest state, as Kubernetes sends
        return None


def _decode(raw: bytes, revision: int) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(raw)
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj

"""What the controllers' and the scheduler's event recorders share: core/v1 Events
written from a bounded queue, with repeats aggregated as client-go's event correlator does.

`record` (in each subclass) never blocks and never raises: it queues, and background
writers (`run`) write. A repeat of the same (object, type, reason, message) bumps
``count`` and ``lastTimestamp`` of the event already written. Events about
cluster-scoped objects (Nodes) go to the ``default`` namespace, as in Kubernetes. Write
failures are logged and dropped: events are best-effort.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, NotFound

NORMAL = "Normal"
WARNING = "Warning"


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def object_reference(obj: Mapping[str, Any], default_kind: str = "") -> dict[str, Any]:
    md = obj.get("metadata") or {}
    ref: dict[str, Any] = {"kind": obj.get("kind") or default_kind, "apiVersion": obj.get("apiVersion") or "v1",
                           "name": md.get("name") or ""}
    for key in ("namespace", "uid", "resourceVersion"):
        if md.get(key):
            ref[key] = md[key]
    return ref


@dataclass(slots=True)
class Pending:
    ref: dict[str, Any]
    type: str
    reason: str
    message: str
    at: float
    action: str | None = None  # None: the event has no ``action`` field


class QueuedEventRecorder:
    """The queue, the writers and the aggregation; subclasses add `record` and say how drops are logged."""

    remembered = 4096  # aggregation keys kept, least recently used dropped
    default_kind = ""  # involvedObject.kind of an object that does not say
    remember_first = False  # several writers: a repeat must find the event's name before its first write returns

    def __init__(self, client: ApiClient, component: str, instance: str, *, host: str = "", queue_size: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.component = component
        self.instance = instance
        self.host = host
        self._clock = clock
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(queue_size)
        self._seen: OrderedDict[tuple[Any, ...], tuple[str, int]] = OrderedDict()  # key -> (event name, count)
        self.written = 0
        self.dropped = 0
        self._log = logging.getLogger(type(self).__module__)  # each recorder logs as its own module

    def _put(self, obj: Mapping[str, Any], type_: str, reason: str, message: str, action: str | None = None) -> None:
        try:
            self._queue.put_nowait(Pending(object_reference(obj, self.default_kind), type_, reason, message,
                                           self._clock(), action))
        except asyncio.QueueFull:
            self.dropped += 1
            self._log_drop(obj, type_, reason)

    def _log_drop(self, obj: Mapping[str, Any], type_: str, reason: str) -> None:
        raise NotImplementedError

    def _subject(self, ref: Mapping[str, Any]) -> str:
        """How the write-failure log names the object."""
        return str(ref.get("name"))

    async def run(self, writers: int = 1) -> None:
        """Write queued events with ``writers`` concurrent writers until cancelled."""
        await asyncio.gather(*(self._writer() for _ in range(writers)))

    async def _writer(self) -> None:
        while True:
            pending = await self._queue.get()
            await self._write_logged(pending)

    async def flush(self) -> None:
        while not self._queue.empty():
            await self._write_logged(self._queue.get_nowait())

    async def _write_logged(self, pending: Pending) -> None:
        try:
            await self.write(pending)
            self.written += 1
        except asyncio.CancelledError:
            raise
        except ApiClientError as exc:
            self._log.warning("could not write event %s for %s: %s; dropping it", pending.reason,
                        self._subject(pending.ref), exc)
        except Exception:  # noqa: BLE001 - an event is never worth a crash
            self._log.exception("could not write event %s; dropping it", pending.reason)

    async def write(self, p: Pending) -> None:
        ns = p.ref.get("namespace") or "default"
        key = (p.ref.get("kind"), ns, p.ref.get("name"), p.ref.get("uid"), p.type, p.reason, p.message)
        now = rfc3339(p.at)
        seen = self._seen.get(key)
        if seen is not None:
            name, count = seen
            if self.remember_first:
                self._remember(key, (name, count + 1))
            try:
                await self.client.patch("events", name, {"count": count + 1, "lastTimestamp": now}, ns)
                if not self.remember_first:
                    self._remember(key, (name, count + 1))
                return
            except NotFound:
                pass  # expired or deleted: write a new one
        name = f"{p.ref.get('name')}.{time.time_ns():x}"
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "involvedObject": p.ref, "reason": p.reason, "message": p.message, "type": p.type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.instance,
        }
        if p.action is not None:
            body["action"] = p.action
        if self.remember_first:
            self._remember(key, (name, 1))
        await self.client.create("events", body, ns)
        if not self.remember_first:
            self._remember(key, (name, 1))

    def _remember(self, key: tuple[Any, ...], value: tuple[str, int]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > self.remembered:
            self._seen.popitem(last=False)

"""Events from controllers: core/v1 Events as kube-controller-manager writes them.

`EventRecorder.record` never blocks and never raises: it queues, and one background task
(`run`) writes. A repeat of the same (object, type, reason, message) bumps ``count`` and
``lastTimestamp`` of the event already written, as client-go's event correlator does.
Events about cluster-scoped objects (Nodes) go to the ``default`` namespace, as in
Kubernetes. Write failures are logged and dropped: events are best-effort.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, NotFound

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
QUEUE_SIZE = 1000
REMEMBERED = 4096  # aggregation keys kept, least recently used dropped


class EventSink(Protocol):
    def __call__(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    md = obj.get("metadata") or {}
    ref: dict[str, Any] = {"kind": obj.get("kind") or "", "name": md.get("name") or "",
                           "apiVersion": obj.get("apiVersion") or "v1"}
    for key in ("namespace", "uid", "resourceVersion"):
        if md.get(key):
            ref[key] = md[key]
    return ref


@dataclass
class _Pending:
    ref: dict[str, Any]
    type: str
    reason: str
    message: str
    at: float


class EventRecorder:
    def __init__(self, client: ApiClient, component: str, *, host: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.component = component
        self.host = host
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(QUEUE_SIZE)
        self._seen: OrderedDict[tuple[Any, ...], tuple[str, int]] = OrderedDict()  # key -> (event name, count)
        self.dropped = 0

    def __call__(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.record(obj, type_, reason, message)

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue one event about ``obj``; never blocks, never raises."""
        try:
            self._queue.put_nowait(_Pending(object_reference(obj), type_, reason, message, self._clock()))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:  # a burst (thousands of nodes) is one line
                log.warning("event queue full; dropped %d event(s) so far, the last %s %s for %s", self.dropped,
                            type_, reason, (obj.get("metadata") or {}).get("name"))

    async def run(self) -> None:
        """Write queued events until cancelled."""
        while True:
            pending = await self._queue.get()
            await self._write_logged(pending)

    async def flush(self) -> None:
        while not self._queue.empty():
            await self._write_logged(self._queue.get_nowait())

    async def _write_logged(self, pending: _Pending) -> None:
        try:
            await self.write(pending)
        except asyncio.CancelledError:
            raise
        except ApiClientError as exc:
            log.warning("could not write event %s for %s: %s; dropping it", pending.reason,
                        pending.ref.get("name"), exc)
        except Exception:  # noqa: BLE001 - an event is never worth a crash
            log.exception("could not write event %s; dropping it", pending.reason)

    async def write(self, p: _Pending) -> None:
        ns = p.ref.get("namespace") or "default"
        key = (p.ref.get("kind"), ns, p.ref.get("name"), p.ref.get("uid"), p.type, p.reason, p.message)
        now = _rfc3339(p.at)
        seen = self._seen.get(key)
        if seen is not None:
            name, count = seen
            try:
                await self.client.patch("events", name, {"count": count + 1, "lastTimestamp": now}, ns)
                self._remember(key, (name, count + 1))
                return
            except NotFound:
                pass  # expired or deleted: write a new one
        name = f"{p.ref.get('name')}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "involvedObject": p.ref, "reason": p.reason, "message": p.message, "type": p.type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.host or self.component,
        }
        await self.client.create("events", body, ns)
        self._remember(key, (name, 1))

    def _remember(self, key: tuple[Any, ...], value: tuple[str, int]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)

"""The scheduler's events (Scheduled, FailedScheduling) as core/v1 Events from
``default-scheduler``.

`record` never blocks: it queues. Several writers drain the queue concurrently, so
events keep pace with bindings. A repeat of the same (pod, type, reason, message) bumps
``count`` and ``lastTimestamp`` of the event already written, as client-go's correlator
does. Events are best-effort: when the queue is full they are dropped (and counted, and
the drops logged once in a while), as client-go's broadcaster drops them.
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

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
REMEMBERED = 8192  # aggregation keys kept, least recently used dropped
DROP_LOG_INTERVAL = 30.0


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def object_reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    md = obj.get("metadata") or {}
    ref: dict[str, Any] = {"kind": obj.get("kind") or "Pod", "apiVersion": obj.get("apiVersion") or "v1",
                           "name": md.get("name") or ""}
    for key in ("namespace", "uid", "resourceVersion"):
        if md.get(key):
            ref[key] = md[key]
    return ref


@dataclass(slots=True)
class _Pending:
    ref: dict[str, Any]
    type: str
    reason: str
    action: str
    message: str
    at: float


class EventRecorder:
    def __init__(self, client: ApiClient, component: str, instance: str, *, queue_size: int = 5000,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.component = component
        self.instance = instance
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size)
        self._seen: OrderedDict[tuple[Any, ...], tuple[str, int]] = OrderedDict()  # key -> (event name, count)
        self.written = 0
        self.dropped = 0
        self._dropped_logged_at = 0.0

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, action: str, message: str) -> None:
        """Queue one event about ``obj``; never blocks, never raises."""
        try:
            self._queue.put_nowait(_Pending(object_reference(obj), type_, reason, action, message, self._clock()))
        except asyncio.QueueFull:
            self.dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged_at >= DROP_LOG_INTERVAL:
                self._dropped_logged_at = now
                log.warning("event queue full: %d event(s) dropped so far (latest: %s %s for %s/%s)",
                            self.dropped, type_, reason, obj.get("metadata", {}).get("namespace"),
                            obj.get("metadata", {}).get("name"))

    async def run(self, writers: int = 4) -> None:
        """Write queued events with ``writers`` concurrent writers until cancelled."""
        await asyncio.gather(*(self._writer() for _ in range(writers)))

    async def _writer(self) -> None:
        while True:
            pending = await self._queue.get()
            await self._write_logged(pending)

    async def flush(self) -> None:
        while not self._queue.empty():
            await self._write_logged(self._queue.get_nowait())

    async def _write_logged(self, pending: _Pending) -> None:
        try:
            await self.write(pending)
            self.written += 1
        except asyncio.CancelledError:
            raise
        except ApiClientError as exc:
            log.warning("could not write event %s for %s/%s: %s; dropping it", pending.reason,
                        pending.ref.get("namespace"), pending.ref.get("name"), exc)
        except Exception:  # noqa: BLE001 - an event is never worth a crash
            log.exception("could not write event %s; dropping it", pending.reason)

    async def write(self, p: _Pending) -> None:
        ns = p.ref.get("namespace") or "default"
        key = (p.ref.get("kind"), ns, p.ref.get("name"), p.ref.get("uid"), p.type, p.reason, p.message)
        now = rfc3339(p.at)
        seen = self._seen.get(key)
        if seen is not None:
            name, count = seen
            self._remember(key, (name, count + 1))
            try:
                await self.client.patch("events", name, {"count": count + 1, "lastTimestamp": now}, ns)
                return
            except NotFound:
                pass  # expired or deleted: write a new one
        name = f"{p.ref.get('name')}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "involvedObject": p.ref, "reason": p.reason, "message": p.message, "type": p.type,
            "source": {"component": self.component}, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "action": p.action, "reportingComponent": self.component, "reportingInstance": self.instance,
        }
        self._remember(key, (name, 1))
        await self.client.create("events", body, ns)

    def _remember(self, key: tuple[Any, ...], value: tuple[str, int]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)

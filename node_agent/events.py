"""Event recorder: core/v1 Events as kubelet writes them, without ever blocking the caller.

`record` only enqueues; one background task (`run`) writes. A repeat of the same
(object, type, reason, message) bumps ``count`` and ``lastTimestamp`` of the event
already written, as Kubernetes' event correlator does. Write failures are logged and
dropped: events are best-effort.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skiff.client import ApiClient, ApiClientError, NotFound

log = logging.getLogger("skiff.agent.events")

NORMAL = "Normal"
WARNING = "Warning"
QUEUE_SIZE = 1000
REMEMBERED = 4096  # aggregation keys kept (least recently used dropped)


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = "v1"
    resource_version: str = ""
    field_path: str = ""

    @classmethod
    def of(cls, obj: Mapping[str, Any], field_path: str = "") -> ObjectRef:
        md = obj.get("metadata") or {}
        return cls(kind=str(obj.get("kind") or "Pod"), name=str(md.get("name", "")),
                   namespace=str(md.get("namespace") or ""), uid=str(md.get("uid") or ""),
                   api_version=str(obj.get("apiVersion") or "v1"),
                   resource_version=str(md.get("resourceVersion") or ""), field_path=field_path)

    def to_api(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"kind": self.kind, "name": self.name, "apiVersion": self.api_version}
        for key, value in (("namespace", self.namespace), ("uid", self.uid),
                           ("resourceVersion", self.resource_version), ("fieldPath", self.field_path)):
            if value:
                ref[key] = value
        return ref


@dataclass
class _Pending:
    ref: ObjectRef
    type: str
    reason: str
    message: str
    at: float


def container_field_path(container: str, init: bool = False) -> str:
    return f"spec.{'initContainers' if init else 'containers'}{{{container}}}"


class EventRecorder:
    def __init__(self, client: ApiClient, node_name: str, *, component: str = "kubelet",
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.node_name = node_name
        self.component = component
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(QUEUE_SIZE)
        # key -> (event name, count, firstTimestamp)
        self._seen: OrderedDict[tuple[Any, ...], tuple[str, int, str]] = OrderedDict()

    def record(self, obj: Mapping[str, Any] | ObjectRef, type_: str, reason: str, message: str,
               field_path: str = "") -> None:
        """Queue one event about ``obj`` (an API object or a ref); never blocks, never raises."""
        ref = obj if isinstance(obj, ObjectRef) else ObjectRef.of(obj, field_path)
        try:
            self._queue.put_nowait(_Pending(ref, type_, reason, message, self._clock()))
        except asyncio.QueueFull:
            log.warning("event queue full; dropping %s %s for %s/%s", type_, reason, ref.namespace, ref.name)

    async def run(self) -> None:
        """Write queued events forever (until cancelled)."""
        while True:
            pending = await self._queue.get()
            try:
                await self.write(pending)
            except asyncio.CancelledError:
                raise
            except ApiClientError as exc:
                log.warning("could not write event %s for %s/%s: %s; dropping it", pending.reason,
                            pending.ref.namespace, pending.ref.name, exc)
            except Exception:
                log.exception("could not write event %s; dropping it", pending.reason)

    async def flush(self) -> None:
        """Write everything queued so far (tests, shutdown)."""
        while not self._queue.empty():
            await self.write(self._queue.get_nowait())

    async def write(self, p: _Pending) -> None:
        ns = p.ref.namespace or "default"
        key = (p.ref.kind, ns, p.ref.name, p.ref.uid, p.ref.field_path, p.type, p.reason, p.message)
        now = rfc3339(p.at)
        seen = self._seen.get(key)
        if seen is not None:
            name, count, first = seen
            try:
                await self.client.patch("events", name, {"count": count + 1, "lastTimestamp": now}, ns)
                self._remember(key, (name, count + 1, first))
                return
            except NotFound:
                pass  # expired or deleted: write a new one
        name = f"{p.ref.name}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": p.ref.to_api(), "reason": p.reason, "message": p.message, "type": p.type,
            "source": {"component": self.component, "host": self.node_name},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.node_name,
        }
        await self.client.create("events", body, ns)
        self._remember(key, (name, 1, now))

    def _remember(self, key: tuple[Any, ...], value: tuple[str, int, str]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)

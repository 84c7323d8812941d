"""Events from controllers: core/v1 Events as kube-controller-manager writes them.

`EventRecorder.record` never blocks and never raises: it queues, and one background task
(`run`) writes. A repeat of the same (object, type, reason, message) bumps ``count`` and
``lastTimestamp`` of the event already written, as client-go's event correlator does.
Events about cluster-scoped objects (Nodes) go to the ``default`` namespace, as in
Kubernetes. Write failures are logged and dropped: events are best-effort. The queue and
the writing are `control_plane.events`'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from control_plane.events import NORMAL, WARNING, QueuedEventRecorder, object_reference
from skiff.client.api import ApiClient

__all__ = ["NORMAL", "QUEUE_SIZE", "REMEMBERED", "WARNING", "EventRecorder", "EventSink", "object_reference"]

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
REMEMBERED = 4096  # aggregation keys kept, least recently used dropped


class EventSink(Protocol):
    def __call__(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class EventRecorder(QueuedEventRecorder):
    remembered = REMEMBERED

    def __init__(self, client: ApiClient, component: str, *, host: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(client, component, host or component, host=host, queue_size=QUEUE_SIZE, clock=clock)

    def __call__(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.record(obj, type_, reason, message)

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue one event about ``obj``; never blocks, never raises."""
        self._put(obj, type_, reason, message)

    def _log_drop(self, obj: Mapping[str, Any], type_: str, reason: str) -> None:
        if self.dropped == 1 or self.dropped % 1000 == 0:  # a burst (thousands of nodes) is one line
            log.warning("event queue full; dropped %d event(s) so far, the last %s %s for %s", self.dropped,
                        type_, reason, (obj.get("metadata") or {}).get("name"))

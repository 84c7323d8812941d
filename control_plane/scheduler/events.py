"""The scheduler's events (Scheduled, FailedScheduling) as core/v1 Events from
``default-scheduler``.

`record` never blocks: it queues. Several writers drain the queue concurrently, so
events keep pace with bindings. A repeat of the same (pod, type, reason, message) bumps
``count`` and ``lastTimestamp`` of the event already written, as client-go's correlator
does. Events are best-effort: when the queue is full they are dropped (and counted, and
the drops logged once in a while), as client-go's broadcaster drops them. The queue and
the writing are `control_plane.events`'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from control_plane.events import NORMAL, WARNING, QueuedEventRecorder
from skiff.client.api import ApiClient

__all__ = ["DROP_LOG_INTERVAL", "NORMAL", "REMEMBERED", "WARNING", "EventRecorder"]

log = logging.getLogger(__name__)

REMEMBERED = 8192  # aggregation keys kept, least recently used dropped
DROP_LOG_INTERVAL = 30.0


class EventRecorder(QueuedEventRecorder):
    remembered = REMEMBERED
    default_kind = "Pod"
    remember_first = True

    def __init__(self, client: ApiClient, component: str, instance: str, *, queue_size: int = 5000,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(client, component, instance, queue_size=queue_size, clock=clock)
        self._dropped_logged_at = 0.0

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, action: str, message: str) -> None:
        """Queue one event about ``obj``; never blocks, never raises."""
        self._put(obj, type_, reason, message, action)

    async def run(self, writers: int = 4) -> None:
        """Write queued events with ``writers`` concurrent writers until cancelled."""
        await super().run(writers)

    def _log_drop(self, obj: Mapping[str, Any], type_: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._dropped_logged_at >= DROP_LOG_INTERVAL:
            self._dropped_logged_at = now
            log.warning("event queue full: %d event(s) dropped so far (latest: %s %s for %s/%s)",
                        self.dropped, type_, reason, obj.get("metadata", {}).get("namespace"),
                        obj.get("metadata", {}).get("name"))

    def _subject(self, ref: Mapping[str, Any]) -> str:
        return f"{ref.get('namespace')}/{ref.get('name')}"

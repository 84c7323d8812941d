"""The scheduling queue, as kube-scheduler's: active, backoff and unschedulable pods.

- active: pods to try now, highest spec.priority first, then oldest first;
- backoff: pods that failed recently wait 1 s, doubling per attempt up to 10 s
  (podInitialBackoffSeconds, podMaxBackoffSeconds);
- unschedulable: pods no node fits. They stay until a cluster event may have changed
  that (`move_all`: a node added or changed, an assigned pod deleted), or for at most
  5 minutes; then they go back to active, through backoff if still backing off.
A pod that was rejected while such an event happened (or while it was itself updated)
is not parked as unschedulable: the event may already have made room for it.

`pop` hands out one pod at a time; the pod is *in flight* until the scheduler reports
`done` (assumed on a node), `unschedulable` or `error`. `run_flusher` is the loop that
moves pods whose backoff ended; everything else is plain methods, testable without it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control_plane.scheduler.podinfo import PodInfo
from control_plane.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

ACTIVE = "active"
BACKOFF = "backoff"
UNSCHEDULABLE = "unschedulable"
IN_FLIGHT = "in-flight"
UNSCHEDULABLE_CHECK_SECONDS = 30.0  # how often to look for pods parked too long (flushUnschedulablePodsLeftover)


@dataclass(slots=True, eq=False)
class QueuedPod:
    info: PodInfo
    timestamp: float  # when it (re)entered the queue: ordering among equal priorities
    attempts: int = 0
    where: str = ACTIVE
    seq: int = 0  # of its live heap entry (older entries are skipped)
    last_failure: float = 0.0
    unschedulable_since: float = 0.0
    moves_at_pop: int = 0
    updated_in_flight: bool = False

    @property
    def key(self) -> str:
        return self.info.key


def _meaningful(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a pod update worth a retry: spec, labels, annotations (not status)."""
    md = pod.get("metadata") or {}
    return pod.get("spec"), md.get("labels"), md.get("annotations")


class SchedulingQueue:
    def __init__(self, settings: SchedulerSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or SchedulerSettings()
        self._clock = clock
        self._pods: dict[str, QueuedPod] = {}
        self._active: list[tuple[int, float, int, str]] = []  # (-priority, timestamp, seq, key)
        self._backoff: list[tuple[float, int, str]] = []  # (backoff expiry, seq, key)
        self._unschedulable: dict[str, QueuedPod] = {}
        self._seq = itertools.count(1)
        self._moves = 0  # move requests so far (kube-scheduler's moveRequestCycle)
        self._ready = asyncio.Event()
        self._wake_flusher = asyncio.Event()

    # ---- reading ---------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return key in self._pods

    def get(self, key: str) -> QueuedPod | None:
        return self._pods.get(key)

    def counts(self) -> dict[str, int]:
        out = {ACTIVE: 0, BACKOFF: 0, UNSCHEDULABLE: 0, IN_FLIGHT: 0}
        for qp in self._pods.values():
            out[qp.where] += 1
        return out

    def backoff_duration(self, attempts: int) -> float:
        d = self.settings.pod_initial_backoff_seconds
        for _ in range(1, attempts):
            d *= 2
            if d > self.settings.pod_max_backoff_seconds:
                return self.settings.pod_max_backoff_seconds
        return d

    def backoff_expiry(self, qp: QueuedPod) -> float:
        return qp.last_failure + self.backoff_duration(qp.attempts)

    # ---- informer side ---------------------------------------------------------------

    def add(self, info: PodInfo) -> None:
        """A new pending pod (or one seen again): into the active queue."""
        qp = self._pods.get(info.key)
        if qp is not None:
            self.update(info)
            return
        qp = self._pods[info.key] = QueuedPod(info, self._clock())
        self._push_active(qp)

    def update(self, info: PodInfo) -> None:
        qp = self._pods.get(info.key)
        if qp is None:
            self.add(info)
            return
        changed = _meaningful(qp.info.pod) != _meaningful(info.pod)
        old_priority = qp.info.priority
        qp.info = info
        if qp.where == IN_FLIGHT:
            qp.updated_in_flight = qp.updated_in_flight or changed
        elif qp.where == UNSCHEDULABLE and changed:
            del self._unschedulable[qp.key]
            self._requeue(qp)
        elif qp.where == ACTIVE and info.priority != old_priority:
            self._push_active(qp)

    def delete(self, key: str) -> None:
        qp = self._pods.pop(key, None)
        if qp is not None:
            self._unschedulable.pop(key, None)
            qp.where = "deleted"  # any heap entry of it is skipped

    # ---- scheduler side --------------------------------------------------------------

    async def pop(self) -> QueuedPod:
        """The next pod to schedule; waits while the active queue is empty."""
        while True:
            qp = self.pop_nowait()
            if qp is not None:
                return qp
            self._ready.clear()
            await self._ready.wait()

    def pop_nowait(self) -> QueuedPod | None:
        while self._active:
            _, _, seq, key = heapq.heappop(self._active)
            qp = self._pods.get(key)
            if qp is None or qp.where != ACTIVE or qp.seq != seq:
                continue
            qp.where = IN_FLIGHT
            qp.attempts += 1
            qp.moves_at_pop = self._moves
            qp.updated_in_flight = False
            return qp
        return None

    def done(self, key: str) -> None:
        """The pod in flight was assumed on a node: it leaves the queue."""
        qp = self._pods.get(key)
        if qp is not None and qp.where == IN_FLIGHT:
            del self._pods[key]

    def unschedulable(self, qp: QueuedPod) -> None:
        """The pod in flight fits no node: park it, unless something changed meanwhile."""
        if self._pods.get(qp.key) is not qp:
            return  # deleted while in flight
        now = self._clock()
        qp.last_failure = now
        qp.timestamp = now
        if qp.updated_in_flight or qp.moves_at_pop != self._moves:
            self._requeue(qp)
            return
        qp.where = UNSCHEDULABLE
        qp.unschedulable_since = now
        self._unschedulable[qp.key] = qp

    def error(self, qp: QueuedPod) -> None:
        """Scheduling or binding failed for another reason: retry after the backoff."""
        if self._pods.get(qp.key) not in (qp, None):
            return  # a newer incarnation of the pod is queued already
        self._pods[qp.key] = qp
        now = self._clock()
        qp.last_failure = now
        qp.timestamp = now
        self._push_backoff(qp)

    def move_all(self, event: str) -> int:
        """A cluster event may let unschedulable pods fit: retry them all. Returns how many moved."""
        self._moves += 1
        moved = list(self._unschedulable.values())
        self._unschedulable.clear()
        for qp in moved:
            self._requeue(qp)
        if moved:
            log.debug("%s: %d unschedulable pod(s) moved back to the queue", event, len(moved))
        return len(moved)

    # ---- time ------------------------------------------------------------------------

    def flush(self) -> float | None:
        """Move pods whose backoff ended to active, and pods parked as unschedulable too
        long back through backoff. Returns when the next backoff ends (None: nothing waits)."""
        now = self._clock()
        while self._backoff:
            expiry, seq, key = self._backoff[0]
            qp = self._pods.get(key)
            if qp is None or qp.where != BACKOFF or qp.seq != seq:
                heapq.heappop(self._backoff)
                continue
            if expiry > now:
                break
            heapq.heappop(self._backoff)
            self._push_active(qp)
        limit = self.settings.pod_max_in_unschedulable_pods_seconds
        stale = [qp for qp in self._unschedulable.values() if now - qp.unschedulable_since >= limit]
        for qp in stale:
            del self._unschedulable[qp.key]
            self._requeue(qp)
        return self._backoff[0][0] if self._backoff else None

    async def run_flusher(self) -> None:
        """Forever: flush, then sleep until the next backoff ends or a pod enters backoff."""
        while True:
            next_expiry = self.flush()
            delay = UNSCHEDULABLE_CHECK_SECONDS if next_expiry is None else \
                min(max(next_expiry - self._clock(), 0.0), UNSCHEDULABLE_CHECK_SECONDS)
            self._wake_flusher.clear()
            try:
                await asyncio.wait_for(self._wake_flusher.wait(), delay)
            except TimeoutError:
                pass

    # ---- internals -------------------------------------------------------------------

    def _requeue(self, qp: QueuedPod) -> None:
        if self.backoff_expiry(qp) > self._clock():
            self._push_backoff(qp)
        else:
            self._push_active(qp)

    def _push_active(self, qp: QueuedPod) -> None:
        qp.where = ACTIVE
        qp.seq = next(self._seq)
        heapq.heappush(self._active, (-qp.info.priority, qp.timestamp, qp.seq, qp.key))
        self._ready.set()

    def _push_backoff(self, qp: QueuedPod) -> None:
        qp.where = BACKOFF
        qp.seq = next(self._seq)
        expiry = self.backoff_expiry(qp)
        heapq.heappush(self._backoff, (expiry, qp.seq, qp.key))
        if self._backoff[0][1] == qp.seq:  # it ends first: the flusher must wake sooner
            self._wake_flusher.set()

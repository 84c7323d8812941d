"""`EvictionManager`: kubelet's eviction manager as a fixed pipeline over injected parts.

`synchronize` is one pass: observe -> thresholds met (and those not yet reclaimed by their
minimum reclaim) -> when each was first met -> node conditions, held for the pressure
transition period -> grace periods -> local storage limits -> node-level reclaim -> rank ->
evict at most one pod. `run` repeats it every monitoring period, or at once when ``wake`` is
set, and after an eviction waits (up to 30 s) for the pod's containers to be gone before
looking again, so one shortage never costs two pods.

Everything that touches the world is injected: the clock, the sleep, the stats provider, the
evictor (stops the pod and writes its status), the node reclaimer (dead containers, unused
images) and the event recorder. The tests step a fake clock through all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node_agent.eviction.local_storage import has_local_storage_limits, local_storage_violation
from node_agent.eviction.ranking import (
    EvictionNote,
    RankFn,
    eviction_message,
    is_critical,
    key_of,
    rank_functions,
    uid_of,
)
from node_agent.eviction.signals import (
    Observation,
    Observations,
    by_eviction_priority,
    merge_thresholds,
    node_conditions,
    node_conditions_last_observed_at,
    node_conditions_observed_since,
    observe,
    thresholds_first_observed_at,
    thresholds_met,
    thresholds_met_grace_period,
    thresholds_updated_stats,
)
from node_agent.eviction.stats import POD_DISK, POD_MEMORY, POD_PROCESSES, NodeStats, StatsProvider
from node_agent.eviction.thresholds import (
    IMAGEFS_AVAILABLE,
    IMAGEFS_INODES_FREE,
    MEMORY_AVAILABLE,
    NODEFS_AVAILABLE,
    NODEFS_INODES_FREE,
    PID_AVAILABLE,
    SIGNAL_RESOURCE,
    Threshold,
)

log = logging.getLogger("skiff.agent.eviction")

Obj = dict[str, Any]
REASON = "Evicted"
WARNING = "Warning"
IMMEDIATE_GRACE = 1  # kubelet's immediateEvictionGracePeriodSeconds
CLEANUP_TIMEOUT = 30.0  # kubelet's podCleanupTimeout
CLEANUP_POLL = 1.0  # kubelet's podCleanupPollFreq
DEFAULT_TERMINATION_GRACE = 30
DISK_SIGNALS = (NODEFS_AVAILABLE, NODEFS_INODES_FREE, IMAGEFS_AVAILABLE, IMAGEFS_INODES_FREE)
POD_STATS_FOR = {MEMORY_AVAILABLE: POD_MEMORY, PID_AVAILABLE: POD_PROCESSES,
                 **{signal: POD_DISK for signal in DISK_SIGNALS}}


class PodEvictor(Protocol):
    async def evict(self, pod: Obj, grace_period: float, note: EvictionNote) -> None:
        """Stop the pod's containers (within ``grace_period``) and make its phase Failed, reason
        Evicted, with the note's message. Returns once the containers are stopped."""
        ...

    async def cleaned_up(self, pod: Obj) -> bool:
        """True once nothing of the pod runs any more."""
        ...


class NodeReclaimer(Protocol):
    async def delete_unused_containers(self) -> None: ...

    async def delete_unused_images(self) -> None: ...


class EventSink(Protocol):
    def record(self, obj: Any, type_: str, reason: str, message: str, field_path: str = "") -> None: ...


@dataclass
class PressureState:
    """What one pass leaves for the next (kubelet's managerImpl fields)."""

    node_conditions: list[str] = field(default_factory=list)
    node_conditions_last_observed_at: dict[str, float] = field(default_factory=dict)
    thresholds_first_observed_at: dict[Threshold, float] = field(default_factory=dict)
    thresholds_met: list[Threshold] = field(default_factory=list)
    last_observations: dict[str, Observation] = field(default_factory=dict)


@dataclass(frozen=True)
class ManagerConfig:
    thresholds: tuple[Threshold, ...]
    pressure_transition_period: float = 300.0
    max_pod_grace_period: int = 0
    monitoring_period: float = 10.0
    local_storage_capacity_isolation: bool = True


class EvictionManager:
    def __init__(self, config: ManagerConfig, *, stats: StatsProvider, evictor: PodEvictor,
                 reclaimer: NodeReclaimer | None, recorder: EventSink, node_ref: Any,
                 active_pods: Callable[[], Sequence[Obj]], clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_conditions_changed: Callable[[list[str]], None] | None = None,
                 after_pass: Callable[[], None] | None = None) -> None:
        self.config = config
        self.stats = stats
        self.evictor = evictor
        self.reclaimer = reclaimer
        self.recorder = recorder
        self.node_ref = node_ref
        self.active_pods = active_pods
        self.clock = clock
        self.sleep = sleep
        self.on_conditions_changed = on_conditions_changed
        self.after_pass = after_pass
        self.state = PressureState()
        self.dedicated_imagefs: bool | None = None
        self.ranks: dict[str, RankFn] = rank_functions(dedicated_imagefs=False)  # until the filesystems are seen
        self.last_node_stats: NodeStats | None = None
        self.wake = asyncio.Event()
        self._last_said = ""
        self._reclaiming = ""  # the resource the passes since the last one without pressure reclaim

    # ---- what others read -------------------------------------------------------------------

    @property
    def conditions(self) -> list[str]:
        """The pressure conditions that are True now (MemoryPressure, DiskPressure, PIDPressure)."""
        return list(self.state.node_conditions)

    def under(self, condition: str) -> bool:
        return condition in self.state.node_conditions

    # ---- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: a pass; after an eviction wait for the pod to be cleaned up, else sleep until the
        monitoring period is over or ``wake`` is set (a memory threshold notification)."""
        while True:
            try:
                evicted = await self.synchronize()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("eviction pass failed; trying again in %.0fs", self.config.monitoring_period)
                evicted = []
            if self.after_pass is not None:
                self.after_pass()
            if evicted:
                log.info("eviction manager: pods evicted, waiting for pod to be cleaned up: %s",
                         ", ".join(key_of(p) for p in evicted))
                await self.wait_for_cleanup(evicted)
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.config.monitoring_period)

    async def wait_for_cleanup(self, pods: Sequence[Obj]) -> bool:
        """Poll every second, for at most 30 s, until every evicted pod is cleaned up."""
        deadline = self.clock() + CLEANUP_TIMEOUT
        while self.clock() < deadline:
            await self.sleep(CLEANUP_POLL)
            if all([await self.evictor.cleaned_up(pod) for pod in pods]):
                log.info("eviction manager: pods successfully cleaned up: %s", ", ".join(key_of(p) for p in pods))
                return True
        log.info("eviction manager: timed out waiting for pods to be cleaned up: %s",
                 ", ".join(key_of(p) for p in pods))
        return False

    # ---- one pass ---------------------------------------------------------------------------------

    async def synchronize(self) -> list[Obj]:
        """One pass of the pipeline; returns the pods it evicted (at most one under node pressure)."""
        config = self.config
        if not config.thresholds and not config.local_storage_capacity_isolation:
            return []
        pods = [p for p in self.active_pods() if not is_evicted(p)]
        try:
            node = await self.stats.node_stats()
        except OSError as exc:
            log.warning("eviction manager: failed to read node stats: %s; trying again next pass", exc)
            return []
        self.last_node_stats = node
        self._learn_filesystems(node)
        observations = observe(node)
        now = self.clock()

        met = thresholds_met(config.thresholds, observations)
        if self.state.thresholds_met:
            met = merge_thresholds(met, thresholds_met(self.state.thresholds_met, observations,
                                                       enforce_min_reclaim=True))
        first_observed_at = thresholds_first_observed_at(met, self.state.thresholds_first_observed_at, now)
        last_observed_at = node_conditions_last_observed_at(node_conditions(met),
                                                            self.state.node_conditions_last_observed_at, now)
        conditions = node_conditions_observed_since(last_observed_at, config.pressure_transition_period, now)
        acting = thresholds_met_grace_period(first_observed_at, now)

        changed = conditions != self.state.node_conditions
        self.state.node_conditions = conditions
        self.state.thresholds_first_observed_at = first_observed_at
        self.state.node_conditions_last_observed_at = {c: t for c, t in last_observed_at.items()
                                                       if now - t < config.pressure_transition_period}
        self.state.thresholds_met = acting
        acting = thresholds_updated_stats(acting, observations, self.state.last_observations)
        self.state.last_observations = dict(observations)
        if changed:
            log.info("eviction manager: node conditions now %s", ", ".join(conditions) or "none (no pressure)")
            if self.on_conditions_changed is not None:
                self.on_conditions_changed(conditions)

        if config.local_storage_capacity_isolation:
            evicted = await self._local_storage_eviction(pods)
            if evicted:
                return evicted
        if not acting:
            self._last_said = self._reclaiming = ""
            return []
        return await self._reclaim(by_eviction_priority(acting), observations, pods)

    def _learn_filesystems(self, node: NodeStats) -> None:
        if self.dedicated_imagefs is None and node.nodefs is not None:
            self.dedicated_imagefs = node.imagefs is not None and node.imagefs.device != node.nodefs.device
            self.ranks = rank_functions(self.dedicated_imagefs)

    async def _local_storage_eviction(self, pods: Sequence[Obj]) -> list[Obj]:
        limited = [p for p in pods if has_local_storage_limits(p)]
        if not limited:
            return []
        stats = await self.stats.pod_stats(limited, frozenset({POD_DISK}))
        evicted = []
        for pod in limited:
            pod_stats = stats.get(uid_of(pod))
            if pod_stats is None:
                continue
            message = local_storage_violation(pod, pod_stats, bool(self.dedicated_imagefs))
            if message is not None and await self.evict(pod, IMMEDIATE_GRACE, EvictionNote(message, {})):
                evicted.append(pod)
        return evicted

    async def _reclaim(self, thresholds: list[Threshold], observations: Observations,
                       pods: Sequence[Obj]) -> list[Obj]:
        threshold = thresholds[0]
        resource = SIGNAL_RESOURCE[threshold.signal]
        if resource != self._reclaiming:  # once per shortage, not every pass while it lasts
            log.info("eviction manager: attempting to reclaim %s (%s met, %s available)", resource, threshold,
                     observations[threshold.signal].available)
            self.recorder.record(self.node_ref, WARNING, "EvictionThresholdMet", f"Attempting to reclaim {resource}")
            self._reclaiming = resource
        if await self._reclaim_node_level(threshold.signal):
            log.info("eviction manager: able to reduce %s pressure without evicting pods", resource)
            return []
        rank = self.ranks.get(threshold.signal)
        if rank is None:
            log.error("eviction manager: no ranking function for signal %s", threshold.signal)
            return []
        if not pods:
            self._once("eviction manager: eviction thresholds have been met, but no pods are active to evict")
            return []
        stats = await self.stats.pod_stats(pods, frozenset({POD_STATS_FOR[threshold.signal]}))
        # Pods with no container at all hold nothing to reclaim; the others without a reading go first.
        ranked = rank([p for p in pods if uid_of(p) in stats], stats)
        log.info("eviction manager: must evict a pod to reclaim %s; pods ranked for eviction: %s", resource,
                 ", ".join(key_of(p) for p in ranked))
        for pod in ranked:
            note = eviction_message(resource, pod, stats.get(uid_of(pod)), thresholds, observations)
            if await self.evict(pod, self._grace_period(pod, threshold), note):
                return [pod]
        self._once("eviction manager: unable to evict any pods from the node")
        return []

    def _once(self, message: str) -> None:
        """A message that would repeat every pass while nothing changes: logged the first time."""
        if message != self._last_said:
            log.warning("%s", message)
            self._last_said = message

    async def _reclaim_node_level(self, signal: str) -> bool:
        """Disk pressure: dead containers, then unused images (only imagefs signals when imagefs is a
        filesystem of its own); True if that freed enough for every threshold and its minimum reclaim."""
        if self.reclaimer is None or signal not in DISK_SIGNALS:
            return False
        if self.dedicated_imagefs and signal in (NODEFS_AVAILABLE, NODEFS_INODES_FREE):
            return False
        for step in (self.reclaimer.delete_unused_containers, self.reclaimer.delete_unused_images):
            try:
                await step()
            except Exception as exc:
                log.info("eviction manager: unexpected error when attempting to reduce disk pressure: %s", exc)
        try:
            node = await self.stats.node_stats()
        except OSError as exc:
            log.warning("eviction manager: failed to read node stats after reclaiming: %s", exc)
            return False
        return not thresholds_met(self.config.thresholds, observe(node), enforce_min_reclaim=True)

    def _grace_period(self, pod: Obj, threshold: Threshold) -> float:
        """Hard thresholds: 1 s. Soft: --eviction-max-pod-grace-period, at most the pod's own (its own if
        negative)."""
        if threshold.hard:
            return IMMEDIATE_GRACE
        own = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        own = DEFAULT_TERMINATION_GRACE if own is None else int(own)
        maximum = self.config.max_pod_grace_period
        return own if maximum < 0 else min(own, maximum)

    async def evict(self, pod: Obj, grace_period: float, note: EvictionNote) -> bool:
        """Evict one pod: the Evicted event, then the evictor stops it. False for a critical pod."""
        if is_critical(pod):
            log.error("eviction manager: cannot evict a critical pod %s", key_of(pod))
            return False
        self.recorder.record(pod, WARNING, REASON, note.message)
        log.info("eviction manager: evicting pod %s (grace %.0fs): %s", key_of(pod), grace_period, note.message)
        try:
            await self.evictor.evict(pod, grace_period, note)
            log.info("eviction manager: pod %s is evicted successfully", key_of(pod))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("eviction manager: pod %s failed to evict: %s", key_of(pod), exc)
        return True


def is_evicted(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Failed" and status.get("reason") == REASON


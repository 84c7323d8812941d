"""The pure steps of the eviction pipeline (kubelet's eviction helpers), each a function of
its inputs and the time: observations, thresholds met, when each was first met, grace
periods, node conditions and how long they are held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from node_agent.eviction.stats import NodeStats
from node_agent.eviction.thresholds import (
    IMAGEFS_AVAILABLE,
    IMAGEFS_INODES_FREE,
    MEMORY_AVAILABLE,
    NODEFS_AVAILABLE,
    NODEFS_INODES_FREE,
    PID_AVAILABLE,
    SIGNAL_CONDITION,
    SIGNAL_RESOURCE,
    Threshold,
)


@dataclass(frozen=True)
class Observation:
    available: int
    capacity: int
    time: float


Observations = Mapping[str, Observation]


def observe(stats: NodeStats) -> dict[str, Observation]:
    """kubelet's makeSignalObservations: every signal the reading allows."""
    out: dict[str, Observation] = {}
    t = stats.time
    if stats.memory_capacity is not None and stats.memory_working_set is not None:
        out[MEMORY_AVAILABLE] = Observation(stats.memory_capacity - stats.memory_working_set, stats.memory_capacity,
                                            t)
    if stats.nodefs is not None:
        out[NODEFS_AVAILABLE] = Observation(stats.nodefs.available_bytes, stats.nodefs.capacity_bytes, t)
        out[NODEFS_INODES_FREE] = Observation(stats.nodefs.inodes_free, stats.nodefs.inodes, t)
    if stats.imagefs is not None:
        out[IMAGEFS_AVAILABLE] = Observation(stats.imagefs.available_bytes, stats.imagefs.capacity_bytes, t)
        out[IMAGEFS_INODES_FREE] = Observation(stats.imagefs.inodes_free, stats.imagefs.inodes, t)
    if stats.max_pid is not None and stats.processes is not None:
        out[PID_AVAILABLE] = Observation(stats.max_pid - stats.processes, stats.max_pid, t)
    return out


def thresholds_met(thresholds: Iterable[Threshold], observations: Observations,
                   enforce_min_reclaim: bool = False) -> list[Threshold]:
    """The thresholds whose signal is below their quantity (plus their minimum reclaim when
    enforce_min_reclaim: a threshold met stays met until that much more is free)."""
    out = []
    for threshold in thresholds:
        observed = observations.get(threshold.signal)
        if observed is None:
            continue
        quantity = threshold.quantity(observed.capacity)
        if enforce_min_reclaim and threshold.min_reclaim is not None:
            quantity += threshold.min_reclaim.resolve(observed.capacity)
        if quantity > observed.available:
            out.append(threshold)
    return out


def merge_thresholds(a: Iterable[Threshold], b: Iterable[Threshold]) -> list[Threshold]:
    out = list(a)
    for threshold in b:
        if threshold not in out:
            out.append(threshold)
    return out


def thresholds_first_observed_at(thresholds: Iterable[Threshold], last: Mapping[Threshold, float],
                                 now: float) -> dict[Threshold, float]:
    """When each threshold met now was first met (now for the new ones); the others are dropped."""
    return {t: last.get(t, now) for t in thresholds}


def thresholds_met_grace_period(observed_at: Mapping[Threshold, float], now: float) -> list[Threshold]:
    """Those met for at least their grace period (hard thresholds at once)."""
    return [t for t, at in observed_at.items() if now - at >= t.grace_period]


def node_conditions(thresholds: Iterable[Threshold]) -> list[str]:
    out: list[str] = []
    for threshold in thresholds:
        condition = SIGNAL_CONDITION.get(threshold.signal)
        if condition is not None and condition not in out:
            out.append(condition)
    return out


def node_conditions_last_observed_at(conditions: Iterable[str], last: Mapping[str, float],
                                     now: float) -> dict[str, float]:
    """The conditions seen now stamped now; the others keep the time they were last seen."""
    out = dict(last)
    out.update((c, now) for c in conditions)
    return out


def node_conditions_observed_since(observed_at: Mapping[str, float], period: float, now: float) -> list[str]:
    """The conditions seen within the pressure transition period: they stay True that long."""
    return sorted(c for c, at in observed_at.items() if now - at < period)


def thresholds_updated_stats(thresholds: Iterable[Threshold], observations: Observations,
                             last: Observations) -> list[Threshold]:
    """Only act on a threshold whose signal was read again since the last pass (no eviction twice
    on one stale reading)."""
    out = []
    for threshold in thresholds:
        observed = observations.get(threshold.signal)
        if observed is None:
            continue
        previous = last.get(threshold.signal)
        if previous is None or observed.time > previous.time:
            out.append(threshold)
    return out


def by_eviction_priority(thresholds: Iterable[Threshold]) -> list[Threshold]:
    """Memory first, then the others in their order (kubelet's byEvictionPriority)."""
    return sorted(thresholds, key=lambda t: (t.signal != MEMORY_AVAILABLE, t.signal not in SIGNAL_RESOURCE))


def threshold_met_info(resource: str, thresholds: Iterable[Threshold],
                       observations: Observations) -> tuple[Threshold, Observation] | None:
    """The first met threshold starving ``resource``, with its observation (for the message)."""
    for threshold in thresholds:
        if SIGNAL_RESOURCE.get(threshold.signal) == resource:
            observed = observations.get(threshold.signal)
            if observed is not None:
                return threshold, observed
    return None

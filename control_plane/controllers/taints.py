"""Taints and tolerations: Kubernetes' matching rules, the taints the node lifecycle
controller owns, and the one write that swaps them on a Node.

Everything here but `swap_node_taints` is pure, so the scheduler and the DaemonSet
controller can share the same matching rules (v1helper.ToleratesTaint,
GetMatchingTolerations, getMinTolerationTime in Kubernetes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from skiff.api.tolerations import tolerates
from skiff.client.api import ApiClient
from skiff.client.errors import Conflict, NotFound

log = logging.getLogger(__name__)

Taint = dict[str, Any]
Toleration = dict[str, Any]

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"

TAINT_NODE_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_NODE_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NODE_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
TAINT_NODE_MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
TAINT_NODE_DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
TAINT_NODE_PID_PRESSURE = "node.kubernetes.io/pid-pressure"
TAINT_NODE_NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"

NOT_READY_NO_EXECUTE: Taint = {"key": TAINT_NODE_NOT_READY, "effect": NO_EXECUTE}
UNREACHABLE_NO_EXECUTE: Taint = {"key": TAINT_NODE_UNREACHABLE, "effect": NO_EXECUTE}

# nodeConditionToTaintKeyStatusMap: condition type -> {status -> NoSchedule taint key}.
CONDITION_TAINTS: dict[str, dict[str, str]] = {
    "Ready": {"False": TAINT_NODE_NOT_READY, "Unknown": TAINT_NODE_UNREACHABLE},
    "MemoryPressure": {"True": TAINT_NODE_MEMORY_PRESSURE},
    "DiskPressure": {"True": TAINT_NODE_DISK_PRESSURE},
    "NetworkUnavailable": {"True": TAINT_NODE_NETWORK_UNAVAILABLE},
    "PIDPressure": {"True": TAINT_NODE_PID_PRESSURE},
}
CONDITION_TAINT_KEYS = frozenset(k for by_status in CONDITION_TAINTS.values() for k in by_status.values())


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    """metav1.Time or MicroTime text -> epoch seconds; None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ---- matching ---------------------------------------------------------------------------


def same_taint(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Taints are identified by (key, effect), as Taint.MatchTaint does."""
    return a.get("key") == b.get("key") and a.get("effect") == b.get("effect")


def taint_exists(taints: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    return any(same_taint(t, taint) for t in taints)


def tolerates_all(tolerations: Iterable[Mapping[str, Any]], taints: Iterable[Mapping[str, Any]]) -> bool:
    tols = list(tolerations)
    return all(any(tolerates(t, taint) for t in tols) for taint in taints)


def matching_tolerations(taints: Iterable[Mapping[str, Any]],
                         tolerations: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]] | None:
    """GetMatchingTolerations: for each taint the first toleration that tolerates it, or
    None when some taint is not tolerated at all."""
    tols = list(tolerations)
    used: list[Mapping[str, Any]] = []
    for taint in taints:
        match = next((t for t in tols if tolerates(t, taint)), None)
        if match is None:
            return None
        used.append(match)
    return used


def min_toleration_seconds(tolerations: Iterable[Mapping[str, Any]]) -> float | None:
    """getMinTolerationTime: the shortest tolerationSeconds (<= 0 counts as 0); None when
    every toleration lasts forever. An empty list means 0: evict at once."""
    tols = list(tolerations)
    if not tols:
        return 0.0
    shortest: float | None = None
    for t in tols:
        seconds = t.get("tolerationSeconds")
        if seconds is None:
            continue
        if int(seconds) <= 0:
            return 0.0
        shortest = float(seconds) if shortest is None else min(shortest, float(seconds))
    return shortest


def no_execute_taints(node: Mapping[str, Any]) -> list[Taint]:
    return [t for t in ((node.get("spec") or {}).get("taints") or []) if t.get("effect") == NO_EXECUTE]


# ---- what the node lifecycle controller wants -----------------------------------------------


def condition(node: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def wanted_no_schedule_taints(node: Mapping[str, Any]) -> list[Taint]:
    """doNoScheduleTaintingPass: NoSchedule taints from the node's conditions, plus
    ``unschedulable`` when spec.unschedulable is set."""
    wanted: list[Taint] = []
    for c in (node.get("status") or {}).get("conditions") or []:
        key = CONDITION_TAINTS.get(c.get("type", ""), {}).get(c.get("status", ""))
        if key:
            wanted.append({"key": key, "effect": NO_SCHEDULE})
    if (node.get("spec") or {}).get("unschedulable"):
        wanted.append({"key": TAINT_NODE_UNSCHEDULABLE, "effect": NO_SCHEDULE})
    return wanted


def owned_no_schedule_taints(node: Mapping[str, Any]) -> list[Taint]:
    """The NoSchedule taints this controller manages on the node now."""
    owned = CONDITION_TAINT_KEYS | {TAINT_NODE_UNSCHEDULABLE}
    return [t for t in (node.get("spec") or {}).get("taints") or []
            if t.get("effect") == NO_SCHEDULE and t.get("key") in owned]


def render_taints(current: Iterable[Mapping[str, Any]], add: Iterable[Mapping[str, Any]],
                  remove: Iterable[Mapping[str, Any]], now: float) -> list[Taint]:
    """``current`` minus ``remove`` plus those of ``add`` not there yet, each added one
    stamped with timeAdded (as SwapNodeControllerTaint does)."""
    removing = list(remove)
    out = [dict(t) for t in current if not taint_exists(removing, t)]
    for taint in add:
        if not taint_exists(out, taint):
            out.append({**taint, "timeAdded": rfc3339(now)})
    return out


async def swap_node_taints(client: ApiClient, node: Mapping[str, Any], add: list[Taint], remove: list[Taint],
                           clock: Callable[[], float] = time.time, attempts: int = 5) -> bool:
    """Add ``add`` and drop ``remove`` on the Node, compare-and-swap on its
    resourceVersion; on a conflict the node is read again and the swap recomputed.
    Returns False when the node is gone; raises the last conflict after ``attempts``."""
    name = node["metadata"]["name"]
    current: Mapping[str, Any] = node
    for attempt in range(1, attempts + 1):
        old = list((current.get("spec") or {}).get("taints") or [])
        new = render_taints(old, add, remove, clock())
        if [(t.get("key"), t.get("effect"), t.get("value")) for t in new] == \
                [(t.get("key"), t.get("effect"), t.get("value")) for t in old]:
            return True
        patch = {"metadata": {"resourceVersion": current["metadata"].get("resourceVersion")},
                 "spec": {"taints": new or None}}
        try:
            await client.patch("nodes", name, patch)
            added = [t["key"] + ":" + t["effect"] for t in add if not taint_exists(old, t)]
            dropped = [t["key"] + ":" + t["effect"] for t in remove if taint_exists(old, t)]
            log.info("node %s: taints%s%s", name, f" added {', '.join(added)}" if added else "",
                     f" removed {', '.join(dropped)}" if dropped else "")
            return True
        except NotFound:
            return False
        except Conflict:
            if attempt == attempts:
                raise
            log.debug("node %s changed while swapping taints (attempt %d/%d); reading it again",
                      name, attempt, attempts)
            try:
                current = await client.get("nodes", name)
            except NotFound:
                return False
    return False

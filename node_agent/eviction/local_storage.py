"""Local storage limits (kubelet's localStorageEviction): a pod whose emptyDir outgrows its
sizeLimit, whose containers together outgrow their ephemeral-storage limits, or one of whose
containers outgrows its own, is evicted whatever the node's pressure."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from node_agent.eviction.ranking import (
    CONTAINER_EPHEMERAL_STORAGE_MESSAGE,
    EMPTY_DIR_MESSAGE,
    POD_EPHEMERAL_STORAGE_MESSAGE,
)
from node_agent.eviction.stats import PodStats
from node_agent.eviction.thresholds import EPHEMERAL_STORAGE
from skiff.api.quantity import QuantityError, format_quantity, parse_quantity, quantity_format

Obj = dict[str, Any]


def _limit(container: Obj) -> tuple[Decimal, str] | None:
    value = ((container.get("resources") or {}).get("limits") or {}).get(EPHEMERAL_STORAGE)
    if value is None:
        return None
    try:
        return parse_quantity(value), quantity_format(value)
    except QuantityError:
        return None


def has_local_storage_limits(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    if any((v.get("emptyDir") or {}).get("sizeLimit") for v in spec.get("volumes") or []):
        return True
    return any(_limit(c) for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])])


def empty_dir_violation(pod: Obj, stats: PodStats) -> str | None:
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        size_text = (volume.get("emptyDir") or {}).get("sizeLimit")
        if size_text is None:
            continue
        try:
            size = parse_quantity(size_text)
            fmt = quantity_format(size_text)
        except QuantityError:
            continue
        used = stats.volume_bytes.get(str(volume.get("name")))
        if used is not None and size > 0 and used > size:
            return EMPTY_DIR_MESSAGE.format(volume.get("name"), format_quantity(size, fmt))
    return None


def pod_ephemeral_violation(pod: Obj, stats: PodStats) -> str | None:
    """PodLimits: the containers' limits summed (at least any init container's)."""
    spec = pod.get("spec") or {}
    limits = [lim for lim in (_limit(c) for c in spec.get("containers") or []) if lim]
    init = [lim for lim in (_limit(c) for c in spec.get("initContainers") or []) if lim]
    if not limits and not init:
        return None
    total = sum((lim[0] for lim in limits), Decimal(0))
    total = max([total, *(lim[0] for lim in init)])
    fmt = (limits or init)[0][1]
    used = sum((c.rootfs_bytes or 0) + (c.logs_bytes or 0) for c in stats.containers) + sum(stats.volume_bytes.values())
    if used > total:
        return POD_EPHEMERAL_STORAGE_MESSAGE.format(format_quantity(total, fmt))
    return None


def container_ephemeral_violation(pod: Obj, stats: PodStats, dedicated_imagefs: bool) -> str | None:
    """A container's logs (and writable layer, unless that lives on a dedicated imagefs) over its limit."""
    limits = {str(c.get("name")): lim for c in (pod.get("spec") or {}).get("containers") or []
              if (lim := _limit(c)) and lim[0] != 0}
    for c in stats.containers:
        limit = limits.get(c.name)
        if limit is None:
            continue
        used = (c.logs_bytes or 0) + (0 if dedicated_imagefs else (c.rootfs_bytes or 0))
        if used > limit[0]:
            return CONTAINER_EPHEMERAL_STORAGE_MESSAGE.format(c.name, format_quantity(limit[0], limit[1]))
    return None


def local_storage_violation(pod: Obj, stats: PodStats, dedicated_imagefs: bool) -> str | None:
    """The message to evict ``pod`` with, or None while it stays within its limits."""
    return (empty_dir_violation(pod, stats) or pod_ephemeral_violation(pod, stats)
            or container_ephemeral_violation(pod, stats, dedicated_imagefs))


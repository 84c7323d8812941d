"""Which pod goes first, and the message it is evicted with (kubelet's eviction helpers).

Memory: pods whose usage exceeds their requests first, then lower priority, then the larger
usage above requests — in effect BestEffort, then Burstable, then Guaranteed. PIDs: lower
priority, then more processes. Disk: exceeding ephemeral-storage requests, priority, then
usage above requests. A pod without stats goes first at every step (kubelet's rule). Sorting
is stable, so equal pods keep the order they were given in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node_agent.eviction.signals import Observations, threshold_met_info
from node_agent.eviction.stats import PodStats
from node_agent.eviction.thresholds import (
    EPHEMERAL_STORAGE,
    IMAGEFS_AVAILABLE,
    IMAGEFS_INODES_FREE,
    INODES,
    MEMORY,
    MEMORY_AVAILABLE,
    NODEFS_AVAILABLE,
    NODEFS_INODES_FREE,
    PID_AVAILABLE,
    PIDS,
    Threshold,
)
from skiff.api.quantity import BINARY_SI, DECIMAL_SI, QuantityError, format_quantity, parse_quantity, quantity_format

Obj = dict[str, Any]
StatsOf = Mapping[str, PodStats]
SYSTEM_CRITICAL_PRIORITY = 2_000_000_000  # kubelet never evicts pods at or above it (IsCriticalPod)
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

# The parts of a pod's disk usage a disk signal counts (kubelet's fsStatsType).
FS_ROOT = "root"
FS_LOGS = "logs"
FS_LOCAL_VOLUMES = "localVolumeSource"
FS_IMAGES = "images"

NODE_LOW_MESSAGE = "The node was low on resource: {}. "
THRESHOLD_MET_MESSAGE = "Threshold quantity: {}, available: {}. "
CONTAINER_MESSAGE = "Container {} was using {}, request is {}, has larger consumption of {}. "
CONTAINER_EPHEMERAL_STORAGE_MESSAGE = 'Container {} exceeded its local ephemeral storage limit "{}". '
POD_EPHEMERAL_STORAGE_MESSAGE = "Pod ephemeral local storage usage exceeds the total limit of containers {}. "
EMPTY_DIR_MESSAGE = 'Usage of EmptyDir volume "{}" exceeds the limit "{}". '


def uid_of(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def key_of(pod: Obj) -> str:
    md = pod.get("metadata") or {}
    return f"{md.get('namespace')}/{md.get('name')}"


def priority(pod: Obj) -> int:
    return int((pod.get("spec") or {}).get("priority") or 0)


def is_critical(pod: Obj) -> bool:
    """Static (mirror) pods and system-critical priorities are never evicted."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return MIRROR_ANNOTATION in annotations or priority(pod) >= SYSTEM_CRITICAL_PRIORITY


def _amount(value: Any) -> int:
    try:
        return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))
    except QuantityError:
        return 0


def container_request(container: Obj, resource: str) -> int:
    return _amount(((container.get("resources") or {}).get("requests") or {}).get(resource, 0))


def pod_request(pod: Obj, resource: str) -> int:
    """GetResourceRequestQuantity: the containers' sum, at least any init container's, plus overhead."""
    spec = pod.get("spec") or {}
    total = sum(container_request(c, resource) for c in spec.get("containers") or [])
    for init in spec.get("initContainers") or []:
        total = max(total, container_request(init, resource))
    overhead = (spec.get("overhead") or {}).get(resource)
    return total + (_amount(overhead) if overhead is not None else 0)


def _request_text(container: Obj, resource: str) -> str:
    value = ((container.get("resources") or {}).get("requests") or {}).get(resource)
    if value is None:
        return "0"
    try:
        return format_quantity(parse_quantity(value), quantity_format(value))
    except QuantityError:
        return str(value)


def pod_disk_usage(stats: PodStats, fs_types: Sequence[str], resource: str) -> int:
    """podDiskUsage: bytes (or inodes) of the parts ``fs_types`` names."""
    inodes = resource == INODES
    total = 0
    for c in stats.containers:
        if FS_ROOT in fs_types:
            total += (c.rootfs_inodes if inodes else c.rootfs_bytes) or 0
        if FS_LOGS in fs_types:
            total += (c.logs_inodes if inodes else c.logs_bytes) or 0
    if FS_LOCAL_VOLUMES in fs_types:
        total += sum((stats.volume_inodes if inodes else stats.volume_bytes).values())
    return total


# -- ranking -------------------------------------------------------------------------------------

RankFn = Callable[[list[Obj], StatsOf], list[Obj]]


def rank_memory_pressure(pods: list[Obj], stats: StatsOf) -> list[Obj]:
    def key(pod: Obj) -> tuple[int, ...]:
        s = stats.get(uid_of(pod))
        if s is None or s.memory_working_set is None:
            return (0, 0, priority(pod), 0)
        usage = s.memory_working_set
        request = pod_request(pod, MEMORY)
        return (1, 0 if usage > request else 1, priority(pod), -(usage - request))
    return sorted(pods, key=key)


def rank_pid_pressure(pods: list[Obj], stats: StatsOf) -> list[Obj]:
    def key(pod: Obj) -> tuple[int, ...]:
        s = stats.get(uid_of(pod))
        if s is None or s.process_count is None:
            return (priority(pod), 0, 0)
        return (priority(pod), 1, -s.process_count)
    return sorted(pods, key=key)


def rank_disk_pressure(fs_types: Sequence[str], resource: str) -> RankFn:
    def rank(pods: list[Obj], stats: StatsOf) -> list[Obj]:
        def key(pod: Obj) -> tuple[int, ...]:
            s = stats.get(uid_of(pod))
            if s is None:
                return (0, 0, priority(pod), 0)
            usage = pod_disk_usage(s, fs_types, resource)
            # kubelet compares inodes with an inodes request (none exists: 0) and subtracts the
            # ephemeral-storage request in both cases.
            exceeds = usage > pod_request(pod, resource)
            return (1, 0 if exceeds else 1, priority(pod), -(usage - pod_request(pod, EPHEMERAL_STORAGE)))
        return sorted(pods, key=key)
    return rank


def rank_functions(dedicated_imagefs: bool) -> dict[str, RankFn]:
    """buildSignalToRankFunc: with a dedicated imagefs, nodefs counts logs and local volumes and
    imagefs the writable layers; on one filesystem every signal counts everything."""
    ranks: dict[str, RankFn] = {MEMORY_AVAILABLE: rank_memory_pressure, PID_AVAILABLE: rank_pid_pressure}
    node_parts: tuple[str, ...]
    image_parts: tuple[str, ...]
    if dedicated_imagefs:
        node_parts, image_parts = (FS_LOGS, FS_LOCAL_VOLUMES), (FS_ROOT, FS_IMAGES)
    else:
        node_parts = image_parts = (FS_IMAGES, FS_ROOT, FS_LOGS, FS_LOCAL_VOLUMES)
    ranks[NODEFS_AVAILABLE] = rank_disk_pressure(node_parts, EPHEMERAL_STORAGE)
    ranks[NODEFS_INODES_FREE] = rank_disk_pressure(node_parts, INODES)
    ranks[IMAGEFS_AVAILABLE] = rank_disk_pressure(image_parts, EPHEMERAL_STORAGE)
    ranks[IMAGEFS_INODES_FREE] = rank_disk_pressure(image_parts, INODES)
    return ranks


# -- the message ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvictionNote:
    """What an eviction tells the user: the pod status message and the event's annotations."""

    message: str
    annotations: Mapping[str, str]


def eviction_message(resource: str, pod: Obj, stats: PodStats | None, thresholds: Sequence[Threshold],
                     observations: Observations) -> EvictionNote:
    """kubelet's evictionMessage, word for word: the starved resource, the threshold and what was
    available, and each container using more than it requested."""
    message = NODE_LOW_MESSAGE.format(resource)
    met = threshold_met_info(resource, thresholds, observations)
    if met is not None:
        threshold, observed = met
        available_fmt = DECIMAL_SI if resource in (INODES, PIDS) else BINARY_SI
        message += THRESHOLD_MET_MESSAGE.format(threshold.value.describe(observed.capacity),
                                                format_quantity(observed.available, available_fmt))
    if stats is None:
        return EvictionNote(message, {})
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    offending: list[str] = []
    usages: list[str] = []
    for c_stats in stats.containers:
        container = next((c for c in containers if c.get("name") == c_stats.name), None)
        if container is None:
            continue
        usage: int | None = None
        if resource == EPHEMERAL_STORAGE and c_stats.rootfs_bytes is not None and c_stats.logs_bytes is not None:
            usage = c_stats.rootfs_bytes + c_stats.logs_bytes
        elif resource == MEMORY and c_stats.memory_working_set is not None:
            usage = c_stats.memory_working_set
        if usage is not None and usage > container_request(container, resource):
            used = format_quantity(usage, BINARY_SI)
            message += CONTAINER_MESSAGE.format(c_stats.name, used, _request_text(container, resource), resource)
            offending.append(c_stats.name)
            usages.append(used)
    return EvictionNote(message, {"offending_containers": ",".join(offending),
                                  "offending_containers_usage": ",".join(usages), "starved_resource": resource})

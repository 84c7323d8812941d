"""Score plugins, each 0-100 per node after normalisation, summed with the profile's
weights (`settings.ScoreWeights`), as kube-scheduler's default profile does:

- NodeResourcesFit, LeastAllocated: free share of cpu and memory after placing the pod,
  counting 100m / 200Mi for containers that request nothing;
- NodeResourcesBalancedAllocation: 100 x (1 - std of the cpu and memory fractions)
  (skipped for best-effort pods);
- NodeAffinity: sum of the preferred terms' weights the node matches, scaled so the best
  evaluated node gets 100 (skipped without preferred terms);
- TaintToleration: PreferNoSchedule taints the pod does not tolerate, reversed so the
  node with fewest gets 100;
- PodTopologySpread with the system default constraint on kubernetes.io/hostname: nodes
  running fewer pods of the same controller score higher (skipped for pods without one);
- ImageLocality: images already on the node, weighted by how widely they are spread.

Integer arithmetic where Kubernetes uses int64, so scores match to the unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from control_plane.scheduler.cache import NodeInfo
from control_plane.scheduler.filters import tolerated
from control_plane.scheduler.podinfo import PodInfo

MAX_NODE_SCORE = 100
MB = 1024 * 1024
IMAGE_MIN_THRESHOLD = 23 * MB
IMAGE_MAX_CONTAINER_THRESHOLD = 1000 * MB


def least_requested(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def least_allocated(req_cpu: int, req_memory: int, alloc_cpu: int, alloc_memory: int) -> int:
    """``req_*``: the node's non-zero requests plus the pod's. Resources the node has none
    of are left out of the average."""
    score = weights = 0
    if alloc_cpu:
        score += least_requested(req_cpu, alloc_cpu)
        weights += 1
    if alloc_memory:
        score += least_requested(req_memory, alloc_memory)
        weights += 1
    return score // weights if weights else 0


def balanced_allocation(req_cpu: int, req_memory: int, alloc_cpu: int, alloc_memory: int) -> int:
    """``req_*``: the node's requests plus the pod's (no non-zero defaults here)."""
    if not (alloc_cpu and alloc_memory):
        return MAX_NODE_SCORE  # one fraction: no deviation
    fc = min(req_cpu / alloc_cpu, 1.0)
    fm = min(req_memory / alloc_memory, 1.0)
    std = abs((fc - fm) / 2)
    return int((1 - std) * MAX_NODE_SCORE)


def resource_scores(pod: PodInfo, alloc_cpu: int, alloc_memory: int, req_cpu: int, req_memory: int,
                    nz_cpu: int, nz_memory: int, weights_fit: int, weights_balanced: int) -> int:
    """Weighted LeastAllocated + BalancedAllocation for one node state (the part every node
    of a resource class shares)."""
    total = weights_fit * least_allocated(nz_cpu + pod.nz_cpu, nz_memory + pod.nz_memory, alloc_cpu, alloc_memory)
    if not pod.best_effort:
        total += weights_balanced * balanced_allocation(req_cpu + pod.cpu, req_memory + pod.memory,
                                                        alloc_cpu, alloc_memory)
    return total


def prefer_no_schedule_count(pod: PodInfo, ni: NodeInfo) -> int:
    """PreferNoSchedule taints not tolerated by tolerations with an empty or that effect."""
    if not ni.prefer_taints:
        return 0
    tols = [t for t in pod.tolerations if not t.get("effect") or t.get("effect") == "PreferNoSchedule"]
    return sum(1 for taint in ni.prefer_taints if not tolerated(tols, taint))


def image_locality(pod: PodInfo, ni: NodeInfo, images: Mapping[str, Mapping[str, Any]], total_nodes: int) -> int:
    """``images``: image -> {node: size} across the cluster (for how widely it is spread)."""
    if not pod.images or not ni.images or not total_nodes:
        return 0
    total = 0
    for image in pod.images:
        size = ni.images.get(image)
        if size is not None:
            total += int(size * (len(images.get(image) or ()) / total_nodes))
    max_threshold = IMAGE_MAX_CONTAINER_THRESHOLD * len(pod.images)
    total = min(max(total, IMAGE_MIN_THRESHOLD), max_threshold)
    return MAX_NODE_SCORE * (total - IMAGE_MIN_THRESHOLD) // (max_threshold - IMAGE_MIN_THRESHOLD)


def go_round(x: float) -> int:
    """math.Round: halves away from zero (Python's round() goes to even)."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def spread_weight(feasible_nodes: int) -> float:
    """topologyNormalizingWeight for the hostname domain: log(number of domains + 2)."""
    return math.log(feasible_nodes + 2)


def spread_raw(count: int, weight: float, max_skew: int) -> int:
    """PodTopologySpread's Score for one constraint: count x weight + (maxSkew - 1), rounded."""
    return go_round(count * weight + (max_skew - 1))


def spread_normalized(raw: int, min_raw: int, max_raw: int) -> int:
    """PodTopologySpread's NormalizeScore: fewer matching pods, higher score."""
    if max_raw == 0:
        return MAX_NODE_SCORE
    return MAX_NODE_SCORE * (max_raw + min_raw - raw) // max_raw


def default_normalize(scores: list[int], reverse: bool) -> list[int]:
    """helper.DefaultNormalizeScore: scale so the highest is 100 (reversed: 100 - that)."""
    top = max(scores, default=0)
    if top == 0:
        return [MAX_NODE_SCORE if reverse else 0 for _ in scores]
    out = [MAX_NODE_SCORE * s // top for s in scores]
    return [MAX_NODE_SCORE - s for s in out] if reverse else out

"""Two ways to find the best node for a pod; both give the scores kube-scheduler gives.

`find_feasible` + `select_best` walk the nodes one by one from a rotating start and stop
after enough feasible ones (kube-scheduler's percentageOfNodesToScore sampling), then
score them. This handles everything: host ports, preferred affinity, PreferNoSchedule
taints, images already on nodes.

`place_indexed` considers *every* node without visiting each: nodes of one resource
class share their fit and resource scores, and the owner index tells how many of the
pod's siblings each node runs. It applies when nothing else tells nodes apart (no host
ports, no preferred affinity, no PreferNoSchedule taints in the cluster, none of the
pod's images on any node), which is the common case in a big cluster of similar nodes;
its cost grows with the number of classes, not nodes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from control_plane.scheduler.cache import Cache, ClassKey, NodeClass, NodeInfo, OwnerSpread
from control_plane.scheduler.filters import fits, static_reason
from control_plane.scheduler.indexedset import IndexedSet
from control_plane.scheduler.podinfo import PodInfo
from control_plane.scheduler.scores import (
    MAX_NODE_SCORE,
    default_normalize,
    image_locality,
    prefer_no_schedule_count,
    resource_scores,
    spread_normalized,
    spread_raw,
    spread_weight,
)
from control_plane.scheduler.settings import SchedulerSettings

# Beyond these the index is no cheaper than sampling: fall back to the scan.
INDEX_MAX_EXCLUDED = 1024
INDEX_MAX_CLASSES = 512
REJECTION_TRIES = 32


# ---- scan ------------------------------------------------------------------------------


def find_feasible(pod: PodInfo, candidates: list[NodeInfo], failed: Mapping[str, str] | None, want: int,
                  start: int, name_taints: bool = False) -> tuple[list[NodeInfo], int]:
    """Walk ``candidates`` from ``start`` (wrapping) until ``want`` nodes pass every filter.
    ``failed``: static verdicts by node name; None to run the static filters here.
    Returns the feasible nodes and how many nodes were looked at."""
    n = len(candidates)
    feasible: list[NodeInfo] = []
    processed = 0
    if not n:
        return feasible, 0
    start %= n
    for i in range(n):
        ni = candidates[(start + i) % n]
        processed += 1
        if failed is not None:
            if ni.name in failed:
                continue
        elif static_reason(pod, ni, name_taints):
            continue
        if not fits(pod, ni):
            continue
        feasible.append(ni)
        if len(feasible) >= want:
            break
    return feasible, processed


def select_best(pod: PodInfo, feasible: list[NodeInfo], cache: Cache, settings: SchedulerSettings,
                rng: random.Random, memo: dict[tuple[object, ...], int] | None = None) -> str:
    """Score every feasible node, normalise over them, pick the highest (ties at random)."""
    return feasible[best_index(node_scores(pod, feasible, cache, settings, memo), rng)].name


def pod_shape(pod: PodInfo) -> tuple[object, ...]:
    """What of a pod the resource filters and scores look at."""
    return (pod.cpu, pod.memory, pod.ephemeral, pod.nz_cpu, pod.nz_memory, tuple(pod.scalars.items()))


def node_scores(pod: PodInfo, feasible: list[NodeInfo], cache: Cache, settings: SchedulerSettings,
                memo: dict[tuple[object, ...], int] | None = None) -> list[int]:
    """Total weighted score of each feasible node, as kube-scheduler's default profile.
    ``memo`` caches the resource scores by resource class (equal for equal classes)."""
    if not feasible:
        return []
    w = settings.weights
    memo = {} if memo is None else memo
    shape = ("resources", pod_shape(pod))
    totals: list[int] = []
    for ni in feasible:
        key = (ni.class_key, shape)
        score = memo.get(key)
        if score is None:
            score = memo[key] = resource_scores(pod, ni.alloc_cpu, ni.alloc_memory, ni.req_cpu, ni.req_memory,
                                                ni.nz_cpu, ni.nz_memory, w.node_resources_fit, w.balanced_allocation)
        totals.append(score)
    if cache.prefer_tainted_nodes:
        taints = default_normalize([prefer_no_schedule_count(pod, ni) for ni in feasible], reverse=True)
        for i, s in enumerate(taints):
            totals[i] += w.taint_toleration * s
    else:  # no node has any: every node gets the full score
        totals = [t + w.taint_toleration * MAX_NODE_SCORE for t in totals]
    if pod.preferred:
        affinity = default_normalize([pod.preferred.score(ni.name, ni.labels) for ni in feasible], reverse=False)
        for i, s in enumerate(affinity):
            totals[i] += w.node_affinity * s
    if pod.owner:
        weight = spread_weight(len(feasible))
        counts = [ni.owners.get(pod.owner, 0) for ni in feasible]
        raw = {k: spread_raw(k, weight, settings.default_spread_max_skew) for k in set(counts)}
        lo, hi = min(raw.values()), max(raw.values())
        normalized = {k: w.pod_topology_spread * spread_normalized(r, lo, hi) for k, r in raw.items()}
        for i, k in enumerate(counts):
            totals[i] += normalized[k]
    if pod.images and cache.images and any(image in cache.images for image in pod.images):
        total_nodes = cache.node_count()
        for i, ni in enumerate(feasible):
            totals[i] += w.image_locality * image_locality(pod, ni, cache.images, total_nodes)
    return totals


def best_index(scores: list[int], rng: random.Random) -> int:
    """selectHost: the highest score; among equals, each equally likely (reservoir sampling)."""
    best, chosen, ties = -1, 0, 0
    for i, s in enumerate(scores):
        if s > best:
            best, chosen, ties = s, i, 1
        elif s == best:
            ties += 1
            if rng.randrange(ties) == 0:
                chosen = i
    return chosen


# ---- index -----------------------------------------------------------------------------


def indexable(pod: PodInfo, cache: Cache, failed: Mapping[str, str]) -> bool:
    if pod.ports or pod.preferred or cache.prefer_tainted_nodes:
        return False
    if len(failed) > INDEX_MAX_EXCLUDED or len(cache.classes) > INDEX_MAX_CLASSES:
        return False
    return not any(image in cache.images for image in pod.images)


def class_fits(pod: PodInfo, key: ClassKey) -> bool:
    acpu, amem, aeph, apods, rcpu, rmem, reph, _, _, count, ascal, rscal = key
    if count >= apods:
        return False
    if pod.cpu and pod.cpu > acpu - rcpu:
        return False
    if pod.memory and pod.memory > amem - rmem:
        return False
    if pod.ephemeral and pod.ephemeral > aeph - reph:
        return False
    if pod.scalars:
        alloc, used = dict(ascal), dict(rscal)
        for name, value in pod.scalars.items():
            if value > alloc.get(name, 0) - used.get(name, 0):
                return False
    return True


def class_score(pod: PodInfo, key: ClassKey, settings: SchedulerSettings) -> int:
    """The score every node of the class gets, spreading aside. With no PreferNoSchedule
    taint anywhere TaintToleration gives every node 100; ImageLocality gives 0."""
    acpu, amem, _, _, rcpu, rmem, _, nzc, nzm, _, _, _ = key
    w = settings.weights
    return (resource_scores(pod, acpu, amem, rcpu, rmem, nzc, nzm, w.node_resources_fit, w.balanced_allocation)
            + w.taint_toleration * MAX_NODE_SCORE)


def place_indexed(pod: PodInfo, cache: Cache, failed: Mapping[str, str], settings: SchedulerSettings,
                  rng: random.Random, memo: dict[tuple[object, ...], int] | None = None) -> str | None:
    """The best node over all nodes (see the module docstring), or None if none fits.
    ``memo`` caches class scores across decisions (pods of one template meet the same
    classes again and again)."""
    excluded_by_class: dict[ClassKey, int] = {}
    for name in failed:
        ni = cache.nodes.get(name)
        if ni is not None and ni.class_key is not None:
            excluded_by_class[ni.class_key] = excluded_by_class.get(ni.class_key, 0) + 1
    shape = pod_shape(pod)
    fitting: list[tuple[NodeClass, int, int]] = []  # (class, feasible nodes in it, class score)
    for cls in cache.iter_classes():
        n_ok = len(cls.members) - excluded_by_class.get(cls.key, 0)
        if n_ok <= 0:
            continue
        memo_key = (cls.key, shape)
        score = memo.get(memo_key) if memo is not None else None
        if score is None:
            score = class_score(pod, cls.key, settings) if class_fits(pod, cls.key) else -1
            if memo is not None:
                memo[memo_key] = score
        if score >= 0:
            fitting.append((cls, n_ok, score))
    if not fitting:
        return None
    spread = cache.owners.get(pod.owner) if pod.owner else None
    # Groups of equally scored nodes: (total score, class, owner pods per node, nodes in the group).
    groups: list[tuple[int, NodeClass, int, int]]
    if pod.owner is None:
        groups = [(score, cls, 0, n_ok) for cls, n_ok, score in fitting]
    else:
        counted = _count_by_spread(fitting, spread, failed, cache)
        weight = spread_weight(sum(n_ok for _, n_ok, _ in fitting))
        skew = settings.default_spread_max_skew
        raw = {k: spread_raw(k, weight, skew) for k in {k for _, _, k, _ in counted}}
        lo, hi = min(raw.values()), max(raw.values())
        w = settings.weights.pod_topology_spread
        spread_score = {k: w * spread_normalized(r, lo, hi) for k, r in raw.items()}
        groups = [(score + spread_score[k], cls, k, n) for score, cls, k, n in counted]
    best = max(g[0] for g in groups)
    tied = [g for g in groups if g[0] == best]
    pick = rng.randrange(sum(g[3] for g in tied))
    for _, cls, k, n in tied:
        if pick < n:
            return _pick_node(cls, k, pod.owner, spread, failed, rng)
        pick -= n
    raise AssertionError("unreachable: the pick is below the tied nodes' count")


def _count_by_spread(fitting: list[tuple[NodeClass, int, int]], spread: OwnerSpread | None,
                     failed: Mapping[str, str], cache: Cache) -> list[tuple[int, NodeClass, int, int]]:
    """Split each fitting class by how many of the owner's pods its feasible nodes run:
    (class score, class, pods of the owner per node, feasible nodes)."""
    excluded_by_count: dict[tuple[ClassKey, int], int] = {}
    if spread is not None:
        for name in failed:
            k = spread.per_node.get(name, 0)
            ni = cache.nodes.get(name)
            if k and ni is not None and ni.class_key is not None:
                excluded_by_count[(ni.class_key, k)] = excluded_by_count.get((ni.class_key, k), 0) + 1
    counted: list[tuple[int, NodeClass, int, int]] = []
    for cls, n_ok, score in fitting:
        with_pods = 0
        if spread is not None:
            for k, nodes in spread.by_class.get(cls.key, {}).items():
                n = len(nodes) - excluded_by_count.get((cls.key, k), 0)
                if n > 0:
                    counted.append((score, cls, k, n))
                    with_pods += n
        if n_ok > with_pods:
            counted.append((score, cls, 0, n_ok - with_pods))
    return counted


def _pick_node(cls: NodeClass, k: int, owner: str | None, spread: OwnerSpread | None, failed: Mapping[str, str],
               rng: random.Random) -> str:
    """A random feasible node of the class running ``k`` pods of ``owner``."""
    per_node: Mapping[str, int] = spread.per_node if owner and spread is not None else {}
    pool: IndexedSet = cls.members
    if k:
        assert spread is not None
        pool = spread.by_class[cls.key][k]

    def ok(name: str) -> bool:
        return name not in failed and (k > 0 or not per_node.get(name))

    for _ in range(REJECTION_TRIES):
        name = pool.choice(rng)
        if ok(name):
            return name
    candidates = [name for name in pool if ok(name)]  # few good ones among many: look at all
    return candidates[rng.randrange(len(candidates))]

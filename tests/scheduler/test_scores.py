"""Score plugins: values computed by hand with Kubernetes' integer arithmetic."""

from __future__ import annotations

import math

from sched_objects import make_node, make_pod, taint

from control_plane.scheduler.cache import Cache, NodeInfo
from control_plane.scheduler.podinfo import PodInfo
from control_plane.scheduler.scores import (
    balanced_allocation,
    default_normalize,
    go_round,
    image_locality,
    least_allocated,
    prefer_no_schedule_count,
    resource_scores,
    spread_normalized,
    spread_raw,
    spread_weight,
)

MB = 1024 * 1024


def test_least_allocated_averages_cpu_and_memory_free_shares() -> None:
    # cpu (4000-3000)*100/4000 = 25, memory (10000-5000)*100/10000 = 50 -> (25+50)/2 = 37
    assert least_allocated(3000, 5000, 4000, 10000) == 37
    assert least_allocated(5000, 5000, 4000, 10000) == 25  # over capacity scores 0 for that resource
    assert least_allocated(0, 5000, 0, 10000) == 50  # a resource the node has none of is left out


def test_balanced_allocation_is_one_minus_the_deviation_of_fractions() -> None:
    assert balanced_allocation(3000, 5000, 4000, 10000) == 87  # |0.75 - 0.5| / 2 = 0.125
    assert balanced_allocation(2000, 5000, 4000, 10000) == 100
    assert balanced_allocation(8000, 0, 4000, 10000) == 50  # fractions capped at 1


def test_resource_scores_use_non_zero_requests_and_skip_balance_for_best_effort() -> None:
    best_effort = PodInfo.of(make_pod("p"))
    assert best_effort.best_effort and (best_effort.nz_cpu, best_effort.nz_memory) == (100, 200 * MB)
    # LeastAllocated only: cpu (4000-100)*100/4000 = 97, memory (1024-200)*100/1024 = 80 -> 88
    assert resource_scores(best_effort, 4000, 1024 * MB, 0, 0, 0, 0, 1, 1) == 88
    burstable = PodInfo.of(make_pod("q", cpu="1", memory="256Mi"))
    # LeastAllocated: cpu 75, memory 75 -> 75; balanced: fractions 0.25 and 0.25 -> 100
    assert resource_scores(burstable, 4000, 1024 * MB, 0, 0, 0, 0, 1, 1) == 175


def test_prefer_no_schedule_counts_untolerated_taints() -> None:
    ni = NodeInfo("n1")
    ni.set_node(make_node("n1", taints=[taint("a", effect="PreferNoSchedule"), taint("b", effect="PreferNoSchedule"),
                                        taint("c", effect="NoSchedule")]))
    assert prefer_no_schedule_count(PodInfo.of(make_pod("p")), ni) == 2
    tolerant = PodInfo.of(make_pod("p", tolerations=[{"key": "a", "operator": "Exists"},
                                                     {"key": "b", "operator": "Exists", "effect": "NoSchedule"}]))
    assert prefer_no_schedule_count(tolerant, ni) == 1  # a NoSchedule toleration does not cover PreferNoSchedule


def test_image_locality_scales_by_spread() -> None:
    cache = Cache()
    image = [{"names": ["registry/app:1"], "sizeBytes": 500 * MB}]
    cache.set_node(make_node("n1", images=image))
    cache.set_node(make_node("n2", images=image))
    cache.set_node(make_node("n3"))
    cache.set_node(make_node("n4"))
    p = PodInfo.of(make_pod("p", image="registry/app:1"))
    n1, n3 = cache.get("n1"), cache.get("n3")
    assert n1 is not None and n3 is not None
    # 500MB x 2/4 nodes = 250MB; (250 - 23) * 100 / (1000 - 23) = 23
    assert image_locality(p, n1, cache.images, 4) == 23
    assert image_locality(p, n3, cache.images, 4) == 0
    untagged = PodInfo.of(make_pod("q", image="registry/app"))
    assert untagged.images == ("registry/app:latest",)


def test_spread_scores_favour_nodes_with_fewer_siblings() -> None:
    w = spread_weight(3)
    assert math.isclose(w, math.log(5))
    raws = [spread_raw(k, w, 3) for k in (0, 1, 2)]
    assert raws == [2, 4, 5]  # round(k * log 5 + 2)
    assert [spread_normalized(r, 2, 5) for r in raws] == [100, 60, 40]
    assert spread_normalized(2, 2, 2) == 50 * 2  # all equal: 100 * (2 + 2 - 2) / 2


def test_default_normalize() -> None:
    assert default_normalize([0, 2, 4], reverse=False) == [0, 50, 100]
    assert default_normalize([0, 2, 4], reverse=True) == [100, 50, 0]
    assert default_normalize([0, 0], reverse=True) == [100, 100]
    assert default_normalize([0, 0], reverse=False) == [0, 0]


def test_go_round_rounds_halves_away_from_zero() -> None:
    assert [go_round(x) for x in (2.5, 3.5, 2.4, -2.5)] == [3, 4, 2, -3]

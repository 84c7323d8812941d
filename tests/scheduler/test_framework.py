"""Whole decisions on an in-memory cache: the chosen node, and the exact FailedScheduling
message when there is none; the class index agrees with node-by-node scoring."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from sched_objects import make_node, make_pod, taint

from control_plane.scheduler import placement
from control_plane.scheduler.cache import Cache
from control_plane.scheduler.framework import FitError, Framework, num_feasible_nodes_to_find
from control_plane.scheduler.podinfo import PodInfo
from control_plane.scheduler.settings import SchedulerSettings

CONTROL_PLANE = taint("node-role.kubernetes.io/control-plane")


def cluster(*nodes: dict[str, Any], seed: int = 1, settings: SchedulerSettings | None = None) -> Framework:
    fw = Framework(Cache(), settings, random.Random(seed))
    for node in nodes:
        add_node(fw, node)
    return fw


def add_node(fw: Framework, node: dict[str, Any]) -> None:
    fw.cache.set_node(node)
    ni = fw.cache.get(node["metadata"]["name"])
    assert ni is not None
    fw.node_changed(ni)


def message(fw: Framework, pod: dict[str, Any]) -> str:
    with pytest.raises(FitError) as err:
        fw.schedule(PodInfo.of(pod))
    return err.value.message


def place(fw: Framework, pod: dict[str, Any]) -> str:
    info = PodInfo.of(pod)
    node = fw.schedule(info)
    fw.cache.assume(info, node)
    return node


# ---- messages ------------------------------------------------------------------------------


def test_message_counts_reasons_per_node_sorted_as_strings() -> None:
    fw = cluster(make_node("cp1", taints=[CONTROL_PLANE]), make_node("cp2", taints=[CONTROL_PLANE]),
                 make_node("w1", memory="1Gi"))
    assert message(fw, make_pod("big", memory="2Gi")) == (
        "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint(s). "
        "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, "
        "2 Preemption is not helpful for scheduling.")


def test_message_in_the_older_wording_names_the_taint() -> None:
    fw = cluster(make_node("cp1", taints=[CONTROL_PLANE]), make_node("cp2", taints=[CONTROL_PLANE]),
                 make_node("w1", memory="1Gi"), settings=SchedulerSettings(name_taints_in_messages=True))
    assert message(fw, make_pod("big", memory="2Gi")) == (
        "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: "
        "1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.")


def test_message_with_several_reasons_on_one_node_and_ten_nodes_sorting() -> None:
    nodes = [make_node(f"n{i}", cpu="1", memory="1Gi") for i in range(10)] + \
        [make_node("sel", labels={"disk": "ssd"}, cpu="1", memory="1Gi", unschedulable=True)]
    fw = cluster(*nodes)
    # "10 ..." sorts before "2 ..." as strings, as Go's sort.Strings does.
    assert message(fw, make_pod("big", cpu="2", memory="2Gi")) == (
        "0/11 nodes are available: 1 node(s) were unschedulable, 10 Insufficient cpu, 10 Insufficient memory. "
        "preemption: 0/11 nodes are available: 1 Preemption is not helpful for scheduling, "
        "10 No preemption victims found for incoming pod.")


def test_message_for_selector_ports_and_pod_count() -> None:
    fw = cluster(make_node("a", labels={"disk": "ssd"}, pods=1), make_node("b", labels={"disk": "ssd"}),
                 make_node("c"))
    fw.cache.add_pod(make_pod("filler", node_name="a"))
    fw.cache.add_pod(make_pod("web", node_name="b", containers=[
        {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}]))
    pod = make_pod("p", nodeSelector={"disk": "ssd"}, containers=[
        {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}])
    assert message(fw, pod) == (
        "0/3 nodes are available: 1 Too many pods, 1 node(s) didn't have free ports for the requested pod ports, "
        "1 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.")


def test_message_when_preemption_is_never_allowed() -> None:
    fw = cluster(make_node("a", memory="1Gi"))
    assert message(fw, make_pod("p", memory="2Gi", preemptionPolicy="Never")) == (
        "0/1 nodes are available: 1 Insufficient memory. preemption: not eligible due to preemptionPolicy=Never.")


def test_message_without_nodes() -> None:
    assert message(cluster(), make_pod("p")) == "no nodes available to schedule pods"


def daemon_pod(name: str, *nodes: str, **kw: Any) -> dict[str, Any]:
    """A pod pinned as the DaemonSet controller pins them: matchFields metadata.name In."""
    terms = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": list(nodes)}]}]
    return make_pod(name, affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                                     {"nodeSelectorTerms": terms}}}, **kw)


def test_pod_pinned_by_match_fields_only_tries_its_node() -> None:
    fw = cluster(make_node("a", memory="1Gi"), make_node("b"), make_node("c"))
    assert place(fw, daemon_pod("ds-b", "b")) == "b"
    assert message(fw, daemon_pod("ds-a", "a", memory="2Gi")) == (
        "0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]. "
        "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, "
        "2 Preemption is not helpful for scheduling.")
    assert message(fw, daemon_pod("ds-gone", "gone")) == (
        "0/3 nodes are available: 3 node(s) didn't satisfy plugin(s) [NodeAffinity]. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")


def test_conflicting_match_fields_terms() -> None:
    fw = cluster(make_node("a"))
    terms = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]},
                              {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]
    pod = make_pod("p", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                                   {"nodeSelectorTerms": terms}}})
    assert message(fw, pod) == ("0/1 nodes are available: pod affinity terms conflict. "
                                "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")


# ---- choices -------------------------------------------------------------------------------


def test_replicas_of_one_owner_spread_over_nodes() -> None:
    fw = cluster(make_node("a"), make_node("b"), make_node("c"))
    placed = Counter(place(fw, make_pod(f"web-{i}", cpu="100m", memory="64Mi", owner="rs-web")) for i in range(6))
    assert placed == {"a": 2, "b": 2, "c": 2}


def test_least_allocated_node_wins() -> None:
    fw = cluster(make_node("a"), make_node("b"))
    fw.cache.add_pod(make_pod("busy", cpu="3", memory="6Gi", node_name="a"))
    assert {place(fw, make_pod(f"p{i}", cpu="100m", memory="100Mi")) for i in range(3)} == {"b"}


def test_ties_are_broken_at_random() -> None:
    chosen = {cluster(*(make_node(n) for n in "abcd"), seed=seed).schedule(PodInfo.of(make_pod("p")))
              for seed in range(40)}
    assert chosen == set("abcd")


def test_preferred_affinity_and_prefer_no_schedule_taints_steer_the_choice() -> None:
    fw = cluster(make_node("a", labels={"zone": "x"}), make_node("b", labels={"zone": "y"}))
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["y"]}]}}]}}
    assert {place(fw, make_pod(f"p{i}", affinity=preferred)) for i in range(3)} == {"b"}
    fw = cluster(make_node("a", taints=[taint("spot", effect="PreferNoSchedule")]), make_node("b"))
    assert {place(fw, make_pod(f"p{i}")) for i in range(3)} == {"b"}


def test_image_locality_prefers_nodes_with_the_image() -> None:
    big = [{"names": ["registry/big:1"], "sizeBytes": 900 * 1024 * 1024}]
    fw = cluster(make_node("a"), make_node("b", images=big), make_node("c"), make_node("d"))
    assert place(fw, make_pod("p", image="registry/big:1")) == "b"


def test_static_results_follow_node_changes() -> None:
    fw = cluster(make_node("a", taints=[taint("maintenance")]))
    pod = make_pod("p")
    assert "untolerated taint" in message(fw, pod)
    add_node(fw, make_node("a"))  # the taint is gone
    assert place(fw, pod) == "a"
    fw.cache.remove_node("a")
    fw.node_removed("a")
    add_node(fw, make_node("b", ready="False"))
    assert message(fw, make_pod("q")).startswith("0/1 nodes are available: 1 node(s) had untolerated taint(s).")


def test_adaptive_share_of_nodes_to_find() -> None:
    assert num_feasible_nodes_to_find(0, 50) == 50
    assert num_feasible_nodes_to_find(0, 1000) == 420  # 50 - 1000/125 = 42%
    assert num_feasible_nodes_to_find(0, 5000) == 500  # 10%
    assert num_feasible_nodes_to_find(0, 100_000) == 5000  # at least 5%
    assert num_feasible_nodes_to_find(1, 5000) == 100  # at least 100 nodes
    assert num_feasible_nodes_to_find(100, 5000) == 5000


# ---- the class index agrees with scoring node by node --------------------------------------


def random_cluster(rng: random.Random) -> Framework:
    fw = Framework(Cache(), SchedulerSettings(percentage_of_nodes_to_score=100), random.Random(rng.random()))
    shapes = [("2", "4Gi"), ("4", "8Gi"), ("8", "16Gi")]
    for i in range(rng.randint(1, 40)):
        cpu, mem = rng.choice(shapes)
        taints = [taint("dedicated")] if rng.random() < 0.15 else None
        labels = {"disk": rng.choice(["ssd", "hdd"])}
        add_node(fw, make_node(f"n{i}", cpu, mem, pods=rng.choice([3, 10, 110]), taints=taints, labels=labels,
                               ready="True" if rng.random() < 0.9 else "False"))
    for j in range(rng.randint(0, 120)):
        pod = make_pod(f"bound-{j}", cpu=rng.choice(["100m", "500m", "1", None]),
                       memory=rng.choice(["64Mi", "1Gi", None]), owner=rng.choice(["rs-a", "rs-b", None]))
        try:
            place(fw, pod)
        except FitError:
            pass
    return fw


def all_node_scores(fw: Framework, info: PodInfo) -> dict[str, int]:
    static = fw.static.get(info) if info.static_signature else None
    feasible, _ = placement.find_feasible(info, fw.cache.node_list, static.failed if static else None,
                                          len(fw.cache.node_list), 0)
    return dict(zip((ni.name for ni in feasible),
                    placement.node_scores(info, feasible, fw.cache, fw.settings), strict=True))


@pytest.mark.parametrize("seed", range(60))
def test_class_index_picks_a_node_with_the_best_score(seed: int) -> None:
    rng = random.Random(seed)
    fw = random_cluster(rng)
    pod = make_pod("probe", cpu=rng.choice(["100m", "1", "3", None]), memory=rng.choice(["128Mi", "2Gi", None]),
                   owner=rng.choice(["rs-a", "rs-b", "rs-new", None]),
                   nodeSelector={"disk": "ssd"} if rng.random() < 0.3 else {},
                   tolerations=[{"key": "dedicated", "operator": "Exists"}] if rng.random() < 0.3 else [])
    info = PodInfo.of(pod)
    static = fw.static.get(info)
    assert placement.indexable(info, fw.cache, static.failed)
    scores = all_node_scores(fw, info)
    chosen = placement.place_indexed(info, fw.cache, static.failed, fw.settings, fw.rng)
    if not scores:
        assert chosen is None
        with pytest.raises(FitError) as indexed_err:
            fw.schedule(info)
        scan = fw._diagnose(info, fw.cache.node_list, static.failed, fw.cache.node_count())
        assert indexed_err.value.diagnosis is not None
        assert indexed_err.value.diagnosis.reasons == scan.reasons
        return
    assert chosen in scores
    assert scores[chosen] == max(scores.values())

"""The cache: aggregates follow bound, assumed and deleted pods; the class and owner
indexes always equal what a full recount gives."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from sched_objects import make_node, make_pod

from control_plane.scheduler.cache import Cache
from control_plane.scheduler.podinfo import PodInfo


def check_indexes(cache: Cache) -> None:
    """Recount everything from the nodes' pods and compare with the incremental state."""
    classes: dict[object, set[str]] = defaultdict(set)
    owners: dict[str, dict[str, int]] = defaultdict(dict)
    by_class: dict[str, dict[object, dict[int, set[str]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
    for ni in cache.nodes.values():
        assert ni.pod_count == len(ni.pods)
        assert ni.req_cpu == sum(e.cpu for e in ni.pods.values())
        assert ni.nz_memory == sum(e.nz_memory for e in ni.pods.values())
        counts: dict[str, int] = defaultdict(int)
        for e in ni.pods.values():
            if e.owner:
                counts[e.owner] += 1
        assert dict(counts) == ni.owners
        for owner, n in counts.items():
            owners[owner][ni.name] = n
        if ni.node is None:
            assert ni.class_key is None
            continue
        assert ni.class_key == ni.class_key_now()
        classes[ni.class_key].add(ni.name)
        for owner, n in counts.items():
            by_class[owner][ni.class_key][n].add(ni.name)
    assert {k: set(c.members) for k, c in cache.classes.items()} == dict(classes)
    assert {o: s.per_node for o, s in cache.owners.items()} == dict(owners)
    for owner, spread in cache.owners.items():
        got = {k: {n: set(nodes) for n, nodes in counts.items()} for k, counts in spread.by_class.items()}
        assert got == {k: dict(v) for k, v in by_class[owner].items()}


def test_assumed_pod_is_confirmed_by_the_informer_and_counted_once() -> None:
    cache = Cache()
    cache.set_node(make_node("a"))
    pod = make_pod("p", cpu="500m", owner="rs")
    info = PodInfo.of(pod)
    cache.assume(info, "a")
    assert cache.is_assumed(info.uid)
    bound = {**pod, "spec": {**pod["spec"], "nodeName": "a"}}
    cache.add_pod(bound)
    ni = cache.get("a")
    assert ni is not None and ni.req_cpu == 500 and ni.pod_count == 1 and not cache.is_assumed(info.uid)
    cache.forget(info.uid)  # too late to forget: it is bound
    assert ni.pod_count == 1
    check_indexes(cache)


def test_pod_assumed_on_one_node_but_bound_to_another_moves() -> None:
    cache = Cache()
    cache.set_node(make_node("a"))
    cache.set_node(make_node("b"))
    pod = make_pod("p", cpu="1")
    cache.assume(PodInfo.of(pod), "a")
    cache.add_pod({**pod, "spec": {**pod["spec"], "nodeName": "b"}})
    a, b = cache.get("a"), cache.get("b")
    assert a is not None and b is not None and (a.req_cpu, b.req_cpu) == (0, 1000)
    check_indexes(cache)


def test_terminating_pods_keep_their_resources_but_stop_counting_for_spreading() -> None:
    cache = Cache()
    cache.set_node(make_node("a"))
    pod = make_pod("p", cpu="1", owner="rs", node_name="a")
    cache.add_pod(pod)
    cache.add_pod({**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    ni = cache.get("a")
    assert ni is not None and ni.req_cpu == 1000 and ni.owners == {} and "rs" not in cache.owners
    check_indexes(cache)


def test_node_deleted_under_its_pods_and_back() -> None:
    cache = Cache()
    cache.set_node(make_node("a"))
    pod = make_pod("p", cpu="1", owner="rs", node_name="a")
    cache.add_pod(pod)
    cache.remove_node("a")
    assert cache.get("a") is None and cache.node_list == [] and "a" in cache.nodes
    check_indexes(cache)
    cache.set_node(make_node("a"))
    ni = cache.get("a")
    assert ni is not None and ni.req_cpu == 1000
    check_indexes(cache)
    cache.remove_pod(pod["metadata"]["uid"])
    cache.remove_node("a")
    assert "a" not in cache.nodes


@pytest.mark.parametrize("seed", range(20))
def test_indexes_survive_random_churn(seed: int) -> None:
    rng = random.Random(seed)
    cache = Cache()
    live: list[dict[str, object]] = []
    assumed: list[PodInfo] = []
    for step in range(300):
        op = rng.random()
        nodes = [ni.name for ni in cache.node_list]
        if op < 0.1 or not nodes:
            cache.set_node(make_node(f"n{rng.randint(0, 8)}", cpu=rng.choice(["2", "4"]), memory="8Gi"))
        elif op < 0.15:
            cache.remove_node(rng.choice(nodes))
        elif op < 0.55:
            pod = make_pod(f"p{step}", cpu=rng.choice(["100m", "1", None]), owner=rng.choice(["x", "y", None]),
                           node_name=rng.choice(nodes))
            cache.add_pod(pod)
            live.append(pod)
        elif op < 0.7:
            info = PodInfo.of(make_pod(f"a{step}", cpu="200m", owner=rng.choice(["x", "z"])))
            cache.assume(info, rng.choice(nodes))
            assumed.append(info)
        elif op < 0.8 and assumed:
            cache.forget(assumed.pop(rng.randrange(len(assumed))).uid)
        elif live:
            pod = live.pop(rng.randrange(len(live)))
            cache.remove_pod(str(pod["metadata"]["uid"]))  # type: ignore[index]
        check_indexes(cache)

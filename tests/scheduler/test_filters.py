"""Filter plugins on node and pod dicts: each verdict and its exact reason."""

from __future__ import annotations

from typing import Any

import pytest
from sched_objects import make_node, make_pod, taint

from control_plane.scheduler.cache import Cache, NodeInfo, PodEntry
from control_plane.scheduler.filters import (
    ERR_NODE_AFFINITY,
    ERR_NODE_PORTS,
    ERR_UNSCHEDULABLE,
    ERR_UNTOLERATED_TAINT,
    dynamic_reasons,
    fits,
    static_reason,
    taint_toleration,
    tolerates,
)
from control_plane.scheduler.podinfo import PodInfo, pod_requests


def node_info(**kw: Any) -> NodeInfo:
    ni = NodeInfo(kw.pop("name", "n1"))
    ni.set_node(make_node(ni.name, **kw))
    return ni


def pod(**kw: Any) -> PodInfo:
    return PodInfo.of(make_pod(kw.pop("name", "p"), **kw))


# ---- tolerations ---------------------------------------------------------------------------


@pytest.mark.parametrize(("toleration", "tolerated"), [
    ({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}, True),
    ({"key": "k", "value": "v"}, True),  # empty operator = Equal, empty effect = all effects
    ({"key": "k", "operator": "Equal", "value": "other"}, False),
    ({"key": "k", "operator": "Exists"}, True),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"operator": "Exists"}, True),  # empty key + Exists tolerates everything
    ({"key": "other", "operator": "Exists"}, False),
    ({"key": "k", "operator": "Lt", "value": "v"}, False),
])
def test_toleration_matching(toleration: dict[str, str], tolerated: bool) -> None:
    assert tolerates(toleration, taint("k", "v", "NoSchedule")) is tolerated


def test_untolerated_noschedule_and_noexecute_taints_reject_prefernoschedule_does_not() -> None:
    for effect in ("NoSchedule", "NoExecute"):
        assert static_reason(pod(), node_info(taints=[taint("dedicated", "gpu", effect)])) == ERR_UNTOLERATED_TAINT
    assert static_reason(pod(), node_info(taints=[taint("dedicated", "gpu", "PreferNoSchedule")])) is None
    tolerant = pod(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu"}])
    assert static_reason(tolerant, node_info(taints=[taint("dedicated", "gpu", "NoExecute")])) is None


def test_taint_named_in_the_older_wording_when_asked() -> None:
    ni = node_info(taints=[taint("node-role.kubernetes.io/control-plane")])
    assert taint_toleration(pod(), ni, name_taints=True) == \
        "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"


@pytest.mark.parametrize(("ready", "key"), [("False", "node.kubernetes.io/not-ready"),
                                            ("Unknown", "node.kubernetes.io/unreachable"),
                                            (None, "node.kubernetes.io/unreachable")])
def test_node_that_is_not_ready_counts_as_tainted(ready: str | None, key: str) -> None:
    ni = node_info(ready=ready)
    assert ni.taints == [{"key": key, "effect": "NoSchedule"}]
    assert static_reason(pod(), ni) == ERR_UNTOLERATED_TAINT
    assert static_reason(pod(tolerations=[{"key": key, "operator": "Exists"}]), ni) is None


def test_readiness_taint_is_not_doubled_when_the_controller_already_set_it() -> None:
    ni = node_info(ready="False", taints=[taint("node.kubernetes.io/not-ready")])
    assert ni.taints == [taint("node.kubernetes.io/not-ready")]


def test_unschedulable_node_unless_tolerated() -> None:
    ni = node_info(unschedulable=True)
    assert static_reason(pod(), ni) == ERR_UNSCHEDULABLE
    tolerant = pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                 "effect": "NoSchedule"}])
    assert static_reason(tolerant, ni) is None


# ---- node selector and affinity ------------------------------------------------------------


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": op}
    if values:
        out["values"] = list(values)
    return out


LABELS = {"zone": "a", "disk": "ssd", "cores": "16"}


@pytest.mark.parametrize(("requirement", "matches"), [
    (expr("zone", "In", "a", "b"), True),
    (expr("zone", "In", "c"), False),
    (expr("zone", "NotIn", "c"), True),
    (expr("missing", "NotIn", "c"), True),
    (expr("zone", "NotIn", "a"), False),
    (expr("disk", "Exists"), True),
    (expr("gpu", "Exists"), False),
    (expr("gpu", "DoesNotExist"), True),
    (expr("disk", "DoesNotExist"), False),
    (expr("cores", "Gt", "8"), True),
    (expr("cores", "Gt", "16"), False),
    (expr("cores", "Lt", "32"), True),
    (expr("zone", "Gt", "1"), False),  # not a number
    (expr("cores", "Gt", "x"), False),  # the bound does not parse: the term matches nothing
    (expr("zone", "Bogus", "a"), False),
])
def test_required_node_affinity_operators(requirement: dict[str, Any], matches: bool) -> None:
    p = pod(affinity=required({"matchExpressions": [requirement]}))
    assert (static_reason(p, node_info(labels=LABELS)) is None) is matches


def test_terms_are_ored_expressions_anded_and_an_empty_term_matches_nothing() -> None:
    ni = node_info(labels=LABELS)
    both = {"matchExpressions": [expr("zone", "In", "a"), expr("disk", "In", "hdd")]}
    assert static_reason(pod(affinity=required(both)), ni) == ERR_NODE_AFFINITY
    assert static_reason(pod(affinity=required(both, {"matchExpressions": [expr("disk", "In", "ssd")]})), ni) is None
    assert static_reason(pod(affinity=required({})), ni) == ERR_NODE_AFFINITY


def test_match_fields_on_the_node_name() -> None:
    ni = node_info(name="n1")
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    p = pod(affinity=required(term))
    assert p.prefilter_nodes == frozenset({"n1"})
    assert static_reason(p, ni) is None
    assert static_reason(p, node_info(name="n2")) == ERR_NODE_AFFINITY
    not_in = pod(affinity=required({"matchFields": [{"key": "metadata.name", "operator": "NotIn",
                                                     "values": ["n1"]}]}))
    assert not_in.prefilter_nodes is None
    assert static_reason(not_in, ni) == ERR_NODE_AFFINITY


def test_node_selector_and_affinity_must_both_match() -> None:
    ni = node_info(labels=LABELS)
    assert static_reason(pod(nodeSelector={"disk": "ssd"}), ni) is None
    assert static_reason(pod(nodeSelector={"disk": "hdd"}), ni) == ERR_NODE_AFFINITY
    p = pod(nodeSelector={"disk": "ssd"}, affinity=required({"matchExpressions": [expr("zone", "In", "b")]}))
    assert static_reason(p, ni) == ERR_NODE_AFFINITY


# ---- resources -----------------------------------------------------------------------------


def test_requests_sum_containers_and_init_containers_are_a_floor() -> None:
    spec = {
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                       {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
        "initContainers": [{"name": "i1", "resources": {"requests": {"cpu": "1", "memory": "32Mi"}}},
                           {"name": "i2", "resources": {"requests": {"memory": "128Mi"}}}],
    }
    assert pod_requests(spec) == {"cpu": 1000, "memory": 128 * 2**20}
    # Non-zero requests (for scoring): 100m / 200Mi stand in for what a container leaves out.
    assert pod_requests(spec, non_zero=True) == {"cpu": 1000, "memory": 200 * 2**20 + 64 * 2**20}


def test_sidecars_add_up_and_overhead_is_on_top() -> None:
    spec = {
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
        "initContainers": [{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                           {"name": "init", "resources": {"requests": {"cpu": "500m"}}}],
        "overhead": {"cpu": "10m"},
    }
    # max(100m + 50m running, 500m init + 50m sidecar alongside) + overhead
    assert pod_requests(spec) == {"cpu": 560}


def test_insufficient_resources_lists_every_reason() -> None:
    ni = node_info(cpu="1", memory="1Gi", pods=1, ephemeral="1Gi", extra={"example.com/gpu": "1"})
    big = pod(cpu="2", memory="2Gi")
    assert not fits(big, ni)
    assert dynamic_reasons(big, ni) == ["Insufficient cpu", "Insufficient memory"]
    gpu = PodInfo.of(make_pod("g", resources={}, containers=[
        {"name": "a", "image": "x", "resources": {"requests": {"example.com/gpu": "2", "ephemeral-storage": "2Gi"}}}]))
    assert dynamic_reasons(gpu, ni) == ["Insufficient ephemeral-storage", "Insufficient example.com/gpu"]
    cache = Cache()
    cache.set_node(make_node("n1", cpu="1", memory="1Gi", pods=1))
    cache.add_pod(make_pod("other", node_name="n1"))
    full = cache.get("n1")
    assert full is not None
    assert dynamic_reasons(pod(), full) == ["Too many pods"]  # a pod without requests still takes a slot
    assert dynamic_reasons(big, full) == ["Too many pods", "Insufficient cpu", "Insufficient memory"]


def test_requests_count_assumed_and_bound_pods() -> None:
    cache = Cache()
    cache.set_node(make_node("n1", cpu="1", memory="1Gi"))
    cache.add_pod(make_pod("bound", cpu="600m", node_name="n1"))
    half = pod(cpu="500m")
    ni = cache.get("n1")
    assert ni is not None and not fits(half, ni)
    cache.remove_pod(next(iter(cache.pods)))
    assert fits(half, ni)
    cache.assume(half, "n1")
    assert not fits(pod(name="again", cpu="600m"), ni)
    cache.forget(half.uid)
    assert ni.req_cpu == 0 and ni.pod_count == 0


# ---- host ports ----------------------------------------------------------------------------


def with_port(name: str, port: int, ip: str | None = None, protocol: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"containerPort": 80, "hostPort": port}
    if ip:
        p["hostIP"] = ip
    if protocol:
        p["protocol"] = protocol
    return make_pod(name, node_name="n1", containers=[{"name": "a", "image": "x", "ports": [p]}])


@pytest.mark.parametrize(("used", "wanted", "clash"), [
    ((8080, None, None), (8080, None, None), True),
    ((8080, None, None), (8081, None, None), False),
    ((8080, None, "UDP"), (8080, None, None), False),  # TCP and UDP are different ports
    ((8080, "10.0.0.1", None), (8080, "10.0.0.2", None), False),
    ((8080, "10.0.0.1", None), (8080, None, None), True),  # 0.0.0.0 clashes with any address
    ((8080, None, None), (8080, "10.0.0.2", None), True),
])
def test_host_port_clashes(used: tuple[int, str | None, str | None], wanted: tuple[int, str | None, str | None],
                           clash: bool) -> None:
    cache = Cache()
    cache.set_node(make_node("n1"))
    cache.add_pod(with_port("a", *used))
    ni = cache.get("n1")
    assert ni is not None
    p = PodInfo.of(with_port("b", *wanted))
    assert (dynamic_reasons(p, ni) == [ERR_NODE_PORTS]) is clash
    assert fits(p, ni) is not clash


def test_entry_of_pod_counts_ports_and_owner() -> None:
    e = PodEntry.of_pod(make_pod("x", cpu="1", owner="rs-1", hostNetwork=True), "n1")
    assert (e.cpu, e.owner, e.node) == (1000, "rs-1", "n1")

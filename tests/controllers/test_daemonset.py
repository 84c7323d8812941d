"""The DaemonSet controller against a real API server running only it, with hollow
Nodes; the test plays the scheduler (binding each pod to the node its affinity names)
and the kubelet (Running and Ready; confirming deletions)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hollow import (
    bind,
    controller_server,
    create_node,
    event_reasons,
    fresh_namespace,
    list_items,
    ok,
    pod_template,
    run_pod,
)

from control_plane.controllers.daemon_placement import target_node

if TYPE_CHECKING:
    from tests.conftest import ApiServer

ELIGIBLE = {"ds-a", "ds-b", "ds-c", "ds-notready"}
_ips = itertools.count(10)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with controller_server(request.config, tmp_path_factory.mktemp("ds-server"), "daemonset") as srv:
        create_node(srv, "ds-a", labels={"disk": "ssd"})
        create_node(srv, "ds-b", labels={"disk": "ssd"})
        create_node(srv, "ds-c", labels={"disk": "hdd"})
        create_node(srv, "ds-tainted", taints=[{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}])
        create_node(srv, "ds-notready", ready=False,
                    taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}])
        yield srv


@pytest.fixture
def ns(server: ApiServer, request: pytest.FixtureRequest) -> str:
    return fresh_namespace(server, request)


def create_ds(server: ApiServer, ns: str, name: str, **pod_spec: Any) -> dict[str, Any]:
    return ok(server.post(f"/apis/apps/v1/namespaces/{ns}/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": pod_template({"app": name}, **pod_spec)}}))


def ds(server: ApiServer, ns: str, name: str) -> dict[str, Any]:
    return ok(server.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/{name}"))


def pods(server: ApiServer, ns: str, live_only: bool = True) -> list[dict[str, Any]]:
    found = list_items(server, f"/api/v1/namespaces/{ns}/pods")
    return [p for p in found if not (live_only and p["metadata"].get("deletionTimestamp"))]


def placement(server: ApiServer, ns: str) -> list[str]:
    return sorted(target_node(p) or "?" for p in pods(server, ns))


def kubelet_step(server: ApiServer, ns: str) -> None:
    """One pass of scheduler + kubelets: bind, start (Ready), confirm deletions."""
    for pod in pods(server, ns, live_only=False):
        name = pod["metadata"]["name"]
        phase = pod["status"].get("phase")
        try:
            if pod["metadata"].get("deletionTimestamp"):
                server.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", {"gracePeriodSeconds": 0})
            elif phase in ("Succeeded", "Failed"):
                continue  # finished: the controller's to deal with
            elif not pod["spec"].get("nodeName"):
                bind(server, ns, name, target_node(pod) or "")
            elif phase != "Running":
                run_pod(server, ns, name, f"10.244.1.{next(_ips) % 250 + 1}")
        except AssertionError:
            continue  # deleted or changed since listed: the next pass sees it as it is


def ready_count(server: ApiServer, ns: str) -> int:
    return sum(1 for p in pods(server, ns) if any(c["type"] == "Ready" and c["status"] == "True"
                                                  for c in p["status"].get("conditions") or []))


def test_one_pod_per_eligible_node(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    created = create_ds(server, ns, "agent")
    wait_until(lambda: placement(server, ns) == sorted(ELIGIBLE), 10,
               "a pod pinned to every node but the tainted one (not-ready is tolerated)")
    pod = next(p for p in pods(server, ns) if target_node(p) == "ds-a")
    assert pod["metadata"]["name"].startswith("agent-")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert pod["metadata"]["labels"]["controller-revision-hash"]
    assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["ds-a"]}]}]}
    tolerated = {(t["key"], t["effect"]) for t in pod["spec"]["tolerations"]}
    assert {("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"), ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            ("node.kubernetes.io/unschedulable", "NoSchedule")} <= tolerated

    def all_ready() -> bool:
        kubelet_step(server, ns)
        status = ds(server, ns, "agent")["status"]
        return status.get("numberReady") == 4 and status.get("numberAvailable") == 4
    wait_until(all_ready, 15, "every daemon pod bound, running and ready")
    status = ds(server, ns, "agent")["status"]
    assert status == {"currentNumberScheduled": 4, "desiredNumberScheduled": 4, "numberMisscheduled": 0,
                      "numberReady": 4, "numberAvailable": 4, "updatedNumberScheduled": 4,
                      "observedGeneration": 1}
    assert len(pods(server, ns)) == 4, "exactly one pod per eligible node"
    assert event_reasons(server, ns, "agent").count("SuccessfulCreate") == 4

    # A pod that fails is replaced on its node.
    failed = next(p for p in pods(server, ns) if p["spec"].get("nodeName") == "ds-b")
    ok(server.patch(f"/api/v1/namespaces/{ns}/pods/{failed['metadata']['name']}/status",
                    {"status": {"phase": "Failed"}}))

    def replaced() -> bool:
        kubelet_step(server, ns)
        on_b = [p for p in pods(server, ns) if target_node(p) == "ds-b"]
        return len(on_b) == 1 and on_b[0]["metadata"]["uid"] != failed["metadata"]["uid"]
    wait_until(replaced, 15, "the failed daemon pod to be replaced")
    assert "FailedDaemonPod" in event_reasons(server, ns, "agent")


def test_node_selector_and_tolerations(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    create_ds(server, ns, "ssd-only", nodeSelector={"disk": "ssd"})
    create_ds(server, ns, "infra", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "infra",
                                                 "effect": "NoSchedule"}],
              affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                  {"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]}}})

    def by_app(app: str) -> list[str]:
        return sorted(target_node(p) or "?" for p in pods(server, ns) if p["metadata"]["labels"]["app"] == app)
    wait_until(lambda: by_app("ssd-only") == ["ds-a", "ds-b"], 10, "pods on the ssd nodes only")
    wait_until(lambda: by_app("infra") == ["ds-notready", "ds-tainted"], 10,
               "pods on the disk-less nodes, the tainted one tolerated")
    wait_until(lambda: ds(server, ns, "ssd-only")["status"].get("desiredNumberScheduled") == 2, 10, "status")

    ok(server.patch("/api/v1/nodes/ds-c", {"metadata": {"labels": {"disk": "ssd"}}}))
    try:
        wait_until(lambda: by_app("ssd-only") == ["ds-a", "ds-b", "ds-c"], 10, "a pod on the relabelled node")
    finally:
        ok(server.patch("/api/v1/nodes/ds-c", {"metadata": {"labels": {"disk": "hdd"}}}))
    wait_until(lambda: by_app("ssd-only") == ["ds-a", "ds-b"], 10, "the pod deleted once the node no longer fits")


def test_rolling_update_respects_max_unavailable(server: ApiServer, ns: str,
                                                 wait_until: Callable[..., Any]) -> None:
    create_ds(server, ns, "roll")
    path = f"/apis/apps/v1/namespaces/{ns}/daemonsets/roll"

    def settled(image: str) -> bool:
        kubelet_step(server, ns)
        live = pods(server, ns)
        status = ds(server, ns, "roll")["status"]
        return len(live) == 4 and all(p["spec"]["containers"][0]["image"] == image and
                                      p["status"].get("phase") == "Running" for p in live) \
            and status.get("updatedNumberScheduled") == 4 and status.get("numberAvailable") == 4
    wait_until(lambda: settled("busybox"), 15, "the first version running everywhere")
    old_hash = pods(server, ns)[0]["metadata"]["labels"]["controller-revision-hash"]
    ok(server.patch(path, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "busybox:v2"}]}}}},
                    content_type="application/strategic-merge-patch+json"))
    worst = 0

    def rolled() -> bool:
        nonlocal worst
        worst = max(worst, 4 - ready_count(server, ns))
        return settled("busybox:v2")
    wait_until(rolled, 30, "the new version running everywhere")
    assert worst <= 1, f"at some moment {worst} daemon pods were unavailable (maxUnavailable 1)"
    new_hash = pods(server, ns)[0]["metadata"]["labels"]["controller-revision-hash"]
    assert new_hash != old_hash
    assert ds(server, ns, "roll")["status"]["observedGeneration"] == 2


def test_rolling_update_with_surge_keeps_every_node_served(server: ApiServer, ns: str,
                                                           wait_until: Callable[..., Any]) -> None:
    body = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "surge"},
            "spec": {"selector": {"matchLabels": {"app": "surge"}}, "template": pod_template({"app": "surge"}),
                     "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}
    ok(server.post(f"/apis/apps/v1/namespaces/{ns}/daemonsets", body))

    def settled(image: str) -> bool:
        kubelet_step(server, ns)
        live = pods(server, ns)
        return len(live) == 4 and all(p["spec"]["containers"][0]["image"] == image and
                                      p["status"].get("phase") == "Running" for p in live)
    wait_until(lambda: settled("busybox"), 15, "the first version running everywhere")
    ok(server.patch(f"/apis/apps/v1/namespaces/{ns}/daemonsets/surge",
                    {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "busybox:v2"}]}}}},
                    content_type="application/strategic-merge-patch+json"))
    fewest, most = 4, 4

    def rolled() -> bool:
        nonlocal fewest, most
        fewest = min(fewest, ready_count(server, ns))
        most = max(most, len(pods(server, ns)))
        return settled("busybox:v2")
    wait_until(rolled, 30, "the new version running everywhere")
    assert fewest >= 4, f"only {fewest} ready daemon pods at some moment (maxUnavailable 0)"
    assert most <= 5, f"{most} daemon pods at some moment (maxSurge 1)"

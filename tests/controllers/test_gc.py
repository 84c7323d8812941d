"""The garbage collector against a real API server: background, foreground and orphan
deletion, dangling owner references; and the finalizers the API server adds for a
DELETE's propagationPolicy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hollow import controller_server, fresh_namespace, get_or_none, list_items, ok

from control_plane.api.objects import propagation_finalizers
from skiff.api.resources import REGISTRY

if TYPE_CHECKING:
    from tests.conftest import ApiServer


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with controller_server(request.config, tmp_path_factory.mktemp("gc-server"), "garbagecollector") as srv:
        yield srv


@pytest.fixture
def ns(server: ApiServer, request: pytest.FixtureRequest) -> str:
    return fresh_namespace(server, request)


def cm_path(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps"


def owner_ref(owner: dict[str, Any], block: bool = False, controller: bool = False) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block, "controller": controller}


def configmap(server: ApiServer, ns: str, name: str, owners: list[dict[str, Any]] = (),  # type: ignore[assignment]
              finalizers: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    md: dict[str, Any] = {"name": name}
    if owners:
        md["ownerReferences"] = list(owners)
    if finalizers:
        md["finalizers"] = list(finalizers)
    obj = ok(server.post(cm_path(ns), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": {"k": "v"}}))
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", "ConfigMap")
    return obj


def delete(server: ApiServer, path: str, policy: str) -> dict[str, Any]:
    return ok(server.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                              "propagationPolicy": policy}))


def names(server: ApiServer, ns: str) -> set[str]:
    return {o["metadata"]["name"] for o in list_items(server, cm_path(ns))} - {"kube-root-ca.crt"}


def test_background_deletion_removes_dependents_and_their_dependents(server: ApiServer, ns: str,
                                                                      wait_until: Callable[..., Any]) -> None:
    owner = configmap(server, ns, "owner")
    child = configmap(server, ns, "child", [owner_ref(owner, controller=True)])
    configmap(server, ns, "grandchild", [owner_ref(child)])
    pod = ok(server.post(f"/api/v1/namespaces/{ns}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "owned-pod", "ownerReferences": [owner_ref(owner)]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    configmap(server, ns, "bystander")
    deleted = delete(server, f"{cm_path(ns)}/owner", "Background")
    assert not deleted["metadata"].get("finalizers")
    assert get_or_none(server, f"{cm_path(ns)}/owner") is None, "a Background delete removes the owner at once"
    wait_until(lambda: names(server, ns) == {"bystander"}, 15, "child and grandchild to be collected")
    wait_until(lambda: get_or_none(server, f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}") is None,
               15, "the owned pod to be collected")


def test_dangling_references(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    keeper = configmap(server, ns, "keeper")
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "6a1c0f5e-0000-4000-8000-000000000001"}
    configmap(server, ns, "orphaned", [ghost])
    configmap(server, ns, "two-owners", [ghost, owner_ref(keeper)])
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "u-widget"}
    configmap(server, ns, "unknown-owner-kind", [unknown])
    wait_until(lambda: "orphaned" not in names(server, ns), 15, "an object whose only owner never existed to go")

    def ghost_dropped() -> bool:
        refs = ok(server.get(f"{cm_path(ns)}/two-owners"))["metadata"].get("ownerReferences") or []
        return [r["name"] for r in refs] == ["keeper"]
    wait_until(ghost_dropped, 15, "the dangling reference to be removed, the solid one kept")
    assert "unknown-owner-kind" in names(server, ns), "an owner of a kind Skiff does not serve is never judged gone"


def test_foreground_deletion_waits_for_blocking_dependents(server: ApiServer, ns: str,
                                                           wait_until: Callable[..., Any]) -> None:
    owner = configmap(server, ns, "owner")
    configmap(server, ns, "blocker", [owner_ref(owner, block=True)], finalizers=["example.com/hold"])
    configmap(server, ns, "free", [owner_ref(owner, block=False)])
    deleted = delete(server, f"{cm_path(ns)}/owner", "Foreground")
    assert deleted["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert deleted["metadata"].get("deletionTimestamp")

    def blocker_deleting() -> bool:
        blocker = get_or_none(server, f"{cm_path(ns)}/blocker")
        return bool(blocker and blocker["metadata"].get("deletionTimestamp"))
    wait_until(blocker_deleting, 15, "the blocking dependent to be deleted")
    wait_until(lambda: "free" not in names(server, ns), 15, "the non-blocking dependent to go")
    still = get_or_none(server, f"{cm_path(ns)}/owner")
    assert still is not None and still["metadata"]["finalizers"] == ["foregroundDeletion"], \
        "the owner waits while a blocking dependent is there"
    ok(server.patch(f"{cm_path(ns)}/blocker", {"metadata": {"finalizers": None}}))
    wait_until(lambda: get_or_none(server, f"{cm_path(ns)}/owner") is None, 15, "the owner to go after its dependents")


def test_orphan_deletion_keeps_dependents(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    owner = configmap(server, ns, "owner")
    other = configmap(server, ns, "other-owner")
    configmap(server, ns, "dep", [owner_ref(owner, block=True, controller=True), owner_ref(other)])
    configmap(server, ns, "dep2", [owner_ref(owner)])
    deleted = delete(server, f"{cm_path(ns)}/owner", "Orphan")
    assert deleted["metadata"]["finalizers"] == ["orphan"]
    wait_until(lambda: get_or_none(server, f"{cm_path(ns)}/owner") is None, 15, "the orphaning owner to go")
    dep = ok(server.get(f"{cm_path(ns)}/dep"))
    assert [r["name"] for r in dep["metadata"]["ownerReferences"]] == ["other-owner"]
    assert not ok(server.get(f"{cm_path(ns)}/dep2"))["metadata"].get("ownerReferences")
    assert names(server, ns) == {"other-owner", "dep", "dep2"}


@pytest.mark.parametrize(("policy", "current", "kind", "expected"), [
    ("Foreground", [], "ConfigMap", ["foregroundDeletion"]),
    ("Orphan", ["example.com/x"], "ConfigMap", ["example.com/x", "orphan"]),
    ("Background", ["orphan"], "ConfigMap", []),
    ("Orphan", ["foregroundDeletion"], "ConfigMap", ["orphan"]),
    (None, [], "ConfigMap", None),
    (None, ["foregroundDeletion"], "Job", None),
    (None, [], "Job", ["orphan"]),  # batch/v1 Jobs orphan their pods by default, as in Kubernetes
    ("Background", [], "Job", None),
])
def test_propagation_finalizers(policy: str | None, current: list[str], kind: str,
                                expected: list[str] | None) -> None:
    rt = REGISTRY.resolve(kind)
    assert rt is not None
    assert propagation_finalizers(rt, {"finalizers": current}, policy) == expected


def test_graceful_deletion_under_way_keeps_its_finalizers() -> None:
    rt = REGISTRY.resolve("pods")
    assert rt is not None
    md = {"deletionTimestamp": "2024-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}
    assert propagation_finalizers(rt, md, "Foreground") is None


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_deleting_a_deployment_removes_its_replica_sets_and_pods(policy: str, request: pytest.FixtureRequest,
                                                                 tmp_path_factory: pytest.TempPathFactory,
                                                                 wait_until: Callable[..., Any]) -> None:
    """With the workload controllers: the pods (unscheduled here, so they go at once) and
    the ReplicaSet are collected; in the foreground the Deployment waits for them."""
    controllers = "garbagecollector,replicaset,deployment"
    with controller_server(request.config, tmp_path_factory.mktemp("gc-deploy"), controllers) as srv:
        ns = fresh_namespace(srv, request)
        apps = f"/apis/apps/v1/namespaces/{ns}"
        ok(srv.post(f"{apps}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
        wait_until(lambda: len(list_items(srv, f"/api/v1/namespaces/{ns}/pods")) == 3, 20, "three pods")
        assert len(list_items(srv, f"{apps}/replicasets")) == 1
        delete(srv, f"{apps}/deployments/web", policy)
        wait_until(lambda: not list_items(srv, f"/api/v1/namespaces/{ns}/pods"), 20, "the pods to be collected")
        wait_until(lambda: not list_items(srv, f"{apps}/replicasets"), 20, "the ReplicaSet to be collected")
        wait_until(lambda: get_or_none(srv, f"{apps}/deployments/web") is None, 20, "the Deployment to go")

"""The garbage collector against a real API server: background, foreground and orphan
deletion, dangling owner references; and the finalizers the API server adds for a
DELETE's propagationPolicy."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from hollow import create_namespace, get_or_none, list_items, ok

from control_plane.api.objects import propagation_finalizers
from skiff.api.resources import REGISTRY

if TYPE_CHECKING:
    from tests.conftest import ApiServer, ServerFactory

NS = "gc"
CM = f"/api/v1/namespaces/{NS}/configmaps"


@pytest.fixture
def server(server_factory: ServerFactory) -> ApiServer:
    srv = server_factory.start(extra_args=("--controllers", "garbagecollector"))
    create_namespace(srv, NS)
    return srv


def owner_ref(owner: dict[str, Any], block: bool = False, controller: bool = False) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block, "controller": controller}


def configmap(server: ApiServer, name: str, owners: list[dict[str, Any]] = (),  # type: ignore[assignment]
              finalizers: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    md: dict[str, Any] = {"name": name}
    if owners:
        md["ownerReferences"] = list(owners)
    if finalizers:
        md["finalizers"] = list(finalizers)
    obj = ok(server.post(CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": {"k": "v"}}))
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", "ConfigMap")
    return obj


def delete(server: ApiServer, path: str, policy: str) -> dict[str, Any]:
    return ok(server.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                              "propagationPolicy": policy}))


def names(server: ApiServer) -> set[str]:
    return {o["metadata"]["name"] for o in list_items(server, CM)} - {"kube-root-ca.crt"}


def test_background_deletion_removes_dependents_and_their_dependents(server: ApiServer,
                                                                      wait_until: Callable[..., Any]) -> None:
    owner = configmap(server, "owner")
    child = configmap(server, "child", [owner_ref(owner, controller=True)])
    configmap(server, "grandchild", [owner_ref(child)])
    pod = ok(server.post(f"/api/v1/namespaces/{NS}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "owned-pod", "ownerReferences": [owner_ref(owner)]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    configmap(server, "bystander")
    deleted = delete(server, f"{CM}/owner", "Background")
    assert not deleted["metadata"].get("finalizers")
    assert get_or_none(server, f"{CM}/owner") is None, "a Background delete removes the owner at once"
    wait_until(lambda: names(server) == {"bystander"}, 15, "child and grandchild to be collected")
    wait_until(lambda: get_or_none(server, f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}") is None,
               15, "the owned pod to be collected")


def test_dangling_references(server: ApiServer, wait_until: Callable[..., Any]) -> None:
    keeper = configmap(server, "keeper")
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "6a1c0f5e-0000-4000-8000-000000000001"}
    configmap(server, "orphaned", [ghost])
    configmap(server, "two-owners", [ghost, owner_ref(keeper)])
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "u-widget"}
    configmap(server, "unknown-owner-kind", [unknown])
    wait_until(lambda: "orphaned" not in names(server), 15, "an object whose only owner never existed to go")

    def ghost_dropped() -> bool:
        refs = ok(server.get(f"{CM}/two-owners"))["metadata"].get("ownerReferences") or []
        return [r["name"] for r in refs] == ["keeper"]
    wait_until(ghost_dropped, 15, "the dangling reference to be removed, the solid one kept")
    assert "unknown-owner-kind" in names(server), "an owner of a kind Skiff does not serve is never judged gone"


def test_foreground_deletion_waits_for_blocking_dependents(server: ApiServer,
                                                           wait_until: Callable[..., Any]) -> None:
    owner = configmap(server, "owner")
    configmap(server, "blocker", [owner_ref(owner, block=True)], finalizers=["example.com/hold"])
    configmap(server, "free", [owner_ref(owner, block=False)])
    deleted = delete(server, f"{CM}/owner", "Foreground")
    assert deleted["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert deleted["metadata"].get("deletionTimestamp")

    def blocker_deleting() -> bool:
        blocker = get_or_none(server, f"{CM}/blocker")
        return bool(blocker and blocker["metadata"].get("deletionTimestamp"))
    wait_until(blocker_deleting, 15, "the blocking dependent to be deleted")
    wait_until(lambda: "free" not in names(server), 15, "the non-blocking dependent to go")
    still = get_or_none(server, f"{CM}/owner")
    assert still is not None and still["metadata"]["finalizers"] == ["foregroundDeletion"], \
        "the owner waits while a blocking dependent is there"
    ok(server.patch(f"{CM}/blocker", {"metadata": {"finalizers": None}}))
    wait_until(lambda: get_or_none(server, f"{CM}/owner") is None, 15, "the owner to go after its dependents")


def test_orphan_deletion_keeps_dependents(server: ApiServer, wait_until: Callable[..., Any]) -> None:
    owner = configmap(server, "owner")
    other = configmap(server, "other-owner")
    configmap(server, "dep", [owner_ref(owner, block=True, controller=True), owner_ref(other)])
    configmap(server, "dep2", [owner_ref(owner)])
    deleted = delete(server, f"{CM}/owner", "Orphan")
    assert deleted["metadata"]["finalizers"] == ["orphan"]
    wait_until(lambda: get_or_none(server, f"{CM}/owner") is None, 15, "the orphaning owner to go")
    dep = ok(server.get(f"{CM}/dep"))
    assert [r["name"] for r in dep["metadata"]["ownerReferences"]] == ["other-owner"]
    assert not ok(server.get(f"{CM}/dep2"))["metadata"].get("ownerReferences")
    assert names(server) == {"other-owner", "dep", "dep2"}


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

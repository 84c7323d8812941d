"""The ReplicaSet controller against a real ``skiff server`` (controllers replicaset,
deployment, namespace), with `FakeKubelet` playing the nodes: converging and scaling,
replacing pods that die, which pods go first, adoption and release, minReadySeconds,
and create failures (ReplicaFailure, slow start)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from fake_kubelet import (
    Observer,
    controller_server,
    create_namespace,
    event_messages,
    fake_kubelet,
    is_ready,
    list_items,
    wait_for,
)

from control_plane.controllers.pod_control import pods_to_delete, slow_start_batch
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError
from skiff.client.kubeconfig import load_kubeconfig

if TYPE_CHECKING:
    from tests.conftest import ApiServer

Obj = dict[str, Any]
CONTROLLERS = "replicaset,deployment,namespace"


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with controller_server(request.config, tmp_path_factory.mktemp("replicaset-server"), CONTROLLERS) as srv:
        yield srv


@pytest.fixture
async def client(server: ApiServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as c:
        yield c


@pytest.fixture
async def ns(client: ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    name = f"rs-{request.node.name[5:30].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}".lower()
    await create_namespace(client, name)
    yield name
    await client.delete("namespaces", name)


def replica_set(name: str, replicas: int, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    labels = labels or {"app": name}
    template: Obj = {"metadata": {"labels": dict(labels)},
                     "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)}, "template": template, **spec}}


def active(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


async def pods_of(client: ApiClient, ns: str, selector: str) -> list[Obj]:
    return active(await list_items(client, "pods", ns, label_selector=selector))


async def settled(client: ApiClient, ns: str, name: str, want: int, selector: str | None = None) -> Obj:
    """Wait until the ReplicaSet reports ``want`` ready replicas and exactly that many pods exist."""
    async def check() -> Obj | None:
        rs = await client.get("replicasets", name, ns)
        status = rs.get("status") or {}
        pods = await list_items(client, "pods", ns, label_selector=selector or f"app={name}")
        if (status.get("replicas", 0), status.get("readyReplicas", 0), status.get("availableReplicas", 0)) \
                == (want, want, want) and len(pods) == want and all(is_ready(p) for p in pods) \
                and status.get("observedGeneration") == rs["metadata"]["generation"]:
            return rs
        return None
    rs: Obj = await wait_for(check, 20, f"replicaset {name} to settle at {want} ready pods")
    return rs


async def scale(client: ApiClient, ns: str, name: str, replicas: int) -> None:
    await client.patch("replicasets", name, {"spec": {"replicas": replicas}}, ns, subresource="scale")


async def test_converges_scales_and_never_overshoots(client: ApiClient, ns: str) -> None:
    limit = {"pods": 3}

    def never_more_than_desired(pods: list[Obj]) -> str | None:
        n = len(active(pods))
        return f"{n} active pods while at most {limit['pods']} were wanted" if n > limit["pods"] else None

    async with fake_kubelet(client, ns), Observer(client, "pods", ns, never_more_than_desired) as observer:
        rs = await client.create("replicasets", replica_set("web", 3), ns)
        rs = await settled(client, ns, "web", 3)
        assert rs["status"]["fullyLabeledReplicas"] == 3
        pods = await pods_of(client, ns, "app=web")
        for pod in pods:
            assert pod["metadata"]["generateName"] == "web-"
            assert pod["metadata"]["labels"] == {"app": "web"}
            assert pod["metadata"]["ownerReferences"] == [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": rs["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}]
        created = await wait_for(lambda: _messages(client, ns, "web", "SuccessfulCreate", 3), 10, "3 create events")
        assert sorted(created) == sorted(f"Created pod: {p['metadata']['name']}" for p in pods)

        limit["pods"] = 20
        await scale(client, ns, "web", 20)
        await settled(client, ns, "web", 20)
        await wait_for(lambda: _messages(client, ns, "web", "SuccessfulCreate", 20), 10, "20 create events")

        await scale(client, ns, "web", 2)
        rs = await settled(client, ns, "web", 2)
        assert rs["status"]["observedGeneration"] == rs["metadata"]["generation"] == 3
        deleted = await wait_for(lambda: _messages(client, ns, "web", "SuccessfulDelete", 18), 10, "18 deletes")
        assert all(m.startswith("Deleted pod: web-") for m in deleted)
    assert observer.events > 0
    assert not observer.violations, observer.violations[:5]
    # Expectations: no pod was created twice for the same slot.
    assert len(await event_messages(client, ns, "web", "SuccessfulCreate")) == 20


async def _messages(client: ApiClient, ns: str, involved: str, reason: str, count: int) -> list[str] | None:
    found = await event_messages(client, ns, involved, reason)
    return found if len(found) >= count else None


async def test_replaces_deleted_and_failed_pods(client: ApiClient, ns: str) -> None:
    async with fake_kubelet(client, ns):
        await client.create("replicasets", replica_set("web", 3), ns)
        await settled(client, ns, "web", 3)
        before = {p["metadata"]["name"] for p in await pods_of(client, ns, "app=web")}
        doomed = sorted(before)[:2]
        for name in doomed:
            await client.delete("pods", name, ns)
        await settled(client, ns, "web", 3)
        after = {p["metadata"]["name"] for p in await pods_of(client, ns, "app=web")}
        assert not after & set(doomed) and len(after - before) == 2

        failed = sorted(after)[0]
        await client.patch("pods", failed, {"status": {"phase": "Failed"}}, ns, subresource="status")

        async def replaced() -> bool:
            pods = await list_items(client, "pods", ns, label_selector="app=web")
            live = active(pods)
            rs = await client.get("replicasets", "web", ns)
            return (len(pods) == 4 and len(live) == 3 and failed not in {p["metadata"]["name"] for p in live}
                    and rs["status"].get("readyReplicas") == 3 and rs["status"]["replicas"] == 3)
        await wait_for(replaced, 20, "the failed pod to be replaced (and kept, uncounted)")


async def test_scale_down_deletes_not_ready_pods_first(client: ApiClient, ns: str) -> None:
    async with fake_kubelet(client, ns) as kubelet:
        await client.create("replicasets", replica_set("web", 3), ns)
        await settled(client, ns, "web", 3)
        veterans = {p["metadata"]["name"] for p in await pods_of(client, ns, "app=web")}
        kubelet.set_ready(lambda pod: pod["metadata"]["name"] in veterans)
        await scale(client, ns, "web", 6)

        async def three_unready() -> bool:
            rs = await client.get("replicasets", "web", ns)
            return rs["status"]["replicas"] == 6 and rs["status"].get("readyReplicas") == 3
        await wait_for(three_unready, 20, "3 new pods running but not ready")
        await scale(client, ns, "web", 3)
        await settled(client, ns, "web", 3)
        assert {p["metadata"]["name"] for p in await pods_of(client, ns, "app=web")} == veterans


async def test_adopts_matching_orphans_and_releases_pods_that_stop_matching(client: ApiClient, ns: str) -> None:
    async with fake_kubelet(client, ns):
        for name, app in (("orphan-1", "web"), ("orphan-2", "web"), ("stranger", "other")):
            await client.create("pods", {"apiVersion": "v1", "kind": "Pod",
                                         "metadata": {"name": name, "labels": {"app": app}},
                                         "spec": {"containers": [{"name": "app", "image": "busybox"}]}}, ns)
        rs = await client.create("replicasets", replica_set("web", 3), ns)
        await settled(client, ns, "web", 3)
        names = {p["metadata"]["name"] for p in await pods_of(client, ns, "app=web")}
        assert {"orphan-1", "orphan-2"} <= names
        for name in ("orphan-1", "orphan-2"):
            refs = (await client.get("pods", name, ns))["metadata"]["ownerReferences"]
            assert refs == [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                             "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        assert not (await client.get("pods", "stranger", ns))["metadata"].get("ownerReferences")
        assert len(await event_messages(client, ns, "web", "SuccessfulCreate")) == 1

        await client.patch("pods", "orphan-1", {"metadata": {"labels": {"app": "retired"}}}, ns)

        async def released() -> bool:
            pod = await client.get("pods", "orphan-1", ns)
            return not pod["metadata"].get("ownerReferences")
        await wait_for(released, 10, "orphan-1 to be released once its labels stop matching")
        await settled(client, ns, "web", 3)
        assert "orphan-1" not in {p["metadata"]["name"] for p in await pods_of(client, ns, "app=web")}
        assert len(await event_messages(client, ns, "web", "SuccessfulCreate")) == 2


async def test_available_only_after_min_ready_seconds(client: ApiClient, ns: str) -> None:
    async with fake_kubelet(client, ns):
        await client.create("replicasets", replica_set("web", 2, minReadySeconds=2), ns)

        async def ready_not_available() -> Obj | None:
            status = (await client.get("replicasets", "web", ns)).get("status") or {}
            return status if status.get("readyReplicas") == 2 else None
        status = await wait_for(ready_not_available, 10, "2 ready replicas")
        assert status.get("availableReplicas", 0) == 0, status
        # Nothing else happens now: only the controller's own requeue can make them available.
        await settled(client, ns, "web", 2)


async def test_create_errors_set_replica_failure_and_back_off(client: ApiClient, ns: str) -> None:
    broken = replica_set("web", 8)
    broken["spec"]["template"]["metadata"]["finalizers"] = ["not a valid finalizer!"]
    async with fake_kubelet(client, ns):
        await client.create("replicasets", broken, ns)

        async def failing() -> Obj | None:
            rs = await client.get("replicasets", "web", ns)
            return next((c for c in rs["status"].get("conditions") or [] if c["type"] == "ReplicaFailure"), None)
        condition = await wait_for(failing, 10, "the ReplicaFailure condition")
        assert condition["status"] == "True" and condition["reason"] == "FailedCreate"
        assert "is invalid" in condition["message"]
        failures = await wait_for(lambda: _messages(client, ns, "web", "FailedCreate", 1), 10, "FailedCreate")
        assert failures[0].startswith("Error creating: ")
        # Slow start: a sync whose first create fails does not try the other seven.
        assert len(failures) <= 4, failures

        await client.patch("replicasets", "web", {"spec": {"template": {"metadata": {"finalizers": None}}}}, ns)
        rs = await settled(client, ns, "web", 8)
        assert not rs["status"].get("conditions")


async def test_slow_start_batches_double_and_stop_at_the_first_failing_batch() -> None:
    calls: list[int] = []

    async def create() -> None:
        calls.append(len(calls))
        if len(calls) == 5:
            raise ApiClientError("quota exceeded")

    successes, error = await slow_start_batch(10, 1, create)
    # Batches 1, 2, 4: the fifth call (in the batch of 4) fails, its batch finishes, no batch of 3 follows.
    assert (len(calls), successes, str(error)) == (7, 6, "quota exceeded")

    sizes: list[int] = []

    async def fine() -> None:
        sizes.append(1)

    assert await slow_start_batch(12, 1, fine) == (12, None)  # batches 1, 2, 4, 5


def pod(name: str, node: str = "", phase: str = "Running", ready: bool = True, ready_at: str = "",
        created: str = "2026-01-01T00:00:00Z", restarts: int = 0) -> Obj:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "containerStatuses": [{"restartCount": restarts}],
                       "conditions": [{"type": "Ready", "status": str(ready),
                                       "lastTransitionTime": ready_at or created}]}}


def test_pods_to_delete_prefers_the_least_valuable() -> None:
    pods = [
        pod("old-ready", "n1", ready_at="2026-01-01T00:00:10Z"),
        pod("unscheduled", phase="Pending", ready=False),
        pod("pending", "n2", phase="Pending", ready=False),
        pod("not-ready", "n3", ready=False),
        pod("new-ready", "n2", ready_at="2026-01-01T00:00:20Z"),
        pod("restarty", "n3", ready_at="2026-01-01T00:00:10Z", restarts=3),
    ]
    order = [p["metadata"]["name"] for p in pods_to_delete(pods, [], len(pods) - 1)]
    assert order == ["unscheduled", "pending", "not-ready", "new-ready", "restarty"]
    # Doubled up on a node with related pods goes before a pod alone on its node.
    a, b = pod("alone", "n1"), pod("crowded", "n2")
    related = [b, pod("sibling", "n2")]
    assert [p["metadata"]["name"] for p in pods_to_delete([a, b], related, 1)] == ["crowded"]

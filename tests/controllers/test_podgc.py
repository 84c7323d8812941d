"""PodGC against a real API server (running no controllers); the controller runs in the
test with a small threshold, a short period and quarantine, as a flag would set them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hollow import controller_server, create_node, fresh_namespace, list_items, ok, set_pod_status

from control_plane.controllers.podgc import PodGCController
from skiff.client.api import ApiClient
from skiff.client.informer import Informer, SharedInformerFactory
from skiff.client.kubeconfig import load_kubeconfig

if TYPE_CHECKING:
    from tests.conftest import ApiServer


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with controller_server(request.config, tmp_path_factory.mktemp("podgc-server"), "") as srv:
        create_node(srv, "kept-node")
        yield srv


@pytest.fixture
def ns(server: ApiServer, request: pytest.FixtureRequest) -> str:
    return fresh_namespace(server, request)


@pytest.fixture
async def client(server: ApiServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as c:
        yield c


@contextlib.asynccontextmanager
async def running(controller: PodGCController) -> AsyncIterator[PodGCController]:
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await controller.informers.stop()


def pod(server: ApiServer, ns: str, name: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return ok(server.post(f"/api/v1/namespaces/{ns}/pods",
                          {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))


def names(server: ApiServer, ns: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in list_items(server, f"/api/v1/namespaces/{ns}/pods"))


async def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := check()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return result


async def test_terminated_pods_over_the_threshold_go_evicted_then_oldest_first(
        server: ApiServer, ns: str, client: ApiClient) -> None:
    for i in range(5):
        pod(server, ns, f"p{i}")
        status: dict[str, Any] = {"phase": "Succeeded" if i % 2 else "Failed"}
        if i == 3:
            status = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}
        set_pod_status(server, ns, f"p{i}", status)
    pod(server, ns, "pending")  # not terminated: never counted, never collected
    async with running(PodGCController(client, SharedInformerFactory(client), threshold=3, gc_check_period=0.2)):
        await wait_for(lambda: names(server, ns) == ["p1", "p2", "p4", "pending"], 10,
                       "the evicted pod and then the oldest to be collected")


async def test_pods_of_deleted_nodes_are_failed_and_deleted(server: ApiServer, ns: str, client: ApiClient) -> None:
    create_node(server, "gone-node")
    pod(server, ns, "orphan", node="gone-node")
    pod(server, ns, "kept", node="kept-node")
    seen: list[dict[str, Any]] = []
    watcher = Informer(client, "pods", namespace=ns)
    watcher.add_handlers(on_update=lambda old, new: seen.append(new))
    watcher.start()
    controller = PodGCController(client, SharedInformerFactory(client), threshold=0, gc_check_period=0.2,
                                 quarantine=0.5)
    try:
        async with running(controller):
            ok(server.delete("/api/v1/nodes/gone-node"))
            await wait_for(lambda: names(server, ns) == ["kept"], 10, "the pod of the deleted node to go")
    finally:
        await watcher.stop()
    marked = [p for p in seen if p["metadata"]["name"] == "orphan" and p["status"].get("phase") == "Failed"]
    assert marked, "the pod was marked Failed before it was deleted"
    cond = next(c for c in marked[-1]["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "True", "DeletionByPodGC", "PodGC: node no longer exists")

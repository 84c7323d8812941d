"""Test helpers for the workload controllers (ReplicaSet, Deployment) against a real
``skiff server``: one server per test module with only the controllers under test, hollow
Nodes, and `FakeKubelet`, which plays every node's agent for one namespace.

`FakeKubelet` is level-triggered like the real agent: every pod event queues the pod, and
a worker brings it one step on: an unscheduled pod is bound to a hollow node (the
scheduler's part), a bound pod is reported Running, Ready or not as ``ready_for(pod)``
says (always Ready by default), and a pod with a deletionTimestamp is removed with grace
0 (the node's confirmation that it stopped). Finished pods are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, Conflict, NotFound
from skiff.client.informer import Informer

if TYPE_CHECKING:
    from tests.conftest import ApiServer

Obj = dict[str, Any]
NODES = ("hollow-a", "hollow-b", "hollow-c")
ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def rfc3339(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


def _root_conftest(config: pytest.Config) -> ModuleType:
    """The root conftest as pytest loaded it, so servers started here are the ones whose
    logs pytest attaches to failing tests."""
    for plugin in config.pluginmanager.get_plugins():
        if isinstance(plugin, ModuleType) and getattr(plugin, "__file__", None) \
                and Path(plugin.__file__ or "").resolve() == ROOT_CONFTEST:
            return plugin
    raise RuntimeError(f"{ROOT_CONFTEST} is not loaded")


@contextlib.contextmanager
def controller_server(config: pytest.Config, base: Path, controllers: str) -> Iterator[ApiServer]:
    """A ``skiff server`` running only ``controllers``, with the hollow nodes created."""
    conftest = _root_conftest(config)
    server: ApiServer = conftest.start_server(base, extra_args=("--controllers", controllers))
    try:
        for node in NODES:
            resp = server.post("/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
                "status": {"capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                           "lastHeartbeatTime": rfc3339(), "lastTransitionTime": rfc3339()}]}})
            assert resp.status == 201, resp
        yield server
    finally:
        server.stop()
        if server in conftest._LIVE:
            conftest._LIVE.remove(server)


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {result!r})")
        await asyncio.sleep(interval)


def running_status(ready: bool, now: str | None = None) -> Obj:
    now = now or rfc3339()
    flag = "True" if ready else "False"
    return {
        "phase": "Running", "startTime": now,
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                       {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                       {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                       {"type": "Ready", "status": flag, "lastTransitionTime": now}],
        "containerStatuses": [{"name": "app", "image": "busybox", "imageID": "", "ready": ready, "restartCount": 0,
                               "started": True, "state": {"running": {"startedAt": now}}}],
    }


def is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class FakeKubelet:
    def __init__(self, client: ApiClient, namespace: str, *, ready: bool = True) -> None:
        self.client = client
        self.namespace = namespace
        self.ready_for: Callable[[Obj], bool] = lambda pod: ready
        self.informer = Informer(client, "pods", namespace)
        self.queue = WorkQueue(base_delay=0.05, max_delay=1.0)
        self.informer.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))
        self._tasks: list[asyncio.Task[None]] = []

    def _enqueue(self, pod: Obj) -> None:
        self.queue.add(pod["metadata"]["name"])

    async def __aenter__(self) -> FakeKubelet:
        self.informer.start()
        await self.informer.wait_synced(10)
        self._tasks = [asyncio.create_task(run_worker(self.queue, self.sync, "fake-kubelet", lambda *a: None))
                       for _ in range(4)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.queue.close()
        await self.informer.stop()

    def set_ready(self, ready: bool | Callable[[Obj], bool]) -> None:
        """Which pods are Ready from now on: all, none, or those a predicate picks; pods
        already running are brought in line."""
        self.ready_for = ready if callable(ready) else (lambda pod: ready)
        for key in self.informer.keys():
            self.queue.add(key.split("/", 1)[-1])

    async def sync(self, name: str) -> None:
        pod = self.informer.get(f"{self.namespace}/{name}")
        if pod is None:
            return
        md, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        try:
            if md.get("deletionTimestamp"):
                await self.client.delete("pods", name, self.namespace, grace_period_seconds=0)
            elif not spec.get("nodeName"):
                await self._bind(name, NODES[zlib.crc32(name.encode()) % len(NODES)])
            elif status.get("phase") in ("Succeeded", "Failed"):
                return
            elif status.get("phase") != "Running" or is_ready(pod) != self.ready_for(pod):
                await self.client.patch("pods", name, {"status": running_status(self.ready_for(pod))},
                                        self.namespace, subresource="status")
        except (NotFound, Conflict):
            return  # gone, or changed under us: the next event brings it back

    async def _bind(self, name: str, node: str) -> None:
        await self.client.request("POST", f"/api/v1/namespaces/{self.namespace}/pods/{name}/binding", body={
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})


@contextlib.asynccontextmanager
async def fake_kubelet(client: ApiClient, namespace: str, *, ready: bool = True) -> AsyncIterator[FakeKubelet]:
    async with FakeKubelet(client, namespace, ready=ready) as kubelet:
        yield kubelet


class Observer:
    """Watches one resource in a namespace and runs ``check(objects)`` on the state after
    every event, keeping whatever the check reports as a violation."""

    def __init__(self, client: ApiClient, resource: str, namespace: str,
                 check: Callable[[list[Obj]], str | None], label_selector: str | None = None) -> None:
        self.informer = Informer(client, resource, namespace, label_selector=label_selector)
        self.check = check
        self.violations: list[str] = []
        self.events = 0
        self.informer.add_handlers(on_add=self._observe, on_update=lambda old, new: self._observe(new),
                                   on_delete=self._observe)

    def _observe(self, _: Obj) -> None:
        self.events += 1
        problem = self.check(self.informer.list())
        if problem:
            self.violations.append(problem)

    async def __aenter__(self) -> Observer:
        self.informer.start()
        await self.informer.wait_synced(10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.informer.stop()


async def list_items(client: ApiClient, resource: str, namespace: str, label_selector: str | None = None) -> list[Obj]:
    listed = await client.list(resource, namespace, label_selector=label_selector)
    items: list[Obj] = listed.get("items") or []
    return items


async def event_messages(client: ApiClient, namespace: str, involved: str | None = None,
                         reason: str | None = None) -> list[str]:
    return [e.get("message") or "" for e in await list_items(client, "events", namespace)
            if (involved is None or e["involvedObject"].get("name") == involved)
            and (reason is None or e.get("reason") == reason)]


async def create_namespace(client: ApiClient, name: str) -> None:
    with contextlib.suppress(ApiClientError):
        await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

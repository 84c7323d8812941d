"""The scheduler in-process against a real ``skiff server`` (no controllers), with hollow
Nodes: spreading, selectors, affinity, taints, host ports, and a pod that fits nowhere
until a node arrives (its exact PodScheduled condition and FailedScheduling event)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from sched_objects import make_node, make_pod, taint

from control_plane.scheduler.scheduler import Scheduler
from control_plane.scheduler.settings import SchedulerSettings
from skiff.client.api import ApiClient
from skiff.client.errors import NotFound
from skiff.client.kubeconfig import load_kubeconfig

if TYPE_CHECKING:
    from tests.conftest import ApiServer

Obj = dict[str, Any]
ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"
# Short backoffs so retries happen within the test's patience.
FAST = SchedulerSettings(pod_initial_backoff_seconds=0.2, pod_max_backoff_seconds=1.0)


def _root_conftest(config: pytest.Config) -> ModuleType:
    for plugin in config.pluginmanager.get_plugins():
        if isinstance(plugin, ModuleType) and Path(getattr(plugin, "__file__", "") or "").resolve() == ROOT_CONFTEST:
            return plugin
    raise RuntimeError(f"{ROOT_CONFTEST} is not loaded")


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    conftest = _root_conftest(request.config)
    srv: ApiServer = conftest.start_server(tmp_path_factory.mktemp("scheduler-server"),
                                           extra_args=("--controllers", ""))
    try:
        yield srv
    finally:
        srv.stop()
        if srv in conftest._LIVE:
            conftest._LIVE.remove(srv)


class Cluster:
    """A namespace, hollow nodes named for this test, and the scheduler running in-process."""

    def __init__(self, client: ApiClient, namespace: str, prefix: str) -> None:
        self.client = client
        self.ns = namespace
        self.prefix = prefix
        self.nodes: list[str] = []
        self.scheduler: Scheduler | None = None
        self._task: asyncio.Task[None] | None = None

    def name(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    async def add_node(self, node: str, **kw: Any) -> str:
        name = self.name(node)
        await self.client.create("nodes", make_node(name, **kw))
        self.nodes.append(name)
        return name

    def start(self, settings: SchedulerSettings = FAST) -> Scheduler:
        self.scheduler = Scheduler(self.client, settings, identity=f"test-{self.prefix}")
        self._task = asyncio.create_task(self.scheduler.run())
        return self.scheduler

    async def create_pod(self, name: str, **kw: Any) -> Obj:
        pod = make_pod(name, namespace=self.ns, **kw)
        del pod["metadata"]["uid"]  # the server assigns it
        return await self.client.create("pods", pod, self.ns)

    async def pod(self, name: str) -> Obj:
        return await self.client.get("pods", name, self.ns)

    async def node_of(self, name: str, timeout: float = 15.0) -> str:
        pod = await wait_for(lambda: self._bound(name), timeout, f"pod {name} to be bound")
        return str(pod["spec"]["nodeName"])

    async def _bound(self, name: str) -> Obj | None:
        pod = await self.pod(name)
        return pod if pod["spec"].get("nodeName") else None

    async def events(self, pod: str, reason: str) -> list[Obj]:
        listed = await self.client.list("events", self.ns, field_selector=f"involvedObject.name={pod},reason={reason}")
        return list(listed.get("items") or [])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        pods = await self.client.list("pods", self.ns)
        for pod in pods.get("items") or []:
            try:
                await self.client.delete("pods", pod["metadata"]["name"], self.ns, grace_period_seconds=0)
            except NotFound:
                pass
        for node in self.nodes:
            try:
                await self.client.delete("nodes", node)
            except NotFound:
                pass


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {result!r})")
        await asyncio.sleep(interval)


@pytest.fixture
async def cluster(server: ApiServer, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    prefix = uuid.uuid4().hex[:6]
    ns = f"sched-{prefix}"
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as client:
        await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        c = Cluster(client, ns, prefix)
        try:
            yield c
        finally:
            await c.stop()


async def test_replicas_spread_over_three_nodes_with_scheduled_events(cluster: Cluster) -> None:
    for n in ("a", "b", "c"):
        await cluster.add_node(n)
    cluster.start()
    for i in range(6):
        await cluster.create_pod(f"web-{i}", cpu="100m", memory="64Mi", owner="rs-web-uid")
    placed = [await cluster.node_of(f"web-{i}") for i in range(6)]
    assert sorted(placed) == sorted(cluster.name(n) for n in ("a", "a", "b", "b", "c", "c"))
    pod = await cluster.pod("web-0")
    scheduled = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled and scheduled[0]["status"] == "True"
    events = await wait_for(lambda: cluster.events("web-0", "Scheduled"), 10, "the Scheduled event")
    assert events[0]["message"] == f"Successfully assigned {cluster.ns}/web-0 to {placed[0]}"
    assert (events[0]["type"], events[0]["source"]["component"]) == ("Normal", "default-scheduler")


async def test_selectors_affinity_taints_and_tolerations_are_honoured(cluster: Cluster) -> None:
    ssd = await cluster.add_node("ssd", labels={"disk": "ssd", "zone": "z1"})
    hdd = await cluster.add_node("hdd", labels={"disk": "hdd", "zone": "z2"})
    gpu = await cluster.add_node("gpu", labels={"zone": "z3"}, taints=[taint("dedicated", "gpu")])
    cluster.start()
    await cluster.create_pod("on-ssd", nodeSelector={"disk": "ssd"})
    await cluster.create_pod("in-z2", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}]}}})
    await cluster.create_pod("gpu-job", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                                      "effect": "NoSchedule"}],
                             affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                 "nodeSelectorTerms": [{"matchExpressions": [
                                     {"key": "zone", "operator": "In", "values": ["z3"]}]}]}}})
    for i in range(4):
        await cluster.create_pod(f"plain-{i}", owner="rs-plain")
    assert await cluster.node_of("on-ssd") == ssd
    assert await cluster.node_of("in-z2") == hdd
    assert await cluster.node_of("gpu-job") == gpu
    assert {await cluster.node_of(f"plain-{i}") for i in range(4)} == {ssd, hdd}  # never the tainted node


async def test_pod_that_fits_nowhere_waits_with_the_message_then_runs_on_a_new_node(cluster: Cluster) -> None:
    for n in ("cp1", "cp2"):
        await cluster.add_node(n, taints=[taint("node-role.kubernetes.io/control-plane")])
    await cluster.add_node("small", memory="1Gi")
    cluster.start()
    await cluster.create_pod("big", memory="2Gi")
    expected = ("0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint(s). "
                "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, "
                "2 Preemption is not helpful for scheduling.")

    async def unschedulable() -> Obj | None:
        pod = await cluster.pod("big")
        for c in pod.get("status", {}).get("conditions") or []:
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return c
        return None

    condition = await wait_for(unschedulable, 15, "PodScheduled=False")
    assert (condition["reason"], condition["message"]) == ("Unschedulable", expected)
    events = await wait_for(lambda: cluster.events("big", "FailedScheduling"), 10, "a FailedScheduling event")
    assert (events[0]["type"], events[0]["message"], events[0]["source"]["component"]) == \
        ("Warning", expected, "default-scheduler")
    roomy = await cluster.add_node("roomy", memory="8Gi")
    assert await cluster.node_of("big") == roomy
    pod = await cluster.pod("big")
    assert [c["status"] for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"] == ["True"]


async def test_host_port_clash_sends_the_second_pod_elsewhere_and_the_third_nowhere(cluster: Cluster) -> None:
    a = await cluster.add_node("a")
    b = await cluster.add_node("b")
    cluster.start()
    port = [{"name": "app", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
    await cluster.create_pod("first", containers=port)
    await cluster.create_pod("second", containers=port)
    first = await cluster.node_of("first")
    assert {first, await cluster.node_of("second")} == {a, b}
    await cluster.create_pod("third", containers=port)
    events = await wait_for(lambda: cluster.events("third", "FailedScheduling"), 15, "FailedScheduling for third")
    assert events[0]["message"] == (
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports. "
        "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.")
    await cluster.client.delete("pods", "first", cluster.ns, grace_period_seconds=0)
    assert await cluster.node_of("third") == first  # deleting an assigned pod retries the parked ones


async def test_pods_for_another_scheduler_are_left_alone(cluster: Cluster) -> None:
    await cluster.add_node("a")
    scheduler = cluster.start()
    await cluster.create_pod("theirs", schedulerName="other-scheduler")
    await cluster.create_pod("mine")
    await cluster.node_of("mine")  # created after "theirs": the scheduler has seen both
    assert not (await cluster.pod("theirs"))["spec"].get("nodeName")
    assert f"{cluster.ns}/theirs" not in scheduler.queue and scheduler.stats.bound == 1


async def test_skiff_scheduler_command_takes_the_lease_schedules_and_releases(
        cluster: Cluster, server: ApiServer, request: pytest.FixtureRequest) -> None:
    conftest = _root_conftest(request.config)
    node = await cluster.add_node("a")
    log = server.data_dir / f"scheduler-{cluster.prefix}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*conftest.skiff_command(), "scheduler", "--kubeconfig", str(server.kubeconfig),
                                 "--leader-elect=true"], stdout=out, stderr=subprocess.STDOUT)
    try:
        await cluster.create_pod("via-cli")
        assert await cluster.node_of("via-cli", timeout=30) == node, log.read_text()
        lease = await cluster.client.get("leases", "kube-scheduler", "kube-system")
        assert lease["spec"]["holderIdentity"].startswith(socket.gethostname() + "_")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, log.read_text()
    lease = await cluster.client.get("leases", "kube-scheduler", "kube-system")
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseDurationSeconds"]) == ("", 1)

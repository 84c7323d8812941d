"""The node lifecycle controller against a real API server, with hollow Nodes whose
Leases the test renews (or stops renewing) and short timings: grace period 3 s, monitor
period 0.5 s, tolerations of 1 s. The controller runs in the test's event loop with
those settings; the server runs no controllers of its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from control_plane.api.admission import default_tolerations
from control_plane.controllers.nodelifecycle import NodeLifecycleController, TokenBucket, compute_zone_state
from control_plane.controllers.settings import NodeLifecycleSettings
from control_plane.controllers.taints import matching_tolerations, min_toleration_seconds, rfc3339, tolerates
from skiff.client.api import ApiClient
from skiff.client.errors import NotFound
from skiff.client.kubeconfig import load_kubeconfig

if TYPE_CHECKING:
    from tests.conftest import ServerFactory

Obj = dict[str, Any]
NS = "lifecycle"
GRACE = 3.0
PERIOD = 0.5
TOLERATION = 1
SETTINGS = NodeLifecycleSettings(node_monitor_period=PERIOD, node_monitor_grace_period=GRACE,
                                 node_startup_grace_period=GRACE, default_not_ready_toleration_seconds=TOLERATION,
                                 default_unreachable_toleration_seconds=TOLERATION)
UNREACHABLE = "node.kubernetes.io/unreachable"


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {result!r})")
        await asyncio.sleep(interval)


class Cluster:
    """Hollow nodes and the kubelet's heartbeats, played by the test."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.renewing: set[str] = set()

    async def add_node(self, name: str) -> Obj:
        await self.client.create("nodes", {"apiVersion": "v1", "kind": "Node",
                                           "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
        await self.post_ready(name)
        await self.client.create("leases", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": self._micro_now()}})
        self.renewing.add(name)
        return await self.client.get("nodes", name)

    async def post_ready(self, name: str) -> None:
        """The kubelet's status post: every condition fresh, Ready=True."""
        node = await self.client.get("nodes", name)
        now = rfc3339(time.time())
        node["status"] = {**(node.get("status") or {}), "conditions": [
            {"type": t, "status": "False", "reason": r, "lastHeartbeatTime": now, "lastTransitionTime": now}
            for t, r in (("MemoryPressure", "KubeletHasSufficientMemory"), ("DiskPressure", "KubeletHasNoDiskPressure"),
                         ("PIDPressure", "KubeletHasSufficientPID"))] + [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
             "lastHeartbeatTime": now, "lastTransitionTime": now}]}
        await self.client.update_status("nodes", node)

    @staticmethod
    def _micro_now() -> str:
        now = time.time()
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}Z"

    async def renew_forever(self) -> None:
        while True:
            for name in sorted(self.renewing):
                lease = await self.client.get("leases", name, "kube-node-lease")
                lease["spec"]["renewTime"] = self._micro_now()
                await self.client.replace("leases", lease, "kube-node-lease")
            await asyncio.sleep(0.3)

    async def add_pod(self, name: str, node: str, tolerations: list[Obj] | None = None, defaults: bool = True) -> Obj:
        pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                    "spec": {"nodeName": node, "tolerations": tolerations or [],
                             "containers": [{"name": "app", "image": "busybox"}]}}
        if defaults:  # what the API server's DefaultTolerationSeconds admission does, with lab timings
            default_tolerations(pod, TOLERATION, TOLERATION)
        created = await self.client.create("pods", pod, NS)
        now = rfc3339(time.time())
        await self.client.patch("pods", name, {"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}}, NS, subresource="status")
        return created

    async def node(self, name: str) -> Obj:
        return await self.client.get("nodes", name)

    async def taints(self, name: str) -> set[tuple[str, str]]:
        node = await self.node(name)
        return {(t["key"], t["effect"]) for t in (node.get("spec") or {}).get("taints") or []}

    async def ready(self, name: str) -> str | None:
        node = await self.node(name)
        return next((c["status"] for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), None)

    async def pod_or_none(self, name: str) -> Obj | None:
        try:
            return await self.client.get("pods", name, NS)
        except NotFound:
            return None

    async def deleting(self, name: str) -> bool:
        pod = await self.pod_or_none(name)
        return pod is None or bool(pod["metadata"].get("deletionTimestamp"))

    async def events(self, namespace: str, involved: str) -> list[Obj]:
        listed = await self.client.list("events", namespace)
        return [e for e in listed["items"] if e["involvedObject"].get("name") == involved]


@pytest.fixture
async def cluster(server_factory: ServerFactory) -> AsyncIterator[Cluster]:
    server = server_factory.start(extra_args=("--controllers", ""))
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as client:
        await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        c = Cluster(client)
        renewer = asyncio.create_task(c.renew_forever())
        try:
            yield c
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewer


@contextlib.asynccontextmanager
async def controller(client: ApiClient, settings: NodeLifecycleSettings = SETTINGS) -> AsyncIterator[
        NodeLifecycleController]:
    ctl = NodeLifecycleController(client, settings=settings)
    task = asyncio.create_task(ctl.run())
    try:
        yield ctl
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_dead_node_goes_unknown_is_tainted_and_its_pods_are_evicted(cluster: Cluster) -> None:
    await cluster.add_node("alive")
    await cluster.add_node("doomed")
    await cluster.add_pod("short", "doomed")  # default tolerations: 1 s
    await cluster.add_pod("forever", "doomed", [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}])
    await cluster.add_pod("zero", "doomed", [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                                              "tolerationSeconds": 0}])
    await cluster.add_pod("bystander", "alive")
    async with controller(cluster.client):
        await asyncio.sleep(1.0)  # a few monitor passes with everything healthy
        assert await cluster.taints("doomed") == set()
        assert await cluster.ready("doomed") == "True"

        cluster.renewing.discard("doomed")  # the kubelet dies
        stopped = time.monotonic()
        await wait_for(lambda: _is(cluster.ready("doomed"), "Unknown"), GRACE + PERIOD + 2.0, "Ready=Unknown")
        unknown_after = time.monotonic() - stopped
        assert unknown_after >= GRACE - 0.5, f"Ready went Unknown after {unknown_after:.1f}s, before the grace period"
        node = await cluster.node("doomed")
        conditions = {c["type"]: c for c in node["status"]["conditions"]}
        assert {t: c["status"] for t, c in conditions.items()} == {
            "Ready": "Unknown", "MemoryPressure": "Unknown", "DiskPressure": "Unknown", "PIDPressure": "Unknown"}
        assert conditions["Ready"]["reason"] == "NodeStatusUnknown"
        assert conditions["Ready"]["message"] == "Kubelet stopped posting node status."

        expected = {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")}
        await wait_for(lambda: _is(cluster.taints("doomed"), expected), 3.0, "the unreachable taints")
        tainted = time.monotonic()
        assert await cluster.taints("alive") == set()

        # tolerationSeconds 0: at once; 1 s: a second after the taint; no limit: never.
        await wait_for(lambda: cluster.deleting("zero"), 2.0, "pod zero to be evicted")
        await wait_for(lambda: cluster.deleting("short"), TOLERATION + 3.0, "pod short to be evicted")
        waited = time.monotonic() - tainted
        assert waited >= TOLERATION - 0.5, f"pod short was evicted {waited:.2f}s after the taint"
        await asyncio.sleep(1.5)
        forever = await cluster.pod_or_none("forever")
        assert forever is not None and not forever["metadata"].get("deletionTimestamp")
        bystander = await cluster.pod_or_none("bystander")
        assert bystander is not None and not bystander["metadata"].get("deletionTimestamp")

        # MarkPodsNotReady, and what an operator sees
        ready = {c["type"]: c["status"] for c in forever["status"]["conditions"]}
        assert ready["Ready"] == "False"
        short = await cluster.pod_or_none("short")
        if short is not None:  # Terminating until an agent confirms; none will
            assert {c["type"]: c.get("reason") for c in short["status"]["conditions"]}.get(
                "DisruptionTarget") == "DeletionByTaintManager"
        await wait_for(lambda: _has_event(cluster.events("default", "doomed"), "NodeNotReady",
                                          "Node doomed status is now: NodeNotReady"), 3.0, "a NodeNotReady event")
        await wait_for(lambda: _has_event(cluster.events(NS, "short"), "TaintManagerEviction",
                                          f"Marking for deletion Pod {NS}/short"), 3.0, "a TaintManagerEviction event")
        assert await _has_event(cluster.events(NS, "forever"), "NodeNotReady", "Node is not ready")

        # the kubelet comes back: heartbeat, then a status post
        cluster.renewing.add("doomed")
        await cluster.post_ready("doomed")
        await wait_for(lambda: _is(cluster.taints("doomed"), set()), 3.0, "the taints to go")
        assert await cluster.ready("doomed") == "True"
        forever = await cluster.pod_or_none("forever")
        assert forever is not None and not forever["metadata"].get("deletionTimestamp")


async def test_all_nodes_down_is_a_disruption_nothing_is_evicted(cluster: Cluster) -> None:
    """Every node silent at once looks like the controller's own network failing:
    Kubernetes' 'master disruption mode' taints nothing NoExecute and evicts nothing."""
    await cluster.add_node("a")
    await cluster.add_node("b")
    await cluster.add_pod("p", "a")
    async with controller(cluster.client):
        await asyncio.sleep(1.0)
        cluster.renewing.clear()
        await wait_for(lambda: _is(cluster.ready("a"), "Unknown"), GRACE + PERIOD + 2.0, "a Ready=Unknown")
        await wait_for(lambda: _is(cluster.ready("b"), "Unknown"), 2.0, "b Ready=Unknown")
        await wait_for(lambda: _is(cluster.taints("a"), {(UNREACHABLE, "NoSchedule")}), 3.0,
                       "a NoSchedule taint only")
        await asyncio.sleep(TOLERATION + 1.0)
        assert (UNREACHABLE, "NoExecute") not in await cluster.taints("a")
        assert (UNREACHABLE, "NoExecute") not in await cluster.taints("b")
        assert not await cluster.deleting("p")

        # one node back: out of disruption mode; the other gets its NoExecute taint a grace period later
        cluster.renewing.add("b")
        await cluster.post_ready("b")
        await wait_for(lambda: _is(cluster.taints("a"), {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}),
                       GRACE + PERIOD + 3.0, "a's NoExecute taint")
        await wait_for(lambda: cluster.deleting("p"), TOLERATION + 3.0, "pod p to be evicted")
        assert await cluster.taints("b") == set()


async def test_untolerated_pods_go_at_once_and_restart_keeps_the_clock(cluster: Cluster) -> None:
    """A NoExecute taint the pod does not tolerate evicts it straight away; a restarted
    controller counts tolerationSeconds from the taint's timeAdded, not from its start."""
    await cluster.add_node("n1")
    await cluster.add_node("n2")
    await cluster.add_pod("intolerant", "n1", defaults=False)
    await cluster.add_pod("patient", "n1", [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute",
                                             "tolerationSeconds": 4}], defaults=False)
    await cluster.add_pod("stays", "n2", [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute",
                                           "tolerationSeconds": 4}], defaults=False)
    async with controller(cluster.client):
        node = await cluster.node("n1")
        node.setdefault("spec", {})["taints"] = [{"key": "dedicated", "value": "x", "effect": "NoExecute",
                                   "timeAdded": rfc3339(time.time())}]
        await cluster.client.replace("nodes", node)
        tainted = time.monotonic()
        await wait_for(lambda: cluster.deleting("intolerant"), 2.0, "the intolerant pod to be evicted")
        assert not await cluster.deleting("patient")
    await asyncio.sleep(3.0)  # down for a while: counting afresh from the restart would mean 7 s or more
    async with controller(cluster.client):
        await wait_for(lambda: cluster.deleting("patient"), 8.0, "the patient pod to be evicted")
        waited = time.monotonic() - tainted
        assert 3.0 <= waited <= 6.5, f"evicted {waited:.1f}s after the taint; its toleration was 4s"
        assert not await cluster.deleting("stays")


async def _is(value: Awaitable[Any], expected: Any) -> Any:
    got = await value
    return True if got == expected else Mismatch(got)


class Mismatch:
    """Falsy, but shows what was there instead."""

    def __init__(self, got: Any) -> None:
        self.got = got

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"got {self.got!r}"


async def _has_event(events: Awaitable[list[Obj]], reason: str, message: str) -> bool:
    return any(e["reason"] == reason and e["message"] == message for e in await events)


# ---- pure pieces ----------------------------------------------------------------------------


def test_default_toleration_seconds_admission() -> None:
    pod: Obj = {"spec": {"containers": []}}
    default_tolerations(pod)
    assert pod["spec"]["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
    # already tolerated (by key, or by a wildcard key or effect): nothing added for it
    own = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    pod = {"spec": {"tolerations": [own]}}
    default_tolerations(pod, 5, 5)
    assert pod["spec"]["tolerations"] == [own, {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                                "effect": "NoExecute", "tolerationSeconds": 5}]
    everything = {"operator": "Exists"}
    pod = {"spec": {"tolerations": [everything]}}
    default_tolerations(pod)
    assert pod["spec"]["tolerations"] == [everything]
    no_schedule_only = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}
    pod = {"spec": {"tolerations": [no_schedule_only]}}
    default_tolerations(pod)
    assert len(pod["spec"]["tolerations"]) == 3


def test_toleration_matching() -> None:
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoExecute"}
    assert tolerates({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}, taint)
    assert tolerates({"key": "dedicated", "value": "gpu"}, taint)  # empty operator is Equal, empty effect any
    assert not tolerates({"key": "dedicated", "value": "cpu"}, taint)
    assert tolerates({"key": "dedicated", "operator": "Exists"}, taint)
    assert tolerates({"operator": "Exists"}, taint)
    assert not tolerates({"operator": "Exists", "effect": "NoSchedule"}, taint)
    assert not tolerates({"key": "other", "operator": "Exists"}, taint)
    unreachable = {"key": UNREACHABLE, "effect": "NoExecute"}
    assert matching_tolerations([taint, unreachable], [{"key": "dedicated", "operator": "Exists"}]) is None
    used = matching_tolerations([taint, unreachable], [
        {"key": "dedicated", "operator": "Exists"},
        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}])
    assert used is not None and min_toleration_seconds(used) == 30
    assert min_toleration_seconds([{"operator": "Exists"}]) is None
    assert min_toleration_seconds([{"operator": "Exists", "tolerationSeconds": -5}]) == 0
    assert min_toleration_seconds([]) == 0


def test_zone_state_and_rate_limit() -> None:
    assert compute_zone_state([], 0.55) == (0, "Normal")
    assert compute_zone_state(["True", "Unknown", "False"], 0.55) == (2, "Normal")
    assert compute_zone_state(["True", "Unknown", "False", None], 0.55) == (3, "PartialDisruption")
    assert compute_zone_state(["Unknown", None], 0.55) == (2, "FullDisruption")
    now = [0.0]
    bucket = TokenBucket(0.5, lambda: now[0])
    assert bucket.try_accept() and not bucket.try_accept()
    now[0] = 1.9
    assert not bucket.try_accept()
    now[0] = 2.0
    assert bucket.try_accept()
    bucket.set_rate(0)
    now[0] = 100.0
    assert not bucket.try_accept()

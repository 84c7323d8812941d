"""Node registration, node status and the node Lease against a real API server."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.lease import LEASE_NAMESPACE, micro_time, renew_lease
from node_agent.node_status import NodeHealth, NodeStatusReporter
from node_agent.registration import NodeFacts, register_node, render_capacity
from node_agent.settings import AgentSettings, CapacitySettings
from skiff.client import ApiClient, NotFound, load_kubeconfig

GiB = 1024**3


def facts(name: str) -> NodeFacts:
    return NodeFacts(hostname=name, node_ip="10.250.0.11", cpu_millis=4000, memory_bytes=8 * GiB,
                     ephemeral_bytes=100 * GiB, kernel_version="6.1.0-test", os_image="Debian GNU/Linux 12 (bookworm)",
                     arch="amd64", machine_id="m" * 32, system_uuid="s-uuid", boot_id="b-id",
                     runtime_version="docker://20.10.24")


def settings(name: str, tmp_path: Path, **capacity: Any) -> AgentSettings:
    return AgentSettings(node_name=name, kubeconfig=tmp_path / "kc", data_dir=tmp_path, pod_cidr="10.244.7.0/24",
                         listen_port=10250, capacity=CapacitySettings(**capacity))


@pytest.fixture
async def client(api_server: Any) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(str(api_server.kubeconfig))) as c:
        yield c


@pytest.fixture
async def node_name(client: ApiClient) -> AsyncIterator[str]:
    name = f"reg-{uuid.uuid4().hex[:8]}"
    yield name
    for call in (lambda: client.delete("leases", name, LEASE_NAMESPACE), lambda: client.delete("nodes", name)):
        try:
            await call()
        except NotFound:
            pass


async def test_register_creates_node_with_labels_and_pod_cidr(client: ApiClient, node_name: str,
                                                              tmp_path: Path) -> None:
    s = settings(node_name, tmp_path)
    node = await register_node(client, s, facts(node_name))
    assert node["metadata"]["labels"] == {
        "kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
    assert node["spec"]["podCIDR"] == "10.244.7.0/24" and node["spec"]["podCIDRs"] == ["10.244.7.0/24"]

    # A second start (agent restart) reconciles instead of failing; a user's extra label survives.
    node["metadata"]["labels"]["team"] = "blue"
    node["metadata"]["labels"]["kubernetes.io/arch"] = "wrong"
    await client.replace("nodes", node)
    again = await register_node(client, s, facts(node_name))
    assert again["metadata"]["uid"] == node["metadata"]["uid"]
    assert again["metadata"]["labels"]["team"] == "blue" and again["metadata"]["labels"]["kubernetes.io/arch"] == \
        "amd64"


async def test_node_status_ready_capacity_and_node_info(client: ApiClient, node_name: str, tmp_path: Path) -> None:
    s = settings(node_name, tmp_path, system_reserved={"cpu": "500m", "memory": "1Gi"}, pods=50)
    await register_node(client, s, facts(node_name))
    health = NodeHealth()

    async def probe() -> NodeHealth:
        return health

    clock = iter([1_800_000_000.0, 1_800_000_010.0, 1_800_000_020.0]).__next__
    reporter = NodeStatusReporter(client, s, facts(node_name), probe, clock=clock)
    node = await reporter.post_once()
    status = node["status"]
    assert status["capacity"] == {"cpu": "4", "memory": "8388608Ki", "ephemeral-storage": "104857600Ki", "pods": "50"}
    assert status["allocatable"] == {"cpu": "3500m", "memory": "7340032Ki", "ephemeral-storage": "104857600Ki",
                                     "pods": "50"}
    assert status["addresses"] == [{"type": "InternalIP", "address": "10.250.0.11"},
                                   {"type": "Hostname", "address": node_name}]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    info = status["nodeInfo"]
    assert info["containerRuntimeVersion"] == "docker://20.10.24" and info["kubeletVersion"] == "v1.30.0-skiff"
    assert info["operatingSystem"] == "linux" and info["architecture"] == "amd64"
    conds = {c["type"]: c for c in status["conditions"]}
    assert {t: (c["status"], c["reason"]) for t, c in conds.items()} == {
        "MemoryPressure": ("False", "KubeletHasSufficientMemory"), "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
        "PIDPressure": ("False", "KubeletHasSufficientPID"), "Ready": ("True", "KubeletReady")}
    assert conds["Ready"]["message"] == "kubelet is posting ready status"

    health = NodeHealth(runtime_error="cannot reach docker")
    node = await reporter.post_once()
    ready = {c["type"]: c for c in node["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "KubeletNotReady")
    assert ready["message"] == "container runtime is down: cannot reach docker"
    assert ready["lastTransitionTime"] == ready["lastHeartbeatTime"] == "2027-01-15T08:00:10Z"
    memory = {c["type"]: c for c in node["status"]["conditions"]}["MemoryPressure"]
    assert memory["lastTransitionTime"] == "2027-01-15T08:00:00Z"  # unchanged status keeps its transition time


async def test_lease_is_created_then_renewed(client: ApiClient, node_name: str, tmp_path: Path) -> None:
    s = settings(node_name, tmp_path)
    node = await register_node(client, s, facts(node_name))
    lease = await renew_lease(client, s, node["metadata"]["uid"], 1_800_000_000.25)
    assert lease["spec"] == {"holderIdentity": node_name, "leaseDurationSeconds": 40,
                             "renewTime": "2027-01-15T08:00:00.250000Z"}
    assert lease["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": node_name,
                                                     "uid": node["metadata"]["uid"]}]
    renewed = await renew_lease(client, s, node["metadata"]["uid"], 1_800_000_010.0)
    assert renewed["spec"]["renewTime"] == "2027-01-15T08:00:10.000000Z"
    assert int(renewed["metadata"]["resourceVersion"]) > int(lease["metadata"]["resourceVersion"])


def test_micro_time_format() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", micro_time(1_800_000_000.123456))


def test_allocatable_never_negative(tmp_path: Path) -> None:
    _, alloc = render_capacity(settings("n", tmp_path, system_reserved={"cpu": "64"}), facts("n"))
    assert alloc["cpu"] == "0"

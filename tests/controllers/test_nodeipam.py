"""Node IPAM against a real API server: distinct /24s for many nodes, CIDRs registered by
agents (``--pod-cidr``) respected, nothing reissued after a restart, a full pool reported
and retried once a node is deleted. The controller runs in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from control_plane.controllers.nodeipam import CidrSet, CidrSetFull, NodeIpamController
from control_plane.controllers.settings import NodeIpamSettings
from skiff.client.api import ApiClient
from skiff.client.kubeconfig import load_kubeconfig

if TYPE_CHECKING:
    from tests.conftest import ServerFactory

Obj = dict[str, Any]
CLUSTER = ipaddress.IPv4Network("10.244.0.0/16")


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture
async def client(server_factory: ServerFactory) -> AsyncIterator[ApiClient]:
    server = server_factory.start(extra_args=("--controllers", ""))
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as c:
        yield c


@contextlib.asynccontextmanager
async def running(client: ApiClient, settings: NodeIpamSettings) -> AsyncIterator[NodeIpamController]:
    ctl = NodeIpamController(client, settings=settings)
    task = asyncio.create_task(ctl.run())
    try:
        yield ctl
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def create_node(client: ApiClient, name: str, pod_cidr: str | None = None) -> Obj:
    spec = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]} if pod_cidr else {}
    return await client.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                         "spec": spec})


async def cidrs(client: ApiClient) -> dict[str, str | None]:
    listed = await client.list("nodes")
    out: dict[str, str | None] = {}
    for node in listed["items"]:
        spec = node.get("spec") or {}
        if spec.get("podCIDR"):
            assert spec.get("podCIDRs") == [spec["podCIDR"]], node
        out[node["metadata"]["name"]] = spec.get("podCIDR")
    return out


async def all_assigned(client: ApiClient) -> dict[str, str]:
    got = await cidrs(client)
    return {k: v for k, v in got.items() if v} if all(got.values()) else {}


async def test_fifty_nodes_get_distinct_blocks_and_a_restart_reissues_none(client: ApiClient) -> None:
    await create_node(client, "agent-0", "10.244.0.0/24")  # the lab's agents bring their own
    await create_node(client, "agent-1", "10.244.1.0/24")
    await create_node(client, "elsewhere", "192.168.7.0/24")  # outside the cluster CIDR: left alone
    settings = NodeIpamSettings(cluster_cidr=CLUSTER, node_cidr_mask_size=24)
    async with running(client, settings):
        await asyncio.gather(*(create_node(client, f"node-{i:02d}") for i in range(50)))
        first = await wait_for(lambda: all_assigned(client), 20.0, "every node to get a pod CIDR")
    assert first["agent-0"] == "10.244.0.0/24" and first["agent-1"] == "10.244.1.0/24"
    assert first["elsewhere"] == "192.168.7.0/24"
    blocks = [ipaddress.IPv4Network(v) for k, v in first.items() if k != "elsewhere"]
    assert len(blocks) == 52 and len(set(blocks)) == 52, sorted(first.items())
    assert all(b.prefixlen == 24 and b.subnet_of(CLUSTER) for b in blocks)

    # A new controller (a restart) learns what is used from the nodes before assigning.
    async with running(client, settings):
        await asyncio.gather(*(create_node(client, f"late-{i}") for i in range(5)))
        second = await wait_for(lambda: all_assigned(client), 10.0, "the late nodes to get pod CIDRs")
    assert {k: v for k, v in second.items() if k in first} == first, "assigned CIDRs never change"
    used = [v for k, v in second.items() if k != "elsewhere"]
    assert len(set(used)) == len(used) == 57


async def test_full_pool_is_reported_and_a_deleted_node_frees_its_block(client: ApiClient) -> None:
    settings = NodeIpamSettings(cluster_cidr=ipaddress.IPv4Network("10.245.0.0/23"), node_cidr_mask_size=24)
    async with running(client, settings):
        await create_node(client, "one")
        await create_node(client, "two")
        await wait_for(lambda: all_assigned(client), 10.0, "both nodes to get a pod CIDR")
        await create_node(client, "three")

        async def not_available() -> bool:
            listed = await client.list("events", "default")
            return any(e["reason"] == "CIDRNotAvailable" and e["involvedObject"]["name"] == "three"
                       and e["type"] == "Warning" for e in listed["items"])

        await wait_for(not_available, 10.0, "a CIDRNotAvailable event for node three")
        assert (await cidrs(client))["three"] is None
        freed = (await cidrs(client))["one"]
        await client.delete("nodes", "one")
        got = await wait_for(lambda: all_assigned(client), 10.0, "node three to get the freed block")
    assert got["three"] == freed and got["two"] != freed


def test_cidr_set_allocates_round_robin_and_never_twice() -> None:
    cidrs_ = CidrSet(ipaddress.IPv4Network("10.0.0.0/22"), 24)
    assert cidrs_.occupy(ipaddress.IPv4Network("10.0.1.0/24"), "lab") is None
    a = cidrs_.allocate_next("a")
    b = cidrs_.allocate_next("b")
    c = cidrs_.allocate_next("c")
    assert [str(a), str(b), str(c)] == ["10.0.0.0/24", "10.0.2.0/24", "10.0.3.0/24"]
    with pytest.raises(CidrSetFull):
        cidrs_.allocate_next("d")
    assert not cidrs_.release(a, "someone-else"), "only the owner releases a block"
    assert cidrs_.occupy(a, "d") == "a", "a clash is reported"
    assert cidrs_.release(a, "a")
    assert cidrs_.allocate_next("d") == a

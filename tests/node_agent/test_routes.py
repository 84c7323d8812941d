"""Pod routes (host-gw) without a kernel: rendering from Node objects, the plan from actual to
desired, the controller's sync against a fake route table, the sysctls on a fake /proc/sys,
and the FORWARD accept chain against a fake iptables."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from node_agent.podnet import forward_rules
from node_agent.podnet.controller import PodRouteController
from node_agent.podnet.netlink import RouteError, RouteExists
from node_agent.podnet.routes import (
    LocalNetwork,
    NodeRouteInfo,
    Route,
    RouteOp,
    node_route_info,
    plan_route_ops,
    render_routes,
)
from node_agent.podnet.sysctls import ensure_forwarding_sysctls

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address
ETH0 = LocalNetwork(ipaddress.IPv4Interface("10.250.7.11/24"), 2, "eth0")
BRIDGE = LocalNetwork(ipaddress.IPv4Interface("10.244.1.1/24"), 3, "skiff0")
LO = LocalNetwork(ipaddress.IPv4Interface("127.0.0.1/8"), 1, "lo")
LOCAL = [LO, ETH0, BRIDGE]


def node(name: str, cidr: str | None = None, ip: str | None = None, *, cidrs: list[str] | None = None,
         addresses: list[dict[str, str]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if cidr:
        spec["podCIDR"] = cidr
        spec["podCIDRs"] = cidrs or [cidr]
    if addresses is None:
        addresses = [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}] if ip else []
    return {"metadata": {"name": name}, "spec": spec, "status": {"addresses": addresses}}


def route(dst: str, gw: str, ifindex: int = 2, metric: int = 0, node: str = "") -> Route:
    return Route(N(dst), A(gw), ifindex, metric, node=node)


# -- node_route_info ---------------------------------------------------------------------------


def test_route_info_reads_pod_cidrs_and_the_ipv4_internal_ip() -> None:
    obj = node("b", "10.244.2.0/24", cidrs=["10.244.2.0/24", "fd00:2::/64"],
               addresses=[{"type": "Hostname", "address": "b"}, {"type": "InternalIP", "address": "fd00::2"},
                          {"type": "InternalIP", "address": "10.250.7.12"}])
    assert node_route_info(obj) == NodeRouteInfo("b", ("10.244.2.0/24", "fd00:2::/64"), "10.250.7.12")
    assert node_route_info({"metadata": {"name": "c"}, "spec": {"podCIDR": "10.244.3.0/24"}}) == \
        NodeRouteInfo("c", ("10.244.3.0/24",), None)


# -- render_routes -----------------------------------------------------------------------------


def infos(*nodes: dict[str, Any]) -> list[NodeRouteInfo]:
    return [node_route_info(n) for n in nodes]


def test_render_routes_every_other_node_via_its_internal_ip_on_the_connected_link() -> None:
    rendered = render_routes(infos(node("a", "10.244.1.0/24", "10.250.7.11"), node("b", "10.244.2.0/24", "10.250.7.12"),
                                   node("c", "10.244.3.0/24", "10.250.7.13")), "a", ["10.244.1.0/24"], LOCAL)
    assert rendered.routes == {N("10.244.2.0/24"): route("10.244.2.0/24", "10.250.7.12"),
                               N("10.244.3.0/24"): route("10.244.3.0/24", "10.250.7.13")}
    assert rendered.routes[N("10.244.2.0/24")].node == "b"
    assert rendered.skipped == {}


def test_render_routes_skips_nodes_it_cannot_route_and_says_why() -> None:
    nodes = infos(
        node("a", "10.244.1.0/24", "10.250.7.11"),
        node("joining"),  # no podCIDR, no address yet
        node("no-ip", "10.244.4.0/24"),
        node("far", "10.244.5.0/24", "192.0.2.50"),  # not on a connected subnet
        node("ipv6", "fd00:6::/64", "10.250.7.16"),
        node("clone", "10.244.7.0/24", "10.250.7.11"),  # our own address
        node("overlap", "10.244.1.0/25", "10.250.7.18"),  # inside our pod CIDR
        node("shadow", "10.250.0.0/16", "10.250.7.19"),  # would shadow the node subnet
        node("b", "10.244.2.0/24", "10.250.7.12"),
        node("b2", "10.244.2.0/24", "10.250.7.22"),  # same CIDR as b: b (first by name) keeps it
        node("lo", "10.244.9.0/24", "127.0.0.5"),
    )
    rendered = render_routes(nodes, "a", ["10.244.1.0/24"], LOCAL)
    assert rendered.routes == {N("10.244.2.0/24"): route("10.244.2.0/24", "10.250.7.12")}
    assert rendered.skipped == {
        "joining": "no IPv4 spec.podCIDR yet",
        "no-ip": "no IPv4 InternalIP address yet",
        "far": "its InternalIP 192.0.2.50 is not on a directly connected subnet (this node's: eth0 10.250.7.11/24, "
               "skiff0 10.244.1.1/24); host-gw routes need the nodes on one L2 segment",
        "ipv6": "no IPv4 spec.podCIDR yet",
        "clone": "its InternalIP 10.250.7.11 is an address of this node",
        "overlap": "its pod CIDR 10.244.1.0/25 overlaps this node's network 10.244.1.0/24",
        "shadow": "its pod CIDR 10.250.0.0/16 overlaps this node's network 10.250.7.0/24",
        "b2": "its pod CIDR 10.244.2.0/24 is also node b's",
        "lo": "its InternalIP 127.0.0.5 is not on a directly connected subnet (this node's: eth0 10.250.7.11/24, "
              "skiff0 10.244.1.1/24); host-gw routes need the nodes on one L2 segment",
    }


def test_render_routes_picks_the_most_specific_connected_link() -> None:
    wide = LocalNetwork(ipaddress.IPv4Interface("10.250.0.1/16"), 5, "wide")
    rendered = render_routes(infos(node("b", "10.244.2.0/24", "10.250.7.12")), "a", [], [wide, ETH0])
    assert rendered.routes[N("10.244.2.0/24")].ifindex == ETH0.ifindex


# -- plan_route_ops ------------------------------------------------------------------------------


def desired(*routes: Route) -> dict[N, Route]:
    return {r.dst: r for r in routes}


def test_plan_is_empty_when_actual_matches() -> None:
    want = desired(route("10.244.2.0/24", "10.250.7.12"), route("10.244.3.0/24", "10.250.7.13"))
    assert plan_route_ops(want, list(want.values())) == []


def test_plan_adds_missing_replaces_moved_and_deletes_stale_routes_deletes_first() -> None:
    want = desired(route("10.244.2.0/24", "10.250.7.12"), route("10.244.3.0/24", "10.250.7.33"),
                   route("10.244.4.0/24", "10.250.7.14"), route("10.244.5.0/24", "10.250.7.15"))
    actual = [
        route("10.244.3.0/24", "10.250.7.13"),  # the node's address changed: replace
        route("10.244.4.0/24", "10.250.7.14"),  # right
        route("10.244.4.0/24", "10.250.7.14", metric=100),  # a second one of ours: delete
        route("10.244.5.0/24", "10.250.7.15", metric=7),  # only at another metric: delete, then add
        route("10.244.6.0/24", "10.250.7.16"),  # node gone: delete
    ]
    assert plan_route_ops(want, actual) == [
        RouteOp("delete", route("10.244.4.0/24", "10.250.7.14", metric=100)),
        RouteOp("delete", route("10.244.5.0/24", "10.250.7.15", metric=7)),
        RouteOp("delete", route("10.244.6.0/24", "10.250.7.16")),
        RouteOp("replace", route("10.244.3.0/24", "10.250.7.33")),
        RouteOp("add", route("10.244.2.0/24", "10.250.7.12")),
        RouteOp("add", route("10.244.5.0/24", "10.250.7.15")),
    ]


def test_plan_with_nothing_desired_deletes_every_route_of_ours() -> None:
    actual = [route("10.244.2.0/24", "10.250.7.12"), route("10.244.3.0/24", "0.0.0.0", ifindex=0)]
    assert plan_route_ops({}, actual) == [RouteOp("delete", r) for r in sorted(actual)]


def test_plan_replaces_a_route_whose_interface_changed() -> None:
    want = desired(route("10.244.2.0/24", "10.250.7.12", ifindex=9))
    assert plan_route_ops(want, [route("10.244.2.0/24", "10.250.7.12", ifindex=2)]) == \
        [RouteOp("replace", route("10.244.2.0/24", "10.250.7.12", ifindex=9))]


# -- the controller against a fake table ------------------------------------------------------------


class FakeRouteTable:
    """Our routes keyed like the kernel's (dst, metric); ``foreign`` keys hold routes that are not ours."""

    def __init__(self, local: Sequence[LocalNetwork] = LOCAL) -> None:
        self.local = list(local)
        self.routes: dict[tuple[N, int], Route] = {}
        self.foreign: set[tuple[N, int]] = set()
        self.ops: list[str] = []
        self.fail: set[str] = set()  # actions that raise RouteError
        self.closed = False

    async def local_networks(self) -> list[LocalNetwork]:
        return list(self.local)

    async def list_routes(self) -> list[Route]:
        return sorted(self.routes.values())

    async def add(self, r: Route) -> None:
        self._maybe_fail("add", r)
        key = (r.dst, r.metric)
        if key in self.routes or key in self.foreign:
            raise RouteExists(f"route {r.dst} metric {r.metric} already exists and is not ours")
        self.routes[key] = self._stored(r)
        self.ops.append(f"add {r}")

    async def replace(self, r: Route) -> None:
        self._maybe_fail("replace", r)
        self.foreign.discard((r.dst, r.metric))
        self.routes[(r.dst, r.metric)] = self._stored(r)
        self.ops.append(f"replace {r}")

    async def delete(self, r: Route) -> None:
        self._maybe_fail("delete", r)
        if self.routes.get((r.dst, r.metric)) == r:
            del self.routes[(r.dst, r.metric)]
        self.ops.append(f"delete {r}")

    @staticmethod
    def _stored(r: Route) -> Route:
        return Route(r.dst, r.gateway, r.ifindex, r.metric)  # the kernel keeps no node name

    def _maybe_fail(self, action: str, r: Route) -> None:
        if action in self.fail:
            raise RouteError(f"{action} {r}: Network is unreachable (errno 101)")

    def close(self) -> None:
        self.closed = True


class Nodes:
    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = {o["metadata"]["name"]: o for o in objs}

    def __call__(self) -> list[dict[str, Any]]:
        return list(self.objs.values())


def three_nodes() -> Nodes:
    return Nodes(node("a", "10.244.1.0/24", "10.250.7.11"), node("b", "10.244.2.0/24", "10.250.7.12"),
                 node("c", "10.244.3.0/24", "10.250.7.13"))


async def test_sync_adds_the_routes_then_a_second_sync_does_nothing() -> None:
    table = FakeRouteTable()
    controller = PodRouteController(table, three_nodes(), "a", "10.244.1.0/24")
    result = await controller.sync_once()
    assert [str(op) for op in result.applied] == ["add 10.244.2.0/24 via 10.250.7.12 dev #2 (node b)",
                                                  "add 10.244.3.0/24 via 10.250.7.13 dev #2 (node c)"]
    assert result.ok and not result.conflicts
    assert (await controller.sync_once()).applied == []
    assert len(table.ops) == 2


async def test_sync_after_a_restart_deletes_only_what_is_no_longer_wanted() -> None:
    table = FakeRouteTable()
    nodes = three_nodes()
    await PodRouteController(table, nodes, "a").sync_once()
    del nodes.objs["c"]
    nodes.objs["b"] = node("b", "10.244.2.0/24", "10.250.7.42")  # b's address changed while we were away
    table.ops.clear()
    result = await PodRouteController(table, nodes, "a").sync_once()  # a new agent process
    assert table.ops == ["delete 10.244.3.0/24 via 10.250.7.13 dev #2",
                         "replace 10.244.2.0/24 via 10.250.7.42 dev #2 (node b)"]
    assert result.ok
    assert sorted(table.routes.values()) == [route("10.244.2.0/24", "10.250.7.42")]


async def test_a_route_that_is_not_ours_is_left_alone_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    table = FakeRouteTable()
    table.foreign.add((N("10.244.2.0/24"), 0))
    controller = PodRouteController(table, three_nodes(), "a")
    with caplog.at_level(logging.WARNING, logger="skiff.agent.podnet"):
        first = await controller.sync_once()
        second = await controller.sync_once()
    assert [str(op) for op in first.conflicts] == ["add 10.244.2.0/24 via 10.250.7.12 dev #2 (node b)"]
    assert first.ok and second.ok and len(second.conflicts) == 1
    assert [r.message for r in caplog.records] == [
        "pod route for node b: route 10.244.2.0/24 metric 0 already exists and is not ours"]
    assert list(table.routes) == [(N("10.244.3.0/24"), 0)]


async def test_skipped_nodes_are_logged_when_the_reason_changes(caplog: pytest.LogCaptureFixture) -> None:
    nodes = Nodes(node("a", "10.244.1.0/24", "10.250.7.11"), node("far", "10.244.5.0/24", "192.0.2.50"))
    controller = PodRouteController(FakeRouteTable(), nodes, "a")
    with caplog.at_level(logging.INFO, logger="skiff.agent.podnet"):
        await controller.sync_once()
        await controller.sync_once()
    assert [(r.levelname, r.message) for r in caplog.records] == [
        ("WARNING", "no pod route to node far: its InternalIP 192.0.2.50 is not on a directly connected subnet "
                    "(this node's: eth0 10.250.7.11/24, skiff0 10.244.1.1/24); host-gw routes need the nodes "
                    "on one L2 segment")]


async def test_failed_ops_are_reported_and_the_rest_applied() -> None:
    table = FakeRouteTable()
    table.routes[(N("10.244.9.0/24"), 0)] = route("10.244.9.0/24", "10.250.7.19")
    table.fail.add("delete")
    result = await PodRouteController(table, three_nodes(), "a").sync_once()
    assert result.errors == ["delete 10.244.9.0/24 via 10.250.7.19 dev #2: Network is unreachable (errno 101)"]
    assert [op.action for op in result.applied] == ["add", "add"]


async def test_only_route_relevant_node_updates_wake_the_loop() -> None:
    controller = PodRouteController(FakeRouteTable(), three_nodes(), "a")
    b = node("b", "10.244.2.0/24", "10.250.7.12")
    heartbeat = {**b, "status": {**b["status"], "conditions": [{"type": "Ready", "status": "True"}]}}
    controller.on_node_update(b, heartbeat)
    assert not controller._wake.is_set()
    controller.on_node_update(b, node("b", "10.244.2.0/24", "10.250.7.99"))
    assert controller._wake.is_set()


async def test_run_waits_for_the_informer_then_follows_changes_and_retries_failures() -> None:
    table = FakeRouteTable()
    nodes = three_nodes()
    synced = asyncio.Event()
    controller = PodRouteController(table, nodes, "a", resync_period=3600)
    task = asyncio.create_task(controller.run(synced.wait))
    try:
        await asyncio.sleep(0.05)
        assert controller.syncs == 0 and table.ops == []  # nothing before the first list
        synced.set()
        await wait_for(lambda: len(table.routes) == 2)
        del nodes.objs["b"]
        controller.on_node_delete(node("b"))
        await wait_for(lambda: len(table.routes) == 1)
        table.fail.add("add")
        controller.backoff = type(controller.backoff)(initial=0.01, factor=1.0, maximum=0.01)
        nodes.objs["d"] = node("d", "10.244.4.0/24", "10.250.7.14")
        controller.on_node_add(nodes.objs["d"])
        await wait_for(lambda: controller.syncs >= 5)  # retried after the backoff, not after an hour
        table.fail.clear()
        await wait_for(lambda: (N("10.244.4.0/24"), 0) in table.routes)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def wait_for(check: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


# -- sysctls ------------------------------------------------------------------------------------------


def fake_proc_sys(tmp_path: Path, bridge: bool = True, **values: str) -> Path:
    (tmp_path / "net/ipv4/conf/all").mkdir(parents=True)
    (tmp_path / "net/ipv4/ip_forward").write_text(values.get("ip_forward", "0") + "\n")
    (tmp_path / "net/ipv4/conf/all/route_localnet").write_text("0\n")
    if bridge:
        (tmp_path / "net/bridge").mkdir()
        (tmp_path / "net/bridge/bridge-nf-call-iptables").write_text(values.get("nf", "0") + "\n")
    return tmp_path


def test_sysctls_set_forwarding_and_bridge_netfilter_and_never_route_localnet(tmp_path: Path) -> None:
    proc = fake_proc_sys(tmp_path)
    report = ensure_forwarding_sysctls(proc, load_module=lambda m: pytest.fail(f"modprobe {m}"))
    assert report.changed == ["net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"]
    assert report.failed == {}
    assert (proc / "net/ipv4/ip_forward").read_text() == "1"
    assert (proc / "net/bridge/bridge-nf-call-iptables").read_text() == "1"
    assert (proc / "net/ipv4/conf/all/route_localnet").read_text() == "0\n"
    assert ensure_forwarding_sysctls(proc).changed == []  # idempotent: already set, nothing written


def test_sysctls_load_br_netfilter_when_the_bridge_keys_are_missing(tmp_path: Path) -> None:
    proc = fake_proc_sys(tmp_path, bridge=False, ip_forward="1")
    loaded: list[str] = []

    def load(module: str) -> bool:
        loaded.append(module)
        (proc / "net/bridge").mkdir()
        (proc / "net/bridge/bridge-nf-call-iptables").write_text("0\n")
        return True

    report = ensure_forwarding_sysctls(proc, load_module=load)
    assert loaded == ["br_netfilter"]
    assert report.changed == ["net.bridge.bridge-nf-call-iptables=1"]


def test_sysctls_report_a_missing_module(tmp_path: Path) -> None:
    proc = fake_proc_sys(tmp_path, bridge=False, ip_forward="1")
    report = ensure_forwarding_sysctls(proc, load_module=lambda m: False)
    assert report.changed == []
    assert report.failed == {"net.bridge.bridge-nf-call-iptables":
                             f"{proc}/net/bridge does not exist: the br_netfilter module is not loaded and "
                             "`modprobe br_netfilter` did not load it"}


# -- the FORWARD accept chain ---------------------------------------------------------------------------


def test_forward_chain_renders_in_full() -> None:
    assert forward_rules.render_restore("10.244.0.0/16") == (
        "*filter\n"
        ":SKIFF-PODNET - [0:0]\n"
        '-A SKIFF-PODNET -s 10.244.0.0/16 -m comment --comment "skiff pod network" -j ACCEPT\n'
        '-A SKIFF-PODNET -d 10.244.0.0/16 -m comment --comment "skiff pod network" -j ACCEPT\n'
        "COMMIT\n")


class FakeIptables:
    """Just enough iptables for ensure_forward_accept: -S CHAIN, -C/-I FORWARD, iptables-restore."""

    def __init__(self) -> None:
        self.chain: list[str] | None = None
        self.forward: list[str] = []
        self.calls: list[str] = []

    def __call__(self, argv: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        args = list(argv)
        self.calls.append(" ".join(args))
        ok = subprocess.CompletedProcess(args, 0, "", "")
        if args[0] == "iptables-restore":
            assert stdin is not None
            self.chain = [line for line in stdin.splitlines() if line.startswith("-A ")]
            return ok
        op = args[3]
        if op == "-S":
            if self.chain is None:
                return subprocess.CompletedProcess(args, 1, "", "iptables: No chain/target/match by that name.")
            return subprocess.CompletedProcess(args, 0, "\n".join(["-N SKIFF-PODNET", *self.chain]) + "\n", "")
        rule = " ".join(args[6:] if op == "-I" else args[5:])  # after "-I FORWARD 1" / "-C FORWARD"
        if op == "-C":
            return ok if rule in self.forward else subprocess.CompletedProcess(args, 1, "", "Bad rule")
        assert op == "-I"
        self.forward.insert(0, rule)
        return ok


def test_forward_accept_is_created_once_and_then_left_as_it_is() -> None:
    fake = FakeIptables()
    assert forward_rules.ensure_forward_accept("10.244.0.0/16", run=fake) == [
        "chain SKIFF-PODNET: 2 rules for 10.244.0.0/16", "jump FORWARD -> SKIFF-PODNET"]
    assert fake.forward == ["-m comment --comment skiff pod network -j SKIFF-PODNET"]
    fake.calls.clear()
    assert forward_rules.ensure_forward_accept("10.244.0.0/16", run=fake) == []
    assert fake.calls == ["iptables -w 10 -S SKIFF-PODNET",
                          "iptables -w 10 -C FORWARD -m comment --comment skiff pod network -j SKIFF-PODNET"]
    # a new cluster CIDR rewrites the chain, the jump stays
    assert forward_rules.ensure_forward_accept("10.42.0.0/16", run=fake) == [
        "chain SKIFF-PODNET: 2 rules for 10.42.0.0/16"]
    assert len(fake.forward) == 1


# -- flags ----------------------------------------------------------------------------------------------


def test_flags_map_onto_the_pod_network_settings() -> None:
    import argparse

    from node_agent.main import add_agent_parser, settings_from_args

    parser = argparse.ArgumentParser()
    add_agent_parser(parser.add_subparsers())
    base = ["agent", "--kubeconfig", "/kc", "--node-name", "n1"]
    default = settings_from_args(parser.parse_args(base))
    assert (default.cluster_cidr, default.pod_routes) == ("10.244.0.0/16", True)
    custom = settings_from_args(parser.parse_args([*base, "--cluster-cidr", "10.42.0.0/16", "--disable-pod-routes"]))
    assert (custom.cluster_cidr, custom.pod_routes) == ("10.42.0.0/16", False)
    with pytest.raises(ValueError):
        settings_from_args(parser.parse_args([*base, "--cluster-cidr", "not-a-cidr"]))

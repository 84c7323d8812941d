"""host-gw pod routes, as plain data: which routes this node should have, and how to get there.

Every other node's pod CIDR is routed via that node's InternalIP (flannel's host-gw): the
next hop must be on a subnet this node is directly connected to, because the packet is
handed to it by its MAC address. Nothing here touches the kernel: `render_routes` turns
Node objects and the node's own addresses into the desired table, `plan_route_ops` diffs
it against the routes that carry our protocol number and returns the exact operations.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# Our routes carry this rtnetlink protocol number (``ip route show proto 250``): the agent
# finds exactly its own routes after a restart and never touches anybody else's. 250 is
# neither in linux/rtnetlink.h nor in iproute2's rt_protos (the highest used there is 192).
ROUTE_PROTOCOL = 250
MAIN_TABLE = 254

Obj = dict[str, Any]
IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


@dataclass(frozen=True, order=True)
class Route:
    """One IPv4 route of ours: ``dst via gateway dev <ifindex> metric <metric>`` in the main table."""

    dst: IPv4Network
    gateway: IPv4Address
    ifindex: int
    metric: int = 0
    node: str = field(default="", compare=False)  # for logs only

    def __str__(self) -> str:
        text = f"{self.dst} via {self.gateway} dev #{self.ifindex}"
        if self.metric:
            text += f" metric {self.metric}"
        return f"{text} (node {self.node})" if self.node else text


@dataclass(frozen=True)
class LocalNetwork:
    """An IPv4 address of this node on a link: its subnet is directly reachable through that link."""

    interface: ipaddress.IPv4Interface
    ifindex: int
    ifname: str = ""

    def __str__(self) -> str:
        return f"{self.ifname or f'#{self.ifindex}'} {self.interface}"


@dataclass(frozen=True)
class NodeRouteInfo:
    """What of a Node matters to routing: its name, pod CIDRs and InternalIP."""

    name: str
    pod_cidrs: tuple[str, ...] = ()
    internal_ip: str | None = None


def node_route_info(node: Obj) -> NodeRouteInfo:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    cidrs = tuple(str(c) for c in spec.get("podCIDRs") or [] if c)
    if not cidrs and spec.get("podCIDR"):
        cidrs = (str(spec["podCIDR"]),)
    internal = next((str(a.get("address")) for a in (node.get("status") or {}).get("addresses") or []
                     if a.get("type") == "InternalIP" and a.get("address")
                     and _ipv4(str(a.get("address"))) is not None), None)
    return NodeRouteInfo(name=str(meta.get("name", "")), pod_cidrs=cidrs, internal_ip=internal)


def _ipv4(text: str) -> IPv4Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address if isinstance(address, IPv4Address) else None


def _ipv4_networks(cidrs: Iterable[str]) -> list[IPv4Network]:
    out = []
    for text in cidrs:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if isinstance(net, IPv4Network):
            out.append(net)
    return out


@dataclass
class RenderedRoutes:
    routes: dict[IPv4Network, Route] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # node name -> why it has no route


def render_routes(nodes: Iterable[NodeRouteInfo], own_node: str, own_cidrs: Sequence[str],
                  local: Sequence[LocalNetwork]) -> RenderedRoutes:
    """The routes this node should have: for every other node with an IPv4 pod CIDR and an
    InternalIP on a directly connected subnet, ``<podCIDR> via <InternalIP>``.

    A node is skipped, with the reason, when its address is missing, is ours, or is not on a
    connected subnet, or when its pod CIDR would shadow one of our own networks; when two
    nodes claim the same pod CIDR the first by name keeps it (node IPAM never does that).
    """
    out = RenderedRoutes()
    own = _ipv4_networks(own_cidrs)
    local = [n for n in local if not n.interface.ip.is_loopback]
    own_ips = {n.interface.ip for n in local}
    owner: dict[IPv4Network, str] = {}
    for info in sorted(nodes, key=lambda n: n.name):
        if info.name == own_node:
            continue
        cidrs = _ipv4_networks(info.pod_cidrs)
        if not cidrs:
            out.skipped[info.name] = "no IPv4 spec.podCIDR yet"
            continue
        gateway = _ipv4(info.internal_ip or "")
        if gateway is None:
            out.skipped[info.name] = "no IPv4 InternalIP address yet"
            continue
        if gateway in own_ips:
            out.skipped[info.name] = f"its InternalIP {gateway} is an address of this node"
            continue
        link = _connected_link(gateway, local)
        if link is None:
            nets = ", ".join(str(n) for n in local) or "none"
            out.skipped[info.name] = (f"its InternalIP {gateway} is not on a directly connected subnet "
                                      f"(this node's: {nets}); host-gw routes need the nodes on one L2 segment")
            continue
        reasons = []
        for cidr in cidrs:
            clash = next((str(n) for n in own if n.overlaps(cidr)), None) or \
                next((str(n.interface.network) for n in local if n.interface.network.overlaps(cidr)), None)
            if clash is not None:
                reasons.append(f"its pod CIDR {cidr} overlaps this node's network {clash}")
            elif cidr in owner:
                reasons.append(f"its pod CIDR {cidr} is also node {owner[cidr]}'s")
            else:
                owner[cidr] = info.name
                out.routes[cidr] = Route(cidr, gateway, link.ifindex, node=info.name)
        if reasons:
            out.skipped[info.name] = "; ".join(reasons)
    return out


def _connected_link(gateway: IPv4Address, local: Sequence[LocalNetwork]) -> LocalNetwork | None:
    """The link whose subnet holds gateway (the most specific one, then the lowest ifindex)."""
    candidates = [n for n in local if gateway in n.interface.network and n.interface.network.prefixlen < 32]
    if not candidates:
        return None
    return min(candidates, key=lambda n: (-n.interface.network.prefixlen, n.ifindex))


@dataclass(frozen=True, order=True)
class RouteOp:
    action: Literal["add", "replace", "delete"]
    route: Route

    def __str__(self) -> str:
        return f"{self.action} {self.route}"


def plan_route_ops(desired: Mapping[IPv4Network, Route], actual: Iterable[Route]) -> list[RouteOp]:
    """The operations that turn our actual routes into the desired ones: deletes first, then
    replaces (a route of ours at the same destination and metric, pointing elsewhere), then adds.

    ``actual`` must hold our routes only (filtered by protocol number): anything not desired
    is deleted, including a second route of ours to a desired destination at another metric.
    """
    by_dst: dict[IPv4Network, list[Route]] = {}
    for route in actual:
        by_dst.setdefault(route.dst, []).append(route)
    deletes: list[RouteOp] = []
    replaces: list[RouteOp] = []
    adds: list[RouteOp] = []
    for dst, ours in by_dst.items():
        want = desired.get(dst)
        if want is None:
            deletes += [RouteOp("delete", r) for r in ours]
        elif want in ours:
            deletes += [RouteOp("delete", r) for r in ours if r != want]
        elif any(r.metric == want.metric for r in ours):
            replaces.append(RouteOp("replace", want))
            deletes += [RouteOp("delete", r) for r in ours if r.metric != want.metric]
        else:
            deletes += [RouteOp("delete", r) for r in ours]
            adds.append(RouteOp("add", want))
    adds += [RouteOp("add", route) for dst, route in desired.items() if dst not in by_dst]
    return sorted(deletes) + sorted(replaces) + sorted(adds)

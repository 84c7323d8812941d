"""Links, addresses and routes for a bridge attachment, as ensure_* steps.

Each step is idempotent where the thing is shared (the bridge, its gateway address)
and reports exactly which link or address it was working on when the kernel said
no. Creating the per-container veth is the only step that needs undoing; the caller
registers `delete_link` for it on its ExitStack.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cni.errors import NETLINK_FAILURE, CniPluginError
from cni.netlink import is_netlink_error, netlink_errno

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IFF_UP = 0x1
LOOPBACK_INDEX = 1  # lo is ifindex 1 in every network namespace (the kernel's LOOPBACK_IFINDEX)
MAIN_TABLE = 254
HOST_VETH_PREFIX = "veth"


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    mac: str
    kind: str  # "bridge", "veth", ... ("" for links without IFLA_LINKINFO, like lo)
    master: int  # ifindex of the bridge this link is a port of, 0 if none
    peer: int  # IFLA_LINK: for a veth, the ifindex of the other end (in the other end's netns)
    up: bool
    mtu: int


@dataclass(frozen=True)
class RouteInfo:
    dst: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None
    oif: int


@contextmanager
def kernel_step(what: str) -> Iterator[None]:
    """Turn a netlink/OS failure inside the block into a CNI error that says what we were doing."""
    try:
        yield
    except CniPluginError:
        raise
    except Exception as exc:
        if is_netlink_error(exc) or isinstance(exc, OSError):
            raise CniPluginError(NETLINK_FAILURE, f"{what}: {describe(exc)}") from exc
        raise


def describe(exc: BaseException) -> str:
    code = netlink_errno(exc)
    if code:
        return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"
    return str(exc) or type(exc).__name__


def _is_errno(exc: BaseException, *codes: int) -> bool:
    return (is_netlink_error(exc) or isinstance(exc, OSError)) and netlink_errno(exc) in codes


def _link_info(msg: Any) -> LinkInfo:
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
        kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        master=int(msg.get_attr("IFLA_MASTER") or 0),
        peer=int(msg.get_attr("IFLA_LINK") or 0),
        up=bool(msg["flags"] & IFF_UP),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
    )


def get_link(ipr: IPRoute, name: str) -> LinkInfo | None:
    """The link by name in the socket's netns, None if there is none."""
    try:
        msgs = ipr.link("get", ifname=name)
    except Exception as exc:
        if _is_errno(exc, errno.ENODEV):
            return None
        raise
    return _link_info(msgs[0]) if msgs else None


def get_link_by_index(ipr: IPRoute, index: int) -> LinkInfo | None:
    try:
        msgs = ipr.link("get", index=index)
    except Exception as exc:
        if _is_errno(exc, errno.ENODEV):
            return None
        raise
    return _link_info(msgs[0]) if msgs else None


def ensure_bridge(ipr: IPRoute, name: str, mtu: int = 0) -> LinkInfo:
    """Create the bridge if missing, accept one that exists, and make sure it IS a bridge and up."""
    created = False
    with kernel_step(f"look up bridge {name}"):
        bridge = get_link(ipr, name)  # there already but for the node's first pod: one round trip
    if bridge is None:
        with kernel_step(f"create bridge {name}"):
            try:
                ipr.link("add", ifname=name, kind="bridge", **({"mtu": mtu} if mtu else {}))
                created = True
            except Exception as exc:
                if not _is_errno(exc, errno.EEXIST):  # EEXIST: a concurrent ADD made it first
                    raise
        with kernel_step(f"look up bridge {name}"):
            bridge = get_link(ipr, name)
        if bridge is None:
            raise CniPluginError(NETLINK_FAILURE, f"bridge {name} vanished right after it was ensured")
    if bridge.kind != "bridge":
        raise CniPluginError(
            NETLINK_FAILURE, f"{name} already exists but is not a bridge (kind {bridge.kind or 'unknown'})"
        )
    if created and bridge.mac:
        # Pin the MAC: otherwise the bridge takes the lowest port MAC and changes as pods come and go.
        with kernel_step(f"set MAC {bridge.mac} on bridge {name}"):
            ipr.link("set", index=bridge.index, address=bridge.mac)
    if not bridge.up:
        with kernel_step(f"set bridge {name} up"):
            ipr.link("set", index=bridge.index, state="up")
    return bridge


def ipv4_addresses(ipr: IPRoute, index: int) -> list[ipaddress.IPv4Interface]:
    out = []
    for msg in ipr.addr("dump", family=socket.AF_INET):
        if msg["index"] != index:
            continue
        address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        out.append(ipaddress.IPv4Interface(f"{address}/{msg['prefixlen']}"))
    return out


def ensure_address(ipr: IPRoute, link: LinkInfo, address: ipaddress.IPv4Interface) -> None:
    """Give the link this address; refuse if it already has a different one in the same subnet."""
    with kernel_step(f"list addresses of {link.name}"):
        current = ipv4_addresses(ipr, link.index)
    if address in current:
        return
    for other in current:
        if other.network.overlaps(address.network):
            raise CniPluginError(
                NETLINK_FAILURE, f"{link.name} already has address {other}, which conflicts with gateway {address}"
            )
    with kernel_step(f"add address {address} to {link.name}"):
        try:
            ipr.addr(
                "add",
                index=link.index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                broadcast=str(address.network.broadcast_address),
            )
        except Exception as exc:
            if not _is_errno(exc, errno.EEXIST):  # a concurrent ADD got there first
                raise


def create_veth(
    host: IPRoute, container: IPRoute, netns_fd: int, netns_path: str, ifname: str, mtu: int = 0
) -> tuple[LinkInfo, LinkInfo]:
    """A veth pair: a random ``vethXXXXXXXX`` end here, ``ifname`` created straight inside the netns."""
    extra = {"mtu": mtu} if mtu else {}
    for attempt in range(4):
        host_name = HOST_VETH_PREFIX + secrets.token_hex(4)
        try:
            with kernel_step(f"create veth {host_name} <-> {ifname} in {netns_path}"):
                host.link(
                    "add",
                    ifname=host_name,
                    kind="veth",
                    peer={"ifname": ifname, "net_ns_fd": netns_fd, **extra},
                    **extra,
                )
        except CniPluginError as exc:
            if not (isinstance(exc.__cause__, BaseException) and _is_errno(exc.__cause__, errno.EEXIST)):
                raise
            # EEXIST: either the container already has ifname (looked up only now: the common path
            # saves a round trip), or our random host name was taken: then try another.
            with kernel_step(f"look up {ifname} in {netns_path}"):
                if get_link(container, ifname) is not None:
                    raise CniPluginError(NETLINK_FAILURE, f"interface {ifname} already exists in netns {netns_path}") \
                        from None
            if attempt < 3:
                continue
            raise
        break
    with kernel_step(f"look up new veth {host_name}"):
        host_end = get_link(host, host_name)
    with kernel_step(f"look up new {ifname} in {netns_path}"):
        container_end = get_link(container, ifname)
    if host_end is None or container_end is None:
        raise CniPluginError(NETLINK_FAILURE, f"veth {host_name} <-> {ifname} in {netns_path} vanished after creation")
    return host_end, container_end


def attach_to_bridge(ipr: IPRoute, port: LinkInfo, bridge: LinkInfo, hairpin: bool) -> LinkInfo:
    """Enslave and set up in one request (the kernel applies IFLA_MASTER before the flags), then hairpin."""
    with kernel_step(f"attach {port.name} to bridge {bridge.name} and set it up"):
        ipr.link("set", index=port.index, master=bridge.index, state="up")
    if hairpin:
        # A pod reaching itself through a Service IP comes back out of the same port.
        with kernel_step(f"set hairpin mode on {port.name}"):
            ipr.brport("set", index=port.index, mode=1)
    return replace(port, master=bridge.index, up=True)


def hairpin_mode(ipr: IPRoute, port: LinkInfo) -> bool:
    msgs = ipr.brport("show", index=port.index)
    return bool(msgs and msgs[0].get_nested("IFLA_PROTINFO", "IFLA_BRPORT_MODE"))


def configure_container_interface(
    ipr: IPRoute,
    link: LinkInfo,
    address: ipaddress.IPv4Interface,
    routes: Sequence[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None]],
    where: str,
) -> None:
    """Address, up, routes on the container's interface; and lo up, as a pod expects."""
    with kernel_step(f"add address {address} to {link.name} in {where}"):
        ipr.addr(
            "add",
            index=link.index,
            address=str(address.ip),
            prefixlen=address.network.prefixlen,
            broadcast=str(address.network.broadcast_address),
        )
    with kernel_step(f"set {link.name} up in {where}"):
        ipr.link("set", index=link.index, state="up")
    for dst, gateway in routes:
        via = f" via {gateway}" if gateway else ""
        with kernel_step(f"add route {dst}{via} dev {link.name} in {where}"):
            try:
                if gateway is None:
                    ipr.route("add", dst=str(dst), oif=link.index)
                else:
                    ipr.route("add", dst=str(dst), gateway=str(gateway), oif=link.index)
            except Exception as exc:
                if not _is_errno(exc, errno.EEXIST):
                    raise
    with kernel_step(f"set lo up in {where}"):
        ipr.link("set", index=LOOPBACK_INDEX, state="up")  # a no-op when it is up already; cheaper than a get


def delete_link(ipr: IPRoute, name: str, where: str = "") -> bool:
    """Delete the link if it exists; False if it was already gone."""
    suffix = f" in {where}" if where else ""
    with kernel_step(f"delete {name}{suffix}"):
        try:
            ipr.link("del", ifname=name)
        except Exception as exc:
            if _is_errno(exc, errno.ENODEV):
                return False
            raise
    return True


def ipv4_routes(ipr: IPRoute) -> list[RouteInfo]:
    out = []
    for msg in ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE):
        dst = msg.get_attr("RTA_DST") or "0.0.0.0"
        gateway = msg.get_attr("RTA_GATEWAY")
        out.append(
            RouteInfo(
                dst=ipaddress.IPv4Network(f"{dst}/{msg['dst_len']}", strict=False),
                gateway=ipaddress.IPv4Address(gateway) if gateway else None,
                oif=int(msg.get_attr("RTA_OIF") or 0),
            )
        )
    return out

"""The lab's links and namespaces on the host, through iproute2's ``ip`` (JSON output to verify).

``ensure_*`` functions accept what already exists, check that it is what they would have
made (a bridge is a bridge, a veth's peer is the node's interface), repair or recreate it
otherwise, and can be re-run at any time. ``delete_*`` functions are idempotent.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from node_agent.lab.command import run, run_json
from node_agent.lab.layout import NODE_IFNAME, LabError

NETNS_DIR = Path("/run/netns")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def _ns(netns: str | None) -> list[str]:
    return ["ip", "-n", netns] if netns else ["ip"]


def link_info(name: str, netns: str | None = None) -> dict[str, Any] | None:
    """``ip -d link show NAME`` as a dict, or None if there is no such link."""
    proc = run([*_ns(netns), "-j", "-d", "link", "show", "dev", name], check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr or "Cannot find device" in proc.stderr:
            return None
        raise LabError(f"cannot inspect link {name}{f' in {netns}' if netns else ''}: {proc.stderr.strip()}")
    links = json.loads(proc.stdout) if proc.stdout.strip() else []
    return links[0] if links else None


def _kind(info: dict[str, Any]) -> str | None:
    return (info.get("linkinfo") or {}).get("info_kind")


def ipv4_addresses(name: str, netns: str | None = None) -> list[ipaddress.IPv4Interface]:
    data = run_json([*_ns(netns), "-j", "-4", "addr", "show", "dev", name])
    found = []
    for entry in data:
        for addr in entry.get("addr_info", []):
            if addr.get("family") == "inet":
                found.append(ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}"))
    return found


def host_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to (to avoid when choosing a subnet)."""
    nets: list[ipaddress.IPv4Network] = []
    for entry in run_json(["ip", "-j", "-4", "addr", "show"]):
        for addr in entry.get("addr_info", []):
            if addr.get("family") == "inet":
                nets.append(ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}").network)
    for route in run_json(["ip", "-j", "-4", "route", "show", "table", "all"]):
        dst = route.get("dst")
        if dst and dst != "default":
            try:
                nets.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                continue
    return nets


def _ensure_up(name: str, netns: str | None = None) -> None:
    run([*_ns(netns), "link", "set", "dev", name, "up"])


def _ensure_address(name: str, address: ipaddress.IPv4Interface, netns: str | None = None) -> None:
    if address not in ipv4_addresses(name, netns):
        run([*_ns(netns), "addr", "add", str(address), "dev", name])


# -- the lab bridge --------------------------------------------------------------------------


def ensure_bridge(name: str, address: ipaddress.IPv4Interface) -> None:
    """A bridge ``name`` with ``address`` on the host, up."""
    info = link_info(name)
    if info is None:
        run(["ip", "link", "add", "name", name, "type", "bridge"])
        info = link_info(name)
    if info is None or _kind(info) != "bridge":
        raise LabError(f"link {name} exists but is not a bridge (kind {_kind(info) if info else None}); "
                       "remove it or choose another lab name")
    _ensure_address(name, address)
    _ensure_up(name)


# -- node namespaces -------------------------------------------------------------------------


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def ensure_netns(name: str) -> None:
    if not netns_path(name).exists():
        run(["ip", "netns", "add", name])
    _ensure_up("lo", name)


def _veth_pair_ok(host_veth: str, netns: str, bridge: str) -> bool:
    """True if ``host_veth`` is a veth on ``bridge`` whose peer is the node interface inside ``netns``."""
    host = link_info(host_veth)
    inner = link_info(NODE_IFNAME, netns)
    if host is None or inner is None or _kind(host) != "veth" or _kind(inner) != "veth":
        return False
    if host.get("link_netnsid") is None or host.get("link_index") != inner.get("ifindex"):
        return False  # the host end pairs with some other interface
    return True


def ensure_node_netns(netns: str, host_veth: str, bridge: str, address: ipaddress.IPv4Interface,
                      gateway: ipaddress.IPv4Address) -> None:
    """Namespace ``netns`` with ``eth0`` = ``address``, wired by a veth to ``bridge``, default route via ``gateway``."""
    ensure_netns(netns)
    if not _veth_pair_ok(host_veth, netns, bridge):
        # Half a pair (or a stranger's link under our name) is replaced, never patched.
        delete_link(host_veth)
        if link_info(NODE_IFNAME, netns) is not None:
            run(["ip", "-n", netns, "link", "delete", "dev", NODE_IFNAME])
        run(["ip", "link", "add", "name", host_veth, "type", "veth", "peer", "name", NODE_IFNAME, "netns", netns])
    host = link_info(host_veth)
    if host is None or host.get("master") != bridge:
        run(["ip", "link", "set", "dev", host_veth, "master", bridge])
    _ensure_up(host_veth)
    _ensure_address(NODE_IFNAME, address, netns)
    _ensure_up(NODE_IFNAME, netns)
    run(["ip", "-n", netns, "route", "replace", "default", "via", str(gateway), "dev", NODE_IFNAME])
    # The node routes its pods' traffic: the agent's pod bridge lives in this namespace.
    set_sysctl(netns, "net.ipv4.ip_forward", "1")


def set_sysctl(netns: str, key: str, value: str) -> None:
    """Write a per-namespace sysctl from inside ``netns`` (``/proc/sys/net`` shows the opener's namespace)."""
    run(["nsenter", f"--net={netns_path(netns)}", "--", "sysctl", "-q", "-w", f"{key}={value}"])


def delete_netns(name: str) -> bool:
    """Remove a named namespace (its interfaces go with it once no process holds it). True if it existed."""
    if not netns_path(name).exists():
        return False
    proc = run(["ip", "netns", "delete", name], check=False)
    if proc.returncode != 0 and netns_path(name).exists():
        raise LabError(f"cannot delete network namespace {name}: {proc.stderr.strip()}")
    return True


def delete_link(name: str) -> bool:
    """Remove a host link if present. True if it existed."""
    if link_info(name) is None:
        return False
    proc = run(["ip", "link", "delete", "dev", name], check=False)
    if proc.returncode != 0 and link_info(name) is not None:
        raise LabError(f"cannot delete link {name}: {proc.stderr.strip()}")
    return True


def host_links() -> list[str]:
    return [entry["ifname"] for entry in run_json(["ip", "-j", "link", "show"]) if "ifname" in entry]

"""Pod routes on a real kernel, in network namespaces this test creates (root only).

Two "nodes" joined by a veth (their eth0s, 172.31.250.11 and .12/24), each with one "pod"
namespace behind a veth (node A's pods in 10.244.1.0/24, B's in 10.244.2.0/24). Both nodes
drop forwarded packets by default, as a host whose Docker owns iptables does. The pod
route controller runs against each node's namespace with routes computed from Node
objects; then pods ping each other and fetch a CGI that prints the client address the
server sees. Every namespace (and with it every link, route and rule) and every process is
removed in teardown, even when a test fails. Traffic stays between these namespaces.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import string
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cni.netlink import entered, open_netns
from node_agent.podnet.controller import PodRouteController
from node_agent.podnet.forward_rules import ensure_forward_accept
from node_agent.podnet.netlink import NetlinkRouteTable
from node_agent.podnet.routes import ROUTE_PROTOCOL
from node_agent.podnet.sysctls import FORWARDING_SYSCTLS, ensure_forwarding_sysctls, sysctl_path

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, iptables)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("ip", "iptables", "iptables-restore", "nsenter")),
                       reason="needs ip, iptables, iptables-restore and nsenter"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static (ping, httpd, wget)"),
]

NODE_NET = "172.31.250"
T = TypeVar("T")


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, input=stdin, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net=/run/netns/{ns}", "--", *argv, check=check)


def our_routes(ns: str) -> list[str]:
    routes = json.loads(sh("ip", "-n", ns, "-j", "route", "show", "proto", str(ROUTE_PROTOCOL)).stdout or "[]")
    return sorted(f"{r['dst']} via {r['gateway']} dev {r['dev']}" for r in routes)


def in_thread_of_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run fn on a thread inside the namespace (``/proc/sys/net`` follows the calling thread)."""
    box: dict[str, Any] = {}

    def work() -> None:
        fd = open_netns(f"/run/netns/{ns}")
        try:
            with entered(fd):
                box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            os.close(fd)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def node_obj(name: str, cidr: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


@dataclass
class Cluster:
    suffix: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ns(self, role: str) -> str:
        return f"skrt-{self.suffix}-{role}"

    def add_ns(self, role: str) -> str:
        name = self.ns(role)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def node_list(self) -> list[dict[str, Any]]:
        return list(self.nodes.values())

    def cleanup(self) -> None:
        for proc in self.processes:
            proc.kill()
            proc.wait(timeout=10)
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster("".join(random.choices(string.ascii_lowercase + string.digits, k=5)))
    try:
        a, b = c.add_ns("a"), c.add_ns("b")
        sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
        for ns, i in ((a, 1), (b, 2)):
            sh("ip", "-n", ns, "addr", "add", f"{NODE_NET}.{10 + i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            in_ns(ns, "iptables", "-w", "10", "-P", "FORWARD", "DROP")  # as Docker leaves a host
            pod = c.add_ns(f"p{i}")
            sh("ip", "-n", ns, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pod)
            sh("ip", "-n", ns, "addr", "add", f"10.244.{i}.1/24", "dev", "vpod")
            sh("ip", "-n", ns, "link", "set", "vpod", "up")
            sh("ip", "-n", pod, "addr", "add", f"10.244.{i}.2/24", "dev", "eth0")
            sh("ip", "-n", pod, "link", "set", "eth0", "up")
            sh("ip", "-n", pod, "route", "add", "default", "via", f"10.244.{i}.1")
            c.nodes[f"node-{i}"] = node_obj(f"node-{i}", f"10.244.{i}.0/24", f"{NODE_NET}.{10 + i}")
        www = tmp_path / "www"
        (www / "cgi-bin").mkdir(parents=True)
        (www / "cgi-bin" / "ip").write_text('#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n')
        (www / "cgi-bin" / "ip").chmod(0o755)
        c.processes.append(subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{c.ns('p2')}", "--", "/bin/busybox", "httpd", "-f", "-p", "8080",
             "-h", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield c
    finally:
        c.cleanup()


async def sync(cluster: Cluster, role: str, index: int) -> list[str]:
    table = NetlinkRouteTable(f"/run/netns/{cluster.ns(role)}")
    try:
        controller = PodRouteController(table, cluster.node_list, f"node-{index}", f"10.244.{index}.0/24")
        result = await controller.sync_once()
        assert result.ok, result.errors
        return [str(op) for op in result.applied]
    finally:
        table.close()


def prepare_forwarding(ns: str) -> None:
    """What the agent does at start in its node's namespace: sysctls and the FORWARD accept chain."""
    report = in_thread_of_netns(ns, ensure_forwarding_sysctls)
    assert "net.ipv4.ip_forward=1" in report.changed and report.failed == {}
    ensure_forward_accept("10.244.0.0/16", prefix=["nsenter", f"--net=/run/netns/{ns}", "--"])


def ping(ns: str, address: str, deadline: float = 20.0) -> bool:
    end = time.monotonic() + deadline
    while True:
        if in_ns(ns, "/bin/busybox", "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0:
            return True
        if time.monotonic() > end:
            return False


def fetch(ns: str, url: str, deadline: float = 20.0) -> str:
    """busybox wget, retried until the deadline (its -T flag crashes Debian 12's busybox-static 1.35)."""
    end = time.monotonic() + deadline
    while True:
        try:
            proc = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "--", "/bin/busybox", "wget", "-q", "-O-", url],
                                  capture_output=True, text=True, timeout=10, check=False)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess([], -1, "", "timed out after 10s")
        if proc.returncode == 0:
            return proc.stdout.strip()
        if time.monotonic() > end:
            raise AssertionError(f"wget {url} from {ns} failed ({proc.returncode}): {proc.stderr.strip()}")


def client_address(remote_addr: str) -> str:
    """httpd's REMOTE_ADDR of an IPv4 client on its dual-stack socket: [::ffff:10.244.1.2] -> 10.244.1.2."""
    return remote_addr.strip("[]").removeprefix("::ffff:")


async def test_routes_from_node_objects_carry_pod_traffic_between_nodes(cluster: Cluster) -> None:
    a, b = cluster.ns("a"), cluster.ns("b")
    host_values = {key: sysctl_path(key).read_text() for key in FORWARDING_SYSCTLS}
    for ns in (a, b):
        in_ns(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")  # per namespace on every kernel
        prepare_forwarding(ns)
        assert in_thread_of_netns(ns, lambda: [sysctl_path(k).read_text().strip() for k in FORWARDING_SYSCTLS]) \
            == ["1", "1"]
    assert {key: sysctl_path(key).read_text() for key in FORWARDING_SYSCTLS} == host_values  # per namespace
    assert in_ns(a, "iptables", "-S", "FORWARD").stdout.splitlines()[:2] == [
        "-P FORWARD DROP", '-A FORWARD -m comment --comment "skiff pod network" -j SKIFF-PODNET']

    started = time.monotonic()
    assert await sync(cluster, "a", 1) == [f"add 10.244.2.0/24 via {NODE_NET}.12 dev #2 (node node-2)"]
    assert await sync(cluster, "b", 2) == [f"add 10.244.1.0/24 via {NODE_NET}.11 dev #2 (node node-1)"]
    took = time.monotonic() - started
    assert our_routes(a) == [f"10.244.2.0/24 via {NODE_NET}.12 dev eth0"]
    assert our_routes(b) == [f"10.244.1.0/24 via {NODE_NET}.11 dev eth0"]
    assert took < 10

    assert ping(cluster.ns("p1"), "10.244.2.2")
    assert ping(cluster.ns("p2"), "10.244.1.2")
    # the server sees the client pod's own address: routed, not masqueraded
    assert client_address(fetch(cluster.ns("p1"), "http://10.244.2.2:8080/cgi-bin/ip")) == "10.244.1.2"

    # a second sync (a restarted agent: a new socket, a new controller) changes nothing
    assert await sync(cluster, "a", 1) == []


async def test_a_restarted_agent_reconciles_exactly_its_own_routes(cluster: Cluster) -> None:
    a = cluster.ns("a")
    gw = f"{NODE_NET}.12"
    sh("ip", "-n", a, "route", "add", "10.244.8.0/24", "via", gw, "proto", str(ROUTE_PROTOCOL))  # left by us
    sh("ip", "-n", a, "route", "add", "10.244.9.0/24", "via", gw, "proto", "static")  # somebody else's
    sh("ip", "-n", a, "route", "add", "10.244.3.0/24", "via", gw, "proto", "static")  # in the way of node-3's
    cluster.nodes["node-3"] = node_obj("node-3", "10.244.3.0/24", f"{NODE_NET}.13")
    cluster.nodes["far"] = node_obj("far", "10.244.4.0/24", "192.0.2.44")  # not on a connected subnet
    before = sh("ip", "-n", a, "route", "show", "proto", "static").stdout

    assert await sync(cluster, "a", 1) == [f"delete 10.244.8.0/24 via {gw} dev #2",
                                           f"add 10.244.2.0/24 via {gw} dev #2 (node node-2)"]
    assert our_routes(a) == [f"10.244.2.0/24 via {gw} dev eth0"]
    assert sh("ip", "-n", a, "route", "show", "proto", "static").stdout == before

    # node-2 moves to another address, then goes away
    cluster.nodes["node-2"] = node_obj("node-2", "10.244.2.0/24", f"{NODE_NET}.22")
    assert await sync(cluster, "a", 1) == [f"replace 10.244.2.0/24 via {NODE_NET}.22 dev #2 (node node-2)"]
    assert our_routes(a) == [f"10.244.2.0/24 via {NODE_NET}.22 dev eth0"]
    del cluster.nodes["node-2"]
    assert await sync(cluster, "a", 1) == [f"delete 10.244.2.0/24 via {NODE_NET}.22 dev #2"]
    assert our_routes(a) == []
    assert sh("ip", "-n", a, "route", "show", "proto", "static").stdout == before


def test_forward_accept_is_idempotent(cluster: Cluster) -> None:
    a = cluster.ns("a")
    prefix = ["nsenter", f"--net=/run/netns/{a}", "--"]
    assert ensure_forward_accept("10.244.0.0/16", prefix=prefix) != []
    before = in_ns(a, "iptables-save", "-t", "filter").stdout
    for _ in range(3):
        assert ensure_forward_accept("10.244.0.0/16", prefix=prefix) == []
    after = in_ns(a, "iptables-save", "-t", "filter").stdout
    strip = [line for line in before.splitlines() if not line.startswith("#")]
    assert [line for line in after.splitlines() if not line.startswith("#")] == strip
    assert in_ns(a, "iptables", "-S", "SKIFF-PODNET").stdout.splitlines() == [
        "-N SKIFF-PODNET",
        '-A SKIFF-PODNET -s 10.244.0.0/16 -m comment --comment "skiff pod network" -j ACCEPT',
        '-A SKIFF-PODNET -d 10.244.0.0/16 -m comment --comment "skiff pod network" -j ACCEPT']

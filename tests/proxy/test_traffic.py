"""Real packets through the rendered rules, between namespaces this module makes.

    pod client P 10.244.1.10 ─┐
    backend   B1 10.244.1.11 ─┼─ br0 10.244.1.1 ┐ node N (the rules, ip_forward,
    backend   B2 10.244.1.12 ─┘                 │  bridge-nf-call-iptables)
    outside   X  10.251.0.2  ──── up0 10.251.0.1 ┘

Each backend runs ``busybox httpd`` answering its own name (TCP 8080) and a tiny UDP
echo answering its name (5353). The proxy's rules are applied inside N by the real
applier; clients connect from P (a pod), from N itself, and from X (outside, NodePort).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.proxy.conntrack import Conntrack
from node_agent.proxy.iptables_exec import IptablesExec
from node_agent.proxy.proxier import Proxier, Snapshot
from node_agent.proxy.settings import ProxySettings
from tests.proxy.netns import NEEDS_ROOT, NEEDS_TOOLS, Netns, NetnsFactory, netns_factory
from tests.proxy.test_render import ep, eps, svc

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
pytestmark = [
    NEEDS_ROOT, NEEDS_TOOLS,
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox (busybox-static) for the backends"),
    pytest.mark.skipif(not os.path.exists("/proc/sys/net/bridge"),
                       reason="needs br_netfilter (pod-to-pod service traffic on one bridge goes through iptables)"),
    pytest.mark.skipif(shutil.which("conntrack") is None, reason="needs the conntrack CLI"),
]

BACKENDS = {"b1": "10.244.1.11", "b2": "10.244.1.12"}
POD_CLIENT = "10.244.1.10"
NODE_IP = "10.251.0.1"

# Run inside a client namespace: N new TCP connections (or UDP datagrams from one socket),
# printing a JSON list of who answered, or the errno name of each failure.
CLIENT = r"""
import json, socket, sys, time
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = []
if mode == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 40000))
    s.settimeout(2)
for _ in range(n):
    started = time.monotonic()
    try:
        if mode == "tcp":
            with socket.create_connection((host, port), timeout=5) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := c.recv(4096):
                    data += chunk
            out.append(data.decode().strip().splitlines()[-1])
        else:
            s.sendto(b"who", (host, port))
            out.append(s.recvfrom(100)[0].decode())
    except OSError as exc:
        out.append(f"{type(exc).__name__} after {time.monotonic() - started:.2f}s")
print(json.dumps(out))
"""

UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    _, peer = s.recvfrom(100)
    s.sendto(sys.argv[1].encode(), peer)
"""


class Topology:
    def __init__(self, factory: NetnsFactory, webroot: Path) -> None:
        self.factory = factory
        self.node = factory.make("n")
        self.pod = factory.make("p")
        self.outside = factory.make("x")
        self.backends = {name: factory.make(name) for name in BACKENDS}
        n = self.node
        n.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        n.run("ip", "link", "add", "br0", "type", "bridge")
        n.run("ip", "addr", "add", "10.244.1.1/24", "dev", "br0")
        n.run("ip", "link", "set", "br0", "up")
        n.run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
        for i, (ns, ip) in enumerate([(self.pod, POD_CLIENT), *((self.backends[b], BACKENDS[b]) for b in BACKENDS)]):
            n.run("ip", "link", "add", f"vp{i}", "type", "veth", "peer", "name", "eth0", "netns", ns.name)
            n.run("ip", "link", "set", f"vp{i}", "master", "br0", "up")
            ns.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            ns.run("ip", "link", "set", "eth0", "up")
            ns.run("ip", "route", "add", "default", "via", "10.244.1.1")
        n.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", self.outside.name)
        n.run("ip", "addr", "add", f"{NODE_IP}/24", "dev", "up0")
        n.run("ip", "link", "set", "up0", "up")
        self.outside.run("ip", "addr", "add", "10.251.0.2/24", "dev", "eth0")
        self.outside.run("ip", "link", "set", "eth0", "up")
        self.outside.run("ip", "route", "add", "default", "via", NODE_IP)
        n.run("ip", "route", "add", "default", "via", "10.251.0.2")  # like a real node: rejected VIPs are routable
        for name, ns in self.backends.items():
            root = webroot / name
            root.mkdir()
            (root / "index.html").write_text(f"{name}\n")
            factory.start(ns, BUSYBOX, "httpd", "-f", "-p", "8080", "-h", str(root))
            factory.start(ns, sys.executable, "-c", UDP_ECHO, name)
        for ip in BACKENDS.values():
            self.wait_listening(ip)

    def wait_listening(self, ip: str, timeout: float = 60.0) -> None:
        name = next(b for b, a in BACKENDS.items() if a == ip)
        deadline = time.monotonic() + timeout
        for mode, port in (("tcp", 8080), ("udp", 5353)):
            while self.request(self.node, mode, ip, port, 1) != [name]:
                if time.monotonic() > deadline:
                    raise AssertionError(f"backend {ip}:{port}/{mode} is not answering")

    def request(self, ns: Netns, mode: str, host: str, port: int, n: int) -> list[str]:
        proc = ns.run(sys.executable, "-c", CLIENT, mode, host, str(port), str(n), timeout=120)
        return list(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with netns_factory() as factory, tempfile.TemporaryDirectory(prefix="pxweb") as webroot:
        yield Topology(factory, Path(webroot))


@pytest.fixture
def proxier(topo: Topology) -> Iterator[Proxier]:
    p = Proxier(None, ProxySettings(node_name="node-a"), ipt=IptablesExec(netns=topo.node.path),
                conntrack=Conntrack(netns=topo.node.path))
    try:
        yield p
    finally:
        p.cleanup()
        topo.node.run("conntrack", "-F", check=False)


def backend_eps(*names: str, node: str = "node-a") -> list[Any]:
    return [ep(BACKENDS[name], node=node) for name in names]


def services() -> tuple[list[Any], list[Any]]:
    tcp = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]
    return ([svc("web", "10.96.0.10", tcp, type_="NodePort"),
             svc("sticky", "10.96.0.12", [{"name": "http", "port": 80, "protocol": "TCP"}],
                 sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}}),
             svc("empty", "10.96.0.13", [{"name": "http", "port": 80, "protocol": "TCP"}]),
             svc("dns", "10.96.0.53", [{"name": "dns", "port": 53, "protocol": "UDP"}])],
            [eps("web", [{"name": "http", "port": 8080, "protocol": "TCP"}], backend_eps("b1", "b2")),
             eps("sticky", [{"name": "http", "port": 8080, "protocol": "TCP"}], backend_eps("b1", "b2")),
             eps("empty", [{"name": "http", "port": 8080, "protocol": "TCP"}], []),
             eps("dns", [{"name": "dns", "port": 5353, "protocol": "UDP"}], backend_eps("b1", "b2"))])


def snapshot(services_: list[Any], slices: list[Any]) -> Snapshot:
    return {f"default/{s['metadata']['name']}": (s, [sl for sl in slices if sl["metadata"]["labels"][
        "kubernetes.io/service-name"] == s["metadata"]["name"]]) for s in services_}


def test_cluster_ip_reaches_both_backends_from_a_pod_and_from_the_node(topo: Topology, proxier: Proxier) -> None:
    proxier.sync_blocking(snapshot(*services()), full=True)
    from_pod = topo.request(topo.pod, "tcp", "10.96.0.10", 80, 40)
    assert set(from_pod) == {"b1", "b2"}, from_pod
    from_node = topo.request(topo.node, "tcp", "10.96.0.10", 80, 40)
    assert set(from_node) == {"b1", "b2"}, from_node


def test_node_port_answers_from_outside_the_node(topo: Topology, proxier: Proxier) -> None:
    proxier.sync_blocking(snapshot(*services()), full=True)
    answers = topo.request(topo.outside, "tcp", NODE_IP, 30080, 40)
    assert set(answers) == {"b1", "b2"}, answers
    # the ClusterIP from outside the cluster works too (masqueraded: the backend replies to the node)
    assert set(topo.request(topo.outside, "tcp", "10.96.0.10", 80, 20)) <= {"b1", "b2"}


def test_a_service_without_endpoints_refuses_at_once(topo: Topology, proxier: Proxier) -> None:
    proxier.sync_blocking(snapshot(*services()), full=True)
    for ns in (topo.pod, topo.node):
        answers = topo.request(ns, "tcp", "10.96.0.13", 80, 3)
        for answer in answers:
            kind, _, took = answer.partition(" after ")
            assert kind == "ConnectionRefusedError", answers
            assert float(took.rstrip("s")) < 2.0, answers  # REJECT answers at once; a timeout would take 5 s


def test_session_affinity_pins_a_client_to_one_backend(topo: Topology, proxier: Proxier) -> None:
    proxier.sync_blocking(snapshot(*services()), full=True)
    answers = topo.request(topo.pod, "tcp", "10.96.0.12", 80, 30)
    assert len(set(answers)) == 1 and answers[0] in BACKENDS, answers


def test_only_ready_endpoints_receive_traffic(topo: Topology, proxier: Proxier) -> None:
    svcs, slices = services()
    slices[0] = eps("web", [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    [ep(BACKENDS["b1"], node="node-a"), ep(BACKENDS["b2"], node="node-a", ready=False)])
    proxier.sync_blocking(snapshot(svcs, slices), full=True)
    assert set(topo.request(topo.pod, "tcp", "10.96.0.10", 80, 30)) == {"b1"}


def test_udp_flows_to_a_removed_endpoint_are_cleared(topo: Topology, proxier: Proxier) -> None:
    svcs, slices = services()
    proxier.sync_blocking(snapshot(svcs, slices), full=True)
    first = topo.request(topo.pod, "udp", "10.96.0.53", 53, 5)
    assert len(set(first)) == 1 and first[0] in BACKENDS, first  # one flow: one backend
    pinned = first[0]
    keep = "b2" if pinned == "b1" else "b1"
    slices[3] = eps("dns", [{"name": "dns", "port": 5353, "protocol": "UDP"}], backend_eps(keep))
    stats = proxier.sync_blocking(snapshot(svcs[3:], slices[3:]), full=False)
    assert stats.conntrack_deleted >= 1
    flows = topo.node.run("conntrack", "-L", "-p", "udp", "--orig-dst", "10.96.0.53", check=False).stdout
    assert BACKENDS[pinned] not in flows, flows
    after = topo.request(topo.pod, "udp", "10.96.0.53", 53, 5)
    assert set(after) == {keep}, after


def test_the_rules_are_applied_where_asked_and_nowhere_else(topo: Topology, proxier: Proxier) -> None:
    proxier.sync_blocking(snapshot(*services()), full=True)
    assert "KUBE-SERVICES" in topo.node.save()
    assert "KUBE-" not in topo.pod.save()

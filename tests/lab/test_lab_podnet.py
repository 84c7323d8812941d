"""Issue 5, part 2, in a real three-node lab: pods on different nodes reach each other by pod IP.

Each agent routes every other node's pod CIDR via that node's address (host-gw) in its
node's namespace, with routes of protocol 250. The tests read what is real: the routes
and iptables rules inside each node namespace (``ip -n``, ``nsenter``), and HTTP between
pods through ``kubectl-1.35 exec``. A CGI on each pod's httpd prints the client address it
sees: the other pod's own IP, since traffic between pod CIDRs is routed, not masqueraded.

A Node object created by the test (an address on the lab subnet where nothing answers:
no packet is sent to it) measures how fast a joining node's route appears on every node,
follows an address change, and goes away with the Node.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from node_agent.podnet.forward_rules import CHAIN
from node_agent.podnet.routes import ROUTE_PROTOCOL

from .labutil import (
    KUBECTL_SKIP,
    LAB_SKIPS,
    Kubectl,
    Lab,
    api_delete,
    api_get,
    api_write,
    kubectls,
    running_lab,
    wait_until,
)

pytestmark = [*LAB_SKIPS, KUBECTL_SKIP]

NODES = 3
RUN_TIMEOUT = 90.0  # pods Running
ROUTE_TIMEOUT = 30.0  # a route following a Node change (the agents resync every 10 s at the latest)
FETCH_TIMEOUT = 60.0
# A file and a CGI that prints the client address httpd sees, then httpd in the foreground.
HTTPD_SCRIPT = """mkdir -p /www/cgi-bin
cat > /www/cgi-bin/ip <<'EOF'
#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "$REMOTE_ADDR"
EOF
chmod 755 /www/cgi-bin/ip
hostname > /www/index.html
exec httpd -f -p 8080 -h /www
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("n", NODES) as lab:
        yield lab


@pytest.fixture(scope="module")
def kubectl(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return kubectls(lab, tmp_path_factory.mktemp("kubectl"))["1.35"]


def netns(lab: Lab, i: int) -> str:
    return f"skiff-{lab.name}-{i}"


def nsenter(lab: Lab, i: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns(lab, i)}", "--", *argv], capture_output=True,
                          text=True, timeout=30, check=False)


def our_routes(lab: Lab, i: int) -> set[str]:
    proc = nsenter(lab, i, "ip", "-j", "route", "show", "proto", str(ROUTE_PROTOCOL))
    assert proc.returncode == 0, proc.stderr
    return {f"{r['dst']} via {r['gateway']} dev {r['dev']}" for r in json.loads(proc.stdout or "[]")}


def node_ips(lab: Lab) -> dict[int, str]:
    out = {}
    for i in range(1, NODES + 1):
        node = api_get(lab.api(), f"/api/v1/nodes/{lab.node_name(i)}")
        assert node is not None
        out[i] = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    return out


def expected_routes(lab: Lab, i: int, ips: dict[int, str]) -> set[str]:
    return {f"10.244.{j}.0/24 via {ips[j]} dev eth0" for j in range(1, NODES + 1) if j != i}


def wait_for_routes(lab: Lab, i: int, want: set[str]) -> None:
    wait_until(lambda: our_routes(lab, i) == want, ROUTE_TIMEOUT,
               lambda: f"node {i}: routes {our_routes(lab, i)}, want {want}\n{lab.agent_log(i)}")


def test_every_node_routes_the_other_nodes_pod_cidrs(lab: Lab) -> None:
    ips = node_ips(lab)
    for i in range(1, NODES + 1):
        wait_for_routes(lab, i, expected_routes(lab, i, ips))


def chain_rules(lab: Lab, i: int) -> list[str]:
    return nsenter(lab, i, "iptables", "-w", "10", "-S", CHAIN).stdout.splitlines()


def test_every_node_forwards_and_accepts_pod_traffic(lab: Lab) -> None:
    for i in range(1, NODES + 1):
        sysctls = nsenter(lab, i, "sysctl", "-n", "net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables",
                          "net.ipv4.conf.all.route_localnet")
        assert sysctls.stdout.split() == ["1", "1", "0"], sysctls.stderr
        assert chain_rules(lab, i) == [
            f"-N {CHAIN}",
            f'-A {CHAIN} -s 10.244.0.0/16 -m comment --comment "skiff pod network" -j ACCEPT',
            f'-A {CHAIN} -d 10.244.0.0/16 -m comment --comment "skiff pod network" -j ACCEPT']
        forward = nsenter(lab, i, "iptables", "-w", "10", "-S", "FORWARD").stdout.splitlines()
        assert forward.count(f'-A FORWARD -m comment --comment "skiff pod network" -j {CHAIN}') == 1


def httpd_pod(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": "podnet"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "httpd", "image": "skiff/app:1.0", "imagePullPolicy": "Never",
                                     "command": ["sh", "-c", HTTPD_SCRIPT],
                                     "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}


def client_address(remote_addr: str) -> str:
    """httpd's REMOTE_ADDR of an IPv4 client on its dual-stack socket: [::ffff:10.244.1.2] -> 10.244.1.2."""
    return remote_addr.strip().strip("[]").removeprefix("::ffff:")


def exec_wget(kubectl: Kubectl, pod: str, url: str) -> str:
    """wget inside the pod through the agent's exec API, retried until it answers."""
    last: list[str] = []

    def attempt() -> str | None:
        # busybox wget's -T crashes Debian 12's busybox-static: kubectl's own timeout bounds each attempt.
        try:
            proc = kubectl.run("exec", pod, "--", "wget", "-q", "-O-", url, check=False, timeout=20)
        except subprocess.TimeoutExpired:
            last[:] = ["timed out after 20s"]
            return None
        last[:] = [f"exit {proc.returncode}: {proc.stderr.strip()}"]
        return proc.stdout if proc.returncode == 0 else None

    return wait_until(attempt, FETCH_TIMEOUT, lambda: f"wget {url} in {pod}: {last}")


def test_pods_on_different_nodes_reach_each_other_by_pod_ip(lab: Lab, kubectl: Kubectl) -> None:
    api = lab.api()
    names = {i: f"web-{i}" for i in range(1, NODES + 1)}
    for i, name in names.items():
        api_write(api, "POST", "/api/v1/namespaces/default/pods", httpd_pod(name, lab.node_name(i)))

    def running() -> dict[int, str] | None:
        ips = {}
        for i, name in names.items():
            pod = api_get(api, f"/api/v1/namespaces/default/pods/{name}") or {}
            status = pod.get("status") or {}
            if status.get("phase") != "Running" or not status.get("podIP"):
                return None
            ips[i] = str(status["podIP"])
        return ips

    pod_ips = wait_until(running, RUN_TIMEOUT, lambda: f"pods not Running; agent log:\n{lab.agent_log(1)}")
    for i, ip in pod_ips.items():
        assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(f"10.244.{i}.0/24")

    started = time.monotonic()
    for i, client in names.items():
        for j, server in names.items():
            if i == j:
                continue
            assert exec_wget(kubectl, client, f"http://{pod_ips[j]}:8080/").strip() == server
            seen = client_address(exec_wget(kubectl, client, f"http://{pod_ips[j]}:8080/cgi-bin/ip"))
            assert seen == pod_ips[i], f"{server} saw {client}'s request come from {seen}, not {pod_ips[i]}"
    print(f"[podnet] 6 cross-node pod pairs, 12 requests through kubectl exec: {time.monotonic() - started:.1f}s")


def test_a_joining_node_gets_routes_that_follow_it_and_go_with_it(lab: Lab) -> None:
    api = lab.api()
    ips = node_ips(lab)
    subnet = ipaddress.IPv4Interface(f"{ips[1]}/24").network
    ghost, ghost_ip, moved_ip = f"{lab.name}-ghost", str(subnet.network_address + 77), str(subnet.network_address + 78)
    cidr = "10.244.77.0/24"

    def node_obj(ip: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": ghost},
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": ghost}]}}

    def everywhere(route: str | None) -> bool:
        for i in range(1, NODES + 1):
            routes = {r for r in our_routes(lab, i) if r.startswith(cidr)}
            if routes != ({route} if route else set()):
                return False
        return True

    def timed(what: str, route: str | None) -> float:
        start = time.monotonic()
        wait_until(lambda: everywhere(route), ROUTE_TIMEOUT,
                   lambda: f"{what}: routes {[our_routes(lab, i) for i in range(1, NODES + 1)]}", poll=0.05)
        took = time.monotonic() - start
        print(f"[podnet] {what}: on all {NODES} nodes after {took * 1000:.0f} ms")
        return took

    try:
        api_write(api, "POST", "/api/v1/nodes", node_obj(ghost_ip))
        joined = timed("node joins", f"{cidr} via {ghost_ip} dev eth0")
        current = api_get(api, f"/api/v1/nodes/{ghost}")
        assert current is not None
        current["status"]["addresses"][0]["address"] = moved_ip
        api_write(api, "PUT", f"/api/v1/nodes/{ghost}/status", current)
        moved = timed("node's InternalIP changes", f"{cidr} via {moved_ip} dev eth0")
        api_delete(api, f"/api/v1/nodes/{ghost}")
        gone = timed("node deleted", None)
    finally:
        api_delete(api, f"/api/v1/nodes/{ghost}")
    # Event-driven, not the 10 s resync: well under it even on a busy machine.
    assert max(joined, moved, gone) < 8, (joined, moved, gone)
    for i in range(1, NODES + 1):  # the real nodes' routes never moved
        assert our_routes(lab, i) == expected_routes(lab, i, ips)


def test_lab_masquerade_spares_pod_to_pod_traffic(lab: Lab) -> None:
    """The node's masquerade rule excludes the pod supernet, and the host's lab chain accepts node-to-node frames."""
    rules = nsenter(lab, 1, "iptables", "-w", "10", "-t", "nat", "-S", "POSTROUTING").stdout
    masq = [line for line in rules.splitlines() if "MASQUERADE" in line and "skiff lab" in line]
    assert masq == ['-A POSTROUTING -s 10.244.1.0/24 ! -d 10.244.0.0/16 -o eth0 -m comment --comment "skiff lab" '
                    '-j MASQUERADE'], rules
    chain = f"SKIFF-LAB-{lab.name.upper()}"
    host = subprocess.run(["iptables", "-w", "10", "-S", chain], capture_output=True, text=True, check=True).stdout
    assert f'-A {chain} -i skiff-{lab.name} -o skiff-{lab.name} -m comment --comment "skiff lab" -j ACCEPT' in \
        host.splitlines()

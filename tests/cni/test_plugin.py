"""skiff-bridge as a runtime sees it: a program run with CNI_* env and a config on stdin.

Every call runs ``python -m cni.plugin`` inside the test's node namespace (nsenter),
against container namespaces the test created, and checks what the spec promises:
the result's shape, the interfaces, addresses and routes in both namespaces, the
IPAM files, and the error results.
"""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cni_testlib import Namespaces, Node, host_veths, ip_json, ipv4_addresses, links, netns_path, ping

from cni.config import IPRange, parse_netconf
from cni.ipam import HostLocalStore

SUBNET = "10.244.7.0/24"
GATEWAY = "10.244.7.1"
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def netconf(node: Node, subnet: str = SUBNET, version: str = "1.0.0", **overrides: Any) -> dict[str, Any]:
    net = ipaddress.ip_network(subnet)
    conf: dict[str, Any] = {
        "cniVersion": version,
        "name": "skiff",
        "type": "skiff-bridge",
        "bridge": node.bridge,
        "isGateway": True,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet, "gateway": str(net.network_address + 1)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(node.data_dir),
        },
    }
    conf.update(overrides)
    return conf


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def plugin_env(command: str, container_id: str = "", netns: str = "", ifname: str = "eth0") -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
                "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=test", "CNI_PATH": "/usr/lib/cni"})
    return env


def plugin_cmd(node: Node) -> list[str]:
    return ["nsenter", f"--net={node.path}", sys.executable, "-m", "cni.plugin"]


def run_plugin(node: Node, command: str, conf: dict[str, Any] | bytes | None, container_id: str = "",
               netns: str = "", ifname: str = "eth0", env: dict[str, str] | None = None) -> Run:
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode() if conf is not None else b""
    done = subprocess.run(plugin_cmd(node), input=data, capture_output=True, timeout=60,
                          env=env or plugin_env(command, container_id, netns, ifname))
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def add(node: Node, conf: dict[str, Any], container_id: str, netns: str, ifname: str = "eth0") -> dict[str, Any]:
    run = run_plugin(node, "ADD", conf, container_id, netns_path(netns), ifname)
    assert run.rc == 0, run
    return run.json  # type: ignore[no-any-return]


def with_prev(conf: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {**conf, "prevResult": result}


def ip_files(node: Node) -> dict[str, str]:
    directory = node.data_dir / "skiff"
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes().decode() for p in directory.iterdir() if re.match(r"^\d+\.\d+\.\d+\.\d+$", p.name)}


def assert_error(run: Run, code: int, *fragments: str) -> dict[str, Any]:
    assert run.rc == 1, run
    reply = run.json
    assert set(reply) == {"cniVersion", "code", "msg", "details"}, reply
    assert reply["code"] == code, reply
    for fragment in fragments:
        assert fragment in reply["details"], reply
    return reply  # type: ignore[no-any-return]


# -- ADD --------------------------------------------------------------------------------


def test_add_returns_spec_result_and_wires_the_container(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    result = add(node, netconf(node), "pod-a", pod)

    assert result["cniVersion"] == "1.0.0"
    assert set(result) == {"cniVersion", "interfaces", "ips", "routes", "dns"}
    bridge, host_end, container_end = result["interfaces"]
    assert bridge["name"] == node.bridge and "sandbox" not in bridge
    assert host_end["name"].startswith("veth") and "sandbox" not in host_end
    assert container_end == {"name": "eth0", "mac": container_end["mac"], "sandbox": netns_path(pod)}
    assert all(MAC.match(i["mac"]) for i in result["interfaces"])
    assert result["ips"] == [{"address": "10.244.7.2/24", "gateway": GATEWAY, "interface": 2}]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}]
    assert result["dns"] == {}

    # Inside the container: eth0 with the address, up, default route via the gateway; lo up.
    inside = links(pod)
    assert inside["eth0"]["address"] == container_end["mac"]
    assert "UP" in inside["eth0"]["flags"] and "UP" in inside["lo"]["flags"]
    assert ipv4_addresses(pod, "eth0") == ["10.244.7.2/24"]
    default = [r for r in ip_json(pod, "-4", "route", "show") if r["dst"] == "default"]
    assert default == [{"dst": "default", "gateway": GATEWAY, "dev": "eth0", "protocol": "static", "flags": []}]

    # On the node: the bridge has the gateway address; the host end is its port, hairpin on.
    outside = links(node.ns)
    assert outside[node.bridge]["linkinfo"]["info_kind"] == "bridge"
    assert outside[node.bridge]["address"] == bridge["mac"]
    assert ipv4_addresses(node.ns, node.bridge) == [f"{GATEWAY}/24"]
    port = outside[host_end["name"]]
    assert port["master"] == node.bridge and "UP" in port["flags"]
    assert port["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert ip_files(node) == {"10.244.7.2": "pod-a\r\neth0"}


def test_add_legacy_version_result_has_ip_version(node: Node, namespaces: Namespaces) -> None:
    result = add(node, netconf(node, version="0.4.0"), "pod-old", namespaces.new("skcc"))
    assert result["cniVersion"] == "0.4.0"
    assert result["ips"] == [{"version": "4", "address": "10.244.7.2/24", "gateway": GATEWAY, "interface": 2}]


def test_two_containers_on_the_bridge_reach_each_other(node: Node, namespaces: Namespaces) -> None:
    a, b = namespaces.new("skcc"), namespaces.new("skcc")
    ip_a = add(node, netconf(node), "pod-a", a)["ips"][0]["address"].split("/")[0]
    ip_b = add(node, netconf(node), "pod-b", b)["ips"][0]["address"].split("/")[0]
    assert (ip_a, ip_b) == ("10.244.7.2", "10.244.7.3")
    assert ping(a, ip_b), f"{a} cannot reach {ip_b}"
    assert ping(b, ip_a), f"{b} cannot reach {ip_a}"
    assert ping(a, GATEWAY), "the pod cannot reach its gateway on the bridge"


def test_add_into_missing_netns_is_unknown_container(node: Node) -> None:
    run = run_plugin(node, "ADD", netconf(node), "pod-x", "/run/netns/skcc-doesnotexist")
    assert_error(run, 3, "pod-x", "/run/netns/skcc-doesnotexist")
    assert ip_files(node) == {} and host_veths(node) == []


def test_add_with_bad_config_is_code_7_and_leaves_nothing(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    conf = netconf(node)
    conf["ipam"]["ranges"][0][0]["subnet"] = "10.244.300.0/24"
    reply = assert_error(run_plugin(node, "ADD", conf, "pod-a", netns_path(pod)), 7, "10.244.300.0/24")
    assert reply["cniVersion"] == "1.0.0"
    assert node.bridge not in links(node.ns) and host_veths(node) == [] and ip_files(node) == {}
    assert set(links(pod)) == {"lo"}

    assert_error(run_plugin(node, "ADD", b"{not json", "pod-a", netns_path(pod)), 6)
    assert_error(run_plugin(node, "ADD", netconf(node, version="0.2.0"), "pod-a", netns_path(pod)), 1, "0.2.0")
    assert_error(run_plugin(node, "ADD", netconf(node, ipMasq=True), "pod-a", netns_path(pod)), 2, "ipMasq")
    assert_error(run_plugin(node, "ADD", netconf(node, mtu="big"), "pod-a", netns_path(pod)), 7, "mtu")


def test_bad_environment_is_code_4(node: Node, namespaces: Namespaces) -> None:
    pod = netns_path(namespaces.new("skcc"))
    assert_error(run_plugin(node, "ADD", netconf(node), "", pod), 4, "CNI_CONTAINERID")
    assert_error(run_plugin(node, "ADD", netconf(node), "-bad", pod), 4, "CNI_CONTAINERID")
    assert_error(run_plugin(node, "ADD", netconf(node), "pod-a", pod, ifname="a/b"), 4, "CNI_IFNAME")
    assert_error(run_plugin(node, "FROB", netconf(node), "pod-a", pod), 4, "CNI_COMMAND")


def test_failure_after_the_veth_rolls_everything_back(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    conf = netconf(node)
    # The route's gateway is not on the pod's subnet: the kernel refuses it as the last ADD step.
    conf["ipam"]["routes"].append({"dst": "192.0.2.0/24", "gw": "10.99.0.1"})
    assert_error(run_plugin(node, "ADD", conf, "pod-a", netns_path(pod)), 101, "192.0.2.0/24", "10.99.0.1")
    assert host_veths(node) == [], "the veth was not rolled back"
    assert ip_files(node) == {}, "the address was not released"
    assert set(links(pod)) == {"lo"}
    # And the same container can be ADDed cleanly afterwards (round-robin moves on to the next address).
    assert add(node, netconf(node), "pod-a", pod)["ips"][0]["address"] == "10.244.7.3/24"


def test_add_when_the_interface_exists_fails_and_releases_the_address(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    add(node, netconf(node), "pod-a", pod)
    veths = host_veths(node)
    assert_error(run_plugin(node, "ADD", netconf(node), "pod-b", netns_path(pod)), 101, "eth0 already exists")
    assert host_veths(node) == veths
    assert ip_files(node) == {"10.244.7.2": "pod-a\r\neth0"}


def test_second_add_of_same_attachment_is_refused(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    add(node, netconf(node), "pod-a", pod)
    other = namespaces.new("skcc")
    assert_error(run_plugin(node, "ADD", netconf(node), "pod-a", netns_path(other)), 103, "10.244.7.2", "pod-a")
    assert set(links(other)) == {"lo"}


def test_existing_non_bridge_link_with_the_bridge_name_is_an_error(node: Node, namespaces: Namespaces) -> None:
    subprocess.run(["ip", "-n", node.ns, "link", "add", node.bridge, "type", "veth", "peer", "name", "skpeer0"],
                   check=True)
    run = run_plugin(node, "ADD", netconf(node), "pod-a", netns_path(namespaces.new("skcc")))
    assert_error(run, 101, f"{node.bridge} already exists but is not a bridge")
    assert ip_files(node) == {}


# -- CHECK ------------------------------------------------------------------------------


def test_check_passes_then_fails_when_the_address_is_gone(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    conf = netconf(node)
    result = add(node, conf, "pod-a", pod)
    run = run_plugin(node, "CHECK", with_prev(conf, result), "pod-a", netns_path(pod))
    assert (run.rc, run.stdout) == (0, ""), run

    subprocess.run(["ip", "-n", pod, "addr", "flush", "dev", "eth0"], check=True)
    run = run_plugin(node, "CHECK", with_prev(conf, result), "pod-a", netns_path(pod))
    assert_error(run, 104, "10.244.7.2/24 missing on eth0", netns_path(pod))


def test_check_without_prev_result_is_invalid_config(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    add(node, netconf(node), "pod-a", pod)
    assert_error(run_plugin(node, "CHECK", netconf(node), "pod-a", netns_path(pod)), 7, "prevResult")


def test_check_notices_a_lost_reservation_and_a_detached_port(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    conf = netconf(node)
    result = add(node, conf, "pod-a", pod)
    subprocess.run(["ip", "-n", node.ns, "link", "set", result["interfaces"][1]["name"], "nomaster"], check=True)
    assert_error(run_plugin(node, "CHECK", with_prev(conf, result), "pod-a", netns_path(pod)), 104,
                 f"not attached to bridge {node.bridge}")
    (node.data_dir / "skiff" / "10.244.7.2").unlink()
    assert_error(run_plugin(node, "CHECK", with_prev(conf, result), "pod-a", netns_path(pod)), 104,
                 "10.244.7.2", "not reserved")


# -- DEL --------------------------------------------------------------------------------


def test_del_removes_veth_and_reservation_and_is_idempotent(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    conf = netconf(node)
    result = add(node, conf, "pod-a", pod)
    assert host_veths(node) == [result["interfaces"][1]["name"]]

    for _ in range(2):
        run = run_plugin(node, "DEL", with_prev(conf, result), "pod-a", netns_path(pod))
        assert (run.rc, run.stdout) == (0, ""), run
        assert host_veths(node) == [] and set(links(pod)) == {"lo"} and ip_files(node) == {}
    # The bridge stays: other pods use it.
    assert node.bridge in links(node.ns)


def test_del_of_unknown_container_and_without_netns_is_fine(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    conf = netconf(node)
    assert run_plugin(node, "DEL", conf, "never-added", netns_path(pod)).rc == 0
    assert run_plugin(node, "DEL", conf, "never-added", "").rc == 0
    assert run_plugin(node, "DEL", conf, "never-added", "/run/netns/skcc-gone").rc == 0


def test_del_after_the_netns_is_gone_still_releases_the_address(node: Node, namespaces: Namespaces) -> None:
    pod = namespaces.new("skcc")
    conf = netconf(node)
    result = add(node, conf, "pod-a", pod)
    namespaces.delete(pod)
    run = run_plugin(node, "DEL", with_prev(conf, result), "pod-a", netns_path(pod))
    assert run.rc == 0, run
    assert ip_files(node) == {} and host_veths(node) == []


# -- VERSION, STATUS, GC -----------------------------------------------------------------


def test_version(node: Node) -> None:
    run = run_plugin(node, "VERSION", {"cniVersion": "1.0.0"})
    assert run.rc == 0, run
    assert run.json == {"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    assert run_plugin(node, "VERSION", None).json["supportedVersions"][-1] == "1.1.0"


def test_status_and_gc_on_cni_1_1(node: Node, namespaces: Namespaces) -> None:
    conf = netconf(node, subnet="10.244.8.0/29", version="1.1.0")  # 5 addresses: .2-.6
    assert run_plugin(node, "STATUS", conf).rc == 0
    pods = [namespaces.new("skcc") for _ in range(5)]
    for i, pod in enumerate(pods):
        add(node, conf, f"pod-{i}", pod)
    assert_error(run_plugin(node, "STATUS", conf), 50, "no free address")

    valid = {"cni.dev/valid-attachments": [{"containerID": "pod-0", "ifname": "eth0"},
                                            {"containerID": "pod-3", "ifname": "eth0"}]}
    run = run_plugin(node, "GC", {**conf, **valid})
    assert (run.rc, run.stdout) == (0, ""), run
    assert ip_files(node) == {"10.244.8.2": "pod-0\r\neth0", "10.244.8.5": "pod-3\r\neth0"}
    assert run_plugin(node, "STATUS", conf).rc == 0
    # STATUS and GC are 1.1 commands.
    assert_error(run_plugin(node, "GC", {**netconf(node, version="1.0.0"), **valid}), 1, "GC")


# -- allocation ---------------------------------------------------------------------------


def test_exhausted_range_is_a_clear_error_and_leaves_nothing(node: Node, namespaces: Namespaces) -> None:
    conf = netconf(node, subnet="10.244.9.0/29")
    for i in range(5):
        add(node, conf, f"pod-{i}", namespaces.new("skcc"))
    veths = host_veths(node)
    pod = namespaces.new("skcc")
    assert_error(run_plugin(node, "ADD", conf, "pod-5", netns_path(pod)), 102, "10.244.9.0/29", "pod-5")
    assert host_veths(node) == veths and set(links(pod)) == {"lo"}
    assert sorted(ip_files(node)) == [f"10.244.9.{i}" for i in range(2, 7)]


def test_concurrent_adds_on_a_new_bridge(node: Node, namespaces: Namespaces) -> None:
    """Separate plugin processes racing: creating the bridge, its address, and allocating."""
    count = 24
    pods = [namespaces.new("skcc") for _ in range(count)]
    data = json.dumps(netconf(node)).encode()
    procs = []
    for i, pod in enumerate(pods):
        proc = subprocess.Popen(plugin_cmd(node), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=plugin_env("ADD", f"pod-{i}", netns_path(pod)))
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
        procs.append(proc)
    results = []
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout=120) == 0, (out, err)
        results.append(json.loads(out))
    addresses = [r["ips"][0]["address"] for r in results]
    assert len(set(addresses)) == count
    assert len(set(ip_files(node))) == count
    assert len(host_veths(node)) == count
    for pod, address in zip(pods, addresses, strict=True):
        assert ipv4_addresses(pod, "eth0") == [address]


def _allocate_in_child(data_dir: str, index: int, barrier: Any, results: Any) -> None:
    ranges = [IPRange(subnet=ipaddress.IPv4Network("10.245.0.0/24"),
                      range_start=ipaddress.IPv4Address("10.245.0.1"),
                      range_end=ipaddress.IPv4Address("10.245.0.254"),
                      gateway=ipaddress.IPv4Address("10.245.0.1"))]
    store = HostLocalStore(data_dir, "skiff")
    barrier.wait(timeout=120)
    try:
        results.put((index, str(store.allocate(f"container-{index}", "eth0", ranges).address)))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((index, f"error: {exc!r}"))


def test_200_concurrent_allocations_in_separate_processes_never_share_an_address(tmp_path: Path) -> None:
    """IPAM alone (no netns): 200 processes released at once on one data dir."""
    count = 200
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    children = [ctx.Process(target=_allocate_in_child, args=(str(tmp_path), i, barrier, results))
                for i in range(count)]
    try:
        for child in children:
            child.start()
        got = dict(results.get(timeout=180) for _ in range(count))
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    errors = [v for v in got.values() if v.startswith("error")]
    assert errors == []
    assert len(set(got.values())) == count, "an address was handed out twice"
    files = {p.name: p.read_bytes().decode() for p in (tmp_path / "skiff").iterdir() if p.name[0].isdigit()}
    assert len(files) == count
    for index, address in got.items():
        assert files[address.split("/")[0]] == f"container-{index}\r\neth0"


def test_round_robin_does_not_reuse_a_just_released_address(node: Node, namespaces: Namespaces) -> None:
    conf = netconf(node)
    a = add(node, conf, "pod-a", namespaces.new("skcc"))
    assert run_plugin(node, "DEL", conf, "pod-a", "").rc == 0
    b = add(node, conf, "pod-b", namespaces.new("skcc"))
    assert (a["ips"][0]["address"], b["ips"][0]["address"]) == ("10.244.7.2/24", "10.244.7.3/24")


def test_plugin_start_up_is_cheap(node: Node) -> None:
    """VERSION must not import pyroute2 (it is what a runtime probes most)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cni.plugin"], env=plugin_env("VERSION"),
                          input=b"", capture_output=True, timeout=60)
    assert done.returncode == 0
    assert "pyroute2" not in done.stderr.decode(), "VERSION imported pyroute2"
    assert time.monotonic() - started < 5


def test_netconf_parsing_covers_the_shared_conflist(node: Node) -> None:
    conf = parse_netconf(json.dumps(netconf(node)).encode())
    assert conf.bridge == node.bridge and conf.is_gateway and conf.hairpin_mode
    assert conf.ipam is not None and str(conf.ipam.ranges[0].gateway) == GATEWAY
    assert [str(r.dst) for r in conf.ipam.routes] == ["0.0.0.0/0"]


@pytest.mark.parametrize("ifname", ["eth0", "net1"])
def test_custom_ifname(node: Node, namespaces: Namespaces, ifname: str) -> None:
    pod = namespaces.new("skcc")
    result = add(node, netconf(node), "pod-a", pod, ifname=ifname)
    assert result["interfaces"][2]["name"] == ifname
    assert ipv4_addresses(pod, ifname) == ["10.244.7.2/24"]
    assert ip_files(node) == {"10.244.7.2": f"pod-a\r\n{ifname}"}

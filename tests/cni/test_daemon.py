"""skiff-bridge through its shim and the CNI daemon, as the agent runs it; and the shim's fallback.

The daemon runs in the test process, whose network namespace is the host's; the shim
runs inside the test's node namespace (nsenter), so these tests also prove that the
daemon does its work in the caller's namespace: the bridge must appear in the node
namespace and never on the host.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_testlib import Namespaces, Node, host_veths, ipv4_addresses, links, netns_path, ping, sh
from test_plugin import SUBNET, Run, assert_error, ip_files, netconf, plugin_env, with_prev

from cni import netlink
from cni.daemon import ACCEPTED, REFUSED, CniDaemon, start_cni_daemon
from cni.errors import INVALID_NETWORK_CONFIG, UNSUPPORTED_FIELD
from node_agent.runtime.cni import CniNetwork, install_skiff_plugin, write_conflist


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_skiff_plugin(tmp_path_factory.mktemp("bin")).parent


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short: a unix socket path has at most 107 bytes, pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="skcnid-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(socket_dir: Path, node: Node) -> Iterator[CniDaemon]:
    """A daemon started in the test's own (the host's) namespace."""
    host_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    running = start_cni_daemon(socket_dir / "skiff-cni.sock")
    try:
        yield running
    finally:
        running.stop()
        # Only a broken netns switch could put the test's bridge on the host; never leave it there.
        in_host = ("nsenter", f"--net=/proc/{os.getpid()}/fd/{host_ns}", "ip", "link")
        try:
            if sh(*in_host, "show", node.bridge, check=False).returncode == 0:
                sh(*in_host, "del", node.bridge, check=False)
                pytest.fail(f"the daemon created bridge {node.bridge} in the host's namespace")
        finally:
            os.close(host_ns)


def shim_conf(node: Node, socket_path: Path | str, **overrides: Any) -> dict[str, Any]:
    return netconf(node, daemonSocket=str(socket_path), **overrides)


def run_shim(node: Node, bin_dir: Path, command: str, conf: dict[str, Any] | bytes, container_id: str = "",
             netns: str = "", ifname: str = "eth0") -> Run:
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    done = subprocess.run(["nsenter", f"--net={node.path}", str(bin_dir / "skiff-bridge")], input=data,
                          capture_output=True, timeout=60, env=plugin_env(command, container_id, netns, ifname))
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def shim_add(node: Node, bin_dir: Path, conf: dict[str, Any], container_id: str, netns: str) -> dict[str, Any]:
    run = run_shim(node, bin_dir, "ADD", conf, container_id, netns_path(netns))
    assert run.rc == 0, run
    return run.json  # type: ignore[no-any-return]


# -- through the daemon ------------------------------------------------------------------


def test_add_check_del_through_the_shim(node: Node, namespaces: Namespaces, bin_dir: Path,
                                        daemon: CniDaemon) -> None:
    conf = shim_conf(node, daemon.socket_path)
    a, b = namespaces.new("skcc"), namespaces.new("skcc")
    result = shim_add(node, bin_dir, conf, "pod-a", a)
    other = shim_add(node, bin_dir, conf, "pod-b", b)

    assert set(result) == {"cniVersion", "interfaces", "ips", "routes", "dns"}
    bridge, host_end, container_end = result["interfaces"]
    assert bridge["name"] == node.bridge and container_end == {
        "name": "eth0", "mac": container_end["mac"], "sandbox": netns_path(a)}
    assert result["ips"] == [{"address": "10.244.7.2/24", "gateway": "10.244.7.1", "interface": 2}]
    assert ipv4_addresses(a, "eth0") == ["10.244.7.2/24"]
    assert ipv4_addresses(node.ns, node.bridge) == ["10.244.7.1/24"]
    node_links = links(node.ns)
    assert node_links[host_end["name"]]["master"] == node.bridge
    assert sorted(ip_files(node)) == ["10.244.7.2", "10.244.7.3"]
    assert other["ips"][0]["address"] == "10.244.7.3/24"
    assert ping(a, "10.244.7.3")

    assert run_shim(node, bin_dir, "CHECK", with_prev(conf, result), "pod-a", netns_path(a)).rc == 0
    sh("ip", "-n", a, "addr", "flush", "dev", "eth0")
    check = run_shim(node, bin_dir, "CHECK", with_prev(conf, result), "pod-a", netns_path(a))
    assert_error(check, 104, "10.244.7.2/24 missing on eth0")

    for container_id, ns, added in (("pod-a", a, result), ("pod-b", b, other)):
        for _ in range(2):  # DEL twice is fine
            assert run_shim(node, bin_dir, "DEL", with_prev(conf, added), container_id, netns_path(ns)).rc == 0
    assert ip_files(node) == {} and host_veths(node) == []
    assert daemon.requests_served == 8


def test_errors_and_version_come_back_as_the_plugin_gives_them(node: Node, namespaces: Namespaces, bin_dir: Path,
                                                                daemon: CniDaemon) -> None:
    pod = namespaces.new("skcc")
    masq = run_shim(node, bin_dir, "ADD", shim_conf(node, daemon.socket_path, ipMasq=True), "pod-a", netns_path(pod))
    assert_error(masq, UNSUPPORTED_FIELD, "ipMasq")
    assert "skiff-bridge: ADD container pod-a" in masq.stderr

    no_ipam = {k: v for k, v in shim_conf(node, daemon.socket_path).items() if k != "ipam"}
    assert_error(run_shim(node, bin_dir, "ADD", no_ipam, "pod-a", netns_path(pod)), INVALID_NETWORK_CONFIG, "ipam")

    version = run_shim(node, bin_dir, "VERSION", {"cniVersion": "0.4.0", "daemonSocket": str(daemon.socket_path)})
    assert version.rc == 0 and version.json == {
        "cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    assert daemon.requests_served == 3
    assert set(links(pod)) == {"lo"} and ip_files(node) == {}


def test_50_concurrent_adds_through_the_shim_never_share_an_address(node: Node, namespaces: Namespaces,
                                                                    bin_dir: Path, daemon: CniDaemon) -> None:
    conf = shim_conf(node, daemon.socket_path)
    pods = [namespaces.new("skcc") for _ in range(50)]

    def call(command: str, i: int) -> Run:
        return run_shim(node, bin_dir, command, conf, f"pod-{i}", netns_path(pods[i]))

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        adds = list(pool.map(lambda i: call("ADD", i), range(50)))
        assert all(run.rc == 0 for run in adds), [run for run in adds if run.rc != 0][:3]
        addresses = [run.json["ips"][0]["address"] for run in adds]
        assert len(set(addresses)) == 50
        assert all(ipaddress.ip_interface(a) in ipaddress.ip_network(SUBNET) for a in addresses)
        files = ip_files(node)
        assert sorted(files) == sorted(a.split("/")[0] for a in addresses)
        assert {content.split("\r\n")[0] for content in files.values()} == {f"pod-{i}" for i in range(50)}
        for i in (0, 25, 49):
            assert ipv4_addresses(pods[i], "eth0") == [addresses[i]]
        assert len(host_veths(node)) == 50

        dels = list(pool.map(lambda i: call("DEL", i), range(50)))
    assert all(run.rc == 0 for run in dels), [run for run in dels if run.rc != 0][:3]
    assert ip_files(node) == {} and host_veths(node) == []
    assert daemon.requests_served == 100  # none fell back to the Python plugin


@pytest.fixture
def in_node(node: Node) -> Iterator[Node]:
    """Run the test body with this thread in the node's netns, as the agent would be."""
    fd = netlink.open_netns(node.path)
    try:
        with netlink.entered(fd, node.path):
            yield node
    finally:
        os.close(fd)


async def test_agent_invoker_through_the_daemon(daemon: CniDaemon, in_node: Node, namespaces: Namespaces,
                                                bin_dir: Path, tmp_path: Path) -> None:
    """The agent's way: a conflist naming the daemon, the plugin found on the bin dir, the runtime in the node."""
    node = in_node
    conf_dir = tmp_path / "net.d"
    path = write_conflist(conf_dir, "skiff", SUBNET, node.bridge, str(node.data_dir),
                          daemon_socket=str(daemon.socket_path))
    assert json.loads(path.read_text())["plugins"][0]["daemonSocket"] == str(daemon.socket_path)
    network = CniNetwork.load(conf_dir, bin_dirs=[bin_dir], cache_dir=tmp_path / "cache")
    pod = namespaces.new("skcc")

    result = await network.add("cid-a", netns_path(pod))
    assert result.ip == "10.244.7.2" and ipv4_addresses(pod, "eth0") == ["10.244.7.2/24"]
    await network.check("cid-a", netns_path(pod))
    await network.delete("cid-a", netns_path(pod))
    assert daemon.requests_served == 3
    assert ip_files(node) == {} and host_veths(node) == []


def test_shim_reads_only_the_top_level_daemon_socket(node: Node, namespaces: Namespaces, bin_dir: Path,
                                                     daemon: CniDaemon) -> None:
    pod = namespaces.new("skcc")
    escaped = json.dumps(shim_conf(node, daemon.socket_path)).replace("/", "\\/")
    run = run_shim(node, bin_dir, "ADD", escaped.encode(), "pod-a", netns_path(pod))
    assert run.rc == 0, run
    assert daemon.requests_served == 1

    # Nested or in another member's value: not ours, so the Python plugin runs (and DELs).
    nested = netconf(node, prevResult={"cniVersion": "1.0.0", "daemonSocket": str(daemon.socket_path)})
    nested["dns"] = {"domain": '"daemonSocket": "' + str(daemon.socket_path) + '"'}
    assert run_shim(node, bin_dir, "DEL", nested, "pod-a", netns_path(pod)).rc == 0
    unicode_escaped = json.dumps(shim_conf(node, daemon.socket_path)).replace("/", "\\u002f")
    assert run_shim(node, bin_dir, "DEL", unicode_escaped.encode(), "pod-a", netns_path(pod)).rc == 0
    assert daemon.requests_served == 1
    assert ip_files(node) == {} and set(links(pod)) == {"lo"}


# -- the daemon's side of the protocol ---------------------------------------------------


def _client(path: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(str(path))
    return client


def test_daemon_refuses_what_is_not_a_protocol_1_request(daemon: CniDaemon) -> None:
    body = b'{"cniVersion":"1.0.0"}'
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        for header, fds in (
            ({"protocol": 2, "env": {"CNI_COMMAND": "VERSION"}, "stdinLength": len(body)}, [netns]),
            ({"protocol": 1, "env": {"CNI_COMMAND": "VERSION"}, "stdinLength": len(body)}, []),  # no netns fd
            ({"protocol": 1, "env": {"CNI_COMMAND": 1}, "stdinLength": len(body)}, [netns]),
        ):
            with _client(daemon.socket_path) as client:
                socket.send_fds(client, [json.dumps(header).encode() + b"\n" + body], fds)
                assert client.recv(1) == REFUSED

        with _client(daemon.socket_path) as client:
            header = {"protocol": 1, "env": {"CNI_COMMAND": "VERSION", "HOME": "/x"}, "stdinLength": len(body)}
            socket.send_fds(client, [json.dumps(header).encode() + b"\n" + body], [netns])
            reply = b""
            while chunk := client.recv(65536):
                reply += chunk
    finally:
        os.close(netns)
    assert reply[:1] == ACCEPTED
    head, _, rest = reply[1:].partition(b"\n")
    lengths = json.loads(head)
    assert lengths["exitCode"] == 0 and lengths["stderrLength"] == 0 and len(rest) == lengths["stdoutLength"]
    assert json.loads(rest)["cniVersion"] == "1.0.0"
    assert daemon.requests_served == 1


def test_daemon_socket_is_root_only_and_removed_on_stop(socket_dir: Path) -> None:
    path = socket_dir / "skiff-cni.sock"
    first = start_cni_daemon(path)
    try:
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
        second = start_cni_daemon(path)  # a restarted agent takes the path over
        first.stop()  # and the old one's stop leaves the new socket alone
        assert path.exists()
        second.stop()
        assert not path.exists()
        second.stop()  # idempotent
    finally:
        first.stop()
    with pytest.raises(OSError, match="longer than"):
        start_cni_daemon(socket_dir / ("x" * 120))


# -- without a daemon --------------------------------------------------------------------


def _add_del_via_fallback(node: Node, bin_dir: Path, conf: dict[str, Any], pod: str) -> None:
    result = shim_add(node, bin_dir, conf, "pod-a", pod)
    address = result["ips"][0]["address"]
    assert ipaddress.ip_interface(address) in ipaddress.ip_network(SUBNET)
    assert ipv4_addresses(pod, "eth0") == [address]
    assert run_shim(node, bin_dir, "DEL", with_prev(conf, result), "pod-a", netns_path(pod)).rc == 0
    assert ip_files(node) == {} and host_veths(node) == []


def test_fallback_without_a_socket_or_a_listener(node: Node, namespaces: Namespaces, bin_dir: Path,
                                                socket_dir: Path) -> None:
    pod = namespaces.new("skcc")
    _add_del_via_fallback(node, bin_dir, shim_conf(node, socket_dir / "missing.sock"), pod)

    stale = socket_dir / "stale.sock"  # what a kill -9 of the agent leaves: connect() is refused
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))
    _add_del_via_fallback(node, bin_dir, shim_conf(node, stale), pod)

    stopped = start_cni_daemon(socket_dir / "stopped.sock")
    stopped.stop()
    _add_del_via_fallback(node, bin_dir, shim_conf(node, stopped.socket_path), pod)
    assert stopped.requests_served == 0


def test_fallback_when_the_daemon_refuses(node: Node, namespaces: Namespaces, bin_dir: Path,
                                          socket_dir: Path) -> None:
    path = socket_dir / "refusing.sock"
    with _fake_daemon(path, lambda conn: conn.sendall(REFUSED)) as served:
        _add_del_via_fallback(node, bin_dir, shim_conf(node, path), namespaces.new("skcc"))
    assert served == [True, True]


def test_fallback_when_the_daemon_does_not_answer_and_a_late_accept_is_refused(
        node: Node, namespaces: Namespaces, bin_dir: Path, socket_dir: Path) -> None:
    """A hung daemon: the shim runs the plugin itself after 3 s, and a late 'A' then fails (EPIPE)."""
    path = socket_dir / "hung.sock"
    release = threading.Event()
    late: list[BaseException | None] = []

    def hang(conn: socket.socket) -> None:
        release.wait(30)
        try:
            conn.sendall(ACCEPTED)
            late.append(None)
        except OSError as exc:
            late.append(exc)

    pod = namespaces.new("skcc")
    conf = shim_conf(node, path)
    with _fake_daemon(path, hang):
        started = time.monotonic()
        result = shim_add(node, bin_dir, conf, "pod-a", pod)
        assert time.monotonic() - started >= 3.0
        release.set()
    assert len(late) == 1 and isinstance(late[0], BrokenPipeError)
    assert result["ips"][0]["address"] == "10.244.7.2/24"
    _del = run_shim(node, bin_dir, "DEL", netconf(node), "pod-a", netns_path(pod))
    assert _del.rc == 0 and ip_files(node) == {}


@contextlib.contextmanager
def _fake_daemon(path: Path, answer: Any) -> Iterator[list[bool]]:
    """A listener that reads each request and answers it with answer(conn); yields what it served."""
    served: list[bool] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
                for fd in fds:
                    os.close(fd)
                answer(conn)
                served.append(bool(msg))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def test_install_lays_out_shim_script_and_python_fallback(tmp_path: Path) -> None:
    path = install_skiff_plugin(tmp_path)
    shim, fallback = tmp_path / "skiff-bridge-shim", tmp_path / "skiff-bridge-py"
    assert path.read_text().splitlines()[0] == f"#!{shim}"
    assert shim.read_bytes()[:4] == b"\x7fELF" and fallback.read_text().startswith("#!/bin/sh\n")
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o755 for p in (path, shim, fallback))
    inodes = [p.stat().st_ino for p in (path, shim, fallback)]
    install_skiff_plugin(tmp_path)
    assert [p.stat().st_ino for p in (path, shim, fallback)] == inodes

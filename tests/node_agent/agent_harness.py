"""A node for end-to-end tests: a network namespace, an API forwarder into it, and `skiff agent` inside.

The agent runs under ``nsenter --net`` in a namespace of its own, so the pod bridge and the
pod veths never touch the host's namespace. The namespace has only loopback; the agent
reaches the API server through a forwarder: a socket listening on 127.0.0.1 *inside* the
namespace (created by a thread that entered it), relaying to the server on the host's
127.0.0.1. Docker is the host's dockerd, reached through its unix socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def listen_in_netns(netns_path: str, port: int = 0) -> socket.socket:
    """A TCP socket listening on 127.0.0.1 inside another network namespace."""
    box: dict[str, Any] = {}

    def work() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(netns_path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                s.listen(128)
                box["sock"] = s
            finally:
                _setns(own)
        except BaseException as exc:
            box["error"] = exc
        finally:
            os.close(own)
            os.close(target)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


class Forwarder:
    """Relay every connection accepted on ``listener`` to ``target`` (host side)."""

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self.listener = listener
        self.target = target
        self.port = listener.getsockname()[1]
        self._closed = False
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


@dataclass
class TestNode:
    """One node: ``netns``, its data under ``root``, an agent process (restartable)."""

    name: str
    netns: str
    root: Path
    pod_cidr: str
    kubeconfig: Path
    skiff: list[str]
    cni_plugin: str = "skiff"
    proc: subprocess.Popen[bytes] | None = None
    forwarder: Forwarder | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.root / "agent.log"

    @property
    def node_ip(self) -> str:
        return self.pod_cidr.rsplit(".", 1)[0] + ".1"

    def argv(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", *self.skiff, "agent",
                "--kubeconfig", str(self.kubeconfig), "--node-name", self.name, "--node-ip", self.node_ip,
                "--data-dir", str(self.root / "data"), "--pod-cidr", self.pod_cidr,
                "--cni-conf-dir", str(self.root / "net.d"), "--cni-bin-dir", f"{self.root / 'bin'}:/usr/lib/cni",
                "--cni-plugin", self.cni_plugin, "--listen-address", "127.0.0.1", "--listen-port", "10250",
                "--cpu", "2", "--memory", "4Gi", *self.extra_args]

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 200) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def create_node(root: Path, api_port: int, admin_kubeconfig: Path, skiff: list[str], *, third_octet: int,
                cni_plugin: str = "skiff") -> TestNode:
    suffix = uuid.uuid4().hex[:6]
    netns = f"skt-{suffix}"
    run("ip", "netns", "add", netns)
    try:
        run("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        forwarder = Forwarder(listen_in_netns(f"/run/netns/{netns}"), ("127.0.0.1", api_port))
    except BaseException:
        run("ip", "netns", "del", netns, check=False)
        raise
    config = yaml.safe_load(admin_kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{forwarder.port}"
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("bin", "net.d", "data"):
        (root / sub).mkdir(exist_ok=True)
    kubeconfig = root / "agent.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    return TestNode(name=f"e2e-{suffix}", netns=netns, root=root, pod_cidr=f"10.244.{third_octet}.0/24",
                    kubeconfig=kubeconfig, skiff=skiff, cni_plugin=cni_plugin, forwarder=forwarder)


def managed_containers(node: TestNode | None = None, namespaces: set[str] | None = None) -> list[dict[str, Any]]:
    out = run("docker", "ps", "-a", "--filter", "label=io.skiff.managed=true", "--format", "{{json .}}").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    if namespaces is not None:
        rows = [r for r in rows if _label(r, "io.kubernetes.pod.namespace") in namespaces]
    return rows


def _label(row: dict[str, Any], key: str) -> str:
    for part in str(row.get("Labels", "")).split(","):
        k, _, v = part.partition("=")
        if k == key:
            return v
    return ""


def destroy_node(node: TestNode, namespaces: set[str]) -> None:
    """Stop the agent, remove every container of the test namespaces, delete the netns."""
    node.stop()
    ids = [r["ID"] for r in managed_containers(namespaces=namespaces)]
    if ids:
        run("docker", "rm", "-f", "-v", *ids, check=False)
    if node.forwarder is not None:
        node.forwarder.close()
    run("ip", "netns", "del", node.netns, check=False)
    # Volumes of pods the agent did not get to tear down (tmpfs for secrets) must not outlive the test.
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(str(node.root)):
            run("umount", "-l", point, check=False)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)

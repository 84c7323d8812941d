"""Helpers for CNI tests on real network namespaces (root only).

Nothing touches the host's root namespace: every test gets its own "node" netns,
where the plugin runs and the bridge lives, and container netns created on demand;
all of them (and with them every bridge and veth) are deleted in teardown, even
when the test fails. Names carry a random suffix so parallel runs never collide.
"""

from __future__ import annotations

import json
import random
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE_BIN_DIR = Path("/usr/lib/cni")


def suffix(n: int = 6) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def ip_json(ns: str, *args: str) -> Any:
    out = sh("ip", "-n", ns, "-j", *args).stdout
    return json.loads(out) if out.strip() else []


def links(ns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ip_json(ns, "-d", "link", "show")}


def host_veths(node: Node) -> list[str]:
    """The veths in the node's namespace: the host ends of pod interfaces."""
    return sorted(name for name, link in links(node.ns).items() if link.get("linkinfo", {}).get("info_kind") == "veth")


def ipv4_addresses(ns: str, dev: str) -> list[str]:
    out = []
    for link in ip_json(ns, "-4", "addr", "show", "dev", dev):
        out += [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
    return out


def ping(from_ns: str, address: str, deadline: float = 10.0) -> bool:
    """busybox ping from inside a namespace, retried until it answers or the deadline passes."""
    end = time.monotonic() + deadline
    while True:
        done = subprocess.run(
            ["nsenter", f"--net={netns_path(from_ns)}", "busybox", "ping", "-c", "1", "-W", "1", address],
            capture_output=True, timeout=30,
        )
        if done.returncode == 0:
            return True
        if time.monotonic() > end:
            return False


@dataclass
class Namespaces:
    """Network namespaces created by one test; all deleted at teardown."""

    created: list[str] = field(default_factory=list)

    def new(self, prefix: str) -> str:
        name = f"{prefix}-{suffix()}"
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def delete(self, name: str) -> None:
        sh("ip", "netns", "del", name, check=False)
        if name in self.created:
            self.created.remove(name)

    def cleanup(self) -> None:
        for name in reversed(self.created):
            sh("ip", "netns", "del", name, check=False)
        self.created.clear()


@dataclass(frozen=True)
class Node:
    """The namespace playing the node: the plugin runs here and the bridge lives here."""

    ns: str
    bridge: str
    data_dir: Path

    @property
    def path(self) -> str:
        return netns_path(self.ns)

"""Node registration: facts about this machine, the Node object, create-or-reconcile.

The API server resets a new Node's status, so registration writes metadata and spec
only; `node_status` posts the status right after.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import platform
import socket
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil

from node_agent.settings import AgentSettings
from skiff.api.quantity import DECIMAL_SI, cpu_millis, format_quantity, memory_bytes
from skiff.client import AlreadyExists, ApiClient, Conflict

log = logging.getLogger("skiff.agent.registration")

ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
          "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class NodeFacts:
    """What the node reports about itself; gathered once at start-up (blocking reads)."""

    hostname: str
    node_ip: str
    cpu_millis: int
    memory_bytes: int
    ephemeral_bytes: int
    kernel_version: str
    os_image: str
    arch: str
    machine_id: str
    system_uuid: str
    boot_id: str
    runtime_version: str  # "docker://20.10.24"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def default_node_ip() -> str:
    """The first IPv4 address that is neither loopback nor on a Docker bridge."""
    for ifname, addrs in sorted(psutil.net_if_addrs().items()):
        if ifname.startswith(("docker", "veth", "br-", "skiff")):
            continue
        for addr in addrs:
            if addr.family == socket.AF_INET and not ipaddress.ip_address(addr.address).is_loopback:
                return str(addr.address)
    return "127.0.0.1"


def gather_facts(settings: AgentSettings, docker_version: str) -> NodeFacts:
    """Blocking: call through a thread."""
    cap = settings.capacity
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    disk = os.statvfs(settings.data_dir)
    return NodeFacts(
        hostname=settings.node_name, node_ip=settings.node_ip or default_node_ip(),
        cpu_millis=cpu_millis(cap.cpu) if cap.cpu else 1000 * (psutil.cpu_count() or 1),
        memory_bytes=memory_bytes(cap.memory) if cap.memory else int(psutil.virtual_memory().total),
        ephemeral_bytes=disk.f_blocks * disk.f_frsize, kernel_version=platform.release(), os_image=_os_image(),
        arch=ARCHES.get(platform.machine(), platform.machine()), machine_id=_read("/etc/machine-id"),
        system_uuid=_read("/sys/class/dmi/id/product_uuid").lower(),
        boot_id=_read("/proc/sys/kernel/random/boot_id"), runtime_version=f"docker://{docker_version}")


def _cpu(millis: int) -> str:
    return format_quantity(Decimal(millis) / 1000, DECIMAL_SI)


def _kibi(n: int) -> str:
    return f"{max(0, n) // 1024}Ki"


def render_capacity(settings: AgentSettings, facts: NodeFacts) -> tuple[dict[str, str], dict[str, str]]:
    """(capacity, allocatable); allocatable = capacity - system-reserved."""
    reserved = settings.capacity.system_reserved
    pods = str(settings.capacity.pods)
    capacity = {"cpu": _cpu(facts.cpu_millis), "memory": _kibi(facts.memory_bytes),
                "ephemeral-storage": _kibi(facts.ephemeral_bytes), "pods": pods}
    cpu = facts.cpu_millis - (cpu_millis(reserved["cpu"]) if "cpu" in reserved else 0)
    mem = facts.memory_bytes - (memory_bytes(reserved["memory"]) if "memory" in reserved else 0)
    eph = facts.ephemeral_bytes - (memory_bytes(reserved["ephemeral-storage"])
                                   if "ephemeral-storage" in reserved else 0)
    allocatable = {"cpu": _cpu(max(0, cpu)), "memory": _kibi(mem), "ephemeral-storage": _kibi(eph), "pods": pods}
    return capacity, allocatable


def node_labels(settings: AgentSettings, facts: NodeFacts) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": settings.node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": facts.arch,
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": facts.arch,
    }


def render_node(settings: AgentSettings, facts: NodeFacts) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if settings.pod_cidr:
        spec = {"podCIDR": settings.pod_cidr, "podCIDRs": [settings.pod_cidr]}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": settings.node_name, "labels": node_labels(settings, facts),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": spec,
    }


def reconcile_existing(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Bring an existing Node's default labels and pod CIDR in line; True if it changed."""
    changed = False
    labels = existing.setdefault("metadata", {}).setdefault("labels", {})
    for key, value in wanted["metadata"]["labels"].items():
        if labels.get(key) != value:
            labels[key] = value
            changed = True
    spec = existing.setdefault("spec", {})
    if wanted["spec"].get("podCIDR") and not spec.get("podCIDR"):
        spec["podCIDR"] = wanted["spec"]["podCIDR"]
        spec["podCIDRs"] = wanted["spec"]["podCIDRs"]
        changed = True
    return changed


async def register_node(client: ApiClient, settings: AgentSettings, facts: NodeFacts,
                        attempts: int = 5) -> dict[str, Any]:
    """Create the Node, or reconcile the one already there; returns the stored Node."""
    wanted = render_node(settings, facts)
    try:
        node = await client.create("nodes", wanted)
        log.info("registered node %s (uid %s)", settings.node_name, node["metadata"]["uid"])
        return node
    except AlreadyExists:
        pass
    for attempt in range(1, attempts + 1):
        node = await client.get("nodes", settings.node_name)
        if not reconcile_existing(node, wanted):
            log.info("node %s already registered; nothing to reconcile", settings.node_name)
            return node
        try:
            node = await client.replace("nodes", node)
            log.info("node %s already registered; updated its labels/podCIDR", settings.node_name)
            return node
        except Conflict:
            log.info("node %s changed while reconciling (attempt %d/%d); retrying", settings.node_name,
                     attempt, attempts)
            await asyncio.sleep(0)
    raise RuntimeError(f"could not reconcile node {settings.node_name} after {attempts} attempts")

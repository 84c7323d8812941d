"""Node status: conditions, addresses, capacity and nodeInfo, posted to ``nodes/<n>/status``.

`render_status` is pure (health, facts, old status, now -> new status). `NodeStatusReporter`
posts it every ``node_status_update_frequency`` and at once when `trigger` is called (e.g.
Docker went away or came back). lastTransitionTime is kept while a condition's status
stays the same; lastHeartbeatTime moves on every post.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from node_agent.registration import NodeFacts, render_capacity
from node_agent.settings import KUBELET_VERSION, AgentSettings
from skiff.client import ApiClient, ApiClientError, Conflict

log = logging.getLogger("skiff.agent.node_status")

PRESSURE_CONDITIONS = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)
# What a pressure condition says while it is True (the eviction manager sets them).
PRESSURE_TRUE = {
    "MemoryPressure": ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    "DiskPressure": ("KubeletHasDiskPressure", "kubelet has disk pressure"),
    "PIDPressure": ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
}


@dataclass(frozen=True)
class NodeHealth:
    """Why the node is not Ready, or empty strings when it is."""

    runtime_error: str = ""
    network_error: str = ""
    pressure: tuple[str, ...] = ()  # the pressure conditions that are True (node_agent/eviction)

    @property
    def ready(self) -> bool:
        return not self.runtime_error and not self.network_error

    @property
    def message(self) -> str:
        if self.runtime_error:
            return f"container runtime is down: {self.runtime_error}"
        if self.network_error:
            return ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                    f"message:{self.network_error}")
        return "kubelet is posting ready status"


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _condition(old: dict[str, dict[str, Any]], type_: str, status: str, reason: str, message: str,
               now: str) -> dict[str, Any]:
    prev = old.get(type_)
    transition = prev["lastTransitionTime"] if prev and prev.get("status") == status and \
        prev.get("lastTransitionTime") else now
    return {"type": type_, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": transition,
            "reason": reason, "message": message}


def render_conditions(health: NodeHealth, old_conditions: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    old = {c.get("type", ""): c for c in old_conditions or []}
    stamp = rfc3339(now)
    out = [_condition(old, t, "True", *PRESSURE_TRUE[t], stamp) if t in health.pressure
           else _condition(old, t, "False", reason, message, stamp) for t, reason, message in PRESSURE_CONDITIONS]
    out.append(_condition(old, "Ready", "True" if health.ready else "False",
                          "KubeletReady" if health.ready else "KubeletNotReady", health.message, stamp))
    return out


def render_status(settings: AgentSettings, facts: NodeFacts, health: NodeHealth, old_status: dict[str, Any],
                  now: float, images: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    capacity, allocatable = render_capacity(settings, facts)
    status: dict[str, Any] = {
        "capacity": capacity, "allocatable": allocatable,
        "conditions": render_conditions(health, old_status.get("conditions") or [], now),
        "addresses": [{"type": "InternalIP", "address": facts.node_ip},
                      {"type": "Hostname", "address": facts.hostname}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": settings.listen_port}},
        "nodeInfo": {
            "machineID": facts.machine_id, "systemUUID": facts.system_uuid, "bootID": facts.boot_id,
            "kernelVersion": facts.kernel_version, "osImage": facts.os_image,
            "containerRuntimeVersion": facts.runtime_version, "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION, "operatingSystem": "linux", "architecture": facts.arch,
        },
    }
    if images is not None:
        status["images"] = images
    return status


def render_images(rows: list[dict[str, Any]], limit: int = 50) -> list[dict[str, Any]]:
    """``docker images`` rows -> NodeStatus.images, biggest first (kubelet's nodeStatusMaxImages)."""
    out = []
    for row in sorted(rows, key=lambda r: -int(r.get("Size") or 0))[:limit]:
        names = [n for n in (row.get("RepoDigests") or []) + (row.get("RepoTags") or []) if "<none>" not in n]
        if names:
            out.append({"names": names, "sizeBytes": int(row.get("Size") or 0)})
    return out


HealthProbe = Callable[[], Awaitable[NodeHealth]]
ImagesProbe = Callable[[], Awaitable[list[dict[str, Any]] | None]]


class NodeStatusReporter:
    def __init__(self, client: ApiClient, settings: AgentSettings, facts: NodeFacts, health: HealthProbe,
                 images: ImagesProbe | None = None, *, clock: Callable[[], float] = time.time,
                 on_ready_change: Callable[[bool], None] | None = None) -> None:
        self.client = client
        self.settings = settings
        self.facts = facts
        self.health = health
        self.images = images
        self._clock = clock
        self._wake = asyncio.Event()
        self.last_ready: bool | None = None
        self.on_ready_change = on_ready_change

    def trigger(self) -> None:
        self._wake.set()

    async def post_once(self, attempts: int = 3) -> dict[str, Any]:
        """Compute and PUT the status (re-reading the Node on a conflict)."""
        health = await self.health()
        images = await self.images() if self.images else None
        for attempt in range(1, attempts + 1):
            node = await self.client.get("nodes", self.settings.node_name)
            node["status"] = render_status(self.settings, self.facts, health, node.get("status") or {},
                                           self._clock(), images)
            try:
                stored = await self.client.update_status("nodes", node)
            except Conflict:
                if attempt == attempts:
                    raise
                continue
            if health.ready != self.last_ready:
                log.info("node %s is %s: %s", self.settings.node_name,
                         "Ready" if health.ready else "NotReady", health.message)
                self.last_ready = health.ready
                if self.on_ready_change:
                    self.on_ready_change(health.ready)
            return stored
        raise AssertionError("unreachable")

    async def run(self) -> None:
        """Post forever, every node_status_update_frequency or when triggered."""
        period = self.settings.node_status_update_frequency
        while True:
            self._wake.clear()
            try:
                await self.post_once()
                delay = period
            except asyncio.CancelledError:
                raise
            except ApiClientError as exc:
                delay = min(period, 1.0)
                log.warning("posting status of node %s failed: %s; retrying in %.0fs", self.settings.node_name,
                            exc, delay)
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

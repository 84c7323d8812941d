"""Pod sandboxes: the pause container and its network (CNI ADD/DEL).

The pod IP of each sandbox is kept in ``<data>/sandboxes/<id>.json`` (written after ADD,
removed after DEL), so an agent restart knows the IPs without asking the plugin, and a
leftover file means a network that still has to be torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from node_agent.runtime.container_spec import pause_create_spec, to_docker_kwargs
from node_agent.runtime.containers import LABEL_NODE, ContainerRecord
from node_agent.runtime.docker_adapter import DockerAdapter, DockerError

log = logging.getLogger("skiff.agent.sandbox")

IFNAME = "eth0"


class CniResultLike(Protocol):
    @property
    def ip(self) -> str | None: ...


class Network(Protocol):
    async def add(self, container_id: str, netns_path: str, ifname: str = IFNAME) -> Any: ...

    async def delete(self, container_id: str, netns_path: str, ifname: str = IFNAME) -> None: ...


class SandboxError(Exception):
    """Creating the sandbox failed; kubelet's reason is FailedCreatePodSandBox."""

    reason = "FailedCreatePodSandBox"


@dataclass(frozen=True)
class SandboxInfo:
    id: str
    ip: str | None


def host_network(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


class Sandboxes:
    def __init__(self, docker: DockerAdapter, network: Network | None, state_dir: Path, pause_image: str,
                 node_ip: str, node_name: str = "") -> None:
        self.docker = docker
        self.node_name = node_name
        self.network = network
        self.state_dir = state_dir
        self.pause_image = pause_image
        self.node_ip = node_ip
        state_dir.mkdir(parents=True, exist_ok=True)

    def _file(self, sandbox_id: str) -> Path:
        return self.state_dir / f"{sandbox_id}.json"

    def recorded_ip(self, sandbox_id: str) -> str | None:
        try:
            return json.loads(self._file(sandbox_id).read_text()).get("ip")
        except (OSError, ValueError):
            return None

    def _record(self, sandbox_id: str, pod_uid: str, ip: str | None) -> None:
        tmp = self._file(sandbox_id).with_suffix(".tmp")
        tmp.write_text(json.dumps({"podUID": pod_uid, "ip": ip}))
        os.replace(tmp, self._file(sandbox_id))

    def leftover_ids(self) -> list[str]:
        """Sandboxes whose network was set up and not yet torn down."""
        return [p.stem for p in self.state_dir.glob("*.json")]

    async def ensure_network(self, pod: Mapping[str, Any], sandbox: ContainerRecord) -> SandboxInfo:
        """A running sandbox with its network; sets up the network if a crash left it without."""
        if host_network(pod):
            return SandboxInfo(sandbox.id, self.node_ip)
        ip = self.recorded_ip(sandbox.id)
        if ip is None:
            log.info("sandbox %s of pod %s/%s has no network yet; adding it", sandbox.id[:12],
                     sandbox.namespace, sandbox.pod_name)
            ip = await self._add(pod, sandbox.id, sandbox.pid)
        return SandboxInfo(sandbox.id, ip)

    async def create(self, pod: Mapping[str, Any], attempt: int) -> SandboxInfo:
        """Create and start the pause container, then CNI ADD; on failure undo everything."""
        md = pod.get("metadata") or {}
        spec = pause_create_spec(dict(pod), self.pause_image, attempt=attempt)
        if self.node_name:
            spec.labels[LABEL_NODE] = self.node_name
        t0 = time.monotonic()
        try:
            sandbox_id = await self.docker.create(to_docker_kwargs(self.docker.api, spec))
        except DockerError as exc:
            raise SandboxError(f"Failed to create pod sandbox: {exc}") from exc
        try:
            await self.docker.start(sandbox_id)
            pid = int(((await self.docker.inspect(sandbox_id)).get("State") or {}).get("Pid") or 0)
            t_started = time.monotonic()
            ip = self.node_ip if host_network(pod) else await self._add(pod, sandbox_id, pid)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self.teardown(sandbox_id, 0, str(md.get("uid", "")))
            with contextlib.suppress(Exception):
                await self.docker.remove(sandbox_id)
            if isinstance(exc, DockerError | SandboxError):
                raise SandboxError(f"Failed to create pod sandbox: {exc}") from exc
            raise
        log.info("pod %s/%s: sandbox %s ready with IP %s", md.get("namespace"), md.get("name"), sandbox_id[:12], ip)
        log.debug("sandbox %s: created+started in %.3fs, network in %.3fs", sandbox_id[:12], t_started - t0,
                  time.monotonic() - t_started)
        return SandboxInfo(sandbox_id, ip)

    async def _add(self, pod: Mapping[str, Any], sandbox_id: str, pid: int) -> str | None:
        if self.network is None:
            raise SandboxError("network plugin is not ready: cni config uninitialized")
        if not pid:
            raise SandboxError(f"sandbox {sandbox_id[:12]} is not running")
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        # Recorded first (without IP): a crash during ADD still leaves a trace for the DEL.
        self._record(sandbox_id, uid, None)
        try:
            result = await self.network.add(sandbox_id, f"/proc/{pid}/ns/net", IFNAME)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await self.network.delete(sandbox_id, f"/proc/{pid}/ns/net", IFNAME)
            self._file(sandbox_id).unlink(missing_ok=True)
            raise SandboxError(f"failed to set up sandbox container \"{sandbox_id}\" network for pod "
                               f"\"{(pod.get('metadata') or {}).get('name')}\": networkPlugin cni failed to set up "
                               f"pod network: {exc}") from exc
        ip = getattr(result, "ip", None)
        ip = str(ip).split("/")[0] if ip else None
        self._record(sandbox_id, uid, ip)
        return ip

    async def teardown(self, sandbox_id: str, pid: int, pod_uid: str = "") -> None:
        """CNI DEL (idempotent; with no netns when the pause container is gone), then forget the IP."""
        if self.network is not None and (self._file(sandbox_id).exists() or pid):
            netns = f"/proc/{pid}/ns/net" if pid and Path(f"/proc/{pid}/ns/net").exists() else ""
            await self.network.delete(sandbox_id, netns, IFNAME)
        self._file(sandbox_id).unlink(missing_ok=True)

    async def stop(self, record: ContainerRecord) -> None:
        """Tear the network down and stop the pause container (it exits at once on SIGTERM)."""
        await self.teardown(record.id, record.pid if record.running else 0, record.pod_uid)
        if record.running:
            try:
                await self.docker.stop(record.id, 2)
            except DockerError as exc:
                log.warning("stopping sandbox %s of pod %s/%s failed: %s; killing it", record.id[:12],
                            record.namespace, record.pod_name, exc)
                with contextlib.suppress(DockerError):
                    await self.docker.kill(record.id)
        await asyncio.sleep(0)

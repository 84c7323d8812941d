"""Stopping containers and pods the way kubelet's killContainer/killPod do.

One container: event Killing, the preStop hook (bounded by the grace period), then
``docker stop`` with what is left of the grace period (at least 2 s): SIGTERM, and SIGKILL
when it runs out. A pod: its containers in parallel, then its sandboxes (CNI DEL, stop).
`remove_pod` removes every container; the pod dir goes with `teardown_volumes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from node_agent.events import NORMAL, WARNING, EventRecorder, container_field_path
from node_agent.hooks import run_handler
from node_agent.runtime.containers import INIT, ContainerRecord, PodRuntime
from node_agent.runtime.docker_adapter import DockerAdapter, DockerError
from node_agent.sandbox import Sandboxes

log = logging.getLogger("skiff.agent.kill")

Obj = dict[str, Any]
DEFAULT_GRACE = 30


def container_spec_of(pod: Mapping[str, Any] | None, record: ContainerRecord) -> Obj | None:
    if pod is None:
        return None
    spec = pod.get("spec") or {}
    for c in spec.get("initContainers" if record.kind == INIT else "containers") or []:
        if c.get("name") == record.container:
            return dict(c)
    return None


def grace_period(pod: Mapping[str, Any] | None, runtime: PodRuntime | None = None) -> int:
    """deletionGracePeriodSeconds, else terminationGracePeriodSeconds, else the label on the containers."""
    if pod is not None:
        md = pod.get("metadata") or {}
        if md.get("deletionGracePeriodSeconds") is not None:
            return int(md["deletionGracePeriodSeconds"])
        value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        if value is not None:
            return int(value)
    if runtime is not None:
        for r in runtime.all:
            if r.grace_period is not None:
                return r.grace_period
    return DEFAULT_GRACE


class Killer:
    def __init__(self, docker: DockerAdapter, sandboxes: Sandboxes, recorder: EventRecorder,
                 minimum_grace: float = 2.0) -> None:
        self.docker = docker
        self.sandboxes = sandboxes
        self.recorder = recorder
        self.minimum_grace = minimum_grace

    async def kill_container(self, pod: Mapping[str, Any] | None, record: ContainerRecord, grace: float,
                             message: str = "", pod_ip: str | None = None) -> None:
        spec = container_spec_of(pod, record)
        if pod is not None:
            self.recorder.record(pod, NORMAL, "Killing", message or f"Stopping container {record.container}",
                                 container_field_path(record.container, record.kind == INIT))
        started = time.monotonic()
        pre_stop = ((spec or {}).get("lifecycle") or {}).get("preStop")
        if pre_stop and record.running and grace > 0 and pod is not None:
            failure = await run_handler(self.docker, pre_stop, spec or {}, record.id, pod_ip, grace)
            if failure:
                self.recorder.record(pod, WARNING, "FailedPreStopHook", failure,
                                     container_field_path(record.container, record.kind == INIT))
        remaining = max(self.minimum_grace, grace - (time.monotonic() - started))
        log.info("stopping container %s of pod %s/%s with a grace period of %.0fs", record.container,
                 record.namespace, record.pod_name, remaining)
        try:
            await self.docker.stop(record.id, remaining)
        except DockerError as exc:
            log.warning("stopping container %s of pod %s/%s failed: %s; killing it", record.container,
                        record.namespace, record.pod_name, exc)
            with contextlib.suppress(DockerError):
                await self.docker.kill(record.id)

    async def kill_pod(self, pod: Mapping[str, Any] | None, runtime: PodRuntime, grace: float,
                       pod_ip: str | None = None) -> None:
        """Stop every running container (in parallel), then every sandbox."""
        running = [r for r in runtime.containers if r.running]
        if running:
            await asyncio.gather(*(self.kill_container(pod, r, grace, pod_ip=pod_ip) for r in running))
        for sandbox in runtime.sandboxes:
            await self.sandboxes.stop(sandbox)

    async def remove_pod(self, runtime: PodRuntime) -> None:
        for r in runtime.all:
            await self.docker.remove(r.id)

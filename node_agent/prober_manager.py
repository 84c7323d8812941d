"""Probe workers for the running containers (kubelet's prober manager).

One `ProbeWorker` task per (container id, probe kind), started by the pod sync for each
running container and stopped when the container is gone. Results are read by the pod
sync (liveness/startup failures -> restart) and the status (ready, started). A change of
state asks for a sync of the pod; every failed probe is an Unhealthy event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from node_agent.events import WARNING, EventRecorder, container_field_path
from node_agent.pod_status import ProbeView
from node_agent.probes import ProbeKind, ProbeResult, ProbeWorker, run_probe
from node_agent.runtime.containers import ContainerRecord
from node_agent.runtime.docker_adapter import DockerAdapter

log = logging.getLogger("skiff.agent.probes")

KINDS: tuple[tuple[ProbeKind, str], ...] = (
    ("startup", "startupProbe"), ("liveness", "livenessProbe"), ("readiness", "readinessProbe"))


@dataclass
class _Entry:
    pod_uid: str
    worker: ProbeWorker
    task: asyncio.Task[None]


class ProberManager(ProbeView):
    def __init__(self, docker: DockerAdapter, recorder: EventRecorder, on_change: Callable[[str], None]) -> None:
        self.docker = docker
        self.recorder = recorder
        self.on_change = on_change
        self._entries: dict[tuple[str, str], _Entry] = {}

    def ensure(self, pod: Mapping[str, Any], container: Mapping[str, Any], record: ContainerRecord,
               pod_ip: str | None) -> None:
        """Start the workers of a running container's probes (no-op for those running)."""
        uid = record.pod_uid
        for kind, field in KINDS:
            probe = container.get(field)
            if not probe or (record.id, kind) in self._entries:
                continue
            worker = self._worker(pod, dict(container), record, kind, dict(probe), pod_ip or "")
            task = asyncio.create_task(worker.run_forever(), name=f"probe-{kind}-{record.id[:12]}")
            self._entries[(record.id, kind)] = _Entry(uid, worker, task)

    def _worker(self, pod: Mapping[str, Any], container: dict[str, Any], record: ContainerRecord, kind: ProbeKind,
                probe: dict[str, Any], pod_ip: str) -> ProbeWorker:
        cid = record.id

        async def exec_in_container(cmd: list[str], timeout: float) -> tuple[int, bytes]:
            result = await self.docker.exec(cid, cmd, timeout)
            return result.exit_code, result.output

        async def run() -> ProbeResult:
            return await run_probe(probe, pod_ip=pod_ip, exec_in_container=exec_in_container, container=container)

        def on_result(success: bool, message: str) -> None:
            log.info("%s probe of container %s in pod %s/%s is now %s", kind, record.container, record.namespace,
                     record.pod_name, "succeeding" if success else f"failing ({message.strip()[:200]})")
            self.on_change(record.pod_uid)

        def on_probe(result: ProbeResult) -> None:
            if not result.success:
                self.recorder.record(pod, WARNING, "Unhealthy",
                                     f"{kind.capitalize()} probe failed: {result.message.strip()}",
                                     container_field_path(record.container))

        # The container may have started before this worker (an adopted container).
        started_at = time.monotonic() - max(0.0, time.time() - record.started_at) if record.started_at else None
        return ProbeWorker(kind, probe, run, on_result, started_at=started_at,
                           is_started=lambda: self.started(cid, container), on_probe=on_probe)

    def _result(self, container_id: str, kind: str) -> bool | None:
        entry = self._entries.get((container_id, kind))
        return None if entry is None else entry.worker.result

    def has(self, container_id: str, kind: str) -> bool:
        return (container_id, kind) in self._entries

    # The kubelet creates a pod's probe workers with the pod (AddPod), before its containers start, and a
    # container whose probe has a worker but no result yet is neither ready nor started. Here a worker is
    # created by the first sync that sees the container running, so the status computed right after the sync
    # that started it finds none: that must read as "not yet" for a declared probe, not as "no probe" (which
    # reported Ready=True, then False once the worker appeared, then True again after the first probe).
    def ready(self, container_id: str, container: Mapping[str, Any]) -> bool:
        if self.has(container_id, "readiness"):
            return self._result(container_id, "readiness") is True
        return not container.get("readinessProbe")

    def started(self, container_id: str, container: Mapping[str, Any]) -> bool:
        if self.has(container_id, "startup"):
            return self._result(container_id, "startup") is True
        return not container.get("startupProbe")

    def liveness_failed(self, container_id: str) -> bool:
        return self._result(container_id, "liveness") is False

    def startup_failed(self, container_id: str) -> bool:
        return self._result(container_id, "startup") is False

    def retain(self, pod_uid: str, container_ids: set[str]) -> None:
        """Stop the workers of this pod's containers that are not in ``container_ids``."""
        for key, entry in list(self._entries.items()):
            if entry.pod_uid == pod_uid and key[0] not in container_ids:
                self._stop(key)

    def remove_pod(self, pod_uid: str) -> None:
        self.retain(pod_uid, set())

    def _stop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key)
        entry.worker.stop()
        entry.task.cancel()

    async def stop_all(self) -> None:
        tasks = [e.task for e in self._entries.values()]
        for key in list(self._entries):
            self._stop(key)
        await asyncio.gather(*tasks, return_exceptions=True)

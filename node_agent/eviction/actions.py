"""What an eviction does on a real node, through the agent's parts.

`AgentEvictor.evict` is kubelet's TerminatePodAbnormallyAndWait: the pod's status becomes
phase Failed, reason Evicted, with the message and a DisruptionTarget condition
(TerminationByKubelet), written first, as kubelet's status manager does; the pod manager
is handed that pod at once, so its worker treats the pod as finished (no restart) and takes
its sandbox down; then the app containers are stopped within the eviction's grace period.

`DockerReclaimer` is kubelet's container and image GC under disk pressure: dead containers of
pods gone from the API, then images no container uses (never the pause image). Unlike
kubelet it keeps the dead containers of finished pods that still exist: the agent builds a
pod's container statuses from its containers, and would show them as never started.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from node_agent.events import rfc3339
from node_agent.eviction.manager import REASON
from node_agent.eviction.ranking import EvictionNote, key_of, uid_of
from node_agent.pleg import RuntimeCache
from node_agent.pod_status import write_status
from node_agent.runtime.docker_adapter import DockerAdapter, DockerError
from skiff.client import ApiClient, ApiClientError

log = logging.getLogger("skiff.agent.eviction")

Obj = dict[str, Any]
DISRUPTION_TARGET = "DisruptionTarget"
TERMINATION_BY_KUBELET = "TerminationByKubelet"


class PodHandler(Protocol):
    """The pod manager's side: take a newer pod object, and sync a pod soon."""

    def on_pod(self, pod: Obj) -> None: ...

    def trigger(self, uid: str, delay: float = 0.0) -> None: ...


def evicted_status(pod: Obj, message: str, now: float) -> Obj:
    """The pod's status, evicted: phase Failed, reason Evicted, the message, DisruptionTarget True."""
    status = copy.deepcopy(pod.get("status") or {})
    stamp = rfc3339(now)
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != DISRUPTION_TARGET]
    conditions.append({"type": DISRUPTION_TARGET, "status": "True", "lastProbeTime": None,
                       "lastTransitionTime": stamp, "reason": TERMINATION_BY_KUBELET, "message": message})
    status.update(phase="Failed", reason=REASON, message=message, conditions=conditions)
    return status


class AgentEvictor:
    def __init__(self, client: ApiClient, docker: DockerAdapter, cache: RuntimeCache, pods: PodHandler, *,
                 minimum_grace: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.docker = docker
        self.cache = cache
        self.pods = pods
        self.minimum_grace = minimum_grace
        self.clock = clock

    async def evict(self, pod: Obj, grace_period: float, note: EvictionNote) -> None:
        uid = uid_of(pod)
        now = self.clock()
        try:
            stored = await write_status(self.client, pod, evicted_status(pod, note.message, now),
                                        recompute=lambda fresh: evicted_status(fresh, note.message, now))
        except ApiClientError as exc:
            stored = None
            log.warning("writing the evicted status of pod %s failed: %s; stopping its containers anyway",
                        key_of(pod), exc)
        if stored is not None:
            self.pods.on_pod(stored)
        runtime = await self.cache.refresh_pod(uid)
        running = [r for r in runtime.containers if r.running]
        timeout = max(self.minimum_grace, grace_period)
        await asyncio.gather(*(self._stop(r.id, r.container, key_of(pod), timeout) for r in running))
        self.pods.trigger(uid)

    async def _stop(self, container_id: str, name: str, pod: str, timeout: float) -> None:
        log.info("stopping container %s of evicted pod %s (grace %.0fs)", name, pod, timeout)
        try:
            await self.docker.stop(container_id, timeout)
        except DockerError as exc:
            log.warning("stopping container %s of pod %s failed: %s; killing it", name, pod, exc)
            try:
                await self.docker.kill(container_id)
            except DockerError:
                pass

    async def cleaned_up(self, pod: Obj) -> bool:
        runtime = await self.cache.refresh_pod(uid_of(pod))
        return not any(r.running for r in runtime.all)


class DockerReclaimer:
    def __init__(self, docker: DockerAdapter, cache: RuntimeCache, known_uids: Callable[[], Iterable[str]],
                 pinned_images: Sequence[str] = ()) -> None:
        self.docker = docker
        self.cache = cache
        self.known_uids = known_uids
        self.pinned_images = tuple(pinned_images)

    async def delete_unused_containers(self) -> None:
        """Dead containers of pods gone from the API."""
        await self.cache.relist()
        known = set(self.known_uids())
        removed = 0
        for uid in self.cache.uids() - known:
            for record in self.cache.pod(uid).all:
                if not record.running:
                    await self.docker.remove(record.id, force=False)
                    removed += 1
        if removed:
            log.info("disk pressure: removed %d dead containers", removed)
            await self.cache.relist()

    async def delete_unused_images(self) -> None:
        """Images no container (running or not, ours or not) uses; never the pinned ones."""
        api = self.docker.api
        used = {c.get("ImageID") for c in await self.docker.run_blocking(lambda: api.containers(all=True))}
        pinned = set()
        for ref in self.pinned_images:
            image = await self.docker.inspect_image(ref)
            if image is not None:
                pinned.add(image.get("Id"))
        freed = 0
        for image in await self.docker.run_blocking(api.images):
            image_id = image.get("Id")
            if image_id in used or image_id in pinned:
                continue
            try:
                await self.docker.run_blocking(lambda i=image_id: api.remove_image(i))
            except Exception as exc:  # in use meanwhile, or a parent of another image
                log.debug("disk pressure: image %s not removed: %s", image_id, exc)
                continue
            freed += int(image.get("Size") or 0)
            log.info("disk pressure: removed unused image %s (%s)", ", ".join(image.get("RepoTags") or []) or image_id,
                     image_id)
        if freed:
            log.info("disk pressure: freed %d bytes of unused images", freed)

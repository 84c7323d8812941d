"""The pod garbage collector (Kubernetes' podgc), one pass every ``gc_check_period``:

  * terminated pods (Succeeded or Failed) beyond --terminated-pod-gc-threshold are
    deleted, evicted ones first, then the oldest (a threshold of 0 turns this off);
  * pods bound to a node that no longer exists are marked Failed with the condition
    DisruptionTarget (reason DeletionByPodGC) and deleted with grace 0. A node missing
    from the cache is first quarantined for ``quarantine`` seconds and then confirmed
    gone with a live GET, so a Node the cache has not seen yet costs nobody their pods;
  * terminating pods on a node that is not Ready and carries the
    ``node.kubernetes.io/out-of-service`` taint are force-deleted the same way;
  * terminating pods that were never scheduled are force-deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from control_plane.controllers.settings import ControllerManagerSettings, current_settings
from control_plane.controllers.taints import rfc3339
from control_plane.controllers.workload_pods import condition, creation_time, is_terminal, meta
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, NotFound
from skiff.client.informer import SharedInformerFactory

log = logging.getLogger(__name__)

Obj = dict[str, Any]
GC_CHECK_PERIOD = 20.0  # seconds; podgc's gcCheckPeriod
QUARANTINE = 40.0  # seconds; podgc's quarantineTime
OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"


def is_evicted(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Failed" and status.get("reason") == "Evicted"


class PodGCController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | None = None, threshold: int | None = None,
                 gc_check_period: float = GC_CHECK_PERIOD, quarantine: float = QUARANTINE,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.client = client
        settings = settings or current_settings()
        self.threshold = settings.terminated_pod_gc_threshold if threshold is None else threshold
        self.period = gc_check_period
        self.quarantine = quarantine
        self.clock = clock
        self.wall_clock = wall_clock
        self.informers = informers or SharedInformerFactory(client)
        self.pods = self.informers.informer_for("pods")
        self.nodes = self.informers.informer_for("nodes")
        self._missing_since: dict[str, float] = {}  # node name -> when first found missing

    async def run(self) -> None:
        """One garbage collection pass per period, until cancelled; a failed pass is
        logged and the next one runs on time."""
        self.informers.start()
        await self.informers.wait_for_sync()
        while True:
            try:
                await self.gc()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next pass starts from the caches again
                log.exception("pod GC pass failed; next one in %gs", self.period)
            await asyncio.sleep(self.period)

    async def gc(self) -> None:
        pods = self.pods.list()
        nodes = {str(meta(n).get("name")): n for n in self.nodes.list()}
        if self.threshold > 0:
            await self.gc_terminated(pods)
        await self.gc_out_of_service(pods, nodes)
        await self.gc_orphaned(pods, nodes)
        await self.gc_unscheduled_terminating(pods)

    async def gc_terminated(self, pods: list[Obj]) -> None:
        terminated = [p for p in pods if is_terminal(p)]
        excess = len(terminated) - self.threshold
        if excess <= 0:
            return
        log.info("pod GC: %d terminated pods, threshold %d: deleting %d", len(terminated), self.threshold, excess)
        terminated.sort(key=lambda p: (not is_evicted(p), creation_time(p), str(meta(p).get("name"))))
        for pod in terminated[:excess]:
            await self._delete(pod, None)

    async def gc_orphaned(self, pods: list[Obj], nodes: Mapping[str, Obj]) -> None:
        now = self.clock()
        missing = {str((p.get("spec") or {}).get("nodeName")) for p in pods
                   if (p.get("spec") or {}).get("nodeName") and (p.get("spec") or {}).get("nodeName") not in nodes}
        for name in list(self._missing_since):
            if name not in missing:
                del self._missing_since[name]
        gone: set[str] = set()
        for name in missing:
            since = self._missing_since.setdefault(name, now)
            if now - since < self.quarantine:
                continue
            try:
                await self.client.get("nodes", name)
                continue  # the cache lags: the node is there
            except NotFound:
                gone.add(name)
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") in gone:
                log.info("pod GC: node %s is gone: deleting pod %s/%s", pod["spec"]["nodeName"],
                         meta(pod).get("namespace"), meta(pod).get("name"))
                await self._delete(pod, "PodGC: node no longer exists")

    async def gc_out_of_service(self, pods: list[Obj], nodes: Mapping[str, Obj]) -> None:
        out = set()
        for name, node in nodes.items():
            ready = condition(node, "Ready")
            taints = (node.get("spec") or {}).get("taints") or []
            if (ready is None or ready.get("status") != "True") and any(
                    t.get("key") == OUT_OF_SERVICE_TAINT for t in taints if isinstance(t, dict)):
                out.add(name)
        for pod in pods:
            if meta(pod).get("deletionTimestamp") and (pod.get("spec") or {}).get("nodeName") in out:
                await self._delete(pod, "PodGC: node is out-of-service")

    async def gc_unscheduled_terminating(self, pods: list[Obj]) -> None:
        for pod in pods:
            if meta(pod).get("deletionTimestamp") and not (pod.get("spec") or {}).get("nodeName"):
                await self._delete(pod, None)

    async def _delete(self, pod: Obj, why: str | None) -> None:
        """markFailedAndDeletePodWithCondition: a pod still running is first marked Failed
        (DisruptionTarget, reason DeletionByPodGC), then deleted with grace 0."""
        md = meta(pod)
        namespace, name = str(md.get("namespace")), str(md.get("name"))
        try:
            if why is not None and not is_terminal(pod):
                now = rfc3339(self.wall_clock())
                conditions = [c for c in (pod.get("status") or {}).get("conditions") or []
                              if c.get("type") != "DisruptionTarget"]
                conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                                   "message": why, "lastTransitionTime": now})
                await self.client.patch("pods", name, {"status": {"phase": "Failed", "conditions": conditions}},
                                        namespace, subresource="status")
            await self.client.delete("pods", name, namespace, grace_period_seconds=0,
                                     preconditions={"uid": str(md.get("uid"))})
        except NotFound:
            pass
        except ApiClientError as exc:
            log.warning("pod GC: deleting pod %s/%s failed: %s; trying again next pass", namespace, name, exc)

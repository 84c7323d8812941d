"""The DaemonSet controller (Kubernetes' daemon_controller.go and update.go).

``sync(namespace/name)``, level-triggered:

  * manage: on every node where the DaemonSet should run (nodeSelector, required node
    affinity, taints against its tolerations plus the daemon tolerations) and has no pod,
    a pod is created, pinned to the node by a required node affinity on metadata.name for
    the scheduler to bind; failed daemon pods are deleted (with a per-node backoff, and a
    FailedDaemonPod event); surplus pods on a node are deleted, oldest kept; pods on
    nodes where they may no longer run (an untolerated NoExecute taint, a selector that no
    longer matches) are deleted, as are unscheduled pods pinned to nodes that are gone;
  * rolling update: pods carry ``controller-revision-hash``, a hash of the template
    (ControllerRevisions are not served, so the hash only labels pods). Without maxSurge,
    old pods are deleted while at most maxUnavailable daemon pods are unavailable (an old
    pod that is unavailable anyway goes at once); with maxSurge, a new pod starts beside
    the old one, which goes once the new one is available;
  * status: desired/current/updated NumberScheduled, numberReady, numberAvailable
    (minReadySeconds), numberUnavailable, numberMisscheduled, observedGeneration.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from control_plane.controllers.daemon_placement import daemon_pod_spec, daemon_pod_template, should_run, target_node
from control_plane.controllers.deployment_util import compute_hash
from control_plane.controllers.events import NORMAL, WARNING, EventRecorder, EventSink
from control_plane.controllers.own_writes import OwnWrites
from control_plane.controllers.pod_control import slow_start_batch
from control_plane.controllers.settings import ControllerManagerSettings, current_settings
from control_plane.controllers.workload_pods import (
    FAILED,
    SUCCEEDED,
    controller_of,
    creation_time,
    is_available,
    is_ready,
    is_terminal,
    lingers_after_delete,
    meta,
    phase,
    pod_from_template,
)
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, Conflict, NotFound
from skiff.client.informer import SharedInformerFactory, object_key

log = logging.getLogger(__name__)

Obj = dict[str, Any]
REVISION_HASH = "controller-revision-hash"
FAILED_POD_BACKOFF = 1.0  # seconds, doubling per failure on a node
MAX_FAILED_POD_BACKOFF = 900.0


def scaled(value: Any, total: int, default: int) -> int:
    """intstr.GetScaledValueFromIntOrPercent, rounding up."""
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    if text.endswith("%"):
        try:
            return math.ceil(int(text[:-1]) * total / 100)
        except ValueError:
            return default
    try:
        return int(text)
    except ValueError:
        return default


def is_updated(pod: Mapping[str, Any], hash_: str) -> bool:
    return (meta(pod).get("labels") or {}).get(REVISION_HASH) == hash_


def oldest_first(pods: list[Obj]) -> list[Obj]:
    """podByCreationTimestampAndPhase: bound pods first, then by age, then by name."""
    return sorted(pods, key=lambda p: (not (p.get("spec") or {}).get("nodeName"), creation_time(p),
                                       str(meta(p).get("name"))))


def split_updated(pods: list[Obj], hash_: str) -> tuple[Obj | None, Obj | None, bool]:
    """findUpdatedPodsOnNode: (new pod, old pod, ok); not ok when either is doubled."""
    new: Obj | None = None
    old: Obj | None = None
    for pod in pods:
        if meta(pod).get("deletionTimestamp"):
            continue
        if is_updated(pod, hash_):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


class DaemonSetController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | None = None, events: EventSink | None = None,
                 workers: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        settings = settings or current_settings()
        self.workers = workers or settings.concurrency.concurrent_daemonset_syncs
        self.clock = clock
        self.informers = informers or SharedInformerFactory(client)
        self._recorder = EventRecorder(client, "daemonset-controller") if events is None else None
        self.record: EventSink = events or self._recorder  # type: ignore[assignment]
        self.queue = WorkQueue()
        self.own_pods = OwnWrites()
        self.own_sets = OwnWrites()
        self.pods_by_ds: dict[str, set[str]] = {}  # DaemonSet uid -> pod keys
        self._failed_backoff: dict[tuple[str, str], tuple[float, float]] = {}  # (ds uid, node) -> (delay, until)
        self.sets = self.informers.informer_for("daemonsets")
        self.pods = self.informers.informer_for("pods")
        self.nodes = self.informers.informer_for("nodes")
        self.sets.add_handlers(on_add=self._ds_changed, on_update=lambda old, new: self._ds_changed(new),
                               on_delete=self._ds_deleted)
        self.pods.add_handlers(on_add=self._pod_changed, on_update=lambda old, new: self._pod_changed(new, old),
                               on_delete=self._pod_deleted)
        self.nodes.add_handlers(on_add=lambda node: self._enqueue_all(), on_update=self._node_updated,
                                on_delete=lambda node: self._enqueue_all())

    # ---- informer events ---------------------------------------------------------------

    def _ds_changed(self, ds: Obj) -> None:
        self.own_sets.observe(ds)
        self.queue.add(object_key(ds))

    def _ds_deleted(self, ds: Obj) -> None:
        self.own_sets.observe_delete(ds)
        uid = str(meta(ds).get("uid"))
        for key in [k for k in self._failed_backoff if k[0] == uid]:
            del self._failed_backoff[key]

    @staticmethod
    def _ds_ref(pod: Mapping[str, Any]) -> dict[str, Any] | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "DaemonSet" or not str(ref.get("apiVersion", "")).startswith("apps/"):
            return None
        return ref

    def _pod_changed(self, pod: Obj, old: Obj | None = None) -> None:
        self.own_pods.observe(pod)
        key = object_key(pod)
        if old is not None:
            old_ref = self._ds_ref(old)
            if old_ref is not None and old_ref != self._ds_ref(pod):
                self._unindex(str(old_ref.get("uid")), key)
        ref = self._ds_ref(pod)
        if ref is None:
            return
        self.pods_by_ds.setdefault(str(ref.get("uid")), set()).add(key)
        self.queue.add(f"{meta(pod).get('namespace')}/{ref.get('name')}")

    def _pod_deleted(self, pod: Obj) -> None:
        self.own_pods.observe_delete(pod)
        ref = self._ds_ref(pod)
        if ref is not None:
            self._unindex(str(ref.get("uid")), object_key(pod))
            self.queue.add(f"{meta(pod).get('namespace')}/{ref.get('name')}")

    def _unindex(self, uid: str, pod_key: str) -> None:
        keys = self.pods_by_ds.get(uid)
        if keys is not None:
            keys.discard(pod_key)
            if not keys:
                del self.pods_by_ds[uid]

    def _node_updated(self, old: Obj, new: Obj) -> None:
        # Only what placement looks at: labels, taints, the name. Status (heartbeats) is not.
        if (meta(old).get("labels"), old.get("spec")) != (meta(new).get("labels"), new.get("spec")):
            self._enqueue_all()

    def _enqueue_all(self) -> None:
        for ds in self.sets.list():
            self.queue.add(object_key(ds))

    # ---- loop --------------------------------------------------------------------------

    async def run(self) -> None:
        recorder = asyncio.create_task(self._recorder.run()) if self._recorder else None
        self.informers.start()
        await self.informers.wait_for_sync()
        self.pods_by_ds.clear()
        for pod in self.pods.list():
            self._pod_changed(pod)
        self._enqueue_all()
        try:
            await asyncio.gather(*(run_worker(self.queue, self.sync, "daemonset-controller", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()
            if recorder is not None:
                recorder.cancel()

    def ds_pods(self, ds: Mapping[str, Any]) -> list[Obj]:
        uid = meta(ds).get("uid")
        cached = [p for p in (self.pods.get(k) for k in sorted(self.pods_by_ds.get(str(uid), ()))) if p]
        return self.own_pods.overlay(cached, lambda p: (controller_of(p) or {}).get("uid") == uid)

    def node_to_pods(self, ds: Mapping[str, Any]) -> dict[str, list[Obj]]:
        """getNodesToDaemonPods: pods by the node they run on or are pinned to; finished
        pods already being deleted do not count."""
        out: dict[str, list[Obj]] = {}
        for pod in self.ds_pods(ds):
            if is_terminal(pod) and meta(pod).get("deletionTimestamp"):
                continue
            node = target_node(pod)
            if node:
                out.setdefault(node, []).append(pod)
        return out

    async def sync(self, key: str) -> None:
        cached = self.own_sets.view(key, self.sets.get(key))
        if cached is None or meta(cached).get("deletionTimestamp"):
            return
        ds = copy.deepcopy(cached)
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        hash_ = compute_hash(template, (ds.get("status") or {}).get("collisionCount"))
        pod_spec = daemon_pod_spec(ds)
        nodes = self.nodes.list()
        placement = {str(meta(n).get("name")): should_run(n, pod_spec) for n in nodes}
        now = self.clock()
        await self.manage(key, ds, placement, hash_, now)
        if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
            await self.rolling_update(key, ds, placement, hash_, now)
        await self.update_status(key, ds, placement, hash_, now)

    # ---- manage ------------------------------------------------------------------------

    async def manage(self, key: str, ds: Obj, placement: dict[str, tuple[bool, bool]], hash_: str,
                     now: float) -> None:
        by_node = self.node_to_pods(ds)
        surge = self._allows_surge(ds)
        create: list[str] = []
        delete: list[Obj] = []
        for node, (run_here, keep_running) in placement.items():
            pods = by_node.get(node, [])
            if run_here and not pods:
                create.append(node)
            elif keep_running:
                running = []
                for pod in pods:
                    if meta(pod).get("deletionTimestamp"):
                        continue
                    if phase(pod) in (FAILED, SUCCEEDED):
                        if self._failed_pod_backing_off(key, ds, node, now):
                            continue
                        self.record(ds, WARNING, "FailedDaemonPod", f"Found failed daemon pod "
                                    f"{meta(pod).get('namespace')}/{meta(pod).get('name')} on node {node}, "
                                    f"will try to kill it")
                        delete.append(pod)
                    else:
                        running.append(pod)
                delete.extend(self._surplus(running, hash_, surge))
            else:
                delete.extend(p for p in pods if not meta(p).get("deletionTimestamp"))
        for node, pods in by_node.items():
            if node not in placement:
                # Pinned to a node that is gone: never scheduled, and PodGC only collects bound pods.
                delete.extend(p for p in pods if not (p.get("spec") or {}).get("nodeName")
                              and not meta(p).get("deletionTimestamp"))
        await self.sync_nodes(ds, delete, create, hash_)

    @staticmethod
    def _allows_surge(ds: Mapping[str, Any]) -> bool:
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return False
        return scaled((strategy.get("rollingUpdate") or {}).get("maxSurge"), 1, 0) > 0

    @staticmethod
    def _surplus(running: list[Obj], hash_: str, surge: bool) -> list[Obj]:
        """More than one daemon pod on a node: keep the oldest; when surging, an old pod
        that is ready may stay beside the oldest new one while that one is not ready."""
        if len(running) <= 1:
            return []
        ordered = oldest_first(running)
        if not surge:
            return ordered[1:]
        new = [p for p in ordered if is_updated(p, hash_)]
        old = [p for p in ordered if not is_updated(p, hash_)]
        keep: list[Obj] = []
        if new:
            keep.append(new[0])
            if old and is_ready(old[0]) and not is_ready(new[0]):
                keep.append(old[0])
        else:
            keep.append(old[0])
        kept = {meta(p).get("uid") for p in keep}
        return [p for p in ordered if meta(p).get("uid") not in kept]

    def _failed_pod_backing_off(self, key: str, ds: Obj, node: str, now: float) -> bool:
        """A failed daemon pod is replaced at most once per backoff period on a node
        (kubelets that keep rejecting a pod must not make the controller spin)."""
        bkey = (str(meta(ds).get("uid")), node)
        delay, until = self._failed_backoff.get(bkey, (0.0, 0.0))
        if now < until:
            self.queue.add_after(key, until - now)
            return True
        delay = min(delay * 2, MAX_FAILED_POD_BACKOFF) if delay else FAILED_POD_BACKOFF
        self._failed_backoff[bkey] = (delay, now + delay)
        return False

    async def sync_nodes(self, ds: Obj, delete: list[Obj], create: list[str], hash_: str) -> None:
        """syncNodes: create a pod for each node in ``create``, delete ``delete``."""
        errors: list[Exception] = []
        if create:
            pending = list(create)

            async def create_one() -> None:
                node = pending.pop(0)
                template = daemon_pod_template(ds["spec"]["template"], node)
                template.setdefault("metadata", {}).setdefault("labels", {})[REVISION_HASH] = hash_
                pod = pod_from_template(template, ds, "apps/v1", "DaemonSet")
                try:
                    created = await self.client.create("pods", pod, meta(ds).get("namespace"))
                except ApiClientError as exc:
                    self.record(ds, WARNING, "FailedCreate", f"Error creating: {exc}")
                    raise
                self.own_pods.written(created)
                self.record(ds, NORMAL, "SuccessfulCreate", f"Created pod: {meta(created).get('name')}")

            _, error = await slow_start_batch(len(create), 1, create_one)
            if error is not None:
                errors.append(error)
        for pod in delete:
            md = meta(pod)
            try:
                reply = await self.client.delete("pods", str(md.get("name")), md.get("namespace"),
                                                 preconditions={"uid": str(md.get("uid"))})
            except (NotFound, Conflict):
                self.own_pods.deleted(object_key(pod))
                continue
            except ApiClientError as exc:
                self.record(ds, WARNING, "FailedDelete", f"Error deleting: {exc}")
                errors.append(exc)
                continue
            if lingers_after_delete(reply):
                self.own_pods.written(reply)
            else:
                self.own_pods.deleted(object_key(pod))
            self.record(ds, NORMAL, "SuccessfulDelete", f"Deleted pod: {md.get('name')}")
        if create or delete:
            log.info("daemonset %s/%s: %d pod(s) created, %d deleted", meta(ds).get("namespace"),
                     meta(ds).get("name"), len(create), len(delete))
        if errors:
            raise errors[0]

    # ---- rolling update ----------------------------------------------------------------

    def _counts(self, ds: Mapping[str, Any], placement: dict[str, tuple[bool, bool]],
                by_node: dict[str, list[Obj]]) -> tuple[int, int]:
        """updatedDesiredNodeCounts: (maxSurge, maxUnavailable) for the desired node count."""
        desired = 0
        for node, (run_here, _) in placement.items():
            if run_here:
                desired += 1
                by_node.setdefault(node, [])
        rolling = (((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {})
        max_unavailable = scaled(rolling.get("maxUnavailable"), desired, 1)
        max_surge = scaled(rolling.get("maxSurge"), desired, 0)
        if desired > 0 and max_unavailable == 0 and max_surge == 0:
            max_unavailable = 1
        return max_surge, max_unavailable

    async def rolling_update(self, key: str, ds: Obj, placement: dict[str, tuple[bool, bool]], hash_: str,
                             now: float) -> None:
        by_node = self.node_to_pods(ds)
        max_surge, max_unavailable = self._counts(ds, placement, by_node)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)

        def available(pod: Obj) -> bool:
            return is_available(pod, min_ready, now)

        if max_surge == 0:
            unavailable = 0
            replace_now: list[Obj] = []
            candidates: list[Obj] = []
            for node in sorted(by_node):
                new, old, ok = split_updated(by_node[node], hash_)
                if not ok or (new is None) == (old is None):
                    unavailable += 1  # the manage step sorts this node out; count it unavailable
                elif new is not None:
                    unavailable += 0 if available(new) else 1
                elif old is not None and not available(old):
                    replace_now.append(old)
                elif unavailable < max_unavailable and old is not None:
                    candidates.append(old)
            room = max(0, min(max_unavailable - unavailable, len(candidates)))
            await self.sync_nodes(ds, replace_now + candidates[:room], [], hash_)
            return
        surging = 0
        to_delete: list[Obj] = []
        allowed_nodes: list[str] = []
        candidate_nodes: list[str] = []
        for node in sorted(by_node):
            new, old, ok = split_updated(by_node[node], hash_)
            if not ok or old is None:
                continue
            if new is None:
                if not available(old):
                    allowed_nodes.append(node)  # the old pod is down anyway: replace it now
                elif surging < max_surge:
                    candidate_nodes.append(node)
            elif not available(new):
                surging += 1  # waiting for the new pod
            else:
                to_delete.append(old)  # the new pod is up: the old one goes
        room = max(0, min(max_surge - surging, len(candidate_nodes)))
        await self.sync_nodes(ds, to_delete, allowed_nodes + candidate_nodes[:room], hash_)

    # ---- status ------------------------------------------------------------------------

    async def update_status(self, key: str, ds: Obj, placement: dict[str, tuple[bool, bool]], hash_: str,
                            now: float) -> None:
        by_node = self.node_to_pods(ds)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        desired = current = ready = available = updated = misscheduled = 0
        wake: float | None = None
        for node, (run_here, _) in placement.items():
            pods = by_node.get(node, [])
            if not run_here:
                misscheduled += 1 if pods else 0
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            pod = oldest_first(pods)[0]
            if is_ready(pod):
                ready += 1
                if is_available(pod, min_ready, now):
                    available += 1
                elif min_ready:
                    wake = min(wake or float(min_ready), float(min_ready))
            if is_updated(pod, hash_):
                updated += 1
        status = dict(ds.get("status") or {})
        status.update({"currentNumberScheduled": current, "numberMisscheduled": misscheduled,
                       "desiredNumberScheduled": desired, "numberReady": ready,
                       "observedGeneration": meta(ds).get("generation")})
        for name, value in (("updatedNumberScheduled", updated), ("numberAvailable", available),
                            ("numberUnavailable", desired - available)):
            if value:
                status[name] = value
            else:
                status.pop(name, None)  # omitempty
        if wake is not None:
            self.queue.add_after(key, wake)
        if status == (ds.get("status") or {}):
            return
        ds["status"] = status
        try:
            self.own_sets.written(await self.client.update_status("daemonsets", ds, meta(ds).get("namespace")))
        except (Conflict, NotFound):
            raise RuntimeError(f"daemonset {key} changed meanwhile") from None

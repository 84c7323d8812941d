"""The ReplicaSet controller (kube-controller-manager's replica_set.go).

``sync(namespace/name)`` reads the ReplicaSet and the pods of its namespace from the
shared informers and converges:

1. claim: keep the active pods it controls that still match its selector, release the
   ones that no longer match, adopt matching orphans (see `owners`);
2. manage, unless creates or deletes it asked for are still unseen (expectations) or the
   ReplicaSet is being deleted: too few pods -> create from ``spec.template`` in slow-start
   batches of 1, 2, 4, ...; too many -> delete the least valuable ones first (see
   `pod_control.pods_to_delete`); at most ``burst_replicas`` either way per sync;
3. status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (Ready for
   ``minReadySeconds``), observedGeneration, and a ReplicaFailure condition while creates
   or deletes fail. If a pod will become available later, the key comes back then.

Pods that are finished (Succeeded/Failed) or being deleted do not count.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from control_plane.controllers.events import EventRecorder
from control_plane.controllers.expectations import ControllerExpectations
from control_plane.controllers.informers import NamespaceIndex, WrittenVersions
from control_plane.controllers.owners import ControllerRefManager, owner_recheck
from control_plane.controllers.pod_control import (
    SLOW_START_INITIAL_BATCH_SIZE,
    PodControl,
    namespace_terminating,
    pods_to_delete,
    slow_start_batch,
)
from control_plane.controllers.settings import current_settings
from control_plane.controllers.taints import parse_time
from control_plane.controllers.workload_pods import condition, controller_of, is_active, is_available, is_ready, meta
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.api.selectors import LabelSelector, SelectorError
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, Conflict, NotFound
from skiff.client.informer import SharedInformerFactory, object_key

log = logging.getLogger(__name__)

Obj = dict[str, Any]

API_VERSION = "apps/v1"
KIND = "ReplicaSet"
BURST_REPLICAS = 500  # replicaset.BurstReplicas: creates/deletes per sync at most
STATUS_UPDATE_RETRIES = 1
REPLICA_FAILURE = "ReplicaFailure"
AVAILABILITY_SLACK = 0.05  # seconds past the moment a pod turns available before looking again


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def spec_replicas(obj: Mapping[str, Any]) -> int:
    replicas = (obj.get("spec") or {}).get("replicas")
    return int(replicas) if isinstance(replicas, int) else 1


def _omit_zero(status: Obj, *names: str) -> Obj:
    """Kubernetes leaves omitempty counters out of the JSON when they are 0."""
    for name in names:
        if not status.get(name):
            status.pop(name, None)
    return status


def calculate_status(rs: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], manage_error: Exception | None,
                     now: float) -> Obj:
    """The status a sync writes (replica_set_utils.calculateStatus); observedGeneration is
    set by the write itself."""
    spec = rs.get("spec") or {}
    status: Obj = copy.deepcopy(dict(rs.get("status") or {}))
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    min_ready = spec.get("minReadySeconds") or 0
    fully_labeled = ready = available = 0
    for pod in pods:
        labels = meta(pod).get("labels") or {}
        if all(labels.get(k) == v for k, v in template_labels.items()):
            fully_labeled += 1
        if is_ready(pod):
            ready += 1
            if is_available(pod, min_ready, now):
                available += 1
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    failure = next((c for c in conditions if c.get("type") == REPLICA_FAILURE), None)
    if manage_error is not None and failure is None:
        diff = len(pods) - spec_replicas(rs)
        reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
        conditions.append({"type": REPLICA_FAILURE, "status": "True", "lastTransitionTime": rfc3339(now),
                           "reason": reason, "message": str(manage_error)})
    elif manage_error is None and failure is not None:
        conditions.remove(failure)
    status["conditions"] = conditions
    status.update(replicas=len(pods), fullyLabeledReplicas=fully_labeled, readyReplicas=ready,
                  availableReplicas=available)
    return _omit_zero(status, "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration",
                      "conditions")


def status_unchanged(rs: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    old = rs.get("status") or {}
    counters = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")
    return (all((old.get(k) or 0) == (new.get(k) or 0) for k in counters)
            and (meta(rs).get("generation") or 0) == (old.get("observedGeneration") or 0)
            and (old.get("conditions") or []) == (new.get("conditions") or []))


def seconds_until_available(rs: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: float) -> float | None:
    """When the next Ready pod will have been Ready for minReadySeconds; None if none will."""
    min_ready = (rs.get("spec") or {}).get("minReadySeconds") or 0
    if not min_ready:
        return None
    soonest: float | None = None
    for pod in pods:
        if not is_ready(pod) or is_available(pod, min_ready, now):
            continue
        since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
        at = (since if since is not None else now) + min_ready
        soonest = at if soonest is None else min(soonest, at)
    return None if soonest is None else max(soonest - now, 0.0)


def pod_key(pod: Mapping[str, Any]) -> str:
    return object_key(pod)


class ReplicaSetController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory, *, workers: int | None = None,
                 burst_replicas: int = BURST_REPLICAS, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.workers = workers or current_settings().concurrency.concurrent_replicaset_syncs
        self.burst_replicas = burst_replicas
        self._clock = clock
        self.queue = WorkQueue()
        self.expectations = ControllerExpectations()
        self.written = WrittenVersions()
        self.recorder = EventRecorder(client, "replicaset-controller")
        self.pod_control = PodControl(client, self.recorder)
        self.rs_informer = informers.informer_for("replicasets")
        self.pod_informer = informers.informer_for("pods")
        self.replica_sets = NamespaceIndex(self.rs_informer)
        self.pods = NamespaceIndex(self.pod_informer)
        self.rs_informer.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                                      on_delete=self._rs_deleted)
        self.pod_informer.add_handlers(on_add=self._pod_added, on_update=self._pod_updated,
                                       on_delete=self._pod_deleted)

    async def run(self) -> None:
        """The workers and the event writer; the manager runs the shared informers."""
        try:
            await asyncio.gather(self.recorder.run(),
                                 *(run_worker(self.queue, self.sync, "replicaset-controller", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()

    # ---- informer handlers: they only mark keys dirty -----------------------------------

    def _enqueue(self, rs: Obj) -> None:
        self.queue.add(object_key(rs))

    def _rs_deleted(self, rs: Obj) -> None:
        self.written.forget(rs)
        key = object_key(rs)
        self.expectations.delete(key)
        self.queue.add(key)

    def _resolve(self, namespace: str, ref: Mapping[str, Any]) -> Obj | None:
        """The ReplicaSet a controller reference names, if it is the one cached (same UID)."""
        if ref.get("kind") != KIND or str(ref.get("apiVersion") or "").split("/")[0] != "apps":
            return None
        rs = self.rs_informer.get(f"{namespace}/{ref.get('name')}")
        if rs is None or meta(rs).get("uid") != ref.get("uid"):
            return None
        return rs

    def _matching_replica_sets(self, pod: Obj) -> list[Obj]:
        labels = meta(pod).get("labels") or {}
        found = []
        for rs in self.replica_sets.list(str(meta(pod).get("namespace"))):
            try:
                selector = LabelSelector.from_dict((rs.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if not selector.empty and selector.matches(labels):
                found.append(rs)
        return found

    def _pod_added(self, pod: Obj) -> None:
        if meta(pod).get("deletionTimestamp"):
            self._pod_deleted(pod)  # e.g. seen first after a restart, already terminating
            return
        ref = controller_of(pod)
        if ref is not None:
            rs = self._resolve(str(meta(pod).get("namespace")), ref)
            if rs is not None:
                key = object_key(rs)
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        for rs in self._matching_replica_sets(pod):  # an orphan: whoever matches may adopt it
            self._enqueue(rs)

    def _pod_updated(self, old: Obj, cur: Obj) -> None:
        if meta(old).get("resourceVersion") == meta(cur).get("resourceVersion"):
            return  # a resync: nothing changed
        labels_changed = meta(old).get("labels") != meta(cur).get("labels")
        if meta(cur).get("deletionTimestamp"):
            # A graceful delete: replace the pod now rather than when the node confirms.
            self._pod_deleted(cur)
            if labels_changed:
                self._pod_deleted(old)
            return
        cur_ref, old_ref = controller_of(cur), controller_of(old)
        ref_changed = cur_ref != old_ref
        namespace = str(meta(cur).get("namespace"))
        if ref_changed and old_ref is not None:
            rs = self._resolve(namespace, old_ref)
            if rs is not None:
                self._enqueue(rs)
        if cur_ref is not None:
            rs = self._resolve(namespace, cur_ref)
            if rs is not None:
                self._enqueue(rs)
            return
        if labels_changed or ref_changed:
            for rs in self._matching_replica_sets(cur):
                self._enqueue(rs)

    def _pod_deleted(self, pod: Obj) -> None:
        ref = controller_of(pod)
        if ref is None:
            return
        rs = self._resolve(str(meta(pod).get("namespace")), ref)
        if rs is None:
            return
        key = object_key(rs)
        self.expectations.deletion_observed(key, pod_key(pod))
        self.queue.add(key)

    # ---- the reconcile -----------------------------------------------------------------

    async def sync(self, key: str) -> None:
        rs = self.rs_informer.get(key)
        if rs is None:
            self.expectations.delete(key)
            return
        if self.written.stale(rs):
            log.debug("replicaset %s: the cache is older than our last status write; waiting for it", key)
            return
        namespace = str(meta(rs).get("namespace"))
        needs_sync = self.expectations.satisfied(key)
        try:
            selector = LabelSelector.from_dict((rs.get("spec") or {}).get("selector"))
        except SelectorError as exc:
            log.error("replicaset %s: invalid selector: %s; not syncing", key, exc)
            return
        active = [pod for pod in self.pods.list(namespace) if is_active(pod)]
        manager = ControllerRefManager(self.client, rs, API_VERSION, KIND, selector,
                                       owner_recheck(self.client, "replicasets", rs))
        pods = await manager.claim("pods", active)
        manage_error: ApiClientError | None = None
        if needs_sync and not meta(rs).get("deletionTimestamp"):
            try:
                await self.manage_replicas(key, rs, pods)
            except ApiClientError as exc:
                manage_error = exc
        else:
            creates, deletes = self.expectations.pending(key)
            log.debug("replicaset %s: waiting to observe %d create(s), %d delete(s)", key, creates, deletes)
        now = self._clock()
        await self.update_status(rs, calculate_status(rs, pods, manage_error, now))
        delay = seconds_until_available(rs, pods, now)
        if delay is not None:
            self.queue.add_after(key, delay + AVAILABILITY_SLACK)
        if manage_error is not None:
            raise manage_error

    async def manage_replicas(self, key: str, rs: Obj, pods: list[Obj]) -> None:
        diff = len(pods) - spec_replicas(rs)
        if diff < 0:
            await self._create_pods(key, rs, min(-diff, self.burst_replicas), len(pods))
        elif diff > 0:
            await self._delete_pods(key, rs, pods, min(diff, self.burst_replicas))

    async def _create_pods(self, key: str, rs: Obj, count: int, have: int) -> None:
        # Expect them all before the first create: the informer may deliver a new pod
        # before the create call returns.
        self.expectations.expect_creations(key, count)
        log.info("replicaset %s: too few replicas (%d, want %d); creating %d", key, have, spec_replicas(rs), count)
        template = (rs.get("spec") or {}).get("template") or {}

        async def create() -> None:
            try:
                await self.pod_control.create_pod(template, rs, API_VERSION, KIND)
            except ApiClientError as exc:
                if not namespace_terminating(exc):
                    raise

        successes, error = await slow_start_batch(count, SLOW_START_INITIAL_BATCH_SIZE, create)
        skipped = count - successes
        if skipped:
            # Pods never created will never be observed: stop expecting them.
            log.info("replicaset %s: slow start stopped after %d of %d creates; the next sync retries",
                     key, successes, count)
            for _ in range(skipped):
                self.expectations.creation_observed(key)
        if error is not None:
            raise error

    async def _delete_pods(self, key: str, rs: Obj, pods: list[Obj], count: int) -> None:
        namespace = str(meta(rs).get("namespace"))
        victims = pods_to_delete(pods, self._related_pods(rs), count)
        log.info("replicaset %s: too many replicas (%d, want %d); deleting %s", key, len(pods), spec_replicas(rs),
                 ", ".join(str(meta(p).get("name")) for p in victims))
        self.expectations.expect_deletions(key, [pod_key(p) for p in victims])

        async def delete(pod: Obj) -> None:
            try:
                await self.pod_control.delete_pod(namespace, str(meta(pod).get("name")), rs)
            except ApiClientError as exc:
                # No deletion event will come for this one.
                self.expectations.deletion_observed(key, pod_key(pod))
                if not isinstance(exc, NotFound):
                    raise

        results = await asyncio.gather(*(delete(p) for p in victims), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise errors[0]

    def _related_pods(self, rs: Obj) -> list[Obj]:
        """Pods of every ReplicaSet with the same controller (a Deployment's old and new
        ReplicaSets): deletion prefers pods doubled up on a node with these."""
        owner = controller_of(rs)
        namespace = str(meta(rs).get("namespace"))
        if owner is None:
            owners = {meta(rs).get("uid")}
        else:
            owners = {meta(r).get("uid") for r in self.replica_sets.list(namespace)
                      if (controller_of(r) or {}).get("uid") == owner.get("uid")}
        return [p for p in self.pods.list(namespace) if (controller_of(p) or {}).get("uid") in owners]

    async def update_status(self, rs: Obj, status: Obj) -> Obj:
        """Write ``status`` unless nothing changed; on a conflict re-read and try once more."""
        if status_unchanged(rs, status):
            return rs
        generation = meta(rs).get("generation") or 0
        if generation:
            status["observedGeneration"] = generation
        current = rs
        for attempt in range(STATUS_UPDATE_RETRIES + 1):
            body = {**current, "status": status}
            try:
                updated: Obj = await self.client.update_status("replicasets", body)
                self.written.wrote(updated)
                return updated
            except Conflict:
                if attempt >= STATUS_UPDATE_RETRIES:
                    raise
                md = meta(current)
                current = await self.client.get("replicasets", str(md.get("name")), md.get("namespace"))
        raise AssertionError("unreachable")

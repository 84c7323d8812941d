"""The Deployment controller (kube-controller-manager's deployment_controller.go, sync.go,
rolling.go, recreate.go, progress.go).

``sync(namespace/name)`` works on a copy of the cached Deployment and its ReplicaSets:

1. claim the ReplicaSets its selector matches (adopt orphans, release strays);
2. being deleted -> only status; paused -> only scaling (proportionally across the
   ReplicaSets) and history cleanup; a changed ``spec.replicas`` -> scaling likewise;
3. otherwise roll out: the *new* ReplicaSet is the one whose template equals the
   Deployment's (ignoring pod-template-hash); if none, it is created as
   ``<name>-<hash>`` with the hash label added to its selector and template. Its revision
   annotation is the highest old revision + 1, so an old ReplicaSet whose template comes
   back (``kubectl rollout undo``) is reused and gets the new revision.

   * RollingUpdate: grow the new ReplicaSet while all pods stay within replicas +
     maxSurge; shrink old ones, unhealthy pods first, while available pods stay at
     least replicas - maxUnavailable (see `deployment_util` for how pods are counted).
   * Recreate: scale every old ReplicaSet to 0, wait until none of their pods is left,
     then create/scale the new one.
4. status: counts, the Available condition, and the Progressing condition with its
   deadline (``progressDeadlineSeconds``); a Deployment that is not progressing is
   looked at again when its deadline passes. Old ReplicaSets scaled to 0 beyond
   ``revisionHistoryLimit`` are deleted once the rollout is complete.

Every write carries the resourceVersion it was computed from, so a sync that raced with
another writer fails with a conflict and runs again on fresh data.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from control_plane.controllers import deployment_util as du
from control_plane.controllers.events import NORMAL, WARNING, EventRecorder
from control_plane.controllers.informers import NamespaceIndex, WrittenVersions
from control_plane.controllers.owners import ControllerRefManager, owner_recheck
from control_plane.controllers.pod_control import namespace_terminating
from control_plane.controllers.settings import current_settings
from control_plane.controllers.taints import parse_time
from control_plane.controllers.workload_pods import controller_of, controller_reference, meta, phase
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.api.selectors import LabelSelector, SelectorError
from skiff.client.api import ApiClient
from skiff.client.errors import AlreadyExists, ApiClientError, NotFound
from skiff.client.informer import SharedInformerFactory, object_key

log = logging.getLogger(__name__)

Obj = dict[str, Any]

API_VERSION = "apps/v1"
KIND = "Deployment"
PROGRESS_CHECK_SLACK = 0.1  # seconds past a progress deadline before checking it


def _refresh(target: Obj, reply: Mapping[str, Any]) -> Obj:
    """Make our working copy the server's reply, in place: every list holding it sees it."""
    target.clear()
    target.update(copy.deepcopy(dict(reply)))
    return target


def _name(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name"))


class DeploymentController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory, *, workers: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.workers = workers or current_settings().concurrency.concurrent_deployment_syncs
        self._clock = clock
        self.queue = WorkQueue()
        self.recorder = EventRecorder(client, "deployment-controller")
        self.d_informer = informers.informer_for("deployments")
        self.rs_informer = informers.informer_for("replicasets")
        self.pod_informer = informers.informer_for("pods")
        self.deployments = NamespaceIndex(self.d_informer)
        self.replica_sets = NamespaceIndex(self.rs_informer)
        self.pods = NamespaceIndex(self.pod_informer)
        self.written_deployments = WrittenVersions()
        self.written_replica_sets = WrittenVersions()
        self.d_informer.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                                     on_delete=self._deployment_deleted)
        self.rs_informer.add_handlers(on_add=self._rs_added, on_update=self._rs_updated,
                                      on_delete=self._rs_deleted)
        self.pod_informer.add_handlers(on_delete=self._pod_deleted)

    async def run(self) -> None:
        """The workers and the event writer; the manager runs the shared informers."""
        try:
            await asyncio.gather(self.recorder.run(),
                                 *(run_worker(self.queue, self.sync, "deployment-controller", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()

    # ---- informer handlers: they only mark keys dirty -----------------------------------

    def _enqueue(self, d: Obj) -> None:
        self.queue.add(object_key(d))

    def _deployment_deleted(self, d: Obj) -> None:
        self.written_deployments.forget(d)
        self._enqueue(d)

    def _resolve(self, namespace: str, ref: Mapping[str, Any]) -> Obj | None:
        if ref.get("kind") != KIND or str(ref.get("apiVersion") or "").split("/")[0] != "apps":
            return None
        d = self.d_informer.get(f"{namespace}/{ref.get('name')}")
        if d is None or meta(d).get("uid") != ref.get("uid"):
            return None
        return d

    def _deployments_matching(self, rs: Obj) -> list[Obj]:
        labels = meta(rs).get("labels") or {}
        found = []
        for d in self.deployments.list(str(meta(rs).get("namespace"))):
            try:
                selector = LabelSelector.from_dict(du.spec_of(d).get("selector"))
            except SelectorError:
                continue
            if not selector.empty and selector.matches(labels):
                found.append(d)
        return found

    def _rs_added(self, rs: Obj) -> None:
        if meta(rs).get("deletionTimestamp"):
            self._rs_deleted(rs)
            return
        ref = controller_of(rs)
        if ref is not None:
            d = self._resolve(str(meta(rs).get("namespace")), ref)
            if d is not None:
                self._enqueue(d)
            return
        for d in self._deployments_matching(rs):
            self._enqueue(d)

    def _rs_updated(self, old: Obj, cur: Obj) -> None:
        if meta(old).get("resourceVersion") == meta(cur).get("resourceVersion"):
            return
        namespace = str(meta(cur).get("namespace"))
        cur_ref, old_ref = controller_of(cur), controller_of(old)
        ref_changed = cur_ref != old_ref
        if ref_changed and old_ref is not None:
            d = self._resolve(namespace, old_ref)
            if d is not None:
                self._enqueue(d)
        if cur_ref is not None:
            d = self._resolve(namespace, cur_ref)
            if d is not None:
                self._enqueue(d)
            return
        if ref_changed or meta(old).get("labels") != meta(cur).get("labels"):
            for d in self._deployments_matching(cur):
                self._enqueue(d)

    def _rs_deleted(self, rs: Obj) -> None:
        self.written_replica_sets.forget(rs)
        ref = controller_of(rs)
        if ref is not None:
            d = self._resolve(str(meta(rs).get("namespace")), ref)
            if d is not None:
                self._enqueue(d)

    def _pod_deleted(self, pod: Obj) -> None:
        # Only Recreate waits for pods: the last old pod gone lets the new ReplicaSet start.
        namespace = str(meta(pod).get("namespace"))
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.rs_informer.get(f"{namespace}/{ref.get('name')}")
        rs_ref = controller_of(rs) if rs is not None and meta(rs).get("uid") == ref.get("uid") else None
        d = self._resolve(namespace, rs_ref) if rs_ref is not None else None
        if d is not None and du.strategy_type(d) == du.RECREATE:
            self._enqueue(d)

    # ---- the reconcile -----------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.d_informer.get(key)
        if cached is None:
            log.debug("deployment %s has been deleted", key)
            return
        namespace = str(meta(cached).get("namespace"))
        if self.written_deployments.stale(cached) or \
                any([self.written_replica_sets.stale(rs) for rs in self.replica_sets.list(namespace)]):
            log.debug("deployment %s: the cache is older than our last write; waiting for it", key)
            return
        d = copy.deepcopy(cached)
        if du.spec_of(d).get("selector") == {}:
            self.recorder(d, WARNING, "SelectingAll",
                          "This deployment is selecting all pods. A non-empty selector is required.")
            if du.status_count(d, "observedGeneration") < (meta(d).get("generation") or 0):
                du.status_of(d)["observedGeneration"] = meta(d).get("generation")
                await self._update_status(d)
            return
        rs_list = await self._claim_replica_sets(d)
        if meta(d).get("deletionTimestamp"):
            new_rs, old_rss = await self._get_all_and_sync_revision(d, rs_list, create=False)
            await self._sync_deployment_status([*old_rss, new_rs], new_rs, d)
            return
        await self._check_paused_conditions(d)
        if du.spec_of(d).get("paused") or await self._is_scaling_event(d, rs_list):
            await self._sync_scaling(d, rs_list)
        elif du.strategy_type(d) == du.RECREATE:
            await self._rollout_recreate(d, rs_list)
        else:
            await self._rollout_rolling(d, rs_list)

    async def _claim_replica_sets(self, d: Obj) -> list[Obj]:
        selector = LabelSelector.from_dict(du.spec_of(d).get("selector"))
        manager = ControllerRefManager(self.client, d, API_VERSION, KIND, selector,
                                       owner_recheck(self.client, "deployments", d))
        claimed = await manager.claim("replicasets", self.replica_sets.list(str(meta(d).get("namespace"))))
        return [copy.deepcopy(rs) for rs in claimed]

    # ---- writes ------------------------------------------------------------------------

    async def _update_status(self, d: Obj) -> None:
        _refresh(d, await self.client.update_status("deployments", d))
        self.written_deployments.wrote(d)

    async def _persist_revision(self, d: Obj) -> None:
        """The revision annotation lives in metadata, which a status write leaves alone."""
        patch = {"metadata": {"resourceVersion": meta(d).get("resourceVersion"),
                              "annotations": {du.REVISION: du.annotations_of(d).get(du.REVISION)}}}
        status = copy.deepcopy(du.status_of(d))
        _refresh(d, await self.client.patch("deployments", _name(d), patch, meta(d).get("namespace")))
        self.written_deployments.wrote(d)
        d["status"] = status  # keep the conditions this sync computed and has yet to write

    async def _scale_replica_set(self, rs: Obj, new_scale: int, d: Obj, operation: str | None = None) -> bool:
        """Set spec.replicas (and the desired/max annotations); True if the size changed."""
        old_scale = du.replicas(rs)
        size_changes = old_scale != new_scale
        desired, max_replicas = du.replicas(d), du.replicas(d) + du.max_surge(d)
        if not size_changes and not du.replicas_annotations_need_update(rs, desired, max_replicas):
            return False
        body = copy.deepcopy(rs)
        body["spec"]["replicas"] = new_scale
        du.set_replicas_annotations(body, desired, max_replicas)
        _refresh(rs, await self.client.replace("replicasets", body))
        self.written_replica_sets.wrote(rs)
        if size_changes:
            operation = operation or ("up" if new_scale > old_scale else "down")
            log.info("deployment %s/%s: scaled %s replica set %s to %d from %d", meta(d).get("namespace"), _name(d),
                     operation, _name(rs), new_scale, old_scale)
            self.recorder(d, NORMAL, "ScalingReplicaSet",
                          f"Scaled {operation} replica set {_name(rs)} to {new_scale} from {old_scale}")
        return size_changes

    # ---- new and old ReplicaSets -------------------------------------------------------

    async def _get_all_and_sync_revision(self, d: Obj, rs_list: list[Obj],
                                         create: bool) -> tuple[Obj | None, list[Obj]]:
        _, all_old = du.find_old_replica_sets(d, rs_list)
        new_rs = await self._get_new_replica_set(d, rs_list, all_old, create)
        return new_rs, all_old

    async def _get_new_replica_set(self, d: Obj, rs_list: list[Obj], old_rss: list[Obj],
                                   create: bool) -> Obj | None:
        existing = du.find_new_replica_set(d, rs_list)
        new_revision = du.max_revision(old_rss) + 1
        if existing is not None:
            return await self._sync_existing_new_replica_set(d, existing, new_revision)
        if not create:
            return None
        return await self._create_new_replica_set(d, rs_list, old_rss, new_revision)

    async def _sync_existing_new_replica_set(self, d: Obj, rs: Obj, new_revision: int) -> Obj:
        body = copy.deepcopy(rs)
        annotations_changed = du.set_new_replica_set_annotations(d, body, new_revision, exists=True)
        min_ready = du.spec_of(d).get("minReadySeconds") or 0
        if annotations_changed or (du.spec_of(body).get("minReadySeconds") or 0) != min_ready:
            body["spec"]["minReadySeconds"] = min_ready
            # The Deployment's revision follows on the sync this update triggers.
            _refresh(rs, await self.client.replace("replicasets", body))
            self.written_replica_sets.wrote(rs)
            return rs
        revision_changed = du.set_deployment_revision(d, du.annotations_of(rs).get(du.REVISION) or "")
        status_changed = False
        if du.has_progress_deadline(d) and du.get_condition(du.status_of(d), du.PROGRESSING) is None:
            # Progress is tracked from the first time we saw this ReplicaSet.
            du.set_condition(d.setdefault("status", {}), du.new_condition(
                du.PROGRESSING, "True", du.FOUND_NEW_RS_REASON, f'Found new replica set "{_name(rs)}"',
                self._clock()))
            status_changed = True
        if revision_changed:
            await self._persist_revision(d)
        if status_changed:
            await self._update_status(d)
        return rs

    async def _create_new_replica_set(self, d: Obj, rs_list: list[Obj], old_rss: list[Obj],
                                      new_revision: int) -> Obj:
        namespace = str(meta(d).get("namespace"))
        template = copy.deepcopy(du.template_of(d))
        collision_count = du.status_of(d).get("collisionCount")
        pod_hash = du.compute_hash(template, collision_count)
        labels = {**((template.get("metadata") or {}).get("labels") or {}), du.POD_TEMPLATE_HASH: pod_hash}
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(du.spec_of(d).get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), du.POD_TEMPLATE_HASH: pod_hash}
        name = f"{_name(d)}-{pod_hash}"
        new_rs: Obj = {
            "apiVersion": API_VERSION, "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                         "ownerReferences": [controller_reference(d, API_VERSION, KIND)]},
            "spec": {"replicas": 0, "minReadySeconds": du.spec_of(d).get("minReadySeconds") or 0,
                     "selector": selector, "template": template},
        }
        count = du.new_rs_new_replicas(d, [*old_rss, new_rs], new_rs)
        new_rs["spec"]["replicas"] = count
        du.set_new_replica_set_annotations(d, new_rs, new_revision, exists=False)
        already_exists = False
        try:
            created = await self.client.create("replicasets", new_rs, namespace)
        except AlreadyExists:
            already_exists = True
            created = await self._existing_or_collision(d, name)
        except ApiClientError as exc:
            if namespace_terminating(exc):
                raise
            message = f'Failed to create new replica set "{name}": {exc}'
            if du.has_progress_deadline(d):
                du.set_condition(d.setdefault("status", {}), du.new_condition(
                    du.PROGRESSING, "False", du.FAILED_RS_CREATE_REASON, message, self._clock()))
                try:
                    await self._update_status(d)
                except ApiClientError:
                    pass  # the create failure is the news; it is raised below
            self.recorder(d, WARNING, du.FAILED_RS_CREATE_REASON, message)
            raise
        created = copy.deepcopy(created)
        if not already_exists:
            self.written_replica_sets.wrote(created)
            rs_list.append(created)
            log.info("deployment %s/%s: created replica set %s (revision %d, %d replicas)", namespace, _name(d),
                     name, new_revision, count)
            if count > 0:
                self.recorder(d, NORMAL, "ScalingReplicaSet", f"Scaled up replica set {name} from 0 to {count}")
        revision_changed = du.set_deployment_revision(d, str(new_revision))
        status_changed = False
        if not already_exists and du.has_progress_deadline(d):
            du.set_condition(d.setdefault("status", {}), du.new_condition(
                du.PROGRESSING, "True", du.NEW_RS_REASON, f'Created new replica set "{name}"', self._clock()))
            status_changed = True
        if revision_changed:
            await self._persist_revision(d)
        if status_changed:
            await self._update_status(d)
        return created

    async def _existing_or_collision(self, d: Obj, name: str) -> Obj:
        """The name is taken: ours with our template (a stale cache) is fine; anything else
        is a hash collision, answered by bumping status.collisionCount and retrying."""
        namespace = str(meta(d).get("namespace"))
        rs = self.rs_informer.get(f"{namespace}/{name}") or await self.client.get("replicasets", name, namespace)
        ref = controller_of(rs)
        if ref is not None and ref.get("uid") == meta(d).get("uid") and \
                du.equal_ignore_hash(du.template_of(d), du.template_of(rs)):
            return rs
        status = d.setdefault("status", {})
        status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
        log.info("deployment %s/%s: hash collision on replica set %s; collisionCount now %d", namespace, _name(d),
                 name, status["collisionCount"])
        await self._update_status(d)
        raise ApiClientError(f"replica set {namespace}/{name} exists with another template (hash collision)")

    # ---- scaling (paused, or spec.replicas changed) ------------------------------------

    async def _is_scaling_event(self, d: Obj, rs_list: list[Obj]) -> bool:
        new_rs, old_rss = await self._get_all_and_sync_revision(d, rs_list, create=False)
        for rs in du.active([*old_rss, new_rs]):
            desired = du.desired_replicas_annotation(rs)
            if desired is not None and desired != du.replicas(d):
                return True
        return False

    async def _sync_scaling(self, d: Obj, rs_list: list[Obj]) -> None:
        new_rs, old_rss = await self._get_all_and_sync_revision(d, rs_list, create=False)
        await self._scale(d, new_rs, old_rss)
        if du.spec_of(d).get("paused"):
            await self._cleanup(old_rss, d)
        await self._sync_deployment_status([*old_rss, new_rs], new_rs, d)

    async def _scale(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        """Bring the ReplicaSets to the Deployment's size: one active ReplicaSet takes it
        all; otherwise (mid-rollout) the difference is spread in proportion to their sizes."""
        only = du.find_active_or_latest(new_rs, old_rss)
        if only is not None:
            if du.replicas(only) != du.replicas(d):
                await self._scale_replica_set(only, du.replicas(d), d)
            return
        if du.is_saturated(d, new_rs):
            for old in du.active(old_rss):
                await self._scale_replica_set(old, 0, d)
            return
        if not du.is_rolling_update(d):
            return
        rss = du.active([*old_rss, new_rs])
        allowed = du.replicas(d) + du.max_surge(d) if du.replicas(d) > 0 else 0
        to_add = allowed - du.replica_count(rss)
        operation: str | None = None
        if to_add > 0:
            rss, operation = du.by_size_newer(rss), "up"
        elif to_add < 0:
            rss, operation = du.by_size_older(rss), "down"
        sizes: list[int] = []
        added = 0
        for rs in rss:
            share = du.proportion(rs, d, to_add, added) if to_add else 0
            sizes.append(du.replicas(rs) + share)
            added += share
        if rss and to_add:
            sizes[0] = max(sizes[0] + to_add - added, 0)  # leftovers go to the largest
        for rs, size in zip(rss, sizes, strict=True):
            await self._scale_replica_set(rs, size, d, operation)

    # ---- RollingUpdate -----------------------------------------------------------------

    async def _rollout_rolling(self, d: Obj, rs_list: list[Obj]) -> None:
        new_rs, old_rss = await self._get_all_and_sync_revision(d, rs_list, create=True)
        assert new_rs is not None
        all_rss = [*old_rss, new_rs]
        if await self._reconcile_new_replica_set(all_rss, new_rs, d) or \
                await self._reconcile_old_replica_sets(all_rss, du.active(old_rss), new_rs, d):
            await self._sync_rollout_status(all_rss, new_rs, d)
            return
        if du.deployment_complete(d, du.status_of(d)):
            await self._cleanup(old_rss, d)
        await self._sync_rollout_status(all_rss, new_rs, d)

    async def _reconcile_new_replica_set(self, all_rss: list[Obj], new_rs: Obj, d: Obj) -> bool:
        if du.replicas(new_rs) == du.replicas(d):
            return False
        if du.replicas(new_rs) > du.replicas(d):
            return await self._scale_replica_set(new_rs, du.replicas(d), d)
        return await self._scale_replica_set(new_rs, du.new_rs_new_replicas(d, all_rss, new_rs), d)

    async def _reconcile_old_replica_sets(self, all_rss: list[Obj], old_rss: list[Obj], new_rs: Obj,
                                          d: Obj) -> bool:
        if du.replica_count(old_rss) == 0:
            return False
        min_available = du.replicas(d) - du.max_unavailable(d)
        new_unavailable = du.replicas(new_rs) - du.rs_available_lower_bound(new_rs)
        # Pods beyond what must stay available, not counting the new ones still starting.
        max_scaled_down = du.replica_count(all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = await self._cleanup_unhealthy_replicas(old_rss, d, max_scaled_down)
        scaled = await self._scale_down_old_for_rolling_update([*old_rss, new_rs], old_rss, d)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy_replicas(self, old_rss: list[Obj], d: Obj, max_cleanup: int) -> int:
        """Scale old ReplicaSets down by their unavailable pods first: removing those costs
        no availability, and waiting for them could block the rollout."""
        total = 0
        for rs in du.by_creation(old_rss):
            if total >= max_cleanup:
                break
            unhealthy = du.replicas(rs) - du.status_count(rs, "availableReplicas")
            if du.replicas(rs) == 0 or unhealthy <= 0:
                continue
            count = min(max_cleanup - total, unhealthy)
            await self._scale_replica_set(rs, du.replicas(rs) - count, d)
            total += count
        return total

    async def _scale_down_old_for_rolling_update(self, all_rss: list[Obj], old_rss: list[Obj], d: Obj) -> int:
        min_available = du.replicas(d) - du.max_unavailable(d)
        available = du.available_lower_bound(all_rss)
        if available <= min_available:
            return 0
        budget = available - min_available
        total = 0
        for rs in du.by_creation(old_rss):
            if total >= budget:
                break
            if du.replicas(rs) == 0:
                continue
            count = min(du.replicas(rs), budget - total)
            await self._scale_replica_set(rs, du.replicas(rs) - count, d)
            total += count
        return total

    # ---- Recreate ----------------------------------------------------------------------

    async def _rollout_recreate(self, d: Obj, rs_list: list[Obj]) -> None:
        # Not created yet: the old pods must be gone before the new ReplicaSet exists.
        new_rs, old_rss = await self._get_all_and_sync_revision(d, rs_list, create=False)
        all_rss: list[Obj | None] = [*old_rss, new_rs]
        scaled_down = False
        for rs in du.active(old_rss):
            scaled_down = await self._scale_replica_set(rs, 0, d) or scaled_down
        if scaled_down or self._old_pods_running(d, new_rs, old_rss, rs_list):
            await self._sync_rollout_status(all_rss, new_rs, d)
            return
        if new_rs is None:
            new_rs, old_rss = await self._get_all_and_sync_revision(d, rs_list, create=True)
            all_rss = [*old_rss, new_rs]
        assert new_rs is not None
        await self._scale_replica_set(new_rs, du.replicas(d), d)
        if du.deployment_complete(d, du.status_of(d)):
            await self._cleanup(old_rss, d)
        await self._sync_rollout_status(all_rss, new_rs, d)

    def _old_pods_running(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj], rs_list: list[Obj]) -> bool:
        """Any pod of an old ReplicaSet not finished, terminating ones included."""
        if du.actual_count(old_rss) > 0:
            return True
        selector = LabelSelector.from_dict(du.spec_of(d).get("selector"))
        owners = {meta(rs).get("uid") for rs in rs_list} - ({meta(new_rs).get("uid")} if new_rs else set())
        for pod in self.pods.list(str(meta(d).get("namespace"))):
            if not selector.matches(meta(pod).get("labels") or {}):
                continue
            if (controller_of(pod) or {}).get("uid") in owners and phase(pod) not in ("Succeeded", "Failed"):
                return True
        return False

    # ---- history -----------------------------------------------------------------------

    async def _cleanup(self, old_rss: list[Obj], d: Obj) -> None:
        """Delete the oldest old ReplicaSets beyond revisionHistoryLimit, if they are
        scaled to 0 and their controller has seen that."""
        if not du.has_revision_history_limit(d):
            return
        alive = [rs for rs in old_rss if not meta(rs).get("deletionTimestamp")]
        excess = len(alive) - int(du.spec_of(d)["revisionHistoryLimit"])
        if excess <= 0:
            return
        for rs in du.by_revision(alive)[:excess]:
            if du.status_count(rs, "replicas") or du.replicas(rs) or \
                    (meta(rs).get("generation") or 0) > du.status_count(rs, "observedGeneration"):
                continue
            log.info("deployment %s/%s: deleting old replica set %s (revision %d) beyond revisionHistoryLimit %s",
                     meta(d).get("namespace"), _name(d), _name(rs), du.revision(rs),
                     du.spec_of(d)["revisionHistoryLimit"])
            try:
                await self.client.delete("replicasets", _name(rs), meta(rs).get("namespace"))
            except NotFound:
                pass

    # ---- status and progress -----------------------------------------------------------

    async def _check_paused_conditions(self, d: Obj) -> None:
        """Record pausing and resuming in Progressing, so time spent paused never counts
        against the progress deadline."""
        if not du.has_progress_deadline(d):
            return
        status = d.setdefault("status", {})
        cond = du.get_condition(status, du.PROGRESSING)
        if cond is not None and cond.get("reason") == du.TIMED_OUT_REASON:
            return
        paused = bool(du.spec_of(d).get("paused"))
        paused_recorded = cond is not None and cond.get("reason") == du.PAUSED_REASON
        if paused and not paused_recorded:
            du.set_condition(status, du.new_condition(du.PROGRESSING, "Unknown", du.PAUSED_REASON,
                                                      "Deployment is paused", self._clock()))
        elif not paused and paused_recorded:
            du.set_condition(status, du.new_condition(du.PROGRESSING, "Unknown", du.RESUMED_REASON,
                                                      "Deployment is resumed", self._clock()))
        else:
            return
        await self._update_status(d)

    async def _sync_deployment_status(self, all_rss: Sequence[Obj | None], new_rs: Obj | None, d: Obj) -> None:
        status = du.calculate_status(all_rss, new_rs, d, self._clock())
        if du.same_status(du.status_of(d), status):
            return
        d["status"] = du.wire_status(status)
        await self._update_status(d)

    async def _sync_rollout_status(self, all_rss: Sequence[Obj | None], new_rs: Obj | None, d: Obj) -> None:
        now = self._clock()
        status = du.calculate_status(all_rss, new_rs, d, now)
        if not du.has_progress_deadline(d):
            du.remove_condition(status, du.PROGRESSING)
        current = du.get_condition(du.status_of(d), du.PROGRESSING)
        complete_before = (status.get("replicas") == status.get("updatedReplicas") and current is not None
                           and current.get("reason") == du.NEW_RS_AVAILABLE_REASON)
        if du.has_progress_deadline(d) and not complete_before:
            self._estimate_progress(d, new_rs, status, current, now)
        failures = self._replica_failures(all_rss, new_rs)
        if failures:
            du.set_condition(status, failures[0])
        else:
            du.remove_condition(status, du.REPLICA_FAILURE)
        if du.same_status(du.status_of(d), status):
            self._requeue_stuck(d, status, now)
            return
        d["status"] = du.wire_status(status)
        await self._update_status(d)

    def _estimate_progress(self, d: Obj, new_rs: Obj | None, status: Obj, current: Obj | None, now: float) -> None:
        subject = f'ReplicaSet "{_name(new_rs)}"' if new_rs is not None else f'Deployment "{_name(d)}"'
        if du.deployment_complete(d, status):
            du.set_condition(status, du.new_condition(du.PROGRESSING, "True", du.NEW_RS_AVAILABLE_REASON,
                                                      f"{subject} has successfully progressed.", now))
        elif du.deployment_progressing(d, status):
            condition = du.new_condition(du.PROGRESSING, "True", du.RS_UPDATED_REASON, f"{subject} is progressing.",
                                         now)
            # Progress refreshes lastUpdateTime even when the reason stays the same.
            if current is not None:
                if current.get("status") == "True":
                    condition["lastTransitionTime"] = current.get("lastTransitionTime")
                du.remove_condition(status, du.PROGRESSING)
            du.set_condition(status, condition)
        elif du.deployment_timed_out(d, status, now):
            du.set_condition(status, du.new_condition(du.PROGRESSING, "False", du.TIMED_OUT_REASON,
                                                      f"{subject} has timed out progressing.", now))

    @staticmethod
    def _replica_failures(all_rss: Sequence[Obj | None], new_rs: Obj | None) -> list[Obj]:
        def from_rs(rs: Obj) -> list[Obj]:
            return [{"type": c.get("type"), "status": c.get("status"), "lastUpdateTime": c.get("lastTransitionTime"),
                     "lastTransitionTime": c.get("lastTransitionTime"), "reason": c.get("reason"),
                     "message": c.get("message")}
                    for c in du.status_of(rs).get("conditions") or [] if c.get("type") == du.REPLICA_FAILURE]
        if new_rs is not None and (found := from_rs(new_rs)):
            return found
        return [c for rs in du.present(all_rss) for c in from_rs(rs)]

    def _requeue_stuck(self, d: Obj, status: Obj, now: float) -> None:
        """A rollout that is not progressing is looked at again when its deadline passes."""
        current = du.get_condition(du.status_of(d), du.PROGRESSING)
        if not du.has_progress_deadline(d) or current is None:
            return
        if du.deployment_complete(d, status) or current.get("reason") == du.TIMED_OUT_REASON:
            return
        since = parse_time(current.get("lastUpdateTime")) or now
        after = since + int(du.spec_of(d)["progressDeadlineSeconds"]) - now
        log.debug("deployment %s: checking progress again in %.1fs", object_key(d), max(after, 0.0))
        self.queue.add_after(object_key(d), max(after, 0.0) + PROGRESS_CHECK_SLACK)

"""The garbage collector: ownerReferences acted on, as Kubernetes' garbagecollector does.

A dependency graph (uid -> object, owner uid -> dependent uids) is kept from informers on
every resource type Skiff serves, events excepted (Kubernetes ignores them too). A worker
handles one object (by uid) at a time, level-triggered, ``sync(uid)``:

  * being deleted with the ``orphan`` finalizer: the ownerReferences pointing at it are
    removed from its dependents, then the finalizer;
  * being deleted with the ``foregroundDeletion`` finalizer: its dependents are deleted,
    and once none that blocks it (``blockOwnerDeletion``) is left, the finalizer goes;
  * otherwise its owners are classified (Kubernetes' classifyReferences): solid (there),
    dangling (gone, or a different uid under that name: checked with a live GET before
    anything is deleted, as the cache may lag) or waiting (being foreground-deleted).
    With a solid owner, dangling references are removed and waiting ones made
    non-blocking; with none, the object is deleted: in the foreground if it has
    dependents and an owner waits for it, else with the policy its own finalizers name,
    Background by default.

Objects are queued when an owner is missing from the graph, an owner is waiting for its
dependents, an owner goes away, or they carry one of the two finalizers while being
deleted. Unknown owner kinds count as solid: nothing is deleted on a guess.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control_plane.controllers.settings import ControllerManagerSettings, current_settings
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.api.resources import REGISTRY, ResourceType
from skiff.client.api import ApiClient
from skiff.client.errors import Conflict, NotFound
from skiff.client.informer import Informer, SharedInformerFactory, object_key

log = logging.getLogger(__name__)

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
IGNORED_RESOURCES = frozenset({("", "events"), ("events.k8s.io", "events")})
ABSENT_OWNERS_REMEMBERED = 500

Obj = dict[str, Any]


@dataclass
class GraphNode:
    rt: ResourceType
    key: str  # namespace/name, or name for cluster-scoped objects
    uid: str
    owners: list[dict[str, Any]] = field(default_factory=list)

    @property
    def namespace(self) -> str | None:
        return self.key.split("/", 1)[0] if self.rt.namespaced else None

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[-1]

    def owner_uids(self) -> set[str]:
        return {str(r.get("uid")) for r in self.owners if r.get("uid")}

    def describe(self) -> str:
        return f"{self.rt.kind} {self.key}"


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    md = obj.get("metadata")
    return md if isinstance(md, dict) else {}


def _finalizers(obj: Mapping[str, Any]) -> list[str]:
    return [f for f in _meta(obj).get("finalizers") or [] if isinstance(f, str)]


def deleting_dependents(obj: Mapping[str, Any] | None) -> bool:
    """Being deleted in the foreground: waits for its dependents."""
    return obj is not None and bool(_meta(obj).get("deletionTimestamp")) and FOREGROUND in _finalizers(obj)


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


class GarbageCollector:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | None = None, workers: int | None = None) -> None:
        self.client = client
        settings = settings or current_settings()
        self.workers = workers or settings.concurrency.concurrent_gc_syncs
        self.informers = informers or SharedInformerFactory(client)
        self.queue = WorkQueue()
        self.nodes: dict[str, GraphNode] = {}
        self.dependents: dict[str, set[str]] = {}
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._by_type: dict[ResourceType, Informer] = {}
        self._absent: OrderedDict[str, None] = OrderedDict()  # owner uids verified gone
        self._ready = False
        for rt in REGISTRY.types:
            self._types[(rt.group, rt.kind)] = rt
            if (rt.group, rt.plural) in IGNORED_RESOURCES or not {"list", "watch", "delete"} <= set(rt.verbs):
                continue
            informer = self.informers.informer_for(rt)
            self._by_type[rt] = informer
            informer.add_handlers(on_add=self._on_add(rt), on_update=self._on_update(rt),
                                  on_delete=self._on_delete(rt))

    # ---- graph -------------------------------------------------------------------------

    def _on_add(self, rt: ResourceType) -> Any:
        return lambda obj: self._upsert(rt, obj)

    def _on_update(self, rt: ResourceType) -> Any:
        return lambda old, new: self._upsert(rt, new)

    def _on_delete(self, rt: ResourceType) -> Any:
        return lambda obj: self._remove(obj)

    def _upsert(self, rt: ResourceType, obj: Obj, consider: bool = True) -> None:
        md = _meta(obj)
        uid = md.get("uid")
        if not uid:
            return
        uid = str(uid)
        refs = [r for r in md.get("ownerReferences") or [] if isinstance(r, dict) and r.get("uid")]
        previous = self.nodes.get(uid)
        node = GraphNode(rt, object_key(obj), uid, refs)
        self.nodes[uid] = node
        old_owners = previous.owner_uids() if previous else set()
        for gone in old_owners - node.owner_uids():
            self._unlink(gone, uid)
        for owner in node.owner_uids():
            self.dependents.setdefault(owner, set()).add(uid)
        if not (self._ready and consider):
            return
        if self._needs_attention(node, obj):
            self.queue.add(uid)
        # An owner deleting in the foreground may be waiting for exactly this change.
        for owner in old_owners | node.owner_uids():
            if deleting_dependents(self._object(owner)):
                self.queue.add(owner)

    def _remove(self, obj: Obj) -> None:
        uid = str(_meta(obj).get("uid") or "")
        node = self.nodes.pop(uid, None)
        if node is None:
            return
        for owner in node.owner_uids():
            self._unlink(owner, uid)
        if not self._ready:
            return
        for dependent in self.dependents.get(uid, ()):
            self.queue.add(dependent)
        for owner in node.owner_uids():
            if deleting_dependents(self._object(owner)):
                self.queue.add(owner)

    def _unlink(self, owner: str, dependent: str) -> None:
        deps = self.dependents.get(owner)
        if deps is not None:
            deps.discard(dependent)
            if not deps:
                del self.dependents[owner]

    def _object(self, uid: str) -> Obj | None:
        """The cached object of a graph node (None when gone or replaced)."""
        node = self.nodes.get(uid)
        if node is None:
            return None
        obj = self._by_type[node.rt].get(node.key)
        if obj is None or str(_meta(obj).get("uid")) != uid:
            return None
        return obj

    def _needs_attention(self, node: GraphNode, obj: Obj) -> bool:
        if _meta(obj).get("deletionTimestamp"):
            return bool({ORPHAN, FOREGROUND} & set(_finalizers(obj)))
        for owner in node.owner_uids():
            if owner not in self.nodes or deleting_dependents(self._object(owner)):
                return True
        return False

    def live_dependents(self, uid: str) -> list[GraphNode]:
        return [self.nodes[d] for d in sorted(self.dependents.get(uid, ())) if d in self.nodes]

    # ---- loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Build the graph from the synced caches, look at every object once, then work
        the queue until cancelled."""
        self.informers.start()
        await self.informers.wait_for_sync()
        self._ready = False
        for rt, informer in self._by_type.items():
            for obj in informer.list():
                self._upsert(rt, obj, consider=False)
        self._ready = True
        for uid, node in list(self.nodes.items()):
            cached = self._object(uid)
            if cached is not None and self._needs_attention(node, cached):
                self.queue.add(uid)
        log.info("garbage collector: graph of %d objects built; %d to look at", len(self.nodes), len(self.queue))
        try:
            await asyncio.gather(*(run_worker(self.queue, self.sync, "garbage-collector", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()

    async def sync(self, uid: str) -> None:
        node = self.nodes.get(uid)
        obj = self._object(uid)
        if node is None or obj is None:
            return
        md = _meta(obj)
        if md.get("deletionTimestamp"):
            finalizers = _finalizers(obj)
            if ORPHAN in finalizers:
                await self.orphan_dependents(node, obj)
            elif FOREGROUND in finalizers:
                await self.process_deleting_dependents(node, obj)
            return
        if not node.owners:
            return
        solid, dangling, waiting = await self.classify_references(node)
        if solid:
            if dangling or waiting:
                await self._patch_owner_references(node, obj, dangling, waiting)
            return
        if waiting and self.live_dependents(uid):
            policy = "Foreground"  # its own dependents go first, then it, then the owner
        elif ORPHAN in _finalizers(obj):
            policy = "Orphan"
        elif FOREGROUND in _finalizers(obj):
            policy = "Foreground"
        else:
            policy = "Background"
        why = ", ".join(f"{r.get('kind')} {r.get('name')}" for r in dangling + waiting)
        log.info("garbage collector: deleting %s (propagation %s): owner(s) %s %s", node.describe(), policy,
                 why, "gone" if not waiting else "being deleted")
        try:
            await self.client.delete(node.rt, node.name, node.namespace, propagation_policy=policy,
                                     preconditions={"uid": uid})
        except (NotFound, Conflict):
            pass  # gone already, or a new object of that name: not ours to delete

    # ---- owners ------------------------------------------------------------------------

    async def classify_references(self, node: GraphNode) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                     list[dict[str, Any]]]:
        """(solid, dangling, waitingForDependentsDeletion) owner references of ``node``."""
        solid: list[dict[str, Any]] = []
        dangling: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        for ref in node.owners:
            owner_rt = self._types.get((_group(str(ref.get("apiVersion") or "")), str(ref.get("kind") or "")))
            if owner_rt is None:
                solid.append(ref)  # a kind Skiff does not serve: never delete on a guess
                continue
            if owner_rt.namespaced and not node.rt.namespaced:
                dangling.append(ref)  # a cluster-scoped object cannot have a namespaced owner
                continue
            owner = await self._lookup_owner(owner_rt, node.namespace if owner_rt.namespaced else None, ref)
            if owner is None:
                dangling.append(ref)
            elif deleting_dependents(owner):
                waiting.append(ref)
            else:
                solid.append(ref)
        return solid, dangling, waiting

    async def _lookup_owner(self, rt: ResourceType, namespace: str | None, ref: Mapping[str, Any]) -> Obj | None:
        uid = str(ref.get("uid"))
        cached = self._object(uid)
        if cached is not None:
            return cached
        if uid in self._absent:
            return None
        # The cache may simply not have caught up: only the API server can say it is gone.
        try:
            live = await self.client.get(rt, str(ref.get("name")), namespace)
        except NotFound:
            live = None
        if live is not None and str(_meta(live).get("uid")) == uid:
            return live
        self._absent[uid] = None
        while len(self._absent) > ABSENT_OWNERS_REMEMBERED:
            self._absent.popitem(last=False)
        return None

    async def _patch_owner_references(self, node: GraphNode, obj: Obj, dangling: list[dict[str, Any]],
                                      waiting: list[dict[str, Any]]) -> None:
        gone = {str(r.get("uid")) for r in dangling}
        unblock = {str(r.get("uid")) for r in waiting}
        refs = []
        for ref in _meta(obj).get("ownerReferences") or []:
            uid = str(ref.get("uid"))
            if uid in gone:
                continue
            if uid in unblock and ref.get("blockOwnerDeletion"):
                ref = {**ref, "blockOwnerDeletion": False}
            refs.append(ref)
        log.info("garbage collector: %s keeps its other owners; dropping references to %s%s", node.describe(),
                 ", ".join(f"{r.get('kind')} {r.get('name')}" for r in dangling) or "none",
                 "; no longer blocking owners being deleted" if unblock else "")
        await self._patch_metadata(node, obj, {"ownerReferences": refs or None})

    async def _patch_metadata(self, node: GraphNode, obj: Obj, changes: dict[str, Any]) -> None:
        """A merge patch pinned to the cached resourceVersion: on a conflict the sync fails
        and comes back once the cache has caught up."""
        md = _meta(obj)
        patch = {"metadata": {**changes, "uid": md.get("uid"), "resourceVersion": md.get("resourceVersion")}}
        try:
            await self.client.patch(node.rt, node.name, patch, node.namespace)
        except NotFound:
            pass

    async def _remove_finalizer(self, node: GraphNode, obj: Obj, finalizer: str) -> None:
        remaining = [f for f in _finalizers(obj) if f != finalizer]
        await self._patch_metadata(node, obj, {"finalizers": remaining or None})

    # ---- deletion modes ----------------------------------------------------------------

    async def orphan_dependents(self, node: GraphNode, obj: Obj) -> None:
        """attemptToOrphan: cut the dependents loose, then let the owner go."""
        for dep in self.live_dependents(node.uid):
            dep_obj = self._object(dep.uid)
            if dep_obj is None:
                continue
            refs = [r for r in _meta(dep_obj).get("ownerReferences") or [] if str(r.get("uid")) != node.uid]
            await self._patch_metadata(dep, dep_obj, {"ownerReferences": refs or None})
        log.info("garbage collector: %s: dependents orphaned; removing the %s finalizer", node.describe(), ORPHAN)
        await self._remove_finalizer(node, obj, ORPHAN)

    async def process_deleting_dependents(self, node: GraphNode, obj: Obj) -> None:
        """Foreground deletion: delete the dependents; the owner's finalizer goes once no
        dependent that blocks it is left."""
        blocking = []
        for dep in self.live_dependents(node.uid):
            dep_obj = self._object(dep.uid)
            if dep_obj is None:
                continue
            if not _meta(dep_obj).get("deletionTimestamp"):
                self.queue.add(dep.uid)
            if any(str(r.get("uid")) == node.uid and r.get("blockOwnerDeletion") for r in dep.owners):
                blocking.append(dep)
        if blocking:
            log.debug("garbage collector: %s waits for %d dependent(s): %s", node.describe(), len(blocking),
                      ", ".join(d.describe() for d in blocking[:5]))
            return
        log.info("garbage collector: %s: no blocking dependents left; removing the %s finalizer", node.describe(),
                 FOREGROUND)
        await self._remove_finalizer(node, obj, FOREGROUND)

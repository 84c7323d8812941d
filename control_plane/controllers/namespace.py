"""The namespace controller: empties a namespace being deleted, then finalizes it.

``sync(name)``: a namespace with a deletionTimestamp has every namespaced object in it
deleted; once none is left, the ``kubernetes`` finalizer is removed through
``namespaces/<name>/finalize`` and the API server removes the namespace. Objects that
linger (finalizers, pods waiting for their node) make the sync come back later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.api.resources import REGISTRY
from skiff.client.api import ApiClient
from skiff.client.errors import Conflict, NotFound
from skiff.client.informer import SharedInformerFactory

log = logging.getLogger(__name__)
FINALIZER = "kubernetes"
RECHECK_SECONDS = 2.0


class NamespaceController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory, workers: int = 2):
        self.client = client
        self.queue = WorkQueue()
        self.informer = informers.informer_for("namespaces")
        self.workers = workers
        self.informer.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))

    def _enqueue(self, ns: dict[str, Any]) -> None:
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.add(ns["metadata"]["name"])

    async def run(self) -> None:
        """The workers; the shared informer factory is started (and stopped) by the manager."""
        try:
            await asyncio.gather(*(run_worker(self.queue, self.sync, "namespace-controller", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()

    async def sync(self, name: str) -> None:
        try:
            ns = await self.client.get("namespaces", name)
        except NotFound:
            return
        if not ns["metadata"].get("deletionTimestamp"):
            return
        remaining = 0
        for rt in REGISTRY.types:
            if not rt.namespaced:
                continue
            listed = await self.client.list_all(rt, name)
            for obj in listed.get("items") or []:
                remaining += 1
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    await self.client.delete(rt, obj["metadata"]["name"], name, propagation_policy="Background")
                except NotFound:
                    remaining -= 1
        if remaining:
            log.info("namespace %s: %d object(s) still being deleted; checking again in %.0fs",
                     name, remaining, RECHECK_SECONDS)
            self.queue.add_after(name, RECHECK_SECONDS)
            return
        finalizers = [f for f in (ns.get("spec") or {}).get("finalizers") or [] if f != FINALIZER]
        ns.setdefault("spec", {})["finalizers"] = finalizers
        try:
            await self.client.replace("namespaces", ns, subresource="finalize")
            log.info("namespace %s: empty; finalized", name)
        except (NotFound, Conflict):
            self.queue.add(name)  # gone meanwhile, or changed: look again

"""The ServiceAccount controller: every active namespace has a ``default``
ServiceAccount, as Kubernetes' serviceaccounts controller ensures.

``sync(namespace)``: a namespace that exists and is not terminating gets ``default``
created when it is missing (also when someone deletes it); "already exists" is success.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from control_plane.controllers.pod_control import namespace_terminating
from control_plane.controllers.settings import ControllerManagerSettings, current_settings
from control_plane.controllers.workload_pods import meta
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.client.api import ApiClient
from skiff.client.errors import AlreadyExists, Forbidden, NotFound
from skiff.client.informer import SharedInformerFactory

log = logging.getLogger(__name__)

Obj = dict[str, Any]
DEFAULT_SERVICE_ACCOUNTS = ("default",)


class ServiceAccountController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | None = None, workers: int | None = None) -> None:
        self.client = client
        settings = settings or current_settings()
        self.workers = workers or settings.concurrency.concurrent_serviceaccount_syncs
        self.informers = informers or SharedInformerFactory(client)
        self.queue = WorkQueue()
        self.namespaces = self.informers.informer_for("namespaces")
        self.accounts = self.informers.informer_for("serviceaccounts")
        self.namespaces.add_handlers(on_add=self._enqueue_namespace,
                                     on_update=lambda old, new: self._enqueue_namespace(new))
        self.accounts.add_handlers(on_delete=self._account_deleted)

    def _enqueue_namespace(self, ns: Obj) -> None:
        self.queue.add(str(meta(ns).get("name")))

    def _account_deleted(self, sa: Obj) -> None:
        if meta(sa).get("name") in DEFAULT_SERVICE_ACCOUNTS:
            self.queue.add(str(meta(sa).get("namespace")))

    async def run(self) -> None:
        self.informers.start()
        await self.informers.wait_for_sync()
        for ns in self.namespaces.list():
            self._enqueue_namespace(ns)
        try:
            await asyncio.gather(*(run_worker(self.queue, self.sync, "serviceaccount-controller", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()

    async def sync(self, namespace: str) -> None:
        ns = self.namespaces.get(namespace)
        if ns is None or meta(ns).get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            return
        for name in DEFAULT_SERVICE_ACCOUNTS:
            if self.accounts.get(f"{namespace}/{name}") is not None:
                continue
            body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
            try:
                await self.client.create("serviceaccounts", body, namespace)
                log.info("namespace %s: created service account %s", namespace, name)
            except AlreadyExists:
                pass
            except NotFound:
                return  # the namespace went meanwhile
            except Forbidden as exc:
                if namespace_terminating(exc):
                    return  # being deleted: it takes no new objects
                raise

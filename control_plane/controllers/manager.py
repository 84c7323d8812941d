"""The controller manager: runs the enabled controllers against the API, as
kube-controller-manager does, each one a reconcile loop over shared informers.

Contract for a controller: ``CONTROLLERS[name](client, informers)`` builds it; the
constructor takes its informers from the shared factory (``informers.informer_for``)
and registers its handlers there, and starts nothing. `run_controllers` builds every
enabled controller, then starts the factory, waits for the caches to fill, and only
then calls each controller's ``run()`` (its workers). A ``run()`` that fails is
called again on the same instance after a pause, so its queue and handlers survive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from control_plane.controllers.daemonset import DaemonSetController
from control_plane.controllers.deployment import DeploymentController
from control_plane.controllers.endpoints import EndpointsController
from control_plane.controllers.endpointslice import EndpointSliceController
from control_plane.controllers.garbagecollector import GarbageCollector
from control_plane.controllers.job import JobController
from control_plane.controllers.namespace import NamespaceController
from control_plane.controllers.nodeipam import NodeIpamController
from control_plane.controllers.nodelifecycle import NodeLifecycleController
from control_plane.controllers.podgc import PodGCController
from control_plane.controllers.replicaset import ReplicaSetController
from control_plane.controllers.serviceaccount import ServiceAccountController
from skiff.client.api import ApiClient
from skiff.client.informer import SharedInformerFactory

log = logging.getLogger(__name__)

RESTART_DELAY = 5.0  # seconds before a failed controller's run() is called again
SYNC_WARNING_AFTER = 30.0  # seconds; informers not synced by then are reported (we keep waiting)


class Controller(Protocol):
    async def run(self) -> None: ...


ControllerFactory = Callable[[ApiClient, SharedInformerFactory], Controller]

CONTROLLERS: dict[str, ControllerFactory] = {
    "namespace": NamespaceController,
    "garbagecollector": GarbageCollector,
    "endpoints": EndpointsController,
    "endpointslice": EndpointSliceController,
    "job": JobController,
    "daemonset": DaemonSetController,
    "podgc": PodGCController,
    "serviceaccount": ServiceAccountController,
    "nodeipam": NodeIpamController,
    "nodelifecycle": NodeLifecycleController,
    "replicaset": ReplicaSetController,
    "deployment": DeploymentController,
}


async def run_controllers(client: ApiClient, enabled: list[str], *,
                          informers: SharedInformerFactory | None = None) -> None:
    """Run the named controllers until cancelled; one failing is logged and restarted."""
    factory = informers or SharedInformerFactory(client)
    controllers = {name: CONTROLLERS[name](client, factory) for name in enabled}
    factory.start()
    try:
        while not await factory.wait_for_sync(SYNC_WARNING_AFTER):
            pending = [repr(i) for i in factory.informers if not i.has_synced]
            log.warning("informers not synced yet: %s; controllers wait", ", ".join(pending))

        async def supervise(name: str, controller: Controller) -> None:
            while True:
                try:
                    await controller.run()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a controller bug must not take the others down
                    log.exception("controller %s failed; restarting in %gs", name, RESTART_DELAY)
                    await asyncio.sleep(RESTART_DELAY)

        log.info("controllers running: %s", ", ".join(controllers) or "none")
        await asyncio.gather(*(supervise(n, c) for n, c in controllers.items()))
    finally:
        await factory.stop()

"""The controller manager: runs the enabled controllers against the API, as
kube-controller-manager does, each one a reconcile loop over its informers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from control_plane.controllers.namespace import NamespaceController
from skiff.client.api import ApiClient

log = logging.getLogger(__name__)


class Controller(Protocol):
    async def run(self) -> None: ...


CONTROLLERS: dict[str, Callable[[ApiClient], Controller]] = {
    "namespace": NamespaceController,
}


async def run_controllers(client: ApiClient, enabled: list[str]) -> None:
    """Run the named controllers until cancelled; one failing is logged and restarted."""
    async def supervise(name: str) -> None:
        while True:
            try:
                await CONTROLLERS[name](client).run()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a controller bug must not take the others down
                log.exception("controller %s failed; restarting in 5s", name)
                await asyncio.sleep(5)

    await asyncio.gather(*(supervise(n) for n in enabled))

"""`skiff controller-manager`: the controllers alone, against an API server's kubeconfig,
as kube-controller-manager runs (``skiff server`` runs the same controllers in-process).

Flags map onto `ControllerManagerSettings` (kube-controller-manager's names and
defaults); `--controllers` takes kube-controller-manager's form: ``*`` for all,
``name`` to enable one, ``-name`` to disable one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path

from control_plane.controllers.settings import (
    ALL_CONTROLLERS,
    ControllerManagerSettings,
    add_settings_arguments,
    settings_from_args,
    use_settings,
)

log = logging.getLogger("skiff.controller-manager")


def add_controller_manager_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("controller-manager", help="run the controllers against an API server")
    p.add_argument("--kubeconfig", type=Path, required=True, help="credentials for the API server")
    p.add_argument("--controllers", default=ALL_CONTROLLERS,
                   help="comma-separated: '*' for all, 'foo' enables foo, '-foo' disables foo (default '*')")
    add_settings_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run)


def resolve_controllers(spec: Iterable[str], known: Iterable[str]) -> list[str]:
    """kube-controller-manager's --controllers: '*' all, 'name' on, '-name' off."""
    names = list(known)
    items = [s.strip() for s in spec if s.strip()]
    unknown = sorted({i.lstrip("-") for i in items} - set(names) - {ALL_CONTROLLERS})
    if unknown:
        raise ValueError(f"unknown controllers: {', '.join(unknown)}; known: {', '.join(names)}")
    enabled = set(names) if ALL_CONTROLLERS in items else set()
    enabled |= {i for i in items if not i.startswith("-") and i != ALL_CONTROLLERS}
    enabled -= {i[1:] for i in items if i.startswith("-")}
    return [n for n in names if n in enabled]


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from control_plane.controllers.manager import CONTROLLERS

    try:
        settings = settings_from_args(args)
        enabled = resolve_controllers(settings.controllers, CONTROLLERS)
    except ValueError as exc:
        raise SystemExit(f"skiff controller-manager: {exc}") from None
    use_settings(settings)
    asyncio.run(serve(args.kubeconfig, settings, enabled))
    return 0


async def serve(kubeconfig: Path, settings: ControllerManagerSettings, enabled: list[str]) -> None:
    from control_plane.controllers.manager import run_controllers
    from skiff.client.api import ApiClient
    from skiff.client.kubeconfig import load_kubeconfig

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ApiClient(load_kubeconfig(kubeconfig)) as client:
        log.info("controllers: %s", ", ".join(enabled) or "none")

        async def controllers() -> None:
            await run_controllers(client, enabled)

        work: asyncio.Task[None]
        le = settings.leader_election
        if le.leader_elect:
            from control_plane.leaderelection import LeaderElectionSettings, run_with_leader_election

            identity = f"{socket.gethostname()}_{uuid.uuid4()}"
            election = LeaderElectionSettings(lease_duration=le.lease_duration, renew_deadline=le.renew_deadline,
                                              retry_period=le.retry_period, namespace=le.resource_namespace)
            work = asyncio.create_task(run_with_leader_election(client, le.resource_name, identity, controllers,
                                                                election))
        else:
            work = asyncio.create_task(controllers())
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        for task in (work, stopping):
            task.cancel()
        results = await asyncio.gather(work, stopping, return_exceptions=True)
        if work in done and isinstance(results[0], BaseException) and \
                not isinstance(results[0], asyncio.CancelledError):
            raise results[0]

"""`skiff scheduler`: the scheduler alone against a kubeconfig, with leader election on
the Lease ``kube-system/kube-scheduler`` (kube-scheduler's flags and defaults).

`run_scheduler` is the same thing for embedding: ``skiff server`` runs it in-process
next to the API server and the controller manager.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from control_plane.leaderelection import LeaderElectionSettings, run_with_leader_election
from control_plane.scheduler.scheduler import Scheduler, default_identity
from control_plane.scheduler.settings import SchedulerSettings
from skiff.api.durations import duration_flag
from skiff.client.api import ApiClient
from skiff.client.kubeconfig import load_kubeconfig

log = logging.getLogger("skiff.scheduler")

LEASE_NAME = "kube-scheduler"


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "t", "yes"):
        return True
    if lowered in ("false", "0", "f", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r}")


_seconds = duration_flag  # kube-scheduler's durations: 15s, 500ms, 1m, or plain seconds


def add_scheduler_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    defaults = LeaderElectionSettings()
    p = subparsers.add_parser("scheduler", help="run the scheduler against an API server")
    p.add_argument("--kubeconfig", type=Path, required=True, help="credentials for the API server")
    p.add_argument("--leader-elect", type=_bool, nargs="?", const=True, default=True,
                   help="take the kube-system/kube-scheduler lease before scheduling (default true)")
    p.add_argument("--leader-elect-lease-duration", type=_seconds, default=defaults.lease_duration)
    p.add_argument("--leader-elect-renew-deadline", type=_seconds, default=defaults.renew_deadline)
    p.add_argument("--leader-elect-retry-period", type=_seconds, default=defaults.retry_period)
    p.add_argument("--leader-elect-resource-name", default=LEASE_NAME)
    p.add_argument("--leader-elect-resource-namespace", default=defaults.namespace)
    p.add_argument("--scheduler-name", default=SchedulerSettings().scheduler_name,
                   help="schedule pods whose spec.schedulerName is this")
    p.add_argument("--percentage-of-nodes-to-score", type=int, default=0,
                   help="share of nodes to find feasible before scoring; 0 = adaptive, as kube-scheduler")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run)


async def run_scheduler(client: ApiClient, settings: SchedulerSettings | None = None, *, leader_elect: bool = True,
                        election: LeaderElectionSettings | None = None, identity: str | None = None,
                        lease_name: str = LEASE_NAME) -> None:
    """Run the scheduler until cancelled; with ``leader_elect`` only while holding the lease
    (a fresh Scheduler, with fresh caches, each time leadership is gained)."""
    identity = identity or default_identity()

    async def schedule() -> None:
        await Scheduler(client, settings, identity=identity).run()

    if not leader_elect:
        await schedule()
        return
    await run_with_leader_election(client, lease_name, identity, schedule, election)


class EmbeddedScheduler:
    """The scheduler as a component of ``skiff server`` (same shape as a controller:
    ``Component(client)`` with ``async run()``), leader-elected on kube-system/kube-scheduler
    so that several servers can run and only one schedules."""

    def __init__(self, client: ApiClient, settings: SchedulerSettings | None = None,
                 election: LeaderElectionSettings | None = None, leader_elect: bool = True) -> None:
        self.client = client
        self.settings = settings
        self.election = election
        self.leader_elect = leader_elect

    async def run(self) -> None:
        await run_scheduler(self.client, self.settings, leader_elect=self.leader_elect, election=self.election)


# What ``skiff server`` instantiates to run the scheduler in-process.
SCHEDULER_FACTORY: Callable[[ApiClient], EmbeddedScheduler] = EmbeddedScheduler


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = replace(SchedulerSettings(), scheduler_name=args.scheduler_name,
                       percentage_of_nodes_to_score=args.percentage_of_nodes_to_score)
    election = LeaderElectionSettings(lease_duration=args.leader_elect_lease_duration,
                                      renew_deadline=args.leader_elect_renew_deadline,
                                      retry_period=args.leader_elect_retry_period,
                                      namespace=args.leader_elect_resource_namespace)
    if election.lease_duration <= election.renew_deadline or election.renew_deadline <= election.retry_period:
        raise SystemExit("skiff scheduler: need lease duration > renew deadline > retry period")
    asyncio.run(_serve(args.kubeconfig, settings, args.leader_elect, election, args.leader_elect_resource_name))
    return 0


async def _serve(kubeconfig: Path, settings: SchedulerSettings, leader_elect: bool,
                 election: LeaderElectionSettings, lease_name: str) -> None:
    async with ApiClient(load_kubeconfig(kubeconfig), user_agent="skiff-scheduler/0.1") as client:
        task = asyncio.create_task(run_scheduler(client, settings, leader_elect=leader_elect, election=election,
                                                 lease_name=lease_name))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("scheduler stopped")

"""The pod route controller: this node's host-gw routes follow the Node objects.

Level-triggered, like kube-proxy: Node events only wake the loop; a sync renders the
whole desired table from the informer's cache and the node's addresses, lists the routes
carrying our protocol number, and applies the difference (`plan_route_ops`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from node_agent.podnet.netlink import RouteError, RouteExists, RouteTable
from node_agent.podnet.routes import NodeRouteInfo, RouteOp, node_route_info, plan_route_ops, render_routes
from skiff.client.backoff import Backoff

log = logging.getLogger("skiff.agent.podnet")

Obj = dict[str, Any]

# flannel's host-gw checks its routes every 10 s; a route deleted by hand, or a changed
# address of this node, is noticed within that time.
DEFAULT_RESYNC_PERIOD = 10.0
# Reasons a node is skipped that are a normal, passing state of a joining node.
_TRANSIENT = ("no IPv4 spec.podCIDR yet", "no IPv4 InternalIP address yet")


@dataclass
class SyncResult:
    applied: list[RouteOp] = field(default_factory=list)
    conflicts: list[RouteOp] = field(default_factory=list)  # adds refused: a route that is not ours is there
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class PodRouteController:
    """Contract of `run` (the only endless loop):

    * nothing is judged before the Node informer's first list: an empty cache would
      delete every route;
    * a sync is `sync_once`: desired routes from the cached Nodes and the node's own
      addresses vs. the kernel's routes with our protocol; deletes, replaces, adds;
    * the next sync comes on a relevant Node change (pod CIDRs, InternalIP, add, delete),
      after ``resync_period`` at the latest, or after a backoff when a sync failed;
    * a route another party holds at the same destination is left alone and reported once;
    * `CancelledError` propagates; every other error is logged and retried.
    """

    def __init__(self, table: RouteTable, nodes: Callable[[], Iterable[Obj]], node_name: str,
                 own_pod_cidr: str | None = None, resync_period: float = DEFAULT_RESYNC_PERIOD,
                 backoff: Backoff | None = None) -> None:
        self.table = table
        self.nodes = nodes
        self.node_name = node_name
        self.own_pod_cidr = own_pod_cidr
        self.resync_period = resync_period
        self.backoff = backoff or Backoff(initial=0.5, factor=2.0, maximum=30.0)
        self.syncs = 0
        self._wake = asyncio.Event()
        self._skipped: dict[str, str] = {}
        self._conflicts: set[str] = set()

    # -- informer handlers: they only wake the loop ------------------------------------------

    def trigger(self) -> None:
        self._wake.set()

    def on_node_add(self, node: Obj) -> None:
        self.trigger()

    def on_node_update(self, old: Obj, new: Obj) -> None:
        if node_route_info(old) != node_route_info(new):  # status heartbeats every 10 s change nothing here
            self.trigger()

    def on_node_delete(self, node: Obj) -> None:
        self.trigger()

    # -- one sync ----------------------------------------------------------------------------

    async def sync_once(self) -> SyncResult:
        """Converge once; errors of single routes are collected, not raised (RouteError of reads is)."""
        infos = [node_route_info(n) for n in self.nodes()]
        local = await self.table.local_networks()
        rendered = render_routes(infos, self.node_name, self._own_cidrs(infos), local)
        self._log_skipped(rendered.skipped)
        actual = await self.table.list_routes()
        result = SyncResult()
        for op in plan_route_ops(rendered.routes, actual):
            try:
                await self._apply(op)
            except RouteExists as exc:
                result.conflicts.append(op)
                if str(op.route.dst) not in self._conflicts:
                    log.warning("pod route for node %s: %s", op.route.node, exc)
                continue
            except RouteError as exc:
                result.errors.append(str(exc))
                log.warning("pod route %s failed: %s", op, exc)
                continue
            result.applied.append(op)
            log.info("pod route %s", op)
        self._conflicts = {str(op.route.dst) for op in result.conflicts}
        self.syncs += 1
        return result

    async def _apply(self, op: RouteOp) -> None:
        if op.action == "add":
            await self.table.add(op.route)
        elif op.action == "replace":
            await self.table.replace(op.route)
        else:
            await self.table.delete(op.route)

    def _own_cidrs(self, infos: Iterable[NodeRouteInfo]) -> list[str]:
        own = [self.own_pod_cidr] if self.own_pod_cidr else []
        for info in infos:
            if info.name == self.node_name:
                own += info.pod_cidrs
        return own

    def _log_skipped(self, skipped: dict[str, str]) -> None:
        for name, why in sorted(skipped.items()):
            if self._skipped.get(name) != why:
                level = logging.INFO if why in _TRANSIENT else logging.WARNING
                log.log(level, "no pod route to node %s: %s", name, why)
        self._skipped = dict(skipped)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, wait_synced: Callable[[], Awaitable[Any]]) -> None:
        await wait_synced()
        failures = 0
        while True:
            self._wake.clear()  # a change during the sync wakes the next one
            try:
                ok = (await self.sync_once()).ok
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pod route sync failed: %s", exc, exc_info=not isinstance(exc, RouteError | OSError))
                ok = False
            failures = 0 if ok else failures + 1
            delay = self.resync_period if ok else self.backoff.delay(failures)
            if not ok:
                log.info("pod route sync attempt %d failed; retrying in %.1fs", failures, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

"""`Proxier`: Services and EndpointSlices from the API -> iptables rules on this node.

Level-triggered, as kube-proxy's iptables proxier: informer events only mark a Service
(``namespace/name``) as changed and ask the `SyncRunner` for a sync; a sync re-reads the
changed Services and their slices, renders the whole ruleset (reusing the rendered
rules of every service port whose inputs did not change), and hands it to the applier,
which writes nothing when nothing changed and only the changed chains otherwise. The
first sync waits for both informers to list, so a restarted proxy never applies a
half-known state. Every ``sync_period`` a sync runs anyway and checks the canary chains;
every ``full_sync_period`` (or after a failure, or when a canary is gone) every chain is
rewritten. After each successful sync, UDP flows to removed endpoints are cleared.

Parsing, rendering and iptables run in a worker thread (`ProxyState`, touched only
there), so a large sync never stalls the agent's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node_agent.proxy.applier import CANARY_CHAIN, ApplyResult, IptablesApplier
from node_agent.proxy.conntrack import Conntrack, FlowCleaner, UsedPort, stale_flows
from node_agent.proxy.iptables_exec import Iptables, IptablesError, IptablesExec
from node_agent.proxy.iptables_rules import (
    LARGE_CLUSTER_ENDPOINTS,
    NodeInfo,
    Ruleset,
    ServicePortRules,
    assemble,
    render_service_port,
)
from node_agent.proxy.model import (
    EndpointsMap,
    ServicePort,
    ServicePortName,
    endpoints_from_slices,
    service_ports,
    slice_service_key,
)
from node_agent.proxy.settings import ProxySettings
from node_agent.proxy.sync_runner import SyncRunner
from skiff.client import ApiClient, Informer, object_key

log = logging.getLogger("skiff.proxy")

Obj = dict[str, Any]
TCP_BE_LIBERAL = Path("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
Snapshot = Mapping[str, tuple[Obj | None, Sequence[Obj]]]  # service key -> (Service or None, its slices)


def conntrack_tcp_liberal(path: Path = TCP_BE_LIBERAL) -> bool:
    try:
        return path.read_text().strip() not in ("", "0")
    except OSError:
        return False


@dataclass
class SyncStats:
    service_ports: int = 0
    endpoints: int = 0
    rendered: int = 0  # service ports whose rules were rendered anew (the others came from the cache)
    render_seconds: float = 0.0
    apply: ApplyResult | None = None
    conntrack_deleted: int = 0


def _order_key(name: ServicePortName) -> tuple[str, str, str, str]:
    return name.namespace, name.name, name.port, name.protocol


@dataclass
class ProxyState:
    """The parsed model and the rendered rules of every service port; used by one sync at a
    time, in a worker thread. Only the service ports of changed Services are rendered again,
    so a sync at 10,000 Services costs little more than the Services that changed."""

    node: NodeInfo
    ports: dict[str, list[ServicePort]] = field(default_factory=dict)  # service key -> its ports
    endpoints: dict[str, EndpointsMap] = field(default_factory=dict)  # service key -> endpoints per port
    parts: dict[ServicePortName, ServicePortRules] = field(default_factory=dict)
    udp_used: dict[ServicePortName, UsedPort] = field(default_factory=dict)
    _changed: set[str] = field(default_factory=set)  # service keys whose ports must be rendered again
    _order: list[ServicePortName] | None = None  # every port name in render order; None: sort again
    _index: dict[ServicePortName, int] = field(default_factory=dict)  # position in _order
    _ordered: list[ServicePortRules] = field(default_factory=list)  # parts in _order's order
    _endpoint_counts: dict[str, int] = field(default_factory=dict)  # service key -> endpoints of its ports
    _large: bool = False

    def update(self, snapshot: Snapshot) -> None:
        for key, (svc, slices) in snapshot.items():
            ports = service_ports(svc) if svc is not None else []
            eps = endpoints_from_slices(slices, self.node.node_name)
            if ports == self.ports.get(key, []) and eps == self.endpoints.get(key, {}):
                continue  # e.g. a status-only update: nothing the rules depend on
            old = [sp.name for sp in self.ports.get(key, ())]
            _put(self.ports, key, ports)
            _put(self.endpoints, key, eps)
            _put(self._endpoint_counts, key, sum(len(eps.get(sp.name, ())) for sp in ports))
            for name in old:
                self.parts.pop(name, None)
            if old != [sp.name for sp in ports]:
                self._order = None
            self._changed.add(key)

    def render(self, stats: SyncStats) -> Ruleset:
        """The ruleset for the current model: the same text `render_ruleset` gives."""
        started = time.monotonic()
        total = sum(self._endpoint_counts.values())
        large = total > LARGE_CLUSTER_ENDPOINTS
        if large != self._large:  # per-endpoint comments come or go everywhere
            self._large = large
            self._changed = set(self.ports)
        for key in self._changed:
            eps = self.endpoints.get(key, {})
            for sp in self.ports.get(key, ()):
                rules = self.parts[sp.name] = render_service_port(sp, eps.get(sp.name, ()), self.node, large)
                stats.rendered += 1
                if self._order is not None:
                    self._ordered[self._index[sp.name]] = rules
        self._changed = set()
        if self._order is None:  # a service port came or went: sort again (otherwise no O(N) hashing at all)
            self._order = sorted((sp.name for ports in self.ports.values() for sp in ports), key=_order_key)
            self._index = {name: i for i, name in enumerate(self._order)}
            self._ordered = [self.parts[name] for name in self._order]
        ruleset = assemble(self._ordered, self.node)
        stats.service_ports, stats.endpoints = len(self._order), total
        stats.render_seconds = time.monotonic() - started
        return ruleset

    def udp_usage(self) -> dict[ServicePortName, UsedPort]:
        """Where each UDP service port sends traffic now (for `stale_flows`)."""
        return {sp.name: UsedPort(sp, frozenset(ep.ip for ep in self.parts[sp.name].endpoints))
                for ports in self.ports.values() for sp in ports if sp.name.protocol == "UDP"}


def _put(into: dict[str, Any], key: str, value: Any) -> None:
    if value:
        into[key] = value
    else:
        into.pop(key, None)


class Proxier:
    def __init__(self, client: ApiClient | None, settings: ProxySettings, *, ipt: Iptables | None = None,
                 conntrack: FlowCleaner | None = None, node: NodeInfo | None = None) -> None:
        self.settings = settings
        self.node = node or NodeInfo(node_name=settings.node_name, cluster_cidr=settings.cluster_cidr,
                                     drop_invalid=not conntrack_tcp_liberal())
        self.applier = IptablesApplier(ipt or IptablesExec())
        self.conntrack: FlowCleaner = conntrack or Conntrack()
        self.state = ProxyState(self.node)
        self.runner = SyncRunner(self.sync, settings.min_sync_period, settings.sync_period, name="proxy sync",
                                 expected_errors=(IptablesError,))
        self.services: Informer | None = None
        self.slices: Informer | None = None
        if client is not None:
            self.services = Informer(client, "services")
            self.slices = Informer(client, "endpointslices")
            self.services.add_handlers(on_add=self.on_service, on_update=lambda old, new: self.on_service(new),
                                       on_delete=self.on_service)
            self.slices.add_handlers(on_add=self.on_slice, on_update=self.on_slice_update,
                                     on_delete=self.on_slice_delete)
        self._slices_by_service: dict[str, dict[str, Obj]] = {}
        self._dirty: set[str] = set()
        self._force_full = True
        self._last_full = float("-inf")
        self.last_stats: SyncStats | None = None

    # ---- event handlers: record and mark, nothing else ----------------------------------

    def on_service(self, svc: Obj) -> None:
        self.mark(object_key(svc))

    def on_slice(self, slice_: Obj) -> None:
        key = slice_service_key(slice_)
        if key is not None:
            self._slices_by_service.setdefault(key, {})[object_key(slice_)] = slice_
            self.mark(key)

    def on_slice_update(self, old: Obj, new: Obj) -> None:
        old_key = slice_service_key(old)
        if old_key is not None and old_key != slice_service_key(new):
            self.on_slice_delete(old)
        self.on_slice(new)

    def on_slice_delete(self, slice_: Obj) -> None:
        key = slice_service_key(slice_)
        if key is None:
            return
        by_name = self._slices_by_service.get(key, {})
        by_name.pop(object_key(slice_), None)
        if not by_name:
            self._slices_by_service.pop(key, None)
        self.mark(key)

    def mark(self, service_key: str) -> None:
        self._dirty.add(service_key)
        self.runner.request()

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the informers, wait until both listed, then sync until cancelled."""
        assert self.services is not None and self.slices is not None, "run() needs an API client"
        tasks = [self.services.start(), self.slices.start()]
        try:
            while not (await self.services.wait_synced(30) and await self.slices.wait_synced(30)):
                log.info("waiting for Services and EndpointSlices to be listed")
            log.info("informers synced; first full sync of %d services", len(self.services.keys()))
            self.runner.request()
            await self.runner.run()
        finally:
            await self.services.stop()
            await self.slices.stop()
            for task in tasks:
                task.cancel()

    async def sync(self) -> None:
        """One sync (called by the runner): snapshot the changes here, do the work in a thread."""
        dirty, self._dirty = self._dirty, set()
        now = time.monotonic()
        full = self._force_full or now - self._last_full > self.settings.full_sync_period
        if self._force_full and self.services is not None:
            dirty = set(self.services.keys()) | set(self._slices_by_service) | set(self.state.ports) | dirty
        snapshot: Snapshot = {key: (self.services.get(key) if self.services is not None else None,
                                    list(self._slices_by_service.get(key, {}).values())) for key in dirty}
        try:
            stats = await asyncio.to_thread(self.sync_blocking, snapshot, full, not dirty)
        except BaseException:
            self._dirty |= dirty  # nothing is lost: the retry sees these again
            self._force_full = True
            raise
        self._force_full = False
        if full:
            self._last_full = now
        self.last_stats = stats

    def sync_blocking(self, snapshot: Snapshot, full: bool, periodic: bool = False) -> SyncStats:
        """Update the model, render, apply; clear stale UDP flows. Raises `IptablesError`."""
        stats = SyncStats()
        self.state.update(snapshot)
        if periodic and not full and self.applier.applied is not None and self.applier.rules_lost():
            log.warning("the canary chain %s is gone (tables flushed?); rewriting every rule", CANARY_CHAIN)
            full = True
        ruleset = self.state.render(stats)
        stats.apply = self.applier.apply(ruleset, full=full)
        after = self.state.udp_usage()
        flows = stale_flows(self.state.udp_used, after)
        self.state.udp_used = after
        if flows:
            stats.conntrack_deleted = self.conntrack.clear(flows)
        if stats.apply.changed:
            log.info("%s sync of %d service ports, %d endpoints: rendered %d in %.0f ms, applied in %.0f ms%s",
                     "full" if stats.apply.full else "partial", stats.service_ports, stats.endpoints, stats.rendered,
                     stats.render_seconds * 1000, stats.apply.seconds * 1000,
                     f"; cleared {stats.conntrack_deleted} UDP flows" if stats.conntrack_deleted else "")
        return stats

    def cleanup(self) -> int:
        return self.applier.cleanup()


def make_proxier(client: ApiClient, settings: ProxySettings, netns: str | None = None) -> Proxier:
    return Proxier(client, settings, ipt=IptablesExec(netns=netns), conntrack=Conntrack(netns=netns))


async def run_proxy(client: ApiClient, settings: ProxySettings) -> None:
    """The proxy inside another program's event loop (the agent's `_run` starts this as a task)."""
    proxier = make_proxier(client, settings)
    log.info("service proxy in %s mode on node %s (cluster CIDR %s, min sync %gs, sync %gs)", settings.mode,
             settings.node_name, settings.cluster_cidr or "none", settings.min_sync_period, settings.sync_period)
    await proxier.run()

"""Node IPAM: every Node gets its own spec.podCIDR from the cluster CIDR (range allocator).

Contract of `NodeIpamController`:
  * before handing anything out it marks every CIDR already on a Node as used (nodes the
    lab's agents registered with ``--pod-cidr`` included), so a restart never reissues one;
  * ``sync(name)``: a Node with podCIDR(s) has them marked used; one without gets the next
    free block, written as spec.podCIDR + spec.podCIDRs with a compare-and-swap on its
    resourceVersion; if the Node changed meanwhile it is read again, and if someone else
    set a CIDR first ours goes back to the pool;
  * a deleted Node's CIDR goes back to the pool, and Nodes still waiting for one are
    looked at again; a full pool is a CIDRNotAvailable event and a retry with backoff.
Allocation is in memory and synchronous (one event loop), so two Nodes can never be
handed the same block; the API's podCIDR immutability guards against a second allocator.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

from control_plane.controllers.events import WARNING, EventRecorder, EventSink
from control_plane.controllers.settings import ControllerManagerSettings, NodeIpamSettings, current_settings
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.client.api import ApiClient
from skiff.client.errors import (
    ApiClientError,
    ApiConnectionError,
    ApiStatusError,
    Conflict,
    Invalid,
    NotFound,
    ServerError,
)
from skiff.client.informer import Informer, SharedInformerFactory

log = logging.getLogger(__name__)

CIDR_UPDATE_RETRIES = 3


class CidrSetFull(Exception):
    pass


class CidrSet:
    """The blocks of one cluster CIDR: which are used and by whom. Like Kubernetes' cidrset,
    the next allocation starts after the last one, so a freed block is reused last."""

    def __init__(self, cluster: ipaddress.IPv4Network, mask_size: int) -> None:
        if not cluster.prefixlen <= mask_size <= 32:
            raise ValueError(f"node CIDR mask /{mask_size} does not fit in {cluster}")
        self.cluster = cluster
        self.mask_size = mask_size
        self.size = 1 << (mask_size - cluster.prefixlen)
        self._block = 1 << (32 - mask_size)
        self._owners: dict[int, str] = {}
        self._next = 0

    def _index(self, net: ipaddress.IPv4Network) -> int:
        if net.prefixlen != self.mask_size or not net.subnet_of(self.cluster):
            raise ValueError(f"{net} is not a /{self.mask_size} block of the cluster CIDR {self.cluster}")
        return (int(net.network_address) - int(self.cluster.network_address)) // self._block

    def _net(self, index: int) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((int(self.cluster.network_address) + index * self._block, self.mask_size))

    @property
    def used(self) -> int:
        return len(self._owners)

    def owner(self, net: ipaddress.IPv4Network) -> str | None:
        return self._owners.get(self._index(net))

    def allocate_next(self, owner: str) -> ipaddress.IPv4Network:
        for step in range(self.size):
            index = (self._next + step) % self.size
            if index not in self._owners:
                self._owners[index] = owner
                self._next = (index + 1) % self.size
                return self._net(index)
        raise CidrSetFull(f"no /{self.mask_size} left in {self.cluster} ({self.size} in use)")

    def occupy(self, net: ipaddress.IPv4Network, owner: str) -> str | None:
        """Mark ``net`` used by ``owner``; returns the previous owner if it was someone else's."""
        index = self._index(net)
        previous = self._owners.get(index)
        if previous is None:
            self._owners[index] = owner
        return previous if previous not in (None, owner) else None

    def release(self, net: ipaddress.IPv4Network, owner: str) -> bool:
        """Free ``net`` if ``owner`` holds it (never someone else's block)."""
        index = self._index(net)
        if self._owners.get(index) == owner:
            del self._owners[index]
            return True
        return False


def node_cidrs(node: Mapping[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = [c for c in spec.get("podCIDRs") or [] if c]
    if not cidrs and spec.get("podCIDR"):
        cidrs = [spec["podCIDR"]]
    return cidrs


def _v4(cidr: str) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    return net if isinstance(net, ipaddress.IPv4Network) else None


class NodeIpamController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | NodeIpamSettings | None = None,
                 events: EventSink | None = None, workers: int = 4) -> None:
        self.client = client
        if settings is None:
            settings = current_settings()
        self.settings = settings.node_ipam if isinstance(settings, ControllerManagerSettings) else settings
        self.cidrs = CidrSet(self.settings.cluster_cidr, self.settings.node_cidr_mask_size)
        self._own_informers = informers is None
        self.informers = informers or SharedInformerFactory(client)
        self.nodes: Informer = self.informers.informer_for("nodes")
        self.queue = WorkQueue()
        self.workers = workers
        self._recorder = EventRecorder(client, "node-ipam-controller") if events is None else None
        self.record: EventSink = events or self._recorder  # type: ignore[assignment]
        self._warned: set[tuple[str, str]] = set()
        self._pending: dict[str, ipaddress.IPv4Network] = {}  # written or not: unknown (a timeout)
        self.nodes.add_handlers(on_add=self._on_node, on_update=lambda old, new: self._on_node(new),
                                on_delete=self._on_delete)

    # ---- event handlers: only note what changed ---------------------------------------

    def _on_node(self, node: dict[str, Any]) -> None:
        self.queue.add(node["metadata"]["name"])

    def _on_delete(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        pending = self._pending.pop(name, None)
        if pending is not None:
            self.cidrs.release(pending, name)
        if self.release(node) or pending is not None:
            # A block came free: nodes that found the pool full may fit now.
            for waiting in self.nodes.list():
                if not node_cidrs(waiting):
                    self.queue.add(waiting["metadata"]["name"])
        self.queue.add(name)

    # ---- bookkeeping ------------------------------------------------------------------

    def occupy(self, node: Mapping[str, Any]) -> None:
        name = node["metadata"]["name"]
        for cidr in node_cidrs(node):
            net = _v4(cidr)
            if net is None or net.prefixlen != self.cidrs.mask_size or not net.subnet_of(self.cidrs.cluster):
                if (name, cidr) not in self._warned:
                    self._warned.add((name, cidr))
                    log.warning("node %s: podCIDR %s is not a /%d of the cluster CIDR %s; not tracking it",
                                name, cidr, self.cidrs.mask_size, self.cidrs.cluster)
                continue
            other = self.cidrs.occupy(net, name)
            if other is not None and (name, cidr) not in self._warned:
                self._warned.add((name, cidr))
                log.error("node %s: podCIDR %s is also node %s's; pods of the two may clash", name, cidr, other)

    def release(self, node: Mapping[str, Any]) -> bool:
        name = node["metadata"]["name"]
        freed = False
        for cidr in node_cidrs(node):
            net = _v4(cidr)
            if net is not None and net.prefixlen == self.cidrs.mask_size and net.subnet_of(self.cidrs.cluster):
                if self.cidrs.release(net, name):
                    log.info("node %s: released podCIDR %s", name, cidr)
                    freed = True
        return freed

    # ---- loop -------------------------------------------------------------------------

    async def run(self) -> None:
        if not self.settings.allocate_node_cidrs:
            log.info("node IPAM: --allocate-node-cidrs is off; not assigning pod CIDRs")
            await asyncio.Event().wait()  # a controller's run never returns
        recorder = asyncio.create_task(self._recorder.run()) if self._recorder else None
        self.informers.start()
        try:
            await self.nodes.wait_synced()
            for node in self.nodes.list():  # every block in use before the first allocation
                self.occupy(node)
                self.queue.add(node["metadata"]["name"])
            log.info("node IPAM: %d of %d /%d blocks of %s in use", self.cidrs.used, self.cidrs.size,
                     self.cidrs.mask_size, self.cidrs.cluster)
            await asyncio.gather(*(run_worker(self.queue, self.sync, "node-ipam-controller", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()
            if self._own_informers:
                await self.informers.stop()
            if recorder is not None:
                recorder.cancel()

    async def sync(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        if node["metadata"].get("deletionTimestamp"):
            self.release(node)
            return
        if node_cidrs(node):
            self.occupy(node)
            return
        try:
            net = self._pending.pop(name, None) or self.cidrs.allocate_next(name)
        except CidrSetFull as exc:
            self.record(node, WARNING, "CIDRNotAvailable", f"Node {name} status is now: CIDRNotAvailable")
            raise RuntimeError(f"node {name}: failed to allocate a pod CIDR: {exc}") from None
        await self._assign(name, net)

    async def _assign(self, name: str, net: ipaddress.IPv4Network) -> None:
        """Write ``net`` onto the Node, or give it back when the Node got another meanwhile."""
        cidr = str(net)
        for attempt in range(1, CIDR_UPDATE_RETRIES + 1):
            try:
                node = await self.client.get("nodes", name)
            except NotFound:
                self.cidrs.release(net, name)
                return
            except ApiClientError:
                self.cidrs.release(net, name)  # nothing written yet
                raise
            existing = node_cidrs(node)
            if existing == [cidr]:
                return  # our earlier write went through after all
            if existing:
                log.info("node %s already has podCIDR %s; returning %s to the pool", name, existing[0], cidr)
                self.cidrs.release(net, name)
                self.occupy(node)
                return
            patch = {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                     "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}
            try:
                await self.client.patch("nodes", name, patch)
            except (Conflict, Invalid) as exc:
                log.info("node %s changed while assigning podCIDR %s (attempt %d/%d): %s; reading it again",
                         name, cidr, attempt, CIDR_UPDATE_RETRIES, exc)
                continue
            except NotFound:
                self.cidrs.release(net, name)
                return
            except (ApiConnectionError, ServerError):
                # The write may have gone through: keep the block for this node, never hand it
                # to another; the retry reads the node and either sees it or writes it again.
                self._pending[name] = net
                self.record(node, WARNING, "CIDRAssignmentFailed", f"Node {name} status is now: CIDRAssignmentFailed")
                raise
            except ApiStatusError:
                self._assignment_failed(node, net)
                raise
            log.info("node %s: podCIDR set to %s", name, cidr)
            return
        self._assignment_failed({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}}, net)
        raise RuntimeError(f"node {name}: could not set podCIDR {cidr} after {CIDR_UPDATE_RETRIES} attempts")

    def _assignment_failed(self, node: Mapping[str, Any], net: ipaddress.IPv4Network) -> None:
        name = node["metadata"]["name"]
        self.record(node, WARNING, "CIDRAssignmentFailed", f"Node {name} status is now: CIDRAssignmentFailed")
        self.cidrs.release(net, name)

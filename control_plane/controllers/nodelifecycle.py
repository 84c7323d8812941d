"""The node lifecycle controller (kube-controller-manager's nodelifecycle), with its
NoExecute taint manager.

Four loops share the caches of Nodes, Leases (kube-node-lease) and Pods:

* health monitor, every node_monitor_period (`monitor_node_health`): a Node whose kubelet
  has not been heard from (Ready heartbeat or Lease renewTime unchanged, as observed on
  this controller's clock) for node_monitor_grace_period gets Ready, MemoryPressure,
  DiskPressure and PIDPressure set to Unknown through nodes/status; its pods are marked
  not Ready. Ready=False or Unknown queues the node for the matching NoExecute taint
  (not-ready / unreachable); Ready=True removes them. A single zone's state (Normal,
  PartialDisruption, FullDisruption) sets the tainting rate; when every node is down the
  controller assumes its own network is at fault, removes the NoExecute taints and evicts
  nothing until some node is back.
* NoExecute tainter, every 100 ms (`do_no_execute_tainting_pass`): adds the queued taints,
  at most node_eviction_rate nodes per second.
* NoSchedule tainting (`sync_no_schedule_taints(node)`), on every Node change: the
  conditions' NoSchedule taints (not-ready, unreachable, memory/disk/pid-pressure,
  network-unavailable) and unschedulable.
* taint manager (`sync_pod_eviction(pod)`), on Node taint and Pod changes: a pod on a
  node with NoExecute taints it does not tolerate is deleted at once; one tolerating them
  for tolerationSeconds is deleted when they run out, counted from when the taint was
  added (its timeAdded, so a restarted controller does not start the count again).

Pods deleted on an unreachable node stay Terminating until their agent confirms, as in
Kubernetes; PodGC force-deletes them once the Node object is gone.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from control_plane.controllers.events import NORMAL, WARNING, EventRecorder, EventSink
from control_plane.controllers.settings import ControllerManagerSettings, NodeLifecycleSettings, current_settings
from control_plane.controllers.taints import (
    NO_EXECUTE,
    NOT_READY_NO_EXECUTE,
    UNREACHABLE_NO_EXECUTE,
    condition,
    matching_tolerations,
    min_toleration_seconds,
    no_execute_taints,
    owned_no_schedule_taints,
    parse_time,
    rfc3339,
    swap_node_taints,
    taint_exists,
    wanted_no_schedule_taints,
)
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, Conflict, NotFound
from skiff.client.informer import Informer, SharedInformerFactory, object_key

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
NODE_EVICTION_PERIOD = 0.1  # how often the NoExecute tainter runs
NODE_HEALTH_UPDATE_RETRIES = 5
EXCLUDE_DISRUPTION_LABEL = "node.kubernetes.io/exclude-disruption"
MONITORED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")  # not NetworkUnavailable

STATE_INITIAL = "Initial"
STATE_NORMAL = "Normal"
STATE_FULL_DISRUPTION = "FullDisruption"
STATE_PARTIAL_DISRUPTION = "PartialDisruption"


@dataclass
class NodeHealth:
    """What this controller last saw of a node's kubelet, on its own clock."""

    probe_time: float  # when a new Ready heartbeat or Lease renewal was last seen
    ready_transition_time: float
    heartbeat: str | None = None  # Ready's lastHeartbeatTime as last seen
    transition: str | None = None  # Ready's lastTransitionTime as last seen
    lease_renew: float | None = None


class TokenBucket:
    """flowcontrol's token bucket with burst 1; rate 0 never accepts."""

    def __init__(self, rate: float, clock: Callable[[], float], burst: int = 1) -> None:
        self.clock = clock
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.last = clock()

    def set_rate(self, rate: float) -> None:
        if rate != self.rate:
            self.rate = rate
            self.tokens = float(self.burst)  # SwapLimiter starts a fresh limiter
            self.last = self.clock()

    def try_accept(self) -> bool:
        if self.rate <= 0:
            return False
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def compute_zone_state(ready_statuses: list[str | None], unhealthy_threshold: float) -> tuple[int, str]:
    """ComputeZoneState: (not ready count, state) from the nodes' Ready statuses."""
    not_ready = sum(1 for s in ready_statuses if s != "True")
    ready = len(ready_statuses) - not_ready
    if ready == 0 and not_ready > 0:
        return not_ready, STATE_FULL_DISRUPTION
    if not_ready > 2 and not_ready / (not_ready + ready) >= unhealthy_threshold:
        return not_ready, STATE_PARTIAL_DISRUPTION
    return not_ready, STATE_NORMAL


def _newer(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The later of two copies of one object, by resourceVersion (a revision number here)."""
    def rv(obj: Mapping[str, Any]) -> int:
        try:
            return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
        except ValueError:
            return 0
    return b if rv(b) >= rv(a) else a


def _taint_id(taint: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(taint.get("key") or ""), str(taint.get("effect") or ""), str(taint.get("value") or ""))


class NodeLifecycleController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | NodeLifecycleSettings | None = None,
                 events: EventSink | None = None, clock: Callable[[], float] = time.time,
                 workers: int = 4) -> None:
        self.client = client
        if settings is None:
            settings = current_settings()
        self.settings = settings.node_lifecycle if isinstance(settings, ControllerManagerSettings) else settings
        self.clock = clock
        self.workers = workers
        self._own_informers = informers is None
        self.informers = informers or SharedInformerFactory(client)
        self.nodes: Informer = self.informers.informer_for("nodes")
        self.leases: Informer = self.informers.informer_for("leases", LEASE_NAMESPACE)
        self.pods: Informer = self.informers.informer_for("pods")
        self._recorder = EventRecorder(client, "node-controller") if events is None else None
        self.record: EventSink = events or self._recorder  # type: ignore[assignment]

        self.health: dict[str, NodeHealth] = {}
        self.known_nodes: set[str] = set()
        self.nodes_to_retry: set[str] = set()  # MarkPodsNotReady failed; try again next pass
        self.zone_state = STATE_INITIAL
        self.limiter = TokenBucket(self.settings.node_eviction_rate, clock)
        # The health pass and the NoExecute tainter take turns (Kubernetes' evictorLock): a
        # node queued early in a pass must not be tainted before the pass has seen that the
        # whole zone is down.
        self.evictor_lock = asyncio.Lock()
        # Nodes waiting for a NoExecute taint, each with the newest copy this controller has
        # seen (its own status write may not have reached the cache yet).
        self.tainter: OrderedDict[str, dict[str, Any]] = OrderedDict()

        self.pods_by_node: dict[str, set[str]] = {}
        self._pod_node: dict[str, str] = {}
        self.taint_seen: dict[tuple[str, str, str, str], float] = {}  # (node, key, effect, value) -> first seen
        self.scheduled: dict[str, float] = {}  # pod key -> when it is to be deleted
        self.no_schedule_queue = WorkQueue()
        self.eviction_queue = WorkQueue()

        self.nodes.add_handlers(on_add=lambda n: self._on_node(None, n), on_update=self._on_node,
                                on_delete=self._on_node_delete)
        self.pods.add_handlers(on_add=self._on_pod, on_update=lambda old, new: self._on_pod(new),
                               on_delete=self._on_pod_delete)

    # ---- event handlers: bookkeeping and enqueueing only ------------------------------------

    def _on_node(self, old: dict[str, Any] | None, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        self.no_schedule_queue.add(name)
        now = self.clock()
        new_taints = {_taint_id(t) for t in no_execute_taints(node)}
        for key, effect, value in new_taints:
            self.taint_seen.setdefault((name, key, effect, value), now)
        old_taints = {_taint_id(t) for t in no_execute_taints(old)} if old is not None else None
        if old_taints == new_taints:
            return
        for gone in (old_taints or set()) - new_taints:
            self.taint_seen.pop((name, *gone), None)
        for pod_key in self.pods_by_node.get(name, ()):
            self.eviction_queue.add(pod_key)

    def _on_node_delete(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        self.tainter.pop(name, None)
        for seen in [k for k in self.taint_seen if k[0] == name]:
            del self.taint_seen[seen]
        for pod_key in self.pods_by_node.get(name, ()):
            self.eviction_queue.add(pod_key)  # the sync cancels what was scheduled

    def _index_pod(self, pod: Mapping[str, Any]) -> str | None:
        key = object_key(pod)
        node = (pod.get("spec") or {}).get("nodeName") or None
        previous = self._pod_node.get(key)
        if previous != node:
            if previous is not None:
                self._unindex(key, previous)
            if node is not None:
                self._pod_node[key] = node
                self.pods_by_node.setdefault(node, set()).add(key)
        return node

    def _unindex(self, key: str, node: str) -> None:
        self._pod_node.pop(key, None)
        on_node = self.pods_by_node.get(node)
        if on_node is not None:
            on_node.discard(key)
            if not on_node:
                del self.pods_by_node[node]

    def _on_pod(self, pod: dict[str, Any]) -> None:
        key = object_key(pod)
        node_name = self._index_pod(pod)
        node = self.nodes.get(node_name) if node_name else None
        if key in self.scheduled or (node is not None and no_execute_taints(node)):
            self.eviction_queue.add(key)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        key = object_key(pod)
        node = self._pod_node.get(key)
        if node is not None:
            self._unindex(key, node)
        self.scheduled.pop(key, None)

    # ---- loops ------------------------------------------------------------------------------

    async def run(self) -> None:
        recorder = asyncio.create_task(self._recorder.run()) if self._recorder else None
        self.informers.start()
        try:
            for informer in (self.nodes, self.leases, self.pods):
                await informer.wait_synced()
            # Handlers may have been registered on informers that were already running
            # (a restarted controller on a shared factory): rebuild from the caches.
            for pod in self.pods.list():
                self._on_pod(pod)
            for node in self.nodes.list():
                self._on_node(None, node)
            log.info("node lifecycle: watching %d nodes; grace period %gs, monitor period %gs, eviction rate %g/s",
                     len(self.nodes.keys()), self.settings.node_monitor_grace_period,
                     self.settings.node_monitor_period, self.settings.node_eviction_rate)
            await asyncio.gather(
                self._every(self.settings.node_monitor_period, self.monitor_node_health, "monitoring node health"),
                self._every(NODE_EVICTION_PERIOD, self.do_no_execute_tainting_pass, "NoExecute tainting"),
                *(run_worker(self.no_schedule_queue, self.sync_no_schedule_taints, "node-lifecycle-noschedule",
                             log.warning) for _ in range(self.workers)),
                *(run_worker(self.eviction_queue, self.sync_pod_eviction, "taint-manager", log.warning)
                  for _ in range(self.workers)),
            )
        finally:
            self.no_schedule_queue.close()
            self.eviction_queue.close()
            if self._own_informers:
                await self.informers.stop()
            if recorder is not None:
                recorder.cancel()

    @staticmethod
    async def _every(period: float, step: Callable[[], Awaitable[None]], what: str) -> None:
        """The endless loop, alone: one step per period; a failed step is logged, never fatal."""
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next period tries again from the caches
                log.exception("%s failed; trying again in %gs", what, period)
            await asyncio.sleep(period)

    # ---- node health ------------------------------------------------------------------------

    async def monitor_node_health(self) -> None:
        """One pass over every node (see the module docstring)."""
        async with self.evictor_lock:
            await self._monitor_node_health()

    async def _monitor_node_health(self) -> None:
        nodes = self.nodes.list()
        names = {n["metadata"]["name"] for n in nodes}
        for node in nodes:
            name = node["metadata"]["name"]
            if name not in self.known_nodes:
                self.known_nodes.add(name)
                self.record(node, NORMAL, "RegisteredNode", f"Registered Node {name} in Controller")
        for name in sorted(self.known_nodes - names):
            self.known_nodes.discard(name)
            self.health.pop(name, None)
            self.nodes_to_retry.discard(name)
            self.record({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}}, NORMAL, "RemovingNode",
                        f"Removing Node {name} from Controller")

        zone_statuses: list[str | None] = []
        for cached in nodes:
            name = cached["metadata"]["name"]
            try:
                node, observed, current = await self.update_node_health(cached)
            except NotFound:
                continue
            except ApiClientError as exc:
                log.warning("node %s: updating its health failed: %s; no pods will be evicted this time", name, exc)
                continue
            if EXCLUDE_DISRUPTION_LABEL not in (node["metadata"].get("labels") or {}):
                zone_statuses.append(current.get("status") if current else None)
            if current is None:
                continue
            status = current.get("status")
            try:
                await self.process_taint_based_eviction(node, str(status))
            except ApiClientError as exc:
                log.warning("node %s: updating its NoExecute taints failed: %s; trying again next pass", name, exc)
            if status != "True" and (observed == "True" or name in self.nodes_to_retry):
                if observed == "True":
                    self.record(node, NORMAL, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
                if await self.mark_pods_not_ready(name):
                    self.nodes_to_retry.discard(name)
                else:
                    self.nodes_to_retry.add(name)
            elif status == "True":
                self.nodes_to_retry.discard(name)
        await self.handle_disruption(zone_statuses, nodes)

    def _observe(self, node: Mapping[str, Any]) -> tuple[NodeHealth, dict[str, Any], float]:
        """tryUpdateNodeHealth's bookkeeping: refresh the probe time from the Ready heartbeat
        and the Lease; returns (health, observed Ready condition, grace period)."""
        name = node["metadata"]["name"]
        now = self.clock()
        health = self.health.get(name)
        ready = condition(node, "Ready")
        if ready is None:
            # Never posted: pretend an Unknown condition from the node's creation.
            created_text = node["metadata"].get("creationTimestamp")
            observed = {"type": "Ready", "status": "Unknown", "lastHeartbeatTime": created_text,
                        "lastTransitionTime": created_text}
            grace = self.settings.node_startup_grace_period
            if health is None:
                created = parse_time(created_text) or now
                health = NodeHealth(probe_time=min(created, now), ready_transition_time=min(created, now))
        else:
            observed = ready
            grace = self.settings.node_monitor_grace_period
            if health is None or health.heartbeat is None:
                health = NodeHealth(probe_time=now, ready_transition_time=now, heartbeat=ready.get("lastHeartbeatTime"),
                                    transition=ready.get("lastTransitionTime"),
                                    lease_renew=health.lease_renew if health else None)
            elif health.heartbeat != ready.get("lastHeartbeatTime"):
                health.probe_time = now
                if health.transition != ready.get("lastTransitionTime"):
                    health.ready_transition_time = now
                health.heartbeat = ready.get("lastHeartbeatTime")
                health.transition = ready.get("lastTransitionTime")
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{name}")
        renew = parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
        if renew is not None and (health.lease_renew is None or renew > health.lease_renew):
            # Kubelets with Leases post their status rarely; a renewal is a heartbeat.
            health.lease_renew = renew
            health.probe_time = now
        self.health[name] = health
        return health, observed, grace

    async def update_node_health(self, node: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
        """Returns (node as it is now, Ready status observed before, Ready condition now)."""
        name = node["metadata"]["name"]
        for attempt in range(1, NODE_HEALTH_UPDATE_RETRIES + 1):
            health, observed, grace = self._observe(node)
            now = self.clock()
            if now <= health.probe_time + grace:
                return node, str(observed.get("status")), condition(node, "Ready")
            updated = copy.deepcopy(node)
            conditions = updated.setdefault("status", {}).setdefault("conditions", [])
            stamp = rfc3339(now)
            for type_ in MONITORED_CONDITIONS:
                current = next((c for c in conditions if c.get("type") == type_), None)
                if current is None:
                    conditions.append({"type": type_, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                       "message": "Kubelet never posted node status.",
                                       "lastHeartbeatTime": node["metadata"].get("creationTimestamp"),
                                       "lastTransitionTime": stamp})
                elif current.get("status") != "Unknown":
                    current.update(status="Unknown", reason="NodeStatusUnknown",
                                   message="Kubelet stopped posting node status.", lastTransitionTime=stamp)
            ready = condition(updated, "Ready")
            if ready == observed:
                return node, str(observed.get("status")), ready
            log.info("node %s: no heartbeat for %.1fs (grace period %gs); Ready %s -> Unknown", name,
                     now - health.probe_time, grace, observed.get("status"))
            try:
                result = await self.client.update_status("nodes", updated)
            except Conflict:
                if attempt == NODE_HEALTH_UPDATE_RETRIES:
                    raise
                node = await self.client.get("nodes", name)
                continue
            health.ready_transition_time = now
            ready_now = condition(result, "Ready")
            health.transition = (ready_now or {}).get("lastTransitionTime")
            return result, str(observed.get("status")), ready_now
        raise AssertionError("unreachable")

    async def mark_pods_not_ready(self, node_name: str) -> bool:
        """MarkPodsNotReady: every pod on the node gets Ready=False; False if some write failed."""
        ok = True
        for key in sorted(self.pods_by_node.get(node_name, ())):
            pod = self.pods.get(key)
            if pod is None or (pod.get("spec") or {}).get("nodeName") != node_name:
                continue
            conditions = (pod.get("status") or {}).get("conditions") or []
            ready = next((c for c in conditions if c.get("type") == "Ready"), None)
            if ready is None or ready.get("status") == "False":
                continue
            updated = copy.deepcopy(pod)
            for c in updated["status"]["conditions"]:
                if c.get("type") == "Ready":
                    c["status"] = "False"
                    c["lastTransitionTime"] = rfc3339(self.clock())
            try:
                await self.client.update_status("pods", updated)
            except NotFound:
                continue
            except ApiClientError as exc:
                log.warning("pod %s: marking it not ready failed: %s; trying again next pass", key, exc)
                ok = False
                continue
            self.record(pod, WARNING, "NodeNotReady", "Node is not ready")
        return ok

    # ---- NoExecute taints and zone state ----------------------------------------------------

    async def process_taint_based_eviction(self, node: dict[str, Any], ready_status: str) -> None:
        name = node["metadata"]["name"]
        taints = (node.get("spec") or {}).get("taints") or []
        if self.zone_state == STATE_FULL_DISRUPTION:
            await self.mark_node_as_reachable(node)  # no NoExecute taints while the whole zone is down
            return
        if ready_status == "False":
            if taint_exists(taints, UNREACHABLE_NO_EXECUTE):  # swap straight away, no rate limit
                await swap_node_taints(self.client, node, [NOT_READY_NO_EXECUTE], [UNREACHABLE_NO_EXECUTE],
                                       self.clock)
            else:
                self.mark_for_tainting(node, NOT_READY_NO_EXECUTE)
        elif ready_status == "Unknown":
            if taint_exists(taints, NOT_READY_NO_EXECUTE):
                await swap_node_taints(self.client, node, [UNREACHABLE_NO_EXECUTE], [NOT_READY_NO_EXECUTE],
                                       self.clock)
            else:
                self.mark_for_tainting(node, UNREACHABLE_NO_EXECUTE)
        elif ready_status == "True":
            if await self.mark_node_as_reachable(node):
                log.info("node %s is healthy again; removed its NoExecute taints", name)

    def mark_for_tainting(self, node: dict[str, Any], wanted: Mapping[str, Any]) -> None:
        name = node["metadata"]["name"]
        if taint_exists((node.get("spec") or {}).get("taints") or [], wanted):
            self.tainter.pop(name, None)
        elif name not in self.tainter:
            log.info("node %s: queued for the %s:%s taint", name, wanted["key"], wanted["effect"])
            self.tainter[name] = node
        else:
            self.tainter[name] = _newer(self.tainter[name], node)

    async def mark_node_as_reachable(self, node: dict[str, Any]) -> bool:
        self.tainter.pop(node["metadata"]["name"], None)
        taints = (node.get("spec") or {}).get("taints") or []
        if not (taint_exists(taints, UNREACHABLE_NO_EXECUTE) or taint_exists(taints, NOT_READY_NO_EXECUTE)):
            return False
        return await swap_node_taints(self.client, node, [], [UNREACHABLE_NO_EXECUTE, NOT_READY_NO_EXECUTE],
                                      self.clock)

    async def do_no_execute_tainting_pass(self) -> None:
        """Taint queued nodes, as many as the rate limiter lets through."""
        if not self.tainter:
            return
        async with self.evictor_lock:
            await self._taint_queued()

    async def _taint_queued(self) -> None:
        while self.tainter and self.limiter.try_accept():
            name, queued = next(iter(self.tainter.items()))
            cached = self.nodes.get(name)
            node = _newer(queued, cached) if cached is not None else None
            ready = condition(node, "Ready") if node else None
            status = (ready or {}).get("status")
            if node is None or status not in ("False", "Unknown"):
                self.tainter.pop(name, None)  # gone, or ready again
                continue
            add, remove = ((NOT_READY_NO_EXECUTE, UNREACHABLE_NO_EXECUTE) if status == "False"
                           else (UNREACHABLE_NO_EXECUTE, NOT_READY_NO_EXECUTE))
            try:
                await swap_node_taints(self.client, node, [add], [remove], self.clock)
            except ApiClientError as exc:
                log.warning("node %s: adding taint %s failed: %s; retrying", name, add["key"], exc)
                self.tainter.move_to_end(name)
                return
            self.tainter.pop(name, None)

    async def handle_disruption(self, statuses: list[str | None], nodes: list[dict[str, Any]]) -> None:
        """One zone: when all nodes are down, stop evicting and lift the NoExecute taints; when
        some come back, give every node a fresh grace period; otherwise pick the tainting rate."""
        not_ready, state = compute_zone_state(statuses, self.settings.unhealthy_zone_threshold)
        previous = self.zone_state
        if state == previous:
            return
        self.zone_state = state
        if state == STATE_FULL_DISRUPTION:
            log.warning("Controller detected that all Nodes are not-Ready (%d). Entering master disruption mode.",
                        not_ready)
            self.limiter.set_rate(0)
            self.tainter.clear()
            for node in nodes:
                try:
                    await self.mark_node_as_reachable(node)
                except ApiClientError as exc:
                    log.warning("node %s: removing NoExecute taints failed: %s", node["metadata"]["name"], exc)
            return
        if previous == STATE_FULL_DISRUPTION:
            log.info("Controller detected that some Nodes are Ready. Exiting master disruption mode.")
            now = self.clock()
            for health in self.health.values():
                health.probe_time = now
                health.ready_transition_time = now
        self.limiter.set_rate(self._zone_rate(len(statuses), state))
        if previous != STATE_INITIAL or state != STATE_NORMAL:
            log.info("zone state %s -> %s (%d of %d nodes not ready); NoExecute tainting at %g nodes/s",
                     previous, state, not_ready, len(statuses), self.limiter.rate)

    def _zone_rate(self, zone_size: int, state: str) -> float:
        if state == STATE_PARTIAL_DISRUPTION:
            return (self.settings.secondary_node_eviction_rate
                    if zone_size > self.settings.large_cluster_size_threshold else 0.0)
        return self.settings.node_eviction_rate

    # ---- NoSchedule taints ------------------------------------------------------------------

    async def sync_no_schedule_taints(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        wanted = wanted_no_schedule_taints(node)
        current = owned_no_schedule_taints(node)
        add = [t for t in wanted if not taint_exists(current, t)]
        remove = [t for t in current if not taint_exists(wanted, t)]
        if add or remove:
            await swap_node_taints(self.client, node, add, remove, self.clock)

    # ---- taint manager ----------------------------------------------------------------------

    def taint_start(self, node_name: str, taint: Mapping[str, Any]) -> float:
        """When ``taint`` went on: when this controller first saw it, or its timeAdded when
        that is clearly earlier (the taint predates a restart). timeAdded has whole seconds,
        so it counts from the end of its second: never before the taint really went on."""
        seen = self.taint_seen.setdefault((node_name, *_taint_id(taint)), self.clock())
        added = parse_time(taint.get("timeAdded"))
        return seen if added is None else min(seen, added + 1.0)

    async def sync_pod_eviction(self, key: str) -> None:
        """processPodOnNode, level-triggered: evict now, later (re-queued for then), or never."""
        pod = self.pods.get(key)
        if pod is None:
            self.scheduled.pop(key, None)
            return
        if pod["metadata"].get("deletionTimestamp"):
            self.scheduled.pop(key, None)
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = self.nodes.get(node_name) if node_name else None
        taints = no_execute_taints(node) if node else []
        if node is None or not taints:
            self._cancel(key, pod)
            return
        tolerations = (pod.get("spec") or {}).get("tolerations") or []
        used = matching_tolerations(taints, tolerations)
        now = self.clock()
        if used is None:
            trigger = now
        else:
            seconds = min_toleration_seconds(used)
            if seconds is None:
                self._cancel(key, pod)  # tolerated forever
                return
            timed = [taint for taint, tol in zip(taints, used, strict=True) if tol.get("tolerationSeconds") is not None]
            start = min(self.taint_start(str(node_name), t) for t in timed) if timed else now
            trigger = start + seconds
            if key in self.scheduled:  # still scheduled since before: the earlier deadline stands
                trigger = min(trigger, self.scheduled[key])
        if trigger > now:
            if key not in self.scheduled:
                log.info("pod %s: tolerates the NoExecute taints of node %s for %.1fs more; deleting it then",
                         key, node_name, trigger - now)
            self.scheduled[key] = trigger
            self.eviction_queue.add_after(key, trigger - now)
            return
        await self.evict(pod, str(node_name), taints)
        self.scheduled.pop(key, None)

    def _cancel(self, key: str, pod: Mapping[str, Any]) -> None:
        if self.scheduled.pop(key, None) is not None:
            log.info("pod %s: no longer due for eviction", key)
            self.record(pod, NORMAL, "TaintManagerEviction", f"Cancelling deletion of Pod {key}")

    async def evict(self, pod: Mapping[str, Any], node_name: str, taints: list[dict[str, Any]]) -> None:
        key = object_key(pod)
        md = pod["metadata"]
        log.info("pod %s: evicting it from node %s (NoExecute taints %s)", key, node_name,
                 ", ".join(f"{t.get('key')}:{NO_EXECUTE}" for t in taints))
        self.record(pod, NORMAL, "TaintManagerEviction", f"Marking for deletion Pod {key}")
        disruption = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                      "message": "Taint manager: deleting due to NoExecute taint",
                      "lastTransitionTime": rfc3339(self.clock())}
        try:
            await self.client.patch("pods", md["name"], {"status": {"conditions": [disruption]}}, md["namespace"],
                                     patch_type="strategic", subresource="status")
            await self.client.delete("pods", md["name"], md["namespace"], preconditions={"uid": md["uid"]})
        except NotFound:
            return
        except Conflict as exc:  # a new pod of the same name: not ours to delete
            log.info("pod %s: changed identity before eviction (%s); leaving it", key, exc)

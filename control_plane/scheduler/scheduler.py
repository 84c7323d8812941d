"""The scheduler: pending pods in, bindings out.

`Scheduler(client).run()`:
  * informers on Nodes and on pods that have not terminated; bound pods feed the cache,
    pending pods of this scheduler (spec.schedulerName) feed the queue;
  * one pod at a time: decide (synchronously, on the cache), assume the pod on the
    chosen node, hand the binding to a pool of binders, take the next pod: bindings run
    concurrently, decisions never wait for a round trip;
  * a binding that fails un-assumes the pod and sends it back through backoff;
  * a pod that fits nowhere gets PodScheduled=False/Unschedulable with the message
    (written only when it changed), a FailedScheduling event, and waits in the queue
    for a cluster event or its backoff;
  * a bound pod gets a Scheduled event: "Successfully assigned <ns>/<pod> to <node>".
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from control_plane.scheduler.cache import Cache
from control_plane.scheduler.events import NORMAL, WARNING, EventRecorder
from control_plane.scheduler.framework import FitError, Framework
from control_plane.scheduler.podinfo import PodInfo
from control_plane.scheduler.queue import QueuedPod, SchedulingQueue
from control_plane.scheduler.settings import SchedulerSettings
from skiff.client.api import ApiClient, resolve_type
from skiff.client.errors import ApiClientError, Conflict, NotFound
from skiff.client.informer import Informer

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PODS = resolve_type("pods")
NOT_TERMINATED = "status.phase!=Succeeded,status.phase!=Failed"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_SCHEDULER_ERROR = "SchedulerError"


def default_identity() -> str:
    """``<hostname>_<uuid>``, as kube-scheduler names itself in its Lease."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _assigned(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _condition(pod: Obj, type_: str) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class SchedulerStats:
    decisions: int = 0
    decide_seconds: float = 0.0  # time spent deciding (filters, scores, assume), not waiting on I/O
    decide_cpu_seconds: float = 0.0  # the same in CPU time of this thread (not inflated by other processes)
    assumed: int = 0
    bound: int = 0
    bind_failures: int = 0
    bind_seconds: float = 0.0  # summed round trips of bindings
    unschedulable: int = 0

    @property
    def decisions_per_second(self) -> float:
        return self.decisions / self.decide_seconds if self.decide_seconds else 0.0

    @property
    def decisions_per_cpu_second(self) -> float:
        return self.decisions / self.decide_cpu_seconds if self.decide_cpu_seconds else 0.0


class Scheduler:
    def __init__(self, client: ApiClient, settings: SchedulerSettings | None = None, *,
                 identity: str | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.settings = settings or SchedulerSettings()
        self.identity = identity or default_identity()
        self.cache = Cache()
        self.framework = Framework(self.cache, self.settings, rng)
        self.queue = SchedulingQueue(self.settings, clock)
        self.recorder = EventRecorder(client, self.settings.scheduler_name, self.identity,
                                      queue_size=self.settings.event_queue_size, clock=wall_clock)
        self.stats = SchedulerStats()
        self._wall_clock = wall_clock
        self._bindings: asyncio.Queue[tuple[QueuedPod, str]] = asyncio.Queue()
        self._status_writes = asyncio.Semaphore(self.settings.event_writers)
        self._background: set[asyncio.Task[None]] = set()
        self.nodes = Informer(client, "nodes")
        self.pods = Informer(client, "pods", field_selector=NOT_TERMINATED)
        self.nodes.add_handlers(on_add=self._node_added, on_update=self._node_updated, on_delete=self._node_deleted)
        self.pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    @property
    def bindings_queued(self) -> int:
        """Decided pods whose binding has not started yet."""
        return self._bindings.qsize()

    # ---- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Schedule until cancelled."""
        self.nodes.start()
        self.pods.start()
        workers = [asyncio.create_task(self.queue.run_flusher(), name="scheduler-queue-flusher"),
                   asyncio.create_task(self.recorder.run(self.settings.event_writers), name="scheduler-events")]
        workers += [asyncio.create_task(self._bind_worker(), name=f"scheduler-binder-{i}")
                    for i in range(self.settings.bind_concurrency)]
        try:
            await self.nodes.wait_synced()
            await self.pods.wait_synced()
            counts = self.queue.counts()
            log.info("scheduler %s: caches synced (%d nodes, %d bound pods, %d pending); scheduling",
                     self.identity, self.cache.node_count(), len(self.cache.pods), sum(counts.values()))
            while True:
                qp = await self.queue.pop()
                self.schedule_one(qp)
                await asyncio.sleep(0)  # let bindings, informers and events run between decisions
        finally:
            for task in [*workers, *self._background]:
                task.cancel()
            await asyncio.gather(*workers, *self._background, return_exceptions=True)
            await self.pods.stop()
            await self.nodes.stop()

    def schedule_one(self, qp: QueuedPod) -> None:
        """Decide for one popped pod, synchronously: assume and queue the binding, or
        record why it fits nowhere."""
        info = qp.info
        if self.cache.has_pod(info.uid):  # assumed already, or seen bound meanwhile
            self.queue.done(qp.key)
            return
        started = time.perf_counter(), time.thread_time()
        try:
            node = self.framework.schedule(info)
        except FitError as err:
            self._count_decision(started)
            self.stats.unschedulable += 1
            self.queue.unschedulable(qp)
            self._report_failure(qp, REASON_UNSCHEDULABLE, err.message)
            return
        except Exception:  # noqa: BLE001 - a bug for one pod must not stop scheduling
            log.exception("scheduling pod %s failed; retrying after backoff", info.key)
            self.queue.error(qp)
            return
        self.cache.assume(info, node)
        self._count_decision(started)
        self.stats.assumed += 1
        self.queue.done(qp.key)
        self._bindings.put_nowait((qp, node))

    def _count_decision(self, started: tuple[float, float]) -> None:
        self.stats.decisions += 1
        self.stats.decide_seconds += time.perf_counter() - started[0]
        self.stats.decide_cpu_seconds += time.thread_time() - started[1]

    # ---- binding ---------------------------------------------------------------------

    async def _bind_worker(self) -> None:
        while True:
            qp, node = await self._bindings.get()
            try:
                await self.bind(qp, node)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the binder alive
                log.exception("binding pod %s to %s failed unexpectedly", qp.key, node)
                self.cache.forget(qp.info.uid)
                self.queue.error(qp)

    async def bind(self, qp: QueuedPod, node: str) -> None:
        info = qp.info
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": info.name, "namespace": info.namespace, "uid": info.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        started = time.perf_counter()
        try:
            await self.client.request("POST", PODS.path(info.namespace, info.name, "binding"), body=body)
        except NotFound:
            self.cache.forget(info.uid)  # deleted meanwhile: nothing to retry
            return
        except Conflict as exc:
            # Bound by someone else, or being deleted: the informer shows which; no retry.
            self.cache.forget(info.uid)
            log.info("binding pod %s to %s refused: %s", info.key, node, exc)
            return
        except ApiClientError as exc:
            self.cache.forget(info.uid)
            self.stats.bind_failures += 1
            log.warning("binding pod %s to %s failed (attempt %d): %s; retrying in %gs", info.key, node,
                        qp.attempts, exc, self.queue.backoff_duration(qp.attempts))
            self.queue.error(qp)
            self._report_failure(qp, REASON_SCHEDULER_ERROR, f'running Bind plugin "DefaultBinder": {exc}')
            return
        self.cache.finish_binding(info.uid)
        self.stats.bound += 1
        self.stats.bind_seconds += time.perf_counter() - started
        self.recorder.record(info.pod, NORMAL, "Scheduled", "Binding",
                             f"Successfully assigned {info.namespace}/{info.name} to {node}")

    # ---- failures --------------------------------------------------------------------

    def _report_failure(self, qp: QueuedPod, reason: str, message: str) -> None:
        pod = qp.info.pod
        self.recorder.record(pod, WARNING, "FailedScheduling", "Scheduling", message)
        current = _condition(pod, "PodScheduled")
        if current is not None and (current.get("status"), current.get("reason"), current.get("message")) == \
                ("False", reason, message):
            log.debug("pod %s still cannot be scheduled (attempt %d); waiting in the queue", qp.key, qp.attempts)
            return
        log.info("pod %s cannot be scheduled (attempt %d): %s; waiting for a cluster change or its backoff",
                 qp.key, qp.attempts, message)
        since = current.get("lastTransitionTime") if current and current.get("status") == "False" else None
        condition = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                     "lastProbeTime": None, "lastTransitionTime": since or rfc3339(self._wall_clock())}
        self._spawn(self._patch_condition(qp.info, condition))

    async def _patch_condition(self, info: PodInfo, condition: Obj) -> None:
        async with self._status_writes:
            try:
                await self.client.patch(PODS, info.name, {"status": {"conditions": [condition]}}, info.namespace,
                                        patch_type="strategic", subresource="status")
            except NotFound:
                pass
            except ApiClientError as exc:
                log.warning("updating the PodScheduled condition of %s failed: %s; it is retried on the "
                            "next attempt", info.key, exc)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- informer handlers -----------------------------------------------------------

    def _node_added(self, node: Obj) -> None:
        self._node_set(node, "NodeAdd")

    def _node_updated(self, old: Obj, new: Obj) -> None:
        self._node_set(new, "NodeUpdate")

    def _node_set(self, node: Obj, event: str) -> None:
        change = self.cache.set_node(node)
        ni = self.cache.get(node["metadata"]["name"])
        if ni is not None and (change.added or change.static_changed):
            self.framework.node_changed(ni)
        if change.any:
            self.queue.move_all(event)

    def _node_deleted(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        self.cache.remove_node(name)
        self.framework.node_removed(name)

    def _pod_added(self, pod: Obj) -> None:
        if _assigned(pod):
            self.cache.add_pod(pod)
        else:
            self._pending(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if _assigned(new):
            if not _assigned(old):
                md = new["metadata"]
                self.queue.delete(f"{md.get('namespace')}/{md.get('name')}")
            self.cache.add_pod(new)
        else:
            self._pending(new)

    def _pod_deleted(self, pod: Obj) -> None:
        md = pod.get("metadata") or {}
        if _assigned(pod):
            self.cache.remove_pod(str(md.get("uid") or ""))
            self.queue.move_all("AssignedPodDelete")
        else:
            self.queue.delete(f"{md.get('namespace')}/{md.get('name')}")

    def _pending(self, pod: Obj) -> None:
        md = pod.get("metadata") or {}
        key = f"{md.get('namespace')}/{md.get('name')}"
        if (pod.get("spec") or {}).get("schedulerName", self.settings.scheduler_name) != self.settings.scheduler_name \
                or md.get("deletionTimestamp"):
            self.queue.delete(key)
            return
        if self.cache.has_pod(str(md.get("uid") or "")):
            return  # assumed: its binding is in flight
        self.queue.add(PodInfo.of(pod))

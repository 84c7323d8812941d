"""Creating and deleting a controller's pods (Kubernetes' RealPodControl), the slow-start
batching of creates, and which pods go first when there are too many.

Every create and delete is reported as an event on the owner, with Kubernetes' reasons
and messages: ``SuccessfulCreate`` "Created pod: NAME", ``FailedCreate`` "Error creating:
...", ``SuccessfulDelete`` "Deleted pod: NAME", ``FailedDelete`` "Error deleting: ...".
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from control_plane.controllers.events import NORMAL, WARNING, EventSink
from control_plane.controllers.taints import parse_time
from control_plane.controllers.workload_pods import condition, is_active, is_ready, meta, phase, pod_from_template
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, ApiStatusError, NotFound

log = logging.getLogger(__name__)

Obj = dict[str, Any]

SLOW_START_INITIAL_BATCH_SIZE = 1  # controller.SlowStartInitialBatchSize
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"


def namespace_terminating(exc: BaseException) -> bool:
    """The create was refused because the namespace is being deleted: nothing to retry."""
    if not isinstance(exc, ApiStatusError):
        return False
    causes = exc.details.get("causes") or []
    return any(isinstance(c, dict) and c.get("reason") == NAMESPACE_TERMINATING_CAUSE for c in causes)


class PodControl:
    def __init__(self, client: ApiClient, record: EventSink) -> None:
        self.client = client
        self.record = record

    async def create_pod(self, template: Mapping[str, Any], owner: Mapping[str, Any], api_version: str,
                         kind: str) -> Obj:
        pod = pod_from_template(template, owner, api_version, kind)
        if not pod["metadata"]["labels"]:
            raise ApiClientError("unable to create pods, no labels")
        namespace = meta(owner).get("namespace")
        try:
            created = await self.client.create("pods", pod, namespace)
        except ApiClientError as exc:
            if not namespace_terminating(exc):
                self.record(owner, WARNING, "FailedCreate", f"Error creating: {exc}")
            raise
        name = meta(created).get("name")
        log.info("%s %s/%s: created pod %s", kind, namespace, meta(owner).get("name"), name)
        self.record(owner, NORMAL, "SuccessfulCreate", f"Created pod: {name}")
        return created

    async def delete_pod(self, namespace: str, name: str, owner: Mapping[str, Any]) -> None:
        try:
            await self.client.delete("pods", name, namespace)
        except NotFound:
            raise
        except ApiClientError as exc:
            self.record(owner, WARNING, "FailedDelete", f"Error deleting: {exc}")
            raise
        log.info("%s/%s: deleted pod %s", namespace, meta(owner).get("name"), name)
        self.record(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {name}")


async def slow_start_batch(count: int, initial_batch_size: int,
                           fn: Callable[[], Awaitable[Any]]) -> tuple[int, Exception | None]:
    """Call ``fn`` ``count`` times in batches of 1, 2, 4, ... (each batch concurrently),
    stopping after the first batch with a failure: a quota that refuses one pod refuses
    the next hundred too. Returns the number of successes and the batch's first error."""
    remaining, successes = count, 0
    batch = min(remaining, initial_batch_size)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        failures: list[Exception] = []
        for r in results:
            if isinstance(r, Exception):
                failures.append(r)
            elif isinstance(r, BaseException):
                raise r  # CancelledError and friends
        successes += batch - len(failures)
        if failures:
            return successes, failures[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


# ---- which pods to delete first (controller.ActivePodsWithRanks) ----------------------

_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


def _ready_time(pod: Mapping[str, Any]) -> float | None:
    c = condition(pod, "Ready")
    return parse_time(c.get("lastTransitionTime")) if c else None


def _deletion_cost(pod: Mapping[str, Any]) -> int:
    try:
        return int((meta(pod).get("annotations") or {}).get(POD_DELETION_COST, 0))
    except (TypeError, ValueError):
        return 0


def _max_restarts(pod: Mapping[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(s.get("restartCount") or 0) for s in statuses if isinstance(s, dict)), default=0)


def _after_or_zero(t1: float | None, t2: float | None) -> bool:
    """afterOrZero: a missing time sorts first, then the later time."""
    if not t1 or not t2:
        return not t1
    return t1 > t2


def _less(a: tuple[Obj, int], b: tuple[Obj, int]) -> bool:
    """ActivePodsWithRanks.Less: True when pod ``a`` should be deleted before pod ``b``."""
    (pa, rank_a), (pb, rank_b) = a, b
    na, nb = (pa.get("spec") or {}).get("nodeName") or "", (pb.get("spec") or {}).get("nodeName") or ""
    if na != nb and (not na or not nb):
        return not na  # 1. unassigned < assigned
    oa, ob = _PHASE_ORDINAL.get(phase(pa), 0), _PHASE_ORDINAL.get(phase(pb), 0)
    if oa != ob:
        return oa < ob  # 2. Pending < Unknown < Running
    ra, rb = is_ready(pa), is_ready(pb)
    if ra != rb:
        return not ra  # 3. not ready < ready
    ca, cb = _deletion_cost(pa), _deletion_cost(pb)
    if ca != cb:
        return ca < cb  # 4. lower pod-deletion-cost first
    if rank_a != rank_b:
        return rank_a > rank_b  # 5. doubled up on a node < alone
    if ra and rb:
        ta, tb = _ready_time(pa), _ready_time(pb)
        if ta != tb:
            return _after_or_zero(ta, tb)  # 6. ready for less time first
    xa, xb = _max_restarts(pa), _max_restarts(pb)
    if xa != xb:
        return xa > xb  # 7. more restarts first
    ta, tb = parse_time(meta(pa).get("creationTimestamp")), parse_time(meta(pb).get("creationTimestamp"))
    if ta != tb:
        return _after_or_zero(ta, tb)  # 8. newer first
    return False


def _compare(a: tuple[Obj, int], b: tuple[Obj, int]) -> int:
    return -1 if _less(a, b) else 1 if _less(b, a) else 0


def pods_to_delete(pods: Sequence[Obj], related: Sequence[Obj], count: int) -> list[Obj]:
    """The ``count`` pods to delete: unscheduled before scheduled, pending before running,
    not ready before ready, those sharing a node with more related pods (same owner's
    pods) first, the most recently ready, the most restarted, the newest."""
    if count >= len(pods):
        return list(pods)
    on_node: dict[str, int] = {}
    for pod in related:
        if is_active(pod):
            node = (pod.get("spec") or {}).get("nodeName") or ""
            on_node[node] = on_node.get(node, 0) + 1
    ranked = [(pod, on_node.get((pod.get("spec") or {}).get("nodeName") or "", 0)) for pod in pods]
    ranked.sort(key=functools.cmp_to_key(_compare))
    return [pod for pod, _ in ranked[:count]]

"""The Job controller (Kubernetes' job_controller.go, with the ttl-after-finished part).

``sync(namespace/name)``, level-triggered:

  1. Count finished pods the way Kubernetes does since 1.26: every pod is created with the
     ``batch.kubernetes.io/job-tracking`` finalizer, so it cannot vanish uncounted. A
     finished pod (Succeeded; Failed; or being deleted, or still running when the Job is
     finishing, which count as failed) is first recorded by uid in
     status.uncountedTerminatedPods, then its finalizer is removed, then it moves into
     status.succeeded/failed (and, for Indexed Jobs, completedIndexes). A crash between
     the steps repeats a step, never a count.
  2. Decide: failed > backoffLimit (or, with restartPolicy OnFailure, container restarts
     reaching it) is Failed/BackoffLimitExceeded; running past activeDeadlineSeconds is
     Failed/DeadlineExceeded; then the active pods are deleted. Enough successes is
     Complete (with completionTime).
  3. Otherwise manage pods: NonIndexed keeps min(parallelism, completions - succeeded)
     running (a work queue Job, without completions, starts none once one succeeded);
     Indexed keeps one pod per index not yet completed, up to parallelism, with the
     completion index annotation, label, hostname and JOB_COMPLETION_INDEX. Pods after
     failures are created with an exponential backoff (10s doubling to 6m). Extra pods are
     deleted (their finalizer removed first, so they are not counted). A suspended Job has
     its pods deleted, condition Suspended, and no startTime; resuming restarts the clock.
  4. Write status (startTime, active, ready, terminating, succeeded, failed, conditions).

A finished Job with ttlSecondsAfterFinished is deleted (propagation Background) that many
seconds after its Complete/Failed condition. Pods that carry the finalizer but whose Job is
gone or finished have it removed by a second queue (orphan pods).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from control_plane.controllers.events import NORMAL, WARNING, EventRecorder, EventSink
from control_plane.controllers.own_writes import OwnWrites
from control_plane.controllers.pod_control import pods_to_delete, slow_start_batch
from control_plane.controllers.settings import ControllerManagerSettings, current_settings
from control_plane.controllers.taints import parse_time, rfc3339
from control_plane.controllers.workload_pods import (
    FAILED,
    SUCCEEDED,
    controller_of,
    is_active,
    is_ready,
    is_terminal,
    lingers_after_delete,
    meta,
    phase,
    pod_from_template,
)
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, Conflict, NotFound
from skiff.client.informer import SharedInformerFactory, object_key

log = logging.getLogger(__name__)

Obj = dict[str, Any]
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
DEFAULT_BACKOFF = 10.0  # seconds; DefaultJobPodFailureBackOff
MAX_BACKOFF = 360.0  # seconds; MaxJobPodFailureBackOff
FINISHED = ("Complete", "Failed")


# ---- pure helpers ---------------------------------------------------------------------


def job_condition(job: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def finished_condition(job: Mapping[str, Any]) -> dict[str, Any] | None:
    for type_ in FINISHED:
        c = job_condition(job, type_)
        if c is not None:
            return c
    return None


def parse_indexes(text: str | None, limit: int) -> set[int]:
    """``"1,3-5"`` -> {1, 3, 4, 5}, ignoring what is malformed or >= ``limit``."""
    out: set[int] = set()
    for part in (text or "").split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            continue
        out.update(i for i in range(first, last + 1) if 0 <= i < limit)
    return out


def format_indexes(indexes: Iterable[int]) -> str:
    """{1, 3, 4, 5} -> ``"1,3-5"``, as status.completedIndexes is written."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def completion_index(pod: Mapping[str, Any]) -> int | None:
    value = (meta(pod).get("annotations") or {}).get(COMPLETION_INDEX)
    if value is None:
        value = (meta(pod).get("labels") or {}).get(COMPLETION_INDEX)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def is_pod_failed(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """isPodFailed: Failed, or (unless only Failed pods are replaced) being deleted
    without having succeeded: an orphaned pod never reaches Failed."""
    if phase(pod) == FAILED:
        return True
    if (job.get("spec") or {}).get("podReplacementPolicy") == "Failed":
        return False
    return bool(meta(pod).get("deletionTimestamp")) and phase(pod) != SUCCEEDED


def has_finalizer(pod: Mapping[str, Any]) -> bool:
    return TRACKING_FINALIZER in (meta(pod).get("finalizers") or [])


def restarts_past_backoff_limit(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> bool:
    """pastBackoffLimitOnFailure: with restartPolicy OnFailure the kubelet retries in place,
    so container restarts of running pods count against backoffLimit."""
    spec = job.get("spec") or {}
    if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = 0
    for pod in pods:
        if phase(pod) not in ("Running", "Pending"):
            continue
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
    limit = int(spec.get("backoffLimit") or 0)
    return restarts > 0 if limit == 0 else restarts >= limit


def new_condition(type_: str, reason: str, message: str, now: float, status: str = "True") -> Obj:
    stamp = rfc3339(now)
    return {"type": type_, "status": status, "lastProbeTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def set_condition(status: Obj, cond: Obj) -> bool:
    """Add or update a condition; the transition time moves only when the status does."""
    conditions = status.setdefault("conditions", [])
    for i, old in enumerate(conditions):
        if old.get("type") == cond["type"]:
            if old.get("status") == cond["status"] and old.get("reason") == cond["reason"]:
                return False
            if old.get("status") == cond["status"]:
                cond = {**cond, "lastTransitionTime": old.get("lastTransitionTime")}
            conditions[i] = cond
            return True
    conditions.append(cond)
    return True


def backoff_delay(failures: int, base: float, maximum: float) -> float:
    if failures <= 0:
        return 0.0
    return min(base * 2 ** (failures - 1), maximum)


@dataclass
class BackoffRecord:
    failures: int = 0  # pod failures since the last success
    last_failure: float = 0.0
    noticed: set[str] = field(default_factory=set)  # uids of finished pods already accounted for


# ---- the controller ---------------------------------------------------------------------


class JobController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | None = None, events: EventSink | None = None,
                 workers: int | None = None, clock: Callable[[], float] = time.time,
                 backoff_base: float = DEFAULT_BACKOFF, backoff_max: float = MAX_BACKOFF) -> None:
        self.client = client
        settings = settings or current_settings()
        self.workers = workers or settings.concurrency.concurrent_job_syncs
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.informers = informers or SharedInformerFactory(client)
        self._recorder = EventRecorder(client, "job-controller") if events is None else None
        self.record: EventSink = events or self._recorder  # type: ignore[assignment]
        self.queue = WorkQueue()
        self.orphans = WorkQueue()
        self.own_jobs = OwnWrites()
        self.own_pods = OwnWrites()
        self.pods_by_job: dict[str, set[str]] = {}  # job uid -> pod keys
        self._backoff: dict[str, BackoffRecord] = {}  # job key -> pod failures since the last success
        self._due: dict[str, float] = {}  # job key -> monotonic time of the pending wake-up
        self.jobs = self.informers.informer_for("jobs")
        self.pods = self.informers.informer_for("pods")
        self.jobs.add_handlers(on_add=self._job_changed, on_update=lambda old, new: self._job_changed(new),
                               on_delete=self._job_deleted)
        self.pods.add_handlers(on_add=self._pod_changed, on_update=lambda old, new: self._pod_changed(new, old),
                               on_delete=self._pod_deleted)

    # ---- informer events ---------------------------------------------------------------

    def _job_changed(self, job: Obj) -> None:
        self.own_jobs.observe(job)
        self.queue.add(object_key(job))

    def _job_deleted(self, job: Obj) -> None:
        self.own_jobs.observe_delete(job)
        self._backoff.pop(object_key(job), None)
        self._due.pop(object_key(job), None)
        for key in self.pods_by_job.get(str(meta(job).get("uid")), set()):
            self.orphans.add(key)

    @staticmethod
    def _job_ref(pod: Mapping[str, Any]) -> dict[str, Any] | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "Job" or not str(ref.get("apiVersion", "")).startswith("batch/"):
            return None
        return ref

    def _pod_changed(self, pod: Obj, old: Obj | None = None) -> None:
        self.own_pods.observe(pod)
        key = object_key(pod)
        if old is not None:
            old_ref = self._job_ref(old)
            if old_ref is not None and old_ref != self._job_ref(pod):
                self._unindex(str(old_ref.get("uid")), key)
        ref = self._job_ref(pod)
        if ref is None:
            if has_finalizer(pod):
                self.orphans.add(key)
            return
        self.pods_by_job.setdefault(str(ref.get("uid")), set()).add(key)
        job_key = f"{meta(pod).get('namespace')}/{ref.get('name')}"
        job = self.jobs.get(job_key)
        if job is None or meta(job).get("uid") != ref.get("uid") or finished_condition(job):
            if has_finalizer(pod):
                self.orphans.add(key)
            if job is None or meta(job).get("uid") != ref.get("uid"):
                return
        self.queue.add(job_key)

    def _pod_deleted(self, pod: Obj) -> None:
        self.own_pods.observe_delete(pod)
        ref = self._job_ref(pod)
        if ref is None:
            return
        self._unindex(str(ref.get("uid")), object_key(pod))
        self.queue.add(f"{meta(pod).get('namespace')}/{ref.get('name')}")

    def _unindex(self, job_uid: str, pod_key: str) -> None:
        keys = self.pods_by_job.get(job_uid)
        if keys is not None:
            keys.discard(pod_key)
            if not keys:
                del self.pods_by_job[job_uid]

    # ---- loop --------------------------------------------------------------------------

    async def run(self) -> None:
        recorder = asyncio.create_task(self._recorder.run()) if self._recorder else None
        self.informers.start()
        await self.informers.wait_for_sync()
        self.pods_by_job.clear()
        for pod in self.pods.list():
            self._pod_changed(pod)
        for job in self.jobs.list():
            self.queue.add(object_key(job))
        try:
            await asyncio.gather(
                run_worker(self.orphans, self.sync_orphan_pod, "job-controller-orphans", log.warning),
                *(run_worker(self.queue, self.sync, "job-controller", log.warning) for _ in range(self.workers)))
        finally:
            self.queue.close()
            self.orphans.close()
            if recorder is not None:
                recorder.cancel()

    def job_pods(self, job: Mapping[str, Any]) -> list[Obj]:
        uid = meta(job).get("uid")
        cached = [p for p in (self.pods.get(k) for k in sorted(self.pods_by_job.get(str(uid), ()))) if p]
        return self.own_pods.overlay(cached, lambda p: (controller_of(p) or {}).get("uid") == uid)

    async def sync(self, key: str) -> None:
        cached = self.own_jobs.view(key, self.jobs.get(key))
        if cached is None:
            return
        job = copy.deepcopy(cached)
        now = self.clock()
        pods = self.job_pods(job)
        if finished_condition(job):
            await self.remove_finalizers(f"job {key}", [p for p in pods if has_finalizer(p)])
            await self._expire(key, job, now)
            return
        await JobSync(self, key, job, pods, now).run()

    # ---- pods --------------------------------------------------------------------------

    async def remove_finalizers(self, owner: str, pods: Iterable[Obj]) -> set[str]:
        """Remove the tracking finalizer; returns the uids now without it (or gone)."""
        done: set[str] = set()
        for pod in pods:
            md = meta(pod)
            patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER], "uid": md.get("uid")}}
            try:
                self.own_pods.written(await self.client.patch("pods", str(md.get("name")), patch,
                                                              md.get("namespace"), patch_type="strategic"))
            except NotFound:
                self.own_pods.deleted(object_key(pod))
            except ApiClientError as exc:
                log.warning("%s: removing the tracking finalizer of pod %s/%s failed: %s; retrying",
                            owner, md.get("namespace"), md.get("name"), exc)
                continue
            done.add(str(md.get("uid")))
        return done

    async def delete_pods(self, job: Obj, pods: list[Obj], keep_finalizers: bool) -> int:
        """Delete ``pods``; returns how many deletions were issued. Without
        ``keep_finalizers`` the tracking finalizer goes first: the pod is not counted."""
        if not keep_finalizers:
            await self.remove_finalizers(f"job {object_key(job)}", [p for p in pods if has_finalizer(p)])
        deleted = 0
        for pod in pods:
            md = meta(pod)
            try:
                reply = await self.client.delete("pods", str(md.get("name")), md.get("namespace"),
                                                 preconditions={"uid": str(md.get("uid"))})
            except NotFound:
                self.own_pods.deleted(object_key(pod))
                deleted += 1
                continue
            except ApiClientError as exc:
                self.record(job, WARNING, "FailedDelete", f"Error deleting: {exc}")
                continue
            if lingers_after_delete(reply):
                self.own_pods.written(reply)
            else:
                self.own_pods.deleted(object_key(pod))
            deleted += 1
            self.record(job, NORMAL, "SuccessfulDelete", f"Deleted pod: {md.get('name')}")
        return deleted

    async def create_pods(self, job: Obj, indexes: list[int | None]) -> Exception | None:
        """Create a pod per entry (an index for Indexed Jobs), in slow-start batches."""
        pending = list(indexes)

        async def create() -> None:
            index = pending.pop(0)
            pod = self.pod_for(job, index)
            try:
                created = await self.client.create("pods", pod, meta(job).get("namespace"))
            except ApiClientError as exc:
                self.record(job, WARNING, "FailedCreate", f"Error creating: {exc}")
                raise
            self.own_pods.written(created)
            self.record(job, NORMAL, "SuccessfulCreate", f"Created pod: {meta(created).get('name')}")

        _, error = await slow_start_batch(len(indexes), 1, create)
        return error

    @staticmethod
    def pod_for(job: Mapping[str, Any], index: int | None) -> Obj:
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        tmeta = template.setdefault("metadata", {})
        tmeta["finalizers"] = [*(tmeta.get("finalizers") or []), TRACKING_FINALIZER]
        name = str(meta(job).get("name"))
        generate_name = f"{name}-"
        if index is not None:
            tmeta.setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
            tmeta.setdefault("labels", {})[COMPLETION_INDEX] = str(index)
            spec = template.setdefault("spec", {})
            spec["hostname"] = f"{name}-{index}"
            env = {"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}}
            for kind in ("initContainers", "containers"):
                for c in spec.get(kind) or []:
                    if not any(e.get("name") == COMPLETION_INDEX_ENV for e in c.get("env") or []):
                        c["env"] = [*(c.get("env") or []), env]
            generate_name = f"{name}-{index}-"
        return pod_from_template(template, job, "batch/v1", "Job", generate_name=generate_name)

    # ---- status ------------------------------------------------------------------------

    async def write_status(self, job: Obj) -> Obj:
        try:
            written = await self.client.update_status("jobs", job, meta(job).get("namespace"))
        except (Conflict, NotFound):
            raise RuntimeError(f"job {object_key(job)} changed meanwhile") from None
        self.own_jobs.written(written)
        return written

    def note_finished(self, key: str, pods: Iterable[Obj], job: Obj, now: float) -> None:
        """The backoff record (newBackoffRecord): failures since the last success, and when
        the last one was noticed; each pod is noticed once."""
        record = self._backoff.setdefault(key, BackoffRecord())
        for pod in pods:
            uid = str(meta(pod).get("uid"))
            if uid in record.noticed or not has_finalizer(pod):
                continue
            if phase(pod) == SUCCEEDED:
                record.noticed.add(uid)
                record.failures = 0
            elif is_pod_failed(pod, job):
                record.noticed.add(uid)
                record.failures += 1
                record.last_failure = now

    def backoff_remaining(self, key: str, now: float) -> float:
        record = self._backoff.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.last_failure + backoff_delay(record.failures, self.backoff_base, self.backoff_max)
                   - now)

    def requeue_after(self, key: str, delay: float) -> None:
        """Look at ``key`` again after ``delay``; an earlier wake-up already pending wins
        (the queue keeps one timer per key, the last one set)."""
        now = time.monotonic()
        pending = self._due.get(key)
        if pending is not None and now < pending <= now + delay:
            return
        self._due[key] = now + delay
        self.queue.add_after(key, delay)

    async def _expire(self, key: str, job: Obj, now: float) -> None:
        """ttlSecondsAfterFinished: delete a finished Job (and, in the background, its pods)."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        cond = finished_condition(job)
        if ttl is None or cond is None or meta(job).get("deletionTimestamp"):
            return
        finished_at = parse_time(cond.get("lastTransitionTime")) or now
        remaining = finished_at + int(ttl) - now
        if remaining > 0:
            self.requeue_after(key, remaining)
            return
        log.info("job %s: finished %.0fs ago, ttlSecondsAfterFinished %s: deleting it", key, now - finished_at, ttl)
        try:
            await self.client.delete("jobs", str(meta(job).get("name")), meta(job).get("namespace"),
                                     propagation_policy="Background", preconditions={"uid": str(meta(job).get("uid"))})
        except (NotFound, Conflict):
            pass

    async def sync_orphan_pod(self, key: str) -> None:
        """A pod with the tracking finalizer whose Job is gone or finished lets go of it."""
        pod = self.own_pods.view(key, self.pods.get(key))
        if pod is None or not has_finalizer(pod):
            return
        ref = self._job_ref(pod)
        if ref is not None:
            namespace = str(meta(pod).get("namespace"))
            job = self.jobs.get(f"{namespace}/{ref.get('name')}")
            if job is None or meta(job).get("uid") != ref.get("uid"):
                try:  # the cache may lag behind a Job just created: ask the server
                    job = await self.client.get("jobs", str(ref.get("name")), namespace)
                except NotFound:
                    job = None
            if job is not None and meta(job).get("uid") == ref.get("uid") and not finished_condition(job):
                return
        await self.remove_finalizers("orphan pod", [pod])


class JobSync:
    """One sync of one Job: steps 1-4 of the module docstring, on a private copy."""

    def __init__(self, ctl: JobController, key: str, job: Obj, pods: list[Obj], now: float) -> None:
        self.ctl = ctl
        self.key = key
        self.job = job
        self.pods = pods
        self.now = now
        self.spec: Obj = job.get("spec") or {}
        self.status: Obj = job.setdefault("status", {})
        self.original_status = copy.deepcopy(self.status)
        self.indexed = self.spec.get("completionMode") == "Indexed"
        self.completions: int | None = self.spec.get("completions")
        parallelism = self.spec.get("parallelism")
        self.parallelism = int(parallelism) if parallelism is not None else 1
        self.suspended = bool(self.spec.get("suspend"))
        uncounted = self.status.get("uncountedTerminatedPods") or {}
        self.uncounted_succeeded: list[str] = list(uncounted.get("succeeded") or [])
        self.uncounted_failed: list[str] = list(uncounted.get("failed") or [])
        self.completed = parse_indexes(self.status.get("completedIndexes"), self.completions or 0)

    @property
    def name(self) -> str:
        return str(meta(self.job).get("name"))

    def active(self) -> list[Obj]:
        return [p for p in self.pods if is_active(p)]

    def succeeded(self) -> int:
        """status.succeeded plus what is recorded or about to be (getStatus)."""
        recorded = set(self.uncounted_succeeded)
        fresh = sum(1 for p in self.pods if has_finalizer(p) and phase(p) == SUCCEEDED
                    and meta(p).get("uid") not in recorded)
        return int(self.status.get("succeeded") or 0) + len(recorded) + fresh

    def failed(self) -> int:
        recorded = set(self.uncounted_failed)
        fresh = sum(1 for p in self.pods if has_finalizer(p) and is_pod_failed(p, self.job)
                    and meta(p).get("uid") not in recorded)
        return int(self.status.get("failed") or 0) + len(recorded) + fresh

    def succeeded_indexes(self) -> set[int]:
        limit = self.completions or 0
        out = set(self.completed)
        for pod in self.pods:
            index = completion_index(pod)
            if phase(pod) == SUCCEEDED and index is not None and 0 <= index < limit:
                out.add(index)
        return out

    async def run(self) -> None:
        self.ctl.note_finished(self.key, self.pods, self.job, self.now)
        if self.status.get("startTime") is None and not self.suspended:
            self.status["startTime"] = rfc3339(self.now)
        finishing = self.failure_condition()
        if finishing is None and not meta(self.job).get("deletionTimestamp"):
            if self.suspended:
                await self.suspend()
            else:
                self.resume()
                await self.manage()
            finishing = self.completion_condition()
        if finishing is not None and self.active():
            await self.ctl.delete_pods(self.job, self.active(), keep_finalizers=True)
            self.pods = self.ctl.job_pods(self.job)
        await self.track(finishing)
        if finishing is not None and not self.uncounted_succeeded and not self.uncounted_failed:
            self.finish(finishing)
        self.fill_status()
        if self.status != self.original_status:
            await self.ctl.write_status(self.job)
        if self.uncounted_succeeded or self.uncounted_failed:
            self.ctl.requeue_after(self.key, 1.0)  # a finalizer that could not be removed yet
        self.schedule_deadline()

    # ---- decisions ---------------------------------------------------------------------

    def failure_condition(self) -> Obj | None:
        limit = self.spec.get("backoffLimit")
        backoff_limit = int(limit) if limit is not None else 6
        if self.failed() > backoff_limit or restarts_past_backoff_limit(self.job, self.active()):
            return new_condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit",
                                 self.now)
        deadline = self.spec.get("activeDeadlineSeconds")
        started = parse_time(self.status.get("startTime"))
        if deadline is not None and started is not None and not self.suspended and self.now >= started + deadline:
            return new_condition("Failed", "DeadlineExceeded", "Job was active longer than specified deadline",
                                 self.now)
        return None

    def completion_condition(self) -> Obj | None:
        if self.indexed:
            done = self.completions is not None and len(self.succeeded_indexes()) >= self.completions
        elif self.completions is not None:
            done = self.succeeded() >= self.completions
        else:
            done = self.succeeded() > 0 and not self.active()
        if not done:
            return None
        return new_condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods", self.now)

    async def suspend(self) -> None:
        active = self.active()
        if active:
            await self.ctl.delete_pods(self.job, active, keep_finalizers=False)
            self.pods = self.ctl.job_pods(self.job)
        if set_condition(self.status, new_condition("Suspended", "JobSuspended", "Job suspended", self.now)):
            self.ctl.record(self.job, NORMAL, "Suspended", "Job suspended")
        self.status.pop("startTime", None)

    def resume(self) -> None:
        cond = next((c for c in self.status.get("conditions") or [] if c.get("type") == "Suspended"), None)
        if cond is not None and cond.get("status") == "True":
            set_condition(self.status, new_condition("Suspended", "JobResumed", "Job resumed", self.now, "False"))
            self.ctl.record(self.job, NORMAL, "Resumed", "Job resumed")

    async def manage(self) -> None:
        active = self.active()
        if self.indexed:
            extra, missing = self.indexed_plan(active)
        else:
            if self.completions is None:
                want = len(active) if self.succeeded() > 0 else self.parallelism
            else:
                want = max(0, min(self.parallelism, self.completions - self.succeeded()))
            extra = pods_to_delete(active, self.pods, len(active) - want) if len(active) > want else []
            missing = [None] * max(0, want - len(active))
        if extra:
            await self.ctl.delete_pods(self.job, extra, keep_finalizers=False)
            self.pods = self.ctl.job_pods(self.job)
        if not missing:
            return
        wait = self.ctl.backoff_remaining(self.key, self.now)
        if wait > 0:
            log.info("job %s: %d pod(s) to create after recent failures; backing off %.1fs", self.key,
                     len(missing), wait)
            self.ctl.requeue_after(self.key, wait)
            return
        error = await self.ctl.create_pods(self.job, missing)
        self.pods = self.ctl.job_pods(self.job)
        if error is not None:
            raise error

    def indexed_plan(self, active: list[Obj]) -> tuple[list[Obj], list[int | None]]:
        """(pods to delete, indexes to create pods for) for an Indexed Job."""
        limit = self.completions or 0
        done = self.succeeded_indexes()
        extra: list[Obj] = []
        running: set[int] = set()
        for pod in sorted(active, key=lambda p: str(meta(p).get("creationTimestamp") or "")):
            index = completion_index(pod)
            if index is None or not 0 <= index < limit or index in done or index in running:
                extra.append(pod)  # no index, out of range, already done, or a duplicate
            else:
                running.add(index)
        room = max(0, self.parallelism - len(running))
        missing = [i for i in range(limit) if i not in done and i not in running][:room]
        planned: list[int | None] = list(missing)
        return extra, planned

    # ---- counting ----------------------------------------------------------------------

    async def track(self, finishing: Obj | None) -> None:
        """trackJobStatusAndRemoveFinalizers: record, un-finalize, count."""
        recorded_s, recorded_f = set(self.uncounted_succeeded), set(self.uncounted_failed)
        new_s, new_f = [], []
        for pod in self.pods:
            uid = str(meta(pod).get("uid"))
            if not has_finalizer(pod) or uid in recorded_s or uid in recorded_f:
                continue
            if phase(pod) == SUCCEEDED:
                new_s.append(uid)
            elif is_pod_failed(pod, self.job) or finishing is not None:
                new_f.append(uid)  # a pod still running when its Job finishes counts as failed
        if new_s or new_f:
            self.uncounted_succeeded += new_s
            self.uncounted_failed += new_f
            self.status["uncountedTerminatedPods"] = self._uncounted()
            self.job = await self.ctl.write_status(self.job)  # recorded before any finalizer goes
            self.status = self.job.setdefault("status", {})
            self.original_status = copy.deepcopy(self.status)
        uncounted = set(self.uncounted_succeeded) | set(self.uncounted_failed)
        if not uncounted:
            return
        holding = [p for p in self.pods if has_finalizer(p) and str(meta(p).get("uid")) in uncounted]
        released = await self.ctl.remove_finalizers(f"job {self.key}", holding)
        present = {str(meta(p).get("uid")) for p in self.pods if has_finalizer(p)}
        released |= uncounted - present
        by_uid = {str(meta(p).get("uid")): p for p in self.pods}
        counted_s = [u for u in self.uncounted_succeeded if u in released]
        counted_f = [u for u in self.uncounted_failed if u in released]
        for uid in counted_s:
            found = by_uid.get(uid)
            index = completion_index(found) if found is not None else None
            if self.indexed and index is not None and 0 <= index < (self.completions or 0):
                self.completed.add(index)
        self.status["succeeded"] = int(self.status.get("succeeded") or 0) + len(counted_s)
        self.status["failed"] = int(self.status.get("failed") or 0) + len(counted_f)
        self.uncounted_succeeded = [u for u in self.uncounted_succeeded if u not in released]
        self.uncounted_failed = [u for u in self.uncounted_failed if u not in released]
        if counted_s or counted_f:
            log.info("job %s: counted %d succeeded, %d failed pod(s)", self.key, len(counted_s), len(counted_f))

    def _uncounted(self) -> Obj:
        out: Obj = {}
        if self.uncounted_succeeded:
            out["succeeded"] = list(self.uncounted_succeeded)
        if self.uncounted_failed:
            out["failed"] = list(self.uncounted_failed)
        return out

    # ---- status ------------------------------------------------------------------------

    def finish(self, cond: Obj) -> None:
        set_condition(self.status, cond)
        if cond["type"] == "Complete":
            self.status["completionTime"] = rfc3339(self.now)
            self.ctl.record(self.job, NORMAL, "Completed", "Job completed")
            log.info("job %s: complete (%d succeeded)", self.key, int(self.status.get("succeeded") or 0))
        else:
            self.ctl.record(self.job, WARNING, cond["reason"], cond["message"])
            log.info("job %s: failed: %s", self.key, cond["message"])
        self.ctl.queue.add(self.key)  # pods to let go of, a TTL to start

    def fill_status(self) -> None:
        active = self.active()
        self.status["active"] = len(active)
        self.status["ready"] = sum(1 for p in active if is_ready(p))
        self.status["terminating"] = sum(1 for p in self.pods if meta(p).get("deletionTimestamp")
                                         and not is_terminal(p))
        self.status["succeeded"] = int(self.status.get("succeeded") or 0)
        self.status["failed"] = int(self.status.get("failed") or 0)
        self.status["uncountedTerminatedPods"] = self._uncounted()
        if self.indexed:
            self.status["completedIndexes"] = format_indexes(self.completed)
        for name in ("active", "succeeded", "failed"):
            if not self.status[name]:
                del self.status[name]  # omitempty, as the Go types write them

    def schedule_deadline(self) -> None:
        deadline = self.spec.get("activeDeadlineSeconds")
        started = parse_time(self.status.get("startTime"))
        if deadline is None or started is None or finished_condition(self.job):
            return
        self.ctl.requeue_after(self.key, max(0.0, started + deadline - self.now) + 0.5)

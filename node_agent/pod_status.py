"""PodStatus computed from the actual state, the way kubelet's generateAPIPodStatus does it.

`compute_status` is pure: the pod, its containers in Docker, what the last sync could not
do (waiting reasons), probe results, the node's IP and the time. `write_status` PUTs it to
``pods/<name>/status`` only when it differs from what the API holds, re-reading on 409.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node_agent.runtime.containers import APP, INIT, ContainerRecord, PodRuntime, rfc3339
from skiff.client import ApiClient, Conflict, NotFound

log = logging.getLogger("skiff.agent.pod_status")

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
CONDITION_ORDER = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


@dataclass
class SyncNotes:
    """What the last sync of a pod learnt that Docker does not record."""

    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)  # container -> (reason, message)
    pod_ip: str | None = None
    sandbox_ready: bool = False
    terminal: str | None = None  # the phase once the pod is over and its sandbox torn down
    mount_failures: int = 0
    sandbox_failures: int = 0
    sandbox_retry_at: float = 0.0  # no new sandbox is tried before this time (SyncDeps.clock)


class ProbeView:
    """Readiness and startup of a running container, by its id and its spec (the prober manager
    implements this; this base class stands for a node without probes)."""

    def ready(self, container_id: str, container: Mapping[str, Any]) -> bool:
        return True

    def started(self, container_id: str, container: Mapping[str, Any]) -> bool:
        return True


def image_id(record: ContainerRecord, repo_digests: Mapping[str, list[str]] | None = None) -> str:
    digests = (repo_digests or {}).get(record.image_id) or []
    if digests:
        return f"docker-pullable://{digests[0]}"
    return f"docker://{record.image_id}" if record.image_id else ""


def _terminated(r: ContainerRecord) -> Obj:
    if r.oom_killed:
        reason = "OOMKilled"
    elif r.status == "created" and r.error:
        reason = "ContainerCannotRun"
    else:
        reason = "Completed" if r.exit_code == 0 else "Error"
    out: Obj = {"exitCode": r.exit_code, "reason": reason, "startedAt": rfc3339(r.started_at),
                "finishedAt": rfc3339(r.finished_at), "containerID": f"docker://{r.id}"}
    if r.error:
        out["message"] = r.error
    return out


def container_status(spec: Obj, kind: str, runtime: PodRuntime, notes: SyncNotes, probes: ProbeView,
                     default_reason: str) -> Obj:
    name = str(spec.get("name"))
    records = runtime.records(name, kind)
    latest = records[0] if records else None
    note = notes.waiting.get(name)
    status: Obj = {"name": name, "state": {}, "lastState": {}, "ready": False, "restartCount": 0,
                   "image": spec.get("image", ""), "imageID": "", "started": False}
    if latest is None:
        reason, message = note or (default_reason, "")
        status["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        return status
    status.update(restartCount=latest.restart_count, imageID=image_id(latest), containerID=f"docker://{latest.id}")
    previous = next((r for r in records[1:] if r.exited), None)
    if latest.running:
        status["state"] = {"running": {"startedAt": rfc3339(latest.started_at)}}
        status["started"] = probes.started(latest.id, spec)
        status["ready"] = kind != INIT and status["started"] and probes.ready(latest.id, spec)
    elif latest.exited and note is None:
        status["state"] = {"terminated": _terminated(latest)}
        status["ready"] = kind == INIT and latest.exit_code == 0
    elif latest.exited and note is not None:  # waiting to restart (a back-off, a failed pull...)
        status["state"] = {"waiting": {"reason": note[0], **({"message": note[1]} if note[1] else {})}}
        previous = latest
    else:
        reason, message = note or ("ContainerCreating", "")
        status["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    if previous is not None:
        status["lastState"] = {"terminated": _terminated(previous)}
    return status


def pod_phase(pod: Obj, init: list[Obj], app: list[Obj], old_phase: str | None) -> str:
    """kubelet's getPhase (without restartable init containers)."""
    if old_phase in TERMINAL:
        return old_phase
    policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
    pending_init = failed_init = 0
    for s in init:
        state, last = s["state"], s["lastState"]
        if "running" in state:
            pending_init += 1
        elif "terminated" in state:
            failed_init += state["terminated"]["exitCode"] != 0
        elif "terminated" in last:
            failed_init += last["terminated"]["exitCode"] != 0
        else:
            pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    for s in app:
        state, last = s["state"], s["lastState"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"]["exitCode"] == 0
        elif "waiting" in state and "terminated" in last:
            stopped += 1
        elif "waiting" in state:
            waiting += 1
        else:
            unknown += 1
    if failed_init and policy == "Never":
        return "Failed"
    if (pending_init and not any("running" in s["state"] or "terminated" in s["state"] for s in app)) or waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if not running and stopped and not unknown:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"
    return "Pending"


def _cond(type_: str, ok: bool, reason: str = "", message: str = "") -> Obj:
    c: Obj = {"type": type_, "status": "True" if ok else "False"}
    if not ok and reason:
        c["reason"] = reason
    if not ok and message:
        c["message"] = message
    return c


def pod_conditions(pod: Obj, phase: str, init: list[Obj], app: list[Obj], notes: SyncNotes) -> list[Obj]:
    spec = pod.get("spec") or {}
    not_init = [s["name"] for s in init if not s["ready"]]
    initialized = not not_init or any("running" in s["state"] or "terminated" in s["state"]
                                      or "terminated" in s["lastState"] for s in app)
    unready = [s["name"] for s in app if not s["ready"]]
    gates = [g.get("conditionType") for g in spec.get("readinessGates") or []]
    existing = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    missing_gates = [g for g in gates if (existing.get(g) or {}).get("status") != "True"]
    if phase == "Succeeded":
        ready_reason, ready_msg = "PodCompleted", ""
    elif unready:
        ready_reason, ready_msg = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
    else:
        ready_reason, ready_msg = "ReadinessGatesNotReady", \
            f'corresponding condition of pod readiness gate "{missing_gates[0]}" does not exist.' if missing_gates else ""
    containers_ready = not unready and phase != "Succeeded"
    scheduled = existing.get("PodScheduled")
    return [
        _cond("PodReadyToStartContainers", notes.sandbox_ready),
        _cond("Initialized", initialized, "ContainersNotInitialized",
              f"containers with incomplete status: [{' '.join(not_init)}]"),
        _cond("Ready", containers_ready and not missing_gates, ready_reason, ready_msg),
        _cond("ContainersReady", containers_ready, "PodCompleted" if phase == "Succeeded" else "ContainersNotReady",
              "" if phase == "Succeeded" else ready_msg),
        {k: v for k, v in scheduled.items() if k in ("type", "status", "reason", "message")} if scheduled
        else _cond("PodScheduled", True),
    ]


def _stamp_conditions(new: list[Obj], old: list[Obj], now: str) -> list[Obj]:
    """lastTransitionTime stays while the condition's status does not change."""
    previous = {c.get("type"): c for c in old}
    out = []
    for c in new:
        p = previous.get(c["type"])
        same = p is not None and p.get("status") == c["status"]
        out.append({**c, "lastProbeTime": None,
                    "lastTransitionTime": (p.get("lastTransitionTime") if same and p else None) or now})
    return out


def compute_status(pod: Obj, runtime: PodRuntime, notes: SyncNotes, probes: ProbeView, host_ip: str,
                   now: float) -> Obj:
    spec = pod.get("spec") or {}
    old: Obj = pod.get("status") or {}
    init_specs = spec.get("initContainers") or []
    app_default = "PodInitializing" if init_specs else "ContainerCreating"
    init = [container_status(c, INIT, runtime, notes, probes, "PodInitializing") for c in init_specs]
    app = [container_status(c, APP, runtime, notes, probes, app_default) for c in spec.get("containers") or []]
    phase = notes.terminal or pod_phase(pod, init, app, old.get("phase"))
    stamp = rfc3339(now) or ""
    status: Obj = {
        "phase": phase,
        "conditions": _stamp_conditions(pod_conditions(pod, phase, init, app, notes), old.get("conditions") or [],
                                        stamp),
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": old.get("startTime") or stamp,
        "containerStatuses": app,
    }
    pod_ip = notes.pod_ip or (old.get("podIP") if phase in TERMINAL else None)
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if init:
        status["initContainerStatuses"] = init
    for key in ("qosClass", "reason", "message", "nominatedNodeName"):
        if key in old:
            status[key] = old[key]
    return status


async def write_status(client: ApiClient, pod: Obj, status: Obj, attempts: int = 3,
                       recompute: Callable[[Obj], Obj] | None = None) -> Obj | None:
    """PUT the status if it changed; on 409 re-read the pod and retry. None if the pod is gone."""
    md = pod["metadata"]
    for attempt in range(1, attempts + 1):
        if (pod.get("status") or {}) == status:
            return pod
        body = copy.deepcopy(pod)
        body["status"] = status
        try:
            return await client.update_status("pods", body, md["namespace"])
        except NotFound:
            return None
        except Conflict:
            log.info("status of pod %s/%s conflicted (attempt %d/%d); re-reading", md["namespace"], md["name"],
                     attempt, attempts)
            try:
                pod = await client.get("pods", md["name"], md["namespace"])
            except NotFound:
                return None
            if pod["metadata"].get("uid") != md.get("uid"):
                return None
            if recompute is not None:
                status = recompute(pod)
    log.warning("gave up writing the status of pod %s/%s after %d conflicts; the next sync retries",
                md["namespace"], md["name"], attempts)
    return None


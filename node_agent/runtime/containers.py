"""What the agent knows about its Docker containers: names, labels, and the parsed records.

Labels are kubelet's dockershim ones, so the whole state can be rebuilt from Docker
alone after an agent restart. Docker container names: ``k8s_<container>_<pod>_<ns>_<uid>_<attempt>``.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node_agent.runtime.container_spec import CONTAINER_TYPE_APP as APP
from node_agent.runtime.container_spec import CONTAINER_TYPE_INIT as INIT
from node_agent.runtime.container_spec import CONTAINER_TYPE_PAUSE as PAUSE
from node_agent.runtime.container_spec import (
    LABEL_CONTAINER_HASH,
    LABEL_CONTAINER_NAME,
    LABEL_MANAGED,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
    LABEL_TERMINATION_GRACE_PERIOD,
)
from node_agent.runtime.container_spec import LABEL_CONTAINER_TYPE as LABEL_TYPE

LABEL_SANDBOX_ID = "io.kubernetes.sandbox.id"  # dockershim's: the pause container a container joined
# The node whose agent created the container: agents sharing one dockerd (tests) never touch each other's.
LABEL_NODE = "io.skiff.node"
MANAGED_FILTER = {"label": f"{LABEL_MANAGED}=true"}
__all__ = ["APP", "INIT", "PAUSE", "LABEL_CONTAINER_NAME", "LABEL_MANAGED", "LABEL_POD_NAME", "LABEL_POD_NAMESPACE",
           "LABEL_POD_UID", "LABEL_RESTART_COUNT", "LABEL_SANDBOX_ID", "LABEL_TYPE", "MANAGED_FILTER",
           "ContainerRecord", "PodRuntime"]


def parse_docker_time(value: str | None) -> float | None:
    """Docker's RFC 3339 nanosecond timestamps; its zero time ("0001-01-01...") is None."""
    if not value or value.startswith("0001-01-01"):
        return None
    main = value.rstrip("Z").split(".")[0]
    if "+" in main[10:]:
        main = main[: 10 + main[10:].index("+")]
    try:
        return float(calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def rfc3339(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True)
class ContainerRecord:
    """One managed Docker container, parsed from ``docker inspect``."""

    id: str
    name: str
    pod_uid: str
    pod_name: str
    namespace: str
    container: str
    kind: str
    restart_count: int
    sandbox_id: str
    status: str  # Docker's State.Status: created, running, paused, restarting, removing, exited, dead
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    pid: int = 0
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    image: str = ""
    image_id: str = ""
    spec_hash: str = ""
    grace_period: int | None = None  # the pod's terminationGracePeriodSeconds when it was created

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting", "paused")

    @property
    def exited(self) -> bool:
        """Ran and stopped, or could not be started at all (created with an error)."""
        return self.status in ("exited", "dead") or (self.status == "created" and bool(self.error))

    @property
    def order(self) -> tuple[int, float]:
        return (self.restart_count, self.created_at or 0.0)

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> ContainerRecord:
        labels = (data.get("Config") or {}).get("Labels") or {}
        state = data.get("State") or {}
        restart_count = _int(labels.get(LABEL_RESTART_COUNT)) or 0
        return cls(
            id=str(data.get("Id", "")), name=str(data.get("Name", "")).lstrip("/"),
            pod_uid=labels.get(LABEL_POD_UID, ""), pod_name=labels.get(LABEL_POD_NAME, ""),
            namespace=labels.get(LABEL_POD_NAMESPACE, ""), container=labels.get(LABEL_CONTAINER_NAME, ""),
            kind=labels.get(LABEL_TYPE, APP), restart_count=restart_count,
            sandbox_id=labels.get(LABEL_SANDBOX_ID, ""), status=str(state.get("Status", "")),
            exit_code=int(state.get("ExitCode") or 0), error=str(state.get("Error") or ""),
            oom_killed=bool(state.get("OOMKilled")), pid=int(state.get("Pid") or 0),
            created_at=parse_docker_time(data.get("Created")), started_at=parse_docker_time(state.get("StartedAt")),
            finished_at=parse_docker_time(state.get("FinishedAt")),
            image=str((data.get("Config") or {}).get("Image", "")), image_id=str(data.get("Image", "")),
            spec_hash=labels.get(LABEL_CONTAINER_HASH, ""), grace_period=_int(labels.get(LABEL_TERMINATION_GRACE_PERIOD)),
        )


@dataclass
class PodRuntime:
    """The actual state of one pod: its containers in Docker, newest first."""

    uid: str
    name: str = ""
    namespace: str = ""
    sandboxes: list[ContainerRecord] = field(default_factory=list)
    containers: list[ContainerRecord] = field(default_factory=list)

    @classmethod
    def group(cls, records: Iterable[ContainerRecord]) -> dict[str, PodRuntime]:
        pods: dict[str, PodRuntime] = {}
        for r in records:
            if not r.pod_uid:
                continue
            pod = pods.setdefault(r.pod_uid, cls(r.pod_uid, r.pod_name, r.namespace))
            (pod.sandboxes if r.kind == PAUSE else pod.containers).append(r)
        for pod in pods.values():
            pod.sandboxes.sort(key=lambda r: r.order, reverse=True)
            pod.containers.sort(key=lambda r: r.order, reverse=True)
        return pods

    @property
    def sandbox(self) -> ContainerRecord | None:
        return self.sandboxes[0] if self.sandboxes else None

    def records(self, name: str, kind: str | None = None) -> list[ContainerRecord]:
        return [r for r in self.containers if r.container == name and (kind is None or r.kind == kind)]

    def latest(self, name: str, kind: str | None = None) -> ContainerRecord | None:
        found = self.records(name, kind)
        return found[0] if found else None

    @property
    def all(self) -> list[ContainerRecord]:
        return [*self.sandboxes, *self.containers]

    @property
    def any_running(self) -> bool:
        return any(r.running for r in self.all)

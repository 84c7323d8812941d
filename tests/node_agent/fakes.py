"""In-memory stand-ins for the agent's adapters: Docker, a CNI network, the event recorder, a clock.

`FakeDocker` has the `DockerAdapter` methods the agent uses and keeps containers as
inspect-shaped dicts, so `ContainerRecord.from_inspect` reads them like real ones. Tests
drive container lives by hand: `exit(id, code)`, `die_all()` (a dockerd restart).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from node_agent.runtime.docker_adapter import ConflictError, ContainerSummary, DockerError, ExecResult, NotFoundError

ZERO_TIME = "0001-01-01T00:00:00Z"


def docker_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1e9):09d}Z"


class FakeApi:
    """What `to_docker_kwargs` needs from docker's APIClient."""

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return dict(kwargs)


@dataclass
class FakeClock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeDocker:
    def __init__(self, clock: FakeClock | None = None, images: Mapping[str, str] | None = None,
                 node_name: str = "") -> None:
        self.clock = clock or FakeClock()
        self.api = FakeApi()
        self.base_url = "fake://docker"
        self.node_name = node_name
        self.containers: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {
            ref: {"Id": iid, "RepoDigests": [], "Config": {"User": ""}, "Size": 1000}
            for ref, iid in (images or {"skiff/pause:1.0": "sha256:" + "p" * 64,
                                        "skiff/app:1.0": "sha256:" + "a" * 64}).items()}
        self.calls: list[tuple[str, str]] = []
        self.exec_results: dict[tuple[str, ...], ExecResult] = {}
        self.execs: list[tuple[str, list[str]]] = []
        self.fail_start: set[str] = set()  # container names whose start fails
        self.up = True
        self._ids = itertools.count(1)
        self._pids = itertools.count(1000)

    # ---- helpers for tests ----------------------------------------------------------

    def by_name(self, name: str) -> dict[str, Any]:
        return next(c for c in self.containers.values() if c["Name"] == "/" + name)

    def named(self, prefix: str) -> list[dict[str, Any]]:
        return [c for c in self.containers.values() if c["Name"].startswith("/" + prefix)]

    def exit(self, container_id: str, code: int = 0, oom: bool = False) -> None:
        state = self.containers[container_id]["State"]
        state.update(Status="exited", Running=False, Pid=0, ExitCode=code, OOMKilled=oom,
                     FinishedAt=docker_time(self.clock()))

    def die_all(self) -> None:
        for cid, c in self.containers.items():
            if c["State"]["Running"]:
                self.exit(cid, 255)

    def running(self) -> list[dict[str, Any]]:
        return [c for c in self.containers.values() if c["State"]["Running"]]

    def _check(self) -> None:
        if not self.up:
            raise DockerError("Cannot connect to the Docker daemon")

    def _get(self, container_id: str) -> dict[str, Any]:
        for cid, c in self.containers.items():
            if cid == container_id or c["Name"] == "/" + container_id:
                return c
        raise NotFoundError(f"No such container: {container_id}", 404)

    # ---- DockerAdapter --------------------------------------------------------------

    async def ping(self) -> bool:
        return self.up

    async def version(self) -> dict[str, Any]:
        self._check()
        return {"Version": "20.10.99", "ApiVersion": "1.41"}

    async def list_managed(self, pod_uid: str | None = None) -> list[ContainerSummary]:
        self._check()
        out = []
        for cid, c in self.containers.items():
            labels = c["Config"]["Labels"]
            if labels.get("io.skiff.managed") != "true":
                continue
            if self.node_name and labels.get("io.skiff.node") != self.node_name:
                continue
            if pod_uid and labels.get("io.kubernetes.pod.uid") != pod_uid:
                continue
            out.append(ContainerSummary(cid, c["Name"].lstrip("/"), dict(labels), c["State"]["Status"]))
        return out

    async def inspect(self, container_id: str) -> dict[str, Any]:
        self._check()
        return _copy(self._get(container_id))

    async def create(self, kwargs: Mapping[str, Any]) -> str:
        self._check()
        name = str(kwargs["name"])
        if any(c["Name"] == "/" + name for c in self.containers.values()):
            raise ConflictError(f'Conflict. The container name "/{name}" is already in use', 409)
        image = self.images.get(str(kwargs["image"]))
        if image is None:
            raise NotFoundError(f"No such image: {kwargs['image']}", 404)
        cid = f"{next(self._ids):064x}"
        self.containers[cid] = {
            "Id": cid, "Name": "/" + name, "Created": docker_time(self.clock()), "Image": image["Id"],
            "Config": {"Image": kwargs["image"], "Labels": dict(kwargs.get("labels") or {}),
                       "Env": list(kwargs.get("environment") or []), "Entrypoint": kwargs.get("entrypoint"),
                       "Cmd": kwargs.get("command")},
            "HostConfig": dict(kwargs.get("host_config") or {}),
            "State": {"Status": "created", "Running": False, "Pid": 0, "ExitCode": 0, "Error": "",
                      "OOMKilled": False, "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME},
        }
        self.calls.append(("create", name))
        return cid

    async def start(self, container_id: str) -> None:
        self._check()
        c = self._get(container_id)
        self.calls.append(("start", c["Name"].lstrip("/")))
        if c["Name"].lstrip("/") in self.fail_start:
            c["State"].update(Status="created", Error="exec: \"nope\": executable file not found", ExitCode=127)
            raise DockerError("OCI runtime create failed: executable file not found", 400)
        c["State"].update(Status="running", Running=True, Pid=next(self._pids), StartedAt=docker_time(self.clock()),
                          FinishedAt=ZERO_TIME, ExitCode=0)

    async def stop(self, container_id: str, timeout: float) -> None:
        c = self._get(container_id)
        self.calls.append(("stop", c["Name"].lstrip("/")))
        if c["State"]["Running"]:
            self.exit(c["Id"], 137 if timeout == 0 else 143)

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        c = self._get(container_id)
        self.calls.append(("kill", c["Name"].lstrip("/")))
        if c["State"]["Running"]:
            self.exit(c["Id"], 137)

    async def remove(self, container_id: str, force: bool = True) -> None:
        try:
            c = self._get(container_id)
        except NotFoundError:
            return
        self.calls.append(("remove", c["Name"].lstrip("/")))
        del self.containers[c["Id"]]

    async def exec(self, container_id: str, cmd: list[str], timeout: float | None = None) -> ExecResult:
        self.execs.append((container_id, list(cmd)))
        self.calls.append(("exec", self._get(container_id)["Name"].lstrip("/")))
        return self.exec_results.get(tuple(cmd), ExecResult(0, b""))

    async def inspect_image(self, ref: str) -> dict[str, Any] | None:
        self._check()
        return self.images.get(ref)

    async def pull(self, ref: str, auth_config: dict[str, str] | None = None) -> None:
        self.calls.append(("pull", ref))
        raise DockerError(f"pull access denied for {ref.split(':')[0]}, repository does not exist")

    async def run_blocking(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        yield {"Type": "skiff", "Action": "connected"}
        await asyncio.Event().wait()

    def close(self) -> None:
        pass


def _copy(c: dict[str, Any]) -> dict[str, Any]:
    import copy
    return copy.deepcopy(c)


@dataclass
class FakeCniResult:
    ip: str


@dataclass
class FakeNetwork:
    next_ip: int = 2
    attached: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    fail_add: bool = False

    async def add(self, container_id: str, netns_path: str, ifname: str = "eth0") -> FakeCniResult:
        self.calls.append(("ADD", container_id, netns_path))
        if self.fail_add:
            raise RuntimeError("plugin failed: no IP addresses available in range set")
        ip = f"10.244.1.{self.next_ip}"
        self.next_ip += 1
        self.attached[container_id] = ip
        return FakeCniResult(ip)

    async def delete(self, container_id: str, netns_path: str, ifname: str = "eth0") -> None:
        self.calls.append(("DEL", container_id, netns_path))
        self.attached.pop(container_id, None)


@dataclass
class RecordedEvent:
    obj: Any
    type: str
    reason: str
    message: str
    field_path: str


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []

    def record(self, obj: Any, type_: str, reason: str, message: str, field_path: str = "") -> None:
        self.events.append(RecordedEvent(obj, type_, reason, message, field_path))

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    def find(self, reason: str) -> list[RecordedEvent]:
        return [e for e in self.events if e.reason == reason]

"""Fakes for the eviction manager's injected parts: stats, evictor, reclaimer, recorder, clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node_agent.eviction.manager import EvictionManager, ManagerConfig
from node_agent.eviction.ranking import EvictionNote
from node_agent.eviction.stats import ContainerStats, FsStats, NodeStats, PodStats
from node_agent.eviction.thresholds import parse_threshold_config

Obj = dict[str, Any]
MI = 1 << 20
GI = 1 << 30


def pod(name: str, *, requests: Mapping[str, str] | None = None, limits: Mapping[str, str] | None = None,
        priority: int | None = None, volumes: list[Obj] | None = None, grace: int | None = None,
        container: str = "app") -> Obj:
    resources: Obj = {}
    if requests:
        resources["requests"] = dict(requests)
    if limits:
        resources["limits"] = dict(limits)
    spec: Obj = {"containers": [{"name": container, "image": "skiff/app:1.0", "resources": resources}]}
    if priority is not None:
        spec["priority"] = priority
    if volumes:
        spec["volumes"] = volumes
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}, "spec": spec,
            "status": {"phase": "Running"}}


def memory_stats(name: str, working_set: int, container: str = "app") -> PodStats:
    return PodStats(f"uid-{name}", (ContainerStats(container, memory_working_set=working_set),),
                    memory_working_set=working_set)


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class FakeStats:
    """Node readings set by the test; ``time`` follows the clock unless frozen."""

    clock: FakeClock
    memory_capacity: int = 2 * GI
    memory_working_set: int = 0
    nodefs: FsStats | None = None
    imagefs: FsStats | None = None
    max_pid: int | None = None
    processes: int | None = None
    pods: dict[str, PodStats] = field(default_factory=dict)
    frozen_time: float | None = None
    pod_calls: list[tuple[tuple[str, ...], frozenset[str]]] = field(default_factory=list)

    async def node_stats(self) -> NodeStats:
        return NodeStats(time=self.clock() if self.frozen_time is None else self.frozen_time,
                         memory_capacity=self.memory_capacity, memory_working_set=self.memory_working_set,
                         nodefs=self.nodefs, imagefs=self.imagefs, max_pid=self.max_pid, processes=self.processes)

    async def pod_stats(self, pods: Sequence[Obj], kinds: frozenset[str]) -> dict[str, PodStats]:
        self.pod_calls.append((tuple(p["metadata"]["name"] for p in pods), kinds))
        uids = {p["metadata"]["uid"] for p in pods}
        return {uid: s for uid, s in self.pods.items() if uid in uids}

    def set_available(self, available: int) -> None:
        self.memory_working_set = self.memory_capacity - available


@dataclass
class Evicted:
    name: str
    grace: float
    message: str


@dataclass
class FakeEvictor:
    pods: list[Obj]
    evicted: list[Evicted] = field(default_factory=list)
    clean_after: int = 0  # cleaned_up answers False this many times first
    checks: int = 0

    async def evict(self, pod: Obj, grace_period: float, note: EvictionNote) -> None:
        self.evicted.append(Evicted(pod["metadata"]["name"], grace_period, note.message))
        self.pods[:] = [p for p in self.pods if p is not pod]

    async def cleaned_up(self, pod: Obj) -> bool:
        self.checks += 1
        return self.checks > self.clean_after

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.evicted]


@dataclass
class FakeReclaimer:
    calls: list[str] = field(default_factory=list)
    on_images: Callable[[], None] | None = None

    async def delete_unused_containers(self) -> None:
        self.calls.append("containers")

    async def delete_unused_images(self) -> None:
        self.calls.append("images")
        if self.on_images is not None:
            self.on_images()


@dataclass
class FakeRecorder:
    events: list[tuple[str, str, str, str]] = field(default_factory=list)  # (object name, type, reason, message)

    def record(self, obj: Any, type_: str, reason: str, message: str, field_path: str = "") -> None:
        name = obj["metadata"]["name"] if isinstance(obj, dict) else obj
        self.events.append((name, type_, reason, message))


@dataclass
class Rig:
    clock: FakeClock
    stats: FakeStats
    evictor: FakeEvictor
    reclaimer: FakeReclaimer
    recorder: FakeRecorder
    manager: EvictionManager
    pods: list[Obj]
    condition_changes: list[list[str]]

    async def sync(self) -> list[str]:
        return [p["metadata"]["name"] for p in await self.manager.synchronize()]

    async def at(self, t: float) -> list[str]:
        """A pass at time ``t`` (seconds after the start)."""
        self.clock.now = 1000.0 + t
        return await self.sync()


def rig(pods: list[Obj], *, hard: str = "memory.available<100Mi", soft: str = "", grace: str = "",
        reclaim: str = "", transition: float = 300.0, max_grace: int = 0, local_storage: bool = True,
        sleep: Callable[[float], Awaitable[None]] | None = None, **stats: Any) -> Rig:
    clock = FakeClock()
    config = ManagerConfig(thresholds=tuple(parse_threshold_config(hard, soft, grace, reclaim)),
                           pressure_transition_period=transition, max_pod_grace_period=max_grace,
                           local_storage_capacity_isolation=local_storage)
    fake_stats = FakeStats(clock, **stats)
    evictor = FakeEvictor(pods)
    reclaimer = FakeReclaimer()
    recorder = FakeRecorder()
    changes: list[list[str]] = []
    manager = EvictionManager(config, stats=fake_stats, evictor=evictor, reclaimer=reclaimer, recorder=recorder,
                              node_ref="node-1", active_pods=lambda: list(pods), clock=clock,
                              sleep=sleep or clock.sleep, on_conditions_changed=changes.append)
    return Rig(clock, fake_stats, evictor, reclaimer, recorder, manager, pods, changes)


def fs(capacity: int, available: int, inodes: int = 1_000_000, inodes_free: int = 900_000, device: int = 1) -> FsStats:
    return FsStats(capacity, available, inodes, inodes_free, device)


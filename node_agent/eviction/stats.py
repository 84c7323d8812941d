"""The readings the eviction pipeline consumes (kubelet's stats summary, cut to what eviction
uses), and the protocol of whoever provides them: `cgroup_stats.CgroupStatsProvider` on a
node, a fake in the tests.

Node readings are cheap and taken every pass; pod readings only when a pass needs them (to
rank pods under pressure, or to check pods with local storage limits), and only the kinds
it needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Obj = dict[str, Any]

# What a pass may ask of pod stats.
POD_MEMORY = "memory"
POD_PROCESSES = "processes"
POD_DISK = "disk"


@dataclass(frozen=True)
class FsStats:
    capacity_bytes: int
    available_bytes: int
    inodes: int
    inodes_free: int
    device: int = 0  # st_dev: the same on both means imagefs is not dedicated


@dataclass(frozen=True)
class NodeStats:
    """One reading of the node; a None part could not be read (its signals are not observed)."""

    time: float
    memory_capacity: int | None = None
    memory_working_set: int | None = None  # of the pods' cgroup: usage - total_inactive_file
    nodefs: FsStats | None = None  # the agent's root dir
    imagefs: FsStats | None = None  # the container runtime's data root
    max_pid: int | None = None
    processes: int | None = None


@dataclass(frozen=True)
class ContainerStats:
    name: str
    memory_working_set: int | None = None
    rootfs_bytes: int | None = None  # the container's writable layer
    logs_bytes: int | None = None
    rootfs_inodes: int | None = None
    logs_inodes: int | None = None


@dataclass(frozen=True)
class PodStats:
    uid: str
    containers: tuple[ContainerStats, ...] = ()
    memory_working_set: int | None = None  # the pod's containers together
    process_count: int | None = None
    volume_bytes: Mapping[str, int] = field(default_factory=dict)  # local volumes (emptyDir) by name
    volume_inodes: Mapping[str, int] = field(default_factory=dict)

    def container(self, name: str) -> ContainerStats | None:
        return next((c for c in self.containers if c.name == name), None)


class StatsProvider(Protocol):
    async def node_stats(self) -> NodeStats:
        """Read the node now (raises OSError when nothing can be read)."""
        ...

    async def pod_stats(self, pods: Sequence[Obj], kinds: frozenset[str]) -> dict[str, PodStats]:
        """Stats of these pods by uid, with the kinds asked for (POD_MEMORY, POD_PROCESSES, POD_DISK);
        a pod without containers has no entry."""
        ...

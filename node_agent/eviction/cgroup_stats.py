"""Readings for the eviction manager from the kernel: cgroup v1 (or v2) files, statvfs and /proc.

- memory: the working set of the cgroup holding the pods' containers (``--cgroup-root``, or
  the parent of the containers' own cgroups, read from ``/proc/<pid>/cgroup``): usage minus
  inactive file pages, as cAdvisor computes it, against the node's memory capacity (its
  ``--memory``, else the host's).
- nodefs: the filesystem of the agent's root dir; imagefs: that of Docker's data root.
- pids: ``pids.max``/``pids.current`` of that cgroup when it is limited, else the kernel's
  pid_max/threads-max against every task on the host (kubelet's rlimit signal).
- per pod: each app container's memory working set and task count from its own cgroup (the
  pause container counts as one task, its memory is not read); its writable layer (Docker's
  upper dir) and log file sizes; its emptyDir volumes' sizes.

Every read is blocking and cheap (a few small files); the provider runs them in a thread.
A missing cgroup (no container has run yet) reads as nothing used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_agent.eviction.stats import POD_DISK, POD_MEMORY, POD_PROCESSES, ContainerStats, FsStats, NodeStats, PodStats
from node_agent.pleg import RuntimeCache
from node_agent.runtime.containers import PAUSE, ContainerRecord
from node_agent.runtime.docker_adapter import DockerAdapter, DockerError
from node_agent.volumes import volume_dir

log = logging.getLogger("skiff.agent.eviction.stats")

Obj = dict[str, Any]
CGROUP_MOUNT = Path("/sys/fs/cgroup")


# -- files ------------------------------------------------------------------------------------------


def _read(path: str | Path) -> bytes | None:
    # os.open/os.read: a third of the cost of open().read() on these small kernel files, which a
    # pass under pressure reads for every container.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 8192)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_int(path: str | Path) -> int | None:
    """The number in a one-line file; None if it is missing or says ``max``."""
    data = _read(path)
    if data is None:
        return None
    data = data.strip()
    return int(data) if data.isdigit() else None


def read_stat(path: str | Path, keys: tuple[str, ...]) -> dict[str, int]:
    """The values of ``keys`` in a ``name value`` per line file (memory.stat)."""
    data = _read(path) or b""
    out: dict[str, int] = {}
    for key in keys:
        token = key.encode() + b" "
        if data.startswith(token):
            start = len(token)
        else:
            start = data.find(b"\n" + token)
            if start < 0:
                continue
            start += 1 + len(token)
        end = data.find(b"\n", start)
        with contextlib.suppress(ValueError):
            out[key] = int(data[start:end if end >= 0 else None])
    return out


def fs_stats(path: Path) -> FsStats | None:
    try:
        st = os.statvfs(path)
        device = os.stat(path).st_dev
    except OSError:
        return None
    return FsStats(capacity_bytes=st.f_blocks * st.f_frsize, available_bytes=st.f_bavail * st.f_frsize,
                   inodes=st.f_files, inodes_free=st.f_ffree, device=device)


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes allocated, inodes) under ``path``, on its filesystem only, symlinks not followed (``du``)."""
    total = inodes = 0
    try:
        root_dev = os.lstat(path).st_dev
    except OSError:
        return 0, 0
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            entries = os.scandir(current)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != root_dev:
                    continue
                total += st.st_blocks * 512
                inodes += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total, inodes


def unified_hierarchy(mount: Path = CGROUP_MOUNT) -> bool:
    return (mount / "cgroup.controllers").exists()


class CgroupPaths:
    """A cgroup's memory and pids directories, for one cgroup path (``/skiff-lab-node-1``), and
    its files' names, built once."""

    __slots__ = ("memory", "pids", "v2", "_usage", "_stat", "_inactive", "_pids_current", "_pids_max")

    def __init__(self, memory: Path, pids: Path, v2: bool) -> None:
        self.memory, self.pids, self.v2 = memory, pids, v2
        self._usage = f"{memory}/{'memory.current' if v2 else 'memory.usage_in_bytes'}"
        self._stat = f"{memory}/memory.stat"
        self._inactive = "inactive_file" if v2 else "total_inactive_file"
        self._pids_current = f"{pids}/pids.current"
        self._pids_max = f"{pids}/pids.max"

    @classmethod
    def of(cls, cgroup: str, mount: Path = CGROUP_MOUNT, v2: bool | None = None) -> CgroupPaths:
        rel = cgroup.strip("/")
        if unified_hierarchy(mount) if v2 is None else v2:
            return cls(mount / rel, mount / rel, True)
        return cls(mount / "memory" / rel, mount / "pids" / rel, False)

    def memory_usage(self) -> tuple[int, int] | None:
        """(usage, working set) in bytes; None if the cgroup does not exist."""
        usage = read_int(self._usage)
        if usage is None:
            return None
        inactive = read_stat(self._stat, (self._inactive,)).get(self._inactive, 0)
        return usage, max(0, usage - inactive)

    def pids_max(self) -> int | None:
        return read_int(self._pids_max)

    def pids_current(self) -> int | None:
        return read_int(self._pids_current)


def process_cgroup(pid: int, v2: bool) -> str | None:
    """The memory cgroup path of a process (``/skiff-lab-node-1/<id>``)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (v2 and controllers == "") or (not v2 and "memory" in controllers.split(",")):
                    return path
    except (OSError, ValueError):
        pass
    return None


def kernel_max_pid() -> int | None:
    """min(pid_max, threads-max), as kubelet's rlimit stats."""
    values = [v for v in (read_int(Path("/proc/sys/kernel/pid_max")), read_int(Path("/proc/sys/kernel/threads-max")))
              if v is not None]
    return min(values) if values else None


def host_tasks() -> int | None:
    """Every task on the host (sysinfo's procs), from /proc/loadavg's ``running/total``."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    except (OSError, IndexError, ValueError):
        return None


# -- the provider -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ContainerFiles:
    upper_dir: str
    log_path: str


class CgroupStatsProvider:
    def __init__(self, *, docker: DockerAdapter, cache: RuntimeCache, memory_capacity: int, cgroup_root: str,
                 nodefs: Path, pods_dir: Path, clock: Callable[[], float] = time.monotonic,
                 mount: Path = CGROUP_MOUNT, cgroup_of_pid: Callable[[int, bool], str | None] = process_cgroup) -> None:
        self.docker = docker
        self.cache = cache
        self.memory_capacity = memory_capacity
        self.cgroup_root = cgroup_root
        self.nodefs = nodefs
        self.pods_dir = pods_dir
        self.clock = clock
        self.mount = mount
        self.v2 = unified_hierarchy(mount)
        self.cgroup_of_pid = cgroup_of_pid
        self.imagefs: Path | None = None
        self.last_memory_usage: int | None = None  # for the memcg notifier: usage, not working set
        self._cgroups: dict[str, str] = {}  # container id -> its cgroup path
        self._paths_of: dict[str, CgroupPaths] = {}
        self._files: dict[str, _ContainerFiles] = {}

    # ---- node ---------------------------------------------------------------------------------

    async def node_stats(self) -> NodeStats:
        if self.imagefs is None:
            try:
                root = (await self.docker.info()).get("DockerRootDir")
                self.imagefs = Path(root) if root else None
            except DockerError as exc:
                log.debug("docker info failed (%s); no imagefs reading this pass", exc)
        records = [r for r in self.cache_records() if r.running]
        return await asyncio.to_thread(self._read_node, records)

    def cache_records(self) -> list[ContainerRecord]:
        return [r for uid in self.cache.uids() for r in self.cache.pod(uid).all]

    def pods_cgroup(self, records: Sequence[ContainerRecord]) -> str | None:
        """``--cgroup-root``, else the parent of a running container's cgroup."""
        if self.cgroup_root:
            return self.cgroup_root
        for record in records:
            path = self._cgroup_of(record)
            if path:
                return os.path.dirname(path.rstrip("/")) or "/"
        return None

    def _read_node(self, records: Sequence[ContainerRecord]) -> NodeStats:
        cgroup = self.pods_cgroup(records)
        paths = CgroupPaths.of(cgroup, self.mount, self.v2) if cgroup and cgroup != "/" else None
        memory = paths.memory_usage() if paths is not None else None
        self.last_memory_usage = memory[0] if memory else 0
        max_pid = processes = None
        if paths is not None and paths.pids_max() is not None:
            max_pid, processes = paths.pids_max(), paths.pids_current() or 0
        else:
            max_pid, processes = kernel_max_pid(), host_tasks()
        if not self.nodefs.exists():
            raise OSError(f"the agent's root dir {self.nodefs} does not exist")
        return NodeStats(time=self.clock(), memory_capacity=self.memory_capacity,
                         memory_working_set=memory[1] if memory else 0, nodefs=fs_stats(self.nodefs),
                         imagefs=fs_stats(self.imagefs) if self.imagefs is not None else None,
                         max_pid=max_pid, processes=processes)

    def memory_cgroup_dir(self) -> Path | None:
        cgroup = self.pods_cgroup([r for r in self.cache_records() if r.running])
        return CgroupPaths.of(cgroup, self.mount, self.v2).memory if cgroup and cgroup != "/" else None

    def _cgroup_of(self, record: ContainerRecord) -> str | None:
        path = self._cgroups.get(record.id)
        if path is None and record.running and record.pid:
            path = self.cgroup_of_pid(record.pid, self.v2)
            if path:
                self._cgroups[record.id] = path
        return path

    # ---- pods ---------------------------------------------------------------------------------------

    async def pod_stats(self, pods: Sequence[Obj], kinds: frozenset[str]) -> dict[str, PodStats]:
        measured: dict[str, tuple[Obj, list[ContainerRecord], list[ContainerRecord]]] = {}
        for pod in pods:
            uid = str((pod.get("metadata") or {}).get("uid") or "")
            runtime = self.cache.pod(uid)
            if not runtime.all:
                continue
            latest: dict[str, ContainerRecord] = {}
            for r in runtime.containers:  # newest first: each container's current instance
                latest.setdefault(r.container, r)
            measured[uid] = (pod, [r for r in runtime.sandboxes if r.running], list(latest.values()))
        if POD_DISK in kinds:
            await self._learn_files([r for _, _, containers in measured.values() for r in containers])
        self._forget_gone()
        return await asyncio.to_thread(self._read_pods, measured, kinds)

    def _read_pods(self, measured: dict[str, tuple[Obj, list[ContainerRecord], list[ContainerRecord]]],
                   kinds: frozenset[str]) -> dict[str, PodStats]:
        out = {}
        disk = POD_DISK in kinds
        for uid, (pod, sandboxes, latest) in measured.items():
            containers: list[ContainerStats] = []
            pod_memory = pod_tasks = 0
            # A sandbox is the pause process: one task and well under 1Mi, not worth two reads per pod.
            pod_tasks += len(sandboxes)
            for record in latest:
                paths = self._paths(record) if record.running else None
                memory = paths.memory_usage() if paths is not None and POD_MEMORY in kinds else None
                pod_memory += memory[1] if memory else 0
                pod_tasks += (paths.pids_current() or 0) if paths is not None and POD_PROCESSES in kinds else 0
                rootfs = logs = (0, 0)
                files = self._files.get(record.id)
                if disk and files is not None:
                    rootfs = disk_usage(Path(files.upper_dir)) if files.upper_dir else (0, 0)
                    logs = _log_usage(files.log_path)
                containers.append(ContainerStats(
                    record.container, memory_working_set=memory[1] if memory else None,
                    rootfs_bytes=rootfs[0] if disk else None, logs_bytes=logs[0] if disk else None,
                    rootfs_inodes=rootfs[1] if disk else None, logs_inodes=logs[1] if disk else None))
            volumes = self._volume_usage(pod, uid) if disk else {}
            out[uid] = PodStats(uid, tuple(containers),
                                memory_working_set=pod_memory if POD_MEMORY in kinds else None,
                                process_count=pod_tasks if POD_PROCESSES in kinds else None,
                                volume_bytes={k: v[0] for k, v in volumes.items()},
                                volume_inodes={k: v[1] for k, v in volumes.items()})
        return out

    def _paths(self, record: ContainerRecord) -> CgroupPaths | None:
        paths = self._paths_of.get(record.id)
        if paths is None:
            path = self._cgroup_of(record)
            if not path:
                return None
            paths = self._paths_of[record.id] = CgroupPaths.of(path, self.mount, self.v2)
        return paths

    def _volume_usage(self, pod: Obj, uid: str) -> dict[str, tuple[int, int]]:
        """Disk-backed emptyDir volumes (memory-backed ones are tmpfs, bounded by their size)."""
        out = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            source = volume.get("emptyDir")
            if source is None or source.get("medium") == "Memory":
                continue
            name = str(volume.get("name"))
            out[name] = disk_usage(volume_dir(self.pods_dir / uid, "emptyDir", name))
        return out

    async def _learn_files(self, records: Sequence[ContainerRecord]) -> None:
        for record in records:
            if record.id in self._files or record.kind == PAUSE:
                continue
            try:
                data = await self.docker.inspect(record.id)
            except DockerError:
                continue
            driver = (data.get("GraphDriver") or {}).get("Data") or {}
            self._files[record.id] = _ContainerFiles(str(driver.get("UpperDir") or ""), str(data.get("LogPath") or ""))

    def _forget_gone(self) -> None:
        known = self.cache.container_ids()
        for table in (self._cgroups, self._files, self._paths_of):
            for cid in [c for c in table if c not in known]:
                del table[cid]


def _log_usage(log_path: str) -> tuple[int, int]:
    """The container's log file and its rotated siblings (``json.log.1`` ...)."""
    if not log_path:
        return 0, 0
    total = files = 0
    base = Path(log_path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(base.parent):
            if entry.name == base.name or entry.name.startswith(base.name + "."):
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                    files += 1
    return total, files

"""The eviction manager's readings: a cgroup v1 tree in a temporary directory (the pods' cgroup,
its containers' cgroups, pids), emptyDir and log sizes; then the real thing — a container's
working set in the host's cgroups, and a memory threshold notification from the kernel —
and the status an evicted pod gets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from node_agent.eviction.actions import evicted_status
from node_agent.eviction.cgroup_stats import CgroupPaths, CgroupStatsProvider, disk_usage, process_cgroup
from node_agent.eviction.memcg import MemcgThresholdNotifier, usage_threshold
from node_agent.eviction.stats import POD_DISK, POD_MEMORY, POD_PROCESSES, ContainerStats, FsStats
from node_agent.runtime.containers import ContainerRecord, PodRuntime

MI = 1 << 20
GI = 1 << 30
ROOT = "/skiff-t-node-1"


def record(cid: str, uid: str, container: str, kind: str = "app", running: bool = True) -> ContainerRecord:
    return ContainerRecord(id=cid, name=f"k8s_{container}", pod_uid=uid, pod_name=uid, namespace="default",
                           container=container, kind=kind, restart_count=0, sandbox_id="",
                           status="running" if running else "exited", pid=1000 + len(cid))


class FakeCache:
    def __init__(self, records: list[ContainerRecord]) -> None:
        self.records = records

    def uids(self) -> set[str]:
        return {r.pod_uid for r in self.records}

    def pod(self, uid: str) -> PodRuntime:
        return PodRuntime.group(r for r in self.records if r.pod_uid == uid).get(uid) or PodRuntime(uid)

    def container_ids(self) -> set[str]:
        return {r.id for r in self.records}


class FakeDocker:
    def __init__(self, root: Path, files: dict[str, dict[str, Any]]) -> None:
        self.root = root
        self.files = files
        self.inspected: list[str] = []

    async def info(self) -> dict[str, Any]:
        return {"DockerRootDir": str(self.root)}

    async def inspect(self, cid: str) -> dict[str, Any]:
        self.inspected.append(cid)
        return self.files[cid]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def memory_cgroup(mount: Path, cgroup: str, usage: int, inactive_file: int, tasks: int | None = None) -> None:
    write(mount / "memory" / cgroup.strip("/") / "memory.usage_in_bytes", f"{usage}\n")
    write(mount / "memory" / cgroup.strip("/") / "memory.stat",
          f"cache 5\nrss 7\ntotal_cache 9\ntotal_inactive_file {inactive_file}\ntotal_active_file 3\n")
    if tasks is not None:
        write(mount / "pids" / cgroup.strip("/") / "pids.current", f"{tasks}\n")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Any]:
    mount = tmp_path / "cgroup"
    memory_cgroup(mount, ROOT, 800 * MI, 100 * MI, tasks=42)
    write(mount / "pids" / ROOT.strip("/") / "pids.max", "500\n")
    memory_cgroup(mount, f"{ROOT}/pause-a", MI, 0, tasks=1)
    memory_cgroup(mount, f"{ROOT}/app-a", 300 * MI, 20 * MI, tasks=7)
    agent = tmp_path / "agent"
    cache_dir = agent / "pods" / "uid-a" / "volumes" / "empty-dir" / "cache"
    cache_dir.mkdir(parents=True)
    with open(cache_dir / "fill", "wb") as f:
        f.write(b"x" * (3 * MI))
    (agent / "pods" / "uid-a" / "volumes" / "empty-dir" / "shm").mkdir()
    upper = tmp_path / "docker" / "overlay2" / "abc" / "diff"
    upper.mkdir(parents=True)
    (upper / "written").write_bytes(b"y" * MI)
    logs = tmp_path / "docker" / "containers" / "app-a"
    logs.mkdir(parents=True)
    (logs / "app-a-json.log").write_bytes(b"z" * 8192)
    (logs / "app-a-json.log.1").write_bytes(b"z" * 8192)
    files = {"app-a": {"GraphDriver": {"Data": {"UpperDir": str(upper)}}, "LogPath": str(logs / "app-a-json.log")}}
    cache = FakeCache([record("pause-a", "uid-a", "POD", kind="pause"), record("app-a", "uid-a", "app"),
                       record("old-a", "uid-a", "app", running=False)])
    cgroups = {1000 + len("pause-a"): f"{ROOT}/pause-a", 1000 + len("app-a"): f"{ROOT}/app-a"}
    return {"mount": mount, "agent": agent, "docker": FakeDocker(tmp_path / "docker", files), "cache": cache,
            "cgroups": cgroups, "upper": upper}


def provider(tree: dict[str, Any], cgroup_root: str = ROOT) -> CgroupStatsProvider:
    cgroups = tree["cgroups"]
    return CgroupStatsProvider(docker=tree["docker"], cache=tree["cache"],  # type: ignore[arg-type]
                               memory_capacity=2 * GI, cgroup_root=cgroup_root, nodefs=tree["agent"], pods_dir=tree["agent"] / "pods",
                               clock=lambda: 7.0, mount=tree["mount"], cgroup_of_pid=lambda pid, _v2: cgroups.get(pid))


def fs_of(path: Path) -> FsStats:
    st = os.statvfs(path)
    return FsStats(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, st.f_files, st.f_ffree, os.stat(path).st_dev)


async def test_node_reading_from_the_pods_cgroup_and_the_filesystems(tree: dict[str, Any]) -> None:
    p = provider(tree)
    node = await p.node_stats()
    assert (node.time, node.memory_capacity, node.memory_working_set) == (7.0, 2 * GI, 700 * MI)
    assert (node.max_pid, node.processes) == (500, 42)
    assert node.nodefs is not None and node.imagefs is not None
    assert node.nodefs.capacity_bytes == fs_of(tree["agent"]).capacity_bytes
    assert node.imagefs.device == fs_of(tree["docker"].root).device
    assert p.last_memory_usage == 800 * MI


async def test_without_cgroup_root_the_pods_cgroup_is_the_parent_of_the_containers(tree: dict[str, Any]) -> None:
    node = await provider(tree, cgroup_root="").node_stats()
    assert node.memory_working_set == 700 * MI and node.max_pid == 500


async def test_no_cgroup_yet_reads_as_nothing_used_and_pids_fall_back_to_the_kernel(tree: dict[str, Any]) -> None:
    tree["cache"].records = []
    node = await provider(tree, cgroup_root="").node_stats()
    assert node.memory_working_set == 0
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
    assert node.max_pid == min(pid_max, threads_max) and node.processes is not None and node.processes > 0


async def test_pod_readings_memory_processes_and_disk(tree: dict[str, Any]) -> None:
    p = provider(tree)
    pod = {"metadata": {"uid": "uid-a"}, "spec": {"volumes": [
        {"name": "cache", "emptyDir": {}}, {"name": "shm", "emptyDir": {"medium": "Memory"}}, {"name": "cm"}]}}
    stats = (await p.pod_stats([pod, {"metadata": {"uid": "uid-none"}}], frozenset({POD_MEMORY, POD_PROCESSES})))
    assert list(stats) == ["uid-a"]
    s = stats["uid-a"]
    assert (s.memory_working_set, s.process_count) == (280 * MI, 8)  # the pause container: 1 task, memory not read
    assert s.containers == (ContainerStats("app", memory_working_set=280 * MI),)
    assert tree["docker"].inspected == []  # no disk asked for: no inspect
    s = (await p.pod_stats([pod], frozenset({POD_DISK})))["uid-a"]
    cache_bytes, cache_inodes = disk_usage(tree["agent"] / "pods" / "uid-a" / "volumes" / "empty-dir" / "cache")
    assert cache_bytes >= 3 * MI and cache_inodes == 1
    assert dict(s.volume_bytes) == {"cache": cache_bytes}  # the memory-backed one is not measured
    (app,) = s.containers
    assert app.rootfs_bytes is not None and app.rootfs_bytes >= MI and app.rootfs_inodes == 1
    assert app.logs_bytes is not None and app.logs_bytes >= 16384 and app.logs_inodes == 2
    assert s.memory_working_set is None and s.process_count is None
    await p.pod_stats([pod], frozenset({POD_DISK}))
    assert tree["docker"].inspected == ["app-a"]  # inspected once, remembered


def test_cgroup_v2_files(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    write(tmp_path / "pods" / "memory.current", "1000\n")
    write(tmp_path / "pods" / "memory.stat", "anon 600\nfile 400\ninactive_file 300\n")
    write(tmp_path / "pods" / "pids.max", "max\n")
    paths = CgroupPaths.of("/pods", tmp_path)
    assert paths.v2 and paths.memory_usage() == (1000, 700) and paths.pids_max() is None


def test_evicted_status_keeps_the_rest_and_adds_disruption_target() -> None:
    pod = {"status": {"phase": "Running", "podIP": "10.244.1.5", "conditions": [
        {"type": "Ready", "status": "True"}]}}
    status = evicted_status(pod, "The node was low on resource: memory. ", 0)
    assert status == {"phase": "Failed", "podIP": "10.244.1.5", "reason": "Evicted",
                      "message": "The node was low on resource: memory. ",
                      "conditions": [{"type": "Ready", "status": "True"},
                                     {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                                      "lastTransitionTime": "1970-01-01T00:00:00Z", "reason": "TerminationByKubelet",
                                      "message": "The node was low on resource: memory. "}]}
    assert pod["status"]["phase"] == "Running"


def test_usage_threshold_is_where_the_working_set_meets_the_threshold() -> None:
    assert usage_threshold(2 * GI, 100 * MI, usage=800 * MI, working_set=700 * MI) == 2 * GI


# -- the real kernel ------------------------------------------------------------------------------------

V1 = Path("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists()
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0 or not V1, reason="needs root and cgroup v1 memory")
HOG = "import sys; open(sys.argv[1], 'w').write(str(__import__('os').getpid())); b = b'x' * int(sys.argv[2]); " \
      "print('ready', flush=True); __import__('time').sleep(60)"


@contextlib.contextmanager
def scratch_cgroup() -> Any:
    path = Path(f"/sys/fs/cgroup/memory/skiff-evtest-{secrets.token_hex(3)}")
    path.mkdir()
    procs: list[subprocess.Popen[str]] = []
    try:
        yield path, procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
        deadline = time.monotonic() + 10
        while path.exists():
            with contextlib.suppress(OSError):
                path.rmdir()
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)


def hog(path: Path, size: int, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOG, str(path / "cgroup.procs"), str(size)],
                            stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@ROOT_ONLY
def test_a_processs_memory_shows_in_its_cgroups_working_set() -> None:
    with scratch_cgroup() as (path, procs):
        proc = hog(path, 64 * MI, procs)
        assert process_cgroup(proc.pid, v2=False) == "/" + path.name
        usage, working_set = CgroupPaths.of("/" + path.name).memory_usage()  # type: ignore[misc]
        assert 64 * MI <= working_set <= usage <= 64 * MI + 32 * MI


@ROOT_ONLY
async def test_the_kernel_notifies_when_usage_crosses_the_threshold() -> None:
    with scratch_cgroup() as (path, procs):
        crossed = asyncio.Event()
        notifier = MemcgThresholdNotifier(crossed.set)
        try:
            notifier.update(path, 32 * MI)
            assert not notifier.failed and notifier.value == 32 * MI
            await asyncio.to_thread(hog, path, 48 * MI, procs)
            await asyncio.wait_for(crossed.wait(), 10)
        finally:
            notifier.close()


def test_no_reading_of_a_cgroup_that_does_not_exist() -> None:
    assert CgroupPaths.of("/no-such-cgroup-" + secrets.token_hex(3)).memory_usage() is None

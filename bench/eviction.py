"""Benchmark: CPU time of one eviction manager pass with 30 pods.

The real pipeline (`EvictionManager.synchronize`) over the real readings
(`CgroupStatsProvider`: cgroup files, statvfs, /proc) of 30 pods of two containers each
(a pause container and an app container). As root on cgroup v1 the cgroups are real ones,
made under ``/sys/fs/cgroup/{memory,pids}/skiff-bench-<random>`` (empty: the kernel still
answers every read) and removed afterwards; elsewhere the same files in a temporary
directory. The evictor and the image GC are stand-ins that change nothing, so every pass
of a scenario does the same work.

Prints the CPU time (this process, every thread) per pass, mean and p99, for:
- steady: no threshold met (the pass every node runs every 10 s);
- memory pressure: memory.available below its threshold each pass: pods' memory read,
  30 pods ranked, the message built, one pod "evicted";
- local storage: every pod has an emptyDir with a sizeLimit (each measured each pass).

Target (issue 6): <= 10 ms per pass with 30 pods.

Run from the repository root:

    .venv/bin/python -m bench.eviction [--pods 30] [--passes 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node_agent.eviction.cgroup_stats import CgroupStatsProvider
from node_agent.eviction.manager import EvictionManager, ManagerConfig
from node_agent.eviction.ranking import EvictionNote
from node_agent.eviction.thresholds import parse_threshold_config
from node_agent.runtime.containers import ContainerRecord, PodRuntime

MI = 1 << 20
GI = 1 << 30
Obj = dict[str, Any]


class Cache:
    """The runtime cache's read side, over fixed records."""

    def __init__(self, records: list[ContainerRecord]) -> None:
        self.records = records
        self.by_uid: dict[str, list[ContainerRecord]] = {}
        for r in records:
            self.by_uid.setdefault(r.pod_uid, []).append(r)

    def uids(self) -> set[str]:
        return set(self.by_uid)

    def pod(self, uid: str) -> PodRuntime:
        return PodRuntime.group(self.by_uid.get(uid, [])).get(uid) or PodRuntime(uid)

    def container_ids(self) -> set[str]:
        return {r.id for r in self.records}


class Docker:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def info(self) -> dict[str, Any]:
        return {"DockerRootDir": str(self.root)}

    async def inspect(self, cid: str) -> dict[str, Any]:
        return {"GraphDriver": {"Data": {"UpperDir": ""}}, "LogPath": ""}


class Evictor:
    async def evict(self, pod: Obj, grace_period: float, note: EvictionNote) -> None:
        pass

    async def cleaned_up(self, pod: Obj) -> bool:
        return True


class Recorder:
    def record(self, obj: Any, type_: str, reason: str, message: str, field_path: str = "") -> None:
        pass


@contextlib.contextmanager
def cgroup_tree(pods: int) -> Iterator[tuple[Path, str, bool]]:
    """(mount, pods' cgroup, real?) with a cgroup per container under the pods' cgroup."""
    name = f"skiff-bench-{secrets.token_hex(3)}"
    real = os.geteuid() == 0 and Path("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists()
    mount = Path("/sys/fs/cgroup") if real else Path(tempfile.mkdtemp(prefix="skiff-bench-"))
    made: list[Path] = []
    try:
        for controller in ("memory", "pids"):
            root = mount / controller / name
            root.mkdir(parents=True)
            made.append(root)
            for i in range(pods):
                for kind in ("pause", "app"):
                    child = root / f"{kind}-{i}"
                    child.mkdir()
                    made.append(child)
                    if not real:
                        (child / "memory.usage_in_bytes").write_text(f"{(10 + i) * MI}\n")
                        (child / "memory.stat").write_text("cache 0\nrss 0\ntotal_inactive_file 4096\n")
                        (child / "pids.current").write_text("3\n")
            if not real:
                (root / "memory.usage_in_bytes").write_text(f"{900 * MI}\n")
                (root / "memory.stat").write_text("cache 0\ntotal_inactive_file 0\n")
                (root / "pids.max").write_text("max\n")
        yield mount, "/" + name, real
    finally:
        if real:
            for path in sorted(made, key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    path.rmdir()
        else:
            shutil.rmtree(mount, ignore_errors=True)


def make_pods(n: int, size_limit: bool) -> list[Obj]:
    pods = []
    for i in range(n):
        spec: Obj = {"containers": [{"name": "app", "image": "skiff/app:1.0",
                                     "resources": {"requests": {"memory": f"{i % 3 * 10}Mi"}}}]}
        if size_limit:
            spec["volumes"] = [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}]
        pods.append({"metadata": {"name": f"pod-{i}", "namespace": "default", "uid": f"uid-{i}"}, "spec": spec,
                     "status": {"phase": "Running"}})
    return pods


def records(n: int) -> list[ContainerRecord]:
    out = []
    for i in range(n):
        for kind, container in (("pause", "POD"), ("app", "app")):
            out.append(ContainerRecord(id=f"{kind}-{i}", name=f"k8s_{container}_pod-{i}", pod_uid=f"uid-{i}",
                                       pod_name=f"pod-{i}", namespace="default", container=container, kind=kind,
                                       restart_count=0, sandbox_id="", status="running", pid=1))
    return out


async def measure(manager: EvictionManager, passes: int) -> list[float]:
    times = []
    for _ in range(passes):
        start = time.process_time()
        await manager.synchronize()
        times.append(time.process_time() - start)
    return times


async def scenario(name: str, n: int, passes: int, hard: str, size_limit: bool, mount: Path, cgroup: str,
                   agent_dir: Path) -> None:
    pods = make_pods(n, size_limit)
    for pod in pods:
        (agent_dir / "pods" / pod["metadata"]["uid"] / "volumes" / "empty-dir" / "cache").mkdir(parents=True,
                                                                                                exist_ok=True)
    stats = CgroupStatsProvider(docker=Docker(agent_dir), cache=Cache(records(n)),  # type: ignore[arg-type]
                                memory_capacity=GI, cgroup_root=cgroup, nodefs=agent_dir, pods_dir=agent_dir / "pods",
                                mount=mount, cgroup_of_pid=lambda _pid, _v2: None)
    stats._cgroups = {r.id: f"{cgroup}/{r.id}" for r in records(n)}  # noqa: SLF001 - no real pids to read
    manager = EvictionManager(ManagerConfig(thresholds=tuple(parse_threshold_config(hard))), stats=stats,
                              evictor=Evictor(), reclaimer=None, recorder=Recorder(), node_ref="bench",
                              active_pods=lambda: pods, clock=time.monotonic)
    await measure(manager, 10)  # warm up: imagefs path, filesystems, caches
    times = sorted(await measure(manager, passes))
    mean = statistics.fmean(times) * 1000
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
    print(f"  {name:<16} {mean:6.2f} ms mean  {p99:6.2f} ms p99  CPU per pass")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--passes", type=int, default=300)
    args = parser.parse_args()
    with cgroup_tree(args.pods) as (mount, cgroup, real), tempfile.TemporaryDirectory() as tmp:
        agent_dir = Path(tmp)
        print(f"eviction pass, {args.pods} pods ({'real cgroup v1 files' if real else 'cgroup files in a tmpdir'}), "
              f"{args.passes} passes each:")
        await scenario("steady", args.pods, args.passes, "memory.available<100Mi,nodefs.available<10%", False,
                       mount, cgroup, agent_dir)
        await scenario("memory pressure", args.pods, args.passes, "memory.available<2Gi", False, mount, cgroup,
                       agent_dir)
        await scenario("local storage", args.pods, args.passes, "memory.available<100Mi", True, mount, cgroup,
                       agent_dir)
    print("target: <= 10 ms per pass")


if __name__ == "__main__":
    asyncio.run(main())

"""``skiff lab chaos memory-pressure|disk-pressure|relieve``: starve a lab node of memory or disk.

- memory-pressure: a process in the node's cgroup (``/skiff-<lab>-node-<i>/chaos-memory``)
  holding ``--size`` bytes of memory. That cgroup is where the node's agent reads the pods'
  memory (``--cgroup-root``), so the agent sees memory.available fall exactly as if a pod
  used it — but evicting pods cannot free it: while it lasts the agent evicts pods, one per
  pass, BestEffort first. Without ``--size``: enough to go 64Mi below the agent's
  memory.available threshold.
- disk-pressure: a file of ``--size`` bytes (allocated with fallocate, no data written) in the
  node agent's root dir, its nodefs. Without ``--size``: enough to go 64Mi below the agent's
  nodefs.available threshold — refused when the node's filesystem is the host's big disk
  (more than 16Gi would be needed).
- relieve: kill the hog, delete the file, and load again the lab images the agent's image
  GC removed under disk pressure (no registry here to pull them from). The pressure
  conditions clear after the agent's pressure transition period.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from node_agent.eviction.cgroup_stats import fs_stats, read_int, read_stat
from node_agent.eviction.thresholds import (
    MEMORY_AVAILABLE,
    NODEFS_AVAILABLE,
    Threshold,
    format_amount,
    parse_threshold_config,
)
from node_agent.lab import dockerd, node_limits
from node_agent.lab.layout import LabError
from node_agent.lab.processes import kill_processes
from node_agent.settings import EvictionSettings
from skiff.api.quantity import QuantityError, memory_bytes

if TYPE_CHECKING:
    from node_agent.lab.chaos import Outcome, Target

HOG_CGROUP = "chaos-memory"
FILL_FILE = "chaos-disk-pressure.fill"
MARGIN = 64 << 20  # how far below the threshold the default size goes
MAX_DEFAULT_FILL = 16 << 30
READY_TIMEOUT = 30.0
# Joins the cgroup before touching any memory: pages are charged to the cgroup that first touches them.
HOG = ("import os, sys, time\n"
       "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
       "held = b'\\x01' * int(sys.argv[2])\n"
       "print('holding', len(held), flush=True)\n"
       "while True:\n"
       "    time.sleep(3600)\n")


# -- what the node's agent runs with --------------------------------------------------------------


def agent_flag(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` on an agent's command line (``--flag value`` or ``--flag=value``)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def agent_threshold(target: Target, signal: str) -> Threshold | None:
    """The agent's hard threshold for ``signal`` (kubelet's defaults unless its --eviction-hard says)."""
    argv = target.node.agent.argv if target.node.agent is not None else []
    hard = agent_flag(argv, "--eviction-hard")
    try:
        thresholds = parse_threshold_config(EvictionSettings().hard if hard is None else hard)
    except ValueError:
        return None
    return next((t for t in thresholds if t.signal == signal), None)


def parse_size(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        size = memory_bytes(text)
    except QuantityError as exc:
        raise LabError(f"--size {text!r}: {exc}") from None
    if size <= 0:
        raise LabError(f"--size {text!r} must be positive")
    return size


def _gi(n: int) -> str:
    return f"{n / (1 << 30):.2f}Gi" if abs(n) >= 1 << 30 else f"{n / (1 << 20):.0f}Mi"


# -- memory ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeMemory:
    capacity: int
    working_set: int

    @property
    def available(self) -> int:
        return self.capacity - self.working_set


def node_memory(target: Target) -> NodeMemory | None:
    """memory.available of the node as its agent computes it: its --memory minus its cgroup's working set."""
    argv = target.node.agent.argv if target.node.agent is not None else []
    capacity_text = agent_flag(argv, "--memory")
    if not capacity_text:
        return None
    cgroup = node_limits.node_cgroup(target.layout, target.i, "memory")
    usage = read_int(cgroup / "memory.usage_in_bytes") or 0
    inactive = read_stat(cgroup / "memory.stat", ("total_inactive_file",)).get("total_inactive_file", 0)
    return NodeMemory(memory_bytes(capacity_text), max(0, usage - inactive))


def hog_cgroup(target: Target) -> Path:
    return node_limits.node_cgroup(target.layout, target.i, "memory") / HOG_CGROUP


def hog_processes(target: Target) -> list[psutil.Process]:
    procs = []
    with contextlib.suppress(OSError), open(hog_cgroup(target) / "cgroup.procs") as f:
        for line in f:
            with contextlib.suppress(psutil.Error, ValueError):
                proc = psutil.Process(int(line))
                if proc.status() != psutil.STATUS_ZOMBIE:
                    procs.append(proc)
    return procs


def start_hog(cgroup: Path, size: int, log: Path) -> int:
    """Start the hog in ``cgroup``; returns its pid once it holds the memory."""
    cgroup.mkdir(exist_ok=True)
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-c", HOG, str(cgroup / "cgroup.procs"), str(size)],
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    line = ""
    while time.monotonic() < deadline and proc.poll() is None and not line:
        line = proc.stdout.readline()
    proc.stdout.close()
    if not line.startswith("holding"):
        with contextlib.suppress(OSError):
            proc.kill()
        raise LabError(f"the memory hog (pid {proc.pid}) did not take {_gi(size)} in {cgroup} "
                       f"(exit code {proc.poll()}; the node's cgroup may be too small: see {log})")
    return proc.pid


def memory_pressure(target: Target, size_text: str | None, outcome: Outcome) -> None:
    node = target.node
    outcome.undo = target.command("relieve")
    size = parse_size(size_text)
    running = hog_processes(target)
    if running:
        outcome.did.append(f"{node.name} is already under memory pressure: the hog (pid "
                           f"{', '.join(str(p.pid) for p in running)}) holds memory in {hog_cgroup(target)}")
        return
    before = node_memory(target)
    threshold = agent_threshold(target, MEMORY_AVAILABLE)
    if size is None:
        if before is None or threshold is None:
            raise LabError(f"the agent of {node.name} has no --memory or no memory.available threshold; "
                           "give --size")
        size = before.available - threshold.quantity(before.capacity) + MARGIN
        if size <= 0:
            raise LabError(f"{node.name} is already below its memory.available threshold")
    pid = start_hog(hog_cgroup(target), size, target.layout.node_dir(target.i) / "chaos.log")
    after = node_memory(target)
    outcome.did.append(f"started a process (pid {pid}) holding {_gi(size)} of memory in {node.name}'s cgroup "
                       f"{hog_cgroup(target)}, where its agent reads the pods' memory")
    if before is not None and after is not None:
        line = f"memory.available of {node.name}: {_gi(before.available)} -> {_gi(after.available)} " \
               f"of {_gi(after.capacity)}"
        if threshold is not None:
            limit = threshold.quantity(after.capacity)
            line += f"; its agent's hard threshold is memory.available<{format_amount(MEMORY_AVAILABLE, limit)}"
            line += (": MemoryPressure turns True within its monitoring period and it evicts pods, one per pass, "
                     "BestEffort first, while this lasts" if after.available < limit else ": still above it")
        outcome.did.append(line)


# -- disk ----------------------------------------------------------------------------------------------------


def fill_path(target: Target) -> Path:
    return target.layout.node_dir(target.i) / "agent" / FILL_FILE


def disk_pressure(target: Target, size_text: str | None, outcome: Outcome) -> None:
    node = target.node
    outcome.undo = target.command("relieve")
    size = parse_size(size_text)
    path = fill_path(target)
    if path.exists():
        outcome.did.append(f"{node.name} is already under disk pressure: {path} holds "
                           f"{_gi(path.stat().st_blocks * 512)}")
        return
    before = fs_stats(path.parent)
    if before is None:
        raise LabError(f"{path.parent} does not exist: the agent of {node.name} has not run yet")
    threshold = agent_threshold(target, NODEFS_AVAILABLE)
    if size is None:
        if threshold is None:
            raise LabError(f"the agent of {node.name} has no nodefs.available threshold (a node on the host's disk "
                           "leaves it alone: `skiff lab up --node-disk 4Gi` gives new nodes a disk of their own); "
                           "give --size")
        size = before.available_bytes - threshold.quantity(before.capacity_bytes) + MARGIN
        if size > MAX_DEFAULT_FILL:
            raise LabError(f"{node.name}'s root dir {path.parent} is on a {_gi(before.capacity_bytes)} filesystem "
                           f"with {_gi(before.available_bytes)} free: reaching its nodefs.available threshold would "
                           f"take a {_gi(size)} file; give --size to write less")
    if size >= before.available_bytes:
        raise LabError(f"{_gi(size)} does not fit in the {_gi(before.available_bytes)} free under {path.parent}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise LabError(f"could not allocate {_gi(size)} in {path}: {exc.strerror}") from exc
    os.close(fd)
    after = fs_stats(path.parent)
    outcome.did.append(f"wrote {path}, {_gi(size)} allocated, in the root dir of {node.name}'s agent (its nodefs)")
    if after is not None:
        line = f"nodefs.available of {node.name}: {_gi(before.available_bytes)} -> {_gi(after.available_bytes)} " \
               f"of {_gi(after.capacity_bytes)}"
        if threshold is not None:
            limit = threshold.quantity(after.capacity_bytes)
            line += f"; its agent's hard threshold is nodefs.available<{_gi(limit)}"
            line += (": DiskPressure turns True, the agent removes dead containers and unused images, then evicts "
                     "pods while this lasts" if after.available_bytes < limit else ": still above it")
        outcome.did.append(line)


# -- relieve ---------------------------------------------------------------------------------------------------


def relieve(target: Target, outcome: Outcome) -> None:
    node = target.node
    hogs = hog_processes(target)
    if hogs:
        kill_processes(hogs)
        outcome.did.append(f"killed the memory hog of {node.name} (pid {', '.join(str(p.pid) for p in hogs)})")
    with contextlib.suppress(OSError):
        hog_cgroup(target).rmdir()
    path = fill_path(target)
    if path.exists():
        size = path.stat().st_blocks * 512
        path.unlink()
        outcome.did.append(f"deleted {path} ({_gi(size)})")
    if not hogs and not outcome.did:
        outcome.did.append(f"{node.name} has no chaos pressure to relieve")
    if dockerd.is_running(target.layout, target.i, node.dockerd):
        from node_agent.images.build import ensure_images

        client = dockerd.docker_client(node.docker_host, timeout=120)
        try:
            loaded = [tag for tag, done in ensure_images(client) if done]
        except Exception as exc:
            raise LabError(f"{node.name}: loading the lab images again failed: {exc}") from exc
        finally:
            client.close()
        if loaded:
            outcome.did.append(f"loaded {', '.join(loaded)} into {node.name} again (its agent's image GC removed "
                               "them under disk pressure)")
    transition = agent_flag(node.agent.argv if node.agent else [], "--eviction-pressure-transition-period") or "5m0s"
    outcome.did.append(f"the pressure conditions of {node.name} clear {transition} after its agent last saw a "
                       "threshold met")

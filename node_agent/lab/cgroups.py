"""The cgroups a lab node's dockerd creates (``--cgroup-parent=/skiff-<lab>-node-<i>``, one
directory per controller hierarchy), found by name, emptied and removed."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """Mount points of every cgroup (v1 controllers, named hierarchies) and cgroup2 hierarchy."""
    found: list[Path] = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2"):
                found.append(Path(parts[1]))
    return found


def lab_cgroups(prefix: str) -> list[Path]:
    """Top-level cgroup directories whose name starts with ``prefix``, in every hierarchy."""
    found: list[Path] = []
    for root in hierarchies():
        with contextlib.suppress(OSError):
            found.extend(p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return sorted(found)


def pids_in(cgroup: Path) -> set[int]:
    """Every pid in ``cgroup`` and its descendants."""
    pids: set[int] = set()
    for dirpath, _dirs, _files in os.walk(cgroup):
        with contextlib.suppress(OSError), open(os.path.join(dirpath, "cgroup.procs")) as f:
            pids.update(int(line) for line in f if line.strip())
    return pids


def remove_tree(cgroup: Path, timeout: float = 5.0) -> bool:
    """rmdir ``cgroup`` and its children, deepest first; retries while dying tasks still hold them
    (EBUSY). The caller has killed the tasks. True if it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        for dirpath, _dirs, _files in sorted(os.walk(cgroup), key=lambda w: w[0].count("/"), reverse=True):
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(dirpath)
        if not cgroup.exists():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)

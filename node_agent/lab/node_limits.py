"""A lab node's size: limits on its cgroup parent (``/skiff-<lab>-node-<i>``), under which its
dockerd puts every container.

The node advertises a small memory capacity (``--node-memory``, 2Gi by default) and its
cgroup holds it to that: like a small machine, its pods cannot take more of the host, and the
eviction manager, which reads the same cgroup, sees the pressure long before. ``--node-pids``
caps its tasks the same way (a fork bomb stops there, and pid.available falls).

The cgroups are made before dockerd starts (it reuses them) and go with ``skiff lab down``,
which removes every cgroup of the lab.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

from node_agent.lab.cgroups import CGROUP_ROOT
from node_agent.lab.layout import LabError, LabLayout
from skiff.api.quantity import QuantityError, memory_bytes


def _unified() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def node_cgroup(layout: LabLayout, i: int, controller: str) -> Path:
    rel = layout.cgroup_parent(i).strip("/")
    return CGROUP_ROOT / rel if _unified() else CGROUP_ROOT / controller / rel


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        if exc.errno == errno.EBUSY:  # a memory limit below what the node already uses
            raise LabError(f"{path}: cannot set {value}: the node already uses more") from exc
        raise LabError(f"{path}: cannot set {value}: {exc.strerror}") from exc


def ensure_node_limits(layout: LabLayout, i: int, memory: str | None, pids: int | None) -> list[str]:
    """Set the node's memory and task limits (None: unlimited); returns what was set, for the log."""
    done: list[str] = []
    if _unified():
        with contextlib.suppress(OSError):  # let children use the controllers (cgroup v2)
            (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory +pids")
    try:
        limit = memory_bytes(memory) if memory else None
    except QuantityError as exc:
        raise LabError(f"--node-memory {memory!r}: {exc}") from exc
    mem = node_cgroup(layout, i, "memory")
    mem.mkdir(parents=True, exist_ok=True)
    if _unified():
        _write(mem / "memory.max", str(limit) if limit else "max")
    else:
        _write(mem / "memory.limit_in_bytes", str(limit) if limit else "-1")
    if limit:
        done.append(f"memory {memory}")
    tasks = node_cgroup(layout, i, "pids")
    tasks.mkdir(parents=True, exist_ok=True)
    _write(tasks / "pids.max", str(pids) if pids else "max")
    if pids:
        done.append(f"{pids} tasks")
    return done

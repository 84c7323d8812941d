"""The lab's state file and the host-wide registry of labs.

``<state-dir>/state.json`` records what ``up`` started (pids with their start times, so a
recycled pid is never mistaken for ours) and the addresses it chose; ``down`` and
``status`` read it, and still work from the lab name alone when it is missing.

``/run/skiff-lab/<name>.json`` points from a lab name to its state dir and subnet, so
``skiff lab down --name N`` finds a lab started with ``--state-dir`` and a new lab never
takes a subnet another one holds. Both live in /run, which a reboot clears along with
every namespace, link and process of a lab.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from node_agent.lab.layout import RUN_DIR, LabError, LabLayout, default_state_dir, validate_name

STATE_VERSION = 1
CONTROL_PLANE_MODES = ("single", "split")


@dataclass
class ProcessRecord:
    """A process the lab started: its pid, its start time (psutil ``create_time``) and its log."""

    pid: int
    create_time: float
    log: str
    argv: list[str] = field(default_factory=list)


@dataclass
class NodeState:
    index: int
    name: str
    netns: str
    ip: str
    pod_cidr: str
    docker_host: str
    dockerd: ProcessRecord | None = None
    agent: ProcessRecord | None = None


@dataclass
class LabState:
    name: str
    state_dir: str
    subnet_index: int
    cni_plugin: str = "skiff"
    nodes: list[NodeState] = field(default_factory=list)
    server: ProcessRecord | None = None
    # "single": `skiff server` runs the scheduler and the controllers in-process; "split": the server
    # only serves the API, and `skiff scheduler` and `skiff controller-manager` run as processes of their own.
    control_plane: str = "single"
    scheduler: ProcessRecord | None = None
    controller_manager: ProcessRecord | None = None
    version: int = STATE_VERSION

    @property
    def layout(self) -> LabLayout:
        return LabLayout(self.name, Path(self.state_dir), self.subnet_index)

    def node(self, index: int) -> NodeState | None:
        return next((n for n in self.nodes if n.index == index), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        def record(value: Any) -> ProcessRecord | None:
            return ProcessRecord(**value) if isinstance(value, dict) else None

        nodes = [NodeState(**{**n, "dockerd": record(n.get("dockerd")), "agent": record(n.get("agent"))})
                 for n in data.get("nodes", [])]
        control_plane = str(data.get("control_plane", "single"))
        if control_plane not in CONTROL_PLANE_MODES:
            raise ValueError(f"unknown control plane mode {control_plane!r}")
        return cls(name=data["name"], state_dir=data["state_dir"], subnet_index=int(data["subnet_index"]),
                   cni_plugin=data.get("cni_plugin", "skiff"), nodes=nodes, server=record(data.get("server")),
                   control_plane=control_plane, scheduler=record(data.get("scheduler")),
                   controller_manager=record(data.get("controller_manager")),
                   version=int(data.get("version", STATE_VERSION)))


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_state(state: LabState) -> None:
    write_json_atomic(state.layout.state_file, state.to_json())


def load_state(state_dir: Path) -> LabState | None:
    """The lab's state, or None if there is none (a lab never built, or already removed)."""
    path = state_dir / "state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read the lab state {path}: {exc}") from exc
    try:
        return LabState.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise LabError(f"the lab state {path} is malformed ({exc}); `skiff lab down` still cleans up by name") \
            from exc


# -- the host-wide registry (/run/skiff-lab) ----------------------------------------------


@dataclass(frozen=True)
class Registration:
    name: str
    state_dir: Path
    subnet_index: int


def _pointer(name: str, run_dir: Path) -> Path:
    return run_dir / f"{name}.json"


def read_registration(name: str, run_dir: Path = RUN_DIR) -> Registration | None:
    try:
        data = json.loads(_pointer(name, run_dir).read_text())
        return Registration(name, Path(data["state_dir"]), int(data["subnet_index"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a torn pointer: treat the lab as unregistered


def registrations(run_dir: Path = RUN_DIR) -> list[Registration]:
    found: list[Registration] = []
    try:
        paths = sorted(run_dir.glob("*.json"))
    except OSError:
        return found
    for path in paths:
        reg = read_registration(path.stem, run_dir)
        if reg is not None:
            found.append(reg)
    return found


def register(reg: Registration, run_dir: Path = RUN_DIR) -> None:
    write_json_atomic(_pointer(reg.name, run_dir),
                      {"state_dir": str(reg.state_dir), "subnet_index": reg.subnet_index}, mode=0o644)


def unregister(name: str, run_dir: Path = RUN_DIR) -> None:
    with contextlib.suppress(FileNotFoundError):
        _pointer(name, run_dir).unlink()


def resolve_state_dir(name: str, state_dir: Path | None, run_dir: Path = RUN_DIR) -> Path:
    """The state dir of lab ``name``: the one given, else the registered one, else the default."""
    validate_name(name)
    if state_dir is not None:
        return state_dir.absolute()
    reg = read_registration(name, run_dir)
    return reg.state_dir if reg is not None else default_state_dir(name)


@contextlib.contextmanager
def registry_locked(run_dir: Path = RUN_DIR) -> Iterator[None]:
    """An exclusive flock on ``/run/skiff-lab/registry.lock``: held while a lab picks its subnet
    and registers, so two labs coming up at once never pick the same one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / "registry.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def lab_locked(state_dir: Path) -> Iterator[None]:
    """An exclusive flock on the state dir itself, so two commands never work on one lab at once.
    (A directory, not a lock file, so removing the lab leaves no lock file behind.)"""
    if not state_dir.is_dir():
        yield
        return
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

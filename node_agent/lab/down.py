"""``skiff lab down``: remove every trace of a lab from the host.

It works from the state file when there is one and from the lab's name regardless, so a
half-built lab, a lab whose processes were killed -9, or one whose state file is gone is
cleaned up all the same. Polite first (stop the agents, let each dockerd stop its
containers and containerd, SIGTERM the server), then a sweep that kills whatever still
runs in the lab's namespaces or cgroups or names its state dir, then the mounts,
namespaces, links, iptables chain, cgroups and files. Running it twice is harmless.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from node_agent.lab import agents, cgroups, controlplane, dockerd, firewall, mounts, network
from node_agent.lab.layout import DEFAULT_STATE_ROOT, LabError, LabLayout, validate_name
from node_agent.lab.processes import find_lab_processes, kill_processes, netns_inode, process_of, stop_processes
from node_agent.lab.progress import Progress
from node_agent.lab.state import LabState, lab_locked, load_state, read_registration, resolve_state_dir, unregister

SHIM_SOCKET_DIR = "/run/containerd/s/"
SWEEP_ROUNDS = 5


@dataclass
class DownReport:
    """What teardown removed, and anything it could not."""

    removed: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


def lab_netns(name: str) -> list[str]:
    pattern = re.compile(rf"^skiff-{re.escape(name)}-\d+$")
    return [ns for ns in network.list_netns() if pattern.match(ns)]


def lab_links(name: str) -> list[str]:
    pattern = re.compile(rf"^skiff-{re.escape(name)}(-\d+)?$")
    return [link for link in network.host_links() if pattern.match(link)]


def socket_paths(pid: int, prefix: str) -> set[str]:
    """Paths under ``prefix`` of the unix sockets process ``pid`` holds. Read from ``/proc/<pid>/net/unix``,
    which lists the sockets of the process's own network namespace (psutil reads the caller's)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    paths: set[str] = set()
    with contextlib.suppress(OSError), open(f"/proc/{pid}/net/unix") as f:
        next(f, None)  # header
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[6] in inodes and fields[7].startswith(prefix):
                paths.add(fields[7])
    return paths


def _shim_sockets(procs: list[psutil.Process]) -> set[str]:
    """Sockets containerd shims listen on (``/run/containerd/s/<hash>``): a shim killed -9 leaves its file."""
    paths: set[str] = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if "containerd-shim" in proc.name():
                paths |= socket_paths(proc.pid, SHIM_SOCKET_DIR)
    return paths


def stop_politely(state: LabState, layout: LabLayout, progress: Progress) -> None:
    """Agents, then the dockerds (all at once, their containers killed first), then the scheduler and
    controller manager of a split control plane, then the server."""
    agent_procs = [p for p in (process_of(n.agent) for n in state.nodes) if p is not None]
    if agent_procs:
        stop_processes(agent_procs, agents.STOP_TIMEOUT)
    docker_procs = []
    for node in state.nodes:
        proc = process_of(node.dockerd)
        if proc is not None:
            dockerd.kill_containers(node.docker_host)
            docker_procs.append(proc)
    if docker_procs:
        stuck = stop_processes(docker_procs, dockerd.STOP_TIMEOUT)
        if stuck:
            progress.warn(f"dockerd {', '.join(str(p.pid) for p in stuck)} did not stop")
    components = [p for p in (process_of(getattr(state, c.attr)) for c in controlplane.COMPONENTS) if p is not None]
    if components:
        stop_processes(components, controlplane.STOP_TIMEOUT)
    server = process_of(state.server)
    if server is not None:
        stop_processes([server], controlplane.STOP_TIMEOUT)


def sweep_processes(layout: LabLayout, netns_names: list[str]) -> tuple[int, set[str]]:
    """Kill -9 everything left of the lab; returns how many and the shim sockets they held."""
    inodes = {ino for ino in (netns_inode(network.netns_path(ns)) for ns in netns_names) if ino is not None}
    killed = 0
    sockets: set[str] = set()
    for _ in range(SWEEP_ROUNDS):
        cgroup_pids: set[int] = set()
        for cg in cgroups.lab_cgroups(layout.cgroup_prefix):
            cgroup_pids |= cgroups.pids_in(cg)
        procs = find_lab_processes(layout.state_dir, inodes, cgroup_pids)
        if not procs:
            break
        sockets |= _shim_sockets(procs)
        kill_processes(procs)
        killed += len(procs)
    return killed, sockets


def remove_state_files(layout: LabLayout) -> None:
    """Remove what the lab wrote into its state dir, then the dir if that leaves it empty. Never more:
    a mistaken ``--state-dir`` must not cost the user their files."""
    sd = layout.state_dir
    if not sd.is_dir():
        return
    node_dir = re.compile(rf"^{re.escape(layout.name)}-node-\d+$")
    ours = {"state.json", "kubeconfig", "server", "server.log", "cni-bin",
            *(f"{c.command}.log" for c in controlplane.COMPONENTS)}
    for entry in sd.iterdir():
        if entry.name in ours or node_dir.match(entry.name) or entry.name.startswith((".state.json.", ".kubeconfig")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    with contextlib.suppress(OSError):
        sd.rmdir()
    if sd.parent == DEFAULT_STATE_ROOT:
        with contextlib.suppress(OSError):
            DEFAULT_STATE_ROOT.rmdir()  # only if no other lab is left in it


def lab_down(name: str, state_dir: Path | None, progress: Progress, keep_state: bool = False) -> DownReport:
    validate_name(name)
    sd = resolve_state_dir(name, state_dir)
    try:
        state = load_state(sd)
    except LabError as exc:
        progress.warn(f"{exc}")
        state = None
    reg = read_registration(name)
    subnet_index = state.subnet_index if state else (reg.subnet_index if reg else 0)
    layout = LabLayout(name, sd, subnet_index)
    report = DownReport()
    netns_names = sorted(set(lab_netns(name)) | {n.netns for n in (state.nodes if state else [])})

    with lab_locked(sd):
        if state is not None:
            with progress.step("Stopping the agents, Docker engines and control plane"):
                stop_politely(state, layout, progress)
        with progress.step("Killing leftover processes") as step:
            killed, sockets = sweep_processes(layout, netns_names)
            for path in sockets:
                with contextlib.suppress(OSError):
                    Path(path).unlink()
            step.detail = f"{killed} killed" if killed else "none"
        with progress.step("Unmounting") as step:
            before = len(mounts.mounts_under(sd))
            remaining = mounts.unmount_all_under(sd)
            report.leftovers += [f"mount {m}" for m in remaining]
            step.detail = f"{before - len(remaining)} mounts" if before else "nothing mounted"
        with progress.step("Removing namespaces, links and firewall rules") as step:
            for ns in netns_names:
                if network.delete_netns(ns):
                    report.removed.append(f"netns {ns}")
            for link in lab_links(name):
                if network.delete_link(link):
                    report.removed.append(f"link {link}")
            if firewall.delete_lab_chain(layout.chain):
                report.removed.append(f"iptables chain {layout.chain}")
            step.detail = f"{len(report.removed)} removed" if report.removed else "nothing left"
        with progress.step("Removing cgroups") as step:
            groups = cgroups.lab_cgroups(layout.cgroup_prefix)
            for cg in groups:
                leftover = cgroups.pids_in(cg)
                if leftover:
                    kill_processes([p for p in (_proc(pid) for pid in leftover) if p is not None])
                if not cgroups.remove_tree(cg):
                    report.leftovers.append(f"cgroup {cg}")
            step.detail = f"{len(groups)} removed" if groups else "none"
        if not keep_state and sd.exists():
            if any(item.startswith("mount ") for item in report.leftovers):
                progress.warn(f"keeping {sd}: mounts remain under it")
            else:
                with progress.step(f"Removing {sd}"):
                    remove_state_files(layout)
    reg = read_registration(name)
    if reg is not None and reg.state_dir == sd:
        unregister(name)
    for ns in lab_netns(name):
        report.leftovers.append(f"netns {ns}")
    for link in lab_links(name):
        report.leftovers.append(f"link {link}")
    return report


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None

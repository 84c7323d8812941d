"""Start the lab's long-running processes detached, recognise them later, and stop them.

A process is ours only if both its pid and its start time match the record: after a
crash or a reboot a recorded pid may belong to someone else. ``find_lab_processes`` is
the safety net for teardown: whatever runs in a lab namespace, sits in a lab cgroup, or
names the state dir on its command line belongs to the lab.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import psutil

from node_agent.lab.layout import LabError
from node_agent.lab.state import ProcessRecord


def spawn_detached(argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
                   cwd: Path | None = None) -> ProcessRecord:
    """Start ``argv`` in its own session (it outlives the CLI) with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, cwd=cwd,
                                    env=dict(env) if env is not None else None)
        except OSError as exc:
            raise LabError(f"cannot start {argv[0]}: {exc}") from exc
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        created = 0.0  # exited at once; is_alive() will say so
    return ProcessRecord(pid=proc.pid, create_time=created, log=str(log_path), argv=list(argv))


def process_of(record: ProcessRecord | None) -> psutil.Process | None:
    """The live process behind ``record``, or None if it exited or the pid was reused."""
    if record is None:
        return None
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 0.5:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def is_alive(record: ProcessRecord | None) -> bool:
    return process_of(record) is not None


def netns_inode(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def in_netns(pid: int, inode: int | None) -> bool:
    """True if process ``pid`` lives in the network namespace with ``inode``."""
    return inode is not None and netns_inode(f"/proc/{pid}/ns/net") == inode


def stop_processes(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """SIGTERM every process, wait up to ``timeout`` seconds, SIGKILL the rest; returns any still alive."""
    procs = [p for p in procs if p.pid != os.getpid()]
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    return kill_processes(wait_gone(procs, timeout))


def kill_processes(procs: Iterable[psutil.Process], timeout: float = 5.0) -> list[psutil.Process]:
    """SIGKILL and wait; returns any still alive (stuck in the kernel)."""
    procs = [p for p in procs if p.pid != os.getpid()]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    return wait_gone(procs, timeout)


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited; returns those still running after ``timeout``.
    A zombie counts as gone: it holds nothing, and the reaping of an orphan is up to PID 1."""
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [p for p in pending if not _gone(p)]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return pending


def _own_lineage() -> set[int]:
    """This process and its ancestors: a command line naming the state dir there is the caller's."""
    pids = {os.getpid()}
    try:
        for parent in psutil.Process().parents():
            pids.add(parent.pid)
    except psutil.Error:
        pass
    return pids


def mentions_path(cmdline: Iterable[str], path: Path) -> bool:
    """True if an argument names ``path`` or something under it (not merely a sibling with a longer name)."""
    pattern = re.compile(re.escape(str(path)) + r"(?=/|$|[\s:,;=\"'])")
    return any(pattern.search(arg) for arg in cmdline)


def find_lab_processes(state_dir: Path, netns_inodes: set[int], cgroup_pids: set[int]) -> list[psutil.Process]:
    """Every process of the lab: in one of its namespaces, in one of its cgroups, or naming its state dir."""
    exclude = _own_lineage()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.pid in exclude or proc.pid <= 2 or proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.pid in cgroup_pids or (netns_inodes and netns_inode(f"/proc/{proc.pid}/ns/net") in netns_inodes):
                found.append(proc)
                continue
            if mentions_path(proc.info.get("cmdline") or [], state_dir):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def log_tail(path: str | Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])

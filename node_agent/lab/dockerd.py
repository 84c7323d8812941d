"""One Docker Engine per lab node, inside the node's network namespace.

Each dockerd has its own data root, exec root, socket, pid file and config file under
``<state>/<node>/`` and spawns its own managed containerd (dockerd 20.10 does so when no
``--containerd`` is given; its socket is ``<exec-root>/containerd/containerd.sock``). It
makes no bridge and no iptables rules (pods are wired by the CNI plugin) and puts its
containers under the cgroup parent ``/skiff-<lab>-node-<i>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil

from node_agent.lab.layout import LabError, LabLayout
from node_agent.lab.network import netns_path
from node_agent.lab.processes import (
    in_netns,
    is_alive,
    log_tail,
    netns_inode,
    process_of,
    spawn_detached,
    stop_processes,
)
from node_agent.lab.state import ProcessRecord

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SHUTDOWN_TIMEOUT = 5  # dockerd's own wait for containers on SIGTERM
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL
LONGEST_SOCKET = "containerd/containerd.sock.ttrpc"  # the longest socket dockerd makes under its exec root


def exec_root(layout: LabLayout, i: int) -> Path:
    return layout.node_dir(i) / "exec"


def dockerd_argv(layout: LabLayout, i: int) -> list[str]:
    node = layout.node_dir(i)
    return [
        "nsenter", f"--net={netns_path(layout.netns(i))}", "--",
        "dockerd",
        "--config-file", str(node / "daemon.json"),  # not the host's /etc/docker/daemon.json
        "--data-root", str(node / "docker"),
        "--exec-root", str(exec_root(layout, i)),
        "--host", layout.docker_host(i),
        "--pidfile", str(node / "docker.pid"),
        "--bridge=none", "--iptables=false", "--ip-masq=false", "--userland-proxy=false",
        f"--cgroup-parent={layout.cgroup_parent(i)}",
        "--exec-opt", "native.cgroupdriver=cgroupfs",
        "--shutdown-timeout", str(SHUTDOWN_TIMEOUT),
    ]


def check_socket_paths(layout: LabLayout, i: int) -> None:
    """Unix socket paths are limited to 107 bytes: fail early with advice rather than deep in dockerd."""
    longest = max(str(layout.docker_socket(i)), str(exec_root(layout, i) / LONGEST_SOCKET), key=len)
    if len(longest.encode()) > UNIX_PATH_MAX:
        raise LabError(f"the state dir {layout.state_dir} is too deep: the socket path {longest} exceeds "
                       f"{UNIX_PATH_MAX} bytes; use a shorter --state-dir")


def docker_client(docker_host: str, timeout: float = 30.0) -> Any:
    """A ``docker.APIClient`` for a node's socket (the API version is negotiated on first use)."""
    import docker

    return docker.APIClient(base_url=docker_host, timeout=timeout)


def ping(docker_host: str, timeout: float = 2.0) -> bool:
    import docker.errors
    import requests

    try:
        client = docker_client(docker_host, timeout)
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False
    finally:
        client.close()


def is_running(layout: LabLayout, i: int, record: ProcessRecord | None) -> bool:
    """The recorded dockerd is alive, in the node's namespace (not one left from a deleted namespace)."""
    proc = process_of(record)
    return proc is not None and in_netns(proc.pid, netns_inode(netns_path(layout.netns(i))))


def start_dockerd(layout: LabLayout, i: int) -> ProcessRecord:
    check_socket_paths(layout, i)
    node = layout.node_dir(i)
    node.mkdir(parents=True, exist_ok=True)
    config = node / "daemon.json"
    if not config.exists():
        config.write_text(json.dumps({}) + "\n")
    remove_stale_pidfile(node / "docker.pid")
    # dockerd adopts a managed containerd named by this pid file; a zombie one never answers
    remove_stale_pidfile(exec_root(layout, i) / "containerd" / "containerd.pid")
    return spawn_detached(dockerd_argv(layout, i), node / "dockerd.log", cwd=node)


def remove_stale_pidfile(pidfile: Path) -> None:
    """dockerd refuses to start while its pid file names a process that exists (and
    adopts the containerd its pid file names), and a killed process can linger as a
    zombie where PID 1 does not reap orphans: a pid file naming a dead or zombie
    process is removed."""
    try:
        pid = int(pidfile.read_text().strip() or "0")
    except (OSError, ValueError):
        return
    try:
        if pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return  # a live process: leave it to dockerd to refuse
    except psutil.Error:
        pass
    pidfile.unlink(missing_ok=True)


def wait_ready(docker_host: str, record: ProcessRecord, timeout: float = START_TIMEOUT) -> None:
    """Poll ``/_ping`` until it answers; fail at once with the log tail if dockerd exits."""
    deadline = time.monotonic() + timeout
    while True:
        if ping(docker_host):
            return
        if not is_alive(record):
            raise LabError(f"dockerd (pid {record.pid}) exited before answering on {docker_host}; "
                           f"last lines of {record.log}:\n{log_tail(record.log)}")
        if time.monotonic() > deadline:
            raise LabError(f"dockerd (pid {record.pid}) did not answer on {docker_host} within {timeout:.0f}s; "
                           f"last lines of {record.log}:\n{log_tail(record.log)}")
        time.sleep(0.1)


def kill_containers(docker_host: str) -> int:
    """SIGKILL every running container of a node's dockerd, so its shutdown is quick. Returns how many."""
    import docker.errors
    import requests

    if not ping(docker_host):
        return 0
    client = docker_client(docker_host, timeout=10)
    killed = 0
    try:
        for container in client.containers(quiet=True):
            try:
                client.kill(container["Id"])
                killed += 1
            except docker.errors.APIError:
                continue  # exited meanwhile
    except (docker.errors.DockerException, requests.RequestException, OSError):
        pass
    finally:
        client.close()
    return killed


def stop_dockerd(record: ProcessRecord | None, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (dockerd stops its containers and its containerd), SIGKILL after ``timeout``."""
    proc = process_of(record)
    if proc is not None:
        stop_processes([proc], timeout)

"""One ``skiff agent`` per lab node, run inside the node's network namespace (``nsenter
--net``) so the pod bridge and pod veths it makes through CNI live in the node."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass

from node_agent.images.build import PAUSE_IMAGE
from node_agent.lab import cni_setup, node_disk
from node_agent.lab.controlplane import KubeApi, child_env, node_ready, skiff_command
from node_agent.lab.layout import AGENT_PORT, LabError, LabLayout
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

STOP_TIMEOUT = 10.0
READY_TIMEOUT = 90.0


DEFAULT_NODE_MEMORY = "2Gi"  # small, so pressure tests never strain the host


@dataclass(frozen=True)
class NodeResources:
    """What a lab node advertises instead of the host's measurements (None: measure), the limits
    its cgroup gets (node_agent/lab/node_limits.py), and extra flags for its agent."""

    cpu: str | None = None
    memory: str | None = DEFAULT_NODE_MEMORY
    pids: int | None = None  # pids.max of the node's cgroup
    disk: str | None = None  # a filesystem of this size of its own (node_agent/lab/node_disk.py)
    agent_args: tuple[str, ...] = ()


def agent_unavailable_reason() -> str | None:
    """None if ``skiff agent`` can run here, else why not."""
    try:
        module = importlib.import_module("node_agent.main")
    except ImportError as exc:
        return f"node_agent.main does not import ({exc})"
    if not hasattr(module, "add_agent_parser"):
        return "node_agent.main has no add_agent_parser"
    return None


LAB_NODE_LEASE_SECONDS = 8
# Node-pressure eviction on the lab's short timings: look every 2 s, clear a pressure 10 s after it ends.
LAB_EVICTION_FLAGS = ("--eviction-monitoring-period", "2s", "--eviction-pressure-transition-period", "10s")
# A node on the host's disk does not own it: its agent leaves the disk signals alone (a nearly full
# CI disk must not taint every lab node). A node with a disk of its own (--node-disk) watches it too.
LAB_HOST_DISK_EVICTION_HARD = "memory.available<100Mi"


def agent_argv(layout: LabLayout, i: int, cni_plugin: str, resources: NodeResources) -> list[str]:
    ip = str(layout.node_ip(i).ip)
    argv = [
        "nsenter", f"--net={netns_path(layout.netns(i))}", "--",
        *skiff_command(), "agent",
        "--kubeconfig", str(layout.kubeconfig),
        "--node-name", layout.node_name(i),
        "--node-ip", ip,
        "--docker-host", layout.docker_host(i),
        "--data-dir", str(layout.node_dir(i) / "agent"),
        "--pod-cidr", str(layout.pod_cidr(i)),
        "--cni-conf-dir", str(cni_setup.conf_dir(layout, i)),
        "--cni-bin-dir", cni_setup.bin_path(layout),
        "--cni-plugin", cni_plugin,
        "--listen-address", ip,
        "--listen-port", str(AGENT_PORT),
        "--pause-image", PAUSE_IMAGE,
        "--cluster-dns", "10.96.0.10",  # the kube-dns Service: skiff server's --cluster-dns default
        # renew the Lease every 2 s: the lab's 10 s node-monitor grace period needs heartbeats well inside it
        "--node-lease-duration-seconds", str(LAB_NODE_LEASE_SECONDS),
        # the eviction manager reads the pods' memory and pids from the node's cgroup parent
        "--cgroup-root", layout.cgroup_parent(i), *LAB_EVICTION_FLAGS,
    ]
    if resources.cpu:
        argv += ["--cpu", resources.cpu]
    if resources.memory:
        argv += ["--memory", resources.memory]
    if resources.disk is None and not (layout.node_dir(i) / node_disk.IMAGE).exists():
        argv.append(f"--eviction-hard={LAB_HOST_DISK_EVICTION_HARD}")
    return argv + list(resources.agent_args)  # last: a flag given twice, the last one counts


def is_running(layout: LabLayout, i: int, record: ProcessRecord | None) -> bool:
    proc = process_of(record)
    return proc is not None and in_netns(proc.pid, netns_inode(netns_path(layout.netns(i))))


def start_agent(layout: LabLayout, i: int, cni_plugin: str, resources: NodeResources) -> ProcessRecord:
    node = layout.node_dir(i)
    (node / "agent").mkdir(parents=True, exist_ok=True)
    return spawn_detached(agent_argv(layout, i, cni_plugin, resources), node / "agent.log", env=child_env(),
                          cwd=node)


def stop_agent(record: ProcessRecord | None, timeout: float = STOP_TIMEOUT) -> None:
    proc = process_of(record)
    if proc is not None:
        stop_processes([proc], timeout)


def wait_nodes_ready(api: KubeApi, agents: dict[str, ProcessRecord], timeout: float = READY_TIMEOUT) -> None:
    """Poll the Node objects until every agent's node is Ready; fail at once if an agent exits."""
    deadline = time.monotonic() + timeout
    pending = set(agents)
    while True:
        try:
            ready = {n["metadata"]["name"] for n in api.nodes() if node_ready(n)}
        except (OSError, LabError):
            ready = set()
        pending = set(agents) - ready
        if not pending:
            return
        for name in sorted(pending):
            record = agents[name]
            if not is_alive(record):
                raise LabError(f"the agent of {name} (pid {record.pid}) exited; "
                               f"last lines of {record.log}:\n{log_tail(record.log)}")
        if time.monotonic() > deadline:
            name = sorted(pending)[0]
            raise LabError(f"nodes not Ready after {timeout:.0f}s: {', '.join(sorted(pending))}; "
                           f"last lines of {agents[name].log}:\n{log_tail(agents[name].log)}")
        time.sleep(0.5)

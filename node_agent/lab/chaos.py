"""``skiff lab chaos``: inject a node fault into a running lab, and undo it.

=================  ==========================================================  ==============
fault              what it does to node i                                      undone by
=================  ==========================================================  ==============
``kill-node``      SIGKILL, all at once, every process of the node: its        ``restore-node``
                   agent, dockerd, containerd, the shims and the containers'
                   processes (found by the node's netns, its cgroup parent and
                   its state dir, as ``down`` finds them) — a power cut
``restore-node``   start the node's dockerd and agent again, as ``up`` does
``partition``      the host end of the node's veth down: the node loses its    ``heal``
                   only link, so it cannot reach the API server and no one
                   reaches it, while everything on it keeps running
``heal``           the host end of the veth up again
``stop-agent``     SIGTERM the agent: it stops, its pods keep running          ``start-agent``
``start-agent``    start the agent again; it adopts the running pods
``restart-docker`` SIGTERM dockerd (it stops every container, as ``systemctl   (nothing)
                   restart docker`` does), then start it again
``memory-pressure`` a process holding ``--size`` of memory in the node's        ``relieve``
                   cgroup, where its agent reads the pods' memory
                   (node_agent/lab/pressure.py)
``disk-pressure``  a ``--size`` file in the node agent's root dir (nodefs)     ``relieve``
``relieve``        kill the hog, delete the file, load the lab images the
                   agent's image GC removed
=================  ==========================================================  ==============

No fault is written down anywhere but in what the host shows (a dead process, a link
down): ``skiff lab up`` repairs every one of them, and each command here is idempotent —
killing a dead node, healing a connected one or starting a running agent says so and
changes nothing. Each prints what it did and the command that undoes it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from node_agent.lab import agents, cgroups, controlplane, dockerd, network, pressure
from node_agent.lab.agents import NodeResources
from node_agent.lab.command import run
from node_agent.lab.down import SHIM_SOCKET_DIR, socket_paths
from node_agent.lab.layout import LabError, LabLayout
from node_agent.lab.processes import (
    find_lab_processes,
    is_alive,
    kill_processes,
    netns_inode,
    process_of,
    spawn_detached,
)
from node_agent.lab.progress import Progress
from node_agent.lab.state import LabState, NodeState, lab_locked, load_state, resolve_state_dir, save_state

KILL_ROUNDS = 5  # a process may fork while the others die (a shim reaping, the agent's CNI calls)


@dataclass
class Outcome:
    """What a fault did (one line each) and the command that undoes it (None: nothing to undo)."""

    did: list[str] = field(default_factory=list)
    undo: str | None = None


@dataclass(frozen=True)
class Target:
    """The lab and the node a fault is aimed at, with the words of the command for its hints."""

    state: LabState
    node: NodeState
    lab_args: str  # "--name N [--state-dir D]", as the user gave them

    @property
    def layout(self) -> LabLayout:
        return self.state.layout

    @property
    def i(self) -> int:
        return self.node.index

    def command(self, fault: str) -> str:
        return f"skiff lab chaos {fault} {self.node.name} {self.lab_args}"


# -- finding the lab and the node -------------------------------------------------------------


def resolve_node(state: LabState, spec: str) -> NodeState:
    """The node named ``spec``: its Node name (``<lab>-node-<i>``) or its number ``i``."""
    for node in state.nodes:
        if spec in (node.name, str(node.index)):
            return node
    names = ", ".join(n.name for n in state.nodes) or "none"
    numbers = f" (or their numbers {state.nodes[0].index}-{state.nodes[-1].index})" if state.nodes else ""
    raise LabError(f"lab {state.name} has no node {spec!r}; its nodes: {names}{numbers}")


def load_lab(name: str, state_dir: Path | None) -> LabState:
    sd = resolve_state_dir(name, state_dir)
    state = load_state(sd)
    if state is None:
        raise LabError(f"lab {name} does not exist (no state in {sd}); `skiff lab up --name {name}` creates it")
    return state


def check_root() -> None:
    if os.geteuid() != 0:
        raise LabError("skiff lab chaos needs root: it signals the lab's processes and sets its links")


# -- the node's processes and link ------------------------------------------------------------


def node_cgroups(layout: LabLayout, i: int) -> list[Path]:
    """The node's cgroup parent in every hierarchy (not node 10's when i is 1)."""
    name = layout.cgroup_parent(i).lstrip("/")
    return [cg for cg in cgroups.lab_cgroups(name) if cg.name == name]


def node_processes(layout: LabLayout, i: int) -> list[psutil.Process]:
    """Every process of node ``i``: in its network namespace (agent, dockerd, containerd, shims),
    in its cgroup parent (the containers' processes, which live in the pods' namespaces), or
    naming its directory on the command line."""
    inode = netns_inode(network.netns_path(layout.netns(i)))
    cgroup_pids: set[int] = set()
    for cg in node_cgroups(layout, i):
        cgroup_pids |= cgroups.pids_in(cg)
    return find_lab_processes(layout.node_dir(i), {inode} if inode is not None else set(), cgroup_pids)


def describe_killed(target: Target, procs: list[psutil.Process], names: dict[int, str]) -> str:
    """``its agent (pid 1), dockerd (pid 2), containerd (pid 3), 2 containerd shims and 6 other processes``."""
    node = target.node
    parts: list[str] = []
    kinds = {"shim": 0, "other": 0}
    for proc in procs:
        name = names.get(proc.pid, "")
        if node.agent is not None and proc.pid == node.agent.pid:
            parts.insert(0, f"its agent (pid {proc.pid})")
        elif node.dockerd is not None and proc.pid == node.dockerd.pid:
            parts.append(f"dockerd (pid {proc.pid})")
        elif name == "containerd":
            parts.append(f"containerd (pid {proc.pid})")
        elif name.startswith("containerd-shim"):
            kinds["shim"] += 1
        else:
            kinds["other"] += 1
    if kinds["shim"]:
        parts.append(f"{kinds['shim']} containerd shim{'s' if kinds['shim'] != 1 else ''}")
    if kinds["other"]:
        parts.append(f"{kinds['other']} other process{'es' if kinds['other'] != 1 else ''} (the containers')")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def link_is_up(name: str) -> bool:
    """True if the host link ``name`` is administratively up."""
    info = network.link_info(name)
    if info is None:
        raise LabError(f"link {name} does not exist; `skiff lab up` recreates the node's link")
    return "UP" in (info.get("flags") or [])


def set_link(name: str, up: bool) -> None:
    run(["ip", "link", "set", "dev", name, "up" if up else "down"])


# -- starting what a fault stopped -------------------------------------------------------------


def ensure_dockerd(target: Target, outcome: Outcome) -> None:
    """The node's dockerd running and answering (started again if it is not); saves the state."""
    layout, node = target.layout, target.node
    if not network.netns_path(node.netns).exists():
        raise LabError(f"the namespace {node.netns} of {node.name} is gone; `skiff lab up {target.lab_args}` "
                       "rebuilds it")
    if dockerd.is_running(layout, node.index, node.dockerd):
        outcome.did.append(f"dockerd of {node.name} already runs (pid {node.dockerd.pid if node.dockerd else '?'})")
        return
    dockerd.stop_dockerd(node.dockerd)  # one left in a deleted namespace
    node.dockerd = dockerd.start_dockerd(layout, node.index)
    save_state(target.state)
    dockerd.wait_ready(node.docker_host, node.dockerd)
    outcome.did.append(f"started dockerd of {node.name} (pid {node.dockerd.pid}); it answers on {node.docker_host}")


def ensure_agent(target: Target, outcome: Outcome) -> None:
    """The node's agent running (started again with the command line it last ran with); saves the state."""
    layout, node = target.layout, target.node
    if agents.is_running(layout, node.index, node.agent):
        outcome.did.append(f"the agent of {node.name} already runs (pid {node.agent.pid if node.agent else '?'})")
        return
    agents.stop_agent(node.agent)  # one left in a deleted namespace
    old = node.agent
    if old is not None and old.argv:
        # The same flags as before (node resources, control plane), which the state does not keep elsewhere.
        node.agent = spawn_detached(old.argv, Path(old.log), env=controlplane.child_env(),
                                    cwd=layout.node_dir(node.index))
    else:
        node.agent = agents.start_agent(layout, node.index, target.state.cni_plugin, NodeResources())
    save_state(target.state)
    outcome.did.append(f"started the agent of {node.name} (pid {node.agent.pid}, log {node.agent.log})")


def wait_ready(target: Target, timeout: float, outcome: Outcome) -> None:
    """Wait for the node to be Ready (0: do not wait); fails at once if its agent exits."""
    node = target.node
    if timeout <= 0:
        return
    if node.agent is None:
        raise LabError(f"{node.name} has no agent to wait for")
    if not link_is_up(target.layout.host_veth(node.index)):
        outcome.did.append(f"not waiting for {node.name} to be Ready: it is partitioned "
                           f"(`{target.command('heal')}` reconnects it)")
        return
    api = controlplane.api_for(target.layout)
    if api is None:
        raise LabError(f"the control plane of lab {target.state.name} has no kubeconfig; "
                       f"`skiff lab up {target.lab_args}` starts it")
    agents.wait_nodes_ready(api, {node.name: node.agent}, timeout)
    outcome.did.append(f"{node.name} is Ready")


# -- the faults ------------------------------------------------------------------------------------


def kill_node(target: Target, _args: argparse.Namespace) -> Outcome:
    layout, node = target.layout, target.node
    outcome = Outcome(undo=f"{target.command('restore-node')}   (or `skiff lab up {target.lab_args}`)")
    killed: list[psutil.Process] = []
    names: dict[int, str] = {}
    sockets: set[str] = set()
    for round_ in range(KILL_ROUNDS):
        procs = node_processes(layout, node.index)
        if not procs:
            break
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                names[proc.pid] = proc.name()
                if names[proc.pid].startswith("containerd-shim"):
                    sockets |= socket_paths(proc.pid, SHIM_SOCKET_DIR)
        stuck = kill_processes(procs)
        killed += [p for p in procs if p not in stuck]
        if stuck and round_ == KILL_ROUNDS - 1:
            raise LabError(f"{node.name}: pids {', '.join(str(p.pid) for p in stuck)} survive SIGKILL")
    for path in sockets:  # a shim killed -9 leaves its socket file behind
        with contextlib.suppress(OSError):
            Path(path).unlink()
    if not killed:
        outcome.did.append(f"{node.name} is already down: none of its processes runs")
        return outcome
    outcome.did.append(f"killed {node.name} at once with SIGKILL, as a power cut would: "
                       f"{describe_killed(target, killed, names)}")
    outcome.did.append("its containers died with it; its Node turns Ready=Unknown after the node monitor grace "
                       "period, and its pods are evicted when their tolerationSeconds for "
                       "node.kubernetes.io/unreachable run out")
    return outcome


def restore_node(target: Target, args: argparse.Namespace) -> Outcome:
    outcome = Outcome()
    ensure_dockerd(target, outcome)
    ensure_agent(target, outcome)
    wait_ready(target, args.wait, outcome)
    return outcome


def partition(target: Target, _args: argparse.Namespace) -> Outcome:
    veth, node = target.layout.host_veth(target.i), target.node
    outcome = Outcome(undo=target.command("heal"))
    if not link_is_up(veth):
        outcome.did.append(f"{node.name} is already partitioned: link {veth} is down")
        return outcome
    set_link(veth, up=False)
    outcome.did.append(f"partitioned {node.name}: set its link {veth} (host end of its veth on bridge "
                       f"{target.layout.bridge}) down; the node cannot reach the API server at "
                       f"{target.layout.api_url} and no node reaches it; its processes and pods keep running")
    return outcome


def heal(target: Target, args: argparse.Namespace) -> Outcome:
    veth, node = target.layout.host_veth(target.i), target.node
    outcome = Outcome()
    if link_is_up(veth):
        outcome.did.append(f"{node.name} is not partitioned: link {veth} is up")
    else:
        set_link(veth, up=True)
        outcome.did.append(f"healed {node.name}: set its link {veth} up again")
    if agents.is_running(target.layout, node.index, node.agent):
        wait_ready(target, args.wait, outcome)
    return outcome


def stop_agent(target: Target, _args: argparse.Namespace) -> Outcome:
    node = target.node
    outcome = Outcome(undo=target.command("start-agent"))
    proc = process_of(node.agent) if agents.is_running(target.layout, node.index, node.agent) else None
    if proc is None:
        outcome.did.append(f"the agent of {node.name} is not running")
        return outcome
    agents.stop_agent(node.agent)
    if is_alive(node.agent):
        raise LabError(f"the agent of {node.name} (pid {proc.pid}) did not stop")
    outcome.did.append(f"stopped the agent of {node.name} (pid {proc.pid}) with SIGTERM; its pods keep running; "
                       "its Node turns Ready=Unknown after the node monitor grace period and its pods are evicted "
                       "when their tolerationSeconds run out, unless the agent is back by then")
    return outcome


def start_agent(target: Target, args: argparse.Namespace) -> Outcome:
    outcome = Outcome()
    if not dockerd.is_running(target.layout, target.i, target.node.dockerd):
        outcome.did.append(f"note: dockerd of {target.node.name} is not running; the agent waits for it "
                           f"(`{target.command('restore-node')}` starts both)")
    ensure_agent(target, outcome)
    wait_ready(target, args.wait, outcome)
    return outcome


def restart_docker(target: Target, _args: argparse.Namespace) -> Outcome:
    layout, node = target.layout, target.node
    outcome = Outcome()
    old = process_of(node.dockerd) if dockerd.is_running(layout, node.index, node.dockerd) else None
    if old is not None:
        dockerd.stop_dockerd(node.dockerd)
        if is_alive(node.dockerd):
            raise LabError(f"dockerd of {node.name} (pid {old.pid}) did not stop")
        outcome.did.append(f"stopped dockerd of {node.name} (pid {old.pid}) with SIGTERM: it stopped every "
                           "container, as `systemctl restart docker` does")
    ensure_dockerd(target, outcome)
    outcome.did.append("the agent brings the pods back as their restartPolicy says")
    return outcome


def memory_pressure(target: Target, args: argparse.Namespace) -> Outcome:
    outcome = Outcome()
    pressure.memory_pressure(target, args.size, outcome)
    return outcome


def disk_pressure(target: Target, args: argparse.Namespace) -> Outcome:
    outcome = Outcome()
    pressure.disk_pressure(target, args.size, outcome)
    return outcome


def relieve(target: Target, _args: argparse.Namespace) -> Outcome:
    outcome = Outcome()
    pressure.relieve(target, outcome)
    return outcome


# -- the command ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    help: str
    run: Callable[[Target, argparse.Namespace], Outcome]
    waits: bool = False  # has --wait (for the node to be Ready)
    sized: bool = False  # has --size


FAULTS = (
    Fault("kill-node", "SIGKILL the node's agent, dockerd, containerd and containers at once", kill_node),
    Fault("restore-node", "start a killed node's dockerd and agent again", restore_node, waits=True),
    Fault("partition", "cut the node's link to the API server and the other nodes", partition),
    Fault("heal", "reconnect a partitioned node", heal, waits=True),
    Fault("stop-agent", "SIGTERM the node's agent; its pods keep running", stop_agent),
    Fault("start-agent", "start the node's agent again", start_agent, waits=True),
    Fault("restart-docker", "restart the node's dockerd (it stops every container)", restart_docker),
    Fault("memory-pressure", "hold memory in the node's cgroup, where its agent reads the pods' memory",
          memory_pressure, sized=True),
    Fault("disk-pressure", "fill the node agent's root dir (its nodefs) with a file", disk_pressure, sized=True),
    Fault("relieve", "end a memory-pressure or disk-pressure", relieve),
)


def add_chaos_parser(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                     common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``skiff lab chaos FAULT NODE``; ``common`` adds the lab's --name and --state-dir."""
    chaos = sub.add_parser("chaos", help="inject node faults into a running lab, and undo them",
                           description="Inject a node fault into a running lab, or undo it. Each prints what it "
                                       "did and how to undo it; `skiff lab up` repairs every fault.")
    chaos.set_defaults(func=lambda _args: (chaos.print_help(sys.stderr), 1)[1])
    faults = chaos.add_subparsers(dest="fault", metavar="FAULT")
    for fault in FAULTS:
        p = faults.add_parser(fault.name, help=fault.help, description=fault.help)
        p.add_argument("node", metavar="NODE", help="the node: its name (<lab>-node-<i>) or its number i")
        common(p)
        if fault.waits:
            p.add_argument("--wait", type=float, default=agents.READY_TIMEOUT,
                           help=f"seconds to wait for the node to be Ready, 0 not to wait "
                                f"(default {agents.READY_TIMEOUT:.0f})")
        if fault.sized:
            p.add_argument("--size", default=None, metavar="QUANTITY",
                           help="how much, e.g. 1Gi (default: 64Mi past the agent's hard threshold)")
        p.set_defaults(func=cmd_chaos, chaos_fault=fault)


def lab_args(args: argparse.Namespace) -> str:
    words = f"--name {args.name}"
    return words + (f" --state-dir {args.state_dir}" if args.state_dir is not None else "")


def cmd_chaos(args: argparse.Namespace) -> int:
    fault: Fault = args.chaos_fault
    progress = Progress()
    try:
        resolve_node(load_lab(args.name, args.state_dir), args.node)  # a wrong name fails before any lock
        check_root()
        state_dir = resolve_state_dir(args.name, args.state_dir)
        with lab_locked(state_dir):
            state = load_lab(args.name, args.state_dir)  # as it is now that no other lab command runs
            target = Target(state, resolve_node(state, args.node), lab_args(args))
            outcome = fault.run(target, args)
    except LabError as exc:
        progress.error(str(exc))
        return 1
    for line in outcome.did:
        print(line)
    if outcome.undo:
        print(f"undo: {outcome.undo}")
    return 0

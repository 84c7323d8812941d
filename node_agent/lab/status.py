"""``skiff lab status``: what of a lab is running, checked against the host (not just the state file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from node_agent.lab import agents, controlplane, dockerd, firewall, network
from node_agent.lab.controlplane import COMPONENTS, LAB_LEADER_ELECTION, LAB_TIMINGS, LEASE_NAMESPACE, SPLIT
from node_agent.lab.layout import LabError, validate_name
from node_agent.lab.processes import is_alive
from node_agent.lab.state import LabState, load_state, resolve_state_dir


@dataclass
class NodeStatus:
    name: str
    ip: str
    netns: bool
    dockerd: bool
    agent: bool
    ready: str  # "True" | "False" | "Unknown" | "-" (no Node object)


@dataclass
class ComponentStatus:
    """The scheduler or the controller manager of a split control plane."""

    command: str
    pid: int | None
    running: bool
    lease: str  # namespace/name
    holder: str  # the Lease's holderIdentity ("" free, "?" unknown)


@dataclass
class LabStatus:
    state: LabState
    bridge: bool
    chain: bool
    server: bool
    api_ready: bool
    nodes: list[NodeStatus]
    components: list[ComponentStatus] = field(default_factory=list)  # split mode only

    @property
    def healthy(self) -> bool:
        return (self.bridge and self.chain and self.server and self.api_ready
                and all(c.running for c in self.components)
                and all(n.netns and n.dockerd and n.agent and n.ready == "True" for n in self.nodes))


def collect_status(name: str, state_dir: Path | None) -> LabStatus | None:
    validate_name(name)
    state = load_state(resolve_state_dir(name, state_dir))
    if state is None:
        return None
    layout = state.layout
    api = controlplane.api_for(layout)
    api_ready = api is not None and api.ready()
    ready: dict[str, str] = {}
    if api is not None and api_ready:
        for node in api.nodes():
            conds = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
            ready[node["metadata"]["name"]] = str(conds.get("Ready", "Unknown"))
    nodes = [NodeStatus(name=n.name, ip=n.ip, netns=network.netns_path(n.netns).exists(),
                        dockerd=dockerd.is_running(layout, n.index, n.dockerd) and dockerd.ping(n.docker_host),
                        agent=agents.is_running(layout, n.index, n.agent), ready=ready.get(n.name, "-"))
             for n in state.nodes]
    components = []
    if state.control_plane == SPLIT:
        for c in COMPONENTS:
            record = getattr(state, c.attr)
            holder = "?"
            if api is not None and api_ready:
                try:
                    holder = api.lease_holder(c.lease)
                except (OSError, LabError):
                    pass
            components.append(ComponentStatus(command=c.command, pid=record.pid if record else None,
                                              running=is_alive(record), lease=f"{LEASE_NAMESPACE}/{c.lease}",
                                              holder=holder))
    return LabStatus(state=state, bridge=network.link_info(layout.bridge) is not None,
                     chain=firewall.chain_exists(layout.chain), server=is_alive(state.server),
                     api_ready=api_ready, nodes=nodes, components=components)


def render_status(status: LabStatus, console: Console) -> None:
    def mark(ok: bool) -> str:
        return "[green]yes[/]" if ok else "[red]no[/]"

    state = status.state
    layout = state.layout
    console.print(f"Lab [bold]{state.name}[/] ({layout.subnet}, state {layout.state_dir}, CNI {state.cni_plugin})")
    console.print(f"  bridge {layout.bridge}: {mark(status.bridge)}   firewall chain {layout.chain}: "
                  f"{mark(status.chain)}")
    console.print(f"  control plane ({state.control_plane}) {layout.api_url}: server running {mark(status.server)}, "
                  f"ready {mark(status.api_ready)}")
    for c in status.components:
        holder = {"": "free", "?": "unknown"}.get(c.holder, f"held by {c.holder}")
        console.print(f"    {c.command} (pid {c.pid if c.pid is not None else '-'}): running {mark(c.running)}, "
                      f"lease {c.lease} {holder}")
    console.print(f"  kubeconfig: {layout.kubeconfig}")
    console.print("  lab timings (shorter than Kubernetes' defaults): " + " ".join(LAB_TIMINGS))
    if state.control_plane == SPLIT:
        console.print("  leader election (Kubernetes' defaults: 15s lease, 10s renew deadline, 2s retry period): "
                      + " ".join(LAB_LEADER_ELECTION))
    table = Table("node", "address", "netns", "dockerd", "agent", "Ready")
    for n in status.nodes:
        ready = {"True": "[green]True[/]", "False": "[red]False[/]"}.get(n.ready, n.ready)
        table.add_row(n.name, n.ip, mark(n.netns), mark(n.dockerd), mark(n.agent), ready)
    console.print(table)

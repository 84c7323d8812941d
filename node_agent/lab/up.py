"""``skiff lab up``: build or repair a whole cluster on this machine.

Every step is an ``ensure``: on a running lab ``up`` re-checks each piece and restarts or
recreates only what is missing, so it is also the way to repair a lab. The state file is
saved after every process it starts, so ``down`` can clean up after a failure anywhere.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from node_agent.images.build import ImageSpec, ensure_images, lab_image_specs
from node_agent.images.errors import ImageBuildError
from node_agent.lab import agents, cni_setup, controlplane, dockerd, firewall, network, node_disk, node_limits
from node_agent.lab.agents import NodeResources
from node_agent.lab.controlplane import COMPONENTS, SINGLE, SPLIT, Component, KubeApi
from node_agent.lab.layout import (
    LAB_SUPERNET,
    MAX_NODES,
    RUN_DIR,
    LabError,
    LabLayout,
    preferred_subnet_index,
    subnet_for,
    validate_name,
)
from node_agent.lab.processes import is_alive
from node_agent.lab.progress import Progress
from node_agent.lab.state import (
    CONTROL_PLANE_MODES,
    LabState,
    NodeState,
    ProcessRecord,
    Registration,
    lab_locked,
    load_state,
    read_registration,
    register,
    registrations,
    registry_locked,
    resolve_state_dir,
    save_state,
)

DEFAULT_NODES = 3
REQUIRED_TOOLS = ("ip", "iptables", "nsenter", "sysctl", "dockerd", "containerd", "runc")


@dataclass
class UpOptions:
    name: str
    nodes: int | None = None  # None: the lab's current count, DEFAULT_NODES for a new lab
    state_dir: Path | None = None
    cni_plugin: str | None = None  # None: the lab's current plugin, "skiff" for a new lab
    control_plane: str | None = None  # None: the lab's current mode, "single" for a new lab
    wait: float = agents.READY_TIMEOUT
    resources: NodeResources = field(default_factory=NodeResources)


def check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("skiff lab needs root: it creates network namespaces, links, iptables rules and cgroups")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (apt-get install iproute2 iptables util-linux docker.io)")


def choose_subnet(name: str, run_dir: Path = RUN_DIR) -> int:
    """The name's preferred 10.250.<k>.0/24, or the next one that no other lab and no host
    address or route uses. Called under the registry lock."""
    taken = {reg.subnet_index for reg in registrations(run_dir) if reg.name != name}
    host_nets = [net for net in network.host_ipv4_networks() if not net.supernet_of(LAB_SUPERNET)]
    start = preferred_subnet_index(name)
    for offset in range(256):
        k = (start + offset) % 256
        if k not in taken and not any(subnet_for(k).overlaps(net) for net in host_nets):
            return k
    raise LabError(f"no free lab subnet in {LAB_SUPERNET}: every 10.250.<k>.0/24 is in use")


def prepare_state(opts: UpOptions) -> LabState:
    """Load the lab's state or start a new one, claiming its subnet in the host-wide registry."""
    state_dir = resolve_state_dir(opts.name, opts.state_dir)
    with registry_locked():
        reg = read_registration(opts.name)
        if reg is not None and reg.state_dir != state_dir and (reg.state_dir / "state.json").exists():
            raise LabError(f"lab {opts.name} already exists with state dir {reg.state_dir}; "
                           f"run `skiff lab down --name {opts.name}` first or pass that --state-dir")
        state = load_state(state_dir)
        if state is not None and state.name != opts.name:
            raise LabError(f"{state_dir} holds lab {state.name}, not {opts.name}")
        if state is not None and opts.cni_plugin not in (None, state.cni_plugin):
            raise LabError(f"lab {opts.name} uses the {state.cni_plugin} CNI plugin; "
                           f"`skiff lab down` it to switch to {opts.cni_plugin}")
        nodes = opts.nodes or (len(state.nodes) if state is not None else DEFAULT_NODES)
        if state is not None and len(state.nodes) > nodes:
            raise LabError(f"lab {opts.name} has {len(state.nodes)} nodes; `skiff lab down` it to start with fewer")
        if state is not None:
            # After a reboot (/run cleared) another lab may have registered this lab's subnet meanwhile.
            holder = next((r.name for r in registrations() if r.name != opts.name
                           and r.subnet_index == state.subnet_index), None)
            if holder is not None:
                raise LabError(f"lab {holder} now uses {state.layout.subnet}, the subnet of lab {opts.name}; "
                               f"run `skiff lab down --name {opts.name}` and bring it up again")
        k = state.subnet_index if state is not None else choose_subnet(opts.name)
        register(Registration(opts.name, state_dir, k))
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if state is None:
        state = LabState(name=opts.name, state_dir=str(state_dir), subnet_index=k,
                         cni_plugin=opts.cni_plugin or "skiff")
    state.control_plane = opts.control_plane or state.control_plane
    layout = state.layout
    for i in range(1, nodes + 1):
        if state.node(i) is None:
            state.nodes.append(NodeState(index=i, name=layout.node_name(i), netns=layout.netns(i),
                                         ip=str(layout.node_ip(i)), pod_cidr=str(layout.pod_cidr(i)),
                                         docker_host=layout.docker_host(i)))
    state.nodes.sort(key=lambda n: n.index)
    save_state(state)
    return state


def lab_up(opts: UpOptions, progress: Progress) -> LabState:
    validate_name(opts.name)
    if opts.nodes is not None and not 1 <= opts.nodes <= MAX_NODES:
        raise LabError(f"--nodes must be between 1 and {MAX_NODES}")
    if opts.cni_plugin not in (None, *cni_setup.PLUGINS):
        raise LabError(f"--cni-plugin must be one of {', '.join(cni_setup.PLUGINS)}")
    if opts.control_plane not in (None, *CONTROL_PLANE_MODES):
        raise LabError(f"--control-plane must be one of {', '.join(CONTROL_PLANE_MODES)}")
    check_host()

    with progress.step("Building the lab images") as step:
        try:
            specs = lab_image_specs()
        except ImageBuildError as exc:
            raise LabError(str(exc)) from exc
        step.detail = ", ".join(spec.tag for spec in specs)

    state = prepare_state(opts)
    layout = state.layout
    with lab_locked(layout.state_dir):
        _bring_up(state, layout, opts, progress, specs)
    return state


def _bring_up(state: LabState, layout: LabLayout, opts: UpOptions, progress: Progress,
              specs: list[ImageSpec]) -> None:
    with progress.step(f"Lab network {layout.subnet}") as step:
        network.ensure_bridge(layout.bridge, layout.bridge_ip)
        firewall.ensure_lab_chain(layout.chain, layout.bridge)
        for node in state.nodes:
            i = node.index
            network.ensure_node_netns(layout.netns(i), layout.host_veth(i), layout.bridge, layout.node_ip(i),
                                      layout.bridge_ip.ip)
            firewall.ensure_node_masquerade(layout.netns(i), layout.pod_cidr(i))
        step.detail = f"bridge {layout.bridge} {layout.bridge_ip}, namespaces " + \
            ", ".join(n.netns for n in state.nodes)

    with progress.step(f"Starting the control plane ({state.control_plane})") as step:
        restarted = ensure_server_mode(state)
        if not is_alive(state.server):
            state.server = controlplane.start_server(layout, state.control_plane)
            save_state(state)
            step.detail = f"{'restarted in ' + state.control_plane + ' mode, ' if restarted else ''}" \
                          f"pid {state.server.pid}, {layout.api_url}"
        else:
            step.detail = f"already running (pid {state.server.pid if state.server else '?'})"

    with progress.step("Node sizes") as step:
        limits: list[str] = []
        disks: list[str] = []
        for node in state.nodes:
            limits = node_limits.ensure_node_limits(layout, node.index, opts.resources.memory, opts.resources.pids)
            disk = node_disk.ensure_node_disk(layout, node.index, opts.resources.disk)
            disks += [f"{node.name}: {disk}"] if disk else []
        step.detail = f"each node's cgroup holds it to {' and '.join(limits) or 'the host'}" + \
            (f"; {', '.join(disks)}" if disks else "")

    with progress.step(f"Starting {len(state.nodes)} Docker engines") as step:
        started = []
        for node in state.nodes:
            if not dockerd.is_running(layout, node.index, node.dockerd):
                dockerd.stop_dockerd(node.dockerd)  # one left in a deleted namespace
                node.dockerd = dockerd.start_dockerd(layout, node.index)
                save_state(state)
                started.append(node.name)
        for node in state.nodes:
            assert node.dockerd is not None
            dockerd.wait_ready(node.docker_host, node.dockerd)
        step.detail = f"started {', '.join(started)}" if started else "all running"

    with progress.step("Waiting for the API server") as step:
        assert state.server is not None
        api = controlplane.wait_ready(layout, state.server)
        kubeconfig = controlplane.ensure_user_kubeconfig(layout)
        step.detail = f"{layout.api_url}, kubeconfig {kubeconfig}"

    leaders: dict[Component, tuple[ProcessRecord, str]] = {}
    if state.control_plane == SPLIT:
        with progress.step("Starting the scheduler and the controller manager") as step:
            leaders = ensure_split_control_plane(state, api)
            step.detail = ", ".join(f"{c.command} pid {getattr(state, c.attr).pid}"
                                    f"{'' if c in leaders else ' (running)'}" for c in COMPONENTS)

    with progress.step("Loading the lab images into the nodes") as step:
        imported = 0
        for node in state.nodes:
            client = dockerd.docker_client(node.docker_host, timeout=120)
            try:
                imported += sum(1 for _tag, done in ensure_images(client, specs) if done)
            except ImageBuildError as exc:
                raise LabError(f"{node.name}: {exc}") from exc
            finally:
                client.close()
        step.detail = f"{imported} imported" if imported else "already present"

    for node in state.nodes:
        cni_setup.ensure_cni_dirs(layout, node.index)

    reason = agents.agent_unavailable_reason()
    if reason is not None:
        progress.warn(f"the node agents could not start: `skiff agent` is not available ({reason}); "
                      "the lab is up without agents")
        _wait_leaders(api, leaders, progress)
        return
    with progress.step(f"Starting {len(state.nodes)} node agents") as step:
        for node in state.nodes:
            if not agents.is_running(layout, node.index, node.agent):
                agents.stop_agent(node.agent)
                node.agent = agents.start_agent(layout, node.index, state.cni_plugin, opts.resources)
                save_state(state)
        step.detail = ", ".join(f"{n.name} pid {n.agent.pid}" for n in state.nodes if n.agent)
    with progress.step("Waiting for the nodes to be Ready"):
        agents.wait_nodes_ready(api, {n.name: n.agent for n in state.nodes if n.agent}, opts.wait)
    _wait_leaders(api, leaders, progress)


def ensure_server_mode(state: LabState) -> bool:
    """Make what runs match ``state.control_plane``: stop a server started in the other mode (its
    data survives; it is started again in this mode) and, in single mode, any scheduler or controller
    manager left from split mode. True if a server was stopped."""
    if state.control_plane == SINGLE:
        for component in COMPONENTS:
            record = getattr(state, component.attr)
            if record is not None:
                controlplane.stop_component(record)
                setattr(state, component.attr, None)
                save_state(state)
    mode = controlplane.server_mode(state.server)
    if is_alive(state.server) and mode is not None and mode != state.control_plane:
        controlplane.stop_server(state.server)
        state.server = None
        save_state(state)
        return True
    return False


def ensure_split_control_plane(state: LabState, api: KubeApi) -> dict[Component, tuple[ProcessRecord, str]]:
    """Split mode: start the scheduler and the controller manager wherever they are not running
    (one killed -9, say), saving the state after each start. Returns those started, each with the
    holder of its Lease seen before (a dead process's identity), for `controlplane.wait_leaders`."""
    started: dict[Component, tuple[ProcessRecord, str]] = {}
    for component in COMPONENTS:
        if is_alive(getattr(state, component.attr)):
            continue
        before = api.lease_holder(component.lease)
        record = controlplane.start_component(state.layout, component)
        setattr(state, component.attr, record)
        save_state(state)
        started[component] = (record, before)
    return started


def _wait_leaders(api: KubeApi, leaders: dict[Component, tuple[ProcessRecord, str]], progress: Progress) -> None:
    if not leaders:
        return
    with progress.step("Waiting for the scheduler and the controller manager to take their leases") as step:
        controlplane.wait_leaders(api, leaders)
        step.detail = ", ".join(f"{controlplane.LEASE_NAMESPACE}/{c.lease}" for c in leaders)


def summary(state: LabState) -> str:
    layout = state.layout
    lines = [f"Lab {state.name} is up: {len(state.nodes)} nodes on {layout.subnet}, API {layout.api_url}, "
             f"control plane {state.control_plane}",
             f"  export KUBECONFIG={layout.kubeconfig}"]
    for node in state.nodes:
        lines.append(f"  {node.name}: {ipaddress.IPv4Interface(node.ip).ip}  pods {node.pod_cidr}  "
                     f"DOCKER_HOST={node.docker_host}")
    return "\n".join(lines)

"""The ``skiff lab`` command: ``up``, ``down``, ``status``, ``kubeconfig``, ``chaos``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from node_agent.lab.agents import DEFAULT_NODE_MEMORY, READY_TIMEOUT, NodeResources
from node_agent.lab.chaos import add_chaos_parser
from node_agent.lab.cni_setup import PLUGINS
from node_agent.lab.layout import DEFAULT_NAME, LabError, validate_name
from node_agent.lab.progress import Progress


def _lab_name(value: str) -> str:
    try:
        return validate_name(value)
    except LabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", type=_lab_name, default=DEFAULT_NAME,
                   help=f"lab name, [a-z0-9]{{1,6}} (default {DEFAULT_NAME})")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where the lab keeps its state (default /var/lib/skiff-lab/<name>, or where it was created)")


def add_lab_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    lab = subparsers.add_parser("lab", help="a whole cluster on this machine: up, down, status, kubeconfig, chaos",
                                description="A Skiff cluster on one machine: a network namespace and a "
                                            "Docker Engine per node, the control plane on the host.")
    lab.set_defaults(func=lambda _args: (lab.print_help(sys.stderr), 1)[1])
    sub = lab.add_subparsers(dest="lab_command", metavar="COMMAND")

    up = sub.add_parser("up", help="create the lab, or repair a running one")
    _common(up)
    up.add_argument("--nodes", type=int, default=None, help="number of nodes (default 3, or the lab's current count)")
    up.add_argument("--cni-plugin", choices=PLUGINS, default=None,
                    help="skiff (default): Skiff's skiff-bridge plugin; reference: Debian's bridge + host-local")
    up.add_argument("--control-plane", choices=("single", "split"), default=None,
                    help="single (default for a new lab): one `skiff server` runs scheduler and controllers; "
                         "split: `skiff scheduler` and `skiff controller-manager` run as processes of their own "
                         "(default: the lab's current mode)")
    up.add_argument("--node-cpu", default=None, help="CPUs each node advertises (default: the host's)")
    up.add_argument("--node-memory", default=DEFAULT_NODE_MEMORY,
                    help=f"memory each node advertises and its cgroup is held to, e.g. 4Gi (default "
                         f"{DEFAULT_NODE_MEMORY}; 'host': the host's, unlimited)")
    up.add_argument("--node-pids", type=int, default=None,
                    help="tasks each node's cgroup may hold (default: unlimited)")
    up.add_argument("--node-disk", default=None, metavar="SIZE",
                    help="give each new node a filesystem of this size of its own, e.g. 4Gi, for its agent and "
                         "Docker data (default: the host's disk)")
    up.add_argument("--agent-arg", action="append", default=[], metavar="FLAG",
                    help="an extra flag for every node agent, e.g. --agent-arg=--eviction-hard=memory.available<1Gi "
                         "(repeatable)")
    up.add_argument("--wait", type=float, default=READY_TIMEOUT, help="seconds to wait for the nodes to be Ready")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove the lab and everything it put on the host")
    _common(down)
    down.add_argument("--keep-state", action="store_true", help="keep the state dir (logs, data)")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="show what of the lab is running")
    _common(status)
    status.set_defaults(func=cmd_status)

    kubeconfig = sub.add_parser("kubeconfig", help="print the path of the lab's kubeconfig")
    _common(kubeconfig)
    kubeconfig.set_defaults(func=cmd_kubeconfig)

    add_chaos_parser(sub, _common)


def cmd_up(args: argparse.Namespace) -> int:
    from node_agent.lab.up import UpOptions, lab_up, summary

    progress = Progress()
    opts = UpOptions(name=args.name, nodes=args.nodes, state_dir=args.state_dir, cni_plugin=args.cni_plugin,
                     control_plane=args.control_plane, wait=args.wait,
                     resources=NodeResources(cpu=args.node_cpu,
                                             memory=None if args.node_memory == "host" else args.node_memory,
                                             pids=args.node_pids, disk=args.node_disk,
                                             agent_args=tuple(args.agent_arg)))
    try:
        state = lab_up(opts, progress)
    except LabError as exc:
        progress.error(str(exc))
        progress.info(f"`skiff lab up --name {args.name}` again retries; `skiff lab down --name {args.name}` "
                      "removes what was made")
        return 1
    print(summary(state))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from node_agent.lab.down import lab_down

    progress = Progress()
    try:
        report = lab_down(args.name, args.state_dir, progress, keep_state=args.keep_state)
    except LabError as exc:
        progress.error(str(exc))
        return 1
    if report.leftovers:
        progress.error("left behind: " + ", ".join(report.leftovers))
        return 1
    progress.info(f"Lab {args.name} is down")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from node_agent.lab.status import collect_status, render_status

    console = Console(highlight=False)
    try:
        status = collect_status(args.name, args.state_dir)
    except LabError as exc:
        Progress().error(str(exc))
        return 1
    if status is None:
        console.print(f"Lab {args.name} does not exist (no state found)")
        return 1
    render_status(status, console)
    return 0 if status.healthy else 1


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    from node_agent.lab.layout import LabLayout
    from node_agent.lab.state import load_state, resolve_state_dir

    try:
        state = load_state(resolve_state_dir(args.name, args.state_dir))
    except LabError as exc:
        Progress().error(str(exc))
        return 1
    path = state.layout.kubeconfig if state is not None else LabLayout(args.name, Path("."), 0).kubeconfig
    if state is None or not path.exists():
        Progress().error(f"lab {args.name} has no kubeconfig yet: run `skiff lab up --name {args.name}`")
        return 1
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m node_agent.lab.main up ...``: the same commands without the ``skiff`` wrapper."""
    parser = argparse.ArgumentParser(prog="skiff")
    add_lab_parser(parser.add_subparsers(dest="subcommand"))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

"""`skiff agent`: flags onto `AgentSettings`, then the agent's event loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from pathlib import Path

from node_agent.settings import DEFAULT_PAUSE_IMAGE, AgentSettings, CapacitySettings, CniSettings


def add_agent_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("agent", help="run the node agent (kubelet) on this node")
    p.add_argument("--kubeconfig", type=Path, required=True, help="credentials for the API server")
    p.add_argument("--node-name", default=None, help="the Node's name (default: the hostname)")
    p.add_argument("--node-ip", default=None, help="the node's InternalIP (default: the first non-loopback address)")
    p.add_argument("--docker-host", default="unix:///var/run/docker.sock")
    p.add_argument("--data-dir", type=Path, default=Path("/var/lib/skiff/agent"))
    p.add_argument("--pod-cidr", default=None, help="this node's pod CIDR, e.g. 10.244.1.0/24")
    p.add_argument("--cni-conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    p.add_argument("--cni-bin-dir", default="/opt/cni/bin:/usr/lib/cni", help="plugin directories, ':'-separated")
    p.add_argument("--cni-plugin", choices=("skiff", "reference"), default="skiff")
    p.add_argument("--listen-address", default="0.0.0.0", help="address of the agent's HTTPS API (logs, exec)")
    p.add_argument("--listen-port", type=int, default=10250)
    p.add_argument("--cpu", default=None, help="advertised CPU capacity (default: the host's)")
    p.add_argument("--memory", default=None, help="advertised memory capacity, e.g. 2Gi (default: the host's)")
    p.add_argument("--pods", type=int, default=110, help="maximum pods on this node")
    p.add_argument("--system-reserved", default="", help="e.g. cpu=100m,memory=256Mi")
    p.add_argument("--pause-image", default=DEFAULT_PAUSE_IMAGE)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run)


def parse_reserved(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--system-reserved: expected NAME=QUANTITY, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def settings_from_args(args: argparse.Namespace) -> AgentSettings:
    cni = CniSettings(conf_dir=args.cni_conf_dir,
                      bin_dirs=tuple(Path(d) for d in args.cni_bin_dir.split(":") if d),
                      plugin=args.cni_plugin)
    capacity = CapacitySettings(cpu=args.cpu, memory=args.memory, pods=args.pods,
                                system_reserved=parse_reserved(args.system_reserved))
    settings = AgentSettings(
        node_name=(args.node_name or socket.gethostname()).lower(), kubeconfig=args.kubeconfig,
        data_dir=args.data_dir, node_ip=args.node_ip, docker_host=args.docker_host, pod_cidr=args.pod_cidr,
        listen_address=args.listen_address, listen_port=args.listen_port, pause_image=args.pause_image,
        cni=cni, capacity=capacity)
    settings.validate()
    return settings


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "docker", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"skiff agent: {exc}") from None
    from node_agent.agent import run_agent  # heavy imports (docker, psutil) only when running

    asyncio.run(run_agent(settings))
    return 0

"""`skiff agent`: flags onto `AgentSettings`, then the agent's event loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

from node_agent.eviction.flags import add_eviction_flags, eviction_settings
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
    p.add_argument("--node-lease-duration-seconds", type=int, default=40,
                   help="the node Lease's duration; the agent renews it every quarter of it (kubelet's setting)")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="the CIDR holding every node's pod CIDR")
    p.add_argument("--disable-pod-routes", action="store_true",
                   help="do not route other nodes' pod CIDRs via their addresses (host-gw)")
    p.add_argument("--cluster-dns", action="append", default=[],
                   help="cluster DNS server address pods use (repeatable, or comma-separated)")
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain, for pods' search list")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf",
                   help="the node's resolver configuration, for pods with dnsPolicy Default ('' for none)")
    p.add_argument("--proxy-mode", choices=("iptables", "ipvs"), default="iptables",
                   help="how the built-in service proxy programs Services (ipvs: refused where the kernel lacks it)")
    p.add_argument("--disable-proxy", action="store_true", help="run no service proxy (e.g. a kube-proxy runs here)")
    add_eviction_flags(p)
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


def dns_settings(args: argparse.Namespace) -> dict[str, Any]:
    servers = tuple(ip.strip() for value in args.cluster_dns for ip in value.split(",") if ip.strip())
    return {"cluster_dns": servers, "cluster_domain": args.cluster_domain, "resolv_conf": args.resolv_conf}


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
        cni=cni, capacity=capacity, **dns_settings(args),
        cluster_cidr=args.cluster_cidr, pod_routes=not args.disable_pod_routes,
        proxy_mode=args.proxy_mode, proxy=not args.disable_proxy, eviction=eviction_settings(args))
    settings.validate()
    return settings


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "docker", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from node_agent.proxy.ipvs import ProxyModeError, check_proxy_mode

    try:
        settings = settings_from_args(args)
        if settings.proxy:
            check_proxy_mode(settings.proxy_mode)
    except (ValueError, ProxyModeError) as exc:
        raise SystemExit(f"skiff agent: {exc}") from None
    from node_agent.agent import run_agent  # heavy imports (docker, psutil) only when running

    asyncio.run(run_agent(settings))
    return 0

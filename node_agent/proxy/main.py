"""`skiff proxy`: the service proxy alone (kube-proxy's flags), for nodes that run it outside the agent."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from pathlib import Path

from node_agent.proxy.settings import MODES, ProxySettings, parse_duration


def add_proxy_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("proxy", help="run the service proxy (kube-proxy) on this node")
    p.add_argument("--kubeconfig", type=Path, help="credentials for the API server (required unless --cleanup)")
    p.add_argument("--hostname-override", default=None, help="this node's name (default: the hostname)")
    p.add_argument("--proxy-mode", choices=MODES, default="iptables")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16",
                   help="the pod network; traffic to services from outside it is masqueraded ('' for none)")
    p.add_argument("--iptables-min-sync-period", type=parse_duration, default=1.0,
                   help="minimum time between two syncs, e.g. 1s (kube-proxy's default)")
    p.add_argument("--iptables-sync-period", type=parse_duration, default=30.0,
                   help="a sync runs at least this often, e.g. 30s")
    p.add_argument("--cleanup", action="store_true", help="remove the proxy's iptables rules and chains, then exit")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ProxySettings:
    settings = ProxySettings(node_name=(args.hostname_override or socket.gethostname()).lower(),
                             mode=args.proxy_mode, cluster_cidr=args.cluster_cidr or None,
                             min_sync_period=args.iptables_min_sync_period, sync_period=args.iptables_sync_period)
    settings.validate()
    return settings


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    from node_agent.proxy.ipvs import ProxyModeError, check_proxy_mode

    try:
        settings = settings_from_args(args)
        check_proxy_mode(settings.mode)
    except (ValueError, ProxyModeError) as exc:
        raise SystemExit(f"skiff proxy: {exc}") from None
    from node_agent.proxy.applier import IptablesApplier
    from node_agent.proxy.iptables_exec import IptablesError, IptablesExec

    if args.cleanup:
        try:
            removed = IptablesApplier(IptablesExec()).cleanup()
        except IptablesError as exc:
            raise SystemExit(f"skiff proxy --cleanup: {exc}") from None
        logging.getLogger("skiff.proxy").info("removed %d chains and the jumps to them", removed)
        return 0
    if args.kubeconfig is None:
        raise SystemExit("skiff proxy: --kubeconfig is required")
    asyncio.run(_serve(args.kubeconfig, settings))
    return 0


async def _serve(kubeconfig: Path, settings: ProxySettings) -> None:
    from node_agent.proxy.proxier import run_proxy
    from skiff.client import ApiClient, load_kubeconfig

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with ApiClient(load_kubeconfig(str(kubeconfig)), user_agent=f"skiff-proxy/{settings.node_name}") as client:
        proxy = asyncio.create_task(run_proxy(client, settings), name="proxy")
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([proxy, stopped], return_when=asyncio.FIRST_COMPLETED)
        proxy.cancel()
        stopped.cancel()
        await asyncio.gather(proxy, stopped, return_exceptions=True)
        if proxy in done and not proxy.cancelled() and proxy.exception() is not None:
            raise proxy.exception()  # type: ignore[misc]
    # Like kube-proxy, the rules stay when the proxy stops: traffic keeps flowing while it restarts.

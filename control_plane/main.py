"""`skiff server`: the control plane in one process, as k3s runs it: the API server,
the controller manager (`--controllers`), the scheduler (`--disable-scheduler`) and
cluster DNS (`--cluster-dns-port`)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import socket
import ssl
from pathlib import Path

from aiohttp import web

from control_plane.api.auth import TokenAuthenticator, ensure_token_file
from control_plane.api.certs import ensure_pki
from control_plane.api.kubeconfig import write_kubeconfig
from control_plane.api.node_proxy import KUBELET_CLIENT, KubeletClient
from control_plane.api.server import build_app
from control_plane.api.settings import ApiServerSettings
from control_plane.controllers.manager import CONTROLLERS, run_controllers
from control_plane.controllers.settings import ControllerManagerSettings
from control_plane.controllers.settings import add_settings_arguments as add_controller_settings_arguments
from control_plane.controllers.settings import settings_from_args as controller_settings_from_args
from control_plane.controllers.settings import use_settings as use_controller_settings
from control_plane.dns.cluster_dns import ClusterDns
from control_plane.scheduler.main import SCHEDULER_FACTORY
from control_plane.storage.etcd import EtcdStore
from control_plane.storage.interface import Store
from control_plane.storage.sqlite import SQLiteStore
from skiff.client.api import ApiClient
from skiff.client.kubeconfig import load_kubeconfig

log = logging.getLogger("skiff.server")


def add_server_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("server", help="run the control plane (API server)")
    p.add_argument("--data-dir", type=Path, default=Path("/var/lib/skiff/server"),
                   help="state, PKI, tokens and admin.kubeconfig live here")
    p.add_argument("--port", "--secure-port", dest="port", type=int, default=6443)
    p.add_argument("--bind-address", default="0.0.0.0")
    p.add_argument("--advertise-address", default=None,
                   help="address other hosts reach this server on (default: the bind address, or 127.0.0.1)")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12")
    p.add_argument("--service-node-port-range", default="30000-32767")
    p.add_argument("--tls-san", action="append", default=[], help="extra name or IP for the serving certificate")
    p.add_argument("--max-requests-inflight", type=int, default=400)
    p.add_argument("--max-mutating-requests-inflight", type=int, default=200)
    p.add_argument("--controllers", default=",".join(CONTROLLERS),
                   help="comma-separated controllers to run in this process ('' for none)")
    p.add_argument("--disable-scheduler", action="store_true",
                   help="do not run the scheduler in this process (k3s's flag name)")
    p.add_argument("--cluster-dns-port", type=int, default=53,
                   help="serve cluster DNS on this port of the bind address, UDP and TCP (0: no cluster DNS)")
    p.add_argument("--cluster-dns", default="10.96.0.10", help="ClusterIP of the kube-dns Service")
    p.add_argument("--cluster-domain", default="cluster.local", help="the domain cluster DNS serves")
    p.add_argument("--storage", choices=("sqlite", "etcd"), default="sqlite",
                   help="sqlite: embedded in DATA_DIR (one server); etcd: an etcd cluster (several servers)")
    p.add_argument("--etcd-servers", default="", help="etcd members to use, comma-separated http(s)://host:port")
    p.add_argument("--etcd-cafile", default=None, help="CA file that signed etcd's serving certificates")
    p.add_argument("--etcd-certfile", default=None, help="client certificate for etcd (its --client-cert-auth)")
    p.add_argument("--etcd-keyfile", default=None, help="key of --etcd-certfile")
    p.add_argument("--etcd-prefix", default="",
                   help="prepended to every etcd key (keys are /registry/<group>/<resource>/...); clusters "
                        "sharing an etcd each need their own, none a prefix of another's")
    p.add_argument("-v", "--verbose", action="store_true")
    add_controller_settings_arguments(p)  # the in-process controller manager's flags
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace,
                       controllers: ControllerManagerSettings | None = None) -> ApiServerSettings:
    low, _, high = args.service_node_port_range.partition("-")
    advertise = args.advertise_address or (args.bind_address if args.bind_address not in ("0.0.0.0", "::")
                                           else "127.0.0.1")
    return ApiServerSettings(
        data_dir=args.data_dir, bind_address=args.bind_address, secure_port=args.port,
        advertise_address=advertise, service_cidr=ipaddress.IPv4Network(args.service_cluster_ip_range),
        node_port_range=(int(low), int(high)), max_requests_inflight=args.max_requests_inflight,
        max_mutating_requests_inflight=args.max_mutating_requests_inflight, extra_sans=list(args.tls_san),
        cluster_dns_port=args.cluster_dns_port, cluster_dns=args.cluster_dns, cluster_domain=args.cluster_domain,
        storage=args.storage, etcd_servers=[u for u in args.etcd_servers.split(",") if u],
        etcd_cafile=args.etcd_cafile, etcd_certfile=args.etcd_certfile, etcd_keyfile=args.etcd_keyfile,
        etcd_prefix=args.etcd_prefix,
        **({} if controllers is None else {
            "default_not_ready_toleration_seconds": controllers.node_lifecycle.default_not_ready_toleration_seconds,
            "default_unreachable_toleration_seconds":
                controllers.node_lifecycle.default_unreachable_toleration_seconds}))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    controllers = [c for c in args.controllers.split(",") if c]
    unknown = set(controllers) - set(CONTROLLERS)
    if unknown:
        raise SystemExit(f"unknown controllers: {', '.join(sorted(unknown))}; known: {', '.join(CONTROLLERS)}")
    controller_settings = controller_settings_from_args(args)
    use_controller_settings(controller_settings)
    settings = settings_from_args(args, controller_settings)
    try:
        settings.validate()
    except ValueError as exc:
        raise SystemExit(f"skiff server: {exc}") from None
    asyncio.run(serve(settings, controllers, scheduler=not args.disable_scheduler))
    return 0


def open_store(settings: ApiServerSettings) -> Store:
    """The store ``--storage`` names (not started yet)."""
    if settings.storage == "etcd":
        return EtcdStore(settings.etcd_servers, prefix=settings.etcd_prefix, ca_file=settings.etcd_cafile,
                         cert_file=settings.etcd_certfile, key_file=settings.etcd_keyfile,
                         compaction_window=settings.compaction_window)
    return SQLiteStore(str(settings.data_dir / "state.db"), compaction_window=settings.compaction_window)


async def serve(settings: ApiServerSettings, controllers: list[str], scheduler: bool = True) -> None:
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    hosts = ["localhost", "127.0.0.1", socket.gethostname(), "kubernetes", "kubernetes.default",
             "kubernetes.default.svc", f"kubernetes.default.svc.{settings.cluster_domain}",
             settings.kubernetes_service_ip, settings.advertise_address, *settings.extra_sans]
    if settings.bind_address not in ("0.0.0.0", "::"):
        hosts.append(settings.bind_address)
    pki = ensure_pki(data / "pki", hosts)
    token = ensure_token_file(data / "tokens.csv")
    authn = TokenAuthenticator.from_file(data / "tokens.csv")
    store = open_store(settings)
    app = build_app(settings, store, authn)
    app[KUBELET_CLIENT] = KubeletClient.from_pki(data / "pki", pki)  # pods/log, pods/exec to node agents
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    write_kubeconfig(data / "admin.kubeconfig", f"https://{settings.advertise_url_host}",
                     pki.ca_cert.read_bytes(), token)
    site = web.TCPSite(runner, settings.bind_address, settings.secure_port, ssl_context=tls, backlog=1024)
    await site.start()
    log.info("serving on https://%s:%d; admin kubeconfig: %s", settings.bind_address, settings.secure_port,
             data / "admin.kubeconfig")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kubeconfig = data / "admin.kubeconfig"
    async with ApiClient(load_kubeconfig(kubeconfig)) as client:
        components = []
        if controllers:
            components.append(asyncio.create_task(run_controllers(client, controllers), name="controller-manager"))
        if scheduler:
            components.append(asyncio.create_task(SCHEDULER_FACTORY(client).run(), name="scheduler"))
        if settings.cluster_dns_port:
            dns = ClusterDns(client, bind_address=settings.bind_address, port=settings.cluster_dns_port,
                             domain=settings.cluster_domain, nameserver_ips=[settings.cluster_dns])
            components.append(asyncio.create_task(dns.run(), name="cluster-dns"))
        await stop.wait()
        log.info("shutting down")
        for task in components:
            task.cancel()
        await asyncio.gather(*components, return_exceptions=True)
    await runner.cleanup()

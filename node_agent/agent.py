"""`run_agent`: wire the node agent together and run it until SIGTERM/SIGINT.

Start-up order: Docker reachable -> pause image present (built locally if missing) ->
facts -> Node registered -> pod network (conflist + plugin) -> status, lease, events ->
pod informer -> (once listed) the runtime cache, leftover networks, pod workers, relist
and Docker events -> the node API server (logs, exec).

Shutdown stops the agent only: pods keep running while it is away, like kubelet's, and
the next start adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_agent.backoff import CrashBackoff
from node_agent.events import NORMAL, EventRecorder, ObjectRef
from node_agent.eviction.runner import build_eviction_manager, run_eviction
from node_agent.image_puller import ImagePuller
from node_agent.lease import run_lease_loop
from node_agent.node_status import NodeHealth, NodeStatusReporter, render_images
from node_agent.pleg import RuntimeCache, watch_events
from node_agent.pod_kill import Killer
from node_agent.pod_manager import PodManager
from node_agent.pod_sync import PodSyncer, SyncDeps
from node_agent.podnet.runner import run_pod_network
from node_agent.prober_manager import ProberManager
from node_agent.proxy.proxier import run_proxy
from node_agent.proxy.settings import agent_proxy_settings
from node_agent.registration import NodeFacts, gather_facts, register_node, render_capacity
from node_agent.resolv_conf import configurer_for
from node_agent.runtime.cni import (
    CniError,
    CniNetwork,
    install_skiff_plugin,
    start_skiff_cni_daemon,
    write_conflist,
)
from node_agent.runtime.docker_adapter import DockerAdapter, DockerError
from node_agent.sandbox import Sandboxes
from node_agent.settings import DEFAULT_PAUSE_IMAGE, AgentSettings
from skiff.client import ApiClient, ApiClientError, Informer, NotFound, load_kubeconfig

log = logging.getLogger("skiff.agent")

Obj = dict[str, Any]


@dataclass(frozen=True)
class ServerSettings:
    listen_address: str
    listen_port: int
    data_dir: Path
    node_name: str
    node_ip: str


async def wait_for_docker(docker: DockerAdapter, stop: asyncio.Event) -> dict[str, Any]:
    failures = 0
    while not stop.is_set():
        try:
            return await docker.version()
        except DockerError as exc:
            failures += 1
            delay = min(10.0, 0.5 * 2 ** (failures - 1))
            log.warning("docker at %s is not reachable (attempt %d): %s; retrying in %.1fs", docker.base_url,
                        failures, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    raise asyncio.CancelledError


async def ensure_pause_image(docker: DockerAdapter, image: str) -> None:
    if await docker.inspect_image(image) is not None:
        return
    if image != DEFAULT_PAUSE_IMAGE:
        log.error("pause image %s is missing and only %s can be built here; sandboxes will fail until it exists",
                  image, DEFAULT_PAUSE_IMAGE)
        return
    from node_agent.images.build import ensure_images, pause_image_spec

    log.info("pause image %s is missing; building it", image)
    await asyncio.to_thread(ensure_images, docker.api, [pause_image_spec()])


def setup_network(settings: AgentSettings, pod_cidr: str | None, daemon_socket: str | None = None,
                  ) -> CniNetwork | None:
    """Write the conflist for our pod CIDR (and install skiff-bridge, pointed at daemon_socket), then load it."""
    cni = settings.cni
    if pod_cidr:
        if cni.plugin == "skiff":
            install_skiff_plugin(cni.bin_dirs[0])
        settings.cni_ipam_dir.mkdir(parents=True, exist_ok=True)
        write_conflist(cni.conf_dir, "skiff" if cni.plugin == "skiff" else "reference", pod_cidr, cni.bridge,
                       str(settings.cni_ipam_dir), cni.network_name, daemon_socket=daemon_socket)
    try:
        return CniNetwork.load(cni.conf_dir, cni.bin_dirs, settings.cni_cache_dir)
    except CniError as exc:
        log.error("no pod network: %s (give --pod-cidr or set the Node's spec.podCIDR); the node stays NotReady",
                  exc)
        return None


def object_getter(client: ApiClient, plural: str) -> Callable[[str, str], Awaitable[Obj | None]]:
    async def get(namespace: str, name: str) -> Obj | None:
        try:
            return await client.get(plural, name, namespace)
        except NotFound:
            return None
    return get


class Agent:
    """Everything `run_agent` builds, kept together so tests and shutdown can reach it."""

    def __init__(self, settings: AgentSettings, client: ApiClient, docker: DockerAdapter, facts: NodeFacts,
                 network: CniNetwork | None) -> None:
        self.settings = settings
        self.client = client
        self.docker = docker
        self.facts = facts
        self.network = network
        self.recorder = EventRecorder(client, settings.node_name)
        self.cache = RuntimeCache(docker)
        self.sandboxes = Sandboxes(docker, network, settings.data_dir / "sandboxes", settings.pause_image,
                                   facts.node_ip, settings.node_name)
        self.killer = Killer(docker, self.sandboxes, self.recorder, settings.minimum_grace_period)
        get_secret = object_getter(client, "secrets")
        self.puller = ImagePuller(docker, self.recorder, get_secret, initial=settings.image_pull_backoff_initial,
                                  maximum=settings.image_pull_backoff_max)
        self.backoff = CrashBackoff()
        self.probes = ProberManager(docker, self.recorder, lambda uid: self.manager.trigger(uid))
        _, allocatable = render_capacity(settings, facts)
        self.syncer = PodSyncer(SyncDeps(
            docker=docker, sandboxes=self.sandboxes, killer=self.killer, puller=self.puller, recorder=self.recorder,
            probes=self.probes, backoff=self.backoff, get_configmap=object_getter(client, "configmaps"),
            get_secret=get_secret, refresh=self.cache.refresh_pod, pods_dir=settings.pods_dir,
            node_ip=facts.node_ip, node_name=settings.node_name, allocatable=allocatable,
            dns=configurer_for(settings, facts.node_ip)))
        self.manager = PodManager(client, settings, self.cache, self.syncer, self.killer, self.sandboxes,
                                  self.probes, self.backoff, self.puller, facts.node_ip)
        self.reporter = NodeStatusReporter(client, settings, facts, self.health, self.images)
        self.informer = Informer(client, "pods", field_selector=f"spec.nodeName={settings.node_name}")
        self.informer.add_handlers(on_add=self.manager.on_pod, on_update=self.manager.on_pod_update,
                                   on_delete=self.manager.on_pod_delete)
        self.eviction = build_eviction_manager(self)
        self._background: set[asyncio.Task[None]] = set()

    async def health(self) -> NodeHealth:
        runtime = "" if await self.docker.ping() else f"cannot reach docker at {self.docker.base_url}"
        network = "" if self.network is not None else "cni config uninitialized"
        return NodeHealth(runtime_error=runtime, network_error=network, pressure=tuple(self.eviction.conditions))

    async def images(self) -> list[Obj] | None:
        try:
            return render_images(await self.docker.run_blocking(self.docker.api.images))
        except Exception:
            return None

    async def start_pods(self) -> None:
        """Once the informer listed: learn Docker's state, clean leftovers, start every worker."""
        await self.informer.wait_synced()
        while True:
            try:
                await self.cache.relist()
                break
            except DockerError as exc:
                log.warning("listing containers failed: %s; retrying in 1s", exc)
                await asyncio.sleep(1)
        await self.manager.clean_leftover_networks()
        self.manager.mark_synced()
        log.info("pod informer synced: %d pods bound to %s, %d pods with containers in docker",
                 len(self.informer.keys()), self.settings.node_name, len(self.cache.uids()))
        await asyncio.gather(self.manager.relist_loop(),
                             watch_events(self.docker, self.manager.trigger, self._relist_soon))

    def _relist_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.manager.relist_once())
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)

    async def start_server(self) -> Any:
        try:
            from node_agent.server import start_agent_server
        except ImportError:
            log.info("node API server is not available in this build; logs and exec are disabled")
            return None
        s = self.settings
        try:
            return await start_agent_server(
                ServerSettings(s.listen_address, s.listen_port, s.data_dir, s.node_name, self.facts.node_ip),
                self.docker.api, self.client.config.ca_data or b"")
        except OSError as exc:
            log.error("node API server could not listen on %s:%d: %s; logs and exec are disabled",
                      s.listen_address, s.listen_port, exc)
            return None


async def run_agent(settings: AgentSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    docker = DockerAdapter(settings.docker_host, node_name=settings.node_name, workers=settings.docker_workers)
    config = load_kubeconfig(str(settings.kubeconfig))
    try:
        async with ApiClient(config, user_agent=f"skiff-agent/{settings.node_name}") as client:
            await _run(settings, client, docker, stop)
    finally:
        docker.close()
        log.info("agent %s stopped; its pods keep running", settings.node_name)


async def _run(settings: AgentSettings, client: ApiClient, docker: DockerAdapter, stop: asyncio.Event) -> None:
    version = await wait_for_docker(docker, stop)
    log.info("docker %s (API %s) at %s", version.get("Version"), version.get("ApiVersion"), docker.base_url)
    await ensure_pause_image(docker, settings.pause_image)
    facts = await asyncio.to_thread(gather_facts, settings, str(version.get("Version", "")))
    node = await _retry_api("registering the node", lambda: register_node(client, settings, facts), stop)
    pod_cidr = settings.pod_cidr or (node.get("spec") or {}).get("podCIDR")
    # skiff-bridge's calls run in this process (its shim forwards them): ~10 ms of CPU per pod instead of ~0.3 s.
    cni_daemon = start_skiff_cni_daemon(settings.cni_cache_dir) if settings.cni.plugin == "skiff" else None
    network = await asyncio.to_thread(setup_network, settings, pod_cidr,
                                      str(cni_daemon.socket_path) if cni_daemon else None)
    agent = Agent(settings, client, docker, facts, network)
    node_ref = ObjectRef(kind="Node", name=settings.node_name, uid=settings.node_name)
    agent.recorder.record(node_ref, NORMAL, "Starting", "Starting kubelet.")
    node_uid = str(node["metadata"].get("uid", ""))
    tasks = [
        asyncio.create_task(agent.recorder.run(), name="events"),
        asyncio.create_task(run_lease_loop(client, settings, lambda: node_uid), name="lease"),
        asyncio.create_task(agent.reporter.run(), name="node-status"),
        agent.informer.start(),
        asyncio.create_task(agent.start_pods(), name="pods"),
        asyncio.create_task(run_pod_network(client, settings), name="pod-network"),
        asyncio.create_task(run_eviction(agent.eviction, settings.eviction.kernel_memcg_notification), name="eviction"),
        *([asyncio.create_task(run_proxy(client, agent_proxy_settings(settings)), name="proxy")]
          if settings.proxy else []),
    ]
    runner = await agent.start_server()
    log.info("agent %s running (node IP %s, pod CIDR %s)", settings.node_name, facts.node_ip, pod_cidr or "none")
    try:
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopped and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        log.info("agent %s stopping (pods keep running)", settings.node_name)
        await agent.manager.workers.stop()
        await agent.probes.stop_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent.recorder.flush(), 2)
        if runner is not None:
            await runner.cleanup()
        if cni_daemon is not None:
            await asyncio.to_thread(cni_daemon.stop)


async def _retry_api(what: str, call: Callable[[], Awaitable[Obj]], stop: asyncio.Event) -> Obj:
    failures = 0
    while True:
        try:
            return await call()
        except ApiClientError as exc:
            failures += 1
            delay = min(10.0, 0.5 * 2 ** (failures - 1))
            log.warning("%s failed (attempt %d): %s; retrying in %.1fs", what, failures, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                raise asyncio.CancelledError from exc

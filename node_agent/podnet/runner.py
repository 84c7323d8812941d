"""`run_pod_network`: the agent's pod-network task.

Two loops: the host setup (forwarding sysctls and the FORWARD accept chain), re-applied
every minute as kubelet re-checks its own iptables chains, and, unless disabled, the
host-gw route controller fed by a Node informer.
"""

from __future__ import annotations

import asyncio
import logging

from node_agent.podnet.controller import PodRouteController
from node_agent.podnet.forward_rules import ForwardRulesError, ensure_forward_accept
from node_agent.podnet.netlink import NetlinkRouteTable
from node_agent.podnet.sysctls import ensure_forwarding_sysctls
from node_agent.settings import AgentSettings
from skiff.client import ApiClient, Informer

log = logging.getLogger("skiff.agent.podnet")

HOST_SETUP_PERIOD = 60.0  # kubelet's syncNetworkUtil period


def ensure_host_forwarding(cluster_cidr: str) -> tuple[list[str], list[str]]:
    """Sysctls and the FORWARD accept chain of this network namespace: (what changed, what failed)."""
    report = ensure_forwarding_sysctls()
    changed = list(report.changed)
    failed = [f"{key}: {why}" for key, why in report.failed.items()]
    try:
        changed += ensure_forward_accept(cluster_cidr)
    except ForwardRulesError as exc:
        failed.append(str(exc))
    return changed, failed


async def run_host_setup(cluster_cidr: str, period: float = HOST_SETUP_PERIOD) -> None:
    reported: list[str] = []
    while True:
        try:
            changed, failed = await asyncio.to_thread(ensure_host_forwarding, cluster_cidr)
        except Exception as exc:  # a bug or an odd host must not stop the agent: say so and retry
            log.exception("pod network host setup failed")
            changed, failed = [], [f"host setup failed: {exc}"]
        if changed:
            log.info("pod network: set %s", ", ".join(changed))
        if failed != reported:
            for why in failed:
                log.warning("pod network: %s; services and cross-node pod traffic may not work; "
                            "retrying in %.0fs", why, period)
            reported = failed
        await asyncio.sleep(period)


async def run_pod_network(client: ApiClient, settings: AgentSettings) -> None:
    """Run until cancelled; never raises anything else (each loop logs and retries)."""
    host = asyncio.create_task(run_host_setup(settings.cluster_cidr), name="pod-network-host")
    if not settings.pod_routes:
        log.info("pod routes are disabled (--disable-pod-routes): another network plugin routes pod CIDRs")
        try:
            await host
        finally:
            host.cancel()
        return
    informer = Informer(client, "nodes")
    table = NetlinkRouteTable()
    controller = PodRouteController(table, informer.list, settings.node_name, settings.pod_cidr)
    informer.add_handlers(on_add=controller.on_node_add, on_update=controller.on_node_update,
                          on_delete=controller.on_node_delete)
    informer.start()
    try:
        await asyncio.gather(host, controller.run(informer.wait_synced))
    finally:
        host.cancel()
        await informer.stop()
        await asyncio.gather(host, return_exceptions=True)
        await asyncio.to_thread(table.close)

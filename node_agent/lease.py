"""The node's heartbeat: Lease ``kube-node-lease/<node>``, renewed every 10 s.

`renew_lease` is one step (get, create if missing, else bump renewTime); `run_lease_loop`
is the thin endless loop around it: on failure it retries sooner (kubelet retries with
a short backoff capped by the renew interval) and never raises except on cancel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from node_agent.settings import AgentSettings
from skiff.client import AlreadyExists, ApiClient, ApiClientError, Conflict, NotFound

log = logging.getLogger("skiff.agent.lease")

LEASE_NAMESPACE = "kube-node-lease"


def micro_time(ts: float) -> str:
    """metav1.MicroTime: ``2026-11-23T15:04:05.000000Z``."""
    whole = int(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((ts - whole) * 1e6):06d}Z"


def render_lease(node_name: str, node_uid: str, duration: int, now: float) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": node_name, "namespace": LEASE_NAMESPACE}
    if node_uid:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}]
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
        "spec": {"holderIdentity": node_name, "leaseDurationSeconds": duration, "renewTime": micro_time(now)},
    }


async def renew_lease(client: ApiClient, settings: AgentSettings, node_uid: str, now: float) -> dict[str, Any]:
    name = settings.node_name
    wanted = render_lease(name, node_uid, settings.node_lease_duration_seconds, now)
    try:
        lease = await client.get("leases", name, LEASE_NAMESPACE)
    except NotFound:
        try:
            return await client.create("leases", wanted, LEASE_NAMESPACE)
        except AlreadyExists:
            lease = await client.get("leases", name, LEASE_NAMESPACE)
    lease["spec"] = {**(lease.get("spec") or {}), **wanted["spec"]}
    if node_uid and not lease["metadata"].get("ownerReferences"):
        lease["metadata"]["ownerReferences"] = wanted["metadata"]["ownerReferences"]
    return await client.replace("leases", lease, LEASE_NAMESPACE)


async def run_lease_loop(client: ApiClient, settings: AgentSettings, node_uid: Callable[[], str], *,
                         clock: Callable[[], float] = time.time,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Renew forever; a failed renewal is retried after 0.2 s, doubling up to the renew interval."""
    interval = settings.node_lease_renew_interval
    failures = 0
    while True:
        try:
            await renew_lease(client, settings, node_uid(), clock())
            if failures:
                log.info("lease %s/%s renewed again after %d failures", LEASE_NAMESPACE, settings.node_name, failures)
            failures = 0
            delay = interval
        except asyncio.CancelledError:
            raise
        except (ApiClientError, Conflict) as exc:
            failures += 1
            delay = min(interval, 0.2 * 2 ** (failures - 1))
            log.warning("renewing lease %s/%s failed (attempt %d): %s; retrying in %.1fs", LEASE_NAMESPACE,
                        settings.node_name, failures, exc, delay)
        await sleep(delay)

"""The Endpoints controller: an Endpoints object per Service with a selector, listing the
selected pods' addresses, as Kubernetes' endpoint controller does.

``sync(namespace/name)``: a Service that is gone has its Endpoints deleted; one without a
selector (or of type ExternalName) is left alone. Otherwise every selected pod with an IP
that is not finished (nor being deleted, unless publishNotReadyAddresses) is an address,
ready or not (``notReadyAddresses``), for each Service port its targetPort resolves on
(a number, or a named container port); addresses are then packed into subsets by the
ports they share (RepackSubsets). The Endpoints carry the Service's labels plus
``endpointslice.kubernetes.io/skip-mirror``; it is written only when it changed, and
beyond 1000 addresses it is truncated with the ``over-capacity`` annotation.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

from control_plane.controllers.own_writes import OwnWrites
from control_plane.controllers.service_endpoints import (
    NamespaceIndex,
    endpoint_labels,
    endpoint_port,
    find_port,
    is_headless,
    is_managed,
    pod_counts_as_ready,
    pod_ip,
    pod_reference,
    pods_selected,
    publish_not_ready,
    services_selecting,
    should_pod_be_in_endpoints,
    should_set_hostname,
)
from control_plane.controllers.settings import ControllerManagerSettings, current_settings
from control_plane.controllers.workload_pods import meta
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.client.api import ApiClient
from skiff.client.errors import AlreadyExists, Conflict, NotFound
from skiff.client.informer import SharedInformerFactory, object_key

log = logging.getLogger(__name__)

Obj = dict[str, Any]
LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
ANNOTATION_OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
ANNOTATION_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
MAX_CAPACITY = 1000


def _address(pod: Mapping[str, Any], svc: Mapping[str, Any]) -> Obj:
    addr: Obj = {"ip": pod_ip(pod), "targetRef": pod_reference(pod)}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        addr["nodeName"] = node
    if should_set_hostname(pod, svc):
        addr["hostname"] = pod["spec"]["hostname"]
    return addr


def _address_key(addr: Mapping[str, Any]) -> tuple[str, str]:
    return str(addr.get("ip")), str((addr.get("targetRef") or {}).get("uid") or "")


def _port_key(port: Mapping[str, Any]) -> tuple[str, int, str, str]:
    return (str(port.get("name") or ""), int(port.get("port") or 0), str(port.get("protocol") or "TCP"),
            str(port.get("appProtocol") or ""))


def render_subsets(svc: Mapping[str, Any], pods: list[Obj]) -> list[Obj]:
    """The Service's subsets from its selected pods, packed as RepackSubsets packs them:
    addresses offering the same set of ports share a subset."""
    tolerate_unready = publish_not_ready(svc)
    ports = [p for p in (svc.get("spec") or {}).get("ports") or [] if isinstance(p, dict)]
    # address -> (address, ready, ports it offers); a port-less headless Service maps to no ports.
    offers: dict[tuple[str, str], tuple[Obj, bool, set[tuple[str, int, str, str]], list[Obj]]] = {}
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, tolerate_unready):
            continue
        addr = _address(pod, svc)
        ready = pod_counts_as_ready(pod, svc)
        if not ports:
            if is_headless(svc):
                offers.setdefault(_address_key(addr), (addr, ready, set(), []))
            continue
        for svc_port in ports:
            number = find_port(pod, svc_port)
            if number is None:
                log.debug("endpoints: pod %s/%s has no port for service port %s; skipping it for that port",
                          meta(pod).get("namespace"), meta(pod).get("name"), svc_port.get("name") or number)
                continue
            port = endpoint_port(svc_port, number)
            entry = offers.setdefault(_address_key(addr), (addr, ready, set(), []))
            if _port_key(port) not in entry[2]:
                entry[2].add(_port_key(port))
                entry[3].append(port)
    groups: dict[tuple[tuple[str, int, str, str], ...], tuple[list[Obj], list[Obj], list[Obj]]] = {}
    for addr, ready, keys, port_list in offers.values():
        group_key = tuple(sorted(keys))
        ready_list, not_ready_list, group_ports = groups.setdefault(
            group_key, ([], [], sorted(port_list, key=_port_key)))
        (ready_list if ready else not_ready_list).append(addr)
    subsets = []
    for ready_list, not_ready_list, group_ports in groups.values():
        subset: Obj = {}
        if ready_list:
            subset["addresses"] = sorted(ready_list, key=_address_key)
        if not_ready_list:
            subset["notReadyAddresses"] = sorted(not_ready_list, key=_address_key)
        if group_ports:
            subset["ports"] = group_ports
        subsets.append(subset)
    return sorted(subsets, key=_subset_key)


def _subset_key(subset: Mapping[str, Any]) -> tuple[Any, ...]:
    addrs = [_address_key(a) for a in (subset.get("addresses") or []) + (subset.get("notReadyAddresses") or [])]
    return (tuple(_port_key(p) for p in subset.get("ports") or []), tuple(sorted(addrs)))


def _truncate(subsets: list[Obj], limit: int = MAX_CAPACITY) -> tuple[list[Obj], bool]:
    """Keep at most ``limit`` addresses, ready ones first (Kubernetes' truncateEndpoints,
    without its proportional spread: subsets are filled in order)."""
    total = sum(len(s.get("addresses") or []) + len(s.get("notReadyAddresses") or []) for s in subsets)
    if total <= limit:
        return subsets, False
    left = limit
    out = []
    for field_name in ("addresses", "notReadyAddresses"):
        for subset in subsets:
            keep = (subset.get(field_name) or [])[:left]
            left -= len(keep)
            if keep:
                subset[field_name] = keep
            else:
                subset.pop(field_name, None)
    for subset in subsets:
        if subset.get("addresses") or subset.get("notReadyAddresses"):
            out.append(subset)
    return out, True


class EndpointsController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | None = None, workers: int | None = None) -> None:
        self.client = client
        settings = settings or current_settings()
        self.workers = workers or settings.concurrency.concurrent_endpoint_syncs
        self.informers = informers or SharedInformerFactory(client)
        self.queue = WorkQueue()
        self.own = OwnWrites()
        self.services = self.informers.informer_for("services")
        self.pods = self.informers.informer_for("pods")
        self.endpoints = self.informers.informer_for("endpoints")
        self.services_by_ns = NamespaceIndex(self.services)
        self.pods_by_ns = NamespaceIndex(self.pods)
        self.services.add_handlers(on_add=self._enqueue_service, on_update=lambda old, new: self._enqueue_service(new),
                                   on_delete=self._enqueue_service)
        self.pods.add_handlers(on_add=self._on_pod, on_update=self._on_pod_update, on_delete=self._on_pod)
        self.endpoints.add_handlers(on_add=self.own.observe, on_update=lambda old, new: self.own.observe(new),
                                    on_delete=self._on_endpoints_delete)

    def _enqueue_service(self, svc: Obj) -> None:
        self.queue.add(object_key(svc))

    def _on_pod(self, pod: Obj) -> None:
        for key in services_selecting(self.services_by_ns, pod):
            self.queue.add(key)

    def _on_pod_update(self, old: Obj, new: Obj) -> None:
        keys = set(services_selecting(self.services_by_ns, new))
        if (meta(old).get("labels") or {}) != (meta(new).get("labels") or {}):
            keys.update(services_selecting(self.services_by_ns, old))
        for key in keys:
            self.queue.add(key)

    def _on_endpoints_delete(self, ep: Obj) -> None:
        self.own.observe_delete(ep)
        if self.services.get(object_key(ep)) is not None:
            self.queue.add(object_key(ep))  # deleted by someone else: put it back

    async def run(self) -> None:
        self.informers.start()
        await self.informers.wait_for_sync()
        self.services_by_ns.rebuild()
        self.pods_by_ns.rebuild()
        for svc in self.services.list():
            self._enqueue_service(svc)
        try:
            await asyncio.gather(*(run_worker(self.queue, self.sync, "endpoints-controller", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()

    async def sync(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        svc = self.services.get(key)
        current = self.own.view(key, self.endpoints.get(key))
        if svc is None:
            if current is not None:
                try:
                    await self.client.delete("endpoints", name, namespace)
                    log.info("endpoints %s: service gone; deleted", key)
                except NotFound:
                    pass
                self.own.deleted(key)
            return
        if not is_managed(svc):
            return
        subsets, truncated = _truncate(render_subsets(svc, pods_selected(self.pods_by_ns, svc)))
        labels = endpoint_labels(svc, reserved=(LABEL_SKIP_MIRROR,))
        labels[LABEL_SKIP_MIRROR] = "true"
        if current is not None:
            cur_md = meta(current)
            cur_annotations = cur_md.get("annotations") or {}
            if (current.get("subsets") or []) == subsets and (cur_md.get("labels") or {}) == labels \
                    and (ANNOTATION_OVER_CAPACITY in cur_annotations) == truncated:
                return
            desired = copy.deepcopy(current)
        else:
            desired = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": namespace}}
        md = desired["metadata"]
        md["labels"] = labels
        annotations = {k: v for k, v in (md.get("annotations") or {}).items()
                       if k not in (ANNOTATION_OVER_CAPACITY, ANNOTATION_TRIGGER_TIME)}
        if truncated:
            annotations[ANNOTATION_OVER_CAPACITY] = "truncated"
        if annotations:
            md["annotations"] = annotations
        else:
            md.pop("annotations", None)
        desired["subsets"] = subsets
        try:
            if current is None:
                written = await self.client.create("endpoints", desired, namespace)
            else:
                written = await self.client.replace("endpoints", desired, namespace)
        except AlreadyExists:
            raise RuntimeError(f"endpoints {key} exist but are not in the cache yet") from None
        except (Conflict, NotFound):
            raise RuntimeError(f"endpoints {key} changed meanwhile") from None
        self.own.written(written)
        ready = sum(len(s.get("addresses") or []) for s in subsets)
        not_ready = sum(len(s.get("notReadyAddresses") or []) for s in subsets)
        log.info("endpoints %s: %d ready, %d not ready address(es)%s", key, ready, not_ready,
                 " (truncated)" if truncated else "")

"""The EndpointSlice controller: discovery.k8s.io/v1 EndpointSlices for every Service with
a selector, as Kubernetes' endpointslice controller does (IPv4 only).

``sync(namespace/name)``: the selected pods that have an IP and are not finished become
endpoints (terminating ones too, with their conditions: ready = serving and not
terminating, unless publishNotReadyAddresses), grouped by the ports they resolve the
Service's ports to. Each group fills slices of at most 100 endpoints named
``<service>-<random>``, labelled ``kubernetes.io/service-name`` and
``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`` and owned by
the Service. Endpoints stay in the slice they are in when it still fits; slices left
empty are deleted; a Service with no endpoints keeps one empty placeholder slice. A
Service that is gone has its slices deleted (the garbage collector would too).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from control_plane.controllers.own_writes import OwnWrites
from control_plane.controllers.service_endpoints import (
    LABEL_HEADLESS,
    LABEL_SERVICE_NAME,
    NamespaceIndex,
    endpoint_labels,
    endpoint_port,
    find_port,
    is_managed,
    pod_ip,
    pod_reference,
    pods_selected,
    publish_not_ready,
    services_selecting,
    should_pod_be_in_endpoints,
    should_set_hostname,
)
from control_plane.controllers.settings import ControllerManagerSettings, current_settings
from control_plane.controllers.workload_pods import controller_reference, is_ready, meta
from control_plane.controllers.workqueue import WorkQueue, run_worker
from skiff.client.api import ApiClient
from skiff.client.errors import Conflict, NotFound
from skiff.client.informer import SharedInformerFactory, object_key

log = logging.getLogger(__name__)

Obj = dict[str, Any]
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
LABEL_ZONE = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
ADDRESS_TYPE = "IPv4"

PortsKey = tuple[tuple[str, int, str, str], ...]


def ports_key(ports: Sequence[Mapping[str, Any]]) -> PortsKey:
    return tuple(sorted((str(p.get("name") or ""), int(p.get("port") or 0), str(p.get("protocol") or "TCP"),
                         str(p.get("appProtocol") or "")) for p in ports))


def endpoint_key(ep: Mapping[str, Any]) -> str:
    ref = ep.get("targetRef") or {}
    return str(ref.get("uid") or (ep.get("addresses") or [""])[0])


def render_endpoint(pod: Mapping[str, Any], svc: Mapping[str, Any], zone: str | None) -> Obj:
    """podToEndpoint."""
    serving = publish_not_ready(svc) or is_ready(pod)
    terminating = bool(meta(pod).get("deletionTimestamp"))
    ep: Obj = {"addresses": [pod_ip(pod)],
               "conditions": {"ready": publish_not_ready(svc) or (serving and not terminating),
                              "serving": serving, "terminating": terminating}}
    if should_set_hostname(pod, svc):
        ep["hostname"] = pod["spec"]["hostname"]
    ep["targetRef"] = pod_reference(pod)
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
    if zone:
        ep["zone"] = zone
    return ep


def desired_endpoints(svc: Mapping[str, Any], pods: list[Obj],
                      zones: Mapping[str, str]) -> dict[PortsKey, tuple[list[Obj], dict[str, Obj]]]:
    """ports key -> (ports, endpoint key -> endpoint), in pod order."""
    svc_ports = [p for p in (svc.get("spec") or {}).get("ports") or [] if isinstance(p, dict)]
    out: dict[PortsKey, tuple[list[Obj], dict[str, Obj]]] = {}
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, include_terminating=True):
            continue
        ports = []
        for svc_port in svc_ports:
            number = find_port(pod, svc_port)
            if number is not None:
                ports.append(endpoint_port(svc_port, number))
        node = (pod.get("spec") or {}).get("nodeName")
        ep = render_endpoint(pod, svc, zones.get(node) if node else None)
        group = out.setdefault(ports_key(ports), (ports, {}))
        group[1][endpoint_key(ep)] = ep
    return out


class EndpointSliceController:
    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 settings: ControllerManagerSettings | None = None, workers: int | None = None,
                 max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> None:
        self.client = client
        settings = settings or current_settings()
        self.workers = workers or settings.concurrency.concurrent_service_endpoint_syncs
        self.max_per_slice = max_endpoints_per_slice
        self.informers = informers or SharedInformerFactory(client)
        self.queue = WorkQueue()
        self.own = OwnWrites()
        self.services = self.informers.informer_for("services")
        self.pods = self.informers.informer_for("pods")
        self.nodes = self.informers.informer_for("nodes")
        self.slices = self.informers.informer_for("endpointslices")
        self.services_by_ns = NamespaceIndex(self.services)
        self.pods_by_ns = NamespaceIndex(self.pods)
        self.slices_by_ns = NamespaceIndex(self.slices)
        self.services.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                                   on_delete=self._enqueue)
        self.pods.add_handlers(on_add=self._on_pod, on_update=self._on_pod_update, on_delete=self._on_pod)
        self.slices.add_handlers(on_add=self._on_slice, on_update=lambda old, new: self._on_slice(new),
                                 on_delete=self._on_slice_delete)
        self.zones: dict[str, str] = {}  # node name -> topology.kubernetes.io/zone
        self.nodes.add_handlers(on_add=self._on_node, on_update=lambda old, new: self._on_node(new),
                                on_delete=self._on_node_delete)

    # ---- events ------------------------------------------------------------------------

    def _enqueue(self, svc: Obj) -> None:
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

    def _service_of(self, slice_: Obj) -> str | None:
        labels = meta(slice_).get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != CONTROLLER_NAME or not labels.get(LABEL_SERVICE_NAME):
            return None
        return f"{meta(slice_).get('namespace')}/{labels[LABEL_SERVICE_NAME]}"

    def _on_slice(self, slice_: Obj) -> None:
        self.own.observe(slice_)
        key = self._service_of(slice_)
        if key is not None:
            self.queue.add(key)  # perhaps changed by someone else: a sync that finds it right writes nothing

    def _on_slice_delete(self, slice_: Obj) -> None:
        self.own.observe_delete(slice_)
        key = self._service_of(slice_)
        if key is not None:
            self.queue.add(key)

    def _on_node(self, node: Obj) -> None:
        name = str(meta(node).get("name"))
        zone = str((meta(node).get("labels") or {}).get(LABEL_ZONE) or "")
        if self.zones.get(name, "") != zone:
            self.zones[name] = zone
            for svc in self.services.list():  # endpoints on that node carry its zone
                self._enqueue(svc)
        else:
            self.zones.setdefault(name, zone)

    def _on_node_delete(self, node: Obj) -> None:
        self.zones.pop(str(meta(node).get("name")), None)

    # ---- loop --------------------------------------------------------------------------

    async def run(self) -> None:
        self.informers.start()
        await self.informers.wait_for_sync()
        for index in (self.services_by_ns, self.pods_by_ns, self.slices_by_ns):
            index.rebuild()
        self.zones = {str(meta(n).get("name")): str((meta(n).get("labels") or {}).get(LABEL_ZONE) or "")
                      for n in self.nodes.list()}
        for svc in self.services.list():
            self._enqueue(svc)
        try:
            await asyncio.gather(*(run_worker(self.queue, self.sync, "endpointslice-controller", log.warning)
                                   for _ in range(self.workers)))
        finally:
            self.queue.close()

    def managed_slices(self, namespace: str, service: str) -> list[Obj]:
        def ours(s: Obj) -> bool:
            labels = meta(s).get("labels") or {}
            return meta(s).get("namespace") == namespace and labels.get(LABEL_SERVICE_NAME) == service \
                and labels.get(LABEL_MANAGED_BY) == CONTROLLER_NAME
        return sorted(self.own.overlay(self.slices_by_ns.objects(namespace), ours),
                      key=lambda s: str(meta(s).get("name")))

    async def sync(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        svc = self.services.get(key)
        existing = self.managed_slices(namespace, name)
        if svc is None:
            for slice_ in existing:
                await self._delete(slice_)
            return
        if not is_managed(svc):
            return
        wanted = desired_endpoints(svc, pods_selected(self.pods_by_ns, svc), self.zones)
        creates, updates, deletes = self.reconcile(svc, existing, wanted)
        for slice_ in deletes:
            await self._delete(slice_)
        for slice_ in updates:
            try:
                self.own.written(await self.client.replace("endpointslices", slice_, namespace))
            except (Conflict, NotFound):
                raise RuntimeError(f"endpointslice {namespace}/{meta(slice_).get('name')} changed meanwhile") \
                    from None
        for slice_ in creates:
            self.own.written(await self.client.create("endpointslices", slice_, namespace))
        if creates or updates or deletes:
            total = sum(len(eps) for _, eps in wanted.values())
            log.info("endpointslices %s: %d endpoint(s); %d slice(s) created, %d updated, %d deleted", key, total,
                     len(creates), len(updates), len(deletes))

    async def _delete(self, slice_: Obj) -> None:
        md = meta(slice_)
        try:
            await self.client.delete("endpointslices", str(md.get("name")), str(md.get("namespace")),
                                     preconditions={"uid": str(md.get("uid"))} if md.get("uid") else None)
        except (NotFound, Conflict):
            pass
        self.own.deleted(object_key(slice_))

    # ---- reconciling -------------------------------------------------------------------

    def _new_slice(self, svc: Obj, ports: list[Obj], endpoints: list[Obj]) -> Obj:
        md = meta(svc)
        return {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"generateName": f"{md.get('name')}-", "namespace": md.get("namespace"),
                         "labels": self._labels(svc),
                         "ownerReferences": [controller_reference(svc, "v1", "Service")]},
            "addressType": ADDRESS_TYPE, "endpoints": endpoints, "ports": ports,
        }

    @staticmethod
    def _labels(svc: Obj) -> dict[str, str]:
        labels = endpoint_labels(svc, reserved=(LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS))
        labels[LABEL_SERVICE_NAME] = str(meta(svc).get("name"))
        labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
        return labels

    def reconcile(self, svc: Obj, existing: list[Obj],
                  wanted: dict[PortsKey, tuple[list[Obj], dict[str, Obj]]]) -> tuple[list[Obj], list[Obj], list[Obj]]:
        """(slices to create, slices to update, slices to delete) turning ``existing`` into
        ``wanted``: endpoints stay where they are if their slice still has their ports."""
        labels = self._labels(svc)
        creates: list[Obj] = []
        updates: list[Obj] = []
        deletes: list[Obj] = []
        if not wanted:
            # Nothing to serve: one empty placeholder slice says so (Kubernetes keeps one too).
            placeholder = next((s for s in existing if s.get("addressType", ADDRESS_TYPE) == ADDRESS_TYPE
                                and not s.get("endpoints") and not s.get("ports")), None)
            deletes = [s for s in existing if s is not placeholder]
            if placeholder is None:
                creates.append(self._new_slice(svc, [], []))
            elif (meta(placeholder).get("labels") or {}) != labels:
                updated = copy.deepcopy(placeholder)
                updated["metadata"]["labels"] = labels
                updates.append(updated)
            return creates, updates, deletes
        remaining = {k: (ports, dict(eps)) for k, (ports, eps) in wanted.items()}
        kept: dict[PortsKey, list[Obj]] = {}  # slices (copies, updated) that keep serving a port set
        for slice_ in existing:
            pk = ports_key(slice_.get("ports") or [])
            if slice_.get("addressType", ADDRESS_TYPE) != ADDRESS_TYPE or pk not in remaining:
                deletes.append(slice_)
                continue
            still = remaining[pk][1]
            new = copy.deepcopy(slice_)
            new["endpoints"] = [still.pop(endpoint_key(ep)) for ep in slice_.get("endpoints") or []
                                if endpoint_key(ep) in still]
            new["metadata"]["labels"] = labels
            kept.setdefault(pk, []).append(new)
        for pk, (ports, eps) in remaining.items():
            pending = list(eps.values())
            for new in kept.get(pk, []):
                room = self.max_per_slice - len(new["endpoints"])
                if room > 0 and pending:
                    new["endpoints"].extend(pending[:room])
                    pending = pending[room:]
            while pending:
                creates.append(self._new_slice(svc, ports, pending[:self.max_per_slice]))
                pending = pending[self.max_per_slice:]
        by_name = {meta(s).get("name"): s for s in existing}
        for slices in kept.values():
            for new in slices:
                old = by_name[meta(new).get("name")]
                if not new["endpoints"]:
                    deletes.append(old)
                elif new != old:
                    updates.append(new)
        return creates, updates, deletes

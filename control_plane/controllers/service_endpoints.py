"""What the Endpoints and EndpointSlice controllers share: which pods back a Service,
which of their addresses and ports count (pkg/controller/util/endpoint and podutil.FindPort
in Kubernetes), and an index from a pod to the Services that select it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control_plane.controllers.workload_pods import is_ready, is_terminal, meta
from skiff.api.selectors import LabelSelector
from skiff.client.informer import Informer, object_key

Obj = dict[str, Any]

LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_HEADLESS = "service.kubernetes.io/headless"


def selector_of(svc: Mapping[str, Any]) -> dict[str, str] | None:
    """spec.selector, or None for a Service whose endpoints are managed by hand (an empty
    selector too: Kubernetes' omitempty turns ``{}`` into no selector at all)."""
    sel = (svc.get("spec") or {}).get("selector")
    return sel if isinstance(sel, dict) and sel else None


def is_managed(svc: Mapping[str, Any]) -> bool:
    """Services with a selector get endpoints from the controllers; ExternalName ones and
    those without a selector are left alone, as in Kubernetes."""
    spec = svc.get("spec") or {}
    return spec.get("type") != "ExternalName" and selector_of(svc) is not None


def is_headless(svc: Mapping[str, Any]) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def publish_not_ready(svc: Mapping[str, Any]) -> bool:
    return bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))


def pod_ip(pod: Mapping[str, Any]) -> str | None:
    status = pod.get("status") or {}
    if status.get("podIP"):
        return str(status["podIP"])
    for entry in status.get("podIPs") or []:
        if isinstance(entry, dict) and entry.get("ip"):
            return str(entry["ip"])
    return None


def should_pod_be_in_endpoints(pod: Mapping[str, Any], include_terminating: bool) -> bool:
    """endpointutil.ShouldPodBeInEndpoints: not finished, has an IP, and (unless asked
    for) not being deleted."""
    if is_terminal(pod) or not pod_ip(pod):
        return False
    return include_terminating or not meta(pod).get("deletionTimestamp")


def should_set_hostname(pod: Mapping[str, Any], svc: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == meta(svc).get("name") \
        and meta(pod).get("namespace") == meta(svc).get("namespace")


def find_port(pod: Mapping[str, Any], service_port: Mapping[str, Any]) -> int | None:
    """podutil.FindPort: a numeric targetPort as is; a named one looked up among the
    containers' (and restartable init containers') ports of the same protocol."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if not isinstance(target, str) or not target:
        return None
    protocol = service_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or [] if isinstance(c, dict)
                   and c.get("restartPolicy") == "Always"]
    for container in containers:
        for port in (container or {}).get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                value = port.get("containerPort")
                return int(value) if isinstance(value, int) else None
    return None


def endpoint_port(service_port: Mapping[str, Any], number: int) -> Obj:
    port: Obj = {"name": service_port.get("name") or "", "port": number,
                 "protocol": service_port.get("protocol") or "TCP"}
    if service_port.get("appProtocol"):
        port["appProtocol"] = service_port["appProtocol"]
    return port


def pod_reference(pod: Mapping[str, Any]) -> Obj:
    md = meta(pod)
    return {"kind": "Pod", "namespace": md.get("namespace"), "name": md.get("name"), "uid": md.get("uid")}


def endpoint_labels(svc: Mapping[str, Any], reserved: tuple[str, ...]) -> dict[str, str]:
    """The Service's labels on its Endpoints/EndpointSlices, with the headless marker."""
    labels = {k: v for k, v in (meta(svc).get("labels") or {}).items() if k not in reserved}
    if is_headless(svc):
        labels[LABEL_HEADLESS] = ""
    return labels


def pod_counts_as_ready(pod: Mapping[str, Any], svc: Mapping[str, Any]) -> bool:
    return publish_not_ready(svc) or is_ready(pod)


class NamespaceIndex:
    """Keys of an informer's objects per namespace, kept by its handlers."""

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        self._keys: dict[str, set[str]] = {}
        informer.add_handlers(on_add=self._add, on_update=lambda old, new: self._add(new), on_delete=self._remove)

    def _add(self, obj: Obj) -> None:
        self._keys.setdefault(str(meta(obj).get("namespace") or ""), set()).add(object_key(obj))

    def _remove(self, obj: Obj) -> None:
        ns = str(meta(obj).get("namespace") or "")
        keys = self._keys.get(ns)
        if keys is not None:
            keys.discard(object_key(obj))
            if not keys:
                del self._keys[ns]

    def rebuild(self) -> None:
        """From the cache (objects cached before the handlers were registered count too)."""
        self._keys.clear()
        for obj in self.informer.list():
            self._add(obj)

    def objects(self, namespace: str) -> list[Obj]:
        out = []
        for key in sorted(self._keys.get(namespace, ())):
            obj = self.informer.get(key)
            if obj is not None:
                out.append(obj)
        return out


def services_selecting(services: NamespaceIndex, pod: Mapping[str, Any]) -> list[str]:
    """Keys of the managed Services in the pod's namespace whose selector matches it."""
    labels = meta(pod).get("labels") or {}
    out = []
    for svc in services.objects(str(meta(pod).get("namespace") or "")):
        selector = selector_of(svc)
        if selector is not None and is_managed(svc) and LabelSelector.from_map(selector).matches(labels):
            out.append(object_key(svc))
    return out


def pods_selected(pods: NamespaceIndex, svc: Mapping[str, Any]) -> list[Obj]:
    selector = selector_of(svc)
    if selector is None:
        return []
    match = LabelSelector.from_map(selector)
    return [p for p in pods.objects(str(meta(svc).get("namespace") or ""))
            if match.matches(meta(p).get("labels") or {})]

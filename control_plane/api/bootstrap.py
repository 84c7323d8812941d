"""Objects every cluster starts with: the system namespaces, the `kubernetes` Service
(first address of the service range) with Endpoints and an EndpointSlice pointing at
this server (kept current: a restart on a new address or port updates them), and, when
this server runs cluster DNS, the `kube-dns` Service in kube-system at the cluster DNS
address with Endpoints and an EndpointSlice pointing at this server's DNS port.

The kube-dns Service is created right after `kubernetes`, before the API serves, so its
address is never handed to another Service first. It has no selector: its endpoints are
written here (and brought up to date on every start, should the address or the port
change), labelled so that neither the endpoints controllers nor a mirroring controller
touch them. A kube-dns Service that has a selector belongs to someone else's DNS (a
CoreDNS Deployment, say): its endpoints are left alone."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from control_plane.api import errors
from control_plane.api.objects import Objects, WriteOptions
from control_plane.api.settings import ApiServerSettings
from skiff.api.resources import REGISTRY

log = logging.getLogger(__name__)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
KUBE_DNS = "kube-dns"
DNS_NAMESPACE = "kube-system"
LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY_APISERVER = "skiff-apiserver"  # not the endpointslice controller's name: it leaves these alone


async def _ensure(objects: Objects, plural: str, namespace: str | None, obj: dict[str, Any],
                  group: str = "", version: str = "v1") -> None:
    rt = REGISTRY.require(group, version, plural)
    if await objects.store.get(rt.storage_key(namespace, obj["metadata"]["name"])) is not None:
        return
    try:
        await objects.create(rt, namespace, obj, WriteOptions())
        log.info("created %s %s", plural, obj["metadata"]["name"])
    except errors.ApiError as e:
        if e.reason == "AlreadyExists":
            return
        if plural == "namespaces":
            raise  # the server cannot serve without its namespaces
        # e.g. the `kubernetes` Service's address held by another Service: serve on,
        # as kube-apiserver's reconciler does, and say so.
        log.error("could not create %s %s: %s; serving without it", plural, obj["metadata"]["name"], e)


async def _ensure_current(objects: Objects, plural: str, namespace: str, obj: dict[str, Any], fields: tuple[str, ...],
                          group: str = "", version: str = "v1") -> None:
    """Create ``obj``, or bring the existing one's ``fields`` (and labels) up to date."""
    rt = REGISTRY.require(group, version, plural)
    name = obj["metadata"]["name"]
    try:
        current = await objects.get(rt, namespace, name)
    except errors.ApiError as e:
        if e.reason != "NotFound":
            raise
        await _ensure(objects, plural, namespace, obj, group, version)
        return
    labels = {**(current["metadata"].get("labels") or {}), **obj["metadata"].get("labels", {})}
    if all(current.get(f) == obj.get(f) for f in fields) and labels == current["metadata"].get("labels"):
        return
    updated = {**current, **{f: obj[f] for f in fields}}
    updated["metadata"] = {**current["metadata"], "labels": labels}
    try:
        await objects.update(rt, namespace, name, updated, WriteOptions())
        log.info("updated %s %s/%s", plural, namespace, name)
    except errors.ApiError as e:
        log.error("could not update %s %s/%s: %s; serving with it as it is", plural, namespace, name, e)


def kube_dns_service(settings: ApiServerSettings) -> dict[str, Any]:
    return {
        "metadata": {"name": KUBE_DNS, "labels": {"k8s-app": KUBE_DNS, "kubernetes.io/cluster-service": "true",
                                                  "kubernetes.io/name": "SkiffDNS"}},
        "spec": {"clusterIP": settings.cluster_dns, "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": settings.cluster_dns_port},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP",
                            "targetPort": settings.cluster_dns_port}]},
    }


async def ensure_kube_dns_endpoints(objects: Objects, settings: ApiServerSettings) -> None:
    try:
        svc = await objects.get(REGISTRY.require("", "v1", "services"), DNS_NAMESPACE, KUBE_DNS)
    except errors.ApiError:
        return  # not created (logged already)
    if (svc.get("spec") or {}).get("selector"):
        log.info("service %s/%s has a selector: its endpoints belong to that DNS, not to this server",
                 DNS_NAMESPACE, KUBE_DNS)
        return
    port = settings.cluster_dns_port
    await ensure_server_endpoints(objects, DNS_NAMESPACE, KUBE_DNS, settings.advertise_address,
                                  [{"name": "dns", "port": port, "protocol": "UDP"},
                                   {"name": "dns-tcp", "port": port, "protocol": "TCP"}], {"k8s-app": KUBE_DNS})


async def ensure_server_endpoints(objects: Objects, namespace: str, service: str, ip: str,
                                  ports: list[dict[str, Any]], labels: dict[str, str]) -> None:
    """Endpoints and an EndpointSlice of a selector-less Service served by this server
    itself (as kube-apiserver keeps the `kubernetes` ones): consumers of either API
    (kube-proxy reads slices) find it."""
    await _ensure_current(objects, "endpoints", namespace, {
        "metadata": {"name": service, "labels": {**labels, LABEL_SKIP_MIRROR: "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": ports}],
    }, ("subsets",))
    await _ensure_current(objects, "endpointslices", namespace, {
        "metadata": {"name": service, "labels": {**labels, LABEL_SERVICE_NAME: service,
                                                 LABEL_MANAGED_BY: MANAGED_BY_APISERVER}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False}}],
        "ports": ports,
    }, ("addressType", "endpoints", "ports"), group="discovery.k8s.io")


async def ensure_defaults(objects: Objects, settings: ApiServerSettings) -> None:
    for ns in SYSTEM_NAMESPACES:
        await _ensure(objects, "namespaces", None, {"metadata": {"name": ns}})
    await _ensure(objects, "services", "default", {
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": settings.kubernetes_service_ip, "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": settings.secure_port}]},
    })
    if settings.cluster_dns_port:
        await _ensure(objects, "services", DNS_NAMESPACE, kube_dns_service(settings))
    if ipaddress.ip_address(settings.advertise_address).is_loopback:
        # Endpoints may not point at loopback (Kubernetes validation): pods could not use it anyway.
        log.info("advertise address %s is loopback: not publishing kubernetes%s endpoints",
                 settings.advertise_address, " and kube-dns" if settings.cluster_dns_port else "")
        return
    await ensure_server_endpoints(objects, "default", "kubernetes", settings.advertise_address,
                                  [{"name": "https", "port": settings.secure_port, "protocol": "TCP"}], {})
    if settings.cluster_dns_port:
        await ensure_kube_dns_endpoints(objects, settings)

"""Objects every cluster starts with: the system namespaces and the `kubernetes`
Service (first address of the service range) with Endpoints pointing at this server."""

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


async def _ensure(objects: Objects, plural: str, namespace: str | None, obj: dict[str, Any]) -> None:
    rt = REGISTRY.require("", "v1", plural)
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


async def ensure_defaults(objects: Objects, settings: ApiServerSettings) -> None:
    for ns in SYSTEM_NAMESPACES:
        await _ensure(objects, "namespaces", None, {"metadata": {"name": ns}})
    await _ensure(objects, "services", "default", {
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": settings.kubernetes_service_ip, "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": settings.secure_port}]},
    })
    if ipaddress.ip_address(settings.advertise_address).is_loopback:
        # Endpoints may not point at loopback (Kubernetes validation): pods could not use it anyway.
        log.info("advertise address %s is loopback: not publishing kubernetes endpoints",
                 settings.advertise_address)
        return
    await _ensure(objects, "endpoints", "default", {
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": settings.advertise_address}],
                     "ports": [{"name": "https", "port": settings.secure_port, "protocol": "TCP"}]}],
    })

"""The kube-dns objects the API server makes at start (bootstrap), on a real SQLite store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.api.allocators import ServiceAllocators
from control_plane.api.bootstrap import ensure_defaults
from control_plane.api.objects import ListOptions, Objects, WriteOptions
from control_plane.api.settings import ApiServerSettings
from control_plane.storage.sqlite import SQLiteStore
from skiff.api.resources import REGISTRY

SERVICES = REGISTRY.require("", "v1", "services")
ENDPOINTS = REGISTRY.require("", "v1", "endpoints")
SLICES = REGISTRY.require("discovery.k8s.io", "v1", "endpointslices")


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[Objects]:
    store = SQLiteStore(str(tmp_path / "state.db"))
    await store.start()
    try:
        yield Objects(store, ServiceAllocators(store))
    finally:
        await store.close()


def settings(tmp_path: Path, **kw: Any) -> ApiServerSettings:
    return ApiServerSettings(data_dir=tmp_path, advertise_address="10.250.0.1", **kw)


async def kube_dns(objects: Objects) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return (await objects.get(SERVICES, "kube-system", "kube-dns"),
            await objects.get(ENDPOINTS, "kube-system", "kube-dns"),
            await objects.get(SLICES, "kube-system", "kube-dns"))


async def test_kube_dns_service_endpoints_and_slice(objects: Objects, tmp_path: Path) -> None:
    await ensure_defaults(objects, settings(tmp_path))
    svc, eps, slice_ = await kube_dns(objects)
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    assert "selector" not in svc["spec"]
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert [(p["name"], p["port"], p["protocol"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("dns", 53, "UDP", 53), ("dns-tcp", 53, "TCP", 53)]
    assert eps["subsets"] == [{"addresses": [{"ip": "10.250.0.1"}],
                               "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                         {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}]
    assert eps["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"] == "true"
    assert slice_["addressType"] == "IPv4"
    assert slice_["endpoints"] == [{"addresses": ["10.250.0.1"],
                                    "conditions": {"ready": True, "serving": True, "terminating": False}}]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    # Not the endpointslice controller's name: it must leave this slice alone.
    assert slice_["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] != "endpointslice-controller.k8s.io"


async def test_a_restart_with_another_port_updates_the_endpoints(objects: Objects, tmp_path: Path) -> None:
    await ensure_defaults(objects, settings(tmp_path))
    _, eps, slice_ = await kube_dns(objects)
    await ensure_defaults(objects, settings(tmp_path))  # same settings: nothing written
    _, eps_again, slice_again = await kube_dns(objects)
    assert (eps_again["metadata"]["resourceVersion"], slice_again["metadata"]["resourceVersion"]) == (
        eps["metadata"]["resourceVersion"], slice_["metadata"]["resourceVersion"])
    await ensure_defaults(objects, settings(tmp_path, cluster_dns_port=5353))
    _, eps, slice_ = await kube_dns(objects)
    assert {p["port"] for p in eps["subsets"][0]["ports"]} == {5353}
    assert {p["port"] for p in slice_["ports"]} == {5353}


async def test_the_dns_address_is_taken_before_anything_else(objects: Objects, tmp_path: Path) -> None:
    await ensure_defaults(objects, settings(tmp_path, cluster_dns="10.96.0.53"))
    svc, _, _ = await kube_dns(objects)
    assert svc["spec"]["clusterIP"] == "10.96.0.53"
    assert not await objects.allocators._take("/registry/ranges/serviceips/10.96.0.53")


async def test_a_kube_dns_with_a_selector_is_someone_elses(objects: Objects, tmp_path: Path) -> None:
    await ensure_defaults(objects, dataclasses.replace(settings(tmp_path), advertise_address="127.0.0.1"))
    svc = await objects.get(SERVICES, "kube-system", "kube-dns")
    svc["spec"]["selector"] = {"k8s-app": "coredns"}
    await objects.update(SERVICES, "kube-system", "kube-dns", svc, WriteOptions())
    await ensure_defaults(objects, settings(tmp_path))
    assert (await objects.list(ENDPOINTS, "kube-system", ListOptions()))["items"] == []


async def test_no_dns_no_kube_dns(objects: Objects, tmp_path: Path) -> None:
    await ensure_defaults(objects, settings(tmp_path, cluster_dns_port=0))
    assert (await objects.list(SERVICES, "kube-system", ListOptions()))["items"] == []
    assert [s["metadata"]["name"] for s in (await objects.list(SERVICES, "default", ListOptions()))["items"]] == [
        "kubernetes"]


async def test_loopback_advertise_address_publishes_no_endpoints(objects: Objects, tmp_path: Path) -> None:
    await ensure_defaults(objects, dataclasses.replace(settings(tmp_path), advertise_address="127.0.0.1"))
    assert (await objects.get(SERVICES, "kube-system", "kube-dns"))["spec"]["clusterIP"] == "10.96.0.10"
    assert (await objects.list(SLICES, "kube-system", ListOptions()))["items"] == []


async def test_the_kubernetes_service_has_a_slice_too(objects: Objects, tmp_path: Path) -> None:
    await ensure_defaults(objects, settings(tmp_path))
    slice_ = await objects.get(SLICES, "default", "kubernetes")
    assert slice_["endpoints"][0]["addresses"] == ["10.250.0.1"]
    assert slice_["ports"] == [{"name": "https", "port": 6443, "protocol": "TCP"}]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    await ensure_defaults(objects, dataclasses.replace(settings(tmp_path), secure_port=7443,
                                                       advertise_address="10.250.0.2"))
    eps = await objects.get(ENDPOINTS, "default", "kubernetes")
    assert eps["subsets"] == [{"addresses": [{"ip": "10.250.0.2"}],
                               "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}]}]
    assert eps["metadata"]["labels"] == {"endpointslice.kubernetes.io/skip-mirror": "true"}
    slice_ = await objects.get(SLICES, "default", "kubernetes")
    assert (slice_["endpoints"][0]["addresses"], slice_["ports"][0]["port"]) == (["10.250.0.2"], 7443)

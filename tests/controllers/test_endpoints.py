"""Endpoints and EndpointSlices follow the selected pods' readiness, against a real API
server running only these two controllers; the test plays the kubelet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hollow import bind, controller_server, create_node, fresh_namespace, get_or_none, list_items, ok, run_pod

if TYPE_CHECKING:
    from tests.conftest import ApiServer


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with controller_server(request.config, tmp_path_factory.mktemp("endpoints-server"),
                           "endpoints,endpointslice") as srv:
        create_node(srv, "node-a")
        yield srv


@pytest.fixture
def ns(server: ApiServer, request: pytest.FixtureRequest) -> str:
    return fresh_namespace(server, request)


def service(server: ApiServer, ns: str, name: str, selector: dict[str, str] | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": name, "labels": {"tier": "front"}},
                            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"},
                                               {"name": "metrics", "port": 9090, "targetPort": 9090}], **spec}}
    if selector is not None:
        body["spec"]["selector"] = selector
    return ok(server.post(f"/api/v1/namespaces/{ns}/services", body))


def pod(server: ApiServer, ns: str, name: str, labels: dict[str, str], named_port: bool = True) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "busybox"}
    if named_port:
        container["ports"] = [{"name": "http", "containerPort": 8080}]
    created = ok(server.post(f"/api/v1/namespaces/{ns}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [container]}}))
    bind(server, ns, name, "node-a")
    return created


def endpoints(server: ApiServer, ns: str, name: str) -> dict[str, Any] | None:
    return get_or_none(server, f"/api/v1/namespaces/{ns}/endpoints/{name}")


def subsets(server: ApiServer, ns: str, name: str) -> list[dict[str, Any]] | None:
    ep = endpoints(server, ns, name)
    return None if ep is None else ep.get("subsets") or []


def slices(server: ApiServer, ns: str, service_name: str) -> list[dict[str, Any]]:
    return list_items(server, f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
                              f"?labelSelector=kubernetes.io/service-name={service_name}")


def address(ns: str, p: dict[str, Any], ip: str) -> dict[str, Any]:
    return {"ip": ip, "nodeName": "node-a",
            "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}}


def test_endpoints_follow_readiness(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    service(server, ns, "web", {"app": "web"})
    p1 = pod(server, ns, "web-1", {"app": "web"})
    p2 = pod(server, ns, "web-2", {"app": "web"}, named_port=False)  # no "http" port: only metrics
    pod(server, ns, "other", {"app": "other"})
    wait_until(lambda: subsets(server, ns, "web") == [], 10, "empty Endpoints while no pod has an IP")
    ep = endpoints(server, ns, "web")
    assert ep is not None
    assert ep["metadata"]["labels"] == {"tier": "front", "endpointslice.kubernetes.io/skip-mirror": "true"}

    run_pod(server, ns, "web-1", "10.244.0.11", ready=False)
    run_pod(server, ns, "web-2", "10.244.0.12", ready=True)
    both_ports = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}]
    expected = [
        {"notReadyAddresses": [address(ns, p1, "10.244.0.11")], "ports": both_ports},
        {"addresses": [address(ns, p2, "10.244.0.12")], "ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}]},
    ]
    wait_until(lambda: sorted(subsets(server, ns, "web") or [], key=lambda s: len(s["ports"]), reverse=True) == expected,
               10, "web-1 not ready (both ports), web-2 ready (metrics only)")

    run_pod(server, ns, "web-1", "10.244.0.11", ready=True)
    wait_until(lambda: any(s.get("addresses") == [address(ns, p1, "10.244.0.11")] and s["ports"] == both_ports
                           for s in subsets(server, ns, "web") or []), 10, "web-1 to become a ready address")

    ok(server.request("DELETE", f"/api/v1/namespaces/{ns}/pods/web-2"))  # lingers: bound to a node
    wait_until(lambda: len(subsets(server, ns, "web") or []) == 1, 10, "the terminating pod to leave the Endpoints")


def test_endpoint_slices_follow_readiness(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    svc = service(server, ns, "web", {"app": "web"})
    wait_until(lambda: len(slices(server, ns, "web")) == 1 and slices(server, ns, "web")[0]["endpoints"] in ([], None), 10,
               "a placeholder slice while nothing backs the service")
    p1 = pod(server, ns, "web-1", {"app": "web"})
    run_pod(server, ns, "web-1", "10.244.0.11", ready=False)

    def one_endpoint(ready: bool) -> Callable[[], bool]:
        def check() -> bool:
            found = slices(server, ns, "web")
            return len(found) == 1 and [e["conditions"] for e in found[0]["endpoints"] or []] == [
                {"ready": ready, "serving": ready, "terminating": False}]
        return check

    wait_until(one_endpoint(ready=False), 10, "a not-ready endpoint")
    run_pod(server, ns, "web-1", "10.244.0.11", ready=True)
    wait_until(one_endpoint(ready=True), 10, "the endpoint to become ready")
    (es,) = slices(server, ns, "web")
    assert es["metadata"]["name"].startswith("web-")
    assert es["metadata"]["labels"] == {"tier": "front", "kubernetes.io/service-name": "web",
                                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    assert es["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                                  "uid": svc["metadata"]["uid"], "controller": True,
                                                  "blockOwnerDeletion": True}]
    assert es["addressType"] == "IPv4"
    assert sorted(es["ports"], key=lambda p: p["port"]) == [{"name": "http", "port": 8080, "protocol": "TCP"},
                                                            {"name": "metrics", "port": 9090, "protocol": "TCP"}]
    assert es["endpoints"] == [{"addresses": ["10.244.0.11"],
                                "conditions": {"ready": True, "serving": True, "terminating": False},
                                "targetRef": {"kind": "Pod", "namespace": ns, "name": "web-1",
                                              "uid": p1["metadata"]["uid"]},
                                "nodeName": "node-a"}]

    ok(server.request("DELETE", f"/api/v1/namespaces/{ns}/pods/web-1"))  # lingers: bound to a node

    def terminating() -> bool:
        found = slices(server, ns, "web")
        return len(found) == 1 and [e["conditions"] for e in found[0]["endpoints"] or []] == [
            {"ready": False, "serving": True, "terminating": True}]
    wait_until(terminating, 10, "the endpoint to be serving but terminating, not ready")


def test_services_without_selector_are_left_alone_and_deletion_cleans_up(server: ApiServer, ns: str,
                                                                          wait_until: Callable[..., Any]) -> None:
    service(server, ns, "manual", None)
    manual_ep = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
                 "subsets": [{"addresses": [{"ip": "192.168.5.5"}], "ports": [{"port": 80, "protocol": "TCP"}]}]}
    ok(server.post(f"/api/v1/namespaces/{ns}/endpoints", manual_ep))
    service(server, ns, "headless", {"app": "web"}, clusterIP="None")
    wait_until(lambda: endpoints(server, ns, "headless") is not None, 10, "the headless service's Endpoints")
    headless = endpoints(server, ns, "headless")
    assert headless is not None and headless["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    wait_until(lambda: len(slices(server, ns, "headless")) == 1, 10, "the headless service's placeholder slice")
    assert slices(server, ns, "manual") == []
    assert subsets(server, ns, "manual") == manual_ep["subsets"]

    ok(server.request("DELETE", f"/api/v1/namespaces/{ns}/services/headless"))
    wait_until(lambda: endpoints(server, ns, "headless") is None and slices(server, ns, "headless") == [], 10,
               "the deleted service's Endpoints and slices to go")
    assert subsets(server, ns, "manual") == manual_ep["subsets"], "hand-made Endpoints stay untouched"

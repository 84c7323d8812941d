"""Kubernetes API semantics over HTTPS, each as a client would observe it.

generateName; metadata.generation; the status subresource split; dryRun; list
pagination (consistent snapshot, 410 once the snapshot is compacted); field and label
selectors; finalizers and graceful pod deletion; ClusterIP and NodePort allocation
(unique under concurrency, released on delete, never leaked by a dry run); Table
output; discovery, /version, /metrics and which paths are anonymous.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from control_plane.api.auth import TokenAuthenticator, UserInfo
from control_plane.api.server import build_app
from control_plane.api.settings import ApiServerSettings
from control_plane.storage.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tests.conftest import ApiServer, Response

SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
NODE_PORTS = range(30000, 32768)
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def ok(resp: Response, *codes: int) -> Any:
    assert resp.status in (codes or (200, 201)), str(resp)
    return resp.json()


def status_of(resp: Response, code: int, reason: str) -> dict[str, Any]:
    assert resp.status == code, f"expected {code} {reason}, got {resp}"
    body: dict[str, Any] = resp.json()
    assert body["kind"] == "Status" and body["reason"] == reason and body["code"] == code, body
    return body


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if labels:
        md["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


def deployment(name: str, replicas: int = 1, image: str = "nginx:1.25") -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def pod(name: str, node: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    if node:
        spec["nodeName"] = node
    md: dict[str, Any] = {"name": name}
    if labels:
        md["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def service(name: str, svc_type: str = "ClusterIP", cluster_ip: str | None = None,
            node_ports: Sequence[int | None] | None = None) -> dict[str, Any]:
    ports: list[dict[str, Any]] = []
    for i, node_port in enumerate(node_ports or [None]):
        port: dict[str, Any] = {"name": f"p{i}", "port": 80 + i, "targetPort": 8080 + i, "protocol": "TCP"}
        if node_port is not None:
            port["nodePort"] = node_port
        ports.append(port)
    spec: dict[str, Any] = {"type": svc_type, "selector": {"app": name}, "ports": ports}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def names_of(listed: dict[str, Any]) -> list[str]:
    return [o["metadata"]["name"] for o in listed["items"]]


def query(**params: str) -> str:
    return "?" + urllib.parse.urlencode(params)


# ---- metadata ------------------------------------------------------------------


def test_generate_name(api_server: ApiServer, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    body = configmap("")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "gen-"
    made = set()
    for _ in range(10):
        created = ok(api_server.post(path, body), 201)
        name = created["metadata"]["name"]
        assert re.fullmatch(r"gen-[a-z0-9]{5}", name), name
        assert created["metadata"]["generateName"] == "gen-"
        assert ok(api_server.get(f"{path}/{name}"))["metadata"]["uid"] == created["metadata"]["uid"]
        made.add(name)
    assert len(made) == 10
    assert set(names_of(ok(api_server.get(path)))) == made


def test_server_sets_metadata(api_server: ApiServer, namespace: str) -> None:
    body = configmap("meta", k="v")
    body["metadata"].update(uid="client-chosen", resourceVersion="12345", creationTimestamp="2000-01-01T00:00:00Z",
                            generation=99)
    created = ok(api_server.post(f"/api/v1/namespaces/{namespace}/configmaps", body), 201)
    md = created["metadata"]
    assert md["uid"] != "client-chosen" and re.fullmatch(r"[0-9a-f-]{36}", md["uid"]), md
    assert md["creationTimestamp"] != "2000-01-01T00:00:00Z", md
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", md["creationTimestamp"]), md
    assert md["resourceVersion"] != "12345" and md["resourceVersion"].isdigit(), md
    assert md["namespace"] == namespace


def test_generation_bumps_on_spec_changes_only(api_server: ApiServer, namespace: str) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/gen"
    created = ok(api_server.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("gen")), 201)
    assert created["metadata"]["generation"] == 1

    obj = ok(api_server.get(path))
    obj["metadata"]["labels"] = {"team": "a"}
    obj["metadata"]["annotations"] = {"note": "label and annotation changes are not spec changes"}
    updated = ok(api_server.request("PUT", path, obj))
    assert updated["metadata"]["generation"] == 1, "a metadata change bumped generation"
    assert updated["metadata"]["labels"] == {"team": "a"}

    obj = ok(api_server.get(path))
    obj["status"] = {"observedGeneration": 1, "replicas": 1}
    status_written = ok(api_server.request("PUT", f"{path}/status", obj))
    assert status_written["metadata"]["generation"] == 1, "a status write bumped generation"
    assert status_written["status"]["observedGeneration"] == 1

    obj = ok(api_server.get(path))
    obj["spec"]["replicas"] = 3
    updated = ok(api_server.request("PUT", path, obj))
    assert updated["metadata"]["generation"] == 2
    image = ok(api_server.patch(path, {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.26"}]}}}}, content_type="application/strategic-merge-patch+json"))
    assert image["metadata"]["generation"] == 3
    same = ok(api_server.patch(path, {"spec": {"replicas": 3}}))
    assert same["metadata"]["generation"] == 3, "a patch that changes nothing bumped generation"
    relabeled = ok(api_server.patch(path, {"metadata": {"labels": {"team": "b"}}}))
    assert relabeled["metadata"]["generation"] == 3
    assert ok(api_server.get(path))["status"]["observedGeneration"] == 1


def test_status_subresource_split(api_server: ApiServer, namespace: str) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/split"
    ok(api_server.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("split")), 201)
    obj = ok(api_server.get(path))
    obj["status"] = {"replicas": 1, "readyReplicas": 1}
    ok(api_server.request("PUT", f"{path}/status", obj))

    # PUT to the main resource: spec changes, status in the body is ignored.
    obj = ok(api_server.get(path))
    obj["spec"]["replicas"] = 5
    obj["status"] = {"replicas": 99, "readyReplicas": 99}
    main = ok(api_server.request("PUT", path, obj))
    assert main["spec"]["replicas"] == 5
    assert main["status"] == {"replicas": 1, "readyReplicas": 1}, main["status"]

    # PUT to /status: status changes, spec (and labels) in the body are ignored.
    obj = ok(api_server.get(path))
    obj["spec"]["replicas"] = 7
    obj["metadata"]["labels"] = {"sneaky": "yes"}
    obj["status"] = {"replicas": 5, "readyReplicas": 4}
    sub = ok(api_server.request("PUT", f"{path}/status", obj))
    assert sub["spec"]["replicas"] == 5
    assert sub["status"]["readyReplicas"] == 4
    assert "sneaky" not in (sub["metadata"].get("labels") or {})
    stored = ok(api_server.get(path))
    assert stored["spec"]["replicas"] == 5 and stored["status"]["readyReplicas"] == 4

    # The same split through merge patches.
    patched = ok(api_server.patch(path, {"spec": {"replicas": 2}, "status": {"readyReplicas": 0}}))
    assert patched["spec"]["replicas"] == 2 and patched["status"]["readyReplicas"] == 4
    patched = ok(api_server.patch(f"{path}/status", {"spec": {"replicas": 9}, "status": {"readyReplicas": 2}}))
    assert patched["spec"]["replicas"] == 2 and patched["status"]["readyReplicas"] == 2

    # Pods: a status write cannot change the image.
    pods = f"/api/v1/namespaces/{namespace}/pods"
    ok(api_server.post(pods, pod("split-pod")), 201)
    p = ok(api_server.get(f"{pods}/split-pod"))
    p["spec"]["containers"][0]["image"] = "evil:latest"
    p["status"]["phase"] = "Running"
    written = ok(api_server.request("PUT", f"{pods}/split-pod/status", p))
    assert written["spec"]["containers"][0]["image"] == "busybox:1.36"
    assert written["status"]["phase"] == "Running"


def test_dry_run_stores_nothing(api_server: ApiServer, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    created = ok(api_server.post(f"{path}?dryRun=All", configmap("dry", k="v")), 201)
    assert created["metadata"]["name"] == "dry" and created["data"] == {"k": "v"}
    status_of(api_server.get(f"{path}/dry"), 404, "NotFound")
    assert "dry" not in names_of(ok(api_server.get(path)))

    real = ok(api_server.post(path, configmap("real", k="v1")), 201)
    changed = dict(real, data={"k": "v2"})
    dry_update = ok(api_server.request("PUT", f"{path}/real?dryRun=All", changed))
    assert dry_update["data"] == {"k": "v2"}
    dry_patch = ok(api_server.patch(f"{path}/real?dryRun=All", {"data": {"k": "v3"}}))
    assert dry_patch["data"] == {"k": "v3"}
    ok(api_server.delete(f"{path}/real?dryRun=All"), 200)
    stored = ok(api_server.get(f"{path}/real"))
    assert stored["data"] == {"k": "v1"}
    assert stored["metadata"]["resourceVersion"] == real["metadata"]["resourceVersion"]


def test_dry_run_does_not_hold_allocations(api_server: ApiServer, namespace: str) -> None:
    """A dry-run Service create allocates nothing that a real create cannot then take."""
    path = f"/api/v1/namespaces/{namespace}/services"
    dry = ok(api_server.post(f"{path}?dryRun=All", service("dry-svc", "NodePort")), 201)
    ip = dry["spec"]["clusterIP"]
    node_port = dry["spec"]["ports"][0]["nodePort"]
    assert ipaddress.IPv4Address(ip) in SERVICE_CIDR and node_port in NODE_PORTS
    status_of(api_server.get(f"{path}/dry-svc"), 404, "NotFound")
    real = api_server.post(path, service("real-svc", "NodePort", cluster_ip=ip, node_ports=[node_port]))
    assert real.status == 201, f"the dry run kept {ip} / {node_port} allocated: {real}"


# ---- lists ---------------------------------------------------------------------


def test_pagination_is_a_consistent_snapshot(api_server: ApiServer, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    for i in range(25):
        ok(api_server.post(path, configmap(f"cm-{i:02d}", {"parity": "even" if i % 2 == 0 else "odd"}, v="0")),
           201)
    first = ok(api_server.get(path + query(limit="10")))
    assert names_of(first) == [f"cm-{i:02d}" for i in range(10)]
    snapshot_rv = first["metadata"]["resourceVersion"]
    token = first["metadata"]["continue"]
    assert token

    # Writes after the first page: later pages still show the snapshot.
    ok(api_server.post(path, configmap("cm-99", v="late")), 201)
    ok(api_server.patch(f"{path}/cm-20", {"data": {"v": "changed"}}))
    ok(api_server.delete(f"{path}/cm-15"))

    pages = [first]
    while token:
        page = ok(api_server.get(path + query(limit="10", **{"continue": token})))
        assert page["metadata"]["resourceVersion"] == snapshot_rv, "pages of one list came from different revisions"
        pages.append(page)
        token = page["metadata"].get("continue", "")
        assert len(pages) <= 3, "more pages than 25 objects need"
    assert [len(p["items"]) for p in pages] == [10, 10, 5]
    listed = [o for p in pages for o in p["items"]]
    assert [o["metadata"]["name"] for o in listed] == [f"cm-{i:02d}" for i in range(25)]
    by_name = {o["metadata"]["name"]: o for o in listed}
    assert by_name["cm-20"]["data"] == {"v": "0"}
    assert all(int(o["metadata"]["resourceVersion"]) <= int(snapshot_rv) for o in listed)

    now = ok(api_server.get(path))
    assert "cm-99" in names_of(now) and "cm-15" not in names_of(now)
    assert int(now["metadata"]["resourceVersion"]) > int(snapshot_rv)

    # Filtered pages fill up to the limit and together hold every match exactly once.
    seen: list[str] = []
    token = ""
    for _ in range(10):
        params = {"limit": "5", "labelSelector": "parity=even"}
        if token:
            params["continue"] = token
        page = ok(api_server.get(path + query(**params)))
        assert len(page["items"]) <= 5
        seen += names_of(page)
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert seen == [f"cm-{i:02d}" for i in range(0, 25, 2)]


def test_continue_with_resource_version_is_rejected(api_server: ApiServer, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    for i in range(3):
        ok(api_server.post(path, configmap(f"c{i}")), 201)
    first = ok(api_server.get(path + query(limit="1")))
    resp = api_server.get(path + query(limit="1", resourceVersion=first["metadata"]["resourceVersion"],
                                       **{"continue": first["metadata"]["continue"]}))
    assert resp.status in (400, 422), str(resp)


def test_field_selectors(api_server: ApiServer, namespace: str) -> None:
    cms = f"/api/v1/namespaces/{namespace}/configmaps"
    for name in ("alpha", "beta", "gamma"):
        ok(api_server.post(cms, configmap(name)), 201)
    assert names_of(ok(api_server.get(cms + query(fieldSelector="metadata.name=beta")))) == ["beta"]
    assert names_of(ok(api_server.get(cms + query(fieldSelector="metadata.name!=beta")))) == ["alpha", "gamma"]
    assert names_of(ok(api_server.get(cms + query(fieldSelector=f"metadata.namespace={namespace}")))) == [
        "alpha", "beta", "gamma"]

    pods = f"/api/v1/namespaces/{namespace}/pods"
    ok(api_server.post(pods, pod("on-a", "node-a")), 201)
    ok(api_server.post(pods, pod("on-b", "node-b")), 201)
    ok(api_server.post(pods, pod("nowhere")), 201)
    running = ok(api_server.get(f"{pods}/on-b"))
    running["status"]["phase"] = "Running"
    ok(api_server.request("PUT", f"{pods}/on-b/status", running))

    def select(selector: str) -> list[str]:
        return sorted(names_of(ok(api_server.get(pods + query(fieldSelector=selector)))))

    assert select("spec.nodeName=node-a") == ["on-a"]
    assert select("spec.nodeName=") == ["nowhere"]  # what the scheduler watches: unscheduled pods
    assert select("spec.nodeName!=") == ["on-a", "on-b"]
    assert select("status.phase=Running") == ["on-b"]
    assert select("status.phase!=Running") == ["nowhere", "on-a"]
    assert select("status.phase=Pending,spec.nodeName=node-a") == ["on-a"]
    assert select("spec.nodeName=node-b,status.phase=Running") == ["on-b"]
    assert select("spec.nodeName=node-c") == []
    # Across namespaces too, as kubelets list their pods.
    everywhere = ok(api_server.get("/api/v1/pods" + query(fieldSelector="spec.nodeName=node-a")))
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in everywhere["items"]
            if o["metadata"]["namespace"] == namespace] == [(namespace, "on-a")]


def test_set_based_label_selectors(api_server: ApiServer, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    labels = {
        "prod-web": {"env": "prod", "tier": "web"},
        "prod-db": {"env": "prod", "tier": "db"},
        "dev-web": {"env": "dev", "tier": "web"},
        "test-none": {"env": "test"},
        "bare": {},
        "canary": {"env": "prod", "canary": "true"},
    }
    for name, lbls in labels.items():
        ok(api_server.post(path, configmap(name, lbls)), 201)

    cases: dict[str, Callable[[dict[str, str]], bool]] = {
        "env in (prod,dev)": lambda lb: lb.get("env") in ("prod", "dev"),
        "env notin (prod)": lambda lb: lb.get("env") != "prod",  # includes objects without the label
        "tier": lambda lb: "tier" in lb,
        "!tier": lambda lb: "tier" not in lb,
        "env=prod,tier": lambda lb: lb.get("env") == "prod" and "tier" in lb,
        "env!=prod": lambda lb: lb.get("env") != "prod",
        "env==prod,tier notin (db)": lambda lb: lb.get("env") == "prod" and lb.get("tier") != "db",
        "env in (prod),!canary": lambda lb: lb.get("env") == "prod" and "canary" not in lb,
        "tier in (web),env in (dev,test)": lambda lb: lb.get("tier") == "web" and lb.get("env") in ("dev", "test"),
        "env in ()": lambda lb: False,
    }
    for selector, predicate in cases.items():
        resp = api_server.get(path + query(labelSelector=selector))
        if selector == "env in ()":
            assert resp.status in (200, 400), str(resp)
            continue
        got = sorted(names_of(ok(resp)))
        expected = sorted(n for n, lb in labels.items() if predicate(lb))
        assert got == expected, f"labelSelector={selector!r}: got {got}, expected {expected}"


# ---- deletion ------------------------------------------------------------------


def test_finalizers_hold_deletion(api_server: ApiServer, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    ok(api_server.post(path, body), 201)
    deleted = ok(api_server.delete(f"{path}/held"), 200, 202)  # Kubernetes answers 200 here
    assert deleted["metadata"].get("deletionTimestamp"), deleted
    lingering = ok(api_server.get(f"{path}/held"))
    assert lingering["metadata"]["deletionTimestamp"] == deleted["metadata"]["deletionTimestamp"]
    assert lingering["metadata"]["finalizers"] == ["example.com/hold"]
    # Writes other than removing finalizers still work; adding a new finalizer is refused.
    ok(api_server.patch(f"{path}/held", {"data": {"still": "writable"}}))
    resp = api_server.patch(f"{path}/held", {"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}})
    assert resp.status == 422, f"Kubernetes forbids new finalizers once deletion started: {resp}"
    ok(api_server.patch(f"{path}/held", {"metadata": {"finalizers": None}}))
    status_of(api_server.get(f"{path}/held"), 404, "NotFound")


def test_pod_on_a_node_is_deleted_gracefully(api_server: ApiServer, namespace: str) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    ok(api_server.post(pods, pod("graceful", "node-a")), 201)
    deleted = ok(api_server.delete(f"{pods}/graceful"), 200, 202)
    assert deleted["metadata"].get("deletionTimestamp"), deleted
    assert deleted["metadata"].get("deletionGracePeriodSeconds") == 30, deleted
    lingering = ok(api_server.get(f"{pods}/graceful"))
    assert lingering["metadata"]["deletionTimestamp"] == deleted["metadata"]["deletionTimestamp"]
    # A shorter grace period replaces the longer one.
    shorter = ok(api_server.delete(f"{pods}/graceful", body={"gracePeriodSeconds": 10}), 200, 202)
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 10
    # Grace 0 (what the node agent sends once the containers are gone) removes it.
    ok(api_server.delete(f"{pods}/graceful?gracePeriodSeconds=0"), 200)
    status_of(api_server.get(f"{pods}/graceful"), 404, "NotFound")

    # An unscheduled pod has nothing to wait for.
    ok(api_server.post(pods, pod("unscheduled")), 201)
    ok(api_server.delete(f"{pods}/unscheduled"), 200)
    status_of(api_server.get(f"{pods}/unscheduled"), 404, "NotFound")


# ---- allocation ----------------------------------------------------------------


def test_kubernetes_service_has_the_first_address(api_server: ApiServer) -> None:
    svc = ok(api_server.get("/api/v1/namespaces/default/services/kubernetes"))
    assert svc["spec"]["clusterIP"] == "10.96.0.1"
    assert svc["spec"]["clusterIPs"] == ["10.96.0.1"]


def test_cluster_ips_unique_under_concurrency_and_released(api_server: ApiServer, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/services"
    with ThreadPoolExecutor(50) as pool:
        created = list(pool.map(lambda i: api_server.post(path, service(f"svc-{i}")), range(50)))
    ips = []
    for resp in created:
        svc = ok(resp, 201)
        ip = svc["spec"]["clusterIP"]
        assert svc["spec"]["clusterIPs"] == [ip]
        assert ipaddress.IPv4Address(ip) in SERVICE_CIDR, ip
        assert ip not in (str(SERVICE_CIDR.network_address), str(SERVICE_CIDR.broadcast_address), "10.96.0.1")
        ips.append(ip)
    assert len(set(ips)) == 50, f"duplicate ClusterIPs: {sorted(ips)}"
    everywhere = ok(api_server.get("/api/v1/services"))
    all_ips = [o["spec"].get("clusterIP") for o in everywhere["items"] if o["spec"].get("clusterIP") not in
               (None, "", "None")]
    assert len(all_ips) == len(set(all_ips)), "a ClusterIP is held by two services"

    # Taken: an explicit request for an address in use is refused.
    taken = status_of(api_server.post(path, service("dup", cluster_ip=ips[1])), 422, "Invalid")
    assert any(c.get("field", "").startswith("spec.clusterIP") for c in taken["details"]["causes"]), taken
    assert "allocated" in taken["message"]
    out_of_range = status_of(api_server.post(path, service("far", cluster_ip="192.168.0.10")), 422, "Invalid")
    assert "range" in out_of_range["message"]

    # Released on delete: the same address can be asked for again.
    with ThreadPoolExecutor(10) as pool:
        deletes = list(pool.map(lambda i: api_server.delete(f"{path}/svc-{i}"), range(10)))
    for resp in deletes:
        ok(resp, 200)
    for i in range(10):
        again = ok(api_server.post(path, service(f"again-{i}", cluster_ip=ips[i])), 201)
        assert again["spec"]["clusterIP"] == ips[i]

    headless = ok(api_server.post(path, service("headless", cluster_ip="None")), 201)
    assert headless["spec"]["clusterIP"] == "None"


def test_node_ports_unique_and_released(api_server: ApiServer, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/services"
    with ThreadPoolExecutor(20) as pool:
        created = list(pool.map(lambda i: api_server.post(path, service(f"np-{i}", "NodePort", node_ports=[None, None])),
                                range(20)))
    ports: list[int] = []
    for resp in created:
        svc = ok(resp, 201)
        ports += [p["nodePort"] for p in svc["spec"]["ports"]]
    assert all(p in NODE_PORTS for p in ports), ports
    assert len(set(ports)) == 40, f"duplicate NodePorts: {sorted(ports)}"

    taken = status_of(api_server.post(path, service("dup", "NodePort", node_ports=[ports[0]])), 422, "Invalid")
    assert any(c.get("field") == "spec.ports[0].nodePort" for c in taken["details"]["causes"]), taken
    status_of(api_server.post(path, service("low", "NodePort", node_ports=[80])), 422, "Invalid")

    ok(api_server.delete(f"{path}/np-0"), 200)
    again = ok(api_server.post(path, service("again", "NodePort", node_ports=ports[:2])), 201)
    assert [p["nodePort"] for p in again["spec"]["ports"]] == ports[:2]

    # Changing the type to ClusterIP gives the node ports back. Kubernetes (>= 1.20) clears
    # the fields that only make sense for the old type, so a bare type change is valid.
    changed = ok(api_server.patch(f"{path}/np-1", {"spec": {"type": "ClusterIP"}}))
    assert all("nodePort" not in p for p in changed["spec"]["ports"]), changed
    assert "externalTrafficPolicy" not in changed["spec"], changed
    reused = ok(api_server.post(path, service("reused", "NodePort", node_ports=ports[2:4])), 201)
    assert [p["nodePort"] for p in reused["spec"]["ports"]] == ports[2:4]


# ---- output formats and non-resource endpoints ------------------------------------


def test_pod_table(api_server: ApiServer, namespace: str) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    ok(api_server.post(pods, pod("tabled")), 201)
    table = ok(api_server.get(pods, headers={"Accept": TABLE_ACCEPT}))
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1", table
    columns = table["columnDefinitions"]
    assert [c["name"].upper() for c in columns if c.get("priority", 0) == 0] == [
        "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert {"IP", "NODE"} <= {c["name"].upper() for c in columns if c.get("priority") == 1}
    for c in columns:
        assert {"name", "type", "format", "description", "priority"} <= set(c), c
    assert table["metadata"]["resourceVersion"]
    [row] = table["rows"]
    cells = dict(zip((c["name"].upper() for c in columns), row["cells"], strict=True))
    assert cells["NAME"] == "tabled" and cells["READY"] == "0/1" and cells["STATUS"] == "Pending"
    assert str(cells["RESTARTS"]) == "0"
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "tabled"

    single = ok(api_server.get(f"{pods}/tabled", headers={"Accept": TABLE_ACCEPT}))
    assert single["kind"] == "Table" and len(single["rows"]) == 1
    plain = ok(api_server.get(pods))
    assert plain["kind"] == "PodList"


def test_discovery(api_server: ApiServer) -> None:
    api = ok(api_server.get("/api"))
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    assert api["serverAddressByClientCIDRs"], api

    apis = ok(api_server.get("/apis"))
    assert apis["kind"] == "APIGroupList"
    groups = {g["name"]: g for g in apis["groups"]}
    for group in ("apps", "batch", "coordination.k8s.io", "discovery.k8s.io"):
        assert groups[group]["preferredVersion"] == {"groupVersion": f"{group}/v1", "version": "v1"}
        assert {"groupVersion": f"{group}/v1", "version": "v1"} in groups[group]["versions"]

    core = ok(api_server.get("/api/v1"))
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    resources = {r["name"]: r for r in core["resources"]}
    expected = {"pods": ("Pod", True, ["po"]), "services": ("Service", True, ["svc"]),
                "namespaces": ("Namespace", False, ["ns"]), "nodes": ("Node", False, ["no"]),
                "configmaps": ("ConfigMap", True, ["cm"]), "endpoints": ("Endpoints", True, ["ep"]),
                "secrets": ("Secret", True, None), "serviceaccounts": ("ServiceAccount", True, ["sa"]),
                "events": ("Event", True, ["ev"])}
    for name, (kind, namespaced, short) in expected.items():
        r = resources[name]
        assert r["kind"] == kind and r["namespaced"] is namespaced, r
        assert r.get("shortNames") == short, r
        assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(r["verbs"]), r
    for sub in ("pods/status", "pods/binding", "pods/log", "pods/exec", "nodes/status", "services/status"):
        assert sub in resources, sub
    assert resources["pods/binding"]["verbs"] == ["create"]

    apps = ok(api_server.get("/apis/apps/v1"))
    assert apps["groupVersion"] == "apps/v1"
    apps_resources = {r["name"]: r for r in apps["resources"]}
    assert apps_resources["deployments"]["shortNames"] == ["deploy"]
    assert apps_resources["deployments"]["kind"] == "Deployment"
    scale = apps_resources["deployments/scale"]
    assert (scale["kind"], scale.get("group"), scale.get("version")) == ("Scale", "autoscaling", "v1")
    assert {"replicasets", "daemonsets", "deployments/status"} <= set(apps_resources)
    assert ok(api_server.get("/apis/apps"))["kind"] == "APIGroup"
    status_of(api_server.get("/apis/nope.example.com/v1"), 404, "NotFound")


def test_version_is_anonymous(api_server: ApiServer) -> None:
    version = ok(api_server.get("/version", auth=False))
    assert {"major", "minor", "gitVersion", "platform", "goVersion"} <= set(version), version
    assert version["gitVersion"].startswith("v1."), version


def test_metrics(api_server: ApiServer) -> None:
    api_server.get("/api/v1/namespaces")
    resp = api_server.get("/metrics")
    assert resp.status == 200, str(resp)
    assert resp.headers["content-type"].startswith("text/plain"), resp.headers
    assert re.search(r'^apiserver_request_total\{[^}]*code="200"[^}]*\} \d', resp.text, re.M), resp.text[:2000]
    assert re.search(r'^apiserver_request_total\{[^}]*resource="namespaces"', resp.text, re.M), resp.text[:2000]
    status_of(api_server.get("/metrics", auth=False), 401, "Unauthorized")


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz", "/healthz?verbose", "/readyz/ping"])
def test_health_is_anonymous(api_server: ApiServer, path: str) -> None:
    resp = api_server.get(path, auth=False)
    assert resp.status == 200, str(resp)
    assert "ok" in resp.text


@pytest.mark.parametrize("path", ["/api/v1/pods", "/api/v1/namespaces/default/configmaps",
                                  "/apis/apps/v1/deployments", "/api/v1/namespaces/default/services/kubernetes",
                                  "/api/v1/nodes?watch=true"])
def test_resources_need_a_token(api_server: ApiServer, path: str) -> None:
    status_of(api_server.get(path, auth=False), 401, "Unauthorized")


# ---- continue after compaction: an in-process server with a tiny window ----------

WINDOW = 10
TOKEN = "semantics-test-token"


@pytest.fixture
async def small_window(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    """The real app over SQLite keeping ``WINDOW`` revisions, on 127.0.0.1 over plain HTTP
    (the compaction window has no CLI flag)."""
    settings = ApiServerSettings(data_dir=tmp_path, bind_address="127.0.0.1", compaction_window=WINDOW)
    store = SQLiteStore(str(tmp_path / "state.db"), compaction_window=WINDOW)
    authn = TokenAuthenticator({TOKEN: UserInfo("admin", "admin", ("system:masters", "system:authenticated"))})
    runner = web.AppRunner(build_app(settings, store, authn), handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession(f"http://{host}:{port}", headers={"Authorization": f"Bearer {TOKEN}"},
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            yield session
    finally:
        await runner.cleanup()


async def test_continue_token_after_compaction_gets_410(small_window: aiohttp.ClientSession) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    for i in range(25):
        async with small_window.post(path, json=configmap(f"cm-{i:02d}")) as resp:
            assert resp.status == 201, await resp.text()
    async with small_window.get(path, params={"limit": "10"}) as resp:
        first = await resp.json()
    token = first["metadata"]["continue"]
    for v in range(4 * WINDOW):
        async with small_window.put(f"{path}/cm-00", json=configmap("cm-00", v=str(v))) as resp:
            assert resp.status == 200, await resp.text()
    async with small_window.get(path, params={"limit": "10", "continue": token}) as resp:
        body = await resp.json()
        assert resp.status == 410, body
    assert body["kind"] == "Status" and body["code"] == 410 and body["reason"] in ("Expired", "Gone"), body
    assert "continue" in body["message"], body

"""The issue's acceptance for real kubectl: every test runs against kubectl 1.20 (Debian)
and 1.35, over https with the admin token, each in a namespace of its own."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from tests.conftest import ApiServer
    from tests.e2e.conftest import Kubectl

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
DEPLOY_PATH = "/apis/apps/v1/namespaces/{ns}/deployments/web"
SERVICE_PATH = "/api/v1/namespaces/{ns}/services/web"
CONFIGMAP_PATH = "/api/v1/namespaces/{ns}/configmaps/web-config"


def manifest(image: str = "nginx:1.25", debug_env: bool = True) -> str:
    """A Deployment, a Service and a ConfigMap, without namespace (kubectl's -n sets it)."""
    env = [{"name": "MODE", "value": "blue"}] + ([{"name": "DEBUG", "value": "1"}] if debug_env else [])

    def labels() -> dict[str, str]:  # a fresh dict each time, or YAML writes &anchors
        return {"app": "web"}

    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels()},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {"containers": [
                    {"name": "web", "image": image, "ports": [{"containerPort": 80}], "env": env},
                ]},
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": labels(), "ports": [{"port": 80, "targetPort": 80}]},
    }
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"},
                 "data": {"greeting": "hello"}}
    return yaml.safe_dump_all([deployment, service, configmap], sort_keys=False)


def write_manifest(tmp_path: Path, **kw: Any) -> Path:
    path = tmp_path / "web.yaml"
    path.write_text(manifest(**kw))
    return path


def get_json(api_server: ApiServer, path: str) -> dict[str, Any]:
    resp = api_server.get(path)
    assert resp.status == 200, f"GET {path}: {resp}"
    result: dict[str, Any] = resp.json()
    return result


def parse_tables(output: str) -> list[list[list[str]]]:
    """kubectl's tables (several when several kinds are listed, blank-line separated)
    as rows of cells; cells are separated by at least two spaces."""
    tables: list[list[list[str]]] = []
    for block in re.split(r"\n\s*\n", output.strip()):
        rows = [re.split(r"\s{2,}", line.strip()) for line in block.splitlines() if line.strip()]
        if rows:
            tables.append(rows)
    return tables


def apply(kubectl: Kubectl, namespace: str, path: Path) -> str:
    return kubectl.ok("apply", "-n", namespace, "-f", str(path))


@pytest.fixture
def applied(kubectl: Kubectl, namespace: str, tmp_path: Path) -> Path:
    """The manifest, applied once with kubectl; returns its path."""
    path = write_manifest(tmp_path)
    out = apply(kubectl, namespace, path)
    assert "deployment.apps/web created" in out
    assert "service/web created" in out
    assert "configmap/web-config created" in out
    return path


def test_apply_again_changed_is_a_strategic_merge_patch(kubectl: Kubectl, api_server: ApiServer,
                                                         namespace: str, applied: Path, tmp_path: Path) -> None:
    deploy = get_json(api_server, DEPLOY_PATH.format(ns=namespace))
    assert "kubectl.kubernetes.io/last-applied-configuration" in deploy["metadata"]["annotations"]
    assert deploy["metadata"]["generation"] == 1
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.25"
    assert [e["name"] for e in container["env"]] == ["MODE", "DEBUG"]
    cluster_ip = get_json(api_server, SERVICE_PATH.format(ns=namespace))["spec"]["clusterIP"]

    changed = write_manifest(tmp_path, image="nginx:1.26", debug_env=False)
    result = kubectl("apply", "-n", namespace, "-f", str(changed), "-v=6")
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/web configured" in result.stdout
    assert "service/web unchanged" in result.stdout
    assert "configmap/web-config unchanged" in result.stdout
    # kubectl computes the change itself and sends it as a PATCH (-v=6 logs each request;
    # 1.20 as `PATCH https://... 200 OK`, 1.35 as `verb="PATCH" url="https://..." status="200 OK"`).
    log = result.stderr.replace('"', "")
    assert re.search(r"PATCH.{0,10}https://\S+/deployments/web\b[^\n]*200", log), log

    deploy = get_json(api_server, DEPLOY_PATH.format(ns=namespace))
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.26"
    assert container["env"] == [{"name": "MODE", "value": "blue"}], "DEBUG should be removed by $patch: delete"
    assert container["ports"][0]["containerPort"] == 80
    assert deploy["metadata"]["generation"] == 2
    assert get_json(api_server, SERVICE_PATH.format(ns=namespace))["spec"]["clusterIP"] == cluster_ip


def test_get_shows_kubectls_usual_columns(kubectl: Kubectl, namespace: str, applied: Path) -> None:
    out = kubectl.ok("get", "deploy,svc,cm", "-n", namespace)
    tables = {rows[1][0].split("/")[0]: rows for rows in parse_tables(out) if len(rows) > 1}
    assert set(tables) >= {"deployment.apps", "service", "configmap"}, out

    deploy = tables["deployment.apps"]
    assert deploy[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], out
    assert deploy[1][:4] == ["deployment.apps/web", "0/1", "0", "0"], out

    svc = tables["service"]
    assert svc[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], out
    name, svc_type, cluster_ip, external_ip, ports = svc[1][:5]
    assert (name, svc_type, external_ip, ports) == ("service/web", "ClusterIP", "<none>", "80/TCP"), out
    assert ipaddress.ip_address(cluster_ip) in SERVICE_CIDR, out

    cm = tables["configmap"]
    assert cm[0][0] == "NAME" and cm[0][-1] == "AGE", out
    assert cm[1][0] == "configmap/web-config", out


def test_get_watch_sees_a_change(kubectl: Kubectl, api_server: ApiServer, namespace: str, applied: Path) -> None:
    watcher = kubectl.start("get", "cm", "web-config", "-n", namespace, "-w")
    watcher.wait_for_line(lambda line: line.startswith("web-config"), what="the initial row")

    resp = api_server.patch(CONFIGMAP_PATH.format(ns=namespace), {"data": {"greeting": "hi", "extra": "1"}})
    assert resp.status == 200, resp

    def rows() -> int:
        return sum(1 for seen in watcher.stdout_lines if seen.startswith("web-config"))

    watcher.wait_for_line(lambda line: line.startswith("web-config") and rows() >= 2,
                          what="a second row after the change")
    watcher.stop()


def test_describe_deployment(kubectl: Kubectl, namespace: str, applied: Path) -> None:
    out = kubectl.ok("describe", "deployment", "web", "-n", namespace)
    assert re.search(r"^Name:\s+web$", out, re.M), out
    assert re.search(rf"^Namespace:\s+{namespace}$", out, re.M), out
    assert re.search(r"^Selector:\s+app=web$", out, re.M), out
    assert re.search(r"^Replicas:\s+1 desired", out, re.M), out
    assert re.search(r"Image:\s+nginx:1.25", out), out
    assert re.search(r"MODE:\s+blue", out), out


def test_scale(kubectl: Kubectl, api_server: ApiServer, namespace: str, applied: Path) -> None:
    out = kubectl.ok("scale", "deployment", "web", "--replicas=3", "-n", namespace)
    assert "deployment.apps/web scaled" in out
    deploy = get_json(api_server, DEPLOY_PATH.format(ns=namespace))
    assert deploy["spec"]["replicas"] == 3
    scale = get_json(api_server, DEPLOY_PATH.format(ns=namespace) + "/scale")
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)


def set_deployment_status_like_a_controller(api_server: ApiServer, namespace: str) -> None:
    """PUT .../status with a status saying the rollout is complete."""
    path = DEPLOY_PATH.format(ns=namespace)
    deploy = get_json(api_server, path)
    replicas = deploy["spec"].get("replicas", 1)
    now = deploy["metadata"]["creationTimestamp"]
    deploy["status"] = {
        "observedGeneration": deploy["metadata"]["generation"],
        "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": 'ReplicaSet "web" has successfully progressed.', "lastUpdateTime": now,
             "lastTransitionTime": now},
        ],
    }
    resp = api_server.request("PUT", path + "/status", deploy)
    assert resp.status == 200, f"PUT {path}/status: {resp}"


def test_rollout_status_returns_once_the_status_says_done(kubectl: Kubectl, api_server: ApiServer,
                                                          namespace: str, applied: Path) -> None:
    rollout = kubectl.start("rollout", "status", "deployment/web", "-n", namespace, "--timeout=90s")
    rollout.wait_for_line(lambda line: line.startswith("Waiting for"), what="the 'Waiting for ...' line")
    assert rollout.proc.poll() is None, rollout.describe()

    set_deployment_status_like_a_controller(api_server, namespace)
    assert rollout.wait(timeout=30) == 0, rollout.describe()
    assert any("successfully rolled out" in line for line in rollout.stdout_lines), rollout.describe()


def test_delete_f_removes_everything(kubectl: Kubectl, api_server: ApiServer, namespace: str, applied: Path) -> None:
    out = kubectl.ok("delete", "-n", namespace, "-f", str(applied))
    for expected in ('deployment.apps "web" deleted', 'service "web" deleted', 'configmap "web-config" deleted'):
        assert expected in out, out
    # kubectl delete waits until the objects are gone (--wait=true is the default).
    for template in (DEPLOY_PATH, SERVICE_PATH, CONFIGMAP_PATH):
        path = template.format(ns=namespace)
        resp = api_server.get(path)
        assert resp.status == 404, f"GET {path} after delete: {resp}"
        status = resp.json()
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "NotFound", 404)


def test_get_raw_healthz(kubectl: Kubectl) -> None:
    assert kubectl.ok("get", "--raw", "/healthz").strip() == "ok"


def test_get_raw_api(kubectl: Kubectl) -> None:
    doc = json.loads(kubectl.ok("get", "--raw", "/api"))
    assert doc["kind"] == "APIVersions"
    assert "v1" in doc["versions"]


def test_api_resources_lists_short_names(kubectl: Kubectl) -> None:
    out = kubectl.ok("api-resources")
    rows = {cells[0]: cells for cells in (re.split(r"\s+", line.strip()) for line in out.splitlines()) if cells}
    assert rows["NAME"] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], out
    assert rows["pods"] == ["pods", "po", "v1", "true", "Pod"], out
    assert rows["deployments"] == ["deployments", "deploy", "apps/v1", "true", "Deployment"], out
    assert rows["services"] == ["services", "svc", "v1", "true", "Service"], out
    assert rows["namespaces"] == ["namespaces", "ns", "v1", "false", "Namespace"], out

"""`skiff agent` end to end: a real API server, a real dockerd, the agent in its own network namespace.

One node (agent + netns) serves the whole module; each test works in its own namespace.
Every container the tests' pods created is removed at the end (by namespace label), and
the namespace is deleted. Restarting dockerd is not done here (the host's dockerd is
shared); the lab tests cover it with a per-node dockerd.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agent_harness as h
import pytest

pytestmark = pytest.mark.skipif(shutil.which("docker") is None or shutil.which("nsenter") is None
                                or subprocess.run(["docker", "info"], capture_output=True).returncode != 0,
                                reason="needs a running dockerd and nsenter")

APP = "skiff/app:1.0"
USED_NAMESPACES: set[str] = set()


@pytest.fixture(scope="module")
def images() -> None:
    import docker

    from node_agent.images.build import ensure_images

    ensure_images(docker.APIClient())


@pytest.fixture(scope="module")
def node(api_server: Any, images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[h.TestNode]:
    n = h.create_node(tmp_path_factory.mktemp("node"), api_server.port, api_server.kubeconfig,
                      [str(Path(sys.executable).parent / "skiff")],
                      third_octet=200 + uuid.uuid4().int % 50)
    try:
        n.start()
        h.wait_for(lambda: _node_ready(api_server, n.name), 60, f"node {n.name} Ready")
        yield n
    finally:
        tail = n.log_tail(60)
        h.destroy_node(n, USED_NAMESPACES)
        print(f"\nagent log tail:\n{tail}")


@pytest.fixture
def ns(namespace: str) -> str:
    USED_NAMESPACES.add(namespace)
    return namespace


def _node_ready(api: Any, name: str) -> bool:
    resp = api.get(f"/api/v1/nodes/{name}")
    if resp.status != 200:
        return False
    conds = {c["type"]: c["status"] for c in resp.json().get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True"


def make_pod(name: str, node: h.TestNode, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node.name, "containers": containers, "terminationGracePeriodSeconds": 5, **spec}}


def create(api: Any, ns: str, obj: dict[str, Any], plural: str = "pods") -> dict[str, Any]:
    resp = api.post(f"/api/v1/namespaces/{ns}/{plural}", obj)
    assert resp.status == 201, resp
    return resp.json()


def get_pod(api: Any, ns: str, name: str) -> dict[str, Any]:
    resp = api.get(f"/api/v1/namespaces/{ns}/pods/{name}")
    assert resp.status == 200, resp
    return resp.json()


def wait_pod(api: Any, ns: str, name: str, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> Any:
        nonlocal last
        last = get_pod(api, ns, name)
        return last if predicate(last) else None

    try:
        return h.wait_for(check, timeout, what, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {json.dumps(last.get('status'), indent=1)}") from None


def statuses(pod: dict[str, Any], init: bool = False) -> dict[str, dict[str, Any]]:
    key = "initContainerStatuses" if init else "containerStatuses"
    return {s["name"]: s for s in pod.get("status", {}).get(key) or []}


def events(api: Any, ns: str, name: str) -> list[dict[str, Any]]:
    items = api.get(f"/api/v1/namespaces/{ns}/events").json().get("items", [])
    return [e for e in items if e["involvedObject"].get("name") == name]


def reasons(api: Any, ns: str, name: str) -> set[str]:
    return {e["reason"] for e in events(api, ns, name)}


def docker_logs(container_id: str) -> str:
    cid = container_id.removeprefix("docker://")
    out = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
    return out.stdout + out.stderr


def running(pod: dict[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") == "Running"


def all_ready(pod: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return running(pod) and conds.get("Ready") == "True"


# ---- the happy path ----------------------------------------------------------------------


def test_pod_with_init_and_two_containers(api_server: Any, node: h.TestNode, ns: str) -> None:
    create(api_server, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                            "data": {"greeting": "hello-from-configmap"}}, "configmaps")
    create(api_server, ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
                            "data": {"password": base64.b64encode(b"s3cret").decode()}}, "secrets")
    shared = {"name": "www", "mountPath": "/www"}
    pod = make_pod("app", node, [
        {"name": "web", "image": APP, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
         "volumeMounts": [shared],
         "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}},
        {"name": "client", "image": APP, "command": ["sh", "-c",
         "until wget -q -O /www/fetched.txt http://127.0.0.1:8080/index.html; do sleep 0.2; done; "
         "cat /etc/cfg/greeting; echo; cat /etc/sec/password; echo; "
         "echo ENV=$PLAIN/$FROM_CM/$FROM_SECRET/$MY_IP; exec sleep 3600"],
         "env": [{"name": "PLAIN", "value": "plain-value"},
                 {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                 {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                 {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
         "volumeMounts": [shared, {"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"}],
         "readinessProbe": {"exec": {"command": ["cat", "/www/fetched.txt"]}, "periodSeconds": 1}},
    ], initContainers=[{"name": "init", "image": APP, "command": ["sh", "-c", "echo served-by-web > /www/index.html"],
                        "volumeMounts": [shared]}],
        volumes=[{"name": "www", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}},
                 {"name": "sec", "secret": {"secretName": "sec"}}])
    started = time.monotonic()
    create(api_server, ns, pod)
    p = wait_pod(api_server, ns, "app", running, 60, "pod Running")
    print(f"create -> Running: {time.monotonic() - started:.2f}s")
    ip = p["status"]["podIP"]
    assert ip.startswith(node.pod_cidr.rsplit(".", 1)[0] + "."), ip
    assert p["status"]["podIPs"] == [{"ip": ip}]
    assert p["status"]["hostIP"] == node.node_ip
    assert p["status"]["qosClass"] == "BestEffort"
    init = statuses(p, init=True)["init"]
    assert init["state"]["terminated"]["reason"] == "Completed" and init["state"]["terminated"]["exitCode"] == 0
    assert init["ready"] is True

    p = wait_pod(api_server, ns, "app", all_ready, 60, "both containers ready (readiness probes)")
    cs = statuses(p)
    for name in ("web", "client"):
        assert cs[name]["ready"] is True and cs[name]["started"] is True and cs[name]["restartCount"] == 0
        assert "running" in cs[name]["state"]
        assert cs[name]["containerID"].startswith("docker://")
        assert cs[name]["imageID"].startswith("docker://sha256:")
    conds = {c["type"]: c for c in p["status"]["conditions"]}
    assert {k: conds[k]["status"] for k in ("PodScheduled", "Initialized", "ContainersReady", "Ready")} == \
        {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}

    logs = docker_logs(cs["client"]["containerID"])
    assert "hello-from-configmap" in logs and "s3cret" in logs, logs
    assert f"ENV=plain-value/hello-from-configmap/s3cret/{ip}" in logs, logs
    assert {"Scheduled", "Pulled", "Created", "Started"} - {"Scheduled"} <= reasons(api_server, ns, "app")
    started_events = [e for e in events(api_server, ns, "app") if e["reason"] == "Started"]
    assert {e["involvedObject"]["fieldPath"] for e in started_events} == \
        {"spec.initContainers{init}", "spec.containers{web}", "spec.containers{client}"}


def test_readiness_failure_is_reflected(api_server: Any, node: h.TestNode, ns: str) -> None:
    create(api_server, ns, make_pod("unready", node, [
        {"name": "c", "image": APP, "command": ["sleep", "3600"],
         "readinessProbe": {"exec": {"command": ["test", "-e", "/tmp/ready"]}, "periodSeconds": 1}}]))
    p = wait_pod(api_server, ns, "unready", lambda p: running(p) and any(
        c["type"] == "ContainersReady" and c["status"] == "False" for c in p["status"]["conditions"]), 60,
        "Running but not ready")
    ready = {c["type"]: c for c in p["status"]["conditions"]}["Ready"]
    assert ready["reason"] == "ContainersNotReady" and ready["message"] == "containers with unready status: [c]"
    cid = statuses(p)["c"]["containerID"].removeprefix("docker://")
    subprocess.run(["docker", "exec", cid, "touch", "/tmp/ready"], check=True)
    wait_pod(api_server, ns, "unready", all_ready, 30, "Ready after the probe passes")
    h.wait_for(lambda: "Unhealthy" in reasons(api_server, ns, "unready"), 10, "Unhealthy event")


# ---- restarts --------------------------------------------------------------------------


def test_crashing_container_backs_off(api_server: Any, node: h.TestNode, ns: str) -> None:
    create(api_server, ns, make_pod("crash", node, [{"name": "c", "image": APP, "command": ["sh", "-c", "exit 3"]}]))
    seen: list[tuple[int, str]] = []

    def observe(p: dict[str, Any]) -> bool:
        s = statuses(p).get("c") or {}
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            seen.append((s["restartCount"], waiting.get("message", "")))
        return s.get("restartCount", 0) >= 3

    p = wait_pod(api_server, ns, "crash", observe, 90, "three restarts")
    messages = {m.split(" restarting")[0] for _, m in seen}
    assert "back-off 10s" in messages and "back-off 20s" in messages, seen
    assert any(m.endswith(f"container=c pod=crash_{ns}({p['metadata']['uid']})") for _, m in seen), seen
    last = statuses(p)["c"]["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    assert p["status"]["phase"] == "Running"
    assert "BackOff" in reasons(api_server, ns, "crash")


def test_failing_liveness_probe_restarts(api_server: Any, node: h.TestNode, ns: str) -> None:
    create(api_server, ns, make_pod("live", node, [
        {"name": "c", "image": APP, "command": ["sleep", "3600"],
         "livenessProbe": {"exec": {"command": ["test", "-e", "/tmp/alive"]}, "periodSeconds": 1,
                           "failureThreshold": 2}}], terminationGracePeriodSeconds=1))
    p = wait_pod(api_server, ns, "live", lambda p: statuses(p).get("c", {}).get("restartCount", 0) >= 1, 60,
                 "a restart after the liveness probe failed")
    assert statuses(p)["c"]["lastState"]["terminated"]["exitCode"] == 137
    kills = [e for e in events(api_server, ns, "live") if e["reason"] == "Killing"]
    assert any(e["message"] == "Container c failed liveness probe, will be restarted" for e in kills), kills
    assert "Unhealthy" in reasons(api_server, ns, "live")


# ---- deletion ---------------------------------------------------------------------------


def test_graceful_delete_runs_prestop_then_sigterm(api_server: Any, node: h.TestNode, ns: str,
                                                   tmp_path: Path) -> None:
    marker_dir = tmp_path / "marker"
    script = ('trap "echo term >> /out/log; exit 0" TERM; echo started >> /out/log; '
              "while true; do sleep 0.1; done")
    create(api_server, ns, make_pod("grace", node, [
        {"name": "c", "image": APP, "command": ["sh", "-c", script],
         "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /out/log"]}}},
         "volumeMounts": [{"name": "out", "mountPath": "/out"}]}],
        terminationGracePeriodSeconds=20,
        volumes=[{"name": "out", "hostPath": {"path": str(marker_dir), "type": "DirectoryOrCreate"}}]))
    uid = wait_pod(api_server, ns, "grace", running, 60, "Running")["metadata"]["uid"]
    h.wait_for(lambda: (marker_dir / "log").exists(), 10, "the container to start")
    started = time.monotonic()
    assert api_server.delete(f"/api/v1/namespaces/{ns}/pods/grace").status in (200, 202)
    h.wait_for(lambda: api_server.get(f"/api/v1/namespaces/{ns}/pods/grace").status == 404, 30, "pod gone")
    took = time.monotonic() - started
    assert (marker_dir / "log").read_text().split() == ["started", "prestop", "term"]
    assert took < 15, f"a container that exits on SIGTERM must not wait out the grace period ({took:.1f}s)"
    assert not h.managed_containers(namespaces={ns}), "containers left behind"
    assert not (node.root / "data" / "pods" / uid).exists(), "the pod dir is left behind"


def test_sigkill_after_grace_period(api_server: Any, node: h.TestNode, ns: str) -> None:
    create(api_server, ns, make_pod("stubborn", node, [
        {"name": "c", "image": APP, "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]}],
        terminationGracePeriodSeconds=3))
    wait_pod(api_server, ns, "stubborn", running, 60, "Running")
    started = time.monotonic()
    api_server.delete(f"/api/v1/namespaces/{ns}/pods/stubborn")
    h.wait_for(lambda: api_server.get(f"/api/v1/namespaces/{ns}/pods/stubborn").status == 404, 30, "pod gone")
    assert 2.5 < time.monotonic() - started < 15


# ---- agent restart ----------------------------------------------------------------------


def test_agent_kill9_and_restart_adopts_pods(api_server: Any, node: h.TestNode, ns: str) -> None:
    create(api_server, ns, make_pod("steady", node, [
        {"name": "a", "image": APP, "command": ["sleep", "3600"]},
        {"name": "b", "image": APP, "command": ["sleep", "3600"],
         "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]))
    before = wait_pod(api_server, ns, "steady", all_ready, 60, "Ready")
    ids = {n: s["containerID"] for n, s in statuses(before).items()}
    node.kill9()
    node.start()
    time.sleep(0.5)  # let the new agent relist before looking (the checks below poll anyway)
    h.wait_for(lambda: "agent " + node.name + " running" in node.log_path.read_text(), 60, "agent restarted")

    def adopted(p: dict[str, Any]) -> bool:
        cs = statuses(p)
        return all_ready(p) and {n: s["containerID"] for n, s in cs.items()} == ids
    after = wait_pod(api_server, ns, "steady", adopted, 60, "the same containers, Ready")
    assert all(s["restartCount"] == 0 for s in statuses(after).values())
    time.sleep(3)  # a few relists and syncs later, still nothing restarted
    again = get_pod(api_server, ns, "steady")
    assert {n: (s["containerID"], s["restartCount"]) for n, s in statuses(again).items()} == \
        {n: (cid, 0) for n, cid in ids.items()}


# ---- bad input --------------------------------------------------------------------------


def test_bad_input_is_reported_and_other_pods_run(api_server: Any, node: h.TestNode, ns: str) -> None:
    create(api_server, ns, make_pod("never", node, [
        {"name": "c", "image": "skiff/does-not-exist:1.0", "imagePullPolicy": "Never"}]))
    create(api_server, ns, make_pod("nocm", node, [{"name": "c", "image": APP, "command": ["sleep", "3600"],
                                                    "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                                    volumes=[{"name": "v", "configMap": {"name": "missing"}}]))
    create(api_server, ns, make_pod("badhost", node, [{"name": "c", "image": APP, "command": ["sleep", "3600"],
                                                       "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                                    volumes=[{"name": "v", "hostPath": {"path": "/nonexistent/skiff-e2e",
                                                                        "type": "Directory"}}]))
    create(api_server, ns, make_pod("good", node, [{"name": "c", "image": APP, "command": ["sleep", "3600"]}]))

    p = wait_pod(api_server, ns, "never", lambda p: (statuses(p).get("c", {}).get("state", {}).get("waiting") or {})
                 .get("reason") == "ErrImageNeverPull", 60, "ErrImageNeverPull")
    assert statuses(p)["c"]["state"]["waiting"]["message"] == \
        'Container image "skiff/does-not-exist:1.0" is not present with pull policy of Never'
    assert p["status"]["phase"] == "Pending"
    h.wait_for(lambda: "ErrImageNeverPull" in reasons(api_server, ns, "never"), 10, "ErrImageNeverPull event")

    for name, needle in (("nocm", 'configmap "missing" not found'), ("badhost", "/nonexistent/skiff-e2e")):
        def failed_mount(name: str = name, needle: str = needle) -> bool:
            return any(e["reason"] == "FailedMount" and needle in e["message"] and e["type"] == "Warning"
                       for e in events(api_server, ns, name))
        h.wait_for(failed_mount, 30, f"FailedMount for {name}")
        p = get_pod(api_server, ns, name)
        assert p["status"]["phase"] == "Pending"
        assert statuses(p)["c"]["state"]["waiting"]["reason"] == "ContainerCreating"

    wait_pod(api_server, ns, "good", running, 60, "the good pod Running")


def test_orphan_containers_are_removed(api_server: Any, node: h.TestNode, ns: str) -> None:
    create(api_server, ns, make_pod("orphan", node, [{"name": "c", "image": APP, "command": ["sleep", "3600"]}]))
    p = wait_pod(api_server, ns, "orphan", running, 60, "Running")
    # Force-delete: the API forgets the pod at once; the agent must still clean up.
    resp = api_server.request("DELETE", f"/api/v1/namespaces/{ns}/pods/orphan",
                              {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    assert resp.status == 200, resp
    h.wait_for(lambda: not h.managed_containers(namespaces={ns}), 30, "orphan containers removed")
    # The pod dir and the sandbox record go right after the containers: wait, don't race.
    h.wait_for(lambda: not (node.root / "data" / "pods" / p["metadata"]["uid"]).exists(), 30, "pod dir removed")
    h.wait_for(lambda: not list((node.root / "data" / "sandboxes").glob("*.json")), 30, "sandbox records removed")


@pytest.mark.skip(reason="restarting the host's shared dockerd would disturb everything else on it; "
                         "the lab test restarts a node's own dockerd instead")
def test_dockerd_restart() -> None:
    pass


# ---- the reference CNI plugins --------------------------------------------------------------


@pytest.fixture
def reference_node(api_server: Any, images: None, tmp_path: Path) -> Iterator[h.TestNode]:
    if not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("containernetworking-plugins are not installed")
    n = h.create_node(tmp_path / "ref-node", api_server.port, api_server.kubeconfig,
                      [str(Path(sys.executable).parent / "skiff")], third_octet=200 + uuid.uuid4().int % 50,
                      cni_plugin="reference")
    try:
        n.start()
        h.wait_for(lambda: _node_ready(api_server, n.name), 60, f"node {n.name} Ready")
        yield n
    finally:
        h.destroy_node(n, USED_NAMESPACES)


def test_reference_bridge_and_host_local(api_server: Any, reference_node: h.TestNode, ns: str) -> None:
    node = reference_node
    for name in ("r1", "r2"):
        create(api_server, ns, make_pod(name, node, [{"name": "c", "image": APP, "command": ["sleep", "3600"]}]))
    ips = [wait_pod(api_server, ns, n, running, 60, f"{n} Running")["status"]["podIP"] for n in ("r1", "r2")]
    assert len(set(ips)) == 2 and all(ip.startswith(node.pod_cidr.rsplit(".", 1)[0] + ".") for ip in ips)
    ipam = node.root / "data" / "cni-ipam" / "skiff"
    assert sorted(p.name for p in ipam.iterdir() if p.name[0].isdigit()) == sorted(ips)
    for name in ("r1", "r2"):
        api_server.delete(f"/api/v1/namespaces/{ns}/pods/{name}")
    h.wait_for(lambda: not h.managed_containers(namespaces={ns}), 60, "containers removed")
    assert not [p.name for p in ipam.iterdir() if p.name[0].isdigit()], "leaked IP files"

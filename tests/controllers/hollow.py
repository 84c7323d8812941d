"""Test helpers for controller tests against a real ``skiff server``: hollow Nodes (Node
objects with no agent behind them), the kubelet's part played by hand (binding, status
patches, confirming deletions) and small typed wrappers over the raw HTTP calls."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.conftest import ApiServer

Obj = dict[str, Any]
ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _root_conftest(config: pytest.Config) -> ModuleType:
    """The root conftest as pytest loaded it, so the servers started here are the ones
    whose logs pytest attaches to failing tests."""
    for plugin in config.pluginmanager.get_plugins():
        if isinstance(plugin, ModuleType) and Path(getattr(plugin, "__file__", None) or "").resolve() == ROOT_CONFTEST:
            return plugin
    raise RuntimeError(f"{ROOT_CONFTEST} is not loaded")


@contextlib.contextmanager
def controller_server(config: pytest.Config, base: Path, controllers: str) -> Iterator[ApiServer]:
    """A ``skiff server`` running only ``controllers`` (one per test module: startup is
    the slow part); tests share it, each in a namespace of its own."""
    conftest = _root_conftest(config)
    server: ApiServer = conftest.start_server(base, extra_args=("--controllers", controllers))
    try:
        yield server
    finally:
        server.stop()
        if server in conftest._LIVE:
            conftest._LIVE.remove(server)


def fresh_namespace(server: ApiServer, request: pytest.FixtureRequest) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-")
    return create_namespace(server, f"{stem or 't'}-{uuid.uuid4().hex[:6]}")


def rfc3339(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


def ok(resp: Any, *codes: int) -> Obj:
    assert resp.status in (codes or (200, 201)), resp
    body: Obj = resp.json()
    return body


def create_namespace(server: ApiServer, name: str) -> str:
    ok(server.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


def create_node(server: ApiServer, name: str, labels: dict[str, str] | None = None,
                taints: list[Obj] | None = None, ready: bool = True) -> Obj:
    body: Obj = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady",
                            "lastHeartbeatTime": rfc3339(), "lastTransitionTime": rfc3339()}],
        },
    }
    return ok(server.post("/api/v1/nodes", body))


def list_items(server: ApiServer, path: str) -> list[Obj]:
    items: list[Obj] = ok(server.get(path))["items"]
    return items


def get_or_none(server: ApiServer, path: str) -> Obj | None:
    resp = server.get(path)
    if resp.status == 404:
        return None
    return ok(resp)


def pod_template(labels: dict[str, str], restart_policy: str = "Always", **spec: Any) -> Obj:
    return {"metadata": {"labels": labels},
            "spec": {"restartPolicy": restart_policy,
                     "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}], **spec}}


def bind(server: ApiServer, namespace: str, pod: str, node: str) -> None:
    ok(server.post(f"/api/v1/namespaces/{namespace}/pods/{pod}/binding",
                   {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}}))


def set_pod_status(server: ApiServer, namespace: str, pod: str, status: Obj) -> Obj:
    return ok(server.patch(f"/api/v1/namespaces/{namespace}/pods/{pod}/status", {"status": status}))


def run_pod(server: ApiServer, namespace: str, pod: str, ip: str, ready: bool = True) -> Obj:
    """What the kubelet reports for a started pod: Running, an IP, Ready or not."""
    now = rfc3339()
    return set_pod_status(server, namespace, pod, {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.1", "startTime": now,
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                       {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                       {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": now},
                       {"type": "Ready", "status": str(ready), "lastTransitionTime": now}],
        "containerStatuses": [{"name": "app", "image": "busybox", "imageID": "", "ready": ready,
                               "restartCount": 0, "started": True, "state": {"running": {"startedAt": now}}}],
    })


def finish_pod(server: ApiServer, namespace: str, pod: str, exit_code: int) -> Obj:
    """What the kubelet reports when the pod's only container exits (restartPolicy Never)."""
    now = rfc3339()
    reason = "Completed" if exit_code == 0 else "Error"
    return set_pod_status(server, namespace, pod, {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "app", "image": "busybox", "imageID": "", "ready": False, "restartCount": 0,
                               "state": {"terminated": {"exitCode": exit_code, "reason": reason,
                                                        "startedAt": now, "finishedAt": now}}}],
    })


def events(server: ApiServer, namespace: str, involved: str | None = None) -> list[Obj]:
    items = list_items(server, f"/api/v1/namespaces/{namespace}/events")
    return [e for e in items if involved is None or e["involvedObject"].get("name") == involved]


def event_reasons(server: ApiServer, namespace: str, involved: str | None = None) -> list[str]:
    return [e["reason"] for e in events(server, namespace, involved)]

"""Builders of Node and Pod dicts for scheduler tests (unit and integration)."""

from __future__ import annotations

import time
import uuid
from typing import Any

Obj = dict[str, Any]


def rfc3339(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


def make_node(name: str, cpu: str = "4", memory: str = "8Gi", pods: int = 110, *, labels: dict[str, str] | None = None,
              taints: list[Obj] | None = None, ready: str | None = "True", unschedulable: bool = False,
              images: list[Obj] | None = None, ephemeral: str | None = None,
              extra: dict[str, str] | None = None) -> Obj:
    """A hollow Node: capacity = allocatable, a Ready condition, the hostname label."""
    alloc = {"cpu": cpu, "memory": memory, "pods": str(pods), **(extra or {})}
    if ephemeral:
        alloc["ephemeral-storage"] = ephemeral
    status: Obj = {"capacity": dict(alloc), "allocatable": dict(alloc)}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": "KubeletReady",
                                 "lastHeartbeatTime": rfc3339(), "lastTransitionTime": rfc3339()}]
    if images:
        status["images"] = images
    spec: Obj = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": str(uuid.uuid4()),
                         "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": spec, "status": status}


def make_pod(name: str, cpu: str | None = None, memory: str | None = None, *, namespace: str = "default",
             owner: str | None = None, node_name: str | None = None, labels: dict[str, str] | None = None,
             image: str = "busybox", **spec: Any) -> Obj:
    requests: Obj = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
    container: Obj = {"name": "app", "image": image}
    if requests:
        container["resources"] = {"requests": requests}
    md: Obj = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "labels": labels or {"app": name}}
    if owner:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": owner,
                                  "controller": True}]
    body: Obj = {"containers": [container], "schedulerName": "default-scheduler", **spec}
    if node_name:
        body["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": body}


def taint(key: str, value: str = "", effect: str = "NoSchedule") -> Obj:
    out: Obj = {"key": key, "effect": effect}
    if value:
        out["value"] = value
    return out

"""What the workload controllers (Job, DaemonSet) know about pods: controller references,
readiness and availability (podutil in Kubernetes), and building a pod from a template
(controller.GetPodFromTemplate)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from control_plane.controllers.taints import parse_time

Obj = dict[str, Any]

SUCCEEDED = "Succeeded"
FAILED = "Failed"


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    md = obj.get("metadata")
    return md if isinstance(md, dict) else {}


def controller_of(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """metav1.GetControllerOf: the ownerReference with controller=true."""
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    ref = controller_of(obj)
    return str(ref.get("uid")) if ref and ref.get("uid") else None


def controller_reference(owner: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """metav1.NewControllerRef."""
    md = meta(owner)
    return {"apiVersion": api_version, "kind": kind, "name": md.get("name"), "uid": md.get("uid"),
            "controller": True, "blockOwnerDeletion": True}


def phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return phase(pod) in (SUCCEEDED, FAILED)


def is_terminating(pod: Mapping[str, Any]) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def is_active(pod: Mapping[str, Any]) -> bool:
    """controller.IsPodActive: neither finished nor being deleted."""
    return not is_terminal(pod) and not is_terminating(pod)


def condition(pod: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    c = condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def is_available(pod: Mapping[str, Any], min_ready_seconds: int | float, now: float) -> bool:
    """podutil.IsPodAvailable: Ready for at least minReadySeconds."""
    c = condition(pod, "Ready")
    if c is None or c.get("status") != "True":
        return False
    if not min_ready_seconds:
        return True
    since = parse_time(c.get("lastTransitionTime"))
    return since is not None and since + min_ready_seconds <= now


def creation_time(obj: Mapping[str, Any]) -> float:
    return parse_time(meta(obj).get("creationTimestamp")) or 0.0


def pod_from_template(template: Mapping[str, Any], owner: Mapping[str, Any], api_version: str, kind: str,
                      *, generate_name: str | None = None) -> Obj:
    """A new pod from ``template``, controlled by ``owner``, in the owner's namespace."""
    tmeta = template.get("metadata") or {}
    md: dict[str, Any] = {
        "generateName": generate_name if generate_name is not None else f"{meta(owner).get('name')}-",
        "namespace": meta(owner).get("namespace"),
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [controller_reference(owner, api_version, kind)],
    }
    if tmeta.get("annotations"):
        md["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        md["finalizers"] = list(tmeta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": copy.deepcopy(template.get("spec") or {})}


def lingers_after_delete(reply: Mapping[str, Any], grace_period_seconds: int | None = None) -> bool:
    """Whether an object the API server just answered a DELETE for is still there, with a
    deletionTimestamp (finalizers, or a pod waiting for its node to stop it)."""
    md = meta(reply)
    if md.get("finalizers"):
        return True
    if reply.get("kind") != "Pod":
        return False
    spec = reply.get("spec") or {}
    grace = grace_period_seconds if grace_period_seconds is not None else spec.get("terminationGracePeriodSeconds", 30)
    return bool(spec.get("nodeName")) and not is_terminal(reply) and isinstance(grace, int) and grace > 0

"""Where a DaemonSet's pods belong (Kubernetes' NodeShouldRunDaemonPod and the pod it
builds for a node), pure functions over Node and pod JSON.

A daemon pod tolerates the node conditions' taints (not-ready and unreachable NoExecute;
disk-, memory-, pid-pressure and unschedulable NoSchedule; network-unavailable too with
hostNetwork), and is pinned to its node with a required node affinity on
``metadata.name``, so the scheduler binds it, as Kubernetes does since 1.12.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from control_plane.controllers.taints import (
    NO_EXECUTE,
    NO_SCHEDULE,
    TAINT_NODE_DISK_PRESSURE,
    TAINT_NODE_MEMORY_PRESSURE,
    TAINT_NODE_NETWORK_UNAVAILABLE,
    TAINT_NODE_NOT_READY,
    TAINT_NODE_PID_PRESSURE,
    TAINT_NODE_UNREACHABLE,
    TAINT_NODE_UNSCHEDULABLE,
    tolerates,
)
from control_plane.scheduler.affinity import NODE_NAME_FIELD, compile_required

Obj = dict[str, Any]


def daemon_tolerations(host_network: bool) -> list[Obj]:
    """util.AddOrUpdateDaemonPodTolerations."""
    tolerations = [
        {"key": TAINT_NODE_NOT_READY, "operator": "Exists", "effect": NO_EXECUTE},
        {"key": TAINT_NODE_UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE},
        {"key": TAINT_NODE_DISK_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
        {"key": TAINT_NODE_MEMORY_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
        {"key": TAINT_NODE_PID_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
        {"key": TAINT_NODE_UNSCHEDULABLE, "operator": "Exists", "effect": NO_SCHEDULE},
    ]
    if host_network:
        tolerations.append({"key": TAINT_NODE_NETWORK_UNAVAILABLE, "operator": "Exists", "effect": NO_SCHEDULE})
    return tolerations


def _same_toleration(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Toleration.MatchToleration: same key, operator, value and effect."""
    return all((a.get(k) or "") == (b.get(k) or "") for k in ("key", "value", "effect")) \
        and (a.get("operator") or "Equal") == (b.get("operator") or "Equal")


def add_daemon_tolerations(spec: Obj) -> None:
    """Add (or replace the matching) daemon tolerations in a pod spec, in place."""
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    for wanted in daemon_tolerations(bool(spec.get("hostNetwork"))):
        for i, existing in enumerate(tolerations):
            if _same_toleration(existing, wanted):
                tolerations[i] = wanted
                break
        else:
            tolerations.append(wanted)
    spec["tolerations"] = tolerations


def pin_to_node(spec: Obj, node_name: str) -> None:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: the required node affinity becomes one term,
    ``metadata.name In [node]`` (the controller has already checked the rest); preferred
    terms stay."""
    term = {"matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": [node_name]}]}
    raw = spec.get("affinity")
    affinity: Obj = dict(raw) if isinstance(raw, dict) else {}
    raw = affinity.get("nodeAffinity")
    node_affinity: Obj = dict(raw) if isinstance(raw, dict) else {}
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [term]}
    affinity["nodeAffinity"] = node_affinity
    spec["affinity"] = affinity


def daemon_pod_template(template: Mapping[str, Any], node_name: str | None = None) -> Obj:
    """NewPod / the template a daemon pod is created from: tolerations added, and pinned to
    ``node_name`` when given."""
    out = copy.deepcopy(dict(template))
    spec = out.setdefault("spec", {})
    add_daemon_tolerations(spec)
    if node_name:
        pin_to_node(spec, node_name)
    return out


def target_node(pod: Mapping[str, Any]) -> str | None:
    """util.GetTargetNodeName: spec.nodeName, or the node its affinity pins it to."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}) \
        .get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or []
    if len(terms) != 1:
        return None
    for req in terms[0].get("matchFields") or []:
        if req.get("key") == NODE_NAME_FIELD and req.get("operator") == "In" and len(req.get("values") or []) == 1:
            return str(req["values"][0])
    return None


def _fits_affinity(spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeaffinity.GetRequiredNodeAffinity(pod).Match(node): nodeSelector and the required
    node affinity terms."""
    md = node.get("metadata") or {}
    labels = md.get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}) \
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    return compile_required(required).matches(str(md.get("name") or ""), labels)


def _untolerated(taints: Sequence[Mapping[str, Any]], tolerations: Sequence[Mapping[str, Any]],
                 effects: tuple[str, ...]) -> bool:
    return any(t.get("effect") in effects and not any(tolerates(tol, t) for tol in tolerations) for t in taints)


def daemon_pod_spec(ds: Mapping[str, Any]) -> Obj:
    """The pod spec `should_run` judges: the DaemonSet's template with the daemon tolerations."""
    spec: Obj = daemon_pod_template((ds.get("spec") or {}).get("template") or {})["spec"]
    return spec


def should_run(node: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[bool, bool]:
    """NodeShouldRunDaemonPod for a `daemon_pod_spec`: (should run a daemon pod here, should
    keep one that runs). A node's own readiness does not matter: daemon pods tolerate it."""
    name = str((node.get("metadata") or {}).get("name") or "")
    if spec.get("nodeName") and spec["nodeName"] != name:
        return False, False
    if not _fits_affinity(spec, node):
        return False, False
    taints = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
    tolerations = spec.get("tolerations") or []
    if _untolerated(taints, tolerations, (NO_SCHEDULE, NO_EXECUTE)):
        return False, not _untolerated(taints, tolerations, (NO_EXECUTE,))
    return True, True

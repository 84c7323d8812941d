"""Filter plugins: can this pod run on this node? Each returns None (yes) or the reasons
it cannot, worded as kube-scheduler words them (they end up counted in the
FailedScheduling message).

The default profile runs them in this order and stops at a node's first failure:
NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit.
The first four look only at the node's labels, taints and flags ("static": the answer
for one pod template holds until the node itself changes); the last two look at what
the node's pods use. The first four are UnschedulableAndUnresolvable: preemption cannot
help them. A node that is not Ready is handled by TaintToleration, through the taint the
node lifecycle controller puts on it (see `cache.readiness_taint`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from control_plane.scheduler.cache import NO_SCHEDULE, NodeInfo
from control_plane.scheduler.podinfo import PodInfo
from skiff.api.tolerations import tolerates

ERR_UNSCHEDULABLE = "node(s) were unschedulable"
ERR_NODE_NAME = "node(s) didn't match the requested node name"
ERR_UNTOLERATED_TAINT = "node(s) had untolerated taint(s)"
ERR_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
ERR_NODE_PORTS = "node(s) didn't have free ports for the requested pod ports"
ERR_TOO_MANY_PODS = "Too many pods"
ERR_AFFINITY_CONFLICT = "pod affinity terms conflict"
ERR_PREFILTER_NODE_AFFINITY = "node(s) didn't satisfy plugin(s) [NodeAffinity]"

TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
UNSCHEDULABLE_TAINT = {"key": TAINT_UNSCHEDULABLE, "effect": NO_SCHEDULE}


def tolerated(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def first_untolerated(taints: Iterable[Mapping[str, Any]],
                      tolerations: list[Any]) -> Mapping[str, Any] | None:
    for taint in taints:
        if not tolerated(tolerations, taint):
            return taint
    return None


# ---- static filters: the node's own labels, taints and flags ---------------------------------


def node_unschedulable(pod: PodInfo, ni: NodeInfo) -> str | None:
    if ni.unschedulable and not tolerated(pod.tolerations, UNSCHEDULABLE_TAINT):
        return ERR_UNSCHEDULABLE
    return None


def node_name(pod: PodInfo, ni: NodeInfo) -> str | None:
    if pod.node_name and pod.node_name != ni.name:
        return ERR_NODE_NAME
    return None


def taint_toleration(pod: PodInfo, ni: NodeInfo, name_taints: bool = False) -> str | None:
    """NoSchedule and NoExecute taints (the readiness taint included) must be tolerated."""
    taint = first_untolerated(ni.taints, pod.tolerations)
    if taint is None:
        return None
    if name_taints:
        return f"node(s) had untolerated taint {{{taint.get('key') or ''}: {taint.get('value') or ''}}}"
    return ERR_UNTOLERATED_TAINT


def node_affinity(pod: PodInfo, ni: NodeInfo) -> str | None:
    """spec.nodeSelector and required node affinity (both must match)."""
    labels = ni.labels
    for key, value in pod.node_selector.items():
        if labels.get(key) != value:
            return ERR_NODE_AFFINITY
    if pod.required is not None and not pod.required.matches(ni.name, labels):
        return ERR_NODE_AFFINITY
    return None


def static_reason(pod: PodInfo, ni: NodeInfo, name_taints: bool = False) -> str | None:
    """The first static filter that rejects the node, as its reason; None if all pass."""
    return (node_unschedulable(pod, ni) or node_name(pod, ni) or taint_toleration(pod, ni, name_taints)
            or node_affinity(pod, ni))


# ---- dynamic filters: what the node's pods (bound and assumed) already use ------------------


def node_ports(pod: PodInfo, ni: NodeInfo) -> str | None:
    if pod.ports and ni.port_conflict(pod.ports):
        return ERR_NODE_PORTS
    return None


def insufficient_resources(pod: PodInfo, alloc_cpu: int, alloc_memory: int, alloc_ephemeral: int, alloc_pods: int,
                           alloc_scalars: Mapping[str, int], req_cpu: int, req_memory: int, req_ephemeral: int,
                           req_scalars: Mapping[str, int], pod_count: int) -> list[str]:
    """NodeResourcesFit's fitsRequest: every reason the pod does not fit (all are kept)."""
    reasons: list[str] = []
    if pod_count + 1 > alloc_pods:
        reasons.append(ERR_TOO_MANY_PODS)
    if not (pod.cpu or pod.memory or pod.ephemeral or pod.scalars):
        return reasons
    if pod.cpu > 0 and pod.cpu > alloc_cpu - req_cpu:
        reasons.append("Insufficient cpu")
    if pod.memory > 0 and pod.memory > alloc_memory - req_memory:
        reasons.append("Insufficient memory")
    if pod.ephemeral > 0 and pod.ephemeral > alloc_ephemeral - req_ephemeral:
        reasons.append("Insufficient ephemeral-storage")
    for name, value in pod.scalars.items():
        if value > alloc_scalars.get(name, 0) - req_scalars.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def node_resources_fit(pod: PodInfo, ni: NodeInfo) -> list[str]:
    return insufficient_resources(pod, ni.alloc_cpu, ni.alloc_memory, ni.alloc_ephemeral, ni.alloc_pods,
                                  ni.alloc_scalars, ni.req_cpu, ni.req_memory, ni.req_ephemeral, ni.req_scalars,
                                  ni.pod_count)


def fits(pod: PodInfo, ni: NodeInfo) -> bool:
    """The dynamic filters' verdict without building reasons (the hot path)."""
    if ni.pod_count >= ni.alloc_pods:
        return False
    if pod.cpu and pod.cpu > ni.alloc_cpu - ni.req_cpu:
        return False
    if pod.memory and pod.memory > ni.alloc_memory - ni.req_memory:
        return False
    if pod.ephemeral and pod.ephemeral > ni.alloc_ephemeral - ni.req_ephemeral:
        return False
    if pod.scalars:
        for name, value in pod.scalars.items():
            if value > ni.alloc_scalars.get(name, 0) - ni.req_scalars.get(name, 0):
                return False
    if pod.ports and ni.port_conflict(pod.ports):
        return False
    return True


def dynamic_reasons(pod: PodInfo, ni: NodeInfo) -> list[str]:
    """NodePorts, then NodeResourcesFit (the first failing plugin's reasons)."""
    ports = node_ports(pod, ni)
    if ports:
        return [ports]
    return node_resources_fit(pod, ni)

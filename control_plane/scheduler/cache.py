"""The scheduler's cache: per-node aggregates kept in step with Nodes and bound pods.

Each `NodeInfo` holds allocatable resources, what bound pods request (plus the non-zero
requests scoring uses), the pod count, host ports in use and images. Pods the scheduler
has assumed (decided, binding in flight) count like bound ones until the informer shows
them bound, or the binding fails and they are forgotten.

For decisions that do not look at every node one by one, nodes are also indexed:
- by *resource class* (allocatable, requested, pod count): nodes of one class are equal
  for NodeResourcesFit, LeastAllocated and BalancedAllocation;
- per controller owner, by class and by how many of the owner's pods each node runs,
  which is all the default hostname spreading needs.
Every change re-indexes only the node it touches: O(owners on that node).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from control_plane.scheduler.indexedset import IndexedSet
from control_plane.scheduler.podinfo import (
    BIND_ALL_HOST_IP,
    CPU,
    EPHEMERAL_STORAGE,
    MEMORY,
    PODS,
    HostPort,
    PodInfo,
    controller_uid,
    host_ports,
    is_scalar_resource,
    pod_requests,
    resource_list,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ClassKey = tuple[Any, ...]

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"


def ready_status(node: Mapping[str, Any]) -> str:
    """The Ready condition's status, "Unknown" when the node never reported one."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status") or "Unknown")
    return "Unknown"


def readiness_taint(status: str) -> Obj | None:
    """The NoSchedule taint the node lifecycle controller puts on a node that is not Ready
    (TaintNodesByCondition). The scheduler applies it itself too, so a node that stopped
    being Ready is avoided even before the controller has tainted it."""
    if status == "True":
        return None
    return {"key": TAINT_UNREACHABLE if status == "Unknown" else TAINT_NOT_READY, "effect": NO_SCHEDULE}


@dataclass(slots=True)
class PodEntry:
    """What one bound or assumed pod takes from its node."""

    uid: str
    key: str
    node: str
    cpu: int
    memory: int
    ephemeral: int
    scalars: dict[str, int]
    nz_cpu: int
    nz_memory: int
    ports: tuple[HostPort, ...]
    owner: str | None  # counted for spreading: a controller owner, and not terminating
    assumed: bool = False
    binding_finished: bool = False

    @classmethod
    def of_pod(cls, pod: Mapping[str, Any], node: str) -> PodEntry:
        md = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        reqs = pod_requests(spec)
        nz = pod_requests(spec, non_zero=True)
        return cls(uid=str(md.get("uid") or ""), key=f"{md.get('namespace')}/{md.get('name')}", node=node,
                   cpu=reqs.get(CPU, 0), memory=reqs.get(MEMORY, 0), ephemeral=reqs.get(EPHEMERAL_STORAGE, 0),
                   scalars={k: v for k, v in reqs.items() if v and is_scalar_resource(k)},
                   nz_cpu=nz.get(CPU, 0), nz_memory=nz.get(MEMORY, 0), ports=host_ports(spec),
                   owner=None if md.get("deletionTimestamp") else controller_uid(md))

    @classmethod
    def of_info(cls, info: PodInfo, node: str) -> PodEntry:
        return cls(uid=info.uid, key=info.key, node=node, cpu=info.cpu, memory=info.memory,
                   ephemeral=info.ephemeral, scalars=dict(info.scalars), nz_cpu=info.nz_cpu,
                   nz_memory=info.nz_memory, ports=info.ports, owner=info.owner, assumed=True)


class NodeInfo:
    """One node's aggregates. ``node`` is None for a node that is gone while pods still
    name it: those pods keep counting, but the node is not a candidate."""

    __slots__ = ("name", "node", "labels", "taints", "prefer_taints", "unschedulable", "ready", "static_fp",
                 "alloc_cpu", "alloc_memory", "alloc_ephemeral", "alloc_pods", "alloc_scalars",
                 "req_cpu", "req_memory", "req_ephemeral", "req_scalars", "nz_cpu", "nz_memory", "pod_count",
                 "ports", "images", "pods", "owners", "class_key")

    def __init__(self, name: str) -> None:
        self.name = name
        self.node: Obj | None = None
        self.labels: dict[str, str] = {}
        self.taints: list[Obj] = []  # NoSchedule and NoExecute, with the readiness taint if not Ready
        self.prefer_taints: list[Obj] = []
        self.unschedulable = False
        self.ready = "Unknown"
        self.static_fp: Any = None
        self.alloc_cpu = self.alloc_memory = self.alloc_ephemeral = self.alloc_pods = 0
        self.alloc_scalars: dict[str, int] = {}
        self.req_cpu = self.req_memory = self.req_ephemeral = 0
        self.req_scalars: dict[str, int] = {}
        self.nz_cpu = self.nz_memory = 0
        self.pod_count = 0
        self.ports: dict[tuple[str, int], dict[str, int]] = {}  # (protocol, port) -> {hostIP: pods}
        self.images: dict[str, int] = {}  # image name -> size in bytes
        self.pods: dict[str, PodEntry] = {}
        self.owners: dict[str, int] = {}  # controller owner uid -> pods of it here
        self.class_key: ClassKey | None = None

    def __repr__(self) -> str:
        return (f"<NodeInfo {self.name} cpu {self.req_cpu}/{self.alloc_cpu}m mem {self.req_memory}/"
                f"{self.alloc_memory} pods {self.pod_count}/{self.alloc_pods}>")

    def set_node(self, node: Obj) -> None:
        md = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        self.node = node
        self.labels = {str(k): str(v) for k, v in (md.get("labels") or {}).items()}
        taints = list(spec.get("taints") or [])
        self.ready = ready_status(node)
        implied = readiness_taint(self.ready)
        if implied is not None and not any(t.get("key") == implied["key"] and t.get("effect") == NO_SCHEDULE
                                           for t in taints):
            taints.append(implied)
        self.taints = [t for t in taints if t.get("effect") in (NO_SCHEDULE, NO_EXECUTE)]
        self.prefer_taints = [t for t in taints if t.get("effect") == PREFER_NO_SCHEDULE]
        self.unschedulable = bool(spec.get("unschedulable"))
        alloc = resource_list(status.get("allocatable") if "allocatable" in status else status.get("capacity"))
        self.alloc_cpu = alloc.get(CPU, 0)
        self.alloc_memory = alloc.get(MEMORY, 0)
        self.alloc_ephemeral = alloc.get(EPHEMERAL_STORAGE, 0)
        self.alloc_pods = alloc.get(PODS, 0)
        self.alloc_scalars = {k: v for k, v in alloc.items() if is_scalar_resource(k)}
        self.images = {}
        for image in status.get("images") or []:
            size = int(image.get("sizeBytes") or 0)
            for name in image.get("names") or []:
                self.images[str(name)] = size
        self.static_fp = (tuple(sorted(self.labels.items())),
                          tuple((t.get("key"), t.get("value"), t.get("effect")) for t in taints),
                          self.unschedulable)

    def class_key_now(self) -> ClassKey:
        return (self.alloc_cpu, self.alloc_memory, self.alloc_ephemeral, self.alloc_pods,
                self.req_cpu, self.req_memory, self.req_ephemeral, self.nz_cpu, self.nz_memory, self.pod_count,
                tuple(sorted(self.alloc_scalars.items())) if self.alloc_scalars else (),
                tuple(sorted(self.req_scalars.items())) if self.req_scalars else ())

    def add_entry(self, e: PodEntry) -> None:
        self.pods[e.uid] = e
        self._account(e, 1)

    def remove_entry(self, e: PodEntry) -> None:
        if self.pods.pop(e.uid, None) is not None:
            self._account(e, -1)

    def _account(self, e: PodEntry, sign: int) -> None:
        self.req_cpu += sign * e.cpu
        self.req_memory += sign * e.memory
        self.req_ephemeral += sign * e.ephemeral
        self.nz_cpu += sign * e.nz_cpu
        self.nz_memory += sign * e.nz_memory
        self.pod_count += sign
        for name, value in e.scalars.items():
            left = self.req_scalars.get(name, 0) + sign * value
            if left:
                self.req_scalars[name] = left
            else:
                self.req_scalars.pop(name, None)
        for ip, protocol, port in e.ports:
            ips = self.ports.setdefault((protocol, port), {})
            n = ips.get(ip, 0) + sign
            if n > 0:
                ips[ip] = n
            else:
                ips.pop(ip, None)
                if not ips:
                    del self.ports[(protocol, port)]
        if e.owner:
            n = self.owners.get(e.owner, 0) + sign
            if n > 0:
                self.owners[e.owner] = n
            else:
                self.owners.pop(e.owner, None)

    def port_conflict(self, ports: tuple[HostPort, ...]) -> bool:
        """HostPortInfo.CheckConflict for each wanted port: 0.0.0.0 clashes with any IP."""
        for ip, protocol, port in ports:
            ips = self.ports.get((protocol, port))
            if not ips:
                continue
            if ip == BIND_ALL_HOST_IP or BIND_ALL_HOST_IP in ips or ip in ips:
                return True
        return False


@dataclass(slots=True)
class NodeClass:
    """Nodes with equal allocatable, requests and pod count."""

    key: ClassKey
    members: IndexedSet = field(default_factory=IndexedSet)

    @property
    def alloc_cpu(self) -> int:
        return int(self.key[0])

    @property
    def sample(self) -> str:
        return next(iter(self.members))


@dataclass(slots=True)
class OwnerSpread:
    """Where one controller's pods run: count per node, and nodes by (class, count)."""

    per_node: dict[str, int] = field(default_factory=dict)
    by_class: dict[ClassKey, dict[int, IndexedSet]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeChange:
    added: bool = False
    static_changed: bool = False  # labels, taints, unschedulable, readiness
    capacity_changed: bool = False  # allocatable grew or shrank

    @property
    def any(self) -> bool:
        return self.added or self.static_changed or self.capacity_changed


class Cache:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, PodEntry] = {}  # by uid
        self.classes: dict[ClassKey, NodeClass] = {}
        self.owners: dict[str, OwnerSpread] = {}
        self.images: dict[str, dict[str, int]] = {}  # image -> {node: size}
        self.prefer_tainted_nodes = 0
        self._node_list: list[NodeInfo] | None = None

    # ---- reading ---------------------------------------------------------------------

    @property
    def node_list(self) -> list[NodeInfo]:
        """Nodes that exist, in the order they were added."""
        if self._node_list is None:
            self._node_list = [ni for ni in self.nodes.values() if ni.node is not None]
        return self._node_list

    def node_count(self) -> int:
        return len(self.node_list)

    def get(self, name: str) -> NodeInfo | None:
        ni = self.nodes.get(name)
        return ni if ni is not None and ni.node is not None else None

    def is_assumed(self, uid: str) -> bool:
        e = self.pods.get(uid)
        return e is not None and e.assumed

    def has_pod(self, uid: str) -> bool:
        return uid in self.pods

    def iter_classes(self) -> Iterator[NodeClass]:
        return iter(self.classes.values())

    # ---- nodes -----------------------------------------------------------------------

    def _info(self, name: str) -> NodeInfo:
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo(name)
        return ni

    def set_node(self, node: Obj) -> NodeChange:
        name = str(node["metadata"]["name"])
        ni = self._info(name)
        added = ni.node is None
        old_fp = ni.static_fp
        old_alloc = ni.class_key_now()[:4] + ni.class_key_now()[10:11]
        old_images = ni.images
        self._unindex(ni)
        if ni.prefer_taints and not added:
            self.prefer_tainted_nodes -= 1
        ni.set_node(node)
        if ni.prefer_taints:
            self.prefer_tainted_nodes += 1
        if added:
            self._node_list = None
        if added or old_images != ni.images:
            self._set_images(name, {} if added else old_images, ni.images)
        self._index(ni)
        new_alloc = ni.class_key_now()[:4] + ni.class_key_now()[10:11]
        return NodeChange(added=added, static_changed=not added and old_fp != ni.static_fp,
                          capacity_changed=not added and old_alloc != new_alloc)

    def remove_node(self, name: str) -> None:
        ni = self.nodes.get(name)
        if ni is None or ni.node is None:
            return
        self._unindex(ni)
        if ni.prefer_taints:
            self.prefer_tainted_nodes -= 1
        self._set_images(name, ni.images, {})
        ni.node = None
        ni.images = {}
        ni.prefer_taints = []
        self._node_list = None
        if not ni.pods:
            del self.nodes[name]

    def _set_images(self, node: str, old: Mapping[str, int], new: Mapping[str, int]) -> None:
        for image in old:
            holders = self.images.get(image)
            if holders is not None:
                holders.pop(node, None)
                if not holders:
                    del self.images[image]
        for image, size in new.items():
            self.images.setdefault(image, {})[node] = size

    # ---- pods ------------------------------------------------------------------------

    def add_pod(self, pod: Obj) -> None:
        """A pod the informer shows bound to a node (new, or changed): count it there.
        An assumed pod is confirmed (and moved if it was bound elsewhere)."""
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        entry = PodEntry.of_pod(pod, node)
        old = self.pods.get(entry.uid)
        if old is not None:
            if (old.node, old.cpu, old.memory, old.ephemeral, old.scalars, old.nz_cpu, old.nz_memory,
                    old.ports, old.owner) == (entry.node, entry.cpu, entry.memory, entry.ephemeral, entry.scalars,
                                              entry.nz_cpu, entry.nz_memory, entry.ports, entry.owner):
                old.assumed = False
                return
            if old.assumed and old.node != node:
                log.warning("pod %s was assumed on %s but is bound to %s", entry.key, old.node, node)
            self._remove_entry(old)
        self._add_entry(entry)

    def remove_pod(self, uid: str) -> None:
        e = self.pods.get(uid)
        if e is not None:
            self._remove_entry(e)

    def assume(self, info: PodInfo, node: str) -> None:
        if info.uid in self.pods:
            raise ValueError(f"pod {info.key} is already in the cache")
        self._add_entry(PodEntry.of_info(info, node))

    def finish_binding(self, uid: str) -> None:
        e = self.pods.get(uid)
        if e is not None:
            e.binding_finished = True

    def forget(self, uid: str) -> None:
        """Undo `assume` (the binding failed); a pod already confirmed bound stays."""
        e = self.pods.get(uid)
        if e is not None and e.assumed:
            self._remove_entry(e)

    def _add_entry(self, e: PodEntry) -> None:
        ni = self._info(e.node)
        self._unindex(ni)
        ni.add_entry(e)
        self.pods[e.uid] = e
        if e.owner:
            self.owners.setdefault(e.owner, OwnerSpread()).per_node[ni.name] = ni.owners[e.owner]
        self._index(ni)

    def _remove_entry(self, e: PodEntry) -> None:
        self.pods.pop(e.uid, None)
        ni = self.nodes.get(e.node)
        if ni is None:
            return
        self._unindex(ni)
        ni.remove_entry(e)
        if e.owner:
            spread = self.owners.get(e.owner)
            if spread is not None:
                n = ni.owners.get(e.owner, 0)
                if n:
                    spread.per_node[ni.name] = n
                else:
                    spread.per_node.pop(ni.name, None)
                    if not spread.per_node:
                        del self.owners[e.owner]
        if ni.node is None and not ni.pods:
            del self.nodes[ni.name]
            return
        self._index(ni)

    # ---- the class index -------------------------------------------------------------

    def _unindex(self, ni: NodeInfo) -> None:
        key = ni.class_key
        if key is None:
            return
        ni.class_key = None
        cls = self.classes.get(key)
        if cls is not None:
            cls.members.discard(ni.name)
            if not cls.members:
                del self.classes[key]
        for owner, count in ni.owners.items():
            spread = self.owners.get(owner)
            if spread is None:
                continue
            by_count = spread.by_class.get(key)
            if by_count is None:
                continue
            nodes = by_count.get(count)
            if nodes is not None:
                nodes.discard(ni.name)
                if not nodes:
                    del by_count[count]
                    if not by_count:
                        del spread.by_class[key]

    def _index(self, ni: NodeInfo) -> None:
        if ni.node is None:
            return
        key = ni.class_key = ni.class_key_now()
        cls = self.classes.get(key)
        if cls is None:
            cls = self.classes[key] = NodeClass(key)
        cls.members.add(ni.name)
        for owner, count in ni.owners.items():
            self.owners.setdefault(owner, OwnerSpread()).by_class.setdefault(key, {}).setdefault(
                count, IndexedSet()).add(ni.name)

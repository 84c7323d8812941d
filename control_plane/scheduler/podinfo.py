"""What the scheduler needs to know about a pod, computed once when it is seen.

`PodInfo.of(pod)` reads requests (Kubernetes' PodRequests rule: containers summed, each
init container a floor, sidecars added, overhead on top), the non-zero requests scoring
uses (100m cpu / 200Mi memory for a container that asks for none), host ports, images,
the controller owner (for spreading) and a signature of everything the node-static
filters look at, so pods of one template share their static filter results.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from control_plane.scheduler.affinity import NodeSelectorTerms, PreferredTerms, compile_preferred, compile_required
from skiff.api.quantity import QuantityError, cpu_millis, memory_bytes

Obj = dict[str, Any]

CPU = "cpu"
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
PODS = "pods"
DEFAULT_MILLI_CPU_REQUEST = 100  # schedutil.DefaultMilliCPURequest
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024  # schedutil.DefaultMemoryRequest
BIND_ALL_HOST_IP = "0.0.0.0"

HostPort = tuple[str, str, int]  # (hostIP, protocol, port)


@functools.lru_cache(maxsize=8192)
def _milli(text: str) -> int:
    try:
        return cpu_millis(text)
    except (QuantityError, ValueError, ArithmeticError):
        return 0


@functools.lru_cache(maxsize=8192)
def _whole(text: str) -> int:
    try:
        return memory_bytes(text)
    except (QuantityError, ValueError, ArithmeticError):
        return 0


def quantity(name: str, raw: Any) -> int:
    """A resource quantity in the unit the scheduler counts: millicores for cpu, else whole units."""
    return _milli(str(raw)) if name == CPU else _whole(str(raw))


def is_scalar_resource(name: str) -> bool:
    """Extended, hugepages and prefixed native resources (schedutil.IsScalarResourceName)."""
    return "/" in name or name.startswith(("hugepages-", "attachable-volumes-"))


def resource_list(raw: Mapping[str, Any] | None) -> dict[str, int]:
    return {name: quantity(name, value) for name, value in (raw or {}).items()}


def _add(into: dict[str, int], other: Mapping[str, int]) -> None:
    for name, value in other.items():
        into[name] = into.get(name, 0) + value


def _max(into: dict[str, int], other: Mapping[str, int]) -> None:
    for name, value in other.items():
        if value > into.get(name, 0):
            into[name] = value


def _container_requests(container: Mapping[str, Any], non_zero: bool) -> dict[str, int]:
    reqs = resource_list((container.get("resources") or {}).get("requests"))
    if non_zero:
        reqs.setdefault(CPU, DEFAULT_MILLI_CPU_REQUEST)
        reqs.setdefault(MEMORY, DEFAULT_MEMORY_REQUEST)
    return reqs


def pod_requests(spec: Mapping[str, Any], non_zero: bool = False) -> dict[str, int]:
    """resourcehelper.PodRequests: what a pod reserves on its node while it runs."""
    reqs: dict[str, int] = {}
    for c in spec.get("containers") or []:
        _add(reqs, _container_requests(c, non_zero))
    sidecars: dict[str, int] = {}
    init_floor: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        creqs = _container_requests(c, non_zero)
        if c.get("restartPolicy") == "Always":  # a sidecar runs alongside the app containers
            _add(reqs, creqs)
            _add(sidecars, creqs)
            creqs = dict(sidecars)
        else:
            _add(creqs, sidecars)  # sidecars started earlier keep running during this init container
        _max(init_floor, creqs)
    _max(reqs, init_floor)
    pod_level = (spec.get("resources") or {}).get("requests") or {}
    for name in (CPU, MEMORY):
        if name in pod_level:
            reqs[name] = quantity(name, pod_level[name])
    _add(reqs, resource_list(spec.get("overhead")))
    return reqs


def host_ports(spec: Mapping[str, Any]) -> tuple[HostPort, ...]:
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    out: list[HostPort] = []
    for c in containers:
        for p in c.get("ports") or []:
            port = p.get("hostPort") or 0
            if isinstance(port, int) and port > 0:
                out.append((p.get("hostIP") or BIND_ALL_HOST_IP, p.get("protocol") or "TCP", port))
    return tuple(out)


def normalized_image_name(name: str) -> str:
    """ImageLocality's normalizedImageName: an image without a tag means ``:latest``."""
    if name.rfind(":") <= name.rfind("/"):
        return name + ":latest"
    return name


def controller_uid(metadata: Mapping[str, Any]) -> str | None:
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "") or None
    return None


def _static_signature(node_selector: Mapping[str, Any], required: Any, tolerations: Iterable[Any]) -> str:
    return json.dumps([node_selector, required, list(tolerations)], sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class PodInfo:
    key: str  # namespace/name
    uid: str
    namespace: str
    name: str
    pod: Obj
    priority: int
    preempt_never: bool
    cpu: int
    memory: int
    ephemeral: int
    scalars: dict[str, int]
    nz_cpu: int
    nz_memory: int
    ports: tuple[HostPort, ...]
    node_name: str
    node_selector: dict[str, str]
    required: NodeSelectorTerms | None
    # NodeAffinity's PreFilter: names from matchFields metadata.name In, when every term has one
    prefilter_nodes: frozenset[str] | None
    preferred: PreferredTerms
    tolerations: list[Obj]
    images: tuple[str, ...]
    owner: str | None
    # Same signature = same result of the node-static filters; None when PreFilter narrows the nodes.
    static_signature: str | None

    @property
    def best_effort(self) -> bool:
        return not (self.cpu or self.memory)

    @classmethod
    def of(cls, pod: Obj) -> PodInfo:
        md = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        reqs = pod_requests(spec)
        nz = pod_requests(spec, non_zero=True)
        affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {})
        required_raw = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        required = compile_required(required_raw) if required_raw is not None else None
        prefilter = required.prefilter_names() if required is not None else None
        node_selector = {str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()}
        tolerations = list(spec.get("tolerations") or [])
        images = tuple(normalized_image_name(str(c.get("image") or ""))
                       for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
                       if c.get("image"))
        ns = str(md.get("namespace") or "")
        name = str(md.get("name") or "")
        return cls(
            key=f"{ns}/{name}", uid=str(md.get("uid") or ""), namespace=ns, name=name, pod=pod,
            priority=int(spec.get("priority") or 0), preempt_never=spec.get("preemptionPolicy") == "Never",
            cpu=reqs.get(CPU, 0), memory=reqs.get(MEMORY, 0), ephemeral=reqs.get(EPHEMERAL_STORAGE, 0),
            scalars={k: v for k, v in reqs.items() if v and is_scalar_resource(k)},
            nz_cpu=nz.get(CPU, 0), nz_memory=nz.get(MEMORY, 0),
            ports=host_ports(spec), node_name=str(spec.get("nodeName") or ""), node_selector=node_selector,
            required=required, prefilter_nodes=prefilter,
            preferred=compile_preferred(affinity.get("preferredDuringSchedulingIgnoredDuringExecution")),
            tolerations=tolerations, images=images, owner=controller_uid(md),
            static_signature=None if prefilter is not None
            else _static_signature(node_selector, required_raw, tolerations),
        )

"""Per-kind rules applied around create, update and delete (Kubernetes' "strategies").

What is kept from the old object on an update, what a status write may change, what a
new object's status starts as, and whether a delete is graceful.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api.quantity import QuantityError, parse_quantity
from skiff.api.resources import ResourceType


def spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything that counts towards metadata.generation: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class Strategy:
    """Default rules: a status subresource splits status from the rest."""

    def __init__(self, rt: ResourceType):
        self.rt = rt
        self.has_status = "status" in rt.subresources
        self.tracks_generation = self.has_status or rt.kind in ("Namespace",)

    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        return {} if self.has_status else None

    def prepare_for_create(self, obj: dict[str, Any]) -> None:
        if self.has_status:
            status = self.initial_status(obj)
            if status is None:
                obj.pop("status", None)
            else:
                obj["status"] = status
        if self.tracks_generation:
            obj["metadata"]["generation"] = 1

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        if self.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if self.tracks_generation:
            generation = old["metadata"].get("generation", 1)
            if spec_part(new) != spec_part(old):
                generation += 1
            new["metadata"]["generation"] = generation

    def prepare_for_status_update(self, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        """A status write changes status only; metadata and spec stay as stored."""
        result = copy.deepcopy(old)
        result["metadata"]["resourceVersion"] = new.get("metadata", {}).get("resourceVersion", "")
        if "status" in new:
            result["status"] = new["status"]
        else:
            result.pop("status", None)
        return result

    def graceful_delete_seconds(self, obj: dict[str, Any], requested: int | None) -> int | None:
        """Seconds the object lingers with a deletionTimestamp, or None to delete now."""
        return None

    def removable(self, obj: dict[str, Any]) -> bool:
        """Whether an object marked for deletion may go now (checked on every write)."""
        return not obj["metadata"].get("finalizers")


class PodStrategy(Strategy):
    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}

    def graceful_delete_seconds(self, obj: dict[str, Any], requested: int | None) -> int | None:
        # A pod that a node may be running lingers until its node confirms it has
        # stopped (the agent then deletes with grace 0); an unscheduled or finished
        # pod goes at once.
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return None
        grace = requested if requested is not None else spec.get("terminationGracePeriodSeconds", 30)
        if not isinstance(grace, int) or grace <= 0:
            return None
        return grace

    def removable(self, obj: dict[str, Any]) -> bool:
        # A pod still waiting for its node keeps lingering once its finalizers are gone.
        return super().removable(obj) and self.graceful_delete_seconds(obj, None) is None


class NamespaceStrategy(Strategy):
    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {"phase": "Active"}

    def removable(self, obj: dict[str, Any]) -> bool:
        return super().removable(obj) and not (obj.get("spec") or {}).get("finalizers")


class NodeStrategy(Strategy):
    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        # Kubernetes lets a Node be created with its status: the kubelet registers
        # itself with capacity and conditions in one write.
        status = obj.get("status")
        return status if isinstance(status, dict) else {}


class ServiceStrategy(Strategy):
    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {"loadBalancer": {}}

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        _drop_type_dependent_fields(new.get("spec") or {}, old.get("spec") or {})
        super().prepare_for_update(new, old)


_EXTERNAL_TYPES = ("NodePort", "LoadBalancer")


def _drop_type_dependent_fields(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """Kubernetes' dropTypeDependentFields: a Service leaving NodePort/LoadBalancer loses
    the node ports and traffic policy it still carries unchanged from before."""
    if old_spec.get("type") not in _EXTERNAL_TYPES or spec.get("type", "ClusterIP") in _EXTERNAL_TYPES:
        return
    old_ports = {(p.get("port"), p.get("nodePort")) for p in old_spec.get("ports") or [] if isinstance(p, dict)}
    for port in spec.get("ports") or []:
        if isinstance(port, dict) and (port.get("port"), port.get("nodePort")) in old_ports:
            port.pop("nodePort", None)
    for key in ("externalTrafficPolicy", "healthCheckNodePort"):
        if key in spec and spec.get(key) == old_spec.get(key):
            spec.pop(key)


def qos_class(spec: dict[str, Any]) -> str:
    """Kubernetes' pod QoS class from the containers' requests and limits."""
    containers = [c for key in ("initContainers", "containers") for c in (spec.get(key) or [])
                  if isinstance(c, dict)]
    any_set = False
    guaranteed = True
    for c in containers:
        resources = c.get("resources") or {}
        requests = dict(resources.get("requests") or {})
        limits = resources.get("limits") or {}
        for name, value in limits.items():
            requests.setdefault(name, value)  # requests default to limits
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or name not in requests:
                guaranteed = False
            elif not _same_quantity(requests[name], limits[name]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return parse_quantity(a) == parse_quantity(b)
    except (QuantityError, TypeError, ValueError):
        return False


_STRATEGIES: dict[str, type[Strategy]] = {
    "Pod": PodStrategy,
    "Namespace": NamespaceStrategy,
    "Node": NodeStrategy,
    "Service": ServiceStrategy,
}


def strategy_for(rt: ResourceType) -> Strategy:
    return _STRATEGIES.get(rt.kind, Strategy)(rt)

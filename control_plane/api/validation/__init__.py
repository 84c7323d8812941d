"""Kubernetes-compatible validation of API objects, as the API server's create/update strategies do it.

``validate`` returns the causes for a 422 ``Invalid`` (``errors.invalid(kind, name, causes)``);
an empty list means the object may be stored. It expects the object to have been through
``control_plane.api.defaults.apply_defaults`` first, which is Kubernetes' order too
(decode, default, admit, validate). It never raises, whatever JSON it is handed: a value of
the wrong type is reported as a ``FieldValueTypeInvalid`` cause.

One table maps each kind to its rules: how names are checked, what the body must hold,
which fields an update may not change, and what a status update may write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control_plane.api.errors import Cause
from control_plane.api.validation import core, pods, services, workloads
from control_plane.api.validation.field import INVALID, TYPE_INVALID, ErrorList, Obj, json_type
from control_plane.api.validation.meta import validate_object_meta, validate_object_meta_update
from control_plane.api.validation.names import NameFn, name_is_dns1035_label, name_is_dns_label, name_is_dns_subdomain
from skiff.api.resources import ResourceType

__all__ = ["validate", "validate_status_update"]

BodyFn = Callable[[ErrorList, Obj], None]
UpdateFn = Callable[[ErrorList, Obj, Obj], None]


@dataclass(frozen=True)
class Rules:
    name: NameFn = name_is_dns_subdomain
    body: BodyFn | None = None
    update: UpdateFn | None = None
    status: UpdateFn | None = None


def _kind_status(kind: str) -> UpdateFn:
    return lambda errs, obj, old: workloads.validate_workload_status(errs, obj, kind)


def _immutable_data(kind: str) -> UpdateFn:
    return lambda errs, obj, old: core.validate_immutable_data_update(errs, obj, old, kind)


RULES: dict[tuple[str, str], Rules] = {
    ("", "Namespace"): Rules(name_is_dns_label, core.validate_namespace, status=core.validate_namespace_status),
    ("", "Pod"): Rules(name_is_dns_subdomain, pods.validate_pod, pods.validate_pod_update,
                       pods.validate_pod_status_update),
    ("", "Node"): Rules(name_is_dns_subdomain, core.validate_node, core.validate_node_update, core.validate_node_status),
    ("", "Service"): Rules(name_is_dns1035_label, services.validate_service, services.validate_service_update,
                           services.validate_service_status),
    ("", "Endpoints"): Rules(name_is_dns_subdomain, core.validate_endpoints),
    ("", "ConfigMap"): Rules(name_is_dns_subdomain, core.validate_config_map, _immutable_data("ConfigMap")),
    ("", "Secret"): Rules(name_is_dns_subdomain, core.validate_secret, _immutable_data("Secret")),
    ("", "ServiceAccount"): Rules(name_is_dns_subdomain, core.validate_service_account),
    ("", "Event"): Rules(name_is_dns_subdomain, core.validate_event),
    ("", "ResourceQuota"): Rules(name_is_dns_subdomain, core.validate_resource_quota,
                                 core.validate_resource_quota_update, core.validate_resource_quota_status),
    ("", "LimitRange"): Rules(name_is_dns_subdomain, core.validate_limit_range),
    ("apps", "Deployment"): Rules(name_is_dns_subdomain, workloads.validate_deployment, workloads.validate_apps_update,
                                  _kind_status("Deployment")),
    ("apps", "ReplicaSet"): Rules(name_is_dns_subdomain, workloads.validate_replica_set,
                                  workloads.validate_apps_update, _kind_status("ReplicaSet")),
    ("apps", "DaemonSet"): Rules(name_is_dns_subdomain, workloads.validate_daemon_set, workloads.validate_apps_update,
                                 _kind_status("DaemonSet")),
    ("batch", "Job"): Rules(name_is_dns_subdomain, workloads.validate_job, workloads.validate_job_update,
                            _kind_status("Job")),
    ("coordination.k8s.io", "Lease"): Rules(name_is_dns_subdomain, core.validate_lease),
    ("discovery.k8s.io", "EndpointSlice"): Rules(name_is_dns_subdomain, core.validate_endpoint_slice),
}


def _not_an_object(value: Any) -> list[Cause]:
    got = json_type(value)
    return [Cause("", TYPE_INVALID, f'Invalid value: "{got}": the body must be of type object: "{got}"')]


def _finish(errs: ErrorList) -> list[Cause]:
    """Drop repeated causes, as field.ErrorList.ToAggregate does."""
    seen: set[tuple[str, str]] = set()
    out = []
    for cause in errs:
        if (cause.field, cause.message) not in seen:
            seen.add((cause.field, cause.message))
            out.append(cause)
    return out


def _too_deep() -> list[Cause]:
    return [Cause("", INVALID, "Invalid value: \"object\": the object is nested too deeply")]


def validate(rt: ResourceType, obj: Any, old: Any = None) -> list[Cause]:
    """Causes for creating ``obj`` (``old`` is None) or replacing ``old`` with it."""
    if not isinstance(obj, dict):
        return _not_an_object(obj)
    rules = RULES.get((rt.group, rt.kind), Rules())
    errs = ErrorList()
    try:
        validate_object_meta(errs, obj, rt.namespaced, rules.name)
        if rules.body:
            rules.body(errs, obj)
        if old is not None:
            old = old if isinstance(old, dict) else {}
            validate_object_meta_update(errs, obj, old)
            if rules.update:
                rules.update(errs, obj, old)
    except RecursionError:
        return _too_deep()
    return _finish(errs)


def validate_status_update(rt: ResourceType, obj: Any, old: Any) -> list[Cause]:
    """Causes for a write to the status subresource: metadata rules and the status itself.

    The caller keeps the stored spec (Kubernetes' status strategies ignore spec changes).
    """
    if not isinstance(obj, dict):
        return _not_an_object(obj)
    rules = RULES.get((rt.group, rt.kind), Rules())
    old = old if isinstance(old, dict) else {}
    errs = ErrorList()
    try:
        validate_object_meta(errs, obj, rt.namespaced, rules.name)
        validate_object_meta_update(errs, obj, old)
        if rules.status:
            rules.status(errs, obj, old)
    except RecursionError:
        return _too_deep()
    return _finish(errs)

"""Resource names and quantities (requests/limits, quotas, limit ranges, node capacity)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from control_plane.api.validation.field import ErrorList, Obj, child, get_dict, get_list, key
from control_plane.api.validation.names import is_qualified_name
from skiff.api.quantity import QuantityError, canonicalize_quantity, parse_quantity

STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
STANDARD_RESOURCES = frozenset({
    "cpu", "memory", "ephemeral-storage", "storage", "requests.cpu", "requests.memory", "requests.storage",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage", "pods", "services",
    "replicationcontrollers", "resourcequotas", "secrets", "configmaps", "persistentvolumeclaims",
    "services.nodeports", "services.loadbalancers",
})
INTEGER_RESOURCES = frozenset({
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers",
})


def read_quantity(errs: ErrorList, value: Any, path: str) -> Decimal | None:
    """A quantity field; a malformed one gets the decoder's message, as Kubernetes' 400 would."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        errs.type_invalid(path, value, "string")
        return None
    parsed = _parse_cached(value) if isinstance(value, str) and len(value) <= 64 else _parse(value)
    if isinstance(parsed, str):
        errs.invalid(path, value, parsed)
        return None
    return parsed


_PARSED_CACHE_SIZE = 4096
_parsed_cache: dict[str, Decimal | str] = {}


def _parse(value: str | int | float) -> Decimal | str:
    """The quantity, or why it is not one."""
    try:
        return parse_quantity(value)
    except QuantityError as e:
        return str(e)


def _parse_cached(value: str) -> Decimal | str:
    """``_parse``, remembered: the same few strings ("100m", "128Mi") recur in every pod."""
    try:
        return _parsed_cache[value]
    except KeyError:
        pass
    parsed = _parse(value)
    if len(_parsed_cache) >= _PARSED_CACHE_SIZE:
        _parsed_cache.clear()
    _parsed_cache[value] = parsed
    return parsed


def canonical(raw: Any) -> str:
    try:
        return canonicalize_quantity(raw)
    except QuantityError:
        return str(raw)


def _is_native_resource(name: str) -> bool:
    if "/" not in name:
        return True
    domain = name.split("/", 1)[0]
    return domain == "kubernetes.io" or domain.endswith(".kubernetes.io")


def _is_hugepages(name: str) -> bool:
    return name.startswith("hugepages-")


def is_extended_resource_name(name: str) -> bool:
    if _is_native_resource(name) or name.startswith("requests."):
        return False
    return not is_qualified_name("requests." + name)


def _overcommit_allowed(name: str) -> bool:
    return _is_native_resource(name) and not _is_hugepages(name)


def validate_resource_name(errs: ErrorList, name: str, path: str) -> bool:
    """validateResourceName; False when the name itself is malformed."""
    messages = is_qualified_name(name)
    if messages:
        errs.invalid_each(path, name, messages)
        return False
    if "/" not in name and name not in STANDARD_RESOURCES and not _is_hugepages(name):
        errs.invalid(path, name, "must be a standard resource type or fully qualified")
    return True


def _validate_container_resource_name(errs: ErrorList, name: str, path: str) -> None:
    if not validate_resource_name(errs, name, path):
        return
    if "/" not in name:
        if name not in STANDARD_CONTAINER_RESOURCES and not _is_hugepages(name):
            errs.invalid(path, name, "must be a standard resource for containers")
    elif not _is_native_resource(name) and not is_extended_resource_name(name):
        errs.invalid(path, name, "doesn't follow extended resource name standard")


def validate_resource_quantity(errs: ErrorList, name: str, raw: Any, path: str) -> Decimal | None:
    """ValidateResourceQuantityValue: a parsable, non-negative quantity; whole for countable resources."""
    value = read_quantity(errs, raw, path)
    if value is None:
        return None
    if value < 0:
        errs.invalid(path, canonical(raw), "must be greater than or equal to 0")
    if (name in INTEGER_RESOURCES or is_extended_resource_name(name)) and value != value.to_integral_value():
        errs.invalid(path, canonical(raw), "must be an integer")
    return value


def validate_container_resources(errs: ErrorList, container: Obj, path: str) -> None:
    res_path = child(path, "resources")
    resources = get_dict(errs, container, "resources", path)
    lim_path, req_path = child(res_path, "limits"), child(res_path, "requests")
    limits: dict[str, tuple[Decimal, Any]] = {}
    names: list[str] = []
    for name, raw in get_dict(errs, resources, "limits", res_path).items():
        _validate_container_resource_name(errs, name, key(lim_path, name))
        value = validate_resource_quantity(errs, name, raw, key(lim_path, name))
        if value is not None:
            limits[name] = (value, raw)
        names.append(name)
    for name, raw in get_dict(errs, resources, "requests", res_path).items():
        _validate_container_resource_name(errs, name, key(req_path, name))
        value = validate_resource_quantity(errs, name, raw, key(req_path, name))
        names.append(name)
        if value is None:
            continue
        if name in limits:
            limit, limit_raw = limits[name]
            if value != limit and not _overcommit_allowed(name):
                errs.invalid(req_path, canonical(raw), f"must be equal to {name} limit of {canonical(limit_raw)}")
            elif value > limit:
                errs.invalid(req_path, canonical(raw),
                             f"must be less than or equal to {name} limit of {canonical(limit_raw)}")
        elif not _overcommit_allowed(name):
            errs.required(lim_path, "Limit must be set for non overcommitable resources")
    if any(map(_is_hugepages, names)) and not any(n in ("cpu", "memory") for n in names):
        errs.forbidden(res_path, "HugePages require cpu or memory")
    get_list(errs, resources, "claims", res_path)

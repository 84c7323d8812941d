"""The smaller core kinds: Namespace, ConfigMap, Secret, Node, ServiceAccount, Event,
ResourceQuota, LimitRange, Endpoints; plus EndpointSlice (discovery) and Lease (coordination)."""

from __future__ import annotations

import base64
import binascii
import json
from decimal import Decimal
from typing import Any

from control_plane.api.validation.equality import semantic_equal
from control_plane.api.validation.field import (
    ErrorList,
    Obj,
    child,
    dict_items,
    get_dict,
    get_str,
    get_str_list,
    index,
    key,
    opt_bool,
    opt_dict,
    opt_int,
    scratch,
)
from control_plane.api.validation.meta import FIELD_IMMUTABLE, validate_finalizer_names
from control_plane.api.validation.names import (
    CIDR_MSG,
    is_config_map_key,
    is_label_value,
    is_qualified_name,
    is_valid_cidr,
    is_valid_ip,
    is_valid_port_num,
    name_is_dns_subdomain,
    parse_ip_sloppy,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_ip,
    validate_label_name,
    validate_non_special_ip,
    validate_nonnegative,
    validate_object_name,
    validate_qualified_name,
)
from control_plane.api.validation.resources import canonical, validate_resource_name, validate_resource_quantity

MAX_SECRET_SIZE = 1024 * 1024
PROTOCOLS = ("SCTP", "TCP", "UDP")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
EVENT_TYPES = ("Normal", "Warning")
ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
LIMIT_TYPES = ("Pod", "Container", "PersistentVolumeClaim")
QUOTA_SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass",
                "CrossNamespacePodAffinity", "VolumeAttributesClass")
QUOTA_RESOURCES = frozenset({
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers", "cpu", "memory",
    "ephemeral-storage", "requests.cpu", "requests.memory", "requests.storage", "requests.ephemeral-storage",
    "limits.cpu", "limits.memory", "limits.ephemeral-storage",
})
# Keys each built-in Secret type must carry (ValidateSecret).
SECRET_TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"
MAX_ENDPOINTS_PER_SLICE = 1000
MAX_ADDRESSES_PER_ENDPOINT = 100
MAX_PORTS_PER_SLICE = 100
_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


# --- Namespace ----------------------------------------------------------------------------------

def validate_namespace(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", "")
    validate_finalizer_names(errs, get_str_list(errs, spec, "finalizers", "spec"), "spec.finalizers")
    get_str(errs, get_dict(errs, obj, "status", ""), "phase", "status")


def validate_namespace_status(errs: ErrorList, obj: Obj, old: Any) -> None:
    deleting = bool(get_str(scratch(), get_dict(scratch(), obj, "metadata", ""), "deletionTimestamp", ""))
    phase = get_str(errs, get_dict(errs, obj, "status", ""), "phase", "status")
    if not deleting and phase != "Active":
        errs.invalid("status.Phase", phase, "may only be 'Active' if `deletionTimestamp` is empty")
    elif deleting and phase != "Terminating":
        errs.invalid("status.Phase", phase, "may only be 'Terminating' if `deletionTimestamp` is not empty")


# --- ConfigMap and Secret -----------------------------------------------------------------------

def _data_keys(errs: ErrorList, data: Obj, path: str) -> None:
    for k in data:
        errs.invalid_each(key(path, k), k, is_config_map_key(k))


def _base64_error(value: str) -> str | None:
    """Go's StdEncoding error text for a malformed value (newlines are ignored, as in Go)."""
    stripped = value.replace("\r", "").replace("\n", "")
    for i, c in enumerate(stripped.rstrip("=")):
        if c not in _BASE64_ALPHABET:
            return f"illegal base64 data at input byte {i}"
    try:
        base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return f"illegal base64 data at input byte {len(stripped) - len(stripped) % 4}"
    return None


def _binary_values(errs: ErrorList, obj: Obj, name: str) -> dict[str, int]:
    """Decoded sizes of a base64 map (Secret.data, ConfigMap.binaryData)."""
    sizes: dict[str, int] = {}
    for k, v in get_dict(errs, obj, name, "").items():
        path = key(name, k)
        if v is None:
            sizes[k] = 0
        elif not isinstance(v, str):
            errs.type_invalid(path, v, "string")
        elif (problem := _base64_error(v)) is not None:
            errs.invalid(path, "<secret contents redacted>", problem)
        else:
            sizes[k] = len(v) * 3 // 4 - v.count("=")
    return sizes


def validate_config_map(errs: ErrorList, obj: Obj) -> None:
    data = get_dict(errs, obj, "data", "")
    total = 0
    binary = _binary_values(errs, obj, "binaryData")
    for k, v in data.items():
        errs.invalid_each(key("data", k), k, is_config_map_key(k))
        if k in binary:
            errs.invalid(key("data", k), k, "duplicate of key present in binaryData")
        if isinstance(v, str):
            total += len(v.encode())
        elif v is not None:
            errs.type_invalid(key("data", k), v, "string")
    _data_keys(errs, get_dict(scratch(), obj, "binaryData", ""), "binaryData")
    if total + sum(binary.values()) > MAX_SECRET_SIZE:
        errs.too_long("", MAX_SECRET_SIZE)
    opt_bool(errs, obj, "immutable", "")


def validate_secret(errs: ErrorList, obj: Obj) -> None:
    sizes = _binary_values(errs, obj, "data")
    _data_keys(errs, get_dict(scratch(), obj, "data", ""), "data")
    string_data = get_dict(errs, obj, "stringData", "")
    for k, v in string_data.items():
        errs.invalid_each(key("stringData", k), k, is_config_map_key(k))
        if isinstance(v, str):
            sizes[k] = len(v.encode())
        elif v is not None:
            errs.type_invalid(key("stringData", k), v, "string")
    if sum(sizes.values()) > MAX_SECRET_SIZE:
        errs.too_long("data", MAX_SECRET_SIZE)
    opt_bool(errs, obj, "immutable", "")
    secret_type = get_str(errs, obj, "type", "")
    present = set(sizes) | set(get_dict(scratch(), obj, "data", ""))
    if secret_type == "kubernetes.io/service-account-token":
        annotations = get_dict(scratch(), get_dict(scratch(), obj, "metadata", ""), "annotations", "")
        if not annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION):
            errs.required(key("metadata.annotations", SERVICE_ACCOUNT_NAME_ANNOTATION))
    elif secret_type == "kubernetes.io/basic-auth":
        if not present & {"username", "password"}:
            errs.required(key("data", "username"))
            errs.required(key("data", "password"))
    for required in SECRET_TYPE_KEYS.get(secret_type, ()):
        if required not in present:
            errs.required(key("data", required))
    for json_key in (".dockercfg", ".dockerconfigjson"):
        raw = get_dict(scratch(), obj, "data", "").get(json_key)
        if secret_type in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson") and isinstance(raw, str) \
                and _base64_error(raw) is None:
            try:
                json.loads(base64.b64decode(raw))
            except ValueError as e:
                errs.invalid(key("data", json_key), "<secret contents redacted>", str(e))


def validate_immutable_data_update(errs: ErrorList, obj: Obj, old: Obj, kind: str) -> None:
    """Secret.type never changes; ``immutable: true`` freezes data (and itself)."""
    quiet = scratch()
    if kind == "Secret":
        new_type, old_type = get_str(quiet, obj, "type", ""), get_str(quiet, old, "type", "")
        if new_type != old_type:
            errs.invalid("type", new_type, FIELD_IMMUTABLE)
    if not opt_bool(quiet, old, "immutable", ""):
        return
    message = "field is immutable when `immutable` is set"
    if not opt_bool(quiet, obj, "immutable", ""):
        errs.forbidden("immutable", message)
    for name in ("data", "binaryData") if kind == "ConfigMap" else ("data",):
        if not semantic_equal(obj.get(name), old.get(name)):
            errs.forbidden(name, message)


# --- Node ---------------------------------------------------------------------------------------

def _resource_map(errs: ErrorList, obj: Obj, name: str, path: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    map_path = child(path, name)
    for k, v in get_dict(errs, obj, name, path).items():
        value = validate_resource_quantity(errs, k, v, key(map_path, k))
        if value is not None:
            out[k] = value
    return out


def _validate_node_status(errs: ErrorList, obj: Obj) -> None:
    status = get_dict(errs, obj, "status", "")
    for name in ("capacity", "allocatable"):
        _resource_map(errs, status, name, "status")
    seen: list[Any] = []
    for i, address, path in dict_items(errs, status, "addresses", "status"):
        get_str(errs, address, "type", path)
        get_str(errs, address, "address", path)
        if address in seen:
            errs.duplicate(index("status.addresses", i), address)
        seen.append(address)
    for _, cond, path in dict_items(errs, status, "conditions", "status"):
        for text_field in ("type", "status", "reason", "message", "lastHeartbeatTime", "lastTransitionTime"):
            get_str(errs, cond, text_field, path)
    get_dict(errs, status, "nodeInfo", "status")


def validate_node(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", "")
    seen: set[tuple[str, str]] = set()
    # Kubernetes reports taints under "metadata.taints" (sic).
    for i, taint, path in dict_items(errs, spec, "taints", "spec"):
        taint_path = index("metadata.taints", i)
        k = get_str(errs, taint, "key", path)
        value = get_str(errs, taint, "value", path)
        effect = get_str(errs, taint, "effect", path)
        validate_label_name(errs, k, child(taint_path, "key"))
        messages = is_label_value(value)
        if messages:
            errs.invalid(child(taint_path, "value"), value, ";".join(messages))
        errs.enum(effect, child(taint_path, "effect"), TAINT_EFFECTS)
        if (k, effect) in seen:
            errs.duplicate(taint_path, taint, "taints must be unique by key and effect pair")
        seen.add((k, effect))
    cidrs = get_str_list(errs, spec, "podCIDRs", "spec")
    for i, cidr in enumerate(cidrs):
        if not is_valid_cidr(cidr):
            errs.invalid(index("spec.podCIDRs", i), cidr, CIDR_MSG)
    if len(cidrs) != len(set(cidrs)):
        errs.invalid("spec.podCIDRs", cidrs, "may specify no more than one CIDR for each IP family")
    for text_field in ("podCIDR", "providerID"):
        get_str(errs, spec, text_field, "spec")
    opt_bool(errs, spec, "unschedulable", "spec")
    _validate_node_status(errs, obj)


def validate_node_update(errs: ErrorList, obj: Obj, old: Obj) -> None:
    quiet = scratch()
    spec, old_spec = get_dict(quiet, obj, "spec", ""), get_dict(quiet, old, "spec", "")
    old_cidrs = get_str_list(quiet, old_spec, "podCIDRs", "spec")
    if old_cidrs and old_cidrs != get_str_list(quiet, spec, "podCIDRs", "spec"):
        errs.forbidden("spec.podCIDRs", "node updates may not change podCIDR except from \"\" to valid")
    old_provider = get_str(quiet, old_spec, "providerID", "spec")
    if old_provider and old_provider != get_str(quiet, spec, "providerID", "spec"):
        errs.forbidden("spec.providerID", "node updates may not change providerID except from \"\" to valid")


def validate_node_status(errs: ErrorList, obj: Obj, old: Any) -> None:
    _validate_node_status(errs, obj)


# --- ServiceAccount, Event, Lease ------------------------------------------------------------------

def validate_service_account(errs: ErrorList, obj: Obj) -> None:
    for _, ref, path in dict_items(errs, obj, "secrets", ""):
        get_str(errs, ref, "name", path)
    for _, ref, path in dict_items(errs, obj, "imagePullSecrets", ""):
        get_str(errs, ref, "name", path)
    opt_bool(errs, obj, "automountServiceAccountToken", "")


def validate_event(errs: ErrorList, obj: Obj) -> None:
    """The core/v1 (legacy) Event rules: the event lives in its object's namespace."""
    namespace = get_str(scratch(), get_dict(scratch(), obj, "metadata", ""), "namespace", "metadata")
    involved = opt_dict(errs, obj, "involvedObject", "")
    if not involved:
        errs.required("involvedObject")
        involved = {}
    for text_field in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
        get_str(errs, involved, text_field, "involvedObject")
    involved_ns = get_str(scratch(), involved, "namespace", "involvedObject")
    if involved_ns and involved_ns != namespace or not involved_ns and namespace not in ("", "default"):
        errs.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    event_type = get_str(errs, obj, "type", "")
    if event_type and event_type not in EVENT_TYPES:
        errs.not_supported("type", event_type, EVENT_TYPES)
    for text_field in ("reason", "message", "firstTimestamp", "lastTimestamp", "eventTime", "action",
                       "reportingComponent", "reportingInstance"):
        get_str(errs, obj, text_field, "")
    validate_nonnegative(errs, opt_int(errs, obj, "count", ""), "count")
    get_dict(errs, obj, "source", "")


def validate_lease(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", "")
    duration = opt_int(errs, spec, "leaseDurationSeconds", "spec")
    if duration is not None and duration <= 0:
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    validate_nonnegative(errs, opt_int(errs, spec, "leaseTransitions", "spec"), "spec.leaseTransitions")
    for text_field in ("holderIdentity", "acquireTime", "renewTime", "strategy", "preferredHolder"):
        get_str(errs, spec, text_field, "spec")


# --- ResourceQuota, LimitRange ----------------------------------------------------------------------

def _quota_hard(errs: ErrorList, obj: Obj, name: str, path: str) -> None:
    map_path = child(path, name)
    for k, v in get_dict(errs, obj, name, path).items():
        res_path = key(map_path, k)
        if validate_resource_name(errs, k, res_path) and "/" not in k and k not in QUOTA_RESOURCES \
                and not k.startswith(("hugepages-", "requests.hugepages-")):
            errs.invalid(res_path, k, "must be a standard resource for quota")
        validate_resource_quantity(errs, k, v, res_path)


def validate_resource_quota(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", "")
    _quota_hard(errs, spec, "hard", "spec")
    scopes = get_str_list(errs, spec, "scopes", "spec")
    for scope in scopes:
        if scope not in QUOTA_SCOPES:
            errs.invalid("spec.scopes", scopes, "unsupported scope")
    for pair in (("BestEffort", "NotBestEffort"), ("Terminating", "NotTerminating")):
        if set(pair) <= set(scopes):
            errs.invalid("spec.scopes", scopes, "conflicting scopes")
    get_dict(errs, spec, "scopeSelector", "spec")
    validate_resource_quota_status(errs, obj, None)


def validate_resource_quota_update(errs: ErrorList, obj: Obj, old: Obj) -> None:
    quiet = scratch()
    scopes = get_str_list(quiet, get_dict(quiet, obj, "spec", ""), "scopes", "spec")
    if set(scopes) != set(get_str_list(quiet, get_dict(quiet, old, "spec", ""), "scopes", "spec")):
        errs.invalid("spec.scopes", scopes, FIELD_IMMUTABLE)


def validate_resource_quota_status(errs: ErrorList, obj: Obj, old: Any) -> None:
    status = get_dict(errs, obj, "status", "")
    for name in ("hard", "used"):
        _quota_hard(errs, status, name, "status")


def validate_limit_range(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", "")
    seen: set[str] = set()
    for _, item, path in dict_items(errs, spec, "limits", "spec"):
        limit_type = get_str(errs, item, "type", path)
        errs.invalid_each(child(path, "type"), limit_type, validate_limit_type(limit_type))
        if limit_type in seen:
            errs.duplicate(child(path, "type"), limit_type)
        seen.add(limit_type)
        values = {name: _resource_map(errs, item, name, path)
                  for name in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")}
        if limit_type == "Pod":
            for name in ("default", "defaultRequest"):
                if values[name]:
                    errs.forbidden(child(path, name), "may not be specified when `type` is 'Pod'")
        _limit_range_order(errs, item, values, path)


def validate_limit_type(limit_type: str) -> list[str]:
    messages = is_qualified_name(limit_type)
    if not messages and "/" not in limit_type and limit_type not in LIMIT_TYPES:
        messages = ["must be a standard limit type or fully qualified"]
    return messages


def _limit_range_order(errs: ErrorList, item: Obj, values: dict[str, dict[str, Decimal]], path: str) -> None:
    def shown(kind: str, name: str) -> str:
        return canonical(get_dict(scratch(), item, kind, "").get(name))

    names = set().union(*(v.keys() for v in values.values()))
    checks = (
        ("min", "max", "min", "min value {a} is greater than max value {b}"),
        ("min", "defaultRequest", "defaultRequest", "min value {a} is greater than default request value {b}"),
        ("defaultRequest", "max", "defaultRequest", "default request value {a} is greater than max value {b}"),
        ("defaultRequest", "default", "defaultRequest", "default request value {a} is greater than default limit "
                                                         "value {b}"),
        ("min", "default", "default", "min value {a} is greater than default value {b}"),
        ("default", "max", "default", "default value {a} is greater than max value {b}"),
    )
    for name in sorted(names):
        for low, high, where, template in checks:
            a, b = values[low].get(name), values[high].get(name)
            if a is not None and b is not None and a > b:
                errs.invalid(key(child(path, where), name), shown(where, name),
                             template.format(a=shown(low, name), b=shown(high, name)))
        ratio = values["maxLimitRequestRatio"].get(name)
        if ratio is not None and ratio < 1:
            ratio_text = shown("maxLimitRequestRatio", name)
            errs.invalid(key(child(path, "maxLimitRequestRatio"), name), ratio_text, f"ratio {ratio_text} is less than 1")


# --- Endpoints, EndpointSlice -------------------------------------------------------------------

def _validate_endpoint_port(errs: ErrorList, port: Obj, path: str, require_name: bool, protocol_required: bool) -> None:
    name = get_str(errs, port, "name", path)
    if require_name and not name:
        errs.required(child(path, "name"))
    elif name:
        validate_dns1123_label(errs, name, child(path, "name"))
    number = opt_int(errs, port, "port", path)
    if number is not None or protocol_required:
        errs.invalid_each(child(path, "port"), number or 0, is_valid_port_num(number or 0))
    errs.enum(get_str(errs, port, "protocol", path), child(path, "protocol"), PROTOCOLS, required=protocol_required)
    app_protocol = get_str(errs, port, "appProtocol", path)
    if app_protocol:
        validate_qualified_name(errs, app_protocol, child(path, "appProtocol"))


def _validate_endpoint_address(errs: ErrorList, address: Obj, path: str) -> None:
    ip = get_str(errs, address, "ip", path)
    validate_ip(errs, ip, child(path, "ip"))
    hostname = get_str(errs, address, "hostname", path)
    if hostname:
        validate_dns1123_label(errs, hostname, child(path, "hostname"))
    node_name = get_str(errs, address, "nodeName", path)
    if node_name:
        validate_object_name(errs, node_name, child(path, "nodeName"), name_is_dns_subdomain)
    if is_valid_ip(ip):
        validate_non_special_ip(errs, ip, child(path, "ip"))
    get_dict(errs, address, "targetRef", path)


def validate_endpoints(errs: ErrorList, obj: Obj) -> None:
    for _, subset, path in dict_items(errs, obj, "subsets", ""):
        addresses = list(dict_items(errs, subset, "addresses", path))
        not_ready = list(dict_items(errs, subset, "notReadyAddresses", path))
        if not addresses and not not_ready:
            errs.required(path, "must specify `addresses` or `notReadyAddresses`")
        for _, address, address_path in addresses + not_ready:
            _validate_endpoint_address(errs, address, address_path)
        ports = list(dict_items(errs, subset, "ports", path))
        for _, port, port_path in ports:
            _validate_endpoint_port(errs, port, port_path, len(ports) > 1, protocol_required=True)


def validate_endpoint_slice(errs: ErrorList, obj: Obj) -> None:
    address_type = get_str(errs, obj, "addressType", "")
    errs.enum(address_type, "addressType", ADDRESS_TYPES)
    endpoints = list(dict_items(errs, obj, "endpoints", ""))
    if len(endpoints) > MAX_ENDPOINTS_PER_SLICE:
        errs.too_many("endpoints", len(endpoints), MAX_ENDPOINTS_PER_SLICE)
    for _, endpoint, path in endpoints:
        addresses = get_str_list(errs, endpoint, "addresses", path)
        addresses_path = child(path, "addresses")
        if not addresses:
            errs.required(addresses_path, "must contain at least 1 address")
        elif len(addresses) > MAX_ADDRESSES_PER_ENDPOINT:
            errs.too_many(addresses_path, len(addresses), MAX_ADDRESSES_PER_ENDPOINT)
        for i, address in enumerate(addresses):
            address_path = index(addresses_path, i)
            ip = parse_ip_sloppy(address)
            if address_type == "IPv4" and (ip is None or ip.version != 4):
                errs.invalid(address_path, address, "must be a valid IPv4 address")
            elif address_type == "IPv6" and (ip is None or ip.version != 6):
                errs.invalid(address_path, address, "must be a valid IPv6 address")
            elif address_type == "FQDN":
                validate_dns1123_subdomain(errs, address, address_path)
        conditions = get_dict(errs, endpoint, "conditions", path)
        for flag in ("ready", "serving", "terminating"):
            opt_bool(errs, conditions, flag, child(path, "conditions"))
        hostname = get_str(errs, endpoint, "hostname", path)
        if hostname:
            validate_dns1123_label(errs, hostname, child(path, "hostname"))
        node_name = get_str(errs, endpoint, "nodeName", path)
        if node_name:
            validate_object_name(errs, node_name, child(path, "nodeName"))
        get_str(errs, endpoint, "zone", path)
        get_dict(errs, endpoint, "targetRef", path)
    ports = list(dict_items(errs, obj, "ports", ""))
    if len(ports) > MAX_PORTS_PER_SLICE:
        errs.too_many("ports", len(ports), MAX_PORTS_PER_SLICE)
    names: set[str] = set()
    for _, port, path in ports:
        _validate_endpoint_port(errs, port, path, require_name=False, protocol_required=False)
        name = get_str(scratch(), port, "name", path)
        if name in names:
            errs.duplicate(child(path, "name"), name)
        names.add(name)


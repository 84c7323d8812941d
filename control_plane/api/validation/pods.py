"""Pod and PodSpec validation (pkg/apis/core/validation: ValidatePodSpec and friends).

The same ``validate_pod_spec`` serves Pods and the pod templates of workloads; a few rules
apply to real Pods only (``is_pod``), as in Kubernetes. Objects are expected to have been
defaulted first (``control_plane.api.defaults``): like Kubernetes, fields that defaulting
always fills (restartPolicy, imagePullPolicy, protocol...) are *required* here.
"""

from __future__ import annotations

from typing import Any

from control_plane.api.validation.containers import (
    MAX_UNIX_ID,
    validate_containers,
    validate_init_containers,
    validate_seccomp_profile,
    validate_unix_id,
)
from control_plane.api.validation.equality import differences, semantic_equal
from control_plane.api.validation.field import (
    INT64,
    ErrorList,
    Obj,
    as_int,
    child,
    dict_items,
    get_dict,
    get_list,
    get_str,
    get_str_list,
    get_str_map,
    index,
    opt_bool,
    opt_dict,
    opt_int,
    opt_str,
    scratch,
)
from control_plane.api.validation.meta import validate_template_meta
from control_plane.api.validation.names import (
    inclusive_range_error,
    is_label_value,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_ip,
    validate_label_name,
    validate_labels,
    validate_nonnegative,
    validate_object_name,
    validate_qualified_name,
)
from control_plane.api.validation.selectors import validate_label_selector
from control_plane.api.validation.volumes import validate_volumes

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
FS_GROUP_CHANGE_POLICIES = ("Always", "OnRootMismatch")
PREEMPTION_POLICIES = ("PreemptLowerPriority", "Never")
NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
WHEN_UNSATISFIABLE = ("DoNotSchedule", "ScheduleAnyway")
OS_NAMES = ("linux", "windows")
MAX_INT32 = 2**31 - 1
UPDATABLE_POD_SPEC_FIELDS = (
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
)


# --- pod-level fields -------------------------------------------------------------------------

def validate_tolerations(errs: ErrorList, spec: Obj, path: str) -> None:
    for _, tol, tol_path in dict_items(errs, spec, "tolerations", path):
        key_ = get_str(errs, tol, "key", tol_path)
        operator = get_str(errs, tol, "operator", tol_path)
        value = get_str(errs, tol, "value", tol_path)
        effect = get_str(errs, tol, "effect", tol_path)
        seconds = opt_int(errs, tol, "tolerationSeconds", tol_path, INT64)
        if key_:
            validate_label_name(errs, key_, child(tol_path, "key"))
        if not key_ and operator != "Exists":
            errs.invalid(child(tol_path, "operator"), operator,
                         "operator must be Exists when `key` is empty, which means \"match all values and all keys\"")
        if seconds is not None and effect != "NoExecute":
            errs.invalid(child(tol_path, "effect"), effect, "effect must be 'NoExecute' when `tolerationSeconds` is set")
        if operator in ("Equal", ""):
            messages = is_label_value(value)
            if messages:
                errs.invalid(child(tol_path, "operator"), value, ";".join(messages))
        elif operator == "Exists":
            if value:
                errs.invalid(child(tol_path, "operator"), value, "value must be empty when `operator` is 'Exists'")
        else:
            errs.not_supported(child(tol_path, "operator"), operator, TOLERATION_OPERATORS)
        if effect and effect not in TAINT_EFFECTS:
            errs.not_supported(child(tol_path, "effect"), effect, TAINT_EFFECTS)


def _validate_pod_security_context(errs: ErrorList, spec: Obj, path: str) -> None:
    sc = opt_dict(errs, spec, "securityContext", path)
    if sc is None:
        return
    sc_path = child(path, "securityContext")
    for id_field in ("fsGroup", "runAsUser", "runAsGroup"):
        validate_unix_id(errs, sc, id_field, sc_path)
    for i, gid in enumerate(get_list(errs, sc, "supplementalGroups", sc_path)):
        gid_path = index(child(sc_path, "supplementalGroups"), i)
        value = as_int(errs, gid, gid_path, INT64)
        if value is not None and not 0 <= value <= MAX_UNIX_ID:
            errs.invalid(gid_path, value, inclusive_range_error(0, MAX_UNIX_ID))
    opt_bool(errs, sc, "runAsNonRoot", sc_path)
    policy = opt_str(errs, sc, "fsGroupChangePolicy", sc_path)
    if policy is not None and policy not in FS_GROUP_CHANGE_POLICIES:
        errs.not_supported(child(sc_path, "fsGroupChangePolicy"), policy, FS_GROUP_CHANGE_POLICIES)
    for _, sysctl, sysctl_path in dict_items(errs, sc, "sysctls", sc_path):
        if not get_str(errs, sysctl, "name", sysctl_path):
            errs.required(child(sysctl_path, "name"))
        get_str(errs, sysctl, "value", sysctl_path)
    validate_seccomp_profile(errs, sc, sc_path)
    get_dict(errs, sc, "seLinuxOptions", sc_path)
    share = opt_bool(errs, spec, "shareProcessNamespace", path)
    if share and opt_bool(scratch(), spec, "hostPID", path):
        errs.invalid(child(sc_path, "shareProcessNamespace"), share,
                     "ShareProcessNamespace and HostPID cannot both be enabled")


def _validate_dns(errs: ErrorList, spec: Obj, path: str) -> None:
    policy = get_str(errs, spec, "dnsPolicy", path)
    errs.enum(policy, child(path, "dnsPolicy"), DNS_POLICIES)
    config = opt_dict(errs, spec, "dnsConfig", path)
    config_path = child(path, "dnsConfig")
    if policy == "None":
        if config is None:
            errs.required(config_path, "must provide `dnsConfig` when `dnsPolicy` is None")
            return
        if not config.get("nameservers"):
            errs.required(child(config_path, "nameservers"),
                          "must provide at least one DNS nameserver when `dnsPolicy` is None")
            return
    if config is None:
        return
    servers = get_str_list(errs, config, "nameservers", config_path)
    if len(servers) > 3:
        errs.invalid(child(config_path, "nameservers"), servers, "must not have more than 3 nameservers")
    for i, server in enumerate(servers):
        validate_ip(errs, server, index(child(config_path, "nameservers"), i))
    searches = get_str_list(errs, config, "searches", config_path)
    if len(searches) > 32:
        errs.invalid(child(config_path, "searches"), searches, "must not have more than 32 search paths")
    if len(" ".join(searches)) > 2048:
        errs.invalid(child(config_path, "searches"), searches,
                     "must not have more than 2048 characters (including spaces) in the search list")
    for i, search in enumerate(searches):
        validate_dns1123_subdomain(errs, search.removesuffix("."), index(child(config_path, "searches"), i))
    for _, option, option_path in dict_items(errs, config, "options", config_path):
        if not get_str(errs, option, "name", option_path):
            errs.required(option_path, "must not be empty")
        get_str(errs, option, "value", option_path)


def _validate_node_affinity(errs: ErrorList, spec: Obj, path: str) -> None:
    affinity = get_dict(errs, spec, "affinity", path)
    aff_path = child(path, "affinity")
    node = get_dict(errs, affinity, "nodeAffinity", aff_path)
    node_path = child(aff_path, "nodeAffinity")
    get_dict(errs, affinity, "podAffinity", aff_path)
    get_dict(errs, affinity, "podAntiAffinity", aff_path)
    required = get_dict(errs, node, "requiredDuringSchedulingIgnoredDuringExecution", node_path)
    req_path = child(node_path, "requiredDuringSchedulingIgnoredDuringExecution")
    terms = [(t, p) for _, t, p in dict_items(errs, required, "nodeSelectorTerms", req_path)]
    for _, pref, pref_path in dict_items(errs, node, "preferredDuringSchedulingIgnoredDuringExecution", node_path):
        weight = opt_int(errs, pref, "weight", pref_path) or 0
        if not 1 <= weight <= 100:
            errs.invalid(child(pref_path, "weight"), weight, inclusive_range_error(1, 100))
        terms.append((get_dict(errs, pref, "preference", pref_path), child(pref_path, "preference")))
    for term, term_path in terms:
        for list_name in ("matchExpressions", "matchFields"):
            for _, req, r_path in dict_items(errs, term, list_name, term_path):
                key_ = get_str(errs, req, "key", r_path)
                operator = get_str(errs, req, "operator", r_path)
                values = get_str_list(errs, req, "values", r_path)
                if list_name == "matchExpressions":
                    validate_label_name(errs, key_, child(r_path, "key"))
                if operator in ("In", "NotIn") and not values:
                    errs.required(child(r_path, "values"), "must be specified when `operator` is 'In' or 'NotIn'")
                elif operator in ("Exists", "DoesNotExist") and values:
                    errs.forbidden(child(r_path, "values"),
                                   "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
                elif operator in ("Gt", "Lt") and (len(values) != 1 or not values[0].lstrip("-").isdigit()):
                    errs.required(child(r_path, "values"),
                                  "must be specified single value when `operator` is 'Lt' or 'Gt'")
                elif operator not in NODE_SELECTOR_OPERATORS:
                    errs.invalid(child(r_path, "operator"), operator, "not a valid selector operator")


def _validate_topology_spread(errs: ErrorList, spec: Obj, path: str) -> None:
    seen: set[tuple[str, str]] = set()
    for _, tsc, tsc_path in dict_items(errs, spec, "topologySpreadConstraints", path):
        max_skew = opt_int(errs, tsc, "maxSkew", tsc_path) or 0
        if max_skew <= 0:
            errs.invalid(child(tsc_path, "maxSkew"), max_skew, "must be greater than zero")
        topology_key = get_str(errs, tsc, "topologyKey", tsc_path)
        if not topology_key:
            errs.required(child(tsc_path, "topologyKey"), "can not be empty")
        when = get_str(errs, tsc, "whenUnsatisfiable", tsc_path)
        if when not in WHEN_UNSATISFIABLE:
            errs.not_supported(child(tsc_path, "whenUnsatisfiable"), when, WHEN_UNSATISFIABLE)
        if (topology_key, when) in seen:
            errs.duplicate(child(tsc_path, "{topologyKey, whenUnsatisfiable}"), f"{{{topology_key}, {when}}}")
        seen.add((topology_key, when))
        selector = opt_dict(errs, tsc, "labelSelector", tsc_path)
        if selector is not None:
            validate_label_selector(errs, selector, child(tsc_path, "labelSelector"))


def _validate_host_network_ports(errs: ErrorList, spec: Obj, path: str, is_pod: bool) -> None:
    if not opt_bool(scratch(), spec, "hostNetwork", path):
        return
    quiet = scratch()
    for _, c, c_path in dict_items(quiet, spec, "containers", path):
        for _, port, port_path in dict_items(quiet, c, "ports", c_path):
            host_port = opt_int(quiet, port, "hostPort", port_path) or 0
            container_port = opt_int(quiet, port, "containerPort", port_path) or 0
            if (is_pod or host_port) and host_port != container_port:
                errs.invalid(child(port_path, "hostPort"), host_port,
                             "must match `containerPort` when `hostNetwork` is true")


def validate_pod_spec(errs: ErrorList, spec: Obj, path: str, is_pod: bool) -> None:
    """ValidatePodSpec. ``is_pod`` adds the rules Kubernetes applies to Pods but not templates."""
    grace = opt_int(errs, spec, "terminationGracePeriodSeconds", path, INT64)
    if spec.get("terminationGracePeriodSeconds") is None:
        errs.required(child(path, "terminationGracePeriodSeconds"))
    else:
        validate_nonnegative(errs, grace, child(path, "terminationGracePeriodSeconds"))
    volumes = validate_volumes(errs, spec, path)
    names = validate_containers(errs, spec, path, volumes, grace, is_pod)
    validate_init_containers(errs, spec, path, volumes, grace, is_pod, names)
    if get_list(errs, spec, "ephemeralContainers", path):
        errs.forbidden(child(path, "ephemeralContainers"),
                       "cannot be set on create" if is_pod else "ephemeral containers not allowed in pod template")
    _validate_host_network_ports(errs, spec, path, is_pod)
    errs.enum(get_str(errs, spec, "restartPolicy", path), child(path, "restartPolicy"), RESTART_POLICIES)
    _validate_dns(errs, spec, path)
    validate_labels(errs, get_str_map(errs, spec, "nodeSelector", path), child(path, "nodeSelector"))
    _validate_pod_security_context(errs, spec, path)
    for _, secret, secret_path in dict_items(errs, spec, "imagePullSecrets", path):
        if set(secret) - {"name"}:
            errs.invalid(secret_path, secret, "only name may be set")
        get_str(errs, secret, "name", secret_path)
    _validate_node_affinity(errs, spec, path)
    for name_field in ("serviceAccountName", "nodeName", "priorityClassName"):
        value = get_str(errs, spec, name_field, path)
        if value:
            validate_object_name(errs, value, child(path, name_field))
    for text_field in ("serviceAccount", "schedulerName"):
        get_str(errs, spec, text_field, path)
    deadline = opt_int(errs, spec, "activeDeadlineSeconds", path, INT64)
    if deadline is not None and not 1 <= deadline <= MAX_INT32:
        errs.invalid(child(path, "activeDeadlineSeconds"), deadline, inclusive_range_error(1, MAX_INT32))
    for label_field in ("hostname", "subdomain"):
        value = get_str(errs, spec, label_field, path)
        if value:
            validate_dns1123_label(errs, value, child(path, label_field))
    validate_tolerations(errs, spec, path)
    for _, alias, alias_path in dict_items(errs, spec, "hostAliases", path):
        validate_ip(errs, get_str(errs, alias, "ip", alias_path), child(alias_path, "ip"))
        for i, hostname in enumerate(get_str_list(errs, alias, "hostnames", alias_path)):
            validate_dns1123_subdomain(errs, hostname, index(child(alias_path, "hostnames"), i))
    opt_int(errs, spec, "priority", path)
    for flag in ("hostNetwork", "hostPID", "hostIPC", "enableServiceLinks", "automountServiceAccountToken",
                 "setHostnameAsFQDN", "hostUsers"):
        opt_bool(errs, spec, flag, path)
    for _, gate, gate_path in dict_items(errs, spec, "readinessGates", path):
        validate_qualified_name(errs, get_str(errs, gate, "conditionType", gate_path), child(gate_path, "conditionType"))
    runtime_class = opt_str(errs, spec, "runtimeClassName", path)
    if runtime_class is not None:
        validate_object_name(errs, runtime_class, child(path, "runtimeClassName"))
    preemption = opt_str(errs, spec, "preemptionPolicy", path)
    if preemption is not None:
        errs.enum(preemption, child(path, "preemptionPolicy"), PREEMPTION_POLICIES)
    os_ = opt_dict(errs, spec, "os", path)
    if os_ is not None:
        os_name = get_str(errs, os_, "name", child(path, "os"))
        if os_name not in OS_NAMES:
            errs.not_supported(child(child(path, "os"), "name"), os_name, OS_NAMES)
    _validate_topology_spread(errs, spec, path)
    get_dict(errs, spec, "overhead", path)
    if is_pod and not get_str(scratch(), spec, "serviceAccountName", path):
        for _, vol, vol_path in dict_items(scratch(), spec, "volumes", path):
            projected = vol.get("projected")
            sources = projected.get("sources") if isinstance(projected, dict) else None
            for i, source in enumerate(sources if isinstance(sources, list) else []):
                if isinstance(source, dict) and source.get("serviceAccountToken") is not None:
                    errs.forbidden(child(index(child(child(vol_path, "projected"), "sources"), i),
                                         "serviceAccountToken"),
                                   "must not be specified when serviceAccountName is not set")


def validate_pod_template(errs: ErrorList, owner_spec: Obj, path: str) -> Obj:
    """ValidatePodTemplateSpec for ``<owner_spec>.template``; returns the template."""
    template = get_dict(errs, owner_spec, "template", path)
    template_path = child(path, "template")
    validate_template_meta(errs, template, template_path)
    validate_pod_spec(errs, get_dict(errs, template, "spec", template_path), child(template_path, "spec"),
                      is_pod=False)
    return template


# --- Pod objects -------------------------------------------------------------------------------

def validate_pod(errs: ErrorList, obj: Obj) -> None:
    validate_pod_spec(errs, get_dict(errs, obj, "spec", ""), "spec", is_pod=True)
    get_dict(errs, obj, "status", "")


def _with_field(obj: Any, name: str, source: Any) -> Any:
    """A shallow copy of ``obj`` whose ``name`` is taken from ``source`` (absent if absent there)."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    if isinstance(source, dict) and name in source:
        out[name] = source[name]
    else:
        out.pop(name, None)
    return out


def _toleration_matches(old: Any, new: Any) -> bool:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return semantic_equal(old, new)
    return semantic_equal(_with_field(old, "tolerationSeconds", new), new)


def validate_pod_update(errs: ErrorList, obj: Obj, old: Obj) -> None:
    """ValidatePodUpdate: only images, activeDeadlineSeconds, added tolerations and a
    negative grace period set to 1 may change in a Pod's spec."""
    quiet = scratch()
    spec = get_dict(quiet, obj, "spec", "")
    old_spec = get_dict(quiet, old, "spec", "")
    munged = dict(spec)
    for list_name in ("containers", "initContainers"):
        new_list, old_list = get_list(quiet, spec, list_name, ""), get_list(quiet, old_spec, list_name, "")
        if len(new_list) != len(old_list):
            errs.forbidden(child("spec", list_name), "pod updates may not add or remove containers")
            return
        munged[list_name] = [_with_field(n, "image", o) for n, o in zip(new_list, old_list, strict=True)]
    deadline_path = child("spec", "activeDeadlineSeconds")
    deadline = opt_int(quiet, spec, "activeDeadlineSeconds", "", INT64)
    old_deadline = opt_int(quiet, old_spec, "activeDeadlineSeconds", "", INT64)
    if deadline is not None:
        if not 0 <= deadline <= MAX_INT32:
            errs.invalid(deadline_path, deadline, inclusive_range_error(0, MAX_INT32))
            return
        if old_deadline is not None and old_deadline < deadline:
            errs.invalid(deadline_path, deadline, "must be less than or equal to previous value")
            return
    elif old_deadline is not None:
        errs.invalid(deadline_path, None, "must not update from a positive integer to nil value")
    tolerations = get_list(quiet, spec, "tolerations", "")
    for old_tol in get_list(quiet, old_spec, "tolerations", ""):
        if not any(_toleration_matches(old_tol, new_tol) for new_tol in tolerations):
            errs.forbidden(child("spec", "tolerations"), "existing toleration can not be modified except its "
                                                         "tolerationSeconds")
            break
    for name in ("activeDeadlineSeconds", "tolerations"):
        munged = _with_field(munged, name, old_spec)
    old_grace = opt_int(quiet, old_spec, "terminationGracePeriodSeconds", "", INT64)
    if old_grace is not None and old_grace < 0 and opt_int(quiet, spec, "terminationGracePeriodSeconds", "", INT64) == 1:
        munged = _with_field(munged, "terminationGracePeriodSeconds", old_spec)
    diff = differences(old_spec, munged, "spec")
    if diff:
        errs.forbidden("spec", "pod updates may not change fields other than " + ",".join(UPDATABLE_POD_SPEC_FIELDS)
                       + "\n" + "\n".join("  " + line for line in diff))


def validate_pod_status_update(errs: ErrorList, obj: Obj, old: Obj) -> None:
    quiet = scratch()
    if get_str(quiet, get_dict(quiet, obj, "spec", ""), "nodeName", "") != \
            get_str(quiet, get_dict(quiet, old, "spec", ""), "nodeName", ""):
        errs.forbidden(child("status", "nodeName"), "may not be changed directly")
    status = get_dict(errs, obj, "status", "")
    for text_field in ("phase", "message", "reason", "hostIP", "podIP", "qosClass", "nominatedNodeName", "startTime"):
        get_str(errs, status, text_field, "status")
    for list_name in ("podIPs", "hostIPs"):
        for _, entry, entry_path in dict_items(errs, status, list_name, "status"):
            validate_ip(errs, get_str(errs, entry, "ip", entry_path), child(entry_path, "ip"))
    for _, cond, cond_path in dict_items(errs, status, "conditions", "status"):
        cond_type = get_str(errs, cond, "type", cond_path)
        if cond_type not in ("PodScheduled", "Ready", "Initialized"):
            validate_qualified_name(errs, cond_type, child(cond_path, "type"))
    for list_name in ("containerStatuses", "initContainerStatuses"):
        for _, cs, cs_path in dict_items(errs, status, list_name, "status"):
            get_str(errs, cs, "name", cs_path)
            opt_int(errs, cs, "restartCount", cs_path)
            opt_bool(errs, cs, "ready", cs_path)
            get_dict(errs, cs, "state", cs_path)

"""Containers: ports, env, mounts, probes, security context (validateContainers and friends)."""

from __future__ import annotations

from control_plane.api.validation.field import (
    INT64,
    ErrorList,
    Obj,
    child,
    dict_items,
    get_dict,
    get_str,
    get_str_list,
    int_or_string,
    opt_bool,
    opt_dict,
    opt_int,
    opt_str,
    scratch,
)
from control_plane.api.validation.names import (
    inclusive_range_error,
    is_config_map_key,
    is_env_var_name,
    is_http_header_name,
    is_valid_port_name,
    is_valid_port_num,
    name_is_dns_subdomain,
    validate_dns1123_label,
    validate_nonnegative,
    validate_object_name,
    validate_port_num_or_name,
)
from control_plane.api.validation.resources import validate_container_resources
from control_plane.api.validation.volumes import (
    validate_local_descending_path,
    validate_object_field_selector,
    validate_resource_field_selector,
)

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("SCTP", "TCP", "UDP")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
HTTP_SCHEMES = ("HTTP", "HTTPS")
MOUNT_PROPAGATIONS = ("Bidirectional", "HostToContainer", "None")
PROC_MOUNT_TYPES = ("Default", "Unmasked")
SECCOMP_PROFILE_TYPES = ("Localhost", "RuntimeDefault", "Unconfined")
CONTAINER_RESTART_POLICIES = ("Always",)
ENV_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
                   "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs")
NOT_SET_FOR_INIT = "may not be set for init containers without restartPolicy=Always"
MAX_UNIX_ID = 0xFFFFFFFF


def validate_unix_id(errs: ErrorList, obj: Obj, name: str, path: str) -> None:
    value = opt_int(errs, obj, name, path, INT64)
    if value is not None and not 0 <= value <= MAX_UNIX_ID:
        errs.invalid(child(path, name), value, inclusive_range_error(0, MAX_UNIX_ID))


# --- containers ------------------------------------------------------------------------------

def _validate_ports(errs: ErrorList, container: Obj, path: str) -> None:
    names: set[str] = set()
    for _, port, port_path in dict_items(errs, container, "ports", path):
        name = get_str(errs, port, "name", port_path)
        if name:
            messages = is_valid_port_name(name)
            if messages:
                errs.invalid_each(child(port_path, "name"), name, messages)
            elif name in names:
                errs.duplicate(child(port_path, "name"), name)
            else:
                names.add(name)
        container_port = opt_int(errs, port, "containerPort", port_path)
        if not container_port:
            errs.required(child(port_path, "containerPort"))
        else:
            errs.invalid_each(child(port_path, "containerPort"), container_port, is_valid_port_num(container_port))
        host_port = opt_int(errs, port, "hostPort", port_path)
        if host_port:
            errs.invalid_each(child(port_path, "hostPort"), host_port, is_valid_port_num(host_port))
        errs.enum(get_str(errs, port, "protocol", port_path), child(port_path, "protocol"), PROTOCOLS)
        get_str(errs, port, "hostIP", port_path)


def _validate_key_selector(errs: ErrorList, sel: Obj, path: str) -> None:
    validate_object_name(errs, get_str(errs, sel, "name", path), child(path, "name"))
    k = get_str(errs, sel, "key", path)
    if not k:
        errs.required(child(path, "key"))
    else:
        errs.invalid_each(child(path, "key"), k, is_config_map_key(k))
    opt_bool(errs, sel, "optional", path)


def _validate_env(errs: ErrorList, container: Obj, path: str) -> None:
    for _, env, env_path in dict_items(errs, container, "env", path):
        name = get_str(errs, env, "name", env_path)
        if not name:
            errs.required(child(env_path, "name"))
        else:
            errs.invalid_each(child(env_path, "name"), name, is_env_var_name(name))
        value = get_str(errs, env, "value", env_path)
        value_from = opt_dict(errs, env, "valueFrom", env_path)
        if value_from is None:
            continue
        vf_path = child(env_path, "valueFrom")
        count = 0
        for kind in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef"):
            source = opt_dict(errs, value_from, kind, vf_path)
            if source is None:
                continue
            count += 1
            source_path = child(vf_path, kind)
            if kind == "fieldRef":
                validate_object_field_selector(errs, source, source_path, ENV_FIELD_PATHS)
            elif kind == "resourceFieldRef":
                validate_resource_field_selector(errs, source, source_path, volume=False)
            else:
                _validate_key_selector(errs, source, source_path)
        if count == 0:
            errs.invalid(vf_path, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or "
                                      "`secretKeyRef`")
        elif value:
            errs.invalid(vf_path, "", "may not be specified when `value` is not empty")
        elif count > 1:
            errs.invalid(vf_path, "", "may not have more than one field specified at a time")


def _validate_env_from(errs: ErrorList, container: Obj, path: str) -> None:
    list_path = child(path, "envFrom")
    for _, env_from, ef_path in dict_items(errs, container, "envFrom", path):
        prefix = get_str(errs, env_from, "prefix", ef_path)
        if prefix:
            errs.invalid_each(child(ef_path, "prefix"), prefix, is_env_var_name(prefix))
        count = 0
        for kind in ("configMapRef", "secretRef"):
            ref = opt_dict(errs, env_from, kind, ef_path)
            if ref is None:
                continue
            count += 1
            ref_path = child(ef_path, kind)
            name = get_str(errs, ref, "name", ref_path)
            if not name:
                errs.required(child(ref_path, "name"))
            else:
                errs.invalid_each(child(ref_path, "name"), name, name_is_dns_subdomain(name, True))
            opt_bool(errs, ref, "optional", ref_path)
        if count == 0:
            errs.invalid(list_path, "", "must specify one of: `configMapRef` or `secretRef`")
        elif count > 1:
            errs.invalid(list_path, "", "may not have more than one field specified at a time")


def _validate_volume_mounts(errs: ErrorList, container: Obj, path: str, volumes: dict[str, Obj],
                            privileged: bool) -> None:
    mount_points: set[str] = set()
    for _, mount, mount_path in dict_items(errs, container, "volumeMounts", path):
        name = get_str(errs, mount, "name", mount_path)
        if not name:
            errs.required(child(mount_path, "name"))
        if name not in volumes:
            errs.not_found(child(mount_path, "name"), name)
        target = get_str(errs, mount, "mountPath", mount_path)
        if not target:
            errs.required(child(mount_path, "mountPath"))
        if target in mount_points:
            errs.invalid(child(mount_path, "mountPath"), target, "must be unique")
        mount_points.add(target)
        opt_bool(errs, mount, "readOnly", mount_path)
        sub_path = get_str(errs, mount, "subPath", mount_path)
        if sub_path:
            validate_local_descending_path(errs, sub_path, child(mount_path, "subPath"))
        sub_path_expr = get_str(errs, mount, "subPathExpr", mount_path)
        if sub_path_expr:
            if sub_path:
                errs.invalid(child(mount_path, "subPathExpr"), sub_path_expr,
                             "subPathExpr and subPath are mutually exclusive")
            validate_local_descending_path(errs, sub_path_expr, child(mount_path, "subPathExpr"))
        propagation = opt_str(errs, mount, "mountPropagation", mount_path)
        if propagation is not None:
            prop_path = child(mount_path, "mountPropagation")
            if propagation not in MOUNT_PROPAGATIONS:
                errs.not_supported(prop_path, propagation, MOUNT_PROPAGATIONS)
            if propagation == "Bidirectional" and not privileged:
                errs.forbidden(prop_path, "Bidirectional mount propagation is available only to privileged "
                                          "containers")


def validate_seccomp_profile(errs: ErrorList, sc: Obj, path: str) -> None:
    profile = opt_dict(errs, sc, "seccompProfile", path)
    if profile is None:
        return
    profile_path = child(path, "seccompProfile")
    type_ = get_str(errs, profile, "type", profile_path)
    errs.enum(type_, child(profile_path, "type"), SECCOMP_PROFILE_TYPES)
    localhost = opt_str(errs, profile, "localhostProfile", profile_path)
    if type_ == "Localhost" and not localhost:
        errs.required(child(profile_path, "localhostProfile"), "must be set when seccomp type is Localhost")
    elif type_ != "Localhost" and localhost is not None:
        errs.invalid(child(profile_path, "localhostProfile"), localhost,
                     "can only be set when seccomp type is Localhost")


def _validate_container_security_context(errs: ErrorList, container: Obj, path: str) -> bool:
    """Returns whether the container is privileged."""
    sc = opt_dict(errs, container, "securityContext", path)
    if sc is None:
        return False
    sc_path = child(path, "securityContext")
    privileged = opt_bool(errs, sc, "privileged", sc_path)
    validate_unix_id(errs, sc, "runAsUser", sc_path)
    validate_unix_id(errs, sc, "runAsGroup", sc_path)
    for flag in ("runAsNonRoot", "readOnlyRootFilesystem"):
        opt_bool(errs, sc, flag, sc_path)
    escalation = opt_bool(errs, sc, "allowPrivilegeEscalation", sc_path)
    proc_mount = opt_str(errs, sc, "procMount", sc_path)
    if proc_mount is not None and proc_mount not in PROC_MOUNT_TYPES:
        errs.not_supported(child(sc_path, "procMount"), proc_mount, PROC_MOUNT_TYPES)
    caps = get_dict(errs, sc, "capabilities", sc_path)
    added = get_str_list(errs, caps, "add", child(sc_path, "capabilities"))
    get_str_list(errs, caps, "drop", child(sc_path, "capabilities"))
    validate_seccomp_profile(errs, sc, sc_path)
    get_dict(errs, sc, "seLinuxOptions", sc_path)
    if escalation is False:
        if privileged:
            errs.invalid(sc_path, sc, "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")
        if "CAP_SYS_ADMIN" in added:
            errs.invalid(sc_path, sc, "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` "
                                      "CAP_SYS_ADMIN")
    return bool(privileged)


def _validate_handler(errs: ErrorList, handler: Obj, path: str, kinds: tuple[str, ...], grace: int | None) -> None:
    count = 0
    for kind in kinds:
        action = handler.get(kind)
        if action is None:
            continue
        action_path = child(path, kind)
        if count:
            errs.forbidden(action_path, "may not specify more than 1 handler type")
            continue
        count += 1
        if not isinstance(action, dict):
            errs.type_invalid(action_path, action, "object")
        elif kind == "exec":
            if not get_str_list(errs, action, "command", action_path):
                errs.required(child(action_path, "command"))
        elif kind == "httpGet":
            if not get_str(errs, action, "path", action_path):
                errs.required(child(action_path, "path"))
            port = int_or_string(errs, action, "port", action_path)
            validate_port_num_or_name(errs, port, child(action_path, "port"))
            scheme = get_str(errs, action, "scheme", action_path)
            if scheme not in HTTP_SCHEMES:
                errs.not_supported(child(action_path, "scheme"), scheme, HTTP_SCHEMES)
            get_str(errs, action, "host", action_path)
            for _, header, header_path in dict_items(errs, action, "httpHeaders", action_path):
                name = get_str(errs, header, "name", header_path)
                errs.invalid_each(child(action_path, "httpHeaders"), name, is_http_header_name(name))
                get_str(errs, header, "value", header_path)
        elif kind == "tcpSocket":
            port = int_or_string(errs, action, "port", action_path)
            validate_port_num_or_name(errs, port, child(action_path, "port"))
        elif kind == "grpc":
            port = opt_int(errs, action, "port", action_path) or 0
            errs.invalid_each(child(action_path, "port"), port, is_valid_port_num(port))
            get_str(errs, action, "service", action_path)
        elif kind == "sleep":
            seconds = opt_int(errs, action, "seconds", action_path, INT64) or 0
            if grace is not None and not 0 <= seconds <= grace:
                errs.invalid(action_path, seconds,
                             f"must be non-negative and less than terminationGracePeriodSeconds ({grace})")
    if not count:
        errs.required(path, "must specify a handler type")


def _validate_probe(errs: ErrorList, container: Obj, name: str, path: str, grace: int | None) -> None:
    probe = opt_dict(errs, container, name, path)
    if probe is None:
        return
    probe_path = child(path, name)
    _validate_handler(errs, probe, probe_path, ("exec", "httpGet", "tcpSocket", "grpc"), grace)
    for field_name in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
                       "failureThreshold"):
        validate_nonnegative(errs, opt_int(errs, probe, field_name, probe_path), child(probe_path, field_name))
    probe_grace = opt_int(errs, probe, "terminationGracePeriodSeconds", probe_path, INT64)
    if probe_grace is not None and probe_grace <= 0:
        errs.invalid(child(probe_path, "terminationGracePeriodSeconds"), probe_grace, "must be greater than 0")
    if name in ("livenessProbe", "startupProbe"):
        success = opt_int(scratch(), probe, "successThreshold", probe_path) or 0
        if success != 1:
            errs.invalid(child(probe_path, "successThreshold"), success, "must be 1")
    elif probe_grace is not None:
        errs.invalid(child(probe_path, "terminationGracePeriodSeconds"), probe_grace,
                     "must not be set for readinessProbes")


def _validate_lifecycle(errs: ErrorList, container: Obj, path: str, grace: int | None) -> None:
    lifecycle = opt_dict(errs, container, "lifecycle", path)
    if lifecycle is None:
        return
    for hook in ("postStart", "preStop"):
        handler = opt_dict(errs, lifecycle, hook, child(path, "lifecycle"))
        if handler is not None:
            _validate_handler(errs, handler, child(child(path, "lifecycle"), hook),
                              ("exec", "httpGet", "tcpSocket", "sleep"), grace)


def _validate_container_common(errs: ErrorList, c: Obj, path: str, volumes: dict[str, Obj], is_pod: bool) -> None:
    name = get_str(errs, c, "name", path)
    if not name:
        errs.required(child(path, "name"))
    else:
        validate_dns1123_label(errs, name, child(path, "name"))
    image = get_str(errs, c, "image", path)
    if not image:
        errs.required(child(path, "image"))
    elif is_pod and image != image.strip():
        errs.invalid(child(path, "image"), image, "must not have leading or trailing whitespace")
    errs.enum(get_str(errs, c, "terminationMessagePolicy", path), child(path, "terminationMessagePolicy"),
          TERMINATION_MESSAGE_POLICIES)
    for text_field in ("terminationMessagePath", "workingDir"):
        get_str(errs, c, text_field, path)
    for list_field in ("command", "args"):
        get_str_list(errs, c, list_field, path)
    for flag in ("stdin", "stdinOnce", "tty"):
        opt_bool(errs, c, flag, path)
    _validate_ports(errs, c, path)
    _validate_env(errs, c, path)
    _validate_env_from(errs, c, path)
    privileged = _validate_container_security_context(errs, c, path)
    _validate_volume_mounts(errs, c, path, volumes, privileged)
    errs.enum(get_str(errs, c, "imagePullPolicy", path), child(path, "imagePullPolicy"), PULL_POLICIES)
    validate_container_resources(errs, c, path)


def _check_host_port_conflicts(errs: ErrorList, containers: list[tuple[int, Obj, str]]) -> None:
    seen: set[str] = set()
    for _, c, c_path in containers:
        quiet = scratch()
        for _, port, port_path in dict_items(quiet, c, "ports", c_path):
            host_port = opt_int(quiet, port, "hostPort", port_path)
            if not host_port:
                continue
            entry = f"{get_str(quiet, port, 'protocol', port_path)}/{get_str(quiet, port, 'hostIP', port_path)}/" \
                    f"{host_port}"
            if entry in seen:
                errs.duplicate(child(port_path, "hostPort"), entry)
            seen.add(entry)


def validate_containers(errs: ErrorList, spec: Obj, path: str, volumes: dict[str, Obj], grace: int | None,
                         is_pod: bool) -> set[str]:
    if not spec.get("containers"):
        errs.required(child(path, "containers"))
    containers = list(dict_items(errs, spec, "containers", path))
    names: set[str] = set()
    for _, c, c_path in containers:
        _validate_container_common(errs, c, c_path, volumes, is_pod)
        name = get_str(scratch(), c, "name", c_path)
        if name in names:
            errs.duplicate(child(c_path, "name"), name)
        names.add(name)
        _validate_lifecycle(errs, c, c_path, grace)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            _validate_probe(errs, c, probe, c_path, grace)
        if c.get("restartPolicy") is not None:
            errs.forbidden(child(c_path, "restartPolicy"), "may not be set for non-init containers")
    _check_host_port_conflicts(errs, containers)
    return names


def validate_init_containers(errs: ErrorList, spec: Obj, path: str, volumes: dict[str, Obj], grace: int | None,
                              is_pod: bool, names: set[str]) -> None:
    for _, c, c_path in dict_items(errs, spec, "initContainers", path):
        _validate_container_common(errs, c, c_path, volumes, is_pod)
        restart_policy = opt_str(errs, c, "restartPolicy", c_path)
        if restart_policy is not None and restart_policy not in CONTAINER_RESTART_POLICIES:
            errs.not_supported(child(c_path, "restartPolicy"), restart_policy, CONTAINER_RESTART_POLICIES)
        name = get_str(scratch(), c, "name", c_path)
        if name in names:
            errs.duplicate(child(c_path, "name"), name)
        elif name:
            names.add(name)
        _check_host_port_conflicts(errs, [(0, c, c_path)])
        if restart_policy == "Always":
            _validate_lifecycle(errs, c, c_path, grace)
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                _validate_probe(errs, c, probe, c_path, grace)
        else:
            for forbidden_field in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if c.get(forbidden_field) is not None:
                    errs.forbidden(child(c_path, forbidden_field), NOT_SET_FOR_INIT)

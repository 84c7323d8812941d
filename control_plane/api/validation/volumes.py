"""Pod volumes and the downward API (validateVolumeSource and friends)."""

from __future__ import annotations

import re

from control_plane.api.validation.field import (
    INT64,
    ErrorList,
    Obj,
    child,
    dict_items,
    get_str,
    opt_bool,
    opt_dict,
    opt_int,
    opt_str,
    scratch,
)
from control_plane.api.validation.names import validate_dns1123_label, validate_qualified_name
from control_plane.api.validation.resources import canonical, read_quantity

HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket")
# ConvertDownwardAPIFieldLabel accepts these for apiVersion v1; each consumer then allows a subset.
DOWNWARD_API_LABELS = frozenset({
    "metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid",
    "spec.nodeName", "spec.restartPolicy", "spec.serviceAccountName", "spec.schedulerName", "status.phase",
    "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
})
VOLUME_FIELD_PATHS = ("metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid")
RESOURCE_FIELD_PATHS = ("limits.cpu", "limits.ephemeral-storage", "limits.memory",
                        "requests.cpu", "requests.ephemeral-storage", "requests.memory")
HUGEPAGES_FIELD_PREFIXES = ("limits.hugepages-", "requests.hugepages-")
CPU_DIVISORS = ("1m", "1")
BYTE_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")

# Volume sources in the order Kubernetes checks them; the flag says whether Skiff runs it.
VOLUME_SOURCES: tuple[tuple[str, bool], ...] = (
    ("emptyDir", True), ("hostPath", True), ("gitRepo", False), ("gcePersistentDisk", False),
    ("awsElasticBlockStore", False), ("secret", True), ("nfs", False), ("iscsi", False), ("glusterfs", False),
    ("flocker", False), ("persistentVolumeClaim", True), ("rbd", False), ("cinder", False), ("cephfs", False),
    ("quobyte", False), ("downwardAPI", True), ("fc", False), ("flexVolume", False), ("configMap", True),
    ("azureFile", False), ("vsphereVolume", False), ("photonPersistentDisk", False), ("portworxVolume", False),
    ("azureDisk", False), ("storageos", False), ("projected", True), ("scaleIO", False), ("csi", False),
    ("ephemeral", False), ("image", False),
)
SUPPORTED_VOLUME_SOURCES = tuple(sorted(name for name, ok in VOLUME_SOURCES if ok))
FILE_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
_SUBSCRIPTED = re.compile(r"(.*)\['(.*)'\]")


def _file_mode(errs: ErrorList, obj: Obj, name: str, path: str) -> None:
    mode = opt_int(errs, obj, name, path)
    if mode is not None and not 0 <= mode <= 0o777:
        errs.invalid(child(path, name), mode, FILE_MODE_MSG)


def _validate_path_no_backsteps(errs: ErrorList, target: str, path: str) -> None:
    if ".." in target.split("/"):
        errs.invalid(path, target, "must not contain '..'")


def validate_local_descending_path(errs: ErrorList, target: str, path: str) -> None:
    if target.startswith("/"):
        errs.invalid(path, target, "must be a relative path")
    _validate_path_no_backsteps(errs, target, path)


def _validate_local_non_reserved_path(errs: ErrorList, target: str, path: str) -> None:
    validate_local_descending_path(errs, target, path)
    if target.startswith("..") and not target.startswith("../"):
        errs.invalid(path, target, "must not start with '..'")


# --- volumes ---------------------------------------------------------------------------------

def _validate_key_to_path(errs: ErrorList, item: Obj, path: str) -> None:
    if not get_str(errs, item, "key", path):
        errs.required(child(path, "key"))
    target = get_str(errs, item, "path", path)
    if not target:
        errs.required(child(path, "path"))
    _validate_local_non_reserved_path(errs, target, child(path, "path"))
    _file_mode(errs, item, "mode", path)


def _validate_items(errs: ErrorList, source: Obj, path: str, paths: set[str] | None = None) -> None:
    for _, item, item_path in dict_items(errs, source, "items", path):
        _validate_key_to_path(errs, item, item_path)
        target = get_str(scratch(), item, "path", item_path)
        if paths is not None and target:
            if target in paths:
                errs.invalid(path, target, "conflicting duplicate paths")
            paths.add(target)


def validate_object_field_selector(errs: ErrorList, fs: Obj, path: str, allowed: tuple[str, ...]) -> None:
    if not get_str(errs, fs, "apiVersion", path):
        errs.required(child(path, "apiVersion"))
        return
    field_path = get_str(errs, fs, "fieldPath", path)
    if not field_path:
        errs.required(child(path, "fieldPath"))
        return
    m = _SUBSCRIPTED.fullmatch(field_path)
    base = m.group(1) if m else field_path
    if base not in DOWNWARD_API_LABELS:
        errs.invalid(child(path, "fieldPath"), field_path,
                     f"error converting fieldPath: field label not supported: {field_path}")
    elif m:
        subscript = m.group(2)
        if base == "metadata.annotations":
            validate_qualified_name(errs, subscript.lower(), path)
        elif base == "metadata.labels":
            validate_qualified_name(errs, subscript, path)
        else:
            errs.invalid(path, base, "does not support subscript")
    elif base not in allowed:
        errs.not_supported(child(path, "fieldPath"), base, sorted(allowed))


def validate_resource_field_selector(errs: ErrorList, fs: Obj, path: str, volume: bool) -> None:
    container = get_str(errs, fs, "containerName", path)
    resource = get_str(errs, fs, "resource", path)
    if volume and not container:
        errs.required(child(path, "containerName"))
    elif not resource:
        errs.required(child(path, "resource"))
    elif resource not in RESOURCE_FIELD_PATHS and not resource.startswith(HUGEPAGES_FIELD_PREFIXES):
        errs.not_supported(child(path, "resource"), resource, RESOURCE_FIELD_PATHS)
    raw = fs.get("divisor")
    divisor = read_quantity(errs, raw, child(path, "divisor"))
    if not divisor:
        return
    shown = canonical(raw)
    if resource in ("limits.cpu", "requests.cpu") and shown not in CPU_DIVISORS:
        errs.invalid(child(path, "divisor"), resource,
                     "only divisor's values 1m and 1 are supported with the cpu resource")
    kinds = {"limits.memory": "memory", "requests.memory": "memory",
             "limits.ephemeral-storage": "local ephemeral storage", "requests.ephemeral-storage": "local ephemeral storage"}
    kind = kinds.get(resource) or ("hugepages" if resource.startswith(HUGEPAGES_FIELD_PREFIXES) else "")
    if kind and shown not in BYTE_DIVISORS:
        errs.invalid(child(path, "divisor"), resource,
                     f"only divisor's values {', '.join(BYTE_DIVISORS)} are supported with the {kind} resource")


def _validate_downward_api_file(errs: ErrorList, item: Obj, path: str) -> None:
    target = get_str(errs, item, "path", path)
    if not target:
        errs.required(child(path, "path"))
    _validate_local_non_reserved_path(errs, target, child(path, "path"))
    field_ref = opt_dict(errs, item, "fieldRef", path)
    resource_ref = opt_dict(errs, item, "resourceFieldRef", path)
    if field_ref is not None:
        validate_object_field_selector(errs, field_ref, child(path, "fieldRef"), VOLUME_FIELD_PATHS)
        if resource_ref is not None:
            errs.invalid(path, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously")
    elif resource_ref is not None:
        validate_resource_field_selector(errs, resource_ref, child(path, "resourceFieldRef"), volume=True)
    else:
        errs.required(path, "one of fieldRef and resourceFieldRef is required")
    _file_mode(errs, item, "mode", path)


def _validate_empty_dir(errs: ErrorList, src: Obj, path: str) -> None:
    get_str(errs, src, "medium", path)
    size = read_quantity(errs, src.get("sizeLimit"), child(path, "sizeLimit"))
    if size is not None and size < 0:
        errs.forbidden(child(path, "sizeLimit"), "SizeLimit field must be a valid resource quantity")


def _validate_host_path(errs: ErrorList, src: Obj, path: str) -> None:
    target = get_str(errs, src, "path", path)
    if not target:
        errs.required(child(path, "path"))
        return
    _validate_path_no_backsteps(errs, target, child(path, "path"))
    type_ = opt_str(errs, src, "type", path)
    if type_ is not None and type_ not in HOST_PATH_TYPES:
        errs.not_supported(child(path, "type"), type_, HOST_PATH_TYPES)


def _validate_secret_volume(errs: ErrorList, src: Obj, path: str) -> None:
    if not get_str(errs, src, "secretName", path):
        errs.required(child(path, "secretName"))
    _file_mode(errs, src, "defaultMode", path)
    opt_bool(errs, src, "optional", path)
    _validate_items(errs, src, path)


def _validate_config_map_volume(errs: ErrorList, src: Obj, path: str) -> None:
    if not get_str(errs, src, "name", path):
        errs.required(child(path, "name"))
    _file_mode(errs, src, "defaultMode", path)
    opt_bool(errs, src, "optional", path)
    _validate_items(errs, src, path)


def _validate_pvc_volume(errs: ErrorList, src: Obj, path: str) -> None:
    if not get_str(errs, src, "claimName", path):
        errs.required(child(path, "claimName"))
    opt_bool(errs, src, "readOnly", path)


def _validate_downward_api_volume(errs: ErrorList, src: Obj, path: str) -> None:
    _file_mode(errs, src, "defaultMode", path)
    for _, item, item_path in dict_items(errs, src, "items", path):
        _validate_downward_api_file(errs, item, item_path)


def _validate_projected_volume(errs: ErrorList, src: Obj, path: str) -> None:
    _file_mode(errs, src, "defaultMode", path)
    paths: set[str] = set()
    for _, source, src_path in dict_items(errs, src, "sources", path):
        count = 0
        for kind in ("secret", "configMap"):
            proj = opt_dict(errs, source, kind, src_path)
            if proj is None:
                continue
            count += 1
            proj_path = child(src_path, kind)
            if not get_str(errs, proj, "name", proj_path):
                errs.required(child(proj_path, "name"))
            opt_bool(errs, proj, "optional", proj_path)
            _validate_items(errs, proj, proj_path, paths)
        downward = opt_dict(errs, source, "downwardAPI", src_path)
        if downward is not None:
            count += 1
            for _, item, item_path in dict_items(errs, downward, "items", child(src_path, "downwardAPI")):
                _validate_downward_api_file(errs, item, item_path)
                target = get_str(scratch(), item, "path", item_path)
                if target in paths:
                    errs.invalid(path, target, "conflicting duplicate paths")
                paths.add(target)
        token = opt_dict(errs, source, "serviceAccountToken", src_path)
        if token is not None:
            count += 1
            token_path = child(src_path, "serviceAccountToken")
            expiration = opt_int(errs, token, "expirationSeconds", token_path, INT64) or 0
            if expiration < 600:
                errs.invalid(child(token_path, "expirationSeconds"), expiration,
                             "may not specify a duration less than 10 minutes")
            if expiration > 1 << 32:
                errs.invalid(child(token_path, "expirationSeconds"), expiration,
                             "may not specify a duration larger than 2^32 seconds")
            get_str(errs, token, "audience", token_path)
            target = get_str(errs, token, "path", token_path)
            if not target:
                errs.required(child(path, "path"))
            else:
                _validate_local_non_reserved_path(errs, target, child(path, "path"))
        if count > 1:
            errs.forbidden(src_path, "may not specify more than 1 volume type per source")


_VOLUME_VALIDATORS = {
    "emptyDir": _validate_empty_dir,
    "hostPath": _validate_host_path,
    "secret": _validate_secret_volume,
    "configMap": _validate_config_map_volume,
    "persistentVolumeClaim": _validate_pvc_volume,
    "downwardAPI": _validate_downward_api_volume,
    "projected": _validate_projected_volume,
}


def _validate_volume_source(errs: ErrorList, vol: Obj, path: str) -> None:
    count = 0
    for source, supported in VOLUME_SOURCES:
        value = vol.get(source)
        if value is None:
            continue
        source_path = child(path, source)
        if count:
            errs.forbidden(source_path, "may not specify more than 1 volume type")
            continue
        count += 1
        if not isinstance(value, dict):
            errs.type_invalid(source_path, value, "object")
        elif not supported:
            errs.forbidden(source_path, "volume type is not supported by this cluster, use one of: "
                           + ", ".join(SUPPORTED_VOLUME_SOURCES))
        else:
            _VOLUME_VALIDATORS[source](errs, value, source_path)
    if not count:
        errs.required(path, "must specify a volume type")


def validate_volumes(errs: ErrorList, spec: Obj, path: str) -> dict[str, Obj]:
    """Volumes by name; a volume with errors is left out, so mounts of it are also reported."""
    volumes: dict[str, Obj] = {}
    for _, vol, vol_path in dict_items(errs, spec, "volumes", path):
        vol_errs = ErrorList()
        _validate_volume_source(vol_errs, vol, vol_path)
        name = get_str(vol_errs, vol, "name", vol_path)
        if not name:
            vol_errs.required(child(vol_path, "name"))
        else:
            validate_dns1123_label(vol_errs, name, child(vol_path, "name"))
        if name in volumes:
            vol_errs.duplicate(child(vol_path, "name"), name)
        if vol_errs:
            errs.extend(vol_errs)
        else:
            volumes[name] = vol
    return volumes

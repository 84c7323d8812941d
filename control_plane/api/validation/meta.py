"""ObjectMeta on create and update (apimachinery/pkg/api/validation/objectmeta.go)."""

from __future__ import annotations

from typing import Any

from control_plane.api.validation.field import (
    INT64,
    ErrorList,
    Obj,
    child,
    dict_items,
    get_dict,
    get_list,
    get_str,
    get_str_list,
    get_str_map,
    index,
    opt_bool,
    opt_int,
    opt_str,
    scratch,
)
from control_plane.api.validation.names import (
    NameFn,
    is_qualified_name,
    name_is_dns_label,
    validate_annotations,
    validate_labels,
    validate_nonnegative,
)

META = "metadata"
FIELD_IMMUTABLE = "field is immutable"
# helper.IsStandardFinalizerName: finalizers without a domain prefix must be one of these.
STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")
BANNED_OWNERS = {("", "v1", "Event")}


def _group_version(api_version: str) -> tuple[str, str]:
    """schema.ParseGroupVersion; an unparsable value yields an empty group and version."""
    if not api_version:
        return "", ""
    parts = api_version.split("/")
    if len(parts) == 1:
        return "", api_version
    if len(parts) == 2:
        return parts[0], parts[1]
    return "", ""


def _validate_owner_references(errs: ErrorList, meta: Obj) -> None:
    # Kubernetes reports these on the list's path, without an index.
    path = child(META, "ownerReferences")
    refs = list(dict_items(errs, meta, "ownerReferences", META))
    first_controller = ""
    for _, ref, ref_path in refs:
        api_version = get_str(errs, ref, "apiVersion", ref_path)
        kind = get_str(errs, ref, "kind", ref_path)
        name = get_str(errs, ref, "name", ref_path)
        uid = get_str(errs, ref, "uid", ref_path)
        controller = opt_bool(errs, ref, "controller", ref_path)
        opt_bool(errs, ref, "blockOwnerDeletion", ref_path)
        group, version = _group_version(api_version)
        if not version:
            errs.invalid(child(path, "apiVersion"), api_version, "version must not be empty")
        if not kind:
            errs.invalid(child(path, "kind"), kind, "must not be empty")
        if not name:
            errs.invalid(child(path, "name"), name, "must not be empty")
        if not uid:
            errs.invalid(child(path, "uid"), uid, "must not be empty")
        if (group, version, kind) in BANNED_OWNERS:
            errs.invalid(path, ref, f"{group}/{version}, Kind={kind} is disallowed from being an owner")
        if controller:
            current = f"{kind}/{name}"
            if first_controller:
                errs.invalid(path, [r for _, r, _ in refs],
                             "Only one reference can have Controller set to true. Found \"true\" in references for "
                             f"{first_controller} and {current}")
            else:
                first_controller = current


def _validate_finalizers(errs: ErrorList, finalizers: list[str], path: str) -> None:
    for i, f in enumerate(finalizers):
        errs.invalid_each(path, f, is_qualified_name(f))
        if "/" not in f and f not in STANDARD_FINALIZERS:
            errs.invalid(index(path, i), f, "name is neither a standard finalizer name nor is it fully qualified")
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        errs.invalid(path, finalizers, "finalizer orphan and foregroundDeletion cannot be both set")


def validate_finalizer_names(errs: ErrorList, finalizers: list[str], path: str) -> None:
    _validate_finalizers(errs, finalizers, path)


def validate_object_meta(errs: ErrorList, obj: Obj, namespaced: bool, name_fn: NameFn) -> Obj:
    """Validate ``obj.metadata`` for create; returns the metadata dict (empty if absent).

    Unlike Kubernetes, which generates the name before validating, a ``generateName``
    alone is accepted: Skiff may validate before it picks the name.
    """
    meta = get_dict(errs, obj, META, "")
    name = get_str(errs, meta, "name", META)
    generate_name = get_str(errs, meta, "generateName", META)
    if generate_name:
        errs.invalid_each(child(META, "generateName"), generate_name, name_fn(generate_name, True))
    if name:
        errs.invalid_each(child(META, "name"), name, name_fn(name, False))
    elif not generate_name:
        errs.required(child(META, "name"), "name or generateName is required")
    namespace = get_str(errs, meta, "namespace", META)
    if namespaced:
        if not namespace:
            errs.required(child(META, "namespace"))
        else:
            errs.invalid_each(child(META, "namespace"), namespace, name_is_dns_label(namespace, False))
    elif namespace:
        errs.forbidden(child(META, "namespace"), "not allowed on this type")
    validate_nonnegative(errs, opt_int(errs, meta, "generation", META, INT64), child(META, "generation"))
    for field_name in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "selfLink"):
        opt_str(errs, meta, field_name, META)
    opt_int(errs, meta, "deletionGracePeriodSeconds", META, INT64)
    validate_labels(errs, get_str_map(errs, meta, "labels", META), child(META, "labels"))
    validate_annotations(errs, get_str_map(errs, meta, "annotations", META), child(META, "annotations"))
    _validate_owner_references(errs, meta)
    _validate_finalizers(errs, get_str_list(errs, meta, "finalizers", META), child(META, "finalizers"))
    get_list(errs, meta, "managedFields", META)
    return meta


def _go_string_slice(values: list[str]) -> str:
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def validate_object_meta_update(errs: ErrorList, obj: Obj, old: Any) -> None:
    """The update-only rules; ``validate_object_meta`` has already checked the new object.

    uid and creationTimestamp are compared only when the update carries them: like
    Kubernetes' BeforeUpdate, ``apply_defaults(..., old=...)`` copies them from the stored
    object when a client leaves them out.
    """
    quiet = scratch()
    new_meta = get_dict(quiet, obj, META, "")
    old_meta = get_dict(quiet, old, META, "") if isinstance(old, dict) else {}
    for field_name in ("name", "namespace"):
        new_value = get_str(quiet, new_meta, field_name, META)
        if new_value != get_str(quiet, old_meta, field_name, META):
            errs.invalid(child(META, field_name), new_value, FIELD_IMMUTABLE)
    for field_name in ("uid", "creationTimestamp"):
        new_value = get_str(quiet, new_meta, field_name, META)
        if new_value and new_value != get_str(quiet, old_meta, field_name, META):
            errs.invalid(child(META, field_name), new_value, FIELD_IMMUTABLE)
    if old_meta.get("deletionTimestamp"):
        old_finalizers = set(get_str_list(quiet, old_meta, "finalizers", META))
        extra = sorted(set(get_str_list(quiet, new_meta, "finalizers", META)) - old_finalizers)
        if extra:
            errs.forbidden(child(META, "finalizers"),
                           f"no new finalizers can be added if the object is being deleted, found new finalizers "
                           f"{_go_string_slice(extra)}")


def validate_template_meta(errs: ErrorList, template: Obj, path: str) -> None:
    """A pod template's labels and annotations, on the paths Kubernetes uses (``spec.template.labels``)."""
    meta = get_dict(errs, template, META, path)
    meta_path = child(path, META)
    validate_labels(errs, get_str_map(errs, meta, "labels", meta_path), child(path, "labels"))
    validate_annotations(errs, get_str_map(errs, meta, "annotations", meta_path), child(path, "annotations"))


def template_labels(template: Obj) -> dict[str, str]:
    return get_str_map(scratch(), get_dict(scratch(), template, META, ""), "labels", "")

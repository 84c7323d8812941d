"""The PATCH flavours the API server accepts, as pure functions on JSON-shaped objects.

* ``application/json-patch+json`` — RFC 6902, via the ``jsonpatch`` library;
* ``application/merge-patch+json`` — RFC 7386 JSON merge patch;
* ``application/strategic-merge-patch+json`` — Kubernetes' strategic merge patch, a port of
  apimachinery's ``strategicpatch.StrategicMergeMapPatch`` driven by a table of the
  ``patchStrategy``/``patchMergeKey`` struct tags of the kinds Skiff serves;
* ``application/apply-patch+yaml`` — an approximation of server-side apply (see ``apply_patch``).

No function mutates its inputs. Errors are ``ApiError``s with the status codes the
Kubernetes API server uses: a body that does not decode is 400, a JSON patch whose
operations fail is 422.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer
import yaml

from control_plane.api.errors import ApiError, bad_request, too_large, unsupported_media_type

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MAX_JSON_PATCH_OPERATIONS",
    "MERGE_PATCH",
    "PATCH_CONTENT_TYPES",
    "STRATEGIC_MERGE_PATCH",
    "PatchMeta",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_patch",
    "apply_strategic_merge_patch",
    "patch_meta",
    "strategic_merge_key",
]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_CONTENT_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

# apiserver's maxJSONPatchOperations: longer patches are refused with 413.
MAX_JSON_PATCH_OPERATIONS = 10000


def _rejected(detail: str) -> ApiError:
    """A 422 shaped like apiserver's ``NewGenericServerResponse(422, ...)`` (reason Invalid,
    the underlying error as an UnexpectedServerResponse cause), with the detail also in the
    message so a user sees what went wrong."""
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {detail}",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": detail}]})


# --------------------------------------------------------------------------- JSON merge patch

def _merge_patch_value(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch_value(result.get(key), value)
    return result


def apply_merge_patch(original: dict[str, Any], patch: Any) -> dict[str, Any]:
    """RFC 7386: objects merge recursively, ``null`` deletes a key, anything else replaces.

    The patch for a whole object must itself be an object (Kubernetes answers 400
    "Invalid JSON Patch" otherwise)."""
    if not isinstance(patch, dict):
        raise bad_request(f"Invalid JSON Patch: a merge patch must be a JSON object, not {_json_type(patch)}")
    result: dict[str, Any] = _merge_patch_value(copy.deepcopy(original), patch)
    return result


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --------------------------------------------------------------------------- JSON patch

def apply_json_patch(original: dict[str, Any], patch: Any) -> dict[str, Any]:
    """RFC 6902. A body that is not a list of operation objects is 400 (it does not decode
    as a patch); an operation that fails — a ``test`` that does not hold, a path that does
    not exist, an unknown ``op`` — is 422, as in Kubernetes."""
    if not isinstance(patch, list):
        raise bad_request(f"error decoding patch: a JSON patch must be an array of operations, not {_json_type(patch)}")
    for i, op in enumerate(patch):
        if not isinstance(op, dict):
            raise bad_request(f"error decoding patch: operation {i} is {_json_type(op)}, not an object")
    if len(patch) > MAX_JSON_PATCH_OPERATIONS:
        raise too_large(f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
                        f"got {len(patch)}")
    try:
        result = jsonpatch.JsonPatch(patch).apply(original, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise _rejected(f"test operation failed: {e}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise _rejected(str(e)) from None
    except (TypeError, KeyError, IndexError, ValueError) as e:
        # jsonpatch lets these through for some malformed operations (e.g. a non-string "from").
        raise _rejected(f"invalid JSON patch operation: {e}") from None
    if not isinstance(result, dict):
        raise _rejected(f"the patched document is {_json_type(result)}, not an object")
    return result


# --------------------------------------------------------------------------- strategic merge patch: schema

@dataclass(frozen=True, eq=False)
class PatchMeta:
    """How strategic merge patch treats one field: k8s.io/api's ``patchStrategy`` and
    ``patchMergeKey`` struct tags, plus the fields below it (of the map, or of each
    element when the field is a list)."""

    strategy: str = ""  # "merge": the list merges element-wise; "": maps merge, lists are replaced
    merge_key: str | None = None  # lists of objects merge by this key; None for lists of scalars
    retain_keys: bool = False
    fields: Mapping[str, PatchMeta] = field(default_factory=dict)

    @property
    def merges_list(self) -> bool:
        return self.strategy == "merge"


_LEAF = PatchMeta()


def _map(**fields: PatchMeta) -> PatchMeta:
    return PatchMeta(fields=fields)


def _merge_list(merge_key: str | None, *, retain_keys: bool = False,
                fields: Mapping[str, PatchMeta] | None = None) -> PatchMeta:
    return PatchMeta("merge", merge_key, retain_keys, fields or {})


_CONDITIONS = _merge_list("type")
_OBJECT_META = _map(finalizers=_merge_list(None), ownerReferences=_merge_list("uid"))
_CONTAINER = {
    "ports": _merge_list("containerPort"),
    "env": _merge_list("name"),
    "volumeMounts": _merge_list("mountPath"),
    "volumeDevices": _merge_list("devicePath"),
}
_POD_SPEC = _map(
    containers=_merge_list("name", fields=_CONTAINER),
    initContainers=_merge_list("name", fields=_CONTAINER),
    ephemeralContainers=_merge_list("name", fields=_CONTAINER),
    volumes=_merge_list("name", retain_keys=True),
    imagePullSecrets=_merge_list("name"),
    hostAliases=_merge_list("ip"),
    topologySpreadConstraints=_merge_list("topologyKey"),
    resourceClaims=_merge_list("name", retain_keys=True),
    schedulingGates=_merge_list("name"),
    # tolerations, readinessGates, dnsConfig lists: no strategy, replaced wholesale.
)
_POD_STATUS = _map(
    conditions=_CONDITIONS,
    podIPs=_merge_list("ip"),
    hostIPs=_merge_list("ip"),
    resourceClaimStatuses=_merge_list("name", retain_keys=True),
    # containerStatuses and friends: no strategy.
)
_POD_TEMPLATE = _map(metadata=_OBJECT_META, spec=_POD_SPEC)
_CONDITIONS_STATUS = _map(conditions=_CONDITIONS)


def _object(**fields: PatchMeta) -> PatchMeta:
    return _map(metadata=_OBJECT_META, **fields)


_GENERIC_OBJECT = _object()
_KINDS: dict[str, PatchMeta] = {
    "Pod": _object(spec=_POD_SPEC, status=_POD_STATUS),
    "Deployment": _object(spec=_map(template=_POD_TEMPLATE, strategy=PatchMeta(retain_keys=True)),
                          status=_CONDITIONS_STATUS),
    "ReplicaSet": _object(spec=_map(template=_POD_TEMPLATE), status=_CONDITIONS_STATUS),
    "DaemonSet": _object(spec=_map(template=_POD_TEMPLATE), status=_CONDITIONS_STATUS),
    "Job": _object(spec=_map(template=_POD_TEMPLATE), status=_CONDITIONS_STATUS),
    # Newer API versions list (port, protocol) as keys for server-side apply; SMP merges on port.
    "Service": _object(spec=_map(ports=_merge_list("port")), status=_CONDITIONS_STATUS),
    "Node": _object(spec=_map(podCIDRs=_merge_list(None)),
                    status=_map(conditions=_CONDITIONS, addresses=_merge_list("type"))),
    "Namespace": _object(status=_CONDITIONS_STATUS),  # spec.finalizers has no strategy
    "ServiceAccount": _object(secrets=_merge_list("name")),  # imagePullSecrets has none here
    # Endpoints, EndpointSlice, ConfigMap, Secret, Event, ResourceQuota, LimitRange, Lease:
    # only ObjectMeta's merge lists.
}


def _split_path(path: str | Sequence[str]) -> list[str]:
    parts = path.split(".") if isinstance(path, str) else list(path)
    # List positions are transparent: "spec.containers.0.env" and "spec.containers.env" agree.
    return [p for p in parts if p and not p.isdigit() and not (p.startswith("[") and p.endswith("]"))]


def patch_meta(kind: str, path: str | Sequence[str]) -> PatchMeta:
    """The strategic-merge metadata of the field at ``path`` (dotted, list elements
    transparent: ``spec.template.spec.containers.env``) in an object of ``kind``.
    Unknown fields get the default: maps merge, lists are replaced."""
    meta = _KINDS.get(kind, _GENERIC_OBJECT)
    for part in _split_path(path):
        meta = meta.fields.get(part, _LEAF)
    return meta


def strategic_merge_key(kind: str, path: str | Sequence[str]) -> str | None:
    """The merge key of the list at ``path``, e.g. ``("Deployment", "spec.template.spec.containers")``
    → ``"name"``; None for lists that are replaced or are lists of scalars."""
    meta = patch_meta(kind, path)
    return meta.merge_key if meta.merges_list else None


# --------------------------------------------------------------------------- strategic merge patch: merging

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ELEMENT_ORDER = "$setElementOrder"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"
_ABSENT = object()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _same(a: Any, b: Any) -> bool:
    # Go compares decoded JSON values with ==, which never equates a bool with a number.
    return type(a) is type(b) and a == b


def _go_value(value: Any) -> str:
    """Roughly how Go's %v prints decoded JSON, for error messages."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_value(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _directive_target(key: str, prefix: str, error: str) -> str:
    head, sep, rest = key.partition("/")
    if not sep or head != prefix:
        raise bad_request(error)
    return rest


def _element_kind(items: list[Any]) -> str:
    """The one JSON type all elements share; lists of lists and mixed lists are refused."""
    kinds = {_json_type(v) for v in items}
    if items and isinstance(items[0], list):
        raise _rejected("lists of lists are not supported")
    if len(kinds) > 1:
        raise bad_request(f"list element types are not identical: {_go_value(items)}")
    return kinds.pop() if kinds else ""


def _index(items: list[Any], value: Any, merge_key: str | None) -> int:
    """Position of ``value`` in ``items``: by merge key for objects, by value for scalars."""
    for i, item in enumerate(items):
        if merge_key is None:
            if _same(item, value):
                return i
        elif isinstance(item, dict) and isinstance(value, dict) and merge_key in item and merge_key in value \
                and _same(item[merge_key], value[merge_key]):
            return i
    return -1


def _require_merge_key(items: list[Any], merge_key: str) -> None:
    for item in items:
        if not isinstance(item, dict):
            raise bad_request(f"expected a map, but received a {_json_type(item)}")
        if merge_key not in item:
            raise bad_request(f"map: {_go_value(item)} does not contain declared merge key: {merge_key}")


def _sort_by(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    # Items the order does not mention keep their relative place after the ones it does.
    def position(item: Any) -> int:
        i = _index(order, item, merge_key)
        return i if i >= 0 else len(order)

    return sorted(items, key=position)


def _normalize_order(patch_items: list[Any], server_only: list[Any], patch_order: list[Any],
                     server_order: list[Any], merge_key: str | None) -> list[Any]:
    """apimachinery's normalizeElementOrder: patch items in patch order, server-only items
    in their live order, interleaved so each server-only item stays ahead of the patch
    items that followed it in the live list. Items new to the list come first."""
    if merge_key is not None:
        _require_merge_key(patch_items + server_only + patch_order, merge_key)
    left = _sort_by(server_only, server_order, merge_key)
    right = _sort_by(patch_items, patch_order, merge_key)
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = _index(server_order, left[i], merge_key)
            ri = _index(server_order, right[j], merge_key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _partition(merged: list[Any], present_in: list[Any], merge_key: str | None) -> tuple[list[Any], list[Any]]:
    patch_items: list[Any] = []
    server_only: list[Any] = []
    for item in merged:
        (patch_items if _index(present_in, item, merge_key) >= 0 else server_only).append(item)
    return patch_items, server_only


class _StrategicMerge:
    """One strategic merge of ``patch`` into ``original``; both are private deep copies,
    so the merge may reuse and rewrite their parts freely.

    ``apply_mode`` is the server-side-apply approximation: ``$`` keys are plain unknown
    fields and nulls are ignored rather than deleting."""

    def __init__(self, apply_mode: bool = False) -> None:
        self.apply_mode = apply_mode

    # -- maps

    def merge_map(self, original: dict[str, Any], patch: dict[str, Any], meta: PatchMeta,
                  path: str) -> dict[str, Any]:
        if _DIRECTIVE in patch and not self.apply_mode:
            directive = patch.pop(_DIRECTIVE)
            if directive == "replace":
                return self.merge_map({}, patch, meta, path)
            if directive == "delete":
                return {}
            if directive != "merge":  # "merge" is what happens anyway
                raise bad_request(f"unknown patch type: {_go_value(directive)} in map: {_go_value(patch)}")

        retain = patch.pop(_RETAIN_KEYS, _ABSENT) if not self.apply_mode else _ABSENT
        if retain is not _ABSENT:
            self.retain_keys(original, patch, retain)

        orders = {k: patch.pop(k) for k in list(patch) if k.startswith(_SET_ELEMENT_ORDER) and not self.apply_mode}
        deletions = {k: patch.pop(k) for k in list(patch)
                     if k.startswith(_DELETE_FROM_PRIMITIVE_LIST) and not self.apply_mode}
        for key, order in orders.items():
            self.set_element_order(original, patch, key, order, meta, path)

        for key, value in patch.items():
            child_path = _join(path, key)
            if key.startswith("$"):
                raise _rejected(f'strict decoding error: unknown field "{child_path}"')
            child = meta.fields.get(key, _LEAF)
            if value is None:
                if not self.apply_mode:
                    original.pop(key, None)
                continue
            current = original.get(key)
            if isinstance(current, dict) and isinstance(value, dict):
                original[key] = self.merge_map(current, value, child, child_path)
            elif isinstance(current, list) and isinstance(value, list) and child.merges_list:
                original[key] = self.merge_list(current, value, child, child_path)
            else:
                # Absent, null, a different type, a scalar, or a list without a merge
                # strategy: the patch value replaces it (cleaned of directives and nulls).
                original[key] = self.fresh(value, child, child_path)

        for key, items in deletions.items():
            target = _directive_target(key, _DELETE_FROM_PRIMITIVE_LIST, "invalid patch format of primitive list")
            if not isinstance(items, list):
                raise bad_request("invalid patch format of primitive list")
            current = original.get(target)
            if isinstance(current, list) and current:
                if isinstance(current[0], dict | list):
                    raise bad_request("invalid patch format of primitive list")
                original[target] = [v for v in current if not any(_same(v, d) for d in items)]
        return original

    def retain_keys(self, original: dict[str, Any], patch: dict[str, Any], retain: Any) -> None:
        """``$retainKeys``: keys of the live map not listed are cleared; the patch may only
        set listed keys (it names the union member being kept)."""
        if not isinstance(retain, list):
            raise bad_request("invalid patch format of retainKeys")
        for key, value in patch.items():
            if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
                continue
            if key not in retain:
                raise bad_request("invalid patch format of retainKeys")
        for key in list(original):
            if key not in retain:
                del original[key]

    def set_element_order(self, original: dict[str, Any], patch: dict[str, Any], key: str, order: Any,
                          meta: PatchMeta, path: str) -> None:
        """``$setElementOrder/<field>``: merge the field's patch list, then order the result
        as the directive says, keeping server-only items near their live neighbours."""
        target = _directive_target(key, _SET_ELEMENT_ORDER, "invalid patch format of setElementOrder list")
        if not isinstance(order, list):
            raise bad_request("invalid patch format of setElementOrder list")
        child = meta.fields.get(target, _LEAF)
        if not child.merges_list:
            return  # ordering a replaced list means nothing: the patch list is the order
        child_path = _join(path, target)
        current = original.get(target, _ABSENT)
        change = patch.pop(target, _ABSENT)
        if current is not _ABSENT and not isinstance(current, list):
            raise bad_request(f"expected a []interface {{}}, but received a {_json_type(current)}")
        if change is not _ABSENT and not isinstance(change, list):
            raise bad_request(f"expected a []interface {{}}, but received a {_json_type(change)}")
        self.check_order(change if isinstance(change, list) else [], order, child.merge_key)
        live: list[Any] = current if isinstance(current, list) else []
        if isinstance(current, list) and isinstance(change, list):
            merged = self.merge_list(current, change, child, child_path)
        elif isinstance(change, list):
            merged = self.fresh(change, child, child_path)
        elif isinstance(current, list):
            merged = current
        else:
            return
        patch_items, server_only = _partition(merged, order, child.merge_key)
        original[target] = _normalize_order(patch_items, server_only, order, live, child.merge_key)

    @staticmethod
    def check_order(change: list[Any], order: list[Any], merge_key: str | None) -> None:
        """The patch list must follow ``$setElementOrder`` (deletions aside)."""
        if not change or not order:
            return
        items = [v for v in change if not (isinstance(v, dict) and _DIRECTIVE in v)]
        if merge_key is not None:
            _require_merge_key(items + order, merge_key)
        i = j = 0
        while i < len(items) and j < len(order):
            if _index([order[j]], items[i], merge_key) == 0:
                i += 1
            j += 1
        if i < len(items):
            raise bad_request(f"The order in patch list:\n{_go_value(change)}\n doesn't match "
                              f"{_SET_ELEMENT_ORDER} list:\n{_go_value(order)}\n")

    # -- lists

    def merge_list(self, original: list[Any], patch: list[Any], meta: PatchMeta, path: str) -> list[Any]:
        """A list with the merge strategy: scalars form an ordered set, objects merge by key."""
        if not original and not patch:
            return original
        kind = _element_kind(original + patch)
        key = meta.merge_key
        if kind != "an object":
            merged: list[Any] = []
            for item in original + patch:
                if _index(merged, item, None) < 0:
                    merged.append(item)
            patch_items, server_only = _partition(merged, patch, None)
            return _normalize_order(patch_items, server_only, patch, original, None)
        if key is None:
            raise bad_request("cannot merge lists without merge key for type map")

        plain: list[dict[str, Any]] = []
        replace = False
        for item in patch:
            if _DIRECTIVE not in item or self.apply_mode:
                plain.append(item)
                continue
            directive = item[_DIRECTIVE]
            if directive == "delete":
                if key not in item:
                    raise bad_request(f"map: {_go_value(item)} does not contain declared merge key: {key}")
                original = [o for o in original if not (key in o and _same(o[key], item[key]))]
            elif directive == "replace":
                replace = True
            elif directive == "merge":
                raise bad_request("merging lists cannot yet be specified in the patch")
            else:
                raise bad_request(f"unknown patch type: {_go_value(directive)} in map: {_go_value(item)}")
        if replace:
            # "$patch: replace" as an element: the other elements are the whole new list.
            original, plain = [self.fresh(i, meta, path) for i in plain], []

        element = PatchMeta(fields=meta.fields)
        merged = list(original)
        for item in plain:
            if key not in item:
                raise bad_request(f"map: {_go_value(item)} does not contain declared merge key: {key}")
            i = _index(merged, item, key)
            if i >= 0:
                merged[i] = self.merge_map(merged[i], item, element, path)
            else:
                merged.append(self.merge_map({}, item, element, path))
        patch_items, server_only = _partition(merged, plain, key)
        return _normalize_order(patch_items, server_only, plain, original, key)

    # -- values with nothing to merge into

    def fresh(self, value: Any, meta: PatchMeta, path: str) -> Any:
        """A patch value landing where the live object has nothing comparable: merged into
        nothing, so directives are applied and nulls dropped rather than stored."""
        if isinstance(value, dict):
            return self.merge_map({}, value, meta, path)
        if isinstance(value, list):
            element = PatchMeta(fields=meta.fields)
            out: list[Any] = []
            for item in value:
                if isinstance(item, dict):
                    if meta.merges_list and meta.merge_key and _DIRECTIVE in item and not self.apply_mode:
                        directive = item[_DIRECTIVE]
                        if directive in ("delete", "replace"):
                            continue  # nothing to delete; "replace" marks the rest as the list
                        if directive == "merge":
                            raise bad_request("merging lists cannot yet be specified in the patch")
                        raise bad_request(f"unknown patch type: {_go_value(directive)} in map: {_go_value(item)}")
                    out.append(self.merge_map({}, item, element, path))
                elif isinstance(item, list):
                    out.append(self.fresh(item, _LEAF, path))
                else:
                    out.append(item)
            return out
        return value


def apply_strategic_merge_patch(original: dict[str, Any], patch: Any, kind: str) -> dict[str, Any]:
    """Kubernetes' strategic merge patch of an object of ``kind``.

    Maps merge and ``null`` deletes; lists whose field has ``patchStrategy: merge`` merge
    element-wise (objects by their merge key, scalars as an ordered set); other lists are
    replaced. Directives: ``$patch: replace|delete`` in maps and list elements (``merge``
    is accepted in maps, where it is the default, and refused in list elements as Kubernetes
    does), ``$setElementOrder/<field>``, ``$retainKeys``, ``$deleteFromPrimitiveList/<field>``.
    Any other ``$`` key is an unknown field (422). Other malformed patches are 400, except
    lists of lists (422), as apiserver's interpretStrategicMergePatchError maps them.
    """
    if not isinstance(patch, dict):
        raise bad_request(f"error decoding patch: a strategic merge patch must be a JSON object, "
                          f"not {_json_type(patch)}")
    meta = _KINDS.get(kind, _GENERIC_OBJECT)
    return _StrategicMerge().merge_map(copy.deepcopy(original), copy.deepcopy(patch), meta, "")


def _apply_configuration(original: dict[str, Any], config: Any, kind: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise bad_request(f"error decoding YAML: an apply configuration must be an object, not {_json_type(config)}")
    config_kind = config.get("kind")
    if kind and config_kind and config_kind != kind:
        raise bad_request(f'the apply configuration is for kind "{config_kind}", not "{kind}"')
    meta = _KINDS.get(kind, _GENERIC_OBJECT)
    return _StrategicMerge(apply_mode=True).merge_map(copy.deepcopy(original), copy.deepcopy(config), meta, "")


# --------------------------------------------------------------------------- dispatch

def _decode_json(body: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")

    try:
        return json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError as e:
        raise bad_request(f"error decoding patch: body is not UTF-8: {e}") from None
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise bad_request(f"error decoding patch: {e}") from None


def _decode_yaml(body: bytes) -> Any:
    try:
        return yaml.safe_load(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise bad_request(f"error decoding YAML: body is not UTF-8: {e}") from None
    except yaml.YAMLError as e:
        raise bad_request(f"error decoding YAML: {e}") from None


def apply_patch(content_type: str, original: dict[str, Any], body: bytes, kind: str) -> dict[str, Any]:
    """Apply a PATCH request body to ``original`` according to its Content-Type.

    ``application/apply-patch+yaml`` (server-side apply) is approximated: the body, YAML or
    JSON, is the caller's full desired configuration and is merged over the live object
    like a strategic merge patch that never deletes — fields the configuration leaves out
    are kept, ``null`` values are ignored, ``$`` directives are not interpreted (they are
    unknown fields), and lists with a merge key merge by that key. Field ownership
    (managedFields, conflicts, ``force``) is not tracked, so removing a field from an
    applied configuration does not remove it from the object.

    A body that does not decode is 400; an unknown content type is 415.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == JSON_PATCH:
        return apply_json_patch(original, _decode_json(body))
    if media_type == MERGE_PATCH:
        return apply_merge_patch(original, _decode_json(body))
    if media_type == STRATEGIC_MERGE_PATCH:
        return apply_strategic_merge_patch(original, _decode_json(body), kind)
    if media_type == APPLY_PATCH:
        return _apply_configuration(original, _decode_yaml(body), kind)
    raise unsupported_media_type(content_type)

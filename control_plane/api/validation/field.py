"""Field paths, Kubernetes field errors, and typed reads of untrusted JSON.

Mirrors k8s.io/apimachinery/pkg/util/validation/field: paths print as
``spec.containers[0].name`` and ``metadata.labels[app]``, and each error renders its body
the way ``field.Error.ErrorBody()`` does (``Invalid value: "x": detail``).

Every read of request data goes through the ``get_*`` helpers below. A value of the wrong
JSON type becomes a ``FieldValueTypeInvalid`` cause (worded like the API server's schema
errors) and the validator carries on with an empty value, so no input can make a
validator raise. JSON ``null`` means "not set", as it does when Go decodes into a pointer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from control_plane.api.errors import Cause

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
FORBIDDEN = "FieldValueForbidden"
TYPE_INVALID = "FieldValueTypeInvalid"
NOT_FOUND = "FieldValueNotFound"

INT32 = 32
INT64 = 64

Obj = dict[str, Any]


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def key(path: str, k: str) -> str:
    return f"{path}[{k}]"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _render(value: Any, depth: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 4000:
        return "<integer too large>"  # str(int) refuses more than 4300 digits
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if depth >= 4:
        return "{...}" if isinstance(value, dict) else "[...]"
    if isinstance(value, dict):
        items = (f"{_render(str(k), depth + 1)}:{_render(v, depth + 1)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_render(v, depth + 1) for v in value) + "]"
    return json.dumps(str(value))


def render_value(value: Any) -> str:
    """A bad value as Kubernetes prints it: strings quoted, numbers bare, objects as JSON."""
    return _render(value, 0)


class ErrorList(list[Cause]):
    """Causes in the order found; one method per ``field.*`` constructor."""

    def required(self, path: str, detail: str = "") -> None:
        self._add(path, REQUIRED, "Required value", detail)

    def forbidden(self, path: str, detail: str) -> None:
        self._add(path, FORBIDDEN, "Forbidden", detail)

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self._add(path, INVALID, f"Invalid value: {render_value(value)}", detail)

    def not_supported(self, path: str, value: Any, supported: Iterable[str]) -> None:
        quoted = ", ".join(json.dumps(v) for v in supported)
        self._add(path, NOT_SUPPORTED, f"Unsupported value: {render_value(value)}", f"supported values: {quoted}")

    def duplicate(self, path: str, value: Any, detail: str = "") -> None:
        self._add(path, DUPLICATE, f"Duplicate value: {render_value(value)}", detail)

    def not_found(self, path: str, value: Any) -> None:
        self._add(path, NOT_FOUND, f"Not found: {render_value(value)}", "")

    def too_long(self, path: str, max_bytes: int) -> None:
        self._add(path, TOO_LONG, "Too long", f"must have at most {max_bytes} bytes")

    def too_many(self, path: str, actual: int, max_items: int) -> None:
        self._add(path, TOO_MANY, f"Too many: {actual}", f"must have at most {max_items} items")

    def type_invalid(self, path: str, value: Any, want: str) -> None:
        got = json_type(value)
        self._add(path, TYPE_INVALID, f'Invalid value: "{got}"', f'{path} in body must be of type {want}: "{got}"')

    def enum(self, value: str, path: str, supported: tuple[str, ...], required: bool = True) -> None:
        """An enumerated string: Required when empty (if required), NotSupported when unknown."""
        if not value:
            if required:
                self.required(path)
        elif value not in supported:
            self.not_supported(path, value, supported)

    def invalid_each(self, path: str, value: Any, messages: Iterable[str]) -> None:
        for msg in messages:
            self.invalid(path, value, msg)

    def _add(self, path: str, type_: str, body: str, detail: str) -> None:
        self.append(Cause(path, type_, f"{body}: {detail}" if detail else body))


# --- typed reads -------------------------------------------------------------------------

_RANGES = {bits: (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (INT32, INT64)}


def _bits_range(bits: int) -> tuple[int, int]:
    return _RANGES.get(bits) or (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def opt_str(errs: ErrorList, obj: Obj, name: str, path: str) -> str | None:
    value = obj.get(name)
    if value is None or isinstance(value, str):
        return value
    errs.type_invalid(child(path, name), value, "string")
    return None


def get_str(errs: ErrorList, obj: Obj, name: str, path: str) -> str:
    return opt_str(errs, obj, name, path) or ""


def as_int(errs: ErrorList, value: Any, path: str, bits: int = INT32) -> int | None:
    """An integer field's value; integral floats (``3.0``) are accepted."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        errs.type_invalid(path, value, "integer")
        return None
    lo, hi = _bits_range(bits)
    if not lo <= value <= hi:
        errs.invalid(path, value, f"must be between {lo} and {hi}, inclusive")
        return None
    return value


def opt_int(errs: ErrorList, obj: Obj, name: str, path: str, bits: int = INT32) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is int:  # the common case, without building the path
        lo, hi = _bits_range(bits)
        if lo <= value <= hi:
            return value
    return as_int(errs, value, child(path, name), bits)


def opt_bool(errs: ErrorList, obj: Obj, name: str, path: str) -> bool | None:
    value = obj.get(name)
    if value is None or isinstance(value, bool):
        return value
    errs.type_invalid(child(path, name), value, "boolean")
    return None


def opt_dict(errs: ErrorList, obj: Obj, name: str, path: str) -> Obj | None:
    value = obj.get(name)
    if value is None or isinstance(value, dict):
        return value
    errs.type_invalid(child(path, name), value, "object")
    return None


def get_dict(errs: ErrorList, obj: Obj, name: str, path: str) -> Obj:
    value = opt_dict(errs, obj, name, path)
    return value if value is not None else {}


def get_list(errs: ErrorList, obj: Obj, name: str, path: str) -> list[Any]:
    value = obj.get(name)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    errs.type_invalid(child(path, name), value, "array")
    return []


def dict_items(errs: ErrorList, obj: Obj, name: str, path: str) -> Iterator[tuple[int, Obj, str]]:
    """(index, item, item path) for a list of objects; other items are type errors."""
    value = obj.get(name)
    if value is None or (type(value) is list and not value):
        return iter(())  # most optional lists are absent: no paths to build
    return _dict_items(errs, obj, name, path)


def _dict_items(errs: ErrorList, obj: Obj, name: str, path: str) -> Iterator[tuple[int, Obj, str]]:
    list_path = child(path, name)
    for i, item in enumerate(get_list(errs, obj, name, path)):
        item_path = index(list_path, i)
        if isinstance(item, dict):
            yield i, item, item_path
        elif item is not None:
            errs.type_invalid(item_path, item, "object")


def get_str_list(errs: ErrorList, obj: Obj, name: str, path: str) -> list[str]:
    list_path = child(path, name)
    out: list[str] = []
    for i, item in enumerate(get_list(errs, obj, name, path)):
        if isinstance(item, str):
            out.append(item)
        else:
            errs.type_invalid(index(list_path, i), item, "string")
    return out


def get_str_map(errs: ErrorList, obj: Obj, name: str, path: str) -> dict[str, str]:
    """A map[string]string (labels, annotations, selectors, configmap data)."""
    map_path = child(path, name)
    out: dict[str, str] = {}
    for k, v in get_dict(errs, obj, name, path).items():
        if isinstance(v, str):
            out[k] = v
        elif v is not None:
            errs.type_invalid(key(map_path, k), v, "string")
    return out


def int_or_string(errs: ErrorList, obj: Obj, name: str, path: str) -> int | str | None:
    """An IntOrString field (ports, maxSurge); None when unset."""
    value = obj.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return as_int(errs, value, child(path, name))
    errs.type_invalid(child(path, name), value, "integer or string")
    return None


def scratch() -> ErrorList:
    """A throwaway list, for reading stored objects whose type errors are not the caller's."""
    return ErrorList()

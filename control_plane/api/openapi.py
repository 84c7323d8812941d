"""The OpenAPI documents kubectl fetches before ``apply``: ``/openapi/v2`` and ``/openapi/v3``.

What the clients do with them (found by running kubectl 1.20 and 1.35 against these
documents, and from kubectl's ``apply/patcher.go`` and ``resource/query_param_verifier*.go``):

- kubectl 1.20 ``apply`` refuses to run unless ``/openapi/v2`` answers with the gnostic
  ``openapi_v2.Document`` protobuf. It validates a manifest against the definition whose
  ``x-kubernetes-group-version-kind`` names the manifest's kind, and *also* computes its
  strategic merge patch from that definition. A definition without the complete
  Kubernetes schema (patch merge keys and all) would make it reject valid manifests or
  send different patches, so the v2 document carries the operations but no definitions
  for the served kinds: kubectl then skips client-side validation and falls back to the
  patch metadata compiled into it, which is exactly Kubernetes' own.
- kubectl 1.35 asks ``/openapi/v3`` and the group-version document it points to whether
  the PATCH operation of the kind takes the ``fieldValidation`` query parameter. If it
  does, validation is left to the server (``fieldValidation=Strict``). If ``/openapi/v3``
  is missing it falls back to the v2 document, and without the parameter there it
  validates client-side against v2 definitions (none here, so it skips). The PATCH
  request body deliberately does not list ``application/strategic-merge-patch+json``:
  kubectl would then compute the patch from ``components.schemas``, which are only a
  sketch of each kind (enough for ``kubectl explain``), instead of its compiled-in types.

The protobuf is written by hand with a minimal wire-format writer; field numbers are
those of gnostic's ``openapiv2/OpenAPIv2.proto``. Vendor extension values travel as YAML
text (``Any.yaml``); JSON is valid YAML, so they are written as JSON.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import struct
from collections.abc import Iterable
from typing import Any

from skiff.api.resources import GROUP_ORDER, REGISTRY, ResourceType

V2_PROTOBUF_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
PROTOBUF_CONTENT_TYPE = V2_PROTOBUF_CONTENT_TYPE  # the name server.py uses
KUBERNETES_VERSION = "v1.30.0"

_GVK = "x-kubernetes-group-version-kind"
_ACTION = "x-kubernetes-action"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"

# The patch content types Skiff accepts. Strategic merge patch is served too, but it is
# left out of the v3 document on purpose (see the module docstring).
_PATCH_TYPES_V3 = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")
_PATCH_TYPES_V2 = _PATCH_TYPES_V3[:2] + ("application/strategic-merge-patch+json",) + _PATCH_TYPES_V3[2:]

_QUERY_PARAMS: tuple[tuple[str, str, str], ...] = (
    ("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or "
                         "unrecognized dryRun directive will result in an error response and no further processing "
                         "of the request. Valid values are: - All: all dry run stages will be processed"),
    ("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these "
                               "changes. The value must be less than or 128 characters long, and only contain "
                               "printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint."),
    ("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request "
                                  "(POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: "
                                  "- Ignore - Warn - Strict"),
    ("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting "
                         "fields owned by other people. Force flag must be unset for non-apply patch requests."),
)


def definition_name(rt: ResourceType) -> str:
    """Kubernetes' OpenAPI name for a kind, e.g. ``io.k8s.api.apps.v1.Deployment``."""
    package = rt.group.split(".")[0] if rt.group else "core"
    return f"io.k8s.api.{package}.{rt.version}.{rt.kind}"


def _gvk(rt: ResourceType) -> dict[str, str]:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _object_path(rt: ResourceType) -> str:
    return rt.path("{namespace}" if rt.namespaced else None, "{name}")


def _operation_id(rt: ResourceType) -> str:
    group = rt.group.split(".")[0].capitalize() if rt.group else "Core"
    scope = "Namespaced" if rt.namespaced else ""
    return f"patch{group}{rt.version.capitalize()}{scope}{rt.kind}"


def _path_params(rt: ResourceType) -> list[dict[str, Any]]:
    params = [{"name": "name", "in": "path", "required": True, "type": "string", "uniqueItems": True,
               "description": f"name of the {rt.kind}"}]
    if rt.namespaced:
        params.append({"name": "namespace", "in": "path", "required": True, "type": "string", "uniqueItems": True,
                       "description": "object name and auth scope, such as for teams and projects"})
    return params


# --- OpenAPI v2 ---------------------------------------------------------------------------

def _v2_patch_operation(rt: ResourceType) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "body", "in": "body", "required": True, "schema": {"type": "object"}},
    ]
    params += [{"name": name, "in": "query", "type": typ, "uniqueItems": True, "description": doc}
               for name, typ, doc in _QUERY_PARAMS]
    return {
        "description": f"partially update the specified {rt.kind}",
        "consumes": list(_PATCH_TYPES_V2),
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "tags": [_tag(rt)],
        "operationId": _operation_id(rt),
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "201": {"description": "Created"},
                      "401": {"description": "Unauthorized"}},
        _ACTION: "patch",
        _GVK: _gvk(rt),
    }


def _tag(rt: ResourceType) -> str:
    return f"{rt.group.split('.')[0]}_{rt.version}" if rt.group else f"core_{rt.version}"


@functools.cache
def _v2_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for rt in REGISTRY.types:
        if "patch" in rt.verbs:
            paths[_object_path(rt)] = {"patch": _v2_patch_operation(rt), "parameters": _path_params(rt)}
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        # No definitions for the served kinds on purpose: see the module docstring.
        "definitions": {},
    }


def openapi_v2_json() -> dict[str, Any]:
    """The ``/openapi/v2`` document as JSON (``Accept: application/json``)."""
    return copy.deepcopy(_v2_document())


@functools.cache
def openapi_v2_protobuf() -> bytes:
    """The ``/openapi/v2`` document as a gnostic ``openapi_v2.Document`` protobuf.

    Serve it with ``Content-Type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf``
    (``V2_PROTOBUF_CONTENT_TYPE``) whenever ``Accept`` asks for protobuf.
    """
    return encode_v2_document(_v2_document())


# --- OpenAPI v3 ---------------------------------------------------------------------------

def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _parse_group_version(group_version: str) -> tuple[str, str] | None:
    """``api/v1`` or ``apis/apps/v1`` (as in the v3 discovery document), or ``v1``/``apps/v1``."""
    parts = group_version.strip("/").split("/")
    if parts[0] == "api" and len(parts) == 2:
        return "", parts[1]
    if parts[0] == "apis" and len(parts) == 3:
        return parts[1], parts[2]
    if len(parts) == 1 and parts[0]:
        return "", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    return None


def _v3_schema(rt: ResourceType) -> dict[str, Any]:
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "description": f"{rt.kind} as served by Skiff; fields follow Kubernetes {rt.api_version} {rt.kind}.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this "
                                                            "representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource "
                                                      "this object represents."},
            "metadata": {"allOf": [{"$ref": f"#/components/schemas/{_META}.ObjectMeta"}], "default": {},
                         "description": "Standard object's metadata."},
            "spec": dict(open_object, description=f"Specification of the desired behavior of the {rt.kind}."),
            "status": dict(open_object, description=f"Most recently observed status of the {rt.kind}."),
        },
        _GVK: [_gvk(rt)],
    }


_OBJECT_META_SCHEMA: dict[str, Any] = {
    "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects "
                   "users must create.",
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace."},
        "namespace": {"type": "string", "description": "Namespace defines the space within which each name must "
                                                       "be unique."},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "default": ""},
                   "description": "Map of string keys and values that can be used to organize and categorize "
                                  "(scope and select) objects."},
        "annotations": {"type": "object", "additionalProperties": {"type": "string", "default": ""},
                        "description": "Annotations is an unstructured key value map stored with a resource that "
                                       "may be set by external tools to store and retrieve arbitrary metadata."},
    },
}


def _v3_patch_operation(rt: ResourceType) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{definition_name(rt)}"}
    return {
        "tags": [_tag(rt)],
        "description": f"partially update the specified {rt.kind}",
        "operationId": _operation_id(rt),
        "parameters": [{"name": name, "in": "query", "description": doc,
                        "schema": {"type": typ, "uniqueItems": True}} for name, typ, doc in _QUERY_PARAMS],
        "requestBody": {"content": {ct: {"schema": {"type": "object"}} for ct in _PATCH_TYPES_V3}, "required": True},
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}},
            "201": {"description": "Created", "content": {"application/json": {"schema": ref}}},
        },
        _ACTION: "patch",
        _GVK: _gvk(rt),
    }


@functools.cache
def _v3_group(group: str, version: str) -> str | None:
    types = REGISTRY.in_group_version(group, version)
    if not types:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {f"{_META}.ObjectMeta": _OBJECT_META_SCHEMA}
    for rt in types:
        schemas[definition_name(rt)] = _v3_schema(rt)
        if "patch" not in rt.verbs:
            continue
        paths[_object_path(rt)] = {
            "patch": _v3_patch_operation(rt),
            "parameters": [{"name": p["name"], "in": "path", "required": True, "description": p["description"],
                            "schema": {"type": "string", "uniqueItems": True}} for p in _path_params(rt)],
        }
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    return json.dumps(doc, sort_keys=True)


def openapi_v3_group(group_version: str) -> dict[str, Any] | None:
    """The ``/openapi/v3/<path>`` document for ``api/v1``, ``apis/apps/v1`` (or ``v1``,
    ``apps/v1``); None for a group version Skiff does not serve (answer 404)."""
    parsed = _parse_group_version(group_version)
    if parsed is None:
        return None
    text = _v3_group(*parsed)
    return None if text is None else dict(json.loads(text))


def openapi_v3_hash(group_version: str) -> str | None:
    """The content hash of a group version's document, as in its ``serverRelativeURL``."""
    parsed = _parse_group_version(group_version)
    text = None if parsed is None else _v3_group(*parsed)
    return None if text is None else hashlib.sha512(text.encode()).hexdigest().upper()


def openapi_v3_root() -> dict[str, Any]:
    """The ``/openapi/v3`` discovery document: one ``serverRelativeURL`` per group version."""
    paths: dict[str, Any] = {}
    versions = REGISTRY.group_versions()
    for group in sorted(versions, key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g)):
        for version in versions[group]:
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={openapi_v3_hash(path)}"}
    return {"paths": paths}


# --- protobuf wire format ---------------------------------------------------------------

def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Writer:
    """Appends proto3 fields; default values (empty, zero, false) are omitted as proto3 does."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def bytes_field(self, number: int, data: bytes, *, keep_empty: bool = False) -> None:
        if data or keep_empty:
            self._buf += _varint(number << 3 | 2) + _varint(len(data)) + data

    def string(self, number: int, value: Any) -> None:
        if isinstance(value, str) and value:
            self.bytes_field(number, value.encode())

    def strings(self, number: int, values: Any) -> None:
        for value in values if isinstance(values, list) else []:
            if isinstance(value, str):
                self.bytes_field(number, value.encode(), keep_empty=True)

    def boolean(self, number: int, value: Any) -> None:
        if value is True:
            self._buf += _varint(number << 3) + b"\x01"

    def int64(self, number: int, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value != 0:
            self._buf += _varint(number << 3) + _varint(value)

    def double(self, number: int, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and value != 0:
            self._buf += _varint(number << 3 | 1) + struct.pack("<d", float(value))

    def oneof_boolean(self, number: int, value: bool) -> None:
        """A bool inside a oneof: written even when false, since being set is what counts."""
        self._buf += _varint(number << 3) + (b"\x01" if value else b"\x00")

    def message(self, number: int, data: bytes) -> None:
        """A submessage; written even when empty, since presence matters for messages."""
        self.bytes_field(number, data, keep_empty=True)

    def getvalue(self) -> bytes:
        return bytes(self._buf)


def _any(value: Any) -> bytes:
    w = _Writer()
    w.string(2, json.dumps(value, sort_keys=True))  # Any.yaml
    return w.getvalue()


def _named(name: str, value: bytes) -> bytes:
    w = _Writer()
    w.bytes_field(1, name.encode(), keep_empty=True)
    w.message(2, value)
    return w.getvalue()


def _extensions(w: _Writer, number: int, obj: dict[str, Any]) -> None:
    for key, value in obj.items():
        if key.startswith("x-"):
            w.message(number, _named(key, _any(value)))


def encode_schema(schema: dict[str, Any]) -> bytes:
    """A JSON schema as gnostic ``openapi_v2.Schema``."""
    w = _Writer()
    w.string(1, schema.get("$ref"))
    w.string(2, schema.get("format"))
    w.string(3, schema.get("title"))
    w.string(4, schema.get("description"))
    if "default" in schema:
        w.message(5, _any(schema["default"]))
    w.double(6, schema.get("multipleOf"))
    w.double(7, schema.get("maximum"))
    w.boolean(8, schema.get("exclusiveMaximum"))
    w.double(9, schema.get("minimum"))
    w.boolean(10, schema.get("exclusiveMinimum"))
    w.int64(11, schema.get("maxLength"))
    w.int64(12, schema.get("minLength"))
    w.string(13, schema.get("pattern"))
    w.int64(14, schema.get("maxItems"))
    w.int64(15, schema.get("minItems"))
    w.boolean(16, schema.get("uniqueItems"))
    w.int64(17, schema.get("maxProperties"))
    w.int64(18, schema.get("minProperties"))
    w.strings(19, schema.get("required"))
    for value in schema.get("enum") or []:
        w.message(20, _any(value))
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        item = _Writer()
        item.message(1, encode_schema(additional))
        w.message(21, item.getvalue())
    elif isinstance(additional, bool):
        item = _Writer()
        item.oneof_boolean(2, additional)
        w.message(21, item.getvalue())
    typ = schema.get("type")
    if typ is not None:
        type_item = _Writer()
        type_item.strings(1, typ if isinstance(typ, list) else [typ])
        w.message(22, type_item.getvalue())
    items = schema.get("items")
    if isinstance(items, dict | list):
        items_item = _Writer()
        for sub in items if isinstance(items, list) else [items]:
            items_item.message(1, encode_schema(sub))
        w.message(23, items_item.getvalue())
    for sub in schema.get("allOf") or []:
        w.message(24, encode_schema(sub))
    properties = schema.get("properties")
    if isinstance(properties, dict):
        props = _Writer()
        for name, sub in properties.items():
            props.message(1, _named(name, encode_schema(sub)))
        w.message(25, props.getvalue())
    w.string(26, schema.get("discriminator"))
    w.boolean(27, schema.get("readOnly"))
    _extensions(w, 31, schema)
    return w.getvalue()


def _encode_parameter(param: dict[str, Any]) -> bytes:
    """A body, query or path parameter (or a ``$ref``) as gnostic ``ParametersItem``."""
    parameter = _Writer()
    if "$ref" in param:
        ref = _Writer()
        ref.string(1, param["$ref"])
        item = _Writer()
        item.message(2, ref.getvalue())
        return item.getvalue()
    where = param.get("in")
    if where == "body":
        body = _Writer()
        body.string(1, param.get("description"))
        body.string(2, param.get("name"))
        body.string(3, where)
        body.boolean(4, param.get("required"))
        if isinstance(param.get("schema"), dict):
            body.message(5, encode_schema(param["schema"]))
        _extensions(body, 6, param)
        parameter.message(1, body.getvalue())
    elif where in ("query", "path"):
        # QueryParameterSubSchema and PathParameterSubSchema differ in their numbering after `name`.
        is_query = where == "query"
        sub = _Writer()
        sub.boolean(1, param.get("required"))
        sub.string(2, where)
        sub.string(3, param.get("description"))
        sub.string(4, param.get("name"))
        if is_query:
            sub.boolean(5, param.get("allowEmptyValue"))
        offset = 1 if is_query else 0
        sub.string(5 + offset, param.get("type"))
        sub.string(6 + offset, param.get("format"))
        sub.boolean(19 + offset, param.get("uniqueItems"))
        _extensions(sub, 22 + offset, param)
        non_body = _Writer()
        non_body.message(3 if is_query else 4, sub.getvalue())
        parameter.message(2, non_body.getvalue())
    item = _Writer()
    item.message(1, parameter.getvalue())
    return item.getvalue()


def _encode_responses(responses: dict[str, Any]) -> bytes:
    w = _Writer()
    for code, response in responses.items():
        resp = _Writer()
        resp.string(1, response.get("description"))
        if isinstance(response.get("schema"), dict):
            schema_item = _Writer()
            schema_item.message(1, encode_schema(response["schema"]))
            resp.message(2, schema_item.getvalue())
        value = _Writer()
        value.message(1, resp.getvalue())
        w.message(1, _named(code, value.getvalue()))
    return w.getvalue()


def _encode_operation(op: dict[str, Any]) -> bytes:
    w = _Writer()
    w.strings(1, op.get("tags"))
    w.string(2, op.get("summary"))
    w.string(3, op.get("description"))
    w.string(5, op.get("operationId"))
    w.strings(6, op.get("produces"))
    w.strings(7, op.get("consumes"))
    for param in op.get("parameters") or []:
        w.message(8, _encode_parameter(param))
    if isinstance(op.get("responses"), dict):
        w.message(9, _encode_responses(op["responses"]))
    w.strings(10, op.get("schemes"))
    w.boolean(11, op.get("deprecated"))
    _extensions(w, 13, op)
    return w.getvalue()


_PATH_ITEM_OPERATIONS = (("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("options", 6), ("head", 7),
                         ("patch", 8))


def _encode_path_item(item: dict[str, Any]) -> bytes:
    w = _Writer()
    w.string(1, item.get("$ref"))
    for method, number in _PATH_ITEM_OPERATIONS:
        if isinstance(item.get(method), dict):
            w.message(number, _encode_operation(item[method]))
    for param in item.get("parameters") or []:
        w.message(9, _encode_parameter(param))
    _extensions(w, 10, item)
    return w.getvalue()


def _named_all(entries: Iterable[tuple[str, bytes]]) -> bytes:
    w = _Writer()
    for name, value in entries:
        w.message(1, _named(name, value))
    return w.getvalue()


def encode_v2_document(doc: dict[str, Any]) -> bytes:
    """A Swagger 2.0 document (as JSON) as gnostic ``openapi_v2.Document``."""
    w = _Writer()
    w.string(1, doc.get("swagger"))
    info = doc.get("info")
    if isinstance(info, dict):
        info_w = _Writer()
        info_w.string(1, info.get("title"))
        info_w.string(2, info.get("version"))
        info_w.string(3, info.get("description"))
        _extensions(info_w, 7, info)
        w.message(2, info_w.getvalue())
    w.string(3, doc.get("host"))
    w.string(4, doc.get("basePath"))
    w.strings(5, doc.get("schemes"))
    w.strings(6, doc.get("consumes"))
    w.strings(7, doc.get("produces"))
    paths = doc.get("paths")
    if isinstance(paths, dict):
        paths_w = _Writer()
        _extensions(paths_w, 1, paths)
        for name, item in paths.items():
            if not name.startswith("x-"):
                paths_w.message(2, _named(name, _encode_path_item(item)))
        w.message(8, paths_w.getvalue())
    definitions = doc.get("definitions")
    if isinstance(definitions, dict):
        w.message(9, _named_all((name, encode_schema(s)) for name, s in definitions.items()))
    _extensions(w, 16, doc)
    return w.getvalue()

"""The OpenAPI documents kubectl 1.20 (v2 protobuf) and 1.35 (v3 JSON) read before ``apply``."""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import pytest
import yaml

from control_plane.api import openapi
from skiff.api.resources import REGISTRY, ResourceType

# --- a minimal protobuf wire-format reader ------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs; length-delimited values stay bytes, fixed64 becomes a float."""
    out: list[tuple[int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = struct.unpack("<d", data[pos:pos + 8])[0], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.append((number, value))
    assert pos == len(data)
    return out


def all_of(data: bytes, number: int) -> list[Any]:
    return [v for n, v in fields(data) if n == number]


def one(data: bytes, number: int) -> Any:
    values = all_of(data, number)
    assert len(values) == 1, (number, values)
    return values[0]


def text(data: bytes, number: int) -> str:
    values = all_of(data, number)
    return values[0].decode() if values else ""


def named(data: bytes, number: int) -> dict[str, bytes]:
    """A repeated Named* message (name = 1, value = 2) as a dict."""
    return {text(entry, 1): one(entry, 2) for entry in all_of(data, number)}


def extensions(data: bytes, number: int) -> dict[str, Any]:
    """Vendor extensions: NamedAny whose Any carries YAML text in field 2, as kubectl reads them."""
    return {name: yaml.safe_load(text(value, 2)) for name, value in named(data, number).items()}


def patchable() -> list[ResourceType]:
    return [rt for rt in REGISTRY.types if "patch" in rt.verbs]


def object_path(rt: ResourceType) -> str:
    return rt.path("{namespace}" if rt.namespaced else None, "{name}")


# --- OpenAPI v2 (kubectl 1.20 apply) -------------------------------------------------------

def test_v2_protobuf_starts_like_the_minimal_document_kubectl_accepts() -> None:
    assert openapi.openapi_v2_protobuf()[:5] == b"\x0a\x03\x32\x2e\x30"  # swagger: "2.0"
    assert openapi.V2_PROTOBUF_CONTENT_TYPE == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def test_v2_protobuf_has_one_patch_operation_per_kind() -> None:
    doc = openapi.openapi_v2_protobuf()
    assert text(doc, 1) == "2.0"
    info = one(doc, 2)
    assert text(info, 1) == "Kubernetes"
    assert text(info, 2) == openapi.KUBERNETES_VERSION
    paths = named(one(doc, 8), 2)
    assert set(paths) == {object_path(rt) for rt in patchable()}
    assert "/apis/apps/v1/namespaces/{namespace}/deployments/{name}" in paths
    assert "/api/v1/nodes/{name}" in paths

    for rt in patchable():
        item = paths[object_path(rt)]
        op = one(item, 8)  # PathItem.patch
        assert extensions(op, 13) == {
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        }
        assert [v.decode() for v in all_of(op, 7)] == [
            "application/json-patch+json", "application/merge-patch+json",
            "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
        query = {}
        for param_item in all_of(op, 8):
            parameter = one(param_item, 1)
            non_body = all_of(parameter, 2)
            if non_body:
                sub = one(non_body[0], 3)  # QueryParameterSubSchema
                query[text(sub, 4)] = (text(sub, 2), text(sub, 6))
            else:
                body = one(parameter, 1)
                assert (text(body, 2), text(body, 3), one(body, 4)) == ("body", "body", 1)
        assert query == {"dryRun": ("query", "string"), "fieldManager": ("query", "string"),
                         "fieldValidation": ("query", "string"), "force": ("query", "boolean")}
        path_params = {}
        for param_item in all_of(item, 9):
            sub = one(one(one(param_item, 1), 2), 4)  # PathParameterSubSchema
            path_params[text(sub, 4)] = (text(sub, 2), one(sub, 1), text(sub, 5))
        expected = {"name": ("path", 1, "string")}
        if rt.namespaced:
            expected["namespace"] = ("path", 1, "string")
        assert path_params == expected


def test_v2_has_no_definition_kubectl_would_validate_or_patch_with() -> None:
    # kubectl 1.20 validates against, and computes apply patches from, any definition
    # tagged with the kind's GVK; an incomplete one makes it panic. None must be there.
    doc = openapi.openapi_v2_protobuf()
    assert named(one(doc, 9), 1) == {}
    assert openapi.openapi_v2_json()["definitions"] == {}


def test_v2_json_is_the_same_document() -> None:
    doc = openapi.openapi_v2_json()
    assert doc["swagger"] == "2.0"
    assert set(doc["paths"]) == set(named(one(openapi.openapi_v2_protobuf(), 8), 2))
    assert openapi.encode_v2_document(doc) == openapi.openapi_v2_protobuf()
    doc["paths"].clear()  # callers get a copy
    assert openapi.openapi_v2_json()["paths"]


def test_encode_schema_field_numbers() -> None:
    schema = {
        "description": "Deployment enables declarative updates for Pods and ReplicaSets.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "format": "", "default": "apps/v1"},
            "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": {"type": "object", "additionalProperties": False},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "ports": {"type": "array", "items": {"type": "integer", "format": "int32", "minimum": 1,
                                                 "maximum": 65535}},
            "policy": {"type": "string", "enum": ["Always", "Never"]},
        },
        "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}],
    }
    data = openapi.encode_schema(schema)
    assert text(data, 4) == schema["description"]
    assert [v.decode() for v in all_of(one(data, 22), 1)] == ["object"]
    assert [v.decode() for v in all_of(data, 19)] == ["spec"]
    assert extensions(data, 31) == {"x-kubernetes-group-version-kind": schema["x-kubernetes-group-version-kind"]}
    props = named(one(data, 25), 1)
    assert list(props) == ["apiVersion", "metadata", "spec", "labels", "ports", "policy"]
    assert yaml.safe_load(text(one(props["apiVersion"], 5), 2)) == "apps/v1"
    assert all_of(props["apiVersion"], 2) == []  # proto3 leaves out empty strings
    assert text(props["metadata"], 1) == "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    assert fields(one(props["spec"], 21)) == [(2, 0)]  # additionalProperties: false is kept
    string_values = one(one(props["labels"], 21), 1)
    assert [v.decode() for v in all_of(one(string_values, 22), 1)] == ["string"]
    item = one(one(props["ports"], 23), 1)
    assert (text(item, 2), one(item, 9), one(item, 7)) == ("int32", 1.0, 65535.0)
    assert [yaml.safe_load(text(v, 2)) for v in all_of(props["policy"], 20)] == ["Always", "Never"]


# --- OpenAPI v3 (kubectl 1.35) -------------------------------------------------------------

def test_v3_root_lists_every_group_version() -> None:
    root = openapi.openapi_v3_root()
    assert list(root["paths"]) == ["api/v1", "apis/apps/v1", "apis/batch/v1", "apis/coordination.k8s.io/v1",
                                   "apis/discovery.k8s.io/v1"]
    for path, entry in root["paths"].items():
        url = entry["serverRelativeURL"]
        match = re.fullmatch(rf"/openapi/v3/{re.escape(path)}\?hash=([0-9A-F]{{128}})", url)
        assert match, url
        assert match.group(1) == openapi.openapi_v3_hash(path)


@pytest.mark.parametrize("alias", [("api/v1", "v1"), ("apis/apps/v1", "apps/v1"), ("/apis/batch/v1", "batch/v1")])
def test_v3_group_accepts_both_spellings(alias: tuple[str, str]) -> None:
    assert openapi.openapi_v3_group(alias[0]) == openapi.openapi_v3_group(alias[1])
    assert openapi.openapi_v3_group(alias[0]) is not None


@pytest.mark.parametrize("path", ["apis/apps/v2", "apis/example.com/v1", "", "a/b/c/d", "api"])
def test_v3_group_unknown_is_none(path: str) -> None:
    assert openapi.openapi_v3_group(path) is None
    assert openapi.openapi_v3_hash(path) is None


def _kubectl_supports_field_validation(doc: dict[str, Any], rt: ResourceType) -> bool:
    """kubectl's ``supportsQueryParamV3``: the kind's PATCH lists ``fieldValidation`` in the query."""
    for item in doc["paths"].values():
        op = item.get("patch")
        if op and op.get("x-kubernetes-group-version-kind") == {"group": rt.group, "version": rt.version,
                                                                 "kind": rt.kind}:
            return any(p["name"] == "fieldValidation" and p["in"] == "query" for p in op["parameters"])
    raise AssertionError(f"Path not found for GVK {rt.kind} in OpenAPI V3 doc")


def _kubectl_patches_from_v3_schemas(doc: dict[str, Any], rt: ResourceType) -> bool:
    """kubectl's ``gvkSupportsPatchOpenAPIV3``: strategic merge patch offered in the request body."""
    for item in doc["paths"].values():
        op = item.get("patch")
        if op and op["x-kubernetes-group-version-kind"]["kind"] == rt.kind:
            return "application/strategic-merge-patch+json" in op["requestBody"]["content"]
    return False


@pytest.mark.parametrize("rt", patchable(), ids=lambda rt: rt.kind)
def test_v3_group_documents_what_kubectl_checks(rt: ResourceType) -> None:
    doc = openapi.openapi_v3_group(f"{rt.group}/{rt.version}" if rt.group else rt.version)
    assert doc is not None
    assert doc["openapi"] == "3.0.0"
    assert _kubectl_supports_field_validation(doc, rt)  # so validation is left to the server
    assert not _kubectl_patches_from_v3_schemas(doc, rt)  # so kubectl uses its compiled-in patch metadata
    op = doc["paths"][object_path(rt)]["patch"]
    assert op["x-kubernetes-action"] == "patch"
    assert sorted(op["requestBody"]["content"]) == ["application/apply-patch+yaml", "application/json-patch+json",
                                                    "application/merge-patch+json"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.removeprefix("#/components/schemas/")
    schema = doc["components"]["schemas"][name]
    assert name == openapi.definition_name(rt)
    assert schema["x-kubernetes-group-version-kind"] == [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    meta_ref = schema["properties"]["metadata"]["allOf"][0]["$ref"].removeprefix("#/components/schemas/")
    assert meta_ref in doc["components"]["schemas"]


def test_v3_definition_names_follow_kubernetes() -> None:
    names = {rt.kind: openapi.definition_name(rt) for rt in REGISTRY.types}
    assert names["Pod"] == "io.k8s.api.core.v1.Pod"
    assert names["Deployment"] == "io.k8s.api.apps.v1.Deployment"
    assert names["Lease"] == "io.k8s.api.coordination.v1.Lease"
    assert names["EndpointSlice"] == "io.k8s.api.discovery.v1.EndpointSlice"


def test_v3_documents_are_json_and_stable() -> None:
    doc = openapi.openapi_v3_group("apis/apps/v1")
    assert doc is not None
    json.dumps(doc)
    doc["paths"].clear()  # callers get a copy
    assert openapi.openapi_v3_group("apis/apps/v1") != doc
    assert openapi.openapi_v3_hash("apis/apps/v1") == openapi.openapi_v3_hash("apps/v1")

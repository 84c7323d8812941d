"""Request bodies: size limit, content types, JSON/YAML parsing, schema decoding."""

from __future__ import annotations

from typing import Any

import yaml
from aiohttp import web

from control_plane.api import errors, json_codec, protobuf, schema
from skiff.api.resources import ResourceType

MAX_BODY = 3 * 1024 * 1024  # Kubernetes' default max request body
JSON_TYPES = ("", "application/json", "*/*")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
MAX_YAML_NODES = 500_000
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")


async def read_raw(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise errors.too_large("Request entity too large: limit is 3145728")
    # StreamReader.read(n) returns what has arrived so far, not n bytes: read to the end of the body.
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise errors.too_large("Request entity too large: limit is 3145728")
    return b"".join(chunks)


def media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid number literal {name}")


def scrub_surrogates(value: Any) -> Any:
    """Lone UTF-16 surrogates (``"\\ud800"``) become U+FFFD, as Go's JSON decoder does:
    they cannot be stored or sent as UTF-8."""
    if isinstance(value, str):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            # a valid pair (YAML decodes the two escapes one by one) becomes its character
            return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return value
    if isinstance(value, list):
        return [scrub_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in value.items()}
    return value


def _expanded_size(doc: Any, budget: int) -> int:
    """Nodes in ``doc`` with YAML aliases expanded, counting stops past ``budget``
    (an alias "bomb" is small on the wire and huge once expanded)."""
    count = 0
    stack = [doc]
    while stack and count <= budget:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def parse_document(data: bytes, content_type: str) -> Any:
    """JSON (also with no Content-Type: the Python client sends none), YAML or Kubernetes protobuf."""
    if content_type in JSON_TYPES:
        try:
            doc = json_codec.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {e}") from None
        return scrub_surrogates(doc) if b"\\u" in data or b"\\U" in data else doc
    if content_type in YAML_TYPES:
        try:
            doc = yaml.safe_load(data)
        except (yaml.YAMLError, RecursionError, ValueError) as e:
            raise errors.bad_request(f"error converting YAML to JSON: {e}") from None
        if _expanded_size(doc, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise errors.bad_request("error converting YAML to JSON: the document expands to more than "
                                     f"{MAX_YAML_NODES} nodes (aliases)")
        return scrub_surrogates(doc)
    if content_type == protobuf.MEDIA_TYPE:  # kubectl 1.32+ `create ...`, client-go's typed clients
        try:
            return protobuf.decode_body(data)
        except protobuf.DecodeError as e:
            raise errors.bad_request(str(e)) from None
    raise errors.unsupported_media_type(content_type)


def check_kind(rt: ResourceType, obj: Any, expected_kind: str | None = None,
               expected_api_version: str | None = None) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise errors.bad_request(f"the body of the request must be a JSON object ({rt.kind}), "
                                 f"not {type(obj).__name__}")
    kind = expected_kind or rt.kind
    api_version = expected_api_version or rt.api_version
    body_kind, body_version = obj.get("kind"), obj.get("apiVersion")
    kind_ok = body_kind in (None, "") or body_kind == kind
    version_ok = body_version in (None, "") or body_version == api_version
    if not (kind_ok and version_ok):
        raise errors.bad_request(f"the object in the request body ({body_version!s:.60}, Kind={body_kind!s:.60}) "
                                 f"does not match the resource it was sent to ({api_version}, Kind={kind})")
    return obj


def decode_object(rt: ResourceType, obj: dict[str, Any], field_validation: str, warnings: list[str],
                  model: str | None = None) -> dict[str, Any]:
    """Schema-check a body: wrong types are a 400; unknown fields are dropped, and
    rejected (Strict) or reported as warnings (Warn)."""
    model = model or schema.model_for(rt.api_version, rt.kind)
    if model is None:
        return obj
    decoded = schema.decode(model, obj)
    if decoded.type_errors:
        raise errors.bad_request(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a {rt.kind}: "
                                 + "; ".join(decoded.type_errors[:5]))
    if decoded.unknown:
        if field_validation == "Strict":
            raise errors.bad_request("strict decoding error: "
                                     + ", ".join(f'unknown field "{p}"' for p in decoded.unknown[:20]))
        if field_validation == "Warn":
            warnings.extend(f'unknown field "{p}"' for p in decoded.unknown[:20])
    result: dict[str, Any] = decoded.obj
    return result

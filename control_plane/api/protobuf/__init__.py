"""Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) as JSON dicts.

kubectl 1.32+ sends ``create namespace|deployment|configmap|secret|service|job|...``
bodies, and client-go programs configured for protobuf send every write, as the
four bytes ``k8s\\0`` followed by a runtime.Unknown message::

    Unknown { TypeMeta typeMeta = 1 {apiVersion = 1, kind = 2}; bytes raw = 2;
              string contentEncoding = 3; string contentType = 4 }

whose ``raw`` is the object in Kubernetes' generated protobuf. ``decode_body`` returns
the same dict a JSON client would have sent for that object (see decoder.py), so the
rest of the server is unchanged; answers stay JSON, which such clients accept.

The field table (messages.json) is generated from the Go types of the pinned kubectl
1.35 by scripts/gen_protobuf_schema.py: no protobuf runtime is needed.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from control_plane.api.protobuf.decoder import Decoder
from control_plane.api.protobuf.schema import load
from control_plane.api.protobuf.wire import BYTES, DecodeError, scan

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

__all__ = ["MAGIC", "MEDIA_TYPE", "DecodeError", "decode_body", "known_kinds"]


def known_kinds() -> list[str]:
    """"apiVersion/Kind" of every object this module decodes."""
    return list(load().kinds)


def decode_body(data: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON dict of the object it carries.

    Raises DecodeError with the message Kubernetes' API server puts in its 400 Status
    (``Deployment in version "v1" cannot be handled as a Deployment: proto: ...``).
    """
    if not data:
        raise DecodeError("empty data")
    if not data.startswith(MAGIC):
        raise DecodeError("provided data does not appear to be a protobuf message, expected prefix "
                          f"[{' '.join(str(b) for b in MAGIC)}]")
    if len(data) == len(MAGIC):
        raise DecodeError("empty body")
    try:
        api_version, kind, raw = _unknown(data[len(MAGIC):])
    except DecodeError as e:
        raise DecodeError(f"the object provided is unrecognized: {e}") from None
    if not kind:
        raise DecodeError(f"Object 'Kind' is missing in '{{apiVersion: {api_version!r}, kind: ''}}'")
    if not api_version:
        raise DecodeError(f"Object 'apiVersion' is missing in '{{apiVersion: '', kind: {kind!r}}}'")
    schema = load()
    message = schema.message_for(api_version, kind)
    if message is None:
        raise DecodeError(f'no kind "{kind}" is registered for version "{api_version}"')
    version = api_version.rpartition("/")[2]
    try:
        obj = _decoder().decode(message, raw)
    except DecodeError as e:
        raise DecodeError(f'{kind} in version "{version}" cannot be handled as a {kind}: {e}') from None
    return {"kind": kind, "apiVersion": api_version, **obj}


@cache
def _decoder() -> Decoder:
    return Decoder(load())


def _unknown(data: bytes) -> tuple[str, str, bytes]:
    """runtime.Unknown's (apiVersion, kind, raw). contentEncoding and contentType are
    ignored, as Kubernetes' protobuf serializer ignores them."""
    api_version = kind = ""
    raw = b""
    for number, wire, value in scan(data):
        if number in (1, 2) and wire != BYTES:
            raise DecodeError(f"proto: wrong wireType = {wire} for field {'TypeMeta' if number == 1 else 'Raw'}")
        if number == 1:
            assert isinstance(value, bytes)
            for sub, sub_wire, text in scan(value):
                if sub in (1, 2) and (sub_wire != BYTES or not isinstance(text, bytes)):
                    raise DecodeError(f"proto: wrong wireType = {sub_wire} for field "
                                      f"{'APIVersion' if sub == 1 else 'Kind'}")
                if sub == 1:
                    api_version = text.decode("utf-8", "replace")  # type: ignore[union-attr]
                elif sub == 2:
                    kind = text.decode("utf-8", "replace")  # type: ignore[union-attr]
        elif number == 2:
            assert isinstance(value, bytes)
            raw = value
    return api_version, kind, raw

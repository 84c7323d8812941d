"""One protobuf-encoded API object -> the JSON dict Kubernetes would store for it.

The API server decodes a protobuf body into its Go struct and writes that struct as JSON
with encoding/json. This module does both steps at once, field by field, from the table
of Go types (schema.py), so the dict equals what a JSON client sending the same struct
would have sent:

- a non-pointer field absent from the wire is its Go zero value: a scalar is written
  unless ``omitempty``; a struct is always written (``"status": {}``), a zero metav1.Time
  as ``null`` (``"creationTimestamp": null``);
- a pointer field is written iff it was on the wire, a present zero included
  (``"replicas": 0``); ``omitempty`` drops zero scalars, empty strings, lists and maps;
- ``json:",inline"`` structs (Volume's VolumeSource) merge into their parent;
- map keys are sorted as encoding/json sorts them; ``bytes`` become base64;
- Kubernetes' hand-written types: Time (seconds; RFC 3339), MicroTime (microseconds),
  Duration ("1h0m0s"), Quantity (its string), IntOrString (int or string), RawExtension
  and FieldsV1 (embedded JSON).

A repeated non-repeated message field merges, as protobuf requires; unknown field
numbers are skipped, as the generated unmarshallers skip them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
from collections.abc import Callable
from typing import Any

from control_plane.api.protobuf.schema import SPECIAL, Field, Message, Schema
from control_plane.api.protobuf.wire import BYTES, FIXED64, VARINT, DecodeError, packed_fixed, packed_varints, scan

MAX_DEPTH = 64
_MISSING = object()
_GO_ZERO_TIME = -62135596800  # time.Time{} as Unix seconds (January 1, year 1, UTC)


class Decoder:
    """Decodes messages of one schema; keeps the JSON of each message's zero value."""

    def __init__(self, schema: Schema):
        self.messages = schema.messages
        self._zeros: dict[str, dict[str, Any]] = {}

    def decode(self, message: Message, data: bytes) -> dict[str, Any]:
        return self.message(message, data, 0)

    def message(self, message: Message, data: bytes, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise DecodeError(f"proto: messages nested deeper than {MAX_DEPTH}")
        if not data:  # Go's zero struct: the same JSON every time (a fresh copy: callers mutate it)
            zero = self._zeros.get(message.name)
            if zero is None:
                zero = self._zeros[message.name] = self._render(message, {}, depth)
            return _copy(zero)  # type: ignore[no-any-return]
        values: dict[int, Any] = {}
        by_number = message.by_number
        for number, wire, raw in scan(data):
            f = by_number.get(number)
            if f is None:
                continue
            if f.shape == "one":
                if f.message:
                    if wire != BYTES:
                        raise _wrong_wire(wire, f)
                    prev = values.get(number)
                    values[number] = raw if prev is None else prev + raw  # type: ignore[operator]
                else:
                    values[number] = _scalar(f, wire, raw)
            else:
                items = values.setdefault(number, [])
                if f.shape == "list" and f.wire != BYTES and wire == BYTES:  # packed numbers
                    assert isinstance(raw, bytes)
                    if f.wire == VARINT:
                        packed = packed_varints(raw)
                    else:
                        packed = packed_fixed(raw, 8 if f.wire == FIXED64 else 4)
                    items.extend(_convert(f.type, v) for v in packed)
                elif f.shape == "map" or f.message:
                    if wire != BYTES:
                        raise _wrong_wire(wire, f)
                    items.append(raw)
                else:
                    items.append(_scalar(f, wire, raw))
        return self._render(message, values, depth)

    def _render(self, message: Message, values: dict[int, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in message.fields:
            value = values.get(f.number, _MISSING)
            if value is not _MISSING or not f.absent_omitted:
                self._emit(out, f, value, depth)
        return out

    def _emit(self, out: dict[str, Any], f: Field, value: Any, depth: int) -> None:
        omit_zero = f.omitempty or f.omitzero
        if f.inline:
            if value is _MISSING and f.pointer:
                return  # a nil embedded pointer contributes no keys
            out.update(self.message(self.messages[f.type], b"" if value is _MISSING else value, depth + 1))
            return
        if value is _MISSING and (f.pointer or f.shape != "one" or f.type == "bytes"):
            if not omit_zero:
                out[f.name] = None  # a nil pointer, slice or map without omitempty
            return
        if f.shape == "list":
            if f.message:
                out[f.name] = [self.value(f.type, item, depth) for item in value]
            elif f.type == "bytes":
                out[f.name] = [base64.b64encode(item).decode() for item in value]
            else:
                out[f.name] = value
            return
        if f.shape == "map":
            out[f.name] = self.map(f, value, depth)
            return
        if f.type == "bytes":
            if not (omit_zero and not value):
                out[f.name] = base64.b64encode(value).decode()
            return
        if not f.message:
            if value is _MISSING:
                value = _ZERO[f.type]
            if f.pointer or not (omit_zero and not value):
                out[f.name] = value
            return
        rendered = self.value(f.type, b"" if value is _MISSING else value, depth)
        if f.omitzero and not f.pointer and rendered == self.value(f.type, b"", depth):
            return
        out[f.name] = rendered

    def value(self, type_name: str, data: bytes, depth: int) -> Any:
        """A struct-typed value (message or special) from its encoding (b"" = zero value)."""
        if type_name in SPECIAL:
            return _SPECIAL_TYPES[type_name](data)
        return self.message(self.messages[type_name], data, depth + 1)

    def map(self, f: Field, entries: list[bytes], depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for entry in entries:
            key: Any = ""
            raw: Any = _MISSING
            for number, wire, item in scan(entry):
                if number == 1:
                    if wire != BYTES:
                        raise DecodeError(f"proto: wrong wireType = {wire} for field key")
                    key = _text(item)  # type: ignore[arg-type]
                elif number == 2:
                    if f.message or f.type in ("string", "bytes"):
                        if wire != BYTES:
                            raise DecodeError(f"proto: wrong wireType = {wire} for field value")
                        raw = item if raw is _MISSING or not f.message else raw + item
                    else:
                        raw = _scalar(f, wire, item)
            if f.message:
                result[key] = self.value(f.type, b"" if raw is _MISSING else raw, depth)
            elif f.type == "bytes":
                result[key] = base64.b64encode(b"" if raw is _MISSING else raw).decode()
            elif f.type == "string":
                result[key] = "" if raw is _MISSING else _text(raw)
            else:
                result[key] = _ZERO[f.type] if raw is _MISSING else raw
        return dict(sorted(result.items()))  # encoding/json writes map keys sorted


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _wrong_wire(wire: int, f: Field) -> DecodeError:
    return DecodeError(f"proto: wrong wireType = {wire} for field {f.name or f.type}")


def _text(raw: bytes) -> str:
    # Go keeps invalid UTF-8 in a string; encoding/json then writes U+FFFD for it.
    return raw.decode("utf-8", "replace")


def _convert(type_name: str, value: int) -> Any:
    if type_name == "int32":
        value &= 0xFFFFFFFF
        return value - (1 << 32) if value >= 1 << 31 else value
    if type_name == "int64":
        return value - (1 << 64) if value >= 1 << 63 else value
    if type_name == "uint32":
        return value & 0xFFFFFFFF
    if type_name == "bool":
        return value != 0
    if type_name == "float64":
        return _float(struct.unpack("<d", value.to_bytes(8, "little"))[0])
    if type_name == "float32":
        return _float(struct.unpack("<f", value.to_bytes(4, "little"))[0])
    return value  # uint64


def _float(value: float) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        raise DecodeError(f"json: unsupported value: {value}")  # encoding/json refuses NaN and Inf
    return value


def _scalar(f: Field, wire: int, raw: int | bytes) -> Any:
    if wire != f.wire:
        raise _wrong_wire(wire, f)
    if isinstance(raw, bytes):
        return _text(raw) if f.type == "string" else raw
    return _convert(f.type, raw)


_ZERO: dict[str, Any] = {"string": "", "bool": False, "int32": 0, "int64": 0, "uint32": 0, "uint64": 0,
                         "float64": 0.0, "float32": 0.0}


# ---- Kubernetes' hand-written types ------------------------------------------------------

def _fields(data: bytes) -> dict[int, int | bytes]:
    return {number: value for number, _, value in scan(data)}


def _int_field(fields: dict[int, int | bytes], number: int, type_name: str) -> int:
    value = fields.get(number, 0)
    if isinstance(value, bytes):
        raise DecodeError(f"proto: wrong wireType = {BYTES} for field {number}")
    result: int = _convert(type_name, value)
    return result


def _str_field(fields: dict[int, int | bytes], number: int) -> str:
    value = fields.get(number, b"")
    if not isinstance(value, bytes):
        raise DecodeError(f"proto: wrong wireType = {VARINT} for field {number}")
    return _text(value)


def _timestamp(data: bytes) -> tuple[int, int] | None:
    if not data:
        return None  # metav1.Time marshals its zero value as no bytes
    fields = _fields(data)
    return _int_field(fields, 1, "int64"), _int_field(fields, 2, "int32")


def _utc(seconds: int) -> dt.datetime:
    try:
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    except OverflowError:
        raise DecodeError(f"time out of range: {seconds} seconds since 1970") from None


def _time(data: bytes) -> str | None:
    """metav1.Time keeps whole seconds (its Unmarshal drops nanos); RFC 3339 in UTC."""
    ts = _timestamp(data)
    if ts is None or ts[0] == _GO_ZERO_TIME:
        return None
    return _utc(ts[0]).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_time(data: bytes) -> str | None:
    ts = _timestamp(data)
    if ts is None:
        return None
    seconds, nanos = divmod(ts[0] * 1_000_000_000 + ts[1], 1_000_000_000)
    if seconds == _GO_ZERO_TIME and nanos == 0:
        return None
    return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"


def go_duration(ns: int) -> str:
    """time.Duration.String(): "1h2m3.5s", "1.5ms", "0s"."""
    if ns == 0:
        return "0s"
    sign, u = ("-", -ns) if ns < 0 else ("", ns)

    def frac(value: int, digits: int) -> str:
        whole, rest = divmod(value, 10 ** digits)
        return str(whole) + ("." + f"{rest:0{digits}d}".rstrip("0") if rest else "")

    if u < 1000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{frac(u, 3)}µs"
    if u < 1_000_000_000:
        return f"{sign}{frac(u, 6)}ms"
    hours, rest = divmod(u, 3600 * 10 ** 9)
    minutes, rest = divmod(rest, 60 * 10 ** 9)
    text = frac(rest, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _duration(data: bytes) -> str:
    return go_duration(_int_field(_fields(data), 1, "int64"))


def _quantity(data: bytes) -> str:
    # The wire carries the canonical string; Go re-parses it, and a zero Quantity is "0".
    return _str_field(_fields(data), 1) or "0"


def _int_or_string(data: bytes) -> int | str:
    fields = _fields(data)
    kind = _int_field(fields, 1, "int64")
    if kind == 0:
        return _int_field(fields, 2, "int32")
    if kind == 1:
        return _str_field(fields, 3)
    raise DecodeError(f"impossible IntOrString.Type {kind}")


def _embedded_json(data: bytes) -> Any:
    """RawExtension.raw / FieldsV1.Raw: the JSON of an embedded object, or null."""
    value = _fields(data).get(1)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise DecodeError(f"proto: wrong wireType = {VARINT} for field Raw")
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError as e:
        raise DecodeError(f"an embedded object is not JSON: {e}") from None


_SPECIAL_TYPES: dict[str, Callable[[bytes], Any]] = {
    "Time": _time, "MicroTime": _micro_time, "Duration": _duration, "Quantity": _quantity,
    "IntOrString": _int_or_string, "RawExtension": _embedded_json, "FieldsV1": _embedded_json,
}

"""The shared JSON codec gives the standard library's values and errors, only faster:
every document where orjson and ``json`` could disagree goes to ``json``."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from skiff.client import json_codec


def _reject(name: str) -> Any:
    raise ValueError(f"invalid number literal {name}")


DOCUMENTS = [
    b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"containers":[]}}',
    b'{"a": 1, "b": [1.5, -0.0, 1e-7, 1E5, 0.1], "c": null, "d": true, "e": "\\u00e9\\n\\"", "a": 2}',
    b'"\xc3\xa9 raw UTF-8"',
    b'{"big": 123456789012345678901234567890, "u64": 18446744073709551616, "neg": -9223372036854775809}',
    b'{"max": 9223372036854775807, "min": -9223372036854775808}',
    b'{"lone": "\\ud800", "pair": "\\ud83d\\ude00"}',
    b'\xef\xbb\xbf{"bom": 1}',
    '{"utf16": "x"}'.encode("utf-16"),
    b'{"inf": 1e400}',
    b'[' * 600 + b']' * 600,  # many brackets: json decides, whatever the depth
    b' \n{"padded": []}\t',
]

BAD_DOCUMENTS = [b'{"a":', b'{"a": NaN}', b'{"a": Infinity}', b"[1,]", b'{"a":1}x', b"", b"\xff", b'"a\x01b"']


@pytest.mark.parametrize("data", DOCUMENTS)
def test_loads_gives_what_json_gives(data: bytes) -> None:
    expected = json.loads(data)
    got = json_codec.loads(data)
    assert json.dumps(got) == json.dumps(expected)  # also tells 1 from 1.0 and keeps key order
    assert type(got) is type(expected)


@pytest.mark.parametrize("data", BAD_DOCUMENTS)
def test_loads_fails_as_json_fails(data: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(data, parse_constant=_reject)
    with pytest.raises(ValueError) as got:
        json_codec.loads(data, parse_constant=_reject)
    assert str(got.value) == str(expected.value)


def test_loads_of_a_document_json_finds_too_deep() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(RecursionError):
        json_codec.loads(deep)
    # From a server, any size and depth orjson reads is fine.
    assert json_codec.loads(b"[" * 1000 + b"]" * 1000, json_nesting=False) is not None


VALUES: list[Any] = [
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "uid": "u"}, "spec": {"x": [1, 2.5, None, True]}},
    {"text": "é ü \u2028 <>& \U0001f600", "control": "\x00\x1f\x7f"},
    {"big": 2**70, "neg": -(2**64)},
    {1: "int key", None: "none key"},
    {"lone": "\ud800"},
    [(1, 2), {"nested": {"deep": [[[]]]}}],
    {"float": 1e-7, "large": 1e300, "zero": -0.0},
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_writes_the_same_json_as_json(value: Any) -> None:
    got = json_codec.dumps(value)
    assert isinstance(got, bytes)
    assert json.loads(got) == json.loads(json.dumps(value))


def test_dumps_is_compact_json() -> None:
    value = {"b": [1, {"c": None}], "a": "x"}
    assert json_codec.dumps(value) == json.dumps(value, separators=(",", ":")).encode()


def test_dumps_refuses_what_json_refuses() -> None:
    for value in ({"s": {1, 2}}, {"o": object()}, {"b": b"bytes"}):
        with pytest.raises(TypeError):
            json.dumps(value)
        with pytest.raises(TypeError):
            json_codec.dumps(value)


def test_dumps_writes_non_finite_floats_as_null() -> None:
    assert json.loads(json_codec.dumps({"a": math.nan, "b": math.inf})) == {"a": None, "b": None}

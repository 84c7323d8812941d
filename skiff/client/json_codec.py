"""JSON on the hot paths (the API server's request bodies, stored objects, replies and
watch events; the client's replies and watch streams): orjson where it gives the
standard library's result, ``json`` wherever the two could differ, so callers see
``json``'s values and errors. Server and clients share it, hence its place here.

Where orjson and ``json`` differ, and what is done about it:
- integers beyond 64 bits: orjson reads them as floats; documents with a run of 19 or
  more digits go to ``json`` (a cheap byte scan);
- nesting: ``json`` stops near the interpreter's recursion limit, orjson at 1024;
  documents with 512 or more brackets go to ``json``, so no depth decides differently;
- NaN/Infinity literals, lone surrogate escapes, a BOM, other encodings, any syntax
  error: orjson refuses, and ``json`` then decides (its value or its error message);
- encoding: orjson refuses what it cannot write exactly as ``json`` would (integers
  beyond 64 bits, non-string keys, lone surrogates, and, with the pass-through
  options, datetimes, dataclasses and subclasses of str/int/dict/list) and ``json``
  writes or refuses those. Output is compact JSON like ``json.dumps(obj,
  separators=(",", ":"))`` but in UTF-8 rather than ``\\uXXXX`` escapes (the same JSON;
  Kubernetes itself sends UTF-8), with floats in their shortest form (``1e-7`` for
  ``1e-07``); NaN and infinities, which are not JSON, become ``null``, and plain Enum
  members and UUIDs, which ``json`` refuses, are written as their values.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# One pass classifies every byte: digits become "0", opening brackets "[", the rest " ".
_CLASSES = bytes(0x30 if 0x30 <= b <= 0x39 else 0x5B if b in (0x5B, 0x7B) else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19
_MAX_BRACKETS = 512
_PASS_THROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def loads(data: bytes | str, *, json_nesting: bool = True, **json_kwargs: Any) -> Any:
    """``json.loads(data, **json_kwargs)``, faster for bytes. ``json_kwargs`` (e.g.
    ``parse_constant``) only matter for what orjson refuses, which ``json`` decodes.

    ``json_nesting=False`` lets orjson read documents of any size, also those ``json``
    would find too deeply nested: for documents a server sent or stored (``json`` read
    them before), where the check would only send every large list to the slow path."""
    if isinstance(data, bytes):
        classes = data.translate(_CLASSES)
        if _LONG_NUMBER not in classes and (not json_nesting or classes.count(b"[") < _MAX_BRACKETS):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # json decides: its value (NaN, surrogates, BOM) or its error message
    return json.loads(data, **json_kwargs)


def dumps(obj: Any) -> bytes:
    """Compact JSON as UTF-8 bytes."""
    try:
        return orjson.dumps(obj, option=_PASS_THROUGH)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()

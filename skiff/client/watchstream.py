"""Decoding of the watch wire format: newline-delimited JSON events in a chunked body.

Chunk boundaries carry no meaning: an event may be split across chunks and one chunk may
hold several events, so bytes are buffered until a newline completes a line.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from skiff.client import json_codec

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


class WatchEvent(NamedTuple):
    type: str
    object: dict[str, Any]


class StreamDecodeError(ValueError):
    pass


class NdjsonDecoder:
    """Feed bytes in, get complete JSON documents out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Any]:
        buffer = self._buffer
        buffer.extend(chunk)
        end = buffer.rfind(b"\n")
        if end < 0:
            return []
        complete = bytes(buffer[:end])
        del buffer[: end + 1]  # once per chunk: a chunk may carry hundreds of events
        return [_loads(line) for line in (raw.strip() for raw in complete.split(b"\n")) if line]

    def close(self) -> list[Any]:
        """Whatever a stream that ended without a final newline left behind."""
        line = bytes(self._buffer).strip()
        self._buffer.clear()
        return [_loads(line)] if line else []

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _loads(line: bytes) -> Any:
    try:
        return json_codec.loads(line, json_nesting=False)
    except ValueError as exc:
        raise StreamDecodeError(f"malformed watch event ({exc}): {line[:200]!r}") from exc


def to_event(raw: Any) -> WatchEvent:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or not isinstance(raw.get("object"), dict):
        raise StreamDecodeError(f"not a watch event: {str(raw)[:200]}")
    return WatchEvent(raw["type"], raw["object"])

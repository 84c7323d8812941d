"""Object metadata helpers: timestamps, uids, generated names, continue tokens."""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import random
import threading
from datetime import UTC, datetime
from typing import Any

# Kubernetes' generateName alphabet: no vowels, no look-alike characters.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


_last_stamp: tuple[int, str] = (-1, "")


def rfc3339(ts: float) -> str:
    """Whole seconds, as Kubernetes' metav1.Time; the last second's string is reused
    (every write of a burst stamps the same few seconds)."""
    global _last_stamp
    second = math.floor(ts)
    if ts - second >= 0.9999995:  # datetime rounds this to the next second's microsecond
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    last = _last_stamp
    if last[0] != second:
        last = _last_stamp = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return last[1]


def parse_rfc3339(value: str) -> float | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


_UID_BATCH = 256
_uid_random = b""
_uid_offset = 0
_uid_lock = threading.Lock()


def new_uid() -> str:
    """A random (version 4) UUID, as ``str(uuid.uuid4())``; the random bytes come from
    os.urandom in batches rather than one system call per object."""
    global _uid_random, _uid_offset
    with _uid_lock:
        if _uid_offset >= len(_uid_random):
            _uid_random, _uid_offset = os.urandom(16 * _UID_BATCH), 0
        b = bytearray(_uid_random[_uid_offset:_uid_offset + 16])
        _uid_offset += 16
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def generate_name(prefix: str) -> str:
    return prefix + "".join(random.choice(_NAME_ALPHABET) for _ in range(5))


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def encode_continue(revision: int, start_key: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start_key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        rv, start = data["rv"], data["start"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    if not isinstance(rv, int) or not isinstance(start, str) or rv <= 0:
        return None
    return rv, start

"""The protobuf wire format, read-only: varints, fixed 32/64-bit values, length-delimited bytes.

Errors use the messages of Kubernetes' generated (gogo) unmarshallers, which an API
server returns inside its 400 Status.
"""

from __future__ import annotations

VARINT, FIXED64, BYTES, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


class DecodeError(ValueError):
    """The body is not a valid protobuf encoding of what it claims to be."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it."""
    b = buf[pos]  # IndexError: caller turns it into "unexpected EOF"
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    pos += 1
    while True:
        if shift >= 64:
            raise DecodeError("proto: integer overflow")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def scan(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Every field of one message as (number, wire type, value): an int for varint and
    fixed fields, bytes for length-delimited ones. Groups are skipped, as gogo does."""
    out: list[tuple[int, int, int | bytes]] = []
    pos, end = 0, len(buf)
    try:
        while pos < end:
            key = buf[pos]  # one-byte keys, values and lengths are the common case: no call
            if key < 0x80:
                pos += 1
            else:
                key, pos = read_varint(buf, pos)
            number, wire = key >> 3, key & 7
            if number <= 0 or number > 0x1FFFFFFF:
                raise DecodeError(f"proto: illegal tag {number} (wire type {wire})")
            if wire == VARINT:
                value = buf[pos]
                if value < 0x80:
                    pos += 1
                else:
                    value, pos = read_varint(buf, pos)
                out.append((number, wire, value))
            elif wire == BYTES:
                length = buf[pos]
                if length < 0x80:
                    pos += 1
                else:
                    length, pos = read_varint(buf, pos)
                if length > end - pos:
                    raise DecodeError("unexpected EOF")
                out.append((number, wire, buf[pos:pos + length]))
                pos += length
            elif wire == FIXED64:
                if pos + 8 > end:
                    raise DecodeError("unexpected EOF")
                out.append((number, wire, int.from_bytes(buf[pos:pos + 8], "little")))
                pos += 8
            elif wire == FIXED32:
                if pos + 4 > end:
                    raise DecodeError("unexpected EOF")
                out.append((number, wire, int.from_bytes(buf[pos:pos + 4], "little")))
                pos += 4
            elif wire == START_GROUP:
                pos = _skip_group(buf, pos, number)
            elif wire == END_GROUP:
                raise DecodeError("proto: wiretype end group for non-group")
            else:
                raise DecodeError(f"proto: illegal wireType {wire}")
    except IndexError:
        raise DecodeError("unexpected EOF") from None
    return out


def _skip_group(buf: bytes, pos: int, number: int) -> int:
    depth = 1
    while True:
        key, pos = read_varint(buf, pos)
        wire = key & 7
        if wire == VARINT:
            _, pos = read_varint(buf, pos)
        elif wire == BYTES:
            length, pos = read_varint(buf, pos)
            pos += length
        elif wire == FIXED64:
            pos += 8
        elif wire == FIXED32:
            pos += 4
        elif wire == START_GROUP:
            depth += 1
        elif wire == END_GROUP:
            depth -= 1
            if depth == 0:
                return pos
        else:
            raise DecodeError(f"proto: illegal wireType {wire}")
        if pos > len(buf):
            raise DecodeError("unexpected EOF")


def packed_varints(buf: bytes) -> list[int]:
    """The values of a packed repeated varint field."""
    out = []
    pos = 0
    try:
        while pos < len(buf):
            value, pos = read_varint(buf, pos)
            out.append(value)
    except IndexError:
        raise DecodeError("unexpected EOF") from None
    return out


def packed_fixed(buf: bytes, size: int) -> list[int]:
    if len(buf) % size:
        raise DecodeError("unexpected EOF")
    return [int.from_bytes(buf[i:i + size], "little") for i in range(0, len(buf), size)]

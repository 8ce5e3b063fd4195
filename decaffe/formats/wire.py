"""Protobuf's wire format, the few pieces decaffe reads and writes by hand: varints, field
tags and length-delimited fields (https://protobuf.dev/programming-guides/encoding/).

The caffemodel fast reader (formats/weights.py) walks fields with ``fields``; the snapshot
writer (solvers/snapshot.py) and the tests build bytes with ``encode_varint``, ``tag`` and
``len_field``. Reading raises ``Corrupt`` (bytes that are not valid protobuf: a truncated or
over-long varint, field number 0, a length past the end, an invalid wire type) or
``Unusual`` (valid but not handled here: group encoding); callers turn them into a
FormatError naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator

# wire types
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


class Corrupt(Exception):
    """Bytes that are not valid protobuf (or not a valid blob)."""


class Unusual(Exception):
    """An encoding the fast reader leaves to protobuf's parser."""


def decode_varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the varint at buf[pos:end]; Corrupt when it runs past end
    or past 10 bytes."""
    result = shift = 0
    while True:
        if pos >= end:
            raise Corrupt("truncated: the file ends inside a number")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise Corrupt("corrupt: a number longer than 10 bytes")


def fields(buf: bytes | bytearray | memoryview, pos: int, end: int
           ) -> Iterator[tuple[int, int, int | tuple[int, int], int, int]]:
    """Yield (field number, wire type, value, start, stop) for each field in buf[pos:end]:
    value is the integer for varints and the payload span (a, b) for length-delimited and
    fixed-size fields; start/stop bound the whole field including its tag."""
    while pos < end:
        start = pos
        key, pos = decode_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise Corrupt(f"corrupt: field number 0 at byte {start}")
        if wire == VARINT:
            value, pos = decode_varint(buf, pos, end)
        elif wire == LEN:
            length, pos = decode_varint(buf, pos, end)
            # never trust a length before checking it against what is left
            if length > end - pos:
                raise Corrupt(f"truncated or corrupt: field {number} at byte {start} claims "
                              f"{length} bytes but only {end - pos} remain")
            value = (pos, pos + length)
            pos += length
        elif wire == I32 or wire == I64:
            size = 4 if wire == I32 else 8
            if size > end - pos:
                raise Corrupt(f"truncated: field {number} at byte {start}")
            value = (pos, pos + size)
            pos += size
        elif wire in (SGROUP, EGROUP):
            raise Unusual("group encoding")
        else:
            raise Corrupt(f"corrupt: invalid wire type {wire} at byte {start}")
        yield number, wire, value, start, pos


def encode_varint(value: int) -> bytes:
    """value as a varint; a negative value as its 64-bit two's complement (10 bytes), as
    protobuf writes a negative int32/int64."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_size(value: int) -> int:
    """The number of bytes encode_varint(value) writes."""
    if value < 0:
        return 10
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def tag(number: int, wire: int) -> bytes:
    """The key of field `number` with wire type `wire`."""
    return encode_varint((number << 3) | wire)


def len_field(number: int, payload: bytes) -> bytes:
    """A whole length-delimited field: its key, the payload's length and the payload."""
    return tag(number, LEN) + encode_varint(len(payload)) + payload


def int32(v: int) -> int:
    """A decoded varint as the int32 it encodes (negative numbers were sign-extended)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def int64(v: int) -> int:
    """A decoded varint as the int64 it encodes."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= 1 << 63 else v

"""Protobuf text files (.prototxt): parse with errors that name file:line:column, print in
Caffe's own layout (C++ TextFormat: fields in number order, two-space indents, floats in
their shortest round-tripping form such as ``1`` and ``0.1``)."""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterator

from google.protobuf import descriptor, text_encoding, text_format
from google.protobuf.message import Message

from ..errors import ParseError, suggest
from ..proto import caffe_pb2
from . import upgrade as up
from .atomic import atomic_write

_FIELD_RE = re.compile(r'has no field named "([^"]+)"')
_TYPE_RE = re.compile(r'Message type "([^"]+)"')
_ENUM_RE = re.compile(r'Enum type "([^"]+)" has no value named (\S+?)\.?$')


def _message_type(full_name: str):
    name = full_name.split(".", 1)[1] if full_name.startswith("caffe.") else full_name
    parts = name.split(".")
    cls = getattr(caffe_pb2, parts[0], None)
    for p in parts[1:]:
        cls = getattr(cls, p, None) if cls is not None else None
    return getattr(cls, "DESCRIPTOR", None)


def _explain(reason: str) -> str:
    """Add the close field or enum names to protobuf's parse error text."""
    m = _FIELD_RE.search(reason)
    t = _TYPE_RE.search(reason)
    if m and t:
        desc = _message_type(t.group(1))
        if desc is not None:
            return reason.rstrip(".") + suggest(m.group(1), [f.name for f in desc.fields])
    m = _ENUM_RE.search(reason)
    if m:
        enum_name = m.group(1).split(".")[-1]
        for msg in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
            for stack in [msg]:
                for e in stack.enum_types:
                    if e.name == enum_name:
                        return reason.rstrip(".") + " (valid: " + ", ".join(
                            v.name for v in e.values) + ")"
        if enum_name in caffe_pb2.DESCRIPTOR.enum_types_by_name:
            e = caffe_pb2.DESCRIPTOR.enum_types_by_name[enum_name]
            return reason.rstrip(".") + " (valid: " + ", ".join(v.name for v in e.values) + ")"
    return reason


class _Lines:
    """The text's lines for protobuf's tokenizer, noting when it has read them all (the
    tokenizer only reads past the last line when it reaches the end of the text)."""

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")
        self.exhausted = False

    def __iter__(self) -> Iterator:
        yield from self._lines  # split on newlines, as text_format.Parse does
        self.exhausted = True

    def end_position(self) -> tuple[int, int]:
        return len(self._lines), len(self._lines[-1]) + 1


def parse_text(text: str, message: Message, path: str | None = None) -> Message:
    """Parse protobuf text into message (cleared first); a ParseError names path:line:column."""
    message.Clear()
    lines = _Lines(text)
    try:
        text_format.ParseLines(lines, message, allow_unknown_extension=False)
    except text_format.ParseError as e:
        line, column = e.GetLine(), e.GetColumn()
        reason = str(e)
        # protobuf prefixes "line:col : " to its message; keep only the reason
        reason = re.sub(r"^\d+:\d+ : ", "", reason)
        reason = re.sub(r"^'': ", "", reason)
        if lines.exhausted and reason.startswith("Expected"):
            # the tokenizer ran out of text: point at the end, as C++ protobuf does
            line, column = lines.end_position()
            reason = re.sub(r",? (but found|got):? ?(''|)\.?$", "", reason)
            reason = reason.rstrip(".") + " but the file ended"
        raise ParseError(_explain(reason), path, line, column) from None
    except UnicodeDecodeError as e:
        raise ParseError(f"not UTF-8 text: {e}", path) from None
    return message


def read_text(path: str, message: Message) -> Message:
    """Parse a text file into message."""
    path = os.fspath(path)
    if "\0" in path:
        raise ParseError("cannot read file: the path holds a NUL byte", repr(path))
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ParseError(f"cannot read file: {e.strerror}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ParseError("not a text file (invalid UTF-8)", path, line) from None
    return parse_text(text, message, path)


def read_net(source: str, upgrade: bool = True,
             keep_batchnorm_params: bool = False) -> caffe_pb2.NetParameter:
    """A NetParameter from a .prototxt path (or prototxt text), upgraded as Caffe does on load
    (keep_batchnorm_params: see decaffe.formats.upgrade.upgrade_net_as_needed)."""
    param = caffe_pb2.NetParameter()
    if _looks_like_path(source):
        read_text(source, param)
        where = source
    else:
        parse_text(source, param)
        where = None
    if upgrade:
        if up.net_needs_upgrade(param):
            up.upgrade_net(param, where, keep_batchnorm_params)
    return param


def read_solver(source: str, upgrade: bool = True) -> caffe_pb2.SolverParameter:
    """A SolverParameter from a path (or text), with the legacy solver_type upgraded."""
    param = caffe_pb2.SolverParameter()
    if _looks_like_path(source):
        read_text(source, param)
        where = source
    else:
        parse_text(source, param)
        where = None
    if upgrade:
        if up.solver_needs_upgrade(param):
            up.upgrade_solver(param, where)
    return param


def _looks_like_path(source: str) -> bool:
    if os.path.exists(source):
        return True
    return "\n" not in source and "{" not in source and ":" not in source


# ---------------------------------------------------------------------------------------------
# Printing in Caffe's layout
# ---------------------------------------------------------------------------------------------
def _float32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def format_float(v: float) -> str:
    """A float field as C++ protobuf prints it: shortest of %.6g / %.9g that round-trips."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    s = f"{v:.6g}"
    if _float32(float(s)) != _float32(v):
        s = f"{v:.9g}"
    return s


def format_double(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    s = f"{v:.15g}"
    if float(s) != v:
        s = f"{v:.17g}"
    return s


def _scalar(field: descriptor.FieldDescriptor, value: str | bytes | bool | int | float) -> str:
    t = field.type
    FD = descriptor.FieldDescriptor
    if t == FD.TYPE_STRING:
        return '"' + text_encoding.CEscape(value, as_utf8=True) + '"'
    if t == FD.TYPE_BYTES:
        return '"' + text_encoding.CEscape(value, as_utf8=False) + '"'
    if t == FD.TYPE_BOOL:
        return "true" if value else "false"
    if t == FD.TYPE_ENUM:
        ev = field.enum_type.values_by_number.get(value)
        return ev.name if ev is not None else str(value)
    if t == FD.TYPE_FLOAT:
        return format_float(value)
    if t == FD.TYPE_DOUBLE:
        return format_double(value)
    return str(value)


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    # recent protobuf (7.x here) has is_repeated and no longer has `label`
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return field.label == descriptor.FieldDescriptor.LABEL_REPEATED


def _print(message: Message, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    for field, value in message.ListFields():
        repeated = _is_repeated(field)
        values = value if repeated else [value]
        for v in values:
            if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                out.append(f"{pad}{field.name} {{\n")
                _print(v, indent + 1, out)
                out.append(f"{pad}}}\n")
            else:
                out.append(f"{pad}{field.name}: {_scalar(field, v)}\n")


def to_text(message: Message) -> str:
    """The message as Caffe writes prototxt files."""
    out: list[str] = []
    _print(message, 0, out)
    return "".join(out)


def write_text(message: Message, path: str) -> None:
    """Write message as a prototxt file, atomically (a temporary file renamed into place)."""
    with atomic_write(path, "w") as f:
        f.write(to_text(message))

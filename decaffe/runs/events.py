"""A run folder's `events.jsonl`: append-only JSON lines, each written whole.

Writing: the file is opened with O_APPEND and each record goes out as one ``os.write`` of
the complete line (its newline included), so a reader never sees half a record unless the
writer was killed inside that one call, and then only the last line is cut. Nothing is
buffered in the process: a SIGKILL loses no record already written.

Reading: complete lines (those ending in a newline) are parsed; a last line without its
newline is left for later (it is still being written, or the writer was killed inside it),
and a line that is not a JSON object is counted as malformed and skipped.

NaN and infinite numbers are written as null (JSON has none).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

_fmt = "%.7g".__mod__  # float32 values: 7 significant digits, half json.dumps' length
_dump_str = json.JSONEncoder(ensure_ascii=False).encode


def _float_text(values: Sequence[float]) -> str:
    text = ",".join(map(_fmt, values))
    if "n" in text:  # 'nan' or 'inf' (digits and exponents have no n): those become null
        text = ",".join(_fmt(v) if math.isfinite(v) else "null" for v in values)
    return text


def _encode(value: object, out: list[str]) -> None:
    if isinstance(value, float):
        out.append(_fmt(value) if math.isfinite(value) else "null")
    elif value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, str):
        out.append(_dump_str(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_dump_str(str(k)))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        if value and all(type(v) is float for v in value):
            out.append("[" + _float_text(value) + "]")
            return
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _encode(v, out)
        out.append("]")
    elif hasattr(value, "item"):  # a numpy or torch scalar
        _encode(value.item(), out)
    else:
        raise TypeError(f"cannot record a {type(value).__name__} in a run's events")


def encode(record: dict) -> bytes:
    """One record as a JSON line (UTF-8, newline-terminated): floats with 7 significant
    digits (the recorded values are float32), NaN and inf as null."""
    out: list[str] = []
    _encode(record, out)
    out.append("\n")
    return "".join(out).encode("utf-8")


class EventWriter:
    """Appends records to one events file, one ``os.write`` per complete line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict) -> int:
        """Append one record; returns the bytes written."""
        return self.write_bytes(encode(record))

    def write_bytes(self, line: bytes) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path}: the event log is closed")
        view = memoryview(line)
        while view:  # a regular file takes it in one call; a short write goes on
            n = os.write(self._fd, view)
            view = view[n:]
        return len(line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None


@dataclass
class EventRead:
    """What `read_events` found: the records, where the next read starts (the byte after
    the last complete line), and how many complete lines were not JSON objects."""

    records: list[dict] = field(default_factory=list)
    offset: int = 0
    malformed: int = 0
    partial_tail: bool = False  # bytes after the last newline (a line being written, or cut)


def read_events(path: str, offset: int = 0) -> EventRead:
    """The complete records of an events file from byte `offset` on (0: all of them); call
    again with the returned offset to read what was appended since (a live run)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n")
    out = EventRead(offset=offset, partial_tail=bool(data) and end != len(data) - 1)
    if end < 0:
        return out
    for raw in data[:end].split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:  # UnicodeDecodeError is a ValueError too
            out.malformed += 1
            continue
        if isinstance(rec, dict):
            out.records.append(rec)
        else:
            out.malformed += 1
    out.offset = offset + end + 1
    return out

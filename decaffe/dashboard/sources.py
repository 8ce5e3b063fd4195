"""What the dashboard reads: run folders (written by `decaffe train`) and Caffe training logs,
both followed as they grow.

A source is read from where it was last read up to: each `refresh` reads only the bytes
appended since (an append-only file's new lines), never the whole file again. A last line
without its newline is left for the next refresh (a writer mid-line, or one killed mid-line
with SIGKILL: that line is reported, not read). A file that shrank or was replaced is read
again from its start. Whatever a source cannot read becomes a named error in `errors`
(file, line, what is wrong) beside what it could read; nothing here raises for bad content.

Run folder (format v1, docs/dashboard.md): meta.json, net.json, solver.prototxt,
train_net.prototxt and events.jsonl, one JSON record a line. Only these files are served.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import threading
import time

from ..errors import DecaffeError
from ..logparse import GlogReader

FORMAT, VERSION = "decaffe-run", 1
# what a client is sent; records of other kinds (a newer writer's) are skipped
KINDS = ("train", "test", "snapshot", "bn", "params", "end")
# the files of a run folder that may be fetched through the dashboard, and nothing else
RUN_FILES = ("meta.json", "net.json", "solver.prototxt", "train_net.prototxt", "events.jsonl")
_CHUNK = 4 << 20  # bytes read per step: a huge file is taken in bounded pieces
_MAX_ERRORS = 20  # named errors kept per source; the rest are counted
# bn and params samples are the big records (up to thousands of channels each): a source keeps
# the first HEAVY_KEEP of each kind, then every 2nd, then every 4th..., so that memory grows
# with the logarithm of a long run's samples, not with them
HEAVY = ("bn", "params")
HEAVY_KEEP = 100


def dumps(value: object) -> str:
    """Compact JSON with NaN and infinities as null (a browser's JSON.parse rejects NaN)."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False, separators=(",", ":"))


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class Tail:
    """Follows one append-only text file: `read()` returns the complete lines added since
    the last call, with their 1-based line numbers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.line_no = 0
        self.partial = 0  # bytes of an unfinished last line
        self._ident: tuple[int, int] | None = None
        self.restarted = False

    def read(self) -> list[tuple[int, str]]:
        self.restarted = False
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        ident = (st.st_dev, st.st_ino)
        if self._ident is not None and (ident != self._ident or st.st_size < self.offset):
            self.offset, self.line_no, self.restarted = 0, 0, True  # replaced or truncated
        self._ident = ident
        if st.st_size == self.offset:
            return []
        out: list[tuple[int, str]] = []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while True:
                    data = f.read(_CHUNK)
                    if not data:
                        break
                    end = data.rfind(b"\n")
                    if end < 0:
                        if len(data) < _CHUNK:
                            break
                        # one line longer than a chunk: skip it whole rather than hold it
                        self.offset += len(data)
                        continue
                    for raw in data[:end].split(b"\n"):
                        self.line_no += 1
                        out.append((self.line_no, raw.decode("utf-8", errors="replace")))
                    self.offset += end + 1
                    f.seek(self.offset)
        except OSError:
            return out
        self.partial = max(0, st.st_size - self.offset)
        return out


class Source:
    """One run shown by the dashboard: its description (`meta`), its net's layers, its
    records in order (each kept as its compact JSON text: what is sent, and a third of the
    memory of parsed values), and the named errors met reading it."""

    kind = ""

    def __init__(self, path: str, name: str | None = None) -> None:
        self.path = os.path.abspath(path)
        self.name = name or os.path.basename(self.path.rstrip(os.sep)) or self.path
        self.meta: dict = {}
        self.net: list[dict] | None = None
        self.records: list[str] = []
        self._heavy: dict[str, list[int]] = {}
        self._errors: list[str] = []
        self._dropped_errors = 0
        self.notes: list[str] = []
        self._notes_by_key: dict[str, str] = {}
        self.version = 0  # bumped when meta, net, errors or notes change
        self.generation = 0  # bumped when the records start again (a file truncated)
        self._lock = threading.Lock()
        self._last_refresh = -1.0

    @property
    def errors(self) -> list[str]:
        more = [f"... and {self._dropped_errors} more errors"] if self._dropped_errors else []
        return self._errors + more

    def error(self, message: str) -> None:
        if message in self._errors:
            return
        if len(self._errors) < _MAX_ERRORS:
            self._errors.append(message)
        else:
            self._dropped_errors += 1
        self.version += 1

    def append(self, rec: dict, text: str | None = None) -> None:
        """Keep a record (bn and params samples thinned past HEAVY_KEEP, see above); `text`:
        its JSON as read, kept as it is when it is plain JSON (no NaN or Infinity, which
        Python's reader takes and a browser's rejects), so it is not encoded again."""
        kind = rec["kind"]
        if kind in HEAVY:
            seen_kept_stride = self._heavy.setdefault(kind, [0, 0, 1])
            seen_kept_stride[0] += 1
            if (seen_kept_stride[0] - 1) % seen_kept_stride[2]:
                return
            seen_kept_stride[1] += 1
            if seen_kept_stride[1] % HEAVY_KEEP == 0:
                seen_kept_stride[2] *= 2
                stride = seen_kept_stride[2]
                nth = f"{stride}{'nd' if stride == 2 else 'th'}"  # a power of 2
                self._set_note(f"thin-{kind}", f"{kind} samples: {seen_kept_stride[1]} of "
                               f"{seen_kept_stride[0]} kept so far; from here every {nth}, "
                               "to bound the dashboard's memory")
        plain = text is not None and "NaN" not in text and "Infinity" not in text
        self.records.append(text.strip() if plain else dumps(rec))

    def clear_records(self) -> None:
        self.records = []
        self._heavy = {}
        self.generation += 1
        for key in [k for k in self._notes_by_key if k.startswith("thin-")]:
            self._set_note(key, None)

    def _set_note(self, key: str, text: str | None) -> None:
        current = self._notes_by_key
        if current.get(key) == text:
            return
        if text is None:
            current.pop(key, None)
        else:
            current[key] = text
        self.notes = list(current.values())
        self.version += 1

    def refresh(self, min_interval: float = 0.2) -> None:
        """Read what was appended since the last refresh (at most one read per
        `min_interval` seconds however many clients ask: many tabs cost one reader)."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_refresh < min_interval:
                return
            self._last_refresh = now
            self._refresh()

    def _refresh(self) -> None:
        raise NotImplementedError

    def status(self) -> dict:
        return {"kind": self.kind, "name": self.name, "path": self.path, "meta": self.meta,
                "net": self.net, "errors": self.errors, "notes": list(self.notes)}

    def files(self) -> dict[str, str]:
        """{name: path} of the files the dashboard may serve for this source."""
        return {}


class RunFolder(Source):
    """A run folder: `{snapshot_prefix}.run/` (it may not exist yet when a dashboard starts
    beside training)."""

    kind = "run"

    def __init__(self, path: str, name: str | None = None) -> None:
        super().__init__(path, name)
        if name is None and self.name.endswith(".run"):
            self.name = self.name[:-4]
        self._events = Tail(os.path.join(self.path, "events.jsonl"))
        self._meta_stamp: tuple | None = None
        self._net_read = False
        self._partial_noted = 0

    def files(self) -> dict[str, str]:
        return {n: os.path.join(self.path, n) for n in RUN_FILES}

    def _refresh(self) -> None:
        if not os.path.isdir(self.path):
            self._note(f"waiting for {self.path} (the run folder) to be written")
            return
        self._note(None)
        self._read_meta()
        self._read_net()
        lines = self._events.read()
        if self._events.restarted:
            self.clear_records()
            self._set_note("restart", "events.jsonl was truncated or replaced; read again "
                           "from its start")
        for line_no, text in lines:
            self._record(line_no, text)
        partial = self._events.partial
        if partial and partial != self._partial_noted:
            self._partial_noted = partial
            self._set_note("partial", f"events.jsonl: its last line is incomplete ({partial} "
                           "bytes so far): a record being written, or a run killed mid-write; "
                           "it is skipped")
        elif not partial and self._partial_noted:
            self._partial_noted = 0
            self._set_note("partial", None)
        if not os.path.exists(self._events.path) and self.meta:
            self._set_note("events", "events.jsonl: not written yet")
        else:
            self._set_note("events", None)

    def _read_meta(self) -> None:
        path = os.path.join(self.path, "meta.json")
        try:
            st = os.stat(path)
        except OSError:
            self._set_note("meta", "meta.json: not written yet")
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._meta_stamp:
            return
        self._meta_stamp = stamp
        self._set_note("meta", None)
        value = _read_json(path, self)
        if value is None:
            return
        if not isinstance(value, dict):
            self.error("meta.json: not a JSON object")
            return
        if value.get("format") != FORMAT:
            self.error(f"meta.json: format is {value.get('format')!r}, not {FORMAT!r}")
        version = value.get("version")
        if isinstance(version, int) and version > VERSION:
            self.error(f"meta.json: version {version} is newer than this dashboard reads "
                       f"({VERSION}); what it knows is shown")
        self.meta = value
        self.version += 1

    def _read_net(self) -> None:
        if self._net_read:
            return
        path = os.path.join(self.path, "net.json")
        if not os.path.exists(path):
            return
        self._net_read = True
        value = _read_json(path, self)
        if value is None:
            return
        layers = value.get("layers") if isinstance(value, dict) else None
        if not isinstance(layers, list):
            self.error("net.json: no 'layers' list")
            return
        good = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
                self.error(f"net.json: layer #{i} has no name")
                continue
            good.append({"name": layer["name"], "type": str(layer.get("type", "")),
                         "bottoms": [str(b) for b in layer.get("bottoms") or []],
                         "tops": [str(t) for t in layer.get("tops") or []],
                         "phase": layer.get("phase")})
        self.net = good
        self.version += 1

    def _record(self, line_no: int, text: str) -> None:
        if not text.strip():
            return
        try:
            rec = json.loads(text)
        except ValueError as e:
            self.error(f"events.jsonl:{line_no}: not valid JSON ({e.msg} at column "
                       f"{e.colno})")
            return
        if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
            self.error(f"events.jsonl:{line_no}: a record needs a 'kind'")
            return
        if rec["kind"] not in KINDS:
            return  # a kind this dashboard does not know: forward compatible
        if not isinstance(rec.get("iter"), int) or isinstance(rec.get("iter"), bool):
            self.error(f"events.jsonl:{line_no}: a '{rec['kind']}' record without an integer "
                       "'iter'")
            return
        if not isinstance(rec.get("time"), (int, float)) or isinstance(rec["time"], bool):
            rec["time"] = None
            text = None  # changed: encoded again
        self.append(rec, text)

    def _note(self, text: str | None) -> None:
        self._set_note("state", text)


class LogSource(Source):
    """A training log in Caffe's glog format (C++ Caffe's or decaffe's), followed as it
    grows."""

    kind = "log"

    def __init__(self, path: str, name: str | None = None) -> None:
        super().__init__(path, name)
        try:
            year = datetime.datetime.fromtimestamp(os.path.getmtime(self.path)).year
        except OSError:
            year = None
        self._reader = GlogReader(year)
        self._tail = Tail(self.path)
        self._lines = 0
        self._meta_seen: dict = {}
        self._layers_seen = 0

    def files(self) -> dict[str, str]:
        return {os.path.basename(self.path): self.path}

    def _refresh(self) -> None:
        if not os.path.exists(self.path):
            self._set_state(f"waiting for {self.path} to be written")
            return
        lines = self._tail.read()
        if self._tail.restarted:
            self.clear_records()
            self._reader = GlogReader(self._reader.year)
        self._lines += len(lines)
        for rec in self._reader.feed([t for _, t in lines]):
            self.append(rec)
        meta = dict(self._reader.meta, name=self.name)
        if meta != self._meta_seen:
            self._meta_seen = meta
            self.meta = meta
            self.version += 1
        if len(self._reader.layers) != self._layers_seen:
            self._layers_seen = len(self._reader.layers)
            self.net = [dict(layer) for layer in self._reader.layers]
            self.version += 1
        if self._lines and not self.records and not self._reader.meta:
            self._set_state(f"{self.name}: no Caffe training lines read so far (\"Iteration N, "
                            "loss = X\", \"Test net output\"); is this a Caffe log?")
        else:
            self._set_state(None)

    def _set_state(self, text: str | None) -> None:
        self._set_note("state", text)


def _read_json(path: str, source: Source):
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        source.error(f"{name}: cannot read ({e.strerror})")
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        source.error(f"{name}:{getattr(e, 'lineno', '?')}:{getattr(e, 'colno', '?')}: not "
                     f"valid JSON ({getattr(e, 'msg', e)}); truncated?")
        return None


def _is_run_folder(path: str) -> bool:
    return path.rstrip(os.sep).endswith(".run") or any(
        os.path.exists(os.path.join(path, n)) for n in ("meta.json", "events.jsonl"))


def _is_log(name: str) -> bool:
    return name.endswith(".log") or ".log." in name or name.endswith(".INFO")


def discover(paths: list[str]) -> list[Source]:
    """The sources named by the command line: run folders, logs, and folders holding them
    (one level down: `*.run/` folders and `*.log` files). A path ending in `.run` that does
    not exist yet is a run folder still to be written.

    Raises DecaffeError for a path that is none of these."""
    sources: list[Source] = []
    for p in paths:
        if os.path.isdir(p):
            if _is_run_folder(p):
                sources.append(RunFolder(p))
                continue
            found: list[Source] = []
            for entry in sorted(os.listdir(p)):
                full = os.path.join(p, entry)
                if os.path.isdir(full) and _is_run_folder(full):
                    found.append(RunFolder(full))
                elif os.path.isfile(full) and _is_log(entry):
                    found.append(LogSource(full))
            if not found:
                raise DecaffeError(f"{p}: no run folders (*.run/) or training logs (*.log) in "
                                   "this folder")
            sources.extend(found)
        elif os.path.isfile(p):
            if os.path.basename(p) in ("meta.json", "events.jsonl"):
                sources.append(RunFolder(os.path.dirname(os.path.abspath(p))))
            else:
                sources.append(LogSource(p))
        elif p.rstrip(os.sep).endswith(".run"):
            sources.append(RunFolder(p))
        else:
            raise DecaffeError(f"{p}: no such run folder or log")
    seen: set[str] = set()
    unique = []
    for s in sources:
        if s.path not in seen:
            seen.add(s.path)
            unique.append(s)
    return unique

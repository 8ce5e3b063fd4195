"""Reading training logs in Caffe's glog format: the original `caffe train`'s and decaffe's.

Two readers share the patterns here: `decaffe parse_log` (cli/logtools.py), which turns a whole
log into Caffe's parse_log.py tables, and the dashboard, which follows a log as it grows with
`GlogReader` and turns it into the run folder's records (see docs/dashboard.md).

The lines read are the ones Caffe's solver.cpp, sgd_solver.cpp and net.cpp print (BVLC Caffe
1.0; decaffe prints the same):

    (glog prefix "I0331 11:06:34.924002 24302 solver.cpp:228] " left out below)
    Iteration 0, loss = 2.30337
    Iteration 100 (145.4 iter/s, 0.68s/100 iters), loss = 0.3
        Train net output #0: loss = 2.30337 (* 1 = 2.30337 loss)
    Iteration 0, lr = 0.001
    Iteration 0, Testing net (#0)
        Test net output #0: accuracy = 0.0963
    Snapshotting to binary proto file X.caffemodel
    Snapshotting solver state to HDF5 file X.solverstate.h5
    Optimization Done.

plus the solver's parameters (the text after "Initializing solver from parameters:") for
max_iter, display and test_interval, the training net's layers (its "Initializing net from
parameters:" text and net.cpp's "Creating Layer", "X <- bottom", "X -> top" lines) and the
first "Top shape:" (the batch size). Lines that are not glog lines (a progress bar, a Python
traceback) are skipped, except inside those parameter dumps.
"""

from __future__ import annotations

import datetime
import math
import re

NUMBER = r"[-+]?(?:[\d.]+(?:[eE][-+]?\d+)?|nan|inf)"
ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+|[-+]?(?:nan|inf))")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+|[-+]?(?:nan|inf))")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
# severity, month, day, time, then (optional in hand-made logs) thread id and file:line]
GLOG = re.compile(r"^\s*[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d+)\s+(?:\d+\s+)?"
                  r"(?:([^\]\s]*)\] ?)?(.*)$")

_LOSS = re.compile(rf"Iteration (\d+)(?: \(({NUMBER}) iter/s[^)]*\))?, loss = ({NUMBER})")
_LR = re.compile(rf"Iteration (\d+), lr = ({NUMBER})")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_SNAP_MODEL = re.compile(r"Snapshotting to (?:binary proto|HDF5) file (.+?)\s*$")
_SNAP_STATE = re.compile(r"Snapshotting solver state to (?:binary proto|HDF5) file (.+?)\s*$")
_TOP_SHAPE = re.compile(r"Top shape: (\d+)")
_PARAM = re.compile(r"^(\w+): (.*)$")
_CREATING = re.compile(r"Creating Layer (\S+)$")
_BOTTOM = re.compile(r"^(\S+) <- (\S+)$")
_TOP = re.compile(r"^(\S+) -> (\S+)(?: \(in-place\))?$")


def line_time(line: str, year: int) -> datetime.datetime | None:
    """The timestamp of a glog line, or None for other lines."""
    m = GLOG.match(line)
    if not m:
        return None
    month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 6))
    micro = int(m.group(6)[:6].ljust(6, "0"))
    try:
        return datetime.datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        return None


def number(text: str) -> float | None:
    """A number as Caffe prints it; NaN and infinities become None (as in the run folder)."""
    try:
        value = float(text.replace("-nan", "nan"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class GlogReader:
    """Turns the lines of a Caffe training log, fed in order (a whole log or what a growing
    one added since the last call), into run-folder records: ``{"kind": "train", "iter",
    "time", "loss", "lr", "outputs", "images_per_s"}``, ``"test"`` ``{"net", "scores"}``,
    ``"snapshot"`` ``{"model", "state", "resume"}`` and ``"end"``. ``time`` is seconds since the
    log's first timestamp. A train record is complete when the next line that is not one of its
    outputs or its learning rate arrives (`flush` ends the last one at the end of a log).
    `meta` gathers what the log says of the run (max_iter, display, test_interval,
    batch_size) and `layers` the training net's layers as net.json lists them.
    """

    def __init__(self, year: int | None = None):
        self.year = year or datetime.date.today().year
        self.meta: dict = {}
        self.layers: list[dict] = []
        self._start: datetime.datetime | None = None
        self._last_time = 0.0
        self._pending: dict | None = None  # the train or test record being filled
        self._snapshot: dict | None = None
        self._dump: str | None = None  # "solver" or "net" while inside a parameter dump
        self._dump_depth = 0
        self._dump_layer: dict | None = None
        self._net_done = False  # the training net is built: later layers are the test net's
        self._types: dict[str, str] = {}
        self._by_name: dict[str, dict] = {}
        self._prev_train: tuple[int, float] | None = None
        self._ended = False

    # ------------------------------------------------------------------------------------
    def feed(self, lines: list[str]) -> list[dict]:
        """Records completed by these lines."""
        out: list[dict] = []
        for line in lines:
            self._line(line.rstrip("\r\n"), out)
        return out

    def flush(self) -> list[dict]:
        """The record still being filled, at the end of a log."""
        out: list[dict] = []
        self._close(out)
        return out

    # ------------------------------------------------------------------------------------
    def _line(self, line: str, out: list[dict]) -> None:
        m = GLOG.match(line)
        if m is None:
            if self._dump is not None:
                self._dump_line(line)
            return
        self._dump = None
        when = line_time(line, self.year)
        if when is not None:
            if self._start is None:
                self._start = when
            if when < self._start - datetime.timedelta(days=1):  # past New Year's Eve
                when = when.replace(year=when.year + 1)
            self._last_time = (when - self._start).total_seconds()
        message = m.group(8)
        if message.startswith("Initializing solver from parameters"):
            self._dump = "solver"
            return
        if message.startswith("Initializing net from parameters"):
            self._dump = "net" if not self._net_done else None
            self._dump_depth = 0
            return
        if message.startswith("Creating test net") or message.startswith("Solving "):
            self._net_done = True
        self._net_line(message)
        if "batch_size" not in self.meta:
            t = _TOP_SHAPE.search(message)
            if t:
                self.meta["batch_size"] = int(t.group(1))
        self._solver_line(message, out)

    def _solver_line(self, message: str, out: list[dict]) -> None:
        t = self._last_time
        pending = self._pending
        if pending is not None:
            # a record's lines come together: its outputs, then (training) its learning rate
            if pending["kind"] == "train":
                m = TRAIN_OUTPUT.search(message)
                if m:
                    pending["outputs"][m.group(2)] = number(m.group(3))
                    return
                m = _LR.search(message)
                if m and int(m.group(1)) == pending["iter"]:
                    pending["lr"] = number(m.group(2))
                    self._close(out)
                    return
            else:
                m = TEST_OUTPUT.search(message)
                if m:
                    pending["scores"][m.group(2)] = number(m.group(3))
                    return
            self._close(out)
        m = _LOSS.search(message)
        if m:
            it = int(m.group(1))
            rate = number(m.group(2)) if m.group(2) else None
            if rate is None and self._prev_train and t > self._prev_train[1]:
                rate = (it - self._prev_train[0]) / (t - self._prev_train[1])
            self._prev_train = (it, t)
            batch = self.meta.get("batch_size", 0) * self.meta.get("iter_size", 1)
            self._pending = {"kind": "train", "iter": it, "time": t, "loss": number(m.group(3)),
                             "lr": None, "outputs": {},
                             "images_per_s": rate * batch if rate and batch else None}
            return
        m = _TESTING.search(message)
        if m:
            self._pending = {"kind": "test", "iter": int(m.group(1)), "time": t,
                             "net": int(m.group(2)), "scores": {}}
            return
        m = _SNAP_STATE.search(message)
        if m:
            snap = self._snapshot or {"kind": "snapshot", "iter": self._snapshot_iter(m.group(1)),
                                      "time": t, "model": None}
            snap["state"] = m.group(1)
            snap["resume"] = f"decaffe train -solver SOLVER -snapshot {m.group(1)}"
            out.append(snap)
            self._snapshot = None
            return
        m = _SNAP_MODEL.search(message)
        if m:
            self._close(out)
            self._snapshot = {"kind": "snapshot", "iter": self._snapshot_iter(m.group(1)),
                              "time": t, "model": m.group(1), "state": None, "resume": None}
            return
        if message.startswith("Optimization Done") or message.startswith("Optimization stopped"):
            self._close(out)
            if not self._ended:
                self._ended = True
                reason = "done" if message.startswith("Optimization Done") else "stopped"
                out.append({"kind": "end", "iter": self._prev_train[0] if self._prev_train
                            else 0, "time": t, "reason": reason, "message": message})

    def _snapshot_iter(self, path: str) -> int:
        m = re.search(r"_iter_(\d+)", path)
        return int(m.group(1)) if m else (self._prev_train[0] if self._prev_train else 0)

    def _close(self, out: list[dict]) -> None:
        if self._snapshot is not None:  # a model written without a solver state line
            out.append(self._snapshot)
            self._snapshot = None
        if self._pending is not None:
            out.append(self._pending)
            self._pending = None

    # ------------------------------------------------------------------------------------
    def _dump_line(self, line: str) -> None:
        """A line of a parameter dump (protobuf text, two spaces per level)."""
        text = line.strip()
        if self._dump == "solver":
            m = _PARAM.match(text)
            if m and not line.startswith(" "):
                key, value = m.group(1), m.group(2).strip('"')
                if key in ("max_iter", "display", "test_interval", "iter_size", "snapshot"):
                    try:
                        self.meta[key] = int(value)
                    except ValueError:
                        pass
                elif key in ("snapshot_prefix", "net", "train_net", "type", "lr_policy"):
                    self.meta[key] = value
            return
        # the training net: each layer's name and type, at the first level of a layer block
        if text.endswith("{"):
            self._dump_depth += 1
            if self._dump_depth == 1 and text.split()[0] in ("layer", "layers"):
                self._dump_layer = {}
            return
        if text == "}":
            self._dump_depth -= 1
            if self._dump_depth == 0 and self._dump_layer is not None:
                name = self._dump_layer.get("name")
                if name:
                    self._types[name] = self._dump_layer.get("type", "")
                self._dump_layer = None
            return
        m = _PARAM.match(text)
        if m and self._dump_depth == 1 and self._dump_layer is not None:
            if m.group(1) in ("name", "type"):
                self._dump_layer[m.group(1)] = m.group(2).strip('"')

    def _net_line(self, message: str) -> None:
        if self._net_done:
            return
        m = _CREATING.search(message)
        if m:
            name = m.group(1)
            layer = {"name": name, "type": self._types.get(name, ""), "bottoms": [],
                     "tops": [], "phase": "TRAIN"}
            self.layers.append(layer)
            self._by_name[name] = layer
            return
        m = _BOTTOM.match(message.strip())
        if m and m.group(1) in self._by_name:
            self._by_name[m.group(1)]["bottoms"].append(m.group(2))
            return
        m = _TOP.match(message.strip())
        if m and m.group(1) in self._by_name:
            self._by_name[m.group(1)]["tops"].append(m.group(2))

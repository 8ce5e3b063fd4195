"""`RunRecorder`: a solver observer that writes the run folder (see decaffe.runs and
docs/runs.md) and, when asked, TensorBoard event files.

Everything happens on the training thread, at the iterations it records: a display
iteration (the solver's `display`; every ceil(max_iter/200) iterations when display is
0) writes a "train" record; some of those also take a "bn" and a "params" sample, as
often as costs at most 1% of the training time (the sample's own measured cost decides)
and at most about 500 times per run. A sample's values are gathered on the device and
copied to the host in one transfer (decaffe.runs.sample).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shlex
import sys
import time
import weakref
from types import TracebackType
from typing import Protocol

from .. import log
from ..errors import DecaffeError
from ..formats import prototxt
from ..net import Net, filter_net
from ..proto import caffe_pb2
from .events import EventWriter
from .sample import Sampler
from .tensorboard import TensorBoardSink

FORMAT, VERSION = "decaffe-run", 1
END_REASONS = ("finished", "sigint", "sigterm", "error")
HEAVY_TIME_FRACTION = 0.01  # bn/params samples may take this share of the training time
HEAVY_SAMPLES = 500  # about this many bn/params samples in a whole run, at most
UNDISPLAYED_RECORDS = 200  # train records in a run whose solver displays nothing


class RecordedSolver(Protocol):
    """What a RunRecorder reads of the solver it records (a decaffe.solvers.Solver, named by
    its fields: the solvers import this package, so naming Solver would be an import cycle,
    tests/test_layout.py)."""

    param: caffe_pb2.SolverParameter
    net: Net
    iter: int
    learning_rate: float
    smoothed_loss: float
    _train_param: caffe_pb2.NetParameter

    def add_observer(self, observer: RunRecorder) -> None: ...

    def remove_observer(self, observer: RunRecorder) -> None: ...


class RunError(DecaffeError):
    """A run folder that cannot be written or read; names the folder or file."""


def default_run_dir(snapshot_prefix: str) -> str:
    """Where a run is recorded by default: beside its snapshots, PREFIX.run."""
    if not snapshot_prefix:
        raise RunError("the solver has no snapshot_prefix to record the run beside; give a "
                       "run folder (decaffe train -run_dir DIR, solver.record_run(DIR))")
    return snapshot_prefix + ".run"


def write_atomic(path: str, data: bytes) -> None:
    """Write a whole file under a temporary name and rename it into place."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def resume_command(command: list[str] | None, state_path: str,
                   solver_file: str | None) -> str:
    """The command line that resumes from `state_path`: the recorded `decaffe train` command
    with its -snapshot/-weights replaced, else `decaffe train -solver FILE -snapshot STATE`,
    else the pycaffe call."""
    if command and len(command) >= 2 and command[1] == "train":
        out: list[str] = []
        skip = False
        for arg in command:
            if skip:
                skip = False
                continue
            bare = arg.lstrip("-")
            name = bare.split("=", 1)[0]
            if arg.startswith("-") and name in ("snapshot", "weights"):
                skip = "=" not in bare
                continue
            out.append(arg)
        return shlex.join([*out, "-snapshot", state_path])
    if solver_file:
        return shlex.join(["decaffe", "train", "-solver", solver_file, "-snapshot", state_path])
    return f"solver.restore({state_path!r})"


def net_graph(net_param: caffe_pb2.NetParameter) -> dict:
    """net.json: the layers as drawn (name, type, bottoms, tops, phase)."""
    filtered = filter_net(net_param)
    phase = caffe_pb2.Phase.Name(filtered.state.phase)
    return {"name": filtered.name,
            "layers": [{"name": lp.name, "type": lp.type, "bottoms": list(lp.bottom),
                        "tops": list(lp.top), "phase": phase} for lp in filtered.layer]}


class RunRecorder:
    """Records one solver's training (a SolverObserver; see the module docstring).

    path: the run folder (None: beside the snapshots, PREFIX.run); record: write the run
    folder at all (False with `tensorboard` writes only TensorBoard files); command: the
    command line to record (default sys.argv); world_size: workers training together (for
    images/s); resumed_from: the .solverstate this process resumed from (then an existing
    run folder is continued; a fresh start moves an existing one aside).
    """

    def __init__(self, solver: RecordedSolver, path: str | None = None, *, record: bool = True,
                 tensorboard: str | None = None, command: list[str] | None = None,
                 world_size: int = 1, resumed_from: str | None = None) -> None:
        self.solver = solver
        self.record = bool(record)
        self.path = (path if path is not None else default_run_dir(solver.param.snapshot_prefix)
                     ) if record else None
        self.tensorboard_dir = tensorboard
        self.command = list(command) if command is not None else [sys.argv[0], *sys.argv[1:]]
        self.world_size = int(world_size)
        self.resumed_from = resumed_from
        self.sampler: Sampler | None = None
        self.events: EventWriter | None = None
        self.tb = None
        self.started = time.time()
        self.closed = False
        p = solver.param
        if p.display > 0:
            self.every = int(p.display)
        else:
            self.every = max(1, math.ceil(max(p.max_iter, 1) / UNDISPLAYED_RECORDS))
        self.heavy_every = max(1, p.max_iter // HEAVY_SAMPLES)
        self._last_heavy_iter: int | None = None
        self._last_heavy_t = 0.0
        self._heavy_cost = 0.0
        self._pending: dict | None = None
        self._last_rate: tuple[int, float] | None = None
        self.batch_size: int | None = None
        self.seconds = 0.0  # spent in the observer's calls on the training thread

    # -- set-up ---------------------------------------------------------------------------
    def start(self) -> RunRecorder:
        """Write the folder's fixed files, open the event log, attach to the solver."""
        solver = self.solver
        self.sampler = Sampler(solver.net)
        first = _first_batch(solver.net)
        self.batch_size = first * solver.param.iter_size * self.world_size if first else None
        if self.tensorboard_dir is not None:
            self.tb = TensorBoardSink(self.tensorboard_dir)
        if self.record:
            self._open_folder()
        solver.add_observer(self)
        atexit.register(_close_at_exit, weakref.ref(self))
        return self

    def _open_folder(self) -> None:
        path = self.path
        solver = self.solver
        p = solver.param
        meta_path = os.path.join(path, "meta.json")
        previous = _read_meta(meta_path) if os.path.isdir(path) else None
        if os.path.isdir(path) and self.resumed_from is None:
            _move_aside(path, previous)
            previous = None
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create the run folder '{path}': {e.strerror}") from None
        if previous is not None and isinstance(previous.get("started"), (int, float)):
            self.started = float(previous["started"])  # a resumed run goes on on one clock
        meta = {
            "format": FORMAT, "version": VERSION,
            "name": _run_name(path),
            "started": self.started,
            "command": self.command,
            "cwd": os.getcwd(),
            "solver_file": getattr(solver, "solver_file", None),
            "snapshot_prefix": p.snapshot_prefix,
            "max_iter": int(p.max_iter),
            "display": int(p.display),
            "test_interval": int(p.test_interval),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "resumed_from": self.resumed_from,
            # beyond v1's list: the train-record interval, and each start of this run
            "record_every": self.every,
            "starts": [*((previous or {}).get("starts") or []),
                       {"time": time.time() - self.started, "iter": int(solver.iter),
                        "resumed_from": self.resumed_from}],
        }
        try:
            write_atomic(os.path.join(path, "solver.prototxt"),
                         prototxt.to_text(p).encode("utf-8"))
            train = filter_net(solver._train_param)
            write_atomic(os.path.join(path, "train_net.prototxt"),
                         prototxt.to_text(train).encode("utf-8"))
            write_atomic(os.path.join(path, "net.json"),
                         json.dumps(net_graph(solver._train_param), indent=1).encode("utf-8"))
            write_atomic(meta_path, json.dumps(meta, indent=1).encode("utf-8"))
            self.events = EventWriter(os.path.join(path, "events.jsonl"))
        except OSError as e:
            raise RunError(f"cannot write the run folder '{path}': {e.strerror}") from None

    # -- the solver's observer ------------------------------------------------------------
    def _records_now(self, it: int) -> bool:
        return it % self.every == 0

    def on_gradients(self, solver: RecordedSolver) -> None:
        it = solver.iter
        self._pending = None
        if self.closed or not self._records_now(it):
            return
        t0 = time.perf_counter()
        if self._heavy_due(it):
            sampler = self.sampler
            self._pending = {"weight": sampler.norms("weight"), "grad": sampler.norms("grad")}
        self._heavy_cost_now = time.perf_counter() - t0
        self.seconds += self._heavy_cost_now

    def _heavy_due(self, it: int) -> bool:
        if self._last_heavy_iter is None:
            return True
        if it - self._last_heavy_iter < self.heavy_every:
            return False
        return time.perf_counter() - self._last_heavy_t >= self._heavy_cost / HEAVY_TIME_FRACTION

    def on_update(self, solver: RecordedSolver) -> None:
        it = solver.iter
        if self.closed or not self._records_now(it):
            return
        t0 = time.perf_counter()
        sampler = self.sampler
        pending, self._pending = self._pending, None
        parts = sampler.output_values()
        n_out = sum(int(t.numel()) for t in parts)
        layout: list = []
        n_params = 0
        if pending is not None:
            update = sampler.norms("grad")  # the diffs now hold the update (Caffe's diff)
            if pending["weight"] is not None:
                n_params = int(pending["weight"].numel())
                parts += [pending["weight"], pending["grad"], update]
            bn_parts, layout = sampler.bn_values()
            parts += bn_parts
        values = sampler.fetch(parts)
        now = time.time()
        elapsed = now - self.started
        rate = None
        clock = time.perf_counter()
        if self._last_rate is not None and self.batch_size:
            last_it, last_t = self._last_rate
            if it > last_it and clock > last_t:
                rate = (it - last_it) * self.batch_size / (clock - last_t)
        self._last_rate = (it, clock)
        train = {"kind": "train", "iter": it, "time": elapsed,
                 "loss": float(solver.smoothed_loss), "lr": float(solver.learning_rate),
                 "outputs": sampler.outputs_dict(values[:n_out]), "images_per_s": rate}
        records = [train]
        if pending is not None:
            pos = n_out
            if n_params:
                w = values[pos:pos + n_params]
                g = values[pos + n_params:pos + 2 * n_params]
                u = values[pos + 2 * n_params:pos + 3 * n_params]
                pos += 3 * n_params
                records.append({"kind": "params", "iter": it, "time": elapsed,
                                "layers": sampler.params_dict(w, g, u)})
            if layout:
                records.append({"kind": "bn", "iter": it, "time": elapsed,
                                "layers": sampler.bn_dict(layout, values[pos:])})
        for rec in records:
            self._emit(rec)
        done = time.perf_counter()
        self.seconds += done - t0
        if pending is not None:
            # the first sample pays one-time set-up (kernels, allocations): not its rate
            first = self._last_heavy_iter is None
            self._heavy_cost = 0.0 if first else self._heavy_cost_now + (done - t0)
            self._last_heavy_t = done
            self._last_heavy_iter = it

    def on_test(self, solver: RecordedSolver, test_net_id: int, names: list[str],
                values: list[float]) -> None:
        if self.closed:
            return
        scores: dict = {}
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        seen: dict[str, int] = {}
        for n, v in zip(names, values):
            if counts[n] == 1:
                scores[n] = float(v)
            else:  # an output of several values: name[0], name[1], ...
                j = seen.get(n, 0)
                seen[n] = j + 1
                scores[f"{n}[{j}]"] = float(v)
        self._emit({"kind": "test", "iter": int(solver.iter), "time": time.time() - self.started,
                    "net": int(test_net_id), "scores": scores})

    def on_snapshot(self, solver: RecordedSolver, model_path: str, state_path: str) -> None:
        if self.closed:
            return
        self._emit({"kind": "snapshot", "iter": int(solver.iter),
                    "time": time.time() - self.started, "model": model_path,
                    "state": state_path,
                    "resume": resume_command(self.command, state_path,
                                             getattr(solver, "solver_file", None))})

    # -- output ---------------------------------------------------------------------------
    def _emit(self, record: dict) -> None:
        if self.events is not None:
            try:
                self.events.write(record)
            except OSError as e:  # a full disk stops the recording, not the training
                log.warning(f"run folder {self.path}: cannot append to events.jsonl "
                            f"({e.strerror}); recording stops here")
                self.events.close()
                self.events = None
        if self.tb is not None:
            self.tb.write(record)

    def close(self, reason: str = "finished", message: str | None = None) -> None:
        """Write the "end" record and close the files; detaches from the solver."""
        if self.closed:
            return
        if reason not in END_REASONS:
            raise ValueError(f"end reason must be one of {END_REASONS}, not {reason!r}")
        self._emit({"kind": "end", "iter": int(self.solver.iter),
                    "time": time.time() - self.started, "reason": reason,
                    "message": message})
        self.closed = True
        self.solver.remove_observer(self)
        if self.events is not None:
            self.events.close()
            self.events = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("sigint")
        else:
            self.close("error", f"{exc_type.__name__}: {exc}")


def _close_at_exit(ref: weakref.ref[RunRecorder]) -> None:
    rec = ref()
    if rec is not None and not rec.closed:
        rec.close("finished")


def _first_batch(net: Net) -> int:
    """The first blob's first dimension (the train net's batch), 0 when unknown."""
    for tops in net.top_names.values():
        for t in tops:
            shape = net.blobs[t].shape
            return int(shape[0]) if shape else 0
    return 0


def _run_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    return base[:-4] if base.endswith(".run") and len(base) > 4 else base


def _read_meta(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _move_aside(path: str, meta: dict | None) -> None:
    """A fresh start keeps the folder an earlier run left: renamed NAME-<its start>.run."""
    started = meta.get("started") if meta else None
    if not isinstance(started, (int, float)):
        started = os.path.getmtime(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    norm = os.path.normpath(path)
    stem = norm[:-4] if norm.endswith(".run") else norm
    target = f"{stem}-{stamp}.run"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{stem}-{stamp}-{n}.run"
    os.replace(norm, target)
    log.info(f"The run folder {path} holds an earlier run; moved it to {target}")

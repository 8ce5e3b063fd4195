"""The Solver: Caffe's training loop (Solver::Step / Solve / Test), snapshots and restore,
with pycaffe's interface (solver.net, .test_nets, .iter, .step, .solve, .restore,
.snapshot, .add_callback, .apply_update, .share_weights).

Nets come from the SolverParameter as Caffe's InitTrainNet / InitTestNets choose them:
exactly one of net / net_param / train_net / train_net_param gives the train net (phase
TRAIN, then the net's own state, then train_state, merged in that order); test nets come
from test_net_param, then test_net files, then one instance of the generic net / net_param
per remaining test_iter entry (phase TEST, the net's state, then test_state[i]). Test nets
share the train net's parameters.

One iteration (Step): clear the parameter diffs; test every test_interval iterations (and
at iteration 0 unless test_initialization is false); run iter_size forward/backward passes
and average their loss; smooth the loss over the last average_loss iterations; every
`display` iterations log the smoothed loss, the train net's outputs and the learning rate;
apply the update; count the iteration; snapshot every `snapshot` iterations or when an
action (a signal, say) asks for one; stop when an action asks to.

Beyond Caffe: an action may also be ``terminate`` (what `decaffe train` makes of SIGTERM): stop
at the end of the current iteration with a snapshot whatever snapshot_after_train says. Observers
(`add_observer`, a `SolverObserver`) see each iteration's gradients and update, each test pass
and each snapshot, for run recording (decaffe.runs) without the loop knowing who listens.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from google.protobuf import text_format

from .. import log, precision, threads
from .. import mode as _mode
from ..blob import own_diffs
from ..errors import SolverError, suggest
from ..formats import prototxt
from ..net import Net, load_net_param
from ..proto import caffe_pb2
from ..runs import RunRecorder
from . import lr_policy, updates
from . import snapshot as snap

NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"  # Caffe's SolverAction values
TERMINATE = "terminate"  # beyond Caffe: stop now with a snapshot (SIGTERM, preemption)
_f32 = np.float32
# What a solver is made from: a solver prototxt's path (or its text) or a SolverParameter
SolverSource = str | bytes | os.PathLike[str] | caffe_pb2.SolverParameter


class SolverCallbacks(Protocol):
    """One object giving both of add_callback's functions (pycaffe's NCCL); on_start is
    optional."""

    def on_gradients_ready(self) -> object: ...


class NonFiniteLossError(SolverError):
    """Training produced a loss that is NaN or infinite; names the iteration and the first
    layer whose output was not finite."""

    def __init__(self, message: str, iteration: int, layer: str | None) -> None:
        self.iteration, self.layer = iteration, layer
        super().__init__(message)


def read_solver_param(source: SolverSource) -> tuple[caffe_pb2.SolverParameter, str | None]:
    """(SolverParameter, the file it came from or None) from a path, text or message,
    upgraded as Caffe's ReadSolverParamsFromTextFileOrDie does (legacy solver_type, a
    missing or directory snapshot_prefix)."""
    path = None
    if isinstance(source, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(source)
    elif isinstance(source, (str, bytes, os.PathLike)):
        text = os.fsdecode(source)
        param = prototxt.read_solver(text)
        if os.path.exists(text) or not any(c in text for c in "\n{:"):
            path = text
    else:
        raise SolverError(f"cannot make a solver from {type(source).__name__}; give a "
                          "solver prototxt path or a SolverParameter")
    upgrade_solver_type(param, path)
    if path is not None:
        upgrade_snapshot_prefix(param, path)
    return param, path


_LEGACY_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def upgrade_solver_type(param: caffe_pb2.SolverParameter, path: str | None = None) -> None:
    """The legacy enum solver_type becomes the string type (Caffe's UpgradeSolverType)."""
    if not param.HasField("solver_type"):
        return
    if param.HasField("type"):
        raise SolverError(f"{path or 'solver'}: solver_type (the old enum) and type (the new "
                          "string) cannot both be specified")
    param.type = _LEGACY_TYPES[param.solver_type]
    param.ClearField("solver_type")


def upgrade_snapshot_prefix(param: caffe_pb2.SolverParameter, path: str) -> None:
    """No snapshot_prefix: the solver file's path without extension; a directory: the solver
    file's name inside it (Caffe's UpgradeSnapshotPrefixProperty)."""
    stem_path = os.path.splitext(path)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem_path
        log.info(f"snapshot_prefix was not specified and is set to {param.snapshot_prefix}")
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem_path))
        log.info(f"snapshot_prefix was a directory and is replaced to {param.snapshot_prefix}")


def _read_net(path: str):
    return load_net_param(path)


def _first_of(param: caffe_pb2.SolverParameter) -> dict[str, int]:
    return {f: int(param.HasField(f)) for f in ("net", "net_param", "train_net",
                                                "train_net_param")}


# The class solvers build their nets as when the caller names none. decaffe.pycaffe's Net
# (the engine's Net with pycaffe's Python-side methods) registers itself when imported, as
# `import caffe` and `decaffe.Net` do, so that solver.net is a caffe.Net as in pycaffe; the
# engine itself never imports pycaffe.
_net_class: type | None = None


def set_net_class(cls: type) -> None:
    """The class (the engine's Net or a subclass) solvers build their train and test nets as
    when no net_class is given; decaffe.pycaffe.net registers pycaffe's Net."""
    if not (isinstance(cls, type) and issubclass(cls, Net)):
        raise SolverError(f"set_net_class: {cls!r} is not a subclass of decaffe.net.Net")
    global _net_class
    _net_class = cls


class SolverObserver:
    """What a solver tells the objects given to `Solver.add_observer`; every method is optional
    (this base does nothing), and each is called on the training thread, in the process that
    holds the observer.

    - ``on_gradients(solver)``: each iteration, after the on_gradients_ready callbacks (with
      several workers: the averaged gradients), before the update. ``solver.iter`` is the
      iteration being computed.
    - ``on_update(solver)``: each iteration, after the update (each parameter's diff then
      holds the update that was subtracted, as in Caffe), before the count advances;
      ``solver.smoothed_loss`` and ``solver.learning_rate`` are this iteration's.
    - ``on_test(solver, test_net_id, names, values)``: after a complete test pass, with each
      output element's name and mean (as logged).
    - ``on_snapshot(solver, model_path, state_path)``: after both files are in place.
    """

    def on_gradients(self, solver: Solver) -> None:
        pass

    def on_update(self, solver: Solver) -> None:
        pass

    def on_test(self, solver: Solver, test_net_id: int, names: list[str],
                values: list[float]) -> None:
        pass

    def on_snapshot(self, solver: Solver, model_path: str, state_path: str) -> None:
        pass


class Solver:
    """A Caffe solver; subclasses fix the update rule (SGDSolver, AdamSolver, ...)."""

    rule_class: type[updates.UpdateRule] = updates.UpdateRule

    def __init__(self, source: SolverSource, *, net_class: type[Net] | None = None) -> None:
        param, path = read_solver_param(source)
        self.param = param
        self.solver_file = path  # the prototxt it came from (None: text or a message)
        self._check_param()
        log.info("Initializing solver from parameters: \n" + _debug_string(param))
        self._check_snapshot_prefix()
        if param.random_seed >= 0:
            _mode.set_random_seed(param.random_seed + _mode.solver_rank())
        self._net_class = net_class or _net_class or Net
        self._train_param = self._train_net_param()
        self.net = self._net_class(self._train_param)
        self.test_nets = self._init_test_nets()
        for models in param.weights:  # weights to start from (Caffe's LoadNetWeights)
            self.load_weights(models)
        for tn in self.test_nets:
            tn.share_with(self.net)
        log.info("Solver scaffolding done.")
        self._iter = 0
        self._iterations_last: int | None = None  # the iteration of the last display line
        self.lr_state = lr_policy.LRState()
        self.rule = self.rule_class(param)
        lr, decay = list(self.net.params_lr), list(self.net.params_weight_decay)
        self._check_regularization(decay)
        self.updater = updates.Updater(self.rule, self.net.learnable_params, lr, decay)
        self._callbacks: list[tuple[Callable | None, Callable | None]] = []
        self._action: Callable[[], str] | None = None
        self.requested_early_exit = False
        self.terminate_requested = False  # the last stop was a TERMINATE action
        self.last_snapshot: tuple[int, str, str] | None = None  # (iter, model, state)
        self._observers: list[SolverObserver] = []
        self._on_gradients: list[Callable] = []
        self._on_update: list[Callable] = []
        self.losses: list = []
        self.smoothed_loss = 0.0
        self.learning_rate = 0.0
        # pycaffe's step() never raises on a NaN/inf loss (Caffe logs it and goes on); the
        # `decaffe train` command stops by default (-nan_effect) and sets this
        self.stop_on_nonfinite = False
        self.progress: log.ProgressBar | None = None

    # -- construction ---------------------------------------------------------------------------
    @property
    def type(self) -> str:
        return self.rule.type

    def _check_param(self) -> None:
        p = self.param
        if p.average_loss < 1:
            raise SolverError(f"average_loss: must be at least 1, not {p.average_loss}")
        if p.iter_size < 1:
            raise SolverError(f"iter_size: must be at least 1, not {p.iter_size}")
        lr_policy.check_policy(p)
        self.rule_class(p).check()
        if p.snapshot < 0:
            raise SolverError(f"snapshot: must be >= 0, not {p.snapshot}")

    def _check_regularization(self, decay_mults: list[float]) -> None:
        p = self.param
        uses_decay = any(float(_f32(p.weight_decay) * _f32(d)) != 0 for d in decay_mults)
        if uses_decay and p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"regularization_type: unknown regularization type "
                              f"'{p.regularization_type}'"
                              f"{suggest(p.regularization_type, ('L1', 'L2'))} (known: L1, L2)")

    def _check_snapshot_prefix(self) -> None:
        p = self.param
        # as Caffe, only the root solver (which alone snapshots) probes the folder: several
        # workers probing one file name at once would race
        if not p.snapshot or _mode.solver_rank() != 0:
            return
        if not p.HasField("snapshot_prefix"):
            raise SolverError(f"snapshot_prefix: snapshot is set (every {p.snapshot} "
                              "iterations) but snapshot_prefix is not")
        probe = snap.snapshot_filename(p.snapshot_prefix, 0, ".tempfile")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except (OSError, ValueError):  # ValueError: a NUL byte in the prefix
            raise SolverError(f"snapshot_prefix: cannot write to snapshot prefix "
                              f"{p.snapshot_prefix!r}; make sure that the directory exists and "
                              "is writeable") from None

    def _train_net_param(self) -> tuple[caffe_pb2.NetParameter, caffe_pb2.NetParameter]:
        """The train net's NetParameter (upgraded, state merged)."""
        p = self.param
        given = _first_of(p)
        fields = "net, net_param, train_net, train_net_param"
        if sum(given.values()) < 1:
            raise SolverError(f"the solver must specify a train net using one of these fields: "
                              f"{fields}")
        if sum(given.values()) > 1:
            named = ", ".join(k for k, v in given.items() if v)
            raise SolverError(f"the solver must not give more than one of these fields for the "
                              f"train net: {fields} (it gives {named})")
        if p.HasField("train_net_param"):
            log.info("Creating training net specified in train_net_param.")
            source = p.train_net_param
        elif p.HasField("train_net"):
            log.info(f"Creating training net from train_net file: {p.train_net}")
            source = p.train_net
        elif p.HasField("net_param"):
            log.info("Creating training net specified in net_param.")
            source = p.net_param
        else:
            log.info(f"Creating training net from net file: {p.net}")
            source = p.net
        net_param = _copy_net(source) if isinstance(source, caffe_pb2.NetParameter) \
            else _read_net(source)
        state = caffe_pb2.NetState()
        state.phase = caffe_pb2.TRAIN
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        return net_param

    def _init_test_nets(self) -> list:
        p = self.param
        has_param, has_file = p.HasField("net_param"), p.HasField("net")
        if has_param and has_file:
            raise SolverError("net, net_param: both may not be specified")
        n_generic = int(has_param) + int(has_file)
        n_specific = len(p.test_net_param) + len(p.test_net)
        if n_generic:
            if len(p.test_iter) < n_specific:
                raise SolverError(f"test_iter: must be specified for each test network "
                                  f"({n_specific} test nets, {len(p.test_iter)} test_iter)")
        elif len(p.test_iter) != n_specific:
            if n_specific == 0:
                raise SolverError(f"test_iter: given ({len(p.test_iter)} values) but the solver "
                                  "has no test net (give test_net or test_net_param, or use net "
                                  "instead of train_net)")
            raise SolverError(f"test_iter: must be specified for each test network "
                              f"({n_specific} test nets, {len(p.test_iter)} test_iter)")
        n_instances = len(p.test_iter) if n_generic else n_specific
        if len(p.test_state) and len(p.test_state) != n_instances:
            raise SolverError(f"test_state: must be unspecified or specified once per test net "
                              f"({n_instances} test nets, {len(p.test_state)} test_state)")
        if n_instances and p.test_interval <= 0:
            raise SolverError(f"test_interval: must be > 0 when there are test nets "
                              f"({n_instances}), not {p.test_interval}")
        for i, it in enumerate(p.test_iter):
            if it < 0:
                raise SolverError(f"test_iter[{i}]: must be >= 0, not {it}")
        sources: list[tuple[str, caffe_pb2.NetParameter]] = []
        for tp in p.test_net_param:
            sources.append(("test_net_param", _copy_net(tp)))
        for path in p.test_net:
            sources.append((f"test_net file: {path}", _read_net(path)))
        remaining = len(p.test_iter) - len(sources)
        for _ in range(max(remaining, 0)):
            if has_param:
                sources.append(("net_param", _copy_net(p.net_param)))
            elif has_file:
                sources.append((f"net file: {p.net}", _read_net(p.net)))
        nets = []
        for i, (where, net_param) in enumerate(sources):
            state = caffe_pb2.NetState()
            state.phase = caffe_pb2.TEST
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(state)
            log.info(f"Creating test net (#{i}) specified by {where}")
            nets.append(self._net_class(net_param))
        return nets

    # -- pycaffe's attributes -----------------------------------------------------------------
    @property
    def iter(self) -> int:
        """Iterations done: the number of times the weights have been updated."""
        return self._iter

    @iter.setter
    def iter(self, value: int) -> None:
        self._iter = int(value)

    def add_callback(self, on_start: Callable[[], object] | SolverCallbacks | None = None,
                     on_gradients_ready: Callable | None = None) -> None:
        """Call on_start at the start of each iteration and on_gradients_ready before each
        update (pycaffe's solver.add_callback). One object with on_start and
        on_gradients_ready methods (pycaffe's NCCL) may be given instead of the two."""
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            obj = on_start
            on_start, on_gradients_ready = getattr(obj, "on_start", None), obj.on_gradients_ready
        for fn in (on_start, on_gradients_ready):
            if fn is not None and not callable(fn):
                raise SolverError(f"add_callback: {fn!r} is not callable")
        self._callbacks.append((on_start, on_gradients_ready))

    def set_action_function(self, fn: Callable[[], str] | None) -> None:
        """fn() returns 'none', 'stop', 'snapshot' (Caffe's SetActionFunction) or 'terminate'
        (stop with a snapshot even when snapshot_after_train is false); it is polled after
        each iteration and during each test pass."""
        self._action = fn

    def add_observer(self, observer: SolverObserver) -> None:
        """Tell `observer` about each iteration, test pass and snapshot (see SolverObserver;
        any object with some of its methods will do)."""
        self._observers.append(observer)
        self._observe_lists()

    def remove_observer(self, observer: SolverObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)
            self._observe_lists()

    def _observe_lists(self) -> None:
        # the loop calls these per iteration: bound methods, looked up once
        self._on_gradients = [o.on_gradients for o in self._observers
                              if hasattr(o, "on_gradients")]
        self._on_update = [o.on_update for o in self._observers if hasattr(o, "on_update")]

    def _notify(self, event: str, *args: object) -> None:
        for obs in self._observers:
            fn = getattr(obs, event, None)
            if fn is not None:
                fn(self, *args)

    def record_run(self, path: str | None = None, *, tensorboard: str | None = None,
                   command: list[str] | None = None) -> RunRecorder:
        """Record this solver's training as a run folder (decaffe.runs): at `path`, or beside
        the snapshots (snapshot_prefix + '.run') when None; with `tensorboard`, also as
        TensorBoard event files in that folder. Returns the RunRecorder (close() it, or let
        the interpreter's exit write the run's end). Nothing is recorded by default."""
        recorder = RunRecorder(self, path, tensorboard=tensorboard, command=command)
        recorder.start()
        return recorder

    def load_weights(self, model_list: str) -> None:
        """Copy weights from each comma-separated model file, in turn, into the train net and
        every test net (the solver's `weights` field, `decaffe train -weights`)."""
        names = [m for m in model_list.split(",") if m]
        for name in names:
            if not os.path.exists(name):
                raise SolverError(f"weights: cannot open '{name}': no such file")
        for name in names:
            log.info(f"Finetuning from {name}")
            self.net.copy_from(name)
            for net in self.test_nets:
                net.copy_from(name)

    def share_weights(self, net: Net) -> None:
        """Make net use this solver's train-net parameters (pycaffe's share_weights)."""
        net.share_with(self.net)

    def _requested_action(self) -> str:
        return self._action() if self._action is not None else NONE

    # -- the loop -----------------------------------------------------------------------------
    def step(self, iters: int) -> None:
        """Run iters iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter = self._iter
        stop_iter = self._iter + int(iters)
        average_loss = p.average_loss
        self.losses = []
        self.smoothed_loss = 0.0
        net = self.net
        # Caffe 1.0's display line reports the speed since the last one (or this Step)
        timer_start = time.perf_counter()
        if self._iterations_last is None:
            self._iterations_last = start_iter
        iter_size = p.iter_size
        # in multi-process training only the root solver (rank 0) tests, displays and
        # snapshots on schedule, as Caffe's root_solver() decides
        root = _mode.solver_rank() == 0
        scaler = precision.loss_scaler_for(self)  # fp16 only
        while self._iter < stop_iter:
            net.clear_param_diffs()
            if (root and p.test_interval and self._iter % p.test_interval == 0
                    and (self._iter > 0 or p.test_initialization)):
                self.test_all()
            if self.requested_early_exit:
                break
            for on_start, _ in self._callbacks:
                if on_start is not None:
                    on_start()
            display = root and bool(p.display) and self._iter % p.display == 0
            loss = _f32(0)
            net.set_iter(self._iter, p.max_iter)  # scheduled fork layers (AssistedExcitation)
            for _ in range(iter_size):
                one = net.forward_backward()
                if self.stop_on_nonfinite and not math.isfinite(one):
                    self._non_finite(one)
                loss += _f32(one)
            loss = _f32(loss / _f32(iter_size))
            self._update_smoothed_loss(float(loss), start_iter, average_loss)
            if display:
                lapse = time.perf_counter() - timer_start
                per_s = (self._iter - self._iterations_last) / (lapse if lapse else 1.0)
                log.info(f"Iteration {self._iter} ({log.fmt(per_s)} iter/s, {log.fmt(lapse)}s/"
                         f"{p.display} iters), loss = {log.fmt(self.smoothed_loss)}")
                timer_start = time.perf_counter()
                self._iterations_last = self._iter
                self._log_outputs(net, "Train")
                if p.debug_info:
                    self._debug_forward_backward()
            for _, on_ready in self._callbacks:
                if on_ready is not None:
                    on_ready()
            for fn in self._on_gradients:
                fn(self)
            if scaler is None or precision.unscale_gradients(self, scaler):
                self.apply_update()
            if display and p.debug_info:
                self._debug_update()
            for fn in self._on_update:
                fn(self)
            self._iter += 1
            threads.poll()  # the thread count follows the machine's load
            if self.progress is not None:
                self.progress.update(self._iter, self.smoothed_loss, self.learning_rate)
            request = self._requested_action()
            if ((root and p.snapshot and self._iter % p.snapshot == 0) or request == SNAPSHOT
                    or (request == TERMINATE and root)):
                self.snapshot()
            if request in (STOP, TERMINATE):
                self.requested_early_exit = True
                self.terminate_requested = request == TERMINATE
                break

    def solve(self, resume_file: str | None = None) -> None:
        """Train to max_iter (Caffe's Solver::Solve), optionally resuming from a .solverstate;
        snapshot at the end unless snapshot_after_train is false. Of several solver
        processes, only the root (rank 0) snapshots, displays and tests at the end."""
        p = self.param
        root = _mode.solver_rank() == 0
        log.info(f"Solving {self.net.name}")
        log.info(f"Learning Rate Policy: {p.lr_policy}")
        self.requested_early_exit = False
        self.terminate_requested = False
        if resume_file is not None:
            log.info(f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        start_iter = self._iter
        self.step(p.max_iter - self._iter)
        # a terminate request has written its snapshot already
        if (root and p.snapshot_after_train and not self.terminate_requested
                and (not p.snapshot or self._iter % p.snapshot != 0)):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if p.display and self._iter % p.display == 0 and (root or _mode.sync_bn()):
            # with -sync_bn every worker joins this pass: its BatchNorm needs every batch
            loss = self.net.forward_loss()
            if root:
                self._update_smoothed_loss(loss, start_iter, p.average_loss)
                log.info(f"Iteration {self._iter}, loss = {log.fmt(self.smoothed_loss)}")
        if root and p.test_interval and self._iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def _update_smoothed_loss(self, loss: float, start_iter: int, average_loss: int) -> None:
        if len(self.losses) < average_loss:
            self.losses.append(_f32(loss))
            size = len(self.losses)
            self.smoothed_loss = float(_f32((_f32(self.smoothed_loss) * _f32(size - 1)
                                             + _f32(loss)) / _f32(size)))
        else:
            idx = (self._iter - start_iter) % average_loss
            self.smoothed_loss = float(_f32(_f32(self.smoothed_loss)
                                            + (_f32(loss) - self.losses[idx]) / _f32(average_loss)))
            self.losses[idx] = _f32(loss)

    def apply_update(self) -> None:
        """Compute the learning rate and update every learnable parameter (Caffe's
        SGDSolver::ApplyUpdate): clip, normalize, regularize, the rule, w −= update."""
        p = self.param
        rate = lr_policy.learning_rate(p, self._iter, self.lr_state, self.smoothed_loss)
        self.learning_rate = rate
        if p.display and self._iter % p.display == 0 and _mode.solver_rank() == 0:
            log.info(f"Iteration {self._iter}, lr = {log.fmt(rate)}")
        self.updater.apply(rate, self._iter, p.iter_size, p.weight_decay,
                           p.regularization_type, p.clip_gradients)

    # -- testing ------------------------------------------------------------------------------
    def test_all(self) -> None:
        """Test every test net (Caffe's TestAll)."""
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id: int = 0) -> list[float]:
        """Run test_iter[id] passes of a test net, log each output's mean (and its weighted
        loss), and return the means (Caffe's Solver::Test)."""
        p = self.param
        log.info(f"Iteration {self._iter}, Testing net (#{test_net_id})")
        net = self.test_nets[test_net_id]
        n_iter = p.test_iter[test_net_id]
        outputs = net.outputs
        scores = None
        loss_sum = None
        for _ in range(n_iter):
            request = self._requested_action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request in (STOP, TERMINATE):
                    if request == TERMINATE and not self.terminate_requested:
                        self.snapshot()  # test passes run on the root solver only
                    self.requested_early_exit = True
                    self.terminate_requested = self.terminate_requested or request == TERMINATE
                request = self._requested_action()
            if self.requested_early_exit:
                break
            loss = _forward_no_sync(net)
            if p.test_compute_loss and loss is not None:
                loss_sum = loss.detach().clone() if loss_sum is None else loss_sum + loss.detach()
            flat = _flat_outputs(net, outputs)
            scores = flat.clone() if scores is None else scores.add_(flat)
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return []
        if p.test_compute_loss:
            total = _f32(0 if loss_sum is None else float(loss_sum))
            log.info(f"Test loss: {log.fmt(total / _f32(n_iter))}")
        means = []
        if scores is None:
            return means
        values = scores.detach().cpu().numpy().astype(np.float32)
        names, weights = _output_elements(net, outputs)
        for i, (value, name, weight) in enumerate(zip(values, names, weights)):
            mean = _f32(value / _f32(n_iter))
            means.append(float(mean))
            extra = f" (* {log.fmt(weight)} = {log.fmt(_f32(weight) * mean)} loss)" if weight \
                else ""
            log.info(f"    Test net output #{i}: {name} = {log.fmt(mean)}{extra}")
        self._notify("on_test", test_net_id, names, means)
        return means

    def _log_outputs(self, net: Net, kind: str) -> None:
        outputs = net.outputs
        if not outputs:
            return
        values = _flat_outputs(net, outputs).detach().cpu().numpy()
        names, weights = _output_elements(net, outputs)
        for i, (value, name, weight) in enumerate(zip(values, names, weights)):
            extra = f" (* {log.fmt(weight)} = {log.fmt(_f32(weight) * _f32(value))} loss)" \
                if weight else ""
            log.info(f"    {kind} net output #{i}: {name} = {log.fmt(value)}{extra}")

    # -- non-finite losses ----------------------------------------------------------------------
    def _non_finite(self, loss: float) -> None:
        where = first_nonfinite_layer(self.net)
        if where is None:
            detail = "no layer output was non-finite when the pass was re-run"
            layer = None
        else:
            layer, blob, what = where
            detail = f"the first layer whose output is not finite is '{layer}' ({what})"
        raise NonFiniteLossError(
            f"Iteration {self._iter}: the loss is {log.fmt(loss)}; {detail}. Training "
            "stopped (lower base_lr, add clip_gradients, or check the data; "
            "decaffe train -nan_effect=continue goes on regardless)", self._iter, layer)

    # -- debug info (Caffe's [Forward]/[Backward]/[Update] lines at display iterations) ---------
    def _debug_forward_backward(self) -> None:
        net = self.net
        for rec in net.layer_records:
            name, layer = rec.name, rec.layer
            for tname in rec.top_names:
                t = net.blobs[tname].tensor("data")
                log.info(f"    [Forward] Layer {name}, top blob {tname} data: "
                         f"{log.fmt(_asum_mean(t))}")
            for k, prm in enumerate(layer.blob_params):
                log.info(f"    [Forward] Layer {name}, param blob {k} data: "
                         f"{log.fmt(_asum_mean(prm))}")
        for rec in reversed(net.layer_records):
            name, layer = rec.name, rec.layer
            for k, prm in enumerate(layer.blob_params):
                if prm.grad is not None:
                    log.info(f"    [Backward] Layer {name}, param blob {k} diff: "
                             f"{log.fmt(_asum_mean(prm.grad))}")

    def _debug_update(self) -> None:
        net = self.net
        for rec in net.layer_records:
            for k, lid in enumerate(rec.param_ids):
                prm = net.learnable_params[lid]
                if rec.layer.blob_params[k] is not prm:
                    continue
                diff = _asum_mean(prm.grad) if prm.grad is not None else 0.0
                log.info(f"    [Update] Layer {rec.name}, param {k} data: "
                         f"{log.fmt(_asum_mean(prm))}; diff: {log.fmt(diff)}")

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> tuple[str, str]:
        """Write PREFIX_iter_N.caffemodel(.h5) and the matching .solverstate(.h5); returns both
        paths. Each file is written to a temporary name and renamed into place."""
        p = self.param
        hdf5 = p.snapshot_format == caffe_pb2.SolverParameter.HDF5
        prefix = p.snapshot_prefix
        snap.remove_orphans(prefix)  # temporaries a killed run left for this prefix
        if hdf5:
            model = snap.snapshot_filename(prefix, self._iter, ".caffemodel.h5")
            log.info(f"Snapshotting to HDF5 file {model}")
            self.net.save_hdf5(model, p.snapshot_diff)
            state_path = snap.snapshot_filename(prefix, self._iter, ".solverstate.h5")
            log.info(f"Snapshotting solver state to HDF5 file {state_path}")
        else:
            model = snap.snapshot_filename(prefix, self._iter, ".caffemodel")
            log.info(f"Snapshotting to binary proto file {model}")
            self.net.save(model, p.snapshot_diff)
            state_path = snap.snapshot_filename(prefix, self._iter, ".solverstate")
            log.info(f"Snapshotting solver state to binary proto file {state_path}")
        snap.write_state(state_path, self.state(model))
        self.last_snapshot = (self._iter, model, state_path)
        self._notify("on_snapshot", model, state_path)
        return model, state_path

    def state(self, learned_net: str | None = None) -> snap.SolverStateData:
        """The solver's state as a .solverstate holds it."""
        plateau = self.param.lr_policy == "plateau"
        return snap.SolverStateData(
            iter=self._iter, learned_net=learned_net,
            current_step=self.lr_state.current_step,
            history=[h.detach().cpu().numpy() for h in self.updater.history],
            minimum_loss=self.lr_state.minimum_loss if plateau else None,
            iter_last_event=self.lr_state.iter_last_event if plateau else None,
            positions=self.data_positions())

    def _nets_by_key(self) -> dict:
        return {"train": self.net, **{f"test{i}": n for i, n in enumerate(self.test_nets)}}

    def data_positions(self) -> dict:
        """Where every data layer of the train and test nets is (beyond Caffe: written with
        each snapshot so a resumed run sees the batches an uninterrupted one would), and
        torch's random state."""
        nets = {}
        for key, net in self._nets_by_key().items():
            layers = {}
            for layer in getattr(net, "_layers", ()):
                position = getattr(layer, "position", None)
                state = position() if callable(position) else None
                if state is not None:
                    layers[layer.name] = state
            nets[key] = layers
        return {"format": 1, "nets": nets,
                "torch_rng": torch.get_rng_state().numpy().tobytes().hex()}

    def set_data_positions(self, positions: dict, source: str = "") -> None:
        """Put each data layer where `positions` (data_positions()) says; a layer it does not
        name keeps its place, as in Caffe."""
        nets = positions.get("nets")
        if not isinstance(nets, dict):
            raise SolverError(f"{source}: decaffe's data positions name no nets")
        for key, net in self._nets_by_key().items():
            recorded = nets.get(key) or {}
            for layer in getattr(net, "_layers", ()):
                if layer.name in recorded and callable(getattr(layer, "set_position", None)):
                    layer.set_position(recorded[layer.name])
        rng = positions.get("torch_rng")
        if isinstance(rng, str):
            try:
                torch.set_rng_state(torch.frombuffer(bytearray.fromhex(rng), dtype=torch.uint8))
            except (ValueError, RuntimeError) as e:
                raise SolverError(f"{source}: the recorded random state cannot be used "
                                  f"({e})") from None

    def restore(self, state_file: str) -> None:
        """Continue from a .solverstate or .solverstate.h5 (ours or Caffe's): the iteration,
        the learning-rate counters, the history, and the weights it names."""
        state_file = os.fspath(state_file)
        state = snap.read_state(state_file)
        for prefix in {snap.prefix_of(state_file), self.param.snapshot_prefix or None} - {None}:
            snap.remove_orphans(prefix)  # temporaries a killed run left behind
        history = self.updater.history
        if len(state.history) != len(history):
            raise SolverError(f"{state_file}: incorrect length of history blobs: the file has "
                              f"{len(state.history)}, this {self.type} solver needs "
                              f"{len(history)}")
        for i, (arr, h) in enumerate(zip(state.history, history)):
            if arr.size != h.numel():
                n = len(self.net.learnable_params)
                raise SolverError(f"{state_file}: history blob {i} has shape {arr.shape}, the "
                                  f"net's learnable parameter {i % n} has shape "
                                  f"{tuple(h.shape)}")
        if state.learned_net:
            model = snap.resolve_learned_net(state.learned_net, state_file)
            self.net.copy_from(model)
        self._iter = int(state.iter)
        self.lr_state.current_step = int(state.current_step)
        if state.minimum_loss is not None:
            self.lr_state.minimum_loss = float(state.minimum_loss)
        if state.iter_last_event is not None:
            self.lr_state.iter_last_event = int(state.iter_last_event)
        log.info(f"{self.type}Solver: restoring history")
        # a diff that is the history tensor keeps its values
        own_diffs(self.net.learnable_params)
        with torch.no_grad():
            for arr, h in zip(state.history, history):
                h.copy_(torch.from_numpy(np.ascontiguousarray(arr)).reshape(h.shape))
        if state.positions is not None:
            self.set_data_positions(state.positions, state_file)

    def __repr__(self) -> str:
        return f"<decaffe.{type(self).__name__} iter={self._iter} net={self.net.name!r}>"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _copy_net(msg: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    return load_net_param(msg)


def _debug_string(param: caffe_pb2.SolverParameter) -> str:
    return text_format.MessageToString(param)


def _forward_no_sync(net: Net) -> torch.Tensor | None:
    """A forward pass without a graph, returning the weighted loss as a tensor (no host sync)."""
    loss_pass = getattr(net, "_loss_pass", None)
    if loss_pass is None:
        return torch.tensor(net.forward_loss())
    return loss_pass(fuse=False)


def _flat_outputs(net: Net, outputs: list[str]) -> torch.Tensor:
    blobs = net.blobs
    parts = [blobs[n].tensor("data").detach().reshape(-1) for n in outputs]
    if not parts:
        return torch.zeros(0)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _output_elements(net: Net, outputs: list[str]) -> tuple[list[str], list[float]]:
    names, weights = [], []
    lw = net.blob_loss_weights
    blobs = net.blobs
    for n in outputs:
        count = blobs[n].count
        names.extend([n] * count)
        weights.extend([float(lw[n])] * count)
    return names, weights


def _asum_mean(t: torch.Tensor) -> float:
    t = t.detach()
    return float(t.abs().sum() / max(t.numel(), 1)) if t.numel() else 0.0


def first_nonfinite_layer(net: Net) -> tuple[str, str, str] | None:
    """Re-run the net's last pass layer by layer (data layers keep their outputs) and return
    (layer, blob, description) for the first layer with a non-finite output, or None."""
    fwd = getattr(net, "_forward_range", None)
    blobs = net.blobs
    with torch.no_grad():
        for rec in net.layer_records:
            li, name, layer = rec.index, rec.name, rec.layer
            if not getattr(layer, "is_data", False) and fwd is not None:
                fwd(li, li, record=False, grad=False)
            for tname in rec.top_names:
                t = blobs[tname].tensor("data").detach()
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    what = f"top '{tname}' has {_describe_nonfinite(t)}"
                    bad = [k for k, prm in enumerate(layer.blob_params)
                           if not bool(torch.isfinite(prm.detach()).all())]
                    if bad:
                        what += f"; its parameter blob(s) {bad} are not finite"
                    return name, tname, what
    return None


def _describe_nonfinite(t: torch.Tensor) -> str:
    nan = int(torch.isnan(t).sum())
    inf = int(torch.isinf(t).sum())
    parts = []
    if nan:
        parts.append(f"{nan} NaN")
    if inf:
        parts.append(f"{inf} inf")
    return " and ".join(parts) + f" of {t.numel()} values"

"""`decaffe train -solver S [-weights W1,W2 | -snapshot X.solverstate] [-gpu N]
[-sigint_effect stop|snapshot|none] [-sighup_effect ...] [-level N] [-stage a,b]`:
Caffe's `caffe train`.

Reads the solver, puts -level and -stage into its train_state, picks the device (-gpu, or
the solver's solver_mode/device_id when -gpu is not given), builds the solver its type
names, then either resumes from a .solverstate (-snapshot) or copies weights into the train
and test nets (-weights, comma-separated, each in turn), and solves. The log is Caffe's, in
glog's line format on stderr; on a terminal a progress bar runs below it.

Signals, as Caffe's SignalHandler: SIGINT and SIGHUP each trigger their effect at the end
of the current iteration (or test pass): `stop` (snapshot, then exit), `snapshot` (snapshot
and go on) or `none` (ignored). A second SIGINT while a stop is pending stops at once,
without a snapshot.

A loss that is NaN or infinite stops training with an error naming the iteration and the
first layer whose output was not finite; -nan_effect=continue goes on as Caffe would.
"""

from __future__ import annotations

import signal

from .. import log
from .. import mode as _mode
from ..errors import DecaffeError
from ..proto import caffe_pb2
from . import speed
from .common import parse_gpus, parse_stages, require_file
from .flags import FlagParser

EFFECTS = ("stop", "snapshot", "none")


class SignalHandler:
    """Caffe's SignalHandler: remembers SIGINT/SIGHUP and reports the chosen effect when the
    solver polls (a signal is reported once)."""

    def __init__(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot"):
        for name, value in (("sigint_effect", sigint_effect), ("sighup_effect", sighup_effect)):
            if value not in EFFECTS:
                raise DecaffeError(f'-{name}: invalid signal effect "{value}" (stop, snapshot '
                                   "or none)")
        self.sigint_effect, self.sighup_effect = sigint_effect, sighup_effect
        self.got_sigint = self.got_sighup = False
        self._stop_pending = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalHandler:
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
        if hasattr(signal, "SIGHUP"):
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.sigint_effect == "stop" and self._stop_pending:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a snapshot
            self.got_sigint = True
            if self.sigint_effect == "stop":
                self._stop_pending = True
        else:
            self.got_sighup = True

    def action(self) -> str:
        """What the solver should do now: 'stop', 'snapshot' or 'none'."""
        if self.got_sighup:
            self.got_sighup = False
            return self.sighup_effect
        if self.got_sigint:
            self.got_sigint = False
            return self.sigint_effect
        return "none"


def batch_size(net) -> int:
    """The first data blob's first dimension (for images/s)."""
    for tops in net.top_names.values():
        for t in tops:
            shape = net.blobs[t].shape
            return int(shape[0]) if shape else 0
    return 0


# ----------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Train or finetune a model (caffe train).")
    fp.flag("solver", default="", help="the solver definition protocol buffer text file")
    fp.flag("weights", default="", help="optional; the pretrained weights to initialize "
            "finetuning, separated by ','; not together with -snapshot")
    fp.flag("snapshot", default="", help="optional; the snapshot solver state to resume "
            "training; 'auto': the newest complete snapshot under the solver's "
            "snapshot_prefix, or a fresh start when there is none")
    fp.flag("gpu", default="", help="optional; run in GPU mode on the given device ids, "
            "separated by ',' ('all': every device); several ids train data-parallel, one "
            "worker process per device")
    fp.flag("workers", type=int, default=0, help="optional; train data-parallel in this many "
            "CPU worker processes (gloo), as -gpu does on GPUs")
    fp.bool_flag("sync_bn", default=False, help="with several workers, BatchNorm normalises "
                 "with the statistics of the global batch (Caffe: each worker's own)")
    fp.flag("sigint_effect", default="stop", help="action on SIGINT: snapshot, stop or none")
    fp.flag("sighup_effect", default="snapshot", help="action on SIGHUP: snapshot, stop or none")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")
    fp.flag("nan_effect", default="stop", choices=("stop", "continue"),
            help="on a NaN or infinite loss: stop with an error naming the layer, or continue")
    fp.bool_flag("progress", default=True, help="show a progress bar when stderr is a terminal")
    speed.add_flags(fp)
    args = fp.parse(argv[1:])

    with log.python_logging():
        return _train(args, argv)


def _train(args, argv: list[str] | None = None) -> int:
    if not args.solver:
        raise DecaffeError("-solver: need a solver definition to train")
    if args.snapshot and args.weights:
        raise DecaffeError("give a snapshot to resume training (-snapshot) or weights to "
                           "finetune (-weights), but not both")
    require_file(args.solver, "solver")
    if args.snapshot and args.snapshot != "auto":
        require_file(args.snapshot, "snapshot")
    signals = SignalHandler(args.sigint_effect, args.sighup_effect)
    # In place from here, as Caffe installs them before building the solver: a signal while
    # the nets are built or weights load takes effect at the first iteration.
    with signals:
        return _train_with(args, signals, argv)


def _train_with(args, signals, argv: list[str] | None = None) -> int:
    import torch  # after parsing: -help loads no PyTorch

    from ..solvers import read_solver_param  # after parsing: -help loads no PyTorch

    param, _ = read_solver_param(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(parse_stages(args.stage))

    gpus = parse_gpus(args.gpu)
    want_gpu = bool(gpus)
    if not gpus and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        if torch.cuda.is_available():
            gpus = [param.device_id]
            want_gpu = True
        elif param.HasField("solver_mode"):
            log.warning("solver_mode is GPU but no CUDA device is available to PyTorch; "
                        "training on the CPU")
    if args.workers < 0:
        raise DecaffeError(f"-workers: must be >= 0, not {args.workers}")
    _mode.set_sync_bn(args.sync_bn)
    worker = None
    from ..distributed import worker as _worker  # after parsing: -help loads no PyTorch

    if _worker.launched():
        if args.gpu:
            gpus = parse_gpus(args.gpu)
        worker = _worker.join(gpus if args.gpu else [], want_gpu=want_gpu)
        if worker.device.startswith("cuda"):
            param.device_id = int(worker.device.split(":")[1])
    else:
        count = max(len(gpus) if args.gpu else 1, args.workers)
        if args.gpu and args.workers and args.workers != len(gpus):
            raise DecaffeError(f"-workers {args.workers} with -gpu {args.gpu}: one worker per "
                               f"device ({len(gpus)} devices)")
        if len(set(gpus)) != len(gpus):
            raise DecaffeError(f"-gpu {args.gpu}: a device is named twice")
        if count > 1:
            from ..distributed import launch  # after parsing: -help loads no PyTorch

            for d in (gpus if args.gpu else []):
                _mode.use_gpu(d)  # every device exists, before any worker starts
            return launch.run(list(argv or ["train"]), count, gpus if args.gpu else None)
        if gpus:
            log.info(f"Using GPUs {gpus[0]}")
            name = _mode.use_gpu(gpus[0])
            log.info(f"GPU {gpus[0]}: {name}")
            param.device_id = gpus[0]
        else:
            log.info("Use CPU.")
            _mode.set_mode_cpu()
    speed.apply(args)
    if args.sync_bn and worker is None:
        log.info("-sync_bn: a single worker; BatchNorm uses its own batch as always")

    try:
        return _solve(args, param, signals, worker)
    except BaseException as e:
        if worker is not None:
            worker.fail(e if not isinstance(e, KeyboardInterrupt) else "interrupted")
        raise


def _solve(args, param, signals, worker) -> int:
    from ..solvers import solver_class  # after parsing: -help loads no PyTorch

    solver = solver_class(param.type)(param)
    for net in [solver.net, *solver.test_nets]:
        speed.prepare(net)
    solver.stop_on_nonfinite = args.nan_effect == "stop"
    solver.set_action_function(signals.action)
    from ..threads import Retuner  # after parsing: -help loads no PyTorch

    solver.add_callback(Retuner().poll, None)  # thread count follows the machine's load
    if worker is not None:
        worker.prepare(solver)
    resume = args.snapshot
    if resume == "auto":
        # after parsing: -help loads no PyTorch
        from ..distributed.resume import newest_complete_snapshot

        resume = newest_complete_snapshot(param.snapshot_prefix)
        if resume is None:
            log.info(f"-snapshot auto: no complete snapshot under "
                     f"{param.snapshot_prefix}_iter_*; starting fresh")
    if resume:
        log.info(f"Resuming from {resume}")
        solver.restore(resume)
    elif args.weights:
        for name in args.weights.split(","):
            if name:
                require_file(name, "weights")
        solver.load_weights(args.weights)

    if worker is not None:
        worker.attach(solver, signals.action)
    bar = None
    if args.progress and (worker is None or worker.root):
        bar = log.ProgressBar(param.max_iter, solver.iter,
                              batch_size(solver.net) * param.iter_size)
        solver.progress = bar if bar.enabled else None
    log.info("Starting Optimization")
    try:
        solver.solve()
    finally:
        if bar is not None:
            bar.close()
        for net in [solver.net, *solver.test_nets]:
            net.close()
    if worker is not None:
        worker.finish(solver)
    log.info("Optimization Done.")
    return 0

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

import os
import signal

from .. import log
from .. import mode as _mode
from ..errors import DecaffeError
from ..proto import caffe_pb2
from .flags import FlagParser

EFFECTS = ("stop", "snapshot", "none")


# ----------------------------------------------------------------------------------------------
# helpers shared by train, test and time
# ----------------------------------------------------------------------------------------------
def parse_gpus(flag: str) -> list[int]:
    """-gpu: '' (none), 'all' (every CUDA device) or comma-separated device ids."""
    flag = (flag or "").strip()
    if not flag:
        return []
    if flag == "all":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise DecaffeError("-gpu all: no CUDA device is available to PyTorch")
        return list(range(n))
    try:
        ids = [int(s) for s in flag.split(",")]
    except ValueError:
        raise DecaffeError(f"-gpu: expected device ids separated by ',' or 'all', not "
                           f"'{flag}'") from None
    if any(i < 0 for i in ids):
        raise DecaffeError(f"-gpu: device ids must be >= 0, not '{flag}'")
    return ids


def use_gpu(device_id: int) -> str:
    """Switch to GPU mode on a device; a clear error when there is none. Returns its name."""
    import torch

    if not torch.cuda.is_available():
        raise DecaffeError(f"-gpu {device_id}: no CUDA device is available to PyTorch (torch "
                           f"{torch.__version__}); run without -gpu to use the CPU")
    count = torch.cuda.device_count()
    if device_id >= count:
        raise DecaffeError(f"-gpu {device_id}: no such device ({count} CUDA device"
                           f"{'s' if count != 1 else ''}: ids 0 to {count - 1})")
    _mode.set_device(device_id)
    _mode.set_mode_gpu()
    return torch.cuda.get_device_name(device_id)


def single_device(gpus: list[int]) -> None:
    """test/time: GPU mode on the first device given (Caffe ignores the others), else CPU."""
    while len(gpus) > 1:
        log.info(f"Not using GPU #{gpus[-1]} for single-GPU function")
        gpus.pop()
    if gpus:
        log.info(f"Use GPU with device ID {gpus[0]}")
        name = use_gpu(gpus[0])
        log.info(f"GPU device name: {name}")
    else:
        log.info("Use CPU.")
        _mode.set_mode_cpu()


def parse_stages(flag: str) -> list[str]:
    return [s for s in (flag or "").split(",") if s]


def parse_phase(flag: str, default: int) -> int:
    if not flag:
        return default
    if flag == "TRAIN":
        return caffe_pb2.TRAIN
    if flag == "TEST":
        return caffe_pb2.TEST
    raise DecaffeError(f'-phase: must be "TRAIN" or "TEST", not "{flag}"')


def require_file(path: str, flag: str) -> None:
    if not os.path.exists(path):
        raise DecaffeError(f"-{flag}: cannot open '{path}': no such file")


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
            "training")
    fp.flag("gpu", default="", help="optional; run in GPU mode on the given device id "
            "('all' or several ids: multi-GPU training is not available yet)")
    fp.flag("sigint_effect", default="stop", help="action on SIGINT: snapshot, stop or none")
    fp.flag("sighup_effect", default="snapshot", help="action on SIGHUP: snapshot, stop or none")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")
    fp.flag("nan_effect", default="stop", choices=("stop", "continue"),
            help="on a NaN or infinite loss: stop with an error naming the layer, or continue")
    fp.bool_flag("progress", default=True, help="show a progress bar when stderr is a terminal")
    args = fp.parse(argv[1:])

    with log.python_logging():
        return _train(args)


def _train(args) -> int:
    if not args.solver:
        raise DecaffeError("-solver: need a solver definition to train")
    if args.snapshot and args.weights:
        raise DecaffeError("give a snapshot to resume training (-snapshot) or weights to "
                           "finetune (-weights), but not both")
    require_file(args.solver, "solver")
    if args.snapshot:
        require_file(args.snapshot, "snapshot")
    signals = SignalHandler(args.sigint_effect, args.sighup_effect)
    # In place from here, as Caffe installs them before building the solver: a signal while
    # the nets are built or weights load takes effect at the first iteration.
    with signals:
        return _train_with(args, signals)


def _train_with(args, signals) -> int:
    import torch

    from ..solvers import read_solver_param, solver_class

    param, _ = read_solver_param(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(parse_stages(args.stage))

    gpus = parse_gpus(args.gpu)
    if not gpus and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        if torch.cuda.is_available():
            gpus = [param.device_id]
        elif param.HasField("solver_mode"):
            log.warning("solver_mode is GPU but no CUDA device is available to PyTorch; "
                        "training on the CPU")
    if len(gpus) > 1:
        raise DecaffeError(f"-gpu {args.gpu}: training on {len(gpus)} GPUs (data parallel) is "
                           "not implemented yet; give one device id, e.g. -gpu 0")
    if gpus:
        log.info(f"Using GPUs {gpus[0]}")
        name = use_gpu(gpus[0])
        log.info(f"GPU {gpus[0]}: {name}")
        param.device_id = gpus[0]
    else:
        log.info("Use CPU.")
        _mode.set_mode_cpu()

    solver = solver_class(param.type)(param)
    solver.stop_on_nonfinite = args.nan_effect == "stop"
    solver.set_action_function(signals.action)
    if args.snapshot:
        log.info(f"Resuming from {args.snapshot}")
        solver.restore(args.snapshot)
    elif args.weights:
        for name in args.weights.split(","):
            if name:
                require_file(name, "weights")
        solver.load_weights(args.weights)

    bar = None
    if args.progress:
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
    log.info("Optimization Done.")
    return 0

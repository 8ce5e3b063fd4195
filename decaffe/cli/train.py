"""`decaffe train -solver S [-weights W1,W2 | -snapshot X.solverstate|auto] [-gpu N]
[-sigint_effect stop|snapshot|none] [-sighup_effect ...] [-sigterm_effect ...] [-level N]
[-stage a,b] [-record false] [-run_dir DIR] [-tensorboard DIR] [-dashboard [HOST:]PORT]`:
Caffe's `caffe train`.

Reads the solver, puts -level and -stage into its train_state, picks the device (-gpu, or
the solver's solver_mode/device_id when -gpu is not given), builds the solver its type
names, then either resumes from a .solverstate (-snapshot) or copies weights into the train
and test nets (-weights, comma-separated, each in turn), and solves. The log is Caffe's, in
glog's line format on stderr; on a terminal a progress bar runs below it.

Signals, as Caffe's SignalHandler: SIGINT and SIGHUP each trigger their effect at the end
of the current iteration (or test pass): `stop` (snapshot, then exit), `snapshot` (snapshot
and go on) or `none` (ignored). A second SIGINT while a stop is pending stops at once,
without a snapshot. A stop that writes no snapshot (the solver's snapshot_after_train is
false) says so.

SIGTERM (what SLURM, Kubernetes and cloud preemption send) ends the run at the end of the
current iteration: -sigterm_effect `snapshot` (the default) writes a snapshot whatever
snapshot_after_train says, `stop` stops as SIGINT's stop does, `none` ignores it. Either way
the command then exits with status 75 (EXIT_PREEMPTED, sysexits' EX_TEMPFAIL: "try again
later"), which a job script can tell from success (0), an error (1) and a plain kill (143),
and requeue on; `-snapshot auto` then resumes from the newest snapshot. With several
workers, all stop at the same iteration (the request travels with the gradients).

Every run is recorded in a run folder (decaffe.runs; PREFIX.run beside the snapshots,
-run_dir to choose, -record false for none) by rank 0; -dashboard [HOST:]PORT serves its live
page (decaffe dashboard) while it trains, from a thread beside it; -tensorboard DIR also writes
TensorBoard event files.

A loss that is NaN or infinite stops training with an error naming the iteration and the
first layer whose output was not finite; -nan_effect=continue goes on as Caffe would.
"""

from __future__ import annotations

import argparse
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING

from .. import dashboard, log
from .. import mode as _mode
from ..errors import DecaffeError
from ..proto import caffe_pb2
from . import flags, speed
from .common import parse_gpus, parse_stages, require_file
from .flags import FlagParser, at_least, gpu_ids

if TYPE_CHECKING:  # no import at run time: the engine loads after the flags are parsed
    from ..dashboard.server import Server
    from ..distributed.worker import Worker
    from ..net import Net
    from ..runs import RunRecorder
    from ..solvers import Solver

EFFECTS = ("stop", "snapshot", "none")
EXIT_PREEMPTED = _mode.EXIT_PREEMPTED  # SIGTERM's exit status (75, EX_TEMPFAIL)


class SignalHandler:
    """Caffe's SignalHandler: remembers SIGINT/SIGHUP and reports the chosen effect when the
    solver polls (a signal is reported once). Beyond Caffe, SIGTERM: its `snapshot` effect
    is the solver's 'terminate' action (stop with a snapshot), `stop` is 'stop'."""

    def __init__(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot",
                 sigterm_effect: str = "snapshot") -> None:
        for name, value in (("sigint_effect", sigint_effect), ("sighup_effect", sighup_effect),
                            ("sigterm_effect", sigterm_effect)):
            if value not in EFFECTS:
                raise DecaffeError(f'-{name}: invalid signal effect "{value}" (stop, snapshot '
                                   "or none)")
        self.sigint_effect, self.sighup_effect = sigint_effect, sighup_effect
        self.sigterm_effect = sigterm_effect
        self.got_sigint = self.got_sighup = self.got_sigterm = False
        self.sigint_seen = self.sigterm_seen = False  # ever, for the end of the run
        self._stop_pending = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalHandler:
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
        if hasattr(signal, "SIGHUP"):
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle)
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            if self.sigint_effect == "stop" and self._stop_pending:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a snapshot
            self.got_sigint = True
            if self.sigint_effect == "stop":
                self._stop_pending = True
                self.sigint_seen = True
        elif signum == signal.SIGTERM:
            if self.sigterm_effect != "none" and not self.sigterm_seen:
                self.got_sigterm = self.sigterm_seen = True  # a second SIGTERM: still pending
        else:
            self.got_sighup = True

    def action(self) -> str:
        """What the solver should do now: 'stop', 'snapshot', 'terminate' or 'none'."""
        if self.got_sigterm:
            self.got_sigterm = False
            return "terminate" if self.sigterm_effect == "snapshot" else "stop"
        if self.got_sighup:
            self.got_sighup = False
            return self.sighup_effect
        if self.got_sigint:
            self.got_sigint = False
            return self.sigint_effect
        return "none"


def _bool_value(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "t", "yes", "y"):
        return True
    if value in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def batch_size(net: Net) -> int:
    """The first data blob's first dimension (for images/s)."""
    for tops in net.top_names.values():
        for t in tops:
            shape = net.blobs[t].shape
            return int(shape[0]) if shape else 0
    return 0


# ----------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Train or finetune a model (caffe train).")
    fp.flag("solver", default="", required="need a solver definition to train", exists=True,
            help="the solver definition protocol buffer text file")
    fp.flag("weights", default="", help="optional; the pretrained weights to initialize "
            "finetuning, separated by ','; not together with -snapshot")
    fp.flag("snapshot", default="", check=_snapshot_file,
            help="optional; the snapshot solver state to resume "
            "training; 'auto': the newest complete snapshot under the solver's "
            "snapshot_prefix, or a fresh start when there is none")
    fp.flag("gpu", default="", check=gpu_ids,
            help="optional; run in GPU mode on the given device ids, "
            "separated by ',' ('all': every device); several ids train data-parallel, one "
            "worker process per device")
    fp.flag("workers", type=int, default=0, check=at_least(0),
            help="optional; train data-parallel in this many "
            "CPU worker processes (gloo), as -gpu does on GPUs")
    fp.bool_flag("sync_bn", default=False, help="with several workers, BatchNorm normalises "
                 "with the statistics of the global batch (Caffe: each worker's own)")
    fp.flag("sigint_effect", default="stop", check=_effect,
            help="action on SIGINT: snapshot, stop or none")
    fp.flag("sighup_effect", default="snapshot", check=_effect,
            help="action on SIGHUP: snapshot, stop or none")
    fp.flag("sigterm_effect", default="snapshot", check=_effect,
            help="action on SIGTERM (preemption): "
            "snapshot (snapshot, then exit), stop (exit as SIGINT's stop does) or none; the "
            f"command then exits with status {EXIT_PREEMPTED}")
    # a value after a space too (`-record false`), beside gflags' -record=false/-norecord
    fp.add_argument("-record", "--record", dest="record", nargs="?", const=True, default=True,
                    type=_bool_value, metavar="true|false", help="record the run in a run "
                    "folder (events, BatchNorm statistics, snapshots; see docs/runs.md) "
                    "(default: true; also -norecord)")
    fp.add_argument("-norecord", "--norecord", dest="record", action="store_false",
                    help=argparse.SUPPRESS)
    fp.flag("run_dir", default="", help="optional; the run folder (default: beside the "
            "snapshots, SNAPSHOT_PREFIX.run)")
    fp.flag("dashboard", default="", help="optional; [HOST:]PORT: serve this run's live page "
            "(decaffe dashboard) from a thread beside training; a HOST other than loopback "
            "needs the printed token (needs decaffe[dashboard])")
    fp.flag("tensorboard", default="", help="optional; also write TensorBoard event files "
            "(scalars, BatchNorm histograms) into this folder (needs decaffe[tensorboard])")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")
    fp.flag("nan_effect", default="stop", choices=("stop", "continue"),
            help="on a NaN or infinite loss: stop with an error naming the layer, or continue")
    fp.bool_flag("progress", default=True, help="show a progress bar when stderr is a terminal")
    speed.add_flags(fp)
    fp.rule(lambda a: "give a snapshot to resume training (-snapshot) or weights to finetune "
            "(-weights), but not both" if a.snapshot and a.weights else None)
    args = fp.parse(argv[1:])

    with log.python_logging():
        return _train(args, argv)


def _snapshot_file(value: str) -> str | None:
    if value == "auto" or os.path.exists(value):
        return None
    return f"cannot open '{value}': no such file"


def _effect(value: str) -> str | None:
    return None if value in EFFECTS else f'invalid signal effect "{value}" (stop, snapshot or none)'


def _train(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    signals = SignalHandler(args.sigint_effect, args.sighup_effect, args.sigterm_effect)
    # In place from here, as Caffe installs them before building the solver: a signal while
    # the nets are built or weights load takes effect at the first iteration.
    with signals:
        return _train_with(args, signals, argv)


def _train_with(args: argparse.Namespace, signals: SignalHandler,
                argv: list[str] | None = None) -> int:
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
        return _solve(args, param, signals, worker, argv)
    except BaseException as e:
        if worker is not None:
            worker.fail(e if not isinstance(e, KeyboardInterrupt) else "interrupted")
        raise


def _solve(args: argparse.Namespace, param: caffe_pb2.SolverParameter, signals: SignalHandler,
           worker: Worker | None, argv: list[str] | None = None) -> int:
    from ..solvers import solver_class  # after parsing: -help loads no PyTorch

    solver = solver_class(param.type)(param)
    solver.solver_file = args.solver
    for net in [solver.net, *solver.test_nets]:
        speed.prepare(net)
    solver.stop_on_nonfinite = args.nan_effect == "stop"
    solver.set_action_function(signals.action)
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
    recorder = None
    if (worker is None or worker.root) and (args.record or args.tensorboard):
        recorder = _start_recording(args, solver, argv, worker, resume or None)
    board = None
    if args.dashboard and (worker is None or worker.root):
        board = _start_dashboard(args.dashboard, recorder)
    bar = None
    if args.progress and (worker is None or worker.root):
        bar = log.ProgressBar(param.max_iter, solver.iter,
                              batch_size(solver.net) * param.iter_size)
        solver.progress = bar if bar.enabled else None
    log.info("Starting Optimization")
    try:
        solver.solve()
    except BaseException as e:
        if recorder is not None:
            if isinstance(e, KeyboardInterrupt):
                recorder.close("sigint", "stopped at once by a second SIGINT")
            else:
                recorder.close("error", f"{type(e).__name__}: {e}")
        raise
    finally:
        if bar is not None:
            bar.close()
        if board is not None:
            board.stop()
        for net in [solver.net, *solver.test_nets]:
            net.close()
    root = worker is None or worker.root
    status, reason, message = 0, "finished", None
    if solver.terminate_requested or (solver.requested_early_exit and signals.sigterm_seen):
        status, reason = EXIT_PREEMPTED, "sigterm"
        shot = solver.last_snapshot
        if root:
            where = (f"the snapshot {shot[2]} holds iteration {shot[0]}" if shot
                     else "no snapshot was written")
            message = (f"SIGTERM: stopped at iteration {solver.iter}; {where}; exiting with "
                       f"status {EXIT_PREEMPTED} (requeue; -snapshot auto resumes)")
            log.info(message)
    elif solver.requested_early_exit:
        reason = "sigint" if signals.sigint_seen else "finished"
        shot = solver.last_snapshot
        if root and (shot is None or shot[0] != solver.iter):
            message = (f"Stopped at iteration {solver.iter} without a snapshot (the solver "
                       "sets snapshot_after_train: false); -sigint_effect snapshot writes one "
                       "on Ctrl-C and goes on")
            log.warning(message)
    if recorder is not None:
        recorder.close(reason, message)
    if worker is not None:
        worker.finish(solver)
    log.info("Optimization Done.")
    return status


def _start_dashboard(address: str, recorder: RunRecorder | None) -> Server:
    """-dashboard [HOST:]PORT: the run folder's page, served from a daemon thread beside
    training; its URL is a log line of its own."""
    dashboard.require()
    # Starlette and uvicorn come with the optional `dashboard` extra, checked just above
    from ..dashboard.server import Server, parse_address
    from ..dashboard.sources import RunFolder

    host, port = parse_address(address)
    if recorder is None or not recorder.path:
        raise DecaffeError("-dashboard shows the run folder, and this run records none "
                           "(-record false, or no snapshot_prefix: give -run_dir)")
    server = Server([RunFolder(recorder.path)], host, port).start()
    for line in server.announce():
        log.info(line)
    return server


def _start_recording(args: argparse.Namespace, solver: Solver, argv: list[str] | None,
                     worker: Worker | None, resumed_from: str | None) -> RunRecorder | None:
    """The run folder (and TensorBoard files) for this run, on rank 0; a default run folder
    that cannot be written is warned about and skipped, never fatal."""
    from .. import runs  # after parsing: -help loads no PyTorch

    command = [flags.COMMAND_NAME, *(argv or ["train"])]
    world = worker.world_size if worker is not None else 1
    path = args.run_dir or None
    try:
        recorder = runs.RunRecorder(solver, path, record=args.record,
                                    tensorboard=args.tensorboard or None, command=command,
                                    world_size=world, resumed_from=resumed_from)
        recorder.start()
    except runs.RunError as e:
        if args.run_dir or args.tensorboard:
            raise
        log.warning(f"{e}; training without a run folder (-record false silences this)")
        return None
    if recorder.path:
        log.info(f"Recording the run in {recorder.path}")
    if args.tensorboard:
        log.info(f"Writing TensorBoard event files to {args.tensorboard}")
    return recorder

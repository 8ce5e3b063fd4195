"""One worker of `decaffe train` on several devices or hosts.

A worker is a `decaffe train` process that finds torchrun's variables in its environment
(WORLD_SIZE > 1, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), set by torchrun or by the
`decaffe train -gpu 0,1,...` parent (:mod:`decaffe.distributed.launch`). It

- picks its device: GPU ``gpus[LOCAL_RANK]`` (the -gpu list, or every device), else the CPU;
- joins the process group (NCCL between GPUs, gloo on CPUs) and sets Caffe's solver
  count/rank, so data layers read only this worker's records (index mod N == rank);
- starts the heartbeat :class:`~decaffe.distributed.watchdog.Watchdog`;
- logs only warnings and errors unless it is rank 0 (rank 0 alone logs, tests, displays
  and snapshots, as Caffe's root solver);
- after the solver is built, gives every worker rank 0's weights, solver history and
  iteration, then sums the gradients over the workers and scales them by 1/N before each
  update (Caffe 1.0's NCCL), with the signal actions (SIGINT/SIGHUP) agreed in the same
  collective, so all workers stop or go on at the same iteration.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.distributed import PrefixStore, TCPStore

from .. import log
from .. import mode as _mode
from .nccl import NCCL, ParallelError, init_group, shutdown
from .watchdog import Watchdog, _exit_with

if TYPE_CHECKING:
    from ..solvers import Solver


def launched() -> bool:
    """Whether this process is one of several workers started by torchrun or `decaffe train`."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ParallelError(f"the worker's environment lacks {name} (set by torchrun or "
                                "decaffe train)")
        return default
    try:
        return int(value)
    except ValueError:
        raise ParallelError(f"{name}={value!r} is not an integer") from None


@dataclass
class Worker:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: str
    watchdog: Watchdog | None = None
    nccl: NCCL | None = None
    _actions: AgreedActions | None = field(default=None, repr=False)
    _restored_positions: dict | None = field(default=None, repr=False)

    @property
    def root(self) -> bool:
        return self.rank == 0

    # -- the solver -------------------------------------------------------------------------
    def prepare(self, solver: Solver) -> None:
        """Before a resume: each worker takes its own data positions from a snapshot (rank 0
        writes every worker's; see AgreedActions), and rank 0 writes them all."""
        rank, own_set, own_get = self.rank, solver.set_data_positions, solver.data_positions

        def set_positions(positions: dict, source: str = "") -> None:
            self._restored_positions = positions
            workers = positions.get("workers") if isinstance(positions, dict) else None
            if isinstance(workers, dict) and str(rank) in workers:
                positions = workers[str(rank)]
            own_set(positions, source)

        def get_positions() -> dict:
            mine = own_get()
            gathered = self._actions.gathered if self._actions is not None else None
            return dict(mine, workers=gathered) if gathered else mine

        # instance attributes: the solver's own methods stay as they are for one process
        solver.set_data_positions = set_positions
        if self.root:
            solver.data_positions = get_positions

    def attach(self, solver: Solver, action_fn: Callable[[], str] | None) -> None:
        """Link the solver to the others: rank 0's state everywhere, gradients averaged, the
        signal actions agreed."""
        nccl = NCCL(solver)
        if self.watchdog is not None:
            nccl.diagnose = self.watchdog.diagnose
        self.nccl = nccl
        self._actions = AgreedActions(action_fn, nccl, self.root, solver)
        positions = sync_state_from_root(solver, nccl, self._restored_positions)
        if positions is not None and self._restored_positions is None:
            # rank 0 resumed from a snapshot this host cannot see: its positions still hold
            solver.set_data_positions(positions, "rank 0's snapshot")
        solver.add_callback(self._actions.before_reduce, nccl.on_gradients_ready)
        solver.set_action_function(self._actions.action)
        non_finite = getattr(solver, "_non_finite", None)
        if non_finite is not None:
            def local_diagnosis(loss: float,
                                _orig: Callable[[float], None] = non_finite) -> None:
                # the failing worker re-runs its layers alone: no collective may run there
                _mode.set_sync_bn(False)
                return _orig(loss)

            solver._non_finite = local_diagnosis

    def fail(self, error: BaseException | str) -> None:
        """This worker fails by itself: tell the others (they stop, naming this rank)."""
        if self.watchdog is not None:
            self.watchdog.report_failure(str(error) or type(error).__name__)
            self.watchdog.stop()

    def finish(self, solver: Solver | None = None) -> None:
        """Leave the group after a normal end: check that every worker holds the same
        weights, wait for every worker, then close."""
        wd = self.watchdog
        if wd is not None:
            wd.mark_done()
        try:
            if dist.is_initialized():
                try:
                    if solver is not None:
                        self._check_equal_weights(solver)
                    dist.barrier()
                except RuntimeError as e:
                    if wd is not None:
                        raise wd.diagnose(e) from e
                    raise
        finally:
            if wd is not None:
                _leave(wd, self.rank, self.world_size)
            shutdown()


    def _check_equal_weights(self, solver: Solver) -> None:
        """Every worker's trained weights (the blobs the solver updates from gradients; the
        BatchNorm statistics are each worker's own unless -sync_bn) must be bitwise equal."""

        h = hashlib.sha256()
        for p in solver.net.learnable_params:
            if p.requires_grad:
                h.update(p.detach().cpu().contiguous().numpy().tobytes())
        digests: list = [None] * self.world_size
        dist.all_gather_object(digests, h.hexdigest())
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise ParallelError(f"the weights of worker rank(s) {differ} differ from rank 0's "
                                "after training (they must stay bitwise equal)")
        log.info(f"All {self.world_size} workers end with bitwise-equal weights")


def _leave(wd: Watchdog, rank: int, world_size: int) -> None:
    """Stop the heartbeat; rank 0, which may host the store, waits for the others to leave."""
    wd.stop()
    store = wd.store
    try:
        store.set(f"left/{rank}", "1")
        if rank == 0:
            deadline = time.monotonic() + 30.0
            keys = [f"left/{r}" for r in range(world_size)]
            while time.monotonic() < deadline and not store.check(keys):
                time.sleep(0.05)
    except Exception:  # noqa: BLE001 - the store's host may have left already
        pass


class AgreedActions:
    """Signal actions agreed by all workers: each worker's SIGINT/SIGHUP/SIGTERM are polled
    just before the gradient collective and summed with the gradients; after it every worker
    sees the same request. Only rank 0 snapshots on request (the others ignore SNAPSHOT);
    STOP and TERMINATE (stop with a snapshot) stop all at the same iteration, TERMINATE
    first when both were asked."""

    _SLOTS = {"snapshot": 0, "stop": 1, "terminate": 2}

    def __init__(self, local_fn: Callable[[], str] | None, nccl: NCCL, root: bool,
                 solver: Solver | None = None) -> None:
        self.local_fn, self.nccl, self.root, self.solver = local_fn, nccl, root, solver
        nccl.control_out = [0.0, 0.0, 0.0]  # requested: [snapshot, stop, terminate]
        self.gathered: dict | None = None  # every worker's data positions, for rank 0

    def before_reduce(self) -> None:
        """on_start callback: nothing (the flags go out with the gradients)."""

    def action(self) -> str:
        """The solver's action function: the request agreed at the last gradient exchange
        (once); local signals seen now go out with the next gradients."""
        agreed = "none"
        control = self.nccl.control_in
        if control:
            self.nccl.control_in = []
            self.nccl.control_out = [0.0, 0.0, 0.0]
            if control[2] > 0:
                agreed = "terminate"
            elif control[1] > 0:
                agreed = "stop"
            elif control[0] > 0 and self.root:
                agreed = "snapshot"
            if self._snapshot_follows(control):
                self._gather_positions()
        if self.local_fn is not None:
            request = self.local_fn()
            while request != "none":
                slot = self._SLOTS.get(request)
                if slot is not None:
                    self.nccl.control_out[slot] = 1.0
                request = self.local_fn()
        return agreed


    def _snapshot_follows(self, control: list[float]) -> bool:
        """Whether rank 0 snapshots right after this iteration (all workers know it: the
        schedule, an agreed request, a stop, or the last iteration)."""
        s = self.solver
        if s is None:
            return False
        p = s.param
        return bool((p.snapshot and s.iter % p.snapshot == 0) or any(c > 0 for c in control)
                    or (s.iter >= p.max_iter and p.snapshot_after_train))

    def _gather_positions(self) -> None:
        """Every worker's data positions (each reads other records) to rank 0, which writes
        them with the snapshot, so a resumed run continues each worker where it was."""
        data_positions = getattr(type(self.solver), "data_positions", None)
        if data_positions is None:
            return
        mine = data_positions(self.solver)
        everyone: list = [None] * dist.get_world_size()
        try:
            dist.all_gather_object(everyone, mine)
        except RuntimeError as e:
            if self.nccl.diagnose is not None:
                raise self.nccl.diagnose(e) from e
            raise
        self.gathered = {str(r): pos for r, pos in enumerate(everyone)}


def sync_state_from_root(solver: Solver, nccl: NCCL, positions: dict | None = None) -> dict | None:
    """Give every worker rank 0's weights (statistics included), solver history, iteration
    and learning-rate counters, so all start bitwise equal whatever each one loaded; returns
    the data positions rank 0 resumed with (None when it started fresh)."""
    nccl.bcast()
    lr = solver.lr_state
    meta = [solver.iter, lr.current_step, float(lr.minimum_loss), lr.iter_last_event,
            positions]
    box = [meta]
    try:
        dist.broadcast_object_list(box, src=0)
        history = solver.updater.history
        if history:
            dev = nccl._comm_device(history[0])
            with torch.no_grad():
                flat = torch.cat([h.reshape(-1).to(dev) for h in history])
                dist.broadcast(flat, src=0)
                offset = 0
                for h in history:
                    n = h.numel()
                    h.copy_(flat[offset:offset + n].view_as(h))
                    offset += n
    except RuntimeError as e:
        if nccl.diagnose is not None:
            raise nccl.diagnose(e) from e
        raise
    it, step, minimum, last, root_positions = box[0]
    solver.iter = int(it)
    lr.current_step = int(step)
    lr.minimum_loss = float(minimum)
    lr.iter_last_event = int(last)
    return root_positions


def join(gpus: list[int], *, want_gpu: bool) -> Worker:
    """Join the group described by the environment (see the module docstring)."""
    world = _env_int("WORLD_SIZE")
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", rank)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    device = "cpu"
    if want_gpu:
        ids = gpus or list(range(torch.cuda.device_count()))
        if not ids:
            raise ParallelError(f"rank {rank}: GPU training was asked for, but no CUDA device "
                                "is available to PyTorch")
        dev_id = ids[local_rank % len(ids)]
        _mode.use_gpu(dev_id)
        device = f"cuda:{dev_id}"
    else:
        _mode.set_mode_cpu()
    _mode.set_solver_count(world)
    _mode.set_solver_rank(rank)
    _mode.set_multiprocess(True)
    if rank != 0:
        log.set_min_level(1)  # rank 0 alone logs; the others show warnings and errors
    init_group(b"")
    worker = Worker(rank, world, local_rank, local_world, device)
    worker.watchdog = _start_watchdog(rank, world)
    log.info(f"Worker rank {rank} of {world} (local {local_rank} of {local_world}) on "
             f"{device}, backend {_backend_name()}")
    return worker


def _backend_name() -> str:
    return str(dist.get_backend()) if dist.is_initialized() else "none"


def _start_watchdog(rank: int, world: int) -> Watchdog | None:
    """A heartbeat on our own client of the rendezvous store (not the process group's: the
    group's client is in use by collectives' set-up on the main thread)."""
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        return None
    try:
        client = TCPStore(host, int(port), is_master=False,
                          timeout=datetime.timedelta(seconds=30))
    except (RuntimeError, ValueError) as e:
        log.warning(f"rank {rank}: no heartbeat (cannot reach the store at {host}:{port}: {e})")
        return None
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    run = os.environ.get("TORCHELASTIC_RUN_ID", os.environ.get("DECAFFE_RUN_ID", "run"))
    store = PrefixStore(f"decaffe/{run}/{restart}/", client)
    hosts_store = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"

    def on_failure(message: str) -> None:
        if hosts_store:
            time.sleep(3.0)  # let the others read the verdict before the store goes
        _exit_with(message)

    return Watchdog(store, rank, world, on_failure=on_failure).start()

"""Multi-process data-parallel training, as pycaffe scripts drive it, on torch.distributed.

pycaffe's recipe (python/train.py) runs one process per solver::

    uid = caffe.NCCL.new_uid()                  # in the parent, passed to every child
    # in child `rank` of `n`:
    caffe.set_solver_count(n); caffe.set_solver_rank(rank); caffe.set_multiprocess(True)
    solver = caffe.get_solver("solver.prototxt")
    nccl = caffe.NCCL(solver, uid)              # joins the group
    nccl.bcast()                                # every rank starts from rank 0's weights
    solver.add_callback(nccl)                   # gradients averaged before each update
    solver.step(k)

Caffe's NCCL all-reduces (sums) the gradients of every learnable parameter across the
solvers after backward and scales them by 1/solver_count before the update, so each rank
applies the same update and the weights stay identical. Because Caffe's losses already
divide by their own batch, n solvers on batches of B each then take the step one solver
would take on the 2B... nB batch (for nets whose layers treat samples independently, i.e.
without BatchNorm statistics).

Here the group is a torch.distributed process group: NCCL between GPUs in GPU mode, gloo
between CPU processes otherwise. A uid is the group's rendezvous address as bytes
(``tcp://host:port`` with a free port, or any torch init method such as ``file://...`` or
``env://``). The gradients travel in one flat buffer, one collective per iteration; after the
first iteration each parameter's ``.grad`` is a view into that buffer, so no copies are made.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.distributed import PrefixStore, TCPStore

from .. import mode as _mode
from ..errors import DecaffeError

if TYPE_CHECKING:
    from ..solvers import Solver

# A group's address as NCCL.new_uid() makes it (b'tcp://host:port'), or empty for torchrun's
Uid = bytes | bytearray | str | None


class ParallelError(DecaffeError):
    """Multi-process training that cannot be set up or run."""


def has_nccl() -> bool:
    """pycaffe's caffe.has_nccl(): whether multi-process training works in this build
    (torch.distributed with gloo, or NCCL for GPUs)."""
    return dist.is_available() and (dist.is_gloo_available() or dist.is_nccl_available())


def backend() -> str:
    """The torch.distributed backend for the current mode: nccl on GPUs, else gloo."""
    if _mode.mode() == "gpu" and dist.is_nccl_available():
        return "nccl"
    if not dist.is_gloo_available():
        raise ParallelError("torch.distributed has no gloo backend in this build of PyTorch")
    return "gloo"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def new_uid() -> bytes:
    """A fresh rendezvous address for a group (pycaffe's NCCL.new_uid, bytes in Python 3).

    Rank 0 listens there: ``tcp://$DECAFFE_NCCL_HOST:port`` (default host 127.0.0.1, one
    machine; set the variable to rank 0's address for several) with a port free right now."""
    host = os.environ.get("DECAFFE_NCCL_HOST", "127.0.0.1")
    return f"tcp://{host}:{_free_port(host)}".encode("ascii")


def _init_method(uid: Uid) -> str | None:
    if isinstance(uid, (bytes, bytearray)):
        try:
            uid = bytes(uid).decode("ascii")
        except UnicodeDecodeError:
            raise ParallelError("NCCL uid is not one decaffe made (NCCL.new_uid() gives "
                                "b'tcp://host:port')") from None
    if uid is None:
        uid = ""
    if not isinstance(uid, str):
        raise ParallelError(f"NCCL uid must be bytes or str, not {type(uid).__name__}")
    uid = uid.strip()
    if not uid:
        return None
    if not uid.startswith(("tcp://", "file://", "env://")):
        raise ParallelError(f"NCCL uid {uid!r} is not a rendezvous address (tcp://host:port, "
                            "file://path or env://); make one with caffe.NCCL.new_uid()")
    return uid


def init_group(uid: Uid = b"", *, timeout_s: float = 1800.0) -> bool:
    """Join the process group of solver_count() processes as solver_rank().

    Reuses a group that is already initialised after checking its size. An empty uid under
    torchrun (WORLD_SIZE/RANK/MASTER_ADDR set) joins through env://, taking the count and rank
    from there when they were not set. An empty uid with solver_count() == 1 needs no group.
    Returns whether a group is in use."""
    launched = all(k in os.environ for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"))
    if launched and not uid and _mode.solver_count() == 1:
        _mode.set_solver_count(int(os.environ["WORLD_SIZE"]))
        _mode.set_solver_rank(int(os.environ["RANK"]))
    count, rank = _mode.solver_count(), _mode.solver_rank()
    if count < 1 or not 0 <= rank < count:
        raise ParallelError(f"solver rank {rank} is not in [0, solver count {count})")
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() != count or dist.get_rank() != rank:
            raise ParallelError(f"a process group of {dist.get_world_size()} (this is rank "
                                f"{dist.get_rank()}) is already running, but solver count/rank "
                                f"are {count}/{rank}")
        return True
    method = _init_method(uid)
    if method is None:
        if count == 1:
            return False
        if launched:
            method = "env://"
        else:
            raise ParallelError(f"{count} solvers need a uid to meet at: pass "
                                "caffe.NCCL.new_uid() from the parent to every process")
    if not has_nccl():
        raise ParallelError("torch.distributed is not available in this build of PyTorch")
    be = backend()
    kwargs = {}
    if be == "nccl":
        kwargs["device_id"] = torch.device("cuda", torch.cuda.current_device())
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        if method == "env://" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            kwargs["store"] = _attempt_store(timeout)
            method = None
        dist.init_process_group(be, init_method=method, world_size=count, rank=rank,
                                timeout=timeout, **kwargs)
    except (RuntimeError, ValueError, OSError) as e:
        raise ParallelError(f"rank {rank} of {count} could not join the group at {method} "
                            f"({be}): {e}") from e
    return True


def _attempt_store(timeout: datetime.timedelta) -> PrefixStore:
    """The launcher's store (torchrun's agent, or decaffe train's parent) under a prefix of
    this attempt: after `torchrun --max_restarts` restarts the workers, the store still holds
    the previous attempt's addresses, which a new group must not read."""
    client = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                      is_master=False, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    run = os.environ.get("TORCHELASTIC_RUN_ID", os.environ.get("DECAFFE_RUN_ID", "run"))
    return PrefixStore(f"decaffe-pg/{run}/{attempt}/", client)


def shutdown() -> None:
    """Leave the process group (at the end of a solver process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class NCCL:
    """pycaffe's caffe.NCCL(solver, uid): the solver's link to the other solvers.

    Add it to the solver with ``solver.add_callback(nccl)``: its ``on_start`` does nothing
    and its ``on_gradients_ready`` averages the gradients over the solvers (sum, then
    1/solver_count). ``bcast()`` copies rank 0's weights to every rank."""

    def __init__(self, solver: Solver, uid: Uid = b"", *, timeout_s: float = 1800.0) -> None:
        net = getattr(solver, "net", None)
        if net is None or not hasattr(net, "learnable_params"):
            raise ParallelError("NCCL(solver, uid): the first argument must be a solver")
        self.solver = solver
        self.solver_count = _mode.solver_count()
        self.solver_rank = _mode.solver_rank()
        self._distributed = init_group(uid, timeout_s=timeout_s)
        self._flat: torch.Tensor | None = None  # the gradients' flat buffer
        self._layer_wise = False
        # decaffe train's workers: small values summed with the gradients in the same
        # collective (agreed signal actions); and a function that turns a failed collective
        # into an error naming the worker that died
        self.control_out: list[float] = []
        self.control_in: list[float] = []
        self.diagnose = None

    @staticmethod
    def new_uid() -> bytes:
        """A fresh rendezvous address (see decaffe.distributed.new_uid)."""
        return new_uid()

    # -- parameters --------------------------------------------------------------------------
    @property
    def _params(self) -> list[torch.nn.Parameter]:
        # read each time: the solver's net may have moved to another device since
        return list(self.solver.net.learnable_params)

    def _comm_device(self, like: torch.Tensor) -> torch.device:
        """Where the collective runs: NCCL needs the current GPU; gloo takes the params'."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return like.device

    # -- pycaffe's methods ------------------------------------------------------------------
    def bcast(self) -> None:
        """Give every rank rank 0's weights (every learnable blob, statistics included)."""
        params = self._params
        if not self._distributed or not params:
            return
        with torch.no_grad():
            dev = self._comm_device(params[0])
            flat = torch.cat([p.detach().reshape(-1).to(dev) for p in params])
            try:
                dist.broadcast(flat, src=0)
            except RuntimeError as e:
                if self.diagnose is not None:
                    raise self.diagnose(e) from e
                raise
            offset = 0
            for p in params:
                n = p.numel()
                p.copy_(flat[offset:offset + n].view_as(p))
                offset += n

    def on_start(self) -> None:
        """Solver callback before each iteration's forward: nothing to do (as in Caffe)."""

    def on_gradients_ready(self) -> None:
        """Solver callback after backward: gradients ← Σ_ranks gradients / solver_count."""
        if not self._distributed:
            return
        params = [p for p in self._params if p.requires_grad]
        if not params and not self.control_out:
            return
        try:
            self._reduce(params)
        except RuntimeError as e:  # gloo/NCCL report a lost peer as a RuntimeError
            if self.diagnose is not None:
                raise self.diagnose(e) from e
            raise

    def _reduce(self, params: list[torch.nn.Parameter]) -> None:
        scale = 1.0 / self.solver_count
        k = len(self.control_out)
        with torch.no_grad():
            if self._views_intact(params, k):
                flat = self._flat
                if k:
                    flat[flat.numel() - k:] = torch.tensor(self.control_out, dtype=flat.dtype)
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                if k:
                    self.control_in = flat[flat.numel() - k:].tolist()
                flat.mul_(scale)
                return
            dev = self._comm_device(params[0] if params else torch.empty(0))
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            parts = [g.reshape(-1).to(dev, p.dtype) for g, p in zip(grads, params)]
            dtype = params[0].dtype if params else torch.float32
            parts.append(torch.tensor(self.control_out, dtype=dtype, device=dev))
            flat = torch.cat(parts)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            if k:
                self.control_in = flat[flat.numel() - k:].tolist()
            flat.mul_(scale)
            same_place = all(p.device == flat.device and p.dtype == flat.dtype for p in params)
            offset = 0
            for p in params:
                n = p.numel()
                piece = flat[offset:offset + n].view_as(p)
                if same_place:
                    # from now on autograd accumulates straight into the buffer
                    p.grad = piece
                else:
                    p.grad = piece.to(p.device, p.dtype)
                offset += n
            self._flat = flat if same_place and params else None

    def _views_intact(self, params: Sequence[torch.nn.Parameter], extra: int = 0) -> bool:
        flat = self._flat
        if flat is None:
            return False
        base = flat.data_ptr()
        step = flat.element_size()
        offset = 0
        for p in params:
            g = p.grad
            if g is None or g.data_ptr() != base + offset * step or g.shape != p.shape:
                return False
            offset += p.numel()
        return offset + extra == flat.numel()

    # pycaffe's train.py passes the NCCL object to net.after_backward when the solver's
    # layer_wise_reduce is set; the reduction is done once in on_gradients_ready either way.
    def run(self, layer: int) -> None:
        """Net callback after one layer's backward: nothing (the reduction is per iteration)."""
        self._layer_wise = True

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self._distributed:
            dist.barrier()

    def __repr__(self) -> str:
        return f"<NCCL rank {self.solver_rank} of {self.solver_count}>"

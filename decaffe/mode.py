"""Process-wide settings, as Caffe's singleton held them: CPU/GPU mode, device, RNG seed,
and the multi-process solver count and rank."""

from __future__ import annotations

import operator
import random
from typing import TYPE_CHECKING

import numpy as np

from .errors import DecaffeError

# The exit status of a process that stopped on SIGTERM with a snapshot (decaffe train, its
# workers and their parent): sysexits.h's EX_TEMPFAIL, "a temporary failure; retry later".
# Not 143 (128+15): a shell reports that for a process SIGTERM killed before it could
# snapshot. Job scripts requeue on it (docs/cluster.md).
EXIT_PREEMPTED = 75

if TYPE_CHECKING:
    import torch

TRAIN = 0
TEST = 1

_state = {"mode": "cpu", "device_id": 0, "solver_count": 1, "solver_rank": 0,
          "multiprocess": False, "sync_bn": False}


def set_mode_cpu() -> None:
    """Run every net on the CPU from the next pass on."""
    _state["mode"] = "cpu"


def set_mode_gpu() -> None:
    """Run every net on the current CUDA device from the next pass on."""
    import torch  # torch loads on first use: decaffe/__init__ and the file tools import this module

    if not torch.cuda.is_available():
        raise DecaffeError("set_mode_gpu: no CUDA device is available to PyTorch")
    _state["mode"] = "gpu"


def set_device(device_id: int) -> None:
    """Choose the CUDA device used in GPU mode (Caffe's set_device)."""
    import torch  # torch loads on first use: decaffe/__init__ and the file tools import this module

    try:
        device_id = operator.index(device_id)
    except TypeError:
        raise DecaffeError(f"set_device: the device id must be an integer, not "
                           f"{device_id!r}") from None
    if torch.cuda.is_available():
        if not 0 <= device_id < torch.cuda.device_count():
            raise DecaffeError(f"set_device: device {device_id} does not exist "
                               f"({torch.cuda.device_count()} CUDA devices)")
        torch.cuda.set_device(device_id)
    elif device_id != 0:
        # Device 0 stays accepted without CUDA: CPU scripts call set_device(0) before
        # set_mode_cpu(); any other id names a device that is not there.
        raise DecaffeError(f"set_device: device {device_id} does not exist (no CUDA device "
                           "is available to PyTorch)")
    _state["device_id"] = int(device_id)


def use_gpu(device_id: int) -> str:
    """Switch to GPU mode on device_id (decaffe's -gpu flag); a DecaffeError naming the flag
    when PyTorch sees no CUDA device or no such device. Returns the device's name."""
    import torch  # torch loads on first use: decaffe/__init__ and the file tools import this module

    if not torch.cuda.is_available():
        raise DecaffeError(f"-gpu {device_id}: no CUDA device is available to PyTorch (torch "
                           f"{torch.__version__}); run without -gpu to use the CPU")
    count = torch.cuda.device_count()
    if device_id >= count:
        raise DecaffeError(f"-gpu {device_id}: no such device ({count} CUDA device"
                           f"{'s' if count != 1 else ''}: ids 0 to {count - 1})")
    set_device(device_id)
    set_mode_gpu()
    return torch.cuda.get_device_name(device_id)


def mode() -> str:
    return _state["mode"]


def device() -> torch.device:
    """The torch device the current mode computes on."""
    import torch  # torch loads on first use: decaffe/__init__ and the file tools import this module

    if _state["mode"] == "gpu":
        return torch.device("cuda", _state["device_id"])
    return torch.device("cpu")


def set_random_seed(seed: int) -> None:
    """Seed every random number decaffe draws (fillers, dropout, data shuffling)."""
    import torch  # torch loads on first use: decaffe/__init__ and the file tools import this module

    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    random.seed(int(seed))


def solver_count() -> int:
    return _state["solver_count"]


def set_solver_count(n: int) -> None:
    _state["solver_count"] = int(n)


def solver_rank() -> int:
    return _state["solver_rank"]


def set_solver_rank(r: int) -> None:
    _state["solver_rank"] = int(r)


def multiprocess() -> bool:
    return _state["multiprocess"]


def set_multiprocess(flag: bool) -> None:
    _state["multiprocess"] = bool(flag)


def sync_bn() -> bool:
    """Whether TRAIN-phase BatchNorm takes its batch statistics over every worker's batch
    (decaffe train -sync_bn; see decaffe.sync_bn)."""
    return _state["sync_bn"]


def set_sync_bn(flag: bool) -> None:
    _state["sync_bn"] = bool(flag)

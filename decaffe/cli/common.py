"""Flag helpers every verb shares (train, test, time, bn_stats, fold_bn, export,
device_query): -gpu, -phase, -stage and required files, with Caffe's messages."""

from __future__ import annotations

import os

from .. import log
from .. import mode as _mode
from ..errors import DecaffeError
from ..proto import caffe_pb2
from .flags import gpu_ids, phase_name


# ----------------------------------------------------------------------------------------------
def parse_gpus(flag: str) -> list[int]:
    """-gpu: '' (none), 'all' (every CUDA device) or comma-separated device ids."""
    flag = (flag or "").strip()
    if not flag:
        return []
    if flag == "all":
        import torch  # torch loads on first use (see decaffe/__init__): file verbs start fast

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise DecaffeError("-gpu all: no CUDA device is available to PyTorch")
        return list(range(n))
    problem = gpu_ids(flag)
    if problem:
        raise DecaffeError(f"-gpu: {problem}")
    return [int(s) for s in flag.split(",")]


def single_device(gpus: list[int]) -> None:
    """test/time: GPU mode on the first device given (Caffe ignores the others), else CPU."""
    while len(gpus) > 1:
        log.info(f"Not using GPU #{gpus[-1]} for single-GPU function")
        gpus.pop()
    if gpus:
        log.info(f"Use GPU with device ID {gpus[0]}")
        name = _mode.use_gpu(gpus[0])
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
    raise DecaffeError(f"-phase: {phase_name(flag)}")


def require_file(path: str, flag: str) -> None:
    if not os.path.exists(path):
        raise DecaffeError(f"-{flag}: cannot open '{path}': no such file")

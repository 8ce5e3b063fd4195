"""Caffe's weight fillers: constant, uniform, gaussian (optionally sparse), positive_unitball,
xavier, msra and bilinear, drawing from torch's global generator (seeded by
caffe.set_random_seed and the solver's random_seed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .blob import check_memory, check_shape
from .errors import DecaffeError
from .proto import caffe_pb2

FAN_IN = caffe_pb2.FillerParameter.FAN_IN
FAN_OUT = caffe_pb2.FillerParameter.FAN_OUT
AVERAGE = caffe_pb2.FillerParameter.AVERAGE


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    count = math.prod(shape)
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _norm_count(fp: caffe_pb2.FillerParameter, shape: tuple[int, ...]) -> float:
    fan_in, fan_out = _fans(shape)
    if fp.variance_norm == AVERAGE:
        return (fan_in + fan_out) / 2.0
    if fp.variance_norm == FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def fill(fp: caffe_pb2.FillerParameter, shape: Sequence[int], dtype: torch.dtype = torch.float32,
         where: str = "") -> torch.Tensor:
    """A new tensor of this shape filled as the FillerParameter fp says."""
    what = f"layer '{where}', parameter blob" if where else "filler"
    shape = check_shape(shape, what)
    check_memory(shape, torch.finfo(dtype).bits // 8, "cpu", what)
    kind = fp.type
    if kind == "constant":
        return torch.full(shape, fp.value, dtype=dtype)
    if kind == "uniform":
        return torch.empty(shape, dtype=dtype).uniform_(fp.min, fp.max)
    if kind == "gaussian":
        t = torch.empty(shape, dtype=dtype).normal_(fp.mean, fp.std)
        if fp.sparse >= 0:
            if not shape:
                raise DecaffeError(f"{where}: a sparse gaussian filler needs at least one axis")
            p = fp.sparse / shape[0]
            t *= torch.bernoulli(torch.full(shape, min(max(p, 0.0), 1.0), dtype=dtype))
        return t
    if kind == "positive_unitball":
        t = torch.rand(shape, dtype=dtype)
        num = shape[0] if shape else 1
        flat = t.reshape(num, -1)
        flat /= flat.sum(dim=1, keepdim=True)
        return t
    if kind == "xavier":
        scale = math.sqrt(3.0 / _norm_count(fp, shape))
        return torch.empty(shape, dtype=dtype).uniform_(-scale, scale)
    if kind == "msra":
        std = math.sqrt(2.0 / _norm_count(fp, shape))
        return torch.empty(shape, dtype=dtype).normal_(0.0, std)
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise DecaffeError(f"{where}: the bilinear filler needs a 4-axis blob with "
                               f"height == width, got {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        ramp = 1 - (torch.arange(k, dtype=torch.float64) / f - c).abs()
        kernel = (ramp[:, None] * ramp[None, :]).to(dtype)
        return kernel.expand(shape).clone()
    raise DecaffeError(f"{where}: unknown filler type '{kind}' (valid: constant, uniform, "
                       "gaussian, positive_unitball, xavier, msra, bilinear)")


def filler_param(**kw: str | float) -> caffe_pb2.FillerParameter:
    """A FillerParameter from keyword fields (for layers' defaults)."""
    fp = caffe_pb2.FillerParameter()
    for k, v in kw.items():
        setattr(fp, k, v)
    return fp

"""Numeric precision of every net's passes: ``fp32`` (Caffe's, the default), ``tf32``,
``bf16`` or ``fp16`` — `decaffe train|test|time -precision P`, ``caffe.set_precision(P)``.

- fp32: float32 throughout; on CUDA, TF32 is switched off for matrix products and
  convolutions (PyTorch leaves it on for cuDNN convolutions), so the numbers are Caffe's.
- tf32: float32 tensors, TF32 tensor cores for matrix products and convolutions on Ampere
  and newer GPUs (on a CPU, the same as fp32).
- bf16 / fp16: each pass runs under ``torch.autocast`` (convolutions and inner products in
  the low precision, reductions and losses in float32). Parameters, BatchNorm statistics,
  the solver's history and snapshots stay float32; the net's outputs (losses, accuracies)
  are float32. fp16 training uses dynamic loss scaling (:class:`LossScaler`).

On CUDA with bf16, fp16 or -compile, convolution weights are kept in ``channels_last``
memory order (cuDNN's fast layout for tensor cores); values and files are unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Protocol

import torch

from . import log
from .errors import DecaffeError, suggest


class _Solver(Protocol):
    """What loss scaling reads of a decaffe Solver (named by its fields: the engine imports
    this module, so naming its Solver would be an import cycle, tests/test_layout.py)."""

    iter: int
    net: torch.nn.Module


PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_state = {"precision": "fp32", "channels_last": None}


def set_precision(name: str) -> None:
    """Use ``name`` (fp32, tf32, bf16, fp16) for every net's passes from now on."""
    key = str(name).lower().strip()
    if key not in PRECISIONS:
        raise DecaffeError(f"precision: unknown precision '{name}'{suggest(key, PRECISIONS)} "
                           f"(known: {', '.join(PRECISIONS)})")
    _state["precision"] = key
    tf32 = key == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def precision() -> str:
    """The current precision's name."""
    return _state["precision"]


def low_precision_dtype() -> torch.dtype | None:
    """torch.bfloat16 / torch.float16 under bf16 / fp16, else None."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(_state["precision"])


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The context a pass runs in on ``device`` (a torch.device)."""
    dtype = low_precision_dtype()
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_channels_last(flag: bool | None) -> None:
    """Force channels_last convolution weights on CUDA on (True) or off (False); None: on
    with bf16, fp16 or -compile."""
    _state["channels_last"] = flag


def channels_last(device: torch.device, compiled: bool = False) -> bool:
    if device.type != "cuda":
        return False
    forced = _state["channels_last"]
    if forced is not None:
        return bool(forced)
    return compiled or _state["precision"] in ("bf16", "fp16")


class LossScaler:
    """Dynamic loss scaling for fp16 training (as torch.amp.GradScaler): the loss is
    multiplied by ``scale`` before backward; before the update the gradients are divided by
    it, and if any is not finite the update is skipped and the scale halved; after
    ``interval`` good steps in a row it doubles."""

    def __init__(self, init: float = 2.0 ** 16, growth: float = 2.0, backoff: float = 0.5,
                 interval: int = 2000) -> None:
        self.scale, self.growth, self.backoff = float(init), growth, backoff
        self.interval = int(interval)
        self._good = 0
        self.skipped = 0

    def unscale(self, params: Iterable[torch.Tensor]) -> bool:
        """Divide the gradients by the scale; True when they are finite (update them)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return True
        with torch.no_grad():
            inv = 1.0 / self.scale
            found = torch.zeros((), device=grads[0].device)
            try:
                torch._amp_foreach_non_finite_check_and_unscale_(
                    grads, found, torch.full((), inv, device=grads[0].device))
                bad = bool(found)
            except (RuntimeError, NotImplementedError):
                torch._foreach_mul_(grads, inv)
                bad = not all(bool(torch.isfinite(g).all()) for g in grads)
        if bad:
            self.scale = max(self.scale * self.backoff, 1.0)
            self._good = 0
            self.skipped += 1
            return False
        self._good += 1
        if self._good >= self.interval and math.isfinite(self.scale * self.growth):
            self.scale *= self.growth
            self._good = 0
        return True


def loss_scaler_for(solver: _Solver) -> LossScaler | None:
    """The solver's loss scaler under fp16 (made on first use and kept), else None; sets the
    factor its train net multiplies the loss by before backward."""
    net = solver.net
    if _state["precision"] != "fp16":
        net._loss_scale = 1.0
        return None
    scaler = getattr(solver, "_loss_scaler", None)
    if scaler is None:
        scaler = solver._loss_scaler = LossScaler()
    net._loss_scale = scaler.scale
    return scaler


def unscale_gradients(solver: _Solver, scaler: LossScaler) -> bool:
    """fp16: gradients ÷ the loss scale; False (skip this update, as AMP does; the
    iteration still counts) when some gradient overflowed."""
    ok = scaler.unscale(solver.net.learnable_params)
    if not ok:
        log.warning(f"Iteration {solver.iter}: fp16 gradients overflowed; update skipped, "
                    f"loss scale now {scaler.scale:g}")
    solver.net._loss_scale = scaler.scale
    return ok

"""Caffe's parameter update, step by step as SGDSolver::ApplyUpdate does it, on multi-tensor
(torch._foreach_*) operations over all parameters at once.

In Caffe's order, for the accumulated gradient g of every learnable parameter w:

1. clip: if clip_gradients >= 0 and the L2 norm of all gradients together exceeds it, every
   g is scaled by clip_gradients / norm (on the raw accumulated gradients);
2. normalize: g /= iter_size;
3. regularize: local_decay = weight_decay · decay_mult; L2 adds local_decay · w, L1 adds
   local_decay · sign(w);
4. the rule turns g into the update, with local_rate = rate · lr_mult (below);
5. w −= g. The update is left in the gradient, as Caffe leaves it in the diff.

The rules (h, h2: the history Caffe saves in .solverstate; δ = delta):

- SGD:      h = momentum·h + local_rate·g;  g = h
- Nesterov: h' = momentum·h + local_rate·g;  g = (1+momentum)·h' − momentum·h;  h = h'
- AdaGrad:  h += g²;  g = local_rate · g / (√h + δ)
- RMSProp:  h = rms_decay·h + (1−rms_decay)·g²;  g = local_rate · g / (√h + δ)
- AdaDelta: h = momentum·h + (1−momentum)·g²;  g ·= √((h2 + δ) / (h + δ));
            h2 = momentum·h2 + (1−momentum)·g²;  g ·= local_rate
- Adam:     m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;  t = iter + 1;
            g = local_rate · √(1−β2^t)/(1−β1^t) · m / (√v + δ)      (β1 = momentum, β2 = momentum2)

Parameters are grouped by their (lr_mult, decay_mult) so each group's scalars are shared by
all its tensors; scalars are rounded to float32 as Caffe's Dtype arithmetic rounds them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import log
from ..blob import diff_is_private, own_diffs
from ..errors import SolverError
from ..proto import caffe_pb2

_f32 = np.float32


def f32(x: float) -> float:
    """x rounded to single precision (Caffe's Dtype), as a Python float."""
    return float(_f32(x))


class Group:
    """Parameters sharing one (lr_mult, decay_mult)."""

    def __init__(self, lr_mult: float, decay_mult: float, indices: list[int]) -> None:
        self.lr_mult, self.decay_mult, self.indices = lr_mult, decay_mult, indices


def make_groups(lr_mults: list[float], decay_mults: list[float]) -> list[Group]:
    groups: dict[tuple[float, float], list[int]] = {}
    for i, key in enumerate(zip(lr_mults, decay_mults)):
        groups.setdefault(key, []).append(i)
    return [Group(lr, dm, idx) for (lr, dm), idx in groups.items()]


class UpdateRule:
    """SGD with momentum, Caffe's form; the base of the other rules."""

    type = "SGD"
    histories = 1  # history blobs per parameter (Caffe's history_ holds this many · N)
    temps = 0  # scratch tensors per parameter

    def __init__(self, param: caffe_pb2.SolverParameter) -> None:
        self.param = param
        self.momentum = f32(param.momentum)

    def check(self) -> None:
        """Raise SolverError for parameters the rule cannot use (Caffe's sanity checks)."""

    def compute(self, grads: list[torch.Tensor], hist: list[list[torch.Tensor]],
                temp: list[list[torch.Tensor]], local_rate: float, it: int) -> None:
        """Turn the (regularized) gradients into the updates, in place."""
        (h,) = hist
        self._momentum(grads, h, local_rate)
        torch._foreach_copy_(grads, h)

    def _momentum(self, grads: list[torch.Tensor], h: list[torch.Tensor],
                  local_rate: float) -> None:
        """h = momentum·h + local_rate·g: the history, which is also the update."""
        torch._foreach_mul_(h, self.momentum)
        torch._foreach_add_(h, grads, alpha=local_rate)


class NesterovRule(UpdateRule):
    type = "Nesterov"
    temps = 1

    def compute(self, grads: list[torch.Tensor], hist: list[list[torch.Tensor]],
                temp: list[list[torch.Tensor]], local_rate: float, it: int) -> None:
        (h,), (old,) = hist, temp
        m = self.momentum
        torch._foreach_copy_(old, h)
        torch._foreach_mul_(h, m)
        torch._foreach_add_(h, grads, alpha=local_rate)
        torch._foreach_mul_(old, -m)
        torch._foreach_add_(old, h, alpha=f32(1.0 + m))
        torch._foreach_copy_(grads, old)


class AdaGradRule(UpdateRule):
    type = "AdaGrad"
    temps = 1

    def __init__(self, param: caffe_pb2.SolverParameter) -> None:
        super().__init__(param)
        self.delta = f32(param.delta)

    def check(self) -> None:
        if self.param.momentum != 0:
            raise SolverError("momentum: momentum cannot be used with AdaGrad "
                              f"(momentum is {self.param.momentum})")

    def compute(self, grads: list[torch.Tensor], hist: list[list[torch.Tensor]],
                temp: list[list[torch.Tensor]], local_rate: float, it: int) -> None:
        (h,), (t,) = hist, temp
        torch._foreach_addcmul_(h, grads, grads)
        torch._foreach_copy_(t, h)
        torch._foreach_sqrt_(t)
        torch._foreach_add_(t, self.delta)
        torch._foreach_div_(grads, t)
        torch._foreach_mul_(grads, local_rate)


class RMSPropRule(AdaGradRule):
    type = "RMSProp"

    def __init__(self, param: caffe_pb2.SolverParameter) -> None:
        super().__init__(param)
        self.rms_decay = f32(param.rms_decay)

    def check(self) -> None:
        if self.param.momentum != 0:
            raise SolverError("momentum: momentum cannot be used with RMSProp "
                              f"(momentum is {self.param.momentum})")
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError(f"rms_decay: must lie in [0, 1), not {self.param.rms_decay}")

    def compute(self, grads: list[torch.Tensor], hist: list[list[torch.Tensor]],
                temp: list[list[torch.Tensor]], local_rate: float, it: int) -> None:
        (h,), (t,) = hist, temp
        torch._foreach_mul_(h, self.rms_decay)
        torch._foreach_addcmul_(h, grads, grads, value=f32(1.0 - self.rms_decay))
        torch._foreach_copy_(t, h)
        torch._foreach_sqrt_(t)
        torch._foreach_add_(t, self.delta)
        torch._foreach_div_(grads, t)
        torch._foreach_mul_(grads, local_rate)


class AdaDeltaRule(UpdateRule):
    type = "AdaDelta"
    histories = 2
    temps = 2

    def __init__(self, param: caffe_pb2.SolverParameter) -> None:
        super().__init__(param)
        self.delta = f32(param.delta)

    def compute(self, grads: list[torch.Tensor], hist: list[list[torch.Tensor]],
                temp: list[list[torch.Tensor]], local_rate: float, it: int) -> None:
        (h, h2), (a, b) = hist, temp
        m = self.momentum
        one_m = f32(1.0 - m)
        torch._foreach_mul_(h, m)
        torch._foreach_addcmul_(h, grads, grads, value=one_m)
        torch._foreach_copy_(a, h2)
        torch._foreach_add_(a, self.delta)
        torch._foreach_copy_(b, h)
        torch._foreach_add_(b, self.delta)
        torch._foreach_div_(a, b)
        torch._foreach_sqrt_(a)
        torch._foreach_mul_(grads, a)
        torch._foreach_mul_(h2, m)
        torch._foreach_addcmul_(h2, grads, grads, value=one_m)
        torch._foreach_mul_(grads, local_rate)


class AdamRule(UpdateRule):
    type = "Adam"
    histories = 2
    temps = 1

    def __init__(self, param: caffe_pb2.SolverParameter) -> None:
        super().__init__(param)
        self.beta2 = f32(param.momentum2)
        self.delta = f32(param.delta)

    def check(self) -> None:
        # Caffe takes these on trust; outside [0, 1) the bias correction divides by zero
        # (momentum 1) or takes the root of a negative number (momentum2 > 1).
        for name in ("momentum", "momentum2"):
            value = getattr(self.param, name)
            if not 0 <= value < 1:
                raise SolverError(f"{name}: Adam needs a value in [0, 1), not {value}")

    def correction(self, it: int) -> float:
        """√(1−β2^t)/(1−β1^t) with t = it + 1, in double as Caffe computes it, then float."""
        t = it + 1
        return f32(math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.momentum ** t))

    def compute(self, grads: list[torch.Tensor], hist: list[list[torch.Tensor]],
                temp: list[list[torch.Tensor]], local_rate: float, it: int) -> None:
        (m, v), (t,) = hist, temp
        b1, b2 = self.momentum, self.beta2
        torch._foreach_mul_(m, b1)
        torch._foreach_add_(m, grads, alpha=f32(1.0 - b1))
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=f32(1.0 - b2))
        torch._foreach_copy_(t, v)
        torch._foreach_sqrt_(t)
        torch._foreach_add_(t, self.delta)
        torch._foreach_copy_(grads, m)
        torch._foreach_div_(grads, t)
        torch._foreach_mul_(grads, f32(_f32(local_rate) * _f32(self.correction(it))))


RULES: dict[str, type[UpdateRule]] = {
    r.type: r for r in (UpdateRule, NesterovRule, AdaGradRule, RMSPropRule, AdaDeltaRule,
                        AdamRule)}


class Updater:
    """Holds the history and applies Caffe's full update to a list of parameters."""

    def __init__(self, rule: UpdateRule, params: list[torch.nn.Parameter],
                 lr_mults: list[float], decay_mults: list[float]) -> None:
        self.rule = rule
        self.params = list(params)
        self.lr_mults, self.decay_mults = list(lr_mults), list(decay_mults)
        self.groups = make_groups(self.lr_mults, self.decay_mults)
        n = len(self.params)
        self.history: list[torch.Tensor] = [torch.zeros_like(p.detach())
                                            for _ in range(rule.histories) for p in self.params]
        self._temp = [[torch.empty_like(p.detach()) for p in self.params]
                      for _ in range(rule.temps)]
        self._n = n
        # the diffs the last SGD update replaced by history tensors, kept until the next
        # update so that their memory is reused, not handed back to the system and faulted in
        # again by the next backward
        self._spare: list[torch.Tensor] = []
        self._index_lists()

    def _index_lists(self) -> None:
        """Per-group lists of tensors, rebuilt whenever the tensors behind them change."""
        n = self._n
        for g in self.groups:
            g.params = [self.params[i] for i in g.indices]
            g.hist = [[self.history[k * n + i] for i in g.indices]
                      for k in range(self.rule.histories)]
            g.temp = [[t[i] for i in g.indices] for t in self._temp]

    def to(self, device: torch.device) -> None:
        """Move the history (and scratch) to the parameters' device."""
        self.history = [h.to(device) for h in self.history]
        self._temp = [[t.to(device) for t in ts] for ts in self._temp]
        self._index_lists()

    def _grads(self) -> list[torch.Tensor]:
        """Each parameter's gradient; a parameter without one (lr_mult 0) gets zeros, as
        Caffe's diff is zero when nothing was propagated into it."""
        out = []
        for p in self.params:
            g = p.grad
            if g is None or g.shape != p.shape:
                g = torch.zeros_like(p.detach())
                p.grad = g
            out.append(g)
        return out

    def apply(self, rate: float, it: int, iter_size: int, weight_decay: float,
              regularization: str, clip: float) -> None:
        """One full update (clip, normalize, regularize, rule, w −= update)."""
        if not self.params:
            return
        dev = self.params[0].device
        if self.history and self.history[0].device != dev:
            self.to(dev)
        with torch.no_grad():
            # the last update's diff may be the history: not to be added to
            own_diffs(self.params)
            grads = self._grads()
            if clip >= 0:
                clip_gradients(grads, clip)
            if iter_size != 1:
                torch._foreach_mul_(grads, f32(1.0 / iter_size))
            rate32 = _f32(rate)
            wd = _f32(weight_decay)
            # SGD's update is its new history: a diff nobody sees becomes the history tensor
            # itself (until the next clear) rather than a copy of it
            share = type(self.rule).compute is UpdateRule.compute
            upd = list(grads)
            seen: set[int] = set()
            spare: list[torch.Tensor] = []
            for g in self.groups:
                gg = [grads[i] for i in g.indices]
                local_decay = float(wd * _f32(g.decay_mult))
                if local_decay:
                    if regularization == "L2":
                        torch._foreach_add_(gg, g.params, alpha=local_decay)
                    elif regularization == "L1":
                        torch._foreach_add_(gg, torch._foreach_sign(g.params), alpha=local_decay)
                    else:
                        raise SolverError("regularization_type: unknown regularization type "
                                          f"'{regularization}' (known: L1, L2)")
                local_rate = float(rate32 * _f32(g.lr_mult))
                if share:
                    self._sgd_into_history(g, gg, grads, upd, seen, local_rate, spare)
                else:
                    self.rule.compute(gg, g.hist, g.temp, local_rate, it)
            torch._foreach_sub_(self.params, upd)
            self._spare = spare

    def _sgd_into_history(self, g: Group, gg: list[torch.Tensor], grads: list[torch.Tensor],
                          upd: list[torch.Tensor], seen: set[int], local_rate: float,
                          spare: list[torch.Tensor]) -> None:
        """SGD's rule for one group, the update left in the diff as Caffe leaves it: a
        private diff (decaffe.blob.diff_is_private) is replaced by the history tensor, which
        holds the update; any other diff gets a copy of it."""
        (h,) = g.hist
        self.rule._momentum(gg, h, local_rate)
        dst, src = [], []
        for i, hi in zip(g.indices, h):
            p = self.params[i]
            if id(p) not in seen and diff_is_private(p, grads[i]):
                hi._decaffe_history = True
                spare.append(grads[i])
                p.grad = hi
                upd[i] = hi
            else:
                dst.append(grads[i])
                src.append(hi)
            seen.add(id(p))
        if dst:
            torch._foreach_copy_(dst, src)


def clip_gradients(grads: list[torch.Tensor], clip: float) -> None:
    """Scale all gradients down when their joint L2 norm exceeds clip (Caffe's ClipGradients)."""
    norms = torch._foreach_norm(grads)
    total = float(torch.linalg.vector_norm(torch.stack([n.float() for n in norms])))
    clip = f32(clip)
    if total > clip:
        scale = f32(clip / total)
        log.info(f"Gradient clipping: scaling down gradients (L2 norm {log.fmt(total)} > "
                 f"{log.fmt(clip)}) by scale factor {log.fmt(scale)}")
        torch._foreach_mul_(grads, scale)

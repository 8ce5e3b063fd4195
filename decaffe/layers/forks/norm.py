"""The forks' own batch normalisation layers.

- ``BN`` in its two public forms, both configured by ``bn_param``:
  yjxiong/caffe (TSN) and Cysu/caffe (dgd_person_reid): four blobs scale, shift, running
  mean, running variance (yjxiong's form since 2016-04; Cysu's fork and older yjxiong
  weights hold an inverse std there), with ``frozen`` and ``momentum``; and SegNet/ENet
  (alexgkendall/caffe-segnet, TimoSaemann/caffe-enet): two blobs scale, shift, with
  ``bn_mode`` LEARN (batch statistics) or INFERENCE (y = scale·x + shift, the statistics
  folded in by SegNet's compute_bn_statistics.py).
- ``BatchNormKyle`` (inisis/caffe): BVLC's BatchNorm statistics with an optional built-in
  scale and shift (``batch_norm_param.use_alpha_beta``).
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx

from ... import fillers
from ...layer import Layer, Shape, Tops, register
from ...proto import caffe_pb2
from .resize import field, has_field
from .shape import enum_name


def _filler(p: caffe_pb2.BNParameter, name: str):
    """bn_param's filler, or Caffe's default FillerParameter (constant 0)."""
    fp = field(p, name, None)
    return fp if fp is not None else fillers.filler_param(type="constant", value=0.0)


def _reduce_axes(x: torch.Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


def _per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (x.dim() - 2))


class _TestModeNorm(torch.autograd.Function):
    """x̂ = (x − μ)·s with fixed μ, s, whose gradient is yjxiong's training-mode formula
    s·(g − mean(g) − x̂·mean(g·x̂)) (what the fork runs in a TEST-phase backward)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor):
        xhat = (x - mean) * inv_std
        ctx.save_for_backward(xhat, inv_std)
        return xhat

    @staticmethod
    def backward(ctx: FunctionCtx, g: torch.Tensor):
        xhat, inv_std = ctx.saved_tensors
        axes = _reduce_axes(g)
        gx = g - g.mean(axes, keepdim=True) - xhat * (g * xhat).mean(axes, keepdim=True)
        return gx * inv_std, None, None


@register("BN")
class BNLayer(Layer):
    """The forks' BN: per-channel batch normalisation with a built-in scale and shift.

    Bottoms: x, N×C×... (statistics over every axis but 1).
    Tops: y, x's shape; in the SegNet/ENet LEARN form optionally the batch mean and the batch
    variance, each 1×C×1×1 (they carry no gradient).
    Blobs: yjxiong/Cysu form: 0 scale, 1 shift, 2 running mean (starts at 0), 3 running
    variance (starts at 0, or 1 when frozen), each 1×C×1×1; 2 and 3 get no gradient.
    SegNet/ENet form: 0 scale, 1 shift, each 1×C×1×1.
    Params: bn_param (BNParameter): yjxiong/Cysu form slope_filler, bias_filler (default
    constant 0), momentum (default 0.9), eps (default 1e-5), frozen (default false); engine is
    not read (the CAFFE engine's arithmetic is used). SegNet/ENet form (chosen when bn_mode,
    scale_filler or shift_filler is set, or the loaded weights hold two blobs): scale_filler,
    shift_filler (default constant 0), bn_mode LEARN (default) or INFERENCE.
    Source: yjxiong/caffe src/caffe/layers/bn_layer.cpp from its commit 89777d9a (2016-04-27,
    "Cudnn v5 Support") on, the version TSN pins and its public models hold (blob 3 the
    running variance; before 89777d9a, and in Cysu/caffe, it held the running inverse
    standard deviation: see docs/compat.md for converting such weights);
    alexgkendall/caffe-segnet and TimoSaemann/caffe-enet src/caffe/layers/bn_layer.cpp.

    yjxiong/Cysu form, TRAIN and not frozen: batch mean μ and biased variance σ²,
    y = (x − μ)·(σ² + eps)^−½·scale + shift, and run_mean ← (1 − momentum)·μ +
    momentum·run_mean, run_var ← (1 − momentum)·σ² + momentum·run_var. TEST or frozen:
    y = (x − run_mean)·(run_var + eps)^−½·scale + shift. Frozen: the backward gives only the
    bottom gradient scale·(run_var + eps)^−½·dy (no scale/shift gradient, as the fork). A
    TEST-phase backward (not frozen) uses the training formula around the running
    statistics, as the fork does. It has one top.

    SegNet/ENet form, LEARN: batch mean μ and variance E(x²) − μ²,
    y = (x − μ)/√(σ² + 1e−9)·scale + shift. INFERENCE: y = scale·x + shift (the statistics
    folded in by SegNet's compute_bn_statistics.py); the mean/variance tops need LEARN.
    """

    # Caffe's backward reads its forward's normalised values and variance: the recorded
    # graph stays exact
    backward_reads = "kept"

    exact_bottoms = 1
    min_tops = 1
    max_tops = 3

    def _segnet(self) -> bool:
        p = self.lp.bn_param
        if self.num_blobs:
            return self.num_blobs == 2
        return any(has_field(p, f) for f in ("bn_mode", "scale_filler", "shift_filler"))

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.bn_param
        shape = tuple(bottom_shapes[0])
        self.check(len(shape) >= 2, f"the bottom must have a channel axis, not shape {shape}")
        self.channels = shape[1]
        self.segnet = self._segnet()
        bshape = (1, self.channels, 1, 1)
        if self.segnet:
            self.learn = enum_name(p, "bn_mode", "LEARN") == "LEARN"
            if self.num_blobs == 0:
                self.add_blob(fillers.fill(_filler(p, "scale_filler"), bshape,
                                           where=self.name))
                self.add_blob(fillers.fill(_filler(p, "shift_filler"), bshape,
                                           where=self.name))
        else:
            self.check(len(self.top_names) == 1, "this BN (yjxiong/Cysu form) has one top")
            self.frozen = bool(field(p, "frozen", False))
            self.momentum = float(field(p, "momentum", 0.9))
            self.eps = float(field(p, "eps", 1e-5))
            self.batch_stats = self.phase == caffe_pb2.TRAIN and not self.frozen
            if self.num_blobs == 0:
                self.add_blob(fillers.fill(_filler(p, "slope_filler"), bshape,
                                           where=self.name))
                self.add_blob(fillers.fill(_filler(p, "bias_filler"), bshape,
                                           where=self.name))
                self.add_blob(torch.zeros(bshape), requires_grad=False)
                # the fork starts the variance at 0, or 1 for a frozen layer
                self.add_blob(torch.full(bshape, 1.0 if self.frozen else 0.0),
                              requires_grad=False)
            self.check(self.num_blobs == 4, f"has {self.num_blobs} blobs; the yjxiong/Cysu BN "
                       "keeps 4 (scale, shift, mean, variance)")
        for i in range(self.num_blobs):
            self.check(self.blob(i).numel() == self.channels, f"blob {i} has "
                       f"{self.blob(i).numel()} values for {self.channels} channels")
        if not self.segnet:
            self.no_grad_blobs = (2, 3)
        else:
            self.check(len(self.top_names) == 1 or self.learn,
                       "the batch mean/variance tops exist only with bn_mode LEARN",
                       "bn_param.bn_mode")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.check(len(shape) >= 2 and shape[1] == self.channels,
                   f"bottom shape {shape}; the layer was set up for {self.channels} channels")
        return [shape] + [(1, self.channels, 1, 1)] * (len(self.top_names) - 1)

    def forward(self, x: torch.Tensor) -> Tops:
        if self.segnet:
            return self._forward_segnet(x)
        scale, shift = _per_channel(self.blob(0), x), _per_channel(self.blob(1), x)
        run_mean, run_var = self.blob(2), self.blob(3)
        if self.batch_stats:
            axes = _reduce_axes(x)
            mean = x.mean(axes, keepdim=True)
            var = ((x - mean) ** 2).mean(axes, keepdim=True)
            with torch.no_grad():
                run_mean.mul_(self.momentum).add_((1 - self.momentum) * mean.reshape(
                    run_mean.shape))
                run_var.mul_(self.momentum).add_((1 - self.momentum) * var.reshape(
                    run_var.shape))
            return (x - mean) * (var + self.eps).rsqrt() * scale + shift
        mean = _per_channel(run_mean.detach(), x)
        inv = (_per_channel(run_var.detach(), x) + self.eps).rsqrt()
        if self.frozen:
            return (x - mean) * inv * scale.detach() + shift.detach()
        if torch.is_grad_enabled() and x.requires_grad:
            xhat = _TestModeNorm.apply(x, mean, inv)
        else:
            xhat = (x - mean) * inv
        return xhat * scale + shift

    def _forward_segnet(self, x: torch.Tensor):
        scale, shift = _per_channel(self.blob(0), x), _per_channel(self.blob(1), x)
        if not self.learn:
            return scale * x + shift
        axes = _reduce_axes(x)
        mean = x.mean(axes, keepdim=True)
        var = (x * x).mean(axes, keepdim=True) - mean * mean
        y = (x - mean) / torch.sqrt(var + 1e-9) * scale + shift
        extra = [mean.detach().reshape(1, -1, 1, 1), var.detach().reshape(1, -1, 1, 1)]
        if len(self.top_names) == 1:
            return y
        return (y, *extra[:len(self.top_names) - 1])


@register("BatchNormKyle")
class BatchNormKyleLayer(Layer):
    """BVLC BatchNorm's statistics followed, with use_alpha_beta, by a per-channel scale and shift.

    Bottoms: x, N×C×... (or a 1-axis N, one channel).
    Tops: y, x's shape: x̂ = (x − mean)/√(var + eps), times alpha plus beta with
    use_alpha_beta.
    Blobs: 0 mean sum C, 1 variance sum C, 2 factor 1 (all start at 0 and get no gradient);
    with use_alpha_beta 3 alpha C (starts at 1), 4 beta C (starts at 0).
    Params: batch_norm_param (BatchNormParameter): use_global_stats (default: true in TEST),
    moving_average_fraction (default 0.999), eps (default 1e-5), use_alpha_beta (default
    false); weight_filler, bias_filler and do_all_reduce are not read (the fork sets alpha 1
    and beta 0 without its fillers).
    Source: inisis/caffe src/caffe/layers/batch_norm_kyle_layer.cpp.

    In TRAIN the batch mean and biased variance normalise, and the sums update as
    BatchNorm's (factor ← λ·factor + 1, mean ← λ·mean + μ, var ← λ·var + m/(m−1)·σ²); with
    global statistics mean and var are the sums over factor. With global statistics the
    backward is alpha·dy/√(var + eps) and alpha/beta get no gradient (the fork returns before
    computing them).
    """

    # Caffe's backward reads its forward's normalised values and variance: the recorded
    # graph stays exact
    backward_reads = "kept"

    exact_bottoms = 1
    exact_tops = 1
    no_grad_blobs = (0, 1, 2)

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.batch_norm_param
        shape = tuple(bottom_shapes[0])
        self.fraction = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        self.alpha_beta = bool(field(p, "use_alpha_beta", False))
        self.use_global_stats = (self.phase == caffe_pb2.TEST) if not p.HasField(
            "use_global_stats") else p.use_global_stats
        self.channels = 1 if len(shape) == 1 else shape[1]
        c = self.channels
        if self.num_blobs == 0:
            for s in ((c,), (c,), (1,)):
                self.add_blob(torch.zeros(s), requires_grad=False)
            if self.alpha_beta:
                self.add_blob(torch.ones(c))
                self.add_blob(torch.zeros(c))
        want = 5 if self.alpha_beta else 3
        self.check(self.num_blobs == want, f"has {self.num_blobs} blobs, expected {want} "
                   f"(use_alpha_beta: {str(self.alpha_beta).lower()})",
                   "batch_norm_param.use_alpha_beta")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        if len(shape) >= 2:
            self.check(shape[1] == self.channels, f"bottom has {shape[1]} channels, the layer "
                       f"was set up for {self.channels}")
        return [shape]

    def forward(self, x: torch.Tensor) -> Tops:
        shape = x.shape
        x2 = x.reshape(shape[0], 1) if x.dim() == 1 else x
        mean_sum, var_sum, factor = self.blob(0), self.blob(1), self.blob(2)
        if self.use_global_stats:
            f = factor.detach()
            inv = torch.where(f == 0, torch.zeros_like(f), 1.0 / f)
            mean = _per_channel(mean_sum.detach() * inv, x2)
            var = _per_channel(var_sum.detach() * inv, x2)
        else:
            axes = _reduce_axes(x2)
            mean = x2.mean(axes, keepdim=True)
            var = ((x2 - mean) ** 2).mean(axes, keepdim=True)
            m = x2.numel() // self.channels
            with torch.no_grad():
                factor.mul_(self.fraction).add_(1.0)
                mean_sum.mul_(self.fraction).add_(mean.reshape(-1))
                corr = m / (m - 1) if m > 1 else 1.0
                var_sum.mul_(self.fraction).add_(corr * var.reshape(-1))
        y = (x2 - mean) / torch.sqrt(var + self.eps)
        if self.alpha_beta:
            alpha, beta = self.blob(3), self.blob(4)
            if self.use_global_stats:
                alpha, beta = alpha.detach(), beta.detach()
            y = y * _per_channel(alpha, x2) + _per_channel(beta, x2)
        return y.reshape(shape)

"""Neuron layers: one bottom, one top of the same shape, each value mapped on its own.

ReLU, PReLU, Sigmoid, TanH, Dropout, ELU, AbsVal, BNLL, Power, Exp, Log, Threshold,
Clip and Swish, with Caffe's parameters, defaults, checks and gradients. Autograd gives
every backward except where Caffe's differs from the analytic one (Power's constant
case) or where Caffe has none (Threshold: a gradient through it raises, see
``no_backward``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx

from .. import fillers
from ..layer import ElementwiseLayer, Layer, Shape, Tops, register
from ..proto import caffe_pb2


# ----------------------------------------------------------------------------------------------
# helpers shared with the other layer families
# ----------------------------------------------------------------------------------------------
class _Refused(torch.autograd.Function):
    """Runs fn on the inputs; a backward through the result raises the layer's error."""

    @staticmethod
    def forward(ctx: FunctionCtx, layer: Layer, message: str, fn: Callable,
                *inputs: torch.Tensor) -> torch.Tensor:
        ctx.layer, ctx.message = layer, message
        return fn(*inputs)

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: torch.Tensor) -> None:
        raise ctx.layer.error(ctx.message)


def no_backward(layer: Layer, message: str, fn: Callable, *inputs: torch.Tensor) -> torch.Tensor:
    """fn(*inputs), such that asking for a gradient through the result raises a
    LayerParamError naming the layer, as Caffe aborts (NOT_IMPLEMENTED / CHECK) when it
    would have to run such a backward. Without a graph, plainly fn(*inputs)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _Refused.apply(layer, message, fn, *inputs)
    return fn(*inputs)


class _ConstantLike(torch.autograd.Function):
    """A tensor of x's shape filled with value, whose gradient to x is exactly zero
    (value + 0·x would be NaN wherever x is not finite)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, value: float) -> torch.Tensor:
        return torch.full_like(x, value)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.zeros_like(grad), None


def constant_like(x: torch.Tensor, value: float) -> torch.Tensor:
    """x's shape filled with value; the gradient flowing back to x is zero."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _ConstantLike.apply(x, value)
    return torch.full_like(x, value)


# ----------------------------------------------------------------------------------------------
# the layers
# ----------------------------------------------------------------------------------------------
@register("ReLU")
class ReLULayer(ElementwiseLayer):
    """Rectified linear unit: y = max(x, 0) + negative_slope·min(x, 0), elementwise.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: relu_param.negative_slope (default 0); engine is not read.
    Source: src/caffe/layers/relu_layer.cpp.

    The gradient is 1 where x > 0 and negative_slope where x <= 0 (so at exactly 0 it is the
    slope, as in Caffe).
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.negative_slope = float(self.lp.relu_param.negative_slope)

    def forward(self, x: torch.Tensor) -> Tops:
        if self.negative_slope == 0.0:
            return torch.relu(x)
        return F.leaky_relu(x, self.negative_slope)


@register("PReLU")
class PReLULayer(ElementwiseLayer):
    """Parametric ReLU: y = max(x, 0) + a·min(x, 0) with a learned slope a per channel.

    Bottoms: x, N×C×… (at least 2 axes).
    Tops: y, of x's shape.
    Blobs: the slopes, (C,); with channel_shared one slope for all channels, a blob with no axes.
    Params: prelu_param.filler (default constant 0.25), channel_shared (default false).
    Source: src/caffe/layers/prelu_layer.cpp.

    The bottom and the slopes both get gradients. A slope blob of the wrong size (from a weight
    file, or C changed by a reshape) is an error naming the layer.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.prelu_param
        shape = bottom_shapes[0]
        self.check(len(shape) >= 2, f"the bottom must have at least 2 axes, its shape is "
                   f"{tuple(shape)}")
        self.channel_shared = p.channel_shared
        channels = shape[1]
        if self.num_blobs == 0:
            fp = p.filler if p.HasField("filler") else fillers.filler_param(type="constant",
                                                                             value=0.25)
            self.add_blob(fillers.fill(fp, () if self.channel_shared else (channels,),
                                       where=self.name))
        want = 1 if self.channel_shared else channels
        self.check(self.blob_params[0].numel() == want,
                   f"the slope blob has {self.blob_params[0].numel()} values; "
                   f"{'channel_shared wants 1' if self.channel_shared else f'{want} channels'}",
                   "prelu_param.channel_shared")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = bottom_shapes[0]
        self.check(len(shape) >= 2, f"the bottom must have at least 2 axes, its shape is "
                   f"{tuple(shape)}")
        if not self.channel_shared:
            self.check(shape[1] == self.blob_params[0].numel(),
                       f"bottom has {shape[1]} channels, the slopes were set up for "
                       f"{self.blob_params[0].numel()}")
        return [shape]

    def forward(self, x: torch.Tensor) -> Tops:
        w = self.blob_params[0]
        if x.dim() < 2 or (not self.channel_shared and x.shape[1] != w.numel()):
            self.reshape([tuple(x.shape)])  # raises Caffe's error for these shapes
        return F.prelu(x, w)


@register("Sigmoid")
class SigmoidLayer(ElementwiseLayer):
    """Logistic sigmoid: y = 1 / (1 + exp(−x)), elementwise.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: none (sigmoid_param.engine is not read).
    Source: src/caffe/layers/sigmoid_layer.cpp.

    Backward reads the top: dx = dy·y·(1 − y).
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    backward_reads = "tops"

    def forward(self, x: torch.Tensor) -> Tops:
        return torch.sigmoid(x)

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        y = tops[0]
        return [top_diffs[0] * y * (1.0 - y)]


@register("TanH")
class TanHLayer(ElementwiseLayer):
    """Hyperbolic tangent: y = tanh(x), elementwise.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: none (tanh_param.engine is not read).
    Source: src/caffe/layers/tanh_layer.cpp.

    Backward reads the top: dx = dy·(1 − y²).
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    backward_reads = "tops"

    def forward(self, x: torch.Tensor) -> Tops:
        return torch.tanh(x)

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        y = tops[0]
        return [top_diffs[0] * (1 - y * y)]


@register("Dropout")
class DropoutLayer(ElementwiseLayer):
    """Dropout: in TRAIN zeroes each value with probability dropout_ratio, scaling the kept ones.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: dropout_param.dropout_ratio (default 0.5); the forks' scale_train (default true)
        and sample_weights_test (default false).
    Source: src/caffe/layers/dropout_layer.cpp; scale_train: caffe-fast-rcnn's
        dropout_layer.cpp; sample_weights_test: alexgkendall/caffe-segnet
        src/caffe/layers/dropout_layer.cpp/.cu.

    TRAIN: keeps each value with probability 1 − dropout_ratio and scales the kept
    ones by 1/(1 − dropout_ratio); the backward uses the same mask and scale. The mask
    is drawn from torch's generator, so caffe.set_random_seed makes it reproducible.
    TEST: the identity (the top shares the bottom's memory; Caffe copies the values).

    Caffe accepts any ratio in [0, 1]; a ratio of 1 makes its scale infinite and every
    output NaN, so decaffe asks for 0 <= dropout_ratio < 1.

    The Faster R-CNN forks' dropout_param.scale_train: false moves the scaling to TEST:
    TRAIN keeps the values unscaled, TEST multiplies by 1 − dropout_ratio (their
    dropout_layer.cpp); backward follows the same rule.

    SegNet's dropout_param.sample_weights_test: true drops out in TEST exactly as in TRAIN
    (a fresh mask each forward, kept values scaled by 1/(1 − dropout_ratio), the backward
    through the same mask): Bayesian SegNet's Monte Carlo sampling. Setting it together with
    scale_train: false is refused (no fork defines both).
    """

    # Caffe's backward reads its forward's mask: the recorded graph stays exact
    backward_reads = "kept"

    def setup(self, bottom_shapes: list[Shape]) -> None:
        ratio = float(self.lp.dropout_param.dropout_ratio)
        self.check(0.0 <= ratio < 1.0, f"must be in [0, 1), not {ratio}",
                   "dropout_param.dropout_ratio")
        self.ratio = ratio
        self.train = self.phase == caffe_pb2.TRAIN
        self.scale_train = bool(self.lp.dropout_param.scale_train)
        # SegNet: `phase_ == TRAIN || sample_weights_test` decides whether to sample
        if self.lp.dropout_param.sample_weights_test:
            self.check(self.scale_train, "sample_weights_test (SegNet) and scale_train: false "
                       "(Faster R-CNN) come from different forks; no fork defines both",
                       "dropout_param.sample_weights_test")
            self.train = True

    def forward(self, x: torch.Tensor) -> Tops:
        if self.scale_train:
            if self.train and self.ratio > 0.0:
                return F.dropout(x, self.ratio, training=True)
            return x.view(x.shape)
        if self.train:
            keep = F.dropout(torch.ones_like(x), self.ratio, training=True) != 0
            return x * keep
        # Caffe scales by 1/scale_ with scale_ = 1/(1 - ratio) in the blob's precision
        scale = torch.tensor(1.0, dtype=x.dtype) / (1.0 - torch.tensor(self.ratio, dtype=x.dtype))
        return x * (1.0 / scale).to(x.device)


@register("ELU")
class ELULayer(ElementwiseLayer):
    """Exponential linear unit: y = x for x > 0, alpha·(exp(x) − 1) otherwise.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: elu_param.alpha (default 1).
    Source: src/caffe/layers/elu_layer.cpp.

    The gradient is 1, or y + alpha. Backward reads the bottom and the top:
    dx = dy·((x > 0) + (alpha + y)·(x <= 0)).
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    backward_reads = "tops"

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.alpha = float(self.lp.elu_param.alpha)

    def forward(self, x: torch.Tensor) -> Tops:
        return F.elu(x, self.alpha)

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        x, y = bottoms[0], tops[0]
        pos = (x > 0).to(x.dtype)
        return [top_diffs[0] * (pos + (self.alpha + y) * (x <= 0).to(x.dtype))]


@register("AbsVal")
class AbsValLayer(ElementwiseLayer):
    """Absolute value: y = |x|, elementwise.

    Bottoms: x, any shape.
    Tops: y, of x's shape; not the bottom itself (no in-place computation).
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/absval_layer.cpp.

    The gradient is sign(x), which is 0 at 0. In place is refused, as Caffe 1.0's
    AbsValLayer::LayerSetUp does.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.check(self.top_names[0] != self.bottom_names[0],
                   f"AbsVal Layer does not allow in-place computation (top '{self.top_names[0]}' "
                   "is its bottom)")

    def forward(self, x: torch.Tensor) -> Tops:
        return torch.abs(x)


@register("BNLL")
class BNLLLayer(ElementwiseLayer):
    """Binomial normal log likelihood: y = log(1 + exp(x)), elementwise, without overflow.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/bnll_layer.cpp.

    Caffe computes x + log(1 + exp(−x)) for x > 0; the gradient is sigmoid(x).
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    def forward(self, x: torch.Tensor) -> Tops:
        # softplus switches to y = x above 20, where log(1 + exp(−x)) is below float
        # resolution, and so matches Caffe's overflow-safe form.
        return F.softplus(x)


@register("Power")
class PowerLayer(ElementwiseLayer):
    """Power: y = (shift + scale·x)^power, elementwise.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: power_param.power (default 1), scale (default 1), shift (default 0).
    Source: src/caffe/layers/power_layer.cpp.

    As in Caffe, when power·scale is 0 the input is ignored: y is 1 (power 0) or
    shift^power everywhere and the gradient is exactly 0; with power 1 the gradient is
    scale. Elsewhere the gradient is power·scale·(shift + scale·x)^(power−1) (Caffe
    writes it power·y/x when shift is 0, which is the same value where x ≠ 0).
    Backward from the blobs follows power_layer.cpp, which reads the top: power 2 gives
    power·scale·(scale·x + shift), shift 0 gives power·y/x, else power·scale·y/(scale·x + shift).
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    backward_reads = "tops"

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale
        if self.diff_scale == 0.0:
            # pow in float, as C's pow: a negative shift to a fractional power is NaN
            self.value = 1.0 if self.power == 0.0 else float(
                torch.tensor(self.shift, dtype=torch.float64).pow(self.power))

    def forward(self, x: torch.Tensor) -> Tops:
        if self.diff_scale == 0.0:
            return constant_like(x, self.value)
        y = x
        if self.scale != 1.0:
            y = y * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        if self.power != 1.0:
            y = y.square() if self.power == 2.0 else y.pow(self.power)
        return x.view(x.shape) if y is x else y

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        x, y, dy = bottoms[0], tops[0], top_diffs[0]
        if self.diff_scale == 0.0:
            return [torch.zeros_like(x)]
        if self.power == 1.0:
            return [dy * self.diff_scale]
        if self.power == 2.0:
            g = x * (self.diff_scale * self.scale)
            if self.shift != 0.0:
                g = g + self.diff_scale * self.shift
        elif self.shift == 0.0:
            g = y / x * self.power
        else:
            base = x * self.scale if self.scale != 1.0 else x
            g = y / (base + self.shift)
            if self.diff_scale != 1.0:
                g = g * self.diff_scale
        return [dy * g]


@register("Exp")
class ExpLayer(ElementwiseLayer):
    """Exponential: y = base^(shift + scale·x), elementwise, base −1 meaning e.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: exp_param.base (default −1: e; else it must be > 0), scale (default 1), shift
        (default 0).
    Source: src/caffe/layers/exp_layer.cpp.

    Caffe computes it as base^shift · exp(ln(base)·scale·x). Backward reads the top:
    dx = y·dy·ln(base)·scale.
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    backward_reads = "tops"

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        if base != -1.0:
            self.check(base > 0.0, f"must be strictly positive (or -1 for e), not {base}",
                       "exp_param.base")
        log_base = 1.0 if base == -1.0 else math.log(base)
        self.check(math.isfinite(log_base), f"log(base) = log({base}) is not finite",
                   "exp_param.base")
        self.inner_scale = log_base * scale
        if shift == 0.0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = math.exp(shift) if base == -1.0 else _pow(base, shift)

    def forward(self, x: torch.Tensor) -> Tops:
        y = torch.exp(x) if self.inner_scale == 1.0 else torch.exp(x * self.inner_scale)
        return y if self.outer_scale == 1.0 else y * self.outer_scale

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        g = tops[0] * top_diffs[0]
        return [g if self.inner_scale == 1.0 else g * self.inner_scale]


def _pow(a: float, b: float) -> float:
    """C's pow for finite positive a: overflow gives inf, not an exception."""
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf


@register("Log")
class LogLayer(ElementwiseLayer):
    """Logarithm: y = log_base(shift + scale·x), elementwise, base −1 meaning e.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: log_param.base (default −1: e; else it must be > 0 and not 1), scale (default 1),
        shift (default 0).
    Source: src/caffe/layers/log_layer.cpp.

    The gradient is scale / ((shift + scale·x)·ln(base)).
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.log_param
        base = float(p.base)
        if base != -1.0:
            self.check(base > 0.0, f"must be strictly positive (or -1 for e), not {base}",
                       "log_param.base")
        log_base = 1.0 if base == -1.0 else math.log(base)
        self.check(math.isfinite(log_base) and log_base != 0.0,
                   f"1/log(base) = 1/log({base}) is not finite", "log_param.base")
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)

    def forward(self, x: torch.Tensor) -> Tops:
        y = x
        if self.scale != 1.0:
            y = y * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        y = torch.log(y)
        return y if self.base_scale == 1.0 else y * self.base_scale


@register("Threshold")
class ThresholdLayer(ElementwiseLayer):
    """Step function: y = 1 where x > threshold, else 0.

    Bottoms: x, any shape; no gradient (see below).
    Tops: y, of x's shape.
    Blobs: none.
    Params: threshold_param.threshold (default 0).
    Source: src/caffe/layers/threshold_layer.cpp.

    Caffe has no backward for this layer (NOT_IMPLEMENTED aborts the process). decaffe
    raises a LayerParamError naming the layer when a gradient must flow through it; set
    ``propagate_down: false`` on the layer (or keep it off the path to any loss) to use it
    in a net that runs backward.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.threshold = float(self.lp.threshold_param.threshold)

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)

    def forward(self, x: torch.Tensor) -> Tops:
        return no_backward(self, "Threshold has no backward (Caffe: NOT_IMPLEMENTED); set "
                           "propagate_down: false on this layer", self._step, x)


@register("Clip")
class ClipLayer(ElementwiseLayer):
    """Clip: y = max(min, min(x, max)), elementwise.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: clip_param.min and clip_param.max, both required (no defaults).
    Source: src/caffe/layers/clip_layer.cpp.

    The gradient passes where min <= x <= max and is 0 elsewhere. If min > max every output
    is min (Caffe's formula), with zero gradient.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.clip_param
        for f in ("min", "max"):
            self.check(p.HasField(f), "is required", f"clip_param.{f}")
        self.min, self.max = float(p.min), float(p.max)

    def forward(self, x: torch.Tensor) -> Tops:
        if self.min > self.max:
            return constant_like(x, self.min)
        return torch.clamp(x, self.min, self.max)


@register("Swish")
class SwishLayer(ElementwiseLayer):
    """Swish: y = x·sigmoid(beta·x), elementwise.

    Bottoms: x, any shape.
    Tops: y, of x's shape.
    Blobs: none.
    Params: swish_param.beta (default 1).
    Source: src/caffe/layers/swish_layer.cpp.

    Backward reads the top (and the sigmoid of the bottom):
    dx = dy·(beta·y + sigmoid(beta·x)·(1 − beta·y)).
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    backward_reads = "tops"

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.beta = float(self.lp.swish_param.beta)

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        s = torch.sigmoid(bottoms[0] * self.beta)
        by = tops[0] * self.beta
        return [top_diffs[0] * (by + s * (1.0 - by))]

    def forward(self, x: torch.Tensor) -> Tops:
        if self.beta == 1.0:
            return F.silu(x)
        return x * torch.sigmoid(x * self.beta)

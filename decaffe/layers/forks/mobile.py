"""Layers of the mobile-network forks.

- ``ConvolutionDepthwise`` (farmingyard/ShuffleNet's conv_dw_layer): one filter per channel.
- ``DepthwiseConvolution`` (yonghenglh6/DepthwiseConvolution, used by the MobileNet-YOLO and
  SSD forks): Caffe's Convolution (group from the prototxt) under a faster kernel's name.
- ``ReLU6`` (inisis/caffe and the MobileNet forks; relu6_param negative_slope, threshold),
  ``HardSwish``, ``HardSigmoid`` (inisis/caffe, hardsigmoid_param alpha, beta).
- ``ShuffleChannel`` (farmingyard/ShuffleNet): ShuffleNet's channel shuffle.
- ``Axpy`` (hujie-frank/SENet): top = a·x + y with a per-channel scale a.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx

from ...layer import ElementwiseLayer, Layer, Shape, Tops, register
from ...proto import caffe_pb2
from ..vision import ConvolutionLayer
from .resize import field


@register("ConvolutionDepthwise")
class ConvolutionDepthwiseLayer(ConvolutionLayer):
    """Depthwise convolution: Caffe's Convolution with group = channels, one filter per channel.

    Bottoms: x, N×C×H×W (the channel axis is convolution_param.axis).
    Tops: y, N×C×H'×W' (H', W' as Convolution's, from kernel, stride, pad and dilation).
    Blobs: weights C×1×kh×kw; bias C (when bias_term, the default).
    Params: convolution_param (ConvolutionParameter), as Convolution's: kernel_size/h/w,
    stride (default 1), pad (default 0), dilation (default 1), bias_term (default true),
    weight_filler, bias_filler, axis (default 1); num_output, when given, must equal C, and
    group must be 1 or C.
    Source: farmingyard/caffe-mobilenet conv_dw_layer.cpp (sp2823's BVLC/caffe PR #5665).

    The fork silently ignores a num_output other than C; decaffe refuses it.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        shape = tuple(bottom_shapes[0])
        self.check(len(shape) >= 2, f"the bottom must have a channel axis, not shape {shape}")
        p = self.lp.convolution_param
        channels = shape[p.axis if p.axis >= 0 else len(shape) + p.axis]
        self.check(p.num_output in (0, channels), f"num_output {p.num_output} must equal the "
                   f"bottom's {channels} channels (one filter per channel)",
                   "convolution_param.num_output")
        self.check(p.group in (1, channels), f"group {p.group} must be 1 or the channel count "
                   f"{channels}", "convolution_param.group")
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(self.lp)
        lp.convolution_param.num_output = channels
        lp.convolution_param.group = channels
        original, self.lp = self.lp, lp
        try:
            super().setup(bottom_shapes)
        finally:
            self.lp = original


@register("DepthwiseConvolution")
class DepthwiseConvolutionLayer(ConvolutionLayer):
    """yonghenglh6's DepthwiseConvolution: exactly Caffe's Convolution under another type name.

    Bottoms: x, N×C×H×W.
    Tops: y, N×num_output×H'×W', as Convolution's.
    Blobs: weights num_output×(C/group)×kh×kw; bias num_output (when bias_term).
    Params: convolution_param (ConvolutionParameter), every field as Convolution reads it
    (group from the prototxt, default 1).
    Source: yonghenglh6/DepthwiseConvolution caffe/src/caffe/layers/depthwise_conv_layer.cpp.

    The fork only swapped in a faster GPU kernel for group = channels; parameters, blobs and
    output are Convolution's.
    """


@register("ReLU6")
class ReLU6Layer(ElementwiseLayer):
    """y = min(max(x, 0) + negative_slope·min(x, 0), threshold), elementwise.

    Bottoms: x, any shape.
    Tops: y, x's shape.
    Blobs: none.
    Params: relu6_param (ReLU6Parameter): negative_slope (default 0), threshold (default 6).
    Source: inisis/caffe src/caffe/layers/relu6_layer.cpp.

    Gradient ((x > 0) + negative_slope·(x <= 0))·(x < threshold), as the fork's backward
    (which differs from min's derivative where negative_slope·x >= threshold).
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.relu6_param
        self.slope = float(field(p, "negative_slope", 0.0))
        self.threshold = float(field(p, "threshold", 6.0))

    def forward(self, x: torch.Tensor) -> Tops:
        return _ReLU6.apply(x, self.slope, self.threshold)


class _ReLU6(torch.autograd.Function):
    """The fork's value min(relu_slope(x), t) with its gradient
    ((x > 0) + slope·(x <= 0))·(x < t), which differs from min's where slope·x >= t."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, slope: float, threshold: float):
        ctx.save_for_backward(x)
        ctx.slope, ctx.threshold = slope, threshold
        lin = torch.clamp(x, min=0) + slope * torch.clamp(x, max=0)
        return torch.clamp(lin, max=threshold)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        pos = (x > 0).to(grad.dtype)
        factor = (pos + ctx.slope * (1 - pos)) * (x < ctx.threshold).to(grad.dtype)
        return grad * factor, None, None


@register("HardSwish")
class HardSwishLayer(ElementwiseLayer):
    """y = x·min(max(x + 3, 0), 6)/6, elementwise.

    Bottoms: x, any shape.
    Tops: y, x's shape.
    Blobs: none.
    Params: none.
    Source: inisis/caffe src/caffe/layers/hardswish_layer.cpp.

    The fork computes x·max(0, min(1, x/6 + 0.5)) and had no backward; decaffe's is the exact
    derivative (docs/compat.md).
    """

    def forward(self, x: torch.Tensor) -> Tops:
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


@register("HardSigmoid")
class HardSigmoidLayer(ElementwiseLayer):
    """y = min(max(alpha·x + beta, 0), 1), elementwise.

    Bottoms: x, any shape.
    Tops: y, x's shape.
    Blobs: none.
    Params: hardsigmoid_param (HardSigmoidParameter): alpha (default 0.2), beta (default 0.5).
    Source: inisis/caffe src/caffe/layers/hardsigmoid_layer.cpp.

    The fork had no backward; decaffe's is alpha where 0 < alpha·x + beta < 1, else 0.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.hardsigmoid_param
        self.alpha = float(field(p, "alpha", 0.2))
        self.beta = float(field(p, "beta", 0.5))

    def forward(self, x: torch.Tensor) -> Tops:
        return torch.clamp(self.alpha * x + self.beta, 0.0, 1.0)


@register("ShuffleChannel")
class ShuffleChannelLayer(Layer):
    """ShuffleNet's channel shuffle: the g groups of channels are interleaved.

    Bottoms: x, N×C×... with C = g·k (any trailing axes move with their channel).
    Tops: y, x's shape; top channel j·g + i is bottom channel i·k + j.
    Blobs: none.
    Params: shuffle_channel_param (ShuffleChannelParameter): group g (default 1, >= 1).
    Source: farmingyard/ShuffleNet shuffle_channel_layer.cpp.

    Backward is the inverse permutation, as the fork's.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.group = int(field(self.lp.shuffle_channel_param, "group", 1))
        self.check(self.group >= 1, f"must be >= 1, not {self.group}",
                   "shuffle_channel_param.group")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.check(len(shape) >= 2, f"the bottom must have a channel axis, not shape {shape}")
        self.check(shape[1] % self.group == 0, f"the bottom's {shape[1]} channels are not a "
                   f"multiple of group {self.group}", "shuffle_channel_param.group")
        return [shape]

    def forward(self, x: torch.Tensor) -> Tops:
        shape = self.reshape([tuple(x.shape)])[0]
        n, c = shape[0], shape[1]
        y = x.reshape(n, self.group, c // self.group, -1).transpose(1, 2)
        return y.reshape(shape)


@register("Axpy")
class AxpyLayer(Layer):
    """SENet's Axpy: top = a·x + y, a scaling each (n, c) plane of x.

    Bottoms: a, N×C or N×C×1×1 (the per-channel scale); x, N×C×...; y, x's shape.
    Tops: x's shape.
    Blobs: none.
    Params: none.
    Source: hujie-frank/SENet src/caffe/layers/axpy_layer.cpp.

    Backward, as the fork's: da = Σ dtop·x over the plane, dx = a·dtop, dy = dtop.
    """

    exact_bottoms = 3
    exact_tops = 1

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        a, x, y = (tuple(s) for s in bottom_shapes)
        self.check(len(x) >= 2 and a[:2] == x[:2], f"the scale (bottom 0) {a} must start with "
                   f"x's (num, channels) {x[:2]}")
        self.check(all(d == 1 for d in a[2:]), f"the scale (bottom 0) {a} must be (N, C, 1, 1)")
        self.check(x == y, f"x (bottom 1) {x} and y (bottom 2) {y} must have one shape")
        return [x]

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> Tops:
        self.reshape([tuple(a.shape), tuple(x.shape), tuple(y.shape)])
        scale = a.reshape(a.shape[:2] + (1,) * (x.dim() - 2))
        return scale * x + y

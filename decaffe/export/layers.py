"""The exports of BVLC Caffe's layers: one LayerExport per type, with its ONNX form (``onnx``:
operators through an OnnxBuilder) and its PyTorch form (``torch``: one expression of torch
calls for the generated model.py), both computing what the decaffe layer computes.

Caffe details ONNX lacks are spelled out here: pooling windows by explicit pads (Caffe's
ceil rounding and its clipping of a last window that would start in the padding), its AVE
divisor by a constant correction, LRN within a channel by AVE pooling, Power/Exp/Log with
base/scale/shift by elementwise operators, Scale/Bias over axis ranges by reshaped
constants, ArgMax ties by select_last_index, RNN/LSTM unrolled over their fixed T.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..proto import caffe_pb2
from .graph import ExportGraph, Node, count
from .registry import LayerExport, refuse_types, register_export

if TYPE_CHECKING:  # for annotations only
    from ..layers.forks.norm import BatchNormKyleLayer
    from ..layers.norm import BatchNormLayer
    from ..layers.vision import _PoolGeom
    from .onnx import OnnxBuilder
    from .pytorch_source import SourceBuilder

_POOL = caffe_pb2.PoolingParameter
_LRN = caffe_pb2.LRNParameter
_ELT = caffe_pb2.EltwiseParameter
_RED = caffe_pb2.ReductionParameter
FLT_MAX = 3.4028234663852886e38

refuse_types("a loss or accuracy layer computes a training score from labels, not part of a "
             "deploy graph; export a deploy net, or stop before it with -end",
             "SoftmaxWithLoss", "Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss",
             "HingeLoss", "MultinomialLogisticLoss", "InfogainLoss", "ContrastiveLoss")
refuse_types("a data layer reads files or databases, which an exported graph cannot; a deploy "
             "net takes its data from Input layers (replace it with an Input layer)",
             "Data", "ImageData", "HDF5Data", "MemoryData", "WindowData")
refuse_types("HDF5Output writes files during the forward pass; remove it or stop before it with "
             "-end", "HDF5Output")
refuse_types("a Python layer runs arbitrary Python code, which has no ONNX or torch.export form; "
             "stop before it with -end", "Python")
refuse_types("Filter's top size depends on its selector's values (a data-dependent shape); stop "
             "before it with -end", "Filter")


def _tuple(v: Iterable[int]) -> str:
    return repr(tuple(int(x) for x in v))


# ----------------------------------------------------------------------------------------------
# neurons
# ----------------------------------------------------------------------------------------------
@register_export("ReLU")
class ReLUExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        slope = node.layer.negative_slope
        if slope == 0.0:
            b.op("Relu", node.bottoms, node.tops[0])
        else:
            b.op("LeakyRelu", node.bottoms, node.tops[0], alpha=slope)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        slope = node.layer.negative_slope
        x = s.v(node.bottoms[0])
        return f"F.relu({x})" if slope == 0.0 else f"F.leaky_relu({x}, {slope!r})"


@register_export("PReLU")
class PReLUExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        nd = len(b.shape(node.bottoms[0]))
        if node.layer.channel_shared:
            slope = b.blob(node, 0, lambda a: a.reshape(1))
        else:
            slope = b.blob(node, 0, lambda a: a.reshape((-1,) + (1,) * (nd - 2)))
        b.op("PRelu", [node.bottoms[0], slope], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"F.prelu({s.v(node.bottoms[0])}, {s.p(node, 0)})"


class _Unary(LayerExport):
    onnx_op = ""
    torch_fn = ""

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.op(self.onnx_op, node.bottoms, node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"{self.torch_fn}({s.v(node.bottoms[0])})"


@register_export("Sigmoid")
class SigmoidExport(_Unary):
    onnx_op, torch_fn = "Sigmoid", "torch.sigmoid"


@register_export("TanH")
class TanHExport(_Unary):
    onnx_op, torch_fn = "Tanh", "torch.tanh"


@register_export("AbsVal")
class AbsValExport(_Unary):
    onnx_op, torch_fn = "Abs", "torch.abs"


@register_export("BNLL")
class BNLLExport(_Unary):
    onnx_op, torch_fn = "Softplus", "F.softplus"


@register_export("ELU")
class ELUExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.op("Elu", node.bottoms, node.tops[0], alpha=float(node.layer.alpha))

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"F.elu({s.v(node.bottoms[0])}, {node.layer.alpha!r})"


@register_export("Dropout")
class DropoutExport(LayerExport):
    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        if node.layer.train and node.layer.ratio > 0:
            return ("a TRAIN-phase Dropout drops random values at every pass; export the net "
                    "built in the TEST phase, where it is the identity")
        return None

    def _test_scale(self, node: Node) -> float:
        """1, or 1 − ratio for the Faster R-CNN forks' scale_train: false (Caffe's 1/scale_
        in float32, as the layer computes it)."""
        if getattr(node.layer, "scale_train", True):
            return 1.0
        scale = np.float32(1.0) / (np.float32(1.0) - np.float32(node.layer.ratio))
        return float(np.float32(1.0) / scale)

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        k = self._test_scale(node)
        if k == 1.0:
            return b.identity(node.bottoms[0], node.tops[0])
        b.op("Mul", [node.bottoms[0], b.scalar(k)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        k = self._test_scale(node)
        return s.v(node.bottoms[0]) if k == 1.0 else f"{s.v(node.bottoms[0])} * {k!r}"


def _constant_onnx(b: OnnxBuilder, x: str, value: float, out: str) -> None:
    """A tensor of x's shape filled with value (x's values not read)."""
    shape = b.op("Shape", [x])
    b.op("Expand", [b.scalar(value), shape], out)


@register_export("Power")
class PowerExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        if layer.diff_scale == 0.0:
            return _constant_onnx(b, x, layer.value, node.tops[0])
        steps = []
        if layer.scale != 1.0:
            steps.append(("Mul", layer.scale))
        if layer.shift != 0.0:
            steps.append(("Add", layer.shift))
        if layer.power != 1.0:
            steps.append(("Pow", layer.power))
        if not steps:
            return b.identity(x, node.tops[0])
        for k, (op, value) in enumerate(steps):
            x = b.op(op, [x, b.scalar(value)], node.tops[0] if k == len(steps) - 1 else None)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        if layer.diff_scale == 0.0:
            return f"torch.full_like({x}, {layer.value!r})"
        if layer.scale != 1.0:
            x = f"{x} * {layer.scale!r}"
        if layer.shift != 0.0:
            x = f"{x} + {layer.shift!r}"
        if layer.power != 1.0:
            x = f"({x}).square()" if layer.power == 2.0 else f"({x}).pow({layer.power!r})"
        return x


@register_export("Exp")
class ExpExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        outer = layer.outer_scale != 1.0
        if layer.inner_scale != 1.0:
            x = b.op("Mul", [x, b.scalar(layer.inner_scale)])
        x = b.op("Exp", [x], None if outer else node.tops[0])
        if outer:
            b.op("Mul", [x, b.scalar(layer.outer_scale)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        y = f"torch.exp({x})" if layer.inner_scale == 1.0 else \
            f"torch.exp({x} * {layer.inner_scale!r})"
        return y if layer.outer_scale == 1.0 else f"{y} * {layer.outer_scale!r}"


@register_export("Log")
class LogExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        if layer.scale != 1.0:
            x = b.op("Mul", [x, b.scalar(layer.scale)])
        if layer.shift != 0.0:
            x = b.op("Add", [x, b.scalar(layer.shift)])
        last = layer.base_scale == 1.0
        x = b.op("Log", [x], node.tops[0] if last else None)
        if not last:
            b.op("Mul", [x, b.scalar(layer.base_scale)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        if layer.scale != 1.0:
            x = f"{x} * {layer.scale!r}"
        if layer.shift != 0.0:
            x = f"{x} + {layer.shift!r}"
        y = f"torch.log({x})"
        return y if layer.base_scale == 1.0 else f"{y} * {layer.base_scale!r}"


@register_export("Threshold")
class ThresholdExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        gt = b.op("Greater", [node.bottoms[0], b.scalar(node.layer.threshold)])
        b.op("Cast", [gt], node.tops[0], to=1)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = s.v(node.bottoms[0])
        return f"({x} > {node.layer.threshold!r}).to({x}.dtype)"


@register_export("Clip")
class ClipExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        if layer.min > layer.max:
            return _constant_onnx(b, x, layer.min, node.tops[0])
        b.op("Clip", [x, b.scalar(layer.min), b.scalar(layer.max)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        if layer.min > layer.max:
            return f"torch.full_like({x}, {layer.min!r})"
        return f"torch.clamp({x}, {layer.min!r}, {layer.max!r})"


@register_export("Swish")
class SwishExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x = node.bottoms[0]
        z = x if node.layer.beta == 1.0 else b.op("Mul", [x, b.scalar(node.layer.beta)])
        b.op("Mul", [x, b.op("Sigmoid", [z])], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = s.v(node.bottoms[0])
        if node.layer.beta == 1.0:
            return f"F.silu({x})"
        return f"{x} * torch.sigmoid({x} * {node.layer.beta!r})"


# ----------------------------------------------------------------------------------------------
# InnerProduct, Softmax
# ----------------------------------------------------------------------------------------------
@register_export("InnerProduct")
class InnerProductExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        lead = b.shape(x)[:layer.axis]
        x2 = b.reshape(x, [-1, layer.K])
        direct = len(lead) == 1
        out = node.tops[0] if direct else None
        if layer.bias_term or b.opset >= 11:
            ins = [x2, b.blob(node, 0)] + ([b.blob(node, 1)] if layer.bias_term else [])
            y = b.op("Gemm", ins, out, transB=0 if layer.transpose else 1)
        else:
            w = b.blob(node, 0) if layer.transpose else b.blob(node, 0, lambda a: a.T)
            y = b.op("MatMul", [x2, w], out)
        if not direct:
            b.reshape(y, b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        w = s.p(node, 0)
        bias = s.p(node, 1) if layer.bias_term else "None"
        x2 = f"{x}.reshape(-1, {layer.K})"
        if layer.transpose:
            y = f"{x2} @ {w}" + (f" + {bias}" if layer.bias_term else "")
        else:
            y = f"F.linear({x2}, {w}, {bias})"
        lead = s.shape(node.bottoms[0])[:layer.axis]
        if len(lead) == 1:
            return y
        return f"({y}).reshape({_tuple(s.target(node.tops[0]))})"


@register_export("Softmax")
class SoftmaxExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.op("Softmax", node.bottoms, node.tops[0], axis=int(node.layer.axis))

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"torch.softmax({s.v(node.bottoms[0])}, {node.layer.axis})"


# ----------------------------------------------------------------------------------------------
# Convolution, Deconvolution, Im2col
# ----------------------------------------------------------------------------------------------
@register_export("Convolution", "Deconvolution")
class ConvolutionExport(LayerExport):
    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        layer = node.layer
        if layer.spec.axis != 1:
            return (f"convolution_param.axis {layer.spec.axis}: only the channel axis 1 is "
                    "exported")
        if not 1 <= layer.num_spatial <= 3:
            return f"{layer.num_spatial} spatial axes: ONNX and torch convolve 1 to 3"
        return None

    def _extra(self, node: Node, shape: Sequence[int]):
        return node.layer._plan(tuple(shape)).extra

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, spec = node.layer, node.layer.spec
        w = b.blob(node, 0)
        ins_b = [b.blob(node, 1)] if layer.bias_term else []
        for x, top in zip(node.bottoms, node.tops):
            attrs = dict(strides=list(spec.stride), dilations=list(spec.dilation),
                         group=int(layer.group), kernel_shape=list(spec.kernel))
            if layer.transposed:
                b.op("ConvTranspose", [x, w] + ins_b, top, pads=list(spec.pad) * 2, **attrs)
                continue
            extra = self._extra(node, b.shape(x))
            pads = list(spec.pad) + [p + e for p, e in zip(spec.pad, extra)]
            b.op("Conv", [x, w] + ins_b, top, pads=pads, **attrs)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, spec = node.layer, node.layer.spec
        n = layer.num_spatial
        w = s.p(node, 0)
        bias = s.p(node, 1) if layer.bias_term else "None"
        outs = []
        for x in node.bottoms:
            xv = s.v(x)
            if layer.transposed:
                outs.append(f"F.conv_transpose{n}d({xv}, {w}, {bias}, {_tuple(spec.stride)}, "
                            f"{_tuple(spec.pad)}, 0, {layer.group}, {_tuple(spec.dilation)})")
                continue
            extra = self._extra(node, s.shape(x))
            if any(extra):
                pads = []
                for e in reversed(extra):
                    pads += [0, e]
                xv = f"F.pad({xv}, {_tuple(pads)})"
            outs.append(f"F.conv{n}d({xv}, {w}, {bias}, {_tuple(spec.stride)}, "
                        f"{_tuple(spec.pad)}, {_tuple(spec.dilation)}, {layer.group})")
        return outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"


def _im2col_weights(channels: int, kernel: Sequence[int]) -> np.ndarray:
    """One-hot filters: output channel c·Πk + j copies kernel offset j of channel c."""
    kk = math.prod(kernel)
    w = np.zeros((channels * kk, 1) + tuple(kernel), dtype=np.float32)
    for c in range(channels):
        for j in range(kk):
            w[(c * kk + j, 0) + np.unravel_index(j, kernel)] = 1.0
    return w


@register_export("Im2col")
class Im2colExport(LayerExport):
    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        if node.layer.spec.axis != 1 or node.layer.num_spatial != 2:
            return "only 2-D Im2col on the channel axis 1 is exported"
        return None

    def _parts(self, node: Node, shape: Sequence[int]):
        layer = node.layer
        spec = layer.spec
        extra = layer._plan(tuple(shape))[4]
        return spec, extra, _im2col_weights(shape[1], spec.kernel)

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x = node.bottoms[0]
        spec, extra, w = self._parts(node, b.shape(x))
        pads = list(spec.pad) + [p + e for p, e in zip(spec.pad, extra)]
        b.op("Conv", [x, b.const(w)], node.tops[0], pads=pads, strides=list(spec.stride),
             dilations=list(spec.dilation), group=int(b.shape(x)[1]),
             kernel_shape=list(spec.kernel))

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = node.bottoms[0]
        spec, extra, w = self._parts(node, s.shape(x))
        xv = s.v(x)
        if any(extra):
            xv = f"F.pad({xv}, (0, {extra[1]}, 0, {extra[0]}))"
        return (f"F.conv2d({xv}, {s.const(node, w, 'onehot')}, None, {_tuple(spec.stride)}, "
                f"{_tuple(spec.pad)}, {_tuple(spec.dilation)}, {s.shape(x)[1]})")


# ----------------------------------------------------------------------------------------------
# Pooling, SPP, LRN
# ----------------------------------------------------------------------------------------------
def _divisor(g: _PoolGeom) -> np.ndarray:
    sizes = []
    for n, k, s, p, o in zip(g.size, g.kernel, g.stride, g.pad, g.out):
        start = np.arange(o) * s - p
        sizes.append(np.minimum(start + k, n + p) - start)
    return (sizes[0][:, None] * sizes[1][None, :]).astype(np.float64)


def _empty(g: _PoolGeom) -> tuple[list[int], list[int]]:
    rows = [i for i in range(g.out[0]) if i * g.stride[0] - g.pad[0] >= g.size[0]]
    cols = [j for j in range(g.out[1]) if j * g.stride[1] - g.pad[1] >= g.size[1]]
    return rows, cols


def _pool_onnx(b: OnnxBuilder, x: str, method: int, g: _PoolGeom, out: str | None) -> str:
    """Caffe's pooling of x with geometry g as ONNX operators; returns the output name."""
    k, s, p = list(g.kernel), list(g.stride), list(g.pad)
    if method == _POOL.AVE and g.kernel == g.size and g.pad == (0, 0):
        return b.op("GlobalAveragePool", [x], out)
    after = [max(a, 0) for a in g.after]
    pads = p + after
    full = [(n + pp + a - kk) // ss + 1 for n, pp, a, kk, ss in zip(g.size, p, after, k, s)]
    crop = tuple(full) != tuple(g.out)
    rows, cols = _empty(g)
    fix = method == _POOL.MAX and (rows or cols)
    if method == _POOL.AVE:
        div = _divisor(g)
        rescale = not np.all(div == k[0] * k[1])
    elif method == _POOL.STOCHASTIC:
        rescale = False
    last = not crop and not fix and not (method == _POOL.AVE and rescale)
    y_out = out if last else None
    uneven = method != _POOL.MAX and pads[:2] != pads[2:]
    # onnxruntime wants pads below the kernel; converters (onnx2torch) refuse AveragePool with
    # uneven pads: an explicit Pad of zeros is the same window sums (count_include_pad)
    if uneven or any(pp >= kk for pp, kk in zip(pads, k + k)):
        fill = -np.inf if method == _POOL.MAX else 0.0
        x = b.op("Pad", [x, b.ints([0, 0] + pads[:2] + [0, 0] + pads[2:]), b.scalar(fill)])
        pads = [0, 0, 0, 0]
    if method == _POOL.MAX:
        y = b.op("MaxPool", [x], y_out, kernel_shape=k, strides=s, pads=pads)
    elif method == _POOL.AVE:
        y = b.op("AveragePool", [x], y_out, kernel_shape=k, strides=s, pads=pads,
                 count_include_pad=1)
    else:  # STOCHASTIC at TEST: Σv² / (FLT_MIN + Σv) over the window
        kk = float(k[0] * k[1])
        sq = b.op("AveragePool", [b.op("Mul", [x, x])], kernel_shape=k, strides=s, pads=pads,
                  count_include_pad=1)
        sm = b.op("AveragePool", [x], kernel_shape=k, strides=s, pads=pads, count_include_pad=1)
        den = b.op("Add", [b.mul_scalar(sm, kk), b.scalar(1.1754943508222875e-38)])
        y = b.op("Div", [b.mul_scalar(sq, kk), den], y_out)
    if crop:
        y = b.slice(y, [0, 0], list(g.out), [2, 3],
                    out if not fix and not (method == _POOL.AVE and rescale) else None)
    if method == _POOL.AVE and rescale:
        y = b.op("Mul", [y, b.const(k[0] * k[1] / div)], out if not fix else None)
    if fix:
        mask = np.zeros(g.out, dtype=bool)
        mask[rows, :] = True
        mask[:, cols] = True
        y = b.op("Where", [b.const(mask, np.bool_), b.scalar(-FLT_MAX), y], out)
    return y


def _pool_torch(s: SourceBuilder, x: str, method: int, g: _PoolGeom) -> str:
    """Caffe's pooling as a torch expression."""
    k, st, p = _tuple(g.kernel), _tuple(g.stride), _tuple(g.pad)
    if method == _POOL.AVE and g.kernel == g.size and g.pad == (0, 0):
        return f"{x}.mean((2, 3), keepdim=True)"
    rows, cols = _empty(g)
    if method == _POOL.MAX:
        if g.torch_ceil is not None and not (rows or cols):
            return f"F.max_pool2d({x}, {k}, {st}, {p}, ceil_mode={g.torch_ceil})"
        pad = (g.pad[1], g.after[1], g.pad[0], g.after[0])
        y = f"F.max_pool2d(F.pad({x}, {_tuple(pad)}, value=-math.inf), {k}, {st})"
        if rows or cols:
            y = f"{s.h('caffe_empty_windows')}({y}, {rows!r}, {cols!r}, {-FLT_MAX!r})"
        return y
    pad = (g.pad[1], g.after[1], g.pad[0], g.after[0])
    if method == _POOL.AVE:
        if g.torch_ceil is not None:
            return (f"F.avg_pool2d({x}, {k}, {st}, {p}, ceil_mode={g.torch_ceil}, "
                    "count_include_pad=True)")
        return (f"F.avg_pool2d(F.pad({x}, {_tuple(pad)}), {k}, {st}, divisor_override=1) / "
                f"{s.h('caffe_pool_divisor')}({_tuple(g.size)}, {k}, {st}, {p}, "
                f"{_tuple(g.out)}, {x})")
    xp = f"F.pad({x}, {_tuple((0, g.after[1], 0, g.after[0]))})"
    return (f"F.avg_pool2d({xp} * {xp}, {k}, {st}, divisor_override=1) / "
            f"(F.avg_pool2d({xp}, {k}, {st}, divisor_override=1) + 1.1754943508222875e-38)")


@register_export("Pooling")
class PoolingExport(LayerExport):
    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        layer = node.layer
        if layer.method == _POOL.STOCHASTIC and layer.phase == caffe_pb2.TRAIN:
            return ("STOCHASTIC pooling in the TRAIN phase samples at random; export the "
                    "TEST-phase net")
        return None

    def _geom(self, node: Node, shape: Sequence[int]):
        return node.layer._geom(tuple(shape))

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x = node.bottoms[0]
        g = self._geom(node, b.shape(x))
        if len(node.tops) > 1:
            return _max_pool_mask_onnx(b, x, g, node.tops)
        _pool_onnx(b, x, node.layer.method, g, node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = node.bottoms[0]
        g = self._geom(node, s.shape(x))
        if len(node.tops) > 1:
            rows, cols = _empty(g)
            return (f"{s.h('caffe_max_pool_mask')}({s.v(x)}, {_tuple(g.kernel)}, "
                    f"{_tuple(g.stride)}, {_tuple(g.pad)}, {_tuple(g.after)}, {rows!r}, "
                    f"{cols!r})")
        return _pool_torch(s, s.v(x), node.layer.method, g)


def _max_pool_mask_onnx(b: OnnxBuilder, x: str, g: _PoolGeom, tops: list[str]) -> None:
    """MAX pooling with Caffe's argmax mask top: the flat index h·W + w into the bottom's
    plane, −1 (and −FLT_MAX) where a window holds no image pixel. The indices stay int64
    (b.indices) for unpooling; the float mask Caffe's blob holds is written only where an
    output or another layer reads it."""
    k, s = list(g.kernel), list(g.stride)
    h, w = g.size
    wp = w + g.pad[1] + max(g.after[1], 0)
    pads = list(g.pad) + [max(a, 0) for a in g.after]
    explicit = any(pp >= kk for pp, kk in zip(pads, k + k))
    if explicit:  # indices then count in the padded plane
        x = b.op("Pad", [x, b.ints([0, 0] + pads[:2] + [0, 0] + pads[2:]),
                         b.scalar(-np.inf)])
        pads = [0, 0, 0, 0]
    full = [(n + pp + a - kk) // ss + 1 for n, pp, a, kk, ss in
            zip(g.size, g.pad, [max(a, 0) for a in g.after], k, s)]
    y, idx = b.op("MaxPool", [x], 2, kernel_shape=k, strides=s, pads=pads)

    def i64(v: int):
        return b.const(np.int64(v), np.int64)

    if explicit:
        hp = h + g.pad[0] + max(g.after[0], 0)
        plane = b.op("Mod", [idx, i64(hp * wp)])
        row = b.op("Sub", [b.op("Div", [plane, i64(wp)]), i64(g.pad[0])])
        col = b.op("Sub", [b.op("Mod", [plane, i64(wp)]), i64(g.pad[1])])
        idx = b.op("Add", [b.op("Mul", [row, i64(w)]), col])
    else:  # onnxruntime counts over the whole (unpadded) tensor
        idx = b.op("Mod", [idx, i64(h * w)])
    if tuple(full) != tuple(g.out):
        y = b.slice(y, [0, 0], list(g.out), [2, 3])
        idx = b.slice(idx, [0, 0], list(g.out), [2, 3])
    rows, cols = _empty(g)
    if rows or cols:
        hole = np.zeros(g.out, dtype=bool)
        hole[rows, :] = True
        hole[:, cols] = True
        y = b.op("Where", [b.const(hole, np.bool_), b.scalar(-FLT_MAX), y])
        idx = b.op("Where", [b.const(hole, np.bool_), i64(-1), idx])
    b.identity(y, tops[0])
    b.indices[tops[1]] = idx
    if tops[1] in b.graph.outputs or any(
            not _unpools(n, j) for n, j in b.graph.readers(tops[1])):
        b.op("Cast", [idx], tops[1], to=1)


def _unpools(node: Node, position: int) -> bool:
    """Whether the node reads a MAX pooling mask as unpooling indices (bottom 1)."""
    return node.type in ("Upsample", "MaxUnPool") and position == 1


@register_export("SPP")
class SPPExport(LayerExport):
    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        if node.layer.method == _POOL.STOCHASTIC and node.layer.phase == caffe_pb2.TRAIN:
            return "STOCHASTIC pooling in the TRAIN phase samples at random"
        return None

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x = node.bottoms[0]
        levels = node.layer._geoms(tuple(b.shape(x)))
        if len(levels) == 1:
            _pool_onnx(b, x, node.layer.method, levels[0], node.tops[0])
            return
        n, c = b.shape(x)[:2]
        flat = []
        for g in levels:
            y = _pool_onnx(b, x, node.layer.method, g, None)
            flat.append(b.reshape(y, [-1 if b.graph.varies(x, 0) else n, c * g.out[0] * g.out[1]]))
        b.op("Concat", flat, node.tops[0], axis=1)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = node.bottoms[0]
        levels = node.layer._geoms(tuple(s.shape(x)))
        pools = [_pool_torch(s, s.v(x), node.layer.method, g) for g in levels]
        if len(pools) == 1:
            return pools[0]
        return "torch.cat((" + ", ".join(f"({p}).flatten(1)" for p in pools) + "), 1)"


@register_export("LRN")
class LRNExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        if layer.region == _LRN.ACROSS_CHANNELS:
            b.op("LRN", [x], node.tops[0], size=int(layer.size), alpha=float(layer.alpha),
                 beta=float(layer.beta), bias=float(layer.k))
            return
        sq = b.op("Mul", [x, x])
        p = layer.pre_pad
        avg = b.op("AveragePool", [sq], kernel_shape=[layer.size] * 2, strides=[1, 1],
                   pads=[p, p, p, p], count_include_pad=1)
        base = b.op("Add", [b.mul_scalar(avg, layer.alpha), b.scalar(1.0)])
        b.op("Mul", [x, b.op("Pow", [base, b.scalar(-layer.beta)])], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        if layer.region == _LRN.ACROSS_CHANNELS:
            return (f"F.local_response_norm({x}, {layer.size}, {layer.alpha!r}, "
                    f"{layer.beta!r}, {layer.k!r})")
        return f"{s.h('caffe_lrn_within')}({x}, {layer.size}, {layer.alpha!r}, {layer.beta!r})"


# ----------------------------------------------------------------------------------------------
# BatchNorm, Scale, Bias, MVN
# ----------------------------------------------------------------------------------------------
def _bn_stats(layer: BatchNormLayer | BatchNormKyleLayer) -> tuple[np.ndarray, np.ndarray]:
    """mean and variance exactly as the layer computes them (float32)."""
    mean_sum, var_sum, factor = (p.detach().cpu().float() for p in layer.blob_params[:3])
    inv = torch.where(factor == 0, torch.zeros_like(factor), 1.0 / factor)
    return (mean_sum * inv).numpy(), (var_sum * inv).numpy()


@register_export("BatchNorm")
class BatchNormExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        shape = b.shape(x)
        if not layer.use_global_stats:
            axes = [0] + list(range(2, len(shape)))
            mean = b.reduce("ReduceMean", x, axes, True)
            centred = b.op("Sub", [x, mean])
            var = b.reduce("ReduceMean", b.op("Mul", [centred, centred]), axes, True)
            std = b.op("Sqrt", [b.op("Add", [var, b.scalar(layer.eps)])])
            b.op("Div", [centred, std], node.tops[0])
            return
        mean, var = _bn_stats(layer)
        c = layer.channels
        one = len(shape) == 1
        xin = b.reshape(x, [-1, 1]) if one else x
        y = b.op("BatchNormalization", [xin, b.const(np.ones(c)), b.const(np.zeros(c)),
                                        b.const(mean), b.const(var)],
                 None if one else node.tops[0], epsilon=float(layer.eps))
        if one:
            b.reshape(y, [-1], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        if not layer.use_global_stats:
            return f"{s.h('caffe_batch_norm_batch')}({x}, {layer.eps!r})"
        # mean = mean_sum / factor, var = var_sum / factor (0 when factor is 0)
        inv = f"torch.nan_to_num(1.0 / {s.p(node, 2)}, posinf=0.0)"
        one = len(s.shape(node.bottoms[0])) == 1
        xin = f"{x}.reshape(-1, 1)" if one else x
        y = (f"F.batch_norm({xin}, {s.p(node, 0)} * {inv}, {s.p(node, 1)} * {inv}, None, None, "
             f"False, 0.0, {layer.eps!r})")
        return f"({y}).reshape(-1)" if one else y


def _span_shape(b_or_s: OnnxBuilder | SourceBuilder, node: Node,
                span: Sequence[int]) -> tuple[int, ...]:
    """span reshaped to broadcast over bottom 0 at axes [axis, end)."""
    nd = len(b_or_s.shape(node.bottoms[0]))
    return tuple(span) + (1,) * (nd - node.layer.end)


class _BroadcastExport(LayerExport):
    def _operand(self, b: OnnxBuilder, node: Node, k_blob: int, k_bottom: int | None) -> str:
        layer = node.layer
        if layer._own:
            span = b.shape(node.bottoms[0])[layer.axis:layer.end]
            return b.blob(node, k_blob, lambda a: a.reshape(_span_shape(b, node, span)))
        other = node.bottoms[k_bottom]
        tgt = b.target(other) + [1] * (len(b.shape(node.bottoms[0])) - layer.end)
        return b.reshape(other, tgt)

    def _operand_torch(self, s: SourceBuilder, node: Node, k_blob: int,
                       k_bottom: int | None) -> str:
        layer = node.layer
        if layer._own:
            span = s.shape(node.bottoms[0])[layer.axis:layer.end]
            return f"{s.p(node, k_blob)}.reshape({_tuple(_span_shape(s, node, span))})"
        other = node.bottoms[k_bottom]
        tgt = list(s.target(other)) + [1] * (len(s.shape(node.bottoms[0])) - layer.end)
        return f"{s.v(other)}.reshape({_tuple(tgt)})"


@register_export("Scale")
class ScaleExport(_BroadcastExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        sc = self._operand(b, node, 0, 1)
        y = b.op("Mul", [node.bottoms[0], sc], None if layer.bias_term else node.tops[0])
        if layer.bias_term:
            bias = self._operand_bias(b, node)
            b.op("Add", [y, bias], node.tops[0])

    def _operand_bias(self, b: OnnxBuilder, node: Node):
        layer = node.layer
        span = b.shape(node.bottoms[0])[layer.axis:layer.end]
        return b.blob(node, 1 if layer._own else 0,
                      lambda a: a.reshape(_span_shape(b, node, span)))

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        y = f"{s.v(node.bottoms[0])} * {self._operand_torch(s, node, 0, 1)}"
        if layer.bias_term:
            span = s.shape(node.bottoms[0])[layer.axis:layer.end]
            y += (f" + {s.p(node, 1 if layer._own else 0)}"
                  f".reshape({_tuple(_span_shape(s, node, span))})")
        return y


@register_export("Bias")
class BiasExport(_BroadcastExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.op("Add", [node.bottoms[0], self._operand(b, node, 0, 1)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"{s.v(node.bottoms[0])} + {self._operand_torch(s, node, 0, 1)}"


@register_export("MVN")
class MVNExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        shape = b.shape(x)
        per = count(shape[1:]) if layer.across_channels else count(shape[2:])
        rows = b.reshape(x, [-1, per])
        mean = b.reduce("ReduceMean", rows, [1], True)
        centred = b.op("Sub", [rows, mean])
        if layer.normalize_variance:
            var = b.reduce("ReduceMean", b.op("Mul", [centred, centred]), [1], True)
            std = b.op("Add", [b.op("Sqrt", [var]), b.scalar(layer.eps)])
            centred = b.op("Div", [centred, std])
        b.reshape(centred, b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        return (f"{s.h('caffe_mvn')}({s.v(node.bottoms[0])}, {layer.across_channels}, "
                f"{layer.normalize_variance}, {layer.eps!r})")


# ----------------------------------------------------------------------------------------------
# Eltwise, Concat, Slice, Flatten, Reshape, Crop, Tile
# ----------------------------------------------------------------------------------------------
@register_export("Eltwise")
class EltwiseExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, xs = node.layer, node.bottoms
        if layer.op == _ELT.MAX:
            b.op("Max", xs, node.tops[0])
            return
        if layer.op == _ELT.PROD:
            y = xs[0]
            for k, x in enumerate(xs[1:], 1):
                y = b.op("Mul", [y, x], node.tops[0] if k == len(xs) - 1 else None)
            return
        c = layer.coeffs
        y = xs[0] if c[0] == 1.0 else b.mul_scalar(xs[0], c[0])
        for k, (x, ci) in enumerate(zip(xs[1:], c[1:]), 1):
            term = x if ci == 1.0 else b.mul_scalar(x, ci)
            y = b.op("Add", [y, term], node.tops[0] if k == len(xs) - 1 else None)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        xs = [s.v(x) for x in node.bottoms]
        if layer.op == _ELT.MAX:
            y = xs[0]
            for x in xs[1:]:
                y = f"torch.maximum({y}, {x})"
            return y
        if layer.op == _ELT.PROD:
            return " * ".join(xs)
        terms = [x if c == 1.0 else f"{x} * {c!r}" for x, c in zip(xs, layer.coeffs)]
        return " + ".join(terms)


@register_export("Concat")
class ConcatExport(LayerExport):
    def _axis(self, node: Node, shapes: list[tuple[int, ...]]):
        node.layer.reshape(shapes)
        return node.layer._plan

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        if len(node.bottoms) == 1:
            return b.identity(node.bottoms[0], node.tops[0])
        axis = self._axis(node, [b.shape(x) for x in node.bottoms])
        b.op("Concat", node.bottoms, node.tops[0], axis=int(axis))

    def torch(self, s: SourceBuilder, node: Node) -> str:
        if len(node.bottoms) == 1:
            return s.v(node.bottoms[0])
        axis = self._axis(node, [s.shape(x) for x in node.bottoms])
        return "torch.cat((" + ", ".join(s.v(x) for x in node.bottoms) + f"), {axis})"


@register_export("Slice")
class SliceExport(LayerExport):
    def _plan(self, node: Node, graph: ExportGraph):
        node.layer.reshape([graph.shape(node.bottoms[0])])
        return node.layer._plan

    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        axis, _ = self._plan(node, graph)
        if graph.varies(node.bottoms[0], axis):
            return f"it slices axis {axis}, which changes with the batch (-dynamic_batch)"
        return None

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        axis, sizes = self._plan(node, b.graph)
        if len(sizes) == 1:
            return b.identity(node.bottoms[0], node.tops[0])
        b.op("Split", [node.bottoms[0], b.ints(sizes)], list(node.tops), axis=int(axis))

    def torch(self, s: SourceBuilder, node: Node) -> str:
        axis, sizes = self._plan(node, s.graph)
        if len(sizes) == 1:
            return s.v(node.bottoms[0])
        return f"torch.split({s.v(node.bottoms[0])}, {list(sizes)!r}, {axis})"


@register_export("Flatten")
class FlattenExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.reshape(node.bottoms[0], b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        node.layer.reshape([s.shape(node.bottoms[0])])
        start, end = node.layer._plan
        return f"torch.flatten({s.v(node.bottoms[0])}, {start}, {end})"


@register_export("Reshape")
class ReshapeExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.reshape(node.bottoms[0], b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"{s.v(node.bottoms[0])}.reshape({_tuple(s.target(node.tops[0]))})"


@register_export("Crop")
class CropExport(LayerExport):
    def _index(self, node: Node, graph: ExportGraph):
        node.layer.reshape([graph.shape(x) for x in node.bottoms])
        return node.layer._plan

    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        for i, sl in enumerate(self._index(node, graph)):
            full = graph.shape(node.bottoms[0])[i]
            if graph.varies(node.bottoms[0], i) and (sl.start, sl.stop) != (0, full):
                return f"it crops axis {i}, which changes with the batch (-dynamic_batch)"
        return None

    def _cropped(self, node: Node, graph: ExportGraph):
        shape = graph.shape(node.bottoms[0])
        return [(i, sl) for i, sl in enumerate(self._index(node, graph))
                if (sl.start, sl.stop) != (0, shape[i])]

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        cut = self._cropped(node, b.graph)
        if not cut:
            return b.identity(node.bottoms[0], node.tops[0])
        b.slice(node.bottoms[0], [sl.start for _, sl in cut], [sl.stop for _, sl in cut],
                [i for i, _ in cut], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        cut = dict(self._cropped(node, s.graph))
        if not cut:
            return s.v(node.bottoms[0])
        last = max(cut)
        idx = [f"{cut[i].start}:{cut[i].stop}" if i in cut else ":" for i in range(last + 1)]
        return f"{s.v(node.bottoms[0])}[{', '.join(idx)}]"


@register_export("Tile")
class TileExport(LayerExport):
    def _reps(self, node: Node, graph: ExportGraph):
        node.layer.reshape([graph.shape(node.bottoms[0])])
        return node.layer._plan

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.op("Tile", [node.bottoms[0], b.ints(self._reps(node, b.graph))], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"{s.v(node.bottoms[0])}.repeat({_tuple(self._reps(node, s.graph))})"


# ----------------------------------------------------------------------------------------------
# Reduction, ArgMax
# ----------------------------------------------------------------------------------------------
@register_export("Reduction")
class ReductionExport(LayerExport):
    def _parts(self, node: Node, graph: ExportGraph):
        node.layer.reshape([graph.shape(node.bottoms[0])])
        lead, dim = node.layer._plan
        coeff = node.layer.coeff
        if node.layer.op == _RED.MEAN:
            coeff = coeff / dim if dim else math.nan
        # lead axes as the top has them (the batch's one as -1); no lead axes: every value
        rows = list(graph.target_shape(node.tops[0], node)) + [dim] if lead else [-1]
        return lead, dim, coeff, rows

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        lead, dim, coeff, rows = self._parts(node, b.graph)
        x = b.reshape(node.bottoms[0], rows)
        op = node.layer.op
        last = coeff == 1.0
        out = node.tops[0] if last else None
        axis = len(rows) - 1
        if op == _RED.ASUM:
            y = b.reduce("ReduceSum", b.op("Abs", [x]), [axis], False, out)
        elif op == _RED.SUMSQ:
            y = b.reduce("ReduceSumSquare", x, [axis], False, out)
        else:
            y = b.reduce("ReduceSum", x, [axis], False, out)
        if not last:
            b.op("Mul", [y, b.scalar(coeff)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        lead, dim, coeff, rows = self._parts(node, s.graph)
        x = f"{s.v(node.bottoms[0])}.reshape({_tuple(rows)})"
        op = node.layer.op
        if op == _RED.ASUM:
            y = f"{x}.abs().sum(-1)"
        elif op == _RED.SUMSQ:
            y = f"{x}.square().sum(-1)"
        else:
            y = f"{x}.sum(-1)"
        return y if coeff == 1.0 else f"{y} * {coeff!r}"


@register_export("ArgMax")
class ArgMaxExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        shape = b.shape(x)
        if layer.has_axis:
            data, d = x, layer.axis
        else:
            data, d = b.reshape(x, [-1, count(shape[1:])]), 1
        size = (shape[d] if layer.has_axis else count(shape[1:]))
        final = layer.has_axis and (layer.top_k == 1 and not layer.out_max_val)
        if layer.top_k == 1:
            idx = b.op("ArgMax", [data], axis=d, keepdims=1, select_last_index=1)
            vals = b.reduce("ReduceMax", data, [d], True) if layer.out_max_val else None
        else:
            rev = b.slice(data, [-1], [-(2 ** 62)], [d], steps=[-1])
            vals, ridx = b.op("TopK", [rev, b.ints([layer.top_k])], 2, axis=d, largest=1,
                              sorted=1)
            idx = b.op("Sub", [b.const(np.int64(size - 1), np.int64), ridx])
        idx = b.op("Cast", [idx], node.tops[0] if final else None, to=1)
        if layer.has_axis:
            if not final:
                b.identity(vals if layer.out_max_val else idx, node.tops[0])
            return
        both = b.op("Concat", [b.reshape(idx, [-1, 1, layer.top_k]),
                               b.reshape(vals, [-1, 1, layer.top_k])], axis=1) \
            if layer.out_max_val else idx
        b.reshape(both, b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        axis = layer.axis if layer.has_axis else None
        return (f"{s.h('caffe_argmax')}({s.v(node.bottoms[0])}, {axis}, {layer.top_k}, "
                f"{layer.out_max_val})")


# ----------------------------------------------------------------------------------------------
# Embed, BatchReindex, Parameter, Silence, DummyData
# ----------------------------------------------------------------------------------------------
@register_export("Embed")
class EmbedExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        idx = b.op("Cast", [node.bottoms[0]], to=7)
        bias = node.layer.bias_term
        y = b.op("Gather", [b.blob(node, 0), idx], None if bias else node.tops[0], axis=0)
        if bias:
            b.op("Add", [y, b.blob(node, 1)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        y = f"F.embedding({s.v(node.bottoms[0])}.long(), {s.p(node, 0)})"
        return y + (f" + {s.p(node, 1)}" if node.layer.bias_term else "")


@register_export("BatchReindex")
class BatchReindexExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        idx = b.op("Cast", [node.bottoms[1]], to=7)
        b.op("Gather", [node.bottoms[0], idx], node.tops[0], axis=0)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"{s.v(node.bottoms[0])}.index_select(0, {s.v(node.bottoms[1])}.long())"


@register_export("Parameter")
class ParameterExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.identity(b.blob(node, 0), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return s.p(node, 0)


@register_export("Silence")
class SilenceExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        return None

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return ""


@register_export("DummyData")
class DummyDataExport(LayerExport):
    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        random = [i for i, fp in enumerate(node.layer.fillers) if fp.type != "constant"]
        if random:
            return (f"top(s) {random} are refilled with random values ("
                    f"{node.layer.fillers[random[0]].type} filler) at every pass; only "
                    "constant fillers are exported")
        return None

    def _value(self, node: Node, i: int):
        return getattr(node.layer, f"_top{i}").detach().cpu().float().numpy()

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        for i, top in enumerate(node.tops):
            b.identity(b.const(self._value(node, i)), top)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        outs = [s.const(node, self._value(node, i), f"top{i}") for i in range(len(node.tops))]
        return outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"


# ----------------------------------------------------------------------------------------------
# RNN, LSTM, LSTMUnit
# ----------------------------------------------------------------------------------------------
class _RecurrentExport(LayerExport):
    fixed_batch = ("RNN/LSTM are unrolled over the fixed number of timesteps T on axis 0 of "
                   "their input")

    def _weights(self, node: Node):
        names = list(range(node.layer.num_blobs))
        static = names.pop(2) if node.layer.static_input else None
        return names, static

    def _initial(self, b: OnnxBuilder, node: Node, n: int, hdim: int) -> list[str]:
        layer = node.layer
        first = 2 + layer.static_input
        if layer.expose_hidden:
            return [b.reshape(v, [n, hdim]) for v in node.bottoms[first:]]
        zero = b.const(np.zeros((n, hdim), np.float32))
        return [zero] * len(layer.state_names)

    def _project(self, b: OnnxBuilder, node: Node, w: int, bias: int,
                 static: int | None) -> tuple[str, int, int]:
        layer, x = node.layer, node.bottoms[0]
        t, n = b.shape(x)[:2]
        proj = b.op("Gemm", [b.reshape(x, [t * n, layer.D]), b.blob(node, w),
                             b.blob(node, bias)], transB=1)
        proj = b.reshape(proj, [t, n, -1])
        if static is not None:
            xs = b.reshape(node.bottoms[2], [n, layer.Ds])
            sp = b.op("MatMul", [xs, b.blob(node, static, lambda a: a.T)])
            proj = b.op("Add", [proj, sp])
        return proj, t, n

    def _cont(self, b: OnnxBuilder, node: Node, t: int, n: int) -> str:
        return b.reshape(node.bottoms[1], [t, n, 1])

    def _step(self, b: OnnxBuilder, seq: str, t: int) -> str:
        return b.op("Gather", [seq, b.const(np.int64(t), np.int64)], axis=0)

    def _stack(self, b: OnnxBuilder, hs: list[str], out: str | None = None) -> str:
        return b.op("Concat", [b.op("Unsqueeze", [h, b.ints([0])]) for h in hs], out, axis=0)

    def _torch_extra(self, s: SourceBuilder, node: Node) -> tuple[str, str]:
        layer = node.layer
        if layer.static_input:
            return f", {s.v(node.bottoms[2])}", f", {s.p(node, 2)}"
        return "", ""


@register_export("RNN")
class RNNExport(_RecurrentExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        (w_xh, b_h, w_hh, w_ho, b_o), static = self._weights(node)
        proj, t, n = self._project(b, node, w_xh, b_h, static)
        cont = self._cont(b, node, t, n)
        (h,) = self._initial(b, node, n, layer.H)
        whh = b.blob(node, w_hh, lambda a: a.T)
        hs = []
        for step in range(t):
            masked = b.op("Mul", [h, self._step(b, cont, step)])
            pre = b.op("Add", [self._step(b, proj, step), b.op("MatMul", [masked, whh])])
            h = b.op("Tanh", [pre])
            hs.append(h)
        seq = self._stack(b, hs)
        o = b.op("Add", [b.op("MatMul", [seq, b.blob(node, w_ho, lambda a: a.T)]),
                         b.blob(node, b_o)])
        b.op("Tanh", [o], node.tops[0])
        if layer.expose_hidden:
            b.reshape(h, [1, n, layer.H], node.tops[1])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        (w_xh, b_h, w_hh, w_ho, b_o), static = self._weights(node)
        n = s.shape(node.bottoms[0])[1]
        x, cont = s.v(node.bottoms[0]), s.v(node.bottoms[1])
        if layer.expose_hidden:
            h0 = f"{s.v(node.bottoms[2 + layer.static_input])}.reshape({n}, {layer.H})"
        else:
            h0 = f"{x}.new_zeros({n}, {layer.H})"
        xs, ws = self._torch_extra(s, node)
        call = (f"{s.h('caffe_rnn')}({x}, {cont}, {s.p(node, w_xh)}, {s.p(node, b_h)}, "
                f"{s.p(node, w_hh)}, {s.p(node, w_ho)}, {s.p(node, b_o)}, {h0}{xs}{ws})")
        if layer.expose_hidden:
            return f"(lambda o, h: (o, h.unsqueeze(0)))(*{call})"
        return f"{call}[0]"


@register_export("LSTM")
class LSTMExport(_RecurrentExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        (w_xc, b_c, w_hc), static = self._weights(node)
        proj, t, n = self._project(b, node, w_xc, b_c, static)
        cont = self._cont(b, node, t, n)
        h, c = self._initial(b, node, n, layer.H)
        whc = b.blob(node, w_hc, lambda a: a.T)
        hs = []
        for step in range(t):
            ct = self._step(b, cont, step)
            gates = b.op("Add", [self._step(b, proj, step),
                                 b.op("MatMul", [b.op("Mul", [h, ct]), whc])])
            c, h = _lstm_step_onnx(b, c, gates, ct, layer.H)
            hs.append(h)
        self._stack(b, hs, node.tops[0])
        if layer.expose_hidden:
            b.reshape(h, [1, n, layer.H], node.tops[1])
            b.reshape(c, [1, n, layer.H], node.tops[2])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        (w_xc, b_c, w_hc), static = self._weights(node)
        n = s.shape(node.bottoms[0])[1]
        x, cont = s.v(node.bottoms[0]), s.v(node.bottoms[1])
        if layer.expose_hidden:
            first = 2 + layer.static_input
            h0 = f"{s.v(node.bottoms[first])}.reshape({n}, {layer.H})"
            c0 = f"{s.v(node.bottoms[first + 1])}.reshape({n}, {layer.H})"
        else:
            h0 = c0 = f"{x}.new_zeros({n}, {layer.H})"
        xs, ws = self._torch_extra(s, node)
        call = (f"{s.h('caffe_lstm')}({x}, {cont}, {s.p(node, w_xc)}, {s.p(node, b_c)}, "
                f"{s.p(node, w_hc)}, {h0}, {c0}{xs}{ws})")
        if layer.expose_hidden:
            return f"(lambda o, h, c: (o, h.unsqueeze(0), c.unsqueeze(0)))(*{call})"
        return f"{call}[0]"


def _lstm_step_onnx(b: OnnxBuilder, c_prev: str, gates: str, cont: str, hdim: int,
                    outs: tuple[str | None, str | None] = (None, None)) -> tuple[str, str]:
    sig = b.op("Sigmoid", [b.slice(gates, [0], [3 * hdim], [1])])
    i, f, o = b.op("Split", [sig, b.ints([hdim] * 3)], 3, axis=1)
    g = b.op("Tanh", [b.slice(gates, [3 * hdim], [4 * hdim], [1])])
    c = b.op("Add", [b.op("Mul", [b.op("Mul", [f, cont]), c_prev]), b.op("Mul", [i, g])],
             outs[0])
    h = b.op("Mul", [o, b.op("Tanh", [c])], outs[1])
    return c, h


@register_export("LSTMUnit")
class LSTMUnitExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        c_prev, x, cont = node.bottoms
        _, n, hdim = b.shape(c_prev)
        c, h = _lstm_step_onnx(b, b.reshape(c_prev, [n, hdim]), b.reshape(x, [n, 4 * hdim]),
                               b.reshape(cont, [n, 1]), hdim)
        b.reshape(c, [1, n, hdim], node.tops[0])
        b.reshape(h, [1, n, hdim], node.tops[1])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        c_prev, x, cont = (s.v(v) for v in node.bottoms)
        _, n, hdim = s.shape(node.bottoms[0])
        call = (f"{s.h('caffe_lstm_step')}({c_prev}.reshape({n}, {hdim}), "
                f"{x}.reshape({n}, {4 * hdim}), {cont}.reshape({n}, 1), {hdim})")
        return f"(lambda c, h: (c.unsqueeze(0), h.unsqueeze(0)))(*{call})"

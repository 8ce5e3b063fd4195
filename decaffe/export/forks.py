"""The exports of the forks' deploy layers (SSD, segmentation, mobile), one LayerExport per
type as for BVLC's (decaffe.export.layers); a type exists only when its fork's layer module
is part of decaffe, and the exports read only what those layers compute from their
parameters and shapes:

- PriorBox: its top depends on shapes only, so it is computed once (by the decaffe layer)
  and exported as a constant;
- Permute: Transpose; Normalize: L2 norm over channels (or the whole item) and the scale;
- Interp: ONNX Resize (bilinear, aligned corners) when it has no pad_beg/pad_end, else the
  layer's own interpolation matrices; Resize/BilinearInterpolate: those matrices;
- Upsample (one bottom): nearest Resize with integer scales; PixelShuffle: DepthToSpace;
- ConvolutionDepthwise/DepthwiseConvolution: Convolution; ReLU6, HardSwish, HardSigmoid,
  ShuffleChannel, Axpy: elementwise and reshape operators;
- DetectionOutput, and Upsample/MaxUnPool with a mask, are refused with the way out (-end).
"""

from __future__ import annotations

import numpy as np
import torch

from .graph import LayerExport, count, refuse_types, register_export
from .layers import ConvolutionExport, _tuple

register_export("ConvolutionDepthwise", "DepthwiseConvolution")(ConvolutionExport)

refuse_types("DetectionOutput decodes boxes and keeps a data-dependent number of detections "
             "per image (per-class NMS, keep_top_k); export up to its inputs with -end (the "
             "layer before it, e.g. -end mbox_priorbox, gives mbox_loc, mbox_conf_flatten and "
             "mbox_priorbox as outputs) and decode outside the graph", "DetectionOutput")
refuse_types("MaxUnPool scatters values to the positions of a MAX pooling's argmax mask, "
             "which is not exported; stop before it with -end", "MaxUnPool")


@register_export("PriorBox")
class PriorBoxExport(LayerExport):
    """A constant: the priors depend on the feature map's and the image's shapes only."""

    def _value(self, node, graph) -> np.ndarray:
        bottoms = [torch.zeros(graph.shape(v)) for v in node.bottoms]
        with torch.no_grad():
            out = node.layer(*bottoms)
        return out.detach().cpu().float().numpy()

    def refuse(self, node, graph):
        if any(graph.varies(v, a) for v in node.bottoms for a in range(1, len(graph.shape(v)))):
            return "its priors depend on spatial sizes that change with the batch"
        return None

    def onnx(self, b, node):
        b.identity(b.const(self._value(node, b.graph), hint="priors"), node.tops[0])

    def torch(self, s, node):
        return s.const(node, self._value(node, s.graph), "priors")


@register_export("Permute")
class PermuteExport(LayerExport):
    def onnx(self, b, node):
        b.op("Transpose", node.bottoms, node.tops[0], perm=list(node.layer.orders))

    def torch(self, s, node):
        return f"{s.v(node.bottoms[0])}.permute{_tuple(node.layer.orders)}"


@register_export("Normalize")
class NormalizeExport(LayerExport):
    def onnx(self, b, node):
        layer, x = node.layer, node.bottoms[0]
        c = b.shape(x)[1]
        x3 = b.reshape(x, [0, c, -1])
        axes = [1, 2] if layer.across_spatial else [1]
        sq = b.reduce("ReduceSumSquare", x3, axes, True)
        norm = b.op("Sqrt", [b.op("Add", [sq, b.scalar(layer.eps)])])
        shape = (1, 1, 1) if layer.channel_shared else (1, c, 1)
        y = b.op("Mul", [b.op("Div", [x3, norm]), b.blob(node, 0, lambda a: a.reshape(shape))])
        b.reshape(y, b.target(node.tops[0]), node.tops[0])

    def torch(self, s, node):
        layer = node.layer
        return (f"{s.h('caffe_normalize')}({s.v(node.bottoms[0])}, {s.p(node, 0)}, "
                f"{layer.across_spatial}, {layer.eps!r})")


def _separable_matrices(node, in_shape, out_shape):
    hw = (in_shape[2], in_shape[3], out_shape[2], out_shape[3])
    try:
        ah, aw = node.layer._matrices(hw)
    except TypeError:
        ah, aw = node.layer._matrices(hw[:2])
    return np.asarray(ah, np.float32), np.asarray(aw, np.float32)


@register_export("Interp", "Resize", "BilinearInterpolate")
class SeparableResizeExport(LayerExport):
    """top = A_h · x · A_wᵀ over the last two axes (the layer's own matrices), or ONNX Resize
    for a plain Interp (aligned corners, no padding)."""

    def _plain_interp(self, node, graph) -> bool:
        layer = node.layer
        out = graph.shape(node.tops[0])
        return (node.type == "Interp" and not getattr(layer, "pad_beg", 0)
                and not getattr(layer, "pad_end", 0) and out[2] > 1 and out[3] > 1)

    def onnx(self, b, node):
        x = node.bottoms[0]
        out = b.shape(node.tops[0])
        if self._plain_interp(node, b.graph):
            sizes = b.const(np.asarray(out, np.int64), np.int64)
            sizes = b.op("Concat", [b.op("Slice", [b.op("Shape", [x]), b.ints([0]),
                                                   b.ints([2])]),
                                    b.op("Slice", [sizes, b.ints([2]), b.ints([4])])], axis=0)
            b.op("Resize", [x, "", "", sizes], node.tops[0], mode="linear",
                 coordinate_transformation_mode="align_corners")
            return
        ah, aw = _separable_matrices(node, b.shape(x), out)
        y = b.op("MatMul", [b.const(ah), x])
        b.op("MatMul", [y, b.const(aw.T)], node.tops[0])

    def torch(self, s, node):
        x = node.bottoms[0]
        out = s.shape(node.tops[0])
        if self._plain_interp(node, s.graph):
            return (f"F.interpolate({s.v(x)}, size={_tuple(out[2:])}, mode='bilinear', "
                    "align_corners=True)")
        ah, aw = _separable_matrices(node, s.shape(x), out)
        return (f"torch.matmul(torch.matmul({s.const(node, ah, 'rows')}, {s.v(x)}), "
                f"{s.const(node, aw.T, 'cols')})")


@register_export("Upsample")
class UpsampleExport(LayerExport):
    def refuse(self, node, graph):
        if getattr(node.layer, "with_mask", False):
            return ("Upsample with a mask (SegNet unpooling) needs a MAX pooling's argmax "
                    "mask, which is not exported; stop before it with -end")
        return None

    def _scales(self, node, nd):
        k = 2 if node.layer.dims_num == 4 else 1
        return [1] * (nd - k) + [node.layer.scale] * k

    def onnx(self, b, node):
        x = node.bottoms[0]
        scales = self._scales(node, len(b.shape(x)))
        b.op("Resize", [x, "", b.const(np.asarray(scales, np.float32))], node.tops[0],
             mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    def torch(self, s, node):
        x = s.v(node.bottoms[0])
        y = f"{x}.repeat_interleave({node.layer.scale}, dim=-1)"
        if node.layer.dims_num == 4:
            y = f"{y}.repeat_interleave({node.layer.scale}, dim=-2)"
        return y


@register_export("PixelShuffle")
class PixelShuffleExport(LayerExport):
    def onnx(self, b, node):
        b.op("DepthToSpace", node.bottoms, node.tops[0], blocksize=int(node.layer.r), mode="CRD")

    def torch(self, s, node):
        return f"F.pixel_shuffle({s.v(node.bottoms[0])}, {node.layer.r})"


@register_export("ReLU6")
class ReLU6Export(LayerExport):
    def onnx(self, b, node):
        layer, x = node.layer, node.bottoms[0]
        lin = b.op("LeakyRelu", [x], alpha=layer.slope) if layer.slope else b.op("Relu", [x])
        b.op("Min", [lin, b.scalar(layer.threshold)], node.tops[0])

    def torch(self, s, node):
        layer, x = node.layer, s.v(node.bottoms[0])
        lin = f"F.leaky_relu({x}, {layer.slope!r})" if layer.slope else f"F.relu({x})"
        return f"torch.clamp({lin}, max={layer.threshold!r})"


@register_export("HardSwish")
class HardSwishExport(LayerExport):
    def onnx(self, b, node):
        x = node.bottoms[0]
        gate = b.op("Clip", [b.op("Add", [x, b.scalar(3.0)]), b.scalar(0.0), b.scalar(6.0)])
        b.op("Div", [b.op("Mul", [x, gate]), b.scalar(6.0)], node.tops[0])

    def torch(self, s, node):
        x = s.v(node.bottoms[0])
        return f"{x} * torch.clamp({x} + 3.0, 0.0, 6.0) / 6.0"


@register_export("HardSigmoid")
class HardSigmoidExport(LayerExport):
    def onnx(self, b, node):
        layer = node.layer
        lin = b.op("Add", [b.mul_scalar(node.bottoms[0], layer.alpha), b.scalar(layer.beta)])
        b.op("Clip", [lin, b.scalar(0.0), b.scalar(1.0)], node.tops[0])

    def torch(self, s, node):
        layer = node.layer
        return (f"torch.clamp({layer.alpha!r} * {s.v(node.bottoms[0])} + {layer.beta!r}, "
                "0.0, 1.0)")


@register_export("ShuffleChannel")
class ShuffleChannelExport(LayerExport):
    def onnx(self, b, node):
        x = node.bottoms[0]
        shape = b.shape(x)
        g = node.layer.group
        y = b.reshape(x, [0, g, shape[1] // g, count(shape[2:])])
        y = b.op("Transpose", [y], perm=[0, 2, 1, 3])
        b.reshape(y, b.target(node.tops[0]), node.tops[0])

    def torch(self, s, node):
        x = s.v(node.bottoms[0])
        shape = s.shape(node.bottoms[0])
        g = node.layer.group
        return (f"{x}.reshape({x}.shape[0], {g}, {shape[1] // g}, -1).transpose(1, 2)"
                f".reshape({_tuple(s.target(node.tops[0]))})")


@register_export("Axpy")
class AxpyExport(LayerExport):
    def onnx(self, b, node):
        a, x, y = node.bottoms
        nd = len(b.shape(x))
        scale = b.reshape(a, [0, b.shape(x)[1]] + [1] * (nd - 2))
        b.op("Add", [b.op("Mul", [scale, x]), y], node.tops[0])

    def torch(self, s, node):
        a, x, y = (s.v(v) for v in node.bottoms)
        nd = len(s.shape(node.bottoms[1]))
        c = s.shape(node.bottoms[1])[1]
        return f"{a}.reshape({a}.shape[0], {c}{', 1' * (nd - 2)}) * {x} + {y}"

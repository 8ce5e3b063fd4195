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
- SeLu, SeLuDropout (TEST), Reorg (darknet's layout), Unsqueeze, Pad (constant, edge,
  reflect, or a crop), BatchNormKyle, BN (yjxiong/Cysu form);
- ROIPooling, PSROIPooling: masked reductions; Upsample/MaxUnPool with a mask: ScatterElements;
- SSD's DetectionOutput: in ONNX, in-graph decoding, TopK, ONNX NonMaxSuppression per
  (image, class) over rank scores, keep_top_k by TopK, rows by NonZero — the fork's rows in
  its order (DetectionOutputExport; adaptive NMS refused); in the generated PyTorch source an
  eager copy of the layer; the torch.export form refuses it (greedy NMS is not traceable),
  naming -end;
- YOLO's detection outputs (YoloDetectionOutput, Yolov3DetectionOutput): in ONNX, the
  fork's decoding, a sort and one class-agnostic NonMaxSuppression, row for row
  (YoloDetectionOutputExport); the torch forms refuse them;
- Proposal is refused with the way out (-end).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..bbox import CENTER_SIZE, CORNER, CORNER_SIZE
from .graph import ExportGraph, Node, count
from .layers import BatchNormExport, ConvolutionExport, _tuple
from .registry import LayerExport, refuse_types, register_export

if TYPE_CHECKING:  # for annotations only
    from ..layers.forks.ssd import DetectionOutputLayer
    from ..layers.forks.yolo import YoloDetectionOutputLayer, Yolov3DetectionOutputLayer
    from ..layers.vision import _PoolGeom
    from .onnx import OnnxBuilder
    from .pytorch_source import SourceBuilder

    YoloLayer = YoloDetectionOutputLayer | Yolov3DetectionOutputLayer

register_export("ConvolutionDepthwise", "DepthwiseConvolution")(ConvolutionExport)


def _filled(b: OnnxBuilder, shape: str, value: float) -> str:
    """A float tensor of this (runtime) shape filled with value."""
    # onnx is optional (the export extra): loaded when an ONNX graph is written
    from onnx import numpy_helper

    return b.op("ConstantOfShape", [shape],
                value=numpy_helper.from_array(np.array([value], np.float32)))


def _end_hint(node: Node, graph: ExportGraph) -> str:
    """The way out: -end at the layer before this one (its inputs become outputs)."""
    names = [n.name for n in graph.nodes]
    i = names.index(node.name) if node.name in names else 0
    where = f"-end {names[i - 1]}" if i > 0 else "-end"
    return f"export up to its inputs with {where} and decode outside the graph"


@register_export("DetectionOutput")
class DetectionOutputExport(LayerExport):
    """SSD's DetectionOutput (weiliu89/caffe detection_output_layer.cpp, bbox_util.cpp) as ONNX,
    batched over images and classes:

    1. decode loc against the priors (CENTER_SIZE, CORNER, CORNER_SIZE; variances from the
       priors or already in the target), not clipped: ``[N, L, P, 4]``;
    2. per image and class other than background, TopK of the scores (top_k, else all P):
       descending, equal scores in index order (the fork's stable sort); candidates are those
       scoring > confidence_threshold;
    3. ONNX NonMaxSuppression over each (image, class)'s sorted candidates, one NMS batch per
       pair, with scores replaced by their rank (K − position) so that its visiting order is
       exactly that sort whatever the runtime's tie rule; boxes with xmax < xmin or
       ymax < ymin (JaccardOverlap 0 in the fork: its BBoxSize is 0) become all-zero boxes,
       which NonMaxSuppression never matches (it would re-order their corners);
    4. keep_top_k: TopK over each image's kept scores, ties in (label, rank) order;
    5. rows [image, label, score, xmin, ymin, xmax, ymax] by NonZero of the kept mask
       ``[N, C', K]`` (row-major: image, label ascending, score descending); with no
       detection at all, one row [i, −1, …, −1] per image.

    The IoU of NonMaxSuppression is the fork's JaccardOverlap for normalised boxes
    (intersection / (size₁ + size₂ − intersection), no +1, 0 without overlap), suppressing
    above nms_threshold as the fork keeps at ≤. Refused: adaptive NMS (eta < 1 with
    nms_threshold > 0.5; ONNX only), share_location with background_label_id −1 (the fork's
    layer fails), and a top read by a later layer (its row count is data-dependent).

    The generated PyTorch source (-pytorch) calls an eager copy of the layer
    (runtime.caffe_detection_output, adaptive NMS included); torch.export (-torch) cannot
    trace greedy NMS and refuses the layer.
    """

    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        layer = node.layer
        if layer.share_location and layer.background == -1:
            return ("background_label_id -1 with share_location: the fork's layer skips the "
                    "shared location predictions (label -1) and fails; " + _end_hint(node, graph))
        if node.tops[0] not in graph.outputs:
            return ("its top has a data-dependent number of rows and is read by a later "
                    "layer; export the net up to DetectionOutput, or " + _end_hint(node, graph))
        return None

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        if layer.eta < 1 and layer.nms_threshold > 0.5:
            raise node.fail(
                f"nms_param.eta {layer.eta:g} < 1 with nms_threshold {layer.nms_threshold:g} "
                "> 0.5 is adaptive NMS (the threshold shrinks after each kept box), which ONNX "
                "NonMaxSuppression cannot express; the generated PyTorch source (-pytorch) "
                "exports it, or " + _end_hint(node, b.graph))
        loc, conf, prior = node.bottoms
        p, c, lc = layer.num_priors, layer.num_classes, layer.num_loc_classes
        classes = [k for k in range(c) if k != layer.background]
        k_top = p if layer.top_k < 0 else min(layer.top_k, p)
        top = node.tops[0]
        b.dims[top] = {2: f"{node.name}_detections"}
        fallback = self._fallback(b, loc)
        if not classes or k_top == 0 or layer.keep_top_k == 0:  # the fork keeps nothing
            b.reshape(fallback, [1, 1, -1, 7], top)
            return
        nc = len(classes)
        boxes = self._decode(b, node, loc, prior)                      # [N, L, P, 4]
        if layer.share_location:
            boxes = b.op("Expand", [boxes, b.ints([1, nc, 1, 1])])      # [N, C', P, 4]
        elif len(classes) < lc:
            boxes = b.op("Gather", [boxes, b.ints(classes)], axis=1)
        scores = b.op("Transpose", [b.reshape(conf, [0, p, c])], perm=[0, 2, 1])
        if len(classes) < c:
            scores = b.op("Gather", [scores, b.ints(classes)], axis=1)  # [N, C', P]
        # NaN scores never pass the threshold: -inf keeps them out of TopK's first places
        scores = b.op("Where", [b.op("IsNaN", [scores]), b.scalar(-np.inf), scores])
        vals, idx = self._stable_top_k(b, scores, p, k_top)
        valid = b.op("Greater", [vals, b.scalar(np.float32(layer.conf_threshold))])
        idx4 = b.op("Expand", [b.reshape(idx, [0, nc, k_top, 1]), b.ints([1, 1, 1, 4])])
        cand = b.op("GatherElements", [boxes, idx4], axis=2)           # [N, C', K, 4]
        keep = self._nms(b, layer, cand, valid, nc, k_top)              # bool [N, C', K]
        if -1 < layer.keep_top_k < nc * k_top:
            keep = self._keep_top_k(b, layer, vals, keep, nc, k_top)
        at = b.op("Transpose", [b.op("NonZero", [keep])], perm=[1, 0])  # [D, 3]
        image = b.op("Cast", [b.slice(at, [0], [1], [1])], to=1)
        label = b.op("Gather", [b.const(np.asarray(classes, np.float32).reshape(-1, 1)),
                                b.slice(at, [1], [2], [1])], axis=0)
        label = b.reshape(label, [-1, 1])
        score = b.reshape(b.op("GatherND", [vals, at]), [-1, 1])
        box = b.op("GatherND", [cand, at])
        rows = b.op("Concat", [image, label, score, box], axis=1)
        # no detection at all: the fallback rows instead (they follow the zero rows)
        both = b.op("Concat", [rows, fallback], axis=0)
        count = b.slice(b.op("Shape", [rows]), [0], [1], [0])
        images = b.slice(b.op("Shape", [fallback]), [0], [1], [0])
        end = b.op("Where", [b.op("Equal", [count, b.ints([0])]), images, count])
        out = b.op("Slice", [both, b.ints([0]), end, b.ints([0])])
        b.reshape(out, [1, 1, -1, 7], top)

    # -- parts ----------------------------------------------------------------------------------
    # above this many candidates per class the pairwise ordering below (K² comparisons per
    # image and class) is not written and TopK's own tie order is relied on
    PAIRWISE_LIMIT = 1024

    @classmethod
    def _stable_top_k(cls, b: OnnxBuilder, scores: str, p: int, k: int) -> tuple[str, str]:
        """The k best of each (image, class)'s p scores, descending, equal scores in index
        order (the fork's std::stable_sort), with operators whose result does not depend on
        a runtime's tie rule: ONNX TopK puts equal values lower index first, but OpenVINO's
        does not (saturated scores of 1.0 came out in another order). Only TopK's values are
        used: the k-th value t selects every score > t and the first (by index) of those = t
        (CumSum); their order is each one's rank among them (pairwise comparisons), and a
        TopK over distinct ranks. Returns (values, indices) of shape [N, C', k]."""
        vals, idx = b.op("TopK", [scores, b.ints([k])], 2, axis=2, largest=1, sorted=1)
        if k > cls.PAIRWISE_LIMIT:
            return vals, idx
        t = b.slice(vals, [k - 1], [k], [2])                              # [N, C', 1]
        greater = b.op("Greater", [scores, t])
        equal = b.op("Equal", [scores, t])
        need = b.op("Sub", [b.scalar(float(k)), b.reduce(
            "ReduceSum", b.op("Cast", [greater], to=1), [2], True)])
        seen = b.op("CumSum", [b.op("Cast", [equal], to=1), b.ints([2])])
        first = b.op("And", [equal, b.op("Not", [b.op("Greater", [seen, need])])])
        chosen = b.op("Or", [greater, first])                             # k per row
        # the chosen indices in ascending order: TopK over distinct keys p − index
        key = b.op("Where", [chosen, b.const(np.arange(p, 0, -1, dtype=np.float32)),
                             b.scalar(0.0)])
        _, pos = b.op("TopK", [key, b.ints([k])], 2, axis=2, largest=1, sorted=1)
        v = b.op("GatherElements", [scores, pos], axis=2)                 # [N, C', k]
        vi = b.reshape(v, [0, 0, k, 1])
        vj = b.reshape(v, [0, 0, 1, k])
        lower = b.const(np.triu(np.ones((k, k), dtype=bool), 1), np.bool_)  # i < j
        ahead = b.op("Or", [b.op("Greater", [vi, vj]),
                            b.op("And", [b.op("Equal", [vi, vj]), lower])])
        rank = b.reduce("ReduceSum", b.op("Cast", [ahead], to=1), [2], False)  # [N, C', k]
        _, order = b.op("TopK", [rank, b.ints([k])], 2, axis=2, largest=0, sorted=1)
        return (b.op("GatherElements", [v, order], axis=2),
                b.op("GatherElements", [pos, order], axis=2))

    @staticmethod
    def _fallback(b: OnnxBuilder, loc: str) -> str:
        """[N, 7] rows [i, -1, -1, -1, -1, -1, -1] (N from loc, so a symbolic batch holds)."""
        n = b.slice(b.op("Shape", [loc]), [0], [1], [0])
        ids = b.op("Range", [b.const(np.int64(0), np.int64), b.reshape(n, []),
                             b.const(np.int64(1), np.int64)])
        ids = b.reshape(b.op("Cast", [ids], to=1), [-1, 1])
        minus = _filled(b, b.op("Concat", [n, b.ints([6])], axis=0), -1.0)
        return b.op("Concat", [ids, minus], axis=1)

    @staticmethod
    def _decode(b: OnnxBuilder, node: Node, loc: str, prior: str) -> str:
        """DecodeBBox of every prediction: [N, L, P, 4], in the fork's order of operations."""
        layer = node.layer
        p, lc = layer.num_priors, layer.num_loc_classes
        d = b.op("Transpose", [b.reshape(loc, [0, p, lc, 4])], perm=[0, 2, 1, 3])
        flat = b.reshape(prior, [-1])
        pb = b.reshape(b.slice(flat, [0], [p * 4], [0]), [p, 4])
        pv = b.reshape(b.slice(flat, [p * 4], [p * 8], [0]), [p, 4])
        in_target = layer.variance_in_target

        def col(x: str, i: int):
            return b.slice(x, [i], [i + 1], [-1])

        def mul(a: str, c: str):
            return b.op("Mul", [a, c])

        code = layer.code_type
        if code == CORNER:
            return b.op("Add", [pb, d if in_target else mul(pv, d)])
        pw = b.op("Sub", [col(pb, 2), col(pb, 0)])
        ph = b.op("Sub", [col(pb, 3), col(pb, 1)])
        if code == CORNER_SIZE:
            size = b.op("Concat", [pw, ph, pw, ph], axis=1)
            return b.op("Add", [pb, mul(d if in_target else mul(pv, d), size)])
        if code != CENTER_SIZE:
            raise node.fail(f"unknown code_type {code}")
        two = b.scalar(2.0)
        pcx = b.op("Div", [b.op("Add", [col(pb, 0), col(pb, 2)]), two])
        pcy = b.op("Div", [b.op("Add", [col(pb, 1), col(pb, 3)]), two])
        dc = [col(d, i) for i in range(4)]
        if not in_target:
            dc = [mul(col(pv, i), dc[i]) for i in range(4)]
        cx = b.op("Add", [mul(dc[0], pw), pcx])
        cy = b.op("Add", [mul(dc[1], ph), pcy])
        hw = b.op("Div", [mul(b.op("Exp", [dc[2]]), pw), two])
        hh = b.op("Div", [mul(b.op("Exp", [dc[3]]), ph), two])
        return b.op("Concat", [b.op("Sub", [cx, hw]), b.op("Sub", [cy, hh]),
                               b.op("Add", [cx, hw]), b.op("Add", [cy, hh])], axis=-1)

    @staticmethod
    def _nms(b: OnnxBuilder, layer: DetectionOutputLayer, cand: str, valid: str, nc: int,
             k: int) -> str:
        """ApplyNMSFast over each (image, class)'s sorted candidates: the kept mask."""
        if layer.nms_threshold > 1:  # no overlap exceeds 1: NMS keeps every candidate
            return valid
        x1, y1, x2, y2 = (b.slice(cand, [i], [i + 1], [-1]) for i in range(4))
        inverted = b.op("Or", [b.op("Less", [x2, x1]), b.op("Less", [y2, y1])])
        yx = b.op("Concat", [y1, x1, y2, x2], axis=-1)  # NonMaxSuppression's [y1, x1, y2, x2]
        yx = b.op("Where", [inverted, b.scalar(0.0), yx])
        ranks = b.const(np.arange(k, 0, -1, dtype=np.float32))
        rank = b.op("Where", [valid, ranks, b.scalar(0.0)])
        rank2 = b.reshape(rank, [-1, k])                                # [N·C', K]
        sel = b.op("NonMaxSuppression", [
            b.reshape(yx, [-1, k, 4]), b.reshape(rank2, [-1, 1, k]), b.ints([k]),
            b.const(np.array([layer.nms_threshold], np.float32)),
            b.const(np.array([0.5], np.float32))], center_point_box=0)
        where = b.op("Gather", [sel, b.ints([0, 2])], axis=1)           # (pair, position)
        ones = _filled(b, b.slice(b.op("Shape", [sel]), [0], [1], [0]), 1.0)
        zeros = _filled(b, b.op("Shape", [rank2]), 0.0)
        kept = b.op("ScatterND", [zeros, where, ones])
        kept = b.op("Greater", [b.reshape(kept, [-1, nc, k]), b.scalar(0.0)])
        return b.op("And", [kept, valid])

    @staticmethod
    def _keep_top_k(b: OnnxBuilder, layer: DetectionOutputLayer, vals: str, keep: str,
                    nc: int, k: int) -> str:
        """The keep_top_k best kept detections of each image (ties in label, rank order):
        TopK's keep_top_k-th value t, then every kept score > t and the first (in label, rank
        order, by CumSum) of those = t, so that no runtime's TopK tie rule decides."""
        total = nc * k
        flat_keep = b.reshape(keep, [0, total])
        ms = b.op("Where", [flat_keep, b.reshape(vals, [0, total]), b.scalar(-np.inf)])
        top, _ = b.op("TopK", [ms, b.ints([layer.keep_top_k])], 2, axis=1, largest=1,
                      sorted=1)
        t = b.slice(top, [layer.keep_top_k - 1], [layer.keep_top_k], [1])  # [N, 1]
        greater = b.op("Greater", [ms, t])
        equal = b.op("Equal", [ms, t])
        need = b.op("Sub", [b.scalar(float(layer.keep_top_k)), b.reduce(
            "ReduceSum", b.op("Cast", [greater], to=1), [1], True)])
        seen = b.op("CumSum", [b.op("Cast", [equal], to=1), b.ints([1])])
        first = b.op("And", [equal, b.op("Not", [b.op("Greater", [seen, need])])])
        picked = b.op("Or", [greater, first])
        return b.reshape(b.op("And", [picked, flat_keep]), [0, nc, k])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        if s.traced:
            raise node.fail(
                "the torch.export form (-torch) cannot carry SSD's DetectionOutput: its greedy "
                "per-class NMS keeps a data-dependent number of boxes, which torch.export "
                "cannot trace; the ONNX form (-onnx, NonMaxSuppression with the fork's "
                "decoding) and the generated PyTorch source (-pytorch, an eager NMS) export "
                "it, or " + _end_hint(node, s.graph))
        layer = node.layer
        loc, conf, prior = (s.v(v) for v in node.bottoms)
        return (f"{s.h('caffe_detection_output')}({loc}, {conf}, {prior}, "
                f"num_priors={layer.num_priors}, num_classes={layer.num_classes}, "
                f"share_location={layer.share_location}, "
                f"background_label_id={layer.background}, code_type={layer.code_type}, "
                f"variance_in_target={layer.variance_in_target}, "
                f"confidence_threshold={layer.conf_threshold!r}, "
                f"nms_threshold={layer.nms_threshold!r}, eta={layer.eta!r}, "
                f"top_k={layer.top_k}, keep_top_k={layer.keep_top_k})")


refuse_types("Proposal decodes anchors and keeps a data-dependent number of boxes (NMS); stop "
             "before it with -end and run the proposal step outside the graph", "Proposal")


@register_export("PriorBox")
class PriorBoxExport(LayerExport):
    """A constant: the priors depend on the feature map's and the image's shapes only."""

    def _value(self, node: Node, graph: ExportGraph) -> np.ndarray:
        bottoms = [torch.zeros(graph.shape(v)) for v in node.bottoms]
        with torch.no_grad():
            out = node.layer(*bottoms)
        return out.detach().cpu().float().numpy()

    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        if any(graph.varies(v, a) for v in node.bottoms for a in range(1, len(graph.shape(v)))):
            return "its priors depend on spatial sizes that change with the batch"
        return None

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.identity(b.const(self._value(node, b.graph), hint="priors"), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return s.const(node, self._value(node, s.graph), "priors")


@register_export("Permute")
class PermuteExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.op("Transpose", node.bottoms, node.tops[0], perm=list(node.layer.orders))

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"{s.v(node.bottoms[0])}.permute{_tuple(node.layer.orders)}"


@register_export("Normalize")
class NormalizeExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        c = b.shape(x)[1]
        x3 = b.reshape(x, [0, c, -1])
        axes = [1, 2] if layer.across_spatial else [1]
        sq = b.reduce("ReduceSumSquare", x3, axes, True)
        norm = b.op("Sqrt", [b.op("Add", [sq, b.scalar(layer.eps)])])
        shape = (1, 1, 1) if layer.channel_shared else (1, c, 1)
        y = b.op("Mul", [b.op("Div", [x3, norm]), b.blob(node, 0, lambda a: a.reshape(shape))])
        b.reshape(y, b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        return (f"{s.h('caffe_normalize')}({s.v(node.bottoms[0])}, {s.p(node, 0)}, "
                f"{layer.across_spatial}, {layer.eps!r})")


def _separable_matrices(node: Node, graph: ExportGraph) -> tuple[np.ndarray, np.ndarray]:
    """The layer's own (A_h, A_w) for the node's static shapes: each separable layer keys its
    matrices differently (Interp by input, effective input and output sides; Resize by input
    and output sides; BilinearInterpolate by input sides)."""
    layer = node.layer
    in_shape = graph.shape(node.bottoms[0])
    out_shape = graph.shape(node.tops[0])
    h, w = in_shape[2], in_shape[3]
    if node.type == "Interp":
        ref = graph.shape(node.bottoms[1]) if len(node.bottoms) > 1 else None
        key = (h, w) + tuple(layer._out_size(tuple(in_shape), ref))
    elif node.type == "Resize":
        key = (h, w, out_shape[2], out_shape[3])
    else:
        key = (h, w)
    ah, aw = layer._matrices(key)
    return np.asarray(ah, np.float32), np.asarray(aw, np.float32)


@register_export("Interp", "Resize", "BilinearInterpolate")
class SeparableResizeExport(LayerExport):
    """top = A_h · x · A_wᵀ over the last two axes (the layer's own matrices), or ONNX Resize
    for a plain Interp (aligned corners, no padding)."""

    def _plain_interp(self, node: Node, graph: ExportGraph) -> bool:
        layer = node.layer
        out = graph.shape(node.tops[0])
        return (node.type == "Interp" and not getattr(layer, "pad_beg", 0)
                and not getattr(layer, "pad_end", 0) and out[2] > 1 and out[3] > 1)

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
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
        ah, aw = _separable_matrices(node, b.graph)
        y = b.op("MatMul", [b.const(ah), x])
        b.op("MatMul", [y, b.const(aw.T)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = node.bottoms[0]
        out = s.shape(node.tops[0])
        if self._plain_interp(node, s.graph):
            return (f"F.interpolate({s.v(x)}, size={_tuple(out[2:])}, mode='bilinear', "
                    "align_corners=True)")
        ah, aw = _separable_matrices(node, s.graph)
        return (f"torch.matmul(torch.matmul({s.const(node, ah, 'rows')}, {s.v(x)}), "
                f"{s.const(node, aw.T, 'cols')})")


class UnpoolExport(LayerExport):
    """SegNet's unpooling (Upsample with a mask bottom, MaxUnPool): each value goes to the
    flat position its MAX pooling's mask gives in a zero (N, C, H·W) top. Behind a pooling
    whose windows tile the plane (SegNet's and ENet's 2×2, stride 2) it is a comparison per
    window offset; otherwise ScatterElements."""

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x, mask = node.bottoms[:2]
        n, c = b.shape(x)[:2]
        out = b.shape(node.tops[0])
        # the pooling's int64 indices where the mask comes from a MAX pooling of the graph
        idx = b.indices.get(mask) or b.op("Cast", [mask], to=7)
        g = self._tiling_pool(b.graph, mask, out)
        if g is not None:
            return self._tiled(b, node, x, idx, g, out)
        idx = b.reshape(idx, [0, c, -1])
        zeros = b.const(np.zeros((n, c, out[2] * out[3]), np.float32), hint="zeros")
        if b.graph.varies(x, 0):
            size = b.op("Concat", [b.slice(b.op("Shape", [idx]), [0], [1], [0]),
                                   b.ints([c, out[2] * out[3]])], axis=0)
            zeros = b.op("Expand", [b.const(np.zeros((1, c, 1), np.float32)), size])
        y = b.op("ScatterElements", [zeros, idx, b.reshape(x, [0, c, -1])], axis=2)
        b.reshape(y, b.target(node.tops[0]), node.tops[0])

    @staticmethod
    def _tiling_pool(graph: ExportGraph, mask: str, out: Sequence[int]) -> _PoolGeom | None:
        """The geometry of the MAX pooling that wrote the mask when its windows tile the
        plane (kernel = stride, no padding) and the unpooled plane is its bottom's size:
        every index then lies in its own cell's window, and the unpooling is a per-window
        comparison (no ScatterElements, whose version 16 converters refuse)."""
        for node in graph.nodes:
            if node.type == "Pooling" and len(node.tops) > 1 and node.tops[1] == mask:
                shape = graph.shape(node.bottoms[0])
                g = node.layer._geom(tuple(shape))
                if (g.kernel == g.stride and g.pad == (0, 0) and tuple(shape[2:]) ==
                        tuple(out[2:]) and not g.empty):
                    return g
        return None

    @staticmethod
    def _tiled(b: OnnxBuilder, node: Node, x: str, idx: str, g: _PoolGeom,
               out: Sequence[int]) -> None:
        """top[h, w] = x[h // s, w // s] where that cell's index is h·W + w, else 0: each
        window offset (dy, dx) compared at once ([N, C, Hp, s, Wp, s]), then cropped or
        padded to the top's H × W."""
        (sh, sw), (hp, wp) = g.stride, g.out
        h, w = out[2], out[3]
        rows = np.arange(hp)[:, None, None, None] * sh + np.arange(sh)[None, :, None, None]
        cols = np.arange(wp)[None, None, :, None] * sw + np.arange(sw)[None, None, None, :]
        where = b.const((rows * w + cols).astype(np.int64), np.int64)        # [Hp, s, Wp, s]
        i6 = b.reshape(idx, [0, 0, hp, 1, wp, 1])
        x6 = b.reshape(x, [0, 0, hp, 1, wp, 1])
        y = b.op("Where", [b.op("Equal", [i6, where]), x6, b.scalar(0.0)])
        y = b.reshape(y, [0, 0, hp * sh, wp * sw])
        if (hp * sh, wp * sw) != (h, w):
            y = b.slice(y, [0, 0], [min(h, hp * sh), min(w, wp * sw)], [2, 3])
            if hp * sh < h or wp * sw < w:
                y = b.op("Pad", [y, b.ints([0, 0, 0, 0, 0, 0, max(h - hp * sh, 0),
                                            max(w - wp * sw, 0)]), b.scalar(0.0)])
        b.reshape(y, b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x, mask = (s.v(v) for v in node.bottoms[:2])
        c = s.shape(node.bottoms[0])[1]
        out = s.shape(node.tops[0])
        return (f"{x}.new_zeros(({x}.shape[0], {c}, {out[2] * out[3]})).scatter(2, "
                f"{mask}.reshape({mask}.shape[0], {c}, -1).to(torch.int64), "
                f"{x}.reshape({x}.shape[0], {c}, -1)).reshape({x}.shape[0], {c}, {out[2]}, "
                f"{out[3]})")


register_export("MaxUnPool")(UnpoolExport)


@register_export("Upsample")
class UpsampleExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        if len(node.bottoms) == 2:
            return UnpoolExport().onnx(b, node)
        x = node.bottoms[0]
        scales = self._scales(node, len(b.shape(x)))
        b.op("Resize", [x, "", b.const(np.asarray(scales, np.float32))], node.tops[0],
             mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    def _scales(self, node: Node, nd: int):
        k = 2 if node.layer.dims_num == 4 else 1
        return [1] * (nd - k) + [node.layer.scale] * k

    def torch(self, s: SourceBuilder, node: Node) -> str:
        if len(node.bottoms) == 2:
            return UnpoolExport().torch(s, node)
        x = s.v(node.bottoms[0])
        y = f"{x}.repeat_interleave({node.layer.scale}, dim=-1)"
        if node.layer.dims_num == 4:
            y = f"{y}.repeat_interleave({node.layer.scale}, dim=-2)"
        return y


@register_export("PixelShuffle")
class PixelShuffleExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.op("DepthToSpace", node.bottoms, node.tops[0], blocksize=int(node.layer.r), mode="CRD")

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"F.pixel_shuffle({s.v(node.bottoms[0])}, {node.layer.r})"


@register_export("ReLU6")
class ReLU6Export(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        lin = b.op("LeakyRelu", [x], alpha=layer.slope) if layer.slope else b.op("Relu", [x])
        b.op("Min", [lin, b.scalar(layer.threshold)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        lin = f"F.leaky_relu({x}, {layer.slope!r})" if layer.slope else f"F.relu({x})"
        return f"torch.clamp({lin}, max={layer.threshold!r})"


@register_export("HardSwish")
class HardSwishExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x = node.bottoms[0]
        gate = b.op("Clip", [b.op("Add", [x, b.scalar(3.0)]), b.scalar(0.0), b.scalar(6.0)])
        b.op("Div", [b.op("Mul", [x, gate]), b.scalar(6.0)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = s.v(node.bottoms[0])
        return f"{x} * torch.clamp({x} + 3.0, 0.0, 6.0) / 6.0"


@register_export("HardSigmoid")
class HardSigmoidExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        lin = b.op("Add", [b.mul_scalar(node.bottoms[0], layer.alpha), b.scalar(layer.beta)])
        b.op("Clip", [lin, b.scalar(0.0), b.scalar(1.0)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        return (f"torch.clamp({layer.alpha!r} * {s.v(node.bottoms[0])} + {layer.beta!r}, "
                "0.0, 1.0)")


@register_export("ShuffleChannel")
class ShuffleChannelExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x = node.bottoms[0]
        shape = b.shape(x)
        g = node.layer.group
        y = b.reshape(x, [0, g, shape[1] // g, count(shape[2:])])
        y = b.op("Transpose", [y], perm=[0, 2, 1, 3])
        b.reshape(y, b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = s.v(node.bottoms[0])
        shape = s.shape(node.bottoms[0])
        g = node.layer.group
        return (f"{x}.reshape({x}.shape[0], {g}, {shape[1] // g}, -1).transpose(1, 2)"
                f".reshape({_tuple(s.target(node.tops[0]))})")


@register_export("Axpy")
class AxpyExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        a, x, y = node.bottoms
        nd = len(b.shape(x))
        scale = b.reshape(a, [0, b.shape(x)[1]] + [1] * (nd - 2))
        b.op("Add", [b.op("Mul", [scale, x]), y], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        a, x, y = (s.v(v) for v in node.bottoms)
        nd = len(s.shape(node.bottoms[1]))
        c = s.shape(node.bottoms[1])[1]
        return f"{a}.reshape({a}.shape[0], {c}{', 1' * (nd - 2)}) * {x} + {y}"


@register_export("YoloDetectionOutput", "Yolov3DetectionOutput")
class YoloDetectionOutputExport(LayerExport):
    """eric612/MobileNet-YOLO's YoloDetectionOutput (YOLOv2) and Yolov3DetectionOutput as ONNX
    (yolo_detection_output_layer.cpp, yolov3_detection_output_layer.cpp), rows as the fork
    writes them:

    1. every candidate in the fork's enumeration order (bottom, image, cell row-major,
       anchor; YOLOv3 also class), decoded as decaffe.layers.yolo does: x = (col + σ(t0))/S,
       y = (row + σ(t1))/S, w, h = exp(t2|t3)·bias/(S [· anchors_scale]); YOLOv2 scores
       σ(t4)·max softmax (the first maximum's class), kept at ≥ confidence_threshold;
       YOLOv3 scores σ(class)·σ(t4), one candidate per class, kept at > threshold;
    2. all of them sorted by score (equal scores in enumeration order, not left to TopK's
       tie rule up to DetectionOutputExport.PAIRWISE_LIMIT candidates) and one
       class-agnostic NonMaxSuppression over every image's candidates together, as the
       fork does, visiting them in that order (scores replaced by their rank); IoU ≥
       nms_threshold suppresses (NonMaxSuppression suppresses above a threshold one float
       below it), center-form boxes;
    3. rows [0, class + 1, score, x − w/2, y − h/2, x + w/2, y + h/2] of the kept ones in
       that order (image_id 0, the fork's quirk), or one row [i, −1, …] per image when no
       candidate passes the threshold.

    The torch forms refuse it (greedy NMS of a data-dependent size), naming -end."""

    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        if node.tops[0] not in graph.outputs:
            return ("its top has a data-dependent number of rows and is read by a later "
                    "layer; " + _end_hint(node, graph))
        return None

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        v3 = node.type == "Yolov3DetectionOutput"
        parts = [self._candidates_v3(b, layer, x, t) if v3 else self._candidates_v2(b, layer, x)
                 for t, x in enumerate(node.bottoms)]
        scores, boxes, labels = (b.op("Concat", [p[i] for p in parts], axis=0)
                                 if len(parts) > 1 else parts[0][i] for i in range(3))
        thresh = b.scalar(np.float32(layer.confidence_threshold))
        valid = b.op("Greater" if v3 else "GreaterOrEqual", [scores, thresh])
        scores = b.op("Where", [valid, scores, b.scalar(-np.inf)])
        total = int(sum(self._count(b, layer, x, v3) for x in node.bottoms))
        # equal scores in enumeration order, whatever the runtime's TopK tie rule
        vals, order = DetectionOutputExport._stable_top_k(
            b, b.reshape(scores, [1, 1, total]), total, total)
        order = b.reshape(order, [total])
        ok = b.op("Greater", [b.reshape(vals, [total]), b.scalar(-np.inf)])
        boxes = b.op("Gather", [boxes, order], axis=0)                     # [M, 4] x, y, w, h
        ranks = b.op("Where", [ok, b.const(np.arange(total, 0, -1, dtype=np.float32)),
                               b.scalar(0.0)])
        nms = np.float32(layer.nms_threshold)
        if nms <= 0:  # every IoU (0 included) is >= the threshold: the best box alone stays
            first = np.zeros(total, bool)
            first[0] = True
            kept = b.op("And", [ok, b.const(first, np.bool_)])
        elif nms > 1:  # no IoU reaches it: every candidate stays
            kept = ok
        else:
            thr = np.nextafter(nms, np.float32(-np.inf))
            sel = b.op("NonMaxSuppression", [
                b.reshape(boxes, [1, total, 4]), b.reshape(ranks, [1, 1, total]),
                b.ints([total]), b.const(np.array([thr], np.float32)),
                b.const(np.array([0.5], np.float32))], center_point_box=1)
            where = b.op("Gather", [sel, b.ints([2])], axis=1)                   # [D, 1]
            ones = _filled(b, b.slice(b.op("Shape", [sel]), [0], [1], [0]), 1.0)
            kept = b.op("ScatterND", [_filled(b, b.ints([total]), 0.0), where, ones])
            kept = b.op("Greater", [kept, b.scalar(0.0)])
        at = b.reshape(b.op("NonZero", [kept]), [-1])
        score = b.reshape(b.op("Gather", [b.reshape(vals, [total]), at], axis=0), [-1, 1])
        label = b.op("Gather", [b.op("Gather", [labels, order], axis=0), at], axis=0)
        label = b.reshape(b.op("Add", [label, b.scalar(1.0)]), [-1, 1])
        box = b.op("Gather", [boxes, at], axis=0)
        xy = b.slice(box, [0], [2], [1])
        half = b.op("Div", [b.slice(box, [2], [4], [1]), b.scalar(2.0)])
        zero = b.op("Mul", [score, b.scalar(0.0)])
        rows = b.op("Concat", [zero, label, score, b.op("Sub", [xy, half]),
                               b.op("Add", [xy, half])], axis=1)
        batch_of = node.bottoms[-1] if v3 else node.bottoms[0]
        fallback = DetectionOutputExport._fallback(b, batch_of)
        both = b.op("Concat", [rows, fallback], axis=0)
        count = b.slice(b.op("Shape", [rows]), [0], [1], [0])
        images = b.slice(b.op("Shape", [fallback]), [0], [1], [0])
        end = b.op("Where", [b.op("Equal", [count, b.ints([0])]), images, count])
        top = node.tops[0]
        b.dims[top] = {2: f"{node.name}_detections"}
        b.reshape(b.op("Slice", [both, b.ints([0]), end, b.ints([0])]), [1, 1, -1, 7], top)

    @staticmethod
    def _count(b: OnnxBuilder, layer: YoloLayer, x: str, v3: bool) -> int:
        n, _, side, _ = b.shape(x)
        return n * side * side * layer.num_box * (layer.num_classes if v3 else 1)

    @staticmethod
    def _grid(side: int, num_box: int, classes: int = 0):
        """col and row of each (row, col, anchor[, class]) position, float32."""
        shape = (1, side, side, num_box) + ((classes,) if classes else ())
        row = np.arange(side, dtype=np.float32).reshape((1, side, 1, 1) + (1,) * bool(classes))
        col = np.arange(side, dtype=np.float32).reshape((1, 1, side, 1) + (1,) * bool(classes))
        return np.broadcast_to(col, shape).copy(), np.broadcast_to(row, shape).copy()

    def _candidates_v2(self, b: OnnxBuilder, layer: YoloLayer, x: str):
        """(scores [M], boxes [M, 4], classes [M]) of one YOLOv2 map, enumeration order."""
        n, c, side, _ = b.shape(x)
        a, per, k = layer.num_box, c // layer.num_box, layer.num_classes
        v = b.op("Transpose", [b.reshape(x, [n, a, per, side, side])], perm=[0, 3, 4, 1, 2])
        t = [b.slice(v, [i], [i + 1], [4]) for i in range(5)]               # [N, S, S, A, 1]
        logits = b.slice(v, [5], [5 + k], [4])
        e = b.op("Exp", [b.op("Sub", [logits, b.reduce("ReduceMax", logits, [4], True)])])
        prob = b.op("Div", [e, b.reduce("ReduceSum", e, [4], True)])
        best = b.reduce("ReduceMax", prob, [4], True)
        first = b.op("Where", [b.op("Equal", [prob, best]),
                               b.const(np.arange(k, dtype=np.float32)), b.scalar(float(k))])
        label = b.reduce("ReduceMin", first, [4], True)
        score = b.op("Mul", [b.op("Sigmoid", [t[4]]), best])
        col, row = self._grid(side, a)
        biases = np.asarray(layer.biases[:2 * a], np.float32).reshape(a, 2)
        box = self._box(b, t, col[..., None], row[..., None], side, biases[:, 0], biases[:, 1],
                        float(side))
        m = n * side * side * a
        return b.reshape(score, [m]), b.reshape(box, [m, 4]), b.reshape(label, [m])

    def _candidates_v3(self, b: OnnxBuilder, layer: YoloLayer, x: str, t_index: int):
        """The same for one YOLOv3 map: a candidate per (cell, anchor, class)."""
        n, _, side, _ = b.shape(x)
        a, k = layer.num_box, layer.num_classes
        length = 5 + k
        flat = b.slice(b.reshape(x, [n, -1]), [0], [a * length * side * side], [1])
        v = b.op("Transpose", [b.reshape(flat, [n, a, length, side, side])],
                 perm=[0, 3, 4, 1, 2])                                         # N, S, S, A, L
        t = [b.slice(v, [i], [i + 1], [4]) for i in range(5)]
        cls = b.op("Sigmoid", [b.slice(v, [5], [length], [4])])
        score = b.op("Mul", [cls, b.op("Sigmoid", [t[4]])])                  # [N, S, S, A, K]
        col, row = self._grid(side, a)
        anchors = [layer.mask[i + t_index * layer.groups] for i in range(a)]
        biases = np.asarray(layer.biases, np.float32).reshape(-1, 2)[anchors]
        scale = float(np.float32(side * layer.anchors_scale[t_index]))
        box = self._box(b, t, col[..., None], row[..., None], side, biases[:, 0], biases[:, 1],
                        scale)                                                 # N, S, S, A, 4
        box = b.op("Expand", [b.reshape(box, [n, side, side, a, 1, 4]),
                              b.ints([1, 1, 1, 1, k, 4])])
        m = n * side * side * a * k
        label = b.const(np.broadcast_to(np.arange(k, dtype=np.float32),
                                        (n, side, side, a, k)).reshape(-1))
        return b.reshape(score, [m]), b.reshape(box, [m, 4]), label

    @staticmethod
    def _box(b: OnnxBuilder, t: list[str], col: np.ndarray, row: np.ndarray, side: int,
             bw: np.ndarray, bh: np.ndarray, scale: float):
        """[x, y, w, h] in the fork's order of float operations: (col + σ)/S, exp·bias/scale."""
        s = b.scalar(float(side))
        x = b.op("Div", [b.op("Add", [b.const(col), b.op("Sigmoid", [t[0]])]), s])
        y = b.op("Div", [b.op("Add", [b.const(row), b.op("Sigmoid", [t[1]])]), s])
        a = len(bw)
        w = b.op("Div", [b.op("Mul", [b.op("Exp", [t[2]]),
                                      b.const(np.asarray(bw, np.float32).reshape(a, 1))]),
                         b.scalar(scale)])
        h = b.op("Div", [b.op("Mul", [b.op("Exp", [t[3]]),
                                      b.const(np.asarray(bh, np.float32).reshape(a, 1))]),
                         b.scalar(scale)])
        return b.op("Concat", [x, y, w, h], axis=-1)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        raise node.fail(f"the torch forms (-torch, -pytorch) cannot carry {node.type}: its "
                        "greedy NMS keeps a data-dependent number of boxes; the ONNX form "
                        "(-onnx, NonMaxSuppression) exports it, or " + _end_hint(node, s.graph))


refuse_types("an evaluation or training-only layer (it scores against labels or picks training "
             "examples), not part of a deploy graph; stop before it with -end",
             "DetectionEvaluate", "SegAccuracy", "BoxAnnotatorOHEM")


@register_export("SeLu")
class SeLuExport(LayerExport):
    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        b.op("Selu", node.bottoms, node.tops[0], alpha=layer.alpha, gamma=layer.lam)

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        return (f"{layer.lam!r} * torch.where({x} > 0, {x}, {layer.alpha!r} * "
                f"torch.expm1(torch.clamp({x}, max=0)))")


@register_export("SeLuDropout")
class SeLuDropoutExport(LayerExport):
    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        if node.layer.in_train and node.layer.q > 0:
            return ("a TRAIN-phase SeLuDropout drops random values at every pass; export the "
                    "TEST-phase net, where it is the identity")
        return None

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.identity(node.bottoms[0], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return s.v(node.bottoms[0])


@register_export("Reorg")
class ReorgExport(LayerExport):
    """darknet's reorg: a reshape, a transpose and a reshape."""

    def _plan(self, node: Node, shape: Sequence[int]):
        n, c, h, w = shape
        st = node.layer.stride
        oc = c // (st * st)
        if not node.layer.reverse:
            return (n, oc, h, st, w, st), (0, 3, 5, 1, 2, 4)
        return (n, st, st, oc, h, w), (0, 3, 4, 1, 5, 2)

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x = node.bottoms[0]
        split, perm = self._plan(node, b.shape(x))
        y = b.reshape(x, [0] + list(split[1:]))
        y = b.op("Transpose", [y], perm=list(perm))
        b.reshape(y, b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x = s.v(node.bottoms[0])
        split, perm = self._plan(node, s.shape(node.bottoms[0]))
        return (f"{x}.reshape({x}.shape[0], {', '.join(str(d) for d in split[1:])})"
                f".permute{_tuple(perm)}.reshape({_tuple(s.target(node.tops[0]))})")


@register_export("Unsqueeze")
class UnsqueezeExport(LayerExport):
    """A new axis of size 1: a reshape to the top's shape."""

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        b.reshape(node.bottoms[0], b.target(node.tops[0]), node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        return f"{s.v(node.bottoms[0])}.reshape({_tuple(s.target(node.tops[0]))})"


@register_export("Pad")
class PadExport(LayerExport):
    """inisis/caffe's Pad of the last two axes: ONNX Pad (constant, edge, reflect) or, with
    negative pads, a crop."""

    _MODES = {"CONSTANT": ("constant", "constant"), "REPLICATE": ("edge", "replicate"),
              "REFLECT": ("reflect", "reflect")}

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer, x = node.layer, node.bottoms[0]
        u, d, left, r = layer.pads
        shape = b.shape(x)
        nd = len(shape)
        if layer.crop:
            b.slice(x, [-u, -left], [shape[-2] + d, shape[-1] + r], [nd - 2, nd - 1],
                    node.tops[0])
            return
        pads = [0] * (nd - 2) + [u, left] + [0] * (nd - 2) + [d, r]
        ins = [x, b.ints(pads)]
        if layer.mode == "CONSTANT":
            ins.append(b.scalar(layer.value))
        b.op("Pad", ins, node.tops[0], mode=self._MODES[layer.mode][0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer, x = node.layer, s.v(node.bottoms[0])
        u, d, left, r = layer.pads
        shape = s.shape(node.bottoms[0])
        if layer.crop:
            return f"{x}[..., {-u}:{shape[-2] + d}, {-left}:{shape[-1] + r}]"
        if layer.mode == "CONSTANT":
            return f"F.pad({x}, {_tuple((left, r, u, d))}, value={layer.value!r})"
        x4 = f"{x}.reshape(-1, 1, {shape[-2]}, {shape[-1]})"
        return (f"F.pad({x4}, {_tuple((left, r, u, d))}, mode="
                f"{self._MODES[layer.mode][1]!r}).reshape({_tuple(s.target(node.tops[0]))})")


@register_export("BatchNormKyle")
class BatchNormKyleExport(LayerExport):
    """BVLC BatchNorm's normalisation, then (use_alpha_beta) blobs 3 and 4 as scale and shift."""

    def _affine(self, b: OnnxBuilder, node: Node, shape: Sequence[int]):
        if not node.layer.alpha_beta:
            return None
        view = (-1,) + (1,) * (len(shape) - 2)
        return (b.blob(node, 3, lambda a: a.reshape(view)),
                b.blob(node, 4, lambda a: a.reshape(view)))

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        shape = b.shape(node.bottoms[0])
        affine = self._affine(b, node, shape) if len(shape) > 1 else None
        tmp = b.fresh("normalized")
        BatchNormExport().onnx(b, _renamed(node, tmp if affine else node.tops[0]))
        if affine:
            b.op("Add", [b.op("Mul", [tmp, affine[0]]), affine[1]], node.tops[0])

    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        if len(graph.shape(node.bottoms[0])) < 2 and node.layer.alpha_beta:
            return "a one-axis bottom with use_alpha_beta is not exported"
        return None

    def torch(self, s: SourceBuilder, node: Node) -> str:
        y = BatchNormExport().torch(s, node)
        if not node.layer.alpha_beta:
            return y
        nd = len(s.shape(node.bottoms[0]))
        view = _tuple((-1,) + (1,) * (nd - 2))
        return f"({y}) * {s.p(node, 3)}.reshape({view}) + {s.p(node, 4)}.reshape({view})"


def _renamed(node: Node, top: str):
    """node with its (single) top value renamed (to write an intermediate value)."""
    return dataclasses.replace(node, tops=[top])


@register_export("BN")
class BNExport(LayerExport):
    """yjxiong/Cysu's BN at TEST (or frozen): (x − running mean)·(running variance + eps)^−½·
    scale + shift, its four blobs of shape (1, C, 1, 1); SegNet/ENet's BN (two blobs): scale·x +
    shift (INFERENCE), or normalised by the batch's mean and E[x²] − mean² first (LEARN)."""

    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        layer = node.layer
        if layer.segnet:
            if layer.learn and len(node.tops) > 1:
                return ("SegNet's BN in LEARN mode with batch mean/variance tops is a training "
                        "form; export the net with bn_mode INFERENCE")
            if layer.learn and graph.dynamic_batch:
                return ("SegNet's BN in LEARN mode normalises with the batch's statistics; "
                        "export without -dynamic_batch")
            return None
        if layer.batch_stats:
            return ("a TRAIN-phase BN normalises with batch statistics; export the TEST-phase "
                    "net")
        return None

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x = node.bottoms[0]
        nd = len(b.shape(x))
        view = (-1,) + (1,) * (nd - 2)
        if node.layer.segnet:
            scale, shift = (b.blob(node, k, lambda a: a.reshape(view)) for k in (0, 1))
            if node.layer.learn:  # batch statistics: E[x²] − E[x]², as the fork computes
                axes = [0] + list(range(2, nd))
                mean = b.reduce("ReduceMean", x, axes, True)
                var = b.op("Sub", [b.reduce("ReduceMean", b.op("Mul", [x, x]), axes, True),
                                   b.op("Mul", [mean, mean])])
                x = b.op("Div", [b.op("Sub", [x, mean]),
                                 b.op("Sqrt", [b.op("Add", [var, b.scalar(1e-9)])])])
            b.op("Add", [b.op("Mul", [x, scale]), shift], node.tops[0])
            return
        mean, var, scale, shift = (b.blob(node, k, lambda a: a.reshape(view))
                                   for k in (2, 3, 0, 1))
        inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.scalar(node.layer.eps)])])])
        y = b.op("Mul", [b.op("Mul", [b.op("Sub", [x, mean]), inv]), scale])
        b.op("Add", [y, shift], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        nd = len(s.shape(node.bottoms[0]))
        view = _tuple((1, -1) + (1,) * (nd - 2))
        if node.layer.segnet:
            x = s.v(node.bottoms[0])
            scale, shift = (f"{s.p(node, k)}.reshape({view})" for k in (0, 1))
            if node.layer.learn:
                axes = _tuple([0] + list(range(2, nd)))
                mean = f"{x}.mean({axes}, keepdim=True)"
                var = f"({x} * {x}).mean({axes}, keepdim=True) - {mean} * {mean}"
                x = f"({x} - {mean}) / torch.sqrt({var} + 1e-9)"
            return f"{x} * {scale} + {shift}"
        p = [f"{s.p(node, k)}.reshape({view})" for k in range(4)]
        inv = f"torch.rsqrt({p[3]} + {node.layer.eps!r})"
        return f"({s.v(node.bottoms[0])} - {p[2]}) * {inv} * {p[0]} + {p[1]}"


def _onnx_round(b: OnnxBuilder, v: str) -> str:
    """C's round() (half away from zero; ONNX Round is half to even)."""
    a = b.op("Abs", [v])
    f = b.op("Floor", [a])
    up = b.op("Cast", [b.op("GreaterOrEqual", [b.op("Sub", [a, f]), b.scalar(0.5)])], to=1)
    return b.op("Mul", [b.op("Sign", [v]), b.op("Add", [f, up])])


def _onnx_cell_mask(b: OnnxBuilder, lo: str, hi: str, size: int):
    """Bin edges (R, bins) clipped to [0, size], and the (R, bins, size) mask of the cells
    each [lo, hi) holds."""
    zero, top = b.scalar(0.0), b.scalar(float(size))
    lo = b.op("Clip", [lo, zero, top])
    hi = b.op("Clip", [hi, zero, top])
    cells = b.const(np.arange(size, dtype=np.float32).reshape(1, 1, size))
    lo3 = b.op("Unsqueeze", [lo, b.ints([2])])
    hi3 = b.op("Unsqueeze", [hi, b.ints([2])])
    mask = b.op("And", [b.op("GreaterOrEqual", [cells, lo3]), b.op("Less", [cells, hi3])])
    return lo, hi, mask


def _onnx_roi_features(b: OnnxBuilder, x: str, rois: str) -> tuple[str, str]:
    """The ROIs as (R, 5) rows and each ROI's image of x, (R, C, H, W); the batch index is
    truncated, as C's int cast does."""
    r = b.reshape(rois, [-1, 5])
    idx = b.op("Cast", [b.slice(r, [0], [1], [1])], to=7)
    return r, b.op("Gather", [x, b.reshape(idx, [-1])], axis=0)


# ROI extents up to this many times the feature map's side (plus a margin) take their bin
# size from a table; proposals are clipped to the image, so real ROIs stay far below it
_ROI_TABLE_SIDES, _ROI_TABLE_MARGIN = 4, 64


def _onnx_roi_bins(b: OnnxBuilder, start: str, end: str, pooled: int, size: int):
    """ONNX form of runtime.caffe_roi_bins: (R, pooled, size) masks, (R, pooled) non-empty.

    Caffe's bin size is the float32 quotient extent / pooled, and floor/ceil of its
    multiples decide the bins' edges, so it must be that exact quotient: OpenVINO computes
    every Div as a multiplication by the reciprocal (one ulp off, and ceil(6 · 7/6) became
    8, not 7, moving a bin of Fast R-CNN's ROIs). The extent is a whole number, so the
    quotient comes from a table computed here in float32 for extents 1..E (E four times the
    side plus 64); only larger extents divide in the graph. Products k · bin are Mul."""
    one = b.scalar(1.0)
    extent = b.op("Max", [b.op("Add", [b.op("Sub", [end, start]), one]), one])  # (R, 1)
    top = _ROI_TABLE_SIDES * size + _ROI_TABLE_MARGIN
    table = b.const(np.arange(1, top + 1, dtype=np.float32) / np.float32(pooled),
                    hint="bin_sizes")
    row = b.op("Cast", [b.op("Sub", [b.op("Min", [extent, b.scalar(float(top))]), one])],
               to=7)
    looked = b.op("Gather", [table, row], axis=0)                          # (R, 1)
    bin_size = b.op("Where", [b.op("Greater", [extent, b.scalar(float(top))]),
                              b.op("Div", [extent, b.scalar(float(pooled))]), looked])
    k = b.const(np.arange(pooled, dtype=np.float32)[None])
    k1 = b.const(np.arange(1, pooled + 1, dtype=np.float32)[None])
    lo = b.op("Add", [b.op("Floor", [b.op("Mul", [k, bin_size])]), start])
    hi = b.op("Add", [b.op("Ceil", [b.op("Mul", [k1, bin_size])]), start])
    lo, hi, mask = _onnx_cell_mask(b, lo, hi, size)
    return mask, b.op("Greater", [hi, lo])


@register_export("ROIPooling")
class ROIPoolingExport(LayerExport):
    """rbgirshick's ROIPooling from elementwise operators, not ONNX MaxRoiPool: MaxRoiPool
    rounds the corners half to even and sizes its bins without Caffe's +1 and floor/ceil
    edges. Each bin's maximum is a masked ReduceMax over its columns, then over its rows."""

    fixed_batch = "its ROIs' count is the rois input's axis 0, not the batch"

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        x, rois = node.bottoms
        _, _, height, width = b.shape(x)
        ph, pw = layer.pooled_h, layer.pooled_w
        r, feat = _onnx_roi_features(b, x, rois)  # (R, 5), (R, C, H, W)
        corner = _onnx_round(b, b.mul_scalar(b.slice(r, [1], [5], [1]), layer.spatial_scale))
        sw, sh, ew, eh = (b.slice(corner, [i], [i + 1], [1]) for i in range(4))
        mask_h, full_h = _onnx_roi_bins(b, sh, eh, ph, height)
        mask_w, full_w = _onnx_roi_bins(b, sw, ew, pw, width)
        ninf = b.scalar(-np.inf)
        mw = b.reshape(mask_w, [-1, 1, 1, pw, width])
        t = b.op("Where", [mw, b.op("Unsqueeze", [feat, b.ints([3])]), ninf])
        t = b.reduce("ReduceMax", t, [4], False)  # (R, C, H, PW)
        t = b.op("Unsqueeze", [b.op("Transpose", [t], perm=[0, 1, 3, 2]), b.ints([2])])
        mh = b.reshape(mask_h, [-1, 1, ph, 1, height])
        t = b.reduce("ReduceMax", b.op("Where", [mh, t, ninf]), [4], False)  # (R, C, PH, PW)
        full = b.op("And", [b.reshape(full_h, [-1, 1, ph, 1]), b.reshape(full_w, [-1, 1, 1, pw])])
        b.op("Where", [full, t, b.scalar(0.0)], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        x, rois = (s.v(v) for v in node.bottoms)
        return (f"{s.h('caffe_roi_pool')}({x}, {rois}, {layer.pooled_h}, {layer.pooled_w}, "
                f"{float(layer.spatial_scale)!r})")


def _onnx_psroi_bins(b: OnnxBuilder, start: str, end: str, group: int, size: int):
    """ONNX form of runtime.caffe_psroi_bins: (R, group, size) 0/1 masks, (R, group) counts."""
    extent = b.op("Max", [b.op("Sub", [end, start]), b.scalar(0.1)])
    bin_size = b.op("Div", [extent, b.scalar(float(group))])  # (R, 1)
    k = b.const(np.arange(group, dtype=np.float32)[None])
    lo = b.op("Floor", [b.op("Add", [b.op("Mul", [k, bin_size]), start])])
    k1 = b.const(np.arange(1, group + 1, dtype=np.float32)[None])
    hi = b.op("Ceil", [b.op("Add", [b.op("Mul", [k1, bin_size]), start])])
    lo, hi, mask = _onnx_cell_mask(b, lo, hi, size)
    return b.op("Cast", [mask], to=1), b.op("Sub", [hi, lo])


@register_export("PSROIPooling")
class PSROIPoolingExport(LayerExport):
    """R-FCN's PSROIPooling: each bin's average of its own channel group as masked sums
    (Mul, ReduceSum over columns then rows) divided by the bin's cell count."""

    fixed_batch = "its ROIs' count is the rois input's axis 0, not the batch"

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        layer = node.layer
        x, rois = node.bottoms
        _, _, height, width = b.shape(x)
        d, g = layer.output_dim, layer.group_size
        r, feat = _onnx_roi_features(b, x, rois)
        feat = b.reshape(feat, [-1, d, g, g, height, width])
        corner = _onnx_round(b, b.slice(r, [1], [5], [1]))
        start = b.mul_scalar(b.slice(corner, [0], [2], [1]), layer.spatial_scale)
        end = b.mul_scalar(b.op("Add", [b.slice(corner, [2], [4], [1]), b.scalar(1.0)]),
                           layer.spatial_scale)
        sw, sh = (b.slice(start, [i], [i + 1], [1]) for i in (0, 1))
        ew, eh = (b.slice(end, [i], [i + 1], [1]) for i in (0, 1))
        mask_h, n_h = _onnx_psroi_bins(b, sh, eh, g, height)
        mask_w, n_w = _onnx_psroi_bins(b, sw, ew, g, width)
        t = b.op("Mul", [feat, b.reshape(mask_w, [-1, 1, 1, g, 1, width])])
        t = b.reduce("ReduceSum", t, [5], False)  # (R, D, G, G, H)
        t = b.op("Mul", [t, b.reshape(mask_h, [-1, 1, g, 1, height])])
        t = b.reduce("ReduceSum", t, [4], False)  # (R, D, G, G)
        area = b.op("Mul", [b.reshape(n_h, [-1, 1, g, 1]), b.reshape(n_w, [-1, 1, 1, g])])
        avg = b.op("Div", [t, b.op("Max", [area, b.scalar(1.0)])])
        b.op("Where", [b.op("Greater", [area, b.scalar(0.0)]), avg, b.scalar(0.0)],
             node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        layer = node.layer
        x, rois = (s.v(v) for v in node.bottoms)
        return (f"{s.h('caffe_psroi_pool')}({x}, {rois}, {layer.output_dim}, "
                f"{layer.group_size}, {float(layer.spatial_scale)!r})")


@register_export("GuidedDropout")
class GuidedDropoutExport(LayerExport):
    """Cysu's GuidedDropout: "deterministic" keeps the (n, c) planes whose guidance is above
    the threshold, scaled by C / (number kept) (a sample keeping none is left as 0·x);
    "stochastic" at TEST is the identity."""

    def refuse(self, node: Node, graph: ExportGraph) -> str | None:
        if node.layer.kind != "deterministic" and node.layer.in_train:
            return ("a TRAIN-phase stochastic GuidedDropout drops random channels at every "
                    "pass; export the TEST-phase net, where it is the identity")
        return None

    def onnx(self, b: OnnxBuilder, node: Node) -> None:
        x, guide = node.bottoms
        if node.layer.kind != "deterministic":
            b.identity(x, node.tops[0])
            return
        shape = b.shape(x)
        mask = b.op("Cast", [b.op("Greater", [b.reshape(guide, [0, shape[1]]),
                                              b.scalar(node.layer.threshold)])], to=1)
        kept = b.reduce("ReduceSum", mask, [1], True)
        some = b.op("Greater", [kept, b.scalar(0.0)])
        scaled = b.op("Div", [b.mul_scalar(mask, float(shape[1])),
                              b.op("Where", [some, kept, b.scalar(1.0)])])
        factor = b.op("Where", [some, scaled, mask])
        factor = b.reshape(factor, [0, shape[1]] + [1] * (len(shape) - 2))
        b.op("Mul", [x, factor], node.tops[0])

    def torch(self, s: SourceBuilder, node: Node) -> str:
        x, guide = (s.v(v) for v in node.bottoms)
        if node.layer.kind != "deterministic":
            return x
        shape = s.shape(node.bottoms[0])
        c = shape[1]
        view = _tuple((-1, c) + (1,) * (len(shape) - 2))
        mask = f"({guide}.reshape(-1, {c}) > {float(node.layer.threshold)!r}).to({x}.dtype)"
        return (f"{x} * (lambda m: torch.where(m.sum(1, keepdim=True) > 0, m * {c} / "
                f"torch.clamp(m.sum(1, keepdim=True), min=1), m))({mask}).reshape({view})")

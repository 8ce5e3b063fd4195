"""The SSD fork's detection layers (weiliu89/caffe): PriorBox, Permute, Normalize,
DetectionOutput, MultiBoxLoss and DetectionEvaluate. (AnnotatedData is in data_ssd.)

Boxes are normalized [xmin, ymin, xmax, ymax]. The layout of the tensors SSD passes around:

- prior ``[1, 2, P·4]``: the P prior boxes, then their four variances;
- loc ``[N, P·L·4]`` (L = 1 with share_location, else num_classes) and conf
  ``[N, P·num_classes]``, prior-major;
- ground truth ``[1, 1, G, 8]``: rows [item_id, label, instance_id, xmin, ymin, xmax, ymax,
  difficult], item_id -1 for padding;
- detections ``[1, 1, D, 7]``: rows [image_id, label, score, xmin, ymin, xmax, ymax].

Matching, mining, NMS and evaluation are the fork's bbox_util (decaffe.bbox), in single
precision on the host; the loss itself is torch, so autograd gives MultiBoxLoss's backward.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd.function import FunctionCtx

from ... import bbox as B
from ... import fillers
from ... import log as _log
from ...layer import Layer, Shape, Tops, register
from ...proto import caffe_pb2
from ..loss import FLT_MIN, VALID, _LossLayer

F32 = np.float32
_MB = caffe_pb2.MultiBoxLossParameter
_RESIZE = caffe_pb2.ResizeParameter


# ------------------------------------------------------------------------------------------
# PriorBox
# ------------------------------------------------------------------------------------------
@register("PriorBox")
class PriorBoxLayer(Layer):
    """SSD's default boxes for every cell of a feature map, normalised to the image.

    Bottoms: feat, N×C×H×W (the feature map; only its H, W are read); image, N×C'×H_img×W_img
    (its size, unless img_size or img_h/img_w is given). Neither gets a gradient.
    Tops: 1×2×H·W·K·4: the K boxes [xmin, ymin, xmax, ymax] of every cell (row-major cells,
    then the priors), then one variance row of the same length.
    Blobs: none.
    Params: prior_box_param (PriorBoxParameter): min_size (required, repeated, > 0),
    max_size (one per min_size, each > it), aspect_ratio (repeated; 1 is always included),
    flip (default true: adds 1/r), clip (default false), variance (1 or 4 values; default
    0.1), img_size or img_h/img_w (default: bottom 1's size), step or step_h/step_w (default:
    image size / feature size), offset (default 0.5).
    Source: weiliu89/caffe (ssd) src/caffe/layers/prior_box_layer.cpp.

    At cell (h, w) the centre is ((w + offset)·step_w, (h + offset)·step_h). For each
    min_size (truncated to an integer, as the fork does): a min_size square, then (with
    max_size) a √(min·max) square, then a box of each aspect ratio r ≠ 1 (width min·√r,
    height min/√r). clip clamps to [0, 1]. No backward.
    """

    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.prior_box_param
        self.check(len(p.min_size) > 0, "must provide min_size", "prior_box_param.min_size")
        for v in p.min_size:
            self.check(v > 0, "min_size must be positive", "prior_box_param.min_size")
        self.min_sizes = [float(v) for v in p.min_size]
        ars = [1.0]
        for ar in p.aspect_ratio:
            if any(abs(ar - a) < 1e-6 for a in ars):
                continue
            ars.append(float(ar))
            if p.flip:
                ars.append(float(np.float32(1.0 / ar)))
        self.aspect_ratios = ars
        self.max_sizes: list[float] = []
        if len(p.max_size):
            self.check(len(p.max_size) == len(p.min_size),
                       f"{len(p.max_size)} max_size for {len(p.min_size)} min_size",
                       "prior_box_param.max_size")
            for lo, hi in zip(p.min_size, p.max_size):
                self.check(hi > lo, "max_size must be greater than min_size",
                           "prior_box_param.max_size")
            self.max_sizes = [float(v) for v in p.max_size]
        self.num_priors = len(ars) * len(self.min_sizes) + len(self.max_sizes)
        var = list(p.variance)
        if len(var) > 1:
            self.check(len(var) == 4, f"give 1 or 4 variances, not {len(var)}",
                       "prior_box_param.variance")
        for v in var:
            self.check(v > 0, "variances must be positive", "prior_box_param.variance")
        self.variance = var or [0.1]
        if p.HasField("img_h") or p.HasField("img_w"):
            self.check(not p.HasField("img_size"),
                       "either img_size or img_h/img_w should be specified; not both",
                       "prior_box_param.img_size")
            self.check(p.img_h > 0, "img_h should be larger than 0", "prior_box_param.img_h")
            self.check(p.img_w > 0, "img_w should be larger than 0", "prior_box_param.img_w")
            self.img_h, self.img_w = int(p.img_h), int(p.img_w)
        elif p.HasField("img_size"):
            self.check(p.img_size > 0, "img_size should be larger than 0",
                       "prior_box_param.img_size")
            self.img_h = self.img_w = int(p.img_size)
        else:
            self.img_h = self.img_w = 0
        if p.HasField("step_h") or p.HasField("step_w"):
            self.check(not p.HasField("step"),
                       "either step or step_h/step_w should be specified; not both",
                       "prior_box_param.step")
            self.check(p.step_h > 0, "step_h should be larger than 0", "prior_box_param.step_h")
            self.check(p.step_w > 0, "step_w should be larger than 0", "prior_box_param.step_w")
            self.step_h, self.step_w = float(p.step_h), float(p.step_w)
        elif p.HasField("step"):
            self.check(p.step > 0, "step should be larger than 0", "prior_box_param.step")
            self.step_h = self.step_w = float(p.step)
        else:
            self.step_h = self.step_w = 0.0
        self.offset = float(p.offset)
        self.clip = bool(p.clip)
        self._cache: dict[tuple, np.ndarray] = {}

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        feat = bottom_shapes[0]
        self.check(len(feat) >= 2, f"bottom 0 has shape {tuple(feat)}; PriorBox needs a "
                   "feature map (N, C, H, W)")
        h, w = _hw(feat)
        dim = h * w * self.num_priors * 4
        self.check(dim > 0, "the feature map is empty")
        return [(1, 2, dim)]

    def priors(self, layer_h: int, layer_w: int, img_h: int, img_w: int) -> np.ndarray:
        """The [2, H·W·K·4] float32 array of boxes and variances."""
        key = (layer_h, layer_w, img_h, img_w)
        if key in self._cache:
            return self._cache[key]
        if self.img_h == 0 or self.img_w == 0:
            ih, iw = img_h, img_w
        else:
            ih, iw = self.img_h, self.img_w
        if self.step_w == 0 or self.step_h == 0:
            sw, sh = F32(F32(iw) / F32(layer_w)), F32(F32(ih) / F32(layer_h))
        else:
            sw, sh = F32(self.step_w), F32(self.step_h)
        sizes = []  # (box width, box height) of the K priors of one cell, in the fork's order
        for s, mn in enumerate(self.min_sizes):
            mn = int(mn)
            sizes.append((float(mn), float(mn)))
            big = None
            if self.max_sizes:
                big = math.sqrt(mn * int(self.max_sizes[s]))
                sizes.append((float(F32(big)), float(F32(big))))
            for ar in self.aspect_ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                r = float(np.sqrt(F32(ar)))
                sizes.append((float(F32(mn * r)), float(F32(mn / r))))
        wh = np.asarray(sizes, np.float64)  # (K, 2)
        ys, xs = np.meshgrid(np.arange(layer_h), np.arange(layer_w), indexing="ij")
        cx = ((xs.astype(F32) + F32(self.offset)) * sw).astype(np.float64).reshape(-1, 1)
        cy = ((ys.astype(F32) + F32(self.offset)) * sh).astype(np.float64).reshape(-1, 1)
        boxes = np.stack([(cx - wh[:, 0] / 2.0) / iw, (cy - wh[:, 1] / 2.0) / ih,
                          (cx + wh[:, 0] / 2.0) / iw, (cy + wh[:, 1] / 2.0) / ih], -1)
        boxes = boxes.astype(F32).reshape(-1)
        if self.clip:
            boxes = np.clip(boxes, F32(0), F32(1))
        var = np.resize(np.asarray(self.variance, F32), boxes.shape)
        out = np.stack([boxes, var])
        self._cache[key] = out
        return out

    def forward(self, feat: torch.Tensor, img: torch.Tensor) -> Tops:
        lh, lw = _hw(feat.shape)
        ih, iw = _hw(img.shape)
        out = torch.from_numpy(self.priors(lh, lw, ih, iw))
        return out.to(device=feat.device, dtype=feat.dtype).unsqueeze(0)


def _hw(shape: Shape) -> tuple[int, int]:
    """Caffe's legacy height()/width(): axes 2 and 3, 1 where missing."""
    shape = tuple(shape)
    return (int(shape[2]) if len(shape) > 2 else 1), (int(shape[3]) if len(shape) > 3 else 1)


# ------------------------------------------------------------------------------------------
# Permute
# ------------------------------------------------------------------------------------------
@register("Permute")
class PermuteLayer(Layer):
    """Reorders the axes: permute_param.order lists the new axes' old indices.

    Bottoms: x, any shape with A axes.
    Tops: x's values with the axes reordered (shape [x.shape[o] for o in the full order]).
    Blobs: none.
    Params: permute_param (PermuteParameter): order (repeated; each once and below A; the
    axes not listed follow in their old order).
    Source: weiliu89/caffe (ssd) src/caffe/layers/permute_layer.cpp.

    SSD uses order 0, 2, 3, 1 (N×C×H×W to N×H×W×C). The backward permutes the diff back.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        n = len(bottom_shapes[0])
        orders: list[int] = []
        for o in self.lp.permute_param.order:
            self.check(o < n, f"order {o} should be less than the input dimension {n}",
                       "permute_param.order")
            self.check(o not in orders, f"there are duplicate orders ({o})",
                       "permute_param.order")
            orders.append(int(o))
        orders += [i for i in range(n) if i not in orders]
        self.orders = orders

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        s = tuple(bottom_shapes[0])
        self.check(len(s) == len(self.orders), f"the bottom has {len(s)} axes; the layer was "
                   f"set up for {len(self.orders)}")
        return [tuple(s[o] for o in self.orders)]

    def forward(self, x: torch.Tensor) -> Tops:
        if self.orders == list(range(x.dim())):
            return x
        return x.permute(*self.orders).contiguous()


# ------------------------------------------------------------------------------------------
# Normalize
# ------------------------------------------------------------------------------------------
@register("Normalize")
class NormalizeLayer(Layer):
    """L2 normalisation with a learned scale (ParseNet, SSD's conv4_3_norm).

    Bottoms: x, N×C, N×C×H or N×C×H×W (missing spatial axes count as 1).
    Tops: y, x's shape.
    Blobs: scale, shape () with channel_shared, else C.
    Params: norm_param (NormalizeParameter): across_spatial (default true), channel_shared
    (default true), scale_filler (default constant 1), eps (default 1e-10).
    Source: weiliu89/caffe (ssd) src/caffe/layers/normalize_layer.cpp.

    across_spatial: each example is divided by √(Σx² + eps) over all its values; otherwise
    each position (h, w) by √(Σ_c x² + eps) over the channels. Then y = scale·x̂. The backward
    is the fork's: the bottom diff is scale_c·(g − x·Σ(x·g)/norm²)/norm, which is the true
    gradient only when the scale is one value (docs/compat.md).
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        shape = tuple(bottom_shapes[0])
        self.check(2 <= len(shape) <= 4, f"the bottom has shape {shape}; Normalize needs 2 "
                   "to 4 axes")
        p = self.lp.norm_param
        self.across_spatial = bool(p.across_spatial)
        self.channel_shared = bool(p.channel_shared)
        self.eps = float(p.eps)
        c = int(shape[1])
        want = () if self.channel_shared else (c,)
        if self.num_blobs == 0:
            fp = p.scale_filler if p.HasField("scale_filler") else fillers.filler_param(
                type="constant", value=1.0)
            self.add_blob(fillers.fill(fp, want, where=f"layer '{self.name}'"))
        n = self.blob(0).numel()
        self.check(n == (1 if self.channel_shared else c),
                   f"scale size {n} is inconsistent with the prototxt "
                   f"({'channel_shared' if self.channel_shared else f'{c} channels'})",
                   "norm_param.channel_shared")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.check(2 <= len(shape) <= 4, f"the bottom has shape {shape}; Normalize needs 2 "
                   "to 4 axes")
        return [shape]

    def forward(self, x: torch.Tensor) -> Tops:
        n, c = x.shape[0], x.shape[1]
        scale = self.blob(0).reshape(1, 1, 1) if self.channel_shared else \
            self.blob(0).reshape(1, c, 1)
        y = _NormalizeFn.apply(x.reshape(n, c, -1), scale, self.across_spatial, self.eps)
        return y.reshape(x.shape)


class _NormalizeFn(torch.autograd.Function):
    """y = scale · x / norm, with the fork's backward: the bottom diff is
    scale_c · (g − x·Σ(x·g)/norm²)/norm (the sum over the normalized group, without the
    scale, so it is the true gradient only when the scale is one value), the scale diff
    Σ(x/norm · g) over everything the scale multiplies."""

    @staticmethod
    def forward(ctx: FunctionCtx, x3: torch.Tensor, scale: torch.Tensor, across_spatial: bool,
                eps: float):
        dims = (1, 2) if across_spatial else (1,)
        norm = torch.sqrt((x3 * x3).sum(dim=dims, keepdim=True) + eps)
        xhat = x3 / norm
        ctx.save_for_backward(x3, norm, xhat, scale)
        ctx.dims = dims
        return xhat * scale

    @staticmethod
    def backward(ctx: FunctionCtx, g: torch.Tensor):
        x3, norm, xhat, scale = ctx.saved_tensors
        gx = gs = None
        if ctx.needs_input_grad[0]:
            a = (x3 * g).sum(dim=ctx.dims, keepdim=True)
            gx = (g - x3 * a / (norm * norm)) / norm * scale
        if ctx.needs_input_grad[1]:
            prod = xhat * g
            if scale.shape[1] == 1:
                gs = prod.sum().reshape(scale.shape)
            else:
                gs = prod.sum(dim=(0, 2), keepdim=True)
        return gx, gs, None, None


# ------------------------------------------------------------------------------------------
# DetectionOutput
# ------------------------------------------------------------------------------------------
def _prior_arrays(prior: torch.Tensor, num_priors: int):
    arr = prior.detach().to("cpu", torch.float32).numpy().reshape(-1)
    boxes = arr[:num_priors * 4].reshape(num_priors, 4)
    var = arr[num_priors * 4:num_priors * 8].reshape(num_priors, 4)
    return boxes, var


@register("DetectionOutput")
class DetectionOutputLayer(Layer):
    """SSD's detections: decoded boxes, per-class NMS, then the keep_top_k best per image.

    Bottoms: loc, N×P·L·4 (any shape of that count; L = 1 with share_location, else
    num_classes); conf, N×P·num_classes (usually softmax scores); prior, 1×2×P·4 (PriorBox's
    top). None gets a gradient (no backward).
    Tops: 1×1×D×7 rows [image, label, score, xmin, ymin, xmax, ymax] (boxes not clipped), by
    image, then label, then score; with no detection at all one row [i, −1, −1, −1, −1, −1,
    −1] per image i. D depends on the data.
    Blobs: none.
    Params: detection_output_param (DetectionOutputParameter): num_classes (required),
    share_location (default true), background_label_id (default 0; −1: none), code_type
    (default CORNER; CENTER_SIZE, CORNER_SIZE), variance_encoded_in_target (default false),
    keep_top_k (default −1: all), confidence_threshold (unset: −FLT_MAX; kept strictly
    above), nms_param (NonMaximumSuppressionParameter): nms_threshold (default 0.3, >= 0),
    top_k (unset: all), eta (default 1, in (0, 1]). save_output_param and visualize are read
    and ignored with a warning; the top is what the fork computes.
    Source: weiliu89/caffe (ssd) src/caffe/layers/detection_output_layer.cpp,
    src/caffe/util/bbox_util.cpp.

    Equal scores keep the fork's order: index order within a class (its std::stable_sort),
    and over keep_top_k the order libstdc++'s std::sort (introsort) leaves the (score,
    (label, index)) pairs in — not stable once more than 16 pairs are sorted. NMS and the
    sort run as array operations (no loop over boxes; see decaffe.bbox.nms_fast and
    std_sort_descending).
    """

    exact_bottoms = 3
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.detection_output_param
        self.check(p.HasField("num_classes"), "must specify num_classes",
                   "detection_output_param.num_classes")
        self.num_classes = int(p.num_classes)
        self.share_location = bool(p.share_location)
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background = int(p.background_label_id)
        self.code_type = int(p.code_type)
        self.variance_in_target = bool(p.variance_encoded_in_target)
        self.keep_top_k = int(p.keep_top_k)
        self.conf_threshold = float(p.confidence_threshold) if p.HasField(
            "confidence_threshold") else -float(np.finfo(F32).max)
        nms = p.nms_param
        self.nms_threshold = float(nms.nms_threshold)
        self.check(self.nms_threshold >= 0, "nms_threshold must be non negative",
                   "detection_output_param.nms_param.nms_threshold")
        self.eta = float(nms.eta)
        self.check(0 < self.eta <= 1, "eta must be in (0, 1]",
                   "detection_output_param.nms_param.eta")
        self.top_k = int(nms.top_k) if nms.HasField("top_k") else -1
        if p.save_output_param.output_directory or p.visualize:
            _log.warning(f"layer '{self.name}': DetectionOutput's save_output_param and "
                         "visualize are ignored by decaffe (the top is unchanged)")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        loc, conf, prior = (tuple(s) for s in bottom_shapes)
        self.check(loc[0] == conf[0], f"loc has {loc[0]} items, conf {conf[0]}")
        self.num_priors = _hw(prior)[0] // 4 if len(prior) > 2 else 0
        ploc = int(np.prod(loc[1:]))
        pconf = int(np.prod(conf[1:]))
        self.check(self.num_priors * self.num_loc_classes * 4 == ploc,
                   f"number of priors ({self.num_priors}) must match number of location "
                   f"predictions ({ploc} = priors x {self.num_loc_classes} x 4 expected)")
        self.check(self.num_priors * self.num_classes == pconf,
                   f"number of priors ({self.num_priors}) must match number of confidence "
                   f"predictions ({pconf} = priors x {self.num_classes} expected)")
        return [(1, 1, 1, 7)]

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor) -> Tops:
        n, p, c, lc = loc.shape[0], self.num_priors, self.num_classes, self.num_loc_classes
        loc_np = loc.detach().to("cpu", torch.float32).numpy().reshape(n, p, lc, 4)
        conf_np = conf.detach().to("cpu", torch.float32).numpy().reshape(n, p, c)
        pboxes, pvar = _prior_arrays(prior, p)
        parts = []
        for i in range(n):  # images, then classes; no loop over boxes
            decoded = {}
            for k in range(lc):
                label = -1 if self.share_location else k
                if label == self.background:
                    continue
                decoded[label] = B.decode(pboxes, pvar, self.code_type,
                                          self.variance_in_target, loc_np[i, :, k])
            labels, index = [], []
            for cls in range(c):
                if cls == self.background:
                    continue
                boxes = decoded.get(-1 if self.share_location else cls)
                if boxes is None:
                    raise self.error(f"could not find location predictions for label {cls}")
                kept = B.nms_fast(boxes, conf_np[i, :, cls], self.conf_threshold,
                                  self.nms_threshold, self.eta, self.top_k)
                labels.append(np.full(len(kept), cls, np.int64))
                index.append(np.asarray(kept, np.int64))
            lab = np.concatenate(labels) if labels else np.zeros(0, np.int64)
            idx = np.concatenate(index) if index else np.zeros(0, np.int64)
            if self.keep_top_k > -1 and lab.size > self.keep_top_k:
                # the fork's std::sort of (score, (label, index)) pairs, labels ascending and
                # each label's NMS order going in: equal scores land where it puts them
                order = B.std_sort_descending(conf_np[i, idx, lab])[:self.keep_top_k]
                lab, idx = lab[order], idx[order]
                # rows by label (the fork's std::map), each label's in that sorted order
                by_label = np.argsort(lab, kind="stable")
                lab, idx = lab[by_label], idx[by_label]
            if lab.size:
                if self.share_location:
                    boxes = decoded[-1][idx]
                else:  # labels ascend: each label's boxes, in its rows' order
                    boxes = np.concatenate([decoded[int(k)][idx[lab == k]]
                                            for k in np.unique(lab)])
                rows = np.empty((lab.size, 7), F32)
                rows[:, 0] = i
                rows[:, 1] = lab
                rows[:, 2] = conf_np[i, idx, lab]
                rows[:, 3:] = boxes
                parts.append(rows)
        if parts:
            out = np.concatenate(parts)
        else:
            out = np.full((n, 7), -1, F32)
            out[:, 0] = np.arange(n)
        return torch.from_numpy(out).to(device=loc.device, dtype=loc.dtype).reshape(
            1, 1, -1, 7)


# ------------------------------------------------------------------------------------------
# MultiBoxLoss
# ------------------------------------------------------------------------------------------
# item id: its (boxes, labels, difficult), as _ground_truth gives them
_GroundTruth = dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _ground_truth(gt: np.ndarray, background: int, use_difficult: bool, layer: Layer):
    """GetGroundTruth: {item_id: (boxes (G, 4), labels (G,), difficult (G,))}."""
    out: dict[int, list] = {}
    for row in gt.reshape(-1, 8):
        item = int(row[0])
        if item == -1:
            continue
        label = int(row[1])
        if label == background:
            raise layer.error(f"found background label {label} in the ground truth (item "
                              f"{item})")
        difficult = bool(row[7])
        if not use_difficult and difficult:
            continue
        out.setdefault(item, []).append((row[3:7], label, difficult))
    return {k: (np.asarray([r[0] for r in v], F32).reshape(-1, 4),
                np.asarray([r[1] for r in v], np.int64), np.asarray([r[2] for r in v], bool))
            for k, v in out.items()}


def _conf_loss_np(conf: np.ndarray, labels: np.ndarray, logistic: bool) -> np.ndarray:
    """ComputeConfLoss per prior (rows of conf, each its target label), in float32."""
    if not logistic:
        m = conf.max(1, keepdims=True)
        s = np.exp(conf - m).sum(1)
        prob = np.exp(conf[np.arange(len(conf)), labels] - m[:, 0]) / s
        return (-np.log(np.maximum(prob, F32(FLT_MIN)))).astype(F32)
    t = np.zeros_like(conf)
    t[np.arange(len(conf)), labels] = 1
    pos = (conf >= 0).astype(F32)
    term = conf * (t - pos) - np.log1p(np.exp(conf - F32(2) * conf * pos))
    return (-term.sum(1)).astype(F32)


@register("MultiBoxLoss")
class MultiBoxLossLayer(_LossLayer):
    """SSD's training loss: localisation of matched priors plus confidence of matches and negatives.

    Bottoms: loc, N×P·L·4 (L = 1 with share_location, else num_classes); conf,
    N×P·num_classes; prior, 1×2×P·4 (PriorBox's); label, 1×1×G×8 ground-truth rows [item,
    label, instance, xmin, ymin, xmax, ymax, difficult]. prior and label get no gradient
    (the layer refuses one); loc and conf get theirs unless propagate_down says false.
    Tops: loss, a scalar (shape ()); loss_weight 1 by default (a loss layer).
    Blobs: none.
    Params: multibox_loss_param (MultiBoxLossParameter): num_classes (required, >= 1),
    share_location (default true), background_label_id (default 0), loc_loss_type
    (SMOOTH_L1, default; L2), conf_loss_type (SOFTMAX, default; LOGISTIC), loc_weight
    (default 1), match_type (PER_PREDICTION, default; BIPARTITE), overlap_threshold (default
    0.5), use_prior_for_matching (default true), use_difficult_gt (default true),
    mining_type (MAX_NEGATIVE, default; HARD_EXAMPLE; NONE) or the old do_neg_mining,
    neg_pos_ratio (default 3), neg_overlap (default 0.5), sample_size (default 64), nms_param,
    code_type (default CORNER), encode_variance_in_target (default false),
    map_object_to_agnostic (default false), ignore_cross_boundary_bbox (default false),
    use_prior_for_nms (default false), bp_inside (default false); loss_param.normalization
    (default VALID).
    Source: weiliu89/caffe (ssd) src/caffe/layers/multibox_loss_layer.cpp,
    src/caffe/util/bbox_util.cpp.

    Each image's ground-truth boxes are matched to the priors (use_prior_for_matching) or to
    the decoded predictions: bipartite, then (PER_PREDICTION) every prediction overlapping a
    box by ≥ overlap_threshold. Negatives are mined: MAX_NEGATIVE takes the unmatched priors
    with overlap < neg_overlap and the highest confidence loss, at most neg_pos_ratio ×
    positives; HARD_EXAMPLE ranks all priors by confidence + localization loss and keeps
    sample_size of them (positives not kept are dropped); NONE uses every prior. Optional
    NMS among the candidates (nms_param).

    loss = loc_weight · Σ loc loss(matched loc, encoded gt) / n + Σ conf loss / n, with
    SMOOTH_L1 or L2 (½ diff²) localization, SOFTMAX (background as the negatives' class) or
    LOGISTIC confidence loss, and n from loss_param.normalization (VALID: the number of
    matches; FULL: N·P; BATCH_SIZE: N; NONE: 1; at least 1). A term is left out when
    propagate_down says false for its bottom (the fork's default is true, true, false,
    false).
    """

    exact_bottoms = 4

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index < 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()
        p = self.lp.multibox_loss_param
        self.p = p
        self.check(p.HasField("num_classes"), "must provide num_classes",
                   "multibox_loss_param.num_classes")
        self.num_classes = int(p.num_classes)
        self.check(self.num_classes >= 1, "num_classes should not be less than 1",
                   "multibox_loss_param.num_classes")
        self.share_location = bool(p.share_location)
        self.loc_classes = 1 if self.share_location else self.num_classes
        self.background = int(p.background_label_id)
        self.mining = int(p.mining_type)
        if p.HasField("do_neg_mining"):
            self.check(bool(p.do_neg_mining) == (self.mining != _MB.NONE),
                       "do_neg_mining (deprecated) contradicts mining_type",
                       "multibox_loss_param.do_neg_mining")
        self.do_neg_mining = self.mining != _MB.NONE
        if self.do_neg_mining:
            self.check(self.share_location, "negative mining needs share_location: true",
                       "multibox_loss_param.share_location")
        if p.map_object_to_agnostic:
            want = 2 if self.background >= 0 else 1
            self.check(self.num_classes == want, f"map_object_to_agnostic needs num_classes "
                       f"{want}", "multibox_loss_param.num_classes")
        self.logistic = p.conf_loss_type == _MB.LOGISTIC
        if not self.logistic:
            self.check(0 <= self.background < self.num_classes,
                       "background_label_id should be within [0, num_classes) for Softmax",
                       "multibox_loss_param.background_label_id")
        if self.mining == _MB.HARD_EXAMPLE:
            self.check(p.sample_size > 0, "HARD_EXAMPLE mining needs sample_size > 0",
                       "multibox_loss_param.sample_size")
        self.normalization = self._normalization(VALID)
        pd = list(self.lp.propagate_down)
        self.use_loc, self.use_conf = (pd[0], pd[1]) if pd else (True, True)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        loc, conf, prior, _ = (tuple(s) for s in bottom_shapes)
        self.check(loc[0] == conf[0], f"loc has {loc[0]} items, conf {conf[0]}")
        self.num_priors = _hw(prior)[0] // 4 if len(prior) > 2 else 0
        ploc, pconf = int(np.prod(loc[1:])), int(np.prod(conf[1:]))
        self.check(self.num_priors * self.loc_classes * 4 == ploc,
                   f"number of priors ({self.num_priors}) must match number of location "
                   f"predictions ({ploc})")
        self.check(self.num_priors * self.num_classes == pconf,
                   f"number of priors ({self.num_priors}) must match number of confidence "
                   f"predictions ({pconf})")
        return [()]

    # -- matching and mining (host side) --------------------------------------------------
    def _find_matches(self, loc_np: np.ndarray, gts: _GroundTruth, pboxes: np.ndarray,
                      pvar: np.ndarray):
        p = self.p
        all_idx, all_ov = [], []
        for i in range(loc_np.shape[0]):
            idx: dict[int, np.ndarray] = {}
            ov: dict[int, np.ndarray] = {}
            if i in gts:
                gboxes, glabels, _ = gts[i]
                if not p.use_prior_for_matching:
                    for k in range(self.loc_classes):
                        label = -1 if self.share_location else k
                        if not self.share_location and label == self.background:
                            continue
                        dec = B.decode(pboxes, pvar, p.code_type, p.encode_variance_in_target,
                                       loc_np[i, :, k])
                        idx[label], ov[label] = B.match(
                            gboxes, glabels, dec, label, p.match_type, p.overlap_threshold,
                            p.ignore_cross_boundary_bbox)
                else:
                    m, o = B.match(gboxes, glabels, pboxes, -1, p.match_type,
                                   p.overlap_threshold, p.ignore_cross_boundary_bbox)
                    if self.share_location:
                        idx[-1], ov[-1] = m, o
                    else:
                        for k in range(self.loc_classes):
                            if k == self.background:
                                continue
                            mk = np.full_like(m, -1)
                            hit = m > -1
                            hit[hit] = glabels[m[hit]] == k
                            mk[hit] = m[hit]
                            idx[k], ov[k] = mk, o.copy()
            all_idx.append(idx)
            all_ov.append(ov)
        return all_idx, all_ov

    def _prior_labels(self, idx: dict, gts: _GroundTruth, i: int) -> np.ndarray:
        """Each prior's target class: the label of its match (first by label), else
        background."""
        labels = np.full(self.num_priors, self.background, np.int64)
        done = np.zeros(self.num_priors, bool)
        for k in sorted(idx):
            m = idx[k]
            take = (m > -1) & ~done
            labels[take] = gts[i][1][m[take]]
            done |= take
        return labels

    def _encode_loc(self, loc_np: np.ndarray, gts: _GroundTruth,
                    all_idx: list[dict[int, np.ndarray]], pboxes: np.ndarray, pvar: np.ndarray):
        """EncodeLocPrediction: (rows (i, prior, loc class), gt encodings, replaced mask)."""
        p = self.p
        where, targets, keep_pred = [], [], []
        for i, idx in enumerate(all_idx):
            for k in sorted(idx):
                m = idx[k]
                js = np.nonzero(m > -1)[0]
                if not len(js):
                    continue
                col = 0 if self.share_location else k
                enc = B.encode(pboxes[js], pvar[js], p.code_type, p.encode_variance_in_target,
                               gts[i][0][m[js]])
                mask = np.ones((len(js), 4), bool)
                if p.bp_inside:
                    mb = pboxes[js]
                    if not p.use_prior_for_matching:
                        mb = B.decode(pboxes[js], pvar[js], p.code_type,
                                      p.encode_variance_in_target, loc_np[i, js, col])
                    mask = (mb >= 0) & (mb <= 1)
                where.extend((i, j, col) for j in js)
                targets.append(enc)
                keep_pred.append(mask)
        if not where:
            return [], np.zeros((0, 4), F32), np.zeros((0, 4), bool)
        return where, np.concatenate(targets), np.concatenate(keep_pred)

    def _mine(self, loc_np: np.ndarray, conf_np: np.ndarray, gts: _GroundTruth,
              all_idx: list[dict[int, np.ndarray]], all_ov: list[dict[int, np.ndarray]],
              pboxes: np.ndarray, pvar: np.ndarray):
        """MineHardExamples: negatives per image (and, HARD_EXAMPLE, fewer positives)."""
        p = self.p
        n = conf_np.shape[0]
        negs: list[list[int]] = [[] for _ in range(n)]
        if self.mining == _MB.NONE:
            return negs
        conf_loss = [_conf_loss_np(conf_np[i], self._prior_labels(all_idx[i], gts, i),
                                   self.logistic) for i in range(n)]
        loc_loss = [np.zeros(self.num_priors, F32) for _ in range(n)]
        if self.mining == _MB.HARD_EXAMPLE:
            where, enc, mask = self._encode_loc(loc_np, gts, all_idx, pboxes, pvar)
            for r, (i, j, col) in enumerate(where):
                pred = np.where(mask[r], loc_np[i, j, col], enc[r])
                d = _loc_scaled(pred, pvar[j], p) - _loc_scaled(enc[r], pvar[j], p)
                a = np.abs(d)
                if p.loc_loss_type == _MB.SMOOTH_L1:
                    val = np.where(a < 1, F32(0.5) * d * d, a - F32(0.5))
                else:
                    val = F32(0.5) * d * d
                loc_loss[i][j] = val.sum(dtype=F32)
        has_nms = p.HasField("nms_param") and p.nms_param.nms_threshold > 0
        for i in range(n):
            loss = conf_loss[i] + loc_loss[i]
            for k in sorted(all_idx[i]):
                m, ov = all_idx[i][k], all_ov[i][k]
                if self.mining == _MB.MAX_NEGATIVE:
                    elig = (m == -1) & (ov < F32(p.neg_overlap))
                    num_sel = min(int(np.float32(int((m > -1).sum())) *
                                      np.float32(p.neg_pos_ratio)), int(elig.sum()))
                else:
                    elig = np.ones(len(m), bool)
                    num_sel = min(int(p.sample_size), int(elig.sum()))
                cand = np.nonzero(elig)[0]
                if has_nms:
                    if p.use_prior_for_nms:
                        boxes = pboxes[cand]
                    else:
                        boxes = B.decode(pboxes, pvar, p.code_type, p.encode_variance_in_target,
                                         loc_np[i, :, 0 if self.share_location else k])[cand]
                    top_k = int(p.nms_param.top_k) if p.nms_param.HasField("top_k") else -1
                    picked = B.nms(boxes, loss[cand], p.nms_param.nms_threshold, top_k)
                    sel = set(int(cand[t]) for t in picked[:num_sel])
                else:
                    order = B._descending(loss[cand])
                    sel = set(int(cand[t]) for t in order[:num_sel])
                chosen = np.zeros(len(m), bool)
                chosen[list(sel)] = True
                negs[i].extend(int(j) for j in np.nonzero((m == -1) & chosen)[0])
                if self.mining == _MB.HARD_EXAMPLE:
                    m[(m > -1) & ~chosen] = -1
        return negs

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor,
                label: torch.Tensor) -> Tops:
        self._refuse_label_grad(prior, "prior")
        self._refuse_label_grad(label, "label")
        p = self.p
        n, np_, c = loc.shape[0], self.num_priors, self.num_classes
        loc_np = loc.detach().to("cpu", torch.float32).numpy().reshape(n, np_, self.loc_classes,
                                                                          4)
        conf_np = conf.detach().to("cpu", torch.float32).numpy().reshape(n, np_, c)
        pboxes, pvar = _prior_arrays(prior, np_)
        gt = label.detach().to("cpu", torch.float32).numpy()
        rows = _hw(label.shape)[0] if label.dim() > 2 else 0
        gts = _ground_truth(gt.reshape(-1)[:rows * 8], self.background,
                            bool(p.use_difficult_gt), self)
        all_idx, all_ov = self._find_matches(loc_np, gts, pboxes, pvar)
        negs = self._mine(loc_np, conf_np, gts, all_idx, all_ov, pboxes, pvar)
        num_matches = sum(int((m > -1).sum()) for idx in all_idx for m in idx.values())
        normalizer = self._normalizer(self.normalization, n, np_, torch.tensor(num_matches))
        normalizer = float(normalizer)
        dev, dt = loc.device, loc.dtype
        # Empty slices keep the loss in the graph (zero gradients) when no term applies.
        total = loc.reshape(-1)[:0].sum() + conf.reshape(-1)[:0].sum()
        if self.use_loc and num_matches:
            where, enc, mask = self._encode_loc(loc_np, gts, all_idx, pboxes, pvar)
            ii = torch.tensor([w[0] for w in where], device=dev)
            jj = torch.tensor([w[1] for w in where], device=dev)
            kk = torch.tensor([w[2] for w in where], device=dev)
            pred = loc.reshape(n, np_, self.loc_classes, 4)[ii, jj, kk]
            target = torch.from_numpy(enc).to(dev, dt)
            pred = torch.where(torch.from_numpy(mask).to(dev), pred, target)
            if p.encode_variance_in_target:
                v = torch.from_numpy(pvar[[w[1] for w in where]]).to(dev, dt)
                pred, target = pred / v, target / v
            d = pred - target
            if p.loc_loss_type == _MB.SMOOTH_L1:
                a = d.abs()
                ll = torch.where(a < 1, 0.5 * d * d, a - 0.5).sum()
            else:
                ll = 0.5 * (d * d).sum()
            total = total + float(p.loc_weight) * ll / normalizer
        if self.use_conf:
            cl = self._conf_term(conf, gts, all_idx, negs)
            if cl is not None:
                total = total + cl / normalizer
        return total

    def _conf_term(self, conf: torch.Tensor, gts: _GroundTruth,
                   all_idx: list[dict[int, np.ndarray]], negs: list[list[int]]):
        p = self.p
        n, np_, c = conf.shape[0], self.num_priors, self.num_classes
        dev, dt = conf.device, conf.dtype
        agnostic = bool(p.map_object_to_agnostic)
        conf3 = conf.reshape(n, np_, c)
        if self.do_neg_mining:
            ii, jj, labels = [], [], []
            for i in range(n):
                if i not in gts:
                    continue
                for k in sorted(all_idx[i]):
                    m = all_idx[i][k]
                    for j in np.nonzero(m > -1)[0]:
                        ii.append(i)
                        jj.append(int(j))
                        labels.append(self.background + 1 if agnostic else
                                      int(gts[i][1][m[j]]))
                for j in negs[i]:
                    ii.append(i)
                    jj.append(j)
                    labels.append(-1)  # background
            if not ii:
                return None
            rows = conf3[torch.tensor(ii, device=dev), torch.tensor(jj, device=dev)]
            lab = np.asarray(labels, np.int64)
            if not self.logistic:
                lab = np.where(lab == -1, self.background, lab)
                return _softmax_loss(rows, torch.from_numpy(lab).to(dev))
            target = np.full((len(lab), c), float(self.background), F32)
            for r, lb in enumerate(lab):
                if lb == -1:
                    if 0 <= self.background < c:
                        target[r, self.background] = 1
                else:
                    target[r, lb] = 1
            return _logistic_loss(rows, torch.from_numpy(target).to(dev, dt))
        # No mining: every prior counts, matched ones with their label.
        if not self.logistic:
            lab = np.full((n, np_), self.background, np.int64)
            for i in range(n):
                if i not in gts:
                    continue
                for k in sorted(all_idx[i]):
                    m = all_idx[i][k]
                    js = np.nonzero(m > -1)[0]
                    lab[i, js] = self.background + 1 if agnostic else gts[i][1][m[js]]
            return _softmax_loss(conf3.reshape(n * np_, c),
                                 torch.from_numpy(lab.reshape(-1)).to(dev))
        # The fork advances its LOGISTIC target pointer by P (not P·C) per image; kept as is.
        target = np.full(n * np_ * c, float(self.background), F32)
        for i in range(n):
            if i in gts:
                for k in sorted(all_idx[i]):
                    m = all_idx[i][k]
                    for j in np.nonzero(m > -1)[0]:
                        lb = self.background + 1 if agnostic else int(gts[i][1][m[j]])
                        target[i * np_ + j * c + lb] = 1
        return _logistic_loss(conf3.reshape(n * np_, c),
                              torch.from_numpy(target.reshape(n * np_, c)).to(dev, dt))


def _loc_scaled(v: np.ndarray, var: np.ndarray, p: caffe_pb2.MultiBoxLossParameter) -> np.ndarray:
    return (v / var).astype(F32) if p.encode_variance_in_target else v


def _softmax_loss(rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SoftmaxWithLoss, normalization NONE: Σ −log(max(p_label, FLT_MIN)); the gradient is
    Caffe's p − onehot even where the floor applies."""
    logp = torch.log_softmax(rows, dim=1).gather(1, labels.reshape(-1, 1))
    floor = math.log(FLT_MIN)
    with torch.no_grad():
        shift = logp.clamp_min(floor) - logp
    return -(logp + shift).sum()


def _logistic_loss(rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SigmoidCrossEntropyLoss over a [1, rows, C] blob: Σ of the elementwise losses."""
    return torch.nn.functional.binary_cross_entropy_with_logits(rows, target, reduction="sum")


# ------------------------------------------------------------------------------------------
# DetectionEvaluate
# ------------------------------------------------------------------------------------------
def output_bbox(box: np.ndarray, height: int, width: int,
                resize: caffe_pb2.ResizeParameter | None) -> np.ndarray:
    """OutputBBox: a normalized box (4,) in pixels of an height×width original image, undoing
    the resize_param the data layer applied (None: a plain clip and scale)."""
    box = np.asarray(box, F32)
    mode = resize.resize_mode if resize is not None else 0
    if mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD:
        rh, rw = F32(resize.height), F32(resize.width)
        aspect, raspect = F32(width) / F32(height), rw / rh
        if aspect > raspect:
            pad = (rh - rw / aspect) / F32(2)
            src = np.array([0, pad / rh, 1, 1 - pad / rh], F32)
        else:
            pad = (rw - rh * aspect) / F32(2)
            src = np.array([pad / rw, 0, 1 - pad / rw, 1], F32)
        # ProjectBBox writes its result whenever the boxes overlap, even if it is then empty.
        if not (box[0] >= src[2] or box[2] <= src[0] or box[1] >= src[3] or box[3] <= src[1]):
            sw, sh = src[2] - src[0], src[3] - src[1]
            box = B.clip_bbox(np.array([(box[0] - src[0]) / sw, (box[1] - src[1]) / sh,
                                        (box[2] - src[0]) / sw, (box[3] - src[1]) / sh], F32))
    elif mode == _RESIZE.FIT_SMALL_SIZE and resize.height_scale and resize.width_scale:
        out = B.scale_bbox(box, int(resize.height_scale), int(resize.width_scale))
        return np.clip(out, 0, np.array([width, height, width, height], F32)).astype(F32)
    return B.scale_bbox(B.clip_bbox(box), height, width)


@register("DetectionEvaluate")
class DetectionEvaluateLayer(Layer):
    """Scores detections against the ground truth: per-class positives, then true/false positives.

    Bottoms: det, 1×1×D×7 (DetectionOutput's rows); gt, 1×1×G×8 (AnnotatedData's rows).
    Neither gets a gradient (no backward).
    Tops: 1×1×(K + D)×5, K the classes other than background_label_id: first one row [−1,
    class, number of ground-truth boxes, −1, −1] per class, then per image and label each
    detection by descending score: [image, label, score, true_pos, false_pos].
    Blobs: none.
    Params: detection_evaluate_param (DetectionEvaluateParameter): num_classes (required),
    background_label_id (default 0), overlap_threshold (default 0.5, > 0),
    evaluate_difficult_gt (default true), name_size_file (lines "name height width", one per
    test image in order), resize_param (undone with name_size_file).
    Source: weiliu89/caffe (ssd) src/caffe/layers/detection_evaluate_layer.cpp,
    src/caffe/util/bbox_util.cpp (OutputBBox).

    A detection is a true positive when it overlaps an unclaimed ground-truth box of its
    label by ≥ overlap_threshold; a match with a difficult box counts as neither when
    difficult boxes are not evaluated (nor are they counted among the positives). With
    name_size_file, boxes are compared in pixels of the original sizes, the data layer's
    resize_param (WARP, FIT_SMALL_SIZE, FIT_LARGE_SIZE_AND_PAD) undone.
    """

    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.detection_evaluate_param
        self.check(p.HasField("num_classes"), "must provide num_classes",
                   "detection_evaluate_param.num_classes")
        self.num_classes = int(p.num_classes)
        self.background = int(p.background_label_id)
        self.overlap_threshold = float(p.overlap_threshold)
        self.check(self.overlap_threshold > 0, "overlap_threshold must be positive",
                   "detection_evaluate_param.overlap_threshold")
        self.evaluate_difficult = bool(p.evaluate_difficult_gt)
        self.sizes: list[tuple[int, int]] = []
        if p.HasField("name_size_file"):
            try:
                with open(p.name_size_file) as f:
                    tokens = f.read().split()
            except OSError as e:
                raise self.error(f"failed to open name size file '{p.name_size_file}': "
                                 f"{e.strerror}", "detection_evaluate_param.name_size_file") \
                    from None
            for t in range(0, len(tokens) - 2, 3):
                try:
                    self.sizes.append((int(tokens[t + 1]), int(tokens[t + 2])))
                except ValueError:
                    break  # the fork's stream read stops at the first bad line
        self.resize = p.resize_param if p.HasField("resize_param") else None
        self.count = 0

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        det, gt = (tuple(s) for s in bottom_shapes)
        self.check(len(det) == 4 and det[:2] == (1, 1) and det[3] == 7,
                   f"detections must be [1, 1, D, 7], not {det}")
        self.check(len(gt) == 4 and gt[:2] == (1, 1) and gt[3] == 8,
                   f"ground truth must be [1, 1, G, 8], not {gt}")
        k = self.num_classes if self.background == -1 else self.num_classes - 1
        return [(1, 1, k + det[2], 5)]

    def forward(self, det: torch.Tensor, gt: torch.Tensor) -> Tops:
        d = det.detach().to("cpu", torch.float32).numpy().reshape(-1, 7)
        g = gt.detach().to("cpu", torch.float32).numpy().reshape(-1, 8)
        dets: dict[int, dict[int, list]] = {}
        for row in d:
            item = int(row[0])
            if item == -1:
                continue
            label = int(row[1])
            if label == self.background:
                raise self.error(f"found background label {label} in the detection results")
            dets.setdefault(item, {}).setdefault(label, []).append((row[2], row[3:7]))
        gts: dict[int, dict[int, list]] = {}
        for row in g:
            item = int(row[0])
            if item == -1:
                break
            label = int(row[1])
            if label == self.background:
                raise self.error(f"found background label {label} in the ground truth")
            gts.setdefault(item, {}).setdefault(label, []).append((row[3:7], bool(row[7])))
        num_pos: dict[int, int] = {}
        for labels in gts.values():
            for label, boxes in labels.items():
                cnt = len(boxes) if self.evaluate_difficult else sum(not b[1] for b in boxes)
                num_pos[label] = num_pos.get(label, 0) + cnt
        out = [[-1, c, num_pos.get(c, 0), -1, -1] for c in range(self.num_classes)
               if c != self.background]
        normalized = not self.sizes
        for item in sorted(dets):
            for label in sorted(dets[item]):
                if label == -1:
                    continue
                boxes = dets[item][label]
                gt_boxes = gts.get(item, {}).get(label)
                if gt_boxes is None:
                    out.extend([item, label, s, 0, 1] for s, _ in boxes)
                    continue
                size = None
                if not normalized:
                    if self.count >= len(self.sizes):
                        raise self.error(f"more images than the {len(self.sizes)} of the name "
                                         "size file", "detection_evaluate_param.name_size_file")
                    size = self.sizes[self.count]
                gb = np.asarray([b for b, _ in gt_boxes], F32)
                if size is not None:
                    gb = np.stack([output_bbox(b, size[0], size[1], self.resize) for b in gb])
                visited = np.zeros(len(gb), bool)
                order = sorted(range(len(boxes)), key=lambda t: -float(boxes[t][0]))
                for t in order:
                    score, box = boxes[t]
                    if size is not None:
                        box = output_bbox(box, size[0], size[1], self.resize)
                    ov = B.jaccard(np.asarray(box, F32)[None], gb, normalized)[0]
                    jmax = int(np.argmax(ov))
                    row = [item, label, score, 0, 0]
                    if ov[jmax] >= F32(self.overlap_threshold):
                        if self.evaluate_difficult or not gt_boxes[jmax][1]:
                            if not visited[jmax]:
                                row[3:] = [1, 0]
                                visited[jmax] = True
                            else:
                                row[3:] = [0, 1]
                    else:
                        row[3:] = [0, 1]
                    out.append(row)
            if self.sizes:
                self.count = (self.count + 1) % len(self.sizes)
        arr = np.asarray(out, F32).reshape(1, 1, -1, 5)
        return torch.from_numpy(arr).to(device=det.device, dtype=det.dtype)

"""Other layers the forks' public models use.

- ``GuidedDropout`` (Cysu/caffe, dgd_person_reid): dropout of whole channels guided by a
  per-sample, per-channel score.
- ``CenterLoss`` (ydwen/caffe-face): the center loss with the fork's own center update.
- ``SeLu`` and ``SeLuDropout`` (soeaver's caffe-priv): the SELU activation and alpha dropout
  (Klambauer et al., "Self-Normalizing Neural Networks").
- ``SegAccuracy`` (DeepLab v2, soeaver's PSPNet models): pixel accuracy, mean class recall and
  mean IoU from a confusion matrix.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch.autograd.function import FunctionCtx

from ... import fillers
from ...layer import ElementwiseLayer, Layer, Shape, Tops, register
from ...proto import caffe_pb2
from .shape import enum_name


@register("GuidedDropout")
class GuidedDropoutLayer(Layer):
    """Dropout of whole channels, guided by a per-sample, per-channel score.

    Bottoms: x, N×C×...; guidance, N×C or N×C×1×1 (it gets no gradient, as in the fork).
    Tops: y, x's shape.
    Blobs: none.
    Params: guided_dropout_param (GuidedDropoutParameter, decaffe's number 30103: the fork's
    caffe.proto was not readable): type "deterministic" (default) or "stochastic";
    guidance_threshold (default 0); sigmoid_scaler (default 1).
    Source: Cysu/caffe (dgd_person_reid) src/caffe/layers/guided_dropout_layer.cpp.

    Each (n, c) plane is kept or dropped whole, and the kept ones of a sample are scaled by
    C / s_n. "deterministic": keep where guidance > guidance_threshold, s_n = number kept (in
    TRAIN and TEST). "stochastic": in TRAIN keep with probability
    p = sigmoid(sigmoid_scaler·guidance), s_n = Σ_c p; in TEST the identity. A sample with
    s_n = 0 is left unscaled. The backward applies the same mask and scale.
    """

    # Caffe's backward reads its forward's mask: the recorded graph stays exact
    backward_reads = "kept"

    exact_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.guided_dropout_param
        self.kind = p.type
        self.check(self.kind in ("deterministic", "stochastic"), f"must be \"deterministic\" or "
                   f"\"stochastic\", not {self.kind!r}", "guided_dropout_param.type")
        self.threshold = float(p.guidance_threshold)
        self.scaler = float(p.sigmoid_scaler)
        self.in_train = self.phase == caffe_pb2.TRAIN

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        x, g = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(len(x) >= 2 and g[:2] == x[:2] and all(d == 1 for d in g[2:]),
                   f"the guidance (bottom 1) {g} must be (num, channels, 1, 1) of bottom 0's {x}")
        return [x]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> Tops:
        self.reshape([tuple(x.shape), tuple(guidance.shape)])
        g = guidance.detach().reshape(x.shape[0], x.shape[1])
        if self.kind == "deterministic":
            mask = (g > self.threshold).to(x.dtype)
            s = mask.sum(1, keepdim=True)
        elif self.in_train:
            prob = torch.sigmoid(g * self.scaler)
            mask = (torch.rand_like(prob) <= prob).to(x.dtype)
            s = prob.sum(1, keepdim=True)
        else:
            return x.view(x.shape)
        factor = torch.where(s > 0, mask * x.shape[1] / torch.where(s > 0, s, torch.ones_like(s)),
                             mask)
        return x * factor.reshape(tuple(x.shape[:2]) + (1,) * (x.dim() - 2))


class _CenterLoss(torch.autograd.Function):
    """loss = Σ_i |x_i − c_{y_i}|² / (2M); dx = (x_i − c_{y_i})·dloss/M; the centers' gradient is
    the fork's update Σ_{y_i = j}(c_j − x_i)/(1 + n_j), independent of the loss weight."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, centers: torch.Tensor, label: torch.Tensor):
        diff = x - centers[label]
        ctx.save_for_backward(diff, label)
        ctx.num_centers = centers.shape[0]
        return (diff * diff).sum() / x.shape[0] / 2

    @staticmethod
    def backward(ctx: FunctionCtx, g: torch.Tensor):
        diff, label = ctx.saved_tensors
        dx = diff * (g / diff.shape[0])
        dc = torch.zeros((ctx.num_centers, diff.shape[1]), dtype=diff.dtype, device=diff.device)
        dc.index_add_(0, label, -diff)
        count = torch.bincount(label, minlength=ctx.num_centers).to(diff.dtype)
        return dx, dc / (1 + count).unsqueeze(1), None


@register("CenterLoss")
class CenterLossLayer(Layer):
    """Center loss: Σ_i |x_i − c_{y_i}|² / (2M), with the fork's own update of the centers.

    Bottoms: x, M×... flattened from axis into K values per sample; label, M values in
    [0, num_output) (it gets no gradient).
    Tops: loss, a scalar (shape ()); loss_weight 1 by default (a loss layer).
    Blobs: centers, num_output×K.
    Params: center_loss_param (CenterLossParameter, decaffe's number 30101: the fork's 147 is
    BVLC's swish_param): num_output (required, > 0), center_filler (default constant 0),
    axis (default 1).
    Source: ydwen/caffe-face src/caffe/layers/center_loss_layer.cpp.

    The features' gradient is (x_i − c_{y_i})/M times the loss weight; the centers' diff is
    the fork's update Σ_{y_i=j}(c_j − x_i)/(1 + n_j), which ignores the loss weight (the
    solver's lr_mult sets the step, as in the fork).
    """

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.center_loss_param
        shape = tuple(bottom_shapes[0])
        self.check(p.num_output > 0, "must be given and > 0", "center_loss_param.num_output")
        self.axis = p.axis if p.axis >= 0 else len(shape) + p.axis
        self.check(0 <= self.axis < len(shape), f"axis {p.axis} is outside the bottom's "
                   f"{len(shape)} axes", "center_loss_param.axis")
        self.k = math.prod(shape[self.axis:])
        if self.num_blobs == 0:
            fp = p.center_filler if p.HasField("center_filler") else fillers.filler_param(
                type="constant", value=0.0)
            self.add_blob(fillers.fill(fp, (p.num_output, self.k), where=self.name))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        m = math.prod(shape[:self.axis])
        self.check(math.prod(shape[self.axis:]) == self.k, f"the features have "
                   f"{math.prod(shape[self.axis:])} values per sample, the centers {self.k}")
        self.check(math.prod(label) == m, f"{math.prod(label)} labels for {m} samples")
        return [()]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> Tops:
        self.reshape([tuple(x.shape), tuple(label.shape)])
        m = math.prod(x.shape[:self.axis])
        lab = label.detach().reshape(-1).to(torch.int64)
        if lab.numel() and x.device.type != "meta":
            self.check(int(lab.min()) >= 0 and int(lab.max()) < self.blob(0).shape[0],
                       f"labels must be in [0, {self.blob(0).shape[0]})")
        return _CenterLoss.apply(x.reshape(m, self.k), self.blob(0), lab)


SELU_ALPHA = 1.6732632423543772
SELU_LAMBDA = 1.0507009873554805


@register("SeLu")
class SeLuLayer(ElementwiseLayer):
    """SELU: y = lambda·x for x > 0, lambda·alpha·(exp(x) − 1) otherwise.

    Bottoms: x, any shape.
    Tops: y, x's shape.
    Blobs: none.
    Params: selu_param (SeLuParameter): lambda (default 1.050700987), alpha (default
    1.67326324).
    Source: soeaver's caffe-priv (soeaver/py-RFCN-priv) SeLu layer; its source was not at
    hand, the arithmetic is Klambauer et al.'s SELU.
    """

    # torch's vectorised exp and its scalar loop for a chunk's last values round differently,
    # and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.selu_param
        self.lam = float(getattr(p, "lambda"))
        self.alpha = float(p.alpha)

    def forward(self, x: torch.Tensor) -> Tops:
        return self.lam * torch.where(x > 0, x, self.alpha * torch.expm1(torch.clamp(x, max=0)))


@register("SeLuDropout")
class SeLuDropoutLayer(ElementwiseLayer):
    """Alpha dropout for SELU nets: dropped values become alpha', an affine map keeps the moments.

    Bottoms: x, any shape.
    Tops: y, x's shape.
    Blobs: none.
    Params: selu_dropout_param (SeLuDropoutParameter): dropout_ratio q (default 0.1, in
    [0, 1)), alpha' (field alpha, default −1.75809934 = −λα).
    Source: soeaver's caffe-priv (soeaver/py-RFCN-priv) SeLuDropout layer; its source was not
    at hand, the arithmetic is Klambauer et al.'s alpha dropout.

    In TRAIN each value is dropped with probability q and set to alpha', then y = a·v + b with
    a = ((1 − q)(1 + q·alpha'²))^−½ and b = −a·q·alpha', which keeps zero mean and unit
    variance; in TEST (or q = 0) the identity. The backward passes a·dy where kept, 0 where
    dropped.
    """

    # Caffe's backward reads its forward's mask: the recorded graph stays exact
    backward_reads = "kept"

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.selu_dropout_param
        self.q = float(p.dropout_ratio)
        self.check(0.0 <= self.q < 1.0, f"must be in [0, 1), not {self.q}",
                   "selu_dropout_param.dropout_ratio")
        self.alpha = float(p.alpha)
        self.a = ((1 - self.q) * (1 + self.q * self.alpha ** 2)) ** -0.5
        self.b = -self.a * self.q * self.alpha
        self.in_train = self.phase == caffe_pb2.TRAIN

    def forward(self, x: torch.Tensor) -> Tops:
        if not self.in_train or self.q == 0.0:
            return x.view(x.shape)
        keep = (torch.rand_like(x) >= self.q).to(x.dtype)
        return self.a * (x * keep + self.alpha * (1 - keep)) + self.b


@register("SegAccuracy")
class SegAccuracyLayer(Layer):
    """Segmentation accuracy from a confusion matrix: pixel accuracy, mean recall, mean IoU.

    Bottoms: scores, N×C×H×W; label, N×1×H×W (neither gets a gradient).
    Tops: 1×1×1×3: pixel accuracy, mean recall over the classes present in the labels, mean
    IoU over all C classes.
    Blobs: none.
    Params: seg_accuracy_param (SegAccuracyParameter): ignore_label (repeated; those pixels
    are skipped), reset (default true: clear the matrix every pass); metric (default
    PixelAccuracy) is declared in DeepLab v2's schema but read by no code there, so the top
    always holds all three values.
    Source: DeepLab v2 src/caffe/layers/seg_accuracy_layer.cpp and
    src/caffe/util/confusion_matrix.cpp (xmyqsh/deeplab-v2 cb3479b3; hszhao/PSPNet carries
    the same, and soeaver's caffe-priv).

    The prediction is the argmax over C, a tie going to the higher class (DeepLab ranks
    (score, class) pairs with std::greater). The C×C confusion matrix accumulates over passes
    unless reset; a class absent from labels and predictions counts 1 in the mean IoU
    (DeepLab's avgJaccard). No backward.
    """

    exact_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.seg_accuracy_param
        self.ignore = set(int(v) for v in p.ignore_label)
        self.reset = bool(p.reset)
        self.metric = enum_name(p, "metric", "PixelAccuracy")
        self.channels = int(bottom_shapes[0][1])
        self.confusion = torch.zeros((self.channels, self.channels), dtype=torch.float64)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        s, lab = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(len(s) == 4 and lab == (s[0], 1, s[2], s[3]),
                   f"labels {lab} must be (num, 1, height, width) of the scores {s}")
        return [(1, 1, 1, 3)]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def forward(self, scores: torch.Tensor, label: torch.Tensor) -> Tops:
        self.reshape([tuple(scores.shape), tuple(label.shape)])
        if scores.device.type == "meta":
            return scores.new_empty((1, 1, 1, 3))
        c = scores.shape[1]
        pred = (c - 1 - scores.detach().flip(1).argmax(1)).reshape(-1).cpu()
        lab = label.detach().reshape(-1).cpu().to(torch.int64)
        keep = torch.ones_like(lab, dtype=torch.bool)
        for v in self.ignore:
            keep &= lab != v
        pred, lab = pred[keep], lab[keep]
        self.check(bool(((lab >= 0) & (lab < self.channels)).all()),
                   f"labels must be in [0, {self.channels}) or ignored")
        if self.reset:
            self.confusion.zero_()
        self.confusion += torch.bincount(lab * self.channels + pred,
                                         minlength=self.channels ** 2).reshape(
            self.channels, self.channels).to(torch.float64)
        m = self.confusion
        diag, rows, cols = m.diagonal(), m.sum(1), m.sum(0)
        total = m.sum()
        acc = float(diag.sum() / total) if total > 0 else 0.0
        present = rows > 0
        recall = float((diag[present] / rows[present]).mean()) if present.any() else 0.0
        union = rows + cols - diag
        same = union == diag  # DeepLab counts 1 where intersection == union (0/0 included)
        iou = float(torch.where(same, 1.0, diag / torch.where(union > 0, union, 1)).mean())
        return torch.tensor([acc, recall, iou], dtype=scores.dtype,
                            device=scores.device).reshape(1, 1, 1, 3)


class _YoloSegLoss(torch.autograd.Function):
    """Σ((sigmoid(x) − label)·s)² / N with the fork's gradient (sigmoid(x) − label)·s/N (no
    sigmoid derivative, no factor 2)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, label: torch.Tensor, scale: float):
        diff = (torch.sigmoid(x) - label) * scale
        ctx.save_for_backward(diff)
        return (diff * diff).sum() / x.shape[0]

    @staticmethod
    def backward(ctx: FunctionCtx, g: torch.Tensor):
        (diff,) = ctx.saved_tensors
        return diff * (g / diff.shape[0]), None, None


@register("YoloSeg")
class YoloSegLayer(Layer):
    """MobileNet-YOLO's segmentation loss: Σ((sigmoid(x) − label)·object_scale)² / N.

    Bottoms: x, N×... logits; label, as many values (it gets no gradient); optionally a third
    bottom, which decaffe does not read.
    Tops: loss, a scalar (shape ()); loss_weight 1 by default (a loss layer).
    Blobs: none.
    Params: yolo_seg_param (YoloSegParameter): object_scale (default 5); num_class,
    class_scale, use_logic_gradient and use_hardsigmoid are not read.
    Source: eric612/MobileNet-YOLO src/caffe/layers/yolo_seg.cpp.

    The backward is the fork's (sigmoid(x) − label)·object_scale·loss_weight/N (no sigmoid
    derivative, no factor 2), which decaffe keeps. The fork's trees from 2019-03-22 on weight
    the positive pixels of class c by object_scale·(2 − w_c) when a third bottom (per-class
    pixel counts) is given; decaffe ignores that bottom.
    """

    min_bottoms = 2
    max_bottoms = 3
    exact_tops = 1
    is_loss = True

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.scale = float(self.lp.yolo_seg_param.object_scale)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(math.prod(a) == math.prod(b), f"the label {b} must have as many values as "
                   f"the prediction {a}")
        return [()]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def forward(self, x: torch.Tensor, label: torch.Tensor, *unused: torch.Tensor) -> Tops:
        self.reshape([tuple(x.shape), tuple(label.shape)])
        return _YoloSegLoss.apply(x, label.detach().reshape(x.shape), self.scale)


@register("SegmentationEvaluate")
class SegmentationEvaluateLayer(Layer):
    """Per-channel IoU of a thresholded segmentation against its ground truth, first image only.

    Bottoms: seg, N×C×H×W predictions; gt, N×C_gt×H'×W' with C_gt <= C (neither gets a
    gradient).
    Tops: 1×1×1×C_gt, channel c's IoU of {seg > threshold} and {gt > threshold} (0 when
    nothing matches).
    Blobs: none.
    Params: segmentation_evaluate_param (SegmentationEvaluateParameter, decaffe's numbers):
    num_classes (required; not otherwise read), threshold (default 0.5).
    Source: eric612/MobileNet-YOLO src/caffe/layers/segmentation_evaluate_layer.cpp.

    When the prediction's size differs from the ground truth's, the prediction is first turned
    into 8-bit (value·255, clamped) and resized with OpenCV's INTER_AREA, then compared with
    threshold·255 (truncated), as the fork does. No backward.
    """

    exact_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.segmentation_evaluate_param
        self.check(p.HasField("num_classes"), "must provide num_classes",
                   "segmentation_evaluate_param.num_classes")
        self.threshold = float(p.threshold)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        seg, gt = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(len(seg) == 4 and len(gt) == 4 and seg[1] >= gt[1],
                   f"prediction {seg} and ground truth {gt} must be 4-axis, the prediction "
                   "with at least the ground truth's channels")
        return [(1, 1, 1, gt[1])]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def forward(self, seg: torch.Tensor, gt: torch.Tensor) -> Tops:
        self.reshape([tuple(seg.shape), tuple(gt.shape)])
        if seg.device.type == "meta":
            return seg.new_empty((1, 1, 1, gt.shape[1]))
        s = seg.detach()[0].cpu().double().numpy()
        g = gt.detach()[0].cpu().double().numpy()
        out = []
        for c in range(g.shape[0]):
            if s.shape[1:] == g.shape[1:]:
                pred = s[c] > self.threshold
            else:
                img = np.clip(s[c] * 255, 0, 255).astype(np.uint8)
                img = cv2.resize(img, (g.shape[2], g.shape[1]), interpolation=cv2.INTER_AREA)
                pred = img > int(self.threshold * 255)
            truth = g[c] > self.threshold
            match = int((pred & truth).sum())
            union = int(truth.sum()) + int(pred.sum()) - match
            out.append(match / union if match else 0.0)
        return torch.tensor(out, dtype=seg.dtype, device=seg.device).reshape(1, 1, 1, -1)

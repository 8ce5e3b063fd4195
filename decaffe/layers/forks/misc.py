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
    """Cysu's GuidedDropout: bottom 0 (N, C, ...) and the guidance bottom 1 (N, C[, 1, 1]);
    each (n, c) plane is kept or dropped whole, and the kept ones of a sample are scaled by
    C / s_n. guided_dropout_param type "deterministic" (default): keep where guidance >
    guidance_threshold, s_n = number kept. "stochastic": in TRAIN keep with probability
    p = sigmoid(sigmoid_scaler·guidance), s_n = Σ_c p; in TEST the identity. A sample with
    s_n = 0 is left unscaled. The backward applies the same mask and scale; the guidance gets
    no gradient (as in the fork)."""

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
    """ydwen's CenterLoss: bottoms features (M, ...) flattened from center_loss_param.axis into
    K values, and labels (M); blob 0 the centers (num_output, K) filled by center_filler.
    Top: Σ_i |x_i − c_{y_i}|² / (2M). The features' gradient is (x_i − c_{y_i})/M times the
    loss weight; the centers' diff is the fork's update Σ_{y_i=j}(c_j − x_i)/(1 + n_j), which
    ignores the loss weight (the solver's lr_mult sets the step, as in the fork)."""

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
    """SELU: y = lambda·x for x > 0, lambda·alpha·(exp(x) − 1) otherwise (selu_param lambda
    1.0507, alpha 1.6733)."""

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
    """Alpha dropout for SELU nets: in TRAIN each value is dropped with probability q =
    selu_dropout_param.dropout_ratio and set to alpha' (default −λα = −1.7581), then
    y = a·v + b with a = ((1 − q)(1 + q·alpha'²))^−½ and b = −a·q·alpha', which keeps zero mean
    and unit variance; in TEST the identity. The backward passes a·dy where kept, 0 where
    dropped."""

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
    """DeepLab v2's SegAccuracy: bottoms scores (N, C, H, W) and labels (N, 1, H, W); the
    prediction is the argmax over C, a tie going to the higher class (DeepLab ranks
    (score, class) pairs with std::greater). Pixels whose label is one of seg_accuracy_param's
    ignore_label values are skipped. A C×C confusion matrix accumulates over passes (cleared
    each pass with reset: true, the default); the top (1, 1, 1, 3) holds the pixel accuracy,
    the mean recall over classes present in the labels and the mean IoU over all C classes,
    a class absent from labels and predictions counting 1 (DeepLab's avgJaccard). No
    backward."""

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
    """eric612/MobileNet-YOLO's YoloSeg loss: bottoms the segmentation logits (N, ...) and a
    label blob of the same count (and, in the fork's nets, a third bottom the layer does not
    read). loss = Σ((sigmoid(x) − label)·object_scale)² / N; the fork's backward is
    (sigmoid(x) − label)·object_scale·loss_weight/N, which decaffe keeps."""

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
    """eric612/MobileNet-YOLO's SegmentationEvaluate: per channel c of the first image, the
    IoU of {prediction > threshold} and {ground truth > threshold}
    (segmentation_evaluate_param; 0 when nothing matches). Top (1, 1, 1, C_gt). When the
    prediction's size differs from the ground truth's, the prediction is first turned into
    8-bit (value·255, clamped) and resized with OpenCV's INTER_AREA, then compared with
    threshold·255 (truncated), as the fork does. No backward."""

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

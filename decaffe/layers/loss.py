"""Softmax, Accuracy and the loss layers: SoftmaxWithLoss, EuclideanLoss,
SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss, InfogainLoss, ContrastiveLoss.

Every loss layer follows Caffe's LossLayer: a 0-axis loss top (made automatically when the
prototxt names none), loss_weight 1 on it by default, the first axis of the data and of the
label bottoms must agree, and the label bottom is never back-propagated (force_backward
skips it; a net that would need its gradient is an error, as Caffe's Backward refuses).

Where Caffe's backward is not the exact derivative of its forward (clamped logs, the
1e-4 in ContrastiveLoss), the layers keep Caffe's forward value and Caffe's gradient.

Labels are read as Caffe does, ``static_cast<int>`` of the stored float (truncation toward
zero). A label outside [0, classes) that is not the ignore_label makes Caffe read out of
bounds; here it raises a LayerParamError naming the layer. The check costs one reduction:
on the CPU it runs every pass (no device to wait for); on an accelerator it runs on the
layer's first pass there only, and afterwards an out-of-range label makes the loss NaN
instead of stopping the device to ask (no host sync on the hot path, no device-side assert).

Versions: Accuracy ranks ties and divides as Caffe 1.0 (and the golden-producing rc3) do;
InfogainLoss is the later form with its own softmax, axis and normalization (the older one
took probabilities and divided by the batch size); SigmoidCrossEntropyLoss normalises by the
batch size unless loss_param says otherwise, as every Caffe version does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DecaffeError
from ..formats.binaryproto import read_blobproto
from ..layer import Layer, Shape, Tops, register
from ..proto import caffe_pb2
from .common import canonical_axis

_LossParam = caffe_pb2.LossParameter
FULL, VALID, BATCH_SIZE, NONE = (_LossParam.FULL, _LossParam.VALID, _LossParam.BATCH_SIZE,
                                 _LossParam.NONE)
_MODE_NAMES = {FULL: "FULL", VALID: "VALID", BATCH_SIZE: "BATCH_SIZE", NONE: "NONE"}

FLT_MIN = float(np.finfo(np.float32).tiny)  # Caffe's floor on the softmax probability
LOG_FLT_MIN = math.log(FLT_MIN)
LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD
LOG_LOG_THRESHOLD = math.log(LOG_THRESHOLD)


def _value_only(t: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """fn(t) in the forward pass with t's gradient unchanged (Caffe's floors on logs)."""
    with torch.no_grad():
        shift = fn(t) - t
    return t + shift


def _prod(shape: Iterable[int]) -> int:
    return math.prod([int(s) for s in shape])  # a list: torch.compile traces it, not a generator


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class _LabelLayer(Layer):
    """Shared label handling: integer class indices, ignore_label, the range check."""

    _labels_checked_on: torch.device | None = None  # the device of the last checked pass

    def _bottom(self, i: int) -> str:
        """'bottom NAME' for messages (an index when the layer is used outside a net)."""
        return f"bottom '{self.bottom_names[i]}'" if i < len(self.bottom_names) else f"bottom {i}"

    def _class_index(self, label: torch.Tensor, num_classes: int, ignore: int | None):
        """(index, keep, bad) for float labels.

        index: the labels as int64, with ignored (and, off the CPU, out-of-range) entries
        replaced by 0 so they can be gathered; keep: the non-ignored entries (None when
        no ignore_label); bad: out-of-range entries to poison with NaN (None when checked).
        """
        lab = label.detach().long()  # truncates toward zero, as static_cast<int>
        keep = None if ignore is None else lab != ignore
        index = lab if keep is None else torch.where(keep, lab, 0)
        if lab.device.type == "meta":
            return index, keep, None
        checked = lab.device.type != "cpu" and self._labels_checked_on == lab.device
        if not (checked or _tracing()):
            if index.numel():
                lo, hi = torch.aminmax(index)  # one reduction, one host read
                if int(lo) < 0 or int(hi) >= num_classes:
                    self._out_of_range(label, index, num_classes, ignore)
            self._labels_checked_on = lab.device
            return index, keep, None
        bad = (index < 0) | (index >= num_classes)
        return torch.where(bad, 0, index), keep, bad

    def _out_of_range(self, label: torch.Tensor, index: torch.Tensor, num_classes: int,
                      ignore: int | None) -> NoReturn:
        bad = (index < 0) | (index >= num_classes)
        values = label.detach()[bad].reshape(-1)
        shown = ", ".join(f"{float(v):g}" for v in values[:5].cpu())
        extra = " (and the ignore_label is not set)" if ignore is None else ""
        raise self.error(f"{values.numel()} label(s) out of range [0, {num_classes}): "
                         f"{shown}{extra}")

    def _refuse_label_grad(self, t: torch.Tensor, what: str = "label") -> None:
        """Caffe's Backward aborts when the net asks for the gradient of a label input."""
        if torch.is_grad_enabled() and t.requires_grad:
            raise self.error(f"{self.type} cannot back-propagate to its {what} input; set "
                             "propagate_down: false for it", "propagate_down")


class _LossLayer(_LabelLayer):
    """Caffe's LossLayer: data and label bottoms, one scalar top made automatically."""

    is_loss = True
    auto_tops = True  # Caffe's AutoTopBlobs: an unnamed loss top is created
    exact_bottoms = 2
    max_loss_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def _check_tops(self) -> None:
        # The net skips the top count for auto_tops layers; only the upper bound can fail.
        n = len(self.top_names)
        self.check(n <= self.max_loss_tops,
                   f"{self.type} takes at most {self.max_loss_tops} top blob(s), {n} given")

    def _num_tops(self) -> int:
        return max(1, len(self.top_names))

    def _check_first_axis(self, bottom_shapes: list[Shape]) -> None:
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(len(a) > 0 and len(b) > 0 and a[0] == b[0],
                   f"the data and label should have the same first dimension: "
                   f"{self._bottom(0)} has shape {a}, {self._bottom(1)} has shape {b}")

    # the forks' PRE_FIXED (divide by pre_fixed_normalizer) is theirs: their OHEM losses
    # set this; BVLC's and caffe-rfcn's SoftmaxWithLoss abort on it ("Unknown normalization")
    accepts_pre_fixed = False

    def _normalization(self, default: int) -> int:
        """Caffe's rule: normalization if given, else the legacy normalize (true: VALID,
        false: BATCH_SIZE), else the layer's default."""
        p = self.lp.loss_param
        if p.HasField("normalization"):
            self._check_pre_fixed(p.normalization)
            return p.normalization
        if p.HasField("normalize"):
            return VALID if p.normalize else BATCH_SIZE
        return default

    def _check_pre_fixed(self, mode: int) -> None:
        """PRE_FIXED with pre_fixed_normalizer 1 is NONE (the number R-FCN's binary files
        give NONE reads as PRE_FIXED, docs/compat.md); another normalizer is refused."""
        p = self.lp.loss_param
        if mode != caffe_pb2.LossParameter.PRE_FIXED or self.accepts_pre_fixed:
            return
        self.check(p.pre_fixed_normalizer == 1,
                   f"normalization PRE_FIXED (pre_fixed_normalizer {p.pre_fixed_normalizer:g}) "
                   f"is the R-FCN forks' SoftmaxWithLossOHEM/SmoothL1LossOHEM mode; Caffe's "
                   f"{self.type} aborts on it (use FULL, VALID, BATCH_SIZE or NONE)",
                   "loss_param.normalization")

    def _ignore_label(self) -> int | None:
        p = self.lp.loss_param
        return p.ignore_label if p.HasField("ignore_label") else None

    @staticmethod
    def _normalizer(mode: int, outer: int, inner: int,
                    valid_count: torch.Tensor | None) -> int | torch.Tensor:
        """Caffe's GetNormalizer, at least 1. valid_count: a tensor, or None for 'all'."""
        if mode == FULL or (mode == VALID and valid_count is None):
            return max(1, outer * inner)
        if mode == VALID:
            return valid_count.clamp_min(1)
        if mode == BATCH_SIZE:
            return max(1, outer)
        return 1


def _divide(total: torch.Tensor, normalizer: int | torch.Tensor) -> torch.Tensor:
    if isinstance(normalizer, torch.Tensor):
        return total / normalizer.to(total.dtype)
    return total / normalizer


def _axis_split(shape: Shape, axis: int) -> tuple[int, int, int]:
    return _prod(shape[:axis]), int(shape[axis]), _prod(shape[axis + 1:])


# ------------------------------------------------------------------------------------------
# Softmax
# ------------------------------------------------------------------------------------------
@register("Softmax")
class SoftmaxLayer(Layer):
    """Softmax along one axis: y = exp(x) / Σ exp(x), computed with the maximum subtracted.

    Bottoms: x, any shape with the softmax axis (e.g. N×C×H×W).
    Tops: y, of x's shape.
    Blobs: none.
    Params: softmax_param.axis (default 1; negative counts from the end); engine is not read.
    Source: src/caffe/layers/softmax_layer.cpp.

    Each position off the axis is normalised on its own. Backward reads the top:
    dx = (dy − Σ_axis dy·y)·y.
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    exact_bottoms = 1
    exact_tops = 1
    backward_reads = "tops"

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._axis_param = self.lp.softmax_param.axis

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.axis = canonical_axis(self._axis_param, len(shape), self, "softmax_param.axis")
        if self.axis == 0:
            self.item_group = 0  # a softmax across the items: no item stands alone
        return [shape]

    def forward(self, x: torch.Tensor) -> Tops:
        return torch.softmax(x, dim=self.axis)

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        y, dy = tops[0], top_diffs[0].reshape(tops[0].shape)
        return [(dy - (dy * y).sum(dim=self.axis, keepdim=True)) * y]


# ------------------------------------------------------------------------------------------
# SoftmaxWithLoss
# ------------------------------------------------------------------------------------------
@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(_LossLayer):
    """Multinomial logistic loss of the softmax of the scores along one axis.

    Bottoms: scores, outer×C×inner around the softmax axis (e.g. N×C×H×W); labels,
        outer·inner values in [0, C) or the ignore_label (e.g. N×1×H×W), which get no
        gradient.
    Tops: the loss, shape () (made when the prototxt names none); optionally the
        probabilities, of the scores' shape; optionally (R-FCN) the per-position loss, of the
        labels' shape. The second and third tops pass no gradient back.
    Blobs: none.
    Params: softmax_param.axis (default 1); loss_param.ignore_label (default: none),
        normalization (default VALID), the legacy normalize (read when normalization is unset).
    Source: src/caffe/layers/softmax_loss_layer.cpp; the third top: daijifeng001/caffe-rfcn
        src/caffe/layers/softmax_loss_layer.cu.

    loss = −Σ log(max(p[label], FLT_MIN)) / normaliser over the non-ignored positions, the
    normaliser being loss_param.normalization: FULL (outer·inner), VALID (non-ignored count;
    the default), BATCH_SIZE (outer), NONE (1), never below 1; the legacy loss_param.normalize
    false means BATCH_SIZE when normalization is unset. Gradient: (p − onehot(label)) ·
    loss_weight / normaliser, zero at ignored positions. The third top holds each position's
    loss −log(max(p[label], FLT_MIN)), 0 where the label is ignored (R-FCN's OHEM nets rank
    ROIs by it).
    """

    max_loss_tops = 3

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()
        self._axis_param = self.lp.softmax_param.axis
        self.ignore = self._ignore_label()
        self.normalization = self._normalization(VALID)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._check_first_axis(bottom_shapes)
        shape, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.axis = canonical_axis(self._axis_param, len(shape), self, "softmax_param.axis")
        outer, _, inner = _axis_split(shape, self.axis)
        self.check(outer * inner == _prod(label),
                   f"number of labels must match number of predictions: prediction shape "
                   f"{shape} with softmax axis {self.axis} needs {outer * inner} labels, label "
                   f"shape {label} has {_prod(label)}")
        return ([(), shape, label])[:self._num_tops()]

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> Tops:
        self._refuse_label_grad(label)
        outer, c, inner = _axis_split(x.shape, self.axis)
        scores = x.reshape(outer, c, inner) if inner != 1 else x.reshape(outer, c)
        lab = label.reshape(outer, inner) if inner != 1 else label.reshape(outer)
        index, keep, bad = self._class_index(lab, c, self.ignore)
        if keep is not None:
            index = torch.where(keep, index, -100)  # nll_loss skips (zero loss and gradient)
        nll = F.nll_loss(F.log_softmax(scores, dim=1), index, reduction="none")
        # Caffe floors p at FLT_MIN in the loss only; its gradient is still p - 1
        nll = _value_only(nll, lambda v: v.clamp_max(-LOG_FLT_MIN))
        if bad is not None:
            nll = torch.where(bad, torch.nan, nll)
        count = None if keep is None else keep.sum()
        loss = _divide(nll.sum(), self._normalizer(self.normalization, outer, inner, count))
        if len(self.top_names) < 2:
            return loss
        with torch.no_grad():
            prob = torch.softmax(x, dim=self.axis)
        if len(self.top_names) < 3:
            return loss, prob
        # ignored positions already hold 0 (nll_loss skips them), as the fork's kernel writes
        return loss, prob, nll.detach().reshape(label.shape)


# ------------------------------------------------------------------------------------------
# Accuracy
# ------------------------------------------------------------------------------------------
@register("Accuracy")
class AccuracyLayer(_LabelLayer):
    """Fraction of the non-ignored positions whose label is among the top_k scores.

    Bottoms: scores, outer×C×inner around the axis (e.g. N×C); labels, outer·inner values;
        neither gets a gradient.
    Tops: the accuracy, shape (); optionally the per-class accuracy, (C,).
    Blobs: none.
    Params: accuracy_param.top_k (default 1, at most C), axis (default 1), ignore_label
        (default: none).
    Source: src/caffe/layers/accuracy_layer.cpp.

    Ranking is Caffe 1.0's (a partial sort of (score, class) pairs, largest first): a tie
    with a higher-numbered class ranks that class first. With no counted position the
    accuracy is 0/0 (NaN), as Caffe 1.0 computes it. The per-class top holds hits /
    occurrences of each class among the labels, 0 for a class that does not occur. No backward.
    """

    exact_bottoms = 2
    min_tops = 1
    max_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.accuracy_param
        self.top_k = int(p.top_k)
        self._axis_param = p.axis
        self.ignore = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        nlabels = _prod(label)
        self.check(nlabels > 0 and self.top_k <= _prod(shape) // nlabels,
                   f"top_k ({self.top_k}) must be less than or equal to the number of classes "
                   f"(prediction shape {shape}, label shape {label})", "accuracy_param.top_k")
        self.axis = canonical_axis(self._axis_param, len(shape), self, "accuracy_param.axis")
        outer, c, inner = _axis_split(shape, self.axis)
        self.check(outer * inner == nlabels,
                   f"number of labels must match number of predictions: prediction shape "
                   f"{shape} with label axis {self.axis} needs {outer * inner} labels, label "
                   f"shape {label} has {nlabels}")
        return [()] + [(c,)] * (len(self.top_names) - 1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> Tops:
        x = x.detach()
        outer, c, inner = _axis_split(x.shape, self.axis)
        scores = x.reshape(outer, c, inner)
        index, keep, bad = self._class_index(label.reshape(outer, 1, inner), c, self.ignore)
        true = scores.gather(1, index)
        classes = torch.arange(c, device=x.device).reshape(1, c, 1)
        ahead = (scores > true) | ((scores == true) & (classes > index))
        hit = ahead.sum(dim=1, keepdim=True) < self.top_k
        counted = torch.ones_like(hit) if keep is None else keep
        hit = hit & counted
        accuracy = hit.sum().to(x.dtype) / counted.sum().to(x.dtype)
        if bad is not None:
            accuracy = torch.where(bad.any(), torch.nan, accuracy)
        if len(self.top_names) < 2:
            return accuracy
        flat = index.reshape(-1)
        seen = torch.zeros(c, dtype=x.dtype, device=x.device).index_add_(
            0, flat, counted.reshape(-1).to(x.dtype))
        hits = torch.zeros(c, dtype=x.dtype, device=x.device).index_add_(
            0, flat, hit.reshape(-1).to(x.dtype))
        per_class = torch.where(seen == 0, torch.zeros_like(hits), hits / seen.clamp_min(1))
        return accuracy, per_class


# ------------------------------------------------------------------------------------------
# EuclideanLoss
# ------------------------------------------------------------------------------------------
@register("EuclideanLoss")
class EuclideanLossLayer(_LossLayer):
    """Half the mean squared distance: loss = Σ (a − b)² / (2N).

    Bottoms: a, N×… ; b, N×… with as many values per item as a. Both get gradients, and
        force_backward may ask for either.
    Tops: the loss, shape () (made when the prototxt names none).
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/euclidean_loss_layer.cpp.

    N is the first axis; the gradients are ±(a − b) · loss_weight / N.
    """

    def allow_force_backward(self, bottom_index: int) -> bool:
        return True

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._check_first_axis(bottom_shapes)
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(_prod(a[1:]) == _prod(b[1:]),
                   f"inputs must have the same dimension: {self._bottom(0)} has shape {a}, "
                   f"{self._bottom(1)} has shape {b}")
        return [()]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Tops:
        total = F.mse_loss(a, b.reshape(a.shape), reduction="sum")
        return total / (2 * a.shape[0])


# ------------------------------------------------------------------------------------------
# SigmoidCrossEntropyLoss
# ------------------------------------------------------------------------------------------
@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(_LossLayer):
    """Cross-entropy of targets in [0, 1] against sigmoid(x), in a form stable for any x.

    Bottoms: x, N×… ; targets, as many values as x, which get no gradient.
    Tops: the loss, shape () (made when the prototxt names none).
    Blobs: none.
    Params: loss_param.ignore_label (default: none), normalization (here BATCH_SIZE when
        neither it nor the legacy normalize is given), normalize.
    Source: src/caffe/layers/sigmoid_cross_entropy_loss_layer.cpp.

    Each element gives max(x, 0) − x·t + log(1 + exp(−|x|)); they are summed over the
    non-ignored elements (a target whose int value is loss_param.ignore_label is skipped) and
    divided by the normaliser of loss_param.normalization, as in Caffe. Gradient:
    (sigmoid(x) − t) / normaliser.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()
        self.ignore = self._ignore_label()
        self.normalization = self._normalization(BATCH_SIZE)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._check_first_axis(bottom_shapes)
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(_prod(a) == _prod(b),
                   f"inputs must have the same count: {self._bottom(0)} has shape {a}, "
                   f"{self._bottom(1)} has shape {b}")
        return [()]

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> Tops:
        self._refuse_label_grad(target, "target")
        t = target.reshape(x.shape)
        outer = x.shape[0]
        inner = x.numel() // outer if outer else 0
        if self.ignore is None:
            total = F.binary_cross_entropy_with_logits(x, t, reduction="sum")
            count = None
        else:
            keep = t.trunc() != self.ignore  # static_cast<int>(target) == ignore_label
            each = F.binary_cross_entropy_with_logits(x, t, reduction="none")
            total = torch.where(keep, each, 0).sum()
            count = keep.sum()
        return _divide(total, self._normalizer(self.normalization, outer, inner, count))


# ------------------------------------------------------------------------------------------
# HingeLoss
# ------------------------------------------------------------------------------------------
@register("HingeLoss")
class HingeLossLayer(_LossLayer):
    """One-versus-all hinge loss of N×K scores, L1 or squared (L2).

    Bottoms: scores, N×… (K = count / N classes per item); labels, N values in [0, K), which
        get no gradient.
    Tops: the loss, shape () (made when the prototxt names none).
    Blobs: none.
    Params: hinge_loss_param.norm (default L1).
    Source: src/caffe/layers/hinge_loss_layer.cpp.

    With s = −1 at the label's class and +1 elsewhere, m = max(0, 1 + s·x); loss = Σ m / N (L1)
    or Σ m² / N (L2).
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()
        self.norm = self.lp.hinge_loss_param.norm

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._check_first_axis(bottom_shapes)
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(_prod(b) == a[0],
                   f"one label per example needed: prediction shape {a}, label shape {b}")
        return [()]

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> Tops:
        self._refuse_label_grad(label)
        n = x.shape[0]
        scores = x.reshape(n, -1)
        index, _, bad = self._class_index(label.reshape(n, 1), scores.shape[1], None)
        at_label = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, index, True)
        margin = torch.relu(1 + torch.where(at_label, -scores, scores))
        total = margin.sum() if self.norm == caffe_pb2.HingeLossParameter.L1 else \
            margin.pow(2).sum()
        if bad is not None:
            total = torch.where(bad.any(), torch.nan, total)
        return total / n


# ------------------------------------------------------------------------------------------
# MultinomialLogisticLoss
# ------------------------------------------------------------------------------------------
@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(_LossLayer):
    """Negative log likelihood of given probabilities: loss = −Σ log(max(p[n, label_n], 1e-20)) / N.

    Bottoms: probabilities, N×… (K = count / N per item); labels, N values in [0, K) (at most 4
        axes), which get no gradient.
    Tops: the loss, shape () (made when the prototxt names none).
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/multinomial_logistic_loss_layer.cpp.

    Gradient at the label: −loss_weight / (N·max(p, 1e-20)) (Caffe's, also where the floor
    applies); zero elsewhere.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._check_first_axis(bottom_shapes)
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(_prod(b) == a[0] and len(b) <= 4,
                   f"one label per example needed (label channels, height and width must be "
                   f"1): prediction shape {a}, label shape {b}")
        return [()]

    def forward(self, p: torch.Tensor, label: torch.Tensor) -> Tops:
        self._refuse_label_grad(label)
        n = p.shape[0]
        probs = p.reshape(n, -1)
        index, _, bad = self._class_index(label.reshape(n, 1), probs.shape[1], None)
        picked = probs.gather(1, index)
        floored = _value_only(picked, lambda v: v.clamp_min(LOG_THRESHOLD))
        nll = -torch.log(floored)
        if bad is not None:
            nll = torch.where(bad, torch.nan, nll)
        return nll.sum() / n


# ------------------------------------------------------------------------------------------
# InfogainLoss
# ------------------------------------------------------------------------------------------
def _read_infogain(path: str, layer: Layer, field: str) -> torch.Tensor:
    """The H matrix from a binaryproto file (Caffe reads it once, at set-up), flattened."""
    if not os.path.isfile(path):
        raise layer.error(f"infogain matrix file '{path}' not found", field)
    try:
        values = read_blobproto(path)
    except DecaffeError as e:  # corrupt file, or a shape that does not match its values
        raise layer.error(f"cannot read the infogain matrix BlobProto: {e}", field) from e
    return torch.from_numpy(np.ascontiguousarray(values).reshape(-1))


@register("InfogainLoss")
class InfogainLossLayer(_LossLayer):
    """Infogain-weighted log loss of the softmax of the scores, H a C×C matrix.

    Bottoms: scores, outer×C×inner around the axis (e.g. N×C×H×W); labels, outer·inner values
        in [0, C) or the ignore_label; optionally H, C·C values. Only the scores get a
        gradient.
    Tops: the loss, shape () (made when the prototxt names none); optionally the
        probabilities, of the scores' shape, with no gradient.
    Blobs: none (H from the file is a buffer, not a blob).
    Params: infogain_loss_param.source (a binaryproto holding H; required without a third
        bottom), axis (default 1); loss_param.ignore_label (default: none), normalization
        (default VALID; the legacy normalize is refused, as in Caffe).
    Source: src/caffe/layers/infogain_loss_layer.cpp (the later form, with its own softmax,
        axis and normalization).

    loss = −Σ_n Σ_k H[l_n, k]·log(max(p_nk, 1e-20)) / normaliser over the non-ignored
    positions, H from the third bottom or from infogain_loss_param.source (read once, at
    set-up). Gradient: (p·Σ_k H[l, k] − H[l]) / normaliser; none to the label or to H.
    """

    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3
    max_loss_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()
        p = self.lp.infogain_loss_param
        self._axis_param = p.axis
        self.ignore = self._ignore_label()
        self.check(not self.lp.loss_param.HasField("normalize"),
                   'normalize is deprecated; use "normalization"', "loss_param.normalize")
        self.normalization = self._normalization(VALID)
        self._own_h = len(bottom_shapes) < 3
        if self._own_h:
            self.check(p.HasField("source") and p.source,
                       "the infogain matrix source must be given (or H as a third bottom)",
                       "infogain_loss_param.source")
            h = _read_infogain(p.source, self, "infogain_loss_param.source")
            self.register_buffer("infogain", h.to(torch.get_default_dtype()), persistent=False)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._check_first_axis(bottom_shapes)
        shape, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.axis = canonical_axis(self._axis_param, len(shape), self,
                                   "infogain_loss_param.axis")
        outer, c, inner = _axis_split(shape, self.axis)
        self.check(outer * inner == _prod(label),
                   f"number of labels must match number of predictions: prediction shape "
                   f"{shape} with infogain axis {self.axis} needs {outer * inner} labels, label "
                   f"shape {label} has {_prod(label)}")
        h_count = self.infogain.numel() if self._own_h else _prod(bottom_shapes[2])
        where = ("infogain_loss_param.source" if self._own_h
                 else self._bottom(2))
        self.check(h_count == c * c, f"H must be {c}x{c} ({c * c} values) for {c} classes; "
                   f"{where} has {h_count}")
        return [()] + [shape] * (self._num_tops() - 1)

    def forward(self, x: torch.Tensor, label: torch.Tensor, *h_bottom: torch.Tensor) -> Tops:
        self._refuse_label_grad(label)
        if h_bottom:
            self._refuse_label_grad(h_bottom[0], "infogain matrix")
        outer, c, inner = _axis_split(x.shape, self.axis)
        h = (h_bottom[0] if h_bottom else self.infogain).detach().reshape(c, c).to(x.dtype)
        index, keep, bad = self._class_index(label.reshape(outer, inner), c, self.ignore)
        logp = F.log_softmax(x.reshape(outer, c, inner), dim=1)
        # Caffe floors p at 1e-20 in the loss only; the gradient ignores the floor
        logp = _value_only(logp, lambda v: v.clamp_min(LOG_LOG_THRESHOLD))
        rows = h.index_select(0, index.reshape(-1)).reshape(outer, inner, c).transpose(1, 2)
        each = -(rows * logp).sum(dim=1)  # (outer, inner)
        if keep is not None:
            each = torch.where(keep, each, 0)
        if bad is not None:
            each = torch.where(bad, torch.nan, each)
        count = None if keep is None else keep.sum()
        loss = _divide(each.sum(), self._normalizer(self.normalization, outer, inner, count))
        if len(self.top_names) < 2:
            return loss
        with torch.no_grad():
            prob = torch.softmax(x, dim=self.axis)
        return loss, prob


# ------------------------------------------------------------------------------------------
# ContrastiveLoss
# ------------------------------------------------------------------------------------------
@register("ContrastiveLoss")
class ContrastiveLossLayer(_LossLayer):
    """Siamese contrastive loss over pairs (a_n, b_n) with similarity flags y_n.

    Bottoms: a, N×C (or N×C×1×1); b, of a's shape; the flags, N values (non-zero int value:
        similar), which get no gradient.
    Tops: the loss, shape () (made when the prototxt names none).
    Blobs: none.
    Params: contrastive_loss_param.margin (default 1), legacy_version (default false).
    Source: src/caffe/layers/contrastive_loss_layer.cpp.

    With d² = |a_n − b_n|², loss = Σ [y_n·d² + (1 − y_n)·max(margin − d, 0)²] / 2N, or with
    legacy_version max(margin − d², 0) for dissimilar pairs. Gradients to a and b as Caffe
    computes them (the non-legacy dissimilar term uses −(margin − d)/(d + 1e-4)·(a − b)/N).
    """

    exact_bottoms = 3

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()
        p = self.lp.contrastive_loss_param
        self.margin = float(p.margin)
        self.legacy = p.legacy_version

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._check_first_axis(bottom_shapes)
        a, b, s = (tuple(x) for x in bottom_shapes)

        # Caffe's LegacyShape: axes past the end count as 1
        def legacy(shape: Shape, i: int) -> int:
            return shape[i] if i < len(shape) else 1

        for i, shape in enumerate((a, b, s)):
            self.check(len(shape) <= 4, f"{self._bottom(i)} must have at most 4 axes, has {shape}")
        self.check(legacy(a, 1) == legacy(b, 1) and all(legacy(x, i) == 1
                                                        for x in (a, b) for i in (2, 3)),
                   f"{self._bottom(0)} and {self._bottom(1)} must both be N x C (x 1 x 1) with "
                   f"the same C: shapes {a} and {b}")
        self.check(_prod(s) == a[0] and all(legacy(s, i) == 1 for i in (1, 2, 3)),
                   f"{self._bottom(2)} must hold one similarity flag per pair: shape {s} for "
                   f"{a[0]} pairs")
        return [()]

    def forward(self, a: torch.Tensor, b: torch.Tensor, sim: torch.Tensor) -> Tops:
        n = a.shape[0]
        diff = (a - b).reshape(n, -1)
        dist_sq = (diff * diff).sum(dim=1)
        similar = sim.detach().reshape(n).trunc() != 0
        with torch.no_grad():
            dsq = dist_sq.detach()
            if self.legacy:
                gap = self.margin - dsq
                value = torch.where(similar, dsq, gap.clamp_min(0))
            else:
                dist = dsq.sqrt()
                gap = self.margin - dist
                value = torch.where(similar, dsq, gap.clamp_min(0).pow(2))
            loss = value.sum() / (2 * n)
        if not (torch.is_grad_enabled() and dist_sq.requires_grad):
            return loss
        # Caffe's gradient for pair n is coef_n·(a_n - b_n)/N; Σ coef·d²/2N has exactly that.
        with torch.no_grad():
            if self.legacy:
                dissimilar = torch.where(gap > 0, -1.0, 0.0).to(dsq.dtype)
            else:
                dissimilar = torch.where(gap > 0, -gap / (dist + 1e-4), 0.0)
            coef = torch.where(similar, torch.ones_like(dsq), dissimilar)
        surrogate = (coef * dist_sq).sum() / (2 * n)
        return surrogate + (loss - surrogate.detach())

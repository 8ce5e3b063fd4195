"""Segmentation evaluation fork layer: SegAccuracy (DeepLab; soeaver's caffe-priv adds
``reset``)."""

from __future__ import annotations

import numpy as np
import torch

from ..layer import Layer, register


@register("SegAccuracy")
class SegAccuracyLayer(Layer):
    """Pixel accuracy, mean class recall and mean IoU of a segmentation, as DeepLab's
    ConfusionMatrix computes them.

    Bottoms: scores (N, C, H, W) and labels (N, 1, H, W). Each pixel's prediction is its
    highest score (a tie goes to the higher class index, as the fork's std::greater on
    (score, class) pairs ranks); pixels whose label is one of seg_accuracy_param.ignore_label
    are skipped, any other label outside [0, C) is an error. Top (1, 1, 1, 3):
    [Σ diagonal / Σ all (0 when empty), mean over classes present in the labels of their
    recall (0 when none), mean over all C classes of IoU (1 for a class absent from both)].
    The confusion matrix restarts every pass unless ``reset: false``, which accumulates it
    across passes. No backward.
    Source: DeepLab src/caffe/layers/seg_accuracy_layer.cpp, util/confusion_matrix.cpp.
    """

    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes):
        p = self.lp.seg_accuracy_param
        self.ignore = {int(v) for v in p.ignore_label}
        self.reset = bool(p.reset)
        self.confusion: np.ndarray | None = None

    def reshape(self, bottom_shapes):
        x, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(len(x) == 4, f"bottom '{self.bottom_names[0]}' must be N x C x H x W, has "
                   f"shape {x}")
        self.check(len(label) == 4 and label[0] == x[0] and label[1] == 1
                   and label[2:] == x[2:], f"bottom '{self.bottom_names[1]}' must be "
                   f"({x[0]}, 1, {x[2]}, {x[3]}), has shape {label}")
        return [(1, 1, 1, 3)]

    def forward(self, x, label):
        c = x.shape[1]
        scores = x.detach().cpu().numpy()
        lab = np.trunc(label.detach().cpu().numpy()[:, 0]).astype(np.int64)
        # the highest score, ties to the highest class: argmax over the reversed classes
        pred = c - 1 - np.argmax(scores[:, ::-1], axis=1)
        keep = ~np.isin(lab, list(self.ignore)) if self.ignore else np.ones_like(lab, bool)
        bad = keep & ((lab < 0) | (lab >= c))
        if bad.any():
            raise self.error(f"Unexpected label {int(lab[bad][0])} (the scores have {c} "
                             "classes and it is not an ignore_label)")
        if self.confusion is None or self.reset or self.confusion.shape[0] != c:
            self.confusion = np.zeros((c, c), np.int64)
        np.add.at(self.confusion, (lab[keep], pred[keep]), 1)
        m = self.confusion
        total, diag = m.sum(), np.diag(m).astype(np.float64)
        rows, cols = m.sum(1).astype(np.float64), m.sum(0).astype(np.float64)
        accuracy = diag.sum() / total if total else 0.0
        present = rows > 0
        recall = float((diag[present] / rows[present]).mean()) if present.any() else 0.0
        union = rows + cols - diag
        jaccard = np.where(union == diag, 1.0, diag / np.where(union == 0, 1, union))
        out = np.array([accuracy, recall, jaccard.mean()]).reshape(1, 1, 1, 3)
        return torch.as_tensor(out, dtype=x.dtype, device=x.device)

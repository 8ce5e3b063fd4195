"""Face-recognition fork layers: CenterLoss (ydwen/caffe-face).

The center loss keeps one learnable centre per class and pulls each feature towards its
class's centre; the centres move by the fork's own update rule, not by the derivative of the
loss (see CenterLossLayer).
"""

from __future__ import annotations

import math

import torch

from .. import fillers
from ..layer import register
from .common import canonical_axis
from .loss import _LossLayer


class _CenterLossFn(torch.autograd.Function):
    """Loss Σ‖x − c_y‖²/(2M); gradients: loss_weight·(x − c_y)/M to x, and the fork's centre
    update Σ_{y=j}(c_j − x)/(1 + n_j) to the centres, not scaled by the loss weight."""

    @staticmethod
    def forward(ctx, x, centers, index):
        dist = x - centers.index_select(0, index)
        ctx.save_for_backward(dist, index)
        ctx.num_classes = centers.shape[0]
        return (dist * dist).sum() / (2 * x.shape[0])

    @staticmethod
    def backward(ctx, g):
        dist, index = ctx.saved_tensors
        grad_x = grad_c = None
        if ctx.needs_input_grad[0]:
            grad_x = g * dist / dist.shape[0]
        if ctx.needs_input_grad[1]:
            k = ctx.num_classes
            total = torch.zeros((k, dist.shape[1]), dtype=dist.dtype, device=dist.device)
            total.index_add_(0, index, -dist)
            count = torch.bincount(index, minlength=k).to(dist.dtype)
            grad_c = total / (1.0 + count)[:, None]
        return grad_x, grad_c, None


@register("CenterLoss")
class CenterLossLayer(_LossLayer):
    """Σᵢ ‖xᵢ − c_{yᵢ}‖² / (2M) over the M = count(0, axis) features (ydwen/caffe-face).

    Bottoms: features, flattened from center_loss_param.axis (default 1) into D values, and
    M labels in [0, num_output). Blob: the centres (num_output, D), filled with
    center_filler. Backward: loss_weight·(xᵢ − c_{yᵢ})/M to the features; the centres' diff is
    the fork's update Σ_{yᵢ=j}(c_j − xᵢ)/(1 + #{yᵢ = j}) — not scaled by the loss weight and
    not the loss's derivative (so only the features get a finite-difference check). The
    labels get no gradient. num_output is required.
    Source: ydwen/caffe-face src/caffe/layers/center_loss_layer.cpp.
    """

    def setup(self, bottom_shapes):
        self._check_tops()
        p = self.lp.center_loss_param
        self.check(p.HasField("num_output"), "You miss the parameter num_output",
                   "center_loss_param.num_output")
        self.num_classes = int(p.num_output)
        shape = tuple(bottom_shapes[0])
        self.axis = canonical_axis(p.axis, len(shape), self, "center_loss_param.axis")
        dim = math.prod(shape[self.axis:])
        if self.num_blobs == 0:
            self.add_blob(fillers.fill(p.center_filler, (self.num_classes, dim), where=self.name))

    def reshape(self, bottom_shapes):
        shape, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        outer = math.prod(shape[:self.axis])
        self.check(math.prod(label) == outer, f"{self._bottom(1)} must hold one label per "
                   f"feature ({outer}), has shape {label}")
        dim = math.prod(shape[self.axis:])
        self.check(tuple(self.blob(0).shape) == (self.num_classes, dim),
                   f"the centres blob is {tuple(self.blob(0).shape)}, features have {dim} "
                   f"values and num_output is {self.num_classes}")
        return [()]

    def forward(self, x, label):
        self._refuse_label_grad(label)
        outer = math.prod(x.shape[:self.axis])
        feats = x.reshape(outer, -1)
        index, _, bad = self._class_index(label.reshape(outer), self.num_classes, None)
        loss = _CenterLossFn.apply(feats, self.blob(0), index)
        if bad is not None:
            loss = torch.where(bad.any(), torch.nan, loss)
        return loss

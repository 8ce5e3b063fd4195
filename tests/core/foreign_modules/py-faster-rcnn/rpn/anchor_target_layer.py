"""py-faster-rcnn's anchor target layer (rbgirshick/py-faster-rcnn
``lib/rpn/anchor_target_layer.py`` at 54d2576), as soeaver/py-RFCN-priv (fec9ec1) reads
param_str: anchors from ``scales``/``ratios``/``base_size``, ``feat_stride``,
``allowed_border`` (default 0).

bottoms: rpn_cls_score (1, 2A, H, W) (only its H, W are read), gt_boxes (G, 5)
(x1, y1, x2, y2, class), im_info (1, 3+), data (unused). Forward labels the anchors that lie
inside the image (allowed_border outside it): 0 where the best IoU with a gt box is below
RPN_NEGATIVE_OVERLAP, 1 for each gt box's best anchors and where IoU >= RPN_POSITIVE_OVERLAP,
then disables (-1) random positives beyond RPN_FG_FRACTION * RPN_BATCHSIZE and random
negatives beyond RPN_BATCHSIZE in all (numpy's global generator, as the original).
tops: labels (1, 1, A*H, W), bbox_targets (1, 4A, H, W) (each anchor to its best gt box),
bbox_inside_weights (1, 4A, H, W) (RPN_BBOX_INSIDE_WEIGHTS on positives),
bbox_outside_weights (1, 4A, H, W) (1 / number of labelled anchors on labelled ones, with
RPN_POSITIVE_WEIGHT < 0). Anchors outside the image get label -1 and zero targets/weights.
No backward.
"""

from __future__ import annotations

import numpy as np
import numpy.random as npr
from fast_rcnn.bbox_transform import bbox_overlaps, bbox_transform
from fast_rcnn.config import cfg

import caffe
from rpn.params import anchors_from, layer_params, shifted_anchors


def _unmap(data: np.ndarray, count: int, inds: np.ndarray, fill: float) -> np.ndarray:
    """data for the rows inds of a (count, ...) array filled with fill elsewhere."""
    out = np.full((count,) + data.shape[1:], fill, dtype=np.float32)
    out[inds] = data
    return out


class AnchorTargetLayer(caffe.Layer):
    """RPN training labels and regression targets for every anchor (see the module doc)."""

    def setup(self, bottom, top):
        params = layer_params(self.param_str)
        self._anchors = anchors_from(params)
        self._num_anchors = self._anchors.shape[0]
        self._feat_stride = params["feat_stride"]
        self._allowed_border = params.get("allowed_border", 0)
        height, width = bottom[0].data.shape[-2:]
        a = self._num_anchors
        top[0].reshape(1, 1, a * height, width)
        for t in top[1:4]:
            t.reshape(1, a * 4, height, width)

    def forward(self, bottom, top):
        assert bottom[0].data.shape[0] == 1, "Only single item batches are supported"
        height, width = bottom[0].data.shape[-2:]
        gt_boxes = bottom[1].data.reshape(bottom[1].data.shape[0], -1)
        im_info = bottom[2].data[0, :]
        a = self._num_anchors
        all_anchors = shifted_anchors(self._anchors, self._feat_stride, height, width)
        total = all_anchors.shape[0]
        border = self._allowed_border
        if cfg.TRAIN.ONLY_INSIDE_ANCHORS:
            inside = np.where((all_anchors[:, 0] >= -border) & (all_anchors[:, 1] >= -border)
                              & (all_anchors[:, 2] < im_info[1] + border)
                              & (all_anchors[:, 3] < im_info[0] + border))[0]
        else:
            inside = np.arange(total)
        anchors = all_anchors[inside, :]

        labels = np.full((len(inside),), -1, dtype=np.float32)
        overlaps = bbox_overlaps(anchors, gt_boxes[:, :4])
        argmax = overlaps.argmax(axis=1)
        max_overlaps = overlaps[np.arange(len(inside)), argmax]
        gt_max = overlaps[overlaps.argmax(axis=0), np.arange(overlaps.shape[1])]
        gt_argmax = np.where(overlaps == gt_max)[0]  # every anchor tying a gt box's best
        t = cfg.TRAIN
        if not t.RPN_CLOBBER_POSITIVES:
            labels[max_overlaps < t.RPN_NEGATIVE_OVERLAP] = 0
        labels[gt_argmax] = 1
        labels[max_overlaps >= t.RPN_POSITIVE_OVERLAP] = 1
        if t.RPN_CLOBBER_POSITIVES:
            labels[max_overlaps < t.RPN_NEGATIVE_OVERLAP] = 0

        num_fg = int(t.RPN_FG_FRACTION * t.RPN_BATCHSIZE)
        fg_inds = np.where(labels == 1)[0]
        if len(fg_inds) > num_fg:
            labels[npr.choice(fg_inds, size=len(fg_inds) - num_fg, replace=False)] = -1
        num_bg = t.RPN_BATCHSIZE - np.sum(labels == 1)
        bg_inds = np.where(labels == 0)[0]
        if len(bg_inds) > num_bg:
            labels[npr.choice(bg_inds, size=len(bg_inds) - num_bg, replace=False)] = -1

        targets = bbox_transform(anchors, gt_boxes[argmax, :4]).astype(np.float32)
        if t.RPN_NORMALIZE_TARGETS:
            targets = (targets - t.RPN_NORMALIZE_MEANS) / np.array(t.RPN_NORMALIZE_STDS)
        inside_w = np.zeros((len(inside), 4), dtype=np.float32)
        inside_w[labels == 1, :] = np.array(t.RPN_BBOX_INSIDE_WEIGHTS)
        outside_w = np.zeros((len(inside), 4), dtype=np.float32)
        if t.RPN_POSITIVE_WEIGHT < 0:  # uniform weighting of the sampled anchors
            positive = negative = 1.0 / np.sum(labels >= 0)
        else:
            assert 0 < t.RPN_POSITIVE_WEIGHT < 1
            positive = t.RPN_POSITIVE_WEIGHT / np.sum(labels == 1)
            negative = (1.0 - t.RPN_POSITIVE_WEIGHT) / np.sum(labels == 0)
        outside_w[labels == 1, :] = positive
        outside_w[labels == 0, :] = negative

        labels = _unmap(labels, total, inside, -1)
        labels = labels.reshape((1, height, width, a)).transpose(0, 3, 1, 2)
        top[0].reshape(1, 1, a * height, width)
        top[0].data[...] = labels.reshape((1, 1, a * height, width))
        for blob, value in zip(top[1:4], (targets, inside_w, outside_w)):
            value = _unmap(value, total, inside, 0)
            value = value.reshape((1, height, width, a * 4)).transpose(0, 3, 1, 2)
            blob.reshape(*value.shape)
            blob.data[...] = value

    def backward(self, top, propagate_down, bottom):
        """No gradient flows through the labelling."""

    def reshape(self, bottom, top):
        """Tops are shaped in forward."""

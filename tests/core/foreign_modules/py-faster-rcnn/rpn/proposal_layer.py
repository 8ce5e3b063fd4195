"""py-faster-rcnn's RPN proposal layer (rbgirshick/py-faster-rcnn ``lib/rpn/proposal_layer.py``
at 54d2576), as its R-FCN descendant soeaver/py-RFCN-priv (fec9ec1) reads param_str: anchors
from ``scales``/``ratios``/``base_size`` (py-faster-rcnn's 9 when absent), ``feat_stride``.

bottoms: rpn_cls_prob_reshape (1, 2A, H, W) (the second A channels are foreground scores),
rpn_bbox_pred (1, 4A, H, W), im_info (1, 3+) (height, width, scale). Forward decodes the deltas
at every shifted anchor, clips to the image, drops boxes under RPN_MIN_SIZE * scale, keeps the
RPN_PRE_NMS_TOP_N best, applies NMS at RPN_NMS_THRESH, keeps RPN_POST_NMS_TOP_N (cfg[TRAIN] or
cfg[TEST] by the layer's phase). tops: rois (R, 5) (0, x1, y1, x2, y2) and, if asked, scores
(R, 1). No backward.

``ProposalLayer2`` (sanghoon/pva-faster-rcnn's training proposal layer, whose source is not at
hand) is read from the nets that use it: bottoms as above plus gt_boxes, tops those of
ProposalTargetLayer, with ``num_classes`` in param_str; it is the proposal layer followed by
ProposalTargetLayer's sampling.
"""

from __future__ import annotations

import numpy as np
from fast_rcnn.bbox_transform import bbox_transform_inv, clip_boxes, nms
from fast_rcnn.config import cfg, phase_key

import caffe
from rpn.params import anchors_from, layer_params, shifted_anchors
from rpn.sampling import sample_and_write


def _filter_boxes(boxes: np.ndarray, min_size: float) -> np.ndarray:
    ws = boxes[:, 2] - boxes[:, 0] + 1
    hs = boxes[:, 3] - boxes[:, 1] + 1
    return np.where((ws >= min_size) & (hs >= min_size))[0]


def propose(scores, bbox_deltas, im_info, anchors, feat_stride, key):
    """(proposals (R, 4), scores (R, 1)) for one image, best first."""
    c = cfg[key]
    a = anchors.shape[0]
    fg = scores[:, a:, :, :]
    height, width = fg.shape[-2:]
    all_anchors = shifted_anchors(anchors, feat_stride, height, width)
    deltas = bbox_deltas.transpose((0, 2, 3, 1)).reshape((-1, 4))
    if key == "TRAIN" and cfg.TRAIN.RPN_NORMALIZE_TARGETS:
        deltas = deltas * np.array(cfg.TRAIN.RPN_NORMALIZE_STDS) + cfg.TRAIN.RPN_NORMALIZE_MEANS
    fg = fg.transpose((0, 2, 3, 1)).reshape((-1, 1))
    proposals = clip_boxes(bbox_transform_inv(all_anchors, deltas), im_info[:2])
    keep = _filter_boxes(proposals, c.RPN_MIN_SIZE * im_info[2])
    proposals, fg = proposals[keep, :], fg[keep]
    order = fg.ravel().argsort()[::-1]
    if c.RPN_PRE_NMS_TOP_N > 0:
        order = order[:c.RPN_PRE_NMS_TOP_N]
    proposals, fg = proposals[order, :], fg[order]
    keep = nms(np.hstack((proposals, fg)), c.RPN_NMS_THRESH)
    if c.RPN_POST_NMS_TOP_N > 0:
        keep = keep[:c.RPN_POST_NMS_TOP_N]
    return proposals[keep, :], fg[keep]


class ProposalLayer(caffe.Layer):
    """Object proposals from RPN scores and deltas at shifted anchors (see the module doc)."""

    def setup(self, bottom, top):
        params = layer_params(self.param_str)
        self._feat_stride = params["feat_stride"]
        self._anchors = anchors_from(params)
        self._num_anchors = self._anchors.shape[0]
        top[0].reshape(1, 5)
        if len(top) > 1:
            top[1].reshape(1, 1, 1, 1)

    def forward(self, bottom, top):
        assert bottom[0].data.shape[0] == 1, "Only single item batches are supported"
        proposals, scores = propose(bottom[0].data, bottom[1].data, bottom[2].data[0, :],
                                    self._anchors, self._feat_stride, phase_key(self.phase))
        # a single image: every batch index is 0
        blob = np.hstack((np.zeros((proposals.shape[0], 1), dtype=np.float32),
                          proposals.astype(np.float32, copy=False)))
        top[0].reshape(*blob.shape)
        top[0].data[...] = blob
        if len(top) > 1:
            top[1].reshape(*scores.shape)
            top[1].data[...] = scores

    def backward(self, top, propagate_down, bottom):
        """No gradient flows to the RPN through its proposals."""

    def reshape(self, bottom, top):
        """Tops are shaped in forward."""


class ProposalLayer2(ProposalLayer):
    """PVANet's training-time proposal layer: proposals, then ProposalTargetLayer's sampling
    against gt_boxes (bottom 3) into rois, labels, bbox_targets and both weights."""

    def setup(self, bottom, top):
        super().setup(bottom, top[:1])
        self._num_classes = layer_params(self.param_str)["num_classes"]
        top[1].reshape(1, 1)
        for t in top[2:]:
            t.reshape(1, 4 * self._num_classes)

    def forward(self, bottom, top):
        assert bottom[0].data.shape[0] == 1, "Only single item batches are supported"
        proposals, _ = propose(bottom[0].data, bottom[1].data, bottom[2].data[0, :],
                               self._anchors, self._feat_stride, phase_key(self.phase))
        rois = np.hstack((np.zeros((proposals.shape[0], 1)), proposals)).astype(np.float32)
        sample_and_write(rois, bottom[3].data, self._num_classes, top, cfg.TRAIN.BATCH_SIZE)

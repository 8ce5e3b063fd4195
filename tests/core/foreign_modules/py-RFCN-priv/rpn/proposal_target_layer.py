"""soeaver/py-RFCN-priv's proposal target layer (``lib/rpn/proposal_target_layer.py`` at
fec9ec1): py-faster-rcnn's (see its module doc and rpn.sampling) with four-axis tops for
R-FCN's heads, rois (N, 5, 1, 1), labels (N, 1, 1, 1), bbox_targets and both weights
(N, 4K, 1, 1), gt_boxes read as (G, 5) whatever its axes, BATCH_SIZE -1 meaning every ROI,
and class-agnostic targets under cfg.TRAIN.AGNOSTIC. No backward.
"""

from __future__ import annotations

import numpy as np
from fast_rcnn.config import cfg

import caffe
from rpn.params import layer_params
from rpn.sampling import sample_and_write


class ProposalTargetLayer(caffe.Layer):
    """Samples and labels ROIs for an R-FCN head (see the module doc)."""

    def setup(self, bottom, top):
        self._num_classes = layer_params(self.param_str)["num_classes"]
        top[0].reshape(1, 5, 1, 1)
        top[1].reshape(1, 1, 1, 1)
        for t in top[2:5]:
            t.reshape(1, self._num_classes * 4, 1, 1)

    def forward(self, bottom, top):
        gt_boxes = bottom[1].data.reshape(bottom[1].data.shape[0], bottom[1].data.shape[1])
        per_image = np.inf if cfg.TRAIN.BATCH_SIZE == -1 else cfg.TRAIN.BATCH_SIZE
        sample_and_write(bottom[0].data, gt_boxes, self._num_classes, top, per_image,
                         four_axes=True)

    def backward(self, top, propagate_down, bottom):
        """No gradient flows through the sampling."""

    def reshape(self, bottom, top):
        """Tops are shaped in forward."""

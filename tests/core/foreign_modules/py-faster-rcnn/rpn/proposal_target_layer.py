"""py-faster-rcnn's proposal target layer (rbgirshick/py-faster-rcnn
``lib/rpn/proposal_target_layer.py`` at 54d2576): samples a minibatch of ROIs from the RPN's
proposals and the ground-truth boxes, labels them and gives their regression targets.

bottoms: rpn_rois (R, 5) (0, x1, y1, x2, y2), gt_boxes (G, 5) (x1, y1, x2, y2, class).
param_str: ``num_classes``. Forward appends the gt boxes to the candidates, takes up to
round(FG_FRACTION * BATCH_SIZE) foreground ROIs (IoU >= FG_THRESH) and fills up to BATCH_SIZE
with background ROIs (IoU in [BG_THRESH_LO, BG_THRESH_HI)), at random without replacement
(numpy's global generator, as the original). tops: rois (N, 5), labels (N,) (background 0),
bbox_targets (N, 4K) (the label's 4 columns, normalised by BBOX_NORMALIZE_MEANS/STDS when
BBOX_NORMALIZE_TARGETS_PRECOMPUTED), bbox_inside_weights (N, 4K) (BBOX_INSIDE_WEIGHTS there),
bbox_outside_weights (N, 4K) (1 where the inside weights are positive). cfg.TRAIN.AGNOSTIC
(py-RFCN-priv's class-agnostic regression) puts every foreground target in columns 4..7.
No backward.
"""

from __future__ import annotations

from fast_rcnn.config import cfg

import caffe
from rpn.params import layer_params
from rpn.sampling import sample_and_write


class ProposalTargetLayer(caffe.Layer):
    """Samples and labels ROIs for the detection head (see the module doc)."""

    def setup(self, bottom, top):
        self._num_classes = layer_params(self.param_str)["num_classes"]
        top[0].reshape(1, 5)
        top[1].reshape(1, 1)
        for t in top[2:5]:
            t.reshape(1, self._num_classes * 4)

    def forward(self, bottom, top):
        # one image per minibatch: BATCH_SIZE ROIs
        sample_and_write(bottom[0].data, bottom[1].data, self._num_classes, top,
                         cfg.TRAIN.BATCH_SIZE)

    def backward(self, top, propagate_down, bottom):
        """No gradient flows through the sampling."""

    def reshape(self, bottom, top):
        """Tops are shaped in forward."""

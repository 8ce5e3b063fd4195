"""The ROI sampling of py-faster-rcnn's proposal target layer (rbgirshick/py-faster-rcnn
``lib/rpn/proposal_target_layer.py`` at 54d2576: ``_sample_rois`` and its helpers), shared by
ProposalTargetLayer, its py-RFCN-priv variant and PVANet's ProposalLayer2. Reads ``cfg.TRAIN``
of whichever ``fast_rcnn.config`` is first on the path."""

from __future__ import annotations

import numpy as np
import numpy.random as npr
from fast_rcnn.bbox_transform import bbox_overlaps, bbox_transform
from fast_rcnn.config import cfg


def _regression_labels(target_data: np.ndarray, num_classes: int):
    """Expand (N, 5: class, tx, ty, tw, th) into (N, 4K) targets and inside weights."""
    clss = target_data[:, 0]
    targets = np.zeros((clss.size, 4 * num_classes), dtype=np.float32)
    inside = np.zeros(targets.shape, dtype=np.float32)
    for ind in np.where(clss > 0)[0]:
        start = 4 if cfg.TRAIN.AGNOSTIC else int(4 * clss[ind])
        targets[ind, start:start + 4] = target_data[ind, 1:]
        inside[ind, start:start + 4] = cfg.TRAIN.BBOX_INSIDE_WEIGHTS
    return targets, inside


def _compute_targets(ex_rois, gt_rois, labels) -> np.ndarray:
    targets = bbox_transform(ex_rois, gt_rois)
    if cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED:
        targets = ((targets - np.array(cfg.TRAIN.BBOX_NORMALIZE_MEANS))
                   / np.array(cfg.TRAIN.BBOX_NORMALIZE_STDS))
    return np.hstack((labels[:, None], targets)).astype(np.float32, copy=False)


def sample_rois(all_rois, gt_boxes, fg_rois_per_image, rois_per_image, num_classes):
    """(labels, rois, bbox_targets, bbox_inside_weights) of a random fg/bg sample."""
    overlaps = bbox_overlaps(all_rois[:, 1:5], gt_boxes[:, :4])
    gt_assignment = overlaps.argmax(axis=1)
    max_overlaps = overlaps.max(axis=1)
    labels = gt_boxes[gt_assignment, 4]
    fg_inds = np.where(max_overlaps >= cfg.TRAIN.FG_THRESH)[0]
    fg_this_image = int(min(fg_rois_per_image, fg_inds.size))
    if fg_inds.size > 0:
        fg_inds = npr.choice(fg_inds, size=fg_this_image, replace=False)
    bg_inds = np.where((max_overlaps < cfg.TRAIN.BG_THRESH_HI)
                       & (max_overlaps >= cfg.TRAIN.BG_THRESH_LO))[0]
    bg_this_image = int(min(rois_per_image - fg_this_image, bg_inds.size))
    if bg_inds.size > 0:
        bg_inds = npr.choice(bg_inds, size=bg_this_image, replace=False)
    keep = np.append(fg_inds, bg_inds).astype(np.int64)
    labels = labels[keep]
    labels[fg_this_image:] = 0  # the background ROIs
    rois = all_rois[keep]
    target_data = _compute_targets(rois[:, 1:5], gt_boxes[gt_assignment[keep], :4], labels)
    targets, inside = _regression_labels(target_data, num_classes)
    return labels, rois, targets, inside


def sample_and_write(all_rois, gt_boxes, num_classes, top, rois_per_image,
                     four_axes: bool = False) -> None:
    """Sample up to rois_per_image ROIs from all_rois (R, 5) and the gt_boxes (G, 5) into the
    five tops; with four_axes (py-RFCN-priv) each top is (N, C, 1, 1), else (N, C) / (N,)."""
    zeros = np.zeros((gt_boxes.shape[0], 1), dtype=gt_boxes.dtype)
    all_rois = np.vstack((all_rois, np.hstack((zeros, gt_boxes[:, :-1]))))
    assert np.all(all_rois[:, 0] == 0), "Only single item batches are supported"
    fg_rois_per_image = np.round(cfg.TRAIN.FG_FRACTION * rois_per_image)
    labels, rois, targets, inside = sample_rois(all_rois, gt_boxes, fg_rois_per_image,
                                                rois_per_image, num_classes)
    outside = (inside > 0).astype(np.float32)
    for t, value in zip(top, (rois, labels, targets, inside, outside)):
        if four_axes:
            value = value.reshape(value.shape[0], -1, 1, 1)
        t.reshape(*value.shape)
        t.data[...] = value



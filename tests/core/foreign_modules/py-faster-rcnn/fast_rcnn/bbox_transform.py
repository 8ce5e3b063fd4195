"""py-faster-rcnn's box arithmetic: ``bbox_transform``, ``bbox_transform_inv`` and ``clip_boxes``
(rbgirshick/py-faster-rcnn ``lib/fast_rcnn/bbox_transform.py``), ``bbox_overlaps`` (its Cython
``lib/utils/bbox.pyx``) and ``nms`` (``lib/nms/py_cpu_nms.py``, the CPU path of
``fast_rcnn.nms_wrapper``). Boxes are (x1, y1, x2, y2) in pixels, inclusive: a box's width is
x2 - x1 + 1.
"""

from __future__ import annotations

import numpy as np


def _sizes_centres(boxes: np.ndarray):
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    return w, h, boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h


def bbox_transform(ex_rois: np.ndarray, gt_rois: np.ndarray) -> np.ndarray:
    """(N, 4) regression targets (dx, dy, dw, dh) taking ex_rois (N, 4) to gt_rois (N, 4)."""
    ew, eh, ex, ey = _sizes_centres(ex_rois)
    gw, gh, gx, gy = _sizes_centres(gt_rois)
    return np.stack([(gx - ex) / ew, (gy - ey) / eh, np.log(gw / ew), np.log(gh / eh)], axis=1)


def bbox_transform_inv(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply deltas (N, 4k) to boxes (N, 4): the (N, 4k) predicted boxes, in deltas' dtype."""
    if boxes.shape[0] == 0:
        return np.zeros((0, deltas.shape[1]), dtype=deltas.dtype)
    boxes = boxes.astype(deltas.dtype, copy=False)
    w, h, cx, cy = (v[:, None] for v in _sizes_centres(boxes))
    px = deltas[:, 0::4] * w + cx
    py = deltas[:, 1::4] * h + cy
    pw = np.exp(deltas[:, 2::4]) * w
    ph = np.exp(deltas[:, 3::4]) * h
    out = np.zeros(deltas.shape, dtype=deltas.dtype)
    # py-faster-rcnn's half extents carry no -1: x2 - x1 = pred width, not width - 1
    out[:, 0::4] = px - 0.5 * pw
    out[:, 1::4] = py - 0.5 * ph
    out[:, 2::4] = px + 0.5 * pw
    out[:, 3::4] = py + 0.5 * ph
    return out


def clip_boxes(boxes: np.ndarray, im_shape) -> np.ndarray:
    """Clip (N, 4k) boxes in place to an image of (height, width) = im_shape[:2]."""
    for k, limit in ((0, im_shape[1]), (1, im_shape[0]), (2, im_shape[1]), (3, im_shape[0])):
        boxes[:, k::4] = np.maximum(np.minimum(boxes[:, k::4], limit - 1), 0)
    return boxes


def bbox_overlaps(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """(N, K) intersection over union of boxes (N, 4+) and query_boxes (K, 4+), float64."""
    b = np.asarray(boxes, dtype=np.float64)[:, :4]
    q = np.asarray(query_boxes, dtype=np.float64)[:, :4]
    iw = np.minimum(b[:, None, 2], q[None, :, 2]) - np.maximum(b[:, None, 0], q[None, :, 0]) + 1
    ih = np.minimum(b[:, None, 3], q[None, :, 3]) - np.maximum(b[:, None, 1], q[None, :, 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    area_q = (q[:, 2] - q[:, 0] + 1) * (q[:, 3] - q[:, 1] + 1)
    union = area_b[:, None] + area_q[None, :] - inter
    # the Cython loop divides only where boxes meet; elsewhere the overlap stays 0
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Greedy non-maximum suppression of dets (N, 5: x1 y1 x2 y2 score): indices kept, best
    first; a box goes when its IoU with a kept one is above thresh."""
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= thresh]
    return keep

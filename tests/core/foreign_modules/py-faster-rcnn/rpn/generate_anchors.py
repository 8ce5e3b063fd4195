"""py-faster-rcnn's anchors (rbgirshick/py-faster-rcnn ``lib/rpn/generate_anchors.py``): every
aspect ratio of a (0, 0, base_size-1, base_size-1) window, each at every scale, rounded as the
original rounds them. The defaults give its 9 anchors, the first [-84, -40, 99, 55].
"""

from __future__ import annotations

import numpy as np


def _whctrs(anchor):
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws, hs, x_ctr, y_ctr):
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1),
                      x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def _ratio_enum(anchor, ratios):
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    ws = np.round(np.sqrt(w * h / ratios))
    return _mkanchors(ws, np.round(ws * ratios), x_ctr, y_ctr)


def _scale_enum(anchor, scales):
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    return _mkanchors(w * scales, h * scales, x_ctr, y_ctr)


def generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=2 ** np.arange(3, 6)) -> np.ndarray:
    """(len(ratios) * len(scales), 4) anchors, ratio-major, centred on the base window."""
    base = np.array([1, 1, base_size, base_size], dtype=np.float64) - 1
    per_ratio = _ratio_enum(base, np.asarray(ratios, dtype=np.float64))
    scales = np.asarray(scales, dtype=np.float64)
    return np.vstack([_scale_enum(per_ratio[i], scales) for i in range(per_ratio.shape[0])])

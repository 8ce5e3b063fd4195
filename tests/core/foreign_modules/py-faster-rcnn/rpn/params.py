"""param_str parsing shared by the rpn layers: YAML, as py-faster-rcnn's layers read it
(``yaml.load``, so ``!!python/tuple`` tags work), and the anchors the R-FCN/PVANet descendants
build from its ``scales``, ``ratios`` and ``base_size`` (py-faster-rcnn's own defaults when
absent: 16, (0.5, 1, 2), (8, 16, 32))."""

from __future__ import annotations

import numpy as np
import yaml

from rpn.generate_anchors import generate_anchors


def layer_params(param_str: str) -> dict:
    params = yaml.load(param_str, Loader=yaml.FullLoader)
    if not isinstance(params, dict):
        raise ValueError(f"param_str must be a YAML mapping, not {param_str!r}")
    return params


def anchors_from(params: dict) -> np.ndarray:
    return generate_anchors(base_size=params.get("base_size", 16),
                            ratios=params.get("ratios", (0.5, 1, 2)),
                            scales=np.array(params.get("scales", (8, 16, 32))))


def shifted_anchors(anchors: np.ndarray, feat_stride: int, height: int, width: int):
    """(K*A, 4) anchors at every cell of a height x width map, ordered (h, w, a)."""
    sx, sy = np.meshgrid(np.arange(width) * feat_stride, np.arange(height) * feat_stride)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
    return (anchors[None, :, :] + shifts[:, None, :]).reshape(-1, 4)

"""caffe-fast-rcnn's ROIPooling and caffe-rfcn's PSROIPooling written loop for loop from the
forks' kernels: the references the ROI tests compare decaffe's vectorised layers against."""

from __future__ import annotations

import math

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


def c_round(v: float) -> int:
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def roi_loops(x: np.ndarray, rois: np.ndarray, ph_n: int, pw_n: int, scale: float,
              dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """caffe-fast-rcnn's ROIPooling Forward_cpu and Backward (each diff to the argmax its
    forward kept; ROIs ending before they start skipped), loop for loop, in x's dtype; the
    geometry in float32 as the fork computes it for float nets."""
    f = np.float32
    dt = x.dtype.type
    _, c, height, width = x.shape
    top = np.zeros((rois.shape[0], c, ph_n, pw_n), x.dtype)
    grad = np.zeros(x.shape, np.float64)
    for n in range(rois.shape[0]):
        b = int(rois[n, 0])
        sw, sh, ew, eh = (c_round(float(f(rois[n, i]) * f(scale))) for i in (1, 2, 3, 4))
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bh, bw = f(rh) / f(ph_n), f(rw) / f(pw_n)
        for ch in range(c):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    hs = min(max(int(math.floor(f(ph) * bh)) + sh, 0), height)
                    he = min(max(int(math.ceil(f(ph + 1) * bh)) + sh, 0), height)
                    ws = min(max(int(math.floor(f(pw) * bw)) + sw, 0), width)
                    we = min(max(int(math.ceil(f(pw + 1) * bw)) + sw, 0), width)
                    best, arg = dt(-FLT_MAX), -1
                    if he <= hs or we <= ws:
                        best = dt(0)
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if x[b, ch, h, w] > best:
                                best, arg = x[b, ch, h, w], (h, w)
                    top[n, ch, ph, pw] = best
                    if arg != -1 and not (ew < sw or eh < sh):
                        grad[b, ch][arg] += dy[n, ch, ph, pw]
    return top, grad


def psroi_loops(x: np.ndarray, rois: np.ndarray, dim: int, g: int, scale: float,
                dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """caffe-rfcn's PSROIPooling forward and backward, loop for loop (sums in float64)."""
    f = np.float32
    _, _, height, width = x.shape
    top = np.zeros((rois.shape[0], dim, g, g))
    grad = np.zeros(x.shape)
    for n in range(rois.shape[0]):
        b = int(rois[n, 0])
        sw = f(c_round(float(rois[n, 1]))) * f(scale)
        sh = f(c_round(float(rois[n, 2]))) * f(scale)
        ew = f(c_round(float(rois[n, 3])) + 1.0) * f(scale)
        eh = f(c_round(float(rois[n, 4])) + 1.0) * f(scale)
        bh, bw = max(eh - sh, f(0.1)) / f(g), max(ew - sw, f(0.1)) / f(g)
        for d in range(dim):
            for ph in range(g):
                for pw in range(g):
                    hs = min(max(int(math.floor(f(ph) * bh + sh)), 0), height)
                    ws = min(max(int(math.floor(f(pw) * bw + sw)), 0), width)
                    he = min(max(int(math.ceil(f(ph + 1) * bh + sh)), 0), height)
                    we = min(max(int(math.ceil(f(pw + 1) * bw + sw)), 0), width)
                    c = (d * g + ph) * g + pw
                    if he <= hs or we <= ws:
                        continue
                    area = (he - hs) * (we - ws)
                    top[n, d, ph, pw] = x[b, c, hs:he, ws:we].astype(np.float64).sum() / area
                    grad[b, c, hs:he, ws:we] += dy[n, d, ph, pw] / area
    return top, grad

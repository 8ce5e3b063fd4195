"""The Faster R-CNN / R-FCN family of fork layers: ROIPooling, PSROIPooling, SmoothL1Loss,
Proposal, and R-FCN's online hard example mining (SoftmaxWithLossOHEM, SmoothL1LossOHEM,
BoxAnnotatorOHEM).

- ROIPooling and SmoothL1Loss follow rbgirshick/caffe-fast-rcnn (py-faster-rcnn's Caffe).
- PSROIPooling follows daijifeng001/caffe-rfcn (R-FCN).
- Proposal is the C++ region proposal layer of sanghoon/pva-faster-rcnn (the one the golden
  fork build carries), not py-faster-rcnn's Python ``rpn.proposal_layer``, which runs
  unchanged as a Python layer.

ROI geometry (rounding of the ROI corners, bin edges) is computed in the bottom's precision
with C's rounding (half away from zero), floor and ceil, exactly as the forks' kernels do,
so the pooled cells are the same cells.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...layer import Layer, register
from ...proto import caffe_pb2
from ..loss import (
    BATCH_SIZE,
    FULL,
    LOG_FLT_MIN,
    VALID,
    SoftmaxWithLossLayer,
    _axis_split,
    _LossLayer,
)

_LossParam = caffe_pb2.LossParameter


def _c_round(v: np.ndarray) -> np.ndarray:
    """C's round(): half away from zero (numpy's round is half to even)."""
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + (a - f >= 0.5))


def _np_dtype(t: torch.Tensor):
    return np.float64 if t.dtype == torch.float64 else np.float32


def _rois_array(layer: Layer, rois: torch.Tensor, dt) -> np.ndarray:
    """The (R, 5) ROI table [batch_index, x1, y1, x2, y2] in the bottom's precision."""
    per_roi = math.prod(rois.shape[1:])
    r = rois.detach().reshape(rois.shape[0], per_roi).cpu().numpy().astype(dt, copy=False)
    layer.check(r.shape[1] == 5, f"each ROI must have 5 values (batch index, x1, y1, x2, y2), "
                f"bottom '{layer.bottom_names[1]}' has {r.shape[1]}")
    return r


def _batch_index(layer: Layer, r: np.ndarray, batch: int) -> np.ndarray:
    b = np.trunc(r[:, 0]).astype(np.int64)  # int roi_batch_ind = bottom_rois[0]
    bad = (b < 0) | (b >= batch)
    if bad.any():
        i = int(np.argmax(bad))
        raise layer.error(f"ROI {i} has batch index {r[i, 0]:g}, outside [0, {batch}) "
                          f"of bottom '{layer.bottom_names[0]}'")
    return b


def _check_roi_bottoms(layer: Layer, bottom_shapes) -> tuple:
    x, rois = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
    layer.check(len(x) == 4, f"bottom '{layer.bottom_names[0]}' must be N x C x H x W, "
                f"got shape {x}")
    layer.check(len(rois) >= 1 and math.prod(rois[1:]) == 5,
                f"ROI layer C x W x H must be == 5: bottom '{layer.bottom_names[1]}' has "
                f"shape {rois}")
    return x, rois


# ------------------------------------------------------------------------------------------
# ROIPooling
# ------------------------------------------------------------------------------------------
@register("ROIPooling")
class ROIPoolingLayer(Layer):
    """Max pooling of each ROI into a pooled_h × pooled_w grid (Fast R-CNN).

    Bottoms: features (N, C, H, W) and ROIs (R, 5) — [batch index, x1, y1, x2, y2] in image
    coordinates. Top: (R, C, pooled_h, pooled_w).

    Each corner is round(coord · spatial_scale) (C rounding); the ROI spans
    max(end − start + 1, 1) cells; bin (ph, pw) covers rows [floor(ph·bh), ceil((ph+1)·bh))
    shifted by the start and clipped to the map, bh = roi_height / pooled_h (likewise for
    columns). A bin's value is its first maximum in row-major order; an empty bin gives 0.
    Backward sends each top diff to its bin's argmax; a ROI whose end lies before its start
    (pooled as a 1×1 cell) gets no gradient, as the fork's backward skips it. The ROIs get
    no gradient. pooled_h and pooled_w must be > 0; batch indices must be in [0, N).
    Source: caffe-fast-rcnn src/caffe/layers/roi_pooling_layer.cpp.
    """

    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom_shapes):
        p = self.lp.roi_pooling_param
        self.check(p.pooled_h > 0, "pooled_h must be > 0", "roi_pooling_param.pooled_h")
        self.check(p.pooled_w > 0, "pooled_w must be > 0", "roi_pooling_param.pooled_w")
        self.pooled_h, self.pooled_w = int(p.pooled_h), int(p.pooled_w)
        self.spatial_scale = p.spatial_scale

    def reshape(self, bottom_shapes):
        x, rois = _check_roi_bottoms(self, bottom_shapes)
        return [(rois[0], x[1], self.pooled_h, self.pooled_w)]

    def _bins(self, r: np.ndarray, height: int, width: int, dt):
        """Per ROI: clipped [start, end) rows (R, PH) and columns (R, PW); malformed flags."""
        scale = dt(self.spatial_scale)
        sw, sh, ew, eh = (_c_round(r[:, i] * scale).astype(np.int64) for i in (1, 2, 3, 4))
        roi_h = np.maximum(eh - sh + 1, 1)
        roi_w = np.maximum(ew - sw + 1, 1)
        bin_h = roi_h.astype(dt) / dt(self.pooled_h)
        bin_w = roi_w.astype(dt) / dt(self.pooled_w)
        ph = np.arange(self.pooled_h, dtype=dt)
        pw = np.arange(self.pooled_w, dtype=dt)
        hs = np.floor(ph[None] * bin_h[:, None]).astype(np.int64) + sh[:, None]
        he = np.ceil((ph[None] + dt(1)) * bin_h[:, None]).astype(np.int64) + sh[:, None]
        ws = np.floor(pw[None] * bin_w[:, None]).astype(np.int64) + sw[:, None]
        we = np.ceil((pw[None] + dt(1)) * bin_w[:, None]).astype(np.int64) + sw[:, None]
        hs, he = np.clip(hs, 0, height), np.clip(he, 0, height)
        ws, we = np.clip(ws, 0, width), np.clip(we, 0, width)
        malformed = (eh < sh) | (ew < sw)
        return hs, he, ws, we, malformed

    def forward(self, x, rois):
        n, c, height, width = x.shape
        dt = _np_dtype(x)
        r = _rois_array(self, rois, dt)
        num = r.shape[0]
        ph_n, pw_n = self.pooled_h, self.pooled_w
        if num == 0:
            return x.new_zeros((0, c, ph_n, pw_n))
        b = _batch_index(self, r, n)
        hs, he, ws, we, malformed = self._bins(r, height, width, dt)
        flat = torch.zeros((num, c, ph_n, pw_n), dtype=torch.long, device=x.device)
        xd = x.detach()
        for i in range(num):
            h0, h1 = int(hs[i].min()), int(he[i].max())
            w0, w1 = int(ws[i].min()), int(we[i].max())
            if h1 <= h0 or w1 <= w0:
                continue
            crop = xd[b[i], :, h0:h1, w0:w1].contiguous()  # the cells this ROI's bins touch
            # max over each bin's columns, then over its rows: the first maximum in row-major
            # order (smallest row, then smallest column), as Caffe's strict '>' scan keeps;
            # torch.max returns the first index of equal maxima
            m1 = torch.full((c, h1 - h0, pw_n), -math.inf, dtype=x.dtype, device=x.device)
            i1 = torch.zeros((c, h1 - h0, pw_n), dtype=torch.long, device=x.device)
            for pw in range(pw_n):
                a, z = int(ws[i, pw]) - w0, int(we[i, pw]) - w0
                if z > a:
                    m1[:, :, pw], i1[:, :, pw] = crop[:, :, a:z].max(dim=2)
                    i1[:, :, pw] += a + w0
            for ph in range(ph_n):
                a, z = int(hs[i, ph]) - h0, int(he[i, ph]) - h0
                if z > a:
                    _, ih = m1[:, a:z].max(dim=1)  # (C, PW)
                    ih = ih + a
                    iw = i1.gather(1, ih[:, None, :])[:, 0]
                    flat[i, :, ph] = (ih + h0) * width + iw
        nonempty = (he[:, :, None] > hs[:, :, None]) & (we[:, None, :] > ws[:, None, :])
        valid = torch.as_tensor(nonempty, device=x.device)[:, None].expand(num, c, ph_n, pw_n)
        base = (torch.as_tensor(b, device=x.device)[:, None] * c
                + torch.arange(c, device=x.device)[None]) * (height * width)
        top = x.reshape(-1)[(base[:, :, None, None] + flat).reshape(-1)].reshape(flat.shape)
        if malformed.any():
            dead = torch.as_tensor(malformed, device=x.device)[:, None, None, None]
            top = torch.where(dead, top.detach(), top)
        return torch.where(valid, top, torch.zeros((), dtype=x.dtype, device=x.device))


# ------------------------------------------------------------------------------------------
# PSROIPooling
# ------------------------------------------------------------------------------------------
@register("PSROIPooling")
class PSROIPoolingLayer(Layer):
    """Position-sensitive average ROI pooling (R-FCN).

    Bottoms: score maps (N, output_dim·group_size², H, W) and ROIs (R, 5). Top:
    (R, output_dim, group_size, group_size). Cell (d, ph, pw) averages channel
    (d·G + ph)·G + pw over its bin; an empty bin gives 0. ROI corners: round(x1)·scale,
    (round(x2) + 1)·scale (C rounding, bottom precision); the ROI is at least 0.1 wide and
    high; bin [floor(ph·bh + y1), ceil((ph+1)·bh + y1)) clipped to the map. Backward spreads
    each top diff evenly over its bin; the ROIs get no gradient. spatial_scale, output_dim
    and group_size must be given (the fork's `required`); output_dim and group_size > 0; the
    bottom must have output_dim·group_size² channels.
    Source: caffe-rfcn src/caffe/layers/psroi_pooling_layer.cpp and .cu.
    """

    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom_shapes):
        p = self.lp.psroi_pooling_param
        f = "psroi_pooling_param"
        for name in ("spatial_scale", "output_dim", "group_size"):
            self.check(p.HasField(name), "required field is not set (the fork declares it "
                       "`required`)", f"{f}.{name}")
        self.check(p.output_dim > 0, "output_dim must be > 0", f"{f}.output_dim")
        self.check(p.group_size > 0, "group_size must be > 0", f"{f}.group_size")
        self.spatial_scale = p.spatial_scale
        self.output_dim, self.group_size = int(p.output_dim), int(p.group_size)

    def reshape(self, bottom_shapes):
        x, rois = _check_roi_bottoms(self, bottom_shapes)
        d, g = self.output_dim, self.group_size
        self.check(x[1] == d * g * g, f"input channel number does not match layer parameters: "
                   f"bottom '{self.bottom_names[0]}' has {x[1]} channels, output_dim·"
                   f"group_size² = {d * g * g}")
        return [(rois[0], d, g, g)]

    def forward(self, x, rois):
        n, c, height, width = x.shape
        dt = _np_dtype(x)
        r = _rois_array(self, rois, dt)
        num, d, g = r.shape[0], self.output_dim, self.group_size
        if num == 0:
            return x.new_zeros((0, d, g, g))
        b = _batch_index(self, r, n)
        scale = dt(self.spatial_scale)
        sw = _c_round(r[:, 1]).astype(dt) * scale
        sh = _c_round(r[:, 2]).astype(dt) * scale
        ew = (_c_round(r[:, 3]) + 1).astype(dt) * scale
        eh = (_c_round(r[:, 4]) + 1).astype(dt) * scale
        roi_w = np.maximum(ew - sw, dt(0.1))
        roi_h = np.maximum(eh - sh, dt(0.1))
        bin_h, bin_w = roi_h / dt(g), roi_w / dt(g)
        k = np.arange(g, dtype=dt)
        hs = np.clip(np.floor(k[None] * bin_h[:, None] + sh[:, None]), 0, height).astype(np.int64)
        he = np.clip(np.ceil((k[None] + dt(1)) * bin_h[:, None] + sh[:, None]), 0,
                     height).astype(np.int64)
        ws = np.clip(np.floor(k[None] * bin_w[:, None] + sw[:, None]), 0, width).astype(np.int64)
        we = np.clip(np.ceil((k[None] + dt(1)) * bin_w[:, None] + sw[:, None]), 0,
                     width).astype(np.int64)
        dev = x.device
        # box sums from a zero-padded 2-d prefix sum (accumulated in float64)
        s = torch.nn.functional.pad(x.double().cumsum(2).cumsum(3), (1, 0, 1, 0))
        s = s.reshape(-1)
        hs_t, he_t = torch.as_tensor(hs, device=dev), torch.as_tensor(he, device=dev)
        ws_t, we_t = torch.as_tensor(ws, device=dev), torch.as_tensor(we, device=dev)
        ch = ((torch.arange(d, device=dev)[:, None, None] * g
               + torch.arange(g, device=dev)[None, :, None]) * g
              + torch.arange(g, device=dev)[None, None, :])  # (D, G, G)
        plane = (torch.as_tensor(b, device=dev)[:, None, None, None] * c + ch[None]) \
            * ((height + 1) * (width + 1))  # (R, D, G, G)
        row_s = hs_t[:, None, :, None] * (width + 1)
        row_e = he_t[:, None, :, None] * (width + 1)
        col_s, col_e = ws_t[:, None, None, :], we_t[:, None, None, :]
        total = (s[plane + row_e + col_e] - s[plane + row_s + col_e]
                 - s[plane + row_e + col_s] + s[plane + row_s + col_s])
        area = ((he_t - hs_t)[:, :, None] * (we_t - ws_t)[:, None, :])[:, None]  # (R,1,G,G)
        empty = area <= 0
        out = torch.where(empty, torch.zeros((), dtype=total.dtype, device=dev),
                          total / area.clamp_min(1).to(total.dtype))
        return out.to(x.dtype)


# ------------------------------------------------------------------------------------------
# SmoothL1Loss
# ------------------------------------------------------------------------------------------
@register("SmoothL1Loss")
class SmoothL1LossLayer(_LossLayer):
    """Σ outside · smoothL1(inside · (a − b)) / N, N = a.shape[0] (Faster R-CNN).

    smoothL1(x) = 0.5·σ²·x² if |x| < 1/σ², else |x| − 0.5/σ² (σ = smooth_l1_loss_param.sigma,
    default 1). Bottoms: predictions, targets, and optionally inside and outside weights —
    both or neither: three bottoms are refused, as the fork refuses them. All bottoms have
    a's shape. Gradients go to the predictions and targets (the weights are never
    back-propagated). With two bottoms and σ = 1 this is also the SSD fork's SmoothL1Loss.
    Source: caffe-fast-rcnn src/caffe/layers/smooth_L1_loss_layer.cpp/.cu.
    """

    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 4

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index < 2

    def setup(self, bottom_shapes):
        self._check_tops()
        self.check(len(bottom_shapes) != 3, "If weights are used, must specify both inside and "
                   "outside weights (4 bottoms), got 3")
        sigma = float(np.float32(self.lp.smooth_l1_loss_param.sigma))
        self.sigma2 = float(np.float32(sigma * sigma))

    def reshape(self, bottom_shapes):
        a = tuple(bottom_shapes[0])
        for i, s in enumerate(bottom_shapes[1:], start=1):
            self.check(math.prod(s) == math.prod(a),
                       f"{self._bottom(i)} has shape {tuple(s)}, {self._bottom(0)} has {a}: "
                       "they must have the same size")
        return [()]

    def forward(self, a, b, *weights):
        d = a - b.reshape(a.shape)
        if weights:
            inside, outside = (w.detach().reshape(a.shape) for w in weights)
            d = d * inside
        ad = d.abs()
        e = torch.where(ad < 1.0 / self.sigma2, 0.5 * self.sigma2 * d * d, ad - 0.5 / self.sigma2)
        if weights:
            e = e * outside
        return e.sum() / a.shape[0]


# ------------------------------------------------------------------------------------------
# Proposal
# ------------------------------------------------------------------------------------------
def _generate_anchors(base_size: int, ratios, scales, dt) -> np.ndarray:
    """(A, 4) anchors around the base box's centre, ratios outer, scales inner (the golden
    fork's variant: a scale is the anchor's size in pixels for base_size pixels)."""
    base_area = dt(base_size * base_size)
    center = dt(0.5) * (dt(base_size) - dt(1))
    out = []
    for ratio in ratios:
        ratio = dt(ratio)
        ratio_w = dt(np.sqrt(base_area / ratio))
        ratio_h = dt(ratio_w * ratio)
        for scale in scales:
            scale = dt(scale)
            # ROUND(x) = (int)(x + 0.5), evaluated in double as the fork's `* 1.0` makes it
            sw = dt(0.5 * int(float(ratio_w * scale) / base_size - 1.0 + 0.5))
            sh = dt(0.5 * int(float(ratio_h * scale) / base_size - 1.0 + 0.5))
            out.append([center - sw, center - sh, center + sw, center + sh])
    return np.asarray(out, dtype=dt).reshape(-1, 4)


def _sort_box(p: np.ndarray, start: int, end: int, num_top: int) -> None:
    """The fork's partial quicksort of rows [start, end] by score (column 4), descending:
    the first num_top rows end sorted; ties land where this exact algorithm puts them."""
    stack = [(start, end)]
    while stack:
        start, end = stack.pop()
        pivot = p[start, 4]
        left, right = start + 1, end
        while left <= right:
            while left <= end and p[left, 4] >= pivot:
                left += 1
            while right > start and p[right, 4] <= pivot:
                right -= 1
            if left <= right:
                p[[left, right]] = p[[right, left]]
                left += 1
                right -= 1
        if right > start:
            p[[start, right]] = p[[right, start]]
        # the fork recurses left part first, then the right part; order does not matter
        # for the result since the parts are disjoint
        if right + 1 < num_top and right + 1 < end:
            stack.append((right + 1, end))
        if start < right - 1:
            stack.append((start, right - 1))


def _iou(a: np.ndarray, b: np.ndarray, dt):
    if a[0] > b[2] or a[1] > b[3] or a[2] < b[0] or a[3] < b[1]:
        return dt(0)
    one = dt(1)
    w = max(dt(0), min(a[2], b[2]) - max(a[0], b[0]) + one)
    h = max(dt(0), min(a[3], b[3]) - max(a[1], b[1]) + one)
    inter = w * h
    area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one)
    area_b = (b[2] - b[0] + one) * (b[3] - b[1] + one)
    return inter / (area_a + area_b - inter)


@register("Proposal")
class ProposalLayer(Layer):
    """Region proposals from RPN scores and box deltas: the C++ Proposal layer of the fork
    build behind tests/golden/fork_proposal* (inisis/caffe, itself pva-faster-rcnn's layer
    with its own anchors).

    Bottoms: scores (N, 2A, H, W) — background then foreground for the A anchors —, deltas
    (N, 4A, H, W), im_info [img_h, img_w, ...] (the first image's; its scale entries are not
    used: min_size is in input pixels). Tops: rois (R, 5) [n, x1, y1, x2, y2] and optionally
    scores (R,), the images' proposals one after the other.

    Anchors: for each ratio (outer) w = √(base_size²/ratio), h = w·ratio; for each scale
    (inner) the box of half-size ROUND(w·scale/base_size − 1)/2 (likewise h) around
    ((base_size − 1)/2, (base_size − 1)/2), shifted by feat_stride·(x, y) at every cell
    (cells row-major outer, anchors inner). Each moves by its deltas (centre + d·size,
    size·exp(d), sizes with +1), is clipped to the image, and its score becomes 0 unless it is
    at least min_size wide and high. The fork's partial quicksort brings the pre_nms_topn
    best first (ties where that algorithm leaves them); greedy NMS (IoU with +1 sizes
    > nms_thresh suppresses) keeps at most post_nms_topn. R depends on the data. No
    backward (the fork's is empty).
    Source: inisis/caffe src/caffe/layers/proposal_layer.cpp.
    """

    exact_bottoms = 3
    min_tops = 1
    max_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes):
        p = self.lp.proposal_param
        self.feat_stride = int(p.feat_stride)
        self.base_size = int(p.base_size)
        self.min_size = int(p.min_size)
        self.pre_nms_topn = int(p.pre_nms_topn)
        self.post_nms_topn = int(p.post_nms_topn)
        self.nms_thresh = p.nms_thresh
        self.check(len(p.ratio) > 0, "at least one ratio is needed", "proposal_param.ratio")
        self.check(len(p.scale) > 0, "at least one scale is needed", "proposal_param.scale")
        self.check(self.base_size > 0, "base_size must be > 0", "proposal_param.base_size")
        self.ratios, self.scales = list(p.ratio), list(p.scale)

    def reshape(self, bottom_shapes):
        s, dlt, info = (tuple(x) for x in bottom_shapes)
        a = len(self.ratios) * len(self.scales)
        self.check(len(s) == 4 and s[1] == 2 * a, f"bottom '{self.bottom_names[0]}' must be "
                   f"(N, 2·{a}, H, W) for {a} anchors, got {s}")
        self.check(len(dlt) == 4 and dlt[0] == s[0] and dlt[1] == 4 * a and dlt[2:] == s[2:],
                   f"bottom '{self.bottom_names[1]}' must be ({s[0]}, 4·{a}, {s[2]}, {s[3]}), "
                   f"got {dlt}")
        self.check(math.prod(info) >= 2, f"bottom '{self.bottom_names[2]}' (im_info) needs "
                   f"the image height and width, has shape {info}")
        rows = s[0] * self.post_nms_topn
        return [(rows, 5), (rows,)][:len(self.top_names)]

    def _proposals(self, sc, dl, anchors, img_h, img_w, dt) -> np.ndarray:
        """(H·W·A, 5) boxes and scores, in the fork's enumeration order."""
        a = anchors.shape[0]
        height, width = sc.shape[1:]
        one, half = dt(1), dt(0.5)
        shift_x = (np.arange(width) * self.feat_stride).astype(dt)
        shift_y = (np.arange(height) * self.feat_stride).astype(dt)
        x1 = shift_x[None, :, None] + anchors[None, None, :, 0]
        y1 = shift_y[:, None, None] + anchors[None, None, :, 1]
        x2 = shift_x[None, :, None] + anchors[None, None, :, 2]
        y2 = shift_y[:, None, None] + anchors[None, None, :, 3]
        d = dl.reshape(a, 4, height, width).transpose(2, 3, 0, 1)  # (H, W, A, 4)
        w = x2 - x1 + one
        h = y2 - y1 + one
        cx = x1 + half * w
        cy = y1 + half * h
        pcx = d[..., 0] * w + cx
        pcy = d[..., 1] * h + cy
        pw = np.exp(d[..., 2]) * w
        ph = np.exp(d[..., 3]) * h
        out = np.empty((height, width, a, 5), dt)
        out[..., 0] = np.maximum(dt(0), np.minimum(pcx - half * pw, img_w - one))
        out[..., 1] = np.maximum(dt(0), np.minimum(pcy - half * ph, img_h - one))
        out[..., 2] = np.maximum(dt(0), np.minimum(pcx + half * pw, img_w - one))
        out[..., 3] = np.maximum(dt(0), np.minimum(pcy + half * ph, img_h - one))
        bw = out[..., 2] - out[..., 0] + one
        bh = out[..., 3] - out[..., 1] + one
        big = (bw >= dt(self.min_size)) & (bh >= dt(self.min_size))
        out[..., 4] = big.astype(dt) * sc[a:].transpose(1, 2, 0)
        return np.ascontiguousarray(out.reshape(-1, 5))

    def _nms(self, props: np.ndarray, dt) -> list[int]:
        pre = min(props.shape[0], self.pre_nms_topn)
        chosen: list[int] = []
        dead = np.zeros(pre, bool)
        thresh = dt(self.nms_thresh)
        for i in range(pre):
            if dead[i]:
                continue
            chosen.append(i)
            if len(chosen) == self.post_nms_topn:
                break
            for j in range(i + 1, pre):
                if not dead[j] and _iou(props[i], props[j], dt) > thresh:
                    dead[j] = True
        return chosen

    def forward(self, score, delta, im_info):
        dt = _np_dtype(score)
        sc_all = score.detach().cpu().numpy().astype(dt, copy=False)
        dl_all = delta.detach().cpu().numpy().astype(dt, copy=False)
        info = im_info.detach().reshape(-1).cpu().numpy().astype(dt, copy=False)
        anchors = _generate_anchors(self.base_size, self.ratios, self.scales, dt)
        rois, scores = [], []
        for n in range(sc_all.shape[0]):
            props = self._proposals(sc_all[n], dl_all[n], anchors, info[0], info[1], dt)
            _sort_box(props, 0, props.shape[0] - 1, self.pre_nms_topn)
            sel = props[self._nms(props, dt)]
            r = np.zeros((sel.shape[0], 5), dt)
            r[:, 0] = n
            r[:, 1:] = sel[:, :4]
            rois.append(r)
            scores.append(sel[:, 4])
        dev = score.device
        rois_t = torch.as_tensor(np.concatenate(rois), dtype=score.dtype, device=dev)
        if len(self.top_names) < 2:
            return rois_t
        return rois_t, torch.as_tensor(np.concatenate(scores), dtype=score.dtype, device=dev)


# ------------------------------------------------------------------------------------------
# Online hard example mining (R-FCN): SoftmaxWithLossOHEM, SmoothL1LossOHEM, BoxAnnotatorOHEM
# ------------------------------------------------------------------------------------------
_PRE_FIXED = _LossParam.PRE_FIXED


def _legacy_dims(shape) -> tuple[int, int, int, int]:
    """Caffe's num/channels/height/width of a blob of at most 4 axes (missing ones are 1)."""
    s = tuple(int(v) for v in shape) + (1,) * (4 - len(shape))
    return s[0], s[1], s[2], s[3]


@register("SoftmaxWithLossOHEM")
class SoftmaxWithLossOHEMLayer(SoftmaxWithLossLayer):
    """SoftmaxWithLoss with R-FCN's per-instance loss: an optional third top (the label
    bottom's shape) holds −log(max(p[label], FLT_MIN)) at every position, 0 where the label
    is ignored, for BoxAnnotatorOHEM to rank; it carries no gradient. The loss and its
    gradient are SoftmaxWithLoss's, with loss_param.normalization PRE_FIXED dividing by
    loss_param.pre_fixed_normalizer (at least 1).
    Source: caffe-rfcn / soeaver's caffe-priv softmax_loss_ohem_layer.
    """

    max_loss_tops = 3

    def reshape(self, bottom_shapes):
        shapes = super().reshape(bottom_shapes)
        if self._num_tops() >= 3:
            shapes[2] = tuple(bottom_shapes[1])
        return shapes

    def _normalizer(self, mode, outer, inner, valid_count):  # noqa: D401 - Caffe's name
        if mode == _PRE_FIXED:
            return max(1.0, float(np.float32(self.lp.loss_param.pre_fixed_normalizer)))
        return SoftmaxWithLossLayer._normalizer(mode, outer, inner, valid_count)

    def forward(self, x, label):
        out = super().forward(x, label)
        if self._num_tops() < 3:
            return out
        outer, c, inner = _axis_split(x.shape, self.axis)
        with torch.no_grad():
            scores = x.detach().reshape(outer, c, inner)
            lab = label.detach().reshape(outer, inner)
            index, keep, _ = self._class_index(lab, c, self.ignore)
            logp = torch.log_softmax(scores, dim=1).gather(1, index[:, None])[:, 0]
            nll = (-logp).clamp_max(-LOG_FLT_MIN)
            if keep is not None:
                nll = torch.where(keep, nll, torch.zeros((), dtype=nll.dtype))
        return (*out, nll.reshape(label.shape))


@register("SmoothL1LossOHEM")
class SmoothL1LossOHEMLayer(_LossLayer):
    """R-FCN's SmoothL1 loss for OHEM (σ = 1): Σ smoothL1(w · (a − b)) / normaliser.

    Bottoms: predictions, targets and optionally weights w (BoxAnnotatorOHEM's bbox loss
    weights). The normaliser is loss_param.normalization (default VALID; FULL and VALID are
    num·height·width, BATCH_SIZE num, PRE_FIXED pre_fixed_normalizer, NONE 1; at least 1).
    An optional second top (num, 1, height, width) holds each instance's loss summed over
    channels, with no gradient. The fork's backward is smoothL1'(w · (a − b)) · ±loss_weight /
    normaliser, without the factor w (decaffe keeps it: the same for 0/1 weights); the
    weights get no gradient.
    Source: caffe-rfcn / soeaver's caffe-priv smooth_L1_loss_ohem_layer.
    """

    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3
    max_loss_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index < 2

    def setup(self, bottom_shapes):
        self._check_tops()
        self.normalization = self._normalization(VALID)

    def reshape(self, bottom_shapes):
        self._check_first_axis(bottom_shapes)
        a = tuple(bottom_shapes[0])
        self.check(len(a) <= 4, f"{self._bottom(0)} must have at most 4 axes, has shape {a}")
        for i, s in enumerate(bottom_shapes[1:], start=1):
            self.check(_legacy_dims(s)[1:] == _legacy_dims(a)[1:] and math.prod(s) == math.prod(a),
                       f"{self._bottom(i)} has shape {tuple(s)}, {self._bottom(0)} has {a}: "
                       "channels, height and width must agree")
        n, _, h, w = _legacy_dims(a)
        self.outer, self.inner = n, h * w
        return [(), (n, 1, h, w)][:self._num_tops()]

    def _normalizer_value(self) -> float:
        mode = self.normalization
        if mode in (FULL, VALID):
            value = float(self.outer * self.inner)
        elif mode == BATCH_SIZE:
            value = float(self.outer)
        elif mode == _PRE_FIXED:
            value = float(np.float32(self.lp.loss_param.pre_fixed_normalizer))
        else:
            value = 1.0
        return max(1.0, value)

    def forward(self, a, b, *weights):
        raw = a - b.reshape(a.shape)
        if weights:
            scaled = raw * weights[0].detach().reshape(a.shape)
            d = raw + (scaled - raw).detach()  # the value w·(a−b), the fork's gradient of a−b
        else:
            d = raw
        ad = d.abs()
        e = torch.where(ad < 1.0, 0.5 * d * d, ad - 0.5)
        loss = e.sum() / self._normalizer_value()
        if self._num_tops() < 2:
            return loss
        n, c, h, w = _legacy_dims(a.shape)
        per = e.detach().reshape(n, c, h, w).sum(dim=1, keepdim=True)
        return loss, per


@register("BoxAnnotatorOHEM")
class BoxAnnotatorOHEMLayer(Layer):
    """R-FCN's hard example selection: keeps the roi_per_img highest-loss ROIs of each image.

    Bottoms: ROIs (R, 5, ...), per-ROI loss (R, 1, ...), labels (R, 1, ...), bbox loss
    weights (R, K, ...). Tops: labels with ignore_label (default −1) everywhere except the
    kept ROIs, and bbox loss weights zeroed except for the kept ROIs. ROIs are ranked by loss,
    highest first (equal losses keep their order: the fork's std::sort leaves it unspecified);
    an image's quota is roi_per_img (required, > 0). No backward.
    Source: caffe-rfcn src/caffe/layers/box_annotator_ohem_layer.cu.
    """

    exact_bottoms = 4
    exact_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes):
        p = self.lp.box_annotator_ohem_param
        f = "box_annotator_ohem_param.roi_per_img"
        self.check(p.HasField("roi_per_img"), "required field is not set (the fork declares "
                   "it `required`)", f)
        self.check(p.roi_per_img > 0, "must be > 0", f)
        self.roi_per_img = int(p.roi_per_img)
        self.ignore_label = float(p.ignore_label)

    def reshape(self, bottom_shapes):
        shapes = [_legacy_dims(s) for s in bottom_shapes]
        n, _, h, w = shapes[0]
        self.check(shapes[0][1] == 5, f"bottom '{self.bottom_names[0]}' must have 5 channels, "
                   f"has shape {tuple(bottom_shapes[0])}")
        for i in (1, 2):
            self.check(shapes[i] == (n, 1, h, w), f"bottom '{self.bottom_names[i]}' must be "
                       f"({n}, 1, {h}, {w}), has shape {tuple(bottom_shapes[i])}")
        self.check(shapes[3][0] == n and shapes[3][2:] == (h, w),
                   f"bottom '{self.bottom_names[3]}' must be ({n}, K, {h}, {w}), has shape "
                   f"{tuple(bottom_shapes[3])}")
        return [(n, 1, h, w), (n, shapes[3][1], h, w)]

    def forward(self, rois, loss, labels, bbox_weights):
        n, _, h, w = _legacy_dims(rois.shape)
        spatial = h * w
        r = rois.detach().reshape(n, 5, spatial).cpu().numpy()
        img = np.trunc(r[:, 0, :]).astype(np.int64).reshape(-1)  # per (roi, position)
        num_imgs = int(img.max()) + 1 if img.size else 0
        self.check(img.size == 0 or num_imgs > 0, "number of images must be greater than 0")
        order = np.argsort(-loss.detach().reshape(-1).cpu().numpy(), kind="stable")
        left = np.full(max(num_imgs, 0), self.roi_per_img)
        keep = np.zeros(img.size, bool)
        for index in order:
            b = img[index]
            if b >= 0 and left[b] > 0:
                left[b] -= 1
                keep[index] = True
        dev = labels.device
        keep_t = torch.as_tensor(keep, device=dev)
        lab = labels.detach().reshape(-1)
        top_labels = torch.where(keep_t, lab, torch.full_like(lab, self.ignore_label))
        k = _legacy_dims(bbox_weights.shape)[1]
        bw = bbox_weights.detach().reshape(n, k, spatial)
        keep_w = keep_t.reshape(n, 1, spatial)
        top_w = torch.where(keep_w, bw, torch.zeros_like(bw))
        return (top_labels.reshape(n, 1, h, w),
                top_w.reshape(n, k, h, w))

"""The helper functions a generated model.py carries: Caffe semantics that need more than one
torch call. Each is copied into model.py (by its source) only when a layer uses it, so this
module imports torch and math only, and every function is traceable by torch.export (all
shape arithmetic is on Python ints fixed at export time) except SSD's DetectionOutput
(caffe_detection_output and its parts: greedy NMS, eager only, for the -pytorch form).

Their annotations name only torch and builtins: model.py (without this module's
``from __future__ import annotations``) evaluates them when it defines the functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def caffe_pool_divisor(size: tuple[int, int], kernel: tuple[int, int],
                       stride: tuple[int, int], pad: tuple[int, int], out: tuple[int, int],
                       like: torch.Tensor) -> torch.Tensor:
    """Caffe's AVE divisor per output position: the window clipped to the image plus pad."""
    sizes = []
    for n, k, s, p, o in zip(size, kernel, stride, pad, out):
        start = torch.arange(o, dtype=torch.int64, device=like.device) * s - p
        sizes.append(torch.clamp(start + k, max=n + p) - start)
    return (sizes[0][:, None] * sizes[1][None, :]).to(like.dtype)


def caffe_empty_windows(y: torch.Tensor, rows: list[int], cols: list[int],
                        value: float) -> torch.Tensor:
    """y with value at the output rows/columns whose window holds no pixel of the image."""
    r = torch.tensor([i in rows for i in range(y.shape[2])], device=y.device)
    c = torch.tensor([j in cols for j in range(y.shape[3])], device=y.device)
    return y.masked_fill(r[:, None] | c[None, :], value)


def caffe_lrn_within(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    """Caffe's WITHIN_CHANNEL LRN: x · (1 + α · mean of x² over the size×size square)^−β."""
    avg = F.avg_pool2d(x * x, size, 1, (size - 1) // 2, count_include_pad=True)
    return x * (1.0 + alpha * avg).pow(-beta)


def caffe_batch_norm_batch(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Caffe's BatchNorm with batch statistics (biased variance over all axes but 1)."""
    axes = [0] + list(range(2, x.dim()))
    mean = x.mean(axes, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(axes, keepdim=True)
    return centred / torch.sqrt(var + eps)


def caffe_mvn(x: torch.Tensor, across_channels: bool, normalize_variance: bool,
              eps: float) -> torch.Tensor:
    """Caffe's MVN: per (num, channel), or per num across channels, x − mean, then divided by
    std + eps when normalize_variance."""
    shape = x.shape
    rows = x.reshape(shape[0], -1) if across_channels else x.reshape(
        shape[0] * (shape[1] if x.dim() > 1 else 1), -1)
    centred = rows - rows.mean(dim=1, keepdim=True)
    if normalize_variance:
        std = centred.pow(2).mean(dim=1, keepdim=True).sqrt()
        centred = centred / (std + eps)
    return centred.reshape(shape)


def caffe_argmax(x: torch.Tensor, axis: int | None, top_k: int,
                 out_max_val: bool) -> torch.Tensor:
    """Caffe's ArgMax: the top_k indices (ties to the larger index) and optionally values;
    axis None means over each item's values, with Caffe's (N, 1 or 2, top_k, 1) top."""
    if axis is None:
        data, d = x.reshape(x.shape[0], -1), 1
    else:
        data, d = x, axis
    size = data.shape[d]
    rev = data.flip(d)
    vals, ridx = torch.sort(rev, dim=d, descending=True, stable=True)
    vals, ridx = vals.narrow(d, 0, top_k), ridx.narrow(d, 0, top_k)
    idx = (size - 1 - ridx).to(x.dtype)
    if axis is not None:
        return vals if out_max_val else idx
    out = torch.stack((idx, vals), dim=1) if out_max_val else idx.unsqueeze(1)
    return out.reshape(x.shape[0], 2 if out_max_val else 1, top_k,
                       *([1] * (max(x.dim(), 3) - 3)))


def caffe_rnn(x: torch.Tensor, cont: torch.Tensor, w_xh: torch.Tensor, b_h: torch.Tensor,
              w_hh: torch.Tensor, w_ho: torch.Tensor, b_o: torch.Tensor, h: torch.Tensor,
              x_static: torch.Tensor | None = None, w_s: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's RNN unrolled over T = x.shape[0] steps from hidden state h (N×H):
    h_t = tanh(W_hh·(cont_t·h_{t−1}) + W_xh·x_t + b_h [+ W_s·x_static]),
    o_t = tanh(W_ho·h_t + b_o). Returns (o, h_T)."""
    t, n = x.shape[0], x.shape[1]
    proj = F.linear(x.reshape(t * n, -1), w_xh, b_h).reshape(t, n, -1)
    if x_static is not None:
        proj = proj + F.linear(x_static.reshape(n, -1), w_s).unsqueeze(0)
    hs = []
    for step in range(t):
        h = torch.tanh(proj[step] + (h * cont[step].unsqueeze(1)) @ w_hh.t())
        hs.append(h)
    return torch.tanh(F.linear(torch.stack(hs), w_ho, b_o)), h


def caffe_lstm(x: torch.Tensor, cont: torch.Tensor, w_xc: torch.Tensor, b_c: torch.Tensor,
               w_hc: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
               x_static: torch.Tensor | None = None, w_s: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Caffe's LSTM unrolled over T = x.shape[0] steps from states h, c (N×H); gates in
    the order i, f, o, g; the forget gate and h_{t−1} are multiplied by cont_t.
    Returns (h sequence, h_T, c_T)."""
    t, n = x.shape[0], x.shape[1]
    hdim = w_hc.shape[1]
    proj = F.linear(x.reshape(t * n, -1), w_xc, b_c).reshape(t, n, -1)
    if x_static is not None:
        proj = proj + F.linear(x_static.reshape(n, -1), w_s).unsqueeze(0)
    hs = []
    for step in range(t):
        ct = cont[step].unsqueeze(1)
        c, h = caffe_lstm_step(c, proj[step] + (h * ct) @ w_hc.t(), ct, hdim)
        hs.append(h)
    return torch.stack(hs), h, c


def caffe_lstm_step(c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor,
                    hdim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step (Caffe's LSTMUnit) on N×4H gate inputs: returns (c, h)."""
    sig = torch.sigmoid(gates[:, :3 * hdim])
    i, f, o = sig[:, :hdim], sig[:, hdim:2 * hdim] * cont, sig[:, 2 * hdim:]
    g = torch.tanh(gates[:, 3 * hdim:])
    c = f * c_prev + i * g
    return c, o * torch.tanh(c)


def caffe_max_pool_mask(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                        pad: tuple[int, int], after: tuple[int, int], empty_rows: list[int],
                        empty_cols: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's MAX pooling with its argmax mask: (top, h·W + w of each window's maximum in
    the bottom's plane, as floats); windows with no image pixel give −FLT_MAX and −1."""
    w = x.shape[3]
    xp = F.pad(x, (pad[1], after[1], pad[0], after[0]), value=float("-inf"))
    y, idx = F.max_pool2d(xp, kernel, stride, return_indices=True)
    wp = xp.shape[3]
    mask = ((idx // wp - pad[0]) * w + (idx % wp - pad[1])).to(x.dtype)
    if empty_rows or empty_cols:
        y = caffe_empty_windows(y, empty_rows, empty_cols, -3.4028234663852886e38)
        mask = caffe_empty_windows(mask, empty_rows, empty_cols, -1.0)
    return y, mask


HELPERS = {f.__name__: f for f in (caffe_pool_divisor, caffe_empty_windows, caffe_lrn_within,
                                   caffe_batch_norm_batch, caffe_mvn, caffe_argmax, caffe_rnn,
                                   caffe_lstm, caffe_lstm_step,
                                   caffe_max_pool_mask)}
# helpers that call other helpers
HELPER_NEEDS = {"caffe_lstm": ("caffe_lstm_step",),
                "caffe_max_pool_mask": ("caffe_empty_windows",)}


def caffe_normalize(x: torch.Tensor, scale: torch.Tensor, across_spatial: bool,
                    eps: float) -> torch.Tensor:
    """SSD's Normalize: x / √(Σx² + eps) over each item (across_spatial) or over the channels
    of each position, times the scale (one value, or one per channel)."""
    n, c = x.shape[0], x.shape[1]
    x3 = x.reshape(n, c, -1)
    dims = (1, 2) if across_spatial else (1,)
    norm = torch.sqrt((x3 * x3).sum(dim=dims, keepdim=True) + eps)
    s = scale.reshape(1, 1, 1) if scale.numel() == 1 else scale.reshape(1, c, 1)
    return (x3 / norm * s).reshape(x.shape)


HELPERS[caffe_normalize.__name__] = caffe_normalize


def caffe_roi_bins(start: torch.Tensor, end: torch.Tensor, pooled: int, size: int,
                   like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rbgirshick's ROIPooling bins along one axis: per ROI, a (R, pooled, size) mask of the
    cells of each bin [floor(k·bin) + start, ceil((k+1)·bin) + start) clipped to [0, size),
    and a (R, pooled) flag of the non-empty bins (bin = max(end − start + 1, 1) / pooled)."""
    bin_size = torch.clamp(end - start + 1, min=1) / pooled
    k = torch.arange(pooled, dtype=like.dtype, device=like.device)
    lo = torch.clamp(torch.floor(k[None] * bin_size[:, None]) + start[:, None], 0, size)
    hi = torch.clamp(torch.ceil((k[None] + 1) * bin_size[:, None]) + start[:, None], 0, size)
    cells = torch.arange(size, dtype=like.dtype, device=like.device)
    return (cells >= lo[..., None]) & (cells < hi[..., None]), hi > lo


def caffe_round(v: torch.Tensor) -> torch.Tensor:
    """C's round(): half away from zero (torch.round is half to even)."""
    a = torch.abs(v)
    f = torch.floor(a)
    return torch.sign(v) * (f + (a - f >= 0.5).to(v.dtype))


def caffe_roi_pool(x: torch.Tensor, rois: torch.Tensor, pooled_h: int, pooled_w: int,
                   spatial_scale: float) -> torch.Tensor:
    """rbgirshick/caffe-fast-rcnn's ROIPooling: (R, C, PH, PW) maxima of the ROIs' bins (corners
    round(coord · spatial_scale), C rounding); an empty bin gives 0."""
    r = rois.reshape(rois.shape[0], 5)
    feat = x[r[:, 0].to(torch.int64)]  # (R, C, H, W): the ROI's image
    corner = caffe_round(r[:, 1:5] * spatial_scale)
    mask_h, full_h = caffe_roi_bins(corner[:, 1], corner[:, 3], pooled_h, x.shape[2], x)
    mask_w, full_w = caffe_roi_bins(corner[:, 0], corner[:, 2], pooled_w, x.shape[3], x)
    # max over each bin's columns, then over its rows
    t = torch.where(mask_w[:, None, None], feat[:, :, :, None, :], -float("inf")).amax(-1)
    t = torch.where(mask_h[:, None, :, None, :], t.transpose(2, 3)[:, :, None],
                    -float("inf")).amax(-1)
    full = full_h[:, None, :, None] & full_w[:, None, None, :]
    return torch.where(full, t, torch.zeros((), dtype=x.dtype, device=x.device))


for _f in (caffe_roi_bins, caffe_round, caffe_roi_pool):
    HELPERS[_f.__name__] = _f
HELPER_NEEDS["caffe_roi_pool"] = ("caffe_roi_bins", "caffe_round")


def caffe_psroi_bins(start: torch.Tensor, end: torch.Tensor, group: int, size: int,
                     like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R-FCN's PSROIPooling bins along one axis: per ROI a (R, group, size) 0/1 mask of each
    bin [floor(k·bin + start), ceil((k+1)·bin + start)) clipped to [0, size) and its (R, group)
    cell count (bin = max(end − start, 0.1) / group)."""
    bin_size = torch.clamp(end - start, min=0.1) / group
    k = torch.arange(group, dtype=like.dtype, device=like.device)
    lo = torch.clamp(torch.floor(k[None] * bin_size[:, None] + start[:, None]), 0, size)
    hi = torch.clamp(torch.ceil((k[None] + 1) * bin_size[:, None] + start[:, None]), 0, size)
    cells = torch.arange(size, dtype=like.dtype, device=like.device)
    mask = (cells >= lo[..., None]) & (cells < hi[..., None])
    return mask.to(like.dtype), hi - lo


def caffe_psroi_pool(x: torch.Tensor, rois: torch.Tensor, output_dim: int, group_size: int,
                     spatial_scale: float) -> torch.Tensor:
    """R-FCN's PSROIPooling: (R, D, G, G) averages of channel (d·G + i)·G + j over bin (i, j)
    (corners round(x1)·scale, (round(x2) + 1)·scale, C rounding); an empty bin gives 0."""
    r = rois.reshape(rois.shape[0], 5)
    feat = x[r[:, 0].to(torch.int64)]
    num, g = feat.shape[0], group_size
    feat = feat.reshape(num, output_dim, g, g, x.shape[2], x.shape[3])
    corner = caffe_round(r[:, 1:5])
    start, end = corner[:, :2] * spatial_scale, (corner[:, 2:] + 1) * spatial_scale
    mask_w, n_w = caffe_psroi_bins(start[:, 0], end[:, 0], g, x.shape[3], x)
    mask_h, n_h = caffe_psroi_bins(start[:, 1], end[:, 1], g, x.shape[2], x)
    t = (feat * mask_w[:, None, None, :, None, :]).sum(-1)  # (R, D, G, G, H)
    t = (t * mask_h[:, None, :, None, :]).sum(-1)  # (R, D, G, G)
    area = (n_h[:, :, None] * n_w[:, None, :])[:, None]
    return torch.where(area > 0, t / torch.clamp(area, min=1),
                       torch.zeros((), dtype=x.dtype, device=x.device))


for _f in (caffe_psroi_bins, caffe_psroi_pool):
    HELPERS[_f.__name__] = _f
HELPER_NEEDS["caffe_psroi_pool"] = ("caffe_psroi_bins", "caffe_round")


# SSD's DetectionOutput, eager only (the -pytorch form): its greedy NMS keeps a data-dependent
# number of boxes, so torch.export does not trace it and the -torch form refuses the layer.
def caffe_ssd_decode(prior: torch.Tensor, var: torch.Tensor, code_type: int,
                     variance_in_target: bool, d: torch.Tensor) -> torch.Tensor:
    """The SSD fork's DecodeBBox of predictions d (P, 4) against priors (P, 4) with variances
    (P, 4): code_type 1 CORNER, 2 CENTER_SIZE, 3 CORNER_SIZE; not clipped."""
    if code_type == 1:
        return prior + d if variance_in_target else prior + var * d
    pw = prior[:, 2] - prior[:, 0]
    ph = prior[:, 3] - prior[:, 1]
    if code_type == 3:
        size = torch.stack([pw, ph, pw, ph], 1)
        return prior + d * size if variance_in_target else prior + var * d * size
    pcx = (prior[:, 0] + prior[:, 2]) / 2
    pcy = (prior[:, 1] + prior[:, 3]) / 2
    if not variance_in_target:
        d = var * d
    cx = d[:, 0] * pw + pcx
    cy = d[:, 1] * ph + pcy
    w = torch.exp(d[:, 2]) * pw
    h = torch.exp(d[:, 3]) * ph
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def caffe_jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The SSD fork's JaccardOverlap of box a (4,) with each box of b (M, 4), normalised
    boxes: intersection / (size_a + size_b − intersection), 0 without overlap, a box with
    xmax < xmin or ymax < ymin of size 0."""
    apart = (b[:, 0] > a[2]) | (b[:, 2] < a[0]) | (b[:, 1] > a[3]) | (b[:, 3] < a[1])
    iw = torch.minimum(a[2], b[:, 2]) - torch.maximum(a[0], b[:, 0])
    ih = torch.minimum(a[3], b[:, 3]) - torch.maximum(a[1], b[:, 1])
    zero = torch.zeros((), dtype=b.dtype)
    size_a = torch.where((a[2] < a[0]) | (a[3] < a[1]), zero, (a[2] - a[0]) * (a[3] - a[1]))
    size_b = torch.where((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]), zero,
                         (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    inter = iw * ih
    iou = inter / (size_a + size_b - inter)
    return torch.where(~apart & (iw > 0) & (ih > 0), iou, zero)


def caffe_nms_fast(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: torch.Tensor,
                   nms_threshold: float, eta: float, top_k: int) -> list[int]:
    """The SSD fork's ApplyNMSFast: indices kept, best first (candidates scoring above
    score_threshold, equal scores in index order, at most top_k of them; a candidate is kept
    when no kept box overlaps it by more than the threshold, which shrinks by eta after each
    kept box while above 0.5)."""
    cand = torch.nonzero(scores > score_threshold).reshape(-1)
    order = cand[torch.sort(scores[cand], descending=True, stable=True).indices]
    if top_k > -1:
        order = order[:top_k]
    thr = torch.tensor(nms_threshold, dtype=torch.float32)
    eta_t = torch.tensor(eta, dtype=torch.float32)
    kept = []
    for j in order.tolist():
        if kept:
            ov = caffe_jaccard(boxes[j], boxes[torch.tensor(kept)])
            if not bool((ov <= thr).all()):
                continue
        kept.append(j)
        if eta < 1 and thr > 0.5:
            thr = thr * eta_t
    return kept


def caffe_detection_output(loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor,
                           num_priors: int, num_classes: int, share_location: bool,
                           background_label_id: int, code_type: int, variance_in_target: bool,
                           confidence_threshold: float, nms_threshold: float, eta: float,
                           top_k: int, keep_top_k: int) -> torch.Tensor:
    """SSD's DetectionOutput (weiliu89/caffe): rows [image, label, score, xmin, ymin, xmax,
    ymax] as (1, 1, D, 7), by image, then label, then score; keep_top_k best over all
    classes of an image; one row [i, −1, …, −1] per image when nothing is detected."""
    n, p, c = loc.shape[0], num_priors, num_classes
    lc = 1 if share_location else c
    locs = loc.detach().float().cpu().reshape(n, p, lc, 4)
    confs = conf.detach().float().cpu().reshape(n, p, c)
    flat = prior.detach().float().cpu().reshape(-1)
    pboxes, pvar = flat[:p * 4].reshape(p, 4), flat[p * 4:p * 8].reshape(p, 4)
    threshold = torch.tensor(confidence_threshold, dtype=torch.float32)
    rows = []
    for i in range(n):
        decoded = {}
        for k in range(lc):
            label = -1 if share_location else k
            if label != background_label_id:
                decoded[label] = caffe_ssd_decode(pboxes, pvar, code_type, variance_in_target,
                                                  locs[i, :, k])
        kept = {}
        for cls in range(c):
            if cls != background_label_id:
                boxes = decoded[-1 if share_location else cls]
                kept[cls] = caffe_nms_fast(boxes, confs[i, :, cls], threshold, nms_threshold,
                                           eta, top_k)
        if keep_top_k > -1 and sum(len(v) for v in kept.values()) > keep_top_k:
            pairs = [(float(confs[i, j, cls]), cls, j) for cls in kept for j in kept[cls]]
            best = sorted(pairs, key=lambda t: -t[0])[:keep_top_k]  # stable: ties keep order
            kept = {}
            for _, cls, j in best:
                kept.setdefault(cls, []).append(j)
        for cls in sorted(kept):
            boxes = decoded[-1 if share_location else cls]
            for j in kept[cls]:
                rows.append(torch.cat([torch.tensor([i, cls], dtype=torch.float32),
                                       confs[i, j, cls].reshape(1), boxes[j]]))
    if rows:
        out = torch.stack(rows)
    else:
        out = torch.full((n, 7), -1.0)
        out[:, 0] = torch.arange(n, dtype=torch.float32)
    return out.to(device=loc.device, dtype=loc.dtype).reshape(1, 1, -1, 7)


for _f in (caffe_ssd_decode, caffe_jaccard, caffe_nms_fast, caffe_detection_output):
    HELPERS[_f.__name__] = _f
HELPER_NEEDS["caffe_nms_fast"] = ("caffe_jaccard",)
HELPER_NEEDS["caffe_detection_output"] = ("caffe_ssd_decode", "caffe_nms_fast")

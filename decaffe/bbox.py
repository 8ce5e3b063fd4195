"""Box arithmetic of the SSD fork (weiliu89/caffe, src/caffe/util/bbox_util.cpp), on numpy.

Boxes are float32 arrays of shape (..., 4) holding [xmin, ymin, xmax, ymax], normalized to
the image ([0, 1]) unless said otherwise. Everything is computed in single precision, in the
order the fork computes it, so that thresholds (overlaps, scores) decide exactly as there:

- a box's size is 0 when xmax < xmin or ymax < ymin, else width·height (normalized) or
  (width + 1)·(height + 1) (pixel boxes);
- two boxes intersect unless one lies strictly beyond the other on an axis; the Jaccard
  overlap is intersection / union, 0 when the intersection has no positive width or height;
- boxes are encoded against (and decoded from) prior boxes in one of three codes:
  CORNER (offsets of the corners), CENTER_SIZE (offsets of the centre in prior sizes and
  log size ratios), CORNER_SIZE (corner offsets in prior sizes); each offset is divided
  by (multiplied with, when decoding) the prior's variance unless the variance is already
  in the target.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .proto import caffe_pb2

F32 = np.float32
CORNER = caffe_pb2.PriorBoxParameter.CORNER
CENTER_SIZE = caffe_pb2.PriorBoxParameter.CENTER_SIZE
CORNER_SIZE = caffe_pb2.PriorBoxParameter.CORNER_SIZE
BIPARTITE = caffe_pb2.MultiBoxLossParameter.BIPARTITE
PER_PREDICTION = caffe_pb2.MultiBoxLossParameter.PER_PREDICTION


def as_boxes(a: npt.ArrayLike) -> np.ndarray:
    """A float32 (N, 4) array."""
    return np.asarray(a, F32).reshape(-1, 4)


def bbox_size(b: np.ndarray, normalized: bool = True) -> np.ndarray:
    """BBoxSize for each box of (..., 4): 0 for an inverted box."""
    b = np.asarray(b, F32)
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    if not normalized:
        w, h = w + F32(1), h + F32(1)
    bad = (b[..., 2] < b[..., 0]) | (b[..., 3] < b[..., 1])
    with np.errstate(all="ignore"):
        return np.where(bad, F32(0), (w * h).astype(F32)).astype(F32)


def clip_bbox(b: np.ndarray) -> np.ndarray:
    """ClipBBox: every coordinate into [0, 1]."""
    return np.clip(np.asarray(b, F32), F32(0), F32(1)).astype(F32)


def jaccard(a: np.ndarray, b: np.ndarray, normalized: bool = True) -> np.ndarray:
    """JaccardOverlap of every box of a (N, 4) with every box of b (M, 4): (N, M)."""
    a, b = as_boxes(a), as_boxes(b)
    A, B = a[:, None, :], b[None, :, :]
    apart = ((B[..., 0] > A[..., 2]) | (B[..., 2] < A[..., 0])
             | (B[..., 1] > A[..., 3]) | (B[..., 3] < A[..., 1]))
    iw = np.minimum(A[..., 2], B[..., 2]) - np.maximum(A[..., 0], B[..., 0])
    ih = np.minimum(A[..., 3], B[..., 3]) - np.maximum(A[..., 1], B[..., 1])
    if not normalized:
        iw, ih = iw + F32(1), ih + F32(1)
    with np.errstate(all="ignore"):  # boxes decoded to infinities compare as C's floats do
        inter = (iw * ih).astype(F32)
        sa = bbox_size(a, normalized)[:, None]
        sb = bbox_size(b, normalized)[None, :]
        iou = (inter / (sa + sb - inter)).astype(F32)
    ok = ~apart & (iw > 0) & (ih > 0)
    return np.where(ok, iou, F32(0)).astype(F32)


def coverage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BBoxCoverage: intersection of a (N, 4) with b (M, 4) over a's size: (N, M)."""
    a, b = as_boxes(a), as_boxes(b)
    A, B = a[:, None, :], b[None, :, :]
    apart = ((B[..., 0] > A[..., 2]) | (B[..., 2] < A[..., 0])
             | (B[..., 1] > A[..., 3]) | (B[..., 3] < A[..., 1]))
    inter_box = np.stack([np.maximum(A[..., 0], B[..., 0]), np.maximum(A[..., 1], B[..., 1]),
                          np.minimum(A[..., 2], B[..., 2]), np.minimum(A[..., 3], B[..., 3])],
                         -1)
    inter = np.where(apart, F32(0), bbox_size(inter_box))
    sa = bbox_size(a)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = (inter / sa).astype(F32)
    return np.where(inter > 0, cov, F32(0)).astype(F32)


def _centers(p: np.ndarray):
    pw = p[:, 2] - p[:, 0]
    ph = p[:, 3] - p[:, 1]
    return pw, ph, (p[:, 0] + p[:, 2]) / F32(2), (p[:, 1] + p[:, 3]) / F32(2)


def encode(prior: np.ndarray, var: np.ndarray, code_type: int, variance_in_target: bool,
           box: np.ndarray) -> np.ndarray:
    """EncodeBBox of each box against the prior at the same row: (N, 4)."""
    p, v, b = as_boxes(prior), as_boxes(var), as_boxes(box)
    if code_type == CORNER:
        out = b - p
        return out if variance_in_target else (out / v).astype(F32)
    if code_type == CENTER_SIZE:
        pw, ph, pcx, pcy = _centers(p)
        bw, bh, bcx, bcy = _centers(b)
        with np.errstate(divide="ignore", invalid="ignore"):
            if variance_in_target:
                cols = [(bcx - pcx) / pw, (bcy - pcy) / ph, np.log(bw / pw), np.log(bh / ph)]
            else:
                cols = [(bcx - pcx) / pw / v[:, 0], (bcy - pcy) / ph / v[:, 1],
                        np.log(bw / pw) / v[:, 2], np.log(bh / ph) / v[:, 3]]
        return np.stack(cols, 1).astype(F32)
    if code_type == CORNER_SIZE:
        pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
        size = np.stack([pw, ph, pw, ph], 1)
        out = (b - p) / size
        return out.astype(F32) if variance_in_target else (out / v).astype(F32)
    raise ValueError(f"unknown code_type {code_type}")


def decode(prior: np.ndarray, var: np.ndarray, code_type: int, variance_in_target: bool,
           loc: np.ndarray) -> np.ndarray:
    """DecodeBBox of each prediction with the prior at the same row: (N, 4), not clipped."""
    p, v, d = as_boxes(prior), as_boxes(var), as_boxes(loc)
    if code_type == CORNER:
        return (p + d).astype(F32) if variance_in_target else (p + v * d).astype(F32)
    if code_type == CENTER_SIZE:
        pw, ph, pcx, pcy = _centers(p)
        with np.errstate(over="ignore"):
            if variance_in_target:
                cx = d[:, 0] * pw + pcx
                cy = d[:, 1] * ph + pcy
                w = np.exp(d[:, 2]) * pw
                h = np.exp(d[:, 3]) * ph
            else:
                cx = v[:, 0] * d[:, 0] * pw + pcx
                cy = v[:, 1] * d[:, 1] * ph + pcy
                w = np.exp(v[:, 2] * d[:, 2]) * pw
                h = np.exp(v[:, 3] * d[:, 3]) * ph
        return np.stack([cx - w / F32(2), cy - h / F32(2), cx + w / F32(2), cy + h / F32(2)],
                        1).astype(F32)
    if code_type == CORNER_SIZE:
        pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
        size = np.stack([pw, ph, pw, ph], 1)
        if variance_in_target:
            return (p + d * size).astype(F32)
        return (p + v * d * size).astype(F32)
    raise ValueError(f"unknown code_type {code_type}")


def match(gt: np.ndarray, gt_labels: np.ndarray, preds: np.ndarray, label: int, match_type: int,
          overlap_threshold: float, ignore_cross_boundary: bool = False) -> tuple[np.ndarray,
          np.ndarray]:
    """MatchBBox: (indices, overlaps) for each prediction.

    indices[i] is the index (into gt) of the box prediction i is matched to, -1 for none and
    -2 for a cross-boundary prediction that is ignored; overlaps[i] its best overlap with a
    ground-truth box of the label (label -1: every box). First a bipartite matching (the
    highest remaining overlap pairs first, ties to the lowest prediction then ground truth),
    then, for PER_PREDICTION, each unmatched prediction takes its best box at or above
    overlap_threshold.
    """
    preds = as_boxes(preds)
    n = len(preds)
    indices = np.full(n, -1, np.int64)
    overlaps = np.zeros(n, F32)
    gt_idx = np.arange(len(gt)) if label == -1 else np.nonzero(np.asarray(gt_labels) == label)[0]
    if len(gt_idx) == 0:
        return indices, overlaps
    ov = jaccard(preds, as_boxes(gt)[gt_idx])
    if ignore_cross_boundary:
        cross = ((preds < 0) | (preds > 1)).any(1)
        indices[cross] = -2
        ov[cross] = 0
    has = ov > F32(1e-6)
    overlaps[:] = np.where(has, ov, F32(0)).max(1)
    cand = np.where(has, ov, F32(-1))
    cand[indices != -1] = -1
    while True:
        flat = int(np.argmax(cand))
        i, j = divmod(flat, len(gt_idx))
        if cand[i, j] <= -1:
            break
        indices[i] = gt_idx[j]
        overlaps[i] = cand[i, j]
        cand[i, :] = -1
        cand[:, j] = -1
    if match_type == PER_PREDICTION:
        thr = F32(overlap_threshold)
        rest = np.where(has & (ov >= thr), ov, F32(-1))
        best = np.argmax(rest, 1)
        bestv = rest[np.arange(n), best]
        take = (indices == -1) & (bestv > -1)
        indices[take] = gt_idx[best[take]]
        overlaps[take] = bestv[take]
    return indices, overlaps


def _descending(scores: np.ndarray) -> np.ndarray:
    """Indices of scores, largest first, equal scores in index order (std::stable_sort)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def _adaptive_thresholds(nms_threshold: float, eta: float, n: int) -> np.ndarray:
    """The threshold ApplyNMSFast compares with after k kept boxes, k = 0..n: multiplied
    by eta (in float, one rounding per step) after each kept box while it is above 0.5."""
    t0 = F32(nms_threshold)
    if not (eta < 1 and t0 > 0.5):
        return np.full(n + 1, t0, F32)
    steps = np.full(n + 1, F32(eta), F32)
    steps[0] = t0
    thr = np.multiply.accumulate(steps, dtype=F32)  # sequential float products, as the fork
    low = np.flatnonzero(thr <= F32(0.5))
    if low.size:  # the first value at or under 0.5 stays
        thr[low[0]:] = thr[low[0]]
    return thr


def nms_fast(boxes: np.ndarray, scores: np.ndarray, score_threshold: float,
             nms_threshold: float, eta: float, top_k: int, block: int = 512) -> list[int]:
    """ApplyNMSFast: indices kept, best first. Candidates score > score_threshold, at most
    top_k of them (-1: all), equal scores in index order (std::stable_sort); a candidate is
    kept when its overlap with every kept box is at most the (adaptive) threshold, which is
    multiplied by eta after each kept box while it is above 0.5 (a NaN overlap is not at
    most anything: the candidate goes).

    No loop over boxes: the candidates are settled a block at a time. Within a block, keep =
    (no kept earlier box overlaps more than the threshold after as many kept boxes) is
    iterated to its fixed point — unique, since a candidate depends on earlier ones only,
    and reached in at most as many sweeps as the block's longest suppression chain."""
    scores = np.asarray(scores, F32)
    cand = np.nonzero(scores > F32(score_threshold))[0]
    order = cand[_descending(scores[cand])]
    if top_k > -1:
        order = order[:top_k]
    n = len(order)
    if n == 0:
        return []
    cand_boxes = as_boxes(boxes)[order]
    thr = _adaptive_thresholds(nms_threshold, eta, n)
    inf = F32(np.inf)
    worst = np.full(n, -inf, F32)  # largest overlap with a kept box of the earlier blocks
    kept_before = 0
    keep_all = np.zeros(n, bool)
    for s in range(0, n, block):
        e = min(n, s + block)
        ov = jaccard(cand_boxes[s:e], cand_boxes[s:])  # (b, n - s)
        ov = np.where(np.isnan(ov), inf, ov)
        inner = np.where(np.triu(np.ones((e - s, e - s), bool), 1), ov[:, :e - s], -inf)
        keep = np.ones(e - s, bool)
        while True:
            count = kept_before + np.concatenate([[0], np.cumsum(keep)[:-1]])
            over = np.where(keep[:, None], inner, -inf).max(axis=0) if e > s else worst[s:e]
            new = np.maximum(over, worst[s:e]) <= thr[count]
            if np.array_equal(new, keep):
                break
            keep = new
        keep_all[s:e] = keep
        kept_before += int(keep.sum())
        if e < n and keep.any():
            worst[e:] = np.maximum(worst[e:], ov[keep][:, e - s:].max(axis=0))
    return [int(k) for k in order[keep_all]]


def _move_median_to_first(key: np.ndarray, idx: np.ndarray, result: np.ndarray, a: np.ndarray,
                          b: np.ndarray, c: np.ndarray) -> None:
    """libstdc++'s __move_median_to_first for the comparator key[x] > key[y] (per segment:
    every argument is an array of positions)."""
    ka, kb, kc = key[idx[a]], key[idx[b]], key[idx[c]]
    ab, bc, ac = ka > kb, kb > kc, ka > kc
    pick = np.where(ab, np.where(bc, b, np.where(ac, c, a)),
                    np.where(ac, a, np.where(bc, c, b)))
    r_val = idx[result].copy()
    idx[result] = idx[pick]
    idx[pick] = r_val


def _heap_sort_descending(key: np.ndarray, idx: np.ndarray, first: int, last: int) -> None:
    """libstdc++'s __partial_sort(first, last, last) (make_heap, then sort_heap) for the
    comparator key[x] > key[y]: introsort's fallback once its depth limit is spent."""
    seg = list(idx[first:last])
    n = len(seg)

    def less(x: int, y: int):
        return key[x] > key[y]

    def adjust(hole: int, length: int, value: int) -> None:
        top = hole
        child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if less(seg[child], seg[child - 1]):
                child -= 1
            seg[hole] = seg[child]
            hole = child
        if (length & 1) == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            seg[hole] = seg[child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and less(seg[parent], value):
            seg[hole] = seg[parent]
            hole = parent
            parent = (hole - 1) // 2
        seg[hole] = value

    if n >= 2:
        for parent in range((n - 2) // 2, -1, -1):
            adjust(parent, n, seg[parent])
        for last_i in range(n - 1, 0, -1):
            value = seg[last_i]
            seg[last_i] = seg[0]
            adjust(0, last_i, value)
    idx[first:last] = seg


def std_sort_descending(scores: np.ndarray) -> np.ndarray:
    """The order libstdc++'s std::sort leaves scores in under the comparator a > b
    (SortScorePairDescend): descending, equal scores where that introsort puts them —
    median-of-three pivot moved to the front, unguarded partition (equal scores stop both
    scans and swap), segments of at most 16 left to the final insertion sort (which keeps
    the order of equal scores). Every partition of one depth runs at once as array
    operations; a segment that exhausts the depth limit (2·⌊log2 n⌋) is heap-sorted, as
    introsort does."""
    key = np.asarray(scores, np.float64)
    n = key.size
    idx = np.arange(n)
    if n <= 1:
        return idx
    firsts = np.array([0])
    lasts = np.array([n])
    depth = 2 * (int(n).bit_length() - 1)
    while firsts.size:
        big = lasts - firsts > 16
        firsts, lasts = firsts[big], lasts[big]
        if not firsts.size:
            break
        if depth == 0:
            for f, la in zip(firsts.tolist(), lasts.tolist()):
                _heap_sort_descending(key, idx, f, la)
            break
        depth -= 1
        mids = firsts + (lasts - firsts) // 2
        _move_median_to_first(key, idx, firsts, firsts + 1, mids, lasts - 1)
        lengths = lasts - firsts - 1  # the partition runs over [first + 1, last)
        seg = np.repeat(np.arange(firsts.size), lengths)
        start = np.cumsum(lengths) - lengths
        pos = firsts[seg] + 1 + np.arange(seg.size) - start[seg]
        v = key[idx[pos]]
        pv = key[idx[firsts]][seg]
        stop_left = v <= pv  # the left scan passes scores above the pivot
        stop_right = v >= pv  # the right scan passes scores below it
        cl = np.cumsum(stop_left)
        cl = cl - (cl[start] - stop_left[start])[seg]
        cr_incl = np.cumsum(stop_right)
        cr_incl = cr_incl - (cr_incl[start] - stop_right[start])[seg]
        right_total = np.bincount(seg, stop_right, minlength=firsts.size).astype(np.int64)
        rank_right = right_total[seg] - cr_incl + stop_right  # 1 = the last stop from the end
        big_pos = np.iinfo(np.int64).max
        # the k-th left stop swaps with the k-th right stop while it lies before it
        left_at_rank = np.full(seg.size, big_pos)
        sel = stop_left
        left_at_rank[start[seg[sel]] + cl[sel] - 1] = pos[sel]
        right_at_rank = np.full(seg.size, -1)
        sel = stop_right
        right_at_rank[start[seg[sel]] + rank_right[sel] - 1] = pos[sel]
        swap = (left_at_rank < right_at_rank) & (left_at_rank != big_pos) & (right_at_rank >= 0)
        swaps = np.bincount(seg[swap], minlength=firsts.size)
        a = left_at_rank[swap]
        b = right_at_rank[swap]
        va = idx[a].copy()
        idx[a] = idx[b]
        idx[b] = va
        # cut: the left scan's stop after the last swap — the next left stop, or the
        # position of the last swap's right element (now a score not above the pivot)
        nxt = np.full(firsts.size, big_pos)
        has_next = swaps < np.bincount(seg[stop_left], minlength=firsts.size)
        where_next = start + swaps
        nxt[has_next] = left_at_rank[where_next[has_next]]
        last_right = np.full(firsts.size, big_pos)
        had = swaps > 0
        last_right[had] = right_at_rank[(start + swaps - 1)[had]]
        cut = np.minimum(nxt, last_right)
        firsts, lasts = np.concatenate([cut, firsts]), np.concatenate([lasts, cut])
    # the final insertion sort: equal scores keep the order the partitions left them in
    return idx[np.argsort(-key[idx], kind="stable")]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, top_k: int) -> list[int]:
    """ApplyNMS (used by MultiBoxLoss's mining): the top_k best, then greedily the best box,
    dropping boxes smaller than 1e-5 and those overlapping a kept box by more than threshold."""
    boxes = as_boxes(boxes)
    order = list(_descending(scores))
    if top_k > -1:
        order = order[:top_k]
    sizes = bbox_size(boxes)
    kept: list[int] = []
    while order:
        best = order.pop(0)
        if sizes[best] < F32(1e-5):
            continue
        kept.append(int(best))
        if top_k > -1 and len(kept) >= top_k:
            break
        if not order:
            break
        rest = np.asarray(order)
        ov = jaccard(boxes[best:best + 1], boxes[rest])[0]
        order = [int(r) for r, o in zip(rest, ov) if sizes[r] >= F32(1e-5) and o <= F32(threshold)]
    return kept


def project(src: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """ProjectBBox: box (4,) in the coordinates of src (4,), clipped; None when outside."""
    s, b = np.asarray(src, F32), np.asarray(box, F32)
    if b[0] >= s[2] or b[2] <= s[0] or b[1] >= s[3] or b[3] <= s[1]:
        return None
    sw, sh = s[2] - s[0], s[3] - s[1]
    out = np.array([(b[0] - s[0]) / sw, (b[1] - s[1]) / sh, (b[2] - s[0]) / sw,
                    (b[3] - s[1]) / sh], F32)
    out = clip_bbox(out)
    return out if bbox_size(out) > 0 else None


def locate(src: np.ndarray, box: np.ndarray) -> np.ndarray:
    """LocateBBox: a box given relative to src (4,) in src's own coordinates."""
    s, b = np.asarray(src, F32), np.asarray(box, F32)
    sw, sh = s[2] - s[0], s[3] - s[1]
    return np.array([s[0] + b[0] * sw, s[1] + b[1] * sh, s[0] + b[2] * sw, s[1] + b[3] * sh],
                    F32)


def scale_bbox(b: np.ndarray, height: int, width: int) -> np.ndarray:
    """ScaleBBox: normalized boxes (..., 4) to pixels."""
    b = np.asarray(b, F32)
    return (b * np.array([width, height, width, height], F32)).astype(F32)

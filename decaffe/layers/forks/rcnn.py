"""The Faster R-CNN / R-FCN family of fork layers: ROIPooling, PSROIPooling, SmoothL1Loss,
Proposal, and R-FCN's online hard example mining (SoftmaxWithLossOHEM, SmoothL1LossOHEM,
BoxAnnotatorOHEM).

- ROIPooling and SmoothL1Loss follow rbgirshick/caffe-fast-rcnn (py-faster-rcnn's Caffe).
- PSROIPooling follows daijifeng001/caffe-rfcn (R-FCN).
- Proposal is the C++ region proposal layer of sanghoon/pva-faster-rcnn, which computes
  py-faster-rcnn's Python ``rpn.proposal_layer`` (that one runs unchanged as a Python layer)
  with the fork's partial quicksort and NMS.

ROI geometry (rounding of the ROI corners, bin edges) is computed in the bottom's precision
with C's rounding (half away from zero), floor and ceil, exactly as the forks' kernels do,
so the pooled cells are the same cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.autograd.function import FunctionCtx

from ...layer import Layer, Shape, Tops, register
from ...proto import caffe_pb2
from ..common import numpy_dtype
from ..loss import (
    BATCH_SIZE,
    FULL,
    VALID,
    SoftmaxWithLossLayer,
    _LossLayer,
)

_LossParam = caffe_pb2.LossParameter


def _c_round(v: np.ndarray) -> np.ndarray:
    """C's round(): half away from zero (numpy's round is half to even)."""
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + (a - f >= 0.5))


def _rois_array(layer: Layer, rois: torch.Tensor, dt: type[np.floating]) -> np.ndarray:
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


def _check_roi_bottoms(layer: Layer, bottom_shapes: list[Shape]) -> tuple:
    x, rois = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
    layer.check(len(x) == 4, f"bottom '{layer.bottom_names[0]}' must be N x C x H x W, "
                f"got shape {x}")
    layer.check(len(rois) >= 1 and math.prod(rois[1:]) == 5,
                f"ROI layer C x W x H must be == 5: bottom '{layer.bottom_names[1]}' has "
                f"shape {rois}")
    return x, rois


class _ROIPool(Layer):
    """What ROIPooling and PSROIPooling share: features and ROIs in, one top; the features
    get the gradient (through the bins the forward chose), the ROIs none."""

    # Caffe's backward reads its forward's choices (argmax cells, channel mapping): the
    # recorded graph stays exact
    backward_reads = "kept"

    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def _read_rois(self, x: torch.Tensor,
                   rois: torch.Tensor) -> tuple[type[np.floating], np.ndarray, np.ndarray]:
        """The bottom's precision, the (R, 5) ROI table in it, and each ROI's image."""
        dt = numpy_dtype(x)
        r = _rois_array(self, rois, dt)
        return dt, r, _batch_index(self, r, x.shape[0])


# ------------------------------------------------------------------------------------------
# ROIPooling
# ------------------------------------------------------------------------------------------
@register("ROIPooling")
class ROIPoolingLayer(_ROIPool):
    """Max pooling of each ROI into a pooled_h × pooled_w grid (Fast R-CNN).

    Bottoms: features (N, C, H, W); ROIs (R, 5) — [batch index, x1, y1, x2, y2] in image
    coordinates (any shape of R·5 values). Batch indices must be in [0, N).
    Tops: (R, C, pooled_h, pooled_w).
    Blobs: none.
    Params: roi_pooling_param.pooled_h (default 0, must be > 0), pooled_w (default 0, must
    be > 0), spatial_scale (default 1).

    Each corner is round(coord · spatial_scale) (C rounding); the ROI spans
    max(end − start + 1, 1) cells; bin (ph, pw) covers rows [floor(ph·bh), ceil((ph+1)·bh))
    shifted by the start and clipped to the map, bh = roi_height / pooled_h in the bottom's
    precision (likewise for columns). A bin's value is its first maximum in row-major order
    under the fork's scan: it starts at −FLT_MAX and keeps strictly greater cells, so NaN
    and values ≤ −FLT_MAX never win and a bin of nothing else gives −FLT_MAX; −0 and +0 tie
    (the first is kept); an empty bin gives 0. Backward sends each top diff to its bin's
    argmax (none from such bins); a ROI whose end lies before its start (pooled as a 1×1
    cell) gets no gradient, as the fork's backward skips it. The ROIs get no gradient.

    Source: caffe-fast-rcnn src/caffe/layers/roi_pooling_layer.cpp.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.roi_pooling_param
        self.check(p.pooled_h > 0, "pooled_h must be > 0", "roi_pooling_param.pooled_h")
        self.check(p.pooled_w > 0, "pooled_w must be > 0", "roi_pooling_param.pooled_w")
        self.pooled_h, self.pooled_w = int(p.pooled_h), int(p.pooled_w)
        self.spatial_scale = p.spatial_scale
        self._scratch = _Scratch()

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        x, rois = _check_roi_bottoms(self, bottom_shapes)
        return [(rois[0], x[1], self.pooled_h, self.pooled_w)]

    def _bins(self, r: np.ndarray, height: int, width: int, dt: type[np.floating]) -> tuple:
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

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> Tops:
        n, c, height, width = x.shape
        dt, r, b = self._read_rois(x, rois)
        num = r.shape[0]
        if num == 0:
            return x.new_zeros((0, c, self.pooled_h, self.pooled_w))
        hs, he, ws, we, malformed = self._bins(r, height, width, dt)
        bins = _ROIBins(b, hs, he, ws, we, malformed, x.shape)
        return _ROIMaxPool.apply(x, bins, self._scratch)


_use_count = getattr(torch._C, "_storage_Use_Count", None)


class _Scratch:
    """CPU memory a layer reuses from pass to pass. Fresh pages cost a kernel fault each: a
    60 MB top took longer to fault in than to compute. A buffer is handed out again only when
    nothing else holds its storage (no tensor, view or array of an earlier pass), so reuse is
    never visible; elsewhere (GPUs: a caching allocator) each request is fresh memory."""

    def __init__(self) -> None:
        self._held: dict[str, list[torch.Tensor]] = {}

    def take(self, tag: str, shape: tuple, dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of this shape, its own tensor (not a view) over memory
        that nothing else uses now."""
        numel = math.prod(shape)
        if device.type != "cpu" or _use_count is None:
            return torch.empty(shape, dtype=dtype, device=device)
        held = self._held.setdefault(tag, [])
        for base in held:
            # 2: the base tensor and the storage object asked about
            if base.dtype == dtype and base.numel() >= numel and \
                    _use_count(base.untyped_storage()._cdata) <= 2:
                break
        else:
            base = torch.empty(max(numel, 1), dtype=dtype)
            held.append(base)
            if len(held) > 3:  # the oldest goes when its holders let it go
                held.pop(0)
        return torch.empty(0, dtype=dtype).set_(base.untyped_storage(), 0, shape)


# Caffe's scan starts each bin at -FLT_MAX and keeps a cell only when strictly greater: NaN
# and values <= -FLT_MAX never win (in float64 too: the forks use FLT_MAX for every Dtype)
_FLT_MAX = float(np.finfo(np.float32).max)
_FIELD = (1 << 30) - 1  # cell numbers n·H·W + h·W + w stay below this
# the order-preserving bits of -FLT_MAX (negatives have their magnitude bits flipped)
_ORDERED_LOSER = int(np.array(-_FLT_MAX, np.float32).view(np.int32)) ^ 0x7FFFFFFF


def _key(ordered: int, cell: int, signed: bool = False) -> int:
    """One table entry: ordered value bits (high 32), then _FIELD − cell, so that int64 max
    ranks by value, then by the first cell. signed: a block with a −0 keeps each value's
    −0 flag in bit 0, below the cell (shifted left by one)."""
    return (ordered << 32) | ((_FIELD - cell) << 1 if signed else _FIELD - cell)


class _ROIBins:
    """Where every ROI bin reads the 2-d sparse tables, computed once per forward.

    Table (kh, kw) holds, for every position, the best cell of the 2^kh × 2^kw block there;
    a bin of h × w cells is the union of at most four such blocks with 2^kh ≤ h < 2^(kh+1)
    (likewise w): one block when h and w are powers of 2, two when one of them is. The
    tables needed are stacked, one row per position, then one sentinel row that an empty bin
    reads (value 0, no cell). Bins covering the same cells of the same image (small ROIs
    repeat cells across bins; neighbouring ROIs share bins) are pooled once: the rects,
    sorted by how many blocks they need (4, 2, then 1), so that each merge runs on a
    prefix."""

    def __init__(self, b: np.ndarray, hs: np.ndarray, he: np.ndarray, ws: np.ndarray,
                 we: np.ndarray, malformed: np.ndarray, shape: tuple) -> None:
        n, _, height, width = shape
        self.shape = tuple(shape)
        self.num, self.ph, self.pw = hs.shape[0], hs.shape[1], ws.shape[1]
        self.dump = n * height * width  # the cell number of "no cell": no gradient
        full = (self.num, self.ph, self.pw)
        rs, re = np.broadcast_to(hs[:, :, None], full), np.broadcast_to(he[:, :, None], full)
        cs, ce = np.broadcast_to(ws[:, None, :], full), np.broadcast_to(we[:, None, :], full)
        h1, w1 = height + 1, width + 1
        code = (((b[:, None, None] * h1 + rs) * h1 + re) * w1 + cs) * w1 + ce
        code = np.where((re > rs) & (ce > cs), code, -1).reshape(-1)  # -1: an empty bin
        rects, rect_of_bin = np.unique(code, return_inverse=True)
        valid = rects >= 0
        q = np.maximum(rects, 0)
        q, c1 = np.divmod(q, w1)
        q, c0 = np.divmod(q, w1)
        q, r1 = np.divmod(q, h1)
        rb, r0 = np.divmod(q, h1)
        lh, lw = r1 - r0, c1 - c0
        kh = np.where(valid, np.floor(np.log2(np.maximum(lh, 1))), 0).astype(np.int64)
        kw = np.where(valid, np.floor(np.log2(np.maximum(lw, 1))), 0).astype(np.int64)
        two_rows = valid & (lh != (1 << kh))
        two_cols = valid & (lw != (1 << kw))
        blocks = (1 + two_rows) * (1 + two_cols)
        order = np.argsort(-blocks, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        valid, rb, r0, r1, c0, c1, kh, kw, two_cols, blocks = (
            a[order] for a in (valid, rb, r0, r1, c0, c1, kh, kw, two_cols, blocks))
        self.rects = len(rects)
        self.rect_of_bin = torch.from_numpy(rank[rect_of_bin])
        # the bins whose diffs go nowhere: those of ROIs that end before they start
        self.silent = torch.from_numpy(np.flatnonzero(np.repeat(malformed, self.ph * self.pw)))
        # the tables, kw outer (each row table grows from the one before), kh inner
        top_kw = int(kw[valid].max()) if valid.any() else 0  # (0, 0): the cells' keys
        self.levels: list[tuple[int, int]] = []
        self.offsets: dict[tuple[int, int], int] = {}
        total = 0
        for level_w in range(top_kw + 1):
            at_w = valid & (kw == level_w)
            top_kh = int(kh[at_w].max()) if at_w.any() else 0
            for level_h in range(top_kh + 1):
                self.levels.append((level_h, level_w))
                self.offsets[level_h, level_w] = total
                total += n * (height - (1 << level_h) + 1) * (width - (1 << level_w) + 1)
        self.rows = total  # the sentinel's row
        rows_l = height - (1 << kh) + 1
        cols_l = width - (1 << kw) + 1
        off = np.zeros(len(kh), np.int64)
        for (level_h, level_w), o in self.offsets.items():
            off[(kh == level_h) & (kw == level_w)] = o
        base = off + rb * rows_l * cols_l
        r1, c1 = r1 - (1 << kh), c1 - (1 << kw)

        def at(rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
            return np.where(valid, base + rr * cols_l + cc, total)

        self.two = int((blocks >= 2).sum())
        self.four = int((blocks == 4).sum())
        second = np.where(two_cols, at(r0, c1), at(r1, c0))[:self.two]
        self.lookups = torch.from_numpy(np.concatenate(
            [at(r0, c0), second, at(r1, c0)[:self.four], at(r1, c1)[:self.four]]))


def _table_keys(xb: torch.Tensor, cells: torch.Tensor, dump: int, out: torch.Tensor,
                scratch: _Scratch) -> bool:
    """Level (0, 0) of the tables for a block of channels: each cell of xb (N, Cb, H, W) as
    one int64 key (see _key), channels last, into out (N, H, W, Cb); cells: _FIELD − cell
    number, (N, H, W, 1). NaN and values <= −FLT_MAX become the loser's key (−FLT_MAX, no
    cell); −0 ranks as +0. Returns whether a −0 is there: the keys are then signed (its
    sign has to be restored)."""
    n, cb, height, width = xb.shape
    v = scratch.take("keys_f", (n, height, width, cb), torch.float32, xb.device)
    v.copy_(xb.permute(0, 2, 3, 1))
    bits = v.view(torch.int32)
    negative_zero = bits == -(1 << 31)
    signed = bool(negative_zero.any())
    flip = scratch.take("keys_i", bits.shape, torch.int32, xb.device)
    torch.bitwise_right_shift(bits, 31, out=flip)
    flip.bitwise_and_(0x7FFFFFFF)
    flip.bitwise_xor_(bits)  # the order-preserving bits
    if signed:
        flip.masked_fill_(negative_zero, 0)  # ranked as +0: Caffe's '>' cannot tell them
    out.copy_(flip)
    out.bitwise_left_shift_(32)
    if signed:
        out.bitwise_or_(cells << 1)
        out.bitwise_or_(negative_zero)
    else:
        out.bitwise_or_(cells)
    loser = ~(v > -_FLT_MAX)
    if bool(loser.any()):
        # every loser the same key: whichever wins, the bin gets −FLT_MAX and no cell
        out.masked_fill_(loser, _key(_ORDERED_LOSER, dump, signed))
    return signed


def _merge_pairs(a: tuple, b: tuple, out: tuple) -> None:
    """(value, cell) pairs: the larger value; on a tie the smaller cell, the first in
    row-major order (float64, whose values a key cannot hold)."""
    take_b = (b[0] > a[0]) | ((b[0] == a[0]) & (b[1] < a[1]))
    torch.where(take_b, b[0], a[0], out=out[0])
    torch.where(take_b, b[1], a[1], out=out[1])


def _merge_keys(a: tuple, b: tuple, out: tuple) -> None:
    torch.maximum(a[0], b[0], out=out[0])


def _grow_tables(tables: tuple, bins: _ROIBins, cb: int, merge: Callable) -> None:
    """Every table level after (0, 0) from the one before it: (0, kw) from (0, kw − 1) by
    columns, (kh, kw) from (kh − 1, kw) by rows."""
    n, _, height, width = bins.shape

    def level(key: tuple[int, int]) -> tuple:
        rows = height - (1 << key[0]) + 1
        cols = width - (1 << key[1]) + 1
        o = bins.offsets[key]
        return tuple(t[o:o + n * rows * cols].view(n, rows, cols, cb) for t in tables)

    for level_h, level_w in bins.levels:
        if level_h == 0 and level_w == 0:
            continue
        dst = level((level_h, level_w))
        if level_h == 0:
            src, s = level((0, level_w - 1)), 1 << (level_w - 1)
            merge(tuple(t[:, :, :-s] for t in src), tuple(t[:, :, s:] for t in src), dst)
        else:
            src, s = level((level_h - 1, level_w)), 1 << (level_h - 1)
            merge(tuple(t[:, :-s] for t in src), tuple(t[:, s:] for t in src), dst)


def roi_max_pool(x: torch.Tensor, bins: _ROIBins,
                 scratch: _Scratch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling of every ROI bin, with no loop over ROIs or bins (a 2-d sparse table).

    x: (N, C, H, W); bins: the ROIs' bins (_ROIBins). Returns the top (R, C, PH, PW) in x's
    dtype and, for the backward, per channel and distinct bin (C, bins.rects) the cell
    n·H·W + h·W + w its value came from (int32): the bin's first maximum in row-major
    order. An empty bin gives 0, a bin with no cell above −FLT_MAX gives −FLT_MAX (the
    fork's scan starts there); both get the cell N·H·W: no gradient.

    Float32 and narrower: a cell is one int64 key (value, then first cell), so the tables
    are elementwise maxima and the winner's value and cell come back from its key's two
    halves; float64 keeps (value, cell) pairs. Channels last, in blocks of
    _ROI_CHANNEL_BLOCK: a lookup reads a block's contiguous entries, and a block's tables
    stay in the CPU's caches.
    """
    scratch = scratch if scratch is not None else _Scratch()
    n, c, height, width = x.shape
    num, nb, rects = bins.num, bins.ph * bins.pw, bins.rects
    dev = x.device
    keyed = x.dtype != torch.float64 and bins.dump <= _FIELD
    vdt = torch.float32 if keyed else x.dtype
    top = scratch.take("top", (num, c, bins.ph, bins.pw), vdt, dev)
    top3 = top.view(num, c, nb)
    where = scratch.take("where", (c, rects), torch.int32, dev)
    rect_of_bin = bins.rect_of_bin.to(dev)
    lookups = bins.lookups.to(dev)
    cells = torch.arange(n * height * width, device=dev).view(n, height, width, 1)
    if keyed:
        cells = _FIELD - cells
    merge = _merge_keys if keyed else _merge_pairs
    plane = n * height * width
    two, four = bins.two, bins.four
    for lo in range(0, c, _ROI_CHANNEL_BLOCK):
        hi = min(c, lo + _ROI_CHANNEL_BLOCK)
        cb = hi - lo
        negative_zero = False
        if keyed:
            table = scratch.take("table", (bins.rows + 1, cb), torch.long, dev)
            negative_zero = _table_keys(x[:, lo:hi], cells, bins.dump,
                                        table[:plane].view(n, height, width, cb), scratch)
            table[bins.rows] = _key(0, bins.dump, negative_zero)
            tables = (table,)
        else:
            tv = scratch.take("table_v", (bins.rows + 1, cb), x.dtype, dev)
            tc = scratch.take("table_c", (bins.rows + 1, cb), torch.long, dev)
            v0 = tv[:plane].view(n, height, width, cb)
            v0.copy_(x[:, lo:hi].permute(0, 2, 3, 1))
            tc[:plane].view(n, height, width, cb).copy_(cells.expand(v0.shape))
            loser = ~(v0 > -_FLT_MAX)
            v0.masked_fill_(loser, -_FLT_MAX)
            tc[:plane].view(n, height, width, cb).masked_fill_(loser, bins.dump)
            tv[bins.rows] = 0
            tc[bins.rows] = bins.dump
            tables = (tv, tc)
        _grow_tables(tables, bins, cb, merge)
        got = []
        for k, t in enumerate(tables):
            g = scratch.take(f"got{k}", (lookups.numel(), cb), t.dtype, dev)
            torch.index_select(t, 0, lookups, out=g)
            got.append(g)
        # first block of every rect, then the second of the first `two`, the third and
        # fourth of the first `four`
        best = tuple(g[:rects] for g in got)
        for start, count in ((rects, two), (rects + two, four), (rects + two + four, four)):
            if count:
                head = tuple(t[:count] for t in best)
                merge(head, tuple(g[start:start + count] for g in got), head)
        out_where = where[lo:hi].t()
        if keyed:
            # the key's two halves, each contiguous (little-endian: low, then high)
            halves = scratch.take("halves", (2, rects, cb), torch.int32, dev)
            halves.copy_(best[0].view(torch.int32).view(rects, cb, 2).permute(2, 0, 1))
            low, high = halves[0], halves[1]
            value = scratch.take("value", (rects, cb), torch.int32, dev)
            # undo the order-preserving flip of negatives: the float32 bits
            torch.bitwise_right_shift(high, 31, out=value)
            value.bitwise_and_(0x7FFFFFFF)
            value.bitwise_xor_(high)
            if negative_zero:
                high.copy_(low)
                high.bitwise_and_(1)
                high.mul_(-(1 << 31))
                value.bitwise_or_(high)
            value = value.view(torch.float32)
            # the cell: low = _FIELD − cell, or (_FIELD − cell) << 1 | sign
            if negative_zero:
                torch.bitwise_right_shift(low, 1, out=out_where)
                out_where.bitwise_xor_(_FIELD)
            else:
                torch.bitwise_xor(low, _FIELD, out=out_where)
        else:
            value = best[0]
            out_where.copy_(best[1])
        # every bin's value from its rect's, into the top's (R, C_block, PH·PW) slice
        spread = scratch.take("spread", (num * nb, cb), vdt, dev)
        torch.index_select(value, 0, rect_of_bin, out=spread)
        top3[:, lo:hi].copy_(spread.view(num, nb, cb).permute(0, 2, 1))
    if top.dtype != x.dtype:
        top = top.to(x.dtype)
    return top, where


def _roi_max_unpool(grad: torch.Tensor, where: torch.Tensor, bins: _ROIBins,
                    scratch: _Scratch) -> torch.Tensor:
    """The fork's ROIPooling backward: each top diff (R, C, PH, PW) added at its bin's
    argmax cell (where (C, rects), from roi_max_pool), summed over every bin that chose
    the cell; cell N·H·W and the bins of ROIs that end before they start send nothing.
    Channel-major, in blocks of channels whose sums stay in the CPU's caches: each block
    gathers its bins' cells from their rects', then scatters along contiguous rows."""
    n, c, height, width = bins.shape
    num, nb = bins.num, bins.ph * bins.pw
    plane = n * height * width
    dev = grad.device
    acc = torch.float32 if grad.dtype != torch.float64 else torch.float64
    total = scratch.take("unpool", (c, plane + 1), acc, dev)  # the last column: nowhere
    total.zero_()
    g3 = grad.reshape(num, c, nb)
    rect_of_bin = bins.rect_of_bin.to(dev).view(1, -1)
    silent = bins.silent.to(dev)
    for lo in range(0, c, _ROI_UNPOOL_BLOCK):
        hi = min(c, lo + _ROI_UNPOOL_BLOCK)
        cb = hi - lo
        cells = scratch.take("unpool_cells", (cb, num * nb), torch.int32, dev)
        torch.gather(where[lo:hi], 1, rect_of_bin.expand(cb, num * nb), out=cells)
        index = scratch.take("unpool_index", (cb, num * nb), torch.long, dev)
        index.copy_(cells)
        if silent.numel():
            index.index_fill_(1, silent, plane)
        diff = scratch.take("unpool_diff", (cb, num, nb), acc, dev)
        diff.copy_(g3[:, lo:hi].permute(1, 0, 2))
        total[lo:hi].scatter_add_(1, index, diff.view(cb, num * nb))
    gx = scratch.take("gx", (n, c, height, width), grad.dtype, dev)
    gx.view(n, c, height * width).copy_(total[:, :plane].view(c, n, height * width)
                                        .permute(1, 0, 2))
    return gx


_ROI_CHANNEL_BLOCK = 32
_ROI_UNPOOL_BLOCK = 32


class _ROIMaxPool(torch.autograd.Function):
    """ROIPooling's forward (roi_max_pool) and the fork's backward (_roi_max_unpool): the
    argmax cells the forward found are kept for it."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, bins: _ROIBins,
                scratch: _Scratch) -> torch.Tensor:
        top, where = roi_max_pool(x, bins, scratch)
        ctx.where, ctx.bins, ctx.scratch = where, bins, scratch
        return top

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple:
        return _roi_max_unpool(grad, ctx.where, ctx.bins, ctx.scratch), None, None


# ------------------------------------------------------------------------------------------
# PSROIPooling
# ------------------------------------------------------------------------------------------
@register("PSROIPooling")
class PSROIPoolingLayer(_ROIPool):
    """Position-sensitive average ROI pooling (R-FCN).

    Bottoms: score maps (N, output_dim·group_size², H, W); ROIs (R, 5) — [batch index, x1,
    y1, x2, y2] in image coordinates. Batch indices must be in [0, N).
    Tops: (R, output_dim, group_size, group_size).
    Blobs: none.
    Params: psroi_pooling_param.spatial_scale, output_dim, group_size — all required (the
    fork declares them `required`), output_dim and group_size > 0; the bottom must have
    output_dim·group_size² channels.

    Cell (d, ph, pw) averages channel (d·G + ph)·G + pw over its bin; an empty bin gives 0.
    ROI corners: round(x1)·scale, (round(x2) + 1)·scale (C rounding, bottom precision); the
    ROI is at least 0.1 wide and high; bin [floor(ph·bh + y1), ceil((ph+1)·bh + y1)) clipped
    to the map. Sums are accumulated in float64. Backward spreads each top diff evenly over
    its bin; the ROIs get no gradient.

    Source: caffe-rfcn src/caffe/layers/psroi_pooling_layer.cpp and .cu.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.psroi_pooling_param
        f = "psroi_pooling_param"
        for name in ("spatial_scale", "output_dim", "group_size"):
            self.check(p.HasField(name), "required field is not set (the fork declares it "
                       "`required`)", f"{f}.{name}")
        self.check(p.output_dim > 0, "output_dim must be > 0", f"{f}.output_dim")
        self.check(p.group_size > 0, "group_size must be > 0", f"{f}.group_size")
        self.spatial_scale = p.spatial_scale
        self.output_dim, self.group_size = int(p.output_dim), int(p.group_size)
        self._scratch = _Scratch()

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        x, rois = _check_roi_bottoms(self, bottom_shapes)
        d, g = self.output_dim, self.group_size
        self.check(x[1] == d * g * g, f"input channel number does not match layer parameters: "
                   f"bottom '{self.bottom_names[0]}' has {x[1]} channels, output_dim·"
                   f"group_size² = {d * g * g}")
        return [(rois[0], d, g, g)]

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> Tops:
        n, c, height, width = x.shape
        dt, r, b = self._read_rois(x, rois)
        num, d, g = r.shape[0], self.output_dim, self.group_size
        if num == 0:
            return x.new_zeros((0, d, g, g))
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
        # rows of the (N·G·G·H·(W+1) + W+1, D) prefix sums: (bin position, row h − 1,
        # column w) holds the D sums S(h, w) over rows < h and columns < w; S(0, w) = 0 is
        # the zero rows at the end
        plane = (b[:, None, None] * (g * g) + np.arange(g * g).reshape(1, g, g)) * height
        zero = n * g * g * height * (width + 1)

        def rows(h: np.ndarray, w: np.ndarray) -> np.ndarray:
            hh, ww = h[:, :, None], w[:, None, :]
            return np.where(hh > 0, (plane + hh - 1) * (width + 1) + ww, zero + ww).reshape(-1)

        # a box sum from a 2-d prefix sum: S(e, e) − S(s, e) − S(e, s) + S(s, s)
        corners = torch.from_numpy(np.concatenate([rows(he, we), rows(hs, ws), rows(hs, we),
                                                   rows(he, ws)]))
        area = ((he - hs)[:, :, None] * (we - ws)[:, None, :]).astype(np.float64)
        geometry = (corners, torch.from_numpy(np.maximum(area, 1.0)).reshape(num, g, g, 1))
        return _PSROIAvgPool.apply(x, geometry, (d, g), self._scratch)


class _PSROIAvgPool(torch.autograd.Function):
    """PSROIPooling's average of every bin from box sums of a zero-padded 2-d prefix sum
    (accumulated in float64), and its adjoint as the backward: each bin's diff / area is
    added at its four corners of a difference array (+ at (hs, ws) and (he, we), − at
    (hs, we) and (he, ws)), whose 2-d prefix sum is the sum over the bins holding a cell, as
    the fork's backward adds diff / bin_area to every cell of the bin.

    Sums are kept (N·G·G·H·(W+1) + W+1, D): a bin's D channels are one contiguous row.
    Channel (d·G + ph)·G + pw is row d of (D, G·G·H·(W+1)), so the running sums along W
    are taken channel-major (the last axis) and one blocked 2-d transpose per image turns
    them into rows, where the sums along H are row adds; the backward runs the same way
    back, its sums running the other way (the adjoint of a prefix sum is a suffix sum).
    geometry: corners (4·R·G·G) rows of that table, in the order (e, e), (s, s), (s, e),
    (e, s); area (R, G, G, 1) cells per bin, at least 1 (an empty bin's corners cancel: 0,
    and no gradient)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, geometry: tuple, dg: tuple[int, int],
                scratch: _Scratch) -> torch.Tensor:
        corners, area = (t.to(x.device) for t in geometry)
        d, g = dg
        n, c, height, width = x.shape
        num = area.shape[0]
        dev, f64 = x.device, torch.float64
        per_image = g * g * height * (width + 1)
        sums = scratch.take("sums", (n * per_image + width + 1, d), f64, dev)
        sums[n * per_image:].zero_()
        padded = scratch.take("padded", (c, height, width + 1), f64, dev)
        padded[:, :, 0].zero_()
        for i in range(n):
            padded[:, :, 1:].copy_(x[i].detach())
            torch.cumsum(padded, 2, out=padded)
            sums[i * per_image:(i + 1) * per_image].copy_(padded.view(d, per_image).t())
        by_row = sums[:n * per_image].view(n * g * g, height, (width + 1) * d)
        for h in range(1, height):
            by_row[:, h].add_(by_row[:, h - 1])
        got = scratch.take("corners", (4, num, g, g, d), f64, dev)
        torch.index_select(sums, 0, corners, out=got.view(-1, d))
        total = got[0]
        total.add_(got[1]).sub_(got[2]).sub_(got[3])
        total.div_(area)
        top = scratch.take("top", (num, d, g, g), x.dtype, dev)
        top.copy_(total.permute(0, 3, 1, 2))
        ctx.geometry, ctx.scratch, ctx.x_shape, ctx.dg = (corners, area), scratch, x.shape, dg
        return top

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple:
        corners, area = ctx.geometry
        scratch, (d, g) = ctx.scratch, ctx.dg
        n, c, height, width = ctx.x_shape
        num = area.shape[0]
        dev, f64 = grad.device, torch.float64
        per_image = g * g * height * (width + 1)
        share = scratch.take("share", (4, num, g, g, d), f64, dev)
        share[0].copy_(grad.permute(0, 2, 3, 1))
        share[0].div_(area)
        share[1].copy_(share[0])
        torch.neg(share[0], out=share[2])
        share[3].copy_(share[2])
        # a corner at (h, w) reaches the cells above and left of it: suffix sums
        spread = scratch.take("spread", (n * per_image + width + 1, d), f64, dev)
        spread.zero_()
        spread.index_add_(0, corners, share.view(-1, d))  # the zero rows: reach nothing
        by_row = spread[:n * per_image].view(n * g * g, height, (width + 1) * d)
        for h in range(height - 2, -1, -1):
            by_row[:, h].add_(by_row[:, h + 1])
        padded = scratch.take("padded", (c, height, width + 1), f64, dev)
        gx = scratch.take("gx", (n, c, height, width), grad.dtype, dev)
        for i in range(n):
            padded.view(d, per_image).copy_(spread[i * per_image:(i + 1) * per_image].t())
            torch.cumsum(padded, 2, out=padded)
            # the suffix sum past column j: the row's total less the prefix through j
            torch.sub(padded[:, :, width:], padded[:, :, :width], out=gx[i])
        return gx, None, None, None


# ------------------------------------------------------------------------------------------
# Proposal
# ------------------------------------------------------------------------------------------
def _round_half_up(x: np.ndarray, dt: type[np.floating]) -> np.ndarray:
    """The fork's ROUND(x) = (int)(x + (Dtype)0.5), for the non-negative sizes it rounds."""
    return np.trunc((x + dt(0.5)).astype(dt)).astype(dt)


def _generate_anchors(base_size: int, ratios: list[float], scales: list[float],
                      dt: type[np.floating]) -> np.ndarray:
    """(A, 4) anchors around the base box's centre, ratios outer, scales inner:
    w = ROUND(√(base_size²/ratio)), h = ROUND(w·ratio), each scaled by `scale` into a
    w·scale × h·scale box (pva-faster-rcnn's generate_anchors, py-faster-rcnn's anchors)."""
    base_area = dt(base_size * base_size)
    center = dt(0.5) * (dt(base_size) - dt(1))
    ratios = np.asarray(ratios, dtype=dt)
    scales = np.asarray(scales, dtype=dt)
    ratio_w = _round_half_up(np.sqrt((base_area / ratios).astype(dt)).astype(dt), dt)
    ratio_h = _round_half_up((ratio_w * ratios).astype(dt), dt)
    half_w = (dt(0.5) * (ratio_w[:, None] * scales[None, :] - dt(1))).astype(dt).reshape(-1)
    half_h = (dt(0.5) * (ratio_h[:, None] * scales[None, :] - dt(1))).astype(dt).reshape(-1)
    return np.stack([center - half_w, center - half_h, center + half_w, center + half_h],
                    axis=1).astype(dt)


def _segment_ids(starts: torch.Tensor, ends: torch.Tensor):
    """Positions of the segments [starts[k], ends[k]] one after the other, each position's
    segment, and where each segment begins in that flat list."""
    lengths = ends - starts + 1
    seg = torch.repeat_interleave(torch.arange(starts.numel(), device=starts.device), lengths)
    first = torch.cumsum(lengths, 0) - lengths
    pos = starts[seg] + torch.arange(seg.numel(), device=starts.device) - first[seg]
    return pos, seg, first


def _seg_reduce(values: torch.Tensor, seg: torch.Tensor, count: int, how: str, fill: float):
    out = torch.full((count,), fill, dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, seg, values, reduce=how, include_self=True)


def _sort_box_order(scores: torch.Tensor, num_top: int) -> torch.Tensor:
    """The permutation the fork's partial quicksort ``sort_box(list, 0, n - 1, num_top)``
    leaves: its first num_top entries are sorted by score, descending, and equal scores sit
    exactly where that algorithm puts them. Every partition of one recursion depth runs at
    once as tensor operations (depth ~ log n on real scores; a run of equal or already
    descending scores is walked as one step, as the recursion would walk it)."""
    n = scores.numel()
    val = scores.clone()
    perm = torch.arange(n, device=scores.device)
    dev = scores.device
    starts = torch.zeros(1, dtype=torch.long, device=dev)
    ends = torch.full((1,), n - 1, dtype=torch.long, device=dev)
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    while starts.numel():
        g = starts.numel()
        pos, seg, first = _segment_ids(starts, ends)
        s = starts[seg]
        v = val[pos]
        pivot = val[starts][seg]
        body = pos > s
        lt = body & (v < pivot)
        gt = body & (v > pivot)
        # left stops at each score below the pivot, right at each above it (from the end):
        # the k-th of each swap while the k-th left one lies before the k-th right one
        cl = torch.cumsum(lt.long(), 0)
        cl = cl - (cl[first] - lt[first].long())[seg]
        cg_incl = torch.cumsum(gt.long(), 0)
        cg_incl = cg_incl - (cg_incl[first] - gt[first].long())[seg]
        gt_total = _seg_reduce(gt.long(), seg, g, "sum", 0)
        gt_after = gt_total[seg] - cg_incl
        swaps = _seg_reduce(torch.minimum(cl, gt_after), seg, g, "amax", 0)
        rank_right = gt_after + 1
        slot = torch.full((pos.numel(),), -1, dtype=torch.long, device=dev)
        gsel = gt & (rank_right <= swaps[seg])
        slot[first[seg[gsel]] + rank_right[gsel] - 1] = pos[gsel]
        lsel = lt & (cl <= swaps[seg])
        a = pos[lsel]
        b = slot[first[seg[lsel]] + cl[lsel] - 1]
        va, pa = val[a].clone(), perm[a].clone()
        val[a], perm[a] = val[b], perm[b]
        val[b], perm[b] = va, pa
        # right ends on the last score above the pivot (or on start)
        v = val[pos]
        above = torch.where(body & (v > pivot), pos, torch.full_like(pos, -1))
        right = _seg_reduce(above, seg, g, "amax", -1)
        right = torch.where(right < 0, starts, right)
        moved = right > starts
        i, j = starts[moved], right[moved]
        vi, pi_ = val[i].clone(), perm[i].clone()
        val[i], perm[i] = val[j], perm[j]
        val[j], perm[j] = vi, pi_
        # nothing above the pivot: the recursion steps over the scores equal to it, one
        # call each, to the first one below it
        below = torch.where(body & (v < pivot), pos, torch.full_like(pos, n))
        first_below = _seg_reduce(below, seg, g, "amin", n)
        nxt = torch.where(moved, right + 1, first_below)
        left_ok = starts < right - 1
        right_ok = (nxt < num_top) & (nxt < ends)
        starts = torch.cat([starts[left_ok], nxt[right_ok]])
        ends = torch.cat([(right - 1)[left_ok], ends[right_ok]])
    return perm


def _overlaps_above(a: torch.Tensor, b: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) whether the fork's IoU of a box of a and one of b exceeds thresh:
    boxes apart (by the corner tests) have IoU 0; sizes count +1 pixel."""
    a = a[:, None, :]
    b = b[None, :, :]
    one = torch.ones((), dtype=a.dtype, device=a.device)
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    apart = ((a[..., 0] > b[..., 2]) | (a[..., 1] > b[..., 3]) | (a[..., 2] < b[..., 0])
             | (a[..., 3] < b[..., 1]))
    w = torch.maximum(zero, torch.minimum(a[..., 2], b[..., 2])
                      - torch.maximum(a[..., 0], b[..., 0]) + one)
    h = torch.maximum(zero, torch.minimum(a[..., 3], b[..., 3])
                      - torch.maximum(a[..., 1], b[..., 1]) + one)
    area = w * h
    area_a = (a[..., 2] - a[..., 0] + one) * (a[..., 3] - a[..., 1] + one)
    area_b = (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one)
    iou = area / (area_a + area_b - area)
    return ~apart & (iou > thresh)


def _greedy_nms(boxes: torch.Tensor, thresh: torch.Tensor, max_out: int,
                block: int = 256) -> torch.Tensor:
    """Indices kept by the fork's nms_cpu over boxes (n, 4) in order: a box is kept unless a
    kept earlier box overlaps it above thresh; stops at max_out kept. Blocks of boxes are
    settled at once: inside a block, keep = candidates not overlapped by a kept earlier box
    of the block is iterated to its fixed point (unique: each box depends on earlier ones
    only, so each sweep settles at least one more box); the block's kept boxes then rule
    out the later boxes they overlap."""
    n = boxes.shape[0]
    dead = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    out = []
    kept = 0
    for s in range(0, n, block):
        if kept >= max_out:
            break
        e = min(n, s + block)
        over = _overlaps_above(boxes[s:e], boxes[s:], thresh)
        inner = torch.triu(over[:, :e - s], diagonal=1).to(boxes.dtype)
        cand = ~dead[s:e]
        keep = cand
        while True:
            hit = (keep.to(boxes.dtype) @ inner) > 0
            new = cand & ~hit
            if torch.equal(new, keep):
                break
            keep = new
        idx = torch.nonzero(keep).reshape(-1) + s
        idx = idx[:max_out - kept]
        out.append(idx)
        kept += idx.numel()
        if e < n:
            dead[e:] |= (keep.to(boxes.dtype) @ over[:, e - s:].to(boxes.dtype)) > 0
    if not out:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    return torch.cat(out)


@register("Proposal")
class ProposalLayer(Layer):
    """Region proposals from RPN scores and box deltas: anchors moved, clipped, sorted, NMS'd.

    Bottoms: scores, N×2A×H×W (background then foreground for the A anchors); deltas,
    N×4A×H×W; im_info, at least 3 values per image [img_h, img_w, scale_h(, scale_w, ...)],
    the first image's serving every image (with three values the one scale serves both
    sides, as py-faster-rcnn's im_info has it). None gets a gradient (the fork's backward is
    empty).
    Tops: rois, R×5 [n, x1, y1, x2, y2]; optionally scores, R; the images' proposals one
    after the other, at most post_nms_topn each. R depends on the data.
    Blobs: none.
    Params: proposal_param (ProposalParameter; inisis' number 1000, pva-faster-rcnn's
    8266713, same fields): feat_stride (default 16), base_size (default 16, > 0), min_size
    (default 16), ratio (repeated, at least one, > 0), scale (repeated, at least one),
    pre_nms_topn (default 6000), post_nms_topn (default 300, > 0), nms_thresh (default 0.7).
    Source: sanghoon/caffe@6068dd0 (dev_pvanet) src/caffe/layers/proposal_layer.cpp,
    src/caffe/util/nms.cpp; py-faster-rcnn lib/rpn/proposal_layer.py, generate_anchors.py.

    The C++ Proposal layer of sanghoon/pva-faster-rcnn computes py-faster-rcnn's
    ProposalLayer — the semantics the Faster R-CNN, R-FCN and PVANet models that declare
    ``type: "Proposal"`` were trained with. Anchors: for each ratio (outer)
    w = ROUND(√(base_size²/ratio)), h = ROUND(w·ratio); for each scale (inner) the
    w·scale × h·scale box centred on ((base_size − 1)/2, (base_size − 1)/2) (scales 8/16/32 at
    base_size 16 are 128–512 px), shifted by feat_stride·(x, y) at every cell (cells
    row-major outer, anchors inner). Each moves by its deltas (centre + d·size, size·exp(d),
    sizes with +1), is clipped to the image, and its score becomes 0 unless it is at least
    min_size·scale_w wide and min_size·scale_h high. The fork's partial quicksort brings the
    pre_nms_topn best first (equal scores where that algorithm leaves them); greedy NMS (IoU
    with +1 sizes > nms_thresh suppresses) keeps at most post_nms_topn. The fork takes one
    image; decaffe takes N. Computed in the bottoms' precision with tensor operations (no
    loop over boxes).
    """

    exact_bottoms = 3
    min_tops = 1
    max_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes: list[Shape]) -> None:
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
        self.check(all(r > 0 for r in p.ratio), "ratios must be > 0", "proposal_param.ratio")
        # the fork's nms_cpu stops only when the count reaches post_nms_topn, writing past
        # its post_nms_topn-sized buffers when that is 0
        self.check(self.post_nms_topn > 0, "post_nms_topn must be > 0",
                   "proposal_param.post_nms_topn")
        self.ratios, self.scales = list(p.ratio), list(p.scale)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        s, dlt, info = (tuple(x) for x in bottom_shapes)
        a = len(self.ratios) * len(self.scales)
        self.check(len(s) == 4 and s[1] == 2 * a, f"bottom '{self.bottom_names[0]}' must be "
                   f"(N, 2·{a}, H, W) for {a} anchors, got {s}")
        self.check(len(dlt) == 4 and dlt[0] == s[0] and dlt[1] == 4 * a and dlt[2:] == s[2:],
                   f"bottom '{self.bottom_names[1]}' must be ({s[0]}, 4·{a}, {s[2]}, {s[3]}), "
                   f"got {dlt}")
        per_image = math.prod(info[1:]) if len(info) > 1 else math.prod(info)
        self.check(per_image >= 3, f"bottom '{self.bottom_names[2]}' (im_info) needs the "
                   f"image height, width and scale, has shape {info}")
        rows = s[0] * self.post_nms_topn
        return [(rows, 5), (rows,)][:len(self.top_names)]

    def _proposals(self, sc: torch.Tensor, dl: torch.Tensor, anchors: torch.Tensor,
                   img_h: torch.Tensor, img_w: torch.Tensor, min_h: torch.Tensor,
                   min_w: torch.Tensor):
        """(H·W·A, 4) boxes and (H·W·A,) scores, in the fork's enumeration order."""
        dt, dev = sc.dtype, sc.device
        a = anchors.shape[0]
        height, width = sc.shape[1:]
        one, half = (torch.tensor(v, dtype=dt, device=dev) for v in (1.0, 0.5))
        zero = torch.zeros((), dtype=dt, device=dev)
        shift_x = (torch.arange(width, device=dev) * self.feat_stride).to(dt)
        shift_y = (torch.arange(height, device=dev) * self.feat_stride).to(dt)
        x1 = shift_x[None, :, None] + anchors[None, None, :, 0]
        y1 = shift_y[:, None, None] + anchors[None, None, :, 1]
        x2 = shift_x[None, :, None] + anchors[None, None, :, 2]
        y2 = shift_y[:, None, None] + anchors[None, None, :, 3]
        d = dl.reshape(a, 4, height, width).permute(2, 3, 0, 1)  # (H, W, A, 4)
        w = x2 - x1 + one
        h = y2 - y1 + one
        cx = x1 + half * w
        cy = y1 + half * h
        pcx = d[..., 0] * w + cx
        pcy = d[..., 1] * h + cy
        pw = torch.exp(d[..., 2]) * w
        ph = torch.exp(d[..., 3]) * h
        boxes = torch.stack([
            torch.maximum(zero, torch.minimum(pcx - half * pw, img_w - one)),
            torch.maximum(zero, torch.minimum(pcy - half * ph, img_h - one)),
            torch.maximum(zero, torch.minimum(pcx + half * pw, img_w - one)),
            torch.maximum(zero, torch.minimum(pcy + half * ph, img_h - one))], dim=-1)
        bw = boxes[..., 2] - boxes[..., 0] + one
        bh = boxes[..., 3] - boxes[..., 1] + one
        big = (bw >= min_w) & (bh >= min_h)
        # (int)(size check) * score, as the fork multiplies (0 · score, not a select)
        score = big.to(dt) * sc[a:].permute(1, 2, 0)
        return boxes.reshape(-1, 4), score.reshape(-1)

    def forward(self, score: torch.Tensor, delta: torch.Tensor, im_info: torch.Tensor) -> Tops:
        dt, dev = score.dtype, score.device
        npdt = numpy_dtype(score)
        sc_all, dl_all = score.detach(), delta.detach()
        per_image = math.prod(im_info.shape[1:]) if im_info.dim() > 1 else im_info.numel()
        info = im_info.detach().reshape(-1).to(dt)
        img_h, img_w = info[0], info[1]
        scale_h = info[2]
        scale_w = info[3] if per_image >= 4 else info[2]
        min_size = torch.tensor(float(self.min_size), dtype=dt, device=dev)
        min_h, min_w = min_size * scale_h, min_size * scale_w
        anchors = torch.as_tensor(_generate_anchors(self.base_size, self.ratios, self.scales,
                                                    npdt), dtype=dt, device=dev)
        thresh = torch.tensor(float(np.asarray(self.nms_thresh, npdt)), dtype=dt, device=dev)
        rois, scores = [], []
        for n in range(sc_all.shape[0]):  # images; the fork takes one
            boxes, sc = self._proposals(sc_all[n], dl_all[n], anchors, img_h, img_w,
                                        min_h, min_w)
            order = _sort_box_order(sc, self.pre_nms_topn)
            order = order[:min(sc.numel(), self.pre_nms_topn)]
            boxes, sc = boxes[order], sc[order]
            keep = _greedy_nms(boxes, thresh, self.post_nms_topn)
            r = torch.empty((keep.numel(), 5), dtype=dt, device=dev)
            r[:, 0] = n
            r[:, 1:] = boxes[keep]
            rois.append(r)
            scores.append(sc[keep])
        rois_t = torch.cat(rois)
        if len(self.top_names) < 2:
            return rois_t
        return rois_t, torch.cat(scores)


# ------------------------------------------------------------------------------------------
# Online hard example mining (R-FCN): SoftmaxWithLossOHEM, SmoothL1LossOHEM, BoxAnnotatorOHEM
# ------------------------------------------------------------------------------------------
_PRE_FIXED = _LossParam.PRE_FIXED


def _legacy_dims(shape: Shape) -> tuple[int, int, int, int]:
    """Caffe's num/channels/height/width of a blob of at most 4 axes (missing ones are 1)."""
    s = tuple(int(v) for v in shape) + (1,) * (4 - len(shape))
    return s[0], s[1], s[2], s[3]


@register("SoftmaxWithLossOHEM")
class SoftmaxWithLossOHEMLayer(SoftmaxWithLossLayer):
    """SoftmaxWithLoss with R-FCN's per-instance loss top and PRE_FIXED normalisation.

    Bottoms: scores, outer×C×inner around softmax_param.axis; labels, outer·inner values in
    [0, C) or ignore_label (they get no gradient).
    Tops: loss, a scalar (loss_weight 1 by default); optionally the probabilities (scores'
    shape) and the per-position losses (the labels' shape, 0 where ignored), neither with a
    gradient.
    Blobs: none.
    Params: softmax_param.axis (default 1); loss_param (LossParameter): ignore_label,
    normalization (default VALID; PRE_FIXED divides by pre_fixed_normalizer, default 1, at
    least 1), normalize (legacy).
    Source: R-FCN's OHEM layers (Yi Li, 2016) as Intel's extendedcaffe/extended-caffe and
    soeaver's caffe-priv carry them: src/caffe/layers/softmax_loss_ohem_layer.cpp/.cu.

    Everything else is SoftmaxWithLoss's (see SoftmaxWithLossLayer); the loss sums the
    non-ignored positions as R-FCN's GPU code does.
    """

    accepts_pre_fixed = True

    def _normalizer(self, mode: int, outer: int, inner: int, valid_count: torch.Tensor | None):  # noqa: D401 - Caffe's name
        if mode == _PRE_FIXED:
            return max(1.0, float(np.float32(self.lp.loss_param.pre_fixed_normalizer)))
        return SoftmaxWithLossLayer._normalizer(mode, outer, inner, valid_count)


@register("SmoothL1LossOHEM")
class SmoothL1LossOHEMLayer(_LossLayer):
    """R-FCN's SmoothL1 loss for OHEM (σ = 1): Σ smoothL1(w·(a − b)) / normaliser.

    Bottoms: a, N×C×H×W predictions (at most 4 axes); b, targets, a's count with a's C, H, W;
    optionally w, weights likewise (BoxAnnotatorOHEM's bbox loss weights). a and b get
    gradients; w gets none.
    Tops: loss, a scalar (loss_weight 1 by default); optionally N×1×H×W, always 4 axes (an
    R×4 bottom gives R×1×1×1, as the fork's four-argument Blob::Reshape(num, 1, height,
    width); Intel's port keeps the bottom's axes, R×1): each instance's loss summed over
    the channels, with no gradient.
    Blobs: none.
    Params: loss_param (LossParameter): normalization (default VALID; FULL and VALID are
    N·H·W, BATCH_SIZE N, PRE_FIXED pre_fixed_normalizer (default 1), NONE 1; at least 1).
    Source: R-FCN's OHEM layers (Yi Li, 2016) as Intel's extendedcaffe/extended-caffe and
    soeaver's caffe-priv carry them: src/caffe/layers/smooth_L1_loss_ohem_layer.cpp/.cu.

    smoothL1(x) = 0.5·x² if |x| < 1, else |x| − 0.5. The fork's backward is
    smoothL1'(w·(a − b))·±loss_weight/normaliser, without the factor w (decaffe keeps it:
    the same for 0/1 weights).
    """

    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3
    max_loss_tops = 2
    accepts_pre_fixed = True

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index < 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._check_tops()
        self.normalization = self._normalization(VALID)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
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

    def forward(self, a: torch.Tensor, b: torch.Tensor, *weights: torch.Tensor) -> Tops:
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


# ------------------------------------------------------------------------------------------
# SmoothL1Loss
# ------------------------------------------------------------------------------------------
@register("SmoothL1Loss")
class SmoothL1LossLayer(SmoothL1LossOHEMLayer):
    """Faster R-CNN's smooth L1 loss: Σ outside·smoothL1(inside·(a − b)) / N, N = a.shape[0].

    Bottoms: a, predictions of any shape; b, targets of a's count; optionally inside and
    outside weights of a's count. a and b get gradients; the weights never do.
    Tops: loss, a scalar (loss_weight 1 by default); with R-FCN's form (below) optionally the
    per-instance losses, N×1×H×W.
    Blobs: none.
    Params: smooth_l1_loss_param (SmoothL1LossParameter, caffe-fast-rcnn's number 8266712):
    sigma (default 1); R-FCN's form reads loss_param's normalization instead (as
    SmoothL1LossOHEM).
    Source: rbgirshick/caffe-fast-rcnn src/caffe/layers/smooth_L1_loss_layer.cpp/.cu; the
    three-bottom or two-top form daijifeng001/caffe-rfcn smooth_L1_loss_layer.cu.

    smoothL1(x) = 0.5·σ²·x² if |x| < 1/σ², else |x| − 0.5/σ². With two bottoms and σ = 1
    this is also the SSD fork's SmoothL1Loss.

    Three bottoms (predictions, targets, weights) or a second top are R-FCN's own
    SmoothL1Loss (its OHEM nets pass the bbox weights as a third bottom and read per-ROI
    losses from the second top): σ = 1, loss_param normalisation, the arithmetic of
    SmoothL1LossOHEM. caffe-fast-rcnn refuses three bottoms; R-FCN's layer takes at most
    three, so four bottoms with two tops are refused.
    """

    max_bottoms = 4

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.rfcn = len(bottom_shapes) == 3 or len(self.top_names) == 2
        if self.rfcn:
            self.check(len(bottom_shapes) <= 3, "R-FCN's SmoothL1Loss (a second top) takes 2 "
                       f"or 3 bottoms, got {len(bottom_shapes)}")
            super().setup(bottom_shapes)
            return
        self._check_tops()
        sigma = float(np.float32(self.lp.smooth_l1_loss_param.sigma))
        self.sigma2 = float(np.float32(sigma * sigma))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        if self.rfcn:
            return super().reshape(bottom_shapes)
        a = tuple(bottom_shapes[0])
        for i, s in enumerate(bottom_shapes[1:], start=1):
            self.check(math.prod(s) == math.prod(a),
                       f"{self._bottom(i)} has shape {tuple(s)}, {self._bottom(0)} has {a}: "
                       "they must have the same size")
        return [()]

    def forward(self, a: torch.Tensor, b: torch.Tensor, *weights: torch.Tensor) -> Tops:
        if self.rfcn:
            return super().forward(a, b, *weights)
        d = a - b.reshape(a.shape)
        if weights:
            inside, outside = (w.detach().reshape(a.shape) for w in weights)
            d = d * inside
        ad = d.abs()
        e = torch.where(ad < 1.0 / self.sigma2, 0.5 * self.sigma2 * d * d, ad - 0.5 / self.sigma2)
        if weights:
            e = e * outside
        return e.sum() / a.shape[0]


@register("BoxAnnotatorOHEM")
class BoxAnnotatorOHEMLayer(Layer):
    """R-FCN's hard example selection: keeps the roi_per_img highest-loss ROIs of each image.

    Bottoms: rois, R×5×H×W (legacy 4-axis view; usually R×5, [image, x1, y1, x2, y2]);
    loss, R×1×H×W per-ROI losses; labels, R×1×H×W; bbox loss weights, R×K×H×W. None gets a
    gradient (no backward).
    Tops: labels, R×1×H×W: ignore_label everywhere except the kept ROIs; bbox loss weights,
    R×K×H×W: zero except for the kept ROIs.
    Blobs: none.
    Params: box_annotator_ohem_param (BoxAnnotatorOHEMParameter): roi_per_img (required in
    the fork; refused unset, > 0), ignore_label (default −1).
    Source: daijifeng001/caffe-rfcn src/caffe/layers/box_annotator_ohem_layer.cu.

    ROIs are ranked by loss, highest first (equal losses keep their order: the fork's
    std::sort leaves it unspecified); each image (the ROI's first value, truncated) keeps at
    most roi_per_img of them.
    """

    exact_bottoms = 4
    exact_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.box_annotator_ohem_param
        f = "box_annotator_ohem_param.roi_per_img"
        self.check(p.HasField("roi_per_img"), "required field is not set (the fork declares "
                   "it `required`)", f)
        self.check(p.roi_per_img > 0, "must be > 0", f)
        self.roi_per_img = int(p.roi_per_img)
        self.ignore_label = float(p.ignore_label)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
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

    def forward(self, rois: torch.Tensor, loss: torch.Tensor, labels: torch.Tensor,
                bbox_weights: torch.Tensor) -> Tops:
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

"""ROIPooling and PSROIPooling at their edges (decaffe/layers/forks/rcnn.py): ties, NaN,
-inf and -FLT_MAX, signed zeros, empty bins, ROIs past the map or ending before they start,
several images, bins shared by several ROIs, several channel blocks, float64 — each against
a loop written from the forks' kernels, forward and backward; finite differences; and that
the memory the layers reuse from pass to pass is never memory someone still holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from prototxt_text import inp, lay
from roi_loops import FLT_MAX, psroi_loops, roi_loops

import decaffe
from decaffe.layers.forks import rcnn


def roi_net(shape: tuple, rois: np.ndarray, pooled: tuple[int, int], scale: float,
            dtype: torch.dtype = torch.float32) -> decaffe.Net:
    text = ("force_backward: true\n" + inp("x", shape) + inp("rois", rois.shape)
            + lay("ROIPooling", ["x", "rois"], ["y"],
                  f"roi_pooling_param {{ pooled_h: {pooled[0]} pooled_w: {pooled[1]} "
                  f"spatial_scale: {scale} }}"))
    return decaffe.Net(text, decaffe.TEST, dtype=dtype)


def run_roi(x: np.ndarray, rois: np.ndarray, pooled: tuple[int, int], scale: float,
            dy: np.ndarray, dtype: torch.dtype = torch.float32):
    net = roi_net(x.shape, rois, pooled, scale, dtype)
    net.blobs["x"].data[...] = x
    net.blobs["rois"].data[...] = rois
    net.forward()
    top = net.blobs["y"].data.copy()
    net.blobs["y"].diff[...] = dy
    net.backward()
    return top, net.blobs["x"].diff.copy()


def check_roi(x: np.ndarray, rois: np.ndarray, pooled: tuple[int, int], scale: float,
              dtype: torch.dtype = torch.float32, seed: int = 0) -> np.ndarray:
    """Forward bit for bit (signed zeros included) and backward against the loops."""
    npdt = np.float64 if dtype == torch.float64 else np.float32
    x = x.astype(npdt)
    dy = np.random.default_rng(seed).standard_normal(
        (rois.shape[0], x.shape[1], *pooled)).astype(npdt)
    top, grad = run_roi(x, rois, pooled, scale, dy, dtype)
    want, want_grad = roi_loops(x, rois, *pooled, scale, dy)
    np.testing.assert_array_equal(top, want)
    np.testing.assert_array_equal(np.signbit(top), np.signbit(want))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-5)
    return top


DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_go_to_the_first_cell_in_row_major_order(dtype):
    """Integer maps with few values: every bin of every size has ties, inside one table block
    and across the four blocks that answer a bin."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, (2, 3, 13, 17)).astype(np.float32)
    x[0, 1] = 5.0  # a plane all tied
    rois = np.array([[0, 0, 0, 16, 12], [1, 1, 2, 15, 11], [0, 3, 0, 9, 12],
                     [1, 0, 0, 4, 4], [0, 2, 5, 14, 6]], np.float32)
    for pooled in ((1, 1), (2, 3), (3, 3), (5, 2)):
        check_roi(x, rois, pooled, 1.0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_and_flt_max_never_win(dtype):
    """The fork's scan starts at -FLT_MAX and keeps strictly greater cells: NaN, -inf and
    -FLT_MAX itself never win; a bin of nothing else gives -FLT_MAX and no gradient."""
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, 0, :3, :3] = np.nan
    x[0, 0, 3:, :3] = -np.inf
    x[0, 0, :3, 3:] = -FLT_MAX
    x[0, 0, 3:, 3:] = np.array([[np.nan, -np.inf, -FLT_MAX], [-3, np.nan, -2],
                                [-FLT_MAX, -1, np.nan]])
    x[0, 1] = np.arange(36).reshape(6, 6) - 18.0
    x[0, 1, 2, 2] = np.nan
    x[0, 1, 5, 5] = np.inf  # +inf wins like any value
    rois = np.array([[0, 0, 0, 5, 5], [0, 0, 0, 2, 2], [0, 3, 0, 5, 2], [0, 3, 3, 5, 5],
                     [0, 1, 1, 4, 4]], np.float32)
    for pooled in ((1, 1), (2, 2), (3, 3)):
        top = check_roi(x, rois, pooled, 1.0, dtype)
    assert (top[1, 0] == -FLT_MAX).all()  # all NaN: -FLT_MAX


@pytest.mark.parametrize("dtype", DTYPES)
def test_signed_zeros_keep_the_first(dtype):
    """-0 and +0 tie (Caffe's '>'); the first in row-major order is the value and argmax."""
    x = np.full((1, 2, 4, 4), -1.0, np.float32)
    x[0, 0, 1, 1], x[0, 0, 1, 2] = -0.0, 0.0
    x[0, 1, 1, 1], x[0, 1, 1, 2] = 0.0, -0.0
    x[0, 1, 3, 3] = -0.0
    rois = np.array([[0, 0, 0, 3, 3], [0, 1, 1, 3, 3], [0, 2, 1, 3, 3]], np.float32)
    top = check_roi(x, rois, (1, 1), 1.0, dtype)
    assert np.signbit(top[0, 0, 0, 0]) and not np.signbit(top[0, 1, 0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_bins_rois_past_the_map_and_reversed_rois(dtype):
    """Bins wholly off the map pool nothing (0, no gradient); ROIs partly past it are
    clipped; a ROI whose end lies before its start is pooled as a 1x1 cell and sends no
    gradient, even where a valid ROI shares its bins."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    rois = np.array([
        [0, 100, 100, 140, 150],   # wholly past the map: every bin empty
        [1, -40, -30, 90, 80],     # past every border
        [0, 5, 6, 2, 1],           # end before start
        [0, 2, 1, 2, 1],           # ... and the valid single cell it covers
        [1, 20, 8, 4, 30],         # end before start in x only
        [1, 4, 8, 20, 30],
        [0, 24, 0, 40, 40],        # narrower than the grid: empty bins at the right
        [1, 4, 8, 20, 30],         # the same ROI again: diffs of both reach the argmaxes
    ], np.float32)
    for pooled, scale in (((3, 2), 0.25), ((7, 7), 0.5), ((2, 5), 1.0)):
        check_roi(x, rois, pooled, scale, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_bin_empty(dtype):
    x = np.ones((1, 2, 5, 5), np.float32)
    rois = np.array([[0, 50, 50, 80, 80], [0, 90, -40, 99, -20]], np.float32)
    top = check_roi(x, rois, (2, 3), 1.0, dtype)
    assert not top.any()


@pytest.mark.parametrize("block", [1, 3, 64])
def test_channel_blocks(block, monkeypatch):
    """The channels go through the tables in blocks of _ROI_CHANNEL_BLOCK (and the
    backward in blocks of _ROI_UNPOOL_BLOCK), the last one partial."""
    monkeypatch.setattr(rcnn, "_ROI_CHANNEL_BLOCK", block)
    monkeypatch.setattr(rcnn, "_ROI_UNPOOL_BLOCK", block)
    rng = np.random.default_rng(7)
    x = rng.integers(-2, 3, (2, 7, 10, 12)).astype(np.float32)
    x[1, 2:4, 3:6, 4:9] = np.nan
    rois = np.array([[0, 0, 0, 47, 39], [1, 4, 4, 30, 22], [1, 10, 9, 12, 13],
                     [0, 30, 2, 33, 40], [1, 9, 9, 1, 1]], np.float32)
    check_roi(x, rois, (3, 4), 0.25)


def test_one_roi_matches_loops_on_a_map_of_every_bin_size():
    """Bins from 1 to 16 cells on a side: every table level and every split of a bin into
    1, 2 or 4 blocks."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 33, 31)).astype(np.float32)
    rois = np.array([[0, 0, 0, 32, 30], [0, 1, 2, 25, 29], [0, 0, 0, 7, 15],
                     [0, 3, 3, 18, 12]], np.float32)
    for pooled in ((2, 2), (3, 1), (1, 5), (7, 7), (16, 2)):
        check_roi(x, rois, pooled, 1.0)


def test_roi_pooling_finite_differences():
    """(A ROI ending before it starts is left out: the fork's backward skips it on purpose,
    so its diff is not its forward's derivative.)"""
    rng = np.random.default_rng(11)
    x = rng.permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8) * 0.05
    rois = np.array([[0, 0, 0, 15, 13], [1, 2, 3, 9, 12], [0, 5, 5, 5, 5], [1, 2, 3, 9, 12],
                     [1, -6, 9, 30, 30], [0, 40, 40, 60, 60]], np.float64)
    check_gradients(inp("x", x.shape) + inp("rois", rois.shape)
                    + lay("ROIPooling", ["x", "rois"], ["y"],
                          "roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 }"),
                    {"x": x, "rois": rois}, check_inputs=["x"])


def _bins(x: torch.Tensor, rois: np.ndarray, pooled: tuple[int, int]) -> rcnn._ROIBins:
    lay_ = rcnn.ROIPoolingLayer.__new__(rcnn.ROIPoolingLayer)
    lay_.pooled_h, lay_.pooled_w, lay_.spatial_scale = *pooled, 1.0
    hs, he, ws, we, bad = lay_._bins(rois.astype(np.float32), x.shape[2], x.shape[3],
                                     np.float32)
    return rcnn._ROIBins(rois[:, 0].astype(np.int64), hs, he, ws, we, bad, x.shape)


def test_reused_memory_is_never_memory_still_held():
    """A top someone holds is not written by the next pass; once let go, its memory is
    handed out again (no fresh pages each pass)."""
    x1 = torch.randn(1, 3, 8, 8)
    x2 = torch.randn(1, 3, 8, 8)
    rois = np.array([[0, 0, 0, 7, 7], [0, 2, 2, 5, 6]], np.float32)
    bins = _bins(x1, rois, (2, 2))
    scratch = rcnn._Scratch()
    top1, _ = rcnn.roi_max_pool(x1, bins, scratch)
    kept = top1.clone()
    top2, _ = rcnn.roi_max_pool(x2, bins, scratch)
    assert top1.data_ptr() != top2.data_ptr()
    torch.testing.assert_close(top1, kept, rtol=0, atol=0)
    view = top2[0]  # a view holds the memory too
    address = top2.data_ptr()
    del top2
    top3, _ = rcnn.roi_max_pool(x1, bins, scratch)
    assert top3.data_ptr() != address
    torch.testing.assert_close(top3, kept, rtol=0, atol=0)
    del view
    top4, _ = rcnn.roi_max_pool(x2, bins, scratch)
    assert top4.data_ptr() == address


def test_backward_after_a_later_forward_uses_its_own_argmax():
    """Two forwards, then the first one's graph: its argmax, not the later one's."""
    net = roi_net((1, 2, 6, 6), np.zeros((1, 5), np.float32), (1, 1), 1.0)
    layer = next(r.layer for r in net.layer_records if isinstance(r.layer, rcnn.ROIPoolingLayer))
    rois = torch.tensor([[0, 0, 0, 5, 5]], dtype=torch.float32)
    x1 = torch.zeros(1, 2, 6, 6, requires_grad=True)
    with torch.no_grad():
        x1[0, :, 1, 1] = 1
    x2 = torch.zeros(1, 2, 6, 6, requires_grad=True)
    with torch.no_grad():
        x2[0, :, 4, 4] = 1
    y1 = layer(x1, rois)
    y2 = layer(x2, rois)
    (g1,) = torch.autograd.grad(y1.sum(), x1)
    (g2,) = torch.autograd.grad(y2.sum(), x2)
    assert g1[0, :, 1, 1].tolist() == [1, 1] and g1.sum() == 2
    assert g2[0, :, 4, 4].tolist() == [1, 1] and g2.sum() == 2


# ------------------------------------------------------------------------------------------
# PSROIPooling
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_psroi_edges_against_loops(dtype):
    """Empty bins (ROIs off or past the map, narrower than the grid), reversed ROIs (at
    least 0.1 wide), several images, the same ROI twice: forward and backward."""
    npdt = np.float64 if dtype == torch.float64 else np.float32
    dim, g, scale = 3, 3, 0.25
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, dim * g * g, 11, 9)).astype(npdt)
    rois = np.array([[0, 0, 0, 43, 35], [1, 100, 100, 140, 150], [2, -30, -20, 60, 70],
                     [1, 20, 9, 3, 2], [0, 30, 2, 33, 40], [2, 7.5, 3.2, 30.4, 21],
                     [2, 7.5, 3.2, 30.4, 21], [1, 4, 4, 4, 4]], np.float32)
    text = ("force_backward: true\n" + inp("x", x.shape) + inp("rois", rois.shape)
            + lay("PSROIPooling", ["x", "rois"], ["y"],
                  f"psroi_pooling_param {{ spatial_scale: {scale} output_dim: {dim} "
                  f"group_size: {g} }}"))
    net = decaffe.Net(text, decaffe.TEST, dtype=dtype)
    net.blobs["x"].data[...] = x
    net.blobs["rois"].data[...] = rois
    net.forward()
    dy = rng.standard_normal((len(rois), dim, g, g)).astype(npdt)
    want, want_grad = psroi_loops(x, rois, dim, g, scale, dy)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=tol, atol=tol)
    assert (net.blobs["y"].data[1] == 0).all()
    net.blobs["y"].diff[...] = dy
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, want_grad, rtol=tol, atol=tol)
    assert not net.blobs["rois"].diff.any()


def test_psroi_finite_differences():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 8, 7, 6))
    rois = np.array([[0, 0, 0, 13, 11], [1, 2, 3, 9, 12], [1, 30, 30, 40, 40],
                     [0, -4, 1, 6, 20]], np.float64)
    check_gradients(inp("x", x.shape) + inp("rois", rois.shape)
                    + lay("PSROIPooling", ["x", "rois"], ["y"],
                          "psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 "
                          "group_size: 2 }"),
                    {"x": x, "rois": rois}, check_inputs=["x"])

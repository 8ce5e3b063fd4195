"""The Faster R-CNN / R-FCN fork layers (decaffe/layers/forks/rcnn.py): ROIPooling, PSROIPooling,
SmoothL1Loss, Proposal — against loop references written from the forks' kernels,
finite-difference checks of every backward, and the forks' refusals. Their golden cases
replay in tests/layers/test_layer_table.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from prototxt_text import inp, lay
from roi_loops import psroi_loops, roi_loops

import decaffe
from decaffe.errors import DecaffeError
from decaffe.layers.forks import rcnn


def forward(text, inputs, phase=decaffe.TEST, dtype=torch.float32):
    net = decaffe.Net(text, phase, dtype=dtype)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    return net


def distinct(shape, seed, spacing=0.05):
    """Values no two closer than spacing (max-pooling argmaxes stay put under ±1e-2)."""
    n = int(np.prod(shape))
    v = np.random.default_rng(seed).permutation(n).astype(np.float64) * spacing
    return (v - v.mean()).reshape(shape)


# ------------------------------------------------------------------------------------------
# ROIPooling
# ------------------------------------------------------------------------------------------
ROIS = np.array([
    [0, 0, 0, 31, 31],        # the whole map at scale 1/4
    [1, 4.4, 6.6, 20.5, 14],  # C rounding of .5 and fractional corners
    [0, 10, 10, 10, 10],      # a single cell
    [1, 20, 20, 8, 8],        # end before start: pooled as 1x1
    [0, -8, -4, 60, 70],      # past the borders
    [1, 2, 30, 5, 40],        # narrower than the grid: empty bins
], np.float32)


@pytest.mark.parametrize("pooled,scale", [((3, 3), 0.25), ((2, 4), 0.5), ((7, 7), 0.25)])
def test_roi_pooling_matches_the_fork_loops(pooled, scale):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 9)).astype(np.float32)
    x[0, 1, 2:5, 2:5] = 1.5  # ties: the first in row-major order wins
    text = (inp("x", x.shape) + inp("rois", ROIS.shape)
            + lay("ROIPooling", ["x", "rois"], ["y"],
                  f"roi_pooling_param {{ pooled_h: {pooled[0]} pooled_w: {pooled[1]} "
                  f"spatial_scale: {scale} }}"))
    net = forward(text, {"x": x, "rois": ROIS})
    want, _ = roi_loops(x, ROIS, *pooled, scale, np.zeros((len(ROIS), 3, *pooled), np.float32))
    assert net.blobs["y"].data.shape == (len(ROIS), 3, *pooled)
    np.testing.assert_array_equal(net.blobs["y"].data, want)


def test_roi_pooling_backward_goes_to_the_argmax():
    x = distinct((2, 2, 8, 9), seed=3).astype(np.float32)
    x[1, 0, 3:6, 3:6] = x.max() + 1  # a tie plateau: only its first cell gets the diff
    text = ("force_backward: true\n" + inp("x", x.shape) + inp("rois", ROIS.shape)
            + lay("ROIPooling", ["x", "rois"], ["y"],
                  "roi_pooling_param { pooled_h: 3 pooled_w: 3 spatial_scale: 0.25 }"))
    net = forward(text, {"x": x, "rois": ROIS})
    dy = np.random.default_rng(4).standard_normal(net.blobs["y"].data.shape).astype(np.float32)
    net.blobs["y"].diff[...] = dy
    net.backward()
    _, want = roi_loops(x, ROIS, 3, 3, 0.25, dy)
    np.testing.assert_allclose(net.blobs["x"].diff, want, rtol=1e-6, atol=1e-6)
    assert not net.blobs["rois"].diff.any()


def random_rois(rng, count, batch, height, width, scale):
    """ROIs of every size from one cell to past the map (bins of 1 to ~H cells), some ending
    before they start, with fractional and .5 corners."""
    x1 = rng.uniform(-4, width / scale, count)
    y1 = rng.uniform(-4, height / scale, count)
    w = rng.uniform(-3, 1.3 * width / scale, count)
    h = rng.uniform(-3, 1.3 * height / scale, count)
    rois = np.stack([rng.integers(0, batch, count), x1, y1, x1 + w, y1 + h], 1)
    rois[::7, 1:] = np.round(rois[::7, 1:]) + 0.5
    return rois.astype(np.float32)


@pytest.mark.parametrize("pooled,scale,block", [((3, 2), 1.0, 64), ((7, 7), 0.5, 64),
                                                ((1, 1), 0.25, 64), ((7, 7), 0.5, 2)])
def test_roi_pooling_random_rois_match_the_fork_loops_forward_and_backward(pooled, scale, block,
                                                                           monkeypatch):
    """Forward values and backward (each diff to the fork's argmax) on many ROIs of every
    size; integer-valued maps make ties everywhere, and a -inf/NaN corner makes bins where
    no cell beats -FLT_MAX. block 2: the channels go through the tables in several blocks."""
    monkeypatch.setattr(rcnn, "_ROI_CHANNEL_BLOCK", block)
    rng = np.random.default_rng(11)
    x = rng.integers(-3, 4, (2, 3, 19, 23)).astype(np.float32)
    x[1, :, :6, :5] = -np.inf
    x[1, 0, 2, 2] = np.nan
    rois = random_rois(rng, 60, 2, 19, 23, scale)
    text = ("force_backward: true\n" + inp("x", x.shape) + inp("rois", rois.shape)
            + lay("ROIPooling", ["x", "rois"], ["y"],
                  f"roi_pooling_param {{ pooled_h: {pooled[0]} pooled_w: {pooled[1]} "
                  f"spatial_scale: {scale} }}"))
    net = forward(text, {"x": x, "rois": rois})
    dy = rng.standard_normal(net.blobs["y"].data.shape).astype(np.float32)
    want, grad = roi_loops(x, rois, *pooled, scale, dy)
    np.testing.assert_array_equal(net.blobs["y"].data, want)
    net.blobs["y"].diff[...] = dy
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, grad, rtol=1e-5, atol=1e-5)


def test_roi_pooling_gradient_check():
    x = distinct((2, 2, 6, 7), seed=5)
    rois = np.array([[0, 0, 0, 13, 11], [1, 2, 3, 9, 12], [0, 5, 5, 5, 5]], np.float64)
    check_gradients(inp("x", x.shape) + inp("rois", rois.shape)
                    + lay("ROIPooling", ["x", "rois"], ["y"],
                          "roi_pooling_param { pooled_h: 2 pooled_w: 3 spatial_scale: 0.5 }"),
                    {"x": x, "rois": rois}, check_inputs=["x"])


def test_roi_pooling_accepts_4d_rois_and_zero_rois():
    x = np.ones((1, 2, 4, 4), np.float32)
    rois4 = ROIS[:1, :, None, None]
    text = (inp("x", x.shape) + inp("rois", rois4.shape)
            + lay("ROIPooling", ["x", "rois"], ["y"],
                  "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.125 }"))
    net = forward(text, {"x": x, "rois": rois4})
    np.testing.assert_array_equal(net.blobs["y"].data, np.ones((1, 2, 2, 2)))
    net.blobs["rois"].reshape(0, 5, 1, 1)
    net.forward()
    assert net.blobs["y"].data.shape == (0, 2, 2, 2)


@pytest.mark.parametrize("body,rois,msg", [
    ("pooled_h: 0 pooled_w: 2", [[0, 0, 0, 1, 1]], "pooled_h must be > 0"),
    ("pooled_h: 2", [[0, 0, 0, 1, 1]], "pooled_w must be > 0"),
    ("pooled_h: 2 pooled_w: 2", [[1, 0, 0, 1, 1]], "batch index 1"),
    ("pooled_h: 2 pooled_w: 2", [[-1, 0, 0, 1, 1]], "batch index -1"),
])
def test_roi_pooling_refusals(body, rois, msg):
    rois = np.array(rois, np.float32)
    text = (inp("x", (1, 1, 4, 4)) + inp("rois", rois.shape)
            + lay("ROIPooling", ["x", "rois"], ["y"], f"roi_pooling_param {{ {body} }}",
                  name="roi5"))
    with pytest.raises(DecaffeError, match=msg) as e:
        forward(text, {"x": np.zeros((1, 1, 4, 4), np.float32), "rois": rois})
    assert "roi5" in str(e.value)


def test_roi_pooling_refuses_rois_without_5_values():
    text = (inp("x", (1, 1, 4, 4)) + inp("rois", (2, 4))
            + lay("ROIPooling", ["x", "rois"], ["y"],
                  "roi_pooling_param { pooled_h: 1 pooled_w: 1 }"))
    with pytest.raises(DecaffeError, match="must be == 5"):
        decaffe.Net(text, decaffe.TEST)


# ------------------------------------------------------------------------------------------
# PSROIPooling
# ------------------------------------------------------------------------------------------
PS_ROIS = np.array([
    [0, 0, 0, 47, 47], [1, 7.5, 3.2, 30.4, 21], [0, 16, 16, 16, 16],
    [1, 30, 30, 10, 10], [0, -20, -9, 90, 80], [1, 40, 2, 44, 60],
], np.float32)


@pytest.mark.parametrize("dim,g,scale", [(2, 3, 0.25), (3, 2, 0.125), (1, 4, 0.25)])
def test_psroi_pooling_matches_the_fork_loops(dim, g, scale):
    x = np.random.default_rng(dim).standard_normal((2, dim * g * g, 12, 11)).astype(np.float32)
    text = (inp("x", x.shape) + inp("rois", PS_ROIS.shape)
            + lay("PSROIPooling", ["x", "rois"], ["y"],
                  f"psroi_pooling_param {{ spatial_scale: {scale} output_dim: {dim} "
                  f"group_size: {g} }}"))
    net = forward(text, {"x": x, "rois": PS_ROIS})
    want, _ = psroi_loops(x, PS_ROIS, dim, g, scale, np.zeros((len(PS_ROIS), dim, g, g)))
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-5, atol=1e-6)


def test_psroi_pooling_gradient_check():
    x = np.random.default_rng(7).standard_normal((2, 2 * 2 * 2, 5, 6))
    rois = np.array([[0, 0, 0, 11, 9], [1, 2, 4, 7, 11], [0, 3, 3, 3, 3]], np.float64)
    check_gradients(inp("x", x.shape) + inp("rois", rois.shape)
                    + lay("PSROIPooling", ["x", "rois"], ["y"],
                          "psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 "
                          "group_size: 2 }"),
                    {"x": x, "rois": rois}, check_inputs=["x"])


@pytest.mark.parametrize("body,channels,msg", [
    ("spatial_scale: 1 output_dim: 2", 8, "group_size: required"),
    ("output_dim: 2 group_size: 2", 8, "spatial_scale: required"),
    ("spatial_scale: 1 output_dim: 0 group_size: 2", 8, "output_dim must be > 0"),
    ("spatial_scale: 1 output_dim: 2 group_size: 2", 9, "input channel number"),
])
def test_psroi_pooling_refusals(body, channels, msg):
    text = (inp("x", (1, channels, 4, 4)) + inp("rois", (1, 5))
            + lay("PSROIPooling", ["x", "rois"], ["y"], f"psroi_pooling_param {{ {body} }}"))
    with pytest.raises(DecaffeError, match=msg):
        decaffe.Net(text, decaffe.TEST)


# ------------------------------------------------------------------------------------------
# SmoothL1Loss
# ------------------------------------------------------------------------------------------
def smooth_l1_ref(a, b, sigma, inside=None, outside=None):
    s2 = sigma * sigma
    d = a - b
    if inside is not None:
        d = d * inside
    e = np.where(np.abs(d) < 1 / s2, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2)
    if outside is not None:
        e = e * outside
    g = np.where(np.abs(d) < 1 / s2, s2 * d, np.sign(d))
    if inside is not None:
        g = g * inside * outside
    return e.sum() / a.shape[0], g / a.shape[0]


@pytest.mark.parametrize("sigma", [1.0, 3.0, 0.5])
def test_smooth_l1_four_bottoms_and_sigma(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    shape = (4, 8, 1, 1)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    w_in = (rng.random(shape) > 0.4).astype(np.float64)
    w_out = rng.random(shape) * 2
    text = ("force_backward: true\n" + "".join(inp(k, shape) for k in "abio")
            + lay("SmoothL1Loss", list("abio"), ["loss"],
                  f"loss_weight: 2 smooth_l1_loss_param {{ sigma: {sigma} }}"))
    net = decaffe.Net(text, decaffe.TRAIN, dtype=torch.float64)
    for k, v in zip("abio", (a, b, w_in, w_out)):
        net.blobs[k].data[...] = v
    net.forward()
    net.backward()
    loss, grad = smooth_l1_ref(a, b, sigma, w_in, w_out)
    assert net.blobs["loss"].data == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(net.blobs["a"].diff, 2 * grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net.blobs["b"].diff, -2 * grad, rtol=1e-12, atol=1e-15)
    assert not net.blobs["i"].diff.any() and not net.blobs["o"].diff.any()


def test_smooth_l1_gradient_check():
    rng = np.random.default_rng(11)
    shape = (3, 4, 2, 1)
    # keep |inside·(a−b)| away from the kink at 1/σ² = 0.25
    d = rng.choice([-1, 1], shape) * rng.uniform(0.05, 0.2, shape)
    d[0] *= 5
    b = rng.standard_normal(shape)
    a = b + d
    w_in, w_out = np.ones(shape), rng.random(shape) + 0.5
    check_gradients("".join(inp(k, shape) for k in "abio")
                    + lay("SmoothL1Loss", list("abio"), ["loss"],
                          "smooth_l1_loss_param { sigma: 2 }"),
                    {"a": a, "b": b, "i": w_in, "o": w_out}, check_inputs=["a", "b"],
                    step=1e-3)


def test_smooth_l1_three_bottoms_are_rfcns_weights_form():
    """caffe-fast-rcnn refuses three bottoms; R-FCN's own SmoothL1Loss takes the third as
    weights (tests/layers/test_fork_bvlc_variants.py checks its arithmetic)."""
    text = ("".join(inp(k, (2, 3)) for k in "abi")
            + lay("SmoothL1Loss", list("abi"), ["loss"], name="loss_bbox"))
    net = decaffe.Net(text, decaffe.TRAIN)
    assert net.blobs["loss"].data.shape == ()


def test_smooth_l1_refuses_mismatched_sizes():
    text = inp("a", (2, 3)) + inp("b", (2, 4)) + lay("SmoothL1Loss", ["a", "b"], ["loss"])
    with pytest.raises(DecaffeError, match="same size"):
        decaffe.Net(text, decaffe.TRAIN)


# ------------------------------------------------------------------------------------------
# Proposal
# ------------------------------------------------------------------------------------------
PROPOSAL = ("proposal_param { feat_stride: 16 base_size: 16 min_size: 16 ratio: 0.5 ratio: 1 "
            "ratio: 2 scale: 8 scale: 16 pre_nms_topn: 60 post_nms_topn: 12 "
            "nms_thresh: 0.7 }")


def _proposal_inputs(seed, n=1):
    rng = np.random.default_rng(seed)
    return {"score": rng.random((n, 12, 6, 6)).astype(np.float32),
            "delta": (rng.standard_normal((n, 24, 6, 6)) * 0.15).astype(np.float32),
            "im_info": np.array([[93, 91, 1]] * n, np.float32)}


def _proposal_net(n, tops=("rois", "scores")):
    return (inp("score", (n, 12, 6, 6)) + inp("delta", (n, 24, 6, 6)) + inp("im_info", (n, 3))
            + lay("Proposal", ["score", "delta", "im_info"], list(tops), PROPOSAL))


def test_proposal_properties_on_unseen_inputs():
    ins = _proposal_inputs(5)
    net = forward(_proposal_net(1), ins)
    rois, scores = net.blobs["rois"].data, net.blobs["scores"].data
    assert rois.shape[1] == 5 and 0 < rois.shape[0] <= 12 and scores.shape == (rois.shape[0],)
    assert (rois[:, 0] == 0).all()
    assert (np.diff(scores) <= 0).all(), "sorted by score"
    assert (rois[:, 1] >= 0).all() and (rois[:, 3] <= 90).all() and (rois[:, 4] <= 92).all()
    w = rois[:, 3] - rois[:, 1] + 1
    h = rois[:, 4] - rois[:, 2] + 1
    assert ((w >= 16) & (h >= 16) | (scores == 0)).all(), "small boxes score 0"
    # NMS: no two kept boxes overlap more than nms_thresh
    for i in range(len(rois)):
        for j in range(i + 1, len(rois)):
            a, b = rois[i, 1:], rois[j, 1:]
            iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
            ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
            inter = iw * ih
            union = ((a[2] - a[0] + 1) * (a[3] - a[1] + 1)
                     + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter)
            assert inter / union <= 0.7 + 1e-6
    # each kept score is the foreground score of some cell/anchor
    fg = ins["score"][0, 6:].ravel()
    assert all(np.isclose(fg, s).any() for s in scores if s > 0)


def test_proposal_batch_stacks_images_with_their_index():
    one = [_proposal_inputs(s) for s in (8, 9)]
    both = {k: np.concatenate([o[k] for o in one]) for k in one[0]}
    net = forward(_proposal_net(2), both)
    singles = [forward(_proposal_net(1), o) for o in one]
    want = np.concatenate([s.blobs["rois"].data for s in singles])
    want[len(singles[0].blobs["rois"].data):, 0] = 1
    np.testing.assert_array_equal(net.blobs["rois"].data, want)


def test_proposal_refusals():
    bad = (inp("score", (1, 10, 6, 6)) + inp("delta", (1, 24, 6, 6)) + inp("im_info", (1, 3))
           + lay("Proposal", ["score", "delta", "im_info"], ["rois"], PROPOSAL, name="rpn"))
    with pytest.raises(DecaffeError, match="for 6 anchors") as e:
        decaffe.Net(bad, decaffe.TEST)
    assert "rpn" in str(e.value)
    noratio = PROPOSAL.replace("ratio: 0.5 ratio: 1 ratio: 2 ", "")
    with pytest.raises(DecaffeError, match="ratio"):
        decaffe.Net(_proposal_net(1).replace(PROPOSAL, noratio), decaffe.TEST)

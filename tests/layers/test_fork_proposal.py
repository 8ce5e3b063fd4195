"""Proposal as the Faster R-CNN / PVANet models were trained (sanghoon/pva-faster-rcnn's C++
layer = py-faster-rcnn's ProposalLayer): anchors against py-faster-rcnn's generate_anchors,
whole forwards against py-faster-rcnn's proposal arithmetic on unseen inputs, the fork's
partial quicksort and NMS against loop references written from its C++ (sort_box,
nms_cpu), and im_info's scales."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from prototxt_text import inp, lay

import decaffe
from decaffe.errors import DecaffeError
from decaffe.layers.forks.rcnn import _generate_anchors, _greedy_nms, _sort_box_order

FRCNN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "core",
                     "foreign_modules", "py-faster-rcnn")


@pytest.fixture(scope="module")
def pyfrcnn():
    """py-faster-rcnn's generate_anchors / bbox_transform / nms (the tests' re-implementation)."""
    sys.path.insert(0, FRCNN)
    try:
        from fast_rcnn import bbox_transform
        from rpn import generate_anchors, params
        yield generate_anchors.generate_anchors, bbox_transform, params.shifted_anchors
    finally:
        sys.path.remove(FRCNN)
        for m in [m for m in sys.modules if m.split(".")[0] in ("fast_rcnn", "rpn")]:
            del sys.modules[m]


ANCHOR_SETS = [((0.5, 1, 2), (8, 16, 32), 16), ((0.333, 0.5, 0.667, 1, 1.5, 2, 3),
                                                 (2, 3, 5, 9, 16, 32), 16),
               ((0.5, 1, 2), (4, 8, 16, 32), 16), ((1,), (2, 4), 8)]


@pytest.mark.parametrize("ratios,scales,base", ANCHOR_SETS)
def test_anchors_are_py_faster_rcnns(pyfrcnn, ratios, scales, base):
    gen = pyfrcnn[0]
    want = gen(base_size=base, ratios=np.array(ratios), scales=np.array(scales, np.float64))
    got = _generate_anchors(base, ratios, scales, np.float32)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    if (ratios, scales) == ((0.5, 1, 2), (8, 16, 32)):
        sizes = got[:, 2:] - got[:, :2] + 1
        np.testing.assert_array_equal(sizes[3:6], [[128, 128], [256, 256], [512, 512]])
        assert list(got[3]) == [-56, -56, 71, 71]  # ratio 1, scale 8 around (7.5, 7.5)


def _net(a, h, w, info_len, tops, param):
    return (inp("score", (1, 2 * a, h, w)) + inp("delta", (1, 4 * a, h, w))
            + inp("im_info", (1, info_len))
            + lay("Proposal", ["score", "delta", "im_info"], list(tops), param, name="rpn"))


def _param(ratios, scales, pre, post, nms, min_size=16):
    p = " ".join([f"ratio: {r}" for r in ratios] + [f"scale: {s}" for s in scales])
    return (f"proposal_param {{ feat_stride: 16 base_size: 16 min_size: {min_size} {p} "
            f"pre_nms_topn: {pre} post_nms_topn: {post} nms_thresh: {nms} }}")


@pytest.mark.parametrize("seed,ratios,scales,hw,info,pre,post,nms", [
    (11, (0.5, 1, 2), (8, 16, 32), (7, 9), (112, 144, 1.25), 150, 20, 0.7),
    (12, (0.5, 1, 2), (8, 16, 32), (12, 8), (190, 125, 0.6), 400, 300, 0.7),
    (13, (0.333, 0.5, 0.667, 1, 1.5, 2, 3), (2, 3, 5, 9, 16, 32), (6, 7),
     (96, 112, 0.5, 0.5, 0.5, 0.5), 500, 60, 0.5),
])
def test_proposal_is_py_faster_rcnns_proposal_layer(pyfrcnn, seed, ratios, scales, hw, info,
                                                    pre, post, nms):
    """Unseen inputs with distinct scores and at least pre_nms_topn boxes of min_size (where
    py-faster-rcnn and the C++ layer see the same candidates): identical rois and scores."""
    gen, bt, shifted = pyfrcnn
    anchors = gen(base_size=16, ratios=np.array(ratios), scales=np.array(scales, np.float64))
    a, (h, w) = anchors.shape[0], hw
    rng = np.random.default_rng(seed)
    fg = ((rng.permutation(a * h * w) + 0.5) / (a * h * w)).astype(np.float32)
    score = np.concatenate([1 - fg.reshape(1, 1, a, h, w), fg.reshape(1, 1, a, h, w)], 1)
    score = score.reshape(1, 2 * a, h, w).astype(np.float32)
    delta = (rng.standard_normal((1, 4 * a, h, w)) * 0.2).astype(np.float32)
    im_info = np.array([info], np.float32)
    boxes = bt.clip_boxes(bt.bbox_transform_inv(shifted(anchors, 16, h, w),
                                                delta.transpose(0, 2, 3, 1).reshape(-1, 4)),
                          im_info[0, :2])
    f = score[:, a:].transpose(0, 2, 3, 1).reshape(-1)
    ms = 16 * im_info[0, 2]
    big = (boxes[:, 2] - boxes[:, 0] + 1 >= ms) & (boxes[:, 3] - boxes[:, 1] + 1 >= ms)
    keep = np.where(big)[0]
    assert keep.size >= pre
    boxes, f = boxes[keep], f[keep]
    order = f.argsort()[::-1][:pre]
    boxes, f = boxes[order], f[order]
    kept = bt.nms(np.hstack([boxes, f[:, None]]), nms)[:post]
    net = decaffe.Net(_net(a, h, w, len(info), ("rois", "scores"),
                           _param(ratios, scales, pre, post, nms)), decaffe.TEST)
    for k, v in (("score", score), ("delta", delta), ("im_info", im_info)):
        net.blobs[k].data[...] = v
    net.forward()
    np.testing.assert_allclose(net.blobs["rois"].data[:, 1:], boxes[kept], rtol=1e-5, atol=1e-4)
    assert (net.blobs["rois"].data[:, 0] == 0).all()
    np.testing.assert_array_equal(net.blobs["scores"].data, f[kept])


def test_min_size_scales_by_im_info_height_and_width_scales():
    """min_size·im_info[2] bounds the height, min_size·im_info[3] the width (with three
    values im_info[2] bounds both); smaller boxes score 0."""
    # one anchor (ratio 1, scale 2: a 32 px square around 7.5), one cell, zero deltas: the
    # decoded box [-8, 24] is clipped to [0, 24], 25 px a side
    param = _param((1,), (2,), 10, 10, 0.7, min_size=20)
    ins = {"score": np.array([0.1, 0.9], np.float32).reshape(1, 2, 1, 1),
           "delta": np.zeros((1, 4, 1, 1), np.float32)}

    def run(info):
        net = decaffe.Net(_net(1, 1, 1, len(info), ("rois", "scores"), param), decaffe.TEST)
        for k, v in {**ins, "im_info": np.array([info], np.float32)}.items():
            net.blobs[k].data[...] = v
        net.forward()
        return net.blobs["rois"].data.copy(), float(net.blobs["scores"].data[0])

    rois, s = run((100, 100, 1.2))  # 25 >= 20 x 1.2
    np.testing.assert_array_equal(rois, [[0, 0, 0, 24, 24]])
    assert s == pytest.approx(0.9)
    assert run((100, 100, 1.3))[1] == 0  # 25 < 26 on both sides
    assert run((100, 100, 1.0, 1.3))[1] == 0  # width bound by im_info[3]
    assert run((100, 100, 1.3, 1.0))[1] == 0  # height bound by im_info[2]
    assert run((100, 100, 1.0, 1.0, 9.0, 9.0))[1] == pytest.approx(0.9)


def test_im_info_without_a_scale_and_zero_post_nms_topn_are_refused():
    text = _net(9, 2, 2, 2, ("rois",), _param((0.5, 1, 2), (8, 16, 32), 10, 5, 0.7))
    with pytest.raises(DecaffeError, match="im_info") as e:
        decaffe.Net(text, decaffe.TEST)
    assert "rpn" in str(e.value)
    text = _net(9, 2, 2, 3, ("rois",), _param((0.5, 1, 2), (8, 16, 32), 10, 0, 0.7))
    with pytest.raises(DecaffeError, match="post_nms_topn"):
        decaffe.Net(text, decaffe.TEST)


def _sort_box_reference(p, start, end, num_top):
    """The fork's sort_box, line by line (rows [score, index])."""
    pivot = p[start, 0]
    left, right = start + 1, end
    while left <= right:
        while left <= end and p[left, 0] >= pivot:
            left += 1
        while right > start and p[right, 0] <= pivot:
            right -= 1
        if left <= right:
            p[[left, right]] = p[[right, left]]
            left += 1
            right -= 1
    if right > start:
        p[[start, right]] = p[[right, start]]
    if start < right - 1:
        _sort_box_reference(p, start, right - 1, num_top)
    if right + 1 < num_top and right + 1 < end:
        _sort_box_reference(p, right + 1, end, num_top)


def _scores(kind, rng, n):
    if kind == "distinct":
        return rng.random(n)
    if kind == "ties":
        return rng.integers(0, 4, n).astype(float)
    if kind == "descending":
        return np.sort(rng.integers(0, 6, n))[::-1].astype(float)
    if kind == "ascending":
        return np.sort(rng.integers(0, 6, n)).astype(float)
    return np.where(rng.random(n) < 0.7, 0.0, rng.random(n))  # RPN's zeroed small boxes


@pytest.mark.parametrize("seed,kind", list(enumerate(["distinct", "ties", "descending",
                                                       "ascending", "zeros"])))
def test_sort_box_order_is_the_forks_quicksort(seed, kind):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        n = int(rng.integers(1, 80))
        v = _scores(kind, rng, n)
        top = int(rng.integers(1, n + 3))
        ref = np.stack([v, np.arange(n)], 1)
        _sort_box_reference(ref, 0, n - 1, top)
        got = _sort_box_order(torch.tensor(v, dtype=torch.float32), top)
        np.testing.assert_array_equal(got.numpy(), ref[:, 1].astype(np.int64))


def _nms_reference(b, thresh, max_out):
    """The fork's nms_cpu with its iou(), float32."""
    one, zero = np.float32(1), np.float32(0)

    def iou(p, q):
        if p[0] > q[2] or p[1] > q[3] or p[2] < q[0] or p[3] < q[1]:
            return zero
        w = max(zero, min(p[2], q[2]) - max(p[0], q[0]) + one)
        h = max(zero, min(p[3], q[3]) - max(p[1], q[1]) + one)
        inter = w * h
        return inter / ((p[2] - p[0] + one) * (p[3] - p[1] + one)
                        + (q[2] - q[0] + one) * (q[3] - q[1] + one) - inter)

    dead, keep = np.zeros(len(b), bool), []
    for i in range(len(b)):
        if dead[i]:
            continue
        keep.append(i)
        if len(keep) == max_out:
            break
        for j in range(i + 1, len(b)):
            if not dead[j] and iou(b[i], b[j]) > thresh:
                dead[j] = True
    return keep


@pytest.mark.parametrize("block", [5, 64, 256])
def test_nms_is_the_forks_greedy_nms(block):
    rng = np.random.default_rng(block)
    for _ in range(25):
        n = int(rng.integers(1, 400))
        xy = rng.random((n, 2)) * 60
        b = np.concatenate([xy, xy + rng.random((n, 2)) * 30], 1).astype(np.float32)
        b[rng.random(n) < 0.1] = b[0]  # exact duplicates and touching boxes
        thresh = np.float32(rng.choice([0.3, 0.5, 0.7]))
        max_out = int(rng.integers(1, 200))
        got = _greedy_nms(torch.tensor(b), torch.tensor(thresh), max_out, block=block)
        assert got.tolist() == _nms_reference(b, thresh, max_out)

"""The tests' re-implementations of the corpus repositories' Python layers
(tests/core/foreign_modules: py-faster-rcnn's rpn and fast_rcnn, py-RFCN-priv's proposal target
layer, ENet's spatial dropout), checked against values worked out by hand from the originals'
definitions, through decaffe's Python layer support."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from netbuild import input_layer as _input

import caffe

FOREIGN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "foreign_modules")


def _on_path(monkeypatch, *names):
    for name in reversed(names):
        monkeypatch.syspath_prepend(os.path.join(FOREIGN_DIR, name))


@pytest.fixture
def frcnn(monkeypatch):
    """py-faster-rcnn's lib/ on sys.path; its modules leave sys.modules afterwards."""
    _on_path(monkeypatch, "py-faster-rcnn")
    np.random.seed(0)
    yield
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(FOREIGN_DIR + os.sep):
            del sys.modules[name]


@pytest.fixture
def cfg(frcnn):
    """py-faster-rcnn's cfg; values a test changes are put back."""
    from fast_rcnn.config import cfg
    saved = {k: dict(v) for k, v in cfg.items() if isinstance(v, dict)}
    yield cfg
    for k, v in saved.items():
        cfg[k].clear()
        cfg[k].update(v)


def _python(module, cls, bottoms, tops, param_str):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return (f'layer {{ name: "py" type: "Python" {b} {t} python_param {{ module: "{module}" '
            f'layer: "{cls}" param_str: "{param_str}" }} }}\n')


def _net(inputs: dict, module, cls, tops, param_str, phase=caffe.TEST):
    text = "".join(_input(n, v.shape) for n, v in inputs.items())
    net = caffe.Net(text + _python(module, cls, list(inputs), tops, param_str), phase)
    for n, v in inputs.items():
        net.blobs[n].data[...] = v
    net.forward()
    return net


# ----------------------------------------------------------------------------------------------
# anchors and boxes
# ----------------------------------------------------------------------------------------------
def test_generate_anchors_gives_py_faster_rcnns_nine(frcnn):
    from rpn.generate_anchors import generate_anchors
    want = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
            [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
            [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]
    np.testing.assert_array_equal(generate_anchors(), want)
    np.testing.assert_array_equal(generate_anchors(16, [0.5, 1, 2], np.array([8, 16, 32])), want)
    # PVANet's 7 ratios x 6 scales: ratio-major, square anchors of side 16 * scale at ratio 1
    a = generate_anchors(16, [0.333, 0.5, 0.667, 1, 1.5, 2, 3], np.array([2, 3, 5, 9, 16, 32]))
    assert a.shape == (42, 4)
    np.testing.assert_array_equal(a[18], [-8, -8, 23, 23])  # ratio 1, scale 2: 32 pixels


def test_bbox_transform_and_its_inverse(frcnn):
    from fast_rcnn.bbox_transform import bbox_transform, bbox_transform_inv, clip_boxes
    ex = np.array([[0.0, 0, 9, 19]])  # 10 x 20, centre (5, 10)
    gt = np.array([[5.0, 0, 24, 9]])  # 20 x 10, centre (15, 5)
    np.testing.assert_allclose(bbox_transform(ex, gt), [[1.0, -0.25, np.log(2), np.log(0.5)]])
    # the inverse's half extents carry no -1: x2, y2 come back one pixel further
    back = bbox_transform_inv(ex, bbox_transform(ex, gt))
    np.testing.assert_allclose(back, [[5, 0, 25, 10]], atol=1e-12)
    np.testing.assert_array_equal(clip_boxes(np.array([[-3.0, 2, 40, 50]]), (30, 20)),
                                  [[0, 2, 19, 29]])


def test_bbox_overlaps_counts_inclusive_pixels(frcnn):
    from fast_rcnn.bbox_transform import bbox_overlaps
    boxes = np.array([[0.0, 0, 9, 9], [20, 20, 29, 29]])
    query = np.array([[5.0, 0, 14, 9], [9, 9, 9, 9]])
    # 50 of 150 pixels; the 1-pixel box inside the first; nothing shared with the second
    np.testing.assert_allclose(bbox_overlaps(boxes, query), [[50 / 150, 1 / 100], [0, 0]])


def test_nms_keeps_the_best_and_drops_overlaps_above_thresh(frcnn):
    from fast_rcnn.bbox_transform import nms
    dets = np.array([[0, 0, 16, 15, 0.2], [2, 0, 18, 15, 0.9], [40, 0, 56, 15, 0.5],
                     [4, 0, 20, 15, 0.4]])
    # box 0 and box 3 overlap box 1 with IoU 240/304 = 0.79
    assert nms(dets, 0.7) == [1, 2]
    assert nms(dets, 0.8) == [1, 2, 3, 0]


# ----------------------------------------------------------------------------------------------
# ProposalLayer
# ----------------------------------------------------------------------------------------------
def _proposal_inputs(stride_cells, scores, dw=None):
    """One 16-pixel anchor (scales [1], ratios [1]) at 3 cells of a 1 x 3 map."""
    a = np.array(scores, dtype=np.float32).reshape(1, 1, 1, 3)
    deltas = np.zeros((1, 4, 1, 3), np.float32)
    if dw is not None:
        deltas[0, 2, 0, :] = dw
    return {"rpn_cls_prob_reshape": np.concatenate([1 - a, a], axis=1),
            "rpn_bbox_pred": deltas,
            "im_info": np.array([[16, 48, 1]], np.float32)}


PROPOSAL = "{'feat_stride': %d, 'scales': [1], 'ratios': [1]}"


def test_proposal_layer_decodes_clips_and_sorts(frcnn):
    net = _net(_proposal_inputs(16, [0.2, 0.9, 0.5]), "rpn.proposal_layer", "ProposalLayer",
               ["rois", "scores"], PROPOSAL % 16)
    # anchors [0,0,15,15] + (0|16|32, 0); zero deltas put x2, y2 one pixel out, then clipping
    # to the 48 x 16 image brings y2 and the last x2 back
    np.testing.assert_array_equal(net.blobs["rois"].data, [[0, 16, 0, 32, 15], [0, 32, 0, 47, 15],
                                                           [0, 0, 0, 16, 15]])
    np.testing.assert_allclose(net.blobs["scores"].data.ravel(), [0.9, 0.5, 0.2], rtol=1e-6)


def test_proposal_layer_nms(frcnn):
    net = _net(_proposal_inputs(2, [0.2, 0.9, 0.5]), "rpn.proposal_layer", "ProposalLayer",
               ["rois"], PROPOSAL % 2)
    # 2-pixel strides: the neighbours overlap the best box with IoU 0.79 > RPN_NMS_THRESH 0.7
    np.testing.assert_array_equal(net.blobs["rois"].data, [[0, 2, 0, 18, 15]])


@pytest.mark.parametrize("phase,kept", [(caffe.TEST, 3), (caffe.TRAIN, 2)])
def test_proposal_layer_min_size_follows_the_phase(cfg, phase, kept):
    cfg.TRAIN.RPN_MIN_SIZE = 17  # TEST keeps 16: the clipped 16-pixel box goes in TRAIN only
    inputs = _proposal_inputs(16, [0.2, 0.9, 0.5])
    inputs["im_info"][0, 0] = 20  # boxes 17 pixels high, widths 17, 17 and (clipped) 16
    net = _net(inputs, "rpn.proposal_layer", "ProposalLayer", ["rois"], PROPOSAL % 16,
               phase=phase)
    assert net.blobs["rois"].data.shape == (kept, 5)


def test_proposal_layer_min_size_is_at_image_scale(frcnn):
    inputs = _proposal_inputs(16, [0.2, 0.9, 0.5], dw=[0, np.log(0.5), 0])
    net = _net(inputs, "rpn.proposal_layer", "ProposalLayer", ["rois"], PROPOSAL % 16)
    # the middle box is 8 pixels wide: under RPN_MIN_SIZE 16 * scale 1
    np.testing.assert_array_equal(net.blobs["rois"].data[:, 1], [32, 0])
    inputs["im_info"][0, 2] = 0.5  # at half scale 8 pixels are enough
    net = _net(inputs, "rpn.proposal_layer", "ProposalLayer", ["rois"], PROPOSAL % 16)
    assert net.blobs["rois"].data.shape == (3, 5)


def test_proposal_layer_post_nms_top_n(cfg):
    cfg.TEST.RPN_POST_NMS_TOP_N = 2
    net = _net(_proposal_inputs(16, [0.2, 0.9, 0.5]), "rpn.proposal_layer", "ProposalLayer",
               ["rois"], PROPOSAL % 16)
    np.testing.assert_array_equal(net.blobs["rois"].data[:, 1], [16, 32])


# ----------------------------------------------------------------------------------------------
# AnchorTargetLayer and ProposalTargetLayer
# ----------------------------------------------------------------------------------------------
GT = np.array([[40, 50, 150, 170, 3], [120, 20, 230, 120, 5]], np.float32)


def _anchor_targets(batch):
    inputs = {"rpn_cls_score": np.zeros((1, 18, 32, 32), np.float32), "gt_boxes": GT,
              "im_info": np.array([[512, 512, 1]], np.float32),
              "data": np.zeros((1, 3, 512, 512), np.float32)}
    return _net(inputs, "rpn.anchor_target_layer", "AnchorTargetLayer",
                ["labels", "targets", "inside", "outside"], "{'feat_stride': 16}", caffe.TRAIN)


@pytest.mark.parametrize("batch", [256, 32])
def test_anchor_target_labels_respect_the_rpn_batch(cfg, batch):
    cfg.TRAIN.RPN_BATCHSIZE = batch
    net = _anchor_targets(batch)
    labels = net.blobs["labels"].data
    assert labels.shape == (1, 1, 9 * 32, 32)
    fg, bg = int((labels == 1).sum()), int((labels == 0).sum())
    assert 1 <= fg <= batch // 2 and fg + bg == batch  # plenty of negatives: a full batch
    per_anchor = labels.reshape(9, 32, 32)
    inside = net.blobs["inside"].data.reshape(9, 4, 32, 32)
    outside = net.blobs["outside"].data.reshape(9, 4, 32, 32)
    np.testing.assert_array_equal(inside, np.repeat((per_anchor == 1)[:, None], 4, axis=1))
    np.testing.assert_allclose(outside, np.repeat((per_anchor >= 0)[:, None], 4, axis=1)
                               / batch, rtol=1e-6)
    # the largest anchors (scale 32) never fit a 512-pixel image: never labelled
    assert np.all(per_anchor[2::3] == -1)


def test_anchor_target_regresses_to_the_best_gt_box(cfg):
    from fast_rcnn.bbox_transform import bbox_overlaps, bbox_transform
    from rpn.generate_anchors import generate_anchors
    net = _anchor_targets(256)
    labels = net.blobs["labels"].data.reshape(9, 32, 32)
    targets = net.blobs["targets"].data.reshape(9, 4, 32, 32)
    a, y, x = np.argwhere(labels == 1)[0]
    anchor = generate_anchors()[a] + [16 * x, 16 * y, 16 * x, 16 * y]
    best = GT[bbox_overlaps(anchor[None], GT).argmax(), :4]
    np.testing.assert_allclose(targets[a, :, y, x], bbox_transform(anchor[None], best[None])[0],
                               rtol=1e-5)


def _candidate_rois(n=300, seed=3):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(20, 120, (n, 2))
    return np.hstack([np.zeros((n, 1)), xy, xy + wh]).astype(np.float32)


@pytest.mark.parametrize("batch,fraction", [(128, 0.25), (16, 0.5)])
def test_proposal_target_samples_batch_size_with_fg_fraction(cfg, batch, fraction):
    from fast_rcnn.bbox_transform import bbox_overlaps
    cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.FG_FRACTION = batch, fraction
    rois = _candidate_rois()
    net = _net({"rpn_rois": rois, "gt_boxes": GT}, "rpn.proposal_target_layer",
               "ProposalTargetLayer", ["rois", "labels", "targets", "inside", "outside"],
               "{'num_classes': 6}", caffe.TRAIN)
    out, labels = net.blobs["rois"].data, net.blobs["labels"].data
    ov = bbox_overlaps(np.vstack([rois, np.hstack([np.zeros((2, 1)), GT[:, :4]])])[:, 1:],
                       GT).max(1)
    n_fg = int(min(round(fraction * batch), (ov >= 0.5).sum()))
    n_bg = int(min(batch - n_fg, ((ov < 0.5) & (ov >= 0.1)).sum()))
    assert labels.shape == (n_fg + n_bg,) and out.shape == (n_fg + n_bg, 5)
    assert set(labels[:n_fg]) <= {3, 5} and np.all(labels[n_fg:] == 0)
    got = bbox_overlaps(out[:, 1:], GT).max(1)
    assert np.all(got[:n_fg] >= 0.5) and np.all((got[n_fg:] < 0.5) & (got[n_fg:] >= 0.1))
    targets, inside = net.blobs["targets"].data, net.blobs["inside"].data
    assert targets.shape == (n_fg + n_bg, 24)
    for i, c in enumerate(labels.astype(int)):
        cols = np.zeros(24, bool)
        cols[4 * c: 4 * c + 4] = c > 0
        np.testing.assert_array_equal(inside[i] > 0, cols)
        assert np.all(targets[i][~cols] == 0)
    np.testing.assert_array_equal(net.blobs["outside"].data, inside > 0)


def test_proposal_target_normalizes_precomputed_targets(cfg):
    cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED = True
    gt = GT[:1]
    roi = np.array([[0, 40, 50, 150, 170]], np.float32)  # the gt box itself, shifted 11 px
    roi[0, 1] += 11
    net = _net({"rpn_rois": roi, "gt_boxes": gt}, "rpn.proposal_target_layer",
               "ProposalTargetLayer", ["rois", "labels", "targets", "inside", "outside"],
               "{'num_classes': 4}", caffe.TRAIN)
    labels, targets = net.blobs["labels"].data, net.blobs["targets"].data
    i = int(np.argwhere(net.blobs["rois"].data[:, 1] == 51)[0, 0])
    assert labels[i] == 3
    # 100 x 121 box to 111 x 121: dx = (95.5 - 101) / 100, dw = log(1.11); / stds 0.1, 0.2
    np.testing.assert_allclose(targets[i, 12:16], [-0.055 / 0.1, 0, np.log(1.11) / 0.2, 0],
                               rtol=1e-5, atol=1e-6)


def test_py_rfcn_priv_proposal_target_has_four_axis_tops(monkeypatch, frcnn):
    _on_path(monkeypatch, "py-RFCN-priv", "py-faster-rcnn")
    for name in [n for n in sys.modules if n.split(".")[0] in ("rpn", "fast_rcnn")]:
        del sys.modules[name]
    net = _net({"rpn_rois": _candidate_rois(), "gt_boxes": GT[:, :, None, None]},
               "rpn.proposal_target_layer", "ProposalTargetLayer",
               ["rois", "labels", "targets", "inside", "outside"], "{'num_classes': 6}",
               caffe.TRAIN)
    n = net.blobs["rois"].data.shape[0]
    assert 0 < n <= 128
    assert net.blobs["rois"].data.shape == (n, 5, 1, 1)
    assert net.blobs["labels"].data.shape == (n, 1, 1, 1)
    for t in ("targets", "inside", "outside"):
        assert net.blobs[t].data.shape == (n, 24, 1, 1)
    from fast_rcnn.config import cfg
    assert cfg.TRAIN.RPN_MIN_SIZE == 8 and cfg.TEST.RPN_MIN_SIZE == 8  # py-RFCN-priv's


# ----------------------------------------------------------------------------------------------
# ENet's spatial dropout
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def enet(monkeypatch):
    _on_path(monkeypatch, "ENet")
    np.random.seed(1)
    yield
    sys.modules.pop("spatial_dropout", None)


def _dropout(mode, p, x):
    text = _input("x", x.shape) + _python("spatial_dropout", "SpatialDropoutLayer", ["x"],
                                          ["y"], f"{{'phase': '{mode}', 'p': '{p}'}}")
    net = caffe.Net("force_backward: true\n" + text, caffe.TRAIN)
    net.blobs["x"].data[...] = x
    net.forward()
    return net


def test_spatial_dropout_drops_whole_channels_in_train(enet):
    x = np.random.default_rng(0).uniform(1, 2, (3, 40, 4, 5)).astype(np.float32)
    net = _dropout("TRAIN", 0.25, x)
    y = net.blobs["y"].data
    ratio = y / x
    kept = ratio[:, :, 0, 0]
    assert np.all(np.isclose(ratio, kept[:, :, None, None], rtol=1e-6))
    assert np.all(np.isclose(kept, 0) | np.isclose(kept, 1 / 0.75, rtol=1e-6))
    assert 0.1 < (kept == 0).mean() < 0.45  # p = 0.25 of 120 channels
    d = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    net.blobs["y"].diff[...] = d
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, d * kept[:, :, None, None], rtol=1e-6)


def test_spatial_dropout_test_mode_scales_as_the_original(enet):
    # ENet's layer multiplies by 1 / (1 - p) in TEST too (it does not pass x through)
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    net = _dropout("TEST", 0.1, x)
    np.testing.assert_allclose(net.blobs["y"].data, x / 0.9, rtol=1e-6)
    d = np.ones_like(x)
    net.blobs["y"].diff[...] = d
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, d / 0.9, rtol=1e-6)


@pytest.mark.parametrize("p", ["0", "1.0", "1.5"])
def test_spatial_dropout_refuses_p_outside_0_1(enet, p):
    with pytest.raises(Exception, match="p need to be between 0 and 1"):
        _dropout("TRAIN", p, np.ones((1, 2, 2, 2), np.float32))


def test_pva_proposal_layer2_proposes_then_samples_targets(cfg):
    cfg.TRAIN.RPN_MIN_SIZE = 1
    inputs = _proposal_inputs(16, [0.2, 0.9, 0.5])
    gt = np.array([[16, 0, 31, 15, 2]], np.float32)  # the middle anchor, class 2
    inputs["gt_boxes"] = gt
    net = _net(inputs, "rpn.proposal_layer", "ProposalLayer2",
               ["rois", "labels", "targets", "inside", "outside"],
               PROPOSAL[:-1] % 16 + ", 'num_classes': 3}", caffe.TRAIN)
    rois, labels = net.blobs["rois"].data, net.blobs["labels"].data
    # candidates: the 3 proposals and the gt box; IoU >= 0.5 with it: the gt box and the
    # middle proposal [16, 0, 32, 15] (256 / 272); the others touch it by at most 1 column
    fg = rois[labels == 2]
    assert sorted(map(tuple, fg[:, 1:].tolist())) == [(16, 0, 31, 15), (16, 0, 32, 15)]
    assert net.blobs["targets"].data.shape == (len(labels), 12)
    assert np.all(net.blobs["inside"].data[labels == 2][:, 8:] == 1)

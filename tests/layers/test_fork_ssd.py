"""The SSD fork's layers (decaffe.layers.forks.ssd): values computed independently from the
fork's definitions, MultiBoxLoss's finite-difference gradients, and the fork's refusals. The
fork's golden cases and the other layers' finite-difference checks are tests/layer_db.py's
samples, run by tests/layers/test_layer_table.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import check_gradients
from netbuild import input_layer as inp
from netbuild import layer as lay

import caffe
import decaffe
from decaffe import bbox as B
from decaffe.errors import DecaffeError

TRAIN, TEST = decaffe.TRAIN, decaffe.TEST


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def run(text: str, inputs: dict, phase=TRAIN, params=None):
    net = decaffe.Net(text, phase)
    for k, v in inputs.items():
        net.blobs[k].reshape(*np.shape(v))
    net.reshape()
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    for lname, arrs in (params or {}).items():
        for i, a in enumerate(arrs):
            net.params[lname][i].data[...] = a
    net.forward()
    return net


# ------------------------------------------------------------------------------------------
# PriorBox
# ------------------------------------------------------------------------------------------
def priorbox(param: str, feat=(1, 1, 1, 1), img=(1, 3, 100, 100)):
    text = inp("feat", feat) + inp("img", img) + lay(
        "pb", "PriorBox", ["feat", "img"], ["y"], f"prior_box_param {{ {param} }}")
    return run(text, {}).blobs["y"].data


def test_priorbox_boxes_by_hand():
    y = priorbox("min_size: 30 max_size: 60 aspect_ratio: 2 flip: true "
                 "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2")
    boxes, var = y[0, 0].reshape(-1, 4), y[0, 1].reshape(-1, 4)
    big, w2 = math.sqrt(30 * 60), 30 * math.sqrt(2)
    want = [(30, 30), (big, big), (w2, 30 / math.sqrt(2)), (30 / math.sqrt(2), w2)]
    expect = [[(50 - w / 2) / 100, (50 - h / 2) / 100, (50 + w / 2) / 100, (50 + h / 2) / 100]
              for w, h in want]
    np.testing.assert_allclose(boxes, expect, rtol=1e-5)
    np.testing.assert_allclose(var, [[0.1, 0.1, 0.2, 0.2]] * 4, rtol=1e-6)


def test_priorbox_grid_steps_offsets_and_clip():
    # 2x3 map on a 40x60 image: steps 20 both ways; offset 0; img_h/img_w override the bottom.
    y = priorbox("min_size: 20 clip: true img_h: 40 img_w: 60 offset: 0", feat=(1, 1, 2, 3),
                 img=(1, 3, 7, 7))
    boxes = y[0, 0].reshape(2, 3, 4)
    for h in range(2):
        for w in range(3):
            cx, cy = w * 20, h * 20
            want = np.clip([(cx - 10) / 60, (cy - 10) / 40, (cx + 10) / 60, (cy + 10) / 40],
                           0, 1)
            np.testing.assert_allclose(boxes[h, w], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y[0, 1], 0.1, rtol=1e-6)  # the default variance
    y2 = priorbox("min_size: 10 step_h: 8 step_w: 4", feat=(1, 1, 1, 2), img=(1, 3, 16, 16))
    b2 = y2[0, 0].reshape(-1, 4)
    np.testing.assert_allclose(b2[1], [(6 - 5) / 16, (4 - 5) / 16, (6 + 5) / 16, (4 + 5) / 16],
                               rtol=1e-6)


@pytest.mark.parametrize("param, field", [
    ("max_size: 10", "min_size"),
    ("min_size: 10 max_size: 5", "max_size"),
    ("min_size: 10 variance: 0.1 variance: 0.2", "variance"),
    ("min_size: 10 img_size: 30 img_h: 30 img_w: 30", "img_size"),
    ("min_size: 10 step: 4 step_h: 4 step_w: 4", "step"),
])
def test_priorbox_refusals(param, field):
    with pytest.raises(DecaffeError, match=field):
        priorbox(param)


# ------------------------------------------------------------------------------------------
# Permute
# ------------------------------------------------------------------------------------------
def test_permute_matches_numpy_and_fills_missing_axes():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    net = run(inp("x", x.shape) + lay("p", "Permute", ["x"], ["y"],
                                      "permute_param { order: 2 order: 0 }"), {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data, x.transpose(2, 0, 1, 3))


def test_permute_identity_order_passes_through():
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    net = run(inp("x", x.shape) + lay("p", "Permute", ["x"], ["y"],
                                      "permute_param { order: 0 order: 1 }"), {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data, x)


def test_permute_refuses_bad_orders():
    with pytest.raises(DecaffeError, match="duplicate"):
        run(inp("x", (2, 3)) + lay("p", "Permute", ["x"], ["y"],
                                    "permute_param { order: 1 order: 1 }"), {})
    with pytest.raises(DecaffeError, match="less than"):
        run(inp("x", (2, 3)) + lay("p", "Permute", ["x"], ["y"],
                                    "permute_param { order: 2 }"), {})


# ------------------------------------------------------------------------------------------
# Normalize
# ------------------------------------------------------------------------------------------
def normalize_text(extra: str, shape=(2, 3, 2, 3)) -> str:
    return inp("x", shape) + lay("n", "Normalize", ["x"], ["y"], f"norm_param {{ {extra} }}")


@pytest.mark.parametrize("across", [True, False])
def test_normalize_forward_by_definition(across):
    x = np.random.default_rng(2).normal(size=(2, 3, 2, 3)).astype(np.float32)
    s = np.array([0.5, 2.0, -1.5], np.float32)
    net = run(normalize_text(f"across_spatial: {str(across).lower()} channel_shared: false "
                             "eps: 0.01"), {"x": x}, params={"n": [s]})
    x64 = x.astype(np.float64)
    if across:
        norm = np.sqrt((x64 ** 2).sum(axis=(1, 2, 3), keepdims=True) + 0.01)
    else:
        norm = np.sqrt((x64 ** 2).sum(axis=1, keepdims=True) + 0.01)
    np.testing.assert_allclose(net.blobs["y"].data, x64 / norm * s.reshape(1, 3, 1, 1),
                               rtol=1e-5)


def test_normalize_defaults_and_blob_shapes():
    net = decaffe.Net(normalize_text(""), TRAIN)
    assert net.params["n"][0].data.shape == ()  # channel_shared by default: one scale
    assert float(net.params["n"][0].data) == 1.0  # default filler: constant 1
    net = decaffe.Net(normalize_text("channel_shared: false"), TRAIN)
    assert net.params["n"][0].data.shape == (3,)
    with pytest.raises(DecaffeError, match="axes"):
        decaffe.Net(normalize_text("", shape=(6,)), TRAIN)


def test_normalize_backward_is_the_forks_with_unequal_scales():
    """With unequal channel scales the fork scales the normalized-gradient afterwards:
    scale_c·(g − x·Σ(x·g)/norm²)/norm; decaffe reproduces that, not the true gradient."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 3, 2, 2))
    g = rng.normal(size=x.shape)
    s = np.array([0.5, 2.0, 3.0])
    net = decaffe.Net("force_backward: true\n" + normalize_text(
        "across_spatial: true channel_shared: false", shape=x.shape), TRAIN)
    net.blobs["x"].data[...] = x
    net.params["n"][0].data[...] = s
    net.forward()
    net.blobs["y"].diff[...] = g
    net.backward()
    norm = np.sqrt((x ** 2).sum() + 1e-10)
    want = (g - x * (x * g).sum() / norm ** 2) / norm * s.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(net.blobs["x"].diff, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["n"][0].diff, (x / norm * g).sum(axis=(0, 2, 3)),
                               rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------
# DetectionOutput
# ------------------------------------------------------------------------------------------
PRIORS = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.9, 0.9]],
                  np.float32)


def prior_blob(priors=PRIORS, var=(0.1, 0.1, 0.2, 0.2)):
    v = np.tile(np.asarray(var, np.float32), (len(priors), 1))
    return np.stack([priors.reshape(-1), v.reshape(-1)])[None]


def detout(loc, conf, extra, priors=PRIORS):
    prior = prior_blob(priors)
    text = (inp("loc", loc.shape) + inp("conf", conf.shape) + inp("prior", prior.shape)
            + lay("d", "DetectionOutput", ["loc", "conf", "prior"], ["y"],
                  f"detection_output_param {{ {extra} }}"))
    return run(text, {"loc": loc, "conf": conf, "prior": prior}, TEST).blobs["y"].data


def test_detection_output_nms_and_order():
    loc = np.zeros((1, 12), np.float32)  # decoded boxes = the priors
    conf = np.array([[0.1, 0.8, 0.1, 0.2, 0.7, 0.1, 0.3, 0.2, 0.5]], np.float32)
    y = detout(loc, conf, "num_classes: 3 nms_param { nms_threshold: 0.5 } "
                          "confidence_threshold: 0.15 code_type: CENTER_SIZE")
    rows = y[0, 0]
    # class 1: prior 0 (0.8) suppresses prior 1 (0.7; overlap 0.818); prior 2 (0.2) stays.
    # class 2: prior 2 (0.5) only (0.1 and 0.1 are under the threshold).
    expect = [[0, 1, 0.8, *PRIORS[0]], [0, 1, 0.2, *PRIORS[2]], [0, 2, 0.5, *PRIORS[2]]]
    np.testing.assert_allclose(rows, expect, rtol=1e-6)
    # keep_top_k keeps the best two over all classes, still ordered by class
    y = detout(loc, conf, "num_classes: 3 nms_param { nms_threshold: 0.5 } keep_top_k: 2 "
                          "confidence_threshold: 0.15 code_type: CENTER_SIZE")
    np.testing.assert_allclose(y[0, 0], [expect[0], expect[2]], rtol=1e-6)
    # top_k: 1 looks at the best candidate of each class only
    y = detout(loc, conf, "num_classes: 3 nms_param { nms_threshold: 0.5 top_k: 1 } "
                          "confidence_threshold: 0.15 code_type: CENTER_SIZE")
    np.testing.assert_allclose(y[0, 0], [expect[0], expect[2]], rtol=1e-6)


def test_detection_output_no_detection_rows_and_decoding():
    loc = np.zeros((2, 12), np.float32)
    conf = np.zeros((2, 9), np.float32)
    y = detout(loc, conf, "num_classes: 3 confidence_threshold: 0.5")
    np.testing.assert_array_equal(y[0, 0], [[0] + [-1] * 6, [1] + [-1] * 6])
    # CORNER_SIZE with variance: xmin = prior.xmin + var·loc·prior_width, ...
    loc = np.array([[1, -1, 2, 0.5] + [0] * 8], np.float32)
    conf = np.array([[0, 1, 0] + [0] * 6], np.float32)
    y = detout(loc, conf, "num_classes: 3 confidence_threshold: 0.5 code_type: CORNER_SIZE")
    p, v = PRIORS[0], np.array([0.1, 0.1, 0.2, 0.2])
    w = p[2] - p[0]
    want = [p[0] + v[0] * 1 * w, p[1] - v[1] * w, p[2] + v[2] * 2 * w, p[3] + v[3] * 0.5 * w]
    np.testing.assert_allclose(y[0, 0, 0, 3:], want, rtol=1e-5)


def test_detection_output_eta_lowers_the_threshold():
    # Boxes 1 and 2 overlap box 0 by 0.6: kept at 0.7, dropped once eta makes it 0.7·0.8
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.6, 1], [0.4, 0, 1, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert B.nms_fast(boxes, scores, 0.0, 0.7, 1.0, -1) == [0, 1, 2]
    assert B.nms_fast(boxes, scores, 0.0, 0.7, 0.8, -1) == [0]


def test_detection_output_refusals():
    loc, conf = np.zeros((1, 12), np.float32), np.zeros((1, 9), np.float32)
    with pytest.raises(DecaffeError, match="num_classes"):
        detout(loc, conf, "share_location: true")
    with pytest.raises(DecaffeError, match="confidence predictions"):
        detout(loc, conf, "num_classes: 4")
    with pytest.raises(DecaffeError, match="eta"):
        detout(loc, conf, "num_classes: 3 nms_param { eta: 0 }")


# ------------------------------------------------------------------------------------------
# MultiBoxLoss
# ------------------------------------------------------------------------------------------
def mbox_text(param: str, n=1, num_priors=3, num_classes=3, num_gt=1, loss_param="",
              loc_classes=1) -> str:
    return (inp("loc", (n, num_priors * 4 * loc_classes)) + inp("conf", (n, num_priors *
                                                                        num_classes))
            + inp("prior", (1, 2, num_priors * 4)) + inp("label", (1, 1, num_gt, 8))
            + lay("m", "MultiBoxLoss", ["loc", "conf", "prior", "label"], ["loss"],
                  f"multibox_loss_param {{ {param} }} {loss_param} "
                  "propagate_down: true propagate_down: true propagate_down: false "
                  "propagate_down: false"))


GT = np.array([[[[0, 1, 0, 0.1, 0.1, 0.31, 0.3, 0]]]], np.float32)


def test_multibox_loss_by_hand():
    """One gt matching prior 0 (bipartite) and prior 1 (overlap 0.83 ≥ 0.5); prior 2 is the
    only negative candidate and 3 × 2 positives allow it."""
    rng = np.random.default_rng(6)
    loc = rng.normal(size=(1, 12)).astype(np.float32) * 0.3
    conf = rng.normal(size=(1, 9)).astype(np.float32)
    prior = prior_blob()
    net = run(mbox_text("num_classes: 3 code_type: CENTER_SIZE"),
              {"loc": loc, "conf": conf, "prior": prior, "label": GT})
    gt = GT[0, 0, 0, 3:7]
    enc = B.encode(PRIORS[:2], np.tile([0.1, 0.1, 0.2, 0.2], (2, 1)).astype(np.float32),
                   B.CENTER_SIZE, False, np.tile(gt, (2, 1)))
    d = loc.reshape(3, 4)[:2] - enc
    a = np.abs(d)
    loc_loss = np.where(a < 1, 0.5 * d * d, a - 0.5).sum()
    c = conf.reshape(3, 3).astype(np.float64)
    logp = c - np.log(np.exp(c).sum(1, keepdims=True))
    conf_loss = -(logp[0, 1] + logp[1, 1] + logp[2, 0])
    np.testing.assert_allclose(float(net.blobs["loss"].data), (loc_loss + conf_loss) / 2,
                               rtol=1e-5)


def test_multibox_loss_normalization_and_logistic():
    rng = np.random.default_rng(7)
    loc = np.zeros((1, 12), np.float32)
    conf = rng.normal(size=(1, 9)).astype(np.float32)
    inputs = {"loc": loc, "conf": conf, "prior": prior_blob(), "label": GT}
    base = "num_classes: 3 code_type: CENTER_SIZE mining_type: NONE"
    full = run(mbox_text(base, loss_param="loss_param { normalization: FULL }"), inputs)
    none = run(mbox_text(base, loss_param="loss_param { normalization: NONE }"), inputs)
    np.testing.assert_allclose(float(full.blobs["loss"].data) * 3,
                               float(none.blobs["loss"].data), rtol=1e-6)
    # LOGISTIC without mining: every prior's sigmoid cross-entropy, one-hot on matched ones
    lg = run(mbox_text(base + " conf_loss_type: LOGISTIC loc_weight: 0",
                       loss_param="loss_param { normalization: NONE }"), inputs)
    x = conf.reshape(3, 3).astype(np.float64)
    t = np.zeros((3, 3))
    t[0, 1] = t[1, 1] = 1
    want = (np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))).sum()
    np.testing.assert_allclose(float(lg.blobs["loss"].data), want, rtol=1e-5)


def test_multibox_loss_gradients_loc_and_conf():
    rng = np.random.default_rng(8)
    inputs = {"loc": rng.normal(size=(1, 12)) * 0.3, "conf": rng.normal(size=(1, 9)),
              "prior": prior_blob().astype(np.float64), "label": GT.astype(np.float64)}
    for mining in ("MAX_NEGATIVE", "NONE"):
        for extra in ("", " loc_loss_type: L2 conf_loss_type: LOGISTIC"):
            check_gradients(mbox_text(f"num_classes: 3 code_type: CENTER_SIZE "
                                      f"mining_type: {mining}{extra}"), inputs,
                            check_inputs=["loc", "conf"], step=1e-3)


@pytest.mark.parametrize("param", [
    "share_location: false mining_type: NONE match_type: BIPARTITE",
    "share_location: false mining_type: NONE use_prior_for_matching: false",
    "use_prior_for_matching: false encode_variance_in_target: true",
    "mining_type: HARD_EXAMPLE sample_size: 2",
    "nms_param { nms_threshold: 0.5 } bp_inside: true",
])
def test_multibox_loss_options_gradients(param):
    rng = np.random.default_rng(11)
    lc = 3 if "share_location: false" in param else 1
    inputs = {"loc": rng.normal(size=(1, 12 * lc)) * 0.3, "conf": rng.normal(size=(1, 9)),
              "prior": prior_blob().astype(np.float64), "label": GT.astype(np.float64)}
    text = mbox_text(f"num_classes: 3 code_type: CENTER_SIZE {param}", loc_classes=lc)
    check_gradients(text, inputs, check_inputs=["loc", "conf"], step=1e-3)
    assert float(run(text, inputs).blobs["loss"].data) > 0


def test_multibox_loss_hard_example_and_bipartite():
    rng = np.random.default_rng(9)
    loc = rng.normal(size=(1, 12)).astype(np.float32) * 0.3
    conf = rng.normal(size=(1, 9)).astype(np.float32)
    inputs = {"loc": loc, "conf": conf, "prior": prior_blob(), "label": GT}
    # BIPARTITE: only prior 0 is positive, so at most 3 negatives: priors 1 and 2.
    bip = run(mbox_text("num_classes: 3 code_type: CENTER_SIZE match_type: BIPARTITE "
                        "neg_overlap: 1.0 loc_weight: 0",
                        loss_param="loss_param { normalization: NONE }"), inputs)
    c = conf.reshape(3, 3).astype(np.float64)
    logp = c - np.log(np.exp(c).sum(1, keepdims=True))
    np.testing.assert_allclose(float(bip.blobs["loss"].data),
                               -(logp[0, 1] + logp[1, 0] + logp[2, 0]), rtol=1e-5)
    # HARD_EXAMPLE with sample_size 1: only the highest (conf + loc) loss prior is kept.
    hard = run(mbox_text("num_classes: 3 code_type: CENTER_SIZE mining_type: HARD_EXAMPLE "
                         "sample_size: 1 loc_weight: 0",
                         loss_param="loss_param { normalization: NONE }"), inputs)
    assert np.isfinite(float(hard.blobs["loss"].data))
    assert float(hard.blobs["loss"].data) <= -(logp[0, 1] + logp[1, 1] + logp[2, 0]) + 1e-5


def test_multibox_loss_refusals():
    inputs = {"loc": np.zeros((1, 12), np.float32), "conf": np.zeros((1, 9), np.float32),
              "prior": prior_blob(), "label": GT}
    with pytest.raises(DecaffeError, match="num_classes"):
        run(mbox_text("code_type: CENTER_SIZE"), inputs)
    with pytest.raises(DecaffeError, match="share_location"):
        run(mbox_text("num_classes: 3 share_location: false", loc_classes=3), {
            **inputs, "loc": np.zeros((1, 36), np.float32)})
    bg = GT.copy()
    bg[0, 0, 0, 1] = 0
    with pytest.raises(DecaffeError, match="background"):
        run(mbox_text("num_classes: 3"), {**inputs, "label": bg})
    # backward into the priors is refused: a prior that needs a gradient (here through a
    # learnable Bias) with propagate_down true for it
    text = mbox_text("num_classes: 3").replace(
        'bottom: "prior"', 'bottom: "priorb"').replace(
        "propagate_down: false propagate_down: false", "propagate_down: true "
        "propagate_down: false")
    text = text.replace('layer { name: "m"', 'layer { name: "b" type: "Bias" bottom: "prior" '
                        'top: "priorb" bias_param { axis: 0 num_axes: -1 } }\nlayer { name: "m"')
    with pytest.raises(DecaffeError, match="prior"):
        run(text, inputs)


# ------------------------------------------------------------------------------------------
# DetectionEvaluate
# ------------------------------------------------------------------------------------------
def test_detection_evaluate_by_hand():
    det = np.array([[0, 1, 0.9, 0.1, 0.1, 0.3, 0.3], [0, 1, 0.8, 0.1, 0.1, 0.3, 0.3],
                    [0, 2, 0.7, 0.5, 0.5, 0.6, 0.6], [1, 1, 0.6, 0, 0, 1, 1]],
                   np.float32)[None, None]
    gt = np.array([[0, 1, 0, 0.1, 0.1, 0.3, 0.3, 0], [0, 2, 0, 0.0, 0.0, 0.1, 0.1, 1],
                   [-1, 0, 0, 0, 0, 0, 0, 0]], np.float32)[None, None]
    text = (inp("det", det.shape) + inp("gt", gt.shape) + lay(
        "e", "DetectionEvaluate", ["det", "gt"], ["y"],
        "detection_evaluate_param { num_classes: 3 evaluate_difficult_gt: false }"))
    y = run(text, {"det": det, "gt": gt}, TEST).blobs["y"].data[0, 0]
    np.testing.assert_allclose(y, [[-1, 1, 1, -1, -1], [-1, 2, 0, -1, -1],
                                   [0, 1, 0.9, 1, 0], [0, 1, 0.8, 0, 1],
                                   [0, 2, 0.7, 0, 1], [1, 1, 0.6, 0, 1]], rtol=1e-6)


# ------------------------------------------------------------------------------------------
# NetSpec, draw (the registry's list is the table's: tests/layers/test_layer_table.py)
# ------------------------------------------------------------------------------------------
def ssd_netspec():
    from caffe import layers as L
    from caffe import params as P

    n = caffe.NetSpec()
    n.feat, n.img, n.label = L.Input(shape=[dict(dim=[2, 4, 3, 3]), dict(dim=[2, 3, 24, 24]),
                                            dict(dim=[1, 1, 2, 8])], ntop=3)
    n.norm = L.Normalize(n.feat, norm_param=dict(across_spatial=False, scale_filler=dict(
        type="constant", value=20), channel_shared=False))
    n.loc = L.Convolution(n.norm, num_output=16, kernel_size=1,
                          weight_filler=dict(type="gaussian", std=0.01))
    n.loc_perm = L.Permute(n.loc, permute_param=dict(order=[0, 2, 3, 1]))
    n.loc_flat = L.Flatten(n.loc_perm, axis=1)
    n.conf = L.Convolution(n.norm, num_output=12, kernel_size=1,
                           weight_filler=dict(type="gaussian", std=0.01))
    n.conf_perm = L.Permute(n.conf, permute_param=dict(order=[0, 2, 3, 1]))
    n.conf_flat = L.Flatten(n.conf_perm, axis=1)
    n.prior = L.PriorBox(n.feat, n.img, prior_box_param=dict(
        min_size=[8.0], max_size=[16.0], aspect_ratio=[2.0], flip=True, clip=False,
        variance=[0.1, 0.1, 0.2, 0.2]))
    n.loss = L.MultiBoxLoss(n.loc_flat, n.conf_flat, n.prior, n.label, multibox_loss_param=dict(
        num_classes=3, code_type=P.PriorBox.CENTER_SIZE, overlap_threshold=0.5),
        propagate_down=[True, True, False, False])
    return n


def test_netspec_builds_and_trains_ssd_layers():
    spec = ssd_netspec()
    text = str(spec.to_proto())
    assert 'type: "PriorBox"' in text and "prior_box_param" in text and "min_size: 8" in text
    net = decaffe.Net(text, TRAIN)
    rng = np.random.default_rng(10)
    net.blobs["feat"].data[...] = rng.normal(size=(2, 4, 3, 3))
    net.blobs["label"].data[...] = [[[[0, 1, 0, 0.1, 0.1, 0.4, 0.4, 0],
                                      [1, 2, 0, 0.5, 0.3, 0.9, 0.8, 0]]]]
    net.forward()
    assert net.blobs["prior"].data.shape == (1, 2, 3 * 3 * 4 * 4)
    assert float(net.blobs["loss"].data) > 0
    net.backward()
    assert np.abs(net.params["loc"][0].diff).sum() > 0
    assert np.abs(net.params["conf"][0].diff).sum() > 0


def test_draw_shows_ssd_layers():
    import caffe.draw

    graph = caffe.draw.get_pydot_graph(ssd_netspec().to_proto(), "LR")
    dot = graph.to_string()
    for t in ("PriorBox", "Permute", "Normalize", "MultiBoxLoss"):
        assert f"({t})" in dot


# ------------------------------------------------------------------------------------------
# box codes and the loss without ground truth
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [B.CORNER, B.CENTER_SIZE, B.CORNER_SIZE])
@pytest.mark.parametrize("in_target", [False, True])
def test_encode_decode_round_trip(code, in_target):
    rng = np.random.default_rng(12)
    prior = np.sort(rng.uniform(0, 1, size=(5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(
        5, 4)[:, [0, 2, 1, 3]].astype(np.float32)
    var = np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), (5, 1))
    box = (prior + rng.uniform(-0.05, 0.05, size=(5, 4))).astype(np.float32)
    enc = B.encode(prior, var, code, in_target, box)
    np.testing.assert_allclose(B.decode(prior, var, code, in_target, enc), box, atol=1e-5)
    if code == B.CORNER and not in_target:
        np.testing.assert_allclose(enc, (box - prior) / var, rtol=1e-5)


def test_multibox_loss_without_ground_truth():
    inputs = {"loc": np.zeros((1, 12), np.float32), "conf": np.zeros((1, 9), np.float32),
              "prior": prior_blob(), "label": -np.ones((1, 1, 1, 8), np.float32)}
    net = run("force_backward: true\n" + mbox_text("num_classes: 3"), inputs)
    assert float(net.blobs["loss"].data) == 0  # no positives, so no mined negatives
    net.backward()
    assert not net.blobs["conf"].diff.any()
    # without mining every prior is a background example: log(3) each, FULL-normalized
    net = run(mbox_text("num_classes: 3 mining_type: NONE",
                        loss_param="loss_param { normalization: FULL }"), inputs)
    np.testing.assert_allclose(float(net.blobs["loss"].data), math.log(3), rtol=1e-6)


def test_detection_evaluate_in_pixels_with_name_size_file(tmp_path):
    """With a name_size_file, boxes are scaled to the image's pixels and overlaps count the
    +1 pixel edges: IoU 21·21/(23·21) = 0.913 here, against 0.909 on normalized boxes."""
    det = np.array([[0, 1, 0.9, 0.1, 0.1, 0.3, 0.3]], np.float32)[None, None]
    gt = np.array([[0, 1, 0, 0.1, 0.1, 0.32, 0.3, 0]], np.float32)[None, None]
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("img0 100 100\n")

    def evaluate(extra):
        text = (inp("det", det.shape) + inp("gt", gt.shape) + lay(
            "e", "DetectionEvaluate", ["det", "gt"], ["y"],
            f"detection_evaluate_param {{ num_classes: 2 overlap_threshold: 0.912 {extra} }}"))
        return run(text, {"det": det, "gt": gt}, TEST).blobs["y"].data[0, 0]

    np.testing.assert_allclose(evaluate(f'name_size_file: "{sizes}"')[1], [0, 1, 0.9, 1, 0],
                               rtol=1e-6)
    np.testing.assert_allclose(evaluate("")[1], [0, 1, 0.9, 0, 1], rtol=1e-6)
    with pytest.raises(DecaffeError, match="name_size_file"):
        evaluate(f'name_size_file: "{tmp_path / "missing.txt"}"')


def test_output_bbox_undoes_the_resize_policies():
    from decaffe.layers.forks.ssd import output_bbox
    from decaffe.proto import caffe_pb2

    box = np.array([0.1, 0.2, 0.5, 1.2], np.float32)
    plain = output_bbox(box, 100, 200, None)
    np.testing.assert_allclose(plain, [20, 20, 100, 100], rtol=1e-6)  # clipped, in pixels
    warp = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.WARP, height=300,
                                     width=300)
    np.testing.assert_allclose(output_bbox(box, 100, 200, warp), plain, rtol=1e-6)
    # a 200x100 image padded into 300x300: the image spans y 75..225 of the padded square
    pad = caffe_pb2.ResizeParameter(
        resize_mode=caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD, height=300, width=300)
    out = output_bbox(np.array([0.0, 0.25, 0.5, 0.75], np.float32), 100, 200, pad)
    np.testing.assert_allclose(out, [0, 0, 100, 100], rtol=1e-5, atol=1e-4)

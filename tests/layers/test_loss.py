"""Softmax, Accuracy and the loss layers: forward and backward against numpy, Caffe's
normalisation rules, loss weights and the errors a user can cause. Finite differences check
here only what a table sample cannot draw (ignored targets of -1, an infogain matrix file,
pairs kept off the contrastive margin); the rest are tests/layer_db.py's samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from netbuild import input_layer as inp
from netbuild import layer as lay

import decaffe
from decaffe.errors import DecaffeError, LayerParamError, NetError
from decaffe.layers import loss as loss_mod
from decaffe.proto import caffe_pb2

FLT_MIN = float(np.finfo(np.float32).tiny)
TRAIN, TEST = decaffe.TRAIN, decaffe.TEST


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def net_with(inputs: dict, body: str, phase=TRAIN, force_backward=True, dtype=torch.float32):
    text = ("force_backward: true\n" if force_backward else "")
    text += "".join(inp(k, np.shape(v)) for k, v in inputs.items()) + body
    net = decaffe.Net(text, phase, dtype=dtype)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    return net


def run(inputs: dict, body: str, **kw):
    """Forward then pycaffe backward (loss tops carry their loss weight as diff)."""
    net = net_with(inputs, body, **kw)
    net.forward()
    net.backward()
    return net


def rng(seed=0):
    return np.random.default_rng(seed)


def softmax_np(x, axis):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def to_rows(a, axis):
    """(outer·inner, C) with rows in Caffe's label order."""
    m = np.moveaxis(np.asarray(a, np.float64), axis, -1)
    return m.reshape(-1, m.shape[-1]), m.shape


def from_rows(rows, moved_shape, axis):
    return np.moveaxis(rows.reshape(moved_shape), -1, axis)


def normaliser(mode, outer, inner, valid):
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(n))


def softmax_loss_np(x, label, axis=1, ignore=None, mode="VALID"):
    p = softmax_np(x, axis)
    rows, moved = to_rows(p, axis)
    grad = rows.copy()
    labels = np.trunc(np.asarray(label, np.float64).ravel()).astype(int)
    loss, count = 0.0, 0
    for r, lab in enumerate(labels):
        if ignore is not None and lab == ignore:
            grad[r] = 0
            continue
        loss -= math.log(max(rows[r, lab], FLT_MIN))
        grad[r, lab] -= 1
        count += 1
    outer = int(np.prod(np.shape(x)[:axis]))
    inner = int(np.prod(np.shape(x)[axis + 1:]))
    valid = count if ignore is not None else outer * inner
    n = normaliser(mode, outer, inner, valid)
    return loss / n, from_rows(grad, moved, axis) / n


def labels_for(r, shape, classes):
    return r.integers(0, classes, size=shape).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Softmax
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_softmax_forward_backward_numpy(axis):
    x = rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32) * 3
    top_diff = rng(2).normal(size=x.shape)
    net = net_with({"x": x}, lay("s", "Softmax", ["x"], ["y"], f"softmax_param {{ axis: {axis} }}"))
    net.forward()
    y = softmax_np(x, axis)
    np.testing.assert_allclose(net.blobs["y"].data, y, rtol=1e-5, atol=1e-7)
    net.blobs["y"].diff[...] = top_diff
    net.backward()
    want = (top_diff - (top_diff * y).sum(axis=axis, keepdims=True)) * y
    np.testing.assert_allclose(net.blobs["x"].diff, want, rtol=1e-4, atol=1e-6)


def test_softmax_axis_out_of_range():
    with pytest.raises(LayerParamError, match=r"softmax_param\.axis"):
        net_with({"x": np.zeros((2, 3))}, lay("s", "Softmax", ["x"], ["y"],
                                               "softmax_param { axis: 2 }"))


# ------------------------------------------------------------------------------------------
# SoftmaxWithLoss
# ------------------------------------------------------------------------------------------
SWL_CASES = [
    # (x shape, label shape, axis, loss_param text, ignore, mode)
    ((4, 5), (4,), 1, "", None, "VALID"),
    ((2, 5, 3, 2), (2, 1, 3, 2), 1, "loss_param { ignore_label: 2 }", 2, "VALID"),
    ((2, 5, 3, 2), (2, 1, 3, 2), 1, "loss_param { ignore_label: 2 normalization: FULL }", 2,
     "FULL"),
    ((2, 5, 3, 2), (2, 1, 3, 2), 1, "loss_param { normalization: BATCH_SIZE }", None,
     "BATCH_SIZE"),
    ((2, 5, 3, 2), (2, 1, 3, 2), 1, "loss_param { ignore_label: 0 normalization: NONE }", 0,
     "NONE"),
    ((2, 5, 3, 2), (2, 1, 3, 2), 1, "loss_param { normalize: false }", None, "BATCH_SIZE"),
    ((2, 5, 3, 2), (2, 1, 3, 2), 1, "loss_param { normalize: true }", None, "VALID"),
    # normalization wins over the legacy normalize
    ((2, 5, 3, 2), (2, 1, 3, 2), 1, "loss_param { normalize: false normalization: FULL }",
     None, "FULL"),
    ((2, 3, 4, 2), (2, 3, 2), 2, "softmax_param { axis: 2 } loss_param { ignore_label: 1 }", 1,
     "VALID"),
    ((2, 3, 4), (2, 3), -1, "softmax_param { axis: -1 } loss_param { normalization: BATCH_SIZE }",
     None, "BATCH_SIZE"),
]


@pytest.mark.parametrize("xs,ls,axis,param,ignore,mode", SWL_CASES)
def test_softmax_loss_matches_numpy(xs, ls, axis, param, ignore, mode):
    r = rng(4)
    x = r.normal(size=xs).astype(np.float32) * 2
    c = xs[axis]
    label = labels_for(r, ls, c)
    net = run({"x": x, "label": label},
              lay("loss", "SoftmaxWithLoss", ["x", "label"], ["loss"], param))
    want_loss, want_grad = softmax_loss_np(x, label, axis, ignore, mode)
    np.testing.assert_allclose(float(net.blobs["loss"].data), want_loss, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["x"].diff, want_grad, rtol=1e-4, atol=1e-7)
    assert net.blobs["loss"].data.shape == ()
    assert not net.blobs["label"].diff.any()


def test_softmax_loss_all_ignored_normaliser_is_one():
    x = rng(6).normal(size=(3, 4)).astype(np.float32)
    net = run({"x": x, "label": np.full(3, 7, np.float32)},
              lay("loss", "SoftmaxWithLoss", ["x", "label"], ["loss"],
                  "loss_param { ignore_label: 7 }"))
    assert float(net.blobs["loss"].data) == 0.0
    assert not net.blobs["x"].diff.any()


def test_softmax_loss_labels_truncate_like_static_cast():
    x = rng(7).normal(size=(4, 5)).astype(np.float32)
    raw = np.array([2.9, 0.2, 4.99, -0.7], np.float32)  # -0.7 truncates to 0
    body = lay("loss", "SoftmaxWithLoss", ["x", "label"], ["loss"])
    a = run({"x": x, "label": raw}, body)
    b = run({"x": x, "label": np.array([2, 0, 4, 0], np.float32)}, body)
    assert float(a.blobs["loss"].data) == float(b.blobs["loss"].data)
    # the ignore_label compares the truncated value too
    c = run({"x": x, "label": np.array([2.5, 1, 1, 1], np.float32)},
            lay("loss", "SoftmaxWithLoss", ["x", "label"], ["loss"],
                "loss_param { ignore_label: 2 }"))
    want, _ = softmax_loss_np(x, [2, 1, 1, 1], ignore=2)
    np.testing.assert_allclose(float(c.blobs["loss"].data), want, rtol=1e-5)


def test_softmax_loss_floors_probability_at_flt_min_but_not_the_gradient():
    x = np.array([[0.0, 200.0, 0.0]], np.float32)  # p[0] underflows far below FLT_MIN
    net = run({"x": x, "label": np.array([0], np.float32)},
              lay("loss", "SoftmaxWithLoss", ["x", "label"], ["loss"]))
    np.testing.assert_allclose(float(net.blobs["loss"].data), -math.log(FLT_MIN), rtol=1e-6)
    np.testing.assert_allclose(net.blobs["x"].diff, [[-1.0, 1.0, 0.0]], atol=1e-6)


def test_softmax_loss_second_top_is_probability_without_gradient():
    r = rng(8)
    x = r.normal(size=(3, 4)).astype(np.float32)
    label = labels_for(r, (3,), 4)
    # one loss_weight per top: Caffe's default of 1 alone would count for one of two tops
    net = net_with({"x": x, "label": label},
                   lay("loss", "SoftmaxWithLoss", ["x", "label"], ["loss", "prob"],
                       "loss_weight: 1 loss_weight: 0"))
    assert net.blobs["prob"].shape == (3, 4)
    assert net.blob_loss_weights["loss"] == 1 and net.blob_loss_weights["prob"] == 0
    net.forward()
    np.testing.assert_allclose(net.blobs["prob"].data, softmax_np(x, 1), rtol=1e-5)
    net.blobs["prob"].diff[...] = 5.0  # Caffe's backward never reads the prob top's diff
    net.backward()
    _, want = softmax_loss_np(x, label)
    np.testing.assert_allclose(net.blobs["x"].diff, want, rtol=1e-4, atol=1e-7)


def test_loss_top_made_automatically():
    # Caffe's AutoTopBlobs: an anonymous loss top, counted in the loss but not a net output
    r = rng(9)
    x = r.normal(size=(3, 4)).astype(np.float32)
    label = labels_for(r, (3,), 4)
    net = net_with({"x": x, "label": label}, lay("loss", "SoftmaxWithLoss", ["x", "label"], []))
    assert net.outputs == []
    (name,) = [n for n in net.blobs if "automatic" in n]
    assert net.blob_loss_weights[name] == 1
    want, grad = softmax_loss_np(x, label)
    np.testing.assert_allclose(net.forward_backward(), want, rtol=1e-5)
    np.testing.assert_allclose(float(net.blobs[name].data), want, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# loss weights (handled by the net)
# ------------------------------------------------------------------------------------------
def test_loss_weight_on_a_loss_layer():
    r = rng(10)
    a, b = r.normal(size=(3, 4)).astype(np.float32), r.normal(size=(3, 4)).astype(np.float32)
    body = lay("loss", "EuclideanLoss", ["a", "b"], ["loss"], "loss_weight: 2")
    net = run({"a": a, "b": b}, body)
    base = ((a.astype(np.float64) - b) ** 2).sum() / 3 / 2
    np.testing.assert_allclose(float(net.blobs["loss"].data), base, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["a"].diff, 2 * (a - b) / 3, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.blobs["b"].diff, -2 * (a - b) / 3, rtol=1e-5, atol=1e-7)
    net2 = net_with({"a": a, "b": b}, body)
    np.testing.assert_allclose(net2.forward_backward(), 2 * base, rtol=1e-5)


def test_loss_weight_on_a_non_loss_layer_and_on_softmax():
    r = rng(11)
    x = r.normal(size=(2, 3)).astype(np.float32)
    body = ('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 0.5 '
            'inner_product_param { num_output: 2 weight_filler { type: "gaussian" } '
            'bias_filler { type: "constant" value: 0.1 } } }\n')
    net = net_with({"x": x}, body, force_backward=False)
    total = net.forward_backward()
    w = net.params["ip"][0].data.astype(np.float64)
    y = x.astype(np.float64) @ w.T + 0.1
    np.testing.assert_allclose(total, 0.5 * y.sum(), rtol=1e-5)
    np.testing.assert_allclose(net.params["ip"][0].diff, 0.5 * np.tile(x.sum(0), (2, 1)),
                               rtol=1e-5)
    np.testing.assert_allclose(net.params["ip"][1].diff, [1.0, 1.0], rtol=1e-6)
    # a Softmax top with a loss weight: Σ softmax = rows, and its gradient vanishes
    net = run({"x": x}, lay("s", "Softmax", ["x"], ["p"], "loss_weight: 3"))
    assert net.blob_loss_weights["p"] == 3
    np.testing.assert_allclose(net.blobs["x"].diff, 0, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Accuracy
# ------------------------------------------------------------------------------------------
def accuracy_np(x, label, top_k=1, axis=1, ignore=None):
    rows, _ = to_rows(x, axis)
    labels = np.trunc(np.asarray(label, np.float64).ravel()).astype(int)
    c = rows.shape[1]
    hits, count = 0, 0
    seen, good = np.zeros(c), np.zeros(c)
    for r, lab in enumerate(labels):
        if ignore is not None and lab == ignore:
            continue
        order = sorted(range(c), key=lambda k: (rows[r, k], k), reverse=True)
        ok = lab in order[:top_k]
        hits += ok
        count += 1
        seen[lab] += 1
        good[lab] += ok
    per_class = np.where(seen == 0, 0, good / np.maximum(seen, 1))
    return (hits / count if count else float("nan")), per_class


@pytest.mark.parametrize("xs,ls,param,top_k,axis,ignore", [
    ((8, 5), (8,), "", 1, 1, None),
    ((8, 5), (8,), "accuracy_param { top_k: 3 }", 3, 1, None),
    ((2, 4, 3, 3), (2, 1, 3, 3), "accuracy_param { top_k: 2 ignore_label: 1 }", 2, 1, 1),
    ((2, 3, 4), (2, 3), "accuracy_param { axis: -1 }", 1, 2, None),
])
def test_accuracy_matches_numpy(xs, ls, param, top_k, axis, ignore):
    r = rng(12)
    x = r.normal(size=xs).astype(np.float32)
    label = labels_for(r, ls, xs[axis])
    net = net_with({"x": x, "label": label},
                   lay("acc", "Accuracy", ["x", "label"], ["acc", "per_class"], param), TEST)
    net.forward()
    want, per_class = accuracy_np(x, label, top_k, axis, ignore)
    np.testing.assert_allclose(float(net.blobs["acc"].data), want, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["per_class"].data, per_class, rtol=1e-6)
    assert net.blobs["per_class"].shape == (xs[axis],)


def test_accuracy_ties_rank_higher_class_first():
    # Caffe 1.0 sorts (score, class) pairs descending: a tie favours the larger class index
    # (newer BVLC master counts every tie against the label, which would give 0 here)
    x = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], np.float32)
    label = np.array([1, 0, 2, 1], np.float32)
    for top_k, want in ((1, 0.5), (2, 1.0)):
        net = net_with({"x": x, "label": label},
                       lay("acc", "Accuracy", ["x", "label"], ["acc"],
                           f"accuracy_param {{ top_k: {top_k} }}"), TEST)
        net.forward()
        assert float(net.blobs["acc"].data) == want
        assert accuracy_np(x, label, top_k)[0] == want


def test_accuracy_no_backward_and_all_ignored_is_nan():
    x = rng(13).normal(size=(4, 3)).astype(np.float32)
    net = run({"x": x, "label": np.zeros(4, np.float32)},
              lay("acc", "Accuracy", ["x", "label"], ["acc"], "accuracy_param { ignore_label: 0 }"))
    assert math.isnan(float(net.blobs["acc"].data))  # Caffe 1.0: accuracy / count = 0/0
    assert not net.blobs["x"].diff.any()
    assert net.blob_loss_weights["acc"] == 0


def test_accuracy_errors():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(LayerParamError, match="top_k"):
        net_with({"x": x, "label": np.zeros(4)},
                 lay("acc", "Accuracy", ["x", "label"], ["acc"], "accuracy_param { top_k: 4 }"))
    with pytest.raises(LayerParamError, match=r"\(4, 3\).*\(2, 3\)"):
        net_with({"x": x, "label": np.zeros((2, 3))},
                 lay("acc", "Accuracy", ["x", "label"], ["acc"]))
    with pytest.raises(NetError, match="top"):
        net_with({"x": x, "label": np.zeros(4)},
                 lay("acc", "Accuracy", ["x", "label"], ["a", "b", "c"]))
    net = net_with({"x": x, "label": np.array([0, 1, 3, 0])},
                   lay("acc", "Accuracy", ["x", "label"], ["acc"]))
    with pytest.raises(LayerParamError, match=r"out of range \[0, 3\): 3"):
        net.forward()


# ------------------------------------------------------------------------------------------
# EuclideanLoss
# ------------------------------------------------------------------------------------------
def test_euclidean_forward_and_backward_to_both_bottoms():
    r = rng(14)
    a, b = r.normal(size=(3, 2, 2)), r.normal(size=(3, 4))  # same count past the first axis
    net = run({"a": a.astype(np.float32), "b": b.astype(np.float32)},
              lay("loss", "EuclideanLoss", ["a", "b"], ["loss"]))
    d = a - b.reshape(a.shape)
    np.testing.assert_allclose(float(net.blobs["loss"].data), (d ** 2).sum() / 6, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["b"].diff, -(d / 3).reshape(3, 4), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------
# SigmoidCrossEntropyLoss
# ------------------------------------------------------------------------------------------
def sigmoid_xent_np(x, t, ignore=None, mode="BATCH_SIZE"):
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64).reshape(x.shape)
    each = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    grad = 1 / (1 + np.exp(-x)) - t
    keep = np.ones(x.shape, bool) if ignore is None else np.trunc(t) != ignore
    outer = x.shape[0]
    n = normaliser(mode, outer, x.size // outer, keep.sum())
    return (each * keep).sum() / n, grad * keep / n


@pytest.mark.parametrize("param,ignore,mode", [
    ("", None, "BATCH_SIZE"),  # Caffe's default for this layer
    ("loss_param { normalization: VALID }", None, "VALID"),
    ("loss_param { ignore_label: -1 }", -1, "BATCH_SIZE"),
    ("loss_param { ignore_label: -1 normalization: VALID }", -1, "VALID"),
    ("loss_param { ignore_label: -1 normalize: true }", -1, "VALID"),
    ("loss_param { ignore_label: -1 normalization: FULL }", -1, "FULL"),
    ("loss_param { normalization: NONE }", None, "NONE"),
])
def test_sigmoid_cross_entropy(param, ignore, mode):
    r = rng(15)
    x = r.normal(size=(3, 2, 4)) * 4
    t = r.uniform(size=(3, 8))
    t[r.uniform(size=t.shape) < 0.3] = -1
    if ignore is None:
        t = np.abs(t)
    body = lay("loss", "SigmoidCrossEntropyLoss", ["x", "t"], ["loss"], param)
    net = run({"x": x.astype(np.float32), "t": t.astype(np.float32)}, body)
    want, grad = sigmoid_xent_np(x, t, ignore, mode)
    np.testing.assert_allclose(float(net.blobs["loss"].data), want, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["x"].diff, grad, rtol=1e-4, atol=1e-7)
    assert not net.blobs["t"].diff.any()
    check_gradients(inp("x", x.shape) + inp("t", t.shape) + body, {"x": x, "t": t},
                    check_inputs=["x"])


def test_sigmoid_cross_entropy_large_logits_stay_finite():
    x = np.array([[100.0, -100.0]], np.float32)
    net = run({"x": x, "t": np.array([[0.0, 1.0]], np.float32)},
              lay("loss", "SigmoidCrossEntropyLoss", ["x", "t"], ["loss"]))
    np.testing.assert_allclose(float(net.blobs["loss"].data), 200.0, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# HingeLoss
# ------------------------------------------------------------------------------------------
def hinge_np(x, label, norm="L1"):
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    s = x.reshape(n, -1).copy()
    lab = np.trunc(label).astype(int)
    sign = np.ones_like(s)
    sign[np.arange(n), lab] = -1
    m = np.maximum(0, 1 + sign * s)
    if norm == "L1":
        return m.sum() / n, (sign * (m > 0) / n).reshape(x.shape)
    return (m ** 2).sum() / n, (2 * sign * m / n).reshape(x.shape)


def away_from(values, points, gap=0.05):
    out = values.copy()
    for p in points:
        close = np.abs(out - p) < gap
        out[close] = p + np.where(out[close] >= p, gap, -gap) * 2
    return out


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge(norm):
    r = rng(16)
    x = away_from(r.uniform(-2, 2, size=(4, 3, 2)), [-1.0, 1.0])
    label = labels_for(r, (4,), 6).astype(np.float64)
    body = lay("loss", "HingeLoss", ["x", "label"], ["loss"],
               f"hinge_loss_param {{ norm: {norm} }}")
    net = run({"x": x.astype(np.float32), "label": label.astype(np.float32)}, body)
    want, grad = hinge_np(x, label, norm)
    np.testing.assert_allclose(float(net.blobs["loss"].data), want, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["x"].diff, grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------
# MultinomialLogisticLoss
# ------------------------------------------------------------------------------------------
def test_multinomial_logistic():
    r = rng(17)
    p = r.uniform(0.2, 1.0, size=(4, 5))
    label = labels_for(r, (4, 1, 1, 1), 5).astype(np.float64)
    body = lay("loss", "MultinomialLogisticLoss", ["p", "label"], ["loss"])
    net = run({"p": p.astype(np.float32), "label": label.astype(np.float32)}, body)
    lab = label.ravel().astype(int)
    picked = p[np.arange(4), lab]
    np.testing.assert_allclose(float(net.blobs["loss"].data), -np.log(picked).sum() / 4,
                               rtol=1e-5)
    grad = np.zeros_like(p)
    grad[np.arange(4), lab] = -1 / (4 * picked)
    np.testing.assert_allclose(net.blobs["p"].diff, grad, rtol=1e-4)


def test_multinomial_logistic_floor_keeps_caffes_gradient():
    p = np.array([[0.0, 1.0], [0.5, 0.5]], np.float32)
    net = run({"p": p, "label": np.array([0, 1], np.float32)},
              lay("loss", "MultinomialLogisticLoss", ["p", "label"], ["loss"]))
    want = (-math.log(np.float32(1e-20)) - math.log(0.5)) / 2
    np.testing.assert_allclose(float(net.blobs["loss"].data), want, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["p"].diff[0, 0], -1 / (2 * np.float32(1e-20)), rtol=1e-5)
    np.testing.assert_allclose(net.blobs["p"].diff[1], [0, -1.0], rtol=1e-6)


# ------------------------------------------------------------------------------------------
# InfogainLoss
# ------------------------------------------------------------------------------------------
def infogain_np(x, label, h, axis=1, ignore=None, mode="VALID"):
    p = softmax_np(x, axis)
    rows, moved = to_rows(p, axis)
    labels = np.trunc(np.asarray(label, np.float64).ravel()).astype(int)
    grad = np.zeros_like(rows)
    loss, count = 0.0, 0
    for r, lab in enumerate(labels):
        if ignore is not None and lab == ignore:
            continue
        loss -= (h[lab] * np.log(np.maximum(rows[r], 1e-20))).sum()
        grad[r] = rows[r] * h[lab].sum() - h[lab]
        count += 1
    outer = int(np.prod(np.shape(x)[:axis]))
    inner = int(np.prod(np.shape(x)[axis + 1:]))
    n = normaliser(mode, outer, inner, count)
    return loss / n, from_rows(grad, moved, axis) / n


def write_h(path, h, legacy=False, double=False):
    blob = caffe_pb2.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, 1, *h.shape
    else:
        blob.shape.dim.extend(h.shape)
    (blob.double_data if double else blob.data).extend(h.ravel().tolist())
    path.write_bytes(blob.SerializeToString())
    return str(path)


@pytest.mark.parametrize("xs,ls,axis,param,ignore,mode,legacy", [
    ((4, 3), (4,), 1, "", None, "VALID", False),
    ((2, 3, 2, 2), (2, 1, 2, 2), 1, "loss_param { ignore_label: 1 }", 1, "VALID", True),
    ((2, 2, 3), (2, 2), 2, "infogain_loss_param { axis: 2 } loss_param { normalization: "
     "BATCH_SIZE }", None, "BATCH_SIZE", False),
    ((3, 3), (3,), 1, "loss_param { normalization: NONE ignore_label: 0 }", 0, "NONE", False),
])
def test_infogain_from_source(tmp_path, xs, ls, axis, param, ignore, mode, legacy):
    r = rng(18)
    c = xs[axis]
    h = r.uniform(0, 1, size=(c, c))
    src = write_h(tmp_path / "h.binaryproto", h, legacy=legacy, double=legacy)
    x = r.normal(size=xs)
    label = labels_for(r, ls, c).astype(np.float64)
    source_param = f'source: "{src}"'
    if "infogain_loss_param {" in param:
        param = param.replace("infogain_loss_param {", f"infogain_loss_param {{ {source_param}")
    else:
        param += f" infogain_loss_param {{ {source_param} }}"
    body = lay("loss", "InfogainLoss", ["x", "label"], ["loss", "prob"],
               param + " loss_weight: 1 loss_weight: 0")
    net = run({"x": x.astype(np.float32), "label": label.astype(np.float32)}, body)
    want, grad = infogain_np(x, label, h, axis, ignore, mode)
    np.testing.assert_allclose(float(net.blobs["loss"].data), want, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["x"].diff, grad, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(net.blobs["prob"].data, softmax_np(x, axis), rtol=1e-5)
    # the probability top passes no gradient back (as in Caffe): check the loss alone
    body = body.replace('top: "prob"', "").replace("loss_weight: 1 loss_weight: 0", "")
    check_gradients(inp("x", xs) + inp("label", ls) + body, {"x": x, "label": label},
                    check_inputs=["x"])


def test_infogain_from_third_bottom_and_identity_is_softmax_loss():
    r = rng(19)
    x = r.normal(size=(5, 4))
    label = labels_for(r, (5,), 4).astype(np.float64)
    h = r.uniform(0, 2, size=(1, 1, 4, 4))
    body = lay("loss", "InfogainLoss", ["x", "label", "H"], ["loss"])
    net = run({"x": x.astype(np.float32), "label": label.astype(np.float32),
               "H": h.astype(np.float32)}, body)
    want, grad = infogain_np(x, label, h.reshape(4, 4))
    np.testing.assert_allclose(float(net.blobs["loss"].data), want, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["x"].diff, grad, rtol=1e-4, atol=1e-7)
    assert not net.blobs["H"].diff.any()
    check_gradients(inp("x", x.shape) + inp("label", label.shape) + inp("H", h.shape) + body,
                    {"x": x, "label": label, "H": h}, check_inputs=["x"])
    eye = run({"x": x.astype(np.float32), "label": label.astype(np.float32),
               "H": np.eye(4, dtype=np.float32)}, body)
    swl, _ = softmax_loss_np(x, label)
    np.testing.assert_allclose(float(eye.blobs["loss"].data), swl, rtol=1e-5)


def test_infogain_errors(tmp_path):
    x, label = np.zeros((4, 3), np.float32), np.zeros(4, np.float32)
    with pytest.raises(LayerParamError, match="infogain_loss_param.source.*not found"):
        net_with({"x": x, "label": label}, lay("loss", "InfogainLoss", ["x", "label"], ["loss"],
                 f'infogain_loss_param {{ source: "{tmp_path}/missing.binaryproto" }}'))
    with pytest.raises(LayerParamError, match="infogain_loss_param.source"):
        net_with({"x": x, "label": label}, lay("loss", "InfogainLoss", ["x", "label"], ["loss"]))
    bad = tmp_path / "bad.binaryproto"
    bad.write_bytes(b"\xff\xff\xff not a proto")
    with pytest.raises(LayerParamError, match="BlobProto"):
        net_with({"x": x, "label": label}, lay("loss", "InfogainLoss", ["x", "label"], ["loss"],
                 f'infogain_loss_param {{ source: "{bad}" }}'))
    mismatched = caffe_pb2.BlobProto()
    mismatched.shape.dim.extend([3, 3])
    mismatched.data.extend([1.0] * 8)
    (tmp_path / "short.binaryproto").write_bytes(mismatched.SerializeToString())
    with pytest.raises(LayerParamError, match=r"infogain_loss_param.source.*8 data values"):
        net_with({"x": x, "label": label}, lay("loss", "InfogainLoss", ["x", "label"], ["loss"],
                 f'infogain_loss_param {{ source: "{tmp_path}/short.binaryproto" }}'))
    src = write_h(tmp_path / "h.binaryproto", np.ones((2, 2)))
    with pytest.raises(LayerParamError, match="H must be 3x3.*has 4"):
        net_with({"x": x, "label": label}, lay("loss", "InfogainLoss", ["x", "label"], ["loss"],
                 f'infogain_loss_param {{ source: "{src}" }}'))
    with pytest.raises(LayerParamError, match=r"H must be 3x3.*bottom 'H' has 8"):
        net_with({"x": x, "label": label, "H": np.zeros((2, 4))},
                 lay("loss", "InfogainLoss", ["x", "label", "H"], ["loss"]))
    with pytest.raises(LayerParamError, match="normalize"):
        net_with({"x": x, "label": label, "H": np.zeros((3, 3))},
                 lay("loss", "InfogainLoss", ["x", "label", "H"], ["loss"],
                     "loss_param { normalize: true }"))


# ------------------------------------------------------------------------------------------
# ContrastiveLoss
# ------------------------------------------------------------------------------------------
def contrastive_np(a, b, sim, margin=1.0, legacy=False):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = a.shape[0]
    d = (a - b).reshape(n, -1)
    loss, grad = 0.0, np.zeros_like(d)
    for i in range(n):
        dsq = (d[i] ** 2).sum()
        if int(sim[i]):
            loss += dsq
            grad[i] = d[i] / n
        elif legacy:
            loss += max(margin - dsq, 0)
            grad[i] = -d[i] / n if margin - dsq > 0 else 0
        else:
            dist = math.sqrt(dsq)
            loss += max(margin - dist, 0) ** 2
            grad[i] = -(margin - dist) / (dist + 1e-4) * d[i] / n if margin - dist > 0 else 0
    return loss / n / 2, grad.reshape(a.shape)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive(legacy):
    n, c = 6, 3
    sim = np.array([0, 1, 0, 0.7, 1, 0])  # 0.7 truncates to 0: dissimilar
    margin = 2.0
    for seed in range(20, 60):  # pairs away from the hinge at the margin (finite differences)
        r = rng(seed)
        a = r.normal(size=(n, c, 1, 1)) * 0.6
        b = r.normal(size=(n, c, 1, 1)) * 0.6
        dsq = ((a - b) ** 2).reshape(n, -1).sum(1)
        kink = dsq if legacy else np.sqrt(dsq)
        if np.all(np.abs(kink - margin) > 0.1) and (kink[sim == 0] < margin).sum() >= 2:
            break
    else:
        raise AssertionError("no suitable seed")
    param = f"margin: {margin} legacy_version: {str(legacy).lower()}"
    body = lay("loss", "ContrastiveLoss", ["a", "b", "sim"], ["loss"],
               f"contrastive_loss_param {{ {param} }}")
    net = run({"a": a.astype(np.float32), "b": b.astype(np.float32),
               "sim": sim.astype(np.float32)}, body)
    want, grad = contrastive_np(a, b, sim, margin, legacy)
    np.testing.assert_allclose(float(net.blobs["loss"].data), want, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["a"].diff, grad, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(net.blobs["b"].diff, -grad, rtol=1e-4, atol=1e-7)
    assert not net.blobs["sim"].diff.any()
    check_gradients(inp("a", a.shape) + inp("b", b.shape) + inp("sim", sim.shape) + body,
                    {"a": a, "b": b, "sim": sim}, check_inputs=["a", "b"])


def test_contrastive_identical_pair_has_zero_not_nan_gradient():
    a = np.ones((2, 3), np.float32)
    net = run({"a": a, "b": a.copy(), "sim": np.zeros(2, np.float32)},
              lay("loss", "ContrastiveLoss", ["a", "b", "sim"], ["loss"]))
    np.testing.assert_allclose(float(net.blobs["loss"].data), 0.5)  # Σ margin² / 2N = 2/4
    assert np.all(net.blobs["a"].diff == 0)


def test_contrastive_shape_errors():
    with pytest.raises(LayerParamError, match=r"\(4, 4\) and \(4, 3\)"):
        net_with({"a": np.zeros((4, 4)), "b": np.zeros((4, 3)), "sim": np.zeros(4)},
                 lay("loss", "ContrastiveLoss", ["a", "b", "sim"], ["loss"]))
    with pytest.raises(LayerParamError, match="sim"):
        net_with({"a": np.zeros((4, 4)), "b": np.zeros((4, 4)), "sim": np.zeros((4, 2))},
                 lay("loss", "ContrastiveLoss", ["a", "b", "sim"], ["loss"]))


# ------------------------------------------------------------------------------------------
# errors common to the loss layers
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_,bottoms", [
    ("SoftmaxWithLoss", ["x"]), ("SoftmaxWithLoss", ["x", "l", "l"]),
    ("EuclideanLoss", ["x"]), ("SigmoidCrossEntropyLoss", ["x", "l", "l"]),
    ("HingeLoss", ["x"]), ("MultinomialLogisticLoss", ["x"]),
    ("InfogainLoss", ["x"]), ("InfogainLoss", ["x", "l", "l", "l"]),
    ("ContrastiveLoss", ["x", "l"]), ("Accuracy", ["x"]), ("Softmax", ["x", "l"]),
])
def test_wrong_bottom_counts(type_, bottoms):
    with pytest.raises(NetError, match="bottom blob"):
        net_with({"x": np.zeros((4, 4)), "l": np.zeros((4, 4))},
                 lay("L", type_, bottoms, ["loss"]))


@pytest.mark.parametrize("type_,tops", [
    ("SoftmaxWithLoss", ["a", "b", "c"]), ("EuclideanLoss", ["a", "b"]),
    ("InfogainLoss", ["a", "b", "c"]), ("HingeLoss", ["a", "b"]),
])
def test_too_many_tops(type_, tops):
    with pytest.raises(NetError, match="top blob"):
        net_with({"x": np.zeros((4, 3)), "l": np.zeros(4), "H": np.zeros((3, 3))},
                 lay("L", type_, ["x", "l", "H"] if type_ == "InfogainLoss" else ["x", "l"],
                     tops))


@pytest.mark.parametrize("type_,xs,ls", [
    ("SoftmaxWithLoss", (4, 5), (4, 2)),
    ("SoftmaxWithLoss", (2, 5, 3), (2, 2)),
    ("EuclideanLoss", (2, 6), (2, 5)),
    ("SigmoidCrossEntropyLoss", (2, 6), (2, 5)),
    ("HingeLoss", (4, 5), (4, 2)),
    ("MultinomialLogisticLoss", (4, 5), (4, 2)),
    ("InfogainLoss", (4, 5), (4, 2)),
    ("Accuracy", (4, 5), (4, 2)),
])
def test_label_count_mismatch_names_both_shapes(type_, xs, ls):
    bottoms = ["x", "l", "H"] if type_ == "InfogainLoss" else ["x", "l"]
    with pytest.raises(LayerParamError) as e:
        net_with({"x": np.zeros(xs), "l": np.zeros(ls), "H": np.zeros((5, 5))},
                 lay("L", type_, bottoms, ["t"]))
    assert str(xs) in str(e.value) and str(ls) in str(e.value)
    assert "'L'" in str(e.value)


@pytest.mark.parametrize("type_", ["SoftmaxWithLoss", "EuclideanLoss", "HingeLoss",
                                   "SigmoidCrossEntropyLoss", "MultinomialLogisticLoss"])
def test_first_axis_mismatch(type_):
    with pytest.raises(LayerParamError, match=r"same first dimension.*\(4, 3\).*\(3, 4\)"):
        net_with({"x": np.zeros((4, 3)), "l": np.zeros((3, 4))}, lay("L", type_, ["x", "l"], ["t"]))


@pytest.mark.parametrize("type_,extra", [
    ("SoftmaxWithLoss", ""), ("HingeLoss", ""), ("MultinomialLogisticLoss", ""),
    ("SoftmaxWithLoss", "loss_param { ignore_label: 9 }"),
])
def test_label_out_of_range(type_, extra):
    net = net_with({"x": np.full((3, 4), 0.25, np.float32), "l": np.array([0, 4, -1], np.float32)},
                   lay("L", type_, ["x", "l"], ["t"], extra))
    with pytest.raises(LayerParamError, match=r"'L'.*out of range \[0, 4\): 4, -1"):
        net.forward()


def test_ignored_label_may_be_out_of_range():
    x = rng(21).normal(size=(3, 4)).astype(np.float32)
    net = run({"x": x, "l": np.array([0, 255, 3], np.float32)},
              lay("L", "SoftmaxWithLoss", ["x", "l"], ["t"], "loss_param { ignore_label: 255 }"))
    want, _ = softmax_loss_np(x, [0, 255, 3], ignore=255)
    np.testing.assert_allclose(float(net.blobs["t"].data), want, rtol=1e-5)


def test_unchecked_out_of_range_labels_poison_the_loss(monkeypatch):
    # off the CPU, after the first pass, labels are not checked: the loss turns NaN instead
    monkeypatch.setattr(loss_mod, "_tracing", lambda: True)
    x = np.full((2, 3), 0.5, np.float32)
    bad = np.array([1, 7], np.float32)
    for type_ in ("SoftmaxWithLoss", "HingeLoss", "MultinomialLogisticLoss", "Accuracy"):
        net = net_with({"x": x, "l": bad}, lay("L", type_, ["x", "l"], ["t"]))
        net.forward()
        assert math.isnan(float(net.blobs["t"].data)), type_
    net = net_with({"x": x, "l": bad, "H": np.eye(3)},
                   lay("L", "InfogainLoss", ["x", "l", "H"], ["t"]))
    net.forward()
    assert math.isnan(float(net.blobs["t"].data))


def label_from_learnable_layer(type_, propagate_down=""):
    return (inp("x", (4, 3)) + inp("d", (4, 2)) +
            'layer { name: "ip" type: "InnerProduct" bottom: "d" top: "lab" '
            'inner_product_param { num_output: 1 weight_filler { type: "constant" value: 0 } } }\n'
            + lay("L", type_, ["x", "lab"], ["t"], propagate_down))


@pytest.mark.parametrize("type_", ["SoftmaxWithLoss", "HingeLoss", "MultinomialLogisticLoss",
                                   "SigmoidCrossEntropyLoss"])
def test_backpropagating_to_label_is_an_error(type_):
    if type_ == "SigmoidCrossEntropyLoss":
        text = (inp("x", (4, 1)) + inp("d", (4, 2)) +
                label_from_learnable_layer(type_).split("\n", 2)[2])
    else:
        text = label_from_learnable_layer(type_)
    net = decaffe.Net(text, TRAIN)
    with pytest.raises(LayerParamError, match="propagate_down"):
        net.forward()
    # propagate_down: false on the label, as Caffe requires, works
    net = decaffe.Net(text.replace('top: "t"', 'top: "t" propagate_down: true '
                                               'propagate_down: false'), TRAIN)
    net.forward()
    net.backward()


def test_label_bottoms_never_forced_backward():
    net = net_with({"x": np.zeros((4, 3)), "l": np.zeros(4), "H": np.eye(3)},
                   lay("L", "InfogainLoss", ["x", "l", "H"], ["t"]))
    assert net.bottom_need_backward(3) == [True, False, False]
    net = net_with({"a": np.zeros((4, 3)), "b": np.zeros((4, 3)), "s": np.zeros(4)},
                   lay("L", "ContrastiveLoss", ["a", "b", "s"], ["t"]))
    assert net.bottom_need_backward(3) == [True, True, False]
    net = net_with({"x": np.zeros((4, 3)), "l": np.zeros(4)},
                   lay("L", "SoftmaxWithLoss", ["x", "l"], ["t"]))
    assert net.bottom_need_backward(2) == [True, False]
    net = net_with({"a": np.zeros((4, 3)), "b": np.zeros((4, 3))},
                   lay("L", "EuclideanLoss", ["a", "b"], ["t"]))
    assert net.bottom_need_backward(2) == [True, True]


def test_losses_are_scalars_of_the_nets_dtype():
    net = net_with({"a": np.ones((2, 3)), "b": np.zeros((2, 3))},
                   lay("L", "EuclideanLoss", ["a", "b"], ["t"]), dtype=torch.float64)
    net.forward()
    assert net.blobs["t"].data.shape == () and net.blobs["t"].data.dtype == np.float64


def test_errors_are_decaffe_errors():
    assert issubclass(LayerParamError, DecaffeError)

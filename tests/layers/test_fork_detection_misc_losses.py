"""CenterLoss (ydwen/caffe-face) and SegAccuracy (DeepLab), decaffe/layers/forks/misc.py, and
MarginInnerProduct (sphereface), decaffe/layers/forks/face.py: values from the forks' definitions,
their own (non-derivative) updates, finite-difference checks where the backward is a
derivative, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from prototxt_text import inp, lay

import decaffe
from decaffe.errors import DecaffeError

# ------------------------------------------------------------------------------------------
# CenterLoss
# ------------------------------------------------------------------------------------------
CENTER = ('center_loss_param { num_output: 4 center_filler { type: "gaussian" std: 1 } }')


def test_center_loss_value_and_the_forks_updates():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 1, 1))
    label = np.array([0, 2, 2, 3, 0, 2], np.float64)
    text = ("force_backward: true\n" + inp("x", x.shape) + inp("label", (6,))
            + lay("CenterLoss", ["x", "label"], ["loss"], "loss_weight: 0.5 " + CENTER,
                  name="center_loss"))
    net = decaffe.Net(text, decaffe.TRAIN, dtype=torch.float64)
    centers = rng.standard_normal((4, 3))
    net.params["center_loss"][0].data[...] = centers
    net.blobs["x"].data[...] = x
    net.blobs["label"].data[...] = label
    net.forward()
    net.backward()
    feats = x.reshape(6, 3)
    dist = feats - centers[label.astype(int)]
    assert net.blobs["loss"].data == pytest.approx((dist ** 2).sum() / 12, rel=1e-12)
    np.testing.assert_allclose(net.blobs["x"].diff.reshape(6, 3), 0.5 * dist / 6, rtol=1e-12)
    want = np.zeros((4, 3))
    for j in range(4):
        members = label == j
        want[j] = (centers[j] - feats[members]).sum(0) / (1 + members.sum())
    # not scaled by the loss weight, as the fork's Backward_cpu
    np.testing.assert_allclose(net.params["center_loss"][0].diff, want, rtol=1e-12)
    assert not net.params["center_loss"][0].diff[1].any()  # no sample of class 1


def test_center_loss_blob_shape_and_filler():
    net = decaffe.Net(inp("x", (5, 2, 3)) + inp("label", (5,))
                      + lay("CenterLoss", ["x", "label"], ["loss"], CENTER, name="c"),
                      decaffe.TRAIN)
    assert net.params["c"][0].data.shape == (4, 6)
    assert net.params["c"][0].data.std() > 0


def test_center_loss_feature_gradient_check():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4))
    label = np.array([1, 0, 1, 3, 2], np.float64)
    check_gradients(inp("x", x.shape) + inp("label", (5,))
                    + lay("CenterLoss", ["x", "label"], ["loss"], CENTER, name="c"),
                    {"x": x, "label": label}, check_inputs=["x"], check_params=False)


def test_center_loss_refusals():
    with pytest.raises(DecaffeError, match="num_output"):
        decaffe.Net(inp("x", (5, 4)) + inp("label", (5,))
                    + lay("CenterLoss", ["x", "label"], ["loss"], name="center"),
                    decaffe.TRAIN)
    net = decaffe.Net(inp("x", (2, 4)) + inp("label", (2,))
                      + lay("CenterLoss", ["x", "label"], ["loss"], CENTER), decaffe.TRAIN)
    net.blobs["label"].data[...] = [1, 7]
    with pytest.raises(DecaffeError, match="labels must be in"):
        net.forward()


# ------------------------------------------------------------------------------------------
# SegAccuracy
# ------------------------------------------------------------------------------------------
def seg_ref(scores, label, ignore, c):
    m = np.zeros((c, c), np.int64)
    n, _, h, w = scores.shape
    for b in range(n):
        for y in range(h):
            for x in range(w):
                gt = int(label[b, 0, y, x])
                if gt in ignore:
                    continue
                ranked = sorted(((scores[b, k, y, x], k) for k in range(c)), reverse=True)
                m[gt, ranked[0][1]] += 1
    total = m.sum()
    acc = np.trace(m) / total if total else 0
    rec = [m[i, i] / m[i].sum() for i in range(c) if m[i].sum() > 0]
    jac = []
    for i in range(c):
        inter, union = m[i, i], m[i].sum() + m[:, i].sum() - m[i, i]
        jac.append(1.0 if inter == union else inter / union)
    return np.array([acc, np.mean(rec) if rec else 0, np.mean(jac)])


@pytest.mark.parametrize("seed", [0, 1])
def test_seg_accuracy_matches_deeplab(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (2, 4, 5, 6)).astype(np.float32)  # many ties
    label = rng.integers(0, 4, (2, 1, 5, 6)).astype(np.float32)
    label[0, 0, :2] = 255
    label[label == 3] = 2  # class 3 absent from the labels
    text = (inp("s", scores.shape) + inp("l", label.shape)
            + lay("SegAccuracy", ["s", "l"], ["acc"], "seg_accuracy_param { ignore_label: 255 }"))
    net = decaffe.Net(text, decaffe.TEST)
    net.blobs["s"].data[...] = scores
    net.blobs["l"].data[...] = label
    net.forward()
    np.testing.assert_allclose(net.blobs["acc"].data.reshape(3),
                               seg_ref(scores, label, {255}, 4), rtol=1e-6)


def test_seg_accuracy_reset_false_accumulates():
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal((1, 3, 4, 4)).astype(np.float32),
                rng.integers(0, 3, (1, 1, 4, 4)).astype(np.float32)) for _ in range(2)]
    text = (inp("s", (1, 3, 4, 4)) + inp("l", (1, 1, 4, 4))
            + lay("SegAccuracy", ["s", "l"], ["acc"], "seg_accuracy_param { reset: false }"))
    net = decaffe.Net(text, decaffe.TEST)
    for s, lab in batches:
        net.blobs["s"].data[...] = s
        net.blobs["l"].data[...] = lab
        net.forward()
    both = seg_ref(np.concatenate([b[0] for b in batches]),
                   np.concatenate([b[1] for b in batches]), set(), 3)
    np.testing.assert_allclose(net.blobs["acc"].data.reshape(3), both, rtol=1e-6)


def test_seg_accuracy_refuses_unexpected_labels_and_shapes():
    text = (inp("s", (1, 3, 2, 2)) + inp("l", (1, 1, 2, 2))
            + lay("SegAccuracy", ["s", "l"], ["acc"], name="accuracy"))
    net = decaffe.Net(text, decaffe.TEST)
    net.blobs["l"].data[...] = 5
    with pytest.raises(DecaffeError, match="labels must be in") as e:
        net.forward()
    assert "accuracy" in str(e.value)
    with pytest.raises(DecaffeError, match="must be"):
        decaffe.Net(inp("s", (1, 3, 2, 2)) + inp("l", (1, 1, 2, 3))
                    + lay("SegAccuracy", ["s", "l"], ["acc"]), decaffe.TEST)


# ------------------------------------------------------------------------------------------
# MarginInnerProduct (sphereface)
# ------------------------------------------------------------------------------------------
def margin_ref(x, w, label, margin, lam):
    """sphereface's Forward_cpu and Backward_cpu (x diff for top_diff = g), in float64."""
    w = w / np.sqrt((w * w).sum(1, keepdims=True))
    m, n = x.shape[0], w.shape[0]
    xn = np.sqrt((x * x).sum(1))
    xw = x @ w.T
    cos = xw / xn[:, None]
    s0 = np.sign(cos)
    top = xw.copy()

    def terms(c, s_0):
        c2, c3, c4 = c ** 2, c ** 3, c ** 4
        if margin == "DOUBLE":
            return 2 * s_0 * c2 - 1, 4 * s_0 * c, -(2 * s_0 * c2 + 1)
        if margin == "TRIPLE":
            s1 = np.sign(abs(c) - 0.5)
            s2 = s_0 * (1 + s1) - 2
            return s1 * (4 * c3 - 3 * c) + s2, s1 * (12 * c2 - 3), -(8 * s1 * c3 - s2)
        s3 = s_0 * np.sign(2 * c2 - 1)
        s4 = 2 * s_0 + s3 - 3
        return (s3 * (8 * c4 - 8 * c2 + 1) + s4, s3 * (32 * c3 - 16 * c),
                -(s3 * (24 * c4 - 8 * c2 - 1) - s4))

    for i in range(m):
        j = int(label[i])
        top[i, j] = xn[i] * terms(cos[i, j], s0[i, j])[0]
    top = (top + lam * xw) / (1 + lam)
    g = np.random.default_rng(9).standard_normal((m, n))
    dx = np.zeros_like(x)
    for i in range(m):
        for j in range(n):
            if j != int(label[i]):
                dx[i] += g[i, j] / (1 + lam) * w[j]
            else:
                _, cw, cx = terms(cos[i, j], s0[i, j])
                cx = cx / xn[i]
                u = math.sqrt(cw * cw + cx * cx)
                dx[i] += g[i, j] / (1 + lam) * (cw / u * w[j] + cx / u * x[i])
    dx += lam / (1 + lam) * g @ w
    return top, g, dx, g.T @ x, w



@pytest.mark.parametrize("margin", ["DOUBLE", "TRIPLE", "QUADRUPLE"])
def test_margin_inner_product_matches_sphereface(margin):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 6))
    w0 = rng.standard_normal((4, 6))
    label = np.array([0, 3, 1, 1, 2], np.float64)
    body = (f"margin_inner_product_param {{ num_output: 4 type: {margin} base: 1000 "
            "gamma: 0.12 power: 1 iteration: 10 lambda_min: 5 "
            'weight_filler { type: "xavier" } }')
    text = ("force_backward: true\n" + inp("x", x.shape) + inp("label", (5,))
            + lay("MarginInnerProduct", ["x", "label"], ["fc", "lambda"], body
                  + " propagate_down: true propagate_down: false", name="fc6"))
    net = decaffe.Net(text, decaffe.TRAIN, dtype=torch.float64)
    net.params["fc6"][0].data[...] = w0
    net.blobs["x"].data[...] = x
    net.blobs["label"].data[...] = label
    net.forward()
    lam = max(1000 * (1 + 0.12 * 11) ** -1, 5)
    assert net.blobs["lambda"].data[0] == pytest.approx(lam, rel=1e-6)
    top, g, dx, dw, w_norm = margin_ref(x, w0, label, margin, lam)
    np.testing.assert_allclose(net.blobs["fc"].data, top, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(net.params["fc6"][0].data, w_norm, rtol=1e-6)
    net.blobs["fc"].diff[...] = g
    net.params["fc6"][0].diff[...] = 0
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, dx, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(net.params["fc6"][0].diff, dw, rtol=1e-6, atol=1e-10)
    net.forward()  # the iteration counter advances with every pass
    assert net.blobs["lambda"].data[0] == pytest.approx(max(1000 / (1 + 0.12 * 12), 5))


def test_margin_inner_product_single_gradient_check():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4))
    label = np.array([1, 0, 2], np.float64)
    w = rng.standard_normal((3, 4))
    w /= np.sqrt((w * w).sum(1, keepdims=True))  # already unit rows: stable under the step
    check_gradients(inp("x", x.shape) + inp("label", (3,))
                    + lay("MarginInnerProduct", ["x", "label"], ["fc"],
                          "margin_inner_product_param { num_output: 3 type: SINGLE }",
                          name="fc"),
                    {"x": x, "label": label}, check_inputs=["x"], check_params=False,
                    params={"fc": [w]})

"""R-FCN's online hard example mining layers (decaffe/layers/forks/rcnn.py): SoftmaxWithLossOHEM,
SmoothL1LossOHEM, BoxAnnotatorOHEM — against references written from the forks' code, their
gradients, and the OHEM chain of R-FCN's training prototxts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from prototxt_text import inp, lay

import decaffe
from decaffe.errors import DecaffeError

FLT_MIN = np.finfo(np.float32).tiny




def run(text, inputs, dtype=torch.float64, backward=True):
    net = decaffe.Net("force_backward: true\n" + text, decaffe.TRAIN, dtype=dtype)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    if backward:
        net.backward()
    return net


def softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------------------------------
# SoftmaxWithLossOHEM
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["", "normalization: VALID", "normalization: PRE_FIXED "
                                  "pre_fixed_normalizer: 4", "normalization: BATCH_SIZE"])
def test_softmax_ohem_loss_and_per_instance_loss(norm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 4))
    label = rng.integers(0, 4, 10).astype(np.float64)
    label[[2, 7]] = -1
    net = run(inp("x", x.shape) + inp("label", label.shape)
              + lay("SoftmaxWithLossOHEM", ["x", "label"], ["loss", "prob", "per"],
                    f"loss_weight: 1 loss_weight: 0 loss_weight: 0 propagate_down: true "
                    f"propagate_down: false loss_param {{ ignore_label: -1 {norm} }}"),
              {"x": x, "label": label})
    p = softmax(x)
    valid = label >= 0
    nll = np.where(valid, -np.log(np.maximum(p[np.arange(10), np.maximum(label, 0).astype(int)],
                                             FLT_MIN)), 0)
    normaliser = {"": 8, "normalization: VALID": 8, "normalization: BATCH_SIZE": 10}.get(norm, 4)
    assert net.blobs["loss"].data == pytest.approx(nll.sum() / normaliser, rel=1e-12)
    np.testing.assert_allclose(net.blobs["prob"].data, p, rtol=1e-12)
    np.testing.assert_allclose(net.blobs["per"].data, nll, rtol=1e-12)
    onehot = np.eye(4)[np.maximum(label, 0).astype(int)]
    want = np.where(valid[:, None], p - onehot, 0) / normaliser
    np.testing.assert_allclose(net.blobs["x"].diff, want, rtol=1e-10, atol=1e-14)


def test_softmax_ohem_gradient_check():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3))
    label = rng.integers(0, 3, 6).astype(np.float64)
    check_gradients(inp("x", x.shape) + inp("label", label.shape)
                    + lay("SoftmaxWithLossOHEM", ["x", "label"], ["loss"],
                          "loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 3 }"),
                    {"x": x, "label": label}, check_inputs=["x"])


# ------------------------------------------------------------------------------------------
# SmoothL1LossOHEM
# ------------------------------------------------------------------------------------------
def smooth(d):
    return np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)


@pytest.mark.parametrize("norm,normaliser", [("", 6), ("normalization: FULL", 6),
                                             ("normalization: BATCH_SIZE", 6),
                                             ("normalization: NONE", 1),
                                             ("normalization: PRE_FIXED "
                                              "pre_fixed_normalizer: 128", 128)])
def test_smooth_l1_ohem_with_weights(norm, normaliser):
    rng = np.random.default_rng(2)
    shape = (6, 8)
    a, b = rng.standard_normal(shape) * 1.5, rng.standard_normal(shape)
    w = (rng.random(shape) > 0.5).astype(np.float64) * rng.choice([1.0, 2.0], shape)
    net = run("".join(inp(k, shape) for k in "abw")
              + lay("SmoothL1LossOHEM", list("abw"), ["loss", "per"],
                    f"loss_weight: 1 loss_weight: 0 loss_param {{ {norm} }}"),
              {"a": a, "b": b, "w": w})
    d = w * (a - b)
    e = smooth(d)
    assert net.blobs["loss"].data == pytest.approx(e.sum() / normaliser, rel=1e-12)
    np.testing.assert_allclose(net.blobs["per"].data.reshape(6), e.sum(1), rtol=1e-12)
    # caffe-priv (fec9ec1) and R-FCN's SmoothL1Loss: top[1]->Reshape(num, 1, height, width),
    # four axes whatever the bottom's (Intel extendedcaffe's R×1 is a later port)
    assert net.blobs["per"].data.shape == (6, 1, 1, 1)
    # the fork's gradient: smoothL1'(w·(a−b)), not multiplied by w
    g = np.where(np.abs(d) < 1, d, np.sign(d)) / normaliser
    np.testing.assert_allclose(net.blobs["a"].diff, g, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(net.blobs["b"].diff, -g, rtol=1e-10, atol=1e-15)
    assert not net.blobs["w"].diff.any()


def test_smooth_l1_ohem_gradient_check_without_weights():
    rng = np.random.default_rng(3)
    shape = (4, 3, 2, 2)
    b = rng.standard_normal(shape)
    d = rng.choice([-1, 1], shape) * rng.uniform(0.1, 0.8, shape)
    d[0] *= 3
    check_gradients(inp("a", shape) + inp("b", shape)
                    + lay("SmoothL1LossOHEM", ["a", "b"], ["loss"]),
                    {"a": b + d, "b": b}, check_inputs=["a", "b"], step=1e-3)


def test_smooth_l1_ohem_refuses_mismatched_bottoms():
    text = inp("a", (4, 8)) + inp("b", (4, 6)) + lay("SmoothL1LossOHEM", ["a", "b"], ["loss"])
    with pytest.raises(DecaffeError, match="must agree"):
        decaffe.Net(text, decaffe.TRAIN)


# ------------------------------------------------------------------------------------------
# BoxAnnotatorOHEM
# ------------------------------------------------------------------------------------------
def annotate_ref(rois, loss, labels, weights, per_img, ignore):
    order = sorted(range(len(loss)), key=lambda i: -loss[i])
    left = {}
    out_l = np.full_like(labels, ignore)
    out_w = np.zeros_like(weights)
    for i in order:
        b = int(rois[i, 0])
        left.setdefault(b, per_img)
        if left[b] > 0:
            left[b] -= 1
            out_l[i] = labels[i]
            out_w[i] = weights[i]
    return out_l, out_w


def test_box_annotator_keeps_the_hardest_per_image():
    rng = np.random.default_rng(4)
    r = 14
    rois = np.zeros((r, 5))
    rois[7:, 0] = 1
    rois[:, 1:] = rng.random((r, 4)) * 50
    loss = rng.permutation(r).astype(np.float64)
    labels = rng.integers(0, 5, r).astype(np.float64)
    weights = rng.random((r, 8))
    net = run(inp("rois", (r, 5)) + inp("loss", (r, 1)) + inp("labels", (r,))
              + inp("w", (r, 8))
              + lay("BoxAnnotatorOHEM", ["rois", "loss", "labels", "w"], ["lab", "bw"],
                    "box_annotator_ohem_param { roi_per_img: 3 ignore_label: -1 }"),
              {"rois": rois, "loss": loss[:, None], "labels": labels, "w": weights},
              backward=False)
    want_l, want_w = annotate_ref(rois, loss, labels, weights, 3, -1)
    np.testing.assert_array_equal(net.blobs["lab"].data.reshape(r), want_l)
    np.testing.assert_array_equal(net.blobs["bw"].data.reshape(r, 8), want_w)
    assert (net.blobs["lab"].data != -1).sum() == 6


def test_box_annotator_requires_roi_per_img():
    text = (inp("rois", (2, 5)) + inp("loss", (2, 1)) + inp("labels", (2, 1)) + inp("w", (2, 4))
            + lay("BoxAnnotatorOHEM", ["rois", "loss", "labels", "w"], ["lab", "bw"],
                  name="annotator"))
    with pytest.raises(DecaffeError, match="roi_per_img") as e:
        decaffe.Net(text, decaffe.TRAIN)
    assert "annotator" in str(e.value)


# ------------------------------------------------------------------------------------------
# the OHEM chain of R-FCN's *_ohem.prototxt (py-R-FCN's labels are (R, 1, 1, 1), so the
# per-instance losses of both OHEM losses have one shape for the Eltwise sum)
# ------------------------------------------------------------------------------------------
OHEM_NET = (
    inp("cls_score", (12, 3)) + inp("bbox_pred", (12, 8)) + inp("labels", (12, 1, 1, 1))
    + inp("bbox_targets", (12, 8)) + inp("bbox_inside_weights", (12, 8)) + inp("rois", (12, 5))
    + lay("SoftmaxWithLossOHEM", ["cls_score", "labels"],
          ["temp_loss_cls", "temp_prob_cls", "per_roi_loss_cls"],
          "loss_weight: 0 loss_weight: 0 loss_weight: 0 propagate_down: false "
          "propagate_down: false", name="per_roi_loss_cls")
    + lay("SmoothL1LossOHEM", ["bbox_pred", "bbox_targets", "bbox_inside_weights"],
          ["temp_loss_bbox", "per_roi_loss_bbox"],
          "loss_weight: 0 loss_weight: 0 propagate_down: false propagate_down: false "
          "propagate_down: false", name="per_roi_loss_bbox")
    + lay("Eltwise", ["per_roi_loss_cls", "per_roi_loss_bbox"], ["per_roi_loss"],
          "propagate_down: false propagate_down: false", name="per_roi_loss")
    + lay("BoxAnnotatorOHEM", ["rois", "per_roi_loss", "labels", "bbox_inside_weights"],
          ["labels_ohem", "bbox_loss_weights_ohem"],
          "propagate_down: false propagate_down: false propagate_down: false "
          "propagate_down: false box_annotator_ohem_param { roi_per_img: 4 ignore_label: -1 }",
          name="annotator_detector")
    + lay("SoftmaxWithLoss", ["cls_score", "labels_ohem"], ["loss_cls"],
          "loss_weight: 1 propagate_down: true propagate_down: false "
          "loss_param { ignore_label: -1 normalization: VALID }", name="loss")
    + lay("SmoothL1LossOHEM", ["bbox_pred", "bbox_targets", "bbox_loss_weights_ohem"],
          ["loss_bbox"], "loss_weight: 1 propagate_down: true propagate_down: false "
          "propagate_down: false loss_param { normalization: PRE_FIXED "
          "pre_fixed_normalizer: 4 }", name="loss_bbox"))


def test_rfcn_ohem_chain_trains_only_the_hard_rois():
    rng = np.random.default_rng(5)
    ins = {"cls_score": rng.standard_normal((12, 3)), "bbox_pred": rng.standard_normal((12, 8)),
           "labels": rng.integers(0, 3, (12, 1, 1, 1)).astype(np.float64),
           "bbox_targets": rng.standard_normal((12, 8)),
           "bbox_inside_weights": np.repeat(rng.random((12, 1)) > 0.3, 8, 1).astype(float),
           "rois": np.zeros((12, 5))}
    ins["rois"][6:, 0] = 1
    net = decaffe.Net("force_backward: true\n" + OHEM_NET, decaffe.TRAIN, dtype=torch.float64)
    for k, v in ins.items():
        net.blobs[k].data[...] = v
    net.forward()
    net.backward()
    per = net.blobs["per_roi_loss"].data.reshape(12)
    kept = net.blobs["labels_ohem"].data.reshape(12) != -1
    assert kept.sum() == 8  # 4 per image
    for img in (slice(0, 6), slice(6, 12)):
        assert per[img][kept[img]].min() >= per[img][~kept[img]].max()
    grad_cls = net.blobs["cls_score"].diff
    assert np.abs(grad_cls[~kept]).max() == 0 and np.abs(grad_cls[kept]).max() > 0
    grad_box = net.blobs["bbox_pred"].diff
    assert np.abs(grad_box[~kept]).max() == 0

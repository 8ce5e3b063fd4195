"""eric612/MobileNet-YOLO's layers (decaffe/layers/forks/yolo.py): YoloDetectionOutput,
Yolov3DetectionOutput, Reorg and the Yolov3 loss against loop references written from the
fork's Forward_cpu/Backward_cpu and darknet's reorg_cpu (Yolov3's backward is the fork's
delta, not a derivative: checked against the reference); the fork's refusals. Reorg's
finite-difference check is tests/layer_db.py's export_yolo_misc sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from prototxt_text import inp, lay

import decaffe
from decaffe.errors import DecaffeError


def forward(text, inputs):
    net = decaffe.Net(text, decaffe.TEST)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    return net


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def iou_center(a, b):
    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0 if (w < 0 or h < 0) else w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def nms_rows(cands, thresh, num):
    """cands: (confidence, class, (x, y, w, h)) in enumeration order."""
    if not cands:
        return np.array([[i] + [-1] * 6 for i in range(num)], np.float64)
    cands = sorted(cands, key=lambda c: -c[0])  # stable
    dead = [False] * len(cands)
    for i in range(len(cands) - 1):
        if dead[i]:
            continue
        for j in range(i + 1, len(cands)):
            if not dead[j] and iou_center(cands[i][2], cands[j][2]) >= thresh:
                dead[j] = True
    rows = []
    for (c, k, (x, y, w, h)), d in zip(cands, dead):
        if not d:
            rows.append([0, k + 1, c, x - w / 2, y - h / 2, x + w / 2, y + h / 2])
    return np.array(rows)


# ------------------------------------------------------------------------------------------
# Yolov3DetectionOutput
# ------------------------------------------------------------------------------------------
BIASES = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119]
V3_PARAM = ("yolov3_detection_output_param { num_classes: 3 num_box: 3 "
            "confidence_threshold: 0.3 nms_threshold: 0.45 "
            + " ".join(f"biases: {b}" for b in BIASES)
            + " anchors_scale: 32 anchors_scale: 16 mask_group_num: 2 "
            "mask: 3 mask: 4 mask: 5 mask: 0 mask: 1 mask: 2 }")


def yolov3_ref(maps, num_classes, num_box, thresh, nms, mask, scales, groups):
    cands = []
    length = 5 + num_classes
    for t, x in enumerate(maps):
        n, _, side, _ = x.shape
        for b in range(n):
            v = x[b].reshape(-1)[:num_box * length * side * side].reshape(num_box, length,
                                                                          side * side)
            for s in range(side * side):
                row, col = divmod(s, side)
                for a in range(num_box):
                    m = mask[a + t * groups]
                    obj = sig(v[a, 4, s])
                    box = ((col + sig(v[a, 0, s])) / side, (row + sig(v[a, 1, s])) / side,
                           math.exp(v[a, 2, s]) * BIASES[2 * m] / (side * scales[t]),
                           math.exp(v[a, 3, s]) * BIASES[2 * m + 1] / (side * scales[t]))
                    for k in range(num_classes):
                        score = sig(v[a, 5 + k, s]) * obj
                        if score > thresh:
                            cands.append((score, k, box))
    return nms_rows(cands, nms, maps[-1].shape[0])


@pytest.mark.parametrize("seed,batch", [(0, 1), (1, 2), (2, 1)])
def test_yolov3_detection_output_matches_the_fork(seed, batch):
    rng = np.random.default_rng(seed)
    maps = [rng.normal(0, 1.5, (batch, 24, 3, 3)), rng.normal(0, 1.5, (batch, 24, 6, 6))]
    maps = [m.astype(np.float32) for m in maps]
    net = forward(inp("a", maps[0].shape) + inp("b", maps[1].shape)
                  + lay("Yolov3DetectionOutput", ["a", "b"], ["det"], V3_PARAM),
                  {"a": maps[0], "b": maps[1]})
    want = yolov3_ref([m.astype(np.float64) for m in maps], 3, 3, 0.3, 0.45, [3, 4, 5, 0, 1, 2],
                      [32, 16], 3)
    got = net.blobs["det"].data
    assert got.shape == (1, 1, len(want), 7)
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-4, atol=1e-5)
    assert (got[0, 0, :, 0] == 0).all()


def test_yolov3_detection_output_no_detection_rows():
    maps = [np.full((2, 24, 3, 3), -8, np.float32), np.full((2, 24, 6, 6), -8, np.float32)]
    net = forward(inp("a", maps[0].shape) + inp("b", maps[1].shape)
                  + lay("Yolov3DetectionOutput", ["a", "b"], ["det"], V3_PARAM),
                  {"a": maps[0], "b": maps[1]})
    np.testing.assert_array_equal(net.blobs["det"].data[0, 0],
                                  [[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]])


def test_yolov3_detection_output_refusals():
    with pytest.raises(DecaffeError, match="mask_group_num"):
        decaffe.Net(inp("a", (1, 24, 3, 3))
                    + lay("Yolov3DetectionOutput", ["a"], ["det"], V3_PARAM), decaffe.TEST)
    with pytest.raises(DecaffeError, match="num_classes"):
        decaffe.Net(inp("a", (1, 24, 3, 3))
                    + lay("Yolov3DetectionOutput", ["a"], ["det"],
                          "yolov3_detection_output_param { mask_group_num: 1 }"), decaffe.TEST)
    with pytest.raises(DecaffeError, match="square"):
        decaffe.Net(inp("a", (1, 24, 3, 4)) + inp("b", (1, 24, 6, 6))
                    + lay("Yolov3DetectionOutput", ["a", "b"], ["det"], V3_PARAM), decaffe.TEST)


# ------------------------------------------------------------------------------------------
# YoloDetectionOutput (YOLOv2)
# ------------------------------------------------------------------------------------------
V2_BIASES = [1.08, 1.19, 3.42, 4.41, 6.63, 11.38]


def yolov2_ref(maps, num_classes, num_box, thresh, nms):
    cands = []
    for x in maps:
        n, c, side, _ = x.shape
        per = c // num_box
        for b in range(n):
            for j in range(side):
                for i in range(side):
                    for a in range(num_box):
                        t = x[b, a * per:(a + 1) * per, j, i]
                        logits = t[5:5 + num_classes]
                        e = np.exp(logits - logits.max())
                        p = e / e.sum()
                        k = int(np.argmax(p))
                        score = sig(t[4]) * p[k]
                        if score >= thresh:
                            cands.append((score, k, ((i + sig(t[0])) / side,
                                                     (j + sig(t[1])) / side,
                                                     math.exp(t[2]) * V2_BIASES[2 * a] / side,
                                                     math.exp(t[3]) * V2_BIASES[2 * a + 1] / side)))
    return nms_rows(cands, nms, maps[0].shape[0])


@pytest.mark.parametrize("two_maps", [False, True])
def test_yolo_detection_output_matches_the_fork(two_maps):
    rng = np.random.default_rng(7)
    maps = [rng.normal(0, 1.5, (1, 3 * 9, 4, 4)).astype(np.float32)]
    if two_maps:
        maps.append(rng.normal(0, 1.5, (1, 3 * 9, 2, 2)).astype(np.float32))
    names = ["a", "b"][:len(maps)]
    body = ("yolo_detection_output_param { num_classes: 4 num_box: 3 "
            "confidence_threshold: 0.25 nms_threshold: 0.45 "
            + " ".join(f"biases: {b}" for b in V2_BIASES) + " }")
    net = forward("".join(inp(k, m.shape) for k, m in zip(names, maps))
                  + lay("YoloDetectionOutput", names, ["det"], body),
                  dict(zip(names, maps)))
    want = yolov2_ref([m.astype(np.float64) for m in maps], 4, 3, 0.25, 0.45)
    got = net.blobs["det"].data
    assert got.shape == (1, 1, len(want), 7)
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Reorg
# ------------------------------------------------------------------------------------------
def reorg_cpu(x_flat, w, h, c, batch, stride, forward_flag):
    """darknet's reorg_cpu, loop for loop."""
    out = np.zeros_like(x_flat)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward_flag:
                        out[out_index] = x_flat[in_index]
                    else:
                        out[in_index] = x_flat[out_index]
    return out


@pytest.mark.parametrize("reverse,shape,stride", [(False, (2, 8, 4, 6), 2),
                                                   (False, (1, 9, 6, 3), 3),
                                                   (True, (2, 8, 3, 2), 2)])
def test_reorg_matches_darknet(reverse, shape, stride):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    net = forward(inp("x", shape) + lay("Reorg", ["x"], ["y"],
                                        f"reorg_param {{ stride: {stride} "
                                        f"reverse: {'true' if reverse else 'false'} }}"),
                  {"x": x})
    n, c, h, w = shape
    want = reorg_cpu(x.reshape(-1), w, h, c, n, stride, reverse)
    y = net.blobs["y"].data
    if reverse:
        assert y.shape == (n, c // stride ** 2, h * stride, w * stride)
    else:
        assert y.shape == (n, c * stride ** 2, h // stride, w // stride)
    np.testing.assert_array_equal(y.reshape(-1), want)


@pytest.mark.parametrize("shape,body,msg", [
    ((1, 6, 4, 4), "reorg_param { stride: 2 }", "multiple of stride"),
    ((1, 8, 5, 4), "reorg_param { stride: 2 }", "multiples of the stride"),
    ((1, 8, 4, 4), "", "stride must be given"),
])
def test_reorg_refusals(shape, body, msg):
    with pytest.raises(DecaffeError, match=msg):
        decaffe.Net(inp("x", shape) + lay("Reorg", ["x"], ["y"], body, name="reorg1"),
                    decaffe.TEST)


# ------------------------------------------------------------------------------------------
# Yolov3 (loss)
# ------------------------------------------------------------------------------------------
Y3_BIASES = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119]


def yolov3_loss_ref(x, labels, num_class, num, scale, thresh, obj_s, cls_s, coord_s, mask,
                    logic):
    """eric612's Yolov3Layer::Forward_cpu/Backward_cpu, scalar loops in float64."""
    n, _, side, _ = x.shape
    length = 5 + num_class
    stride = side * side
    flat = x.reshape(n, -1)
    swap = flat.copy()
    diff = np.zeros_like(flat)
    for b in range(n):
        for k in range(num * length):
            if k % length not in (2, 3):
                swap[b, k * stride:(k + 1) * stride] = 1 / (1 + np.exp(-flat[b, k * stride:
                                                                             (k + 1) * stride]))
    nb = len(Y3_BIASES) // 2
    for b in range(n):
        lab = labels[b].reshape(300, 5)
        for s in range(stride):
            for a in range(num):
                idx = a * length * stride + s
                y2, x2 = divmod(s, side)
                m = mask[a]
                pred = ((x2 + swap[b, idx]) / side, (y2 + swap[b, idx + stride]) / side,
                        math.exp(swap[b, idx + 2 * stride]) * Y3_BIASES[2 * m] / (side * scale),
                        math.exp(swap[b, idx + 3 * stride]) * Y3_BIASES[2 * m + 1]
                        / (side * scale))
                best = 0.0
                for t in range(300):
                    if not lab[t, 1]:
                        break
                    best = max(best, iou_center(pred, lab[t, 1:]))
                diff[b, idx + 4 * stride] = 0 if best > thresh else swap[b, idx + 4 * stride]
        for t in range(300):
            cls, tx, ty, tw, th = lab[t]
            if not tw:
                break
            i, j = int(tx * side), int(ty * side)
            best_n, best_iou = -1, 0.0
            for k in range(nb):
                iou = iou_center((0, 0, Y3_BIASES[2 * k] / (side * scale),
                                  Y3_BIASES[2 * k + 1] / (side * scale)), (0, 0, tw, th))
                if iou > best_iou:
                    best_n, best_iou = k, iou
            if best_n not in mask[:num]:
                continue
            a = mask[:num].index(best_n)
            m = mask[a]
            idx = a * length * stride + j * side + i
            sc = coord_s * (2 - tw * th)
            tgt = (tx * side - i, ty * side - j, math.log(tw * side * scale / Y3_BIASES[2 * m]),
                   math.log(th * side * scale / Y3_BIASES[2 * m + 1]))
            for c in range(4):
                diff[b, idx + c * stride] = -sc * (tgt[c] - swap[b, idx + c * stride])
            o = -(1 - swap[b, idx + 4 * stride])
            diff[b, idx + 4 * stride] = o * obj_s if logic else o
            ci = idx + 5 * stride
            if diff[b, ci]:
                diff[b, ci + stride * int(cls)] = 1 - swap[b, ci + stride * int(cls)]
            else:
                for c in range(num_class):
                    diff[b, ci + c * stride] = -cls_s * ((c == int(cls)) - swap[b, ci + c * stride])
    loss = (diff ** 2).sum() / n
    grad = diff.copy()
    if logic:
        for b in range(n):
            for k in range(num * length):
                if k % length not in (2, 3):
                    sl = slice(k * stride, (k + 1) * stride)
                    grad[b, sl] *= (1 - swap[b, sl]) * swap[b, sl]
    return loss, grad.reshape(x.shape) / n


def _labels(rng, n, boxes_per_image):
    lab = np.zeros((n, 300, 5))
    for b in range(n):
        for t in range(boxes_per_image[b]):
            lab[b, t] = [rng.integers(0, 3), rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95),
                         rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6)]
    return lab


@pytest.mark.parametrize("logic,seed", [(False, 0), (True, 1), (False, 2)])
def test_yolov3_loss_and_the_forks_gradient(logic, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (2, 3 * 8, 4, 4))
    labels = _labels(rng, 2, [3, 1])
    labels[0, 1, 1:3] = labels[0, 0, 1:3]  # two truths in one cell
    body = ("loss_weight: 2 yolov3_param { num_class: 3 num: 3 object_scale: 5 class_scale: 1 "
            "noobject_scale: 1 coord_scale: 1 thresh: 0.6 anchors_scale: 16 "
            + " ".join(f"biases: {b}" for b in Y3_BIASES)
            + f" mask: 0 mask: 1 mask: 2 use_logic_gradient: {'true' if logic else 'false'} }}")
    text = ("force_backward: true\n" + inp("x", x.shape) + inp("label", (2, 1, 300, 5))
            + lay("Yolov3", ["x", "label"], ["loss"], body + " propagate_down: true "
                  "propagate_down: false"))
    net = decaffe.Net(text, decaffe.TRAIN, dtype=torch.float64)
    net.blobs["x"].data[...] = x
    net.blobs["label"].data[...] = labels.reshape(2, 1, 300, 5)
    net.forward()
    net.backward()
    loss, grad = yolov3_loss_ref(x.astype(np.float32).astype(np.float64), labels, 3, 3, 16, 0.6,
                                 5, 1, 1, [0, 1, 2], logic)
    assert net.blobs["loss"].data == pytest.approx(loss, rel=1e-4)
    np.testing.assert_allclose(net.blobs["x"].diff, 2 * grad, rtol=1e-4, atol=1e-6)
    assert np.abs(grad).max() > 0


def test_yolov3_refuses_bad_shapes():
    body = "yolov3_param { num_class: 3 num: 3 " + " ".join(
        f"biases: {b}" for b in Y3_BIASES) + " mask: 0 mask: 1 mask: 2 }"
    with pytest.raises(DecaffeError, match="channels"):
        decaffe.Net(inp("x", (1, 20, 4, 4)) + inp("label", (1, 300, 5))
                    + lay("Yolov3", ["x", "label"], ["loss"], body), decaffe.TRAIN)
    with pytest.raises(DecaffeError, match="300 rows"):
        decaffe.Net(inp("x", (1, 24, 4, 4)) + inp("label", (1, 30, 5))
                    + lay("Yolov3", ["x", "label"], ["loss"], body), decaffe.TRAIN)


# ------------------------------------------------------------------------------------------
# RegionLoss (YOLOv2 loss)
# ------------------------------------------------------------------------------------------
R_BIASES = [1.08, 1.19, 3.42, 4.41, 6.63, 11.38]


def region_loss_ref(x, labels, num_class, num, thresh, obj_s, noobj_s, cls_s, coord_s,
                    bias_match, rescore, warmup):
    n, _, side, _ = x.shape
    length = 5 + num_class
    stride = side * side
    flat = x.reshape(n, -1)
    diff = np.zeros_like(flat)

    def s(v):
        return 1 / (1 + math.exp(-v))

    def box(b, a, idx, i, j):
        return ((i + s(flat[b, idx])) / side, (j + s(flat[b, idx + stride])) / side,
                math.exp(flat[b, idx + 2 * stride]) * R_BIASES[2 * a] / side,
                math.exp(flat[b, idx + 3 * stride]) * R_BIASES[2 * a + 1] / side)

    def delta_box(b, truth, a, idx, i, j, scale):
        pred = box(b, a, idx, i, j)
        tx, ty = truth[0] * side - i, truth[1] * side - j
        tw = math.log(truth[2] * side / R_BIASES[2 * a])
        th = math.log(truth[3] * side / R_BIASES[2 * a + 1])
        for c, t in ((0, tx), (1, ty)):
            g = s(flat[b, idx + c * stride])
            diff[b, idx + c * stride] = -scale * (t - g) * g * (1 - g)
        diff[b, idx + 2 * stride] = -scale * (tw - flat[b, idx + 2 * stride])
        diff[b, idx + 3 * stride] = -scale * (th - flat[b, idx + 3 * stride])
        return iou_center(pred, truth)

    for b in range(n):
        lab = labels[b].reshape(300, 5)
        for sp in range(stride):
            for a in range(num):
                idx = a * length * stride + sp
                y2, x2 = divmod(sp, side)
                pred = box(b, a, idx, x2, y2)
                best = 0.0
                for t in range(300):
                    if not lab[t, 1]:
                        break
                    best = max(best, iou_center(pred, lab[t, 1:]))
                o = s(flat[b, idx + 4 * stride])
                diff[b, idx + 4 * stride] = 0 if best > thresh else noobj_s * o * (1 - o) * o
                if warmup:
                    delta_box(b, ((x2 + .5) / side, (y2 + .5) / side, R_BIASES[2 * a] / side,
                                  R_BIASES[2 * a + 1] / side), a, idx, x2, y2, 0.01)
        for t in range(300):
            cls, tx, ty, tw, th = lab[t]
            if not tw:
                break
            i, j = int(tx * side), int(ty * side)
            pos = j * side + i
            best_n, best_iou = 0, 0.0
            for a in range(num):
                idx = a * length * stride + pos
                p = box(b, a, idx, i, j)
                pw, ph = (R_BIASES[2 * a] / side, R_BIASES[2 * a + 1] / side) if bias_match \
                    else (p[2], p[3])
                iou = iou_center((0, 0, pw, ph), (0, 0, tw, th))
                if iou > best_iou:
                    best_n, best_iou = a, iou
            idx = best_n * length * stride + pos
            scale = coord_s if rescore else coord_s * (2 - tw * th)
            iou = delta_box(b, (tx, ty, tw, th), best_n, idx, i, j, scale)
            o = s(flat[b, idx + 4 * stride])
            diff[b, idx + 4 * stride] = -obj_s * ((iou if rescore else 1) - o) * (1 - o) * o
            logits = flat[b, idx + 5 * stride: idx + (5 + num_class) * stride: stride]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            for c in range(num_class):
                diff[b, idx + (5 + c) * stride] = -cls_s * ((c == int(cls)) - p[c])
    return (diff ** 2).sum() / n, diff.reshape(x.shape) / n


@pytest.mark.parametrize("bias_match,rescore,warmup", [(True, True, True), (False, False, False),
                                                        (True, False, False)])
def test_region_loss_and_the_forks_gradient(bias_match, rescore, warmup, monkeypatch):
    from decaffe.layers.forks.yolo import RegionLossLayer

    monkeypatch.setattr(RegionLossLayer, "passes_run", 0 if warmup else 10 ** 6)
    rng = np.random.default_rng(int(bias_match) + 2 * int(rescore))
    x = rng.normal(0, 1, (2, 3 * 7, 4, 4))
    labels = _labels(rng, 2, [2, 3])
    body = (f"region_loss_param {{ num_class: 2 coords: 4 num: 3 softmax: 1 "
            f"rescore: {int(rescore)} bias_match: {int(bias_match)} object_scale: 5 "
            "class_scale: 1 noobject_scale: 1 coord_scale: 1 thresh: 0.6 "
            + " ".join(f"biases: {b}" for b in R_BIASES + [0, 0, 0, 0]) + " }")
    labels[:, :, 0] %= 2
    text = ("force_backward: true\n" + inp("x", x.shape) + inp("label", (2, 300, 5))
            + lay("RegionLoss", ["x", "label"], ["loss"], body + " propagate_down: true "
                  "propagate_down: false"))
    net = decaffe.Net(text, decaffe.TRAIN, dtype=torch.float64)
    net.blobs["x"].data[...] = x
    net.blobs["label"].data[...] = labels
    net.forward()
    net.backward()
    loss, grad = region_loss_ref(x.astype(np.float32).astype(np.float64), labels, 2, 3, 0.6, 5,
                                 1, 1, 1, bias_match, rescore, warmup)
    assert net.blobs["loss"].data == pytest.approx(loss, rel=1e-4)
    np.testing.assert_allclose(net.blobs["x"].diff, grad, rtol=1e-4, atol=1e-6)
    assert RegionLossLayer.passes_run == (1 if warmup else 10 ** 6 + 1)


# ------------------------------------------------------------------------------------------
# AssistedExcitation (eric612's assisted_excitation_layer.cpp)
# ------------------------------------------------------------------------------------------
def assisted_excitation_ref(x, labels, mean, alpha):
    """Pixel loops as the fork's Forward_cpu runs them: the mask is zeroed for each image and
    written at that image's offset, but added from the buffer's start (image 0's region)."""
    f = np.float32
    n, c, h, w = x.shape
    top = x.astype(f).copy()
    mask = np.zeros(n * h * w, f)
    for b in range(n):
        mask[:] = 0
        for t in range(300):
            cx, cy, bw, bh = (f(v) for v in labels[b, t, 1:5])
            if cx == 0:
                break

            def corner(v, size):
                a = int(float(v * f(size)) + 0.5)  # (int) truncates toward zero
                return min(max(a, 0), size)
            x0, x1 = corner(cx - bw / f(2), w), corner(cx + bw / f(2), w)
            y0, y1 = corner(cy - bh / f(2), h), corner(cy + bh / f(2), h)
            for i in range(y0, y1):
                for j in range(x0, x1):
                    mask[b * h * w + i * w + j] = f(alpha) * f(mean[b].reshape(-1)[i * w + j])
        for ch in range(c):
            top[b, ch] += mask[: h * w].reshape(h, w)
    return top


AE_NET = (inp("x", (3, 2, 6, 7)) + inp("label", (3, 300, 5)) + inp("m", (3, 6, 7))
          + lay("AssistedExcitation", ["x", "label", "m"], ["ae"], name="AE"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assisted_excitation_matches_the_fork(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (3, 2, 6, 7)).astype(np.float32)
    mean = rng.normal(0, 1, (3, 6, 7)).astype(np.float32)
    labels = _labels(rng, 3, [3, 2, 1])
    labels[0, 1, 1:5] = [0.02, 0.97, 0.5, 0.3]  # boxes past the map's edges are clipped
    net = forward(AE_NET, {"x": x, "label": labels, "m": mean})
    want = assisted_excitation_ref(x, labels, mean, 1.0)
    np.testing.assert_array_equal(net.blobs["ae"].data, want)
    assert not np.array_equal(want[0], x[0])  # image 0 is excited ...
    np.testing.assert_array_equal(want[1:], x[1:])  # ... the others, as in the fork, not


def test_assisted_excitation_follows_the_solvers_schedule(tmp_path):
    """α = cos(iter/max_iter·π/2) with the solver's iteration, as Layer::set_iter gives it."""
    rng = np.random.default_rng(3)
    net_text = ("force_backward: true\n" + AE_NET
                + lay("InnerProduct", ["ae"], ["ip"], "inner_product_param { num_output: 2 "
                      'weight_filler { type: "gaussian" std: 0.1 } }', name="ip")
                + lay("EuclideanLoss", ["ip", "ip"], ["loss"], name="loss"))
    (tmp_path / "net.prototxt").write_text(net_text)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0 lr_policy: "fixed" max_iter: 8 '
        'display: 0 snapshot: 0 snapshot_after_train: false')
    solver = decaffe.get_solver(str(tmp_path / "solver.prototxt"))
    x = rng.normal(0, 1, (3, 2, 6, 7)).astype(np.float32)
    mean = rng.normal(0, 1, (3, 6, 7)).astype(np.float32)
    labels = _labels(rng, 3, [2, 1, 1])
    for k, v in {"x": x, "label": labels, "m": mean}.items():
        solver.net.blobs[k].data[...] = v
    ae = solver.net.layer_dict["AE"].layer
    for it in (0, 3, 7):
        solver.step(it + 1 - solver.iter)  # the last forward ran at iteration `it`
        alpha = np.float32(math.cos(float(np.float32(it) / np.float32(8)) * math.pi / 2))
        assert ae.alpha() == alpha
        np.testing.assert_array_equal(solver.net.blobs["ae"].data,
                                      assisted_excitation_ref(x, labels, mean, alpha))


def test_assisted_excitation_gradient_check():
    rng = np.random.default_rng(4)
    check_gradients(AE_NET, {"x": rng.normal(0, 1, (3, 2, 6, 7)),
                             "label": _labels(rng, 3, [2, 2, 1]),
                             "m": rng.normal(0, 1, (3, 6, 7))}, check_inputs=["x"])


@pytest.mark.parametrize("shapes,msg", [
    (((2, 3, 4, 4), (2, 100, 5), (2, 4, 4)), "300 rows of 5"),
    (((2, 3, 4, 4), (2, 300, 5), (2, 3, 4)), "one 4 x 4 map per image"),
    (((2, 3, 4, 4), (1, 300, 5), (2, 4, 4)), "300 rows of 5"),
    (((2, 12, 4), (2, 300, 5), (2, 4, 4)), "N x C x H x W"),
])
def test_assisted_excitation_refusals(shapes, msg):
    text = (inp("x", shapes[0]) + inp("label", shapes[1]) + inp("m", shapes[2])
            + lay("AssistedExcitation", ["x", "label", "m"], ["ae"], name="AE"))
    with pytest.raises(DecaffeError, match=msg) as e:
        decaffe.Net(text, decaffe.TRAIN)
    assert "AE" in str(e.value)

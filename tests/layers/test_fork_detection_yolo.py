"""eric612/MobileNet-YOLO's layers (decaffe/layers/yolo.py): YoloDetectionOutput,
Yolov3DetectionOutput and Reorg against loop references written from the fork's Forward_cpu
and darknet's reorg_cpu; Reorg's gradient by finite differences; the fork's refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import check_gradients

import decaffe
from decaffe.errors import DecaffeError


def inp(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {dims} }} }} }}\n')


def lay(type_, bottoms, tops, body="", name="l"):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'


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


@pytest.mark.parametrize("reverse", [False, True])
def test_reorg_gradient_check(reverse):
    x = np.random.default_rng(2).standard_normal((1, 4, 4, 2))
    check_gradients(inp("x", x.shape) + lay("Reorg", ["x"], ["y"],
                                            f"reorg_param {{ stride: 2 reverse: "
                                            f"{'true' if reverse else 'false'} }}"), {"x": x})


@pytest.mark.parametrize("shape,body,msg", [
    ((1, 6, 4, 4), "reorg_param { stride: 2 }", "multiple of stride"),
    ((1, 8, 5, 4), "reorg_param { stride: 2 }", "multiples of the stride"),
    ((1, 8, 4, 4), "", "stride must be given"),
])
def test_reorg_refusals(shape, body, msg):
    with pytest.raises(DecaffeError, match=msg):
        decaffe.Net(inp("x", shape) + lay("Reorg", ["x"], ["y"], body, name="reorg1"),
                    decaffe.TEST)

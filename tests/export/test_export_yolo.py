"""YOLO's detection outputs (eric612/MobileNet-YOLO's YoloDetectionOutput and
Yolov3DetectionOutput) export to ONNX as SSD's DetectionOutput does: the fork's decoding,
a sort and one class-agnostic NonMaxSuppression, rows equal to decaffe's row for row (the
exporter's own check, in every installed runtime); the torch forms refuse them with -end."""

from __future__ import annotations

import numpy as np
import pytest

import caffe
from decaffe.export import ExportError, to_onnx, to_pytorch_source
from decaffe.export.verify import check_runtimes, onnx_runtime_runner
from decaffe.formats import prototxt
from decaffe.layer import layer_type_list

pytestmark = pytest.mark.skipif("Yolov3DetectionOutput" not in layer_type_list(),
                                reason="the YOLO fork's layers are not part of decaffe here")


def _input(name: str, c: int, side: int, batch: int) -> str:
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ '
            f'dim: {batch} dim: {c} dim: {side} dim: {side} }} }} }} ')


def v2_text(batch: int = 1, threshold: float = 0.1, nms: float = 0.45) -> str:
    return (_input("a", 3 * 8, 5, batch) + _input("b", 3 * 8, 3, batch)
            + 'layer { name: "det" type: "YoloDetectionOutput" bottom: "a" bottom: "b" top: '
            f'"det" yolo_detection_output_param {{ num_classes: 3 num_box: 3 '
            f'confidence_threshold: {threshold} nms_threshold: {nms} biases: 1.08 biases: 1.19 '
            'biases: 3.42 biases: 4.41 biases: 6.63 biases: 11.38 } }')


def v3_text(batch: int = 1, threshold: float = 0.2, nms: float = 0.45) -> str:
    return (_input("a", 3 * 9, 4, batch) + _input("b", 3 * 9 + 2, 8, batch)
            + 'layer { name: "det" type: "Yolov3DetectionOutput" bottom: "a" bottom: "b" '
            f'top: "det" yolov3_detection_output_param {{ num_classes: 4 num_box: 3 '
            f'confidence_threshold: {threshold} nms_threshold: {nms} mask_group_num: 2 '
            'mask: 3 mask: 4 mask: 5 mask: 0 mask: 1 mask: 2 anchors_scale: 32 '
            'anchors_scale: 16 biases: 10 biases: 14 biases: 23 biases: 27 biases: 37 '
            'biases: 58 biases: 81 biases: 82 biases: 135 biases: 169 biases: 344 biases: 319 '
            '} }')


def _check(text: str, tmp_path, rows_at_least: int):
    net = caffe.Net(prototxt.read_net(text), phase=caffe.TEST)
    report = to_onnx(net, str(tmp_path / "yolo.onnx"), check="all")
    assert report.verified and tuple(report.by_runtime) == check_runtimes("all")
    # the same rows on other inputs too, compared here directly with the layer
    rng = np.random.default_rng(7)
    feed = {v: rng.standard_normal(report.graph.shapes[v]).astype(np.float32)
            for v in report.graph.inputs}
    for k, v in feed.items():
        net.blobs[k].data[...] = v
    ref = net.forward()["det"]
    got = onnx_runtime_runner("ort", report.path, report.graph)(feed)["det"]
    assert got.shape == ref.shape and np.allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert ref.shape[2] >= rows_at_least
    return ref.reshape(-1, 7)


@pytest.mark.parametrize("batch", [1, 2])
def test_yolov2_detection_output_exports_row_for_row(batch, tmp_path):
    rows = _check(v2_text(batch), tmp_path, 3)
    assert (rows[:, 0] == 0).all() and (rows[:, 1] >= 1).all()  # the fork's image_id 0
    assert (np.diff(rows[:, 2]) <= 0).all()  # by score, descending


@pytest.mark.parametrize("batch", [1, 2])
def test_yolov3_detection_output_exports_row_for_row(batch, tmp_path):
    rows = _check(v3_text(batch), tmp_path, 3)
    assert (np.diff(rows[:, 2]) <= 0).all()


def test_nms_suppresses_at_the_threshold_itself(tmp_path):
    """IoU ≥ nms_threshold suppresses in the fork: with nms_threshold 0 every box (even a
    disjoint one, IoU 0) falls to the best one; above 1 nothing is suppressed."""
    rows = _check(v3_text(nms=0.0), tmp_path, 1)
    assert len(rows) == 1
    every = _check(v3_text(nms=1.5), tmp_path, 2)
    assert len(every) > len(_check(v3_text(), tmp_path, 1))


def test_nothing_detected_gives_a_row_per_image(tmp_path):
    rows = _check(v2_text(batch=2, threshold=1.5), tmp_path, 2)
    assert rows.tolist() == [[i, -1, -1, -1, -1, -1, -1] for i in range(2)]


def test_torch_forms_refuse_with_the_way_out(tmp_path):
    net = caffe.Net(prototxt.read_net(v3_text()), phase=caffe.TEST)
    with pytest.raises(ExportError, match=r"\(Yolov3DetectionOutput\) the torch forms .* "
                                          "the ONNX form"):
        to_pytorch_source(net, str(tmp_path / "pt"))

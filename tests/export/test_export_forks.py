"""What the forks' exports pin beyond computing what decaffe computes (that every exporting
sample of tests/layer_db.py does, in every form, is tests/layers/test_layer_table.py's check):
Interp as an ONNX Resize, ROIPooling's Caffe rounding, BilinearInterpolate to a fixed size,
and MobileNet-SSD end to end: DetectionOutput exports to ONNX and to the generated PyTorch
source (tests/export/test_export_detection.py) and torch.export refuses it with the way out
(-end)."""

from __future__ import annotations

import os

import onnx
import pytest
from conftest import MODELS
from export_helpers import export_all, randomize
from layer_db import LAYERS
from netbuild import net_text

import caffe
from decaffe.errors import DecaffeError
from decaffe.export import ExportError, to_onnx, to_pytorch_source, to_torch_program
from decaffe.formats import prototxt
from decaffe.layer import layer_type_list

X = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 dim: 6 '
     'dim: 5 } } } ')
SAMPLES = {s.id: s for row in LAYERS.values() for s in row.samples}


def _fork_net(layer_type: str, text: str):
    if layer_type not in layer_type_list():
        pytest.skip(f"the fork layer {layer_type} is not part of decaffe on this branch")
    try:
        param = prototxt.read_net(text)
    except DecaffeError as e:
        pytest.skip(f"the fork's parameters are not in caffe.proto here: {e}")
    net = caffe.Net(param, phase=caffe.TEST)
    randomize(net, seed=4)
    return net


def _sample_net(layer_type: str, id: str):
    """The table's sample `id` (tests/layer_db.py) as a TEST net with random weights."""
    return _fork_net(layer_type, net_text(SAMPLES[id].net, SAMPLES[id].inputs))


def test_interp_is_an_onnx_resize(tmp_path):
    net = _sample_net("Interp", "export_interp")
    report = to_onnx(net, str(tmp_path / "i.onnx"), end="i")
    ops = [n.op_type for n in onnx.load(report.path).graph.node]
    assert "Resize" in ops


def test_ssd_deploy_net_exports_with_detection_output(tmp_path):
    """MobileNet-SSD exports end to end to ONNX (DetectionOutput as NonMaxSuppression) and to
    the generated PyTorch source (an eager DetectionOutput), each checked row for row; the
    torch.export form refuses DetectionOutput, saying which forms take it, and exports up to
    its inputs with -end."""
    path = os.path.join(MODELS, "zoo/chuanqi305__MobileNet-SSD/deploy.prototxt")
    if "DetectionOutput" not in layer_type_list():
        pytest.skip("the SSD fork's layers are not part of decaffe on this branch")
    param = prototxt.read_net(path)
    param.layer[0].input_param.shape[0].dim[:] = [1, 3, 128, 128]  # small: CI time
    net = caffe.Net(param, phase=caffe.TEST)
    randomize(net, seed=2)
    report = to_onnx(net, str(tmp_path / "ssd.onnx"))
    assert report.verified and report.graph.outputs == ["detection_out"]
    assert "NonMaxSuppression" in {n.op_type for n in onnx.load(report.path).graph.node}
    assert to_pytorch_source(net, str(tmp_path / "src")).verified
    with pytest.raises(ExportError, match=r"\(DetectionOutput\) the torch.export form .*-onnx"
                       r".*-end"):
        to_torch_program(net, str(tmp_path / "ssd.pt2"))
    assert not (tmp_path / "ssd.pt2").exists()
    before = net.layers[[ly.name for ly in net.layers].index("detection_out") - 1].name
    reports = export_all(net, str(tmp_path / "cut"), end=before)
    assert "mbox_priorbox" in reports["onnx"].graph.outputs


def test_roi_pooling_export_rounds_corners_as_caffe(tmp_path):
    """Corners at exact halves (2.5 → 3 in C, 2 half-to-even) and ROIs past the image: the
    exported graph and the generated helper give decaffe's (rbgirshick's) bins."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from decaffe.export import runtime

    net = _sample_net("ROIPooling", "export_roi_pooling")
    report = to_onnx(net, str(tmp_path / "roi.onnx"))
    rois = np.array([[0, 5, 1, 10, 9], [1, 3, 5, 7, 11], [0, -3, -5, 30, 40],
                     [1, 1, 1, 1, 1], [0, 6.99, 2.01, 6.2, 5.5], [1, 9, 7, 4, 2],
                     [0, 0, 0, 0.5, 0.5], [1, 2.5, 2.5, 2.5, 2.5], [0, 4.5, 1.5, 8.5, 9.5]],
                    np.float32)
    x = np.random.default_rng(3).standard_normal((2, 4, 6, 5)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.blobs["r"].data[...] = rois
    net.forward()
    sess = ort.InferenceSession(report.path, providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x, "r": rois})))
    for top, (ph, pw, scale) in {"p": (3, 2, 0.25), "q": (4, 7, 0.5)}.items():
        np.testing.assert_array_equal(got[top], net.blobs[top].data)
        helper = runtime.caffe_roi_pool(torch.from_numpy(x), torch.from_numpy(rois), ph, pw,
                                        scale)
        np.testing.assert_array_equal(helper.numpy(), net.blobs[top].data)


def test_bilinear_interpolate_to_a_fixed_size_exports(tmp_path):
    """BilinearInterpolate with dst_h/dst_w (its matrices depend on the input size only)
    exports in every form; the table of layers found it raising inside the exporter."""
    net = _fork_net("BilinearInterpolate", X + 'layer { name: "b" type: "BilinearInterpolate" '
                    'bottom: "x" top: "b" bilinear_interpolate_param { dst_h: 9 dst_w: 7 } }')
    export_all(net, str(tmp_path))

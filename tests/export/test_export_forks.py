"""The forks' deploy layers export like BVLC's (each case runs once its fork's layers are part
of decaffe): PriorBox as a constant, Permute, Normalize, Interp/Upsample as Resize, the mobile
layers, ROIPooling, PSROIPooling, SegNet's unpooling (Upsample with a mask, MaxUnPool) and
BN, GuidedDropout; SSD's DetectionOutput exports to ONNX and to the generated PyTorch source
(tests/export/test_export_detection.py) and torch.export refuses it with the way out (-end)."""

from __future__ import annotations

import os

import onnx
import pytest
from conftest import MODELS
from export_helpers import export_all, randomize

import caffe
from decaffe.errors import DecaffeError
from decaffe.export import ExportError, to_onnx, to_pytorch_source, to_torch_program
from decaffe.formats import prototxt
from decaffe.layer import layer_type_list

X = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 dim: 6 '
     'dim: 5 } } } ')
X8 = X.replace("dim: 4 dim: 6 dim: 5", "dim: 8 dim: 6 dim: 4")  # Reorg: stride 2 divides
IMG = ('layer { name: "img" type: "Input" top: "img" input_param { shape { dim: 2 dim: 3 '
       'dim: 60 dim: 50 } } } ')

CASES = [
    ("priorbox_permute", "PriorBox", IMG + X + 'layer { name: "pb" type: "PriorBox" bottom: "x" '
     'bottom: "img" top: "pb" prior_box_param { min_size: 10 max_size: 20 aspect_ratio: 2 '
     'flip: true clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } } '
     'layer { name: "pm" type: "Permute" bottom: "x" top: "pm" permute_param { order: 0 order: '
     '2 order: 3 order: 1 } }'),
    ("normalize", "Normalize", X + 'layer { name: "n" type: "Normalize" bottom: "x" top: "n" '
     'norm_param { across_spatial: false channel_shared: false scale_filler { type: '
     '"constant" value: 20 } } } layer { name: "n2" type: "Normalize" bottom: "x" top: "n2" }'),
    ("interp", "Interp", X + 'layer { name: "i" type: "Interp" bottom: "x" top: "i" '
     'interp_param { zoom_factor: 2 } } layer { name: "i2" type: "Interp" bottom: "x" top: "i2" '
     'interp_param { height: 4 width: 9 } }'),
    ("upsample_nearest", "Upsample", X + 'layer { name: "u" type: "Upsample" bottom: "x" top: '
     '"u" upsample_param { scale: 2 } }'),
    ("mobile", "ReLU6", X + 'layer { name: "r" type: "ReLU6" bottom: "x" top: "r" } layer { '
     'name: "hs" type: "HardSwish" bottom: "x" top: "hs" } layer { name: "hg" type: '
     '"HardSigmoid" bottom: "x" top: "hg" } layer { name: "sc" type: "ShuffleChannel" bottom: '
     '"x" top: "sc" shuffle_channel_param { group: 2 } } layer { name: "dw" type: '
     '"ConvolutionDepthwise" bottom: "x" top: "dw" convolution_param { num_output: 4 '
     'kernel_size: 3 pad: 1 } }'),
    ("yolo_misc", "Reorg", X8 + 'layer { name: "ro" type: "Reorg" bottom: "x" top: "ro" '
     'reorg_param { stride: 2 } } layer { name: "rr" type: "Reorg" bottom: "x" top: "rr" '
     'reorg_param { stride: 2 reverse: true } } layer { name: "se" type: "SeLu" bottom: "x" '
     'top: "se" } layer { name: "sd" type: "SeLuDropout" bottom: "x" top: "sd" } layer { '
     'name: "u" type: "Unsqueeze" bottom: "x" top: "u" unsqueeze_param { dim: 1 } }'),
    ("pad", "Pad", X + 'layer { name: "p" type: "Pad" bottom: "x" top: "p" pad_param { '
     'pad_u: 1 pad_d: 2 pad_l: 0 pad_r: 3 pad_value: 0.5 } } layer { name: "e" type: "Pad" '
     'bottom: "x" top: "e" pad_param { pad_u: 2 pad_l: 1 pad_type: REPLICATE } } layer { '
     'name: "f" type: "Pad" bottom: "x" top: "f" pad_param { pad_d: 3 pad_r: 2 pad_type: '
     'REFLECT } } layer { name: "c" type: "Pad" bottom: "x" top: "c" pad_param { pad_u: -1 '
     'pad_r: -2 } }'),
    ("roi_pooling", "ROIPooling", X + 'layer { name: "r" type: "Input" top: "r" input_param { '
     'shape { dim: 9 dim: 5 } } } layer { name: "p" type: "ROIPooling" bottom: "x" bottom: "r" '
     'top: "p" roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.25 } } layer { '
     'name: "q" type: "ROIPooling" bottom: "x" bottom: "r" top: "q" roi_pooling_param { '
     'pooled_h: 4 pooled_w: 7 spatial_scale: 0.5 } }'),
    ("psroi_pooling", "PSROIPooling", X8.replace("dim: 8", "dim: 18") + 'layer { name: "r" '
     'type: "Input" top: "r" input_param { shape { dim: 7 dim: 5 } } } layer { name: "p" '
     'type: "PSROIPooling" bottom: "x" bottom: "r" top: "p" psroi_pooling_param { '
     'spatial_scale: 0.5 output_dim: 2 group_size: 3 } }'),
    ("guided_dropout", "GuidedDropout", X + 'layer { name: "g" type: "Input" top: "g" '
     'input_param { shape { dim: 2 dim: 4 } } } layer { name: "d" type: "GuidedDropout" '
     'bottom: "x" bottom: "g" top: "d" guided_dropout_param { guidance_threshold: 0.3 } } '
     'layer { name: "s" type: "GuidedDropout" bottom: "x" bottom: "g" top: "s" '
     'guided_dropout_param { type: "stochastic" } }'),
    ("segnet_unpool", "Upsample", X + 'layer { name: "mp" type: "Pooling" bottom: "x" top: "mp" '
     'top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } } layer { name: "u" '
     'type: "Upsample" bottom: "mp" bottom: "mask" top: "u" upsample_param { scale: 2 '
     'upsample_h: 6 upsample_w: 5 } } layer { name: "mu" type: "MaxUnPool" bottom: "mp" '
     'bottom: "mask" top: "mu" max_unpool_param { dst_h: 6 dst_w: 5 } }'),
    ("segnet_bn", "BN", X + 'layer { name: "b" type: "BN" bottom: "x" top: "b" bn_param { '
     'bn_mode: INFERENCE } } layer { name: "l" type: "BN" bottom: "x" top: "l" bn_param { '
     'bn_mode: LEARN } }'),
    ("fork_bn", "BN", X + 'layer { name: "b" type: "BN" bottom: "x" top: "b" } layer { name: '
     '"k" type: "BatchNormKyle" bottom: "x" top: "k" batch_norm_param { use_alpha_beta: true } '
     '} layer { name: "k2" type: "BatchNormKyle" bottom: "x" top: "k2" }'),
]


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


@pytest.mark.parametrize("name,layer_type,text", CASES, ids=[c[0] for c in CASES])
def test_fork_layer_exports_match_decaffe(name, layer_type, text, tmp_path):
    export_all(_fork_net(layer_type, text), str(tmp_path))


def test_interp_is_an_onnx_resize(tmp_path):
    net = _fork_net("Interp", CASES[2][2])
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

    net = _fork_net("ROIPooling", next(c[2] for c in CASES if c[0] == "roi_pooling"))
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

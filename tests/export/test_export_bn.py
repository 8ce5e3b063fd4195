"""Exported BN nets: with and without fold_bn the outputs agree, and after folding no
BatchNormalization node is left where folding was possible (the ones fold_bn keeps, with
its reason, stay)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import HERE, MODELS
from export_helpers import SLOW, deploy_net, export_all, randomize

import caffe
from decaffe.export import to_onnx
from decaffe.export.verify import onnxruntime_session

ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "batchnorm", "cnn_bn_deploy.prototxt")


def _bn_nodes(path: str) -> int:
    return [n.op_type for n in onnx.load(path).graph.node].count("BatchNormalization")


def _run(path: str, x: np.ndarray) -> list[np.ndarray]:
    sess = onnxruntime_session(path)
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _check_fold(net, tmp, n_bn: int, shapes=None):
    plain = to_onnx(net, os.path.join(tmp, "plain.onnx"), input_shapes=shapes)
    folded = to_onnx(net, os.path.join(tmp, "folded.onnx"), fold_bn=True, input_shapes=shapes)
    assert plain.verified and folded.verified
    assert _bn_nodes(plain.path) == n_bn
    kept = len(folded.folded.kept)
    assert _bn_nodes(folded.path) == kept
    assert len(folded.folded.folded) == n_bn - kept
    x = np.random.default_rng(5).standard_normal(plain.graph.shapes[plain.graph.inputs[0]])
    a, b = _run(plain.path, x.astype(np.float32)), _run(folded.path, x.astype(np.float32))
    for u, v in zip(a, b):
        assert np.abs(u - v).max() <= 1e-5 * max(np.abs(u).max(), 1e-30)
    return folded


def test_example_net_fold_bn_leaves_no_batchnorm(tmp_path):
    net = caffe.Net(EXAMPLE, caffe.TEST)
    randomize(net)
    folded = _check_fold(net, str(tmp_path), 3)
    assert not folded.folded.kept
    # the PyTorch forms fold too, and still match decaffe
    reports = export_all(net, str(tmp_path), forms=("pytorch",), fold_bn=True)
    source = open(os.path.join(reports["pytorch"].path, "model.py")).read()
    assert "batch_norm" not in source and "BatchNorm)" not in source


def test_unfoldable_batchnorm_is_kept(tmp_path):
    """A BatchNorm after Pooling cannot be folded: it stays, in ONNX too."""
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 '
            'dim: 8 dim: 8 } } } layer { name: "c" type: "Convolution" bottom: "x" top: "c" '
            'convolution_param { num_output: 4 kernel_size: 3 } } layer { name: "bn1" type: '
            '"BatchNorm" bottom: "c" top: "c" } layer { name: "s1" type: "Scale" bottom: "c" '
            'top: "c" scale_param { bias_term: true } } layer { name: "p" type: "Pooling" '
            'bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } } '
            'layer { name: "bn2" type: "BatchNorm" bottom: "p" top: "p" }')
    from decaffe.formats import prototxt

    net = caffe.Net(prototxt.read_net(text), phase=caffe.TEST)
    randomize(net)
    folded = _check_fold(net, str(tmp_path), 2)
    assert [k.layer for k in folded.folded.kept] == ["bn2"]


@pytest.mark.parametrize("_", [pytest.param(0, marks=SLOW)])
def test_resnet50_fold_bn(_, tmp_path):
    path = os.path.join(MODELS, "zoo/KaimingHe__deep-residual-networks/prototxt/"
                        "ResNet-50-deploy.prototxt")
    net = deploy_net(path, batch=1)
    _check_fold(net, str(tmp_path), 53)


def test_fold_bn_keeps_the_nets_current_input_shape(tmp_path):
    """The folded net is rebuilt from the prototxt; the export still has the net's shapes."""
    net = caffe.Net(EXAMPLE, caffe.TEST)
    net.blobs["data"].reshape(3, 1, 8, 8)
    net.reshape()
    randomize(net)
    report = to_onnx(net, str(tmp_path / "f.onnx"), fold_bn=True)
    assert report.graph.shapes["data"] == (3, 1, 8, 8)

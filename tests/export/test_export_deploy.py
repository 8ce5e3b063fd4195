"""train_val / train_test nets export as their deploy form (as DIGITS and the model zoo made
deploy files): data layers become Inputs of their batch's shape, loss and accuracy layers
are dropped, each change printed; `decaffe deploy_net IN OUT` writes that prototxt. Real
train_val files of BVLC Caffe (tests/models) are the inputs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import MODELS
from export_helpers import randomize

import caffe
from decaffe.cli import main
from decaffe.export import to_onnx
from decaffe.export.deploy import DeployError, deploy_form
from decaffe.formats import prototxt

LENET = os.path.join(MODELS, "bvlc/examples/mnist/lenet_train_test.prototxt")
GOOGLENET = os.path.join(MODELS, "bvlc/models/bvlc_googlenet/train_val.prototxt")
FLICKR = os.path.join(MODELS, "bvlc/models/finetune_flickr_style/train_val.prototxt")
SIAMESE = os.path.join(MODELS, "bvlc/examples/siamese/mnist_siamese_train_test.prototxt")


def _types(param) -> list[str]:
    return [lp.type for lp in param.layer]


def test_deploy_net_writes_the_deploy_prototxt(tmp_path, capsys):
    out = tmp_path / "deploy.prototxt"
    assert main(["deploy_net", LENET, str(out), "-input_shape", "data:64,1,28,28"]) == 0
    text = capsys.readouterr().out
    assert "left out 1 layer(s) not in the TEST phase" in text
    assert "dropped layer 'accuracy' (Accuracy)" in text
    assert "dropped layer 'loss' (SoftmaxWithLoss)" in text
    assert "layer 'mnist' (Data) -> Input 'data' (64, 1, 28, 28) (dropped 'label')" in text
    param = prototxt.read_net(str(out))
    assert _types(param) == ["Input", "Convolution", "Pooling", "Convolution", "Pooling",
                             "InnerProduct", "ReLU", "InnerProduct"]
    assert list(param.layer[0].input_param.shape[0].dim) == [64, 1, 28, 28]
    assert all(not lp.include and not lp.exclude for lp in param.layer)
    net = caffe.Net(str(out), caffe.TEST)  # a deploy net decaffe builds
    assert net.outputs == ["ip2"] and net.blobs["data"].data.shape == (64, 1, 28, 28)


def test_shapes_from_the_data_layers_parameters():
    """GoogLeNet's Data (crop 224, three mean values) and Flickr style's ImageData (crop 227,
    color) tell their shapes without their databases."""
    form = deploy_form(prototxt.read_net(GOOGLENET))
    assert form.shapes == {"data": (50, 3, 224, 224)}
    assert sum("(Accuracy)" in c for c in form.changes) == 6
    assert sum("(SoftmaxWithLoss)" in c for c in form.changes) == 3
    assert "Accuracy" not in _types(form.param) and "Data" not in _types(form.param)
    form = deploy_form(prototxt.read_net(FLICKR))
    assert form.shapes == {"data": (50, 3, 227, 227)}


def test_an_unknown_data_shape_names_the_flag():
    with pytest.raises(DeployError, match=r"layer 'mnist': \(Data\) the shape of its top 'data' "
                       r"comes from its data source 'examples/mnist/mnist_test_lmdb'.*"
                       r"-input_shape data:N,C,H,W"):
        deploy_form(prototxt.read_net(LENET))


def test_layers_that_read_only_the_labels_go_too():
    """The siamese net's pair data is sliced into two images; its sim label feeds only the
    ContrastiveLoss."""
    form = deploy_form(prototxt.read_net(SIAMESE), {"pair_data": (100, 2, 28, 28)})
    assert form.shapes == {"pair_data": (100, 2, 28, 28)}
    assert "ContrastiveLoss" not in _types(form.param)
    assert any("(dropped 'sim')" in c for c in form.changes)


def test_export_takes_a_train_test_prototxt(tmp_path, capsys):
    rc = main(["export", "-model", LENET, "-input_shape", "data:2,1,28,28", "-onnx",
               str(tmp_path / "lenet.onnx")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "is a training net; exporting its deploy form" in text
    assert "  dropped layer 'loss' (SoftmaxWithLoss)" in text
    assert "outputs ip2" in text and "output ip2: largest relative difference" in text


TRAIN_VAL = '''name: "tv"
layer { name: "data" type: "MemoryData" top: "data" top: "label"
  memory_data_param { batch_size: 4 channels: 2 height: 5 width: 5 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
  include { phase: TEST } }
'''


def test_to_onnx_exports_a_built_train_val_net_as_its_deploy_form(tmp_path):
    net = caffe.Net(prototxt.read_net(TRAIN_VAL), phase=caffe.TEST)
    randomize(net)
    report = to_onnx(net, str(tmp_path / "tv.onnx"))
    assert report.verified and report.graph.inputs == ["data"]
    assert report.graph.shapes["data"] == (4, 2, 5, 5) and report.graph.outputs == ["ip"]
    assert report.graph.deploy_changes[-1] == ("layer 'data' (MemoryData) -> Input 'data' "
                                               "(4, 2, 5, 5) (dropped 'label')")
    assert any("deploy form: dropped layer 'loss'" in line for line in report.lines())
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32)
    (y,) = ort.InferenceSession(str(tmp_path / "tv.onnx")).run(None, {"data": x})
    w, b = (p.data for p in net.params["ip"])
    assert np.abs(y - (x.reshape(4, -1) @ w.T + b)).max() < 1e-5

"""The pycaffe recipes people copy, each run end to end on data the test makes:
classifying an image (Classifier, io.Transformer), fine-tuning (copy_from + a renamed last
layer), net surgery (assigning net.params[...][i].data), and a Python data layer feeding a
solver. Names not yet exported from `caffe` are imported from their decaffe modules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import decaffe as caffe
from decaffe.layers.data import set_input_arrays
from decaffe.pycaffe import io as caffe_io
from decaffe.pycaffe.classifier import Classifier
from decaffe.solvers import get_solver

DEPLOY = """
name: "tinynet"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.01 }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


def _deploy_with_weights(tmp_path):
    model = tmp_path / "deploy.prototxt"
    model.write_text(DEPLOY)
    net = caffe.Net(str(model), caffe.TEST)
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    return str(model), str(weights)


def _preprocess_by_hand(img_rgb01: np.ndarray) -> np.ndarray:
    """H×W×3 RGB in [0, 1] -> 3×H×W BGR in [0, 255] minus the mean (Caffe's ImageNet setup)."""
    chw = img_rgb01.transpose(2, 0, 1)[::-1] * 255.0
    return (chw - MEAN_BGR[:, None, None]).astype(np.float32)


def test_classify_an_image(tmp_path):
    model, weights = _deploy_with_weights(tmp_path)
    rng = np.random.default_rng(3)
    rgb8 = rng.integers(0, 256, size=(10, 10, 3), dtype=np.uint8)
    path = tmp_path / "cat.png"
    cv2.imwrite(str(path), rgb8[:, :, ::-1])  # OpenCV writes BGR
    image = caffe_io.load_image(str(path))
    assert image.shape == (10, 10, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, rgb8 / 255.0, atol=1e-6)

    # the "classification" notebook's way: a Net and a Transformer
    net = caffe.Net(model, weights, caffe.TEST)
    transformer = caffe_io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_mean("data", MEAN_BGR)
    transformer.set_raw_scale("data", 255)
    transformer.set_channel_swap("data", (2, 1, 0))
    crop = image[1:9, 1:9]
    net.blobs["data"].reshape(1, 3, 8, 8)
    net.blobs["data"].data[...] = transformer.preprocess("data", crop)
    np.testing.assert_allclose(net.blobs["data"].data[0], _preprocess_by_hand(crop), atol=1e-4)
    probs = net.forward()["prob"][0].copy()
    assert probs.shape == (5,) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(transformer.deprocess("data", net.blobs["data"].data[0]), crop,
                               atol=1e-5)

    # caffe.Classifier: resize to image_dims, centre crop (or 10 crops), preprocess, forward
    clf = Classifier(model, weights, image_dims=(10, 10), mean=MEAN_BGR, raw_scale=255,
                     channel_swap=(2, 1, 0))
    centre = clf.predict([image], oversample=False)
    assert centre.shape == (1, 5)
    np.testing.assert_allclose(centre[0], probs, rtol=1e-5, atol=1e-6)
    assert centre[0].argmax() == probs.argmax()
    # oversampling averages the four corners, the centre and their mirrors
    ten = []
    for i, j in ((0, 0), (0, 2), (2, 0), (2, 2), (1, 1)):
        ten.append(image[i:i + 8, j:j + 8])
    ten += [c[:, ::-1] for c in ten]
    expected = []
    for c in ten:
        net.blobs["data"].data[...] = _preprocess_by_hand(c)
        expected.append(net.forward()["prob"][0].copy())
    np.testing.assert_allclose(clf.predict([image])[0], np.mean(expected, axis=0), rtol=1e-5,
                               atol=1e-6)
    two = clf.predict([image, image[::-1]], oversample=False)
    assert two.shape == (2, 5)
    np.testing.assert_allclose(two[0], centre[0], rtol=1e-5, atol=1e-6)


TRAIN_NET = """
name: "toy"
layer { name: "data" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 16 channels: 4 height: 1 width: 1 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" %(ip1_param)s
        inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "%(last)s" type: "InnerProduct" bottom: "ip1" top: "score" %(last_param)s
        inner_product_param { num_output: %(classes)d %(last_filler)s } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def _toy_data(n: int, classes: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 1, 1)).astype(np.float32)
    proj = x.reshape(n, 4) @ np.array([1.0, -1.5, 0.5, 2.0])
    edges = np.quantile(proj, np.linspace(0, 1, classes + 1)[1:-1])
    y = np.digitize(proj, edges).astype(np.float32)
    return x, y


def _solver(tmp_path, name, net_text, lr=0.2):
    net_path = tmp_path / f"{name}_net.prototxt"
    net_path.write_text(net_text)
    path = tmp_path / f"{name}_solver.prototxt"
    path.write_text(f'net: "{net_path}"\nbase_lr: {lr}\nmomentum: 0.9\nlr_policy: "fixed"\n'
                    'max_iter: 100\ndisplay: 0\nsnapshot_after_train: false\nrandom_seed: 5\n')
    return get_solver(str(path))


def test_fine_tune_with_a_renamed_last_layer(tmp_path):
    base_text = TRAIN_NET % dict(ip1_param="", last="fc_base", last_param="", classes=2,
                                 last_filler='weight_filler { type: "gaussian" std: 0.3 }')
    base = _solver(tmp_path, "base", base_text)
    x, y = _toy_data(64, 2, 0)
    set_input_arrays(base.net, x, y)
    base.step(30)
    weights = tmp_path / "base.caffemodel"
    base.net.save(str(weights))

    # fine-tune: ip1 frozen (lr_mult 0), the last layer renamed for 3 classes
    ft_text = TRAIN_NET % dict(
        ip1_param="param { lr_mult: 0 } param { lr_mult: 0 }", last="fc_ft",
        last_param="param { lr_mult: 10 } param { lr_mult: 20 }", classes=3,
        last_filler='weight_filler { type: "constant" value: 0.25 }')
    ft = _solver(tmp_path, "ft", ft_text, lr=0.01)
    ft.net.copy_from(str(weights))
    np.testing.assert_array_equal(ft.net.params["ip1"][0].data, base.net.params["ip1"][0].data)
    np.testing.assert_array_equal(ft.net.params["ip1"][1].data, base.net.params["ip1"][1].data)
    # the renamed layer is not copied (its shape differs anyway): it keeps its filler
    np.testing.assert_array_equal(ft.net.params["fc_ft"][0].data, 0.25)
    x3, y3 = _toy_data(64, 3, 1)
    set_input_arrays(ft.net, x3, y3)
    frozen = np.array(ft.net.params["ip1"][0].data)
    losses = []
    for _ in range(40):
        ft.step(1)
        losses.append(float(ft.net.blobs["loss"].data))
    np.testing.assert_array_equal(ft.net.params["ip1"][0].data, frozen)
    assert not np.all(ft.net.params["fc_ft"][0].data == 0.25)
    assert np.mean(losses[-5:]) < 0.8 * losses[0]


SURGERY = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 1 dim: 6 dim: 7 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 1 kernel_size: 3 } }
"""


def test_net_surgery_designer_filter(tmp_path):
    path = tmp_path / "surgery.prototxt"
    path.write_text(SURGERY)
    net = caffe.Net(str(path), caffe.TEST)
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
    net.params["conv"][0].data[...] = sobel[None, None]
    net.params["conv"][1].data[...] = 0.5
    img = np.random.default_rng(4).random((6, 7)).astype(np.float32)
    net.blobs["data"].data[...] = img
    out = net.forward()["conv"][0, 0]
    expected = np.array([[np.sum(img[i:i + 3, j:j + 3] * sobel) for j in range(5)]
                         for i in range(4)]) + 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


FC_NET = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
"""
FULL_CONV = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "fc-conv" type: "Convolution" bottom: "data" top: "fc-conv"
        convolution_param { num_output: 5 kernel_size: 4 } }
"""


def test_net_surgery_fully_convolutional_transplant(tmp_path):
    (tmp_path / "fc.prototxt").write_text(FC_NET)
    (tmp_path / "conv.prototxt").write_text(FULL_CONV)
    net = caffe.Net(str(tmp_path / "fc.prototxt"), caffe.TEST)
    conv = caffe.Net(str(tmp_path / "conv.prototxt"), caffe.TEST)
    # the notebook's transplant: flat copies of the weights, the bias as is
    conv.params["fc-conv"][0].data.flat = net.params["fc"][0].data.flat
    conv.params["fc-conv"][1].data[...] = net.params["fc"][1].data
    x = np.random.default_rng(5).normal(size=(2, 3, 6, 6)).astype(np.float32)
    conv.blobs["data"].data[...] = x
    dense = conv.forward()["fc-conv"]
    assert dense.shape == (2, 5, 3, 3)
    for i in range(3):
        for j in range(3):
            net.blobs["data"].data[...] = x[:, :, i:i + 4, j:j + 4]
            np.testing.assert_allclose(dense[:, :, i, j], net.forward()["fc"], rtol=1e-4,
                                       atol=1e-4)


PY_LAYER = '''
import json

import numpy as np

from decaffe.layers.python_layer import Layer  # caffe.Layer


class ToyData(Layer):
    """Batches of 4-d points labelled by the side of a hyperplane they lie on."""

    calls = 0

    def setup(self, bottom, top):
        if bottom:
            raise Exception("ToyData takes no bottoms")
        params = json.loads(self.param_str)
        self.batch = params["batch"]
        self.rng = np.random.default_rng(params["seed"])

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, 4)
        top[1].reshape(self.batch)

    def forward(self, bottom, top):
        x = self.rng.normal(size=(self.batch, 4)).astype(np.float32)
        top[0].data[...] = x
        top[1].data[...] = (x @ np.array([1.0, -2.0, 0.5, 1.0]) > 0)
        type(self).calls += 1

    def backward(self, top, propagate_down, bottom):
        pass
'''

PY_SOLVER = """
base_lr: 0.5 momentum: 0.9 lr_policy: "fixed" max_iter: 60 display: 0
snapshot_after_train: false random_seed: 11
test_iter: 4 test_interval: 1000 test_initialization: false
net_param {
  layer { name: "data" type: "Python" top: "data" top: "label"
          python_param { module: "%(module)s" layer: "ToyData"
                         param_str: '{"batch": 32, "seed": 3}' } }
  layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
  layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
          include { phase: TEST } }
}
"""


def test_python_data_layer_feeds_a_solver(tmp_path, monkeypatch):
    module = "toy_data_layer_recipe"
    (tmp_path / f"{module}.py").write_text(PY_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "solver.prototxt"
    path.write_text(PY_SOLVER % dict(module=module))
    solver = get_solver(str(path))
    import importlib

    layer_cls = importlib.import_module(module).ToyData
    calls_before = layer_cls.calls
    losses = []
    for _ in range(60):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert layer_cls.calls - calls_before == 60  # one batch per iteration
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    accs = []
    test_net = solver.test_nets[0]
    for _ in range(4):
        accs.append(float(test_net.forward()["acc"]))
    assert np.mean(accs) > 0.85

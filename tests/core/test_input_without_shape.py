"""Input layers that declare no shape: Caffe builds the net with empty tops (a
default-constructed Blob), and the caller reshapes them before forward; every layer is
reshaped at the start of its forward, as Caffe's Layer::Forward does. Layers whose setup
needs an axis refuse an empty bottom as Caffe's CanonicalAxisIndex check does."""

from __future__ import annotations

import os

import numpy as np
import pytest

import caffe
import decaffe
from decaffe.errors import DecaffeError

PYLAYERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "layers", "pylayers")

NET = """force_backward: true
layer { name: "data" type: "Input" top: "data" }
layer { name: "pair" type: "Input" top: "a" top: "b" input_param { } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s"
        eltwise_param { operation: SUM coeff: 1 coeff: -2 } }
layer { name: "ten" type: "Python" bottom: "r" top: "t"
        python_param { module: "decaffe_test_pylayer_caffe" layer: "TimesTen" } }
"""


def test_net_with_shapeless_inputs_builds_and_runs_once_reshaped(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(PYLAYERS)
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    net = caffe.Net(str(path), caffe.TEST)
    assert net.inputs == ["data", "a", "b"]
    for name in ("data", "a", "b", "r", "s", "t"):
        assert net.blobs[name].data.shape == ()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    a = rng.standard_normal((5, 2)).astype(np.float32)
    b = rng.standard_normal((5, 2)).astype(np.float32)
    net.blobs["data"].reshape(*x.shape)
    net.blobs["a"].reshape(*a.shape)
    net.blobs["b"].reshape(*b.shape)
    net.blobs["data"].data[...] = x
    net.blobs["a"].data[...] = a
    net.blobs["b"].data[...] = b
    out = net.forward()  # no net.reshape(): forward reshapes each layer
    np.testing.assert_allclose(out["t"], 10 * np.maximum(x, 0), rtol=1e-6)
    np.testing.assert_allclose(out["s"], a - 2 * b, rtol=1e-6)
    net.blobs["t"].diff[...] = 1
    net.blobs["s"].diff[...] = 1
    net.backward()
    np.testing.assert_allclose(net.blobs["data"].diff, 10 * (x > 0), rtol=1e-6)
    np.testing.assert_allclose(net.blobs["b"].diff, -2 * np.ones_like(b), rtol=1e-6)
    # a second shape, then a reshape through the net's own call
    net.blobs["data"].reshape(1, 7)
    net.blobs["data"].data[...] = -1
    net.reshape()
    assert net.forward(blobs=["r"])["r"].shape == (1, 7)


def test_shapeless_input_into_an_axis_layer_is_refused_as_caffe_refuses_it():
    text = ('layer { name: "data" type: "Input" top: "data" }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 2 kernel_size: 3 } }")
    with pytest.raises(DecaffeError, match="out of range for a 0-axis blob") as e:
        decaffe.Net(text, decaffe.TEST)
    assert "conv" in str(e.value)

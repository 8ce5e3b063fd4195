"""pycaffe's object model, not only its names: what scripts written against BVLC master's
pycaffe do with the objects it hands back (issue 11, cases 02 to 09 of ../shared/cases, each
generalised): caffe.proto after `import caffe`, the Python layer's own object in net.layers,
blob arrays that later passes write into, forward/backward with start/end, exceptions of
Python layers, solver.step on a diverging loss, caffe.io's mean resizing and file objects,
Net's constructor forms, and batch-independent TEST-phase outputs on the CPU."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import caffe
from decaffe.errors import DecaffeError

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "cases")
ROOT = os.path.dirname(os.path.dirname(HERE))
CAFFENET = os.path.join(ROOT, "tests", "models", "bvlc", "models", "bvlc_reference_caffenet",
                        "deploy.prototxt")


@pytest.fixture
def cases_path(monkeypatch):
    monkeypatch.syspath_prepend(CASES)  # roi_like_layer, the Python layer of case 03


def _write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


CONV_NET = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
"""


# ----------------------------------------------------------------------------------------------
# case 02: caffe.proto and caffe.pycaffe after a plain `import caffe`
# ----------------------------------------------------------------------------------------------
def test_import_caffe_binds_proto_and_pycaffe_in_a_fresh_interpreter():
    code = ("import caffe\n"
            "b = caffe.proto.caffe_pb2.BlobProto(); b.shape.dim.extend([2, 3])\n"
            "b.data.extend(range(6))\n"
            "print(caffe.io.blobproto_to_array(b).sum(), caffe.pycaffe.Net is caffe.Net,\n"
            "      caffe.pycaffe.SGDSolver is caffe.SGDSolver, caffe._caffe.Net is caffe.Net,\n"
            "      type(caffe.proto.caffe_pb2.NetParameter()).__name__)\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["15.0", "True", "True", "True", "NetParameter"]


# ----------------------------------------------------------------------------------------------
# case 03: net.layers[i] is the Python layer's own object
# ----------------------------------------------------------------------------------------------
def test_python_layer_object_through_net_layers(cases_path):
    net = caffe.Net(os.path.join(CASES, "feed_net.prototxt"), caffe.TRAIN)
    layer = net.layers[0]
    layer.set_rows([[1, 2, 3], [4, 5, 6]])  # the user's own method (py-faster-rcnn's set_roidb)
    net.forward()
    np.testing.assert_array_equal(net.blobs["out"].data, [[2, 4, 6], [8, 10, 12]])
    assert layer is net.layers[0] is net.layer_dict["feed"]
    assert isinstance(layer, caffe.Layer) and layer.type == "Python"
    assert layer._rows.shape == (2, 3)  # its own state, read back
    # other layers: pycaffe's Layer attributes, the same object on each call
    power = net.layers[1]
    assert power is net.layers[1] and power.type == "Power" and len(power.blobs) == 0


SOLVER_WITH_PY = """
base_lr: 0.1 lr_policy: "fixed" max_iter: 10 display: 0 snapshot_after_train: false
test_iter: 1 test_interval: 100 test_initialization: false
net_param {
  layer { name: "feed" type: "Python" top: "data" python_param { module: "roi_like_layer"
          layer: "FeedLayer" } }
  layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param { num_output: 1 weight_filler { type: "constant" value: 1 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "ip" top: "loss" }
}
"""


def test_python_layer_object_through_solver_nets(cases_path, tmp_path):
    solver = caffe.SGDSolver(_write(tmp_path, SOLVER_WITH_PY, "solver.prototxt"))
    train, test = solver.net.layers[0], solver.test_nets[0].layers[0]
    assert train is not test  # each net made its own layer object
    train.set_rows(np.ones((2, 3)))
    test.set_rows(np.full((2, 3), 2.0))
    solver.step(1)
    np.testing.assert_array_equal(solver.net.blobs["data"].data, np.ones((2, 3)))
    solver.test_nets[0].forward()
    np.testing.assert_array_equal(solver.test_nets[0].blobs["ip"].data, [[6], [6]])
    assert train.phase == caffe.TRAIN and test.phase == caffe.TEST


# ----------------------------------------------------------------------------------------------
# case 04: arrays are the blob's memory; forward and backward write into them
# ----------------------------------------------------------------------------------------------
def test_array_taken_before_forward_shows_the_next_forward(tmp_path):
    net = caffe.Net(_write(tmp_path, CONV_NET), caffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).random((2, 1, 8, 8))
    net.forward()
    conv0 = net.blobs["conv"].data[0, 0]  # a view, kept across passes (net_surgery)
    ip = net.blobs["ip"].data
    before, ip_before = conv0.copy(), ip.copy()
    net.params["conv"][1].data[...] = 1.0
    net.forward()
    fresh = net.blobs["conv"].data
    assert np.shares_memory(conv0, fresh) and np.shares_memory(ip, net.blobs["ip"].data)
    np.testing.assert_array_equal(conv0, fresh[0, 0])
    # the in-place ReLU's output is what the blob shows, bias + 1 where it was positive
    pos = before > 0  # the in-place ReLU's output is what the blob shows: bias + 1 there
    np.testing.assert_allclose(conv0[pos], before[pos] + 1, rtol=1e-5)
    assert ((conv0[~pos] >= 0) & (conv0[~pos] <= 1)).all()
    assert not np.array_equal(ip, ip_before)
    outs = net.forward()
    assert np.shares_memory(outs["ip"], ip)  # forward's returned arrays are the same memory


def test_diff_array_taken_before_backward_shows_the_next_backward(tmp_path):
    net = caffe.Net(_write(tmp_path, "force_backward: true\n" + CONV_NET), caffe.TRAIN)
    rng = np.random.default_rng(1)
    net.blobs["data"].data[...] = rng.random((2, 1, 8, 8))
    net.forward()
    g = net.blobs["ip"].diff
    g[...] = 1.0
    net.backward()
    data_diff, conv_diff = net.blobs["data"].diff, net.blobs["conv"].diff
    first = data_diff.copy()
    g[...] = 2.0  # the top diff written through the array kept from before
    net.forward()
    net.backward()
    np.testing.assert_allclose(data_diff, 2 * first, rtol=1e-5)
    assert np.shares_memory(data_diff, net.blobs["data"].diff)
    assert np.shares_memory(conv_diff, net.blobs["conv"].diff)


def test_writes_to_a_kept_array_feed_a_partial_forward(tmp_path):
    net = caffe.Net(_write(tmp_path, CONV_NET), caffe.TEST)
    net.forward()
    conv = net.blobs["conv"].data
    conv[...] = 1.0
    out = net.forward(start="ip")["ip"]
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    np.testing.assert_allclose(out, np.ones((2, 108)) @ w.T + b, rtol=1e-5, atol=1e-6)


def test_kept_input_array_with_an_in_place_layer_on_it_trains(tmp_path):
    # an in-place layer on a net input: the pass copies into memory autograd saw, safely
    text = ("force_backward: true\n"
            'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
            'layer { name: "sc" type: "Scale" bottom: "x" top: "x" scale_param { '
            'filler { type: "constant" value: 3 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param '
            '{ num_output: 1 weight_filler { type: "constant" value: 1 } } }\n')
    net = caffe.Net(_write(tmp_path, text), caffe.TRAIN)
    x = net.blobs["x"].data
    x[...] = [[1, 2, 3], [4, 5, 6]]
    net.forward()
    np.testing.assert_array_equal(x, [[3, 6, 9], [12, 15, 18]])  # Caffe's in-place semantics
    net.blobs["ip"].diff[...] = 1
    net.backward()
    # the scale's gradient is from the input as it was before the pass scaled it
    np.testing.assert_allclose(net.params["sc"][0].diff, [1 + 4, 2 + 5, 3 + 6], rtol=1e-6)


def test_solver_path_keeps_kept_arrays_current(tmp_path):
    net = _write(tmp_path, DIVERGING.replace("std: 10", "std: 1"))
    solver = caffe.SGDSolver(_write(tmp_path, f'train_net: "{net}"\nbase_lr: 0.01\n'
                                    'lr_policy: "fixed"\nmax_iter: 10\ndisplay: 0\n',
                                    "solver.prototxt"))
    solver.step(1)
    ip = solver.net.blobs["ip"].data
    seen = []
    for _ in range(3):
        solver.step(1)
        seen.append(ip.copy())
        np.testing.assert_array_equal(ip, solver.net.blobs["ip"].data)
    assert np.shares_memory(ip, solver.net.blobs["ip"].data)
    assert not np.array_equal(seen[0], seen[2])  # new data and weights each step, followed
    # a blob whose array was never taken is simply bound to each pass's output
    assert not solver.net.blobs["loss"].handed_out


# ----------------------------------------------------------------------------------------------
# forward/backward start and end: the end layer's tops / bottoms, whatever the names
# ----------------------------------------------------------------------------------------------
MULTI = """
force_backward: true
layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 4 }
        shape { dim: 2 dim: 4 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }
layer { name: "cut" type: "Slice" bottom: "s" top: "s1" top: "s2" slice_param { axis: 1 } }
layer { name: "scale" type: "Power" bottom: "s1" top: "p" power_param { scale: 3 } }
layer { name: "join" type: "Concat" bottom: "p" bottom: "s2" top: "out" }
"""


def test_forward_with_end_returns_the_end_layers_tops(tmp_path):
    net = caffe.Net(_write(tmp_path, MULTI), caffe.TEST)
    net.blobs["a"].data[...] = 1
    net.blobs["b"].data[...] = 2
    assert set(net.forward(end="cut")) == {"s1", "s2"}
    assert set(net.forward(end="sum", blobs=["a"])) == {"s", "a"}
    outs = net.forward(start="scale", end="scale")
    assert set(outs) == {"p"}
    np.testing.assert_array_equal(outs["p"], np.full((2, 2), 9.0))
    assert set(net.forward()) == {"out"}


def test_backward_with_end_returns_the_end_layers_bottoms(tmp_path):
    net = caffe.Net(_write(tmp_path, MULTI), caffe.TRAIN)
    net.forward()
    net.blobs["out"].diff[...] = 1
    got = net.backward(end="sum")
    assert set(got) == {"a", "b"}
    np.testing.assert_array_equal(got["a"], [[3, 3, 1, 1]] * 2)
    got = net.backward(start="join", end="cut")
    assert set(got) == {"s"}
    got = net.backward(start="join", end="join", diffs=["out"])
    assert set(got) == {"p", "s2", "out"}
    assert set(net.backward()) == {"a", "b"}
    with pytest.raises(DecaffeError, match="no layer named 'nope'"):
        net.backward(end="nope")


def test_python_loss_layer_takes_part_in_backward(cases_path, tmp_path):
    (tmp_path / "pyloss_for_test.py").write_text(
        "import caffe\n"
        "class SqLoss(caffe.Layer):\n"
        "    calls = 0\n"
        "    def reshape(self, bottom, top):\n"
        "        top[0].reshape(1)\n"
        "    def forward(self, bottom, top):\n"
        "        self.d = bottom[0].data - bottom[1].data\n"
        "        top[0].data[...] = 0.5 * (self.d ** 2).sum()\n"
        "    def backward(self, top, propagate_down, bottom):\n"
        "        type(self).calls += 1\n"
        "        if propagate_down[0]:\n"
        "            bottom[0].diff[...] = self.d * top[0].diff[0]\n")
    sys.path.insert(0, str(tmp_path))
    try:
        text = ('layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 '
                'dim: 3 } shape { dim: 2 dim: 4 } } }\n'
                'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" '
                'inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }\n'
                'layer { name: "loss" type: "Python" bottom: "ip" bottom: "t" top: "loss" '
                'loss_weight: 2 python_param { module: "pyloss_for_test" layer: "SqLoss" } }\n')
        net = caffe.Net(_write(tmp_path, text), caffe.TRAIN)
        x = np.random.default_rng(2).random((2, 3)).astype(np.float32)
        net.blobs["x"].data[...] = x
        net.forward()
        net.backward()
        loss_layer = net.layers[-1]
        assert type(loss_layer).calls == 1
        w = net.params["ip"][0].data
        d = x @ w.T + net.params["ip"][1].data
        np.testing.assert_allclose(net.blobs["ip"].diff, 2 * d, rtol=1e-5)
        np.testing.assert_allclose(net.params["ip"][0].diff, 2 * d.T @ x, rtol=1e-5)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pyloss_for_test", None)


def test_python_layer_exception_reaches_the_caller_as_itself(tmp_path, monkeypatch):
    (tmp_path / "raising_for_test.py").write_text(
        "import caffe\n"
        "class OwnError(Exception):\n"
        "    pass\n"
        "class Raise(caffe.Layer):\n"
        "    def reshape(self, bottom, top):\n"
        "        top[0].reshape(*bottom[0].data.shape)\n"
        "    def forward(self, bottom, top):\n"
        "        if self.param_str == 'forward':\n"
        "            raise OwnError('mine')\n"
        "        top[0].data[...] = bottom[0].data\n"
        "    def backward(self, top, propagate_down, bottom):\n"
        "        raise KeyError('backward key')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ('force_backward: true\n'
            'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
            'layer { name: "odd name" type: "Python" bottom: "x" top: "y" python_param { '
            'module: "raising_for_test" layer: "Raise" param_str: "%s" } }\n')
    net = caffe.Net(_write(tmp_path, text % "forward"), caffe.TRAIN)
    own_error = sys.modules["raising_for_test"].OwnError
    with pytest.raises(own_error) as info:
        net.forward()
    assert type(info.value) is own_error
    assert any("forward of Python layer 'odd name'" in n for n in info.value.__notes__)
    net = caffe.Net(_write(tmp_path, text % "", "n2.prototxt"), caffe.TRAIN)
    net.forward()
    with pytest.raises(KeyError, match="backward key") as info:
        net.backward()
    assert type(info.value) is KeyError
    assert any("backward of Python layer 'odd name'" in n for n in info.value.__notes__)
    monkeypatch.delitem(sys.modules, "raising_for_test", raising=False)


# ----------------------------------------------------------------------------------------------
# case 05: solver.step never raises on a diverging loss
# ----------------------------------------------------------------------------------------------
DIVERGING = """
layer { name: "x" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 1 }
                     data_filler { type: "gaussian" std: 10 }
                     data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }
"""


@pytest.mark.parametrize("solver_type", ["SGDSolver", "NesterovSolver", "get_solver"])
def test_solver_step_goes_on_through_nan_and_inf(tmp_path, solver_type):
    net = _write(tmp_path, DIVERGING)
    solver_file = _write(tmp_path, f'train_net: "{net}"\nbase_lr: 1000\nlr_policy: "fixed"\n'
                         'max_iter: 100\ndisplay: 1\nmomentum: 0.9\n', "solver.prototxt")
    cls = {"SGDSolver": caffe.SGDSolver, "get_solver": caffe.get_solver,
           "NesterovSolver": caffe.NesterovSolver}[solver_type]
    solver = cls(solver_file)
    losses = []
    for _ in range(40):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert solver.iter == 40
    assert not all(np.isfinite(losses))  # it diverged, and the loop went on recording


# ----------------------------------------------------------------------------------------------
# cases 06 and 07: caffe.io as BVLC master
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mean_shape,input_shape", [((3, 256, 256), (10, 3, 227, 227)),
                                                     ((3, 8, 6), (1, 3, 5, 9)),
                                                     ((4, 4), (2, 1, 8, 8))])
def test_transformer_set_mean_resizes_to_the_input(mean_shape, input_shape):
    t = caffe.io.Transformer({"data": input_shape})
    rng = np.random.RandomState(0)
    mean = rng.uniform(90, 130, mean_shape).astype(np.float32)
    t.set_mean("data", mean)
    stored = np.asarray(t.mean["data"])
    assert stored.shape[-2:] == input_shape[-2:]
    assert stored.min() >= mean.min() - 1e-3 and stored.max() <= mean.max() + 1e-3
    # what master computes: the mean scaled to [0, 1], resized as an image, scaled back
    m3 = mean.reshape((-1,) + mean.shape[-2:])
    lo, hi = m3.min(), m3.max()
    expect = caffe.io.resize_image(((m3 - lo) / (hi - lo)).transpose(1, 2, 0),
                                   input_shape[2:]).transpose(2, 0, 1) * (hi - lo) + lo
    np.testing.assert_allclose(stored.reshape(expect.shape), expect, rtol=1e-5)
    img = rng.uniform(0, 255, input_shape[2:] + (input_shape[1],)).astype(np.float32)
    t.set_transpose("data", (2, 0, 1))
    assert t.preprocess("data", img).shape == input_shape[1:]


def test_transformer_constant_mean_and_wrong_channels():
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    t.set_mean("data", np.full((3, 6, 6), 7.0))
    np.testing.assert_array_equal(t.mean["data"], np.full((3, 4, 4), 7.0))
    with pytest.raises(ValueError, match="Mean shape incompatible"):
        t.set_mean("data", np.zeros((2, 6, 6)))


def test_classifier_takes_a_mean_of_another_size(tmp_path):
    model = _write(tmp_path, 'layer { name: "data" type: "Input" top: "data" input_param { '
                   'shape { dim: 1 dim: 3 dim: 6 dim: 6 } } }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "prob" '
                   'inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }')
    clf = caffe.Classifier(model, None, image_dims=(8, 8), mean=np.ones((3, 10, 10)),
                           raw_scale=255, channel_swap=(2, 1, 0))
    assert clf.transformer.mean["data"].shape == (3, 6, 6)
    assert tuple(clf.crop_dims) == (6, 6) and tuple(clf.image_dims) == (8, 8)
    scores = clf.predict([np.random.default_rng(0).random((9, 9, 3))], oversample=False)
    assert scores.shape == (1, 2)


def _encoded(ext=".png", shape=(20, 30, 3)):
    img = (np.random.RandomState(1).rand(*shape) * 255).astype(np.uint8)
    ok, enc = cv2.imencode(ext, img)
    assert ok
    return img, enc.tobytes()


@pytest.mark.parametrize("color", [True, False])
def test_load_image_from_a_file_object(tmp_path, color):
    img, data = _encoded()
    from_buffer = caffe.io.load_image(io.BytesIO(data), color=color)
    path = tmp_path / "im.png"
    path.write_bytes(data)
    from_path = caffe.io.load_image(str(path), color=color)
    with open(path, "rb") as f:
        from_file = caffe.io.load_image(f, color=color)
    assert from_buffer.dtype == np.float32 and from_buffer.shape == (20, 30, 3 if color else 1)
    np.testing.assert_array_equal(from_buffer, from_path)
    np.testing.assert_array_equal(from_file, from_path)
    if color:  # RGB in [0, 1], as skimage gave
        np.testing.assert_allclose(from_buffer, img[:, :, ::-1] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(caffe.io.load_image(path, color=color), from_path)  # PathLike


def test_load_image_bad_file_objects():
    with pytest.raises(DecaffeError, match="cannot decode image"):
        caffe.io.load_image(io.BytesIO(b"not an image"))
    with pytest.raises(ValueError, match="binary mode"):
        caffe.io.load_image(io.StringIO("text"))
    with pytest.raises(ValueError, match="path or a file-like object"):
        caffe.io.load_image(42)


# ----------------------------------------------------------------------------------------------
# case 09: Net's constructor forms
# ----------------------------------------------------------------------------------------------
def test_net_with_none_weights_builds_with_fillers():
    path = os.path.join(CASES, "bn_deploy.prototxt")
    net = caffe.Net(path, None, caffe.TEST)
    assert list(net.blobs)[:3] == ["data", "conv1", "conv2"]
    assert net.params["conv1"][0].data.std() > 0  # msra-filled, not zeros
    again = caffe.Net(path, caffe.TEST, weights=None)
    assert list(again.blobs) == list(net.blobs)


def test_net_constructor_forms_and_errors(tmp_path, capfd):
    text = CONV_NET + 'layer { name: "s" type: "ReLU" bottom: "ip" top: "r" include { stage: "x" '
    text += 'min_level: 1 } }\n'
    path = _write(tmp_path, text)
    weights = str(tmp_path / "w.caffemodel")
    caffe.Net(path, caffe.TEST).save(weights)
    names = lambda n: list(n._layer_names)  # noqa: E731
    assert names(caffe.Net(path, caffe.TEST, 1, ["x"], weights)) == \
        ["data", "conv", "relu", "ip", "s"]
    assert names(caffe.Net(path, caffe.TEST, level=1, stages=("x",))) == \
        ["data", "conv", "relu", "ip", "s"]
    assert names(caffe.Net(network_file=path, phase=caffe.TEST)) == ["data", "conv", "relu", "ip"]
    capfd.readouterr()
    legacy = caffe.Net(path, weights, caffe.TEST)
    assert "DEPRECATION WARNING" in capfd.readouterr().err  # as pycaffe's legacy form logs
    kw = caffe.Net(path, caffe.TEST, weights=weights)
    assert "DEPRECATION" not in capfd.readouterr().err
    np.testing.assert_array_equal(legacy.params["ip"][0].data, kw.params["ip"][0].data)
    for args, kwargs, match in [
            ((path, 3), {}, "phase must be caffe.TRAIN"),
            ((path, "train"), {}, "Could not open file train"),
            ((path, caffe.TEST), {"weights": 5}, "weights must be the path"),
            ((path, caffe.TEST), {"weights": str(tmp_path / "none.caffemodel")},
             "Could not open file"),
            ((path, caffe.TEST), {"stages": "x"}, "stages must be a list"),
            ((path, caffe.TEST), {"level": "1"}, "level must be an integer"),
            ((path, weights, caffe.TEST, 0), {}, "at most 3"),
            ((path, caffe.TEST, 0, [], None, 1), {}, "at most 5"),
            ((path, caffe.TEST), {"phase": caffe.TEST}, "both by position and by keyword"),
            ((path,), {}, "a phase"),
            ((), {}, "give the network")]:
        with pytest.raises(DecaffeError, match=match):
            caffe.Net(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# TEST phase on the CPU: an item's outputs do not depend on the rest of the batch
# ----------------------------------------------------------------------------------------------
def _caffenet(batch: int, size: int):
    from decaffe.formats import prototxt

    param = prototxt.read_net(CAFFENET)
    param.layer[0].input_param.shape[0].dim[:] = [batch, 3, size, size]
    net = caffe.Net(param, caffe.TEST)
    rng = np.random.RandomState(0)
    for name, blobs in net.params.items():
        w = blobs[0].data
        # trained-like magnitudes (activations of tens), so rounding differences would show
        w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / np.prod(w.shape[1:])) * \
            (0.02 if name == "conv1" else 1.0)
        blobs[1].data[...] = rng.uniform(0, 0.1, blobs[1].data.shape)
    return net


@pytest.mark.parametrize("threads", [1, 2])
def test_caffenet_batch_1_and_10_give_each_item_the_same_outputs(threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        size = 67  # CaffeNet's layers; small outputs (3x3 from conv3 on), 256 inputs to fc6
        net = _caffenet(10, size)
        x = np.random.RandomState(1).uniform(-120, 135, (10, 3, size, size)).astype(np.float32)
        net.blobs["data"].data[...] = x
        net.forward()
        batch = {k: net.blobs[k].data.copy() for k in net.blobs}
        assert np.abs(batch["fc7"]).max() > 5
        net.blobs["data"].reshape(1, 3, size, size)
        net.reshape()
        for i in (0, 7):
            net.blobs["data"].data[...] = x[i:i + 1]
            net.forward()
            for name in net.blobs:
                sq = float(((net.blobs[name].data[0] - batch[name][i]) ** 2).sum())
                # 02-fine-tuning.ipynb asserts < 1e-8 on fc7 between batch 1 and batch 50
                assert sq < 1e-8, f"{name}: item {i} differs by {sq} between batch 10 and 1"
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("transpose,axis", [(False, 1), (True, 1), (False, 2)])
def test_inner_product_rows_do_not_depend_on_the_batch(tmp_path, transpose, axis):
    shape = (9, 2, 300) if axis == 2 else (9, 300)
    dims = " ".join(f"dim: {d}" for d in shape)
    text = (f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}\n'
            f'layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param '
            f'{{ num_output: 70 axis: {axis} transpose: {str(transpose).lower()} '
            'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }\n')
    net = caffe.Net(_write(tmp_path, text), caffe.TEST)
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32) * 10
    net.blobs["x"].data[...] = x
    full = net.forward()["y"].copy()
    for n in (1, 2, 3, 5, 6):
        net.blobs["x"].reshape(n, *shape[1:])
        net.reshape()
        net.blobs["x"].data[...] = x[:n]
        np.testing.assert_array_equal(net.forward()["y"], full[:n])


def test_convolution_of_one_item_matches_the_batch_where_onednn_differs(tmp_path):
    # 256->384 channels, 3x3 on a 5x5 map: oneDNN computes one item with another algorithm
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 256 '
            'dim: 5 dim: 5 } } }\n'
            'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
            'num_output: 384 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }\n')
    net = caffe.Net(_write(tmp_path, text), caffe.TEST)
    x = np.random.default_rng(4).normal(size=(4, 256, 5, 5)).astype(np.float32)
    net.blobs["x"].data[...] = x
    full = net.forward()["y"].copy()
    net.blobs["x"].reshape(1, 256, 5, 5)
    net.reshape()
    for i in range(4):
        net.blobs["x"].data[...] = x[i:i + 1]
        np.testing.assert_array_equal(net.forward()["y"][0], full[i])
    assert net.blobs["y"].shape == (1, 384, 5, 5)

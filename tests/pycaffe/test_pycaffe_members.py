"""Members of pycaffe's classes and modules that scripts use and no other test reaches:
each called as a pycaffe script calls it (BVLC master's python/caffe and python/train.py),
with the result pycaffe gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import caffe
from caffe import coord_map as cm
from caffe import draw
from caffe import net_spec as ns
from decaffe.errors import DecaffeError
from decaffe.proto import caffe_pb2

NET = """
force_backward: true
layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 }
        shape { dim: 2 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "t" top: "loss" }
"""


def _file(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _solver_file(tmp_path, extra=""):
    net = _file(tmp_path, NET.replace("force_backward: true", ""))
    return _file(tmp_path, f'train_net: "{net}"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                 f'max_iter: 7\ndisplay: 3\nmomentum: 0.9\n{extra}', "solver.prototxt")


# ----------------------------------------------------------------------------------------------
# Net's per-layer callbacks (python/train.py times layers with them; NCCL joins after_backward)
# ----------------------------------------------------------------------------------------------
def test_net_callbacks_in_caffes_order(tmp_path):
    net = caffe.Net(_file(tmp_path, NET), caffe.TRAIN)
    calls = []
    net.before_forward(lambda i: calls.append(("bf", i)))
    net.after_forward(lambda i: calls.append(("af", i)))
    net.before_backward(lambda i: calls.append(("bb", i)))

    class Runner:  # Net::Callback: an object with run(layer), as caffe.NCCL is
        def run(self, layer):
            calls.append(("ab", layer))

    net.after_backward(Runner())
    net.forward()
    assert calls == [("bf", 0), ("af", 0), ("bf", 1), ("af", 1), ("bf", 2), ("af", 2)]
    calls.clear()
    net.backward()
    assert calls == [("bb", 2), ("ab", 2), ("bb", 1), ("ab", 1), ("bb", 0), ("ab", 0)]
    calls.clear()
    net.forward_backward()  # the solver's pass calls them too, backward last layer first
    assert calls[-6:] == [("bb", 2), ("ab", 2), ("bb", 1), ("ab", 1), ("bb", 0), ("ab", 0)]
    with pytest.raises(DecaffeError, match="neither callable nor has run"):
        net.after_backward(42)


def test_blob_gpu_pointers(tmp_path):
    net = caffe.Net(_file(tmp_path, NET), caffe.TEST)
    blob = net.blobs["ip"]
    if not torch.cuda.is_available():
        with pytest.raises(DecaffeError, match="no GPU memory"):
            blob._gpu_data_ptr  # noqa: B018
        with pytest.raises(DecaffeError, match="no GPU memory"):
            blob._gpu_diff_ptr  # noqa: B018
        return
    caffe.set_mode_gpu()
    net.forward()
    assert blob._gpu_data_ptr == blob.tensor("data").data_ptr() != 0
    assert isinstance(blob._gpu_diff_ptr, int)


# ----------------------------------------------------------------------------------------------
# a Python layer's BlobVec, and the vectors pycaffe hands back
# ----------------------------------------------------------------------------------------------
def test_blobvec_sequence():
    layer = caffe.Layer()
    vec = layer.blobs
    vec.add_blob(2, 3)
    vec.add_blob(4)
    assert vec.__len__() == len(vec) == 2
    assert vec.__getitem__(1).shape == (4,) and vec[-1].shape == (4,)
    assert [b.shape for b in vec.__iter__()] == [(2, 3), (4,)]
    assert [b.shape for b in vec[0:2]] == [(2, 3), (4,)]
    vec[0].data[...] = 5
    assert vec[0].data.sum() == 30  # the same memory on every access
    with pytest.raises(IndexError):
        vec[2]


def test_vectors_are_sequences(tmp_path):
    solver = caffe.get_solver(_solver_file(tmp_path))
    net = solver.net
    for seq in (net.layers, net._blobs, net._blob_names, net._layer_names, net._inputs,
                net._outputs, net._blob_loss_weights, solver.test_nets, net._bottom_ids(2)):
        assert len(seq) == len(list(iter(seq)))
        assert list(seq[:1]) == list(seq)[:1]
    assert list(net._blob_loss_weights) == [0.0, 0.0, 0.0, 1.0]
    assert list(net._blob_names) == ["x", "t", "ip", "loss"]


# ----------------------------------------------------------------------------------------------
# solvers: every class, the Solver base, SolverParameter's fields
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,extra", [(caffe.SGDSolver, ""), (caffe.NesterovSolver, ""),
                                       (caffe.AdaGradSolver, "momentum: 0\n"),
                                       (caffe.RMSPropSolver, "momentum: 0\nrms_decay: 0.98\n"),
                                       (caffe.AdaDeltaSolver, "delta: 1e-6\n"),
                                       (caffe.AdamSolver, "momentum2: 0.999\n")])
def test_every_solver_class_is_a_solver(tmp_path, cls, extra):
    text = _solver_file(tmp_path, extra)
    if cls is caffe.AdaGradSolver or cls is caffe.RMSPropSolver:
        text_path = tmp_path / "solver.prototxt"
        text_path.write_text(text_path.read_text().replace("momentum: 0.9\n", ""))
    solver = cls(text)
    assert isinstance(solver, caffe._caffe.Solver) and issubclass(cls, caffe._caffe.Solver)
    rng = np.random.default_rng(5)
    solver.net.blobs["x"].data[...] = rng.normal(size=(2, 3))
    solver.net.blobs["t"].data[...] = rng.normal(size=(2, 2))
    before = solver.net.params["ip"][0].data.copy()
    solver.step(2)
    assert solver.iter == 2 and not np.array_equal(before, solver.net.params["ip"][0].data)


def test_solver_parameter_fields_train_py_reads(tmp_path):
    solver = caffe.get_solver(_solver_file(tmp_path, "layer_wise_reduce: false\n"))
    param = solver.param
    assert (param.max_iter, param.display, param.layer_wise_reduce) == (7, 3, False)
    default = caffe.get_solver(_solver_file(tmp_path))
    assert default.param.layer_wise_reduce is True  # Caffe's default
    default.step(default.param.max_iter)  # train.py's solver.step(solver.param.max_iter)
    assert default.iter == 7
    assert isinstance(param, caffe._caffe.SolverParameter)


# ----------------------------------------------------------------------------------------------
# caffe.io's Transformer state, Classifier and Detector members
# ----------------------------------------------------------------------------------------------
def test_transformer_settings_are_dicts_by_input():
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_input_scale("data", 0.5)
    assert t.channel_swap == {"data": (2, 1, 0)} and t.raw_scale == {"data": 255}
    assert t.input_scale == {"data": 0.5} and t.transpose == {"data": (2, 0, 1)}
    img = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32)
    out = t.preprocess("data", img)
    np.testing.assert_allclose(out, img.transpose(2, 0, 1)[::-1] * 255 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", out), img, rtol=1e-5)


def test_detector_crop_configuration_and_selective_search(tmp_path):
    model = _file(tmp_path, 'layer { name: "data" type: "Input" top: "data" input_param { '
                  'shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
                  'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "score" '
                  'inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }')
    det = caffe.Detector(model, None, mean=np.full((3, 8, 8), 0.5), raw_scale=1.0)
    assert det.context_pad is None and tuple(det.crop_dims) == (8, 8, 3)
    det.configure_crop(2)
    assert det.context_pad == 2 and det.crop_mean.shape == (8, 8, 3)
    im = np.random.default_rng(0).random((20, 20, 3)).astype(np.float32)
    assert det.crop(im, (2, 2, 12, 12)).shape == (8, 8, 3)
    with pytest.raises(DecaffeError, match="selective_search_ijcv_with_python"):
        det.detect_selective_search(["x.jpg"])


# ----------------------------------------------------------------------------------------------
# caffe.net_spec, caffe.draw and caffe.coord_map helpers
# ----------------------------------------------------------------------------------------------
def test_net_spec_helpers():
    names = ns.param_name_dict()
    assert names["Convolution"] == "convolution" and names["InnerProduct"] == "inner_product"
    lp = caffe_pb2.LayerParameter()
    ns.assign_proto(lp, "convolution_param", dict(num_output=3, kernel_size=[3, 3]))
    ns.assign_proto(lp, "param", [dict(lr_mult=1), dict(lr_mult=2)])
    assert list(lp.convolution_param.kernel_size) == [3, 3] and lp.param[1].lr_mult == 2
    assert isinstance(caffe.layers, ns.Layers) and isinstance(caffe.params, ns.Parameters)
    top = caffe.layers.Input(shape=dict(dim=[1, 2]))
    assert isinstance(top, ns.Top) and isinstance(top.fn, ns.Function)
    assert top.fn.type_name == "Input" and top.to_proto().layer[0].type == "Input"


def test_draw_helpers():
    assert draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
    assert draw.choose_color_by_layertype("Convolution") == "#FF5050"
    assert draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert draw.choose_color_by_layertype("InnerProduct") == "#CC33FF"
    assert draw.choose_color_by_layertype("ReLU") == draw.LAYER_STYLE_DEFAULT["fillcolor"]
    assert draw.NEURON_LAYER_STYLE["fillcolor"] == "#90EE90"
    assert draw.BLOB_STYLE["shape"] == "octagon"
    lp = caffe_pb2.LayerParameter(name="c", type="Convolution")
    lp.convolution_param.num_output = 16
    assert draw.get_edge_label(lp) == "16"
    data = caffe_pb2.LayerParameter(name="d", type="Data")
    data.data_param.batch_size = 32
    assert draw.get_edge_label(data) == "Batch 32"
    assert draw.get_edge_label(caffe_pb2.LayerParameter(name="r", type="ReLU")) == '""'


def test_coord_map_helpers():
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = caffe.layers.Convolution(n.data, num_output=4, kernel_size=3, stride=2, pad=1,
                                      dilation=2)
    n.crop = caffe.layers.Crop(n.conv, n.data, crop_param=dict(axis=2, offset=[1]))
    axis, stride, extent, pad = cm.conv_params(n.conv.fn)
    assert axis == 1 and list(stride) == [2] and list(extent) == [5] and list(pad) == [1]
    axis, offset = cm.crop_params(n.crop.fn)
    assert axis == 2 and list(offset) == [1]
    assert "ReLU" in cm.PASS_THROUGH_LAYERS and "Convolution" not in cm.PASS_THROUGH_LAYERS
    with pytest.raises(cm.UndefinedMapException):
        cm.coord_map(caffe.layers.Softmax(n.data).fn)
    assert cm.compose((1, 2, 1), (None, 1, 0)) == (1, 2, 1)
    with pytest.raises(cm.AxisMismatchException):
        cm.compose((1, 2, 1), (2, 1, 0))

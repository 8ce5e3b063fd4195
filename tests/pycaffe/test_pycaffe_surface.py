"""pycaffe's public surface, name by name: every top-level name and module a pycaffe script
reaches for exists on `caffe` and behaves as pycaffe documents it."""

from __future__ import annotations

import importlib
import types

import numpy as np
import pytest

import caffe

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""

SOLVER = """
base_lr: 0.01 lr_policy: "fixed" max_iter: 2 display: 0 snapshot_after_train: false
type: "Adam"
net_param {
  layer { name: "data" type: "DummyData" top: "x" top: "y"
          dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 }
                             data_filler { type: "gaussian" } data_filler { type: "constant" } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
          inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }
}
"""


def _net(tmp_path, text=NET, phase=None):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), caffe.TEST if phase is None else phase)


# ----------------------------------------------------------------------------------------------
# top-level names
# ----------------------------------------------------------------------------------------------
def check_init_log_and_log(tmp_path, capfd):
    caffe.init_log()
    caffe.log("surface check message")
    err = capfd.readouterr().err
    line = [ln for ln in err.splitlines() if "surface check message" in ln][0]
    assert line[0] == "I" and "]" in line  # glog's 'I1126 13:34:11.123456 ... file:line] '


def check_modes(tmp_path, capfd):
    import torch

    caffe.set_mode_cpu()
    caffe.set_device(0)
    if torch.cuda.is_available():
        caffe.set_mode_gpu()
        caffe.set_mode_cpu()
    else:
        with pytest.raises(Exception, match="CUDA"):
            caffe.set_mode_gpu()


def check_set_random_seed(tmp_path, capfd):
    caffe.set_random_seed(3)
    a = np.array(_net(tmp_path).params["ip"][0].data)
    caffe.set_random_seed(3)
    b = np.array(_net(tmp_path).params["ip"][0].data)
    caffe.set_random_seed(4)
    c = np.array(_net(tmp_path).params["ip"][0].data)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def check_layer(tmp_path, capfd):
    from decaffe.layers.python_layer import Layer

    assert caffe.Layer is Layer
    assert isinstance(caffe.Layer, type)


def check_get_solver(tmp_path, capfd):
    path = tmp_path / "solver.prototxt"
    path.write_text(SOLVER)
    solver = caffe.get_solver(str(path))
    assert type(solver).__name__ == "AdamSolver"
    assert solver.iter == 0
    solver.step(2)
    assert solver.iter == 2
    assert set(solver.net.params) == {"ip"}


def check_layer_type_list(tmp_path, capfd):
    types_ = caffe.layer_type_list()
    assert types_ == sorted(types_)
    for t in ("Convolution", "InnerProduct", "Python", "BatchNorm", "SoftmaxWithLoss", "Input"):
        assert t in types_


def check_solver_count_rank(tmp_path, capfd):
    try:
        caffe.set_solver_count(4)
        caffe.set_solver_rank(3)
        caffe.set_multiprocess(True)
        assert caffe.solver_count() == 4 and caffe.solver_rank() == 3
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
        caffe.set_multiprocess(False)
    assert caffe.solver_count() == 1 and caffe.solver_rank() == 0


def check_nccl(tmp_path, capfd):
    assert caffe.has_nccl() is True
    uid = caffe.NCCL.new_uid()
    assert isinstance(uid, bytes)
    for method in ("bcast", "on_start", "on_gradients_ready"):
        assert callable(getattr(caffe.NCCL, method))


def check_timer(tmp_path, capfd):
    t = caffe.Timer()
    t.start()
    t.stop()
    assert isinstance(t.ms, float) and t.ms >= 0.0


def check_version(tmp_path, capfd):
    assert isinstance(caffe.__version__, str)
    assert caffe.__version__.split(".")[0].isdigit()


def check_phases(tmp_path, capfd):
    from decaffe.proto import caffe_pb2

    assert (caffe.TRAIN, caffe.TEST) == (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)


def check_classifier_detector(tmp_path, capfd):
    assert issubclass(caffe.Classifier, caffe.Net)
    assert issubclass(caffe.Detector, caffe.Net)
    assert callable(caffe.Classifier.predict)
    assert callable(caffe.Detector.detect_windows)


def check_io(tmp_path, capfd):
    assert isinstance(caffe.io, types.ModuleType)
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    t.set_transpose("data", (2, 0, 1))
    img = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(t.preprocess("data", img), img.transpose(2, 0, 1))
    arr = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(arr)),
                                  arr)


def check_netspec(tmp_path, capfd):
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[2, 3, 8, 8]))
    n.pool = caffe.layers.Pooling(n.data, pool=caffe.params.Pooling.AVE, kernel_size=2, stride=2)
    proto = n.to_proto()
    assert [lp.type for lp in proto.layer] == ["Input", "Pooling"]
    assert proto.layer[1].pooling_param.pool == caffe.params.Pooling.AVE == 1
    standalone = caffe.to_proto(n.pool)
    assert [lp.type for lp in standalone.layer] == ["Input", "Pooling"]
    net = _net(tmp_path, str(proto))
    assert net.blobs["pool"].data.shape == (2, 3, 4, 4)


TOP_LEVEL = {
    "init_log": check_init_log_and_log, "log": check_init_log_and_log,
    "set_mode_cpu": check_modes, "set_mode_gpu": check_modes, "set_device": check_modes,
    "set_random_seed": check_set_random_seed, "Layer": check_layer,
    "get_solver": check_get_solver, "layer_type_list": check_layer_type_list,
    "solver_count": check_solver_count_rank, "set_solver_count": check_solver_count_rank,
    "solver_rank": check_solver_count_rank, "set_solver_rank": check_solver_count_rank,
    "set_multiprocess": check_solver_count_rank, "has_nccl": check_nccl, "NCCL": check_nccl,
    "Timer": check_timer, "__version__": check_version, "TRAIN": check_phases,
    "TEST": check_phases, "Classifier": check_classifier_detector,
    "Detector": check_classifier_detector, "io": check_io, "layers": check_netspec,
    "params": check_netspec, "NetSpec": check_netspec, "to_proto": check_netspec,
    "Net": check_netspec,
}
SOLVER_CLASSES = ["SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
                  "AdaDeltaSolver", "AdamSolver"]


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_top_level_name(name, tmp_path, capfd):
    assert hasattr(caffe, name), f"caffe.{name} is missing"
    TOP_LEVEL[name](tmp_path, capfd)


@pytest.mark.parametrize("name", SOLVER_CLASSES)
def test_solver_classes(name, tmp_path):
    cls = getattr(caffe, name)
    text = SOLVER.replace('type: "Adam"', "")
    if name in ("AdaDeltaSolver",):
        text = text.replace("base_lr: 0.01", "base_lr: 1 momentum: 0.95")
    if name in ("RMSPropSolver",):
        text += "rms_decay: 0.98\n"
    path = tmp_path / "solver.prototxt"
    path.write_text(text)
    solver = cls(str(path))
    before = np.array(solver.net.params["ip"][0].data)
    solver.step(1)
    assert solver.iter == 1
    assert not np.array_equal(before, solver.net.params["ip"][0].data)


@pytest.mark.parametrize("module", ["caffe.net_spec", "caffe.io", "caffe.draw", "caffe.coord_map",
                                    "caffe.classifier", "caffe.detector", "caffe.proto.caffe_pb2"])
def test_modules_import(module):
    mod = importlib.import_module(module)
    expected = {"caffe.net_spec": ["NetSpec", "layers", "params", "to_proto"],
                "caffe.io": ["Transformer", "load_image", "resize_image", "oversample",
                             "array_to_datum", "datum_to_array", "array_to_blobproto",
                             "blobproto_to_array"],
                "caffe.draw": ["draw_net", "draw_net_to_file", "get_pydot_graph"],
                "caffe.coord_map": ["coord_map_from_to", "crop", "compose", "inverse"],
                "caffe.classifier": ["Classifier"],
                "caffe.detector": ["Detector"],
                "caffe.proto.caffe_pb2": ["NetParameter", "SolverParameter", "LayerParameter"]}
    for name in expected[module]:
        assert hasattr(mod, name), f"{module}.{name} is missing"


# ----------------------------------------------------------------------------------------------
# the Net, Layer and Blob surface
# ----------------------------------------------------------------------------------------------
def test_net_private_surface(tmp_path):
    net = _net(tmp_path)
    assert list(net._blob_names) == ["data", "ip"]
    assert [b.shape for b in net._blobs] == [(4, 3), (4, 2)]
    assert list(net._layer_names) == ["data", "ip"]
    assert list(net._inputs) == [0] and list(net._outputs) == [1]
    assert list(net._blob_loss_weights) == [0.0, 0.0]
    assert net._bottom_ids(1) == [0] and net._top_ids(1) == [1]
    x = np.ones((4, 3), np.float32)
    net.blobs["data"].data[...] = x
    net._forward(0, 1)
    np.testing.assert_allclose(net.blobs["ip"].data, x @ net.params["ip"][0].data.T
                               + net.params["ip"][1].data, rtol=1e-6)
    net._backward(1, 0)
    net.clear_param_diffs()
    assert not net.params["ip"][0].diff.any()


def test_net_batch_methods(tmp_path):
    net = _net(tmp_path)
    x = np.random.default_rng(2).normal(size=(9, 3)).astype(np.float32)
    assert [b["data"].shape for b in net._batch({"data": x})] == [(4, 3)] * 3
    out = net.forward_all(data=x)["ip"]
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    np.testing.assert_allclose(out, x @ w.T + b, rtol=1e-5, atol=1e-6)
    outs, diffs = net.forward_backward_all(data=x, ip=np.ones((9, 2), np.float32))
    assert outs["ip"].shape == (9, 2) and diffs["data"].shape == (9, 3)
    assert callable(net.set_input_arrays)


def test_net_constructor_forms(tmp_path):
    text = NET + 'layer { name: "s" type: "ReLU" bottom: "ip" top: "r" include { stage: "x" } }'
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    assert caffe.Net(str(path), caffe.TEST)._layer_names == ["data", "ip"]
    net = caffe.Net(str(path), caffe.TEST, stages=["x"])
    assert net._layer_names == ["data", "ip", "s"]
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    again = caffe.Net(str(path), caffe.TEST, weights=str(weights), level=0)
    np.testing.assert_array_equal(again.params["ip"][0].data, net.params["ip"][0].data)
    legacy = caffe.Net(str(path), str(weights), caffe.TEST)
    np.testing.assert_array_equal(legacy.params["ip"][0].data, net.params["ip"][0].data)


def test_layer_objects_and_blob_reshape(tmp_path):
    from decaffe.blob import Blob

    net = _net(tmp_path)
    layer = net.layers[1]
    assert layer.type == "InnerProduct"
    assert [b.data.shape for b in layer.blobs] == [(2, 3), (2,)]
    bottom, top = Blob((5, 3)), Blob(())
    layer.reshape([bottom], [top])
    assert top.shape == (5, 2)
    layer.setup([bottom], [top])
    assert top.shape == (5, 2)
    net.blobs["data"].reshape(7, 3)
    net.reshape()
    assert net.blobs["ip"].data.shape == (7, 2)
    assert net.blobs["data"].num == 7 and net.blobs["data"].channels == 3


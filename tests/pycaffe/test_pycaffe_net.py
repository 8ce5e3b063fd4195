"""The rest of pycaffe's Net API (decaffe.pycaffe.net's NetMixin): forward_all,
forward_backward_all, _batch, set_input_arrays, _bottom_ids/_top_ids; and the parts already
on the Net that pycaffe scripts use (_blob_names, _blobs, _layer_names, _inputs, _outputs,
_blob_loss_weights, _forward/_backward by index, clear_param_diffs, level/stages)."""

from __future__ import annotations

import numpy as np
import pytest

import caffe
import decaffe
from decaffe.errors import DecaffeError
from decaffe.formats import prototxt
from decaffe.net import Net as EngineNet
from decaffe.proto import caffe_pb2
from decaffe.pycaffe import net as pn

IP_NET = """
name: "ip"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "out" }
"""


def _ip_net(force_backward=False):
    text = ("force_backward: true\n" if force_backward else "") + IP_NET
    return decaffe.Net(text, decaffe.TEST)


def _reference(net, x):
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    ip = x.reshape(len(x), -1).astype(np.float64) @ w.T.astype(np.float64) + b
    return np.maximum(ip, 0)


def test_batch_splits_and_pads_with_zeros():
    net = _ip_net()
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    batches = list(net._batch({"data": x}))
    assert len(batches) == 3
    np.testing.assert_array_equal(batches[0]["data"], x[:4])
    np.testing.assert_array_equal(batches[1]["data"], x[4:8])
    last = batches[2]["data"]
    assert last.shape == (4, 3)
    np.testing.assert_array_equal(last[:2], x[8:])
    np.testing.assert_array_equal(last[2:], 0)
    assert list(net._batch({"data": x[:8]}))[-1]["data"].shape == (4, 3)
    assert len(list(net._batch({"data": x[:8]}))) == 2
    with pytest.raises(DecaffeError, match="lengths"):
        list(net._batch({"data": x, "other": x[:3]}))


def test_forward_all_matches_numpy_and_drops_padding():
    net = _ip_net()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    outs = net.forward_all(data=x)
    assert set(outs) == {"out"}
    assert outs["out"].shape == (10, 2)
    np.testing.assert_allclose(outs["out"], _reference(net, x), rtol=1e-5, atol=1e-6)
    # extra blobs come back too, one row per input row
    outs = net.forward_all(blobs=["ip"], data=x)
    assert set(outs) == {"out", "ip"} and outs["ip"].shape == (10, 2)
    # the arrays are copies, not views of the blob that the next batch overwrote
    assert not np.shares_memory(outs["out"], net.blobs["out"].data)
    with pytest.raises(DecaffeError):
        net.forward_all(nonsense=x)


def test_forward_backward_all():
    net = _ip_net(force_backward=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    g = rng.normal(size=(6, 2)).astype(np.float32)
    outs, diffs = net.forward_backward_all(blobs=["ip"], diffs=["ip"], data=x, out=g)
    assert set(outs) == {"out", "ip"} and set(diffs) == {"data", "ip"}
    assert outs["out"].shape == (6, 2) and diffs["data"].shape == (6, 3)
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    pre = x @ w.T + b
    dip = g * (pre > 0)
    np.testing.assert_allclose(diffs["ip"], dip, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diffs["data"], dip @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs["out"], np.maximum(pre, 0), rtol=1e-5, atol=1e-6)
    with pytest.raises(DecaffeError, match="neither"):
        net.forward_backward_all(data=x, bogus=g)


def test_ids_and_net_attributes():
    net = _ip_net()
    assert net._layer_names == ["data", "ip", "relu"]
    assert net._blob_names == ["data", "ip", "out"]
    assert [b.name for b in net._blobs] == net._blob_names
    assert list(net._inputs) == [0] and list(net._outputs) == [2]
    assert net._bottom_ids(1) == [0] and net._top_ids(1) == [1]
    assert net._bottom_ids(2) == [1] and net._top_ids(2) == [2]
    assert net._bottom_ids(0) == [] and net._top_ids(-1) == [2]
    with pytest.raises(DecaffeError, match="out of range"):
        net._bottom_ids(3)
    assert list(net._blob_loss_weights) == [0.0, 0.0, 0.0]


def test_forward_backward_by_index_and_clear_param_diffs():
    net = _ip_net(force_backward=True)
    x = np.ones((4, 3), np.float32)
    net.blobs["data"].data[...] = x
    net._forward(0, 1)  # through ip only
    np.testing.assert_allclose(net.blobs["ip"].data, x @ net.params["ip"][0].data.T
                               + net.params["ip"][1].data, rtol=1e-6)
    net._forward(2, 2)
    net.blobs["out"].diff[...] = 1
    net._backward(2, 0)
    assert np.abs(net.params["ip"][0].diff).sum() > 0
    net.clear_param_diffs()
    assert np.abs(net.params["ip"][0].diff).sum() == 0


def test_level_and_stages_select_layers():
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "deep" type: "ReLU" bottom: "data" top: "a" include { min_level: 2 } }
    layer { name: "staged" type: "ReLU" bottom: "data" top: "b" include { stage: "deploy" } }
    """
    names = lambda net: net._layer_names  # noqa: E731
    assert names(decaffe.Net(text, decaffe.TEST)) == ["data"]
    assert names(decaffe.Net(text, decaffe.TEST, level=2)) == ["data", "deep"]
    assert names(decaffe.Net(text, decaffe.TEST, stages=["deploy"])) == ["data", "staged"]


MEMORY_NET = """
layer { name: "mem" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 3 channels: 1 height: 2 width: 2 } }
layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
"""


def test_set_input_arrays_feeds_memory_data_in_turn():
    net = decaffe.Net(MEMORY_NET, decaffe.TEST)
    data = np.arange(6 * 4, dtype=np.float32).reshape(6, 1, 2, 2)
    labels = np.arange(6, dtype=np.float32)  # 1-d labels are accepted
    net.set_input_arrays(data, labels)
    net.forward()
    np.testing.assert_array_equal(net.blobs["flat"].data, data[:3].reshape(3, 4))
    np.testing.assert_array_equal(net.blobs["label"].data, labels[:3])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, labels[3:])
    net.forward()  # wraps around
    np.testing.assert_array_equal(net.blobs["label"].data, labels[:3])


def test_set_input_arrays_errors():
    net = decaffe.Net(MEMORY_NET, decaffe.TEST)
    good = np.zeros((3, 1, 2, 2), np.float32)
    lab = np.zeros(3, np.float32)
    with pytest.raises(DecaffeError, match="float32"):
        net.set_input_arrays(good.astype(np.float64), lab)
    with pytest.raises(DecaffeError, match="multiple of batch size"):
        net.set_input_arrays(np.zeros((4, 1, 2, 2), np.float32), np.zeros(4, np.float32))
    with pytest.raises(DecaffeError, match="first dimension"):
        net.set_input_arrays(good, np.zeros(6, np.float32))
    with pytest.raises(DecaffeError, match="contiguous"):
        net.set_input_arrays(np.zeros((3, 1, 2, 4), np.float32)[..., ::2], lab)
    with pytest.raises(DecaffeError, match="MemoryData"):
        _ip_net().set_input_arrays(good, lab)
    assert pn.NetMixin._set_input_arrays is pn.NetMixin.set_input_arrays


def test_decaffe_net_and_solver_nets_carry_the_mixin():
    """decaffe.Net and caffe.Net are the mixin over the engine's Net, and the nets a solver
    builds are too (solver.net.forward_all works as in pycaffe)."""
    assert decaffe.Net is caffe.Net is pn.Net
    assert issubclass(pn.Net, EngineNet) and issubclass(pn.Net, pn.NetMixin)
    assert not hasattr(EngineNet, "forward_all")  # the engine knows nothing of pycaffe
    sp = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", max_iter=1, test_iter=[1],
                                   test_interval=10)
    sp.net_param.CopyFrom(prototxt.parse_text(IP_NET, caffe_pb2.NetParameter()))
    solver = caffe.SGDSolver(sp)
    assert type(solver.net) is pn.Net and type(solver.test_nets[0]) is pn.Net
    x = np.ones((6, 3), np.float32)
    assert solver.net.forward_all(data=x)["out"].shape == (6, 2)

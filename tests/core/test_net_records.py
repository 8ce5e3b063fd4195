"""Net.layer_records: one read-only record per built layer (Caffe's per-layer vectors of Net,
in one place), and the build steps behind it (AppendBottom/AppendTop/AppendParam, one place
for setup and reshape errors, the loss summed after the pass)."""

import ast
import dataclasses
import os

import numpy as np
import pytest

import caffe
import decaffe
from decaffe.errors import DecaffeError, NetError
from decaffe.net import LayerRecord

IP = 'inner_product_param {{ num_output: {n} weight_filler {{ type: "gaussian" std: 0.5 }} }}'


def ip(name, bottom, top, n=3, extra=""):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" '
            f'{extra} {IP.format(n=n)} }}\n')


def inp(name="data", dims=(2, 4)):
    d = " ".join(f"dim: {x}" for x in dims)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {d} }} }} }}\n')


def test_records_give_each_layers_wiring():
    text = (inp() + inp("label", (2,)) + ip("a", "data", "a", extra='param { name: "w" }')
            + ip("b", "a", "b", n=3, extra='param { name: "w" lr_mult: 2 }')
            + 'layer { name: "relu" type: "ReLU" bottom: "b" top: "b" }\n'
            + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "b" bottom: "label" '
              'top: "loss" propagate_down: true propagate_down: false }\n')
    with pytest.raises(NetError, match="shared parameter 'w' has shape"):
        caffe.Net(text, caffe.TRAIN)  # a: 3x4, b: 3x3 cannot share
    net = caffe.Net(text.replace("dim: 2 dim: 4", "dim: 2 dim: 3"), caffe.TRAIN)
    recs = net.layer_records
    assert [r.name for r in recs] == net._layer_names == ["data", "label", "a", "b", "relu",
                                                          "loss"]
    assert [r.index for r in recs] == list(range(6))
    assert all(isinstance(r, LayerRecord) for r in recs)
    a, b, relu, loss = recs[2:]
    assert a.type == "InnerProduct" and a.layer is net.layer_dict["a"].layer
    assert a.bottom_names == ("data",) and a.top_names == ("a",)
    assert [net._blob_names[i] for i in b.bottoms] == ["a"]
    assert relu.bottoms == relu.tops == b.tops  # in place
    # b shares a's weight: the same learnable index, b's bias its own
    assert a.param_ids == (0, 1) and b.param_ids == (0, 2)
    assert net.learnable_param_id(3, 0) == 0
    assert b.layer.blob_params[0] is a.layer.blob_params[0]
    assert [s.lr_mult for s in b.param_specs] == [2.0, 1.0]
    assert net.params_lr[0] == 2.0  # the owner takes the sharer's explicit multiplier
    assert loss.loss_weights == (1.0,) and a.loss_weights == (0.0,)
    assert loss.bottom_need_backward == (True, False)
    assert net.bottom_need_backward(5) == [True, False]
    assert recs[0].is_input and recs[1].is_input and not a.is_input
    assert not recs[0].need_backward and a.need_backward
    assert a.params[0].shape == (3, 3) and net.params["a"][0].data is not None
    np.testing.assert_array_equal(a.params[0].data, net.params["a"][0].data)


def test_records_are_read_only():
    net = caffe.Net(inp() + ip("a", "data", "a"), caffe.TEST)
    rec = net.layer_records[1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.name = "other"
    with pytest.raises(AttributeError):
        rec.bottoms.append(5)
    with pytest.raises(AttributeError):
        net.layer_records = ()
    assert isinstance(net.layer_records, tuple)


def test_share_with_replaces_the_records_params():
    text = inp() + ip("a", "data", "a")
    src, dst = caffe.Net(text, caffe.TEST), caffe.Net(text, caffe.TEST)
    dst.share_with(src)
    rec = dst.layer_records[1]
    assert rec.layer.blob_params[0] is src.layer_records[1].layer.blob_params[0]
    src.params["a"][0].data[...] = 7
    np.testing.assert_array_equal(rec.params[0].data, 7)
    np.testing.assert_array_equal(dst.params["a"][0].data, 7)


RESHAPE = inp() + ('layer { name: "r" type: "Reshape" bottom: "data" top: "r" '
                   'reshape_param { shape { dim: 0 dim: -1 } } }\n')


@pytest.mark.parametrize("exc, message", [
    (RuntimeError("shape mismatch deep in torch"),
     "layer 'r': cannot {what} bottom shapes [(2, 4)]: shape mismatch deep in torch"),
    (DecaffeError("layer 'r': a bare helper error"), "layer 'r': a bare helper error"),
])
def test_setup_and_reshape_errors_name_the_layer_alike(monkeypatch, exc, message):
    net = caffe.Net(RESHAPE, caffe.TEST)
    cls = type(net.layer_records[1].layer)

    def failing(self, bottom_shapes):
        raise exc

    monkeypatch.setattr(cls, "reshape", failing)
    with pytest.raises(NetError) as built:
        caffe.Net(RESHAPE, caffe.TEST)
    with pytest.raises(NetError) as reshaped:
        net.reshape()
    assert str(built.value) == message.format(what="set up with")
    assert str(reshaped.value) == message.format(what="reshape to")
    assert built.value.layer == reshaped.value.layer == "r"


def test_loss_is_the_weighted_sum_of_the_tops_in_range():
    text = (inp(dims=(2, 3)) + ip("a", "data", "a", extra="loss_weight: 2")
            + ip("b", "a", "b", extra="loss_weight: 0.5"))
    net = caffe.Net(text, caffe.TRAIN)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    net.blobs["data"].data[...] = x
    total = net._forward_range(0, 3, record=False, grad=False)
    a, b = net.blobs["a"].data.astype(np.float64), net.blobs["b"].data.astype(np.float64)
    assert float(total) == pytest.approx(2 * a.sum() + 0.5 * b.sum(), rel=1e-5)
    # a's weight sits on its split's first top (layer 2): a range ending before has no loss
    assert net._layer_names[2] == "a_a_0_split"
    assert net._forward_range(0, 1, record=False, grad=False) is None
    upto_split = net._forward_range(0, 2, record=False, grad=False)
    assert float(upto_split) == pytest.approx(2 * a.sum(), rel=1e-5)
    only_b = net._forward_range(3, 3, record=False, grad=False)
    assert float(only_b) == pytest.approx(0.5 * b.sum(), rel=1e-5)


OLD_LISTS = {"_bottom_idx", "_top_idx", "_param_blobs", "_loss_weights", "_param_specs",
             "_layer_need_backward", "_bottom_need_backward", "_param_owner_learnable",
             "_layers"}


def test_other_modules_read_records_not_private_lists():
    """bn/, export/, distributed/, solvers/, cli/, pycaffe and compile read a net's wiring
    through net.layer_records, not the Net's private tables."""
    root = os.path.dirname(os.path.abspath(decaffe.__file__))
    found = []
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            if not f.endswith(".py") or path == os.path.join(root, "net.py"):
                continue
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in OLD_LISTS and not (
                        isinstance(node.value, ast.Name) and node.value.id == "self"):
                    found.append(f"{os.path.relpath(path, root)}:{node.lineno} .{node.attr}")
    assert not found, found

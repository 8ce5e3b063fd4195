"""NetSpec gives pycaffe's text for pycaffe's scripts (goldens made with pycaffe)."""

import os

import pytest
from golden_replay import GOLDEN, cases
from google.protobuf import text_format

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.proto import caffe_pb2

NETSPEC_CASES = cases("netspec")


@pytest.mark.parametrize("case", NETSPEC_CASES, ids=[c["name"] for c in NETSPEC_CASES])
def test_netspec_golden_text_identical(case):
    scope: dict = {}
    with open(os.path.join(GOLDEN, case["name"] + ".netspec.py")) as f:
        exec(f.read(), scope)
    got = str(scope["build"](caffe, L, P).to_proto())
    with open(os.path.join(GOLDEN, case["name"] + ".expected.prototxt")) as f:
        want = f.read()
    assert got.strip() == want.strip()


def tutorial_net():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 8, 8]))
    n.conv1 = L.Convolution(n.data, kernel_size=3, num_output=64, pad=1,
                            weight_filler=dict(type="xavier"))
    n.bn1 = L.BatchNorm(n.conv1, use_global_stats=False)
    n.scale1 = L.Scale(n.bn1, bias_term=True)
    n.relu1 = L.ReLU(n.scale1, in_place=True)
    return n


def test_tutorial_block_fields():
    net = tutorial_net().to_proto()
    by_name = {lp.name: lp for lp in net.layer}
    assert [lp.name for lp in net.layer] == ["data", "conv1", "bn1", "scale1", "relu1"]
    conv = by_name["conv1"].convolution_param
    assert conv.num_output == 64 and list(conv.kernel_size) == [3] and list(conv.pad) == [1]
    assert conv.weight_filler.type == "xavier"
    assert by_name["bn1"].batch_norm_param.HasField("use_global_stats")
    assert by_name["bn1"].batch_norm_param.use_global_stats is False
    assert by_name["scale1"].scale_param.bias_term is True
    assert list(by_name["relu1"].bottom) == ["scale1"] and list(by_name["relu1"].top) == ["scale1"]


def test_to_proto_text_parses_back():
    net = tutorial_net().to_proto()
    again = caffe_pb2.NetParameter()
    text_format.Parse(str(net), again)
    assert again == net


def test_autonames_count_per_type_and_ntop():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    a = L.InnerProduct(n.data, num_output=3)
    b = L.InnerProduct(a, num_output=3)
    n.s1, n.s2 = L.Slice(b, slice_point=[1], ntop=2)
    n.silence = L.Silence(n.s1, ntop=0)
    net = n.to_proto()
    names = [lp.name for lp in net.layer]
    assert names == ["data", "InnerProduct1", "InnerProduct2", "s1", "silence"]
    assert list(net.layer[3].top) == ["s1", "s2"]
    assert list(net.layer[4].top) == []
    assert net.layer[3].slice_param.slice_point == [1]


def test_generic_param_and_layer_fields():
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=4, source="x", backend=P.Data.LMDB, ntop=2,
                             transform_param=dict(mirror=True, mean_value=[1, 2, 3]),
                             include=dict(phase=caffe.TRAIN))
    n.loss = L.SoftmaxWithLoss(n.data, n.label, loss_weight=0.5, propagate_down=[True, False],
                               loss_param=dict(ignore_label=-1))
    net = n.to_proto()
    d, loss = net.layer
    assert d.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert list(d.transform_param.mean_value) == [1, 2, 3] and d.transform_param.mirror
    assert d.include[0].phase == caffe.TRAIN
    assert list(loss.loss_weight) == [0.5] and list(loss.propagate_down) == [True, False]
    assert loss.loss_param.ignore_label == -1


def test_params_enums_and_errors():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    with pytest.raises(AttributeError):
        _ = P.Pooling.NOPE
    with pytest.raises(TypeError, match="input 0 is not a Top"):
        L.ReLU("data")
    n = caffe.NetSpec()
    with pytest.raises(AttributeError, match="no top named"):
        _ = n.missing


def test_netspec_builds_a_net():
    n = tutorial_net()
    net = caffe.Net(str(n.to_proto()), caffe.TRAIN)
    assert net.blobs["scale1"].shape == (2, 64, 8, 8)
    assert [b.shape for b in net.params["bn1"]] == [(64,), (64,), (1,)]

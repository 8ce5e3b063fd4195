"""The Net's Caffe semantics and pycaffe's Net API, on layers of the core."""

import numpy as np
import pytest
import torch

import caffe
import decaffe
from decaffe.errors import NetError

IP = 'inner_product_param {{ num_output: {n} weight_filler {{ type: "gaussian" std: 0.5 }} ' \
     'bias_filler {{ type: "gaussian" std: 0.5 }} }}'


def ip(name, bottom, top, n=3, extra=""):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" '
            f'{extra} {IP.format(n=n)} }}\n')


def inp(name="data", dims=(2, 4)):
    d = " ".join(f"dim: {x}" for x in dims)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {d} }} }} }}\n')


def make(text, phase=caffe.TRAIN, **kw):
    return caffe.Net(text, phase, **kw)


def test_constructor_forms(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text(inp() + ip("ip", "data", "ip"))
    a = caffe.Net(str(p), caffe.TEST)
    assert a.phase == caffe.TEST
    a.save(str(tmp_path / "w.caffemodel"))
    b = caffe.Net(str(p), str(tmp_path / "w.caffemodel"), caffe.TEST)
    c = caffe.Net(str(p), caffe.TEST, weights=str(tmp_path / "w.caffemodel"))
    for net in (b, c):
        np.testing.assert_array_equal(net.params["ip"][0].data, a.params["ip"][0].data)
    with pytest.raises(decaffe.DecaffeError, match="phase"):
        caffe.Net(str(p))


def test_blobs_params_layers_names():
    net = make(inp() + ip("ip1", "data", "ip1") + ip("ip2", "ip1", "ip2"))
    assert list(net.blobs) == ["data", "ip1", "ip2"]
    assert list(net.params) == ["ip1", "ip2"]
    assert [b.shape for b in net.params["ip1"]] == [(3, 4), (3,)]
    assert net._layer_names == ["data", "ip1", "ip2"]
    assert [lv.type for lv in net.layers] == ["Input", "InnerProduct", "InnerProduct"]
    assert net.inputs == ["data"] and net.outputs == ["ip2"]
    assert net.top_names["ip1"] == ["ip1"] and net.bottom_names["ip2"] == ["ip1"]
    assert list(net.layer_dict) == net._layer_names
    b = net.blobs["data"]
    assert (b.num, b.channels, b.height, b.width, b.count) == (2, 4, 1, 1, 8)


def test_forward_matches_numpy_and_kwargs():
    net = make(inp() + ip("ip", "data", "ip"))
    x = np.random.randn(2, 4).astype(np.float32)
    out = net.forward(data=x)
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    np.testing.assert_allclose(out["ip"], x @ w.T + b, rtol=1e-5)
    with pytest.raises(decaffe.DecaffeError, match="do not match"):
        net.forward(other=x)
    with pytest.raises(decaffe.DecaffeError, match="batch sized"):
        net.forward(data=np.zeros((3, 4), np.float32))


def test_writing_data_feeds_forward_and_backward_from_hand_set_diffs():
    net = make("force_backward: true\n" + inp() + ip("ip", "data", "ip"))
    x = np.random.randn(2, 4).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    g = np.random.randn(2, 3).astype(np.float32)
    net.blobs["ip"].diff[...] = g
    diffs = net.backward()
    w = net.params["ip"][0].data
    np.testing.assert_allclose(diffs["data"], g @ w, rtol=1e-5)
    np.testing.assert_allclose(net.params["ip"][0].diff, g.T @ x, rtol=1e-5)
    np.testing.assert_allclose(net.params["ip"][1].diff, g.sum(0), rtol=1e-5)
    # parameter diffs accumulate across backward passes, as Caffe's do
    net.backward()
    np.testing.assert_allclose(net.params["ip"][0].diff, 2 * g.T @ x, rtol=1e-5)
    # backward(**diffs) sets output diffs
    out = net.backward(ip=np.zeros((2, 3), np.float32))
    np.testing.assert_allclose(out["data"], 0)


def test_partial_forward_and_backward_with_start_end():
    net = make("force_backward: true\n" + inp() + ip("ip1", "data", "ip1") +
               ip("ip2", "ip1", "ip2"))
    x = np.random.randn(2, 4).astype(np.float32)
    net.forward(data=x)
    full = net.blobs["ip2"].data.copy()
    # change ip1 by hand, run only ip2
    h = np.random.randn(2, 3).astype(np.float32)
    net.blobs["ip1"].data[...] = h
    out = net.forward(start="ip2")
    w2, b2 = net.params["ip2"][0].data, net.params["ip2"][1].data
    np.testing.assert_allclose(out["ip2"], h @ w2.T + b2, rtol=1e-5)
    # forward up to ip1 only leaves ip2 alone
    res = net.forward(end="ip1")
    assert set(res) == {"ip1"}
    np.testing.assert_allclose(net.blobs["ip2"].data, out["ip2"])
    assert not np.allclose(full, out["ip2"])
    # backward from ip2 down to ip2 only: ip1's diff is set, data's untouched
    net.forward()
    net.blobs["data"].diff[...] = 7
    g = np.ones((2, 3), np.float32)
    net.blobs["ip2"].diff[...] = g
    res = net.backward(start="ip2", end="ip2")
    assert set(res) == {"ip1"}  # the end layer's bottoms, as BVLC master's pycaffe returns
    np.testing.assert_allclose(res["ip1"], g @ w2, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["ip1"].diff, g @ w2, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["data"].diff, 7)


def test_in_place_blob_shows_last_output():
    text = (inp(dims=(4, 3)) + ip("ip", "data", "ip") +
            'layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "ip" }\n'
            'layer { name: "sc" type: "Scale" bottom: "ip" top: "ip" scale_param { bias_term: true '
            'filler { type: "constant" value: 2 } bias_filler { type: "constant" value: 1 } } }\n')
    net = make(text)
    assert list(net.blobs) == ["data", "ip"]
    net.forward(data=np.random.randn(4, 3).astype(np.float32))
    y = net.blobs["ip"].data
    # BatchNorm then Scale(2, +1): per-channel mean 1, biased std ≈ 2
    np.testing.assert_allclose(y.mean(0), 1, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 2, rtol=1e-3)


def test_shared_parameters_are_shared_and_gradients_add():
    shared = 'param { name: "w" } param { name: "b" }'
    text = ("force_backward: true\n" + inp(dims=(2, 3)) +
            ip("a", "data", "a", extra=shared) + ip("b", "data", "b", extra=shared))
    net = make(text)
    assert net.params["a"][0].data is not None
    net.params["a"][0].data[...] = 1.5
    np.testing.assert_array_equal(net.params["b"][0].data, 1.5)
    assert len(net.learnable_params) == 2
    x = np.random.randn(2, 3).astype(np.float32)
    net.forward(data=x)
    net.blobs["a"].diff[...] = 1
    net.blobs["b"].diff[...] = 2
    net.backward()
    np.testing.assert_allclose(net.params["a"][0].diff, 3 * np.ones((3, 2)) @ x, rtol=1e-5)
    bad = inp(dims=(2, 3)) + ip("a", "data", "a", extra=shared) + \
        ip("b", "data", "b", n=4, extra=shared)
    with pytest.raises(NetError, match="shared parameter 'w'"):
        make(bad)


def test_splits_inserted_with_caffe_names_and_gradients_summed():
    text = ("force_backward: true\n" + inp(dims=(2, 3)) + ip("a", "data", "a") +
            ip("b", "data", "b"))
    net = make(text)
    assert net._layer_names == ["data", "data_data_0_split", "a", "b"]
    assert "data_data_0_split_0" in net.blobs and "data_data_0_split_1" in net.blobs
    x = np.random.randn(2, 3).astype(np.float32)
    net.forward(data=x)
    net.blobs["a"].diff[...] = 1
    net.blobs["b"].diff[...] = 1
    net.backward()
    wa, wb = net.params["a"][0].data, net.params["b"][0].data
    np.testing.assert_allclose(net.blobs["data"].diff, np.ones((2, 3)) @ (wa + wb), rtol=1e-5)


def test_loss_weight_and_propagate_down():
    # loss_weight on a non-loss layer's top makes it a loss; propagate_down stops a bottom
    text = (inp(dims=(2, 3)) + ip("a", "data", "a", extra="loss_weight: 2") +
            ip("b", "a", "b", extra="propagate_down: false loss_weight: 1"))
    net = make(text)
    # as in Caffe, a weighted top that is also read gets a Split carrying the weight
    assert net.blob_loss_weights["a_a_0_split_0"] == 2 and net.blob_loss_weights["a"] == 0
    assert net.blob_loss_weights["b"] == 1 and net.blob_loss_weights["data"] == 0
    x = np.random.randn(2, 3).astype(np.float32)
    net.forward(data=x)
    loss = net.forward_backward()
    a, b = net.blobs["a"].data, net.blobs["b"].data
    assert loss == pytest.approx(2 * a.sum() + b.sum(), rel=1e-5)
    # b's bottom is not propagated: a's weight gradient comes from its own loss only
    np.testing.assert_allclose(net.params["a"][0].diff, 2 * np.ones((3, 2)) @ x, rtol=1e-5)


def test_lr_mult_zero_computes_no_parameter_gradient():
    frozen = "param { lr_mult: 0 } param { lr_mult: 0 }"
    text = (inp(dims=(2, 3)) + ip("a", "data", "a", extra=frozen)
            + ip("b", "a", "b", extra="loss_weight: 1"))
    net = make(text)
    assert not net.layer_need_backward(1)
    assert net.params_lr[:2] == [0.0, 0.0]
    net.forward(data=np.ones((2, 3), np.float32))
    net.forward_backward()
    np.testing.assert_array_equal(net.params["a"][0].diff, 0)
    assert np.abs(net.params["b"][0].diff).sum() > 0


def test_netstate_rules_phase_level_stage():
    text = (inp(dims=(2, 3)) +
            ip("train_only", "data", "t", extra="include { phase: TRAIN }") +
            ip("test_only", "data", "e", extra="include { phase: TEST }") +
            ip("lvl", "data", "l", extra="include { min_level: 2 }") +
            ip("stg", "data", "s", extra='include { stage: "deploy" }') +
            ip("notstg", "data", "n", extra='exclude { stage: "deploy" }'))
    def layers(**kw):
        return set(caffe.Net(text, **kw)._layer_names) - {"data", "data_data_0_split"}
    assert layers(phase=caffe.TRAIN) == {"train_only", "notstg"}
    assert layers(phase=caffe.TEST) == {"test_only", "notstg"}
    assert layers(phase=caffe.TEST, level=2) == {"test_only", "lvl", "notstg"}
    assert layers(phase=caffe.TRAIN, stages=["deploy"]) == {"train_only", "stg"}
    with pytest.raises(NetError, match="either include rules or exclude"):
        make(inp() + ip("x", "data", "x", extra="include { phase: TRAIN } exclude { phase: TEST }"))


def test_reshape_after_input_shape_change():
    net = make(inp(dims=(2, 4)) + ip("ip", "data", "ip"))
    net.blobs["data"].reshape(5, 4)
    net.reshape()
    assert net.blobs["ip"].shape == (5, 3)
    out = net.forward(data=np.ones((5, 4), np.float32))
    assert out["ip"].shape == (5, 3)
    net.blobs["data"].reshape(5, 7)
    with pytest.raises(NetError, match="layer 'ip'"):
        net.reshape()


def test_errors_name_layer_and_blob():
    with pytest.raises(NetError, match=r"unknown layer type 'InnerProdcut'.*'InnerProduct'"):
        make(inp() + 'layer { name: "x" type: "InnerProdcut" bottom: "data" top: "x" }')
    with pytest.raises(NetError, match=r"layer 'ip', blob 'dta'.*did you mean 'data'"):
        make(inp() + ip("ip", "dta", "ip"))
    with pytest.raises(NetError, match=r"layer 'ip'.*1 bottom"):
        make(inp() + 'layer { name: "ip" type: "InnerProduct" bottom: "data" bottom: "data" '
             'top: "ip" inner_product_param { num_output: 2 } }')
    with pytest.raises(NetError, match="produced by more than one layer"):
        make(inp() + ip("a", "data", "x") + ip("b", "data", "x"))


def test_copy_from_shape_mismatch_names_layer_blob_and_shapes(tmp_path):
    a = make(inp() + ip("ip", "data", "ip", n=3))
    a.save(str(tmp_path / "a.caffemodel"))
    b = make(inp() + ip("ip", "data", "ip", n=5))
    with pytest.raises(NetError, match=r"layer 'ip'.*blob 0.*\(3, 4\).*\(5, 4\)"):
        b.copy_from(str(tmp_path / "a.caffemodel"))


def test_save_load_roundtrip_caffemodel_and_hdf5(tmp_path):
    a = make(inp() + ip("ip", "data", "ip"))
    a.save(str(tmp_path / "w.caffemodel"))
    a.save_hdf5(str(tmp_path / "w.caffemodel.h5"))
    for f in ("w.caffemodel", "w.caffemodel.h5"):
        b = make(inp() + ip("ip", "data", "ip"))
        if f.endswith(".h5"):
            b.load_hdf5(str(tmp_path / f))
        else:
            b.copy_from(str(tmp_path / f))
        for pa, pb in zip(a.params["ip"], b.params["ip"]):
            np.testing.assert_array_equal(pa.data, pb.data)


def test_share_with_uses_the_same_storage():
    text = inp() + ip("ip", "data", "ip")
    a, b = make(text), make(text, phase=caffe.TEST)
    b.share_with(a)
    a.params["ip"][0].data[...] = 3
    np.testing.assert_array_equal(b.params["ip"][0].data, 3)


def test_float64_net_for_gradient_checks():
    net = caffe.Net(inp() + ip("ip", "data", "ip"), caffe.TRAIN, dtype=torch.float64)
    assert net.params["ip"][0].data.dtype == np.float64
    assert net.blobs["data"].data.dtype == np.float64


BN_BLOCK = (inp(dims=(4, 3, 5, 5)) + inp("target", dims=(4, 2)) +
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "msra" } } }\n'
            'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }\n'
            'layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" '
            'scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 2 } '
            'bias_filler { type: "uniform" } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" '
            'inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" '
            'top: "loss" }\n')


@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST])
def test_solver_pass_fuses_batchnorm_scale_with_identical_results(phase):
    a, b = make(BN_BLOCK, phase=phase), make(BN_BLOCK, phase=phase)
    b.share_with(a)
    assert a._fused == {3: 4}
    x = np.random.randn(4, 3, 5, 5).astype(np.float32)
    t = np.random.randn(4, 2).astype(np.float32)
    for net in (a, b):
        net.blobs["data"].data[...] = x
        net.blobs["target"].data[...] = t
    if phase == caffe.TEST:  # give the statistics something to use
        a.params["bn"][0].data[...] = np.random.randn(6)
        a.params["bn"][1].data[...] = np.random.rand(6) + 0.5
        a.params["bn"][2].data[...] = 2.0
    stats_before = [p.data.copy() for p in a.params["bn"]]
    a.clear_param_diffs()
    loss_fused = a.forward_backward()
    fused_grads = {k: [p.diff.copy() for p in v] for k, v in a.params.items()}
    fused_stats = [p.data.copy() for p in a.params["bn"]]
    conv_fused = a.blobs["conv"].data.copy()
    for p, s in zip(a.params["bn"], stats_before):
        p.data[...] = s
    a.clear_param_diffs()
    out = b.forward()  # pycaffe path: layer by layer, no fusion
    b.backward()
    assert float(out["loss"]) == pytest.approx(loss_fused, rel=1e-5)
    np.testing.assert_allclose(b.blobs["conv"].data, conv_fused, rtol=1e-5, atol=1e-6)
    for k, grads in fused_grads.items():
        for g, p in zip(grads, b.params[k]):
            np.testing.assert_allclose(p.diff, g, rtol=1e-4, atol=1e-6, err_msg=k)
    for s, p in zip(fused_stats, b.params["bn"]):
        np.testing.assert_allclose(p.data, s, rtol=1e-6)


def test_close_stops_data_layers(tmp_path):
    import lmdb

    from decaffe.pycaffe.io import array_to_datum

    db = tmp_path / "db"
    env = lmdb.open(str(db), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for i in range(3):
            txn.put(f"{i:08d}".encode(), array_to_datum(np.full((1, 2, 2), i, np.uint8),
                                                        i).SerializeToString())
    env.close()
    net = make(f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
               f'data_param {{ source: "{db}" batch_size: 2 backend: LMDB }} }}')
    net.forward()
    net.close()
    with pytest.raises(decaffe.DecaffeError, match="closed"):
        net.forward()


def test_silence_zeroes_the_diffs_of_its_bottoms():
    net = make("force_backward: true\n" + inp() + ip("ip", "data", "ip") +
               'layer { name: "s" type: "Silence" bottom: "ip" }\n')
    net.forward(data=np.ones((2, 4), np.float32))
    net.blobs["ip"].diff[...] = 5
    net.backward()
    np.testing.assert_array_equal(net.blobs["ip"].diff, 0)
    np.testing.assert_array_equal(net.blobs["data"].diff, 0)


def test_decaffe_public_api_names():
    for name in ("Net", "Blob", "NetSpec", "to_proto", "get_solver",
                 "SGDSolver", "AdamSolver", "TRAIN", "TEST", "set_mode_cpu", "set_device",
                 "layer_type_list", "caffe_pb2", "DecaffeError"):
        assert getattr(decaffe, name) is not None, name
    assert decaffe.get_solver is caffe.get_solver and decaffe.Net is caffe.Net
    with pytest.raises(AttributeError):
        _ = decaffe.no_such_name


def test_layer_registry_fills_in_a_fresh_process():
    # decaffe.layers is the layer package; building a net must register every type even
    # when nothing imported that package first
    import subprocess
    import sys

    code = ("import decaffe, sys; from decaffe.layer import layer_class; "
            "layer_class('HDF5Data'); print(len(decaffe.layer_type_list()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 50


@pytest.mark.parametrize("conv,want", [
    ('kernel_size: 3 weight_filler { type: "nonexistent" }', "unknown filler type 'nonexistent'"),
    ("kernel_h: 65536 kernel_w: 65536", "more than INT_MAX"),
])
def test_errors_of_helpers_during_setup_name_the_layer(conv, want):
    """A filler's or a blob-size check's error, raised while a layer sets up, is a NetError
    whose .layer is that layer (found by the project's fuzzing of net prototxts)."""
    from decaffe.errors import NetError

    text = ('layer { name: "d" type: "Input" top: "x" '
            'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
            'layer { name: "conv7" type: "Convolution" bottom: "x" top: "c" '
            f'convolution_param {{ num_output: 4 {conv} }} }}')
    with pytest.raises(NetError, match=want) as e:
        decaffe.Net(text, decaffe.TEST)
    assert e.value.layer == "conv7"
    assert str(e.value).startswith("layer 'conv7': ") and str(e.value).count("conv7") == 1

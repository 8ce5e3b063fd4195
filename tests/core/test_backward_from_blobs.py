"""Backward is a function of what the blobs hold (issue 21, case 14): Caffe's Net::Backward
reads the blobs' current data and diffs, whether or not a forward ran, and whatever a user
wrote into them since. Expected values are Caffe's Backward_cpu formulas in numpy."""

import os

import numpy as np
import pytest
import torch

import caffe

CASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backward_case14")


def net_from(text, phase=caffe.TEST):
    return caffe.Net("force_backward: true\n" + text, phase)


def inp(dims, name="data"):
    d = " ".join(f"dim: {x}" for x in dims)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" ' \
           f'input_param {{ shape {{ {d} }} }} }}\n'


def layer(name, type_, bottom, top, extra=""):
    bottoms = "".join(f' bottom: "{b}"' for b in ([bottom] if isinstance(bottom, str)
                                                  else bottom))
    return f'layer {{ name: "{name}" type: "{type_}"{bottoms} top: "{top}" {extra} }}\n'


IP = 'inner_product_param { num_output: %d weight_filler { type: "gaussian" std: 1 } %s}'


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- case 14 ----------------------------------------------------------------------------------
def test_inner_product_backward_with_no_forward_is_diff_times_weights():
    net = net_from(inp((3, 2, 2, 2)) + layer("ip", "InnerProduct", "data", "ip",
                                             IP % (4, "bias_term: false ")))
    d = rand(3, 4)
    net.blobs["ip"].diff[...] = d
    net.backward()
    w = net.params["ip"][0].data.reshape(4, -1)
    np.testing.assert_allclose(net.blobs["data"].diff.reshape(3, -1), d @ w, rtol=1e-5,
                               atol=1e-5)
    # the weights' diff is diffᵀ·data, the data being the blob's zeros
    np.testing.assert_array_equal(net.params["ip"][0].diff, 0)


def test_python_layer_backward_with_no_forward_gets_the_blobs(monkeypatch):
    monkeypatch.syspath_prepend(CASE)
    net = net_from(inp((2, 3)) + layer("ten", "Python", "data", "ten",
                                       "python_param { module: 'times_ten' layer: 'TimesTen' }"))
    net.blobs["ten"].diff[...] = 7
    net.backward()
    np.testing.assert_array_equal(net.blobs["data"].diff, np.full((2, 3), 70, np.float32))


def test_backward_start_end_on_one_layer_after_writing_blobs_by_hand():
    net = net_from(inp((2, 6)) + layer("ip", "InnerProduct", "data", "ip", IP % (5, ""))
                   + layer("relu", "ReLU", "ip", "out"))
    net.blobs["data"].data[...] = rand(2, 6, seed=1)
    d = rand(2, 5, seed=2)
    net.blobs["ip"].diff[...] = d
    out = net.backward(start="ip", end="ip")
    assert set(out) == {"data"}
    np.testing.assert_allclose(out["data"], d @ net.params["ip"][0].data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.params["ip"][0].diff, d.T @ net.blobs["data"].data,
                               rtol=1e-5, atol=1e-5)


# -- layers whose Caffe backward reads the top's data -----------------------------------------
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


TOP_READERS = [
    ("Sigmoid", "", lambda x, y, d: d * y * (1 - y)),
    ("TanH", "", lambda x, y, d: d * (1 - y * y)),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", lambda x, y, d: y * d * np.log(2) * 0.5),
    ("ELU", "elu_param { alpha: 0.7 }", lambda x, y, d: d * ((x > 0) + (0.7 + y) * (x <= 0))),
    ("Softmax", "", lambda x, y, d: (d - (d * y).sum(1, keepdims=True)) * y),
    ("Power", "power_param { power: 3 scale: 2 }", lambda x, y, d: d * 3 * y / x),
    ("Power", "power_param { power: 3 scale: 2 shift: 0.5 }",
     lambda x, y, d: d * 6 * y / (2 * x + 0.5)),
    ("Power", "power_param { power: 2 scale: 2 shift: 0.5 }",
     lambda x, y, d: d * (8 * x + 2)),
    ("Swish", "swish_param { beta: 1.5 }",
     lambda x, y, d: d * (1.5 * y + _sigmoid(1.5 * x) * (1 - 1.5 * y))),
]


@pytest.mark.parametrize("type_,param,caffe_grad", TOP_READERS,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(TOP_READERS)])
def test_overwritten_top_data_enters_caffes_backward(type_, param, caffe_grad):
    net = net_from(inp((2, 5, 3)) + layer("f", type_, "data", "f", param))
    x = rand(2, 5, 3, seed=3) + 0.1
    net.forward(data=x)
    y = np.abs(rand(2, 5, 3, seed=4)) * 0.5  # a top the forward did not make
    net.blobs["f"].data[...] = y
    d = rand(2, 5, 3, seed=5)
    got = net.backward(f=d)["data"]
    np.testing.assert_allclose(got, caffe_grad(x, y, d), rtol=1e-4, atol=1e-5)


def test_top_readers_without_a_forward_read_the_blobs():
    net = net_from(inp((2, 4)) + layer("s", "Sigmoid", "data", "s"))
    y = np.full((2, 4), 0.25, np.float32)
    net.blobs["s"].data[...] = y
    out = net.backward(s=np.ones((2, 4), np.float32))
    np.testing.assert_allclose(out["data"], 0.25 * 0.75)


def test_eltwise_prod_quotient_form_reads_the_top():
    net = net_from(inp((2, 3), "a") + inp((2, 3), "b") +
                   layer("p", "Eltwise", ["a", "b"], "p",
                         "eltwise_param { operation: PROD stable_prod_grad: false }"))
    a, b = rand(2, 3, seed=6), rand(2, 3, seed=7)
    net.forward(a=a, b=b)
    y = rand(2, 3, seed=8)
    net.blobs["p"].data[...] = y
    d = rand(2, 3, seed=9)
    out = net.backward(p=d)
    np.testing.assert_allclose(out["a"], d * y / a, rtol=1e-5)
    np.testing.assert_allclose(out["b"], d * y / b, rtol=1e-5)


# -- layers whose backward reads the bottoms, or only what the forward kept -------------------
def test_relu_backward_reads_the_bottom_as_written_after_the_forward():
    net = net_from(inp((2, 6)) + layer("r", "ReLU", "data", "r"))
    x = rand(2, 6, seed=10)
    net.forward(data=x)
    net.blobs["data"].data[...] = -x  # every sign flipped: Caffe's mask follows the blob
    out = net.backward(r=np.ones((2, 6), np.float32))
    np.testing.assert_array_equal(out["data"], (-x > 0).astype(np.float32))


def test_inner_product_weight_diff_reads_the_bottom_written_after_the_forward():
    net = net_from(inp((2, 6)) + layer("relu", "ReLU", "data", "r") +
                   layer("ip", "InnerProduct", "r", "ip", IP % (3, "")))
    net.forward(data=rand(2, 6, seed=11))
    h = rand(2, 6, seed=12)
    net.blobs["r"].data[...] = h
    d = rand(2, 3, seed=13)
    net.backward(ip=d, end="ip")
    np.testing.assert_allclose(net.params["ip"][0].diff, d.T @ h, rtol=1e-5, atol=1e-6)


def test_max_pooling_keeps_its_forwards_argmax_when_the_bottom_is_written():
    net = net_from(inp((1, 1, 2, 2)) + layer(
        "pool", "Pooling", "data", "pool", "pooling_param { pool: MAX kernel_size: 2 }"))
    net.forward(data=np.array([[[[1, 5], [2, 3]]]], np.float32))
    net.blobs["data"].data[...] = np.array([[[[9, 0], [0, 0]]]], np.float32)
    out = net.backward(pool=np.full((1, 1, 1, 1), 4, np.float32))
    # Caffe's mask is the forward's (the 5), not an argmax of what the blob holds now
    np.testing.assert_array_equal(out["data"], [[[[0, 4], [0, 0]]]])


def test_reading_arrays_keeps_the_recorded_graph_and_writing_reruns_the_layer():
    net = net_from(inp((2, 4)) + layer("ip", "InnerProduct", "data", "ip", IP % (3, "")) +
                   layer("relu", "ReLU", "ip", "r"))
    calls = []
    net.layer_dict["relu"].layer.register_forward_hook(lambda *a: calls.append(1))
    net.forward(data=rand(2, 4, seed=14))
    assert len(calls) == 1
    seen = net.blobs["ip"].data.copy()  # reading hands the array out; nothing changes
    net.backward(r=np.ones((2, 3), np.float32))
    assert len(calls) == 1
    net.blobs["ip"].data[...] = -seen
    out = net.backward(r=np.ones((2, 3), np.float32))
    assert len(calls) == 2  # the ReLU ran again, on what the blob holds now
    np.testing.assert_array_equal(net.blobs["ip"].diff, (-seen > 0).astype(np.float32))
    assert out["data"].shape == (2, 4)


NET = (inp((2, 2, 6, 6)) +
       layer("conv", "Convolution", "data", "conv",
             'convolution_param { num_output: 3 kernel_size: 3 '
             'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" } }') +
       layer("tanh", "TanH", "conv", "conv") +
       layer("pool", "Pooling", "conv", "pool", "pooling_param { pool: MAX kernel_size: 2 }") +
       layer("ip", "InnerProduct", "pool", "ip", IP % (4, "")) +
       layer("sig", "Sigmoid", "ip", "sig") +
       layer("ip2", "InnerProduct", "sig", "ip2", IP % (3, "")) +
       inp((2,), "label") +
       layer("loss", "SoftmaxWithLoss", ["ip2", "label"], "loss"))


def test_backward_without_forward_from_the_forwards_blobs_equals_the_recorded_backward():
    a, b = net_from(NET, caffe.TRAIN), net_from(NET, caffe.TRAIN)
    b.share_with(a)
    a.forward(data=rand(2, 2, 6, 6, seed=15), label=np.array([0, 2], np.float32))
    a.backward()
    want = {k: (blob.diff.copy(), [p.diff.copy() for p in a.params.get(k, [])])
            for k, blob in a.blobs.items()}
    for p in a.params.values():
        for blob in p:
            blob.diff[...] = 0
    # the other net never runs forward: its blobs are given what a's forward left
    for name, blob in a.blobs.items():
        b.blobs[name].data[...] = blob.data
    b.backward()
    for name in ("data", "conv", "pool", "ip", "sig", "ip2"):
        np.testing.assert_allclose(b.blobs[name].diff, want[name][0], rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    for name in ("conv", "ip", "ip2"):
        for got, w in zip(b.params[name], want[name][1]):
            np.testing.assert_allclose(got.diff, w, rtol=1e-4, atol=1e-6, err_msg=name)


def test_rerun_for_backward_leaves_dropout_draws_and_batchnorm_statistics_alone():
    text = (inp((4, 3, 2, 2)) + layer("bn", "BatchNorm", "data", "bn") +
            layer("drop", "Dropout", "bn", "drop"))
    a, b = net_from(text, caffe.TRAIN), net_from(text, caffe.TRAIN)
    x = rand(4, 3, 2, 2, seed=16)
    b.blobs["data"].data[...] = x
    b.blobs["drop"].diff[...] = 1
    b.backward()  # no forward: both layers re-run on the blobs, and leave no trace
    stats = [p.data.copy() for p in b.params["bn"]]
    np.testing.assert_array_equal(stats[2], 0)
    torch.manual_seed(3)
    a.forward(data=x)
    torch.manual_seed(3)
    b.forward(data=x)
    np.testing.assert_array_equal(a.blobs["drop"].data, b.blobs["drop"].data)
    for pa, pb in zip(a.params["bn"], b.params["bn"]):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_lrn_across_channels_backward_reads_top_and_bottom():
    size, alpha, beta, k = 3, 0.5, 0.75, 2.0
    net = net_from(inp((2, 5, 2, 3)) + layer(
        "n", "LRN", "data", "n", f"lrn_param {{ local_size: {size} alpha: {alpha} "
                                 f"beta: {beta} k: {k} }}"))
    x = rand(2, 5, 2, 3, seed=20)
    net.forward(data=x)
    y = rand(2, 5, 2, 3, seed=21)
    net.blobs["n"].data[...] = y
    d = rand(2, 5, 2, 3, seed=22)
    got = net.backward(n=d)["data"]

    def window(t):  # Σ over channels c-1..c+1
        p = np.pad(t, ((0, 0), (1, 1), (0, 0), (0, 0)))
        return p[:, :-2] + p[:, 1:-1] + p[:, 2:]

    scale = k + alpha / size * window(x * x)
    want = d * scale ** -beta - 2 * alpha * beta / size * x * window(d * y / scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variance", [True, False])
def test_mvn_backward_reads_the_top(variance):
    net = net_from(inp((2, 3, 4)) + layer(
        "m", "MVN", "data", "m", f"mvn_param {{ normalize_variance: {str(variance).lower()} }}"))
    x = rand(2, 3, 4, seed=23)
    net.forward(data=x)
    y = rand(2, 3, 4, seed=24)
    net.blobs["m"].data[...] = y
    d = rand(2, 3, 4, seed=25)
    got = net.backward(m=d)["data"]
    if variance:
        std = np.sqrt((x * x).mean(2, keepdims=True) - x.mean(2, keepdims=True) ** 2) + 1e-9
        want = (d - ((y * d).sum(2, keepdims=True) * y + d.sum(2, keepdims=True)) / 4) / std
    else:
        want = d - d.mean(2, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_lstm_unit_backward_reads_the_top_c():
    h = 3
    net = net_from(inp((1, 2, h), "c0") + inp((1, 2, 4 * h), "x") + inp((1, 2), "cont") +
                   'layer { name: "u" type: "LSTMUnit" bottom: "c0" bottom: "x" '
                   'bottom: "cont" top: "c" top: "h" propagate_down: true '
                   'propagate_down: true propagate_down: false }\n')
    c0, x, cont = rand(1, 2, h, seed=26), rand(1, 2, 4 * h, seed=27), \
        np.array([[1, 0.5]], np.float32)
    net.forward(c0=c0, x=x, cont=cont)
    c = rand(1, 2, h, seed=28)
    net.blobs["c"].data[...] = c
    dc, dh = rand(1, 2, h, seed=29), rand(1, 2, h, seed=30)
    out = net.backward(c=dc, h=dh)
    i, f, o = (_sigmoid(x[..., j * h:(j + 1) * h]) for j in range(3))
    f = f * cont[..., None]
    g = np.tanh(x[..., 3 * h:])
    t = np.tanh(c)
    term = dc + dh * o * (1 - t * t)
    np.testing.assert_allclose(out["c0"], term * f, rtol=1e-5, atol=1e-6)
    want = np.concatenate([term * g * i * (1 - i), term * c0 * f * (1 - f),
                           dh * t * o * (1 - o), term * i * (1 - g * g)], axis=-1)
    np.testing.assert_allclose(out["x"], want, rtol=1e-5, atol=1e-6)

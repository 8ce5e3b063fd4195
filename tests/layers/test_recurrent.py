"""RNN, LSTM and LSTMUnit: Caffe's blob layout, forward against an independent numpy
recurrence, carried state across passes, expose_hidden and static inputs, finite-difference
gradients, training, and the errors Caffe's checks raise."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from netbuild import input_layer as _input

import decaffe
from decaffe.errors import DecaffeError, NetError

PYLAYERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pylayers")
RNG = np.random.default_rng(42)


# ----------------------------------------------------------------------------------------------
# independent numpy references
# ----------------------------------------------------------------------------------------------
def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_lstm(x, cont, w_xc, b_c, w_hc, w_s=None, xs=None, h0=None, c0=None):
    """Caffe's LSTM, step by step; returns (h sequence, h_T, c_T)."""
    t_len, n = x.shape[:2]
    hid = w_hc.shape[1]
    xf = x.reshape(t_len, n, -1)
    h = np.zeros((n, hid)) if h0 is None else h0.reshape(n, hid)
    c = np.zeros((n, hid)) if c0 is None else c0.reshape(n, hid)
    out = []
    for t in range(t_len):
        k = cont[t][:, None]
        a = xf[t] @ w_xc.T + b_c + (k * h) @ w_hc.T
        if w_s is not None:
            a = a + xs.reshape(n, -1) @ w_s.T
        i, f, o = _sig(a[:, :hid]), k * _sig(a[:, hid:2 * hid]), _sig(a[:, 2 * hid:3 * hid])
        g = np.tanh(a[:, 3 * hid:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out), h, c


def np_rnn(x, cont, w_xh, b_h, w_hh, w_ho, b_o, w_s=None, xs=None, h0=None):
    """Caffe's RNN, step by step; returns (o sequence, h_T)."""
    t_len, n = x.shape[:2]
    hid = w_hh.shape[0]
    xf = x.reshape(t_len, n, -1)
    h = np.zeros((n, hid)) if h0 is None else h0.reshape(n, hid)
    out = []
    for t in range(t_len):
        a = xf[t] @ w_xh.T + b_h + (cont[t][:, None] * h) @ w_hh.T
        if w_s is not None:
            a = a + xs.reshape(n, -1) @ w_s.T
        h = np.tanh(a)
        out.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(out), h


# ----------------------------------------------------------------------------------------------
# nets
# ----------------------------------------------------------------------------------------------
def recurrent_net_text(kind, x_shape, hidden=3, static_shape=None, expose=False,
                       silence_states=False, extra="", fillers=True):
    t_len, n = x_shape[:2]
    text = _input("x", x_shape) + _input("cont", (t_len, n))
    bottoms = ['bottom: "x"', 'bottom: "cont"']
    tops = ['top: "y"']
    if static_shape is not None:
        text += _input("xs", static_shape)
        bottoms.append('bottom: "xs"')
    states = ("h", "c") if kind == "LSTM" else ("h",)
    if expose:
        for s in states:
            text += _input(f"{s}0", (1, n, hidden))
            bottoms.append(f'bottom: "{s}0"')
            tops.append(f'top: "{s}T"')
    fill = ("weight_filler { type: 'gaussian' std: 0.4 } bias_filler { type: 'gaussian' std: 0.3 }"
            if fillers else "")
    text += (f'layer {{ name: "rec" type: "{kind}" {" ".join(bottoms)} {" ".join(tops)} {extra} '
             f'recurrent_param {{ num_output: {hidden} {fill} '
             f'expose_hidden: {str(expose).lower()} }} }}\n')
    if silence_states:
        tops_t = " ".join(f'bottom: "{s}T"' for s in states)
        text += ('layer { name: "quiet" type: "Python" ' + tops_t +
                 ' python_param { module: "decaffe_test_pylayers" layer: "Silence" } }\n')
    return text


def build(text, phase=decaffe.TRAIN, dtype=torch.float64, force_backward=True):
    prefix = "force_backward: true\n" if force_backward else ""
    return decaffe.Net(prefix + text, phase, dtype=dtype)


def params_of(net, name="rec"):
    return [np.array(b.data, np.float64) for b in net.params[name]]


def binary_cont(t_len, n, first_zero=True, seed=0):
    rng = np.random.default_rng(seed)
    cont = (rng.random((t_len, n)) > 0.3).astype(np.float64)
    if first_zero:
        cont[0] = 0
    return cont


@pytest.fixture
def pylayers_path(monkeypatch):
    monkeypatch.syspath_prepend(PYLAYERS)


# ----------------------------------------------------------------------------------------------
# blob layout
# ----------------------------------------------------------------------------------------------
def test_lstm_blobs_are_caffes():
    net = build(recurrent_net_text("LSTM", (4, 2, 3, 2), hidden=5))
    assert [b.shape for b in net.params["rec"]] == [(20, 6), (20,), (20, 5)]
    net = build(recurrent_net_text("LSTM", (4, 2, 3), hidden=5, static_shape=(2, 2, 4)))
    assert [b.shape for b in net.params["rec"]] == [(20, 3), (20,), (20, 8), (20, 5)]
    assert net.blobs["y"].shape == (4, 2, 5)


def test_rnn_blobs_are_caffes():
    net = build(recurrent_net_text("RNN", (4, 2, 3), hidden=5))
    assert [b.shape for b in net.params["rec"]] == [(5, 3), (5,), (5, 5), (5, 5), (5,)]
    net = build(recurrent_net_text("RNN", (4, 2, 3), hidden=5, static_shape=(2, 7)))
    assert [b.shape for b in net.params["rec"]] == [(5, 3), (5,), (5, 7), (5, 5), (5, 5), (5,)]


def test_fillers_follow_recurrent_param():
    text = (_input("x", (2, 1, 3)) + _input("cont", (2, 1)) +
            'layer { name: "rec" type: "LSTM" bottom: "x" bottom: "cont" top: "y" '
            'recurrent_param { num_output: 2 weight_filler { type: "constant" value: 0.5 } '
            'bias_filler { type: "constant" value: -0.25 } } }')
    w_xc, b_c, w_hc = params_of(build(text))
    assert np.all(w_xc == 0.5) and np.all(b_c == -0.25) and np.all(w_hc == 0.5)
    # no fillers given: Caffe's default FillerParameter, constant 0
    text = text.replace('weight_filler { type: "constant" value: 0.5 } ', "").replace(
        'bias_filler { type: "constant" value: -0.25 } ', "")
    assert all(np.all(p == 0) for p in params_of(build(text)))


# ----------------------------------------------------------------------------------------------
# forward against numpy
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", [decaffe.TRAIN, decaffe.TEST])
def test_lstm_forward_matches_numpy(phase):
    net = build(recurrent_net_text("LSTM", (5, 3, 2, 2), hidden=4), phase)
    x = RNG.normal(size=(5, 3, 2, 2))
    cont = binary_cont(5, 3)
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = cont
    net.forward()
    want, _, _ = np_lstm(x, cont, *params_of(net))
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("phase", [decaffe.TRAIN, decaffe.TEST])
def test_rnn_forward_matches_numpy(phase):
    net = build(recurrent_net_text("RNN", (5, 3, 4), hidden=4), phase)
    x = RNG.normal(size=(5, 3, 4))
    cont = binary_cont(5, 3)
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = cont
    net.forward()
    want, _ = np_rnn(x, cont, *params_of(net))
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12, atol=1e-12)


def test_static_input_forward_matches_numpy():
    for kind in ("LSTM", "RNN"):
        net = build(recurrent_net_text(kind, (3, 2, 3), hidden=3, static_shape=(2, 2, 3)))
        x, xs, cont = RNG.normal(size=(3, 2, 3)), RNG.normal(size=(2, 2, 3)), binary_cont(3, 2)
        for k, v in (("x", x), ("xs", xs), ("cont", cont)):
            net.blobs[k].data[...] = v
        net.forward()
        p = params_of(net)
        w_s = p.pop(2)
        ref = np_lstm if kind == "LSTM" else np_rnn
        want = ref(x, cont, *p, w_s=w_s, xs=xs)[0]
        np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12, atol=1e-12)


def test_expose_hidden_forward_matches_numpy():
    net = build(recurrent_net_text("LSTM", (3, 2, 3), hidden=3, expose=True))
    x, cont = RNG.normal(size=(3, 2, 3)), np.ones((3, 2))
    h0, c0 = RNG.normal(size=(1, 2, 3)), RNG.normal(size=(1, 2, 3))
    for k, v in (("x", x), ("cont", cont), ("h0", h0), ("c0", c0)):
        net.blobs[k].data[...] = v
    net.forward()
    want, h_t, c_t = np_lstm(x, cont, *params_of(net), h0=h0, c0=c0)
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["hT"].data, h_t[None], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["cT"].data, c_t[None], rtol=1e-12, atol=1e-12)
    assert net.blobs["hT"].shape == (1, 2, 3) and net.blobs["cT"].shape == (1, 2, 3)

    net = build(recurrent_net_text("RNN", (3, 2, 3), hidden=3, expose=True))
    for k, v in (("x", x), ("cont", cont), ("h0", h0)):
        net.blobs[k].data[...] = v
    net.forward()
    want, h_t = np_rnn(x, cont, *params_of(net), h0=h0)
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["hT"].data, h_t[None], rtol=1e-12, atol=1e-12)


def test_exposed_state_feeds_the_next_chunk():
    """Two chunks chained through hT -> h0 equal one pass over the whole sequence."""
    whole = build(recurrent_net_text("LSTM", (6, 2, 3), hidden=3))
    chunk = build(recurrent_net_text("LSTM", (3, 2, 3), hidden=3, expose=True))
    for a, b in zip(whole.params["rec"], chunk.params["rec"]):
        b.data[...] = a.data
    x, cont = RNG.normal(size=(6, 2, 3)), binary_cont(6, 2)
    whole.blobs["x"].data[...] = x
    whole.blobs["cont"].data[...] = cont
    whole.forward()
    chunk.blobs["h0"].data[...] = 0
    chunk.blobs["c0"].data[...] = 0
    outs = []
    for s in (slice(0, 3), slice(3, 6)):
        chunk.blobs["x"].data[...] = x[s]
        chunk.blobs["cont"].data[...] = cont[s]
        chunk.forward()
        outs.append(chunk.blobs["y"].data.copy())
        chunk.blobs["h0"].data[...] = chunk.blobs["hT"].data
        chunk.blobs["c0"].data[...] = chunk.blobs["cT"].data
    np.testing.assert_allclose(np.concatenate(outs), whole.blobs["y"].data, rtol=1e-12,
                               atol=1e-12)


# ----------------------------------------------------------------------------------------------
# state carried across passes (Caffe copies h_T into h_0 before each forward)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_state_carries_across_passes(kind):
    t_len, n = 4, 3
    whole = build(recurrent_net_text(kind, (t_len, n, 2), hidden=3))
    step = build(recurrent_net_text(kind, (1, n, 2), hidden=3))
    for a, b in zip(whole.params["rec"], step.params["rec"]):
        b.data[...] = a.data
    x = RNG.normal(size=(t_len, n, 2))
    cont = (np.arange(t_len)[:, None] > 0).repeat(n, 1).astype(np.float64)
    whole.blobs["x"].data[...] = x
    whole.blobs["cont"].data[...] = cont
    want = whole.forward()["y"].copy()
    for t in range(t_len):
        step.blobs["x"].data[...] = x[t:t + 1]
        step.blobs["cont"].data[...] = cont[t:t + 1]
        np.testing.assert_allclose(step.forward()["y"][0], want[t], rtol=1e-12, atol=1e-12)
    # with cont 0 at every step each pass starts afresh: only the first step agrees
    for t in range(t_len):
        step.blobs["x"].data[...] = x[t:t + 1]
        step.blobs["cont"].data[...] = 0
        got = step.forward()["y"][0]
        if t == 0:
            np.testing.assert_allclose(got, want[0], rtol=1e-12, atol=1e-12)
        else:
            assert not np.any(got == want[t])


def test_reset_zeroes_the_carried_state():
    net = build(recurrent_net_text("LSTM", (2, 2, 3), hidden=3))
    x = RNG.normal(size=(2, 2, 3))
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = 1
    first = net.forward()["y"].copy()
    second = net.forward()["y"].copy()
    assert not np.allclose(first, second)  # the second pass starts from the first's state
    net.layer_dict["rec"].layer.reset()
    np.testing.assert_allclose(net.forward()["y"], first, rtol=1e-12, atol=1e-12)


def test_carried_state_when_the_batch_changes():
    """Caffe keeps a state blob's memory when it shrinks, and zeroes it when it outgrows it."""
    net = build(recurrent_net_text("RNN", (2, 3, 2), hidden=3))
    p = params_of(net)
    x = RNG.normal(size=(2, 3, 2))
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = 0
    net.forward()
    _, h_t = np_rnn(x, np.zeros((2, 3)), *p)
    for name, shape in (("x", (2, 2, 2)), ("cont", (2, 2))):
        net.blobs[name].reshape(*shape)
    net.reshape()
    x2 = RNG.normal(size=(2, 2, 2))
    net.blobs["x"].data[...] = x2
    net.blobs["cont"].data[...] = 1
    want, _ = np_rnn(x2, np.ones((2, 2)), *p, h0=h_t[:2])
    np.testing.assert_allclose(net.forward()["y"], want, rtol=1e-12, atol=1e-12)
    for name, shape in (("x", (2, 5, 2)), ("cont", (2, 5))):
        net.blobs[name].reshape(*shape)
    net.reshape()
    x3 = RNG.normal(size=(2, 5, 2))
    net.blobs["x"].data[...] = x3
    net.blobs["cont"].data[...] = 1
    want, _ = np_rnn(x3, np.ones((2, 5)), *p)
    np.testing.assert_allclose(net.forward()["y"], want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_with_cont_resets(kind):
    cont = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    check_gradients(recurrent_net_text(kind, (4, 2, 3), hidden=3),
                    {"x": RNG.uniform(-1, 1, (4, 2, 3)), "cont": cont}, check_inputs=["x"])


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_with_static_input(kind):
    cont = np.array([[0, 0], [0, 1], [1, 1]], np.float64)
    check_gradients(recurrent_net_text(kind, (3, 2, 2), hidden=3, static_shape=(2, 2, 2)),
                    {"x": RNG.uniform(-1, 1, (3, 2, 2)), "cont": cont,
                     "xs": RNG.uniform(-1, 1, (2, 2, 2))}, check_inputs=["x", "xs"])


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_with_expose_hidden(kind, pylayers_path):
    """Through h, with a nonzero initial state; hT/cT are consumed (Caffe sends no gradient
    through them, see test_expose_hidden_passes_no_gradient)."""
    inputs = {"x": RNG.uniform(-1, 1, (3, 2, 3)), "cont": np.array([[1, 1], [0, 1], [1, 1.0]]),
              "h0": RNG.uniform(-1, 1, (1, 2, 3))}
    if kind == "LSTM":
        inputs["c0"] = RNG.uniform(-1, 1, (1, 2, 3))
    check_gradients(recurrent_net_text(kind, (3, 2, 3), hidden=3, expose=True,
                                       silence_states=True), inputs, check_inputs=["x"])


def test_gradient_with_everything(pylayers_path):
    inputs = {"x": RNG.uniform(-1, 1, (3, 2, 2)), "cont": np.array([[1, 0], [1, 1], [0, 1.0]]),
              "xs": RNG.uniform(-1, 1, (2, 3)), "h0": RNG.uniform(-1, 1, (1, 2, 2)),
              "c0": RNG.uniform(-1, 1, (1, 2, 2))}
    check_gradients(recurrent_net_text("LSTM", (3, 2, 2), hidden=2, static_shape=(2, 3),
                                       expose=True, silence_states=True),
                    inputs, check_inputs=["x", "xs"])


def test_expose_hidden_passes_no_gradient():
    """Caffe shares only the data of h0/c0 and hT/cT with its unrolled net."""
    net = build(recurrent_net_text("LSTM", (3, 2, 3), hidden=3, expose=True))
    for k, v in (("x", RNG.normal(size=(3, 2, 3))), ("cont", np.ones((3, 2))),
                 ("h0", RNG.normal(size=(1, 2, 3))), ("c0", RNG.normal(size=(1, 2, 3)))):
        net.blobs[k].data[...] = v
    net.forward()
    grads = []
    for state_diff in (0.0, 1.0):
        for p in net.params["rec"]:
            p.diff[...] = 0
        net.blobs["y"].diff[...] = 0.5
        net.blobs["hT"].diff[...] = state_diff
        net.blobs["cT"].diff[...] = state_diff
        net.backward()
        assert np.all(net.blobs["h0"].diff == 0) and np.all(net.blobs["c0"].diff == 0)
        grads.append([p.diff.copy() for p in net.params["rec"]] + [net.blobs["x"].diff.copy()])
    assert np.any(grads[0][0] != 0)
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_cont_gets_no_gradient():
    net = build(recurrent_net_text("RNN", (3, 2, 3)))
    net.blobs["x"].data[...] = RNG.normal(size=(3, 2, 3))
    net.blobs["cont"].data[...] = binary_cont(3, 2)
    net.forward()
    net.blobs["y"].diff[...] = 1
    net.backward()
    assert np.all(net.blobs["cont"].diff == 0)
    assert np.any(net.blobs["x"].diff != 0)
    # Caffe: force_backward never asks for cont (bottom 1)
    assert not net.bottom_need_backward(list(net.layer_dict).index("rec"))[1]


# ----------------------------------------------------------------------------------------------
# LSTMUnit
# ----------------------------------------------------------------------------------------------
def unit_net_text(n=3, hidden=2):
    return (_input("c_prev", (1, n, hidden)) + _input("gates", (1, n, 4 * hidden)) +
            _input("cont", (1, n)) +
            'layer { name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" '
            'bottom: "cont" top: "c" top: "h" }\n')


def np_unit(c_prev, x, cont):
    hid = c_prev.shape[-1]
    c_prev, x, k = c_prev[0], x[0], cont[0][:, None]
    i, f, o = _sig(x[:, :hid]), k * _sig(x[:, hid:2 * hid]), _sig(x[:, 2 * hid:3 * hid])
    g = np.tanh(x[:, 3 * hid:])
    c = f * c_prev + i * g
    return c[None], (o * np.tanh(c))[None]


def test_lstm_unit_forward_matches_numpy():
    net = build(unit_net_text())
    c_prev, x, cont = RNG.normal(size=(1, 3, 2)), RNG.normal(size=(1, 3, 8)), np.array([[1, 0, 1.]])
    for k, v in (("c_prev", c_prev), ("gates", x), ("cont", cont)):
        net.blobs[k].data[...] = v
    net.forward()
    c, h = np_unit(c_prev, x, cont)
    np.testing.assert_allclose(net.blobs["c"].data, c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["h"].data, h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cont", [[0, 0, 0], [1, 0, 1]])
def test_lstm_unit_gradient(cont):
    check_gradients(unit_net_text(), {"c_prev": RNG.uniform(-1, 1, (1, 3, 2)),
                                      "gates": RNG.uniform(-1, 1, (1, 3, 8)),
                                      "cont": np.array([cont], np.float64)},
                    check_inputs=["c_prev", "gates"])


def test_lstm_unit_backward_is_caffes_for_fractional_cont():
    """Caffe's forget-gate diff is c_term·c_prev·f·(1−f) with f = cont·σ(x_f)."""
    hid = 2
    net = build(unit_net_text(n=2, hidden=hid))
    c_prev, x = RNG.normal(size=(1, 2, hid)), RNG.normal(size=(1, 2, 4 * hid))
    cont = np.array([[0.5, 0.25]])
    for k, v in (("c_prev", c_prev), ("gates", x), ("cont", cont)):
        net.blobs[k].data[...] = v
    net.forward()
    dc, dh = RNG.normal(size=(1, 2, hid)), RNG.normal(size=(1, 2, hid))
    net.blobs["c"].diff[...] = dc
    net.blobs["h"].diff[...] = dh
    net.backward()
    # Caffe's formulas, written out
    xa, k = x[0], cont[0][:, None]
    i, f, o = _sig(xa[:, :hid]), k * _sig(xa[:, hid:2 * hid]), _sig(xa[:, 2 * hid:3 * hid])
    g = np.tanh(xa[:, 3 * hid:])
    tc = np.tanh(f * c_prev[0] + i * g)
    c_term = dc[0] + dh[0] * o * (1 - tc ** 2)
    want_x = np.concatenate([c_term * g * i * (1 - i), c_term * c_prev[0] * f * (1 - f),
                             dh[0] * tc * o * (1 - o), c_term * i * (1 - g * g)], axis=1)
    np.testing.assert_allclose(net.blobs["gates"].diff[0], want_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["c_prev"].diff[0], c_term * f, rtol=1e-12, atol=1e-12)
    assert np.all(net.blobs["cont"].diff == 0)


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def test_training_reduces_a_loss_and_matches_pycaffe_backward():
    """loss_weight on the LSTM's output makes Σh the loss; SGD on net.learnable_params
    lowers it, and the solver path's gradients equal pycaffe's backward."""
    text = recurrent_net_text("LSTM", (4, 2, 3), hidden=3, extra="loss_weight: 1")
    net = build(text, force_backward=False, dtype=torch.float32)
    net.blobs["x"].data[...] = RNG.normal(size=(4, 2, 3))
    net.blobs["cont"].data[...] = binary_cont(4, 2)
    net.forward()
    net.clear_param_diffs()
    net.backward()
    pycaffe = [p.diff.copy() for p in net.params["rec"]]
    net.clear_param_diffs()
    first = net.forward_backward()
    for a, p in zip(pycaffe, net.learnable_params):
        np.testing.assert_allclose(p.grad.numpy(), a, rtol=1e-5, atol=1e-6)
    losses = [first]
    for _ in range(20):
        with torch.no_grad():
            for p in net.learnable_params:
                p -= 0.05 * p.grad
        net.clear_param_diffs()
        losses.append(net.forward_backward())
    assert losses[-1] < losses[0] - 1.0


def test_float32_net_and_solver_visible_params():
    net = build(recurrent_net_text("RNN", (2, 2, 3)), dtype=torch.float32)
    assert len(net.learnable_params) == 5
    assert all(p.dtype == torch.float32 for p in net.learnable_params)
    net.blobs["x"].data[...] = RNG.normal(size=(2, 2, 3))
    assert net.forward()["y"].dtype == np.float32


def test_debug_info_logs_each_step(caplog):
    text = recurrent_net_text("LSTM", (3, 1, 2), hidden=2).replace(
        "expose_hidden: false", "expose_hidden: false debug_info: true")
    net = build(text)
    with caplog.at_level(logging.INFO, logger="decaffe.recurrent"):
        net.forward()
    lines = [r.getMessage() for r in caplog.records]
    assert any("top blob h_3" in m for m in lines) and any("top blob c_1" in m for m in lines)


# ----------------------------------------------------------------------------------------------
# errors (Caffe's checks)
# ----------------------------------------------------------------------------------------------
def _raises(text, match, cls=DecaffeError):
    with pytest.raises(cls, match=match) as info:
        build(text)
    return info


def test_error_num_output_missing():
    text = recurrent_net_text("LSTM", (2, 2, 3)).replace("num_output: 3", "")
    info = _raises(text, "recurrent_param.num_output")
    assert "rec" in str(info.value)


def test_error_bad_bottom_shapes():
    _raises(_input("x", (2, 3)) + _input("cont", (2, 3)) +
            'layer { name: "rec" type: "RNN" bottom: "x" bottom: "cont" top: "y" '
            'recurrent_param { num_output: 2 } }', "at least 3 axes")
    _raises(_input("x", (2, 3, 4)) + _input("cont", (2, 4)) +
            'layer { name: "rec" type: "RNN" bottom: "x" bottom: "cont" top: "y" '
            'recurrent_param { num_output: 2 } }', r"cont\) shape")
    _raises(_input("x", (2, 3, 4)) + _input("cont", (2, 3, 1)) +
            'layer { name: "rec" type: "RNN" bottom: "x" bottom: "cont" top: "y" '
            'recurrent_param { num_output: 2 } }', "exactly 2 axes")
    _raises(recurrent_net_text("LSTM", (2, 3, 4), static_shape=(2, 5)), "static input")


def test_error_wrong_blob_counts():
    # expose_hidden needs h0 and c0 bottoms and hT, cT tops
    text = recurrent_net_text("LSTM", (2, 2, 3)).replace("expose_hidden: false",
                                                         "expose_hidden: true")
    _raises(text, "bottom", NetError)
    text = recurrent_net_text("RNN", (2, 2, 3), expose=True).replace('top: "hT"', "")
    _raises(text, "top", NetError)


def test_error_exposed_state_shape():
    text = recurrent_net_text("RNN", (2, 2, 3), expose=True).replace(
        'top: "h0" input_param { shape { dim: 1 dim: 2 dim: 3 } }',
        'top: "h0" input_param { shape { dim: 1 dim: 2 dim: 4 } }')
    _raises(text, "hidden state input shape")


def test_error_timesteps_changed():
    net = build(recurrent_net_text("RNN", (2, 2, 3)))
    net.blobs["x"].reshape(3, 2, 3)
    net.blobs["cont"].reshape(3, 2)
    with pytest.raises(DecaffeError, match="number of timesteps changed") as info:
        net.reshape()
    assert "rec" in str(info.value)


def test_error_lstm_unit_shapes():
    text = unit_net_text().replace('top: "gates" input_param { shape { dim: 1 dim: 3 dim: 8 } }',
                                   'top: "gates" input_param { shape { dim: 1 dim: 3 dim: 7 } }')
    info = _raises(text, "gate inputs")
    assert "unit" in str(info.value)
    text = unit_net_text().replace('top: "cont" input_param { shape { dim: 1 dim: 3 } }',
                                   'top: "cont" input_param { shape { dim: 2 dim: 3 } }')
    _raises(text, "single timestep")

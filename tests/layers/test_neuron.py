"""Neuron layers (decaffe/layers/neuron.py): forward against numpy, Caffe's gradients at its
special cases (kinks, constants), parameter checks and errors. The finite-difference checks
of every parameter variant are tests/layer_db.py's samples."""

import numpy as np
import pytest
import torch

import decaffe
from decaffe.errors import DecaffeError, LayerParamError

SHAPE = (2, 3, 4, 5)


def net_text(layer: str, inputs: dict) -> str:
    """An Input layer giving `inputs` (name -> shape), followed by `layer`."""
    tops = " ".join(f'top: "{n}"' for n in inputs)
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }"
                      for s in inputs.values())
    return (f'layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n'
            + layer)


def layer(kind: str, params: str = "", bottom: str = "x", top: str = "y",
          name: str = "l") -> str:
    return (f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{top}" '
            f"{params} }}\n")


def run(body: str, inputs: dict, phase=decaffe.TRAIN, dtype=torch.float64, extra: str = ""):
    """Build the net, set the inputs, run forward; return the net."""
    net = decaffe.Net(extra + net_text(body, {k: np.shape(v) for k, v in inputs.items()}),
                      phase, dtype=dtype)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    return net


# ----------------------------------------------------------------------------------------------
# forward against numpy
# ----------------------------------------------------------------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


FORWARD_CASES = [
    ("ReLU", "", lambda x: np.maximum(x, 0)),
    ("ReLU", "relu_param { negative_slope: 0.1 }", lambda x: np.where(x > 0, x, 0.1 * x)),
    ("ReLU", "relu_param { negative_slope: -2 }", lambda x: np.where(x > 0, x, -2 * x)),
    ("Sigmoid", "", sigmoid),
    ("TanH", "", np.tanh),
    ("ELU", "", lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    ("ELU", "elu_param { alpha: 0.7 }", lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
    ("AbsVal", "", np.abs),
    ("BNLL", "", lambda x: np.log1p(np.exp(x))),
    ("Power", "", lambda x: x),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1.5 }", lambda x: (1.5 + 0.5 * x) ** 2),
    ("Power", "power_param { power: 3 scale: -2 }", lambda x: (-2 * x) ** 3),
    ("Power", "power_param { power: 0.5 shift: 5 }", lambda x: np.sqrt(5 + x)),
    ("Power", "power_param { power: 0 scale: 3 }", lambda x: np.ones_like(x)),
    ("Power", "power_param { power: 2 scale: 0 shift: 3 }", lambda x: np.full_like(x, 9.0)),
    ("Exp", "", np.exp),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }", lambda x: 2.0 ** (0.1 + 0.5 * x)),
    ("Exp", "exp_param { scale: -1.5 shift: 2 }", lambda x: np.exp(2 - 1.5 * x)),
    ("Log", "log_param { shift: 5 }", lambda x: np.log(5 + x)),
    ("Log", "log_param { base: 10 scale: 0.5 shift: 3 }", lambda x: np.log10(3 + 0.5 * x)),
    ("Threshold", "", lambda x: (x > 0).astype(float)),
    ("Threshold", "threshold_param { threshold: 0.3 }", lambda x: (x > 0.3).astype(float)),
    ("Clip", "clip_param { min: -0.5 max: 0.8 }", lambda x: np.clip(x, -0.5, 0.8)),
    ("Clip", "clip_param { min: 1 max: -1 }", lambda x: np.full_like(x, 1.0)),
    ("Swish", "", lambda x: x * sigmoid(x)),
    ("Swish", "swish_param { beta: 0.5 }", lambda x: x * sigmoid(0.5 * x)),
    ("Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda x: x),  # TEST phase below
]


@pytest.mark.parametrize("kind,params,ref", FORWARD_CASES,
                         ids=[f"{k}-{p or 'default'}" for k, p, _ in FORWARD_CASES])
def test_forward_matches_numpy(kind, params, ref):
    x = np.random.default_rng(1).uniform(-3, 3, size=SHAPE)
    phase = decaffe.TEST if kind == "Dropout" else decaffe.TRAIN
    net = run(layer(kind, params), {"x": x}, phase)
    # parameters are float32 in the proto, the reference uses them as doubles
    np.testing.assert_allclose(net.blobs["y"].data, ref(x), rtol=1e-6, atol=1e-12)
    assert net.blobs["y"].data.shape == SHAPE


def test_forward_float32_in_place():
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    net = run(layer("ReLU", "relu_param { negative_slope: 0.2 }", top="x"), {"x": x},
              dtype=torch.float32)
    np.testing.assert_allclose(net.blobs["x"].data, np.where(x > 0, x, np.float32(0.2) * x),
                               rtol=1e-6)


def test_bnll_does_not_overflow():
    x = np.array([[-800.0, -60.0, -1.0, 0.0, 1.0, 60.0, 800.0]])
    for dtype in (torch.float32, torch.float64):
        y = run(layer("BNLL"), {"x": x}, dtype=dtype).blobs["y"].data
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, np.logaddexp(0, x), rtol=1e-6, atol=1e-30)


def test_power_zero_scale_constant_and_nan_base():
    x = np.array([[1.0, -2.0, np.inf]])
    y = run(layer("Power", "power_param { power: 0.5 scale: 0 shift: -4 }"), {"x": x})
    assert np.isnan(y.blobs["y"].data).all()  # C's pow(-4, 0.5)


# ----------------------------------------------------------------------------------------------
# gradients at Caffe's special cases
# ----------------------------------------------------------------------------------------------
def backward(net, top_diff: dict):
    for k, v in top_diff.items():
        net.blobs[k].diff[...] = v
    net.backward()


# (type, params, x, top diff, bottom diff Caffe gives): the kinks take the slope Caffe's
# backward picks; Power 1's gradient is its scale wherever x is
EXACT_GRAD_CASES = [
    ("ReLU", "relu_param { negative_slope: 0.25 }", [-1.0, 0.0, 2.0], [1, 1, 1],
     [0.25, 0.25, 1.0]),
    ("AbsVal", "", [-1.0, 0.0, 2.0], [3, 3, 3], [-3.0, 0.0, 3.0]),
    ("Clip", "clip_param { min: -1 max: 0.5 }", [-2.0, -1.0, 0.0, 0.5, 1.0], [2, 2, 2, 2, 2],
     [0.0, 2.0, 2.0, 2.0, 0.0]),
    ("Power", "power_param { power: 1 scale: -2 shift: 4 }", [0.0, -3.0, 7.0], [1, 2, 3],
     [-2.0, -4.0, -6.0]),
]


@pytest.mark.parametrize("kind,params,x,dy,want", EXACT_GRAD_CASES,
                         ids=[c[0] for c in EXACT_GRAD_CASES])
def test_gradient_at_the_special_points(kind, params, x, dy, want):
    net = run(layer(kind, params), {"x": np.array([x])}, extra="force_backward: true\n")
    backward(net, {"y": np.array([dy], np.float64)})
    np.testing.assert_array_equal(net.blobs["x"].diff, [want])


@pytest.mark.parametrize("params,value", [("power_param { power: 0 shift: -1 }", 1.0),
                                          ("power_param { power: 0.5 scale: 0 shift: 4 }", 2.0)])
def test_power_constant_case_ignores_the_input(params, value):
    x = np.array([[0.0, -1.0, np.inf, np.nan]])
    net = run(layer("Power", params), {"x": x}, extra="force_backward: true\n")
    np.testing.assert_array_equal(net.blobs["y"].data, np.full((1, 4), value))
    backward(net, {"y": np.ones((1, 4))})
    np.testing.assert_array_equal(net.blobs["x"].diff, np.zeros((1, 4)))


def test_prelu_default_filler_and_blob_shapes():
    x = np.random.default_rng(0).standard_normal(SHAPE)
    net = run(layer("PReLU", name="p"), {"x": x})
    np.testing.assert_array_equal(net.params["p"][0].data, np.full(3, 0.25))
    np.testing.assert_allclose(net.blobs["y"].data, np.where(x > 0, x, 0.25 * x))
    shared = run(layer("PReLU", "prelu_param { channel_shared: true }", name="p"), {"x": x})
    assert shared.params["p"][0].data.shape == ()
    net = run(layer("PReLU", "prelu_param { filler { type: 'constant' value: 0.6 } }",
                    name="p"), {"x": x})
    np.testing.assert_allclose(net.blobs["y"].data, np.where(x > 0, x, 0.6 * x))


def test_prelu_per_channel_forward_and_slope_gradient():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(SHAPE)
    a = np.array([0.1, -0.3, 0.7])
    net = decaffe.Net("force_backward: true\n" + net_text(layer("PReLU", name="p"),
                                                          {"x": SHAPE}),
                      decaffe.TRAIN, dtype=torch.float64)
    net.blobs["x"].data[...] = x
    net.params["p"][0].data[...] = a
    net.forward()
    a4 = a.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(net.blobs["y"].data, np.maximum(x, 0) + a4 * np.minimum(x, 0))
    dy = rng.standard_normal(SHAPE)
    net.params["p"][0].diff[...] = 0
    backward(net, {"y": dy})
    np.testing.assert_allclose(net.params["p"][0].diff,
                               (dy * x * (x <= 0)).sum(axis=(0, 2, 3)))
    np.testing.assert_allclose(net.blobs["x"].diff, dy * np.where(x > 0, 1.0, a4))


# ----------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------
def dropout_net(ratio, phase):
    return decaffe.Net("force_backward: true\n" + net_text(
        layer("Dropout", f"dropout_param {{ dropout_ratio: {ratio} }}"), {"x": (50, 40)}),
        phase)


def test_dropout_train_mask_scale_and_backward():
    net = dropout_net(0.3, decaffe.TRAIN)
    x = np.random.default_rng(7).uniform(1, 2, size=(50, 40)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    y = net.blobs["y"].data.copy()
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8  # 2000 draws of p = 0.7
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(0.7), rtol=1e-6)
    backward(net, {"y": np.ones((50, 40), np.float32)})
    np.testing.assert_allclose(net.blobs["x"].diff, kept / np.float32(0.7), rtol=1e-6)


def test_dropout_mask_is_reproducible_with_the_seed():
    masks = []
    for _ in range(2):
        decaffe.set_random_seed(123)
        net = dropout_net(0.5, decaffe.TRAIN)
        net.blobs["x"].data[...] = 1.0
        net.forward()
        first = net.blobs["y"].data.copy()
        net.forward()
        masks.append((first, net.blobs["y"].data.copy()))
    np.testing.assert_array_equal(masks[0][0], masks[1][0])
    np.testing.assert_array_equal(masks[0][1], masks[1][1])
    assert not np.array_equal(masks[0][0], masks[0][1])  # a new mask every pass


def test_dropout_test_phase_is_identity():
    net = dropout_net(0.5, decaffe.TEST)
    x = np.random.default_rng(8).standard_normal((50, 40)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_array_equal(net.blobs["y"].data, x)
    backward(net, {"y": x})
    np.testing.assert_array_equal(net.blobs["x"].diff, x)


# ----------------------------------------------------------------------------------------------
# layers without a backward
# ----------------------------------------------------------------------------------------------
LOSS_AFTER = ('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h" '
              'inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }\n'
              '{mid}'
              'layer { name: "r" type: "Reduction" bottom: "t" top: "loss" loss_weight: 1 }\n')


def test_threshold_backward_raises_naming_the_layer():
    body = LOSS_AFTER.replace("{mid}", layer("Threshold", bottom="h", top="t", name="thr"))
    net = decaffe.Net(net_text(body, {"x": (2, 3)}), decaffe.TRAIN)
    net.blobs["x"].data[...] = 1.0
    net.forward()
    with pytest.raises(LayerParamError, match="'thr'.*no backward"):
        net.backward()
    with pytest.raises(LayerParamError, match="'thr'"):
        net.forward_backward()


def test_threshold_with_propagate_down_false_runs_backward():
    mid = layer("Threshold", "propagate_down: false", bottom="h", top="t", name="thr")
    net = decaffe.Net(net_text(LOSS_AFTER.replace("{mid}", mid), {"x": (2, 3)}),
                      decaffe.TRAIN)
    net.blobs["x"].data[...] = 1.0
    net.forward()
    net.backward()
    assert net.forward_backward() == pytest.approx(float(net.blobs["loss"].data))


# ----------------------------------------------------------------------------------------------
# parameter errors
# ----------------------------------------------------------------------------------------------
ERROR_CASES = [
    ("Dropout", "dropout_param { dropout_ratio: 1 }", "dropout_param.dropout_ratio"),
    ("Dropout", "dropout_param { dropout_ratio: -0.1 }", "dropout_param.dropout_ratio"),
    ("Exp", "exp_param { base: 0 }", "exp_param.base"),
    ("Exp", "exp_param { base: -2 }", "exp_param.base"),
    ("Log", "log_param { base: 1 }", "log_param.base"),
    ("Log", "log_param { base: -0.5 }", "log_param.base"),
    ("Clip", "clip_param { min: 0 }", "clip_param.max"),
    ("Clip", "clip_param { max: 0 }", "clip_param.min"),
]


@pytest.mark.parametrize("kind,params,field", ERROR_CASES,
                         ids=[f"{k}-{p}" for k, p, _ in ERROR_CASES])
def test_bad_parameters_name_layer_and_field(kind, params, field):
    with pytest.raises(LayerParamError) as e:
        decaffe.Net(net_text(layer(kind, params, name="bad"), {"x": SHAPE}), decaffe.TRAIN)
    assert "'bad'" in str(e.value) and field in str(e.value)


def test_prelu_needs_two_axes_and_matching_channels():
    with pytest.raises(LayerParamError, match="'p'.*at least 2 axes"):
        decaffe.Net(net_text(layer("PReLU", name="p"), {"x": (5,)}), decaffe.TRAIN)
    net = decaffe.Net(net_text(layer("PReLU", name="p"), {"x": (2, 3)}), decaffe.TRAIN)
    net.blobs["x"].reshape(2, 4)
    with pytest.raises(DecaffeError, match="'p'.*4 channels"):
        net.forward()  # Caffe's Forward reshapes first
    with pytest.raises(DecaffeError, match="'p'.*4 channels"):
        net.reshape()


def test_neuron_layers_take_one_bottom():
    body = ('layer { name: "r" type: "ReLU" bottom: "x" bottom: "z" top: "y" }\n')
    with pytest.raises(DecaffeError, match="'r'"):
        decaffe.Net(net_text(body, {"x": SHAPE, "z": SHAPE}), decaffe.TRAIN)

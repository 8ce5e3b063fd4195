"""The segmentation, mobile and conversion forks' layers: values computed independently from
each fork's definition, refusals, and the finite-difference gradients a table sample cannot
express (given masks and guidance, frozen statistics). Their golden cases (made with a Caffe
build carrying inisis/caffe's layers) and the other gradient checks are tests/layer_db.py's
samples, run by tests/layers/test_layer_table.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from netbuild import input_layers as inputs_text

import decaffe
from decaffe.errors import DecaffeError

RNG = np.random.default_rng(7)


def layer_text(type_: str, body: str = "", bottoms=("x",), tops=("y",), name="l") -> str:
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'


def run(type_, body, inputs: dict[str, np.ndarray], bottoms=None, tops=("y",),
        phase=decaffe.TRAIN, params=None):
    """Build one layer behind Inputs (float64), load params, run forward; the net."""
    bottoms = tuple(inputs) if bottoms is None else bottoms
    text = "force_backward: true\n" + inputs_text({k: v.shape for k, v in inputs.items()}) + \
        layer_text(type_, body, bottoms, tops)
    net = decaffe.Net(text, phase, dtype=torch.float64)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    for i, a in enumerate(params or []):
        net.params["l"][i].data[...] = a
    net.forward()
    return net


def grad(type_, body, inputs, bottoms=None, check_inputs=None, phase=decaffe.TRAIN, **kw):
    bottoms = tuple(inputs) if bottoms is None else bottoms
    check_gradients(inputs_text({k: v.shape for k, v in inputs.items()})
                    + layer_text(type_, body, bottoms), inputs, check_inputs=check_inputs,
                    phase=phase, **kw)


# ----------------------------------------------------------------------------------------------
# Interp: Caffe's interp2, written here per output pixel
# ----------------------------------------------------------------------------------------------
def interp_ref(x, pad_beg, h_eff, w_eff, ho, wo):
    def coords(n_eff, n_out):
        r = np.float32(n_eff - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
        out = []
        for o in range(n_out):
            src = np.float32(r * np.float32(o))
            i = int(src)
            out.append((i, 1 if i < n_eff - 1 else 0, float(src - i)))
        return out
    y = np.zeros(x.shape[:2] + (ho, wo))
    off = -pad_beg
    for oh, (h1, hp, hl) in enumerate(coords(h_eff, ho)):
        for ow, (w1, wp, wl) in enumerate(coords(w_eff, wo)):
            a = x[:, :, off + h1, off + w1]
            b = x[:, :, off + h1, off + w1 + wp]
            c = x[:, :, off + h1 + hp, off + w1]
            d = x[:, :, off + h1 + hp, off + w1 + wp]
            y[:, :, oh, ow] = (1 - hl) * ((1 - wl) * a + wl * b) + hl * ((1 - wl) * c + wl * d)
    return y


@pytest.mark.parametrize("body,size", [
    ("zoom_factor: 3", lambda h, w: (h + (h - 1) * 2, w + (w - 1) * 2)),
    ("shrink_factor: 2", lambda h, w: ((h - 1) // 2 + 1, (w - 1) // 2 + 1)),
    ("height: 9 width: 4", lambda h, w: (9, 4)),
    ("shrink_factor: 2 zoom_factor: 2",
     lambda h, w: (((h - 1) // 2) * 2 + 1, ((w - 1) // 2) * 2 + 1)),
    ("zoom_factor: 2 pad_beg: -1 pad_end: -2", lambda h, w: (2 * h - 1, 2 * w - 1)),
])
def test_interp_values(body, size):
    x = RNG.standard_normal((2, 3, 6, 5))
    net = run("Interp", f"interp_param {{ {body} }}", {"x": x})
    crop = "pad_beg" in body
    h_eff, w_eff = (6 - 3, 5 - 3) if crop else (6, 5)
    ho, wo = size(h_eff, w_eff)
    want = interp_ref(x, -1 if crop else 0, h_eff, w_eff, ho, wo)
    assert net.blobs["y"].data.shape == want.shape
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("body,size", [
    # caffe-priv: use_blob_size is checked first, over any factor or size
    ("use_blob_size: true", (7, 6)),
    ("use_blob_size: true zoom_factor: 2 height: 2 width: 2", (7, 6)),
    # maweifei/deeplab-ver2: the second bottom only when no factor or size is given
    ("", (7, 6)),
    # a factor or size with a second bottom wins, in both forks that take two bottoms
    ("zoom_factor: 2", (7, 5)),
    ("height: 2 width: 5", (2, 5)),
    ("use_blob_size: false shrink_factor: 2", (2, 2)),
])
def test_interp_second_bottom_precedence(body, size):
    x, ref = RNG.standard_normal((1, 2, 4, 3)), np.zeros((1, 5, 7, 6))
    net = run("Interp", f"interp_param {{ {body} }}", {"x": x, "ref": ref})
    np.testing.assert_allclose(net.blobs["y"].data, interp_ref(x, 0, 4, 3, *size), atol=1e-6)


@pytest.mark.parametrize("body,bottoms", [
    ("use_blob_size: true", ("x",)),  # caffe-priv: CHECK_GT(bottom.size(), 1)
    ("use_blob_size: false", ("x", "ref")),  # told not to use it, and no size given
])
def test_interp_use_blob_size_refusals(body, bottoms):
    blobs = {"x": np.zeros((1, 1, 3, 3)), "ref": np.zeros((1, 1, 5, 5))}
    with pytest.raises(DecaffeError, match="interp_param"):
        run("Interp", f"interp_param {{ {body} }}", {k: blobs[k] for k in bottoms})


@pytest.mark.parametrize("body", ["interp_param { zoom_factor: 2 pad_end: -1 }",
                                  "interp_param { height: 3 width: 7 }"])
def test_interp_gradient(body):
    grad("Interp", body, {"x": RNG.standard_normal((2, 2, 4, 5))})


@pytest.mark.parametrize("body,field", [("interp_param { pad_beg: 1 zoom_factor: 2 }", "pad_beg"),
                                        ("interp_param { }", "interp_param"),
                                        ("interp_param { zoom_factor: 0 }", "zoom_factor"),
                                        ("interp_param { height: 4 }", "interp_param")])
def test_interp_refusals(body, field):
    with pytest.raises(DecaffeError, match=field):
        run("Interp", body, {"x": np.zeros((1, 1, 3, 3))})


# ----------------------------------------------------------------------------------------------
# Upsample (SegNet unpooling and nearest), MaxUnPool
# ----------------------------------------------------------------------------------------------
POOL = ('layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "m" '
        'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n')


def _pool_then(type_, body):
    return ("force_backward: true\n" + inputs_text({"x": (2, 3, 6, 8)}) + POOL
            + layer_text(type_, body, ("p", "m")))


@pytest.mark.parametrize("type_,body", [("Upsample", "upsample_param { scale: 2 }"),
                                        ("Upsample", "upsample_param { upsample_h: 6 "
                                                     "upsample_w: 8 }"),
                                        ("MaxUnPool", "max_unpool_param { dst_h: 6 dst_w: 8 }")])
def test_unpooling_puts_each_max_back_where_it_was(type_, body):
    net = decaffe.Net(_pool_then(type_, body), decaffe.TRAIN, dtype=torch.float64)
    x = RNG.standard_normal((2, 3, 6, 8))
    net.blobs["x"].data[...] = x
    net.forward()
    want = np.zeros_like(x)
    for n, c, i, j in np.ndindex(2, 3, 3, 4):
        win = x[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
        a, b = np.unravel_index(win.argmax(), (2, 2))
        want[n, c, 2 * i + a, 2 * j + b] = win.max()
    np.testing.assert_array_equal(net.blobs["y"].data, want)
    # backward: the top's gradient read at the mask positions
    g = RNG.standard_normal(want.shape)
    net.blobs["y"].diff[...] = g
    net.backward()
    m = net.blobs["m"].data.astype(int).reshape(2, 3, -1)
    np.testing.assert_allclose(net.blobs["p"].diff.reshape(2, 3, -1),
                               np.take_along_axis(g.reshape(2, 3, -1), m, 2))


def test_upsample_pad_out_and_scale_hw():
    x, m = np.ones((1, 1, 2, 3)), np.zeros((1, 1, 2, 3))
    net = run("Upsample", "upsample_param { scale_h: 2 scale_w: 3 pad_out_h: true }",
              {"x": x, "m": m})
    assert net.blobs["y"].data.shape == (1, 1, 3, 9)


def test_upsample_default_scale_is_the_forms_forks():
    # SegNet's unpooling (two bottoms) defaults to scale 2; the one-bottom nearest
    # upsampling of eric612/MobileNet-YOLO and inisis/caffe to 1 (their UpsampleParameter)
    x, m = np.ones((1, 1, 2, 3)), np.zeros((1, 1, 2, 3))
    assert run("Upsample", "", {"x": x, "m": m}).blobs["y"].data.shape == (1, 1, 4, 6)
    net = run("Upsample", "", {"x": RNG.standard_normal((1, 2, 2, 3))})
    np.testing.assert_array_equal(net.blobs["y"].data, net.blobs["x"].data)


def test_unpooling_refuses_an_index_outside_the_top():
    x, m = np.ones((1, 1, 2, 2)), np.array([[[[0, 1], [2, 16]]]], float)
    with pytest.raises(DecaffeError, match="outside"):
        run("MaxUnPool", "max_unpool_param { dst_h: 4 dst_w: 4 }", {"x": x, "m": m})


def test_unpool_gradient():
    x = RNG.standard_normal((1, 2, 2, 2))
    m = np.array([[[[0, 3], [9, 14]], [[5, 2], [8, 15]]]], float)
    grad("MaxUnPool", "max_unpool_param { dst_h: 4 dst_w: 4 }", {"x": x, "m": m},
         check_inputs=["x"])


# ----------------------------------------------------------------------------------------------
# Resize, BilinearInterpolate, PixelShuffle, Pad, Unsqueeze
# ----------------------------------------------------------------------------------------------
def test_bilinear_matches_torch_interpolate():
    x = np.random.default_rng(11).standard_normal((2, 3, 5, 4))
    for align in (True, False):
        net = run("BilinearInterpolate", f"bilinear_interpolate_param {{ dst_h: 9 dst_w: 7 "
                  f"align_corners: {str(align).lower()} }}", {"x": x})
        want = torch.nn.functional.interpolate(torch.tensor(x), (9, 7), mode="bilinear",
                                               align_corners=align).numpy()
        # the fork's source coordinates are float32: up to 1.5e-6 off torch's (40 seeds)
        np.testing.assert_allclose(net.blobs["y"].data, want, atol=1e-5)


def test_resize_drops_the_missing_neighbours():
    x = np.arange(6, dtype=float).reshape(1, 1, 2, 3)
    net = run("Resize", "resize_param { height: 4 width: 3 }", {"x": x})
    # rows read 0, 0.5, 1, 1.5: the last has no row below, so its weight 0.5 is lost
    np.testing.assert_allclose(net.blobs["y"].data[0, 0, :, 0], [0, 1.5, 3, 1.5])


def test_pad_modes_match_numpy():
    x = RNG.standard_normal((2, 3, 4, 5))
    for mode, np_mode in (("REFLECT", "reflect"), ("REPLICATE", "edge")):
        net = run("Pad", f"pad_param {{ pad_type: {mode} pad_u: 3 pad_d: 1 pad_l: 2 pad_r: 4 }}",
                  {"x": x})
        np.testing.assert_array_equal(net.blobs["y"].data,
                                      np.pad(x, ((0, 0), (0, 0), (3, 1), (2, 4)), np_mode))
    net = run("Pad", "pad_param { pad_u: -1 pad_d: -2 pad_l: -1 pad_r: -1 }", {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data, x[:, :, 1:2, 1:4])


# ----------------------------------------------------------------------------------------------
# mobile layers
# ----------------------------------------------------------------------------------------------
def test_relu6_values_and_gradients():
    x = np.array([[-7.0, -1.5, 0.5, 2.5, 5.0, 8.0]])
    net = run("ReLU6", "relu6_param { negative_slope: 0.5 threshold: 2 }", {"x": x})
    np.testing.assert_allclose(net.blobs["y"].data, [[-3.5, -0.75, 0.5, 2, 2, 2]])
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, [[0.5, 0.5, 1, 0, 0, 0]])


def test_depthwise_convolutions_are_grouped_convolutions():
    x = RNG.standard_normal((2, 4, 6, 5))
    body = ("convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 "
            "weight_filler { type: \"gaussian\" std: 1 } bias_filler { type: \"gaussian\" } }")
    net = run("ConvolutionDepthwise", body, {"x": x})
    w, b = net.params["l"][0].data, net.params["l"][1].data
    assert w.shape == (4, 1, 3, 3)
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), 2, 1,
                                      groups=4)
    np.testing.assert_allclose(net.blobs["y"].data, want.numpy(), atol=1e-10)
    net2 = run("DepthwiseConvolution", body.replace("stride", "group: 4 stride"), {"x": x},
               params=[w, b])
    np.testing.assert_allclose(net2.blobs["y"].data, want.numpy(), atol=1e-10)


def test_shuffle_channel_and_axpy_values():
    x = RNG.standard_normal((2, 6, 2, 3))
    net = run("ShuffleChannel", "shuffle_channel_param { group: 3 }", {"x": x})
    # group 3 of 2 channels each: order 0, 2, 4, 1, 3, 5
    np.testing.assert_array_equal(net.blobs["y"].data, x[:, [0, 2, 4, 1, 3, 5]])
    a, y = RNG.standard_normal((2, 6, 1, 1)), RNG.standard_normal(x.shape)
    net = run("Axpy", "", {"a": a, "x": x, "z": y})
    np.testing.assert_allclose(net.blobs["y"].data, a * x + y)


# ----------------------------------------------------------------------------------------------
# BN (yjxiong/Cysu and SegNet/ENet forms), BatchNormKyle
# ----------------------------------------------------------------------------------------------
BN_YJ = ('bn_param { slope_filler { type: "gaussian" } bias_filler { type: "gaussian" } '
         'momentum: 0.8 eps: 0.01 }')


def test_bn_yjxiong_train_test_and_frozen():
    # blob 3 is the running variance (yjxiong/caffe since 89777d9a, TSN's public models)
    x = RNG.standard_normal((3, 2, 4, 5)) * 2 + 1
    scale, shift = RNG.standard_normal((1, 2, 1, 1)), RNG.standard_normal((1, 2, 1, 1))
    mean0, var0 = RNG.standard_normal((1, 2, 1, 1)), np.abs(RNG.standard_normal((1, 2, 1, 1)))
    net = run("BN", BN_YJ, {"x": x}, params=[scale, shift, mean0, var0])
    mu = x.mean((0, 2, 3), keepdims=True)
    var = x.var((0, 2, 3), keepdims=True)  # biased, as the fork's E[(x − μ)²]
    eps = float(np.float32(0.01))  # bn_param.eps is a float
    inv = 1 / np.sqrt(var + eps)
    np.testing.assert_allclose(net.blobs["y"].data, (x - mu) * inv * scale + shift, atol=1e-10)
    m = float(np.float32(0.8))  # bn_param.momentum is a float
    np.testing.assert_allclose(net.params["l"][2].data, (1 - m) * mu + m * mean0, atol=1e-12)
    np.testing.assert_allclose(net.params["l"][3].data, (1 - m) * var + m * var0, atol=1e-12)
    frozen = BN_YJ.replace("momentum", "frozen: true momentum")
    for phase, body in ((decaffe.TEST, BN_YJ), (decaffe.TRAIN, frozen)):
        net = run("BN", body, {"x": x}, phase=phase, params=[scale, shift, mean0, var0])
        want = (x - mean0) / np.sqrt(var0 + eps) * scale + shift
        np.testing.assert_allclose(net.blobs["y"].data, want, atol=1e-10)
        np.testing.assert_array_equal(net.params["l"][2].data, mean0)
        np.testing.assert_array_equal(net.params["l"][3].data, var0)


def test_bn_yjxiong_initial_statistics():
    # the fork starts the running variance at 0, or at 1 for a frozen layer
    text = inputs_text({"x": (2, 3, 2, 2)}) + layer_text("BN", BN_YJ)
    net = decaffe.Net(text, decaffe.TEST)
    assert not net.params["l"][2].data.any() and not net.params["l"][3].data.any()
    net = decaffe.Net(text.replace("momentum", "frozen: true momentum"), decaffe.TEST)
    np.testing.assert_array_equal(net.params["l"][3].data, np.ones((1, 3, 1, 1)))


def test_bn_frozen_gives_no_parameter_gradient_and_test_backward_is_the_forks():
    x = RNG.standard_normal((2, 2, 3, 3))
    scale, shift = np.array([2.0, -1.0]).reshape(1, 2, 1, 1), np.zeros((1, 2, 1, 1))
    mean0 = np.array([0.5, -0.5]).reshape(1, 2, 1, 1)
    var0 = np.array([0.25, 4.0]).reshape(1, 2, 1, 1)
    inv0 = 1 / np.sqrt(var0 + float(np.float32(0.01)))
    g = RNG.standard_normal(x.shape)
    frozen = BN_YJ.replace("momentum", "frozen: true momentum")
    net = run("BN", frozen, {"x": x},
              params=[scale, shift, mean0, var0])
    net.blobs["y"].diff[...] = g
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, g * scale * inv0)
    assert not net.params["l"][0].diff.any() and not net.params["l"][1].diff.any()
    text = "force_backward: true\n" + inputs_text({"x": x.shape}) + layer_text("BN", BN_YJ)
    net = decaffe.Net(text, decaffe.TEST, dtype=torch.float64)
    net.blobs["x"].data[...] = x
    for i, a in enumerate([scale, shift, mean0, var0]):
        net.params["l"][i].data[...] = a
    net.forward()
    net.blobs["y"].diff[...] = g
    net.backward()
    xhat = (x - mean0) * inv0
    gh = g * scale
    ax = (0, 2, 3)
    want = inv0 * (gh - gh.mean(ax, keepdims=True) - xhat * (gh * xhat).mean(ax, keepdims=True))
    np.testing.assert_allclose(net.blobs["x"].diff, want, atol=1e-10)
    np.testing.assert_allclose(net.params["l"][0].diff.ravel(), (g * xhat).sum(ax), atol=1e-10)


BN_SEG = ('bn_param { scale_filler { type: "constant" value: 1.5 } '
          'shift_filler { type: "constant" value: 0.25 } }')


def test_bn_segnet_learn_inference_and_tops():
    x = RNG.standard_normal((2, 3, 4, 4)) + 2
    net = run("BN", BN_SEG, {"x": x}, tops=("y", "mean", "var"))
    assert len(net.params["l"]) == 2 and net.params["l"][0].data.shape == (1, 3, 1, 1)
    mu = x.mean((0, 2, 3), keepdims=True)
    var = (x * x).mean((0, 2, 3), keepdims=True) - mu * mu
    np.testing.assert_allclose(net.blobs["y"].data, (x - mu) / np.sqrt(var + 1e-9) * 1.5 + 0.25,
                               atol=1e-9)
    np.testing.assert_allclose(net.blobs["mean"].data, mu, atol=1e-12)
    np.testing.assert_allclose(net.blobs["var"].data, var, atol=1e-12)
    inf = BN_SEG.replace("} }", "} bn_mode: INFERENCE }")
    net = run("BN", inf, {"x": x}, phase=decaffe.TEST)
    np.testing.assert_allclose(net.blobs["y"].data, 1.5 * x + 0.25)


# (type, params, phase): the input gradients where the running statistics are read, which
# take no gradient (the table's samples check the rest, parameters included)
STATS_GRAD_CASES = [
    ("BN", BN_YJ.replace("momentum", "frozen: true momentum"), decaffe.TRAIN),
    ("BatchNormKyle", "batch_norm_param { use_alpha_beta: true }", decaffe.TEST),
]


@pytest.mark.parametrize("type_,body,phase", STATS_GRAD_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(STATS_GRAD_CASES)])
def test_gradients_through_running_statistics(type_, body, phase):
    grad(type_, body, {"x": RNG.standard_normal((3, 2, 2, 2))}, phase=phase, check_params=False)


# ----------------------------------------------------------------------------------------------
# NetSpec, draw (the registry's list is the table's: tests/layers/test_layer_table.py)
# ----------------------------------------------------------------------------------------------
def test_netspec_builds_and_draw_draws_them():
    from decaffe.netspec import NetSpec
    from decaffe.netspec import layers as L
    from decaffe.pycaffe import draw

    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4, 6, 6]))
    n.dw = L.ConvolutionDepthwise(n.data,
                                  convolution_param=dict(num_output=4, kernel_size=3, pad=1))
    n.bn = L.BN(n.dw, bn_param=dict(frozen=True))
    n.r6 = L.ReLU6(n.bn, relu6_param=dict(threshold=4))
    n.sh = L.ShuffleChannel(n.r6, shuffle_channel_param=dict(group=2))
    n.pad = L.Pad(n.sh, pad_param=dict(pad_type=2, pad_u=1))
    n.up = L.Interp(n.pad, interp_param=dict(zoom_factor=2))
    proto = n.to_proto()
    text = str(proto)
    assert 'type: "ConvolutionDepthwise"' in text and "relu6_param" in text
    net = decaffe.Net(text, decaffe.TEST)
    net.forward()
    assert net.blobs["up"].data.shape == (1, 4, 13, 11)
    pytest.importorskip("pydot")
    graph = draw.get_pydot_graph(proto, "LR")
    labels = " ".join(str(node.get_name()) + str(node.get_attributes())
                      for node in graph.get_nodes())
    for t in ("ConvolutionDepthwise", "BN", "ReLU6", "ShuffleChannel", "Pad", "Interp"):
        assert t in labels


# ----------------------------------------------------------------------------------------------
# GuidedDropout, CenterLoss, SeLu, SeLuDropout, SegAccuracy
# ----------------------------------------------------------------------------------------------
def test_guided_dropout():
    x = RNG.standard_normal((2, 4, 3))
    g = np.array([[1.0, -1.0, 0.5, -0.2], [-1.0, -2.0, -3.0, -0.5]])
    net = run("GuidedDropout", 'guided_dropout_param { type: "deterministic" }',
              {"x": x, "g": g})
    mask = (g > 0).astype(float)
    s = mask.sum(1, keepdims=True)
    factor = np.where(s > 0, mask * 4 / np.where(s > 0, s, 1), mask)
    np.testing.assert_allclose(net.blobs["y"].data, x * factor[:, :, None])
    grad("GuidedDropout", 'guided_dropout_param { type: "deterministic" }', {"x": x, "g": g},
         check_inputs=["x"])
    body = 'guided_dropout_param { type: "stochastic" sigmoid_scaler: 2 }'
    net = run("GuidedDropout", body, {"x": x, "g": g}, phase=decaffe.TEST)
    np.testing.assert_array_equal(net.blobs["y"].data, x)
    net = run("GuidedDropout", body, {"x": x, "g": g})
    p = 1 / (1 + np.exp(-2 * g))
    scale = 4 / p.sum(1, keepdims=True)
    y = net.blobs["y"].data
    kept = np.isclose(y, x * scale[:, :, None]).all(2)
    dropped = (y == 0).all(2)
    assert (kept | dropped).all() and kept.any()


def test_center_loss():
    x, label = RNG.standard_normal((5, 3)), np.array([0, 2, 2, 1, 2.0])
    centers = RNG.standard_normal((4, 3))
    body = "center_loss_param { num_output: 4 }"
    net = run("CenterLoss", body, {"x": x, "label": label}, tops=("loss",), params=[centers])
    d = x - centers[label.astype(int)]
    assert net.blobs["loss"].data == pytest.approx((d * d).sum() / 5 / 2)
    net.params["l"][0].diff[...] = 0
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, d / 5)
    want = np.zeros((4, 3))
    for j in range(4):
        rows = label.astype(int) == j
        want[j] = (centers[j] - x[rows]).sum(0) / (1 + rows.sum())
    np.testing.assert_allclose(net.params["l"][0].diff, want)
    grad("CenterLoss", body, {"x": x, "label": label}, check_inputs=["x"], check_params=False)


def test_selu_and_selu_dropout():
    x = RNG.standard_normal((3, 50))
    net = run("SeLu", "", {"x": x})
    lam, alpha = np.float32(1.050700987), np.float32(1.67326324)
    np.testing.assert_allclose(net.blobs["y"].data,
                               lam * np.where(x > 0, x, alpha * (np.exp(x) - 1)), rtol=1e-7)
    body = "selu_dropout_param { dropout_ratio: 0.2 }"
    net = run("SeLuDropout", body, {"x": x}, phase=decaffe.TEST)
    np.testing.assert_array_equal(net.blobs["y"].data, x)
    net = run("SeLuDropout", body, {"x": x})
    q, al = float(np.float32(0.2)), float(np.float32(-1.75809934))
    a = ((1 - q) * (1 + q * al * al)) ** -0.5
    b = -a * q * al
    y = net.blobs["y"].data
    kept = np.isclose(y, a * x + b)
    assert (kept | np.isclose(y, a * al + b)).all() and 0.6 < kept.mean() < 0.95
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, np.where(kept, a, 0.0))


def test_seg_accuracy():
    scores = RNG.standard_normal((2, 3, 4, 5))
    label = RNG.integers(0, 4, (2, 1, 4, 5)).astype(float)  # 3 is ignored
    net = run("SegAccuracy", "seg_accuracy_param { ignore_label: 3 }",
              {"s": scores, "label": label})
    pred, lab = scores.argmax(1).ravel(), label.ravel().astype(int)
    keep = lab != 3
    pred, lab = pred[keep], lab[keep]
    m = np.zeros((3, 3))
    np.add.at(m, (lab, pred), 1)
    recall = np.mean([m[i, i] / m[i].sum() for i in range(3) if m[i].sum()])
    union = m.sum(0) + m.sum(1) - np.diag(m)
    iou = np.mean([m[i, i] / union[i] for i in range(3) if union[i]])
    np.testing.assert_allclose(net.blobs["y"].data.ravel(),
                               [np.trace(m) / m.sum(), recall, iou], rtol=1e-12)


def _margin_ref(x, w, label, kind, lam, g):
    """SphereFace's forward and its bottom gradient, one sample and one class at a time."""
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    top, dx = x @ w.T, np.zeros_like(x)
    for i in range(x.shape[0]):
        xn = np.linalg.norm(x[i])
        for j in range(w.shape[0]):
            if kind == "SINGLE" or j != label[i]:
                dx[i] += (g[i, j] / (1 + lam) if kind != "SINGLE" else g[i, j]) * w[j]
                continue
            c = x[i] @ w[j] / xn
            s0 = np.sign(c)
            if kind == "DOUBLE":
                psi = 2 * s0 * c * c - 1
                cw, cx = 4 * s0 * c, -(2 * s0 * c * c + 1) / xn
            else:  # QUADRUPLE
                s3 = s0 * np.sign(2 * c * c - 1)
                s4 = 2 * s0 + s3 - 3
                psi = s3 * (8 * c ** 4 - 8 * c * c + 1) + s4
                cw = s3 * (32 * c ** 3 - 16 * c)
                cx = -(s3 * (24 * c ** 4 - 8 * c * c - 1) - s4) / xn
            top[i, j] = xn * psi
            nrm = np.hypot(cw, cx)
            dx[i] += g[i, j] / (1 + lam) * (cw / nrm * w[j] + cx / nrm * x[i])
    if kind != "SINGLE":
        top = (top + lam * (x @ w.T)) / (1 + lam)
        dx += lam / (1 + lam) * (g @ w)
    return top, dx, w


@pytest.mark.parametrize("kind", ["SINGLE", "DOUBLE", "QUADRUPLE"])
def test_margin_inner_product(kind):
    x, w = RNG.standard_normal((4, 6)), RNG.standard_normal((5, 6))
    label = np.array([0, 3, 4, 3.0])
    body = (f"margin_inner_product_param {{ num_output: 5 type: {kind} base: 10 gamma: 0.5 "
            "power: 2 lambda_min: 0.1 iteration: 3 }")
    net = run("MarginInnerProduct", body, {"x": x, "label": label}, tops=("y", "lambda"),
              params=[w])
    lam = max(10 * (1 + 0.5 * 4) ** -2, float(np.float32(0.1)))
    assert net.blobs["lambda"].data[0] == pytest.approx(lam)
    g = RNG.standard_normal((4, 5))
    top, dx, wn = _margin_ref(x, w, label.astype(int), kind, lam, g)
    np.testing.assert_allclose(net.blobs["y"].data, top, rtol=1e-6, atol=1e-7)  # float32 ψ
    np.testing.assert_allclose(net.params["l"][0].data, wn, atol=1e-12)  # normalised in place
    net.blobs["y"].diff[...] = g
    net.params["l"][0].diff[...] = 0
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, dx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(net.params["l"][0].diff, g.T @ x, atol=1e-10)


def test_yolo_seg_and_segmentation_evaluate():
    x, lab = RNG.standard_normal((2, 1, 3, 4)), RNG.integers(0, 2, (2, 1, 3, 4)).astype(float)
    net = run("YoloSeg", "yolo_seg_param { object_scale: 2 }", {"x": x, "lab": lab},
              tops=("loss",))
    d = (1 / (1 + np.exp(-x)) - lab) * 2
    assert net.blobs["loss"].data == pytest.approx((d * d).sum() / 2)
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, d / 2)  # the fork's gradient
    seg = RNG.uniform(0, 1, (1, 2, 4, 4))
    gt = (RNG.uniform(0, 1, (1, 2, 4, 4)) > 0.5).astype(float)
    net = run("SegmentationEvaluate", "segmentation_evaluate_param { num_classes: 2 }",
              {"seg": seg, "gt": gt})
    for c in range(2):
        p, t = seg[0, c] > 0.5, gt[0, c] > 0.5
        iou = (p & t).sum() / (p | t).sum() if (p & t).any() else 0.0
        assert net.blobs["y"].data.ravel()[c] == pytest.approx(iou)


# ----------------------------------------------------------------------------------------------
# DenseImageData (SegNet, ENet)
# ----------------------------------------------------------------------------------------------
def test_dense_image_data(tmp_path):
    import cv2

    rng = np.random.default_rng(3)
    lines = []
    imgs, labs = [], []
    for i in range(3):
        img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        lab = rng.integers(0, 5, (6, 8), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"i{i}.png"), img)
        cv2.imwrite(str(tmp_path / f"l{i}.png"), lab)
        lines.append(f"i{i}.png l{i}.png")
        imgs.append(img)
        labs.append(lab)
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    text = (f'layer {{ name: "d" type: "DenseImageData" top: "data" top: "label" '
            f'dense_image_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 2 '
            f'root_folder: "{tmp_path}/" new_height: 4 new_width: 8 label_divide_factor: 2 }} '
            f'transform_param {{ mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 }} }}')
    net = decaffe.Net(text, decaffe.TRAIN)
    assert net.blobs["data"].data.shape == (2, 3, 4, 8)
    assert net.blobs["label"].data.shape == (2, 1, 2, 4)
    for _ in range(2):  # the second batch wraps around to the first pair
        net.forward()
    order = [2, 0]
    mean = np.array([10, 20, 30], np.float32).reshape(3, 1, 1)
    for k, i in enumerate(order):
        img = cv2.resize(imgs[i], (8, 4), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(net.blobs["data"].data[k],
                                   (img.transpose(2, 0, 1) - mean) * 0.5, atol=1e-5)
        lab = cv2.resize(labs[i], (4, 2), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(net.blobs["label"].data[k, 0], lab)
    with pytest.raises(DecaffeError, match="mirror"):
        decaffe.Net(text.replace("scale: 0.5", "scale: 0.5 mirror: true"), decaffe.TRAIN)


# ----------------------------------------------------------------------------------------------
# refusals: (type, params, bottom shapes, tops, what the error must say)
# ----------------------------------------------------------------------------------------------
X33 = {"x": (1, 1, 3, 3)}
REFUSAL_CASES = [
    ("Interp", "interp_param { pad_beg: 1 zoom_factor: 2 }", X33, ("y",), "pad_beg"),
    ("Interp", "interp_param { }", X33, ("y",), "interp_param"),
    ("Interp", "interp_param { zoom_factor: 0 }", X33, ("y",), "zoom_factor"),
    ("Interp", "interp_param { height: 4 }", X33, ("y",), "interp_param"),
    ("MaxUnPool", "max_unpool_param { dst_h: 4 }", {"x": (1, 1, 2, 2), "m": (1, 1, 2, 2)},
     ("y",), "dst_h"),
    ("Pad", "pad_param { pad_u: 1 pad_d: -1 }", {"x": (1, 1, 4, 4)}, ("y",), "pad_u"),
    ("Pad", "pad_param { pad_type: REFLECT pad_u: 4 }", {"x": (1, 1, 4, 4)}, ("y",), "pad_type"),
    ("Pad", "pad_param { pad_u: 1 }", {"x": (1, 1, 4, 4)}, ("x",), "in-place"),
    ("PixelShuffle", "pixelshuffle_param { upscale_factor: 2 }", {"x": (1, 6, 2, 2)}, ("y",),
     "upscale_factor"),
    ("BilinearInterpolate", "bilinear_interpolate_param { dst_h: 4 dst_w: 4 }",
     {"x": (1, 1, 1, 3)}, ("y",), "at least 2"),
    ("BilinearInterpolate", "bilinear_interpolate_param { dst_h: 4 scale_factor: 2 }", X33,
     ("y",), "scale_factor"),
    ("Unsqueeze", "unsqueeze_param { dim: 5 }", {"x": (1, 1, 3)}, ("y",), "dim"),
    ("ConvolutionDepthwise", "convolution_param { num_output: 8 kernel_size: 3 }",
     {"x": (2, 4, 6, 5)}, ("y",), "num_output"),
    ("ShuffleChannel", "shuffle_channel_param { group: 4 }", {"x": (2, 6, 2, 3)}, ("y",),
     "group"),
    ("Axpy", "", {"a": (2, 6, 2, 1), "x": (2, 6, 2, 3), "z": (2, 6, 2, 3)}, ("y",), "scale"),
    ("GuidedDropout", 'guided_dropout_param { type: "random" }', {"x": (2, 4, 3), "g": (2, 4)},
     ("y",), "type"),
]


@pytest.mark.parametrize("type_,params,shapes,tops,match", REFUSAL_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(REFUSAL_CASES)])
def test_refusals(type_, params, shapes, tops, match):
    with pytest.raises(DecaffeError, match=match):
        run(type_, params, {k: np.zeros(v) for k, v in shapes.items()}, tops=tops)

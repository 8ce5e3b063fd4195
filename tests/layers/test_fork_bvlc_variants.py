"""The forks' own variants of BVLC layers, each against that fork's arithmetic:
R-FCN's SoftmaxWithLoss third top (per-instance loss) and SmoothL1Loss with a weights bottom
and a per-instance top (daijifeng001/caffe-rfcn softmax_loss_layer.cu,
smooth_L1_loss_layer.cu), SegNet's Dropout sample_weights_test (alexgkendall/caffe-segnet
dropout_layer.cpp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prototxt_text import inp, lay

import decaffe
from decaffe.errors import DecaffeError
from decaffe.proto import caffe_pb2

FLT_MIN = np.finfo(np.float32).tiny


def run(text, inputs, phase=decaffe.TRAIN, backward=True):
    net = decaffe.Net("force_backward: true\n" + text, phase, dtype=torch.float64)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    if backward:
        net.backward()
    return net


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# ------------------------------------------------------------------------------------------
# R-FCN's SoftmaxWithLoss: a third top with each position's loss
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial", [False, True])
def test_softmax_with_loss_third_top_is_rfcns_per_instance_loss(spatial):
    rng = np.random.default_rng(0)
    shape, lshape = ((3, 4, 2, 5), (3, 1, 2, 5)) if spatial else ((12, 4), (12,))
    x = rng.standard_normal(shape)
    x.reshape(-1)[0] = 80.0  # a probability under FLT_MIN elsewhere in its column
    label = rng.integers(0, 4, lshape).astype(np.float64)
    label.reshape(-1)[[1, 6]] = 255
    net = run(inp("x", shape) + inp("label", lshape)
              + lay("SoftmaxWithLoss", ["x", "label"], ["loss", "prob", "per"],
                    "loss_weight: 1 loss_weight: 0 loss_weight: 0 propagate_down: true "
                    "propagate_down: false loss_param { ignore_label: 255 }"),
              {"x": x, "label": label})
    p = softmax(x)
    lab = label.reshape(shape[0], *shape[2:]).astype(int)
    valid = lab != 255
    picked = np.take_along_axis(p, np.where(valid, lab, 0)[:, None], 1)[:, 0]
    nll = np.where(valid, -np.log(np.maximum(picked, FLT_MIN)), 0.0)
    assert net.blobs["per"].data.shape == lshape
    np.testing.assert_allclose(net.blobs["per"].data.reshape(nll.shape), nll, rtol=1e-12)
    assert net.blobs["loss"].data == pytest.approx(nll.sum() / valid.sum(), rel=1e-12)
    np.testing.assert_allclose(net.blobs["prob"].data, p, rtol=1e-12)
    # the per-instance top carries no gradient; the loss's is BVLC's
    onehot = np.moveaxis(np.eye(4)[np.where(valid, lab, 0)], -1, 1)
    want = np.where(valid[:, None], p - onehot, 0) / valid.sum()
    np.testing.assert_allclose(net.blobs["x"].diff, want, rtol=1e-10, atol=1e-14)


def test_softmax_with_loss_refuses_a_fourth_top():
    text = (inp("x", (4, 3)) + inp("label", (4,))
            + lay("SoftmaxWithLoss", ["x", "label"], ["l", "p", "q", "r"], name="loss"))
    with pytest.raises(DecaffeError, match="at most 3 top") as e:
        decaffe.Net(text, decaffe.TRAIN)
    assert "loss" in str(e.value)


# ------------------------------------------------------------------------------------------
# R-FCN's SmoothL1Loss: predictions, targets and weights; an optional per-instance top
# ------------------------------------------------------------------------------------------
def smooth(d):
    return np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)


@pytest.mark.parametrize("tops,norm,normaliser", [
    (["loss"], "", 3 * 2 * 2),  # VALID: num·height·width
    (["loss", "per"], "", 3 * 2 * 2),
    (["loss", "per"], "loss_param { normalization: BATCH_SIZE }", 3),
    (["loss"], "loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 128 }", 128),
])
def test_smooth_l1_with_a_weights_bottom_is_rfcns(tops, norm, normaliser):
    rng = np.random.default_rng(1)
    shape = (3, 8, 2, 2)
    a, b = rng.standard_normal(shape) * 1.5, rng.standard_normal(shape)
    w = (rng.random(shape) > 0.4) * rng.choice([1.0, 3.0], shape)
    lw = " ".join(["loss_weight: 1"] + ["loss_weight: 0"] * (len(tops) - 1))
    net = run("".join(inp(k, shape) for k in "abw")
              + lay("SmoothL1Loss", list("abw"), tops,
                    f"{lw} smooth_l1_loss_param {{ sigma: 3 }} {norm}"),
              {"a": a, "b": b, "w": w})
    d = w * (a - b)  # σ is not read: R-FCN's layer has none
    e = smooth(d)
    assert net.blobs["loss"].data == pytest.approx(e.sum() / normaliser, rel=1e-12)
    if "per" in tops:
        assert net.blobs["per"].data.shape == (3, 1, 2, 2)
        np.testing.assert_allclose(net.blobs["per"].data[:, 0], e.sum(1), rtol=1e-12)
    # the fork's gradient: smoothL1'(w·(a−b)) / normaliser, not multiplied by w
    g = np.where(np.abs(d) < 1, d, np.sign(d)) / normaliser
    np.testing.assert_allclose(net.blobs["a"].diff, g, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(net.blobs["b"].diff, -g, rtol=1e-10, atol=1e-15)
    assert not net.blobs["w"].diff.any()


def test_smooth_l1_two_bottoms_one_top_stays_caffe_fast_rcnns():
    rng = np.random.default_rng(2)
    shape = (4, 3, 2, 2)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    net = run(inp("a", shape) + inp("b", shape)
              + lay("SmoothL1Loss", ["a", "b"], ["loss"], "smooth_l1_loss_param { sigma: 2 }"),
              {"a": a, "b": b}, backward=False)
    d = a - b
    e = np.where(np.abs(d) < 0.25, 0.5 * 4 * d * d, np.abs(d) - 0.125)
    assert net.blobs["loss"].data == pytest.approx(e.sum() / 4, rel=1e-12)


def test_smooth_l1_refuses_four_bottoms_with_a_per_instance_top():
    text = ("".join(inp(k, (2, 3)) for k in "abio")
            + lay("SmoothL1Loss", list("abio"), ["loss", "per"], name="loss_bbox"))
    with pytest.raises(DecaffeError, match="2 or 3 bottoms") as e:
        decaffe.Net(text, decaffe.TRAIN)
    assert "loss_bbox" in str(e.value)


# ------------------------------------------------------------------------------------------
# SegNet's Dropout sample_weights_test: Monte Carlo dropout at test time
# ------------------------------------------------------------------------------------------
def _dropout(extra=""):
    return (inp("x", (4, 500)) + lay("Dropout", ["x"], ["y"],
                                      f"dropout_param {{ dropout_ratio: 0.25 {extra} }}"))


def test_dropout_sample_weights_test_samples_in_test_as_in_train():
    torch.manual_seed(5)
    x = np.random.default_rng(3).uniform(1, 2, (4, 500))
    net = decaffe.Net("force_backward: true\n" + _dropout("sample_weights_test: true"),
                      decaffe.TEST, dtype=torch.float64)
    net.blobs["x"].data[...] = x
    outs = []
    for _ in range(2):
        net.forward()
        y = net.blobs["y"].data.copy()
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-12)
        assert 0.6 < kept.mean() < 0.9  # keeps 1 − 0.25 of the values
        net.blobs["y"].diff[...] = 1
        net.backward()
        np.testing.assert_allclose(net.blobs["x"].diff, kept / 0.75, rtol=1e-12)
        outs.append(kept)
    assert (outs[0] != outs[1]).any(), "a fresh mask each forward"
    plain = decaffe.Net(_dropout(), decaffe.TEST, dtype=torch.float64)
    plain.blobs["x"].data[...] = x
    plain.forward()
    np.testing.assert_array_equal(plain.blobs["y"].data, x)  # without it: the identity


def test_sample_weights_test_field():
    p = caffe_pb2.DropoutParameter()
    assert p.sample_weights_test is False
    assert caffe_pb2.DropoutParameter.DESCRIPTOR.fields_by_name["sample_weights_test"].number \
        == 30101
    with pytest.raises(DecaffeError, match="different forks"):
        decaffe.Net(_dropout("sample_weights_test: true scale_train: false"), decaffe.TEST)


# ------------------------------------------------------------------------------------------
# yjxiong/caffe's Convolution dilation_h / dilation_w
# ------------------------------------------------------------------------------------------
def _dilated_conv_reference(x, w, b, stride, pad, dil):
    """yjxiong/caffe's im2col arithmetic: tap (i, j) of output (y, x) reads input
    (y·stride_h − pad_h + i·dilation_h, x·stride_w − pad_w + j·dilation_w), 0 outside."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    for yy in range(oh):
        for xx in range(ow):
            for i in range(kh):
                for j in range(kw):
                    r = yy * stride[0] - pad[0] + i * dil[0]
                    q = xx * stride[1] - pad[1] + j * dil[1]
                    if 0 <= r < h and 0 <= q < wd:
                        out[:, :, yy, xx] += x[:, :, r, q] @ w[:, :, i, j].T
    return out + b[None, :, None, None]


@pytest.mark.parametrize("type_", ["Convolution", "Deconvolution"])
def test_convolution_dilation_h_and_w_are_yjxiongs(type_):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 11, 13))
    text = (inp("x", x.shape) + lay(type_, ["x"], ["y"],
            "convolution_param { num_output: 4 kernel_size: 3 stride_h: 1 stride_w: 2 "
            "pad_h: 1 pad_w: 2 dilation_h: 2 dilation_w: 3 "
            "weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'gaussian' } }",
            name="conv"))
    net = run(text, {"x": x}, phase=decaffe.TEST, backward=False)
    w, b = net.params["conv"][0].data, net.params["conv"][1].data
    y = net.blobs["y"].data
    if type_ == "Convolution":
        np.testing.assert_allclose(y, _dilated_conv_reference(x, w, b, (1, 2), (1, 2), (2, 3)),
                                   rtol=1e-10, atol=1e-10)
    else:  # the transpose of that convolution: its output size, and <y, v> = <x, conv(v)>
        assert y.shape == (2, 4, (11 - 1) * 1 + 2 * 2 + 1 - 2, (13 - 1) * 2 + 3 * 2 + 1 - 4)
        v = rng.standard_normal(y.shape)
        # Caffe's deconvolution weight (3, 4, kh, kw) is the weight of the convolution
        # from its top's 4 channels back to its bottom's 3 that it transposes
        lhs = ((y - b[None, :, None, None]) * v).sum()
        rhs = (x * _dilated_conv_reference(v, w, np.zeros(3), (1, 2), (1, 2), (2, 3))).sum()
        assert lhs == pytest.approx(rhs, rel=1e-9)


def test_dilation_h_and_w_refusals_and_numbers():
    field = caffe_pb2.ConvolutionParameter.DESCRIPTOR.fields_by_name
    assert (field["dilation_h"].number, field["dilation_w"].number) == (30101, 30102)
    base = inp("x", (1, 2, 8, 8))
    with pytest.raises(DecaffeError, match="either dilation or dilation_h"):
        decaffe.Net(base + lay("Convolution", ["x"], ["y"], "convolution_param { num_output: 1 "
                               "kernel_size: 3 dilation: 2 dilation_h: 2 dilation_w: 2 }"),
                    decaffe.TEST)
    with pytest.raises(DecaffeError, match="dilation must be nonzero"):
        decaffe.Net(base + lay("Convolution", ["x"], ["y"], "convolution_param { num_output: 1 "
                               "kernel_size: 3 dilation_h: 2 }"), decaffe.TEST)


def test_inisis_width_and_height_group_parse_and_change_nothing():
    """inisis/caffe declares ConvolutionParameter width_group/height_group (51/52) and no
    layer of it reads them: a net that sets them builds and computes as without them."""
    field = caffe_pb2.ConvolutionParameter.DESCRIPTOR.fields_by_name
    assert (field["width_group"].number, field["height_group"].number) == (51, 52)
    x = np.random.default_rng(6).standard_normal((1, 4, 6, 6))
    conv = ("convolution_param {{ num_output: 2 kernel_size: 3 group: 2 {} "
            "weight_filler {{ type: 'constant' value: 0.5 }} }}")
    outs = []
    for extra in ("", "width_group: 3 height_group: 2"):
        net = run(inp("x", x.shape) + lay("Convolution", ["x"], ["y"], conv.format(extra)),
                  {"x": x}, phase=decaffe.TEST, backward=False)
        outs.append(net.blobs["y"].data.copy())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_tsn_mem_param_parses_and_leaves_every_blob_its_value():
    """yjxiong/caffe's NetParameter.mem_param (200) shares intermediate blobs' memory there;
    decaffe reads it and keeps every blob (the outputs are the same either way)."""
    field = caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["mem_param"]
    assert field.number == 200
    x = np.random.default_rng(8).standard_normal((2, 3))
    body = (inp("x", x.shape) + lay("ReLU", ["x"], ["r"]) + lay("TanH", ["r"], ["t"])
            + lay("Power", ["t"], ["y"], "power_param { scale: 2 }"))
    net = run("mem_param { optimize_test: true exclude_blob: 'r' }\n" + body, {"x": x},
              phase=decaffe.TEST, backward=False)
    np.testing.assert_allclose(net.blobs["t"].data, np.tanh(np.maximum(x, 0)), rtol=1e-12)
    np.testing.assert_allclose(net.blobs["y"].data, 2 * np.tanh(np.maximum(x, 0)), rtol=1e-12)

"""Vision layers (Convolution, Deconvolution, Im2col, Pooling, SPP, LRN) against independent
numpy computations of Caffe's definitions, and Caffe's errors. Their finite-difference
gradients (every geometry, group, dilation and pooling method) and golden replays are
tests/layer_db.py's samples, run by tests/layers/test_layer_table.py."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from netbuild import input_layers as inputs_text

import decaffe
from decaffe.errors import DecaffeError, LayerParamError
from decaffe.layers import vision

FLT_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny: torch's thread pool only adds wake-up latency (badly, on a busy
    machine), and the random-geometry checks run hundreds of passes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def layer_text(type_: str, body: str, bottoms=("x",), tops=("y",), name="l") -> str:
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'


def build(type_, body, shapes, bottoms=("x",), tops=("y",), phase=decaffe.TRAIN,
          dtype=torch.float64):
    text = "force_backward: true\n" + inputs_text(shapes) + layer_text(type_, body, bottoms, tops)
    return decaffe.Net(text, phase, dtype=dtype)


def run(type_, body, inputs: dict[str, np.ndarray], tops=("y",), phase=decaffe.TRAIN,
        params=None):
    """Build a one-layer net over float64 inputs, run forward; returns the net."""
    net = build(type_, body, {k: v.shape for k, v in inputs.items()}, tuple(inputs), tops,
                phase)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    if params:
        for i, a in enumerate(params):
            net.params["l"][i].data[...] = a
    net.forward()
    return net


def distinct(shape, seed=0, spacing=0.05):
    """Values at least `spacing` apart (max pooling stays put under a 1e-2 perturbation)."""
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    return (rng.permutation(n) * spacing - n * spacing / 2).reshape(shape)


def conv_text(num_output, extra="", bias=True):
    b = "bias_filler { type: 'gaussian' std: 0.5 }" if bias else "bias_term: false"
    return (f"convolution_param {{ num_output: {num_output} {extra} "
            f"weight_filler {{ type: 'gaussian' std: 0.5 }} {b} }}")


# ---------------------------------------------------------------------------------------------
# numpy references, written from Caffe's definitions
# ---------------------------------------------------------------------------------------------
def c_div(a, b):
    return int(a / b) if a >= 0 else -int(-a / b)


def ref_conv(x, w, b, stride, pad, dil, group):
    """Direct convolution (Caffe's im2col + gemm) of x (num, C, *S) with zeros outside."""
    n = x.ndim - 2
    num, c = x.shape[:2]
    cout = w.shape[0]
    k = w.shape[2:]
    ext = [d * (kk - 1) + 1 for kk, d in zip(k, dil)]
    out = [c_div(x.shape[2 + i] + 2 * pad[i] - ext[i], stride[i]) + 1 for i in range(n)]
    widths = [(0, 0), (0, 0)] + [(pad[i], pad[i] + ext[i] + stride[i] * out[i]) for i in range(n)]
    xp = np.pad(x, widths)
    y = np.zeros((num, cout, *out))
    cg, og = c // group, cout // group
    for kidx in itertools.product(*[range(kk) for kk in k]):
        sl = tuple(slice(kidx[i] * dil[i], kidx[i] * dil[i] + (out[i] - 1) * stride[i] + 1,
                         stride[i]) for i in range(n))
        patch = xp[(slice(None), slice(None)) + sl]
        for g in range(group):
            wk = w[(slice(g * og, (g + 1) * og), slice(None)) + kidx]
            y[:, g * og:(g + 1) * og] += np.einsum("oc,nc...->no...", wk,
                                                   patch[:, g * cg:(g + 1) * cg])
    if b is not None:
        y += b.reshape((1, cout) + (1,) * n)
    return y


def ref_deconv(x, w, b, stride, pad, dil, group):
    """Caffe's deconvolution: every input pixel scatters w·x into the full output, which is
    then cropped by pad on both sides (col2im)."""
    n = x.ndim - 2
    num, c = x.shape[:2]
    og = w.shape[1]
    k = w.shape[2:]
    ext = [d * (kk - 1) + 1 for kk, d in zip(k, dil)]
    full = [stride[i] * (x.shape[2 + i] - 1) + ext[i] for i in range(n)]
    y = np.zeros((num, og * group, *full))
    cg = c // group
    for kidx in itertools.product(*[range(kk) for kk in k]):
        sl = tuple(slice(kidx[i] * dil[i], kidx[i] * dil[i] + (x.shape[2 + i] - 1) * stride[i]
                         + 1, stride[i]) for i in range(n))
        for g in range(group):
            wk = w[(slice(g * cg, (g + 1) * cg), slice(None)) + kidx]
            y[(slice(None), slice(g * og, (g + 1) * og)) + sl] += np.einsum(
                "co,nc...->no...", wk, x[:, g * cg:(g + 1) * cg])
    crop = tuple(slice(pad[i], full[i] - pad[i]) for i in range(n))
    y = y[(slice(None), slice(None)) + crop]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * n)
    return y


def ref_pool_size(size, k, s, p, ceil=True, clip=None):
    num = size + 2 * p - k
    o = (math.ceil(num / s) if ceil else math.floor(num / s)) + 1
    if clip and (o - 1) * s >= size + p:
        o -= 1
    return o


def ref_pool(x, method, k, s, p, ceil=True):
    """Caffe's Forward_cpu loops for MAX (with mask) and AVE, and the GPU TEST rule for
    STOCHASTIC; returns (top, mask)."""
    n, c, h, w = x.shape
    clip = bool(p[0] or p[1])
    oh = ref_pool_size(h, k[0], s[0], p[0], ceil, clip)
    ow = ref_pool_size(w, k[1], s[1], p[1], ceil, clip)
    top = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for i, j in itertools.product(range(oh), range(ow)):
        hs, ws = i * s[0] - p[0], j * s[1] - p[1]
        if method == "MAX":
            he, we = min(hs + k[0], h), min(ws + k[1], w)
            hs, ws = max(hs, 0), max(ws, 0)
            for a, bb in itertools.product(range(n), range(c)):
                best, idx = -FLT_MAX, -1
                for hh, ww in itertools.product(range(hs, he), range(ws, we)):
                    if x[a, bb, hh, ww] > best:
                        best, idx = x[a, bb, hh, ww], hh * w + ww
                top[a, bb, i, j], mask[a, bb, i, j] = best, idx
        elif method == "AVE":
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            with np.errstate(invalid="ignore", divide="ignore"):
                top[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
        else:  # STOCHASTIC, TEST phase
            he, we = min(hs + k[0], h), min(ws + k[1], w)
            win = x[:, :, hs:he, ws:we]
            top[:, :, i, j] = (win * win).sum(axis=(2, 3)) / (
                np.float32(np.finfo(np.float32).tiny) + win.sum(axis=(2, 3)))
    return top, mask


def ref_pool_backward(x_shape, top_diff, method, k, s, p, mask=None):
    n, c, h, w = x_shape
    oh, ow = top_diff.shape[2:]
    g = np.zeros(x_shape)
    for i, j in itertools.product(range(oh), range(ow)):
        if method == "MAX":
            for a, bb in itertools.product(range(n), range(c)):
                idx = int(mask[a, bb, i, j])
                if idx >= 0:
                    g[a, bb, idx // w, idx % w] += top_diff[a, bb, i, j]
        else:
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            g[:, :, hs:he, ws:we] += (top_diff[:, :, i, j] / size)[:, :, None, None]
    return g


def ref_lrn(x, size, alpha, beta, k, within=False):
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    sq = x * x
    if within:
        padded = np.pad(sq, ((0, 0), (0, 0), (pre, pre), (pre, pre)))
        s = np.zeros_like(x)
        for a, bb in itertools.product(range(size), range(size)):
            s += padded[:, :, a:a + h, bb:bb + w]
        return x * (1 + alpha / size ** 2 * s) ** -beta
    padded = np.pad(sq, ((0, 0), (pre, pre), (0, 0), (0, 0)))
    s = sum(padded[:, i:i + c] for i in range(size))
    return x * (k + alpha / size * s) ** -beta


def ref_im2col(x, k, s, p, d):
    """Caffe's im2col_cpu loop for one (C, H, W) image, returning (C·kh·kw, oh, ow)."""
    c, h, w = x.shape
    oh = (h + 2 * p[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (w + 2 * p[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
    cols = np.zeros((c * k[0] * k[1], oh, ow))
    for ch, a, bb in itertools.product(range(c), range(k[0]), range(k[1])):
        row = (ch * k[0] + a) * k[1] + bb
        for i, j in itertools.product(range(oh), range(ow)):
            hh, ww = i * s[0] - p[0] + a * d[0], j * s[1] - p[1] + bb * d[1]
            if 0 <= hh < h and 0 <= ww < w:
                cols[row, i, j] = x[ch, hh, ww]
    return cols


# ---------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------
CONV_CASES = [
    # (bottom shape, convolution_param extra, num_output, stride, pad, dilation, group)
    ((2, 3, 7, 6), "kernel_size: 3 pad: 1", 4, (1, 1), (1, 1), (1, 1), 1),
    ((2, 4, 9, 8), "kernel_size: 3 stride: 2 dilation: 2 pad: 2 group: 2", 6, (2, 2), (2, 2),
     (2, 2), 2),
    ((1, 2, 7, 9), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", 3,
     (2, 1), (1, 0), (1, 1), 1),
    ((2, 3, 8, 7), "kernel_size: 3 kernel_size: 2 stride: 1 stride: 3 pad: 0 pad: 1 "
     "dilation: 1 dilation: 2", 2, (1, 3), (0, 1), (1, 2), 1),
    ((2, 3, 11), "kernel_size: 4 stride: 3 pad: 1 dilation: 2", 5, (3,), (1,), (2,), 1),
    ((1, 4, 5, 6, 4), "kernel_size: 3 kernel_size: 2 kernel_size: 2 pad: 1 stride: 2 group: 2",
     2, (2, 2, 2), (1, 1, 1), (1, 1, 1), 2),
    ((1, 2, 4, 3, 4, 3), "kernel_size: 2 pad: 1 stride: 2", 3, (2,) * 4, (1,) * 4, (1,) * 4, 1),
    # kernel overhanging the padded input: C division gives output 1, im2col reads zeros
    ((1, 2, 2, 5), "kernel_size: 3 stride: 2", 2, (2, 2), (0, 0), (1, 1), 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_convolution_forward_matches_numpy(case):
    shape, extra, nout, stride, pad, dil, group = case
    x = np.random.default_rng(1).normal(size=shape)
    net = run("Convolution", conv_text(nout, extra), {"x": x})
    w = net.params["l"][0].data.copy()
    b = net.params["l"][1].data.copy()
    cin = shape[1]
    assert w.shape[:2] == (nout, cin // group)
    want = ref_conv(x, w, b, stride, pad, dil, group)
    assert net.blobs["y"].data.shape == want.shape
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-10, atol=1e-10)


def test_convolution_axis_two_treats_leading_axes_as_batch():
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 6, 5))
    net = run("Convolution", conv_text(2, "axis: 2 kernel_size: 3 kernel_size: 2"), {"x": x})
    w, b = (a.data.copy() for a in net.params["l"])
    assert w.shape == (2, 4, 3, 2)
    want = ref_conv(x.reshape(6, 4, 6, 5), w, b, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(net.blobs["y"].data, want.reshape(2, 3, 2, 4, 4), rtol=1e-10)


def test_convolution_without_spatial_axes_is_grouped_inner_product():
    x = np.random.default_rng(3).normal(size=(3, 4))
    net = run("Convolution", conv_text(6, "group: 2"), {"x": x})
    w, b = (a.data.copy() for a in net.params["l"])
    assert w.shape == (6, 2)
    want = np.concatenate([x[:, :2] @ w[:3].T, x[:, 2:] @ w[3:].T], axis=1) + b
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-10)


def test_convolution_several_bottoms_share_weights():
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(2, 3, 5, 5))
    net = run("Convolution", conv_text(2, "kernel_size: 3 pad: 1"), {"a": x1, "b": x2},
              tops=("ya", "yb"))
    w, b = (a.data.copy() for a in net.params["l"])
    for x, top in ((x1, "ya"), (x2, "yb")):
        want = ref_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1)
        np.testing.assert_allclose(net.blobs[top].data, want, rtol=1e-10)


def test_convolution_reshape_follows_new_input_shape():
    net = build("Convolution", conv_text(2, "kernel_size: 3 stride: 2"), {"x": (1, 3, 7, 7)})
    assert net.blobs["y"].data.shape == (1, 2, 3, 3)
    net.blobs["x"].reshape(2, 3, 10, 8)
    net.reshape()
    assert net.blobs["y"].data.shape == (2, 2, 4, 3)
    x = np.random.default_rng(5).normal(size=(2, 3, 10, 8))
    net.blobs["x"].data[...] = x
    net.forward()
    w, b = (a.data.copy() for a in net.params["l"])
    np.testing.assert_allclose(net.blobs["y"].data,
                               ref_conv(x, w, b, (2, 2), (0, 0), (1, 1), 1), rtol=1e-10)
    net.blobs["x"].reshape(2, 4, 10, 8)
    with pytest.raises(LayerParamError, match="channels"):
        net.reshape()


def test_convolution_fillers_and_blob_shapes():
    net = build("Convolution", "convolution_param { num_output: 6 kernel_size: 3 group: 3 "
                "weight_filler { type: 'constant' value: 0.25 } "
                "bias_filler { type: 'constant' value: -1 } }", {"x": (1, 9, 4, 4)})
    w, b = net.params["l"]
    assert w.data.shape == (6, 3, 3, 3) and b.data.shape == (6,)
    assert np.all(w.data == 0.25) and np.all(b.data == -1)
    net = build("Convolution", "convolution_param { num_output: 2 kernel_size: 1 "
                "bias_term: false }", {"x": (1, 3, 2, 2)})
    assert len(net.params["l"]) == 1 and np.all(net.params["l"][0].data == 0)


def test_generic_paths_match_torch_kernels(monkeypatch):
    """The any-rank fallback (used beyond 3 spatial axes) agrees with torch's own kernels."""
    rng = np.random.default_rng(6)
    cases = [("Convolution", (2, 4, 7, 6), "kernel_size: 3 stride: 2 pad: 2 dilation: 2 "
              "group: 2"),
             ("Deconvolution", (2, 4, 4, 5), "kernel_size: 3 stride: 2 pad: 1 dilation: 2 "
              "group: 2"),
             ("Deconvolution", (1, 2, 3, 4), "kernel_size: 2 stride: 3 pad: 2"),
             ("Convolution", (1, 2, 9), "kernel_size: 4 stride: 3 pad: 1")]
    for type_, shape, extra in cases:
        x = rng.normal(size=shape)
        net = run(type_, conv_text(4, extra), {"x": x})
        params = [p.data.copy() for p in net.params["l"]]
        fast = net.blobs["y"].data.copy()
        with monkeypatch.context() as m:
            m.setattr(vision, "_CONV_FN", {})
            m.setattr(vision, "_CONV_T_FN", {})
            slow = run(type_, conv_text(4, extra), {"x": x}, params=params).blobs["y"].data
        np.testing.assert_allclose(slow, fast, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Deconvolution
# ---------------------------------------------------------------------------------------------
DECONV_CASES = [
    ((2, 3, 5, 4), "kernel_size: 4 stride: 2 pad: 1", 2, (2, 2), (1, 1), (1, 1), 1),
    ((1, 4, 3, 5), "kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 3 pad_h: 1 pad_w: 0 "
     "group: 2", 6, (1, 3), (1, 0), (1, 1), 2),
    ((2, 2, 4, 3), "kernel_size: 3 stride: 2 dilation: 2 pad: 3", 3, (2, 2), (3, 3), (2, 2), 1),
    ((2, 3, 6), "kernel_size: 5 stride: 2 pad: 2", 2, (2,), (2,), (1,), 1),
    ((1, 2, 3, 2, 4), "kernel_size: 2 stride: 2 pad: 0", 3, (2, 2, 2), (0, 0, 0), (1, 1, 1), 1),
    ((1, 2, 2, 3, 2, 2), "kernel_size: 2 stride: 2 pad: 1", 2, (2,) * 4, (1,) * 4, (1,) * 4, 1),
    # pad larger than the kernel extent: col2im drops everything past the crop
    ((1, 1, 4, 4), "kernel_size: 1 stride: 3 pad: 2", 1, (3, 3), (2, 2), (1, 1), 1),
]


@pytest.mark.parametrize("case", DECONV_CASES,
                         ids=[f"deconv{i}" for i in range(len(DECONV_CASES))])
def test_deconvolution_forward_matches_numpy(case):
    shape, extra, nout, stride, pad, dil, group = case
    x = np.random.default_rng(9).normal(size=shape)
    net = run("Deconvolution", conv_text(nout, extra), {"x": x})
    w, b = (a.data.copy() for a in net.params["l"])
    assert w.shape[:2] == (shape[1], nout // group)  # Caffe's (C_in, C_out/group, ...)
    want = ref_deconv(x, w, b, stride, pad, dil, group)
    assert net.blobs["y"].data.shape == want.shape
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-10, atol=1e-12)


def test_deconvolution_output_size_rule():
    for (h, k, s, p, d) in [(7, 4, 2, 1, 1), (5, 3, 1, 0, 2), (3, 2, 3, 1, 1), (1, 1, 1, 0, 1)]:
        net = build("Deconvolution", conv_text(1, f"kernel_size: {k} stride: {s} pad: {p} "
                    f"dilation: {d}"), {"x": (1, 1, h, h)})
        want = s * (h - 1) + d * (k - 1) + 1 - 2 * p
        assert net.blobs["y"].data.shape == (1, 1, want, want)


def test_deconvolution_bilinear_filler_upsamples():
    net = build("Deconvolution", "convolution_param { num_output: 1 kernel_size: 4 stride: 2 "
                "pad: 1 bias_term: false weight_filler { type: 'bilinear' } }",
                {"x": (1, 1, 3, 3)})
    net.blobs["x"].data[...] = 1.0
    net.forward()
    y = net.blobs["y"].data
    assert y.shape == (1, 1, 6, 6)
    np.testing.assert_allclose(y[0, 0, 1:-1, 1:-1], 1.0)  # interior of a constant stays constant


# ---------------------------------------------------------------------------------------------
# Im2col
# ---------------------------------------------------------------------------------------------
IM2COL_CASES = [
    ((2, 3, 5, 6), "kernel_size: 3", (3, 3), (1, 1), (0, 0), (1, 1)),
    ((1, 2, 7, 6), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2",
     (3, 2), (2, 1), (1, 2), (1, 1)),
    ((2, 2, 8, 7), "kernel_size: 2 dilation: 3 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1),
     (3, 3)),
]


@pytest.mark.parametrize("case", IM2COL_CASES, ids=[f"im2col{i}" for i in range(3)])
def test_im2col_layout_matches_caffe_loop(case):
    shape, extra, k, s, p, d = case
    x = np.random.default_rng(10).normal(size=shape)
    net = run("Im2col", f"convolution_param {{ {extra} }}", {"x": x})
    y = net.blobs["y"].data
    for n in range(shape[0]):
        np.testing.assert_array_equal(y[n], ref_im2col(x[n], k, s, p, d))


def test_im2col_1d_3d_and_axis():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 3, 4, 5, 6))
    net = run("Im2col", "convolution_param { kernel_size: 2 kernel_size: 3 kernel_size: 2 "
              "stride: 2 pad: 1 }", {"x": x})
    y = net.blobs["y"].data
    # column row (c, a, b, e) at output (i, j, l) reads x[c, 2i-1+a, 2j-1+b, 2l-1+e]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (1, 1)))
    assert y.shape == (2, 3 * 12, 3, 3, 4)
    for c, a, b, e in itertools.product(range(3), range(2), range(3), range(2)):
        row = ((c * 2 + a) * 3 + b) * 2 + e
        np.testing.assert_array_equal(y[:, row], xp[:, c, a:a + 5:2, b:b + 5:2, e:e + 7:2])
    x1 = rng.normal(size=(3, 2, 4, 7))
    net = run("Im2col", "convolution_param { axis: 2 kernel_size: 3 stride: 2 }", {"x": x1})
    y = net.blobs["y"].data
    assert y.shape == (3, 2, 12, 3)
    for a in range(3):
        np.testing.assert_array_equal(y[:, :, a::3], x1[:, :, :, a:a + 5:2])


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
def pool_text(method, k=None, s=None, p=None, extra=""):
    def hw(name, v):
        if v is None:
            return ""
        if isinstance(v, tuple):
            return f"{name}_h: {v[0]} {name}_w: {v[1]} "
        return f"{name}: {v} " if name != "kernel" else f"kernel_size: {v} "
    return (f"pooling_param {{ pool: {method} {hw('kernel', k)}{hw('stride', s)}{hw('pad', p)}"
            f"{extra} }}")


def pair(v, default):
    return default if v is None else (v if isinstance(v, tuple) else (v, v))


POOL_CASES = [
    # (bottom H, W, kernel, stride, pad, round mode); sizes chosen to hit both code paths
    (7, 7, 3, 2, None, "CEIL"),           # ceil with an overhanging last window
    (8, 8, 3, 2, 1, "CEIL"),              # padding, clipped last window
    (7, 7, 2, 2, None, "CEIL"),
    (6, 9, (3, 2), (2, 3), (1, 0), "CEIL"),   # rectangular; clipping on both axes
    (5, 5, 3, 3, 2, "CEIL"),              # pad > kernel/2: explicit padding path
    (9, 7, 3, 2, 1, "FLOOR"),
    (8, 6, (4, 3), (3, 2), (1, 1), "FLOOR"),
    (6, 6, 3, 1, 1, "CEIL"),
    (7, 5, 4, 3, 3, "CEIL"),
    (5, 5, 1, 3, None, "CEIL"),           # kernel < stride: a window past the image (empty)
    (4, 4, 1, 2, None, "CEIL"),           # ... and AVE's 0/0 there
    (10, 3, 2, (3, 1), (1, 0), "CEIL"),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"pool{i}" for i in range(len(POOL_CASES))])
def test_pooling_forward_backward_match_caffe_loops(case, method):
    h, w, k, s, p, mode = case
    x = np.random.default_rng(13).normal(size=(2, 3, h, w))
    tops = ("y", "mask") if method == "MAX" else ("y",)
    extra = "round_mode: FLOOR" if mode == "FLOOR" else ""
    net = build("Pooling", pool_text(method, k, s, p, extra), {"x": x.shape}, tops=tops)
    net.blobs["x"].data[...] = x
    net.forward()
    kk, ss, pp = pair(k, None), pair(s, (1, 1)), pair(p, (0, 0))
    want, mask = ref_pool(x, method, kk, ss, pp, ceil=(mode == "CEIL"))
    got = net.blobs["y"].data
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    if method == "MAX":
        np.testing.assert_array_equal(net.blobs["mask"].data, mask)
    top_diff = np.random.default_rng(14).normal(size=want.shape)
    net.blobs["y"].diff[...] = top_diff
    net.backward()
    grad = ref_pool_backward(x.shape, top_diff, method, kk, ss, pp, mask)
    np.testing.assert_allclose(net.blobs["x"].diff, grad, rtol=1e-12, atol=1e-12)


def test_pooling_random_geometries_match_caffe_loops():
    """A sweep over kernel/stride/pad/size/rounding, so that both torch's own padding and the
    explicit-padding route are compared with Caffe's loops on many geometries."""
    rng = np.random.default_rng(26)
    for _ in range(60):
        k = tuple(int(v) for v in rng.integers(1, 5, size=2))
        s = tuple(int(v) for v in rng.integers(1, 4, size=2))
        p = tuple(int(rng.integers(0, kk)) for kk in k) if rng.random() < 0.6 else (0, 0)
        hw = tuple(int(v) for v in rng.integers(1, 9, size=2))
        ceil = bool(rng.random() < 0.7)
        oh = ref_pool_size(hw[0], k[0], s[0], p[0], ceil, any(p))
        ow = ref_pool_size(hw[1], k[1], s[1], p[1], ceil, any(p))
        if oh < 1 or ow < 1:
            continue
        x = distinct((1, 2, *hw), seed=int(rng.integers(1000)))
        for method in ("MAX", "AVE"):
            body = (f"pooling_param {{ pool: {method} kernel_h: {k[0]} kernel_w: {k[1]} "
                    f"stride_h: {s[0]} stride_w: {s[1]} pad_h: {p[0]} pad_w: {p[1]} "
                    f"round_mode: {'CEIL' if ceil else 'FLOOR'} }}")
            tops = ("y", "mask") if method == "MAX" else ("y",)
            net = run("Pooling", body, {"x": x}, tops=tops)
            want, mask = ref_pool(x, method, k, s, p, ceil)
            what = f"{method} k={k} s={s} p={p} size={hw} ceil={ceil}"
            np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12, atol=1e-12,
                                       equal_nan=True, err_msg=what)
            if method == "MAX":
                np.testing.assert_array_equal(net.blobs["mask"].data, mask, err_msg=what)


def test_pooling_empty_window_values():
    # kernel 1 stride 3 on 5 rows: windows at rows 0, 3, 6; row 6 holds no pixel
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    net = run("Pooling", pool_text("MAX", 1, 3), {"x": x}, tops=("y", "mask"))
    y, mask = net.blobs["y"].data, net.blobs["mask"].data
    assert y.shape == (1, 1, 3, 3)
    assert np.all(y[0, 0, 2] == -FLT_MAX) and np.all(mask[0, 0, 2] == -1)
    assert y[0, 0, 1, 1] == 18 and mask[0, 0, 1, 1] == 18
    ave = run("Pooling", pool_text("AVE", 1, 3), {"x": x}).blobs["y"].data
    assert ave[0, 0, 1, 1] == 18 and ave[0, 0, 2, 0] == 0  # -1 pixels divide a zero sum
    ave = run("Pooling", pool_text("AVE", 1, 2), {"x": np.ones((1, 1, 4, 4))}).blobs["y"].data
    assert ave.shape == (1, 1, 3, 3) and np.isnan(ave[0, 0, 2]).all()  # Caffe's 0/0


def test_pooling_output_size_rule():
    net = build("Pooling", pool_text("MAX", 2, 3), {"x": (1, 1, 7, 7)})
    assert net.blobs["y"].data.shape == (1, 1, 3, 3)  # ceil(5/3)+1; the window at 6 holds 6
    net = build("Pooling", pool_text("MAX", 2, 3, 1), {"x": (1, 1, 7, 7)})
    assert net.blobs["y"].data.shape == (1, 1, 3, 3)  # ceil(7/3)+1 = 4, clipped: 9 >= 8
    net = build("Pooling", pool_text("MAX", (1, 2), (3, 1)), {"x": (1, 1, 5, 4)})
    assert net.blobs["y"].data.shape == (1, 1, 3, 3)  # no padding: no clipping (torch clips)
    # pad_w alone turns the clipping on for the height too: ceil(4/3)+1 = 3, 6 >= 5 -> 2
    net = build("Pooling", pool_text("MAX", (1, 2), (3, 1), (0, 1)), {"x": (1, 1, 5, 4)})
    assert net.blobs["y"].data.shape == (1, 1, 2, 5)


def test_pooling_max_ties_pick_first_in_row_major_order():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0
    net = run("Pooling", pool_text("MAX", 2, 2), {"x": x}, tops=("y", "mask"))
    assert net.blobs["mask"].data[0, 0, 0, 0] == 1  # (0,1) comes before (1,0)
    assert net.blobs["mask"].data[0, 0, 1, 1] == 10  # all zero: the window's first pixel


def test_pooling_global():
    x = np.random.default_rng(15).normal(size=(2, 3, 5, 4))
    net = run("Pooling", "pooling_param { pool: MAX global_pooling: true }", {"x": x},
              tops=("y", "mask"))
    np.testing.assert_allclose(net.blobs["y"].data[..., 0, 0], x.max(axis=(2, 3)))
    np.testing.assert_array_equal(net.blobs["mask"].data[..., 0, 0],
                                  x.reshape(2, 3, -1).argmax(axis=2))
    net = run("Pooling", "pooling_param { pool: AVE global_pooling: true }", {"x": x})
    np.testing.assert_allclose(net.blobs["y"].data[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-12)
    net.blobs["x"].reshape(1, 3, 2, 7)
    net.reshape()
    assert net.blobs["y"].data.shape == (1, 3, 1, 1)


def test_pooling_mask_follows_bottom_index_and_carries_no_gradient():
    x = distinct((1, 2, 5, 5))
    net = run("Pooling", pool_text("MAX", 3, 2, 1), {"x": x}, tops=("y", "mask"))
    y, mask = net.blobs["y"].data, net.blobs["mask"].data
    flat = x.reshape(1, 2, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, mask.reshape(1, 2, -1).astype(int),
                                                     axis=2).reshape(y.shape), y)
    net.blobs["y"].diff[...] = 0
    net.blobs["mask"].diff[...] = 1.0
    net.backward()
    assert np.all(net.blobs["x"].diff == 0)


def test_stochastic_pooling_test_phase_is_weighted_average():
    x = np.random.default_rng(16).uniform(0.1, 2, size=(2, 3, 7, 6))
    net = run("Pooling", pool_text("STOCHASTIC", 3, 2), {"x": x}, phase=decaffe.TEST)
    want, _ = ref_pool(x, "STOCHASTIC", (3, 3), (2, 2), (0, 0))
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12)


def test_stochastic_pooling_train_samples_by_value():
    # windows [1, 3]: Caffe picks 3 with probability 3/4
    x = np.tile(np.array([1.0, 3.0]), (1, 4000, 1, 1)).reshape(1, 4000, 1, 2)
    net = run("Pooling", pool_text("STOCHASTIC", (1, 2), (1, 2)), {"x": x})
    y = net.blobs["y"].data
    assert set(np.unique(y)) <= {1.0, 3.0}
    frac = (y == 3.0).mean()
    assert abs(frac - 0.75) < 0.03
    # zero-valued pixels are never picked over a positive one
    x = np.zeros((1, 50, 3, 3))
    x[:, :, 2, 1] = 0.5
    y = run("Pooling", pool_text("STOCHASTIC", 3, 3), {"x": x}).blobs["y"].data
    assert np.all(y == 0.5)


def test_stochastic_pooling_train_gradient_goes_to_the_pick():
    x = np.random.default_rng(17).uniform(0.5, 1.5, size=(1, 2, 6, 6))
    net = run("Pooling", pool_text("STOCHASTIC", 2, 2), {"x": x})
    y = net.blobs["y"].data.copy()
    net.blobs["y"].diff[...] = 1.0
    net.backward()
    g = net.blobs["x"].diff
    for c, i, j in itertools.product(range(2), range(3), range(3)):
        win, gwin = x[0, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2], g[0, c, 2 * i:2 * i + 2,
                                                                 2 * j:2 * j + 2]
        assert gwin.sum() == 1 and (gwin == 1).sum() == 1
        assert win[gwin == 1][0] == y[0, c, i, j]


# ---------------------------------------------------------------------------------------------
# SPP
# ---------------------------------------------------------------------------------------------
def ref_spp(x, height, method):
    n, c, h, w = x.shape
    outs = []
    for level in range(height):
        bins = 2 ** level
        k = (math.ceil(h / bins), math.ceil(w / bins))
        p = ((k[0] * bins - h + 1) // 2, (k[1] * bins - w + 1) // 2)
        top, _ = ref_pool(x, method, k, k, p)
        outs.append(top)
    if height == 1:
        return outs[0]
    return np.concatenate([o.reshape(n, -1) for o in outs], axis=1)


@pytest.mark.parametrize("height,method,hw", [(1, "MAX", (5, 6)), (2, "AVE", (7, 7)),
                                              (3, "MAX", (9, 6)), (3, "AVE", (13, 10))])
def test_spp_matches_pooling_pyramid(height, method, hw):
    x = np.random.default_rng(19).normal(size=(2, 3, *hw))
    net = run("SPP", f"spp_param {{ pyramid_height: {height} pool: {method} }}", {"x": x})
    want = ref_spp(x, height, method)
    assert net.blobs["y"].data.shape == want.shape
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12)


def test_spp_reshape_keeps_output_length():
    net = build("SPP", "spp_param { pyramid_height: 3 }", {"x": (1, 4, 13, 13)})
    assert net.blobs["y"].data.shape == (1, 4 * 21)
    net.blobs["x"].reshape(2, 4, 9, 11)
    net.reshape()
    assert net.blobs["y"].data.shape == (2, 4 * 21)
    x = np.random.default_rng(20).normal(size=(2, 4, 9, 11))
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, ref_spp(x, 3, "MAX"))


# ---------------------------------------------------------------------------------------------
# LRN
# ---------------------------------------------------------------------------------------------
LRN_CASES = [("ACROSS_CHANNELS", 5, 1e-4 * 1000, 0.75, 1.0, (2, 7, 3, 4)),
             ("ACROSS_CHANNELS", 3, 0.5, 0.6, 2.0, (1, 2, 4, 3)),
             ("ACROSS_CHANNELS", 1, 2.0, 1.3, 1.5, (2, 3, 2, 2)),
             ("WITHIN_CHANNEL", 3, 0.5, 0.75, 9.0, (2, 3, 5, 6)),
             ("WITHIN_CHANNEL", 5, 2.0, 0.4, 1.0, (1, 2, 3, 7))]


@pytest.mark.parametrize("case", LRN_CASES, ids=[f"lrn{i}" for i in range(len(LRN_CASES))])
def test_lrn_forward_matches_formula(case):
    region, size, alpha, beta, k, shape = case
    x = np.random.default_rng(21).normal(size=shape)
    net = run("LRN", f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} "
              f"norm_region: {region} }}", {"x": x})
    f32 = lambda v: float(np.float32(v))  # noqa: E731  (the proto stores floats)
    want = ref_lrn(x, size, f32(alpha), f32(beta), f32(k),
                   within=region == "WITHIN_CHANNEL")
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-10)


def test_lrn_defaults():
    x = np.random.default_rng(22).normal(size=(1, 6, 2, 2))
    net = run("LRN", "", {"x": x})
    np.testing.assert_allclose(net.blobs["y"].data, ref_lrn(x, 5, 1.0, 0.75, 1.0), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# errors a user can cause
# ---------------------------------------------------------------------------------------------
ERROR_CASES = [
    ("Convolution", "convolution_param { kernel_size: 3 }", (1, 2, 5, 5), ("y",), "num_output"),
    ("Convolution", conv_text(3, "kernel_size: 3 group: 2"), (1, 4, 5, 5), ("y",),
     "num_output"),
    ("Convolution", conv_text(4, "kernel_size: 3 group: 2"), (1, 3, 5, 5), ("y",), "group"),
    ("Convolution", conv_text(2, "kernel_size: 3 group: 0"), (1, 2, 5, 5), ("y",), "group"),
    ("Convolution", conv_text(2, ""), (1, 2, 5, 5), ("y",), "kernel_size"),
    ("Convolution", conv_text(2, "kernel_size: 0"), (1, 2, 5, 5), ("y",), "kernel_size"),
    ("Convolution", conv_text(2, "kernel_size: 1 kernel_size: 2 kernel_size: 3"),
     (1, 2, 5, 5), ("y",), "kernel_size"),
    ("Convolution", conv_text(2, "kernel_h: 3"), (1, 2, 5, 5), ("y",), "kernel_size"),
    ("Convolution", conv_text(2, "kernel_h: 3 kernel_w: 3"), (1, 2, 5), ("y",), "kernel_h"),
    ("Convolution", conv_text(2, "kernel_size: 3 kernel_h: 3 kernel_w: 3"), (1, 2, 5, 5),
     ("y",), "kernel_size"),
    ("Convolution", conv_text(2, "kernel_size: 3 stride: 0"), (1, 2, 5, 5), ("y",), "stride"),
    ("Convolution", conv_text(2, "kernel_size: 3 stride_h: 2"), (1, 2, 5, 5), ("y",), "stride"),
    ("Convolution", conv_text(2, "kernel_size: 3 stride: 1 stride_h: 2 stride_w: 2"),
     (1, 2, 5, 5), ("y",), "stride"),
    ("Convolution", conv_text(2, "kernel_size: 3 pad: 1 pad: 1 pad: 1"), (1, 2, 5, 5), ("y",),
     "pad"),
    ("Convolution", conv_text(2, "kernel_size: 3 pad_h: 1"), (1, 2, 5), ("y",), "pad_h"),
    ("Convolution", conv_text(2, "kernel_size: 3 dilation: 0"), (1, 2, 5, 5), ("y",),
     "dilation"),
    ("Convolution", conv_text(2, "kernel_size: 3 dilation: 1 dilation: 1 dilation: 2"),
     (1, 2, 5, 5), ("y",), "dilation"),
    ("Convolution", conv_text(2, "kernel_size: 3 axis: 4"), (1, 2, 5, 5), ("y",), "axis"),
    ("Convolution", conv_text(2, "kernel_size: 5 stride: 2"), (1, 2, 2, 5), ("y",), "fit"),
    ("Convolution", conv_text(2, "kernel_size: 3"), (1, 2, 5, 5), ("y", "z"), "top"),
    ("Deconvolution", conv_text(2, "kernel_size: 1 pad: 2"), (1, 2, 2, 2), ("y",), "output"),
    ("Im2col", "convolution_param { kernel_size: 3 axis: -1 }", (1, 2, 5, 5), ("y",), "axis"),
    ("Im2col", "convolution_param { }", (1, 2, 5, 5), ("y",), "kernel_size"),
    ("Pooling", "pooling_param { pool: MAX }", (1, 1, 4, 4), ("y",), "kernel_size"),
    ("Pooling", "pooling_param { pool: MAX kernel_h: 2 }", (1, 1, 4, 4), ("y",), "kernel"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2 }",
     (1, 1, 4, 4), ("y",), "kernel_size"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 0 }", (1, 1, 4, 4), ("y",),
     "kernel_size"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 2 pad_h: 1 }", (1, 1, 4, 4), ("y",),
     "pad"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1 }",
     (1, 1, 4, 4), ("y",), "pad"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 2 stride_w: 1 }", (1, 1, 4, 4),
     ("y",), "stride"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 0 }", (1, 1, 4, 4), ("y",),
     "stride"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 2 pad: 2 }", (1, 1, 4, 4), ("y",),
     "pool"),
    ("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 3 pad: 1 }", (1, 1, 4, 4),
     ("y",), "pool"),
    ("Pooling", "pooling_param { pool: MAX global_pooling: true kernel_size: 2 }",
     (1, 1, 4, 4), ("y",), "kernel_size"),
    ("Pooling", "pooling_param { pool: AVE global_pooling: true stride: 2 }", (1, 1, 4, 4),
     ("y",), "global_pooling"),
    ("Pooling", "pooling_param { pool: AVE kernel_size: 2 }", (1, 1, 4, 4), ("y", "m"),
     "pool"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 2 }", (1, 4, 4), ("y",), "4 axes"),
    ("Pooling", "pooling_param { pool: MAX kernel_size: 5 }", (1, 1, 3, 3), ("y",),
     "no output"),
    ("SPP", "spp_param { }", (1, 1, 4, 4), ("y",), "pyramid_height"),
    ("SPP", "spp_param { pyramid_height: 3 }", (1, 1, 2, 2), ("y",), "pyramid_height"),
    ("SPP", "spp_param { pyramid_height: 2 }", (1, 4, 4), ("y",), "4 axes"),
    ("SPP", "spp_param { pyramid_height: 2 pool: STOCHASTIC }", (1, 1, 5, 5), ("y",),
     "pyramid_height"),
    ("LRN", "lrn_param { local_size: 4 }", (1, 3, 4, 4), ("y",), "local_size"),
    ("LRN", "lrn_param { local_size: 3 }", (1, 3, 4), ("y",), "4 axes"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[f"{c[0]}-{i}" for i, c in
                                                   enumerate(ERROR_CASES)])
def test_errors_name_layer_and_field(case):
    type_, body, shape, tops, needle = case
    with pytest.raises(DecaffeError) as e:
        build(type_, body, {"x": shape}, tops=tops)
    msg = str(e.value)
    assert "'l'" in msg and needle in msg, msg


def test_convolution_bottoms_must_share_shape():
    with pytest.raises(LayerParamError, match="same shape"):
        build("Convolution", conv_text(2, "kernel_size: 1"), {"a": (1, 2, 3, 3),
                                                              "b": (1, 2, 4, 3)},
              bottoms=("a", "b"), tops=("ya", "yb"))


def test_convolution_axes_may_not_change():
    net = build("Convolution", conv_text(2, "kernel_size: 1"), {"x": (1, 2, 3, 3)})
    net.blobs["x"].reshape(1, 2, 3)
    with pytest.raises(LayerParamError, match="axes"):
        net.reshape()


# ---------------------------------------------------------------------------------------------
# GPU: the same numbers as on the CPU (run where CUDA is present)
# ---------------------------------------------------------------------------------------------
GPU_CASES = [
    ("Convolution", conv_text(4, "kernel_size: 3 stride: 2 pad: 1 dilation: 2 group: 2"),
     (2, 4, 9, 8), ("y",)),
    ("Convolution", conv_text(3, "kernel_size: 2 pad: 1"), (1, 2, 3, 3, 2, 3), ("y",)),
    ("Deconvolution", conv_text(2, "kernel_size: 4 stride: 2 pad: 1"), (2, 3, 5, 5), ("y",)),
    ("Pooling", pool_text("MAX", 3, 2, 1), (2, 3, 8, 8), ("y", "mask")),
    ("Pooling", pool_text("MAX", 3, 3, 2), (2, 3, 7, 7), ("y", "mask")),
    ("Pooling", pool_text("MAX", 1, 3), (1, 2, 5, 5), ("y", "mask")),
    ("Pooling", pool_text("AVE", 3, 2, 1), (2, 3, 8, 7), ("y",)),
    ("Pooling", pool_text("AVE", 3, 3, 2), (2, 3, 7, 7), ("y",)),
    ("Pooling", pool_text("STOCHASTIC", 3, 2), (2, 3, 7, 7), ("y",)),
    ("SPP", "spp_param { pyramid_height: 3 pool: AVE }", (2, 3, 9, 7), ("y",)),
    ("LRN", "lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 2 }", (2, 7, 4, 4), ("y",)),
    ("LRN", "lrn_param { local_size: 3 alpha: 0.5 norm_region: WITHIN_CHANNEL }",
     (2, 3, 5, 5), ("y",)),
    ("Im2col", "convolution_param { kernel_size: 3 stride: 2 pad: 1 }", (2, 3, 6, 5), ("y",)),
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", GPU_CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(GPU_CASES)])
def test_gpu_matches_cpu(case):
    type_, body, shape, tops = case
    x = distinct(shape, spacing=0.01)
    if "STOCHASTIC" in body:
        x = np.abs(x) + 0.1
    results = []
    for gpu in (False, True):
        decaffe.set_mode_gpu() if gpu else decaffe.set_mode_cpu()
        net = build(type_, body, {"x": shape}, tops=tops, phase=decaffe.TEST)
        if net.params:
            rng = np.random.default_rng(24)
            for p in net.params["l"]:
                p.data[...] = rng.normal(size=p.data.shape)
        net.blobs["x"].data[...] = x
        net.forward()
        outs = {t: net.blobs[t].data.copy() for t in tops}
        net.blobs["y"].diff[...] = np.random.default_rng(25).normal(size=outs["y"].shape)
        net.backward()
        outs["dx"] = net.blobs["x"].diff.copy()
        for i, p in enumerate(net.params.get("l", [])):
            outs[f"dp{i}"] = p.diff.copy()
        results.append(outs)
    decaffe.set_mode_cpu()
    for key, want in results[0].items():
        np.testing.assert_allclose(results[1][key], want, rtol=1e-9, atol=1e-9, err_msg=key)

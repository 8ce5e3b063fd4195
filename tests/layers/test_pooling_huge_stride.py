"""Pooling with a stride beyond the kernel computes Caffe's windows without padding the
input out to the stride (a huge stride asks for no memory), checked against a direct
transcription of Caffe's PoolingLayer loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import decaffe

FLT_MAX = np.finfo(np.float32).max


def _caffe_pool(x, k, s, p, method, ceil=True):
    n, c, h, w = x.shape
    oh = [None, None]
    for a, size in enumerate((h, w)):
        num = size + 2 * p[a] - k[a]
        o = (-((-num) // s[a]) if ceil else num // s[a]) + 1
        if (p[a] or p[1 - a]) and (o - 1) * s[a] >= size + p[a]:
            o -= 1
        oh[a] = o
    y = np.zeros((n, c, oh[0], oh[1]), np.float32)
    mask = np.zeros_like(y)
    for i, j in itertools.product(range(oh[0]), range(oh[1])):
        hs, ws = i * s[0] - p[0], j * s[1] - p[1]
        he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
        size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        win = x[:, :, hs:he, ws:we]
        if method == "MAX":
            if win.size == 0:
                y[:, :, i, j], mask[:, :, i, j] = -FLT_MAX, -1
                continue
            flat = win.reshape(n, c, -1)
            arg = flat.argmax(-1)
            y[:, :, i, j] = flat.max(-1)
            mask[:, :, i, j] = (hs + arg // (we - ws)) * w + ws + arg % (we - ws)
        else:
            y[:, :, i, j] = win.sum(axis=(2, 3)) / size
    return y, mask


def _net(shape, k, s, p, method, mask):
    tops = 'top: "y" top: "m"' if mask else 'top: "y"'
    text = (f'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ '
            f'{" ".join(f"dim: {d}" for d in shape)} }} }} }} '
            f'layer {{ name: "pool" type: "Pooling" bottom: "x" {tops} pooling_param {{ '
            f'pool: {method} kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} '
            f'stride_w: {s[1]} pad_h: {p[0]} pad_w: {p[1]} }} }}')
    return decaffe.Net(text, decaffe.TEST)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p", [((2, 3), (5, 4), (0, 0)), ((3, 2), (4, 7), (1, 1)),
                                   ((2, 2), (9, 3), (1, 0)), ((1, 3), (3, 5), (0, 1))])
def test_stride_beyond_kernel_matches_caffe(method, k, s, p):
    if p[0] >= k[0] or p[1] >= k[1]:
        pytest.skip("Caffe requires pad < kernel")
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 11)).astype(np.float32)
    want, want_mask = _caffe_pool(x, k, s, p, method)
    net = _net(x.shape, k, s, p, method, method == "MAX")
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-6, atol=1e-6)
    if method == "MAX":
        np.testing.assert_array_equal(net.blobs["m"].data, want_mask)


def test_huge_stride_allocates_nothing_for_the_gaps():
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)
    big = 2**30
    net = _net(x.shape, (3, 3), (big, big), (0, 0), "MAX", True)
    net.blobs["x"].data[...] = x
    net.forward()  # padding to the stride would need 2^60 floats
    want, mask = _caffe_pool(x, (3, 3), (big, big), (0, 0), "MAX")
    assert net.blobs["y"].shape == want.shape == (1, 2, 2, 2)
    np.testing.assert_allclose(net.blobs["y"].data, want)
    np.testing.assert_array_equal(net.blobs["m"].data, mask)
    assert math.isfinite(float(net.blobs["y"].data[0, 0, 0, 0]))

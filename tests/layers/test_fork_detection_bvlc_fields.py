"""Fork fields on BVLC layers: Pooling's ceil_mode (BVLC PR #3057, soeaver's caffe-priv,
DenseNet-Caffe; false rounds the output size down, like BVLC master's round_mode: FLOOR) and
Dropout's scale_train (the Faster R-CNN forks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import decaffe


def _pool(x: np.ndarray, body: str) -> np.ndarray:
    dims = " ".join(f"dim: {d}" for d in x.shape)
    text = (f'layer {{ name: "x" type: "Input" top: "x" '
            f'input_param {{ shape {{ {dims} }} }} }}\n'
            f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" '
            f'pooling_param {{ {body} }} }}')
    net = decaffe.Net(text, decaffe.TEST)
    net.blobs["x"].data[...] = x
    net.forward()
    return net.blobs["y"].data.copy()


def _expected_max(x, k, s, ceil):
    h = x.shape[2]
    rnd = math.ceil if ceil else math.floor
    out = rnd((h - k) / s) + 1
    y = np.empty((*x.shape[:2], out, out), x.dtype)
    for i in range(out):
        for j in range(out):
            y[:, :, i, j] = x[:, :, i * s:min(i * s + k, h), j * s:min(j * s + k, h)].max((2, 3))
    return y


@pytest.mark.parametrize("size,k,s", [(6, 3, 2), (7, 2, 2), (9, 3, 3), (10, 4, 3)])
@pytest.mark.parametrize("ceil_mode", [True, False])
def test_ceil_mode_picks_the_rounding(size, k, s, ceil_mode):
    x = np.random.default_rng(size * 10 + k).standard_normal((2, 3, size, size))
    y = _pool(x, f"pool: MAX kernel_size: {k} stride: {s} "
                 f"ceil_mode: {'true' if ceil_mode else 'false'}")
    np.testing.assert_allclose(y, _expected_max(x, k, s, ceil_mode), rtol=1e-6)


def test_ceil_mode_false_matches_round_mode_floor():
    x = np.random.default_rng(3).standard_normal((1, 2, 12, 12))
    a = _pool(x, "pool: AVE kernel_size: 3 stride: 2 pad: 1 ceil_mode: false")
    b = _pool(x, "pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR")
    c = _pool(x, "pool: AVE kernel_size: 3 stride: 2 pad: 1")
    assert a.shape == b.shape == (1, 2, 6, 6)
    assert c.shape == (1, 2, 7, 7)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------
# Dropout's scale_train (caffe-fast-rcnn, caffe-rfcn; pva-faster-rcnn's nets use it)
# ------------------------------------------------------------------------------------------
def _dropout_net(phase, scale_train, shape=(4, 50)):
    text = ("force_backward: true\n"
            f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ '
            f'dim: {shape[0]} dim: {shape[1]} }} }} }}\n'
            'layer { name: "d" type: "Dropout" bottom: "x" top: "y" '
            f'dropout_param {{ dropout_ratio: 0.3 scale_train: {scale_train} }} }}')
    return decaffe.Net(text, phase)


def test_dropout_scale_train_false_keeps_train_values_unscaled():
    x = np.random.default_rng(0).uniform(1, 2, (4, 50)).astype(np.float32)
    net = _dropout_net(decaffe.TRAIN, "false")
    net.blobs["x"].data[...] = x
    net.forward()
    y = net.blobs["y"].data
    kept = y != 0
    assert 0.5 < kept.mean() < 0.9
    np.testing.assert_array_equal(y[kept], x[kept])
    d = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    net.blobs["y"].diff[...] = d
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, np.where(kept, d, 0))


def test_dropout_scale_train_false_scales_at_test():
    x = np.random.default_rng(2).standard_normal((4, 50)).astype(np.float32)
    net = _dropout_net(decaffe.TEST, "false")
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, x * np.float32(0.7), rtol=1e-6)
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, np.full(x.shape, 0.7), rtol=1e-6)


def test_dropout_scale_train_true_is_bvlc():
    x = np.random.default_rng(3).uniform(1, 2, (4, 50)).astype(np.float32)
    net = _dropout_net(decaffe.TRAIN, "true")
    net.blobs["x"].data[...] = x
    net.forward()
    y = net.blobs["y"].data
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(0.7), rtol=1e-6)

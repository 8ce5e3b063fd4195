"""PRE_FIXED normalization: the R-FCN forks' OHEM losses divide by pre_fixed_normalizer;
Caffe's SoftmaxWithLoss, SigmoidCrossEntropyLoss and InfogainLoss (BVLC's and caffe-rfcn's)
abort on the mode. decaffe refuses it there, naming the layer and field, except with
pre_fixed_normalizer 1, where it is NONE (how R-FCN's binary NONE reads, docs/compat.md)."""

import numpy as np
import pytest
from netbuild import build, layer

from decaffe.errors import DecaffeError

INPUTS = {"x": (4, 3), "label": (4,)}


def _net(type_: str, normalizer: float | None, extra: str = ""):
    fixed = "" if normalizer is None else f" pre_fixed_normalizer: {normalizer:g}"
    text = layer("loss", type_, ["x", "label"], ["loss"],
                 f"loss_param {{ normalization: PRE_FIXED{fixed} }} {extra}")
    return build(text, INPUTS)


@pytest.mark.parametrize("type_, extra", [
    ("SoftmaxWithLoss", ""),
    ("SigmoidCrossEntropyLoss", ""),
    ("InfogainLoss", ""),
])
def test_bvlc_losses_refuse_pre_fixed_with_a_normalizer(type_, extra):
    with pytest.raises(DecaffeError) as e:
        _net(type_, 128, extra)
    msg = str(e.value)
    assert "loss" in msg and "PRE_FIXED" in msg and "normalization" in msg


def test_pre_fixed_of_one_is_none():
    inputs = {"x": np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32),
              "label": np.array([0, 1, 2, 1], np.float32)}
    losses = []
    for mode in ("PRE_FIXED", "NONE"):
        net = build(layer("loss", "SoftmaxWithLoss", ["x", "label"], ["loss"],
                          f"loss_param {{ normalization: {mode} }}"), INPUTS)
        for k, v in inputs.items():
            net.blobs[k].data[...] = v
        losses.append(float(net.forward()["loss"]))
    assert losses[0] == losses[1]


def test_ohem_loss_divides_by_the_normalizer():
    inputs = {"x": np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32),
              "label": np.array([2, 0, 1, 1], np.float32)}
    losses = {}
    for normalizer in (1, 8):
        net = _net("SoftmaxWithLossOHEM", normalizer)
        for k, v in inputs.items():
            net.blobs[k].data[...] = v
        losses[normalizer] = float(net.forward()["loss"])
    np.testing.assert_allclose(losses[8] * 8, losses[1], rtol=1e-6)

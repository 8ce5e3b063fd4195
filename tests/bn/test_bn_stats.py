"""decaffe.bn.recompute (Caffe's statistics with λ = 1: exact averages over batches) against
the goldens and numpy, and decaffe.bn.inspect's warnings."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bn_helpers import make_net
from conftest import GOLDEN

import decaffe
from decaffe.bn import inspect, recompute
from decaffe.bn.stats import format_table
from decaffe.errors import DecaffeError


def _golden(name):
    z = np.load(os.path.join(GOLDEN, name + ".npz"))
    passes = sorted({k.split("/")[1] for k in z.files if k.startswith("input/")}, key=int)
    return z, passes


@pytest.mark.parametrize("name", ["batchnorm_train_4d", "batchnorm_train_2d",
                                  "batchnorm_train_3d"])
def test_recompute_gives_the_sums_caffes_passes_give_with_lambda_1(name):
    """Caffe ran these passes with λ < 1: S_t = λ·S_{t−1} + s_t. The per-pass contributions
    s_t (batch mean, unbiased batch variance, 1) are S_t − λ·S_{t−1}; with λ = 1 Caffe would
    have stored their sums, which is what recompute must produce from the same inputs."""
    z, passes = _golden(name)
    net = decaffe.Net(os.path.join(GOLDEN, name + ".prototxt"), decaffe.TRAIN)
    lam = np.float64(net.layer_dict["bn"].layer.fraction)
    prev = [z[f"param/bn/{i}"].astype(np.float64) for i in range(3)]
    want = [0.0, 0.0, 0.0]
    for t in passes:
        cur = [z[f"param_after/{t}/bn/{i}"].astype(np.float64) for i in range(3)]
        want = [w + c - lam * p for w, c, p in zip(want, cur, prev)]
        prev = cur
    for b in net.params["bn"]:
        b.data[...] = 7.0  # recompute starts from zero whatever was there
    recompute(net, len(passes), [{"x": z[f"input/{t}/x"]} for t in passes])
    for i in range(3):
        np.testing.assert_allclose(net.params["bn"][i].data, want[i], rtol=1e-5, atol=1e-6)
    assert float(net.params["bn"][2].data[0]) == len(passes)


def _chain_net(phase):
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 '
            'dim: 5 dim: 5 } } }\n'
            'layer { name: "bn1" type: "BatchNorm" bottom: "x" top: "y" '
            '  batch_norm_param { eps: 0.001 } }\n'
            'layer { name: "sc" type: "Scale" bottom: "y" top: "y" '
            '  scale_param { bias_term: true } }\n'
            'layer { name: "bn2" type: "BatchNorm" bottom: "y" top: "z" }\n')
    return decaffe.Net(text, phase)


def _numpy_recompute(batches, gamma, beta):
    """Caffe's statistics with λ = 1 for bn1 -> Scale -> bn2, every BN on batch statistics."""
    sums = {"bn1": [0, 0], "bn2": [0, 0]}

    def stats(v):
        m = v.shape[0] * v.shape[2] * v.shape[3]
        mean = v.mean(axis=(0, 2, 3))
        var = v.var(axis=(0, 2, 3))
        return mean, var, var * m / (m - 1)

    for x in batches:
        x = x.astype(np.float64)
        mean, var, unbiased = stats(x)
        sums["bn1"][0] += mean
        sums["bn1"][1] += unbiased
        y = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-3)
        y = y * gamma[None, :, None, None] + beta[None, :, None, None]
        mean, _, unbiased = stats(y)
        sums["bn2"][0] += mean
        sums["bn2"][1] += unbiased
    return sums


@pytest.mark.parametrize("phase", [decaffe.TRAIN, decaffe.TEST])
def test_recompute_chain_matches_numpy_and_restores_the_layers(phase):
    net = _chain_net(phase)
    rng = np.random.default_rng(3)
    gamma, beta = rng.uniform(0.5, 2, 3), rng.normal(0, 1, 3)
    net.params["sc"][0].data[...] = gamma
    net.params["sc"][1].data[...] = beta
    batches = [rng.normal(rng.normal(0, 2, (1, 3, 1, 1)), rng.uniform(0.5, 3, (1, 3, 1, 1)),
                          (4, 3, 5, 5)).astype(np.float32) for _ in range(5)]
    names = recompute(net, 5, lambda i: {"x": batches[i]})
    assert names == ["bn1", "bn2"]
    want = _numpy_recompute(batches, gamma.astype(np.float32), beta.astype(np.float32))
    for name in ("bn1", "bn2"):
        np.testing.assert_allclose(net.params[name][0].data, want[name][0], rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(net.params[name][1].data, want[name][1], rtol=1e-4,
                                   atol=1e-5)
        assert float(net.params[name][2].data[0]) == 5.0
        layer = net.layer_dict[name].layer
        assert layer.fraction == pytest.approx(0.999)  # put back as the prototxt has it
        assert layer.use_global_stats == (phase == decaffe.TEST)


def test_after_recompute_a_test_net_normalises_with_the_averages():
    net = _chain_net(decaffe.TEST)
    rng = np.random.default_rng(5)
    batches = [rng.normal(1.5, 2.0, (4, 3, 5, 5)).astype(np.float32) for _ in range(3)]
    recompute(net, 3, [{"x": b} for b in batches])
    x = rng.normal(0, 1, (4, 3, 5, 5)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    mean = np.asarray(net.params["bn1"][0].data, np.float64) / 3
    var = np.asarray(net.params["bn1"][1].data, np.float64) / 3
    y = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-3)
    # the Scale has its fillers' values (γ 1, β 0), so y is the BN's output
    np.testing.assert_allclose(net.blobs["y"].data, y, rtol=1e-4, atol=1e-5)
    # and nothing changed the statistics during that TEST forward
    assert float(net.params["bn1"][2].data[0]) == 3.0


def test_recompute_errors():
    net = _chain_net(decaffe.TRAIN)
    with pytest.raises(DecaffeError, match="iterations: must be at least 1"):
        recompute(net, 0, [])
    with pytest.raises(DecaffeError, match=r"input blobs \['x'\]: give feed="):
        recompute(net, 1)
    with pytest.raises(DecaffeError, match="feed ran out after 1 batches; 2 were asked for"):
        recompute(net, 2, [{"x": np.zeros((4, 3, 5, 5), np.float32)}])
    with pytest.raises(DecaffeError, match="feed gives 'y', which is not an input"):
        recompute(net, 1, [{"y": np.zeros((4, 3, 5, 5), np.float32)}])
    plain = decaffe.Net('layer { name: "x" type: "Input" top: "x" input_param { shape { '
                        'dim: 1 } } }', decaffe.TRAIN)
    with pytest.raises(DecaffeError, match="no BatchNorm layer"):
        recompute(plain, 1, [])
    # an interrupted recompute still puts the layers back
    layer = net.layer_dict["bn1"].layer
    assert layer.fraction == pytest.approx(0.999) and not layer.use_global_stats


def test_recompute_reshapes_inputs_to_the_fed_batch():
    net = _chain_net(decaffe.TRAIN)
    x = np.random.default_rng(0).normal(0, 1, (6, 3, 2, 2)).astype(np.float32)
    recompute(net, 1, [{"x": x}])
    assert net.blobs["x"].shape == (6, 3, 2, 2)
    np.testing.assert_allclose(net.params["bn1"][0].data, x.mean(axis=(0, 2, 3)), rtol=1e-5,
                               atol=1e-6)


# ----------------------------------------------------------------------------------------------
# inspect
# ----------------------------------------------------------------------------------------------
INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 ' \
        'dim: 4 dim: 4 } } }\n'


def _block(i, bn_extra="", with_scale=True, bottom="data"):
    text = (f'layer {{ name: "c{i}" type: "Convolution" bottom: "{bottom}" top: "c{i}" '
            f'convolution_param {{ num_output: 3 kernel_size: 1 }} }}\n'
            f'layer {{ name: "bn{i}" type: "BatchNorm" bottom: "c{i}" top: "c{i}" {bn_extra} }}\n')
    if with_scale:
        text += (f'layer {{ name: "s{i}" type: "Scale" bottom: "c{i}" top: "c{i}" '
                 f'scale_param {{ bias_term: true }} }}\n')
    return text


def test_inspect_clean_net_has_no_warnings_and_right_ranges():
    net = make_net(INPUT + _block(1), seed=2, factor=4.0)
    (info,) = inspect(net)
    mean = np.asarray(net.params["bn1"][0].data, np.float64) / 4
    var = np.asarray(net.params["bn1"][1].data, np.float64) / 4
    assert info.layer == "bn1" and info.channels == 3 and info.factor == 4.0
    assert info.mean_min == pytest.approx(mean.min()) and info.mean_max == pytest.approx(
        mean.max())
    assert info.var_min == pytest.approx(var.min()) and info.var_max == pytest.approx(var.max())
    assert info.use_global_stats and info.eps == pytest.approx(1e-5)
    assert info.warnings == []


def test_inspect_reports_each_problem():
    text = (INPUT + _block(1) + _block(2, bottom="c1") + _block(3, bottom="c2")
            + _block(4, 'batch_norm_param { use_global_stats: false }', bottom="c3")
            + _block(5, with_scale=False, bottom="c4") + _block(6, bottom="c5"))
    net = make_net(text, seed=1)
    net.params["bn1"][2].data[...] = 0  # factor 0
    v = np.array(net.params["bn2"][1].data)
    v[0], v[1] = -1.0, 0.0  # a negative and a zero variance
    net.params["bn2"][1].data[...] = v
    infos = {i.layer: i for i in inspect(net)}
    assert len(infos["bn1"].warnings) == 1 and "scale factor is 0" in infos["bn1"].warnings[0]
    assert len(infos["bn2"].warnings) == 1
    assert "2 of 3 channels have variance <= 0 (1 negative" in infos["bn2"].warnings[0]
    assert infos["bn3"].warnings == []
    assert len(infos["bn4"].warnings) == 1
    assert "use_global_stats is false in the TEST phase" in infos["bn4"].warnings[0]
    assert not infos["bn4"].use_global_stats
    assert len(infos["bn5"].warnings) == 1
    assert "no Scale layer follows (its output is read by Convolution 'c6')" in \
        infos["bn5"].warnings[0]
    table = format_table(list(infos.values()))
    assert table.splitlines()[2].startswith("bn1 ")
    assert "  WARNING bn1: scale factor is 0" in table
    assert infos["bn6"].warnings == []
    assert table.endswith("6 BatchNorm layer(s), 4 warning(s)")


LOSS = ('layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "c1" top: "ip" '
        'inner_product_param { num_output: 3 } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n')


def test_inspect_statistics_without_param_entries_are_frozen_not_warned():
    """Caffe 1.0 gives the statistics lr_mult 0 whatever the net, so nothing to warn about;
    the built layer carries the three specs."""
    frozen = "param { lr_mult: 0 decay_mult: 0 } " * 3
    for text in (INPUT + _block(1), INPUT + _block(1) + LOSS, INPUT + _block(1, frozen) + LOSS):
        net = make_net(text)
        (info,) = inspect(net)
        assert info.warnings == []
        bn = net._layers[net._layer_names.index("bn1")]
        assert [p.lr_mult for p in bn.lp.param] == [0, 0, 0]

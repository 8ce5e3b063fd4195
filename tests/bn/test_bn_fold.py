"""decaffe.bn.fold: BatchNorm (+ Scale/Bias) folded into Convolution, Deconvolution and
InnerProduct, checked against numpy, and the layers it must keep, with their reasons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bn_helpers import bn_stats, make_net, types

import decaffe
from decaffe.bn import compare, fold, fold_result
from decaffe.bn.fold import BlobGraph, source_param, unsplit

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 ' \
        'dim: 6 dim: 6 } } }\n'


def _layer(name, type_, bottoms, tops, body=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'


def conv(name, bottom, top, n=4, bias=True, extra=""):
    return _layer(name, "Convolution", [bottom], [top],
                  f"convolution_param {{ num_output: {n} kernel_size: 3 pad: 1 "
                  f"bias_term: {'true' if bias else 'false'} {extra} }}")


def bn(name, bottom, top, extra=""):
    return _layer(name, "BatchNorm", [bottom], [top], extra)


def scale(name, bottom, top, bias=True):
    return _layer(name, "Scale", [bottom], [top],
                  f"scale_param {{ bias_term: {'true' if bias else 'false'} }}")


def feed(net, seed=1):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(net.blobs[k].shape).astype(np.float32) for k in net.inputs}


def outputs(net, inputs):
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    return {k: np.array(net.blobs[k].data, np.float64) for k in net.outputs}


def assert_same_outputs(a, b, rtol=1e-5):
    x = feed(a)
    oa, ob = outputs(a, x), outputs(b, x)
    assert sorted(oa) == sorted(ob)
    for k in oa:
        scale_ = max(np.abs(oa[k]).max(), 1e-12)
        assert np.abs(oa[k] - ob[k]).max() <= rtol * scale_, k


def affine_numpy(net, bn_name, scale_name=None, bias_name=None, eps=1e-5):
    """(a, c) of the BN(+Scale)(+Bias) chain, from the blobs with numpy."""
    mean, var = bn_stats(net, bn_name)
    a = 1.0 / np.sqrt(var + eps)
    c = -mean * a
    if scale_name:
        blobs = net.params[scale_name]
        g = np.asarray(blobs[0].data, np.float64)
        a, c = a * g, c * g
        if len(blobs) > 1:
            c = c + np.asarray(blobs[1].data, np.float64)
    if bias_name:
        c = c + np.asarray(net.params[bias_name][0].data, np.float64)
    return a, c


# ----------------------------------------------------------------------------------------------
# What gets folded, and the numbers
# ----------------------------------------------------------------------------------------------
def test_conv_bn_scale_in_place_resnet_style():
    text = INPUT + conv("c1", "data", "c1", bias=False) + bn("bn1", "c1", "c1") + \
        scale("sc1", "c1", "c1") + _layer("r1", "ReLU", ["c1"], ["c1"])
    net = make_net(text)
    folded, res = fold(net, report=True)
    assert types(folded) == ["Input", "Convolution", "ReLU"]
    assert [(c.target, c.layers, c.created_bias) for c in res.folded] == \
        [("c1", ["bn1", "sc1"], True)]
    assert res.kept == []
    a, c = affine_numpy(net, "bn1", "sc1")
    w = np.asarray(net.params["c1"][0].data, np.float64)
    np.testing.assert_allclose(folded.params["c1"][0].data, w * a[:, None, None, None],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(folded.params["c1"][1].data, c, rtol=1e-6, atol=1e-7)
    assert folded.layer_dict["c1"].layer.bias_term
    assert_same_outputs(net, folded)


def test_separate_names_output_matches_numpy_and_top_is_renamed():
    text = INPUT + conv("c1", "data", "conv") + bn("bn1", "conv", "norm") + \
        scale("sc1", "norm", "scaled") + _layer("r1", "ReLU", ["scaled"], ["relu"])
    net = make_net(text, seed=3)
    folded = fold(net)
    assert types(folded) == ["Input", "Convolution", "ReLU"]
    assert folded.top_names["c1"] == ["scaled"]
    assert "conv" not in folded.blobs and "norm" not in folded.blobs
    x = feed(net)
    outputs(net, x)
    raw = np.asarray(net.blobs["conv"].data, np.float64)
    a, c = affine_numpy(net, "bn1", "sc1")
    want = raw * a[None, :, None, None] + c[None, :, None, None]
    outputs(folded, x)
    np.testing.assert_allclose(folded.blobs["scaled"].data, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(folded.blobs["relu"].data, np.maximum(want, 0), rtol=1e-5,
                               atol=1e-5)


def test_mixed_in_place_chain():
    # BN in place on the conv's top, Scale writing a new blob
    text = INPUT + conv("c1", "data", "c") + bn("bn1", "c", "c") + scale("sc1", "c", "s") + \
        _layer("r1", "ReLU", ["s"], ["s"])
    net = make_net(text, seed=4)
    folded = fold(net)
    assert types(folded) == ["Input", "Convolution", "ReLU"]
    assert folded.top_names["c1"] == ["s"]
    assert_same_outputs(net, folded)


def test_existing_bias_bn_then_bias_layer():
    text = INPUT + conv("c1", "data", "c1", bias=True) + bn("bn1", "c1", "c1") + \
        _layer("b1", "Bias", ["c1"], ["c1"])
    net = make_net(text, seed=5)
    folded, res = fold(net, report=True)
    assert types(folded) == ["Input", "Convolution"]
    assert res.folded[0].layers == ["bn1", "b1"] and not res.folded[0].created_bias
    a, c = affine_numpy(net, "bn1", bias_name="b1")
    b = np.asarray(net.params["c1"][1].data, np.float64)
    np.testing.assert_allclose(folded.params["c1"][1].data, b * a + c, rtol=1e-6, atol=1e-6)
    assert_same_outputs(net, folded)


def test_bn_alone_and_scale_without_bias_then_bias():
    text = INPUT + conv("c1", "data", "c1") + bn("bn1", "c1", "c1") + \
        conv("c2", "c1", "c2", n=5, bias=False) + bn("bn2", "c2", "c2") + \
        scale("sc2", "c2", "c2", bias=False) + _layer("b2", "Bias", ["c2"], ["c2"])
    net = make_net(text, seed=6)
    folded, res = fold(net, report=True)
    assert types(folded) == ["Input", "Convolution", "Convolution"]
    assert [c.layers for c in res.folded] == [["bn1"], ["bn2", "sc2", "b2"]]
    assert_same_outputs(net, folded)


def test_scale_factor_zero_uses_zero_statistics():
    text = INPUT + conv("c1", "data", "c1") + bn("bn1", "c1", "c1") + scale("sc1", "c1", "c1")
    net = make_net(text, seed=7, factor=0.0)
    folded = fold(net)
    g = np.asarray(net.params["sc1"][0].data, np.float64)
    beta = np.asarray(net.params["sc1"][1].data, np.float64)
    w = np.asarray(net.params["c1"][0].data, np.float64)
    b = np.asarray(net.params["c1"][1].data, np.float64)
    a = g / np.sqrt(1e-5)  # mean 0, variance 0: only eps is left
    np.testing.assert_allclose(folded.params["c1"][0].data, w * a[:, None, None, None],
                               rtol=1e-6)
    np.testing.assert_allclose(folded.params["c1"][1].data, b * a + beta, rtol=1e-6)
    assert_same_outputs(net, folded)


def test_eps_inside_the_square_root():
    text = INPUT + conv("c1", "data", "c1") + bn("bn1", "c1", "c1",
                                                 "batch_norm_param { eps: 0.5 }")
    net = make_net(text, seed=8)
    folded = fold(net)
    mean, var = bn_stats(net, "bn1")
    a = 1.0 / np.sqrt(var + 0.5)
    b = np.asarray(net.params["c1"][1].data, np.float64)
    np.testing.assert_allclose(folded.params["c1"][1].data, (b - mean) * a, rtol=1e-6,
                               atol=1e-7)
    assert_same_outputs(net, folded)


@pytest.mark.parametrize("transpose", [False, True])
def test_inner_product(transpose):
    text = INPUT + _layer("ip", "InnerProduct", ["data"], ["ip"],
                          f"inner_product_param {{ num_output: 7 transpose: "
                          f"{'true' if transpose else 'false'} }}") + \
        bn("bn", "ip", "ip") + scale("sc", "ip", "ip")
    net = make_net(text, seed=9)
    folded = fold(net)
    assert types(folded) == ["Input", "InnerProduct"]
    a, c = affine_numpy(net, "bn", "sc")
    w = np.asarray(net.params["ip"][0].data, np.float64)
    want = w * (a[None, :] if transpose else a[:, None])
    np.testing.assert_allclose(folded.params["ip"][0].data, want, rtol=1e-6, atol=1e-7)
    assert_same_outputs(net, folded)


@pytest.mark.parametrize("group", [1, 2])
def test_deconvolution_out_channels_on_axis_1(group):
    text = INPUT.replace("dim: 3 ", "dim: 4 ") + _layer(
        "up", "Deconvolution", ["data"], ["up"],
        f"convolution_param {{ num_output: 6 kernel_size: 2 stride: 2 group: {group} }}") + \
        bn("bn", "up", "up") + scale("sc", "up", "up")
    net = make_net(text, seed=10)
    folded = fold(net)
    assert types(folded) == ["Input", "Deconvolution"]
    a, _ = affine_numpy(net, "bn", "sc")
    w = np.asarray(net.params["up"][0].data, np.float64)  # (C_in, C_out/group, kh, kw)
    cin, cog = w.shape[:2]
    want = w.copy()
    for o in range(6):
        g, j = divmod(o, cog)
        rows = slice(g * cin // group, (g + 1) * cin // group)
        want[rows, j] *= a[o]
    np.testing.assert_allclose(folded.params["up"][0].data, want, rtol=1e-6, atol=1e-7)
    assert_same_outputs(net, folded)


def test_depthwise_convolution():
    text = INPUT + conv("dw", "data", "dw", n=3, bias=False, extra="group: 3") + \
        bn("bn", "dw", "dw") + scale("sc", "dw", "dw")
    net = make_net(text, seed=11)
    folded = fold(net)
    assert types(folded) == ["Input", "Convolution"]
    assert_same_outputs(net, folded)


def test_bn_output_read_twice_folds_bn_but_not_a_scale():
    text = INPUT + conv("c1", "data", "c") + bn("bn1", "c", "n") + scale("sc", "n", "s") + \
        _layer("r", "ReLU", ["n"], ["r"])
    net = make_net(text, seed=12)
    folded, res = fold(net, report=True)
    assert types(folded) == ["Input", "Convolution", "Split", "Scale", "ReLU"]
    assert res.folded[0].layers == ["bn1"] and res.folded[0].top == "n"
    assert_same_outputs(net, folded)


def test_scale_over_several_axes_is_not_folded():
    text = INPUT + conv("c1", "data", "c1") + bn("bn1", "c1", "c1") + \
        _layer("sc", "Scale", ["c1"], ["c1"], "scale_param { num_axes: -1 }")
    net = make_net(text, seed=13)
    folded, res = fold(net, report=True)
    assert types(folded) == ["Input", "Convolution", "Scale"]
    assert res.folded[0].layers == ["bn1"]
    assert_same_outputs(net, folded)


def test_resnet_branches_and_fold_leaves_original_unchanged():
    text = INPUT + conv("a", "data", "a", bias=False) + bn("bna", "a", "a") + \
        scale("sca", "a", "a") + conv("b", "data", "b", bias=False) + bn("bnb", "b", "b") + \
        scale("scb", "b", "b") + _layer("sum", "Eltwise", ["a", "b"], ["sum"]) + \
        _layer("r", "ReLU", ["sum"], ["sum"])
    net = make_net(text, seed=14)
    before = {k: [np.array(b.data) for b in v] for k, v in net.params.items()}
    folded = fold(net)
    assert types(folded) == ["Input", "Split", "Convolution", "Convolution", "Eltwise", "ReLU"]
    for k, v in net.params.items():
        for b, old in zip(v, before[k]):
            np.testing.assert_array_equal(b.data, old)
    assert_same_outputs(net, folded)


# ----------------------------------------------------------------------------------------------
# What must be kept, and why
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("producer,words", [
    (_layer("p", "Pooling", ["data"], ["x"], "pooling_param { pool: MAX kernel_size: 2 }"),
     "Pooling layer 'p'"),
    (_layer("p", "Eltwise", ["data", "data"], ["x"]), "Eltwise layer 'p'"),
    (_layer("p", "Concat", ["data", "data"], ["x"]), "Concat layer 'p'"),
])
def test_kept_after_layers_that_cannot_absorb(producer, words):
    text = INPUT + producer + bn("bn", "x", "x") + scale("sc", "x", "x")
    net = make_net(text, seed=15)
    folded, res = fold(net, report=True)
    assert res.folded == []
    assert [k.layer for k in res.kept] == ["bn"]
    assert words in res.kept[0].reason and "absorb" in res.kept[0].reason
    assert "BatchNorm" in types(folded) and "Scale" in types(folded)
    assert_same_outputs(net, folded)


def test_kept_on_a_net_input():
    net = make_net(INPUT + bn("bn", "data", "y"))
    res = fold_result(net)
    assert res.kept[0].layer == "bn" and "Input layer 'data'" in res.kept[0].reason


def test_kept_when_the_conv_output_is_also_read_elsewhere():
    # with split insertion the conv's top feeds a Split; the check is on the unsplit net
    text = INPUT + conv("c", "data", "c") + bn("bn", "c", "n") + \
        _layer("sum", "Eltwise", ["c", "n"], ["sum"])
    net = make_net(text, seed=16)
    assert "Split" in types(net)
    folded, res = fold(net, report=True)
    assert res.folded == []
    assert "also read by 'sum'" in res.kept[0].reason
    assert types(folded) == types(net)
    assert_same_outputs(net, folded)


def test_kept_when_using_batch_statistics():
    text = INPUT + conv("c", "data", "c") + \
        bn("bn", "c", "c", "batch_norm_param { use_global_stats: false }")
    net = make_net(text, seed=17)
    res = fold_result(net)
    assert res.folded == [] and "use_global_stats: false" in res.kept[0].reason
    # a TRAIN-phase net uses batch statistics by default
    train = decaffe.Net(INPUT + conv("c", "data", "c") + bn("bn", "c", "c"), decaffe.TRAIN)
    assert "batch statistics" in fold_result(train).kept[0].reason


def test_kept_when_the_conv_shares_its_weights():
    shared = 'param { name: "w" } param { name: "b" }'
    text = INPUT + conv("c1", "data", "c1", extra="").replace(
        'type: "Convolution"', f'type: "Convolution" {shared}') + bn("bn", "c1", "c1") + \
        conv("c2", "data", "c2").replace('type: "Convolution"',
                                         f'type: "Convolution" {shared}')
    net = make_net(text, seed=18)
    res = fold_result(net)
    assert res.folded == []
    assert "shares its parameter 'w' with 'c2'" in res.kept[0].reason


def test_kept_when_inner_product_output_is_not_on_axis_1():
    text = INPUT + _layer("ip", "InnerProduct", ["data"], ["ip"],
                          "inner_product_param { num_output: 3 axis: 2 }") + bn("bn", "ip", "ip")
    net = make_net(text, seed=19)
    res = fold_result(net)
    assert res.folded == [] and "axis 2" in res.kept[0].reason


def test_summary_names_folded_and_kept():
    text = INPUT + conv("c", "data", "c") + bn("bn1", "c", "c") + scale("sc", "c", "c") + \
        _layer("p", "Pooling", ["c"], ["p"], "pooling_param { pool: AVE kernel_size: 2 }") + \
        bn("bn2", "p", "p")
    res = fold_result(make_net(text))
    text = res.summary()
    assert "folded   bn1 + sc into Convolution 'c'" in text
    assert "kept     bn2: its input 'p' comes from Pooling layer 'p'" in text
    assert text.endswith("1 BatchNorm layer(s) folded, 1 kept")


# ----------------------------------------------------------------------------------------------
# The graph helpers, files, precision
# ----------------------------------------------------------------------------------------------
def test_unsplit_restores_the_readers():
    text = INPUT + conv("c", "data", "c") + _layer("r1", "ReLU", ["c"], ["r1"]) + \
        _layer("r2", "ReLU", ["c"], ["r2"])
    net = make_net(text)
    param = unsplit(net.net_param)
    assert [lp.type for lp in param.layer] == ["Input", "Convolution", "ReLU", "ReLU"]
    assert [list(lp.bottom) for lp in param.layer[2:]] == [["c"], ["c"]]
    g = BlobGraph.of(param)
    assert g.readers_of((1, 0)) == [(2, 0), (3, 0)]
    assert not any(lp.HasField("phase") for lp in source_param(net).layer)


def test_saved_files_load_and_give_the_folded_outputs(tmp_path):
    text = INPUT + conv("c1", "data", "c1", bias=False) + bn("bn1", "c1", "c1") + \
        scale("sc1", "c1", "c1") + _layer("p", "Pooling", ["c1"], ["p"],
                                          "pooling_param { pool: MAX kernel_size: 2 }") + \
        bn("bn2", "p", "p") + _layer("ip", "InnerProduct", ["p"], ["ip"],
                                     "inner_product_param { num_output: 5 }") + \
        bn("bn3", "ip", "ip") + scale("sc3", "ip", "ip")
    net = make_net(text, seed=20)
    folded, res = fold(net, report=True)
    res.save(str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel"))
    again = decaffe.Net(str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel"),
                        decaffe.TEST)
    assert types(again) == ["Input", "Convolution", "Pooling", "BatchNorm", "InnerProduct"]
    x = feed(net)
    a, b = outputs(folded, x), outputs(again, x)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert_same_outputs(net, again)
    written = (tmp_path / "f.prototxt").read_text()
    assert "bias_term: true" in written and "phase:" not in written


def test_float64_net_folds_to_float64():
    text = INPUT + conv("c1", "data", "c1") + bn("bn1", "c1", "c1") + scale("s", "c1", "c1")
    net = decaffe.Net(text, decaffe.TEST, dtype=torch.float64)
    from bn_helpers import randomize

    randomize(net, np.random.default_rng(0))
    folded = fold(net)
    assert folded.params["c1"][0].data.dtype == np.float64
    assert max(compare(net, folded).values()) < 1e-12


def test_compare_reports_all_common_blobs():
    text = INPUT + conv("c1", "data", "c1") + bn("bn1", "c1", "c1") + \
        _layer("r", "ReLU", ["c1"], ["r"])
    net = make_net(text)
    folded = fold(net)
    got = compare(net, folded, blobs="all")
    assert set(got) == {"c1", "r"} and max(got.values()) < 1e-5


def test_errors_name_the_problem():
    from decaffe.errors import DecaffeError
    from decaffe.formats import prototxt

    net = make_net(INPUT + conv("c1", "data", "c1") + bn("bn1", "c1", "c1"))
    other = prototxt.read_net(INPUT + conv("c9", "data", "c9"))
    with pytest.raises(DecaffeError, match="layer 'c1' of the net is not in it"):
        fold_result(net, other)
    longer = prototxt.read_net(INPUT + conv("c1", "data", "c1") + bn("bn1", "c1", "c1") +
                               _layer("r", "ReLU", ["c1"], ["c1"]))
    with pytest.raises(DecaffeError, match=r"its layer 'r' \(ReLU\) is not in the net"):
        fold_result(net, longer)
    relu = make_net(INPUT + conv("c1", "data", "c1") + _layer("r", "ReLU", ["c1"], ["r"]))
    with pytest.raises(DecaffeError, match="the nets have different outputs"):
        compare(net, relu)

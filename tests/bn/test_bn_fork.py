"""`fold_bn` and `bn_stats` on the forks' normalisation layers: yjxiong/Cysu's BN (fixed in
TEST or frozen), SegNet's BN (INFERENCE) and BatchNormKyle, alone or with a Scale after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import decaffe
from decaffe import bn
from decaffe.cli import main

HEAD = """layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""
YJ = 'layer { name: "bn" type: "BN" bottom: "c1" top: "c1" bn_param { %s } }\n'
SEG = ('layer { name: "bn" type: "BN" bottom: "c1" top: "c1" '
       'bn_param { bn_mode: %s scale_filler { type: "constant" value: 1 } } }\n')
KYLE = ('layer { name: "bn" type: "BatchNormKyle" bottom: "c1" top: "c1" '
        'batch_norm_param { use_alpha_beta: true } }\n')
TAIL = """layer { name: "s" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "r" type: "ReLU" bottom: "c1" top: "c1" }
"""


def _net(text, phase=decaffe.TEST, seed=0):
    net = decaffe.Net(text, phase, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.uniform(0.5, 1.5, b.data.shape) * rng.choice([-1, 1], b.data.shape)
    if "bn" in net.params and net.layer_dict["bn"].type == "BN" and len(net.params["bn"]) == 4:
        net.params["bn"][3].data[...] = np.abs(net.params["bn"][3].data)
    if net.layer_dict["bn"].type == "BatchNormKyle":
        net.params["bn"][1].data[...] = np.abs(net.params["bn"][1].data)
        net.params["bn"][2].data[...] = 2.0
    return net


@pytest.mark.parametrize("layer,phase", [(YJ % "", decaffe.TEST),
                                         (YJ % "frozen: true", decaffe.TRAIN),
                                         (SEG % "INFERENCE", decaffe.TEST),
                                         (KYLE, decaffe.TEST)])
@pytest.mark.parametrize("scale", [False, True])
def test_fold_fork_norms(layer, phase, scale):
    net = _net(HEAD + layer + (TAIL if scale else ""), phase)
    folded, result = bn.fold(net, report=True)
    assert [f.layers for f in result.folded] == [["bn", "s"] if scale else ["bn"]]
    assert all(lp.type not in ("BN", "BatchNormKyle", "Scale")
               for lp in folded.net_param.layer)
    diffs = bn.compare(net, folded)
    assert max(diffs.values()) < 1e-10, diffs


@pytest.mark.parametrize("layer,phase,why", [
    (YJ % "", decaffe.TRAIN, "batch statistics"),
    (SEG % "LEARN", decaffe.TEST, "bn_mode LEARN"),
    (KYLE.replace("use_alpha_beta: true", "use_global_stats: false"), decaffe.TEST,
     "use_global_stats: false")])
def test_fork_norms_with_batch_statistics_are_kept(layer, phase, why):
    result = bn.fold_result(_net(HEAD + layer, phase))
    assert not result.folded and result.kept[0].layer == "bn" and why in result.kept[0].reason


def test_bn_stats_show_and_recompute_fork_bn():
    text = HEAD + YJ % "" + TAIL
    net = _net(text)
    info = bn.inspect(net)
    assert [i.layer for i in info] == ["bn"]
    var = net.params["bn"][3].data.reshape(-1)  # blob 3 is the running variance itself
    assert info[0].var_max == pytest.approx(float(var.max()), rel=1e-12)
    assert "bn" in bn.stats.format_table(info)
    rng = np.random.default_rng(1)
    batches = [{"data": rng.standard_normal((2, 3, 6, 6))} for _ in range(3)]
    bn.recompute(net, 3, feed=batches)
    # the exact average of the batch means and (biased) batch variances of c1's output
    w, b = (torch.tensor(p.data) for p in net.params["c1"])
    outs = [torch.nn.functional.conv2d(torch.tensor(x["data"]), w, b).numpy() for x in batches]
    means = [o.mean((0, 2, 3)) for o in outs]
    variances = [o.var((0, 2, 3)) for o in outs]
    np.testing.assert_allclose(net.params["bn"][2].data.reshape(-1), np.mean(means, 0),
                               rtol=1e-10)
    np.testing.assert_allclose(net.params["bn"][3].data.reshape(-1), np.mean(variances, 0),
                               rtol=1e-10)
    assert not net.layer_dict["bn"].layer.batch_stats  # back to its TEST form


def test_bn_stats_segnet_note_and_fold_bn_command(tmp_path, capsys):
    net = _net(HEAD + SEG % "INFERENCE")
    assert "INFERENCE" in bn.inspect(net)[0].warnings[0]
    model, weights = tmp_path / "m.prototxt", tmp_path / "w.caffemodel"
    model.write_text(HEAD + YJ % "" + TAIL)
    _net(HEAD + YJ % "" + TAIL).save(str(weights))
    rc = main(["fold_bn", "-model", str(model), "-weights", str(weights), "-out_model",
               str(tmp_path / "f.prototxt"), "-out_weights", str(tmp_path / "f.caffemodel")])
    assert rc == 0
    assert "folded   bn + s into Convolution 'c1'" in capsys.readouterr().out

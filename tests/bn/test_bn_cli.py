"""The `decaffe fold_bn` and `decaffe bn_stats show|recompute` commands, including the
end-to-end recompute: a trained BN net whose statistics are zeroed loses its test
accuracy, and recomputing them over training batches gives it back."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bn_helpers import make_net, randomize, types

import decaffe
from decaffe.cli import main
from decaffe.formats import load_weights

DEPLOY = """name: "small"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        convolution_param { num_output: 4 kernel_size: 3 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "s1" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "pool" type: "Pooling" bottom: "c1" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "bn2" type: "BatchNorm" bottom: "pool" top: "pool" }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 5 } }
layer { name: "bn3" type: "BatchNorm" bottom: "ip" top: "ip" }
layer { name: "s3" type: "Scale" bottom: "ip" top: "ip" scale_param { bias_term: true } }
"""


@pytest.fixture
def deploy(tmp_path):
    model = tmp_path / "deploy.prototxt"
    model.write_text(DEPLOY)
    net = make_net(DEPLOY, seed=3)
    weights = tmp_path / "in.caffemodel"
    net.save(str(weights))
    return str(model), str(weights), net


def test_fold_bn_command(tmp_path, deploy, capsys):
    model, weights, net = deploy
    out_m, out_w = str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel")
    rc = main(["fold_bn", "-model", model, "-weights", weights, "-out_model", out_m,
               "-out_weights", out_w, "-iterations", "3"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "folded   bn1 + s1 into Convolution 'c1' (bias created)" in text
    assert "folded   bn3 + s3 into InnerProduct 'ip'" in text
    assert "kept     bn2: its input 'pool' comes from Pooling layer 'pool'" in text
    assert "2 BatchNorm layer(s) folded, 1 kept" in text
    assert "output ip: largest relative difference" in text
    assert "largest relative difference over" in text
    assert "ms before" in text and "ms after" in text and "median of 3" in text
    folded = decaffe.Net(out_m, out_w, decaffe.TEST)
    assert types(folded) == ["Input", "Convolution", "ReLU", "Pooling", "BatchNorm",
                             "InnerProduct"]
    assert [name for name, blobs in load_weights(out_w) if blobs] == ["c1", "bn2", "ip"]
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    a = net.forward(data=x)["ip"].copy()
    b = folded.forward(data=x)["ip"]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_fold_bn_command_errors(tmp_path, deploy, capsys):
    model, weights, _ = deploy
    out_m, out_w = str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel")
    assert main(["fold_bn", "-model", model, "-out_model", out_m, "-out_weights", out_w]) == 1
    assert "decaffe fold_bn: error: -weights: required" in capsys.readouterr().err
    assert main(["fold_bn", "-model", model, "-weights", str(tmp_path / "none.caffemodel"),
                 "-out_model", out_m, "-out_weights", out_w]) == 1
    assert "-weights: cannot open" in capsys.readouterr().err
    # a difference above the tolerance writes nothing
    assert main(["fold_bn", "-model", model, "-weights", weights, "-out_model", out_m,
                 "-out_weights", out_w, "-tolerance", "-1", "-iterations", "0"]) == 1
    assert "> -tolerance -1; nothing written" in capsys.readouterr().err
    assert not os.path.exists(out_m) and not os.path.exists(out_w)
    # without verification or timing it only folds and writes
    assert main(["fold_bn", "-model", model, "-weights", weights, "-out_model", out_m,
                 "-out_weights", out_w, "-verify=false", "-iterations", "0"]) == 0
    text = capsys.readouterr().out
    assert "relative difference" not in text and "ms before" not in text
    assert os.path.exists(out_m) and os.path.exists(out_w)


PROBLEMS = """name: "problems"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "bn_zero" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "s1" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "bn_negvar" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "s2" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "bn_batch" type: "BatchNorm" bottom: "c1" top: "c1"
        batch_norm_param { use_global_stats: false } }
layer { name: "s3" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "bn_noscale" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "r" type: "ReLU" bottom: "c1" top: "c1" }
"""


def test_bn_stats_show_reports_the_four_problems(tmp_path, capsys):
    model = tmp_path / "problems.prototxt"
    model.write_text(PROBLEMS)
    net = decaffe.Net(str(model), decaffe.TEST)
    randomize(net, np.random.default_rng(0))
    net.params["bn_zero"][2].data[...] = 0
    v = np.array(net.params["bn_negvar"][1].data)
    v[2] = -v[2]
    net.params["bn_negvar"][1].data[...] = v
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    rc = main(["bn_stats", "show", "-model", str(model), "-weights", str(weights)])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "channels", "factor", "mean", "min", "mean", "max",
                                "var", "min", "var", "max", "eps", "stats"]
    warnings = [ln for ln in lines if ln.startswith("  WARNING")]
    assert len(warnings) == 4
    assert warnings[0].startswith("  WARNING bn_zero: scale factor is 0")
    assert warnings[1].startswith("  WARNING bn_negvar: 1 of 3 channels have variance <= 0 "
                                  "(1 negative")
    assert warnings[2].startswith("  WARNING bn_batch: use_global_stats is false in the TEST "
                                  "phase")
    assert warnings[3].startswith("  WARNING bn_noscale: no Scale layer follows (its output is "
                                  "read by ReLU 'r')")
    row = next(ln for ln in lines if ln.startswith("bn_batch "))
    assert row.split()[1] == "3" and row.endswith("batch")
    assert lines[-1] == "4 BatchNorm layer(s), 4 warning(s)"
    # without weights every factor is 0
    assert main(["bn_stats", "show", "-model", str(model)]) == 0
    assert capsys.readouterr().out.count("scale factor is 0") == 4


def test_bn_stats_usage_and_errors(tmp_path, capsys):
    assert main(["bn_stats"]) == 1
    assert "usage: decaffe bn_stats show" in capsys.readouterr().err
    assert main(["bn_stats", "fix"]) == 1
    assert "unknown action 'fix'" in capsys.readouterr().err
    assert main(["bn_stats", "show"]) == 1
    assert "-model: required" in capsys.readouterr().err
    assert main(["bn_stats", "recompute", "-model", "m", "-weights", "w", "-out", "o"]) == 1
    assert "-iterations: must be at least 1" in capsys.readouterr().err
    model = tmp_path / "plain.prototxt"
    model.write_text('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 '
                     'dim: 2 } } }\nlayer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n')
    assert main(["bn_stats", "show", "-model", str(model)]) == 0
    assert "the net has no BatchNorm layer" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# End to end: train, zero the statistics, recompute, accuracy back
# ----------------------------------------------------------------------------------------------
TRAIN_VAL = """name: "digits_bn"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 }
        data_param { source: "TRAIN_DB" batch_size: 64 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 }
        data_param { source: "TEST_DB" batch_size: 120 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 bias_term: false
                            weight_filler { type: "msra" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 32 kernel_size: 3 pad: 1 bias_term: false
                            weight_filler { type: "msra" } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2"
        batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale2" type: "Scale" bottom: "conv2" top: "conv2" scale_param { bias_term: true } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
        inner_product_param { num_output: 10 weight_filler { type: "msra" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
"""


def test_recompute_end_to_end_gives_the_accuracy_back(tmp_path, capsys):
    from decaffe.cli.bn_stats import score
    from decaffe.data.digits import ensure_digits
    from decaffe.solvers import get_solver

    train_db, test_db = ensure_digits(str(tmp_path / "digits"))
    model = tmp_path / "train_val.prototxt"
    model.write_text(TRAIN_VAL.replace("TRAIN_DB", train_db).replace("TEST_DB", test_db))
    solver = get_solver(f'net: "{model}"\ntest_iter: 3\ntest_interval: 100000\n'
                        'test_initialization: false\nbase_lr: 0.05\nmomentum: 0.9\n'
                        'lr_policy: "fixed"\nmax_iter: 150\nrandom_seed: 5\nsnapshot: 0\n'
                        'snapshot_after_train: false\ndisplay: 0\n')
    solver.step(150)
    trained = str(tmp_path / "trained.caffemodel")
    solver.net.save(trained)

    def accuracy(weights):
        net = decaffe.Net(str(model), weights, decaffe.TEST)
        return score(net, 3)["accuracy"]

    acc_trained = accuracy(trained)
    assert acc_trained > 0.85
    # zero the statistics (what pruning or fine-tuning with frozen BN leaves behind)
    net = decaffe.Net(str(model), trained, decaffe.TRAIN)
    for name in ("bn1", "bn2"):
        for b in net.params[name]:
            b.data[...] = 0
    zeroed = str(tmp_path / "zeroed.caffemodel")
    net.save(zeroed)
    acc_zeroed = accuracy(zeroed)
    assert acc_zeroed < acc_trained - 0.2
    out = str(tmp_path / "recomputed.caffemodel")
    rc = main(["bn_stats", "recompute", "-model", str(model), "-weights", zeroed,
               "-iterations", "22", "-out", out, "-test_iterations", "3"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "recomputed the statistics of 2 BatchNorm layer(s) over 22 batches" in text
    before = float(text.split("before: accuracy = ")[1].split(",")[0])
    after = float(text.split("after: accuracy = ")[1].split(",")[0])
    assert before == pytest.approx(acc_zeroed, abs=1e-6)
    assert after == pytest.approx(accuracy(out), abs=1e-6)
    assert after >= acc_trained - 0.03
    stats = dict(load_weights(out))
    for name in ("bn1", "bn2"):
        assert float(stats[name][2].array[0]) == 22.0  # λ = 1: the factor counts the batches
    # the other weights are untouched
    for name in ("conv1", "scale1", "conv2", "ip"):
        for a, b in zip(stats[name], dict(load_weights(trained))[name]):
            np.testing.assert_array_equal(a.array, b.array)

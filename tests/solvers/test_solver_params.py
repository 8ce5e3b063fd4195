"""SolverParameter handling: where the train and test nets come from and in which state (Caffe's
InitTrainNet / InitTestNets), the solver type, legacy fields, defaults, seeds, and every
error a solver file can cause."""

from __future__ import annotations

import os

import numpy as np
import pytest
from solver_testlib import mlp_data, solver_text, write_h5

from decaffe.errors import DecaffeError, SolverError
from decaffe.solvers import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    get_solver,
)

# Input-fed net: a layer only at stage "extra", one only at level >= 2, one only in TEST.
NET = """
name: "staged"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "out" type: "Power" bottom: "ip" top: "out" loss_weight: 1 }
layer { name: "extra" type: "Power" bottom: "ip" top: "extra" include { stage: "extra" } }
layer { name: "deep" type: "Power" bottom: "ip" top: "deep" include { min_level: 2 } }
layer { name: "test_only" type: "Power" bottom: "ip" top: "t" include { phase: TEST } }
"""
BASE = dict(base_lr=0.1, lr_policy="fixed", max_iter=2, display=0)


def _names(net) -> list[str]:
    return list(net._layer_names)


def _text(**fields) -> str:
    return solver_text(NET, **{**BASE, **fields})


def test_types_build_their_classes():
    for type_name, cls in (("SGD", SGDSolver), ("Nesterov", NesterovSolver),
                           ("AdaGrad", AdaGradSolver), ("RMSProp", RMSPropSolver),
                           ("AdaDelta", AdaDeltaSolver), ("Adam", AdamSolver)):
        s = get_solver(_text(type=type_name))
        assert type(s) is cls and s.type == type_name
    # the classes ignore the file's type, as pycaffe's do
    assert SGDSolver(_text(type="Adam")).type == "SGD"


def test_default_type_is_sgd_and_legacy_solver_type_is_upgraded():
    assert type(get_solver(_text())) is SGDSolver
    assert type(get_solver(_text() + "solver_type: ADAM\n")) is AdamSolver
    assert type(get_solver(_text() + "solver_type: NESTEROV\n")) is NesterovSolver
    with pytest.raises(DecaffeError, match="solver_type.*type.*cannot both be specified"):
        get_solver(_text(type="SGD") + "solver_type: ADAM\n")


def test_train_net_state_merges_phase_net_state_and_train_state():
    s = get_solver(_text())
    assert _names(s.net) == ["x", "ip", "out"]
    s = get_solver(_text() + 'train_state { level: 3 stage: "extra" }\n')
    assert _names(s.net) == ["x", "ip", "ip_ip_0_split", "out",
                             "extra", "deep"]
    # the net's own state counts, below train_state's
    net = NET.replace('name: "staged"', 'name: "staged" state { stage: "extra" }')
    s = get_solver(solver_text(net, **BASE))
    assert "extra" in _names(s.net) and s.net.phase == 0


def test_test_nets_from_every_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("t.prototxt", "w") as f:
        f.write(NET.replace('name: "staged"', 'name: "from_file"'))
    text = (_text(test_interval=10) + "test_iter: 1\ntest_iter: 2\ntest_iter: 3\ntest_iter: 4\n"
            + 'test_net: "t.prototxt"\n'
            + "test_net_param {" + NET.replace('name: "staged"', 'name: "inline"') + "}\n"
            + 'test_state { } test_state { } test_state { stage: "extra" } '
              'test_state { level: 2 }\n')
    s = get_solver(text)
    # test_net_param first, then test_net files, then the generic net for what remains
    assert [n.name for n in s.test_nets] == ["inline", "from_file", "staged", "staged"]
    assert all(n.phase == 1 for n in s.test_nets)
    assert "test_only" in _names(s.test_nets[0])
    assert "extra" in _names(s.test_nets[2]) and "extra" not in _names(s.test_nets[3])
    assert "deep" in _names(s.test_nets[3]) and "deep" not in _names(s.test_nets[2])


def test_train_net_and_train_net_param(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("train.prototxt", "w") as f:
        f.write(NET)
    s = get_solver('train_net: "train.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n')
    assert s.net.name == "staged" and s.test_nets == []
    s = get_solver("train_net_param {" + NET + '}\ntest_net: "train.prototxt"\ntest_iter: 2\n'
                   'test_interval: 5\nbase_lr: 0.1\nlr_policy: "fixed"\n')
    assert len(s.test_nets) == 1


@pytest.mark.parametrize("text,field", [
    ('base_lr: 0.1\nlr_policy: "fixed"\n', "net, net_param, train_net, train_net_param"),
    ('net: "a.prototxt"\ntrain_net: "b.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n',
     "it gives net, train_net"),
])
def test_train_net_source_errors(text, field):
    with pytest.raises(SolverError, match=field):
        get_solver(text)


def test_net_and_net_param_together():
    with pytest.raises(SolverError, match="net, net_param"):
        get_solver(_text() + 'net: "x.prototxt"\n')


@pytest.mark.parametrize("extra,field,detail", [
    ("test_iter: 3\ntest_interval: 5\n", None, None),  # generic net: fine
    ("test_iter: 3\n", "test_interval", "must be > 0"),
    ("test_iter: 1\ntest_interval: 5\ntest_state { } test_state { }\n", "test_state",
     "once per test net"),
    ("test_iter: -1\ntest_interval: 5\n", "test_iter[0]", ">= 0"),
])
def test_test_net_errors_with_a_generic_net(extra, field, detail):
    if field is None:
        assert len(get_solver(_text() + extra).test_nets) == 1
        return
    with pytest.raises(SolverError) as e:
        get_solver(_text() + extra)
    assert str(e.value).startswith(field + ":") and detail in str(e.value)


def test_test_iter_without_a_test_net():
    text = "train_net_param {" + NET + '}\nbase_lr: 0.1\nlr_policy: "fixed"\n'
    with pytest.raises(SolverError, match="^test_iter: given .* no test net"):
        get_solver(text + "test_iter: 5\ntest_interval: 10\n")
    with pytest.raises(SolverError, match="^test_iter: must be specified for each test network"):
        get_solver(text + "test_net_param {" + NET + "}\ntest_net_param {" + NET +
                   "}\ntest_iter: 5\ntest_interval: 10\n")


@pytest.mark.parametrize("fields,field,words", [
    (dict(type="Adamm"), "type", ["unknown solver type 'Adamm'", "'Adam'", "known types"]),
    (dict(type="sgd"), "type", ["unknown solver type 'sgd'"]),
    (dict(lr_policy="cosine"), "lr_policy", ["unknown learning rate policy 'cosine'"]),
    (dict(weight_decay=0.1, regularization_type="L3"), "regularization_type", ["'L3'"]),
    (dict(type="AdaGrad", momentum=0.9), "momentum", ["AdaGrad"]),
    (dict(type="RMSProp", momentum=0.9), "momentum", ["RMSProp"]),
    (dict(type="RMSProp", rms_decay=1.0), "rms_decay", ["[0, 1)"]),
    (dict(average_loss=0), "average_loss", ["at least 1"]),
    (dict(iter_size=0), "iter_size", ["at least 1"]),
])
def test_bad_fields_are_named(fields, field, words):
    with pytest.raises(SolverError) as e:
        get_solver(_text(**fields))
    assert str(e.value).startswith(field + ":"), str(e.value)
    for w in words:
        assert w in str(e.value)


def test_unknown_regularization_is_accepted_without_decay():
    # Caffe only rejects it when some parameter is decayed
    get_solver(_text(regularization_type="L3"))


def test_missing_net_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DecaffeError, match="nonexistent.prototxt"):
        get_solver('net: "nonexistent.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n')


def test_snapshot_prefix_defaults_to_the_solver_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("my_solver.prototxt", "w") as f:
        f.write(_text(snapshot=5))
    s = get_solver("my_solver.prototxt")
    assert s.param.snapshot_prefix == "my_solver"
    os.mkdir("snaps")
    with open("other.prototxt", "w") as f:
        f.write(_text(snapshot=5, snapshot_prefix="snaps"))
    assert get_solver("other.prototxt").param.snapshot_prefix == os.path.join("snaps", "other")


def test_random_seed_makes_the_fillers_repeatable():
    a = get_solver(_text(random_seed=7)).net.params["ip"][0].data.copy()
    b = get_solver(_text(random_seed=7)).net.params["ip"][0].data.copy()
    c = get_solver(_text(random_seed=8)).net.params["ip"][0].data.copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


BN_NET = """
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "train_list.txt" batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "ip" PARAMS }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


_FROZEN = "param { lr_mult: 0 decay_mult: 0 } " * 3


@pytest.mark.parametrize("params,want", [
    # no ParamSpec: Caffe 1.0's BatchNorm adds `lr_mult: 0` (decay_mult keeps its default 1)
    ("", [(0, 1)] * 3),
    # exactly three entries (the old way of freezing): Caffe 1.0's upgrade clears them, and
    # BatchNorm adds its own, so their lr_mult and decay_mult no longer matter
    ("param { lr_mult: 0 } " * 3, [(0, 1)] * 3),
    (_FROZEN, [(0, 1)] * 3),
    ("param { lr_mult: 1 } " * 3, [(0, 1)] * 3),
    # fewer than three: kept, the missing ones added
    ("param { lr_mult: 0 decay_mult: 0 }", [(0, 0), (0, 1), (0, 1)]),
])
def test_batchnorm_statistics_multipliers(tmp_path, monkeypatch, params, want):
    monkeypatch.chdir(tmp_path)
    write_h5(str(tmp_path), "train", *mlp_data(8))
    s = get_solver(solver_text(BN_NET.replace("PARAMS", params), momentum=0.9,
                               weight_decay=0.1, **BASE))
    mults = list(zip(s.updater.lr_mults, s.updater.decay_mults))
    assert mults[:2] == [(1, 1), (1, 1)]
    assert mults[2:] == want
    s.step(1)
    # frozen: exactly the moving sums of one batch, weight decay notwithstanding
    assert float(s.net.params["bn"][2].data[0]) == 1.0
    # what Caffe 1.0 writes when it saves the net: the specs BatchNorm added
    bn = [lp for lp in s.net.to_proto()[0].layer if lp.name == "bn"][0]
    assert [(p.lr_mult, p.decay_mult) for p in bn.param] == want


@pytest.mark.parametrize("params,index", [
    ("param { lr_mult: 1 }", 0),
    ("param { lr_mult: 0 } param { lr_mult: 0.5 decay_mult: 0 }", 1),
    ("param { decay_mult: 0 }", 0),  # lr_mult's default is 1
])
def test_batchnorm_refuses_learnable_statistics(tmp_path, monkeypatch, params, index):
    """Caffe 1.0's CHECK_EQ(param(i).lr_mult(), 0): 'Cannot configure batch normalization
    statistics as layer parameters.'"""
    from decaffe.errors import LayerParamError

    monkeypatch.chdir(tmp_path)
    write_h5(str(tmp_path), "train", *mlp_data(8))
    with pytest.raises(LayerParamError, match=rf"layer 'bn'.*param\[{index}\]\.lr_mult.*"
                       "Cannot configure batch normalization statistics") as e:
        get_solver(solver_text(BN_NET.replace("PARAMS", params), **BASE))
    assert e.value.layer == "bn"


def test_batchnorm_statistics_change_only_by_the_moving_average(tmp_path, monkeypatch):
    """SGD with momentum and a large weight decay, BatchNorm without `param` entries: after
    every step the statistics are exactly Caffe's moving sums of the batches seen (computed
    here in numpy from the inner product's weights before the step), nothing else."""
    monkeypatch.chdir(tmp_path)
    x, t = mlp_data(8)
    write_h5(str(tmp_path), "train", x, t)
    lam = 0.5
    net = BN_NET.replace("PARAMS", f"batch_norm_param {{ moving_average_fraction: {lam} }}")
    s = get_solver(solver_text(net, momentum=0.9, weight_decay=0.5, base_lr=0.1,
                               lr_policy="fixed", max_iter=5, display=0))
    mean_sum = np.zeros(2)
    var_sum = np.zeros(2)
    factor = 0.0
    for it in range(5):
        w, b = (p.data.astype(np.float64).copy() for p in s.net.params["ip"])
        rows = [(4 * it + k) % 8 for k in range(4)]
        y = x[rows].astype(np.float64) @ w.T + b
        m = y.shape[0]
        factor = lam * factor + 1
        mean_sum = lam * mean_sum + y.mean(0)
        var_sum = lam * var_sum + y.var(0) * m / (m - 1)
        s.step(1)
        got = [p.data.astype(np.float64) for p in s.net.params["bn"]]
        np.testing.assert_allclose(got[0], mean_sum, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], var_sum, rtol=1e-5, atol=1e-6)
        assert got[2][0] == pytest.approx(factor, rel=1e-7)
        # the inner product did learn (the solver ran, decay included)
        assert not np.allclose(s.net.params["ip"][0].data, w)

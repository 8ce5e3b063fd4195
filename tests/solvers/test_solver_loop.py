"""The training loop as Caffe's Solver::Step / Solve / Test run it, and pycaffe's solver
surface: testing schedule and means, smoothed loss and display lines, callbacks, actions,
non-finite losses, debug info, shared weights."""

from __future__ import annotations

import re

import numpy as np
import pytest
from solver_testlib import (
    GLOG_LINE,
    RE_LOSS,
    RE_LR,
    RE_TEST_OUTPUT,
    RE_TRAIN_OUTPUT,
    mlp_data,
    solver_text,
    write_h5,
)

import decaffe
from decaffe.solvers import SNAPSHOT, STOP, NonFiniteLossError, get_solver

NET = """
name: "tt"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "train_list.txt" batch_size: 4 } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
  hdf5_data_param { source: "test_list.txt" batch_size: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip1" bottom: "label" top: "loss" }
layer { name: "mean" type: "Reduction" bottom: "ip1" top: "mean"
  reduction_param { operation: MEAN } include { phase: TEST } }
"""

BASE = dict(base_lr=0.05, lr_policy="fixed", momentum=0.9, max_iter=7, random_seed=2,
            display=0, snapshot_after_train=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, t = mlp_data(16, seed=1)
    write_h5(str(tmp_path), "train", x, t)
    xt, tt = mlp_data(6, seed=2)
    write_h5(str(tmp_path), "test", xt, tt)
    return tmp_path


def _solver(**fields):
    return get_solver(solver_text(NET, type="SGD", **{**BASE, **fields}))


def _tested_at(err: str) -> list[int]:
    return [int(m) for m in re.findall(r"Iteration (\d+), Testing net \(#0\)", err)]


@pytest.mark.parametrize("init,max_iter,want", [(True, 7, [0, 3, 6]), (False, 7, [3, 6]),
                                                (True, 6, [0, 3, 6])])
def test_test_schedule(workdir, capsys, init, max_iter, want):
    s = _solver(test_iter=1, test_interval=3, test_initialization=init, max_iter=max_iter)
    s.solve()
    assert _tested_at(capsys.readouterr().err) == want


def test_test_pass_means(workdir, capsys):
    s = _solver(test_iter=3, test_interval=100, test_compute_loss=True)
    w = s.net.params["ip1"][0].data.astype(np.float64)
    b = s.net.params["ip1"][1].data.astype(np.float64)
    xt, tt = mlp_data(6, seed=2)
    y = xt @ w.T + b
    losses = [((y[i:i + 2] - tt[i:i + 2]) ** 2).sum() / 4 for i in (0, 2, 4)]
    means = [y[i:i + 2].mean() for i in (0, 2, 4)]
    got = s.test(0)
    # outputs in name order: loss, mean
    np.testing.assert_allclose(got, [np.mean(losses), np.mean(means)], rtol=1e-5)
    err = capsys.readouterr().err
    lines = [m.groups() for m in RE_TEST_OUTPUT.finditer(err)]
    assert [(k, name) for k, name, _ in lines] == [("0", "loss"), ("1", "mean")]
    assert float(lines[0][2]) == pytest.approx(np.mean(losses), rel=1e-5)
    assert re.search(r"Test net output #0: loss = \S+ \(\* 1 = \S+ loss\)", err)
    mean_line = [ln for ln in err.splitlines() if "Test net output #1: mean = " in ln]
    assert len(mean_line) == 1 and "(*" not in mean_line[0]  # no loss weight, no "(* w = x)"
    assert float(re.search(r"Test loss: (\S+)", err).group(1)) == pytest.approx(
        np.mean(losses), rel=1e-5)
    # the test net uses the train net's parameters
    s.step(1)
    np.testing.assert_array_equal(s.test_nets[0].params["ip1"][0].data,
                                  s.net.params["ip1"][0].data)


def test_display_and_smoothed_loss(workdir, capsys):
    s = _solver(display=2, average_loss=3, max_iter=6, lr_policy="step", gamma=0.5,
                stepsize=4)
    losses = []
    s.add_callback(None, lambda: losses.append(float(s.net.blobs["loss"].data)))
    s.solve()
    err = capsys.readouterr().err
    for line in err.splitlines():
        assert GLOG_LINE.match(line), line
    shown = {int(i): float(v) for i, v in RE_LOSS.findall(err)}
    assert sorted(shown) == [0, 2, 4, 6]
    smoothed = [np.mean(losses[max(0, i - 2):i + 1]) for i in range(6)]
    for it in (0, 2, 4):
        assert shown[it] == pytest.approx(smoothed[it], rel=1e-4)
    rates = re.findall(r"Iteration (\d+), lr = (\S+)", err)
    assert [(int(i), float(r)) for i, r in rates] == [(0, 0.05), (2, 0.05), (4, 0.025)]
    assert all(RE_LR.search(f"lr = {r}") for _, r in rates)
    train = RE_TRAIN_OUTPUT.findall(err)
    assert [(k, n) for k, n, _ in train] == [("0", "loss")] * 3
    assert re.search(r"Train net output #0: loss = \S+ \(\* 1 = \S+ loss\)", err)
    assert "Solving tt" in err and "Learning Rate Policy: step" in err
    assert err.rstrip().endswith("Optimization Done.")


def test_callbacks_run_around_the_update(workdir):
    s = _solver()
    seen = []
    w = s.net.params["ip1"][0]

    def on_start():
        seen.append(("start", s.iter, w.data.copy()))

    def on_ready():
        seen.append(("ready", s.iter, w.data.copy(), w.diff.copy()))

    s.add_callback(on_start, on_ready)
    s.step(2)
    assert [e[:2] for e in seen] == [("start", 0), ("ready", 0), ("start", 1), ("ready", 1)]
    np.testing.assert_array_equal(seen[0][2], seen[1][2])  # no update before gradients
    assert np.abs(seen[1][3]).sum() > 0  # gradients are there
    assert not np.array_equal(seen[1][2], seen[2][2])  # updated after


def test_actions_stop_and_snapshot(workdir, capsys):
    s = _solver(snapshot_prefix="m", snapshot_after_train=True, max_iter=10)
    requests = {2: SNAPSHOT, 4: STOP}
    s.set_action_function(lambda: requests.get(s.iter, "none"))
    s.solve()
    assert s.iter == 4 and s.requested_early_exit
    err = capsys.readouterr().err
    shots = re.findall(r"Snapshotting to binary proto file (\S+)", err)
    assert shots == ["m_iter_2.caffemodel", "m_iter_4.caffemodel"]
    assert "Optimization stopped early." in err and "Optimization Done." not in err


def test_stop_during_testing(workdir, capsys):
    s = _solver(test_iter=3, test_interval=2, max_iter=10)
    calls = []

    def action():
        # polled after each iteration, then before each test pass: the second poll at
        # iteration 2 comes from inside the test at iteration 2
        calls.append(s.iter)
        return STOP if calls.count(2) == 2 else "none"

    s.set_action_function(action)
    s.solve()
    err = capsys.readouterr().err
    assert "Test interrupted." in err
    assert _tested_at(err) == [0, 2]
    assert s.iter == 2 and s.requested_early_exit


def _nan_net_solver(workdir, bad_batch: int, **fields):
    x, t = mlp_data(16, seed=1)
    x[4 * bad_batch + 1, 2] = np.nan
    write_h5(str(workdir), "train", x, t)
    return _solver(**fields)


def test_nan_loss_stops_naming_iteration_and_layer(workdir):
    s = _nan_net_solver(workdir, 2)
    s.stop_on_nonfinite = True  # what `decaffe train -nan_effect=stop` sets
    before = s.net.params["ip1"][0].data.copy()
    with pytest.raises(NonFiniteLossError) as e:
        s.step(5)
    assert e.value.iteration == 2 and e.value.layer == "data"
    msg = str(e.value)
    assert msg.startswith("Iteration 2: the loss is nan")
    assert "'data'" in msg and "top 'data' has 1 NaN of 12 values" in msg
    assert s.iter == 2  # the bad gradient was not applied
    assert np.isfinite(s.net.params["ip1"][0].data).all()
    assert not np.array_equal(before, s.net.params["ip1"][0].data)
    assert isinstance(e.value, decaffe.SolverError)


def test_nan_from_a_layer_names_that_layer(workdir):
    net = NET.replace('layer { name: "loss"', '''layer { name: "log" type: "Log" bottom: "ip1"
        top: "logged" } layer { name: "loss"''').replace('bottom: "ip1" bottom: "label"',
                                                        'bottom: "logged" bottom: "label"')
    s = get_solver(solver_text(net, type="SGD", **BASE))
    s.stop_on_nonfinite = True
    with pytest.raises(NonFiniteLossError) as e:
        s.step(1)
    assert e.value.layer == "log" and e.value.iteration == 0


def test_nan_loss_goes_on_by_default(workdir):
    s = _nan_net_solver(workdir, 1)  # pycaffe's step() never raises on a NaN loss
    assert s.stop_on_nonfinite is False
    s.step(3)
    assert s.iter == 3
    assert np.isnan(s.net.params["ip1"][0].data).all()


def test_debug_info_lines(workdir, capsys):
    s = _solver(display=1, debug_info=True)
    s.step(1)
    err = capsys.readouterr().err
    assert re.search(r"\[Forward\] Layer ip1, top blob ip1 data: \S+", err)
    assert re.search(r"\[Forward\] Layer ip1, param blob 0 data: \S+", err)
    assert re.search(r"\[Backward\] Layer ip1, param blob 1 diff: \S+", err)
    assert re.search(r"\[Update\] Layer ip1, param 0 data: \S+; diff: \S+", err)


def test_pycaffe_surface(workdir):
    s = _solver(test_iter=1, test_interval=5)
    assert isinstance(s.net, decaffe.Net) and len(s.test_nets) == 1
    assert s.net.phase == decaffe.TRAIN and s.test_nets[0].phase == decaffe.TEST
    assert s.iter == 0 and s.type == "SGD"
    other = decaffe.Net(s._train_param)
    s.share_weights(other)
    s.step(1)
    np.testing.assert_array_equal(other.params["ip1"][0].data, s.net.params["ip1"][0].data)


def test_manual_loop_with_apply_update_matches_step(workdir):
    """pycaffe's manual loop (forward, backward, apply_update) updates as step(1) does."""
    a, b = _solver(weight_decay=0.01), _solver(weight_decay=0.01)
    a.step(1)
    b.net.clear_param_diffs()
    b.net.forward()
    b.net.backward()
    b.apply_update()
    for k in range(2):
        np.testing.assert_allclose(b.net.params["ip1"][k].data, a.net.params["ip1"][k].data,
                                   rtol=1e-6, atol=1e-7)
    assert b.iter == 0  # apply_update does not count iterations; step does


def test_callback_object(workdir):
    class Hook:
        def __init__(self):
            self.calls = []

        def on_start(self):
            self.calls.append("start")

        def on_gradients_ready(self):
            self.calls.append("ready")

    s = _solver()
    hook = Hook()
    s.add_callback(hook)  # pycaffe's solver.add_callback(nccl)
    s.step(2)
    assert hook.calls == ["start", "ready"] * 2
    with pytest.raises(decaffe.SolverError, match="not callable"):
        s.add_callback(3, None)


def test_only_the_root_solver_tests_displays_and_snapshots(workdir, capsys):
    from decaffe import mode

    mode.set_solver_rank(1)
    try:
        s = _solver(test_iter=1, test_interval=2, display=1, snapshot=2, snapshot_prefix="r",
                    snapshot_after_train=True, max_iter=4)
        s.solve()
    finally:
        mode.set_solver_rank(0)
    err = capsys.readouterr().err
    assert s.iter == 4
    assert "Testing net" not in err and "loss = " not in err and "lr = " not in err
    assert "Snapshotting" not in err and not list(workdir.glob("r_iter_*"))

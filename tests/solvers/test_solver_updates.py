"""The six update rules against Caffe's formulas computed independently in numpy, through the
whole step: data from HDF5 batches, forward/backward, clip, iter_size normalization, L1/L2
regularization with per-parameter multipliers (a frozen-but-decayed blob included), the
rule, and the update; weights and history compared after every iteration."""

from __future__ import annotations

import numpy as np
import pytest
from solver_testlib import (
    MLP_MULTS,
    MLP_NET,
    ReferenceSolver,
    mlp_data,
    mlp_grads,
    solver_text,
    write_h5,
)

from decaffe.solvers import SOLVERS, get_solver

BASE = dict(base_lr=0.1, lr_policy="step", gamma=0.5, stepsize=2, max_iter=20,
            weight_decay=0.01, random_seed=5, display=0, snapshot_after_train=False)

CASES = {
    "sgd": ("SGD", dict(momentum=0.9)),
    "sgd_l1": ("SGD", dict(momentum=0.9, regularization_type="L1")),
    "sgd_clip": ("SGD", dict(momentum=0.9, clip_gradients=0.3)),
    "sgd_itersize": ("SGD", dict(momentum=0.8, iter_size=2)),
    "sgd_itersize_clip": ("SGD", dict(momentum=0.8, iter_size=3, clip_gradients=0.2)),
    "nesterov": ("Nesterov", dict(momentum=0.9)),
    "adagrad": ("AdaGrad", dict(delta=1e-6)),
    "adagrad_l1": ("AdaGrad", dict(delta=1e-6, regularization_type="L1")),
    "rmsprop": ("RMSProp", dict(rms_decay=0.9, delta=1e-6)),
    "adadelta": ("AdaDelta", dict(momentum=0.95, delta=1e-6, base_lr=1.0)),
    "adam": ("Adam", dict(momentum=0.9, momentum2=0.999, delta=1e-8)),
    "adam_clip_l1": ("Adam", dict(momentum=0.9, momentum2=0.99, delta=1e-8,
                                  clip_gradients=0.5, regularization_type="L1")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_matches_caffe_formulas(case, tmp_path, monkeypatch):
    kind, extra = CASES[case]
    p = {**BASE, **extra}
    iter_size = p.get("iter_size", 1)
    steps = 6
    x, t = mlp_data(4 * iter_size * steps, seed=sorted(CASES).index(case))
    monkeypatch.chdir(tmp_path)
    write_h5(str(tmp_path), "train", x, t)
    solver = get_solver(solver_text(MLP_NET, type=kind, **p))
    assert type(solver) is SOLVERS[kind]
    params = solver.net.learnable_params
    assert [tuple(q.shape) for q in params] == [(4, 3), (4,), (2, 4), (2,)]
    ref = ReferenceSolver(kind, p, [q.detach().numpy() for q in params], MLP_MULTS)
    batch = 0
    for it in range(steps):
        grads = [np.zeros_like(w) for w in ref.w]
        losses = []
        for _ in range(iter_size):
            sl = slice(4 * batch, 4 * batch + 4)
            loss, g = mlp_grads(ref.w, x[sl], t[sl])
            losses.append(loss)
            grads = [a + b for a, b in zip(grads, g)]
            batch += 1
        ref.update(grads)
        solver.step(1)
        assert solver.iter == it + 1
        # the smoothed loss of a one-iteration step is that iteration's mean loss
        np.testing.assert_allclose(solver.smoothed_loss, np.mean(losses), rtol=1e-4)
        for i, (got, want) in enumerate(zip(params, ref.w)):
            np.testing.assert_allclose(got.detach().numpy(), want, rtol=2e-4, atol=2e-6,
                                       err_msg=f"{case}: param {i} after iteration {it}")
        for i, (got, want) in enumerate(zip(solver.updater.history, ref.hist)):
            np.testing.assert_allclose(got.numpy(), want, rtol=2e-4, atol=1e-7,
                                       err_msg=f"{case}: history {i} after iteration {it}")
    # the frozen blob (ip2's bias, lr_mult 0) never moves, whatever its history does
    np.testing.assert_array_equal(params[3].detach().numpy(), np.float32(0.2))


def test_update_is_left_in_the_diff(tmp_path, monkeypatch):
    """Caffe leaves each parameter's update in its diff after the step (w −= diff)."""
    monkeypatch.chdir(tmp_path)
    x, t = mlp_data(8)
    write_h5(str(tmp_path), "train", x, t)
    solver = get_solver(solver_text(MLP_NET, type="SGD", momentum=0.9, **BASE))
    before = [q.detach().clone() for q in solver.net.learnable_params]
    solver.step(1)
    for i, (old, q) in enumerate(zip(before, solver.net.learnable_params)):
        np.testing.assert_allclose(old.numpy() - q.detach().numpy(), q.grad.numpy(),
                                   rtol=1e-5, atol=1e-7, err_msg=f"param {i}")
        # for SGD the update is the new history
        np.testing.assert_array_equal(q.grad.numpy(), solver.updater.history[i].numpy())
    view = solver.net.params["ip1"][0]
    np.testing.assert_array_equal(view.diff, solver.net.learnable_params[0].grad.numpy())


def test_clip_happens_before_normalization_and_decay(tmp_path, monkeypatch, capsys):
    """Caffe clips the raw accumulated gradient (before 1/iter_size and weight decay) and
    logs the norm it saw."""
    monkeypatch.chdir(tmp_path)
    x, t = mlp_data(8)
    write_h5(str(tmp_path), "train", x, t)
    p = {**BASE, "iter_size": 2, "clip_gradients": 0.05, "momentum": 0.0}
    solver = get_solver(solver_text(MLP_NET, type="SGD", **p))
    w = [q.detach().numpy().astype(np.float64) for q in solver.net.learnable_params]
    g = [a + b for a, b in zip(mlp_grads(w, x[:4], t[:4])[1], mlp_grads(w, x[4:], t[4:])[1])]
    raw_norm = np.sqrt(sum((a ** 2).sum() for a in g))
    assert raw_norm > 0.05
    solver.step(1)
    err = capsys.readouterr().err
    assert "Gradient clipping: scaling down gradients (L2 norm" in err
    logged = float(err.split("(L2 norm ")[1].split(" ")[0])
    assert logged == pytest.approx(raw_norm, rel=1e-4)


def test_grouping_by_multipliers():
    from decaffe.solvers.updates import make_groups

    groups = make_groups([1, 2, 1, 0, 2], [1, 0, 1, 1, 0])
    assert [(g.lr_mult, g.decay_mult, g.indices) for g in groups] == [
        (1, 1, [0, 2]), (2, 0, [1, 4]), (0, 1, [3])]

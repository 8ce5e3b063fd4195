"""Caffe's learning-rate policies against their formulas, and the policy errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from solver_testlib import learning_rate as reference_rate

from decaffe.errors import SolverError
from decaffe.proto import caffe_pb2
from decaffe.solvers import lr_policy

POLICIES = {
    "fixed": dict(base_lr=0.01),
    "step": dict(base_lr=0.1, gamma=0.5, stepsize=3),
    "exp": dict(base_lr=0.05, gamma=0.9),
    "inv": dict(base_lr=0.01, gamma=1e-4, power=0.75),
    "multistep": dict(base_lr=0.1, gamma=0.3, stepvalue=[2, 5, 5, 9]),
    "poly": dict(base_lr=0.2, power=2.0, max_iter=12),
    "sigmoid": dict(base_lr=0.05, gamma=0.5, stepsize=4),
}


def _param(policy: str, **fields) -> caffe_pb2.SolverParameter:
    p = caffe_pb2.SolverParameter()
    p.lr_policy = policy
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    return p


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_policy_formula(policy):
    fields = POLICIES[policy]
    p = _param(policy, **fields)
    lr_policy.check_policy(p)
    state = lr_policy.LRState()
    counter = [0]
    for it in range(13):
        got = lr_policy.learning_rate(p, it, state)
        want = reference_rate({"lr_policy": policy, **fields}, it, counter)
        assert got == pytest.approx(want, rel=1e-6), f"{policy} at iteration {it}"
        # Caffe's rate is a float (single precision)
        assert got == float(np.float32(got))


def test_multistep_moves_one_step_per_call_and_keeps_its_counter():
    p = _param("multistep", base_lr=1.0, gamma=0.1, stepvalue=[3, 3, 4])
    state = lr_policy.LRState()
    rates = [lr_policy.learning_rate(p, it, state) for it in range(6)]
    # two stepvalues at 3: the counter passes them on consecutive calls, as Caffe's does
    np.testing.assert_allclose(rates, [1, 1, 1, 0.1, 0.01, 0.001], rtol=1e-6)
    assert state.current_step == 3
    # a restored counter continues from where it was (the .solverstate's current_step)
    resumed = lr_policy.LRState()
    resumed.current_step = 2
    assert lr_policy.learning_rate(p, 10, resumed) == pytest.approx(1e-3, rel=1e-6)


def test_step_sets_current_step():
    p = _param("step", base_lr=1.0, gamma=0.5, stepsize=4)
    state = lr_policy.LRState()
    lr_policy.learning_rate(p, 9, state)
    assert state.current_step == 2


def test_plateau_lowers_the_rate_when_the_loss_stops_improving():
    p = _param("plateau", base_lr=1.0, gamma=0.5, plateau_winsize=[3, 3])
    state = lr_policy.LRState()
    losses = [5, 4, 3, 3, 3, 3, 3, 3, 3, 3]
    rates = [lr_policy.learning_rate(p, it, state, loss) for it, loss in enumerate(losses)]
    # the minimum (3) is last improved at iteration 2: three iterations later the rate halves,
    # and three after that (the step counts as an event) again
    assert rates == [1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert state.minimum_loss == 3 and state.iter_last_event == 8


@pytest.mark.parametrize("policy,fields,field", [
    ("", {}, "lr_policy"),
    ("stepp", {}, "lr_policy"),
    ("Step", {}, "lr_policy"),
    ("step", {"stepsize": 0}, "stepsize"),
    ("step", {"stepsize": 2, "gamma": -0.1}, "gamma"),
    ("inv", {"gamma": -1.0}, "gamma"),
    ("poly", {"power": 1.0}, "max_iter"),
    # Caffe 1.0 refuses a negative gamma for sigmoid too (1.0.0-rc3 accepted it)
    ("sigmoid", {"gamma": -0.5, "stepsize": 4}, "gamma"),
    ("sigmoid", {"gamma": 0.5}, "stepsize"),
    ("exp", {"gamma": -0.5}, "gamma"),
    ("multistep", {"gamma": -0.5, "stepvalue": [1]}, "gamma"),
])
def test_policy_errors_name_the_field(policy, fields, field):
    with pytest.raises(SolverError) as e:
        lr_policy.check_policy(_param(policy, **fields))
    assert str(e.value).startswith(field + ":")
    if policy == "stepp":
        assert "'step'" in str(e.value)  # a suggestion


def test_sigmoid_with_a_positive_gamma_rises_to_base_lr():
    # Caffe 1.0 allows only gamma >= 0, so its sigmoid policy is a warm-up
    p = _param("sigmoid", base_lr=1.0, gamma=2.0, stepsize=1)
    lr_policy.check_policy(p)
    assert lr_policy.learning_rate(p, 1, lr_policy.LRState()) == pytest.approx(0.5)
    assert lr_policy.learning_rate(p, 50, lr_policy.LRState()) == pytest.approx(1.0)
    assert lr_policy.learning_rate(p, 0, lr_policy.LRState()) == pytest.approx(
        1 / (1 + math.exp(2)), rel=1e-6)

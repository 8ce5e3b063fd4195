"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), all of them.

With ``it`` the iteration (the number of updates done so far):

- ``fixed``:     base_lr
- ``step``:      base_lr · gamma ^ floor(it / stepsize)
- ``exp``:       base_lr · gamma ^ it
- ``inv``:       base_lr · (1 + gamma · it) ^ (−power)
- ``multistep``: base_lr · gamma ^ k, k the number of stepvalues reached; k moves up by at
  most one per call, as Caffe's counter does, and it is saved in the .solverstate
  (``current_step``)
- ``poly``:      base_lr · (1 − it / max_iter) ^ power
- ``sigmoid``:   base_lr · 1 / (1 + exp(−gamma · (it − stepsize)))
- ``plateau`` (the SSD fork): base_lr · gamma ^ k, where k moves up when the smoothed loss
  has not reached a new minimum for plateau_winsize[k] iterations

Caffe computes some of these in single precision and some in double; the arithmetic here
follows it, and the rate is a float32 value as Caffe's Dtype rate is.
"""

from __future__ import annotations

import math

import numpy as np

from .. import log
from ..errors import SolverError, suggest
from ..proto import caffe_pb2

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "plateau")

_f32 = np.float32


def check_policy(param: caffe_pb2.SolverParameter) -> None:
    """Reject an unknown policy or parameters Caffe's policy code would fail on."""
    policy = param.lr_policy
    if policy not in POLICIES:
        known = ", ".join(POLICIES)
        what = f"'{policy}'" if policy else "missing"
        raise SolverError(f"lr_policy: unknown learning rate policy {what}"
                          f"{suggest(policy, POLICIES)} (known: {known})")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise SolverError(f"stepsize: the '{policy}' policy needs stepsize > 0, not "
                          f"{param.stepsize}")
    # Caffe 1.0's GetLearningRate: CHECK_GE(gamma, 0) for these (sigmoid included)
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        raise SolverError(f"gamma: the '{policy}' policy needs gamma >= 0, not {param.gamma}")
    if policy == "poly" and param.max_iter <= 0:
        raise SolverError("max_iter: the 'poly' policy needs max_iter > 0")


class LRState:
    """The counters a policy keeps between calls (saved in .solverstate)."""

    def __init__(self) -> None:
        self.current_step = 0
        self.minimum_loss = float(np.finfo(np.float32).max)  # plateau
        self.iter_last_event = 0  # plateau


def learning_rate(param: caffe_pb2.SolverParameter, it: int, state: LRState,
                  smoothed_loss: float = 0.0) -> float:
    """The rate for iteration `it` (updating state.current_step as Caffe does)."""
    with np.errstate(all="ignore"):  # Caffe lets inf/nan through; so do we
        return float(_f32(_rate(param, it, state, smoothed_loss)))


def _rate(param: caffe_pb2.SolverParameter, it: int, state: LRState, smoothed_loss: float):
    policy = param.lr_policy
    base = _f32(param.base_lr)
    gamma = _f32(param.gamma)
    if policy == "fixed":
        rate = base
    elif policy == "step":
        state.current_step = it // param.stepsize
        rate = float(base) * math.pow(float(gamma), state.current_step)
    elif policy == "exp":
        rate = float(base) * _pow(float(gamma), it)
    elif policy == "inv":
        # float arithmetic: (Dtype(1) + gamma * iter) ^ (-power)
        x = _f32(_f32(1) + gamma * _f32(it))
        rate = base * _f32(np.power(x, -_f32(param.power)))
    elif policy == "multistep":
        if (state.current_step < len(param.stepvalue)
                and it >= param.stepvalue[state.current_step]):
            state.current_step += 1
            log.info(f"MultiStep Status: Iteration {it}, step = {state.current_step}")
        rate = float(base) * math.pow(float(gamma), state.current_step)
    elif policy == "poly":
        frac = _f32(_f32(1) - _f32(it) / _f32(param.max_iter))
        rate = base * _f32(np.power(frac, _f32(param.power)))
    elif policy == "sigmoid":
        z = -gamma * (_f32(it) - _f32(param.stepsize))
        rate = base * (_f32(1) / (_f32(1) + np.exp(_f32(z))))
    elif policy == "plateau":
        rate = _plateau(param, it, state, smoothed_loss)
    else:  # check_policy runs at construction; this keeps a changed param honest
        check_policy(param)
        raise AssertionError(policy)
    return rate


def _pow(x: float, n: int) -> float:
    try:
        return math.pow(x, n)
    except OverflowError:
        return math.inf


def _plateau(param: caffe_pb2.SolverParameter, it: int, state: LRState,
             smoothed_loss: float) -> float:
    if smoothed_loss < state.minimum_loss:
        state.minimum_loss = smoothed_loss
        state.iter_last_event = it
    if state.current_step < len(param.plateau_winsize):
        if it >= state.iter_last_event + param.plateau_winsize[state.current_step]:
            state.current_step += 1
            state.iter_last_event = it
            log.info(f"Plateau Status: Iteration {it}, step = {state.current_step}")
    if (param.display and it % param.display == 0
            and state.iter_last_event > it - param.display):
        log.info(f"Plateau Status: Iteration {it}, current minimum_loss = "
                 f"{log.fmt(state.minimum_loss)}")
    return float(_f32(param.base_lr)) * math.pow(float(_f32(param.gamma)), state.current_step)

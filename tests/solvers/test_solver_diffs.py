"""Parameter diffs around the solver's step: whether pycaffe code holds the diff arrays or not,
the weights, diffs and history are the same, the diff after an SGD step holds the update, and
writes into a diff (through its array, a backward, a second update) never reach the history.

The solver lets diffs nobody sees go instead of zeroing them and leaves SGD's history tensor
as the diff (docs/architecture.md, "Two backward paths"); these pin that nothing shows it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decaffe.netspec import NetSpec
from decaffe.netspec import layers as L
from decaffe.proto import caffe_pb2
from decaffe.solvers import SGDSolver, get_solver


def _solver(solver_type: str = "SGD") -> SGDSolver:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[4, 2, 5, 5]))
    n.label = L.Input(shape=dict(dim=[4]))
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=3, weight_filler=dict(type="msra"))
    n.ip = L.InnerProduct(n.conv, num_output=3, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    sp = caffe_pb2.SolverParameter()
    sp.net_param.CopyFrom(n.to_proto())
    sp.base_lr, sp.weight_decay = 0.1, 5e-3
    sp.momentum = 0.9 if solver_type in ("SGD", "Nesterov") else 0.0
    sp.lr_policy, sp.max_iter, sp.display = "fixed", 100, 0
    sp.type = solver_type
    torch.manual_seed(0)
    s = get_solver(sp)
    rng = np.random.default_rng(0)
    s.net.blobs["data"].data[...] = rng.standard_normal((4, 2, 5, 5))
    s.net.blobs["label"].data[...] = rng.integers(0, 3, 4)
    return s


def _state(s) -> dict[str, np.ndarray]:
    out = {}
    for name, blobs in s.net.params.items():
        for k, b in enumerate(blobs):
            out[f"{name}/{k}/data"] = b.data.copy()
            out[f"{name}/{k}/diff"] = b.diff.copy()
    for i, h in enumerate(s.updater.history):
        out[f"history{i}"] = h.detach().numpy().copy()
    return out


@pytest.mark.parametrize("solver_type", ["SGD", "Nesterov", "AdaGrad"])
def test_held_arrays_change_nothing(solver_type: str) -> None:
    quiet, held = _solver(solver_type), _solver(solver_type)
    arrays = {(name, k): b.diff for name, blobs in held.net.params.items()
              for k, b in enumerate(blobs)}
    for _ in range(3):
        quiet.step(1)
        held.step(1)
        for (name, k), arr in arrays.items():  # a held array shows the diff after each step
            np.testing.assert_array_equal(arr, held.net.params[name][k].diff)
    a, b = _state(quiet), _state(held)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sgd_diff_is_the_update_and_writes_spare_the_history() -> None:
    s, ref = _solver(), _solver()
    s.step(2)
    ref.step(2)
    for i, p in enumerate(s.net.learnable_params):
        np.testing.assert_array_equal(p.grad.numpy(), s.updater.history[i].numpy())
    history = [h.clone() for h in s.updater.history]
    s.net.params["conv"][0].diff[...] = 7.0  # pycaffe writes into a diff after the step
    s.net.forward()
    s.net.backward()  # parameter diffs accumulate: into the diffs, not the history
    for h, h0 in zip(s.updater.history, history):
        torch.testing.assert_close(h, h0, rtol=0, atol=0)
    s.step(1)  # the step clears the diffs first, so the writes change nothing
    ref.step(1)
    a, b = _state(s), _state(ref)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_second_update_without_backward_matches_copies() -> None:
    # apply_update twice in a row: the second one reads the diff the first left (Caffe's
    # diff = update), with the history apart
    s = _solver()
    s.step(1)
    diff_before = [p.grad.clone() for p in s.net.learnable_params]
    hist_before = [h.clone() for h in s.updater.history]
    s.apply_update()
    lr, m, wd = np.float32(0.1), np.float32(0.9), np.float32(5e-3)
    for p, g0, h0, h in zip(s.net.learnable_params, diff_before, hist_before,
                            s.updater.history):
        g = g0.numpy() + wd * (p.detach().numpy() + p.grad.numpy())  # w before this update
        want = m * h0.numpy() + lr * g
        np.testing.assert_allclose(h.numpy(), want, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(p.grad.numpy(), h.numpy())

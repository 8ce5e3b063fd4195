"""Every `solver` golden case replays through decaffe's pycaffe API: the case's solver and
net, the weights of its .init.caffemodel, the recorded batch fed into the Input blobs before
each `solver.step(1)`, then the loss and every weight (BatchNorm's statistics included)
compared with what BVLC Caffe 1.0 recorded, after every step, with no blob patched. Then
Caffe's own snapshot (NAME_iter_8.solverstate + .caffemodel) is restored and training
continues from it.

The cases' Convolution before BatchNorm has no bias (a bias there has an exactly zero true
gradient, which adaptive rules would turn into steps driven by rounding noise), and Caffe
1.0's BatchNorm gives its statistics `lr_mult: 0`, so weight decay never shrinks them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from golden_replay import GOLDEN, assert_close, cases

from decaffe.solvers import get_solver
from decaffe.solvers.snapshot import read_state

SOLVER_CASES = cases("solver")
_AFTER_8: dict = {}  # name -> the replayed solver after 8 steps (shared by the two tests)


def _iters(z) -> list[int]:
    return sorted({int(k.split("/")[1]) for k in z.files if k.startswith("loss/")})


def _feed(solver, z, it: int) -> None:
    solver.net.blobs["data"].data[...] = z[f"input/{it}/data"]
    solver.net.blobs["label"].data[...] = z[f"input/{it}/label"]


def _replay(name: str, z, n_steps: int | None = None):
    """A solver trained like Caffe's recording, yielded after each step."""
    solver = get_solver(name + ".solver.prototxt")
    solver.net.copy_from(name + ".init.caffemodel")
    for it in _iters(z)[:n_steps]:
        _feed(solver, z, it)
        solver.step(1)
        yield it, solver


@pytest.mark.parametrize("case", SOLVER_CASES, ids=[c["name"] for c in SOLVER_CASES])
def test_solver_golden(case, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    name = case["name"]
    z = np.load(name + ".npz")
    compared = 0
    for it, solver in _replay(name, z):
        assert solver.iter == it + 1
        assert_close(solver.net.blobs["loss"].data, z[f"loss/{it}"], 1e-3, 1e-4,
                     f"{name}: loss at iteration {it}")
        for key in z.files:
            if not key.startswith(f"weights/{it}/"):
                continue
            _, _, lname, i = key.split("/")
            assert_close(solver.net.params[lname][int(i)].data, z[key], 2e-3, 2e-4,
                         f"{name}: weights {lname}/{i} after iteration {it}")
            compared += 1
        if solver.iter == 8:
            _AFTER_8[name] = solver
    # every blob of every layer, after every step
    n_blobs = sum(len(blobs) for blobs in solver.net.params.values())
    assert compared == len(_iters(z)) * n_blobs and n_blobs == 11


@pytest.mark.parametrize("case", SOLVER_CASES, ids=[c["name"] for c in SOLVER_CASES])
def test_restore_caffe_solverstate(case, monkeypatch):
    """Caffe's snapshot after 8 steps holds what decaffe holds after the same 8 steps, and a
    solver restored from it continues as the uninterrupted one does."""
    monkeypatch.chdir(GOLDEN)
    name = case["name"]
    z = np.load(name + ".npz")
    ours = _AFTER_8.pop(name, None)
    if ours is None:
        *_, (_, ours) = _replay(name, z, 8)
    state = read_state(name + "_iter_8.solverstate")
    caffe = get_solver(name + ".solver.prototxt")
    caffe.restore(name + "_iter_8.solverstate")
    assert caffe.iter == ours.iter == state.iter == 8
    assert caffe.lr_state.current_step == state.current_step == ours.lr_state.current_step
    # the weights come from the .caffemodel the state names
    for lname, blobs in caffe.net.params.items():
        for i, b in enumerate(blobs):
            assert_close(b.data, z[f"weights/7/{lname}/{i}"], 1e-6, 1e-7,
                         f"{name}: restored {lname}/{i}")
    # the history is Caffe's, and matches ours
    assert len(state.history) == len(ours.updater.history)
    for k, (h_caffe, h_ours, h_file) in enumerate(zip(caffe.updater.history,
                                                      ours.updater.history, state.history)):
        np.testing.assert_array_equal(h_caffe.numpy(), h_file)
        scale = float(np.abs(h_file).max())
        err = float(np.abs(h_ours.numpy() - h_file).max())
        assert err <= 2e-3 * scale + 1e-6, f"{name}: history {k} differs by {err:.3g}"
    # stepping on: Caffe's restored state and ours stay together
    for it in range(3):
        for solver in (caffe, ours):
            _feed(solver, z, it)
            solver.step(1)
        assert_close(caffe.net.blobs["loss"].data, ours.net.blobs["loss"].data, 1e-3, 1e-4,
                     f"{name}: loss after restoring, step {it}")
        for lname, blobs in caffe.net.params.items():
            for i, b in enumerate(blobs):
                assert_close(b.data, ours.net.params[lname][i].data, 2e-3, 2e-4,
                             f"{name}: {lname}/{i}, step {it} after restoring")
    assert caffe.iter == 11


def test_caffe_solverstate_rewrites_byte_for_byte(tmp_path):
    """decaffe writes a SolverState exactly as C++ Caffe serializes it."""
    from decaffe.solvers.snapshot import write_state

    for case in SOLVER_CASES:
        src = os.path.join(GOLDEN, case["name"] + "_iter_8.solverstate")
        out = str(tmp_path / "copy.solverstate")
        write_state(out, read_state(src))
        with open(src, "rb") as a, open(out, "rb") as b:
            assert a.read() == b.read(), case["name"]


def test_golden_snapshot_of_our_run_matches_caffes_files(tmp_path, monkeypatch):
    """Our snapshot after the 8 golden steps has Caffe's file names, iteration, learned_net
    and history layout."""
    monkeypatch.chdir(GOLDEN)
    name = "solver_sgd_step"
    z = np.load(name + ".npz")
    *_, (_, solver) = _replay(name, z, 8)
    solver.param.snapshot_prefix = str(tmp_path / name)
    model, state_path = solver.snapshot()
    assert model == str(tmp_path / f"{name}_iter_8.caffemodel")
    assert state_path == str(tmp_path / f"{name}_iter_8.solverstate")
    ours, theirs = read_state(state_path), read_state(name + "_iter_8.solverstate")
    assert (ours.iter, ours.current_step) == (theirs.iter, theirs.current_step)
    assert ours.learned_net == model
    assert [h.shape for h in ours.history] == [h.shape for h in theirs.history]
    for a, b in zip(ours.history, theirs.history):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-7)


def test_saved_net_describes_its_layers_as_caffe_1_0_does(tmp_path, monkeypatch):
    """Caffe 1.0 writes each layer's parameter as set up, so BatchNorm's statistics carry the
    `param { lr_mult: 0 }` entries its set-up added; decaffe's .caffemodel says the same
    (every layer field equal to Caffe's final snapshot, the blobs aside)."""
    from decaffe.proto import caffe_pb2

    monkeypatch.chdir(GOLDEN)
    for case in SOLVER_CASES:
        name = case["name"]
        solver = get_solver(name + ".solver.prototxt")
        out = str(tmp_path / "net.caffemodel")
        solver.net.save(out)
        ours, caffe = caffe_pb2.NetParameter(), caffe_pb2.NetParameter()
        with open(out, "rb") as f:
            ours.ParseFromString(f.read())
        with open(name + ".final.caffemodel", "rb") as f:
            caffe.ParseFromString(f.read())
        for p in (ours, caffe):
            for lp in p.layer:
                lp.ClearField("blobs")
        assert ours == caffe, name
        bn = [lp for lp in ours.layer if lp.type == "BatchNorm"]
        assert bn and all([s.lr_mult for s in lp.param] == [0, 0, 0] for lp in bn)

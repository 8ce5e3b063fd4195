"""Snapshots and restore: Caffe's file names and layouts (binary and HDF5), atomic writes,
exact continuation after a restore, and the errors a bad state file gives."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from solver_testlib import MLP_NET, mlp_data, solver_text, write_h5

from decaffe.errors import DecaffeError, FormatError, SolverError
from decaffe.solvers import get_solver
from decaffe.solvers import snapshot as snap

PARAMS = dict(base_lr=0.05, lr_policy="multistep", gamma=0.5, stepvalue=[3, 6], max_iter=12,
              momentum=0.9, weight_decay=0.001, random_seed=11, display=0)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, t = mlp_data(16, seed=3)  # 4 batches: an epoch every 4 iterations
    write_h5(str(tmp_path), "train", x, t)
    return tmp_path


def _solver(kind="SGD", **extra):
    return get_solver(solver_text(MLP_NET, type=kind, **{**PARAMS, **extra}))


def _weights(solver):
    return [p.detach().numpy().copy() for p in solver.net.learnable_params]


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdaDelta"])
def test_resume_at_an_epoch_boundary_is_bitwise_exact(workdir, kind, fmt):
    a = _solver(kind, snapshot_prefix="run", snapshot_format=fmt)
    a.step(4)
    model, state_path = a.snapshot()
    ext = ".h5" if fmt == "HDF5" else ""
    assert model == f"run_iter_4.caffemodel{ext}"
    assert state_path == f"run_iter_4.solverstate{ext}"
    a.step(8)
    b = _solver(kind, snapshot_prefix="run", snapshot_format=fmt, random_seed=99)
    b.restore(state_path)
    assert b.iter == 4 and b.lr_state.current_step == 1  # stepvalue 3 passed
    b.step(8)
    assert b.iter == a.iter == 12
    for i, (x, y) in enumerate(zip(_weights(a), _weights(b))):
        np.testing.assert_array_equal(x, y, err_msg=f"param {i}")
    for x, y in zip(a.updater.history, b.updater.history):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_snapshot_schedule(workdir):
    os.mkdir("out")
    s = _solver(snapshot=5, snapshot_prefix="out/m", max_iter=12)
    s.solve()
    names = sorted(os.listdir("out"))
    assert names == ["m_iter_10.caffemodel", "m_iter_10.solverstate",
                     "m_iter_12.caffemodel", "m_iter_12.solverstate",
                     "m_iter_5.caffemodel", "m_iter_5.solverstate"]
    state = snap.read_state("out/m_iter_12.solverstate")
    assert state.iter == 12 and state.learned_net == "out/m_iter_12.caffemodel"
    assert len(state.history) == 4
    # no snapshot twice when max_iter is on the schedule; none at all when told so
    s2 = _solver(snapshot=6, snapshot_prefix="out/n", max_iter=12)
    s2.solve()
    assert sorted(f for f in os.listdir("out") if f.startswith("n_")) == [
        "n_iter_12.caffemodel", "n_iter_12.solverstate",
        "n_iter_6.caffemodel", "n_iter_6.solverstate"]
    s3 = _solver(snapshot_prefix="out/q", max_iter=3, snapshot_after_train=False)
    s3.solve()
    assert not [f for f in os.listdir("out") if f.startswith("q_")]


def test_hdf5_state_layout(workdir):
    s = _solver("Adam", snapshot_prefix="h", snapshot_format="HDF5")
    s.step(2)
    model, path = s.snapshot()
    with h5py.File(path, "r") as f:
        assert int(f["iter"][()]) == 2
        assert f["learned_net"][()].decode() == model == "h_iter_2.caffemodel.h5"
        assert int(f["current_step"][()]) == 0
        assert sorted(f["history"].keys(), key=int) == [str(i) for i in range(8)]
        for i, h in enumerate(s.updater.history):
            np.testing.assert_array_equal(f["history"][str(i)][()], h.numpy())
    with h5py.File(model, "r") as f:
        assert "ip1" in f["data"]


def test_snapshot_diff_writes_the_update(workdir):
    from decaffe.formats.weights import load_weights

    s = _solver(snapshot_prefix="d", snapshot_diff=True)
    s.step(1)
    model, _ = s.snapshot()
    layers = dict(load_weights(model))
    np.testing.assert_array_equal(layers["ip1"][0].diff, s.net.params["ip1"][0].diff)


def test_snapshot_is_atomic(workdir, monkeypatch):
    """A failure while writing leaves the previous file whole and no temporary behind."""
    s = _solver(snapshot_prefix="a")
    s.step(1)
    s.snapshot()
    good = open("a_iter_1.solverstate", "rb").read()

    def boom(arr):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snap, "_blob_bytes", boom)
    with pytest.raises(OSError):
        s.snapshot()
    assert open("a_iter_1.solverstate", "rb").read() == good
    assert sorted(os.listdir(".")) == ["a_iter_1.caffemodel", "a_iter_1.solverstate",
                                       "train.h5", "train_list.txt"]


def test_restore_finds_the_model_beside_the_state(workdir, monkeypatch):
    os.mkdir("snaps")
    s = _solver(snapshot_prefix="snaps/x")
    s.step(3)
    s.snapshot()
    want = _weights(s)
    monkeypatch.chdir("snaps")  # learned_net 'snaps/x_iter_3.caffemodel' is not here
    write_h5(".", "train", *mlp_data(16, seed=3))
    t = _solver()
    t.restore("x_iter_3.solverstate")
    for x, y in zip(want, _weights(t)):
        np.testing.assert_array_equal(x, y)


def test_restore_errors(workdir):
    s = _solver(snapshot_prefix="e")
    s.step(1)
    _, path = s.snapshot()
    with pytest.raises(SolverError, match="cannot read solver state 'missing.solverstate'"):
        s.restore("missing.solverstate")
    with pytest.raises(SolverError, match="missing.solverstate.h5"):
        s.restore("missing.solverstate.h5")
    with open("junk.solverstate", "wb") as f:
        f.write(b"\xff\xff\xff\xff not a message")
    with pytest.raises(FormatError, match="junk.solverstate"):
        s.restore("junk.solverstate")
    with open("junk.solverstate.h5", "wb") as f:
        f.write(b"not hdf5")
    with pytest.raises(FormatError, match="junk.solverstate.h5"):
        s.restore("junk.solverstate.h5")
    # an Adam state (two history blobs per parameter) into an SGD solver
    adam = _solver("Adam", snapshot_prefix="adam")
    _, adam_path = adam.snapshot()
    with pytest.raises(SolverError, match="incorrect length of history blobs: the file has 8, "
                                          "this SGD solver needs 4"):
        s.restore(adam_path)
    # a state whose weights file is gone
    os.remove("e_iter_1.caffemodel")
    with pytest.raises(SolverError, match="e_iter_1.caffemodel"):
        s.restore(path)


def test_restore_rejects_a_history_of_the_wrong_shape(workdir):
    s = _solver(snapshot_prefix="w")
    state = s.state()
    state.history[2] = np.zeros((3, 3), np.float32)
    snap.write_state("w.solverstate", state)
    with pytest.raises(SolverError, match=r"history blob 2 has shape \(3, 3\)"):
        s.restore("w.solverstate")


def test_state_without_learned_net_keeps_the_weights(workdir):
    s = _solver()
    s.step(2)
    want = _weights(s)
    state = s.state()
    state.iter = 7
    snap.write_state("plain.solverstate", state)
    s.restore("plain.solverstate")
    assert s.iter == 7
    for x, y in zip(want, _weights(s)):
        np.testing.assert_array_equal(x, y)


def test_snapshot_prefix_must_be_writable(workdir):
    with pytest.raises(SolverError, match="snapshot_prefix: cannot write to snapshot prefix "
                                          "'nowhere/deep/m'"):
        _solver(snapshot=2, snapshot_prefix="nowhere/deep/m")
    with pytest.raises(SolverError, match="snapshot_prefix: snapshot is set"):
        _solver(snapshot=2)
    assert isinstance(SolverError("x"), DecaffeError)


def test_weights_field_starts_from_models(workdir):
    s = _solver(snapshot_prefix="w")
    s.step(2)
    model, _ = s.snapshot()
    t = _solver(weights=[model])
    assert t.iter == 0
    for x, y in zip(_weights(s), _weights(t)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(SolverError, match="^weights: cannot open 'gone.caffemodel'"):
        _solver(weights=[f"{model},gone.caffemodel"])

"""Multi-process training with pycaffe's NCCL recipe on torch.distributed (gloo on CPU).

Two solvers on batches of B, their gradients summed and scaled by 1/2 (Caffe's NCCL), must
end with identical weights, equal to one solver fed both batches as one batch of 2B: the
SoftmaxWithLoss averages over its batch, so the mean of the two B-batch gradients is the
2B-batch gradient, and momentum and weight decay then act identically."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pycaffe_mp_worker
import pytest
import torch

from decaffe import mode
from decaffe.errors import DecaffeError
from decaffe.pycaffe.parallel import NCCL, ParallelError, has_nccl, init_group, new_uid

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, BATCH = 4, 3


def _run_ranks(tmp_path, how: str, count: int = 2) -> list[dict[str, np.ndarray]]:
    uid = NCCL.new_uid()
    procs, outs = [], []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if how == "torchrun":
        host, port = uid.decode()[len("tcp://"):].rsplit(":", 1)
        env.update(WORLD_SIZE=str(count), MASTER_ADDR=host, MASTER_PORT=port)
    for rank in range(count):
        if how == "torchrun":
            env = dict(env, RANK=str(rank))
        out = tmp_path / f"rank{rank}.npz"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "pycaffe_mp_worker.py"), str(rank), str(count),
             uid.decode(), str(out), str(STEPS), str(BATCH), how],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [dict(np.load(o)) for o in outs]


def _single_process_reference() -> tuple[dict, dict]:
    """One solver, batch 2B: at step t the two ranks' batches t, concatenated."""
    from decaffe.layers.data import set_input_arrays
    from decaffe.solvers import get_solver

    mode.set_solver_count(1)
    mode.set_solver_rank(0)
    solver = get_solver(pycaffe_mp_worker.solver_text(2 * BATCH, STEPS))
    x, y = pycaffe_mp_worker.dataset(STEPS, BATCH, 2)
    # rank r's batch t is dataset batch t*2 + r, so the 2B batch t is rows [2tB, 2(t+1)B)
    set_input_arrays(solver.net, np.ascontiguousarray(x), np.ascontiguousarray(y))
    init = pycaffe_mp_worker.params_of(solver.net)
    solver.step(STEPS)
    return init, pycaffe_mp_worker.params_of(solver.net)


def _split(result: dict, tag: str) -> dict:
    return {k.split(":", 1)[1]: v for k, v in result.items() if k.startswith(tag + ":")}


def _check_two_ranks(results):
    r0, r1 = results
    init0, init1 = _split(r0, "init"), _split(r1, "init")
    # each rank seeds random_seed + rank, so they start apart; bcast gives rank 0's weights
    assert any(not np.array_equal(init0[k], init1[k]) for k in init0)
    for k in init0:
        np.testing.assert_array_equal(_split(r1, "bcast")[k], init0[k])
        np.testing.assert_array_equal(_split(r0, "bcast")[k], init0[k])
    final0, final1 = _split(r0, "final"), _split(r1, "final")
    for k in final0:
        np.testing.assert_array_equal(final0[k], final1[k], err_msg=k)
    ref_init, ref_final = _single_process_reference()
    for k in ref_init:
        np.testing.assert_array_equal(ref_init[k], init0[k], err_msg=k)
    moved = 0.0
    for k in ref_final:
        np.testing.assert_allclose(final0[k], ref_final[k], rtol=2e-5, atol=2e-6, err_msg=k)
        moved = max(moved, float(np.abs(ref_final[k] - ref_init[k]).max()))
    assert moved > 1e-2  # the steps did change the weights


def test_has_nccl_and_uid():
    assert has_nccl() is True  # gloo is in every CPU build of torch
    uid = NCCL.new_uid()
    assert isinstance(uid, bytes)
    assert uid.startswith(b"tcp://127.0.0.1:")
    assert uid != new_uid()


@pytest.mark.skipif(not has_nccl(), reason="torch.distributed unavailable")
def test_two_processes_explicit_callbacks(tmp_path):
    _check_two_ranks(_run_ranks(tmp_path, "explicit"))


@pytest.mark.skipif(not has_nccl(), reason="torch.distributed unavailable")
def test_two_processes_pycaffe_recipe(tmp_path):
    """solver.add_callback(nccl), exactly as pycaffe's train.py writes it."""
    _check_two_ranks(_run_ranks(tmp_path, "recipe"))


@pytest.mark.skipif(not has_nccl(), reason="torch.distributed unavailable")
def test_two_processes_under_torchrun_environment(tmp_path):
    """No uid, no set_solver_count/rank: torchrun's variables give the group."""
    _check_two_ranks(_run_ranks(tmp_path, "torchrun"))


class _FakeNet:
    def __init__(self, params):
        self.learnable_params = params


class _FakeSolver:
    def __init__(self, params):
        self.net = _FakeNet(params)


def test_single_solver_needs_no_group():
    mode.set_solver_count(1)
    mode.set_solver_rank(0)
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    nccl = NCCL(_FakeSolver([p]))
    nccl.bcast()
    nccl.on_start()
    nccl.on_gradients_ready()
    assert torch.equal(p.grad, torch.full((3,), 2.0))


def test_world_of_one_with_uid_flattens_gradients(tmp_path):
    """A group of one: the all-reduce is the identity, and the gradients end up as views of
    one flat buffer that later iterations reduce without copying."""
    import torch.distributed as dist

    mode.set_solver_count(1)
    mode.set_solver_rank(0)
    a = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    b = torch.nn.Parameter(torch.ones(4))
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    try:
        nccl = NCCL(_FakeSolver([a, frozen, b]), f"file://{tmp_path / 'rendezvous'}".encode())
        assert dist.is_initialized() and dist.get_world_size() == 1
        (a.sum() * 3 + (b * b).sum()).backward()
        nccl.on_gradients_ready()
        assert torch.equal(a.grad, torch.full((2, 3), 3.0))
        assert torch.equal(b.grad, torch.full((4,), 2.0))
        assert a.grad.data_ptr() + 6 * 4 == b.grad.data_ptr()  # one buffer, in order
        flat = nccl._flat
        a.grad.zero_()
        b.grad.zero_()
        (a.sum() + b.sum()).backward()  # autograd accumulates into the views
        nccl.on_gradients_ready()
        assert nccl._flat is flat
        assert torch.equal(a.grad, torch.ones(2, 3)) and torch.equal(b.grad, torch.ones(4))
        # a solver that drops the gradients gets a fresh buffer, same values
        a.grad, b.grad = None, torch.full((4,), 5.0)
        nccl.on_gradients_ready()
        assert torch.equal(a.grad, torch.zeros(2, 3)) and torch.equal(b.grad, torch.full((4,), 5.0))
        # a second NCCL in the same process reuses the group
        NCCL(_FakeSolver([a]), b"")
    finally:
        from decaffe.pycaffe.parallel import shutdown

        shutdown()
    assert not dist.is_initialized()


def test_errors():
    mode.set_solver_count(2)
    mode.set_solver_rank(0)
    try:
        with pytest.raises(ParallelError, match="uid"):
            NCCL(_FakeSolver([]), b"")
        with pytest.raises(ParallelError, match="rendezvous"):
            NCCL(_FakeSolver([]), b"not-an-address")
        with pytest.raises(DecaffeError, match="solver"):
            NCCL(object(), new_uid())
        mode.set_solver_rank(2)
        with pytest.raises(ParallelError, match="rank 2"):
            init_group(new_uid())
    finally:
        mode.set_solver_count(1)
        mode.set_solver_rank(0)

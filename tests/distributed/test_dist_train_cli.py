"""`decaffe train` with two gloo workers on this machine, through the command line.

Worker r of N reads the records whose index is r mod N, so at each step the two workers'
batches of b together are the records one worker with batch 2b reads. Caffe's gradient
exchange sums the workers' gradients and scales by 1/N; each worker's loss already averages
over its own b records, so the result is the gradient of the 2b batch. The weights then
agree with the single worker's to float rounding, not bitwise: the single worker's inner
products sum 2b products in one GEMM, the workers sum b each and then add the two halves
(another summation order), and the softmax loss scales by 1/(2b) once instead of 1/b then
1/2.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import dist_helpers as H
import numpy as np
import pytest
import torch

from decaffe.distributed import has_nccl

pytestmark = pytest.mark.skipif(not has_nccl(), reason="torch.distributed unavailable")


def _close(a: dict, b: dict, rtol=1e-5, atol=1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


def test_two_workers_equal_one_worker_with_the_double_batch(tmp_path):
    listing = H.write_data(str(tmp_path), 64)
    two = H.write_solver(str(tmp_path), "two", listing, 4)
    one = H.write_solver(str(tmp_path), "one", listing, 8)
    r = H.train("-solver", two, "-workers", "2")
    assert "All 2 workers end with bitwise-equal weights" in r.stderr
    # rank 0 alone logs: one "Iteration 4, loss" line, not two
    assert len(re.findall(r"\] Iteration 4(?: \([^)]*\))?, loss = ", r.stderr)) == 1
    H.train("-solver", one)
    got = H.final(tmp_path, "two")
    want = H.final(tmp_path, "one")
    _close(got, want)


def test_sync_bn_statistics_are_the_global_batch_ones(tmp_path):
    """-sync_bn under torchrun: BatchNorm's three blobs (and every weight) as one process
    with the whole batch gets them."""
    listing = H.write_data(str(tmp_path), 64, seed=3)
    two = H.write_solver(str(tmp_path), "two", listing, 4, bn=True)
    one = H.write_solver(str(tmp_path), "one", listing, 8, bn=True)
    port = H.free_port()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                        "--nproc_per_node", "2", "--master_port", str(port), "-m", "decaffe",
                        "train", "-solver", two, "-sync_bn"], env=H.env(), cwd=H.REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    H.train("-solver", one)
    got = H.final(tmp_path, "two")
    want = H.final(tmp_path, "one")
    _close(got, want, rtol=2e-5, atol=2e-6)
    assert want["bn/2"][0] > 1  # the statistics did accumulate


def test_without_sync_bn_each_worker_keeps_its_own_statistics(tmp_path):
    """Caffe's default: rank 0's statistics are those of its own records (indices 0, 2, 4,
    ...), not the global batch's. base_lr 0 keeps the weights fixed, so the statistics are
    comparable with one process fed only rank 0's records."""
    listing = H.write_data(str(tmp_path), 64, seed=4)
    two = H.write_solver(str(tmp_path), "two", listing, 4, bn=True, base_lr=0)
    H.train("-solver", two, "-workers", "2")
    got = H.final(tmp_path, "two")
    import h5py

    with h5py.File(str(tmp_path / "data.h5")) as f:
        x, y = f["data"][()], f["label"][()]
    even = tmp_path / "even"
    even.mkdir()
    with h5py.File(str(even / "data.h5"), "w") as f:
        f["data"], f["label"] = x[0::2], y[0::2]
    (even / "list.txt").write_text(str(even / "data.h5") + "\n")
    own = H.write_solver(str(even), "own", str(even / "list.txt"), 4, bn=True, base_lr=0)
    H.train("-solver", own)
    mine = H.final(even, "own")
    for k in ("bn/0", "bn/1", "bn/2"):
        np.testing.assert_allclose(got[k], mine[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # and not those of all records (rank 1's odd ones differ)
    assert not np.allclose(x[0::2].mean(0), x[1::2].mean(0), rtol=1e-2)


def test_a_killed_worker_is_named_and_snapshot_auto_resumes_exactly(tmp_path):
    """SIGKILL one worker mid-run: the other exits non-zero within 60 s naming rank 1. The
    rerun with -snapshot auto continues from the newest snapshot and ends bitwise equal to an
    uninterrupted run. The snapshots fall inside epochs (100 records, 8 per iteration): rank 0
    writes every worker's data position with them, and each worker resumes at its own."""
    listing = H.write_data(str(tmp_path), 100, seed=5)
    solver = H.write_solver(str(tmp_path), "cut", listing, 4, max_iter=160, snapshot=20,
                            base_lr=0.05)
    port = H.free_port()
    procs, logs = [], []
    for rank in range(2):
        log = open(tmp_path / f"rank{rank}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "decaffe", "train", "-solver", solver], cwd=H.REPO,
            stdout=log, stderr=subprocess.STDOUT,
            env=H.env(WORLD_SIZE=2, RANK=rank, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=port, DECAFFE_HEARTBEAT_TIMEOUT=20)))
    try:
        first = tmp_path / "cut" / "snap_iter_20.solverstate"
        deadline = time.monotonic() + 180
        while not first.exists() and time.monotonic() < deadline:
            assert procs[0].poll() is None, (tmp_path / "rank0.log").read_text()[-3000:]
            time.sleep(0.02)
        assert first.exists()
        procs[1].kill()
        killed = time.monotonic()
        code = procs[0].wait(timeout=60)
        took = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    text = (tmp_path / "rank0.log").read_text()
    if code == 0:
        pytest.skip("rank 0 finished all 160 iterations before the kill (machine too fast)")
    assert took < 60
    assert "worker rank 1" in text, text[-2000:]
    r = H.train("-solver", solver, "-workers", "2", "-snapshot", "auto")
    assert "Resuming from" in r.stderr and "snap_iter_" in r.stderr
    ref = H.write_solver(str(tmp_path), "ref", listing, 4, max_iter=160, snapshot=20,
                         base_lr=0.05)
    r = H.train("-solver", ref, "-workers", "2", "-snapshot", "auto")
    assert "starting fresh" in r.stderr
    a = (tmp_path / "cut" / "snap_iter_160.caffemodel").read_bytes()
    b = (tmp_path / "ref" / "snap_iter_160.caffemodel").read_bytes()
    assert a == b


def test_a_worker_that_fails_by_itself_is_named(tmp_path):
    """A worker whose own code fails (rank 1 runs in a folder without the data list the net
    names relatively) tells the others, which stop naming it."""
    listing = H.write_data(str(tmp_path), 32)
    solver = H.write_solver(str(tmp_path), "bad", os.path.basename(listing), 4, max_iter=400)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = H.free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "decaffe", "train", "-solver", solver],
        cwd=str(tmp_path if rank == 0 else elsewhere), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env=H.env(WORLD_SIZE=2, RANK=rank, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1",
                  MASTER_PORT=port)) for rank in range(2)]
    try:
        outs = [p.communicate(timeout=90)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[1].returncode != 0 and "list.txt" in outs[1], outs[1][-2000:]
    assert procs[0].returncode != 0
    assert "worker rank 1" in outs[0] and "failed" in outs[0], outs[0][-2000:]


def test_multi_worker_flags_are_checked(tmp_path):
    listing = H.write_data(str(tmp_path), 16)
    solver = H.write_solver(str(tmp_path), "f", listing, 4)
    for args, msg in ((["-workers", "-1"], "-workers"), (["-gpu", "0,0"], "-gpu")):
        r = subprocess.run([sys.executable, "-m", "decaffe", "train", "-solver", solver, *args],
                           env=H.env(), cwd=H.REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and msg in r.stderr, r.stderr[-2000:]


def test_snapshot_auto_picks_the_newest_complete_snapshot(tmp_path):
    from decaffe.distributed.resume import newest_complete_snapshot
    from decaffe.solvers import get_solver

    listing = H.write_data(str(tmp_path), 32)
    solver_path = H.write_solver(str(tmp_path), "s", listing, 4, max_iter=4, snapshot=2)
    prefix = str(tmp_path / "s" / "snap")
    assert newest_complete_snapshot(prefix) is None
    solver = get_solver(solver_path)
    solver.step(4)
    solver.net.close()
    assert newest_complete_snapshot(prefix).endswith("snap_iter_4.solverstate")
    # a snapshot cut short (weights written, state missing or truncated) is skipped
    with open(prefix + "_iter_6.solverstate", "wb") as f:
        f.write(b"\x08")
    os.remove(prefix + "_iter_4.caffemodel")
    assert newest_complete_snapshot(prefix).endswith("snap_iter_2.solverstate")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(c) for c in f.read().split())
    except OSError:
        return []


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_the_parent_names_a_killed_worker_and_exits_non_zero(tmp_path):
    listing = H.write_data(str(tmp_path), 64)
    solver = H.write_solver(str(tmp_path), "par", listing, 4, max_iter=100000, snapshot=10)
    parent = subprocess.Popen([sys.executable, "-m", "decaffe", "train", "-solver", solver,
                               "-workers", "2"], env=H.env(DECAFFE_HEARTBEAT_TIMEOUT=20),
                              cwd=H.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 180
        first = tmp_path / "par" / "snap_iter_10.solverstate"
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = _children(parent.pid)
        assert first.exists() and len(kids) == 2, kids
        os.kill(kids[1], 9)  # rank 1: the second worker started
        out = parent.communicate(timeout=60)[0]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for k in _children(parent.pid):
            os.kill(k, 9)
    assert parent.returncode != 0
    assert "worker rank 1" in out and "SIGKILL" in out, out[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices")
def test_two_gpus_equal_one_gpu_with_the_double_batch(tmp_path):
    """NCCL: -gpu 0,1 against -gpu 0 with the double batch."""
    listing = H.write_data(str(tmp_path), 64)
    two = H.write_solver(str(tmp_path), "two", listing, 4, bn=True)
    one = H.write_solver(str(tmp_path), "one", listing, 8, bn=True)
    r = H.train("-solver", two, "-gpu", "0,1", "-sync_bn")
    assert "All 2 workers end with bitwise-equal weights" in r.stderr
    assert "backend nccl" in r.stderr
    H.train("-solver", one, "-gpu", "0")
    _close(H.final(tmp_path, "two"), H.final(tmp_path, "one"), rtol=1e-4, atol=1e-5)


def test_torchrun_max_restarts_recovers_a_lost_worker(tmp_path):
    """torchrun --max_restarts 1 with -snapshot auto: a SIGKILLed worker makes torchrun
    restart both; they resume from the newest snapshot (each attempt joins its own group,
    not the previous attempt's addresses left in the store) and finish."""
    listing = H.write_data(str(tmp_path), 160, seed=5)
    solver = H.write_solver(str(tmp_path), "tr", listing, 4, max_iter=160, snapshot=20,
                            base_lr=0.05)
    port = H.free_port()
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                            "2", "--max_restarts", "1", "--rdzv_backend", "c10d",
                            "--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "decaffe", "train",
                            "-solver", solver, "-snapshot", "auto"], cwd=H.REPO,
                           env=H.env(DECAFFE_HEARTBEAT_TIMEOUT=20), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        first = tmp_path / "tr" / "snap_iter_20.solverstate"
        deadline = time.monotonic() + 180
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        agents = _children(run.pid)
        workers = [w for a in agents for w in _children(a)] or agents
        assert first.exists() and len(workers) >= 2, workers
        os.kill(max(workers), 9)
        out = run.communicate(timeout=240)[0]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    if "Resuming from" not in out:
        pytest.skip("the run finished before the kill (machine too fast)")
    assert run.returncode == 0, out[-3000:]
    assert (tmp_path / "tr" / "snap_iter_160.caffemodel").exists()

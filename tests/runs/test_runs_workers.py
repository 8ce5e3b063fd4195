"""SIGTERM and run recording with two gloo workers (`decaffe train -workers 2`): every
worker stops at the same iteration, rank 0 alone snapshots and records, the parent exits
with 75, and `-snapshot auto` ends bitwise equal to an uninterrupted two-worker run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import runs_testlib as R

from decaffe.distributed import has_nccl
from decaffe.runs import read_events

pytestmark = [pytest.mark.skipif(not has_nccl(), reason="torch.distributed unavailable"),
              pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")]

NET = """name: "mlp"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param { source: "list.txt" batch_size: 4 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "ip1" top: "ip1"
        batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "sc" type: "Scale" bottom: "ip1" top: "ip1" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def _job(folder: str, max_iter: int) -> str:
    os.makedirs(os.path.join(folder, "out"), exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(os.path.join(folder, "data.h5"), "w") as f:
        f["data"] = rng.normal(size=(64, 8)).astype(np.float32)
        f["label"] = rng.integers(0, 3, size=64).astype(np.float32)
    with open(os.path.join(folder, "list.txt"), "w") as f:
        f.write("data.h5\n")
    with open(os.path.join(folder, "net.prototxt"), "w") as f:
        f.write(NET)
    with open(os.path.join(folder, "solver.prototxt"), "w") as f:
        f.write(f'net: "net.prototxt" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" '
                f'max_iter: {max_iter} display: 10 snapshot: 0 snapshot_prefix: "out/mlp" '
                f'random_seed: 5 solver_mode: CPU\n')
    return folder


def _two_workers(folder: str, *extra: str, log_name: str) -> subprocess.Popen:
    log = open(os.path.join(folder, log_name), "w")
    return subprocess.Popen([sys.executable, "-m", "decaffe", "train", "-solver",
                             "solver.prototxt", "-workers", "2", *extra], cwd=folder,
                            env=R.env(), stdout=log, stderr=subprocess.STDOUT)


def test_sigterm_stops_every_worker_at_one_iteration_and_resumes_exactly(tmp_path):
    full = _job(str(tmp_path / "full"), 1500)
    proc = _two_workers(full, log_name="full.log")
    assert proc.wait(timeout=300) == 0, open(os.path.join(full, "full.log")).read()[-3000:]

    cut = _job(str(tmp_path / "cut"), 1500)
    log = os.path.join(cut, "cut.log")
    proc = _two_workers(cut, "-snapshot", "auto", log_name="cut.log")
    try:
        R.wait_for(log, r"Iteration 60 \(", proc)
        proc.send_signal(signal.SIGTERM)  # the parent forwards it to both workers
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = open(log).read()
    assert rc == 75, text[-3000:]
    stop = int(re.search(r"SIGTERM: stopped at iteration (\d+)", text).group(1))
    assert "exited with status" not in text  # 75 is no worker failure
    shots = sorted(f for f in os.listdir(os.path.join(cut, "out")) if "_iter_" in f)
    assert shots == [f"mlp_iter_{stop}.caffemodel", f"mlp_iter_{stop}.solverstate"]
    # rank 0 alone recorded: one train record per display, no second writer
    records = read_events(os.path.join(cut, "out", "mlp.run", "events.jsonl")).records
    train = [r["iter"] for r in records if r["kind"] == "train"]
    assert train == list(range(0, stop, 10))
    assert records[-1]["kind"] == "end" and records[-1]["reason"] == "sigterm"

    proc = _two_workers(cut, "-snapshot", "auto", log_name="resume.log")
    assert proc.wait(timeout=300) == 0, open(os.path.join(cut, "resume.log")).read()[-3000:]
    a = open(os.path.join(full, "out", "mlp_iter_1500.caffemodel"), "rb").read()
    b = open(os.path.join(cut, "out", "mlp_iter_1500.caffemodel"), "rb").read()
    assert a == b

"""kill -9 at random moments of `decaffe train` with a snapshot every iteration: every
snapshot left loads, resuming from the newest works, and no temporary file remains after the
next run. Used by tests/fuzz/test_kill9.py; as a script: python killtrain.py [--rounds 20]."""

from __future__ import annotations

import argparse
import glob
import os
import random
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

NET = """name: "kill9"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "list.txt" batch_size: 8 shuffle: true } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 512 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
base_lr: 0.01
momentum: 0.9
lr_policy: "fixed"
max_iter: {max_iter}
display: 0
snapshot: 1
snapshot_prefix: "snaps/kill"
snapshot_format: {fmt}
random_seed: 3
"""

TEMP = re.compile(r"\.kill_iter_\d+\.(?:caffemodel|solverstate)(?:\.h5)?\.[A-Za-z0-9_]{8}\.tmp")


def setup(folder: str) -> None:
    import h5py
    import numpy as np

    os.makedirs(os.path.join(folder, "snaps"), exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(os.path.join(folder, "d.h5"), "w") as f:
        f["data"] = rng.random((37, 256), np.float32)
        f["label"] = rng.integers(0, 4, 37).astype(np.float32)
    with open(os.path.join(folder, "list.txt"), "w") as f:
        f.write("d.h5\n")
    with open(os.path.join(folder, "net.prototxt"), "w") as f:
        f.write(NET)


def _train(folder: str, solver: str, snapshot: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "decaffe", "train", "-solver", solver, "-noprogress"]
    if snapshot:
        cmd += ["-snapshot", snapshot]
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _write_solver(folder: str, max_iter: int, fmt: str) -> str:
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w") as f:
        f.write(SOLVER.format(max_iter=max_iter, fmt=fmt))
    return path


def _iter_of(path: str) -> int:
    return int(re.search(r"_iter_(\d+)\.", path).group(1))


def check_snapshots(folder: str) -> list[str]:
    """Every snapshot file present loads; returns the solver states, oldest first."""
    from decaffe.formats.weights import load_weights
    from decaffe.solvers.snapshot import read_state

    snaps = os.path.join(folder, "snaps")
    for model in glob.glob(os.path.join(snaps, "kill_iter_*.caffemodel*")):
        assert load_weights(model), model
    states = sorted(glob.glob(os.path.join(snaps, "kill_iter_*.solverstate*")), key=_iter_of)
    for state in states:
        s = read_state(state)
        assert s.iter == _iter_of(state) and len(s.history) == 4, state
        assert s.positions is not None, state
    return states


def temporaries(folder: str) -> list[str]:
    return [n for n in os.listdir(os.path.join(folder, "snaps")) if TEMP.fullmatch(n)]


def one_round(folder: str, r: random.Random, fmt: str) -> dict:
    """Train, kill -9 at a random moment, check, resume from the newest state to 2 more
    iterations, check again. Returns what happened."""
    solver = _write_solver(folder, 100000, fmt)
    proc = _train(folder, solver)
    snaps = os.path.join(folder, "snaps")
    start = time.time()
    # wait for training to be under way (a first snapshot), then a random moment more
    while not glob.glob(os.path.join(snaps, "kill_iter_*")) and time.time() - start < 120:
        if proc.poll() is not None:
            raise AssertionError(f"train ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    time.sleep(r.uniform(0.0, 1.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    left_behind = temporaries(folder)
    states = check_snapshots(folder)
    assert states, "no snapshot was written before the kill"
    newest = states[-1]
    it = _iter_of(newest)
    solver = _write_solver(folder, it + 2, fmt)
    resumed = _train(folder, solver, os.path.relpath(newest, folder))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    check_snapshots(folder)
    assert not temporaries(folder), temporaries(folder)
    assert os.path.exists(os.path.join(snaps, f"kill_iter_{it + 2}.solverstate"
                                       + (".h5" if fmt == "HDF5" else "")))
    return {"killed_at": it, "temporaries_left_by_kill": len(left_behind)}


def run(folder: str, rounds: int, seed: int = 0) -> list[dict]:
    setup(folder)
    r = random.Random(seed)
    out = []
    for i in range(rounds):
        fmt = "HDF5" if i % 2 else "BINARYPROTO"
        out.append(one_round(folder, r, fmt))
    return out


if __name__ == "__main__":
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    results = run(tempfile.mkdtemp(prefix="decaffe-kill9-"), args.rounds, args.seed)
    for i, res in enumerate(results):
        print(f"round {i}: killed after iteration {res['killed_at']}, "
              f"{res['temporaries_left_by_kill']} temporaries left by the kill, "
              "removed by the resumed run; every snapshot loaded")
    print(f"{len(results)} rounds passed")

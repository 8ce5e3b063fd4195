"""Shared by the multi-worker tests: a small HDF5 data set, nets with and without BatchNorm,
solvers, and running `decaffe train` as a command (one or several workers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import h5py
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_data(folder, rows: int, seed: int = 0, features: int = 8, classes: int = 3) -> str:
    """rows × features float data and labels in one HDF5 file; returns the list file."""
    rng = np.random.default_rng(seed)
    path = os.path.join(folder, "data.h5")
    with h5py.File(path, "w") as f:
        f["data"] = rng.normal(size=(rows, features)).astype(np.float32) * 2 + 0.5
        f["label"] = rng.integers(0, classes, size=rows).astype(np.float32)
    listing = os.path.join(folder, "list.txt")
    with open(listing, "w") as f:
        f.write(path + "\n")
    return listing


def net_text(listing: str, batch: int, bn: bool) -> str:
    mid = ""
    if bn:
        mid = """
layer { name: "bn" type: "BatchNorm" bottom: "ip1" top: "ip1"
        batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "sc" type: "Scale" bottom: "ip1" top: "ip1" scale_param { bias_term: true } }"""
    return f"""name: "mlp"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param {{ source: "{listing}" batch_size: {batch} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param {{ num_output: 6
                               weight_filler {{ type: "gaussian" std: 0.3 }} }} }}{mid}
layer {{ name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""


def write_solver(folder, tag: str, listing: str, batch: int, *, bn: bool = False,
                 max_iter: int = 12, snapshot: int = 0, base_lr: float = 0.1) -> str:
    net = os.path.join(folder, f"net_{tag}.prototxt")
    with open(net, "w") as f:
        f.write(net_text(listing, batch, bn))
    os.makedirs(os.path.join(folder, tag), exist_ok=True)
    solver = os.path.join(folder, f"solver_{tag}.prototxt")
    with open(solver, "w") as f:
        f.write(f"""net: "{net}"
base_lr: {base_lr} momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed" max_iter: {max_iter}
display: 4 snapshot: {snapshot} snapshot_prefix: "{os.path.join(folder, tag, 'snap')}"
random_seed: 5 solver_mode: CPU
""")
    return solver


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
              "LOCAL_WORLD_SIZE", "TORCHELASTIC_USE_AGENT_STORE"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def train(*args: str, timeout: float = 240, **extra_env) -> subprocess.CompletedProcess:
    """`python -m decaffe train ARGS`; fails the test with the log on a non-zero exit."""
    r = subprocess.run([sys.executable, "-m", "decaffe", "train", *args], env=env(**extra_env),
                       capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def params(net_path: str, model: str) -> dict[str, np.ndarray]:
    from decaffe.net import Net

    net = Net(net_path, 1, weights=model)
    out = {f"{name}/{i}": np.array(b.data) for name, blobs in net.params.items()
           for i, b in enumerate(blobs)}
    net.close()
    return out


def final(folder, tag: str, iteration: int = 12) -> dict[str, np.ndarray]:
    """The weights the run `tag` (write_solver) snapshotted at the end."""
    return params(os.path.join(folder, f"net_{tag}.prototxt"),
                  os.path.join(folder, tag, f"snap_iter_{iteration}.caffemodel"))

"""Shared pieces of the solver tests: small nets and data, and Caffe's update formulas in
numpy (written from Caffe's documented semantics, independently of decaffe's code)."""

from __future__ import annotations

import math
import os
import re

import h5py
import numpy as np

# glog line: severity, date, time, thread, file:line] message
GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [^ ]+:\d+\] ")
# Caffe's tools/extra/parse_log.py expressions
RE_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
RE_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
RE_LR = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
# Caffe 1.0's display line "Iteration N (X iter/s, Ys/D iters), loss = L", and Solve's last
# "Iteration N, loss = L"
RE_LOSS = re.compile(r"Iteration (\d+)(?: \(\S+ iter/s, \S+s/\d+ iters\))?, loss = ([\.\deE+-]+)")
RE_DISPLAY = re.compile(r"\] Iteration (\d+) \((\S+) iter/s, (\S+)s/(\d+) iters\), loss = (\S+)$",
                        re.MULTILINE)


def write_h5(folder: str, name: str, data: np.ndarray, label: np.ndarray) -> str:
    """An HDF5 file and its list file (as HDF5Data reads them); returns the list file name."""
    with h5py.File(os.path.join(folder, name + ".h5"), "w") as f:
        f["data"] = data.astype(np.float32)
        f["label"] = label.astype(np.float32)
    with open(os.path.join(folder, name + "_list.txt"), "w") as f:
        f.write(name + ".h5\n")
    return name + "_list.txt"


# A two-layer regression net on HDF5 batches: ip1 (3→4) then ip2 (4→2), Euclidean loss.
# Multipliers differ per blob (ip2's bias is frozen with lr_mult 0 but decays) so the
# update's per-parameter rates and decays are all exercised.
MLP_NET = """
name: "mlp"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "train_list.txt" batch_size: 4 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 0.5 decay_mult: 2 } param { lr_mult: 0 decay_mult: 1 }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "constant" value: 0.2 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

MLP_MULTS = [(1.0, 1.0), (2.0, 0.0), (0.5, 2.0), (0.0, 1.0)]  # (lr_mult, decay_mult)


def mlp_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    t = rng.normal(size=(n, 2)).astype(np.float32)
    return x, t


def mlp_grads(params: list[np.ndarray], x: np.ndarray, t: np.ndarray):
    """(loss, [dW1, db1, dW2, db2]) of the MLP in float64; db2 is 0 because lr_mult 0 keeps
    Caffe from computing it."""
    w1, b1, w2, b2 = (p.astype(np.float64) for p in params)
    x = x.astype(np.float64)
    h = x @ w1.T + b1
    y = h @ w2.T + b2
    n = x.shape[0]
    diff = y - t
    loss = float((diff ** 2).sum() / (2 * n))
    dy = diff / n
    dw2 = dy.T @ h
    dh = dy @ w2
    dw1 = dh.T @ x
    db1 = dh.sum(0)
    return loss, [dw1, db1, dw2, np.zeros_like(b2)]


def learning_rate(p: dict, it: int, step: list[int]) -> float:
    """Caffe's policies from their documented formulas (step[0]: multistep's counter)."""
    pol = p["lr_policy"]
    base, gamma, power = p["base_lr"], p.get("gamma", 0.0), p.get("power", 0.0)
    if pol == "fixed":
        return base
    if pol == "step":
        return base * gamma ** (it // p["stepsize"])
    if pol == "exp":
        return base * gamma ** it
    if pol == "inv":
        return base * (1 + gamma * it) ** (-power)
    if pol == "multistep":
        values = p["stepvalue"]
        if step[0] < len(values) and it >= values[step[0]]:
            step[0] += 1
        return base * gamma ** step[0]
    if pol == "poly":
        return base * (1 - it / p["max_iter"]) ** power
    if pol == "sigmoid":
        return base / (1 + math.exp(-gamma * (it - p["stepsize"])))
    raise ValueError(pol)


class ReferenceSolver:
    """Caffe's ApplyUpdate in float64 numpy: clip, normalize, regularize, rule, w −= update."""

    def __init__(self, kind: str, p: dict, params: list[np.ndarray], mults):
        self.kind, self.p = kind, p
        self.w = [a.astype(np.float64).copy() for a in params]
        self.mults = mults
        n_hist = 2 if kind in ("Adam", "AdaDelta") else 1
        self.hist = [np.zeros_like(a) for _ in range(n_hist) for a in self.w]
        self.it = 0
        self.step_counter = [0]

    def update(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        p, n = self.p, len(self.w)
        rate = learning_rate(p, self.it, self.step_counter)
        g = [np.array(a, np.float64) for a in grads]
        clip = p.get("clip_gradients", -1)
        if clip >= 0:
            norm = math.sqrt(sum(float((a ** 2).sum()) for a in g))
            if norm > clip:
                g = [a * (clip / norm) for a in g]
        g = [a / p.get("iter_size", 1) for a in g]
        wd = p.get("weight_decay", 0.0)
        reg = p.get("regularization_type", "L2")
        for i in range(n):
            decay = wd * self.mults[i][1]
            if decay:
                g[i] = g[i] + decay * (self.w[i] if reg == "L2" else np.sign(self.w[i]))
        m = p.get("momentum", 0.0)
        delta = p.get("delta", 1e-8)
        for i in range(n):
            lr = rate * self.mults[i][0]
            h = self.hist[i]
            if self.kind == "SGD":
                h[...] = m * h + lr * g[i]
                u = h.copy()
            elif self.kind == "Nesterov":
                old = h.copy()
                h[...] = m * h + lr * g[i]
                u = (1 + m) * h - m * old
            elif self.kind == "AdaGrad":
                h += g[i] ** 2
                u = lr * g[i] / (np.sqrt(h) + delta)
            elif self.kind == "RMSProp":
                rd = p["rms_decay"]
                h[...] = rd * h + (1 - rd) * g[i] ** 2
                u = lr * g[i] / (np.sqrt(h) + delta)
            elif self.kind == "AdaDelta":
                h2 = self.hist[n + i]
                h[...] = m * h + (1 - m) * g[i] ** 2
                gi = g[i] * np.sqrt((h2 + delta) / (h + delta))
                h2[...] = m * h2 + (1 - m) * gi ** 2
                u = lr * gi
            elif self.kind == "Adam":
                b2 = p["momentum2"]
                v = self.hist[n + i]
                h[...] = m * h + (1 - m) * g[i]
                v[...] = b2 * v + (1 - b2) * g[i] ** 2
                t = self.it + 1
                corr = math.sqrt(1 - b2 ** t) / (1 - m ** t)
                u = lr * corr * h / (np.sqrt(v) + delta)
            else:
                raise ValueError(self.kind)
            self.w[i] = self.w[i] - u
        self.it += 1
        return self.w


def solver_text(net: str, **fields) -> str:
    """A solver prototxt with an inline net_param and the given fields."""
    lines = ["net_param {" + net + "}"]
    for k, v in fields.items():
        values = v if isinstance(v, (list, tuple)) else [v]
        for one in values:
            if isinstance(one, str) and k not in ("solver_mode", "snapshot_format"):
                lines.append(f'{k}: "{one}"')
            elif isinstance(one, bool):
                lines.append(f"{k}: {'true' if one else 'false'}")
            else:
                lines.append(f"{k}: {one}")
    return "\n".join(lines) + "\n"

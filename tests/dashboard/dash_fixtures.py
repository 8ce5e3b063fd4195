"""Run folders written to the run-folder format v1 (docs/dashboard.md), for the dashboard's
tests: a small BN net's description and records whose values follow from the iteration, so
that tests can assert what the page and the routes show."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CAFFE_LOG = os.path.join(DATA, "caffe_cifar10_quick.log")

# a small net: conv -> BatchNorm -> Scale -> ReLU -> ip -> loss, twice the BN block
LAYERS = [
    {"name": "data", "type": "Input", "bottoms": [], "tops": ["data", "label"], "phase": "TRAIN"},
    {"name": "conv1", "type": "Convolution", "bottoms": ["data"], "tops": ["conv1"],
     "phase": "TRAIN"},
    {"name": "bn1", "type": "BatchNorm", "bottoms": ["conv1"], "tops": ["conv1"],
     "phase": "TRAIN"},
    {"name": "scale1", "type": "Scale", "bottoms": ["conv1"], "tops": ["conv1"],
     "phase": "TRAIN"},
    {"name": "relu1", "type": "ReLU", "bottoms": ["conv1"], "tops": ["conv1"], "phase": "TRAIN"},
    {"name": "conv2", "type": "Convolution", "bottoms": ["conv1"], "tops": ["conv2"],
     "phase": "TRAIN"},
    {"name": "bn2", "type": "BatchNorm", "bottoms": ["conv2"], "tops": ["conv2"],
     "phase": "TRAIN"},
    {"name": "ip", "type": "InnerProduct", "bottoms": ["conv2"], "tops": ["ip"],
     "phase": "TRAIN"},
    {"name": "loss", "type": "SoftmaxWithLoss", "bottoms": ["ip", "label"], "tops": ["loss"],
     "phase": "TRAIN"},
]
BN_CHANNELS = {"bn1": 4, "bn2": 6}


def meta(name: str, prefix: str, max_iter: int = 100) -> dict:
    return {"format": "decaffe-run", "version": 1, "name": name, "started": 1700000000.0,
            "command": ["decaffe", "train", "-solver", "solver.prototxt"], "cwd": "/tmp",
            "solver_file": "solver.prototxt", "snapshot_prefix": prefix, "max_iter": max_iter,
            "display": 10, "test_interval": 20, "batch_size": 8, "world_size": 1,
            "resumed_from": None}


def train(it: int) -> dict:
    loss = 2.0 * math.exp(-it / 40) + 0.1
    return {"kind": "train", "iter": it, "time": it * 0.05, "loss": loss, "lr": 0.01,
            "outputs": {"loss": loss, "accuracy": 1 - loss / 2.2}, "images_per_s": 160.0}


def test(it: int) -> dict:
    return {"kind": "test", "iter": it, "time": it * 0.05 + 0.01, "net": 0,
            "scores": {"accuracy": min(0.99, 0.5 + it / 250), "loss": 1.0 / (1 + it / 20)}}


def bn(it: int, dead: int | None = 2) -> dict:
    layers = {}
    for name, c in BN_CHANNELS.items():
        var = [0.5 + 0.1 * k + it / 1000 for k in range(c)]
        gamma = [1.0 - 0.01 * k for k in range(c)]
        if dead is not None and name == "bn1":
            var[dead] = 1e-9  # a channel that never varies
            gamma[dead] = 1e-5  # and whose Scale has switched it off
        layers[name] = {"channels": c, "mean": [0.1 * k - it / 500 for k in range(c)],
                        "var": var, "factor": 1 - 0.999 ** (it + 1),
                        "batch_mean": [0.1 * k - it / 500 + 0.02 for k in range(c)],
                        "batch_var": [v * 1.1 for v in var],
                        "gamma": gamma if name == "bn1" else None,
                        "beta": [0.01 * k for k in range(c)] if name == "bn1" else None}
    return {"kind": "bn", "iter": it, "time": it * 0.05, "layers": layers}


def params(it: int) -> dict:
    def p(shape, w):
        return {"shape": shape, "weight_norm": w, "grad_norm": w / (10 + it),
                "update_ratio": 1e-3 / (1 + it / 50)}
    return {"kind": "params", "iter": it, "time": it * 0.05,
            "layers": {"conv1": {"param": [p([4, 1, 3, 3], 1.5), p([4], 0.1)]},
                       "ip": {"param": [p([10, 6], 2.0), p([10], 0.2)]}}}


def snapshot(prefix: str, it: int) -> dict:
    state = f"{prefix}_iter_{it}.solverstate"
    return {"kind": "snapshot", "iter": it, "time": it * 0.05, "model": f"{prefix}_iter_{it}"
            ".caffemodel", "state": state, "resume": f"decaffe train -solver solver.prototxt "
            f"-snapshot {state}"}


def records(upto: int, prefix: str = "snap/net") -> list[dict]:
    out = []
    for it in range(0, upto + 1, 10):
        out.append(train(it))
        if it % 20 == 0:
            out += [test(it), bn(it), params(it)]
        if it and it % 50 == 0:
            out.append(snapshot(prefix, it))
    return out


def write_run(folder: str, upto: int = 100, end: bool = True, name: str = "net",
              extra_lines: list[str] | None = None) -> str:
    """A complete run folder at `folder` (records up to iteration `upto`)."""
    os.makedirs(folder, exist_ok=True)
    prefix = folder[:-4] if folder.endswith(".run") else folder
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta(name, prefix), f)
    with open(os.path.join(folder, "net.json"), "w") as f:
        json.dump({"layers": LAYERS}, f)
    with open(os.path.join(folder, "solver.prototxt"), "w") as f:
        f.write('net: "train_net.prototxt"\nbase_lr: 0.01\nmax_iter: 100\n')
    with open(os.path.join(folder, "train_net.prototxt"), "w") as f:
        f.write('name: "small"\n')
    with open(os.path.join(folder, "events.jsonl"), "w") as f:
        for r in records(upto, prefix):
            f.write(json.dumps(r) + "\n")
        for line in extra_lines or []:
            f.write(line + "\n")
        if end:
            f.write(json.dumps({"kind": "end", "iter": upto, "time": upto * 0.05,
                                "reason": "done", "message": "Optimization Done."}) + "\n")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(paths: list[str], *extra: str, python: str = sys.executable,
                    env: dict | None = None, cwd: str | None = None):
    """`decaffe dashboard PATHS -port N` in a subprocess; returns (process, base URL, first
    lines printed)."""
    port = free_port()
    cmd = [python, "-m", "decaffe", "dashboard", *paths, "-port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Dashboard: http"):
            url = line.split("Dashboard: ", 1)[1].strip()
            return proc, url, lines
    proc.kill()
    raise AssertionError("the dashboard did not start:\n" + "\n".join(lines))


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

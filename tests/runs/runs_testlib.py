"""Shared by the run-recording tests: the BatchNorm example's nets and solvers in a scratch
folder (its digits LMDBs built once per session), and `decaffe train` as a process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "batchnorm")


def example_folder(root: str, digits: str) -> str:
    """root/ with examples/batchnorm/*.prototxt and data/digits (a link to the built LMDBs),
    so the example's relative paths resolve with root as the working folder."""
    dst = os.path.join(root, "examples", "batchnorm")
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(EXAMPLE):
        if name.endswith(".prototxt"):
            shutil.copy(os.path.join(EXAMPLE, name), dst)
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    link = os.path.join(root, "data", "digits")
    if not os.path.exists(link):
        os.symlink(digits, link)
    os.makedirs(os.path.join(root, "out"), exist_ok=True)
    return root


def solver(root: str, name: str = "solver.prototxt", *, bn: bool = True, **fields) -> str:
    """The example's solver with `fields` replaced (max_iter=40, display=10, ...); its
    snapshots go to out/cnn_bn (or out/cnn_plain)."""
    src = os.path.join(EXAMPLE, "solver_bn.prototxt" if bn else "solver_plain.prototxt")
    text = open(src).read()
    fields.setdefault("snapshot_prefix", f'"out/{"cnn_bn" if bn else "cnn_plain"}"')
    for key, value in fields.items():
        text, n = re.subn(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
        if n == 0:
            text += f"{key}: {value}\n"
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             OMP_NUM_THREADS="1", GLOG_minloglevel="0")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
              "LOCAL_WORLD_SIZE", "TORCHELASTIC_USE_AGENT_STORE"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def start_train(root: str, *args: str, log_name: str = "train.log") -> subprocess.Popen:
    """`python -m decaffe train ARGS` in root, its log in root/log_name."""
    with open(os.path.join(root, log_name), "w") as log:
        return subprocess.Popen([sys.executable, "-m", "decaffe", "train", *args], cwd=root,
                                env=env(), stdout=log, stderr=subprocess.STDOUT)


def train(root: str, *args: str, timeout: float = 300) -> tuple[int, str]:
    proc = start_train(root, *args, log_name="run.log")
    rc = proc.wait(timeout=timeout)
    return rc, open(os.path.join(root, "run.log")).read()


def wait_for(path: str, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> re.Match:
    """Wait until `pattern` appears in the file at path (a log), or fail with its tail."""
    start = time.time()
    while time.time() - start < timeout:
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                m = re.search(pattern, f.read())
            if m:
                return m
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    text = open(path, errors="replace").read() if os.path.exists(path) else ""
    raise AssertionError(f"'{pattern}' never appeared in {path}:\n{text[-3000:]}")

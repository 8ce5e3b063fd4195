"""`decaffe train` on 1 against 2 CPU worker processes (gloo), in the same run.

    python benchmarks/bench_workers.py [--batch 64] [--iters 60] [--threads 1]

The net is the CIFAR BN benchmark net fed by an HDF5Data layer (synthetic images written to a
temporary folder); both runs use the same solver file, the 2-worker run through
`-workers 2` (each worker reads every other record, the effective batch doubles). Times come
from the runs' own logs: the glog timestamps of the display lines at iterations 10 and
--iters, so start-up and net set-up are left out. Reported: ms per iteration, images/s for
each, and the 2-worker speed-up in images/s. On a machine with fewer free cores than workers
× threads the speed-up is below 1: the workers compete for the same cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_engine import cifar_bn_param  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LINE = re.compile(r"^I\d{4} (\d\d:\d\d:\d\d\.\d+) .*Iteration (\d+), loss = ", re.M)


def _net_text(listing: str, batch: int) -> str:
    from decaffe.formats.prototxt import to_text

    param = cifar_bn_param(batch)
    del param.layer[:2]  # the two Input layers become one HDF5Data layer
    text = to_text(param)
    return (f'layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" '
            f'hdf5_data_param {{ source: "{listing}" batch_size: {batch} }} }}\n' + text)


def _seconds_per_iter(log: str, last: int) -> float:
    stamps = {int(m.group(2)): m.group(1) for m in _LINE.finditer(log)}
    t = {k: datetime.datetime.strptime(v, "%H:%M:%S.%f") for k, v in stamps.items()}
    if 10 not in t or last not in t:
        raise SystemExit("bench_workers: the run's log lacks its display lines:\n" + log[-2000:])
    return (t[last] - t[10]).total_seconds() / (last - 10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        n = 2 * args.batch * 8
        with h5py.File(os.path.join(tmp, "d.h5"), "w") as f:
            f["data"] = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
            f["label"] = rng.integers(0, 10, n).astype(np.float32)
        listing = os.path.join(tmp, "list.txt")
        with open(listing, "w") as f:
            f.write(os.path.join(tmp, "d.h5") + "\n")
        net = os.path.join(tmp, "net.prototxt")
        with open(net, "w") as f:
            f.write(_net_text(listing, args.batch))
        solver = os.path.join(tmp, "solver.prototxt")
        with open(solver, "w") as f:
            f.write(f'net: "{net}"\nbase_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 '
                    f'lr_policy: "fixed" max_iter: {args.iters} display: 10 snapshot: 0 '
                    f'snapshot_after_train: false random_seed: 1 solver_mode: CPU\n')
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        results = {}
        for workers in (1, 2):
            cmd = [sys.executable, "-m", "decaffe", "train", "-solver", solver, "-threads",
                   str(args.threads)] + (["-workers", str(workers)] if workers > 1 else [])
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if r.returncode:
                raise SystemExit(f"bench_workers: {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
            s = _seconds_per_iter(r.stderr, args.iters)
            results[workers] = s
            print(f"{workers} worker{'s' if workers > 1 else ' '} × batch {args.batch}, "
                  f"{args.threads} thread(s) each: {s * 1e3:8.1f} ms/iteration  "
                  f"{workers * args.batch / s:8.0f} images/s")
    speedup = (2 / results[2]) / (1 / results[1])
    print(f"images/s, 2 workers / 1 worker: {speedup:.2f} (cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference speed in TEST phase on the CPU with batch-independent outputs: what computing
each item's outputs independently of the rest of the batch (as Caffe's per-image computation
gives) costs, on CaffeNet (the BVLC reference deploy prototxt, random weights).

    python benchmarks/bench_batch_items.py [--iters 5] [--size 227] [--batches 1,10]

For each batch size: decaffe's TEST-phase ``net.forward()`` as it runs by default
(``Net.items_apart``: InnerProduct's rows padded to a multiple of 4, a Convolution of a
single item run as two where oneDNN would pick another algorithm for one), the same net with
``items_apart = False``, and the same architecture hand-written in PyTorch (nn.Module in eval
mode), called in turn, median per call. Reported: each decaffe time's ratio to PyTorch, and
the cost of batch independence (apart / together), from the medians and from the fastest
calls (which a loaded machine disturbs least).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import decaffe  # noqa: E402
from decaffe import threads  # noqa: E402
from decaffe.formats import prototxt  # noqa: E402

CAFFENET = os.path.join(ROOT, "tests", "models", "bvlc", "models", "bvlc_reference_caffenet",
                        "deploy.prototxt")


def caffenet_param(batch: int, size: int):
    param = prototxt.read_net(CAFFENET)
    param.layer[0].input_param.shape[0].dim[:] = [batch, 3, size, size]
    return param


class CaffeNet(nn.Module):
    """CaffeNet's deploy architecture (LRN as torch's local_response_norm, ceil-mode pools)."""

    def __init__(self, flat: int):
        super().__init__()
        self.conv = nn.ModuleList([nn.Conv2d(3, 96, 11, 4), nn.Conv2d(96, 256, 5, 1, 2, groups=2),
                                   nn.Conv2d(256, 384, 3, 1, 1),
                                   nn.Conv2d(384, 384, 3, 1, 1, groups=2),
                                   nn.Conv2d(384, 256, 3, 1, 1, groups=2)])
        self.fc = nn.ModuleList([nn.Linear(flat, 4096), nn.Linear(4096, 4096),
                                 nn.Linear(4096, 1000)])

    def forward(self, x):
        c = self.conv
        x = F.local_response_norm(F.max_pool2d(F.relu(c[0](x)), 3, 2, ceil_mode=True), 5)
        x = F.local_response_norm(F.max_pool2d(F.relu(c[1](x)), 3, 2, ceil_mode=True), 5)
        x = F.relu(c[4](F.relu(c[3](F.relu(c[2](x))))))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True).flatten(1)
        x = F.relu(self.fc[1](F.relu(self.fc[0](x))))
        return F.softmax(self.fc[2](x), dim=1)


def timed_interleaved(fns: dict, iters: int) -> tuple[dict[str, float], dict[str, float]]:
    """(median, fastest) seconds per call of each fn, called in turn so that load drift
    touches all; on a shared machine the fastest call is the one load disturbed least."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: min(v) for k, v in times.items()})


def bench(batch: int, size: int, iters: int) -> float:
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    apart = decaffe.Net(caffenet_param(batch, size), phase=decaffe.TEST)
    together = decaffe.Net(caffenet_param(batch, size), phase=decaffe.TEST)
    together.items_apart = False
    for net in (apart, together):
        net.blobs["data"].data[...] = x
    flat = apart.blobs["pool5"].count // batch
    model = CaffeNet(flat).eval()
    xt = torch.from_numpy(x)

    def run_torch():
        with torch.no_grad():
            model(xt)

    t, fastest = timed_interleaved({"torch": run_torch, "apart": apart.forward,
                                    "together": together.forward}, iters)
    print(f"batch {batch:3d}  torch {t['torch'] * 1e3:8.2f} ms   "
          f"decaffe {t['apart'] * 1e3:8.2f} ms (ratio {t['apart'] / t['torch']:5.3f})   "
          f"items together {t['together'] * 1e3:8.2f} ms "
          f"(ratio {t['together'] / t['torch']:5.3f})   cost of batch independence "
          f"{t['apart'] / t['together']:5.3f}x (fastest calls: "
          f"{fastest['apart'] * 1e3:.2f} / {fastest['together'] * 1e3:.2f} ms = "
          f"{fastest['apart'] / fastest['together']:5.3f}x)")
    return t["apart"] / t["together"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--size", type=int, default=227)
    ap.add_argument("--batches", default="1,10")
    args = ap.parse_args(argv)
    threads.configure(0)  # decaffe's thread policy (the free cores) for every contender
    torch.manual_seed(0)
    print(f"CaffeNet {args.size}x{args.size}, TEST phase, cpu, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    for b in args.batches.split(","):
        bench(int(b), args.size, args.iters)
    return 0


if __name__ == "__main__":
    sys.exit(main())

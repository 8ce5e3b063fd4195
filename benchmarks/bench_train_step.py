"""Training-step speed: decaffe's solver against the same net and Caffe's SGD update written by
hand in PyTorch, timed in the same run on the same device.

    python benchmarks/bench_train_step.py [--iters 20] [--device cpu|cuda] [--batch 100]

The net is CIFAR-10 sized: 3 × (Convolution → BatchNorm → Scale → ReLU → 2×2 max pool),
InnerProduct, SoftmaxWithLoss, a batch of 3×32×32 images fed through Input blobs.

- decaffe: `solver.step(1)` of an SGDSolver (momentum 0.9, weight_decay 5e-4): clear the
  diffs, forward, backward, read the loss, update (Caffe's SGD: h = m·h + lr·(g + wd·w);
  w −= h; the update left in the diff as Caffe leaves it).
- PyTorch: the same architecture as nn.Module, cross-entropy, backward, loss.item(), and the
  same update by hand with torch._foreach_* operations.

Reported: the median milliseconds per step of each, and their ratio (decaffe / PyTorch;
below 1 is faster). Forward+backward alone (the net, no update) and the update alone
(solver.apply_update against the hand-written update) are timed too, to show where a
difference comes from.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_engine import CifarBN, cifar_bn_param  # noqa: E402  (the same net in both)

import decaffe  # noqa: E402
from decaffe import threads  # noqa: E402
from decaffe.proto import caffe_pb2  # noqa: E402
from decaffe.solvers import SGDSolver  # noqa: E402

LR, MOMENTUM, WD = 0.01, 0.9, 5e-4


class CaffeSGD:
    """Caffe's SGD update by hand: g += wd·w; h = m·h + lr·g; w −= h (all decay_mult 1)."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        self.hist = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        grads = [p.grad for p in self.params]
        torch._foreach_add_(grads, self.params, alpha=WD)
        torch._foreach_mul_(self.hist, MOMENTUM)
        torch._foreach_add_(self.hist, grads, alpha=LR)
        torch._foreach_sub_(self.params, self.hist)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, iters: int, warmup: int, device) -> float:
    """Median seconds of fn() over iters runs, after warmup runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args(argv)
    threads.configure(0)  # decaffe's thread policy (the free cores) for every contender
    os.environ.setdefault("GLOG_minloglevel", "1")
    device = torch.device(args.device)
    if device.type == "cuda":
        decaffe.set_mode_gpu()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)

    sp = caffe_pb2.SolverParameter()
    sp.net_param.CopyFrom(cifar_bn_param(args.batch, frozen_stats=True))
    sp.base_lr, sp.momentum, sp.weight_decay = LR, MOMENTUM, WD
    sp.lr_policy, sp.display, sp.max_iter = "fixed", 0, 10 ** 9
    solver = SGDSolver(sp)
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["label"].data[...] = y

    model = CifarBN().to(device).train()
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    sgd = CaffeSGD(model.parameters())

    def torch_step():
        model.zero_grad()
        loss = F.cross_entropy(model(xt), yt)
        loss.backward()
        loss.item()  # the solver reads its loss every iteration too
        sgd.step()

    def decaffe_step():
        solver.step(1)

    def torch_fb():
        model.zero_grad()
        loss = F.cross_entropy(model(xt), yt)
        loss.backward()
        loss.item()

    def decaffe_fb():
        solver.net.clear_param_diffs()
        solver.net.forward_backward()

    warmup = 3
    # call the contenders in turn (A B C D A B C D ...), median per call, so that drift in
    # the machine's load touches all of them alike
    fns = {"torch": torch_step, "decaffe": decaffe_step, "torch_fb": torch_fb,
           "decaffe_fb": decaffe_fb}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(2 * args.iters):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            samples[key].append(time.perf_counter() - t0)
    res = {k: statistics.median(v) for k, v in samples.items()}
    t_torch, t_dec = res["torch"], res["decaffe"]
    fb_torch, fb_dec = res["torch_fb"], res["decaffe_fb"]
    upd_torch = timed(sgd.step, args.iters * 5, warmup, device)
    upd_dec = timed(solver.apply_update, args.iters * 5, warmup, device)
    n_params = sum(p.numel() for p in solver.net.learnable_params)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {len(solver.net.learnable_params)} learnable blobs "
          f"({n_params} values)")
    print(f"train step  torch {t_torch * 1e3:8.2f} ms   decaffe {t_dec * 1e3:8.2f} ms   "
          f"ratio {t_dec / t_torch:5.3f}")
    print(f"fwd+bwd     torch {fb_torch * 1e3:8.2f} ms   decaffe {fb_dec * 1e3:8.2f} ms   "
          f"ratio {fb_dec / fb_torch:5.3f}   (the net alone, no update)")
    print(f"update only torch {upd_torch * 1e3:8.3f} ms   decaffe {upd_dec * 1e3:8.3f} ms   "
          f"ratio {upd_dec / upd_torch:5.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU training step of ResNet-50 (batch 128) in fp32, TF32 and bf16 + channels_last:
decaffe's solver step against the same net hand-written in PyTorch, eager and compiled, in
the same run.

    python benchmarks/bench_gpu_precision.py [--batch 128] [--iters 20] [--modes fp32,tf32,bf16]
                                              [--no-compile]

Each step: clear gradients, forward, backward, Caffe's SGD update (decaffe: solver.step(1);
PyTorch: the update by hand with torch._foreach_*). PyTorch's side runs under the same
autocast and memory format as decaffe's in each mode. Reported: median ms per step and
images/s for each contender, and decaffe / PyTorch ratios (below 1: decaffe is faster).
Without a CUDA device the benchmark says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_engine import ResNet50, resnet50_param, timed_interleaved  # noqa: E402
from bench_train_step import CaffeSGD  # noqa: E402

import decaffe  # noqa: E402
from decaffe import precision  # noqa: E402
from decaffe.compile import compile_net  # noqa: E402
from decaffe.proto import caffe_pb2  # noqa: E402
from decaffe.solvers import SGDSolver  # noqa: E402


def _solver(batch: int) -> SGDSolver:
    sp = caffe_pb2.SolverParameter()
    sp.net_param.CopyFrom(resnet50_param(batch))
    sp.base_lr, sp.momentum, sp.weight_decay = 0.01, 0.9, 5e-4
    sp.lr_policy, sp.max_iter, sp.display = "fixed", 10 ** 6, 0
    return SGDSolver(sp)


def run_mode(mode: str, batch: int, iters: int, compiled: bool) -> dict[str, float]:
    device = torch.device("cuda")
    precision.set_precision("bf16" if mode == "bf16" else mode)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
    y = rng.integers(0, 1000, batch)
    decaffe.set_mode_gpu()
    fns = {}
    solvers = []
    for tag, comp in (("decaffe", False), ("decaffe+compile", True)):
        if comp and not compiled:
            continue
        s = _solver(batch)
        s.net.blobs["data"].data[...] = x
        s.net.blobs["label"].data[...] = y
        if comp:
            compile_net(s.net)
        solvers.append(s)
        fns[tag] = (lambda s=s: s.step(1))
    low = precision.low_precision_dtype()
    cl = mode == "bf16"
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    if cl:
        xt = xt.contiguous(memory_format=torch.channels_last)
    for tag, comp in (("torch", False), ("torch+compile", True)):
        if comp and not compiled:
            continue
        model = ResNet50().to(device).train()
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = CaffeSGD(model.parameters())
        fwd = torch.compile(model) if comp else model

        def step(model=model, fwd=fwd, opt=opt):
            model.zero_grad(set_to_none=False)
            ctx = torch.autocast("cuda", dtype=low) if low is not None \
                else contextlib.nullcontext()
            with ctx:
                loss = F.cross_entropy(fwd(xt), yt)
            loss.backward()
            loss.item()
            opt.step()

        fns[tag] = step
    t0 = time.perf_counter()
    result = timed_interleaved(fns, iters, 3, device)
    print(f"  ({time.perf_counter() - t0:.0f} s including warm-up and compilation)")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--modes", default="fp32,tf32,bf16")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu_precision: skipped — no CUDA device is available to PyTorch "
              f"(torch {torch.__version__})")
        return 0
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  ResNet-50 batch "
          f"{args.batch}")
    torch.backends.cudnn.benchmark = True
    for mode in args.modes.split(","):
        label = "bf16+channels_last" if mode == "bf16" else mode
        print(f"{label}:")
        r = run_mode(mode, args.batch, args.iters, not args.no_compile)
        for tag, t in r.items():
            print(f"  {tag:16s} {t * 1e3:8.1f} ms/step  {args.batch / t:8.0f} images/s")
        if "torch" in r:
            print(f"  ratio decaffe/torch eager {r['decaffe'] / r['torch']:.3f}", end="")
            if "torch+compile" in r and "decaffe+compile" in r:
                print(f"   decaffe+compile/torch+compile "
                      f"{r['decaffe+compile'] / r['torch+compile']:.3f}", end="")
            print()
    precision.set_precision("fp32")
    return 0


if __name__ == "__main__":
    sys.exit(main())

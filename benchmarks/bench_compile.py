"""decaffe's training step eager against -compile (torch.compile), with the same net
hand-written in PyTorch eager and compiled for reference, in the same run.

    python benchmarks/bench_compile.py [--batch 32] [--iters 15] [--device cpu|cuda]

The net is the CIFAR BN benchmark net (bench_engine.cifar_bn_param); each step is Caffe's SGD
step (decaffe: solver.step(1); PyTorch: forward, backward, loss.item(), the same update by
hand). Reported: compile time (first steps), median ms per step after warm-up, and ratios
(compiled / eager for each; decaffe / PyTorch for each mode).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_engine import CifarBN, cifar_bn_param, timed_interleaved  # noqa: E402
from bench_train_step import CaffeSGD  # noqa: E402

import decaffe  # noqa: E402
from decaffe.compile import compile_net  # noqa: E402
from decaffe.proto import caffe_pb2  # noqa: E402
from decaffe.solvers import SGDSolver  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="0: decaffe's choice (free cores)")
    args = ap.parse_args(argv)
    from decaffe.threads import configure

    configure(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("bench_compile: skipped — no CUDA device")
            return 0
        decaffe.set_mode_gpu()
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"CIFAR BN net, batch {args.batch}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    fns, compile_s = {}, {}
    for tag, comp in (("decaffe", False), ("decaffe+compile", True)):
        sp = caffe_pb2.SolverParameter()
        sp.net_param.CopyFrom(cifar_bn_param(args.batch))
        sp.base_lr, sp.momentum, sp.weight_decay = 0.01, 0.9, 5e-4
        sp.lr_policy, sp.max_iter, sp.display = "fixed", 10 ** 6, 0
        s = SGDSolver(sp)
        s.net.blobs["data"].data[...] = x
        s.net.blobs["label"].data[...] = y
        if comp:
            compile_net(s.net)
        t0 = time.perf_counter()
        s.step(1)
        compile_s[tag] = time.perf_counter() - t0
        fns[tag] = (lambda s=s: s.step(1))
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    for tag, comp in (("torch", False), ("torch+compile", True)):
        model = CifarBN().to(device).train()
        opt = CaffeSGD(model.parameters())
        fwd = torch.compile(model) if comp else model

        def step(model=model, fwd=fwd, opt=opt):
            model.zero_grad(set_to_none=False)
            loss = F.cross_entropy(fwd(xt), yt)
            loss.backward()
            loss.item()
            opt.step()

        t0 = time.perf_counter()
        step()
        compile_s[tag] = time.perf_counter() - t0
        fns[tag] = step
    r = timed_interleaved(fns, args.iters, 2, device)
    for tag, t in r.items():
        print(f"  {tag:16s} {t * 1e3:8.2f} ms/step   first step {compile_s[tag]:6.1f} s")
    print(f"  compiled/eager: decaffe {r['decaffe+compile'] / r['decaffe']:.3f}   "
          f"torch {r['torch+compile'] / r['torch']:.3f}")
    print(f"  decaffe/torch: eager {r['decaffe'] / r['torch']:.3f}   "
          f"compiled {r['decaffe+compile'] / r['torch+compile']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

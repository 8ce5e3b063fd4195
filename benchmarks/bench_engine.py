"""Forward+backward speed: decaffe's Net against the same nets hand-written in PyTorch,
timed in the same run on the same device.

    python benchmarks/bench_engine.py [--iters 20] [--device cpu|cuda] [--nets cifar_bn,resnet50]

Nets:
- cifar_bn: 3 × (Convolution → BatchNorm → Scale → ReLU → 2×2 max pool), InnerProduct,
  SoftmaxWithLoss, batch 100 of 3×32×32 (batch statistics, as in training);
- resnet50: the model zoo's ResNet-50 (KaimingHe deploy prototxt, BatchNorm switched to
  batch statistics) with SoftmaxWithLoss, batch 8 of 3×224×224.

For each: decaffe's solver path (Net.forward_backward, the step training uses), pycaffe's
path (net.forward(); net.backward()), and PyTorch (nn.Module forward, loss.backward()),
called in turn, median per call. The ratio is decaffe / PyTorch; below 1 is faster than
hand-written PyTorch.
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
from decaffe.netspec import NetSpec  # noqa: E402
from decaffe.netspec import layers as L  # noqa: E402
from decaffe.netspec import params as P  # noqa: E402

RESNET50 = os.path.join(ROOT, "tests", "models", "zoo", "KaimingHe__deep-residual-networks",
                        "prototxt", "ResNet-50-deploy.prototxt")


# ----------------------------------------------------------------------------------------------
# CIFAR-10-sized BN net
# ----------------------------------------------------------------------------------------------
def cifar_bn_param(batch: int, frozen_stats: bool = False):
    """The CIFAR-10-sized BN net; frozen_stats gives BatchNorm `param { lr_mult: 0 }` ×3, as
    trained BN prototxts write it (it matters only to a solver)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, 32, 32]))
    n.label = L.Input(shape=dict(dim=[batch]))
    x = n.data
    for i, c in enumerate((32, 32, 64), 1):
        conv = L.Convolution(x, num_output=c, kernel_size=3, pad=1, bias_term=False,
                             weight_filler=dict(type="msra"))
        n[f"conv{i}"] = conv
        frozen = dict(param=[dict(lr_mult=0)] * 3) if frozen_stats else {}
        n[f"bn{i}"] = L.BatchNorm(conv, in_place=True, **frozen)
        n[f"scale{i}"] = L.Scale(conv, bias_term=True, in_place=True)
        n[f"relu{i}"] = L.ReLU(conv, in_place=True)
        n[f"pool{i}"] = L.Pooling(conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        x = n[f"pool{i}"]
    n.ip = L.InnerProduct(x, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    return n.to_proto()


class CifarBN(nn.Module):
    def __init__(self):
        super().__init__()
        chans = (3, 32, 32, 64)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False)
                                   for i in range(3))
        self.bns = nn.ModuleList(nn.BatchNorm2d(chans[i + 1]) for i in range(3))
        self.fc = nn.Linear(64 * 4 * 4, 10)

    def forward(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = F.max_pool2d(F.relu(bn(conv(x)), inplace=True), 2, 2)
        return self.fc(x.flatten(1))


# ----------------------------------------------------------------------------------------------
# ResNet-50 as in the KaimingHe prototxt: stride on branch2a's 1×1, ceil-mode max pool
# ----------------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride, project):
        super().__init__()
        cout = 4 * mid
        self.a = nn.Conv2d(cin, mid, 1, stride, bias=False)
        self.bna = nn.BatchNorm2d(mid)
        self.b = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        self.bnb = nn.BatchNorm2d(mid)
        self.c = nn.Conv2d(mid, cout, 1, bias=False)
        self.bnc = nn.BatchNorm2d(cout)
        self.proj = nn.Conv2d(cin, cout, 1, stride, bias=False) if project else None
        self.bnp = nn.BatchNorm2d(cout) if project else None

    def forward(self, x):
        short = self.bnp(self.proj(x)) if self.proj is not None else x
        y = F.relu(self.bna(self.a(x)), inplace=True)
        y = F.relu(self.bnb(self.b(y)), inplace=True)
        y = self.bnc(self.c(y))
        return F.relu(y + short, inplace=True)


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for mid, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(n):
                blocks.append(Bottleneck(cin, mid, stride if i == 0 else 1, i == 0))
                cin = 4 * mid
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.blocks(x)
        x = F.avg_pool2d(x, 7, 1)
        return self.fc(x.flatten(1))


def resnet50_param(batch: int):
    param = prototxt.read_net(RESNET50)
    for lp in param.layer:
        if lp.type == "Input":
            lp.input_param.shape[0].dim[0] = batch
        if lp.type == "BatchNorm":
            lp.batch_norm_param.use_global_stats = False
    keep = [lp for lp in param.layer if lp.type != "Softmax"]
    del param.layer[:]
    param.layer.extend(keep)
    label = param.layer.add()
    label.name, label.type = "label", "Input"
    label.top.append("label")
    label.input_param.shape.add().dim.append(batch)
    loss = param.layer.add()
    loss.name, loss.type = "loss", "SoftmaxWithLoss"
    loss.bottom.extend([keep[-1].top[0], "label"])
    loss.top.append("loss")
    return param


# ----------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_interleaved(fns: dict, iters: int, warmup: int, device) -> dict[str, float]:
    """Median seconds per call of each fn, calling them in turn (A B C A B C ...) so that
    any drift in the machine's load touches every contender alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(name: str, param, model: nn.Module, shape, classes: int, iters: int, device):
    batch = shape[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, classes, batch)
    net = decaffe.Net(param, phase=decaffe.TRAIN)
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = y

    def step_solver_path():
        net.clear_param_diffs()
        net.forward_backward()

    def step_pycaffe_path():
        net.forward()
        net.backward()

    model = model.to(device).train()
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)

    def step_torch():
        model.zero_grad()
        F.cross_entropy(model(xt), yt).backward()

    results = timed_interleaved({"torch": step_torch, "decaffe": step_solver_path,
                                 "pycaffe": step_pycaffe_path}, iters, 2, device)
    t_torch, t_dec = results["torch"], results["decaffe"]
    print(f"{name:10s} torch {t_torch * 1e3:9.2f} ms   decaffe {t_dec * 1e3:9.2f} ms   "
          f"ratio {t_dec / t_torch:5.3f}   (pycaffe forward()+backward() "
          f"{results['pycaffe'] * 1e3:9.2f} ms, ratio {results['pycaffe'] / t_torch:5.3f})")
    return t_dec / t_torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--nets", default="cifar_bn,resnet50")
    args = ap.parse_args(argv)
    threads.configure(0)  # decaffe's thread policy (the free cores) for every contender
    device = torch.device(args.device)
    if device.type == "cuda":
        decaffe.set_mode_gpu()
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in args.nets.split(","):
        if name == "cifar_bn":
            bench(name, cifar_bn_param(100), CifarBN(), (100, 3, 32, 32), 10, args.iters, device)
        elif name == "resnet50":
            bench(name, resnet50_param(8), ResNet50(), (8, 3, 224, 224), 1000,
                  max(5, args.iters // 2), device)
        else:
            raise SystemExit(f"unknown net {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

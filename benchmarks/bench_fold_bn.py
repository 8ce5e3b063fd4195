"""Forward time of real deploy nets before and after folding BatchNorm/Scale (decaffe.bn.fold).

For ResNet-50/101/152 and MobileNet v1/v2 (the prototxts under tests/models/zoo) with random
weights and random statistics: the time to fold, the largest relative difference over every
blob both nets keep, and the median forward time of each net, measured in interleaved rounds
(so a machine slowing down affects both alike). Run:

    python benchmarks/bench_fold_bn.py [--batch 1] [--iterations 10] [--nets resnet50,mobilenet]
    python benchmarks/bench_fold_bn.py --gpu 0     # on a CUDA device
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import decaffe
from decaffe import threads
from decaffe.bn import compare, fold_result, time_forward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "tests", "models", "zoo")
NETS = {
    "resnet50": "KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt",
    "resnet101": "KaimingHe__deep-residual-networks/prototxt/ResNet-101-deploy.prototxt",
    "resnet152": "KaimingHe__deep-residual-networks/prototxt/ResNet-152-deploy.prototxt",
    "mobilenet": "shicai__MobileNet-Caffe/mobilenet_deploy.prototxt",
    "mobilenet_v2": "shicai__MobileNet-Caffe/mobilenet_v2_deploy.prototxt",
}


def randomize(net, rng: np.random.Generator) -> None:
    """He-scaled weights; statistics as sums over a random factor; γ near 1, β near 0."""
    for lname, blobs in net.params.items():
        kind = net.layer_dict[lname].type
        if kind == "BatchNorm":
            f = rng.uniform(1, 100)
            blobs[0].data[...] = rng.normal(0, 0.3, blobs[0].shape) * f
            blobs[1].data[...] = rng.uniform(0.5, 2.0, blobs[1].shape) * f
            blobs[2].data[...] = f
            continue
        for i, b in enumerate(blobs):
            if kind == "Scale" and i == 0:
                b.data[...] = rng.uniform(0.5, 1.5, b.shape)
            elif b.data.ndim > 1:
                b.data[...] = rng.standard_normal(b.shape) * np.sqrt(2.0 / b.data[0].size)
            else:
                b.data[...] = rng.normal(0, 0.2, b.shape)


def bench(name: str, batch: int, iterations: int) -> dict:
    net = decaffe.Net(os.path.join(ZOO, NETS[name]), decaffe.TEST)
    for blob in net.inputs:
        net.blobs[blob].reshape(batch, *net.blobs[blob].shape[1:])
    net.reshape()
    randomize(net, np.random.default_rng(0))
    t0 = time.perf_counter()
    result = fold_result(net)
    folded = result.build()
    fold_s = time.perf_counter() - t0
    diff = max(compare(net, folded, seed=1, blobs="all").values())
    before, after = time_forward([net, folded], iterations)
    return {"net": name, "layers": (len(net.layers), len(folded.layers)),
            "folded": len(result.folded), "kept": len(result.kept), "fold_s": fold_s,
            "diff": diff, "before": before, "after": after}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--gpu", type=int, default=None, help="CUDA device id (default: CPU)")
    args = ap.parse_args(argv)
    threads.configure(0)  # decaffe's thread policy (the free cores) for every contender
    if args.gpu is not None:
        decaffe.set_device(args.gpu)
        decaffe.set_mode_gpu()
        device = torch.cuda.get_device_name(args.gpu)
    else:
        device = f"CPU, {torch.get_num_threads()} threads"
    print(f"decaffe.bn.fold, batch {args.batch}, median of {args.iterations} forward passes "
          f"({device})")
    print(f"{'net':<13} {'layers':>11} {'folded':>6} {'kept':>4} {'fold s':>7} "
          f"{'max rel diff':>12} {'before ms':>10} {'after ms':>9} {'speed-up':>8}")
    for name in args.nets.split(","):
        r = bench(name, args.batch, args.iterations)
        print(f"{r['net']:<13} {r['layers'][0]:>5}->{r['layers'][1]:<5} {r['folded']:>6} "
              f"{r['kept']:>4} {r['fold_s']:>7.2f} {r['diff']:>12.2g} "
              f"{r['before'] * 1e3:>10.2f} {r['after'] * 1e3:>9.2f} "
              f"{r['before'] / r['after']:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Data pipeline benchmark: decaffe's Data layer + transformer, and what a net consumes.

1. Data layer rate: a TRAIN Data layer over an LMDB of 32×32×3 uint8 Datums (mirror,
   crop_size 28, batch 100), images/s over repeated forwards — with prefetching (the rate
   a net sees) and with prefetch: 0 (the pipeline's own rate in the calling thread).
   Target: >= 10,000 images/s on 2 cores.
2. Consumption rate: images/s that one training step (forward + backward + SGD update) of
   the CIFAR-10-sized BN net takes, written by hand in PyTorch (the speed decaffe aims
   for); and, when decaffe's vision layers are present, decaffe's own net fed by the Data
   layer, against the same net fed from memory, which shows whether prefetching keeps up.

Usage: python benchmarks/bench_data.py [--images 5000] [--seconds 3] [--encoded]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

import decaffe
from decaffe import threads
from decaffe.data.db import NEW, open_db
from decaffe.proto import caffe_pb2


def make_lmdb(path: str, n: int, encoded: bool = False) -> None:
    rng = np.random.default_rng(0)
    import cv2

    with open_db(path, "lmdb", NEW) as db:
        txn = db.transaction()
        for i in range(n):
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            d = caffe_pb2.Datum()
            d.channels, d.height, d.width = 3, 32, 32
            if encoded:
                d.data = cv2.imencode(".png", img)[1].tobytes()
                d.encoded = True
            else:
                d.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
            d.label = int(i % 10)
            txn.put(f"{i:08d}", d.SerializeToString())
        txn.commit()


DATA_LAYER = """
layer {{ name: "d" type: "Data" top: "data" top: "label"
  transform_param {{ mirror: true crop_size: 28 }}
  data_param {{ source: "{src}" batch_size: 100 backend: LMDB prefetch: {prefetch} }} }}
"""


def rate(fn, seconds: float, per_call: int) -> float:
    fn()  # warm up (first batch, thread start)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * per_call / (time.perf_counter() - t0)


def data_layer_rate(src: str, prefetch: int, seconds: float) -> float:
    net = decaffe.Net(DATA_LAYER.format(src=src, prefetch=prefetch), decaffe.TRAIN)
    try:
        return rate(net.forward, seconds, 100)
    finally:
        net.layers[0].layer.close()


class BNNet(torch.nn.Module):
    """cifar10_full_sigmoid_train_test_bn by hand: Caffe's ceil-mode pooling, no conv bias."""

    def __init__(self, size: int = 28):
        super().__init__()
        nn = torch.nn
        self.c1 = nn.Conv2d(3, 32, 5, padding=2, bias=False)
        self.c2 = nn.Conv2d(32, 32, 5, padding=2, bias=False)
        self.c3 = nn.Conv2d(32, 64, 5, padding=2, bias=False)
        self.b1, self.b2, self.b3 = (nn.BatchNorm2d(c, affine=False) for c in (32, 32, 64))
        s = size
        for _ in range(3):
            s = -(-(s - 3) // 2) + 1
        self.fc = nn.Linear(64 * s * s, 10)

    def forward(self, x):
        f = torch.nn.functional
        x = torch.sigmoid(self.b1(f.max_pool2d(self.c1(x), 3, 2, ceil_mode=True)))
        x = f.avg_pool2d(torch.sigmoid(self.b2(self.c2(x))), 3, 2, ceil_mode=True)
        x = f.avg_pool2d(torch.sigmoid(self.b3(self.c3(x))), 3, 2, ceil_mode=True)
        return self.fc(x.flatten(1))


def torch_consumption_rate(seconds: float) -> float:
    torch.manual_seed(0)
    model = BNNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    x = torch.randn(100, 3, 28, 28)
    y = torch.randint(0, 10, (100,))

    def step():
        opt.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return rate(step, seconds, 100)


BN_NET = """
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 32 pad: 2 kernel_size: 5 bias_term: false
    weight_filler {{ type: "gaussian" std: 0.0001 }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "pool1" top: "bn1" }}
layer {{ name: "s1" type: "Sigmoid" bottom: "bn1" top: "bn1" }}
layer {{ name: "conv2" type: "Convolution" bottom: "bn1" top: "conv2"
  convolution_param {{ num_output: 32 pad: 2 kernel_size: 5 bias_term: false
    weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" }}
layer {{ name: "s2" type: "Sigmoid" bottom: "bn2" top: "bn2" }}
layer {{ name: "pool2" type: "Pooling" bottom: "bn2" top: "pool2"
  pooling_param {{ pool: AVE kernel_size: 3 stride: 2 }} }}
layer {{ name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
  convolution_param {{ num_output: 64 pad: 2 kernel_size: 5 bias_term: false
    weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "bn3" type: "BatchNorm" bottom: "conv3" top: "bn3" }}
layer {{ name: "s3" type: "Sigmoid" bottom: "bn3" top: "bn3" }}
layer {{ name: "pool3" type: "Pooling" bottom: "bn3" top: "pool3"
  pooling_param {{ pool: AVE kernel_size: 3 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool3" top: "ip1"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
"""

INPUT_LAYER = """
layer { name: "in" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 100 dim: 3 dim: 28 dim: 28 } shape { dim: 100 } } }
"""


def decaffe_consumption_rates(src: str, seconds: float):
    """(fed from memory, fed by the Data layer) images/s of decaffe's training step, or None."""
    types = set(decaffe.layer_type_list())
    if not {"Convolution", "Pooling", "Sigmoid", "SoftmaxWithLoss"} <= types:
        return None

    def run(text):
        net = decaffe.Net(text, decaffe.TRAIN)
        params = net.learnable_params

        def step():
            net.clear_param_diffs()
            net.forward_backward()
            with torch.no_grad():
                torch._foreach_add_(params, [p.grad if p.grad is not None
                                             else torch.zeros_like(p) for p in params],
                                    alpha=-0.001)

        if "Input" in text:
            net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal(
                (100, 3, 28, 28)).astype(np.float32)
            net.blobs["label"].data[...] = np.arange(100) % 10
        return rate(step, seconds, 100)

    memory = run(INPUT_LAYER + BN_NET.format())
    fed = run(DATA_LAYER.format(src=src, prefetch=4) + BN_NET.format())
    return memory, fed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--encoded", action="store_true", help="PNG-encoded Datums")
    args = ap.parse_args(argv)
    threads.configure(0)  # decaffe's thread policy (the free cores) for every contender
    decaffe.set_random_seed(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "bench_lmdb")
        t0 = time.perf_counter()
        make_lmdb(src, args.images, args.encoded)
        print(f"LMDB of {args.images} {'PNG' if args.encoded else 'raw'} 32x32x3 Datums "
              f"made in {time.perf_counter() - t0:.1f}s")
        fed_rate = data_layer_rate(src, 4, args.seconds)
        sync_rate = data_layer_rate(src, 0, args.seconds)
        print(f"Data layer (mirror, crop 28, batch 100), prefetch 4: {fed_rate:10.0f} images/s "
              f"(target >= 10000)")
        print(f"Data layer (mirror, crop 28, batch 100), prefetch 0: {sync_rate:10.0f} images/s")
        tr = torch_consumption_rate(args.seconds)
        print(f"CIFAR-10 BN net training step, hand-written PyTorch: {tr:10.0f} images/s")
        dc = decaffe_consumption_rates(src, args.seconds)
        if dc is None:
            print("CIFAR-10 BN net in decaffe: vision layers not available yet, skipped")
        else:
            memory, fed = dc
            print(f"CIFAR-10 BN net training step, decaffe, inputs in memory: {memory:8.0f} "
                  f"images/s")
            print(f"CIFAR-10 BN net training step, decaffe, fed by Data layer: {fed:7.0f} "
                  f"images/s ({100 * fed / memory:.0f}% of in-memory)")
        keeps_up = fed_rate >= tr
        print(f"prefetching {'keeps up with' if keeps_up else 'falls behind'} the net's "
              f"consumption ({fed_rate:.0f} vs {tr:.0f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loading a VGG-16-sized caffemodel: decaffe's wire-format reader against protobuf's
generic parser followed by a numpy conversion of every blob.

Builds a caffemodel with VGG-16's layers and parameter shapes (about 138 M float32 values,
~553 MB) filled with random values in a temporary folder, then times both readers and
prints MB/s and their ratio.  Run: ``python benchmarks/bench_caffemodel_load.py``
(``--repeat N`` for more timing runs, ``--keep DIR`` to build the file in DIR).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import numpy as np

from decaffe.formats import weights
from decaffe.proto import caffe_pb2

# (name, type, parameter shapes) in VGG-16's order (Simonyan & Zisserman, configuration D)
_CONV = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128),
         ("conv2_2", 128, 128), ("conv3_1", 128, 256), ("conv3_2", 256, 256),
         ("conv3_3", 256, 256), ("conv4_1", 256, 512), ("conv4_2", 512, 512),
         ("conv4_3", 512, 512), ("conv5_1", 512, 512), ("conv5_2", 512, 512),
         ("conv5_3", 512, 512)]
_POOL_AFTER = {"conv1_2": "pool1", "conv2_2": "pool2", "conv3_3": "pool3",
               "conv4_3": "pool4", "conv5_3": "pool5"}
_FC = [("fc6", 512 * 7 * 7, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)]


def vgg16_layers() -> list[tuple[str, str, list[tuple[int, ...]]]]:
    layers: list[tuple[str, str, list[tuple[int, ...]]]] = [("input", "Input", [])]
    for name, cin, cout in _CONV:
        layers.append((name, "Convolution", [(cout, cin, 3, 3), (cout,)]))
        layers.append(("relu" + name[4:], "ReLU", []))
        if name in _POOL_AFTER:
            layers.append((_POOL_AFTER[name], "Pooling", []))
    for name, cin, cout in _FC:
        layers.append((name, "InnerProduct", [(cout, cin), (cout,)]))
        if name != "fc8":
            layers.append(("relu" + name[2:], "ReLU", []))
            layers.append(("drop" + name[2:], "Dropout", []))
    layers.append(("prob", "Softmax", []))
    return layers


def build(path: str, seed: int = 0) -> int:
    """Write the model; returns its number of parameters."""
    rng = np.random.default_rng(seed)
    net = caffe_pb2.NetParameter(name="VGG_ILSVRC_16_layers")
    data: dict[int, list[np.ndarray]] = {}
    count = 0
    for i, (name, ltype, shapes) in enumerate(vgg16_layers()):
        net.layer.add(name=name, type=ltype)
        if shapes:
            data[i] = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
            count += sum(int(np.prod(s)) for s in shapes)
    weights.save_caffemodel(path, net, data)
    return count


def load_decaffe(path: str) -> list:
    return weights.load_weights(path)


def load_protobuf(path: str) -> list:
    with open(path, "rb") as f:
        msg = caffe_pb2.NetParameter.FromString(f.read())
    out = []
    for lp in msg.layer:
        out.append((lp.name, [np.array(b.data, dtype=np.float32).reshape(tuple(b.shape.dim))
                              for b in lp.blobs]))
    return out


def timed(fn, path: str, repeat: int) -> tuple[float, list]:
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        gc.collect()
        t = time.perf_counter()
        result = fn(path)
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timing runs of decaffe's reader")
    ap.add_argument("--repeat-protobuf", type=int, default=1,
                    help="timing runs of the protobuf reader (slow)")
    ap.add_argument("--keep", default=None, help="build the caffemodel in this folder")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        path = os.path.join(tmp, "vgg16.caffemodel")
        t = time.perf_counter()
        n = build(path)
        size_mb = os.path.getsize(path) / 1e6
        print(f"built {path}: {n / 1e6:.1f} M parameters, {size_mb:.1f} MB "
              f"in {time.perf_counter() - t:.1f} s")

        t_fast, fast = timed(load_decaffe, path, args.repeat)
        print(f"decaffe load_weights:                 {t_fast:8.3f} s  "
              f"{size_mb / t_fast:9.1f} MB/s")
        t_pb, slow = timed(load_protobuf, path, args.repeat_protobuf)
        print(f"protobuf ParseFromString + np.array:  {t_pb:8.3f} s  "
              f"{size_mb / t_pb:9.1f} MB/s")
        for (na, a), (nb, b) in zip(fast, slow):
            assert na == nb and all(np.array_equal(x.array, y) for x, y in zip(a, b)), na
        print(f"ratio (protobuf time / decaffe time): {t_pb / t_fast:.1f}x; "
              "both readers gave identical arrays")


if __name__ == "__main__":
    main()

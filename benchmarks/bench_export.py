"""Forward time of exported nets: onnxruntime on decaffe's ONNX export against decaffe itself
(eager, and with BatchNorm/Scale folded), and the generated PyTorch module, in the same run.

For ResNet-50, MobileNet v2 and SqueezeNet v1.1 (the prototxts under tests/models/zoo) with
random weights and statistics, at 224x224 and batch 1 and 32, every contender runs with the
same number of threads (default 2). Each contender is warmed up, then the contenders are
called in turn (so a machine slowing down affects all alike) and the median per pass is
reported, with each one's ratio to decaffe eager (above 1: faster than decaffe eager).
The ONNX export is the verified one of `decaffe export -onnx` (folded with -fold_bn for the
"onnxruntime folded" column). OpenVINO (CPU, f32, the threads given) and OpenCV's dnn
(`readNetFromONNX`, cv2.setNumThreads) run the same ONNX file where they are installed
(decaffe export -check ort,openvino,opencv checks them). Run:

    python benchmarks/bench_export.py [--iterations 10] [--batches 1,32] [--threads 2]
    python benchmarks/bench_export.py --nets resnet50 --batches 1 --iterations 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import cv2
import numpy as np
import torch

import decaffe
from decaffe import export
from decaffe.bn import fold
from decaffe.export.pytorch_source import generate, instantiate
from decaffe.export.verify import onnxruntime_session, runtime_installed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "tests", "models", "zoo")
NETS = {
    "resnet50": "KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt",
    "mobilenet_v2": "shicai__MobileNet-Caffe/mobilenet_v2_deploy.prototxt",
    "squeezenet": "forresti__SqueezeNet/SqueezeNet_v1.1/deploy.prototxt",
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


def _median_times(contenders: dict, iterations: int) -> dict[str, float]:
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(iterations):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(name: str, batch: int, iterations: int, threads: int, tmp: str) -> dict[str, float]:
    net = decaffe.Net(os.path.join(ZOO, NETS[name]), decaffe.TEST)
    data = net.inputs[0]
    net.blobs[data].reshape(batch, 3, 224, 224)
    net.reshape()
    randomize(net, np.random.default_rng(0))
    folded = fold(net)
    x = np.random.default_rng(1).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    for n in (net, folded):
        n.blobs[data].reshape(*x.shape)
        n.reshape()
        n.blobs[data].data[...] = x
    onnx_path = os.path.join(tmp, f"{name}.onnx")
    onnx_folded = os.path.join(tmp, f"{name}_folded.onnx")
    export.to_onnx(net, onnx_path)
    export.to_onnx(net, onnx_folded, fold_bn=True)
    sess = onnxruntime_session(onnx_path, threads)
    sess_folded = onnxruntime_session(onnx_folded, threads)
    graph, _ = export.prepare(net)
    module = instantiate(*generate(graph))
    xt = torch.from_numpy(x)

    def run_module():
        with torch.no_grad():
            module(xt)

    contenders = {
        "decaffe eager": net.forward,
        "decaffe folded": folded.forward,
        "generated PyTorch": run_module,
        "onnxruntime": lambda: sess.run(None, {data: x}),
        "onnxruntime folded": lambda: sess_folded.run(None, {data: x}),
    }
    if runtime_installed("openvino"):
        import openvino as ov  # optional (the export extra)

        core = ov.Core()
        compiled = core.compile_model(onnx_path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                         "INFERENCE_NUM_THREADS": threads})
        contenders["OpenVINO"] = lambda: compiled({data: x})
    cv2.setNumThreads(threads)
    cvnet = cv2.dnn.readNetFromONNX(onnx_path)

    def run_cv():
        cvnet.setInput(x, data)
        cvnet.forward()

    contenders["OpenCV dnn"] = run_cv
    return _median_times(contenders, iterations)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nets", default=",".join(NETS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"forward ms, median of {args.iterations} (CPU, {args.threads} threads; ratio = "
          "decaffe eager time / this time)")
    cols = ["decaffe eager", "decaffe folded", "generated PyTorch", "onnxruntime",
            "onnxruntime folded", "OpenCV dnn"] + (["OpenVINO"] if runtime_installed("openvino")
                                                 else [])
    print(f"{'net':<13} {'batch':>5} " + " ".join(f"{c:>24}" for c in cols))
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (int(b) for b in args.batches.split(",")):
            for name in args.nets.split(","):
                t = bench(name, batch, args.iterations, args.threads, tmp)
                base = t["decaffe eager"]
                cells = [f"{t[c] * 1e3:>14.1f} ({base / t[c]:>5.2f}x)" for c in cols]
                print(f"{name:<13} {batch:>5} " + " ".join(f"{c:>24}" for c in cells),
                      flush=True)


if __name__ == "__main__":
    main()

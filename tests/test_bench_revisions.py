"""benchmarks/bench_revisions.py reads the lines bench_engine.py and bench_train_step.py print."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))

import bench_revisions  # noqa: E402


def test_reads_label_torch_and_decaffe_times():
    lines = {
        "cifar_bn   torch     61.20 ms   decaffe     63.10 ms   ratio 1.031   (pycaffe "
        "forward()+backward()     64.00 ms, ratio 1.046)": ("cifar_bn", 61.2, 63.1),
        "train step  torch    22.95 ms   decaffe    36.14 ms   ratio 1.575":
            ("train step", 22.95, 36.14),
        "update only torch    0.160 ms   decaffe    0.110 ms   ratio 0.688":
            ("update only", 0.16, 0.11),
    }
    for line, (label, t, d) in lines.items():
        m = bench_revisions.LINE.match(line)
        assert m is not None, line
        assert (m["label"].strip(), float(m["torch"]), float(m["decaffe"])) == (label, t, d)


def test_ignores_other_lines():
    for line in ("device cpu, torch 2.13.0+cpu, threads 1",
                 "ROIPooling    1x1024x40x40   decaffe     638.2   reference    8631.4"):
        assert bench_revisions.LINE.match(line) is None

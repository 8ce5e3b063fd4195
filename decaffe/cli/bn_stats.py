"""`decaffe bn_stats show|recompute`: look at or rebuild BatchNorm statistics.

``decaffe bn_stats show -model M [-weights W] [-phase TEST]``
    One row per BatchNorm layer: channels, scale factor, the ranges of the mean and variance
    the global-statistics forward uses, eps, and whether the layer uses global or batch
    statistics in that phase; then warnings (factor 0, variances <= 0, batch statistics in
    the TEST phase, no Scale after the layer).
    Exit status 0 (warnings are reports, not errors).

``decaffe bn_stats recompute -model train_val.prototxt -weights in.caffemodel -iterations N
-out out.caffemodel [-phase TRAIN] [-test_iterations K [-test_model M]]``
    Zero every BatchNorm's statistics, run N forward passes of the net in the given phase
    (TRAIN: its training data) with batch statistics and moving_average_fraction 1, so the
    stored statistics are the exact average over the N batches, and write all weights to
    -out. With -test_iterations K, the TEST-phase net (of -test_model, default -model) is
    scored over K batches before and after, and each scalar output (accuracy, loss) printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DecaffeError
from ..proto import caffe_pb2
from .common import parse_gpus, parse_phase, parse_stages, single_device
from .flags import FlagParser, at_least, gpu_ids, phase_name

if TYPE_CHECKING:  # no import at run time: the engine loads after the flags are parsed
    from ..net import Net

USAGE = ("usage: decaffe bn_stats show -model M [-weights W]\n"
         "       decaffe bn_stats recompute -model M -weights W -iterations N -out O")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "-help", "--help", "help"):
        print(USAGE, file=sys.stderr if len(argv) < 2 else sys.stdout)
        return 1 if len(argv) < 2 else 0
    action = argv[1]
    if action == "show":
        return _show(argv)
    if action == "recompute":
        return _recompute(argv)
    raise DecaffeError(f"unknown action '{action}': use show or recompute\n{USAGE}")


def _common(fp: FlagParser) -> None:
    fp.flag("model", default="", required=True, exists=True, help="the net (prototxt)")
    fp.flag("gpu", default="", check=gpu_ids,
            help="optional; run in GPU mode on the given device id")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")


def _build(model: str, phase: int, args: argparse.Namespace) -> Net:
    from ..net import Net  # after parsing: -help loads no PyTorch

    return Net(model, phase, level=args.level, stages=parse_stages(args.stage))


def _show(argv: list[str]) -> int:
    fp = FlagParser(f"{argv[0]} show", "Show BatchNorm statistics and their problems.")
    _common(fp)
    fp.flag("weights", default="", exists=True, help="optional; the trained weights")
    fp.flag("phase", default="", check=phase_name,
            help="optional; network phase (TRAIN or TEST), default TEST")
    args = fp.parse(argv[2:])
    from ..bn import stats  # after parsing: flag errors and -help need no PyTorch

    single_device(parse_gpus(args.gpu))
    net = _build(args.model, parse_phase(args.phase, caffe_pb2.TEST), args)
    if args.weights:
        net.copy_from(args.weights)
    infos = stats.inspect(net)
    net.close()
    if not infos:
        print("the net has no BatchNorm layer")
        return 0
    print(stats.format_table(infos))
    return 0


def score(net: Net, iterations: int) -> dict[str, float]:
    """Each scalar output's mean over `iterations` forward passes (as `caffe test` reports)."""
    sums: dict[str, float] = {}
    for _ in range(iterations):
        net.forward_loss()
        for name in net.outputs:
            data = np.asarray(net.blobs[name].data)
            if data.size == 1:
                sums[name] = sums.get(name, 0.0) + float(data.reshape(-1)[0])
    return {k: v / iterations for k, v in sums.items()}


def _scores(label: str, values: dict[str, float]) -> str:
    return f"{label}: " + ", ".join(f"{k} = {v:.6g}" for k, v in values.items())


def _recompute(argv: list[str]) -> int:
    fp = FlagParser(f"{argv[0]} recompute",
                    "Recompute BatchNorm statistics as an exact average over N batches.")
    _common(fp)
    fp.flag("weights", default="", required=True, exists=True, help="the trained weights")
    fp.flag("iterations", type=int, default=0, check=at_least(1),
            help="the number of batches to average over")
    fp.flag("out", default="", required=True,
            help="where to write the weights with the new statistics")
    fp.flag("phase", default="", check=phase_name,
            help="optional; phase of the passes (default TRAIN)")
    fp.flag("test_iterations", type=int, default=0, check=at_least(0),
            help="optional; score the TEST-phase net over this many batches before and after")
    fp.flag("test_model", default="", exists=True,
            help="optional; the net to score in the TEST phase (default: -model)")
    args = fp.parse(argv[2:])
    from ..bn import stats  # after parsing: flag errors and -help need no PyTorch

    single_device(parse_gpus(args.gpu))
    test_model = args.test_model or args.model
    net = _build(args.model, parse_phase(args.phase, caffe_pb2.TRAIN), args)
    net.copy_from(args.weights)
    if args.test_iterations:
        print(_scores("before", _score_file(test_model, args, args.weights)))
    tty = sys.stderr.isatty()

    def progress(i: int, n: int) -> None:
        if tty:
            sys.stderr.write(f"\rrecompute: batch {i}/{n}")
            if i == n:
                sys.stderr.write("\n")
            sys.stderr.flush()

    try:
        names = stats.recompute(net, args.iterations, progress=progress)
    finally:
        net.close()
    print(f"recomputed the statistics of {len(names)} BatchNorm layer(s) over "
          f"{args.iterations} batches")
    net.save(args.out)
    print(f"wrote {args.out}")
    if args.test_iterations:
        print(_scores("after", _score_file(test_model, args, args.out)))
    return 0


def _score_file(model: str, args: argparse.Namespace, weights: str) -> dict[str, float]:
    net = _build(model, caffe_pb2.TEST, args)
    try:
        net.copy_from(weights)
        return score(net, args.test_iterations)
    finally:
        net.close()

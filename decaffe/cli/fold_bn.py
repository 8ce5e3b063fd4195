"""`decaffe fold_bn -model deploy.prototxt -weights in.caffemodel -out_model folded.prototxt
-out_weights folded.caffemodel`: fold BatchNorm (with the Scale/Bias after it) into the
Convolution, Deconvolution or InnerProduct before it.

Builds the net in the TEST phase (where BatchNorm uses its stored statistics), folds every
BatchNorm it can (see decaffe.bn.fold), lists what was folded and what was kept and why,
then checks the fold: both nets get the same random standard-normal inputs, and the largest
relative difference max|a − b| / max|a| of each output, and of all blobs both nets keep, is
printed with the forward time of each net. The files are written only when the largest
difference is within -tolerance (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import sys

from ..proto import caffe_pb2
from .common import parse_gpus, parse_stages, single_device
from .flags import FlagParser, at_least, gpu_ids


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Fold BatchNorm/Scale into the preceding layer's weights.")
    fp.flag("model", default="", required=True, exists=True, help="the deploy net (prototxt)")
    fp.flag("weights", default="", required=True, exists=True,
            help="its trained weights (.caffemodel or .caffemodel.h5)")
    fp.flag("out_model", default="", required=True, help="where to write the folded prototxt")
    fp.flag("out_weights", default="", required=True,
            help="where to write the folded caffemodel")
    fp.flag("iterations", type=int, default=10, check=at_least(0),
            help="forward passes timed for each net (0: do not time)")
    fp.flag("seed", type=int, default=0, help="seed of the random check inputs")
    fp.flag("tolerance", type=float, default=1e-3,
            help="largest relative difference accepted before writing the files")
    fp.bool_flag("verify", default=True, help="compare the nets' outputs on random inputs")
    fp.flag("gpu", default="", check=gpu_ids,
            help="optional; run in GPU mode on the given device id")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")
    args = fp.parse(argv[1:])
    return _fold(args)


def _fold(args: argparse.Namespace) -> int:
    # after parsing: -help loads no PyTorch
    from ..bn.fold import compare, fold_result, random_inputs, time_forward
    from ..net import Net, filter_net, load_net_param  # after parsing: -help loads no PyTorch

    single_device(parse_gpus(args.gpu))
    stages = parse_stages(args.stage)
    net = Net(args.model, caffe_pb2.TEST, weights=args.weights, level=args.level,
              stages=stages)
    # the layers as the prototxt has them (no splits, no stamped phases), for the output
    state = caffe_pb2.NetState(phase=caffe_pb2.TEST, level=args.level, stage=stages)
    source = filter_net(load_net_param(args.model), state)
    result = fold_result(net, source)
    print(result.summary())
    folded = result.build()
    if args.verify:
        inputs = random_inputs(net, args.seed)
        outs = compare(net, folded, inputs)
        every = compare(net, folded, inputs, blobs="all")
        for name, d in outs.items():
            print(f"output {name}: largest relative difference {d:.3g}")
        worst = max(every.values(), default=0.0)
        where = max(every, key=every.get) if every else "-"
        print(f"largest relative difference over {len(every)} blobs both nets keep: "
              f"{worst:.3g} (blob '{where}')")
        if not worst <= args.tolerance:
            print(f"decaffe fold_bn: the folded net differs by {worst:.3g} > -tolerance "
                  f"{args.tolerance:g}; nothing written", file=sys.stderr)
            return 1
    if args.iterations:
        before, after = time_forward([net, folded], args.iterations)
        print(f"forward: {before * 1e3:.2f} ms before, {after * 1e3:.2f} ms after "
              f"({before / after:.2f}x, median of {args.iterations})")
    result.save(args.out_model, args.out_weights)
    print(f"wrote {args.out_model} and {args.out_weights}")
    return 0

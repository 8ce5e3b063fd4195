"""`decaffe test -model M -weights W [-iterations 50] [-gpu N] [-phase TEST] [-level N]
[-stage a,b]`: Caffe's `caffe test`, scoring a model.

Builds the net (phase TEST unless -phase says otherwise), loads the weights, runs
`iterations` forward passes, logging each batch's outputs ("Batch i, NAME = x"), then the
mean loss ("Loss: x") and each output's mean over the batches, with its weighted loss for
loss outputs ("NAME = mean (* weight = weighted loss)"), in glog's line format on stderr.
"""

from __future__ import annotations

import argparse

import numpy as np

from .. import log
from ..proto import caffe_pb2
from . import speed
from .common import parse_gpus, parse_phase, parse_stages, single_device
from .flags import FlagParser, add_net_flags


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Score a model (caffe test).")
    add_net_flags(fp, "the trained weights (.caffemodel or .caffemodel.h5)", "TEST",
                  model_required="need a model definition to score",
                  weights_required="need model weights to score")
    speed.add_flags(fp)
    args = fp.parse(argv[1:])
    with log.python_logging():
        return _test(args)


def _test(args: argparse.Namespace) -> int:
    from ..net import Net  # after parsing: -help loads no PyTorch

    phase = parse_phase(args.phase, caffe_pb2.TEST)
    single_device(parse_gpus(args.gpu))
    speed.apply(args)
    net = Net(args.model, phase, level=args.level, stages=parse_stages(args.stage))
    net.copy_from(args.weights)
    speed.prepare(net)
    log.info(f"Running for {args.iterations} iterations.")
    outputs = net.outputs
    scores = None
    loss = np.float32(0)
    for i in range(args.iterations):
        loss += np.float32(net.forward_loss())
        values, names = [], []
        for name in outputs:
            arr = np.asarray(net.blobs[name].data, dtype=np.float32).reshape(-1)
            values.append(arr)
            names.extend([name] * arr.size)
        flat = np.concatenate(values) if values else np.zeros(0, np.float32)
        for name, v in zip(names, flat):
            log.info(f"Batch {i}, {name} = {log.fmt(v)}")
        scores = flat.copy() if scores is None else scores + flat
    loss = np.float32(loss / np.float32(args.iterations))
    log.info(f"Loss: {log.fmt(loss)}")
    weights = net.blob_loss_weights
    for name, total in zip(names, scores if scores is not None else []):
        mean = np.float32(total / np.float32(args.iterations))
        w = float(weights[name])
        extra = f" (* {log.fmt(w)} = {log.fmt(np.float32(w) * mean)} loss)" if w else ""
        log.info(f"{name} = {log.fmt(mean)}{extra}")
    net.close()
    return 0

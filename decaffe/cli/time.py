"""`decaffe time -model M [-weights W] [-iterations 50] [-gpu N] [-phase TRAIN] [-level N]
[-stage a,b]`: Caffe's `caffe time`, benchmarking a model layer by layer.

One untimed forward and backward pass first (so memory is allocated), then `iterations`
rounds of each layer's forward in order and each layer's backward in reverse order, timed
one layer at a time (on a GPU the device is synchronised around each layer, as Caffe's CUDA
event timer measures device time). Logs each round's forward-backward time, each layer's
average forward and backward time, and Caffe's "Average Forward pass", "Average Backward
pass", "Average Forward-Backward" and "Total Time" lines.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import log
from ..proto import caffe_pb2
from . import speed
from .common import parse_gpus, parse_phase, parse_stages, single_device
from .flags import FlagParser, add_net_flags

if TYPE_CHECKING:  # no import at run time: the engine loads after the flags are parsed
    from ..net import Net


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Benchmark the execution time of a model (caffe time).")
    add_net_flags(fp, "optional; weights to load first", "TRAIN",
                  model_required="need a model definition to time")
    speed.add_flags(fp)
    args = fp.parse(argv[1:])
    with log.python_logging():
        return _time(args)


def _ms(seconds: float) -> str:
    return log.fmt(seconds * 1000.0)


def _time(args: argparse.Namespace) -> int:
    import torch  # after parsing: -help loads no PyTorch

    from ..net import Net  # after parsing: -help loads no PyTorch

    phase = parse_phase(args.phase, caffe_pb2.TRAIN)
    single_device(parse_gpus(args.gpu))
    speed.apply(args)
    net = Net(args.model, phase, level=args.level, stages=parse_stages(args.stage))
    if args.weights:
        net.copy_from(args.weights)
    names = [rec.name for rec in net.layer_records]
    n = len(names)

    def sync() -> None:
        if net.device.type == "cuda":
            torch.cuda.synchronize(net.device)

    log.info("Performing Forward")
    initial_loss = net._forward(0, n - 1)
    log.info(f"Initial loss: {log.fmt(initial_loss)}")
    log.info("Performing Backward")
    net._backward(n - 1, 0)
    sync()
    log.info("*** Benchmark begins ***")
    log.info(f"Testing for {args.iterations} iterations.")
    forward_per_layer = [0.0] * n
    backward_per_layer = [0.0] * n
    forward_total = backward_total = 0.0
    total_start = time.perf_counter()
    for j in range(args.iterations):
        iter_start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            net._forward(i, i)
            sync()
            forward_per_layer[i] += time.perf_counter() - t0
        forward_total += time.perf_counter() - iter_start
        back_start = time.perf_counter()
        for i in range(n - 1, -1, -1):
            t0 = time.perf_counter()
            net._backward(i, i)
            sync()
            backward_per_layer[i] += time.perf_counter() - t0
        backward_total += time.perf_counter() - back_start
        log.info(f"Iteration: {j + 1} forward-backward time: "
                 f"{_ms(time.perf_counter() - iter_start)} ms.")
    total = time.perf_counter() - total_start
    iters = args.iterations
    log.info("Average time per layer: ")
    for i in range(n):
        log.info(f"{names[i]:>10s}\tforward: {_ms(forward_per_layer[i] / iters)} ms.")
        log.info(f"{names[i]:>10s}\tbackward: {_ms(backward_per_layer[i] / iters)} ms.")
    log.info(f"Average Forward pass: {_ms(forward_total / iters)} ms.")
    log.info(f"Average Backward pass: {_ms(backward_total / iters)} ms.")
    log.info(f"Average Forward-Backward: {_ms(total / iters)} ms.")
    log.info(f"Total Time: {_ms(total)} ms.")
    log.info("*** Benchmark ends ***")
    if args.precision != "fp32" or args.compile:
        _whole_step(net, args, sync)
    return 0


def _whole_step(net: Net, args: argparse.Namespace, sync: Callable[[], object]) -> None:
    """The whole pass as the solver runs it (one forward+backward, no per-layer timing or
    synchronisation), at the chosen precision, compiled with -compile: the figure that
    per-layer timing cannot give (a compiled net has no layers to time one by one)."""
    speed.prepare(net)
    what = ", ".join([args.precision] + (["compiled"] if args.compile else []))
    for _ in range(2):  # warm-up: compilation, autotuning, allocator
        net.zero_grad(set_to_none=True)
        net.forward_backward()
    sync()
    times = []
    for _ in range(args.iterations):
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        net.forward_backward()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    log.info(f"Whole step ({what}): forward-backward median {_ms(times[len(times) // 2])} ms, "
             f"average {_ms(sum(times) / len(times))} ms over {len(times)} iterations.")

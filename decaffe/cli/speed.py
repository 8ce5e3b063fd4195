"""The flags train, test and time share for speed: -precision, -compile, -threads."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .flags import FlagParser, at_least

if TYPE_CHECKING:  # no import at run time: the engine loads after the flags are parsed
    from ..net import Net


def add_flags(fp: FlagParser) -> None:
    fp.flag("precision", default="fp32", choices=("fp32", "tf32", "bf16", "fp16"),
            help="numeric precision of the passes: fp32 (Caffe's), tf32, bf16 or fp16 "
            "(autocast; fp16 trains with dynamic loss scaling); parameters, BatchNorm "
            "statistics, solver history and snapshots stay float32")
    fp.bool_flag("compile", default=False, help="run the net's passes through torch.compile "
                 "(falls back to eager with one warning where it cannot)")
    fp.flag("threads", type=int, default=0, check=at_least(0),
            help="CPU threads for the kernels (0: chosen "
            "from the free cores, re-checked while training)")


def apply(args: argparse.Namespace) -> None:
    """Set threads, precision and compilation for this process from the flags."""
    # compile, precision and threads import torch: loaded after parsing, so -help loads none
    from .. import compile as _compile
    from .. import log, precision, threads  # after parsing: -help loads no PyTorch
    n = threads.configure(args.threads)
    log.info(f"Using {n} CPU thread{'s' if n != 1 else ''} for kernels"
             + ("" if args.threads else " (chosen from the free cores)"))
    precision.set_precision(args.precision)
    if args.precision != "fp32":
        log.info(f"Precision: {args.precision}")
    _compile.set_compile(args.compile)


def prepare(net: Net) -> None:
    """Compile a net when -compile is on."""
    # compile imports torch: loaded after parsing, so -help loads none
    from .. import compile as _compile

    if _compile.enabled():
        _compile.compile_net(net)

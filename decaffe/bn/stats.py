"""BatchNorm statistics: inspecting them, and recomputing them from data.

Caffe's BatchNorm keeps three blobs: the running sum of batch means, the running sum of
unbiased batch variances, and the scale factor (a running count). With
λ = moving_average_fraction each training pass does

    factor ← λ·factor + 1,  mean_sum ← λ·mean_sum + μ_batch,  var_sum ← λ·var_sum + σ²_batch·m/(m−1)

and with global statistics the layer uses mean = mean_sum/factor and var = var_sum/factor
(both 0 when the factor is 0). With λ = 1 the factor counts the batches and the two
quotients are the exact averages of the batch means and unbiased batch variances — what
:func:`recompute` produces, for a net whose statistics no longer match its weights (after
fine-tuning with frozen statistics, pruning, or a changed input distribution).

The forks' layers take part too: ``BatchNormKyle`` keeps BatchNorm's three blobs (and is
treated exactly like it); yjxiong/Cysu's ``BN`` keeps a running mean and a running
(biased) variance (blobs 2 and 3, as yjxiong/caffe since 2016-04), shown as they are, and
recomputed as the exact average of the batch means and batch variances (the quantities its
momentum average estimates). SegNet's ``BN`` keeps no statistics (bn_mode LEARN uses
the batch's, INFERENCE has them folded into its scale and shift): it is listed with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DecaffeError
from ..layer import Layer
from ..net import Net
from ..proto import caffe_pb2
from .fold import BlobGraph, _match_layers, source_param


# ----------------------------------------------------------------------------------------------
# Inspecting
# ----------------------------------------------------------------------------------------------
@dataclass
class BNInfo:
    """One BatchNorm layer's statistics as its global-statistics forward would use them."""

    layer: str
    channels: int
    factor: float
    mean_min: float
    mean_max: float
    var_min: float
    var_max: float
    eps: float
    use_global_stats: bool
    warnings: list[str] = field(default_factory=list)


def inspect(net: Net) -> list[BNInfo]:
    """Every BatchNorm layer of a built net, with warnings for:

    - a scale factor of 0 (no statistics: the global forward divides by sqrt(eps) alone);
    - variances that are negative or zero (NaN or huge outputs; dead channels);
    - batch statistics in a TEST-phase net (use_global_stats: false: outputs depend on the
      batch, and every forward changes the stored statistics);
    - no Scale layer reading its output (no learned γ and β after the normalisation).

    Learnable statistics need no warning: as in Caffe 1.0, a net refuses a non-zero lr_mult
    on them and gives missing entries lr_mult 0.
    """
    param = source_param(net)
    index = _match_layers(net, param)
    graph = BlobGraph.of(param)
    out = []
    for i, lp in enumerate(param.layer):
        if lp.type == "BN":
            out.append(_inspect_fork_bn(net, lp, net.layer_records[index[i]].layer))
            continue
        if lp.type not in ("BatchNorm", "BatchNormKyle"):
            continue
        layer = net.layer_records[index[i]].layer
        mean_sum, var_sum, factor = (p.detach().cpu().double().numpy().reshape(-1)
                                     for p in layer.blob_params[:3])
        f = float(factor[0]) if factor.size else 0.0
        s = 0.0 if f == 0 else 1.0 / f
        mean, var = mean_sum * s, var_sum * s
        info = BNInfo(lp.name, int(layer.channels), f,
                      float(mean.min()) if mean.size else 0.0,
                      float(mean.max()) if mean.size else 0.0,
                      float(var.min()) if var.size else 0.0,
                      float(var.max()) if var.size else 0.0,
                      float(layer.eps), bool(layer.use_global_stats))
        w = info.warnings
        if f == 0:
            w.append("scale factor is 0: no statistics were accumulated, so the global "
                     "forward uses mean 0 and variance 0 (y = x/sqrt(eps))")
        elif not np.isfinite(f):
            w.append(f"scale factor is {f}: the statistics are unusable")
        if f != 0:
            bad = ~np.isfinite(mean) | ~np.isfinite(var)
            if bad.any():
                w.append(f"{int(bad.sum())} of {var.size} channels have non-finite "
                         "statistics")
            nonpos = np.isfinite(var) & (var <= 0)
            if nonpos.any():
                neg = int((var < 0).sum())
                w.append(f"{int(nonpos.sum())} of {var.size} channels have variance <= 0 "
                         f"({neg} negative, min {float(var[np.isfinite(var)].min()):.6g}): "
                         "below -eps sqrt(var+eps) is NaN; zero means a constant channel "
                         "scaled by 1/sqrt(eps)")
        if net.phase == caffe_pb2.TEST and not layer.use_global_stats:
            w.append("use_global_stats is false in the TEST phase: outputs depend on the "
                     "batch, and every forward pass changes the stored statistics")
        readers = graph.readers_of((i, 0))
        if lp.type == "BatchNormKyle" and layer.alpha_beta:
            pass  # its own alpha and beta scale and shift
        elif not any(param.layer[k].type == "Scale" for k, _ in readers):
            what = ", ".join(f"{param.layer[k].type} '{param.layer[k].name}'"
                             for k, _ in readers) or "nothing (a net output)"
            w.append(f"no Scale layer follows (its output is read by {what}): the "
                     "normalised values get no learned scale and shift")
        out.append(info)
    return out


def _inspect_fork_bn(net: Net, lp: caffe_pb2.LayerParameter, layer: Layer) -> BNInfo:
    """A fork BN's row: yjxiong/Cysu's running mean and variance, or SegNet's note."""
    if layer.segnet:
        info = BNInfo(lp.name, int(layer.channels), float("nan"), float("nan"), float("nan"),
                      float("nan"), float("nan"), 1e-9, not layer.learn)
        info.warnings.append(
            "SegNet BN: no stored statistics (bn_mode LEARN normalises with the batch's; "
            "INFERENCE has them folded into scale and shift)" if layer.learn else
            "SegNet BN in bn_mode INFERENCE: y = scale·x + shift, statistics folded in")
        return info
    mean = layer.blob(2).detach().cpu().double().numpy().reshape(-1)
    var = layer.blob(3).detach().cpu().double().numpy().reshape(-1)
    info = BNInfo(lp.name, int(layer.channels), float("nan"), float(mean.min()),
                  float(mean.max()), float(var.min()), float(var.max()), float(layer.eps),
                  not layer.batch_stats)
    bad = ~np.isfinite(mean) | ~np.isfinite(var)
    if bad.any():
        info.warnings.append(f"{int(bad.sum())} of {var.size} channels have non-finite "
                             "statistics")
    low = np.isfinite(var) & (var + layer.eps <= 0)
    if low.any():
        info.warnings.append(f"{int(low.sum())} of {var.size} channels have variance + eps "
                             "<= 0: their normalised values are inf or NaN")
    if layer.frozen:
        info.warnings.append("frozen: the statistics, scale and shift never change in "
                             "training")
    return info


def format_table(infos: list[BNInfo]) -> str:
    """The `decaffe bn_stats show` table: one row per layer, its warnings under it."""
    head = (f"{'layer':<24} {'channels':>8} {'factor':>10} {'mean min':>11} {'mean max':>11} "
            f"{'var min':>11} {'var max':>11} {'eps':>8}  stats")
    lines = [head, "-" * len(head)]
    for b in infos:
        lines.append(f"{b.layer:<24} {b.channels:>8} {b.factor:>10.5g} {b.mean_min:>11.4g} "
                     f"{b.mean_max:>11.4g} {b.var_min:>11.4g} {b.var_max:>11.4g} "
                     f"{b.eps:>8.3g}  {'global' if b.use_global_stats else 'batch'}")
        for w in b.warnings:
            lines.append(f"  WARNING {b.layer}: {w}")
    n = sum(len(b.warnings) for b in infos)
    lines.append(f"{len(infos)} BatchNorm layer(s), {n} warning(s)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Recomputing
# ----------------------------------------------------------------------------------------------
Feed = Callable[[int], Mapping[str, np.ndarray]] | Iterable[Mapping[str, np.ndarray]]


def _batches(feed: Feed | None):
    if feed is None:
        return None
    if callable(feed):
        return (feed(i) for i in _count())
    return iter(feed)


def _count():
    i = 0
    while True:
        yield i
        i += 1


def recompute(net: Net, iterations: int, feed: Feed | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Zero every BatchNorm's statistics, run `iterations` forward passes with batch
    statistics and λ = 1 (an exact average), and leave the result in the net's blobs.

    The passes run the net as it is built (its phase's layers, Dropout included in TRAIN,
    with no gradient and no parameter update) up to its last BatchNorm; every BatchNorm
    normalises with its batch's statistics, as in training. Nets with Data layers read their
    own batches; nets with Input blobs need `feed`: a callable i -> {input name: array} or an
    iterable of such dicts. progress(i, iterations) is called after each pass.
    Returns the BatchNorm layer names.
    """
    if iterations < 1:
        raise DecaffeError(f"iterations: must be at least 1, not {iterations}")
    layers = [(rec.index, rec.layer) for rec in net.layer_records
              if rec.type in ("BatchNorm", "BatchNormKyle")]
    fork = [(rec.index, rec.layer) for rec in net.layer_records
            if rec.type == "BN" and not rec.layer.segnet]
    if not layers and not fork:
        raise DecaffeError("the net has no BatchNorm layer: nothing to recompute")
    batches = _batches(feed)
    if batches is None and net.inputs:
        raise DecaffeError(f"the net reads the input blobs {net.inputs}: give feed= batches "
                           "for them (or use a net with Data layers)")
    last = max(li for li, _ in layers + fork)
    saved = [(layer.use_global_stats, layer.fraction) for _, layer in layers]
    saved_fork = [(layer.batch_stats, layer.momentum) for _, layer in fork]
    seen: set[int] = set()
    with torch.no_grad():
        for _, layer in layers:
            for p in layer.blob_params[:3]:  # BatchNormKyle's alpha and beta stay
                if id(p) not in seen:  # shared statistics are zeroed once
                    seen.add(id(p))
                    p.zero_()
        for _, layer in fork:
            layer.blob(2).zero_()
            layer.blob(3).zero_()
    try:
        for _, layer in layers:
            layer.use_global_stats = False
            layer.fraction = 1.0
        for _, layer in fork:
            layer.batch_stats = True
        for it in range(iterations):
            for _, layer in fork:  # momentum it/(it+1): an exact running average
                layer.momentum = it / (it + 1)
            if batches is not None:
                try:
                    batch = next(batches)
                except StopIteration:
                    raise DecaffeError(f"feed ran out after {it} batches; {iterations} were "
                                       "asked for") from None
                _set_inputs(net, batch)
            net._forward_range(0, last, record=False, grad=False)
            if progress is not None:
                progress(it + 1, iterations)
    finally:
        for (_, layer), (g, frac) in zip(layers, saved):
            layer.use_global_stats, layer.fraction = g, frac
        for (_, layer), (b, m) in zip(fork, saved_fork):
            layer.batch_stats, layer.momentum = b, m
    return [layer.name for _, layer in sorted(layers + fork, key=lambda t: t[0])]


def _set_inputs(net: Net, batch: Mapping[str, np.ndarray]) -> None:
    reshaped = False
    for name, arr in batch.items():
        if name not in net.inputs:
            raise DecaffeError(f"feed gives '{name}', which is not an input of the net "
                               f"(inputs: {net.inputs})")
        arr = np.asarray(arr)
        if net.blobs[name].shape != arr.shape:
            net.blobs[name].reshape(*arr.shape)
            reshaped = True
    if reshaped:
        net.reshape()
    for name, arr in batch.items():
        net.blobs[name].data[...] = arr

"""Folding BatchNorm (and the Scale/Bias after it) into the layer before it.

In a deploy net a BatchNorm layer that uses its stored statistics is a fixed per-channel
affine map. Caffe defines it as

    μ = mean_sum · s,  σ² = var_sum · s,  s = 1/factor (s = 0 when factor is 0),
    y = (x − μ) / sqrt(σ² + eps),

and a following Scale (γ, optional β) or Bias (β) is another per-channel affine map. When
x is the output of a Convolution, Deconvolution or InnerProduct read by nothing else, the
whole chain can be absorbed into that layer's weights W and bias b:

    a = γ / sqrt(σ² + eps),   W' = W · a (per output channel),   b' = (b − μ) · a + β.

The folded net has the BatchNorm/Scale/Bias layers removed, the absorbing layer writes the
blob the rest of the net read, and gets a bias (``bias_term: true``) if it had none. A
BatchNorm is kept, with the reason, when its input comes from any other layer (Concat,
Eltwise, Pooling, an input, ...), when its input blob is also read by other layers, when it
uses batch statistics (``use_global_stats: false``), or when the absorbing layer shares its
weights or normalises a different axis.

The forks' normalisation layers fold the same way (with any Scale/Bias after them):
``BN`` of yjxiong/Cysu in its fixed form (TEST phase or ``frozen``), blob 3 the running
variance: y = (x − mean)·(var + eps)^−½·scale + shift, so a = (var + eps)^−½·scale,
c = shift − mean·a; ``BN`` of SegNet/ENet with ``bn_mode: INFERENCE``, y = scale·x + shift;
and ``BatchNormKyle`` with global statistics (BatchNorm's map, then its alpha and beta when
use_alpha_beta).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DecaffeError
from ..formats import prototxt
from ..formats import weights as wfmt
from ..layer import Layer
from ..net import Net
from ..proto import caffe_pb2

# Layers whose output channels are a linear function of their weights, per channel.
ABSORBERS = ("Convolution", "Deconvolution", "InnerProduct")
# Normalisation layers that fold: BVLC's and the forks' (decaffe.layers.forks.norm).
NORMS = ("BatchNorm", "BN", "BatchNormKyle")

Version = tuple[int, int]  # (layer index, top index) of one value a blob name holds


# ----------------------------------------------------------------------------------------------
# The blob graph of a NetParameter (no splits): who writes and who reads each value
# ----------------------------------------------------------------------------------------------
@dataclass
class BlobGraph:
    """For a NetParameter without Split layers: the value each bottom reads (a Version),
    the readers of each value, and the values that carry a loss weight.

    In-place layers write a new value under the same name, so a name alone does not say
    which value a layer reads; versions do.
    """

    source: dict[tuple[int, int], Version | None]  # (layer, bottom index) -> value read
    readers: dict[Version, list[tuple[int, int]]]  # value -> [(layer, bottom index)]
    loss: set[Version]

    @classmethod
    def of(cls, param: caffe_pb2.NetParameter) -> BlobGraph:
        last: dict[str, Version] = {}
        source: dict[tuple[int, int], Version | None] = {}
        readers: dict[Version, list[tuple[int, int]]] = collections.defaultdict(list)
        loss: set[Version] = set()
        for i, lp in enumerate(param.layer):
            for j, name in enumerate(lp.bottom):
                v = last.get(name)
                source[(i, j)] = v
                if v is not None:
                    readers[v].append((i, j))
            for j, name in enumerate(lp.top):
                last[name] = (i, j)
                if j < len(lp.loss_weight) and lp.loss_weight[j] != 0:
                    loss.add((i, j))
        return cls(source, dict(readers), loss)

    def readers_of(self, v: Version) -> list[tuple[int, int]]:
        return self.readers.get(v, [])


def unsplit(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of a built net's NetParameter without the Split layers the net inserted
    (named ``{blob}_{layer}_{i}_split``), every reader wired back to the split blob."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    rename: dict[str, str] = {}
    for lp in param.layer:
        if _is_inserted_split(lp):
            for t in lp.top:
                rename[t] = rename.get(lp.bottom[0], lp.bottom[0])
            continue
        new = out.layer.add()
        new.CopyFrom(lp)
        for j, b in enumerate(new.bottom):
            if b in rename:
                new.bottom[j] = rename[b]
    return out


def _is_inserted_split(lp: caffe_pb2.LayerParameter) -> bool:
    if lp.type != "Split" or len(lp.bottom) != 1 or not lp.name.endswith("_split"):
        return False
    return lp.name.startswith(lp.bottom[0] + "_") and all(
        t == f"{lp.name}_{k}" for k, t in enumerate(lp.top))


def _match_layers(net: Net, param: caffe_pb2.NetParameter) -> list[int]:
    """For each layer of param (the net's layers without inserted splits), its index in net."""
    built = net.net_param.layer
    out, k = [], 0
    for lp in param.layer:
        while k < len(built) and not (built[k].name == lp.name and built[k].type == lp.type):
            if not _is_inserted_split(built[k]):
                raise DecaffeError(f"the NetParameter does not describe this net: layer "
                                   f"'{built[k].name}' of the net is not in it")
            k += 1
        if k == len(built):
            raise DecaffeError(f"the NetParameter does not describe this net: its layer "
                               f"'{lp.name}' ({lp.type}) is not in the net")
        out.append(k)
        k += 1
    return out


def source_param(net: Net) -> caffe_pb2.NetParameter:
    """The NetParameter a built net came from, as near as it can be recovered: the layers as
    built minus inserted splits, and minus the `phase` the net stamps on every layer."""
    param = unsplit(net.net_param)
    # level and stages stay (layer rules may name them); the phase is whoever builds it
    param.state.CopyFrom(net.state)
    param.state.ClearField("phase")
    if not param.state.level:
        param.state.ClearField("level")
    if not param.state.ListFields():
        param.ClearField("state")
    for lp in param.layer:
        if lp.HasField("phase") and lp.phase == net.phase:
            lp.ClearField("phase")
    return param


def uses_global_stats(lp: caffe_pb2.LayerParameter, phase: int) -> bool:
    """Caffe's rule: use_global_stats when given, else true exactly in the TEST phase."""
    p = lp.batch_norm_param
    return p.use_global_stats if p.HasField("use_global_stats") else phase == caffe_pb2.TEST


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------
@dataclass
class FoldedChain:
    """A BatchNorm (and the Scale/Bias layers after it) absorbed into `target`."""

    target: str
    target_type: str
    layers: list[str]
    top: str
    created_bias: bool


@dataclass
class KeptLayer:
    """A BatchNorm left in the folded net, and why."""

    layer: str
    reason: str


@dataclass
class FoldResult:
    """The folded net as a NetParameter plus weights, and what was folded or kept."""

    net_param: caffe_pb2.NetParameter
    weights: list[tuple[str, list[np.ndarray]]]
    folded: list[FoldedChain] = field(default_factory=list)
    kept: list[KeptLayer] = field(default_factory=list)
    phase: int = caffe_pb2.TEST

    def build(self, dtype: torch.dtype | None = None) -> Net:
        """The folded net, built and loaded with the folded weights."""
        kwargs = {} if dtype is None else {"dtype": dtype}
        net = Net(self.net_param, phase=self.phase, **kwargs)
        net.copy_from_layers(self.weights, source="<folded weights>")
        return net

    def save(self, model_path: str, weights_path: str) -> None:
        """Write the folded prototxt and a caffemodel with its weights."""
        prototxt.write_text(self.net_param, model_path)
        index = {lp.name: i for i, lp in enumerate(self.net_param.layer)}
        data = {index[name]: arrays for name, arrays in self.weights if arrays}
        wfmt.save_caffemodel(weights_path, self.net_param, data)

    def summary(self) -> str:
        """What was folded and what was kept (with reasons), one line each."""
        lines = []
        for c in self.folded:
            extra = " (bias created)" if c.created_bias else ""
            lines.append(f"folded   {' + '.join(c.layers)} into {c.target_type} "
                         f"'{c.target}'{extra}")
        for k in self.kept:
            lines.append(f"kept     {k.layer}: {k.reason}")
        lines.append(f"{len(self.folded)} BatchNorm layer(s) folded, {len(self.kept)} kept")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Folding
# ----------------------------------------------------------------------------------------------
def _shared_names(param: caffe_pb2.NetParameter) -> dict[str, list[str]]:
    """param name -> layers that use it (only names used by more than one layer)."""
    users: dict[str, list[str]] = collections.defaultdict(list)
    for lp in param.layer:
        for spec in lp.param:
            if spec.name:
                users[spec.name].append(lp.name)
    return {k: v for k, v in users.items() if len(v) > 1}


def _names(param: caffe_pb2.NetParameter, refs: list[tuple[int, int]]) -> str:
    return ", ".join(f"'{param.layer[i].name}'" for i, _ in refs)


def _absorber_problem(lp: caffe_pb2.LayerParameter, layer: Layer) -> str | None:
    """Why this Convolution/Deconvolution/InnerProduct cannot absorb a per-channel map on
    axis 1 of its top, or None."""
    if lp.type == "InnerProduct":
        if layer.axis != 1:
            return (f"InnerProduct '{lp.name}' has axis {layer.axis}: its outputs are not on "
                    "the channel axis (1) that BatchNorm normalises")
        return None
    if len(lp.bottom) != 1 or len(lp.top) != 1:
        return f"{lp.type} '{lp.name}' has several bottoms sharing its weights"
    if layer.spec.axis != 1:
        return (f"{lp.type} '{lp.name}' has its channels on axis {layer.spec.axis}, not the "
                "axis (1) that BatchNorm normalises")
    return None


def _chain(param: caffe_pb2.NetParameter, graph: BlobGraph, net: Net, index: list[int], bn_i: int,
           channels: int
           ) -> list[int]:
    """The Scale/Bias layers that follow BatchNorm bn_i one after another, each the only
    reader of the value before it, per-channel on axis 1 with their own blobs."""
    out: list[int] = []
    cur: Version = (bn_i, 0)
    while True:
        if cur in graph.loss:
            break
        readers = graph.readers_of(cur)
        if len(readers) != 1:
            break
        k, _ = readers[0]
        lp = param.layer[k]
        if lp.type not in ("Scale", "Bias") or len(lp.bottom) != 1 or len(lp.top) != 1:
            break
        layer = net.layer_records[index[k]].layer
        if layer.axis != 1 or tuple(layer.blob_params[0].shape) != (channels,):
            break
        out.append(k)
        cur = (k, 0)
    # a loss weight on the last value would have to move to the absorbing layer: don't fold it
    while out and (out[-1], 0) in graph.loss:
        out.pop()
    return out


def _batch_stats_reason(lp: caffe_pb2.LayerParameter, bn: Layer) -> str | None:
    """Why this normalisation layer is no fixed per-channel map, or None."""
    if lp.type == "BN":
        if bn.segnet:
            return None if not bn.learn else (
                "it is a SegNet BN in bn_mode LEARN: it normalises with batch statistics "
                "(run SegNet's statistics step and bn_mode: INFERENCE first)")
        return None if not bn.batch_stats else (
            "it normalises with batch statistics (a TRAIN-phase BN that is not frozen)")
    if not bn.use_global_stats:
        return ("it uses batch statistics (use_global_stats: false), so its output "
                "depends on the batch and is no fixed map to fold")
    return None


def _norm_affine(lp: caffe_pb2.LayerParameter, bn: Layer) -> tuple[np.ndarray, np.ndarray]:
    """(a, c) in float64 with layer(x) = a·x + c per channel, for a fixed normalisation."""
    blobs = [p.detach().cpu().double().numpy().reshape(-1) for p in bn.blob_params]
    if lp.type == "BN":
        if bn.segnet:  # INFERENCE: scale·x + shift
            return blobs[0], blobs[1]
        scale, shift, mean, var = blobs
        a = scale / np.sqrt(var + bn.eps)
        return a, shift - mean * a
    mean_sum, var_sum, factor = blobs[:3]
    s = 0.0 if factor[0] == 0 else 1.0 / factor[0]
    mean, var = mean_sum * s, var_sum * s
    a = 1.0 / np.sqrt(var + bn.eps)
    c = -mean * a
    if lp.type == "BatchNormKyle" and bn.alpha_beta:
        a, c = a * blobs[3], c * blobs[3] + blobs[4]
    return a, c


def _affine(net: Net, index: list[int], param: caffe_pb2.NetParameter, bn_i: int,
            chain: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(a, c) in float64 with chain(x) = a·x + c per channel."""
    bn = net.layer_records[index[bn_i]].layer
    a, c = _norm_affine(param.layer[bn_i], bn)
    for k in chain:
        layer = net.layer_records[index[k]].layer
        blobs = [p.detach().cpu().double().numpy().reshape(-1) for p in layer.blob_params]
        if param.layer[k].type == "Scale":
            gamma = blobs[0]
            a, c = a * gamma, c * gamma
            if layer.bias_term:
                c = c + blobs[1]
        else:
            c = c + blobs[0]
    return a, c


def _absorb(lp: caffe_pb2.LayerParameter, layer: Layer, weights: list[np.ndarray], a: np.ndarray,
            c: np.ndarray
            ) -> list[np.ndarray]:
    """The absorbing layer's new [weights, bias] after following it with a·y + c."""
    w = weights[0].astype(np.float64)
    n = a.size
    if lp.type == "Convolution":
        w2 = w * a.reshape((n,) + (1,) * (w.ndim - 1))
    elif lp.type == "Deconvolution":
        g = layer.group
        # weights (C_in, C_out/g, k...): output channel gi·C_out/g + j lives in rows of group gi
        grouped = w.reshape((g, w.shape[0] // g) + w.shape[1:])
        scale = a.reshape((g, 1, n // g) + (1,) * (w.ndim - 2))
        w2 = (grouped * scale).reshape(w.shape)
    elif layer.transpose:  # InnerProduct stored K×N
        w2 = w * a.reshape(1, n)
    else:
        w2 = w * a.reshape(n, 1)
    b = weights[1].astype(np.float64).reshape(-1) if layer.bias_term else np.zeros(n)
    b2 = b * a + c
    dtype = weights[0].dtype
    return [w2.astype(dtype), b2.astype(dtype).reshape((n,))]


def fold_result(net: Net, source: caffe_pb2.NetParameter | None = None) -> FoldResult:
    """Work out and compute the fold of every foldable BatchNorm of a built net.

    source: the NetParameter the net was built from, filtered to the net's state and without
    splits (as `decaffe fold_bn` reads it from the prototxt); default: recovered from the net.
    """
    param = caffe_pb2.NetParameter()
    param.CopyFrom(source if source is not None else source_param(net))
    index = _match_layers(net, param)
    graph = BlobGraph.of(param)
    shared = _shared_names(param)
    phase = net.phase
    weights = {i: [p.detach().cpu().numpy().copy()
                   for p in net.layer_records[index[i]].layer.blob_params]
               for i in range(len(param.layer))}
    folded: list[FoldedChain] = []
    kept: list[KeptLayer] = []
    remove: set[int] = set()
    for i, lp in enumerate(param.layer):
        if lp.type not in NORMS:
            continue
        bn = net.layer_records[index[i]].layer
        src = graph.source.get((i, 0))
        producer = param.layer[src[0]] if src is not None else None
        reason = _batch_stats_reason(lp, bn)
        if reason is not None:
            pass
        elif len(lp.top) != 1:
            reason = "it has more than one top (the batch mean and variance)"
        elif producer is None:
            reason = f"its input '{lp.bottom[0]}' is not produced by any layer"
        elif producer.type not in ABSORBERS:
            reason = (f"its input '{lp.bottom[0]}' comes from {producer.type} layer "
                      f"'{producer.name}'; only Convolution, Deconvolution and InnerProduct "
                      "can absorb it")
        elif (i, 0) in graph.loss:
            reason = "its output carries a loss weight"
        elif src in graph.loss or len(graph.readers_of(src)) != 1:
            others = [r for r in graph.readers_of(src) if r[0] != i]
            what = f"also read by {_names(param, others)}" if others else "a loss"
            reason = (f"its input '{lp.bottom[0]}' is {what}, which need the unnormalised "
                      "values")
        else:
            reason = _absorber_problem(producer, net.layer_records[index[src[0]]].layer)
            if reason is None:
                for spec in producer.param:
                    if spec.name in shared:
                        others = [n for n in shared[spec.name] if n != producer.name]
                        reason = (f"'{producer.name}' shares its parameter '{spec.name}' with "
                                  f"{', '.join(repr(n) for n in others)}, which would change "
                                  "too")
                        break
            if reason is None and bn.channels != _out_channels(net, index, param, src[0]):
                reason = (f"its {bn.channels} channels are not the {producer.type} "
                          f"'{producer.name}' output channels")
        if reason is not None:
            kept.append(KeptLayer(lp.name, reason))
            continue
        p = src[0]
        chain = _chain(param, graph, net, index, i, bn.channels)
        a, c = _affine(net, index, param, i, chain)
        target_layer = net.layer_records[index[p]].layer
        created = not target_layer.bias_term
        weights[p] = _absorb(producer, target_layer, weights[p], a, c)
        last = chain[-1] if chain else i
        new_top = param.layer[last].top[0]
        producer.top[0] = new_top
        if created:
            sub = (producer.inner_product_param if producer.type == "InnerProduct"
                   else producer.convolution_param)
            sub.bias_term = True
        remove.add(i)
        remove.update(chain)
        folded.append(FoldedChain(producer.name, producer.type,
                                  [lp.name] + [param.layer[k].name for k in chain], new_top,
                                  created))
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    new_weights = []
    for i, lp in enumerate(param.layer):
        if i in remove:
            continue
        out.layer.add().CopyFrom(lp)
        if weights[i]:
            new_weights.append((lp.name, weights[i]))
    return FoldResult(out, new_weights, folded, kept, phase)


def _out_channels(net: Net, index: list[int], param: caffe_pb2.NetParameter, i: int) -> int:
    layer = net.layer_records[index[i]].layer
    return layer.N if param.layer[i].type == "InnerProduct" else layer.num_output


def fold(net: Net, source: caffe_pb2.NetParameter | None = None, *,
         report: bool = False) -> Net | tuple[Net, FoldResult]:
    """The net with every foldable BatchNorm (and its Scale/Bias) folded into the preceding
    Convolution, Deconvolution or InnerProduct; with report=True, (net, FoldResult).

    The original net is not changed. See fold_result for `source`.
    """
    result = fold_result(net, source)
    folded = result.build(dtype=net._dtype)
    return (folded, result) if report else folded


# ----------------------------------------------------------------------------------------------
# Checking a fold: same outputs, and how long a forward pass takes
# ----------------------------------------------------------------------------------------------
def random_inputs(net: Net, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal arrays for each of the net's input blobs, at their current shapes."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(net.blobs[name].shape).astype(np.float32)
            for name in net.inputs}


def _run(net: Net, inputs: dict[str, np.ndarray], names: list[str] | None) -> dict[str, np.ndarray]:
    for name, arr in inputs.items():
        if net.blobs[name].shape != arr.shape:
            net.blobs[name].reshape(*arr.shape)
            net.reshape()
        net.blobs[name].data[...] = arr
    net.forward()
    names = net.outputs if names is None else names
    return {k: np.array(net.blobs[k].data, dtype=np.float64) for k in names}


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max|a − b| / max|a| (the absolute difference where a is all zeros)."""
    if a.size == 0:
        return 0.0
    scale = float(np.abs(a).max())
    err = float(np.abs(a - b).max())
    return err / scale if scale > 0 else err


def compare(before: Net, after: Net, inputs: dict[str, np.ndarray] | None = None, seed: int = 0,
            blobs: str = "outputs") -> dict[str, float]:
    """The relative difference (see relative_difference) of each output of two nets fed the
    same inputs (random ones by default); blobs="all" also compares every other blob both
    nets have (after folding, a blob name both nets keep holds the same values)."""
    inputs = random_inputs(before, seed) if inputs is None else inputs
    if sorted(before.outputs) != sorted(after.outputs):
        raise DecaffeError(f"the nets have different outputs: {sorted(before.outputs)} and "
                           f"{sorted(after.outputs)}")
    if blobs == "all":
        names = [n for n in before.blobs if n in after.blobs and n not in inputs]
    else:
        names = list(before.outputs)
    a, b = _run(before, inputs, names), _run(after, inputs, names)
    out = {}
    for name in names:
        if a[name].shape != b[name].shape:
            raise DecaffeError(f"blob '{name}' has shape {a[name].shape} before folding and "
                               f"{b[name].shape} after")
        out[name] = relative_difference(a[name], b[name])
    return out


def time_forward(nets: list, iterations: int = 10) -> list[float]:
    """Median seconds per forward pass of each net, measured in interleaved rounds (so a
    machine slowing down affects all nets alike) after one warm-up pass each."""
    for net in nets:
        net.forward()
    times: list[list[float]] = [[] for _ in nets]
    for _ in range(iterations):
        for k, net in enumerate(nets):
            if net.device.type == "cuda":
                torch.cuda.synchronize(net.device)
            t0 = time.perf_counter()
            net.forward()
            if net.device.type == "cuda":
                torch.cuda.synchronize(net.device)
            times[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]

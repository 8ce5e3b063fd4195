"""What a run records from the train net, gathered on the device and copied to the host once.

A `Sampler` knows, from the net's structure, where every value it reads lives: the net's
output blobs, each learnable parameter (its weight, its gradient before the update, and
the update the solver subtracted), and for each BatchNorm layer its stored statistics
(blob 0 and 1 divided by the scale factor, blob 2), the last batch's statistics and the
following Scale's γ and β, at most `max_channels` channels per layer (every k-th channel
beyond that). Each sample concatenates what it reads into one float32 vector on the
device, so a sample costs one host transfer (one synchronisation on a GPU), however many
layers the net has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..net import Net

MAX_CHANNELS = 512  # per BatchNorm layer and sample (the run folder format's limit)
MAX_BN_VALUES = 16384  # channels per sample over all BatchNorm layers, before the 6 vectors


@dataclass
class _BNLayer:
    name: str
    layer: object
    channels: int
    index: torch.Tensor | None  # the sampled channels; None: all of them
    stride: int
    scale: object | None  # the Scale layer right after it
    has_beta: bool
    top: str = ""  # its top blob: reading it makes a compiled pass's batch statistics


@dataclass
class _Param:
    layer: str
    k: int
    tensor: torch.nn.Parameter
    shape: list[int] = field(default_factory=list)


class Sampler:
    """Reads a train net's outputs, parameter norms and BatchNorm statistics (see module)."""

    def __init__(self, net: Net, max_channels: int = MAX_CHANNELS) -> None:
        self.net = net
        self.outputs = list(net.outputs)
        self.output_counts = [int(net.blobs[n].count) for n in self.outputs]
        self.params = self._learnable(net)
        self.bn = self._batch_norms(net, max_channels)

    # -- structure ------------------------------------------------------------------------
    @staticmethod
    def _learnable(net: Net) -> list[_Param]:
        """Each layer's parameter blobs that the solver updates (owners of shared blobs)."""
        out = []
        owned = {id(p) for p in net.learnable_params}
        seen: set[int] = set()
        for rec in net.layer_records:
            name, layer = rec.name, rec.layer
            for k, prm in enumerate(layer.blob_params):
                if id(prm) not in owned or id(prm) in seen or not prm.requires_grad:
                    continue
                seen.add(id(prm))
                out.append(_Param(name, k, prm, [int(d) for d in prm.shape]))
        return out

    @staticmethod
    def _batch_norms(net: Net, max_channels: int) -> list[_BNLayer]:
        records = net.layer_records
        layers = [(rec.index, rec.layer) for rec in records
                  if rec.type == "BatchNorm" and rec.layer.num_blobs >= 3]
        if not layers:
            return []
        # many BN layers (a ResNet): fewer channels each, so one sample stays small
        cap = max(1, min(max_channels, max(64, MAX_BN_VALUES // len(layers))))
        out = []
        for li, layer in layers:
            c = int(layer.channels)
            stride = max(1, math.ceil(c / cap))
            index = None if stride == 1 else torch.arange(0, c, stride)
            scale, has_beta = None, False
            if li + 1 < len(records):
                nxt = records[li + 1].layer
                tops = records[li].tops
                if (nxt.type == "Scale" and records[li + 1].bottoms[:1] == tops[:1]
                        and nxt.num_blobs >= 1 and tuple(nxt.blob_params[0].shape) == (c,)):
                    scale = nxt
                    has_beta = nxt.num_blobs >= 2 and tuple(nxt.blob_params[1].shape) == (c,)
            out.append(_BNLayer(records[li].name, layer, c, index, stride, scale, has_beta,
                                records[li].top_names[0]))
        return out

    # -- on the device --------------------------------------------------------------------
    def norms(self, which: str) -> torch.Tensor | None:
        """The L2 norm of each learnable parameter's weight ('weight') or diff ('grad'), as
        one float32 vector on the device (a missing diff counts 0, as Caffe's zero diff)."""
        if not self.params:
            return None
        if which == "weight":
            tensors = [p.tensor.detach() for p in self.params]
            return torch.stack([n.float() for n in torch._foreach_norm(tensors)])
        have = [p.tensor.grad for p in self.params]
        present = [g for g in have if g is not None]
        norms = iter(torch._foreach_norm(present)) if present else iter(())
        dev = self.params[0].tensor.device
        zero = torch.zeros((), device=dev)
        return torch.stack([next(norms).float() if g is not None else zero for g in have])

    def output_values(self) -> list[torch.Tensor]:
        blobs = self.net.blobs
        return [blobs[n].tensor("data").detach().reshape(-1).float() for n in self.outputs]

    def bn_values(self) -> tuple[list[torch.Tensor], list[tuple]]:
        """Each BN layer's vectors, and the layout to read them back: (layer, [(key, n)])."""
        parts: list[torch.Tensor] = []
        layout = []
        # under -compile the batch statistics stay inside the graph: reading a BN top the
        # pass left unmade reruns it eagerly (decaffe.compile), which keeps them
        for b in self.bn:
            blob = self.net.blobs[b.top]
            if blob._lazy is not None:
                blob.tensor("data")
        for b in self.bn:
            blobs = b.layer.blob_params
            mean_sum, var_sum, factor = (blobs[i].detach().float() for i in range(3))
            f = factor.reshape(-1)[:1]
            inv = torch.where(f == 0, torch.zeros_like(f), 1.0 / f)
            vectors = [("mean", mean_sum.reshape(-1) * inv), ("var", var_sum.reshape(-1) * inv)]
            stats = getattr(b.layer, "batch_stats", None)
            if stats is not None and stats[0].numel() == b.channels:
                vectors += [("batch_mean", stats[0].reshape(-1).float()),
                            ("batch_var", stats[1].reshape(-1).float())]
            if b.scale is not None:
                vectors.append(("gamma", b.scale.blob_params[0].detach().reshape(-1).float()))
                if b.has_beta:
                    vectors.append(("beta", b.scale.blob_params[1].detach().reshape(-1).float()))
            keys = [("factor", 1)]
            parts.append(f)
            if b.index is not None and b.index.device != mean_sum.device:
                b.index = b.index.to(mean_sum.device)  # once, not at every sample
            for key, v in vectors:
                if b.index is not None:
                    v = v[b.index]
                parts.append(v)
                keys.append((key, int(v.numel())))
            layout.append((b, keys))
        return parts, layout

    @staticmethod
    def fetch(parts: list[torch.Tensor]) -> list[float]:
        """Everything in one host transfer."""
        if not parts:
            return []
        dev = parts[0].device
        flat = torch.cat([p.to(dev).reshape(-1) for p in parts])
        return flat.cpu().tolist()

    # -- back on the host -----------------------------------------------------------------
    def outputs_dict(self, values: list[float]) -> dict:
        out = {}
        pos = 0
        for name, n in zip(self.outputs, self.output_counts):
            chunk = values[pos:pos + n]
            pos += n
            if name in out:  # an output named twice cannot be; keep the first
                continue
            out[name] = chunk[0] if n == 1 else chunk
        return out

    def params_dict(self, weight: list[float], grad: list[float],
                    update: list[float]) -> dict:
        layers: dict[str, dict] = {}
        for p, w, g, u in zip(self.params, weight, grad, update):
            entry = layers.setdefault(p.layer, {"param": []})
            ratio = (u / w) if (w and math.isfinite(w) and math.isfinite(u)) else None
            entry["param"].append({"index": p.k, "shape": p.shape, "weight_norm": w,
                                   "grad_norm": g, "update_ratio": ratio})
        return layers

    @staticmethod
    def bn_dict(layout: list[tuple], values: list[float]) -> dict:
        layers = {}
        pos = 0
        for b, keys in layout:
            entry: dict = {"channels": b.channels}
            if b.stride != 1:
                entry["channel_stride"] = b.stride
            for key, n in keys:
                chunk = values[pos:pos + n]
                pos += n
                entry[key] = chunk[0] if key == "factor" else chunk
            if b.scale is None:
                entry["gamma"] = entry["beta"] = None
            elif not b.has_beta:
                entry["beta"] = None
            layers[b.name] = entry
        return layers

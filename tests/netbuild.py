"""The shared test-net builder: Input layers for named shapes, then the layers under test.

``input_layer("x", (2, 3))`` / ``input_layers({"x": (2, 3)})`` are the prototxt of Input
layers, ``layer(name, type, bottoms, tops, extra)`` one layer's; ``net_text`` puts them
before the layers; ``build`` makes the decaffe Net (pycaffe's caffe.Net) in a phase and dtype;
``random_inputs`` draws values each input's consumers accept (valid ROIs for ROIPooling,
indices for Embed and BatchReindex, class labels for the losses and Accuracy, 0/1 targets for
SigmoidCrossEntropyLoss and ContrastiveLoss's similarity, sequence-continuation flags for
RNN, LSTM and LSTMUnit), normal values otherwise."""

from __future__ import annotations

import numpy as np
import torch

import caffe
from decaffe.formats import prototxt
from decaffe.proto import caffe_pb2

# (layer type, bottom index) whose values are class labels of bottom 0's axis 1
_LABELS = {("SoftmaxWithLoss", 1), ("Accuracy", 1), ("MultinomialLogisticLoss", 1),
           ("InfogainLoss", 1), ("HingeLoss", 1), ("SoftmaxWithLossOHEM", 1),
           ("SegAccuracy", 1), ("CenterLoss", 1), ("MarginInnerProduct", 1)}
_BINARY = {("SigmoidCrossEntropyLoss", 1), ("ContrastiveLoss", 2)}


def input_layer(name: str, shape: tuple[int, ...]) -> str:
    """An Input layer named as its top, of that shape."""
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {dims} }} }} }}\n')


def input_layers(inputs: dict[str, tuple[int, ...]]) -> str:
    """One Input layer per name, its top of that shape."""
    return "".join(input_layer(n, s) for n, s in inputs.items())


def layer(name: str, type_: str, bottoms: tuple | list, tops: tuple | list, extra: str = ""
          ) -> str:
    """One layer's prototxt: its name, type, bottoms, tops and the rest (`extra`)."""
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {extra} }}\n'


def net_text(layers: str, inputs: dict[str, tuple[int, ...]], force_backward: bool = False,
             ) -> str:
    """The prototxt of Input layers for `inputs` followed by `layers`."""
    return ("force_backward: true\n" if force_backward else "") + input_layers(inputs) + layers


def build(layers: str, inputs: dict[str, tuple[int, ...]], phase: int = caffe.TRAIN,
          dtype: torch.dtype = torch.float32, force_backward: bool = False) -> caffe.Net:
    """caffe.Net of `layers` behind Input layers of `inputs`."""
    return caffe.Net(net_text(layers, inputs, force_backward), phase, dtype=dtype)


def input_kinds(layers: str) -> dict[str, tuple]:
    """How each blob that layers read must be filled: ("rois", spatial_scale, bottom 0),
    ("int", high) or ("label", bottom 0) or ("binary",); blobs not named are normal."""
    param = prototxt.parse_text(layers, caffe_pb2.NetParameter())
    kinds: dict[str, tuple] = {}
    for lp in param.layer:
        for j, b in enumerate(lp.bottom):
            key = (lp.type, j)
            if lp.type in ("ROIPooling", "PSROIPooling") and j == 1:
                p = lp.roi_pooling_param if lp.type == "ROIPooling" else lp.psroi_pooling_param
                kinds[b] = ("rois", p.spatial_scale or 1.0, lp.bottom[0])
            elif lp.type == "Embed" and j == 0:
                kinds[b] = ("int", lp.embed_param.input_dim)
            elif lp.type == "BatchReindex" and j == 1:
                kinds[b] = ("index", lp.bottom[0])
            elif (lp.type in ("RNN", "LSTM") and j == 1) or (lp.type == "LSTMUnit" and j == 2):
                kinds[b] = ("cont",)
            elif lp.type == "MaxUnPool" and j == 1:
                kinds[b] = ("fixed",)
            elif key in _LABELS:
                kinds[b] = ("label", lp.bottom[0])
            elif key in _BINARY:
                kinds[b] = ("binary",)
    return kinds


def random_inputs(layers: str, inputs: dict[str, tuple[int, ...]], seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """Values for `inputs` that the layers accept (see the module docstring)."""
    rng = np.random.default_rng(seed)
    kinds = input_kinds(layers)
    out = {}
    for name, shape in inputs.items():
        kind = kinds.get(name, ("normal",))
        if kind[0] == "rois":
            n, _c, h, w = inputs[kind[2]]
            num = shape[0]
            x1 = rng.uniform(0, 0.7, num) * w / kind[1]
            y1 = rng.uniform(0, 0.7, num) * h / kind[1]
            x2 = x1 + rng.uniform(0.1, 0.3, num) * w / kind[1]
            y2 = y1 + rng.uniform(0.1, 0.3, num) * h / kind[1]
            arr = np.stack([rng.integers(0, n, num), x1, y1, x2, y2], 1).reshape(shape)
        elif kind[0] == "int":
            arr = rng.integers(0, kind[1], shape)
        elif kind[0] == "index":
            arr = rng.integers(0, inputs[kind[1]][0], shape)
        elif kind[0] == "label":
            classes = inputs[kind[1]][1] if len(inputs[kind[1]]) > 1 else 2
            arr = rng.integers(0, classes, shape)
        elif kind[0] == "cont":  # a sequence starts at t = 0 and continues after
            arr = np.ones(shape)
            arr[0] = 0
        elif kind[0] == "fixed":  # positions (MaxUnPool's mask): 0 is always valid
            arr = np.zeros(shape)
        elif kind[0] == "binary":
            arr = rng.integers(0, 2, shape)
        else:
            arr = rng.standard_normal(shape)
        out[name] = np.asarray(arr, np.float32)
    return out

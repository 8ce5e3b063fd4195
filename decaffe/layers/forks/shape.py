"""Shape layers of the conversion forks (inisis/caffe, the ONNX-to-Caffe converters' target):
``Pad`` (CONSTANT / REPLICATE / REFLECT padding, negative pads crop) and ``Unsqueeze``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from google.protobuf.message import Message

from ...layer import Layer, Shape, Tops, register
from .resize import field, has_field


def enum_name(msg: Message, name: str, default: str) -> str:
    """The symbolic name of an enum field's value (default where the schema lacks it)."""
    fd = msg.DESCRIPTOR.fields_by_name.get(name)
    if fd is None:
        return default
    return fd.enum_type.values_by_number[getattr(msg, name)].name


@register("Pad")
class PadLayer(Layer):
    """Pads (or, with negative pads, crops) the last two axes of a 2- to 4-axis bottom.

    Bottoms: x, 2 to 4 axes (H×W, C×H×W or N×C×H×W); the last two are padded.
    Tops: y, x's shape with H + pad_u + pad_d and W + pad_l + pad_r (not in place).
    Blobs: none.
    Params: pad_param (PadParameter): pad_type CONSTANT (default), REPLICATE or REFLECT;
    pad_u, pad_d, pad_l, pad_r (default 0); pad_value (default 0, CONSTANT only).
    Source: inisis/caffe src/caffe/layers/pad_layer.cpp.

    CONSTANT fills with pad_value; REPLICATE repeats the edge row/column; REFLECT mirrors
    without repeating the edge (each pad must be < the axis size). Four negative pads crop
    that many rows/columns instead (decaffe also crops when some pads are 0 and the rest
    negative). Mixing positive and negative pads is refused (the fork writes outside the
    top), as is in-place use. The fork had no backward; decaffe's is the exact one
    (docs/compat.md).
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.pad_param
        self.check(self.top_names[0] != self.bottom_names[0],
                   "Pad does not allow in-place computation")
        self.pads = tuple(int(field(p, k, 0)) for k in ("pad_u", "pad_d", "pad_l", "pad_r"))
        self.mode = enum_name(p, "pad_type", "CONSTANT")
        self.value = float(field(p, "pad_value", 0.0))
        self.crop = all(v <= 0 for v in self.pads) and any(v < 0 for v in self.pads)
        self.check(self.crop or all(v >= 0 for v in self.pads),
                   f"pads (u, d, l, r) = {self.pads} mix positive and negative values",
                   "pad_param.pad_u")
        self.check(self.mode in ("CONSTANT", "REPLICATE", "REFLECT"),
                   f"unknown pad type {self.mode}", "pad_param.pad_type")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.check(2 <= len(shape) <= 4, f"the bottom must have 2 to 4 axes, not shape {shape}")
        u, d, l, r = self.pads
        h, w = shape[-2] + u + d, shape[-1] + l + r
        self.check(h >= 0 and w >= 0, f"the padded size {h}x{w} is negative", "pad_param")
        if self.mode == "REFLECT" and not self.crop:
            self.check(max(u, d) < shape[-2] and max(l, r) < shape[-1],
                       f"REFLECT pads {self.pads} must be smaller than the bottom's "
                       f"{shape[-2]}x{shape[-1]}", "pad_param.pad_type")
        return [shape[:-2] + (h, w)]

    def forward(self, x: torch.Tensor) -> Tops:
        self.reshape([tuple(x.shape)])
        u, d, l, r = self.pads
        if self.crop:
            return x[..., -u:x.shape[-2] + d, -l:x.shape[-1] + r]
        if self.mode == "CONSTANT":
            return F.pad(x, (l, r, u, d), value=self.value)
        lead = x.shape[:-2]
        x4 = x.reshape((-1, 1) + tuple(x.shape[-2:]))
        y = F.pad(x4, (l, r, u, d), mode="replicate" if self.mode == "REPLICATE" else "reflect")
        return y.reshape(lead + tuple(y.shape[-2:]))


@register("Unsqueeze")
class UnsqueezeLayer(Layer):
    """Inserts an axis of size 1 into the bottom's shape.

    Bottoms: x, any shape with A axes.
    Tops: x's values with a 1 inserted at axis dim (A + 1 axes), a view of the bottom.
    Blobs: none.
    Params: unsqueeze_param (UnsqueezeParameter): dim (required in the fork; refused when
    unset); a negative dim counts from the end (dim + A + 1); 0 <= dim <= A.
    Source: inisis/caffe src/caffe/layers/unsqueeze.cpp.

    The fork copies the values and its backward is empty (x gets no gradient there);
    decaffe's gradient passes the top's diff through unchanged.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.unsqueeze_param
        self.check(has_field(p, "dim"), "dim must be set", "unsqueeze_param.dim")
        self.dim = int(p.dim)

    def _index(self, shape: Shape) -> int:
        i = self.dim + len(shape) + 1 if self.dim < 0 else self.dim
        self.check(0 <= i <= len(shape), f"dim {self.dim} is outside the bottom's "
                   f"{len(shape)} axes", "unsqueeze_param.dim")
        return i

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        i = self._index(shape)
        return [shape[:i] + (1,) + shape[i:]]

    def forward(self, x: torch.Tensor) -> Tops:
        return x.unsqueeze(self._index(tuple(x.shape)))

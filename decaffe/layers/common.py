"""Layers every net uses: Input, Split and InnerProduct."""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import fillers
from ..layer import Layer, Shape, Tops, register


@register("Input")
class InputLayer(Layer):
    """Net inputs: tops of the shapes in input_param, filled by the user before forward.

    Bottoms: none.
    Tops: one or more, each of its input_param.shape.
    Blobs: none.
    Params: input_param.shape (repeated BlobShape): none, one for every top, or one per top.
    Source: src/caffe/layers/input_layer.cpp.

    The net binds the user's blobs as this layer's tops; the layer itself is never run. With no
    shape given the tops have shape () (Caffe leaves them unshaped).
    """

    exact_bottoms = 0
    min_tops = 1
    is_data = True

    def setup(self, bottom_shapes: list[Shape]) -> None:
        shapes = self.lp.input_param.shape
        n = len(self.top_names)
        self.check(len(shapes) in (0, 1, n),
                   f"give 0, 1 or {n} (one per top) shapes, not {len(shapes)}", "input_param.shape")
        self._shapes = [tuple(int(d) for d in shapes[0 if len(shapes) == 1 else i].dim)
                        if len(shapes) else () for i in range(n)]

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return list(self._shapes)

    def forward(self) -> Tops:
        # The net binds the user's blobs as this layer's tops; nothing is computed here.
        raise RuntimeError("Input layers are not run")


@register("Split")
class SplitLayer(Layer):
    """One bottom read by several consumers: every top is the bottom, and the diffs add up.

    Bottoms: x, any shape.
    Tops: one or more, each x (of x's shape); none may be the bottom (no in place).
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/split_layer.cpp.

    The net inserts Split layers where a blob has several consumers, as Caffe's
    InsertSplits does. The tops are views of the bottom, each its own autograd node, so their
    gradients are summed into x.
    """

    exact_bottoms = 1
    min_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        # Caffe's SplitLayer keeps a diff per top, so no top may be the bottom itself
        for top in self.top_names:  # split_layer.cpp checks every top, not just the first
            self.check(top != self.bottom_names[0],
                       f"Split Layer does not allow in-place computation (top '{top}' is its "
                       "bottom)")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [bottom_shapes[0]] * len(self.top_names)

    def forward(self, x: torch.Tensor) -> Tops:
        # views, so each top is its own autograd node whose gradients are summed into x
        return tuple(x.view(x.shape) for _ in self.top_names)


def numpy_dtype(t: torch.Tensor) -> type[np.floating]:
    """Caffe's Dtype for host-side arithmetic on t's values: float64 for a float64 tensor,
    else float32 (the forks' layers compute their geometry on the host in it)."""
    return np.float64 if t.dtype == torch.float64 else np.float32


def canonical_axis(axis: int, num_axes: int, layer: Layer, field: str) -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
    layer.check(-num_axes <= axis < num_axes,
                f"axis {axis} out of range for a {num_axes}-axis blob", field)
    return axis + num_axes if axis < 0 else axis


@register("InnerProduct")
class InnerProductLayer(Layer):
    """Fully connected: flattens the axes from `axis` on into K inputs, y = x·Wᵀ + b.

    Bottoms: x, N×… whose axes from `axis` on hold K values (K fixed at setup).
    Tops: y, x's axes before `axis` then num_output (N×num_output for the default axis 1).
    Blobs: the weights W, num_output×K (K×num_output with transpose); the bias b,
        (num_output,), when bias_term.
    Params: inner_product_param.num_output (required here; Caffe has no default),
        bias_term (default true), weight_filler and bias_filler (default constant 0), axis
        (default 1, negative counts from the end), transpose (default false).
    Source: src/caffe/layers/inner_product_layer.cpp.

    A bottom whose count from `axis` on differs from the K set up is an error naming the layer.
    """

    min_bottoms = 1
    max_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.inner_product_param
        shape = bottom_shapes[0]
        self.check(p.HasField("num_output"), "num_output must be given", "inner_product_param")
        self.N = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = canonical_axis(p.axis, len(shape), self, "inner_product_param.axis")
        # MKL's sgemm sums a row in an order that depends on the row count (one row goes
        # through gemv): rows are computed as in a product of 4 (decaffe.items)
        self.item_group = 4 if self.axis >= 1 else 0
        self.K = math.prod(shape[self.axis:])
        if self.num_blobs == 0:
            wshape = (self.K, self.N) if self.transpose else (self.N, self.K)
            self.add_blob(fillers.fill(p.weight_filler, wshape, where=self.name))
            if self.bias_term:
                self.add_blob(fillers.fill(p.bias_filler, (self.N,), where=self.name))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = bottom_shapes[0]
        k = math.prod(shape[self.axis:])
        self.check(k == self.K, f"input size {k} (shape {shape} from axis {self.axis}) does not "
                   f"match the weights' {self.K}")
        return [tuple(shape[: self.axis]) + (self.N,)]

    def forward(self, x: torch.Tensor) -> Tops:
        lead = x.shape[: self.axis]
        x2 = x.reshape(-1, self.K)
        w = self.blob_params[0]
        b = self.blob_params[1] if self.bias_term else None
        if self.transpose:
            y = x2 @ w if b is None else torch.addmm(b, x2, w)
        else:
            y = torch.nn.functional.linear(x2, w, b)
        return y.reshape(*lead, self.N)

"""Shape and routing layers: Eltwise, Concat, Slice, Flatten, Reshape, Crop, Tile,
Reduction, ArgMax, Embed, Filter, BatchReindex, Parameter, Silence and DummyData.

(Split lives in common.py.) Shapes follow Caffe's Reshape rules exactly and every bad
configuration raises a LayerParamError naming the layer and the field. Layers whose tops
are a rearrangement of a bottom return views where Caffe shares memory (Flatten,
Reshape, Slice with one top, Concat with one bottom).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx

from .. import fillers
from ..layer import Layer, Shape, Tops, register
from ..proto import caffe_pb2
from .common import canonical_axis
from .neuron import no_backward

EltwiseOp = caffe_pb2.EltwiseParameter
ReductionOp = caffe_pb2.ReductionParameter


def _shape(s: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in s)


def _count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    return math.prod(shape[start:end])


class _Planned(Layer):
    """A layer whose forward needs values derived from its bottoms' shapes.

    ``plan(shapes)`` checks the shapes and returns (top shapes, what forward needs).
    Forward re-plans whenever its bottoms' shapes differ from the last plan: Caffe's
    Forward always runs Reshape first, so a pass after a blob reshape without
    net.reshape() still gets Caffe's checks and shapes (one tuple compare when unchanged).
    """

    _planned_for: tuple | None = None
    _plan: object = None

    def plan(self, shapes: list[tuple[int, ...]]) -> tuple[list[tuple[int, ...]], object]:
        raise NotImplementedError

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shapes = [_shape(s) for s in bottom_shapes]
        tops, self._plan = self.plan(shapes)
        self._planned_for = tuple(shapes)
        return tops

    def planned(self, *xs: torch.Tensor):
        """The plan for these bottoms (made again if their shapes changed)."""
        key = tuple([x.shape for x in xs])
        if key != self._planned_for:
            self.reshape(list(key))
        return self._plan


# ----------------------------------------------------------------------------------------------
# Eltwise
# ----------------------------------------------------------------------------------------------
class _QuotientProd(torch.autograd.Function):
    """Product of the bottoms whose gradient is Caffe's unstable one: top/bottom_i · dy."""

    @staticmethod
    def forward(ctx: FunctionCtx, *xs: torch.Tensor) -> torch.Tensor:
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y = y * x
        ctx.save_for_backward(y, *xs)
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y, *xs = ctx.saved_tensors
        return tuple((y / x) * grad if need else None
                     for x, need in zip(xs, ctx.needs_input_grad))


@register("Eltwise")
class EltwiseLayer(_Planned):
    """Element-wise combination of bottoms of one shape: SUM, PROD or MAX.

    Bottoms: two or more, all of one shape (any); each gets a gradient.
    Tops: y, of the bottoms' shape.
    Blobs: none.
    Params: eltwise_param.operation (default SUM), coeff (SUM only: none, or one per bottom),
        stable_prod_grad (default true).
    Source: src/caffe/layers/eltwise_layer.cpp.

    SUM: Σ coeff_i·x_i (gradient coeff_i·dy).
    PROD: Π x_i; the gradient is the product of the other bottoms (stable_prod_grad,
    default) or top/x_i (stable_prod_grad false, Caffe's cheaper form, infinite at 0).
    MAX: the largest value; the gradient goes to the bottom Caffe's forward picked:
    bottom 1 wins a tie with bottom 0 (Caffe compares a > b, else b), later bottoms must
    be strictly larger to win.
    """

    min_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.eltwise_param
        n = len(bottom_shapes)
        self.op = p.operation
        self.check(len(p.coeff) in (0, n), f"give one coefficient per bottom ({n}), not "
                   f"{len(p.coeff)}", "eltwise_param.coeff")
        self.check(not (self.op == EltwiseOp.PROD and len(p.coeff)),
                   "coefficients are only taken for SUM", "eltwise_param.coeff")
        self.coeffs = [float(c) for c in p.coeff] if len(p.coeff) else [1.0] * n
        self.stable_prod_grad = p.stable_prod_grad
        # eltwise_layer.cpp's backward: MAX reads its forward's argmax mask, PROD's quotient
        # form reads the top, the others the bottoms (SUM: nothing but the top's diff)
        if self.op == EltwiseOp.MAX:
            self.backward_reads = "kept"
        elif self.op == EltwiseOp.PROD and not self.stable_prod_grad:
            self.backward_reads = "tops"
        ops = {EltwiseOp.SUM: "_sum", EltwiseOp.PROD: "_prod", EltwiseOp.MAX: "_max"}
        self.check(self.op in ops, f"unknown operation {self.op}", "eltwise_param.operation")
        self._op = ops[self.op]  # a name, not a bound method: no module reference cycle

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        first = shapes[0]
        for i, s in enumerate(shapes[1:], 1):
            self.check(s == first, f"bottom {i} has shape {s}, bottom 0 has {first}; all "
                       "bottoms must have the same shape")
        return [first], None

    def forward(self, *xs: torch.Tensor) -> Tops:
        self.planned(*xs)  # no silent broadcasting: Caffe requires equal shapes
        return getattr(self, self._op)(xs)

    def _sum(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        c = self.coeffs
        y = xs[0] if c[0] == 1.0 else xs[0] * c[0]
        for x, ci in zip(xs[1:], c[1:]):
            y = torch.add(y, x) if ci == 1.0 else torch.add(y, x, alpha=ci)
        return y

    def _prod(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.stable_prod_grad and torch.is_grad_enabled() and any(
                x.requires_grad for x in xs):
            return _QuotientProd.apply(*xs)
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y = y * x
        return y

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        # PROD without stable_prod_grad: dx_i = dy·y/x_i
        y, dy = tops[0], top_diffs[0]
        return [dy * (y / x) if n else None for x, n in zip(bottoms, need)]

    def _max(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        # torch.where routes the gradient to the branch it took: Caffe's argmax mask
        y = torch.where(xs[0] > xs[1], xs[0], xs[1])
        for x in xs[2:]:
            y = torch.where(x > y, x, y)
        return y


# ----------------------------------------------------------------------------------------------
# Concat, Slice
# ----------------------------------------------------------------------------------------------
def _legacy_axis(layer: Layer, p: caffe_pb2.ConcatParameter | caffe_pb2.SliceParameter,
                 legacy: str, num_axes: int, field: str) -> int:
    """The axis from `axis`, or from the legacy non-negative field when that is set."""
    if p.HasField(legacy):
        axis = int(getattr(p, legacy))
        layer.check(axis < num_axes, f"{axis} out of range for a {num_axes}-axis bottom",
                    f"{field}.{legacy}")
        return axis
    return canonical_axis(p.axis, num_axes, layer, f"{field}.axis")


@register("Concat")
class ConcatLayer(_Planned):
    """Concatenation of the bottoms along one axis.

    Bottoms: one or more, with the same number of axes and equal sizes on every axis but
        `axis` (e.g. N×C_i×H×W); each gets a gradient.
    Tops: y, the bottoms' shape with `axis` the sum of theirs (N×ΣC_i×H×W); with one bottom,
        the bottom itself (a view).
    Blobs: none.
    Params: concat_param.axis (default 1, negative counts from the end) or the legacy
        concat_dim (default 1), not both.
    Source: src/caffe/layers/concat_layer.cpp.
    """

    min_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.concat_param
        self.check(not (p.HasField("axis") and p.HasField("concat_dim")),
                   "give either axis or concat_dim, not both", "concat_param")

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        n = len(shapes[0])
        axis = _legacy_axis(self, self.lp.concat_param, "concat_dim", n, "concat_param")
        top = list(shapes[0])
        for i, s in enumerate(shapes[1:], 1):
            self.check(len(s) == n, f"bottom {i} has shape {s}, bottom 0 has {shapes[0]}; "
                       "all bottoms must have the same number of axes")
            self.check(all(s[j] == shapes[0][j] for j in range(n) if j != axis),
                       f"bottom {i} has shape {s}, bottom 0 has {shapes[0]}; they may differ "
                       f"only along the concat axis {axis}")
            top[axis] += s[axis]
        return [tuple(top)], axis

    def forward(self, *xs: torch.Tensor) -> Tops:
        axis = self.planned(*xs)
        if len(xs) == 1:
            return xs[0].view(xs[0].shape)
        return torch.cat(xs, dim=axis)


@register("Slice")
class SliceLayer(_Planned):
    """Slices the bottom along one axis into several tops.

    Bottoms: x, any shape (e.g. N×C×H×W).
    Tops: one or more, x's shape with `axis` cut at the slice points (or into equal parts);
        with one top, the bottom itself (a view).
    Blobs: none.
    Params: slice_param.axis (default 1, negative counts from the end) or the legacy slice_dim
        (default 1), not both; slice_point (strictly increasing, one fewer than the tops; none:
        equal parts).
    Source: src/caffe/layers/slice_layer.cpp.
    """

    exact_bottoms = 1
    min_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.slice_param
        self.check(not (p.HasField("axis") and p.HasField("slice_dim")),
                   "give either axis or slice_dim, not both", "slice_param")
        self.points = [int(v) for v in p.slice_point]

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        shape = shapes[0]
        axis = _legacy_axis(self, self.lp.slice_param, "slice_dim", len(shape), "slice_param")
        size = shape[axis]
        ntop = len(self.top_names)
        if self.points:
            pts = self.points
            self.check(len(pts) == ntop - 1, f"{len(pts)} slice points given for {ntop} tops; "
                       f"give {ntop - 1}", "slice_param.slice_point")
            self.check(ntop <= size, f"{ntop} tops cannot slice axis {axis} of size "
                       f"{size} (bottom shape {shape})", "slice_param.slice_point")
            prev = 0
            for v in pts:
                self.check(v > prev, f"slice points must be strictly increasing and "
                           f"positive, got {pts}", "slice_param.slice_point")
                prev = v
            self.check(prev <= size, f"slice point {prev} exceeds axis {axis}'s size "
                       f"{size} (bottom shape {shape})", "slice_param.slice_point")
            bounds = [0] + pts + [size]
            sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        else:
            self.check(size % ntop == 0, f"{ntop} tops do not divide axis {axis} of size "
                       f"{size} evenly (bottom shape {shape})", "slice_param")
            sizes = [size // ntop] * ntop
        tops = []
        for s in sizes:
            t = list(shape)
            t[axis] = s
            tops.append(tuple(t))
        return tops, (axis, sizes)

    def forward(self, x: torch.Tensor) -> Tops:
        axis, sizes = self.planned(x)
        if len(sizes) == 1:
            return x.view(x.shape)
        return tuple(torch.split(x, sizes, dim=axis))


# ----------------------------------------------------------------------------------------------
# Flatten, Reshape
# ----------------------------------------------------------------------------------------------
@register("Flatten")
class FlattenLayer(_Planned):
    """Merges the axes axis..end_axis into one.

    Bottoms: x, any shape (e.g. N×C×H×W).
    Tops: x's values with axes axis..end_axis merged (N×(C·H·W) by default), sharing the
        bottom's memory; not the bottom itself (no in-place computation).
    Blobs: none.
    Params: flatten_param.axis (default 1), end_axis (default −1); negative counts from the end.
    Source: src/caffe/layers/flatten_layer.cpp.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.check(self.top_names[0] != self.bottom_names[0],
                   "Flatten does not allow in-place computation")

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        shape = shapes[0]
        p = self.lp.flatten_param
        start = canonical_axis(p.axis, len(shape), self, "flatten_param.axis")
        end = canonical_axis(p.end_axis, len(shape), self, "flatten_param.end_axis")
        self.check(start <= end, f"end_axis {p.end_axis} comes before axis {p.axis} in a "
                   f"{len(shape)}-axis bottom", "flatten_param.end_axis")
        return [shape[:start] + (_count(shape, start, end + 1),) + shape[end + 1:]], (start, end)

    def forward(self, x: torch.Tensor) -> Tops:
        start, end = self.planned(x)
        return torch.flatten(x, start, end)


@register("Reshape")
class ReshapeLayer(_Planned):
    """Gives the bottom's values a new shape (0 copies a dimension, −1 is inferred).

    Bottoms: x, any shape.
    Tops: x's values in the shape below, sharing the bottom's memory; not the bottom itself
        (no in-place computation).
    Blobs: none.
    Params: reshape_param.shape (0 copies the bottom's dimension at that position; one −1 is
        inferred from the count), axis (default 0), num_axes (default −1).
    Source: src/caffe/layers/reshape_layer.cpp.

    The bottom's axes [axis, axis + num_axes) (num_axes −1: to the end; a negative axis counts
    from the end, −1 meaning after the last axis) are replaced by reshape_param.shape.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.check(self.top_names[0] != self.bottom_names[0],
                   f"Reshape Layer does not allow in-place computation (top '{self.top_names[0]}' "
                   "is its bottom)")
        dims = [int(d) for d in self.lp.reshape_param.shape.dim]
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        self.check(len(inferred) <= 1, f"the new shape {dims} has several -1 dims; at most "
                   "one may be inferred", "reshape_param.shape")
        self.check(all(d >= -1 for d in dims), f"the new shape {dims} has a negative "
                   "dimension other than -1", "reshape_param.shape")
        self.inferred_axis = inferred[0] if inferred else -1
        self.dims = dims
        self.constant_count = math.prod(d for d in dims if d > 0)

    def _top_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        p = self.lp.reshape_param
        n = len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        self.check(0 <= start <= n, f"axis {p.axis} out of range for a {n}-axis bottom",
                   "reshape_param.axis")
        self.check(p.num_axes >= -1, f"must be >= 0, or -1 for all, not {p.num_axes}",
                   "reshape_param.num_axes")
        end = n if p.num_axes == -1 else start + p.num_axes
        self.check(end <= n, f"axis + num_axes = {end} is out of range for a {n}-axis "
                   f"bottom {shape}", "reshape_param.num_axes")
        top = list(shape[:start]) + list(self.dims) + list(shape[end:])
        for i in self.copy_axes:
            self.check(start + i < n, f"the new shape {self.dims} has a 0 at position {i}, "
                       f"but the bottom {shape} has no axis {start + i} to copy",
                       "reshape_param.shape")
            top[start + i] = shape[start + i]
        total = _count(shape)
        if self.inferred_axis >= 0:
            explicit = self.constant_count * _count(shape, 0, start) * _count(shape, end)
            for i in self.copy_axes:
                explicit *= top[start + i]
            self.check(explicit != 0 and total % explicit == 0,
                       f"bottom count {total} (shape {shape}) is not divisible by the product "
                       f"of the other dimensions ({explicit}); cannot infer the -1",
                       "reshape_param.shape")
            top[start + self.inferred_axis] = total // explicit
        self.check(_count(top) == total, f"the top shape {tuple(top)} has {_count(top)} "
                   f"values, the bottom {shape} has {total}", "reshape_param.shape")
        return tuple(top)

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        top = self._top_shape(shapes[0])
        return [top], top

    def forward(self, x: torch.Tensor) -> Tops:
        return x.reshape(self.planned(x))


# ----------------------------------------------------------------------------------------------
# Crop, Tile
# ----------------------------------------------------------------------------------------------
@register("Crop")
class CropLayer(_Planned):
    """Crops bottom 0 to bottom 1's size on the axes from `axis` on.

    Bottoms: x, the blob to crop (e.g. N×C×H×W); ref, whose shape gives the crop's size (at
        least x's number of axes); ref gets no gradient.
    Tops: y, x's shape before `axis`, ref's from `axis` on (e.g. N×C×H_ref×W_ref).
    Blobs: none.
    Params: crop_param.axis (default 2, negative counts from the end), offset (none: 0; one:
        the same for every cropped axis; else one per cropped axis).
    Source: src/caffe/layers/crop_layer.cpp.
    """

    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.crop_param
        n = len(bottom_shapes[0])
        start = canonical_axis(p.axis, n, self, "crop_param.axis")
        if len(p.offset) > 1:
            self.check(start + len(p.offset) == n, f"{len(p.offset)} offsets given for the "
                       f"{n - start} axes from axis {start} of a {n}-axis bottom; give 1 or "
                       f"{n - start}", "crop_param.offset")

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        p = self.lp.crop_param
        shape, ref = shapes
        n = len(shape)
        start = canonical_axis(p.axis, n, self, "crop_param.axis")
        self.check(len(ref) >= n, f"bottom 1 has shape {ref}; it needs the {n} axes of "
                   f"bottom 0 {shape}")
        top, index = list(shape), []
        for i in range(n):
            off = 0
            if i >= start:
                top[i] = ref[i]
                if len(p.offset) == 1:
                    off = int(p.offset[0])
                elif len(p.offset) > 1:
                    off = int(p.offset[i - start])
                self.check(shape[i] - off >= ref[i], f"the crop of axis {i} is out of bounds: "
                           f"size {ref[i]} at offset {off} does not fit bottom 0's {shape[i]} "
                           f"(shapes {shape} and {ref})", "crop_param.offset")
            index.append(slice(off, off + top[i]))
        return [tuple(top)], tuple(index)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> Tops:
        return x[self.planned(x, ref)]


@register("Tile")
class TileLayer(_Planned):
    """Repeats the bottom `tiles` times along one axis.

    Bottoms: x, any shape (e.g. N×C×H×W).
    Tops: x's shape with `axis` multiplied by tiles (N×(C·tiles)×H×W by default); each block of
        axes axis.. is copied tiles times in a row.
    Blobs: none.
    Params: tile_param.tiles (required, > 0; no default), axis (default 1, negative counts from
        the end).
    Source: src/caffe/layers/tile_layer.cpp.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.tile_param
        self.check(p.HasField("tiles"), "the number of tiles must be given", "tile_param.tiles")
        self.check(p.tiles > 0, f"must be positive, not {p.tiles}", "tile_param.tiles")
        self.tiles = int(p.tiles)

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        shape = shapes[0]
        axis = canonical_axis(self.lp.tile_param.axis, len(shape), self, "tile_param.axis")
        top, reps = list(shape), [1] * len(shape)
        top[axis] *= self.tiles
        reps[axis] = self.tiles
        return [tuple(top)], reps

    def forward(self, x: torch.Tensor) -> Tops:
        return x.repeat(self.planned(x))


# ----------------------------------------------------------------------------------------------
# Reduction, ArgMax
# ----------------------------------------------------------------------------------------------
@register("Reduction")
class ReductionLayer(_Planned):
    """Reduces all axes from `axis` on to one value (SUM, ASUM, SUMSQ or MEAN), times coeff.

    Bottoms: x, any shape.
    Tops: x's axes before `axis` (default 0: a scalar, shape ()).
    Blobs: none.
    Params: reduction_param.operation (default SUM), axis (default 0, negative counts from the
        end), coeff (default 1).
    Source: src/caffe/layers/reduction_layer.cpp.

    SUM Σx, ASUM Σ|x|, SUMSQ Σx², MEAN Σx/n; then multiplied by coeff.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.reduction_param
        self.op = p.operation
        self.check(self.op in (ReductionOp.SUM, ReductionOp.ASUM, ReductionOp.SUMSQ,
                               ReductionOp.MEAN), f"unknown operation {self.op}",
                   "reduction_param.operation")
        self.coeff = float(p.coeff)

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        shape = shapes[0]
        axis = canonical_axis(self.lp.reduction_param.axis, len(shape), self,
                              "reduction_param.axis")
        return [shape[:axis]], (shape[:axis], _count(shape, axis))

    def forward(self, x: torch.Tensor) -> Tops:
        lead, dim = self.planned(x)
        rows = x.reshape(*lead, dim)
        coeff = self.coeff
        if self.op == ReductionOp.SUM:
            y = rows.sum(-1)
        elif self.op == ReductionOp.ASUM:
            y = rows.abs().sum(-1)
        elif self.op == ReductionOp.SUMSQ:
            y = rows.square().sum(-1)
        else:
            y = rows.sum(-1)
            coeff = coeff / dim if dim else math.nan
        return y if coeff == 1.0 else y * coeff


@register("ArgMax")
class ArgMaxLayer(_Planned):
    """Indices (and optionally values) of the top_k largest values.

    Bottoms: x, N×… (e.g. N×C×H×W); no gradient (see below).
    Tops: without `axis`, N×1×top_k (N×2×top_k with out_max_val), followed by 1s when x has
        more than 3 axes; with `axis`, x's shape with that axis top_k.
    Blobs: none.
    Params: argmax_param.out_max_val (default false), top_k (default 1), axis (unset: per item
        over all its values).
    Source: src/caffe/layers/argmax_layer.cpp.

    Without `axis`: per item over all its values; the top holds the indices, or with
    out_max_val the indices in channel 0 and the values in channel 1. With `axis`: along that
    axis; the top holds values if out_max_val, else indices. Ties go to the larger index
    (Caffe sorts (value, index) pairs in descending order). Indices are stored as floats.
    Caffe has no backward: a gradient through it raises.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.argmax_param
        shape = _shape(bottom_shapes[0])
        self.out_max_val = p.out_max_val
        self.top_k = int(p.top_k)
        self.has_axis = p.HasField("axis")
        self.check(self.top_k >= 1, f"must be at least 1, not {self.top_k}", "argmax_param.top_k")
        if self.has_axis:
            self.axis = canonical_axis(p.axis, len(shape), self, "argmax_param.axis")
            self.check(self.top_k <= shape[self.axis], f"top_k {self.top_k} exceeds axis "
                       f"{self.axis}'s size {shape[self.axis]} (bottom shape {shape})",
                       "argmax_param.top_k")
        else:
            self.check(self.top_k <= _count(shape, 1), f"top_k {self.top_k} exceeds the "
                       f"{_count(shape, 1)} values per item (bottom shape {shape})",
                       "argmax_param.top_k")

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        shape = shapes[0]
        if self.has_axis:
            self.check(len(shape) > self.axis and self.top_k <= shape[self.axis],
                       f"top_k {self.top_k} does not fit axis {self.axis} of the bottom "
                       f"{shape}", "argmax_param.top_k")
            top = list(shape)
            top[self.axis] = self.top_k
            return [tuple(top)], tuple(top)
        self.check(self.top_k <= _count(shape, 1), f"top_k {self.top_k} exceeds the "
                   f"{_count(shape, 1)} values per item (bottom shape {shape})",
                   "argmax_param.top_k")
        top = [1] * max(len(shape), 3)
        top[0] = shape[0]
        top[1] = 2 if self.out_max_val else 1
        top[2] = self.top_k
        return [tuple(top)], tuple(top)

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        top = self.planned(x)
        if self.has_axis:
            data, d = x, self.axis
        else:
            data, d = x.reshape(x.shape[0], -1), 1
        size = data.shape[d]
        # On the reversed axis the first maximum is the largest index: Caffe's tie rule.
        rev = data.flip(d)
        if self.top_k == 1:
            ridx = rev.argmax(dim=d, keepdim=True)
            vals = rev.gather(d, ridx)
        else:
            vals, ridx = torch.sort(rev, dim=d, descending=True, stable=True)
            vals, ridx = vals.narrow(d, 0, self.top_k), ridx.narrow(d, 0, self.top_k)
        idx = (size - 1 - ridx).to(x.dtype)
        if self.has_axis:
            return vals if self.out_max_val else idx
        out = torch.stack((idx, vals), dim=1) if self.out_max_val else idx.unsqueeze(1)
        return out.reshape(top)

    def forward(self, x: torch.Tensor) -> Tops:
        return no_backward(self, "ArgMax has no backward (Caffe: NOT_IMPLEMENTED); set "
                           "propagate_down: false on this layer", self._compute, x)


# ----------------------------------------------------------------------------------------------
# Embed, Filter, BatchReindex
# ----------------------------------------------------------------------------------------------
# Index bottoms (Embed's input, Filter's selector, BatchReindex's indices) are left out of
# force_backward, like loss labels. Caffe does not exclude them and then aborts in Backward
# (its CHECK(!propagate_down)); decaffe still raises when a gradient must really flow into
# one (the bottom comes from a layer that needs backward).


def _check_range(layer: Layer, values: torch.Tensor, limit: int, what: str) -> None:
    """Raise unless every value v satisfies 0 <= v < limit. Checked for CPU tensors only:
    on a GPU it would stall the stream (the indexing kernel itself asserts there)."""
    if values.device.type != "cpu" or values.numel() == 0:
        return
    lo, hi = torch.aminmax(values.detach())
    if not (float(lo) >= 0 and float(hi) < limit):
        raise layer.error(f"{what} must lie in [0, {limit}); found values from {float(lo):g} "
                          f"to {float(hi):g}")


@register("Embed")
class EmbedLayer(Layer):
    """A lookup table: each bottom value selects a row of the weights, plus the bias.

    Bottoms: indices, any shape (floats, truncated to integers, each in [0, input_dim)); no
        gradient (see below).
    Tops: the indices' shape + (num_output,).
    Blobs: the weights, input_dim×num_output; the bias, (num_output,), when bias_term.
    Params: embed_param.num_output and input_dim (both required, > 0; no defaults), bias_term
        (default true), weight_filler and bias_filler (default constant 0).
    Source: src/caffe/layers/embed_layer.cpp.

    The indices get no gradient: force_backward leaves them out, and a gradient that must flow
    into them raises (Caffe aborts). Indices outside [0, input_dim) raise for CPU tensors (Caffe
    only checks them in debug builds).
    """

    exact_bottoms = 1
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.embed_param
        self.N, self.K = int(p.num_output), int(p.input_dim)
        self.check(self.N > 0, "must be positive", "embed_param.num_output")
        self.check(self.K > 0, "must be positive", "embed_param.input_dim")
        self.bias_term = p.bias_term
        if self.num_blobs == 0:
            self.add_blob(fillers.fill(p.weight_filler, (self.K, self.N), where=self.name))
            if self.bias_term:
                self.add_blob(fillers.fill(p.bias_filler, (self.N,), where=self.name))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [_shape(bottom_shapes[0]) + (self.N,)]

    def _lookup(self, x: torch.Tensor) -> torch.Tensor:
        idx = x.detach().long()  # C's cast: truncation toward zero
        _check_range(self, idx, self.K, "embed indices")
        y = F.embedding(idx, self.blob_params[0])
        return y + self.blob_params[1] if self.bias_term else y

    def forward(self, x: torch.Tensor) -> Tops:
        if x.requires_grad:
            return no_backward(self, "cannot backpropagate to the Embed layer's input; set "
                               "propagate_down: false", self._lookup, x)
        return self._lookup(x)


@register("Filter")
class FilterLayer(_Planned):
    """Keeps the items (along axis 0) whose selector value is non-zero.

    Bottoms: one or more blobs to filter, each N×…; then the selector, (N,) or N×1×…, the
        last bottom, which gets no gradient.
    Tops: one per filtered bottom, its shape with N the number of selected items.
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/filter_layer.cpp.

    Every bottom i but the last gives top i with only the selected items, in order.
    Unselected items get zero gradient; the selector gets none (Caffe aborts if it needs one;
    decaffe raises).

    The top's first dimension depends on the selector's values, so ``reshape`` (which
    sees only shapes) gives the upper bound N, as Caffe's first Reshape does; forward
    gives the real count, and the net's blobs take that shape. Finding the selected
    items reads the selector on the host (one synchronisation on a GPU, as in Caffe).
    """

    min_bottoms = 2
    min_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != len(self.bottom_names) - 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.check(len(self.top_names) == len(bottom_shapes) - 1,
                   f"{len(bottom_shapes)} bottoms (the last is the selector) need "
                   f"{len(bottom_shapes) - 1} tops, {len(self.top_names)} given")

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        sel = shapes[-1]
        self.check(len(sel) >= 1 and all(d == 1 for d in sel[1:]),
                   f"the selector (last bottom) has shape {sel}; all its axes but the first "
                   "must be 1")
        for i, s in enumerate(shapes[:-1]):
            self.check(len(s) >= 1 and s[0] == sel[0], f"bottom {i} has shape {s}, the "
                       f"selector has {sel}; their first dimensions must match")
        return list(shapes[:-1]), None

    def _select(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        *data, sel = xs
        keep = torch.nonzero(sel.detach().reshape(-1)).reshape(-1)
        return tuple(x.index_select(0, keep) for x in data)

    def forward(self, *xs: torch.Tensor) -> Tops:
        self.planned(*xs)
        if xs[-1].requires_grad:
            return no_backward(self, "cannot backpropagate to the selector (last bottom); "
                               "set its propagate_down to false", self._select, *xs)
        return self._select(*xs)


@register("BatchReindex")
class BatchReindexLayer(_Planned):
    """Gathers items along axis 0: top[i] = x[index[i]].

    Bottoms: x, N×…; the indices, (M,) (floats, each in [0, N)), which get no gradient.
    Tops: M×… (x's shape with M items).
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/batch_reindex_layer.cpp.

    The gradient to x adds up over repeated indices; the indices get none (Caffe aborts if
    asked; decaffe raises).
    """

    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def plan(self, shapes: list[Shape]) -> tuple[list[Shape], object]:
        shape, ind = shapes
        self.check(len(ind) == 1, f"the index bottom must have one axis; its shape is {ind}")
        return [(ind[0],) + shape[1:]], None

    def _gather(self, x: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
        # Caffe checks the float values, so -0.5 is rejected although it casts to 0.
        _check_range(self, ind, x.shape[0], "batch indices")
        return x.index_select(0, ind.detach().long())

    def forward(self, x: torch.Tensor, ind: torch.Tensor) -> Tops:
        self.planned(x, ind)
        if ind.requires_grad:
            return no_backward(self, "cannot backpropagate to the index bottom; set its "
                               "propagate_down to false", self._gather, x, ind)
        return self._gather(x, ind)


# ----------------------------------------------------------------------------------------------
# Parameter, Silence, DummyData
# ----------------------------------------------------------------------------------------------
@register("Parameter")
class ParameterLayer(Layer):
    """A learnable blob given out as the top.

    Bottoms: none.
    Tops: the blob, of parameter_param.shape: it shares the blob's data, and its gradient is
        the blob's.
    Blobs: one, of parameter_param.shape (zeros unless weights are loaded).
    Params: parameter_param.shape.
    Source: src/caffe/layers/parameter_layer.cpp.
    """

    exact_bottoms = 0
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        dims = _shape(self.lp.parameter_param.shape.dim)
        self.check(all(d >= 0 for d in dims), f"negative dimension in {dims}",
                   "parameter_param.shape")
        if self.num_blobs == 0:
            self.add_blob(torch.zeros(dims))
        self.dims = dims

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [self.dims]

    def forward(self) -> Tops:
        p = self.blob_params[0]
        return p.view(p.shape)


@register("Silence")
class SilenceLayer(Layer):
    """Consumes its bottoms so they are not net outputs.

    Bottoms: one or more, any shapes.
    Tops: none.
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/silence_layer.cpp.

    In Caffe its backward zeroes the bottoms' diffs; here nothing flows back from it, so those
    diffs stay 0.
    """

    min_bottoms = 1
    exact_tops = 0

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return []

    def forward(self, *xs: torch.Tensor) -> Tops:
        return ()


_FILLER_TYPES = ("constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra",
                 "bilinear")


@register("DummyData")
class DummyDataLayer(Layer):
    """Tops of given shapes, filled by fillers: constant ones once, the others every forward.

    Bottoms: none.
    Tops: one or more, each of its dummy_data_param shape.
    Blobs: none.
    Params: dummy_data_param.shape (once or once per top) or the legacy num, channels, height
        and width (each once or once per top), not both; data_filler (none: constant 0; one: for
        every top; else one per top).
    Source: src/caffe/layers/dummy_data_layer.cpp.

    As in Caffe, tops with a constant filler are filled once at setup and never again (so
    values written into them stay), while the others are refilled at every forward, from
    torch's generator.
    """

    exact_bottoms = 0
    min_tops = 1
    is_data = True

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.dummy_data_param
        ntop = len(self.top_names)
        nf = len(p.data_filler)
        self.check(nf in (0, 1, ntop), f"give 0, 1 or {ntop} (one per top) data fillers, not "
                   f"{nf}", "dummy_data_param.data_filler")
        legacy = {f: [int(v) for v in getattr(p, f)]
                  for f in ("num", "channels", "height", "width")}
        if any(legacy.values()):
            self.check(len(p.shape) == 0, "give either shape or the legacy num/channels/"
                       "height/width, not both", "dummy_data_param.shape")
            for f, vals in legacy.items():
                self.check(len(vals) in (1, ntop), f"give it once or once per top ({ntop}), "
                           f"not {len(vals)} times", f"dummy_data_param.{f}")
            shapes = [tuple(vals[0 if len(vals) == 1 else i] for vals in legacy.values())
                      for i in range(ntop)]
        else:
            self.check(len(p.shape) in (1, ntop), f"give it once or once per top ({ntop}), "
                       f"not {len(p.shape)} times", "dummy_data_param.shape")
            shapes = [_shape(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(ntop)]
        for s in shapes:
            self.check(all(d >= 0 for d in s), f"negative dimension in {s}",
                       "dummy_data_param.shape")
        self.shapes = shapes
        if nf == 0:
            fps = [fillers.filler_param(type="constant", value=0.0)]
        else:
            fps = list(p.data_filler)
        self.fillers = [fps[0 if len(fps) == 1 else i] for i in range(ntop)]
        for i, (fp, s) in enumerate(zip(self.fillers, shapes)):
            self.check(fp.type in _FILLER_TYPES, f"unknown filler type '{fp.type}' (valid: "
                       f"{', '.join(_FILLER_TYPES)})", f"dummy_data_param.data_filler[{i}]")
            with torch.device("meta"):  # surfaces shape errors now, draws nothing
                fillers.fill(fp, s, where=self.name)
        # the constant tops, filled once; buffers follow the net's device and dtype
        self.register_buffer("_probe", torch.zeros(()), persistent=False)
        self._constant = []
        for i, (fp, s) in enumerate(zip(self.fillers, shapes)):
            if fp.type == "constant":
                self.register_buffer(f"_top{i}", fillers.fill(fp, s, where=self.name),
                                     persistent=False)
                self._constant.append(i)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return list(self.shapes)

    def forward(self) -> Tops:
        probe = self._probe
        outs = []
        for i, (fp, s) in enumerate(zip(self.fillers, self.shapes)):
            if fp.type == "constant":
                outs.append(getattr(self, f"_top{i}"))
            else:
                with torch.device(probe.device):
                    outs.append(fillers.fill(fp, s, dtype=probe.dtype, where=self.name))
        return tuple(outs)

"""Vision layers: Convolution, Deconvolution, Im2col, Pooling, SPP and LRN.

Each follows Caffe's parameter checks and shape arithmetic to the letter (C integer division,
the ceil/floor pooled-size rule with its clipping of a last window that would start in the
padding, AVE's divisor counting padding up to image+pad), and computes on torch's fused
kernels whenever they provably produce Caffe's numbers; otherwise the input is padded
explicitly so that the same kernels do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import fillers
from ..layer import Layer, Shape, Tops, register
from ..proto import caffe_pb2
from .common import canonical_axis

FLT_MAX = 3.4028234663852886e38  # Caffe's -FLT_MAX marks a max-pooling window with no pixel
FLT_MIN = 1.1754943508222875e-38  # stochastic pooling's TEST denominator starts at FLT_MIN

_POOL = caffe_pb2.PoolingParameter
_LRN = caffe_pb2.LRNParameter
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _cdiv(a: int, b: int) -> int:
    """C's integer division, truncating toward zero (Caffe's `int / int`)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def _pad_list(before: tuple[int, ...], after: tuple[int, ...]) -> list[int]:
    """F.pad's argument (last axis first) for per-spatial-axis amounts before/after."""
    out: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):
        out += [b, a]
    return out


# ------------------------------------------------------------------------------------------------
# ConvolutionParameter: kernel / stride / pad / dilation per spatial axis
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ConvSpec:
    axis: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))


def _per_axis(layer: Layer, p: caffe_pb2.ConvolutionParameter, name: str, n: int,
              default: int | None, hw: tuple[str, str] | None) -> tuple[int, ...]:
    """One value per spatial axis from a repeated field or its 2-D `_h`/`_w` pair (Caffe's rules:
    the pair only for 2-D and never with the repeated field; the repeated field given 0 times
    (when it has a default), once, or once per axis)."""
    field = f"convolution_param.{name}"
    values = list(getattr(p, name))
    if hw is not None and (p.HasField(hw[0]) or p.HasField(hw[1])):
        layer.check(n == 2, f"{hw[0]} & {hw[1]} can only be used for 2-D convolution "
                    f"({n} spatial axes)", f"convolution_param.{hw[0]}")
        layer.check(not values, f"give either {name} or {hw[0]}/{hw[1]}, not both", field)
        return (getattr(p, hw[0]), getattr(p, hw[1]))
    ok = len(values) in ((1, n) if default is None else (0, 1, n))
    layer.check(ok, f"must be specified once, or once per spatial dimension ({name} specified "
                f"{len(values)} times; {n} spatial dims)", field)
    if not values:
        return (default,) * n if default is not None else ()
    return tuple(values[0 if len(values) == 1 else i] for i in range(n))


def _conv_spec(layer: Layer, p: caffe_pb2.ConvolutionParameter, shape: Shape,
               min_spatial: int) -> _ConvSpec:
    """Read and check kernel/stride/pad/dilation for a bottom of this shape."""
    axis = canonical_axis(p.axis, len(shape), layer, "convolution_param.axis")
    n = len(shape) - axis - 1
    layer.check(n >= min_spatial, f"needs at least {min_spatial} spatial axes after the channel "
                f"axis {axis}; the bottom has shape {tuple(shape)}", "convolution_param.axis")
    kernel = _per_axis(layer, p, "kernel_size", n, None, ("kernel_h", "kernel_w"))
    stride = _per_axis(layer, p, "stride", n, 1, ("stride_h", "stride_w"))
    pad = _per_axis(layer, p, "pad", n, 0, ("pad_h", "pad_w"))
    # yjxiong/caffe's dilation_h/dilation_w pair, read as Caffe reads pad_h/pad_w
    dilation = _per_axis(layer, p, "dilation", n, 1, ("dilation_h", "dilation_w"))
    layer.check(all(k > 0 for k in kernel), f"filter dimensions must be nonzero, got {kernel}",
                "convolution_param.kernel_size")
    layer.check(all(s > 0 for s in stride), f"stride dimensions must be nonzero, got {stride}",
                "convolution_param.stride")
    # Caffe does not check this; a zero dilation makes every tap read one pixel, never meant.
    layer.check(all(d > 0 for d in dilation), f"dilation must be nonzero, got {dilation}",
                "convolution_param.dilation")
    return _ConvSpec(axis, kernel, stride, pad, dilation)


@dataclass(frozen=True)
class _ConvPlan:
    """Shapes for one bottom shape: batch-like axes, their product, and the output sizes."""
    lead: tuple[int, ...]
    num: int
    out: tuple[int, ...]
    extra: tuple[int, ...]  # zeros to add at the end of each axis beyond the symmetric pad


def _conv_out(layer: Layer, spec: _ConvSpec, spatial: tuple[int, ...]):
    """Caffe's conv output sizes (in + 2·pad − extent) / stride + 1 with C division, and the
    zeros needed past the pad when the kernel overhangs the padded input (Caffe's im2col reads
    zeros there; torch refuses, so they are padded explicitly)."""
    out, extra = [], []
    for i, (size, k, s, pd) in enumerate(zip(spatial, spec.extent, spec.stride, spec.pad)):
        o = _cdiv(size + 2 * pd - k, s) + 1
        layer.check(o >= 1, f"kernel extent {k} does not fit spatial axis {i} of size {size} "
                    f"with pad {pd} (output size {o})")
        out.append(o)
        extra.append(max(0, (o - 1) * s + k - size - 2 * pd))
    return tuple(out), tuple(extra)


def _im2col(x: torch.Tensor, spec: _ConvSpec, extra: tuple[int, ...]) -> torch.Tensor:
    """Caffe's column buffer for x of shape (num, C, *spatial): (num, C·Πkernel, *out), rows in
    (channel, kernel offsets row-major) order, zeros read outside the image."""
    n = len(spec.kernel)
    num, c = x.shape[:2]
    if n == 2 and not any(extra) and min(spec.pad) >= 0:
        cols = F.unfold(x, spec.kernel, spec.dilation, spec.pad, spec.stride)
        out = _cdiv(x.shape[2] + 2 * spec.pad[0] - spec.extent[0], spec.stride[0]) + 1
        return cols.reshape(num, cols.shape[1], out, -1)
    if n:
        after = tuple(p + e for p, e in zip(spec.pad, extra))
        x = F.pad(x, _pad_list(spec.pad, after))
    for i in range(n):
        x = x.unfold(2 + i, spec.extent[i], spec.stride[i])  # window axis appended at the end
    x = x[(slice(None),) * (2 + n) + tuple(slice(None, None, d) for d in spec.dilation)]
    out = tuple(x.shape[2:2 + n])
    x = x.permute(0, 1, *range(2 + n, 2 + 2 * n), *range(2, 2 + n))
    return x.reshape(num, c * math.prod(spec.kernel), *out)


def _conv_generic(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, spec: _ConvSpec,
                  extra: tuple[int, ...], groups: int) -> torch.Tensor:
    """Convolution of any number of spatial axes (torch has kernels for 1 to 3): im2col, then
    one batched matrix product per group."""
    num = x.shape[0]
    cols = _im2col(x, spec, extra)
    out = cols.shape[2:]
    cout = w.shape[0]
    cols = cols.reshape(num, groups, cols.shape[1] // groups, -1)
    y = torch.einsum("gok,ngkl->ngol", w.reshape(groups, cout // groups, -1), cols)
    y = y.reshape(num, cout, *out)
    if b is not None:
        y = y + b.reshape(1, cout, *(1,) * len(out))
    return y


def _deconv_generic(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, spec: _ConvSpec,
                    groups: int) -> torch.Tensor:
    """Transposed convolution of any number of spatial axes: spread the input `stride` apart,
    then convolve with the spatially flipped, in/out-swapped weights, padded by extent−1−pad."""
    n = len(spec.kernel)
    num, c = x.shape[:2]
    if any(s > 1 for s in spec.stride):
        z = x.new_zeros(num, c, *((size - 1) * s + 1 for size, s in zip(x.shape[2:], spec.stride)))
        z[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in spec.stride)] = x
        x = z
    cout_g = w.shape[1]
    wt = w.reshape(groups, c // groups, cout_g, *spec.kernel).transpose(1, 2)
    wt = wt.reshape(groups * cout_g, c // groups, *spec.kernel).flip(list(range(2, 2 + n)))
    pad = tuple(e - 1 - p for e, p in zip(spec.extent, spec.pad))
    # a negative pad crops; _im2col's F.pad does both
    inner = _ConvSpec(spec.axis, spec.kernel, (1,) * n, pad, spec.dilation)
    return _conv_generic(x, wt, b, inner, (0,) * n, groups)


class _ConvolutionBase(Layer):
    """Shared by Convolution and Deconvolution: ConvolutionParameter, blobs, multiple bottoms."""

    min_bottoms = 1
    min_tops = 1
    transposed = False

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.convolution_param
        self.check(len(self.top_names) == len(self.bottom_names),
                   f"needs one top per bottom ({len(self.bottom_names)} bottoms, "
                   f"{len(self.top_names)} tops)")
        shape = tuple(bottom_shapes[0])
        self.spec = _conv_spec(self, p, shape, 0)
        # oneDNN picks its algorithm (and so its summation order) from the batch size too,
        # one item apart: items are computed as in a batch of 2 (decaffe.items)
        self.item_group = 2 if self.spec.axis >= 1 else 0
        self.num_spatial = len(shape) - self.spec.axis - 1
        self.channels = shape[self.spec.axis]
        self.num_output = p.num_output
        self.check(self.num_output > 0, "must be given and > 0", "convolution_param.num_output")
        self.group = p.group
        self.check(self.group > 0, "must be > 0", "convolution_param.group")
        self.check(self.channels % self.group == 0, f"the bottom's {self.channels} channels are "
                   f"not a multiple of group {self.group}", "convolution_param.group")
        self.check(self.num_output % self.group == 0, f"num_output {self.num_output} is not a "
                   f"multiple of group {self.group}", "convolution_param.num_output")
        self.bias_term = p.bias_term
        if self.transposed:
            wshape = (self.channels, self.num_output // self.group) + self.spec.kernel
        else:
            wshape = (self.num_output, self.channels // self.group) + self.spec.kernel
        if self.num_blobs == 0:
            self.add_blob(fillers.fill(p.weight_filler, wshape, where=self.name))
            if self.bias_term:
                self.add_blob(fillers.fill(p.bias_filler, (self.num_output,), where=self.name))
        else:
            self.check(self.num_blobs == 1 + int(self.bias_term),
                       f"has {self.num_blobs} blobs, expected {1 + int(self.bias_term)}")
            got = tuple(self.blob_params[0].shape)
            self.check(got == wshape, f"incorrect weight shape: expected {wshape}, got {got}")
            if self.bias_term:
                got = tuple(self.blob_params[1].shape)
                self.check(got == (self.num_output,),
                           f"incorrect bias shape: expected {(self.num_output,)}, got {got}")
        self._plans: dict[tuple[int, ...], _ConvPlan] = {}

    def _plan(self, shape: tuple[int, ...]) -> _ConvPlan:
        plan = self._plans.get(shape)
        if plan is not None:
            return plan
        axis = self.spec.axis
        self.check(len(shape) == axis + 1 + self.num_spatial,
                   f"bottom has {len(shape)} axes; the layer was set up for "
                   f"{axis + 1 + self.num_spatial} (the number of axes may not change)")
        self.check(shape[axis] == self.channels, f"bottom has {shape[axis]} channels at axis "
                   f"{axis}; the layer was set up for {self.channels}")
        spatial = shape[axis + 1:]
        if self.transposed:
            out = tuple(s * (i - 1) + e - 2 * p for i, s, e, p in
                        zip(spatial, self.spec.stride, self.spec.extent, self.spec.pad))
            self.check(all(o >= 1 for o in out), f"output size {out} for input {spatial} is "
                       "not positive (stride·(in−1) + extent − 2·pad)")
            extra = (0,) * len(out)
        else:
            out, extra = _conv_out(self, self.spec, spatial)
        plan = _ConvPlan(shape[:axis], math.prod(shape[:axis]), out, extra)
        self._plans[shape] = plan
        return plan

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        first = tuple(bottom_shapes[0])
        for i, s in enumerate(bottom_shapes[1:], 1):
            self.check(tuple(s) == first, f"all bottoms must have the same shape: bottom {i} is "
                       f"{tuple(s)}, bottom 0 is {first}")
        plan = self._plan(first)
        top = plan.lead + (self.num_output,) + plan.out
        return [top] * len(bottom_shapes)

    def _convolve(self, x: torch.Tensor, w: torch.Tensor | None = None,
                  b: torch.Tensor | None = None) -> torch.Tensor:
        shape = tuple(x.shape)
        plan = self._plans.get(shape) or self._plan(shape)
        if self.spec.axis != 1:  # (axis 1: already (num, C, ...); a reshape would add a view
            x = x.reshape((plan.num,) + shape[self.spec.axis:])  # node to the graph)
        w = self.blob_params[0]
        b = self.blob_params[1] if self.bias_term else None
        s = self.spec
        if self.transposed:
            fn = _CONV_T_FN.get(self.num_spatial)
            if fn is not None:
                y = fn(x, w, b, s.stride, s.pad, 0, self.group, s.dilation)
            else:
                y = _deconv_generic(x, w, b, s, self.group)
        else:
            fn = _CONV_FN.get(self.num_spatial)
            if fn is not None:
                if any(plan.extra):
                    x = F.pad(x, _pad_list((0,) * len(plan.extra), plan.extra))
                y = fn(x, w, b, s.stride, s.pad, s.dilation, self.group)
            else:
                y = _conv_generic(x, w, b, s, plan.extra, self.group)
        if self.spec.axis == 1:
            return y
        return y.reshape(plan.lead + tuple(y.shape[1:]))

    def forward(self, *bottoms: torch.Tensor) -> Tops:
        if len(bottoms) == 1:
            return self._convolve(bottoms[0])
        return tuple(self._convolve(x) for x in bottoms)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"name={self.name!r}, {self.channels}->{self.num_output}, kernel={s.kernel}, "
                f"stride={s.stride}, pad={s.pad}, dilation={s.dilation}, group={self.group}")


@register("Convolution")
class ConvolutionLayer(_ConvolutionBase):
    """Convolution: num_output filters slid over the spatial axes after `axis`, plus a bias.

    Bottoms: one or more, all of one shape N×C×H×W (generally: batch-like axes before
        `axis`, C at `axis`, then 1, 2, 3 or more spatial axes); C is fixed at setup.
    Tops: one per bottom, N×num_output×H'×W', each the convolution of its bottom with the same
        weights; H' = (H + 2·pad − dilation·(k−1) − 1) / stride + 1 in C integer division.
    Blobs: the weights, num_output×(C/group)×k_h×k_w (one k per spatial axis); the bias,
        (num_output,), when bias_term.
    Params: convolution_param.num_output (required, > 0), bias_term (default true),
        kernel_size (required: once, or once per spatial axis) or kernel_h and kernel_w,
        stride (default 1) or stride_h and stride_w, pad (default 0) or pad_h and pad_w,
        dilation (default 1; or yjxiong/caffe's dilation_h and dilation_w), group (default 1;
        must divide C and num_output), weight_filler and bias_filler (default constant 0), axis
        (default 1); engine and force_nd_im2col are not read.
    Source: src/caffe/layers/conv_layer.cpp and base_conv_layer.cpp; dilation_h/dilation_w:
        yjxiong/caffe.

    Zero padding; the `_h`/`_w` pairs are for 2-D only and never with the repeated field. A zero
    dilation is refused (Caffe does not check it).
    """


@register("Deconvolution")
class DeconvolutionLayer(_ConvolutionBase):
    """Deconvolution: the transpose of Convolution (Convolution's backward pass, run forward).

    Bottoms: one or more, all of one shape N×C×H×W (generally: batch-like axes before
        `axis`, C at `axis`, then the spatial axes); C is fixed at setup.
    Tops: one per bottom, N×num_output×H'×W', H' = stride·(H−1) + dilation·(k−1) + 1 − 2·pad.
    Blobs: the weights, stored as Caffe stores them, C×(num_output/group)×k_h×k_w; the bias,
        (num_output,), when bias_term.
    Params: convolution_param, read as by Convolution: num_output (required, > 0), bias_term
        (default true), kernel_size or kernel_h/kernel_w, stride (default 1), pad (default 0),
        dilation (default 1), group (default 1), weight_filler and bias_filler (default constant
        0), axis (default 1).
    Source: src/caffe/layers/deconv_layer.cpp and base_conv_layer.cpp.

    An output size below 1 is an error naming the layer.
    """

    transposed = True


@register("Im2col")
class Im2colLayer(Layer):
    """Im2col: every kernel window of the bottom laid out as a column, as convolution sees it.

    Bottoms: x, N×C×H×W (generally: batch-like axes before `axis`, C at `axis`, then at least
        one spatial axis).
    Tops: N×(C·k_h·k_w)×H'×W': the channel axis multiplied by the kernel's size (rows ordered
        channel-major, then kernel offsets row-major) and each spatial axis the convolution
        output size.
    Blobs: none.
    Params: convolution_param's kernel_size or kernel_h/kernel_w, stride (default 1) or
        stride_h/stride_w, pad (default 0) or pad_h/pad_w, dilation (default 1), axis (default
        1); num_output, group and the fillers are not read.
    Source: src/caffe/layers/im2col_layer.cpp.

    Positions outside the image read as zero.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        shape = tuple(bottom_shapes[0])
        self.spec = _conv_spec(self, self.lp.convolution_param, shape, 1)
        self.num_spatial = len(shape) - self.spec.axis - 1
        self._plans: dict[tuple[int, ...], tuple] = {}

    def _plan(self, shape: tuple[int, ...]):
        plan = self._plans.get(shape)
        if plan is None:
            axis = self.spec.axis
            self.check(len(shape) == axis + 1 + self.num_spatial,
                       f"bottom has {len(shape)} axes; the layer was set up for "
                       f"{axis + 1 + self.num_spatial}")
            out, extra = _conv_out(self, self.spec, shape[axis + 1:])
            kdim = shape[axis] * math.prod(self.spec.kernel)
            plan = (shape[:axis], math.prod(shape[:axis]), kdim, out, extra)
            self._plans[shape] = plan
        return plan

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        lead, _, kdim, out, _ = self._plan(tuple(bottom_shapes[0]))
        return [lead + (kdim,) + out]

    def forward(self, x: torch.Tensor) -> Tops:
        shape = tuple(x.shape)
        lead, num, kdim, out, extra = self._plans.get(shape) or self._plan(shape)
        cols = _im2col(x.reshape((num,) + shape[self.spec.axis:]), self.spec, extra)
        return cols.reshape(lead + (kdim,) + out)


# ------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PoolGeom:
    """One bottom shape's pooling: window, stride, pad, output size, and how torch computes it."""
    size: tuple[int, int]      # bottom H, W
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    out: tuple[int, int]
    torch_ceil: bool | None    # torch's own padding with this ceil_mode gives Caffe's windows
    after: tuple[int, int]     # explicit padding after the image (general path; <0 crops)
    empty: bool                # some window holds no pixel of the image


def _caffe_pooled(size: int, k: int, s: int, p: int, ceil: bool, clip: bool) -> int:
    num = size + 2 * p - k
    o = (-((-num) // s) if ceil else num // s) + 1
    # with padding, the last window must start inside image+pad, else it is dropped
    if clip and (o - 1) * s >= size + p:
        o -= 1
    return o


def _torch_pooled(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    o = (size + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    if ceil and (o - 1) * s >= size + p:
        o -= 1
    return o


def _pool_geom(layer: Layer, size: tuple[int, int], kernel: Sequence[int], stride: Sequence[int],
               pad: Sequence[int], ceil: bool,
               where: str = "") -> _PoolGeom:
    clip = bool(pad[0] or pad[1])
    out = tuple(_caffe_pooled(n, k, s, p, ceil, clip)
                for n, k, s, p in zip(size, kernel, stride, pad))
    layer.check(out[0] >= 1 and out[1] >= 1, f"{where}kernel {tuple(kernel)} with pad "
                f"{tuple(pad)} and stride {tuple(stride)} gives no output for a {size[0]}x"
                f"{size[1]} bottom (output {out[0]}x{out[1]})")
    torch_ceil = None
    if all(2 * p <= k for p, k in zip(pad, kernel)):  # torch's limit on implicit padding
        for mode in (ceil, not ceil):
            if all(_torch_pooled(n, k, s, p, mode) == o
                   for n, k, s, p, o in zip(size, kernel, stride, pad, out)):
                torch_ceil = mode
                break
    after = tuple((o - 1) * s + k - n - p for n, k, s, p, o in zip(size, kernel, stride, pad, out))
    empty = any((o - 1) * s - p >= n for n, s, p, o in zip(size, stride, pad, out))
    return _PoolGeom(tuple(size), tuple(kernel), tuple(stride), tuple(pad), out, torch_ceil,
                     after, empty)


class _PoolCache:
    """Small per-geometry tensors (divisors, empty-window masks), kept per device and dtype."""

    def __init__(self) -> None:
        self._store: dict = {}

    def divisor(self, g: _PoolGeom, ref: torch.Tensor) -> torch.Tensor:
        key = ("div", g, ref.device, ref.dtype)
        t = self._store.get(key)
        if t is None:
            sizes = []
            for n, k, s, p, o in zip(g.size, g.kernel, g.stride, g.pad, g.out):
                start = torch.arange(o, dtype=torch.int64) * s - p
                sizes.append(torch.clamp(start + k, max=n + p) - start)
            t = (sizes[0][:, None] * sizes[1][None, :]).to(device=ref.device, dtype=ref.dtype)
            self._store[key] = t
        return t

    def empty(self, g: _PoolGeom, device: torch.device) -> torch.Tensor:
        key = ("empty", g, device)
        t = self._store.get(key)
        if t is None:
            rows = [torch.arange(o) * s - p >= n
                    for n, s, p, o in zip(g.size, g.stride, g.pad, g.out)]
            t = (rows[0][:, None] | rows[1][None, :]).to(device)
            self._store[key] = t
        return t


def _window_rows(g: _PoolGeom, axis: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per axis, the input index of each window's k positions, windows one after another
    (o·k of them, clamped into the image), and whether each lies in the image."""
    n, k, st, p, o = (g.size[axis], g.kernel[axis], g.stride[axis], g.pad[axis], g.out[axis])
    pos = (torch.arange(o, device=device)[:, None] * st - p
           + torch.arange(k, device=device)[None, :]).reshape(-1)
    inside = (pos >= 0) & (pos < n)
    return pos.clamp(0, max(n - 1, 0)), inside


def _gather_windows(x: torch.Tensor, g: _PoolGeom, fill: float):
    """The windows of a stride larger than the kernel, gathered side by side (each k wide),
    so a k-stride pool computes them: Caffe allocates nothing for the gaps between windows,
    and padding the input out to the stride could ask for any amount of memory."""
    rows, rin = _window_rows(g, 0, x.device)
    cols, cin = _window_rows(g, 1, x.device)
    xg = x.index_select(2, rows).index_select(3, cols)
    outside = ~(rin[:, None] & cin[None, :])
    if bool(outside.any()):
        xg = xg.masked_fill(outside, fill)
    return xg, rows, cols


def _pool(x: torch.Tensor, method: int, g: _PoolGeom, train: bool, want_mask: bool,
          cache: _PoolCache):
    """Caffe's pooling of a (N, C, H, W) tensor: (top, mask or None)."""
    k, s, p = g.kernel, g.stride, g.pad
    if g.torch_ceil is None and any(st > kk for st, kk in zip(s, k)):
        return _pool_gathered(x, method, g, train, want_mask, cache)
    if method == _POOL.MAX:
        if g.torch_ceil is not None:
            if want_mask:
                y, idx = F.max_pool2d(x, k, s, p, ceil_mode=g.torch_ceil, return_indices=True)
                return y, idx.to(x.dtype)
            return F.max_pool2d(x, k, s, p, ceil_mode=g.torch_ceil), None
        # Explicit -inf padding reproduces Caffe's windows exactly (including pad >= k/2 and
        # windows torch's size rule would drop); indices then refer to the padded plane.
        xp = F.pad(x, (p[1], g.after[1], p[0], g.after[0]), value=-math.inf)
        if not (want_mask or g.empty):
            return F.max_pool2d(xp, k, s), None
        y, idx = F.max_pool2d(xp, k, s, return_indices=True)
        mask = None
        if want_mask:
            wp = xp.shape[3]
            mask = ((idx // wp - p[0]) * g.size[1] + (idx % wp - p[1])).to(x.dtype)
        if g.empty:
            hole = cache.empty(g, x.device)
            y = y.masked_fill(hole, -FLT_MAX)
            if mask is not None:
                mask = mask.masked_fill(hole, -1.0)
        return y, mask
    if method == _POOL.AVE:
        if g.kernel == g.size and g.pad == (0, 0):  # global: the plain mean
            return x.mean(dim=(2, 3), keepdim=True), None
        if g.torch_ceil is not None:
            # torch's divisor with count_include_pad is Caffe's: the window clipped to image+pad
            return F.avg_pool2d(x, k, s, p, ceil_mode=g.torch_ceil, count_include_pad=True), None
        xp = F.pad(x, (p[1], g.after[1], p[0], g.after[0]))
        sums = F.avg_pool2d(xp, k, s, divisor_override=1)
        return sums / cache.divisor(g, x), None
    # STOCHASTIC (no padding allowed): windows clipped to the image, zeros beyond it.
    xp = F.pad(x, (0, g.after[1], 0, g.after[0]))
    if not train:
        # TEST: Σv² / (FLT_MIN + Σv), the values weighted by their probabilities
        num = F.avg_pool2d(xp * xp, k, s, divisor_override=1)
        den = F.avg_pool2d(xp, k, s, divisor_override=1) + FLT_MIN
        return num / den, None
    n, c = x.shape[:2]
    cols = F.unfold(xp, k, stride=s).reshape(n, c, k[0] * k[1], -1)
    cum = cols.detach().cumsum(dim=2)
    # Caffe draws u in (0, 1] and takes the first element whose running sum reaches u·Σv
    u = 1.0 - torch.rand((n, c, 1, cols.shape[3]), device=x.device, dtype=x.dtype)
    pick = (cum >= u * cum[:, :, -1:, :]).to(x.dtype).argmax(dim=2, keepdim=True)
    return cols.gather(2, pick).reshape(n, c, g.out[0], g.out[1]), None


def _pool_gathered(x: torch.Tensor, method: int, g: _PoolGeom, train: bool, want_mask: bool,
                   cache: _PoolCache):
    """_pool for strides beyond the kernel: the same windows, gathered (no padding out to
    the stride)."""
    k = g.kernel
    if method == _POOL.MAX:
        xg, rows, cols = _gather_windows(x, g, -math.inf)
        if not want_mask:
            y = F.max_pool2d(xg, k, k)
            mask = None
        else:
            y, idx = F.max_pool2d(xg, k, k, return_indices=True)
            wg = xg.shape[3]
            mask = (rows[idx // wg] * g.size[1] + cols[idx % wg]).to(x.dtype)
        if g.empty:
            hole = cache.empty(g, x.device)
            y = y.masked_fill(hole, -FLT_MAX)
            if mask is not None:
                mask = mask.masked_fill(hole, -1.0)
        return y, mask
    if method == _POOL.AVE:
        xg, _, _ = _gather_windows(x, g, 0.0)
        return F.avg_pool2d(xg, k, k, divisor_override=1) / cache.divisor(g, x), None
    xg, _, _ = _gather_windows(x, g, 0.0)
    gathered = _PoolGeom(tuple(xg.shape[2:]), k, k, (0, 0), g.out, None, (0, 0), False)
    # STOCHASTIC has no padding: the gathered plane pools exactly like the padded one
    return _pool(xg, method, gathered, train, want_mask, cache)


def _check_pool_method(layer: Layer, method: int, pad: Sequence[int], kernel: Sequence[int],
                       field: str) -> None:
    layer.check(method in (_POOL.MAX, _POOL.AVE, _POOL.STOCHASTIC),
                f"unknown pooling method {method}", field)
    if pad[0] or pad[1]:
        layer.check(method in (_POOL.MAX, _POOL.AVE),
                    "padding is implemented only for MAX and AVE pooling", field)
        layer.check(pad[0] < kernel[0] and pad[1] < kernel[1],
                    f"pad {tuple(pad)} must be smaller than the kernel {tuple(kernel)}", field)


@register("Pooling")
class PoolingLayer(Layer):
    """Pooling (MAX, AVE or STOCHASTIC) over the H×W plane of each channel.

    Bottoms: x, N×C×H×W.
    Tops: y, N×C×H'×W'; for MAX an optional second top, the argmax mask (N×C×H'×W'): the
        flat index h·W + w of each window's maximum in the bottom's plane (a float).
    Blobs: none.
    Params: pooling_param.pool (default MAX), kernel_size or kernel_h and kernel_w (required
        unless global_pooling), stride (default 1) or stride_h and stride_w, pad (default 0)
        or pad_h and pad_w (padding only for MAX and AVE, and smaller than the kernel),
        global_pooling (default false), round_mode (default CEIL), the forks' ceil_mode
        (default true); engine is not read.
    Source: src/caffe/layers/pooling_layer.cpp; ceil_mode: BVLC PR #3057's forks (caffe-priv,
        DenseNet-Caffe).

    Output size ceil((in + 2·pad − k) / stride) + 1 (floor with round_mode FLOOR or the
    forks' ceil_mode: false); with any padding, a last window that would start at or beyond
    in + pad is dropped. MAX takes the first maximum in row-major order over the image pixels
    of the window (a window holding no image pixel gives −FLT_MAX, its mask −1). AVE sums the
    image pixels and divides by the window clipped to in + pad (so padding counts, but not past
    the padded border). STOCHASTIC (no padding): in TRAIN picks a pixel with probability
    proportional to its value and passes the gradient to it; in TEST gives Σv²/Σv.
    global_pooling makes the kernel the whole plane (pad 0, stride 1 only).
    """

    # Caffe's backward reads its forward's argmax mask (MAX, STOCHASTIC) or nothing but
    # the top's diff (AVE): the recorded graph stays exact
    backward_reads = "kept"

    exact_bottoms = 1
    min_tops = 1
    max_tops = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.pooling_param
        f = "pooling_param"
        self.method = p.pool
        self.global_pooling = p.global_pooling
        # the forks' ceil_mode: false (caffe-priv, PR #3057) floors like round_mode FLOOR
        self.ceil = p.round_mode == _POOL.CEIL and p.ceil_mode
        self.check(p.round_mode in (_POOL.CEIL, _POOL.FLOOR),
                   f"unknown rounding mode {p.round_mode}", f"{f}.round_mode")
        has_k, has_kh, has_kw = p.HasField("kernel_size"), p.HasField("kernel_h"), p.HasField(
            "kernel_w")
        if self.global_pooling:
            self.check(not (has_k or has_kh or has_kw),
                       "with global_pooling: true the filter size cannot be specified",
                       f"{f}.kernel_size")
            self.kernel = None
        else:
            self.check(has_k != (has_kh and has_kw),
                       "filter size is kernel_size OR kernel_h and kernel_w; not both",
                       f"{f}.kernel_size")
            self.check(has_k or (has_kh and has_kw),
                       "for non-square filters both kernel_h and kernel_w are required",
                       f"{f}.kernel_h")
            self.kernel = (p.kernel_size,) * 2 if has_k else (p.kernel_h, p.kernel_w)
            self.check(self.kernel[0] > 0 and self.kernel[1] > 0,
                       f"filter dimensions cannot be zero, got {self.kernel}", f"{f}.kernel_size")
        self.check((not p.HasField("pad") and p.HasField("pad_h") and p.HasField("pad_w"))
                   or (not p.HasField("pad_h") and not p.HasField("pad_w")),
                   "pad is pad OR pad_h and pad_w are required", f"{f}.pad")
        self.check((not p.HasField("stride") and p.HasField("stride_h") and p.HasField("stride_w"))
                   or (not p.HasField("stride_h") and not p.HasField("stride_w")),
                   "stride is stride OR stride_h and stride_w are required", f"{f}.stride")
        self.pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
        self.stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
        # Caffe divides by the stride unchecked; a zero stride is always a mistake
        self.check(self.stride[0] > 0 and self.stride[1] > 0,
                   f"stride must be nonzero, got {self.stride}", f"{f}.stride")
        if self.global_pooling:
            self.check(self.pad == (0, 0) and self.stride == (1, 1),
                       "with global_pooling: true only pad = 0 and stride = 1",
                       f"{f}.global_pooling")
        else:
            _check_pool_method(self, self.method, self.pad, self.kernel, f"{f}.pool")
        self.check(self.method in (_POOL.MAX, _POOL.AVE, _POOL.STOCHASTIC),
                   f"unknown pooling method {self.method}", f"{f}.pool")
        self.check(len(self.top_names) == 1 or self.method == _POOL.MAX,
                   "only MAX pooling has a second top (the argmax mask)", f"{f}.pool")
        self._geoms: dict[tuple[int, ...], _PoolGeom] = {}
        self._cache = _PoolCache()

    def _geom(self, shape: tuple[int, ...]) -> _PoolGeom:
        g = self._geoms.get(shape)
        if g is None:
            self.check(len(shape) == 4, f"the bottom must have 4 axes (num, channels, height, "
                       f"width), not shape {shape}")
            kernel = tuple(shape[2:]) if self.global_pooling else self.kernel
            g = _pool_geom(self, tuple(shape[2:]), kernel, self.stride, self.pad, self.ceil)
            self._geoms[shape] = g
        return g

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        g = self._geom(shape)
        return [shape[:2] + g.out] * len(self.top_names)

    def forward(self, x: torch.Tensor) -> Tops:
        shape = tuple(x.shape)
        g = self._geoms.get(shape) or self._geom(shape)
        want_mask = len(self.top_names) > 1
        y, mask = _pool(x, self.method, g, self.phase == caffe_pb2.TRAIN, want_mask, self._cache)
        return (y, mask) if want_mask else y


@register("SPP")
class SPPLayer(Layer):
    """Spatial pyramid pooling: level l pooled into 2^l × 2^l bins, the levels concatenated.

    Bottoms: x, N×C×H×W.
    Tops: N×(C·Σ_l 4^l) for l < pyramid_height; with pyramid_height 1 the single level's
        N×C×1×1 pooling.
    Blobs: none.
    Params: spp_param.pyramid_height (required, >= 1; no default), pool (default MAX); engine
        is not read.
    Source: src/caffe/layers/spp_layer.cpp.

    Level l pools with kernel ceil(in/2^l), stride = kernel and pad (kernel·2^l − in + 1) / 2,
    under Caffe's ceil size rule; each level is flattened to N×(C·bins) and the levels are
    concatenated in order.
    """

    # Caffe's backward reads its pooling layers' masks: the recorded graph stays exact
    backward_reads = "kept"

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.spp_param
        self.height = p.pyramid_height
        self.method = p.pool
        self.check(self.height >= 1, "must be given and >= 1", "spp_param.pyramid_height")
        self.check(self.method in (_POOL.MAX, _POOL.AVE, _POOL.STOCHASTIC),
                   f"unknown pooling method {self.method}", "spp_param.pool")
        self._levels: dict[tuple[int, ...], list[_PoolGeom]] = {}
        self._cache = _PoolCache()

    def _geoms(self, shape: tuple[int, ...]) -> list[_PoolGeom]:
        levels = self._levels.get(shape)
        if levels is None:
            self.check(len(shape) == 4, f"the bottom must have 4 axes (num, channels, height, "
                       f"width), not shape {shape}")
            h, w = shape[2:]
            self.check(h > 0 and w > 0, f"input dimensions cannot be zero ({h}x{w})")
            levels = []
            for level in range(self.height):
                bins = 2 ** level
                kernel = (-(-h // bins), -(-w // bins))
                pad = ((kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2)
                where = f"pyramid level {level}: "
                _check_pool_method(self, self.method, pad, kernel, "spp_param.pyramid_height")
                levels.append(_pool_geom(self, (h, w), kernel, kernel, pad, True, where))
            self._levels[shape] = levels
        return levels

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        levels = self._geoms(shape)
        if self.height == 1:
            return [shape[:2] + levels[0].out]
        return [(shape[0], shape[1] * sum(g.out[0] * g.out[1] for g in levels))]

    def forward(self, x: torch.Tensor) -> Tops:
        shape = tuple(x.shape)
        levels = self._levels.get(shape) or self._geoms(shape)
        train = self.phase == caffe_pb2.TRAIN
        outs = [_pool(x, self.method, g, train, False, self._cache)[0] for g in levels]
        if self.height == 1:
            return outs[0]
        return torch.cat([o.flatten(1) for o in outs], dim=1)


# ------------------------------------------------------------------------------------------------
# LRN
# ------------------------------------------------------------------------------------------------
@register("LRN")
class LRNLayer(Layer):
    """Local response normalisation, across channels or within each channel.

    Bottoms: x, N×C×H×W (C > 0).
    Tops: y, of x's shape.
    Blobs: none.
    Params: lrn_param.local_size (default 5, odd), alpha (default 1), beta (default 0.75),
        norm_region (default ACROSS_CHANNELS), k (default 1); engine is not read.
    Source: src/caffe/layers/lrn_layer.cpp.

    ACROSS_CHANNELS: y = x · (k + α/n · Σ x²)^−β, n = local_size, the sum over the n channels
    centred on x (zeros past the first and last channel).
    WITHIN_CHANNEL: y = x · (1 + α/n² · Σ x²)^−β, the sum over the n×n square centred on x
    (zeros outside the image); k is not used, as in Caffe.

    Backward from the blobs (ACROSS_CHANNELS) follows lrn_layer.cpp, which reads the top and
    the bottom: dx = dy·s^−β − 2αβ/n · x · Σ dy·y/s, with s = k + α/n · Σ x² from the bottom
    (Caffe's forward keeps it) and the sums over the same n channels.
    """

    # torch's vectorised exp/pow and its scalar loop for a chunk's last values round
    # differently, and chunks follow the batch: items computed one by one (decaffe.items)
    item_group = 1

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.lrn_param
        self.size = p.local_size
        self.check(self.size % 2 == 1, f"LRN only supports odd values, got {self.size}",
                   "lrn_param.local_size")
        self.pre_pad = (self.size - 1) // 2
        self.alpha, self.beta, self.k = p.alpha, p.beta, p.k
        self.region = p.norm_region
        self.check(self.region in (_LRN.ACROSS_CHANNELS, _LRN.WITHIN_CHANNEL),
                   f"unknown normalization region {self.region}", "lrn_param.norm_region")
        if self.region == _LRN.ACROSS_CHANNELS:
            self.backward_reads = "tops"  # WITHIN_CHANNEL: its inner layers' kept blobs

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.check(len(shape) == 4, f"the bottom must have 4 axes (num, channels, height, "
                   f"width), not shape {shape}")
        self.check(shape[1] > 0, f"the bottom has no channels (shape {shape}); LRN normalizes "
                   "over channels")
        return [shape]

    def forward(self, x: torch.Tensor) -> Tops:
        if self.region == _LRN.ACROSS_CHANNELS:
            # Caffe's scale = k + α/n · Σ x² over n channels, summed as shifted slices (plain
            # additions, all threads busy even on one item), and y = x · scale^−β
            sq = F.pad(x * x, (0, 0, 0, 0, self.pre_pad, self.size - 1 - self.pre_pad))
            c = x.shape[1]
            total = sq[:, :c]
            for i in range(1, self.size):
                total = total + sq[:, i:i + c]
            return x * (total * (self.alpha / self.size) + self.k).pow(-self.beta)
        # Caffe composes AVE pooling (pad (n−1)/2, stride 1: always n² in the divisor),
        # then (1 + α·avg)^−β, then the product with x.
        avg = F.avg_pool2d(x * x, self.size, 1, self.pre_pad, count_include_pad=True)
        return x * (1.0 + self.alpha * avg).pow(-self.beta)

    def _channel_sums(self, t: torch.Tensor) -> torch.Tensor:
        # Σ over the `size` channels centred on each one, zeros past the ends
        summed = F.avg_pool3d(t.unsqueeze(1), (self.size, 1, 1), 1, (self.pre_pad, 0, 0),
                              count_include_pad=True)
        return summed.squeeze(1) * self.size

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        x, y, dy = bottoms[0], tops[0], top_diffs[0]
        scale = self.k + self._channel_sums(x * x) * (self.alpha / self.size)
        ratio = self._channel_sums(dy * y / scale)
        return [dy * scale.pow(-self.beta)
                - (2.0 * self.alpha * self.beta / self.size) * x * ratio]

    def extra_repr(self) -> str:
        region = "ACROSS_CHANNELS" if self.region == _LRN.ACROSS_CHANNELS else "WITHIN_CHANNEL"
        return (f"name={self.name!r}, {region}, local_size={self.size}, alpha={self.alpha}, "
                f"beta={self.beta}, k={self.k}")

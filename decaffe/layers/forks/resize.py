"""Resampling layers from Caffe's segmentation and conversion forks.

- ``Interp`` (PSPNet / DeepLab v2, hszhao/PSPNet and yjxiong/caffe ``interp_layer.cpp``):
  align-corners bilinear resize with zoom_factor / shrink_factor / height+width, and
  pad_beg/pad_end cropping; soeaver's variant takes the size of a second bottom
  (``use_blob_size``).
- ``Upsample``: with two bottoms SegNet's unpooling (alexgkendall/caffe-segnet: the values go
  to the positions a MAX Pooling's mask recorded); with one bottom the nearest-neighbour
  upsampling of the conversion forks (inisis/caffe ``scale``/``dims_num``, the YOLOv3 forks).
- ``MaxUnPool`` (inisis/caffe): unpooling to a given dst_h × dst_w with a mask bottom.
- ``Resize`` (zhujin's ``util_img`` bilinear resize): top-left-anchored bilinear with the
  missing right/bottom neighbours dropped.
- ``BilinearInterpolate`` (inisis/caffe): PyTorch-style bilinear, align_corners or half-pixel.
- ``PixelShuffle`` (inisis/caffe): PyTorch's pixel_shuffle (depth to space).

Every bilinear variant is linear and separable, so each is one (out × in) weight matrix per
spatial axis, built with the fork's float32 arithmetic; autograd of the two matrix products is
the fork's scatter-add backward.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf.message import Message

from ...layer import Layer, Shape, Tops, register


def has_field(msg: Message, name: str) -> bool:
    """Whether the (fork) field exists in this schema and is set."""
    try:
        return msg.HasField(name)
    except ValueError:
        return False


def field(msg: Message, name: str, default: object) -> object:
    """The field's value, or default where the schema has no such field."""
    return getattr(msg, name, default)


class _Separable(Layer):
    """A layer computing top = A_h · x · A_wᵀ over the last two axes of a 4-axis bottom."""

    exact_tops = 1

    def _matrices(self, in_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _resample(self, x: torch.Tensor, in_hw: tuple[int, int]) -> torch.Tensor:
        cache = self.__dict__.setdefault("_mats", {})
        key = (in_hw, x.dtype, x.device)
        mats = cache.get(key)
        if mats is None:
            ah, aw = self._matrices(in_hw)
            mats = (torch.as_tensor(ah, dtype=x.dtype, device=x.device),
                    torch.as_tensor(aw, dtype=x.dtype, device=x.device).t().contiguous())
            cache[key] = mats
        ah, awt = mats
        return torch.matmul(torch.matmul(ah, x), awt)

    def _check_4d(self, shape: Shape) -> None:
        self.check(len(shape) == 4, f"the bottom must have 4 axes (num, channels, height, "
                   f"width), not shape {tuple(shape)}")


# ----------------------------------------------------------------------------------------------
# Interp
# ----------------------------------------------------------------------------------------------
def _interp_axis(n_in: int, offset: int, n_eff: int, n_out: int) -> np.ndarray:
    """Caffe's caffe_cpu_interp2 along one axis: align-corners over the n_eff values from
    offset, in float32 (ratio (n_eff−1)/(n_out−1), 0 for a single output)."""
    a = np.zeros((n_out, n_in), np.float64)
    ratio = np.float32(n_eff - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    for o in range(n_out):
        r = np.float32(ratio * np.float32(o))
        i = int(r)
        step = 1 if i < n_eff - 1 else 0
        lam1 = np.float32(r - np.float32(i))
        lam0 = np.float32(np.float32(1) - lam1)
        a[o, offset + i] += lam0
        a[o, offset + i + step] += lam1
    return a


@register("Interp")
class InterpLayer(_Separable):
    """Bilinear resize with aligned corners (Caffe's caffe_cpu_interp2), PSPNet/DeepLab's Interp.

    Bottoms: x, N×C×H×W; optionally ref, N'×C'×H_out×W_out, whose height and width the top
    takes with use_blob_size, or when no factor or size is given (ref gets no gradient).
    Tops: y, N×C×H_out×W_out.
    Blobs: none.
    Params: interp_param (InterpParameter): pad_beg, pad_end (default 0, must be <= 0: they
    crop); height, width; zoom_factor, shrink_factor (default 1 each, used when set);
    use_blob_size (default false; soeaver's caffe-priv: the second bottom's size).
    Source: DeepLab v2 src/caffe/layers/interp_layer.cpp and src/caffe/util/interp.cpp (as
    the xmyqsh/deeplab-v2 mirror and hszhao/PSPNet carry them, one bottom); soeaver's
    caffe-priv for use_blob_size; maweifei/deeplab-ver2 for a second bottom without it.

    The effective input is in + pad_beg + pad_end, starting at −pad_beg on both axes. The
    output size, in DeepLab v2's order: use_blob_size: the second bottom's height and width
    (caffe-priv checks it first); else shrink_factor s alone: (in_eff − 1)/s + 1;
    zoom_factor z alone: in_eff + (in_eff − 1)(z − 1); else height and width; else both
    factors: shrink then zoom; else a second bottom's height and width (maweifei's
    deeplab-ver2 reads it last). So a factor or size given with a second bottom wins over it,
    as in both forks that take two bottoms. Output position o reads input
    o·(in_eff − 1)/(out − 1) (float32). Backward: the transpose. Refuses positive pads,
    factors < 1, no size given, use_blob_size without a second bottom, and non-positive
    sizes (as Caffe).
    """

    min_bottoms = 1
    max_bottoms = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.interp_param
        self.pad_beg = int(field(p, "pad_beg", 0))
        self.pad_end = int(field(p, "pad_end", 0))
        self.check(self.pad_beg <= 0, "only non-positive padding (cropping) is supported",
                   "interp_param.pad_beg")
        self.check(self.pad_end <= 0, "only non-positive padding (cropping) is supported",
                   "interp_param.pad_end")
        self.use_blob = bool(field(p, "use_blob_size", False))
        self.check(not self.use_blob or len(self.bottom_names) == 2, "use_blob_size: true "
                   "needs a second bottom to give the output size", "interp_param.use_blob_size")

    def _out_size(self, shape: Shape, ref: Shape | None) -> tuple[int, int, int, int]:
        p = self.lp.interp_param
        self._check_4d(shape)
        h_eff = shape[2] + self.pad_beg + self.pad_end
        w_eff = shape[3] + self.pad_beg + self.pad_end
        has_z, has_s = has_field(p, "zoom_factor"), has_field(p, "shrink_factor")
        if ref is not None:
            self._check_4d(ref)
        if self.use_blob:
            ho, wo = ref[2], ref[3]
        elif has_s and not has_z:
            s = p.shrink_factor
            self.check(s >= 1, "shrink factor must be positive", "interp_param.shrink_factor")
            ho, wo = (h_eff - 1) // s + 1, (w_eff - 1) // s + 1
        elif has_z and not has_s:
            z = p.zoom_factor
            self.check(z >= 1, "zoom factor must be positive", "interp_param.zoom_factor")
            ho, wo = h_eff + (h_eff - 1) * (z - 1), w_eff + (w_eff - 1) * (z - 1)
        elif has_field(p, "height") and has_field(p, "width"):
            ho, wo = p.height, p.width
        elif has_s and has_z:
            s, z = p.shrink_factor, p.zoom_factor
            self.check(s >= 1, "shrink factor must be positive", "interp_param.shrink_factor")
            self.check(z >= 1, "zoom factor must be positive", "interp_param.zoom_factor")
            ho, wo = (h_eff - 1) // s + 1, (w_eff - 1) // s + 1
            ho, wo = ho + (ho - 1) * (z - 1), wo + (wo - 1) * (z - 1)
        elif ref is not None and not has_field(p, "use_blob_size"):
            ho, wo = ref[2], ref[3]
        else:
            raise self.error("give the output size: zoom_factor, shrink_factor, height and "
                             "width, or a second bottom", "interp_param")
        self.check(h_eff > 0 and w_eff > 0, f"the cropped input {h_eff}x{w_eff} is empty",
                   "interp_param.pad_end")
        self.check(ho > 0 and wo > 0, f"the output size {ho}x{wo} is not positive",
                   "interp_param")
        return h_eff, w_eff, ho, wo

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        ref = tuple(bottom_shapes[1]) if len(bottom_shapes) > 1 else None
        _, _, ho, wo = self._out_size(shape, ref)
        return [shape[:2] + (ho, wo)]

    def _matrices(self, in_hw: tuple[int, ...]):
        (h, w), (h_eff, w_eff, ho, wo) = in_hw[:2], in_hw[2:]
        off = -self.pad_beg
        return _interp_axis(h, off, h_eff, ho), _interp_axis(w, off, w_eff, wo)

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None=None) -> Tops:
        dims = self._out_size(tuple(x.shape), tuple(ref.shape) if ref is not None else None)
        return self._resample(x, (x.shape[2], x.shape[3]) + dims)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0


# ----------------------------------------------------------------------------------------------
# Upsample and MaxUnPool
# ----------------------------------------------------------------------------------------------
def _unpool(layer: Layer, x: torch.Tensor, mask: torch.Tensor, out_h: int, out_w: int):
    """Each value of x goes to the flat position mask gives in its (n, c) out_h × out_w plane;
    the rest is 0. The gradient of x is the top's gradient read back at those positions."""
    n, c = x.shape[0], x.shape[1]
    idx = mask.detach().reshape(n, c, -1).to(torch.int64)
    if idx.numel() and x.device.type != "meta":
        lo, hi = int(idx.min()), int(idx.max())
        layer.check(lo >= 0 and hi < out_h * out_w,
                    f"mask index {hi if hi >= out_h * out_w else lo} is outside the "
                    f"{out_h}x{out_w} top: check that the settings match the pooling layer")
    top = x.new_zeros((n, c, out_h * out_w))
    top = top.scatter(2, idx, x.reshape(n, c, -1))
    return top.reshape(n, c, out_h, out_w)


@register("Upsample")
class UpsampleLayer(Layer):
    """Upsample: SegNet's max-unpooling with two bottoms, nearest-neighbour repetition with one.

    Bottoms: x, N×C×H×W; optionally mask, N×C×H×W, a MAX Pooling's argmax top (flat
    indices in each out_h×out_w plane; it gets no gradient).
    Tops: with the mask N×C×out_h×out_w; with one bottom x's shape with the last two axes (or,
    dims_num 3, the last axis) times scale.
    Blobs: none.
    Params: upsample_param (UpsampleParameter): scale (default 2 with the mask, SegNet's; 1
    with one bottom, eric612's and inisis'),
    scale_h, scale_w (default scale), pad_out_h, pad_out_w (default false, only for scale 2),
    upsample_h, upsample_w (with the mask); dims_num (default 4; one bottom only).
    Source: alexgkendall/caffe-segnet src/caffe/layers/upsample_layer.cpp (two bottoms);
    inisis/caffe src/caffe/layers/upsample_layer.cpp (one bottom).

    With the mask each value is written at its mask position in a zero top of
    upsample_h × upsample_w, or (H·scale_h − pad_out_h) × (W·scale_w − pad_out_w); backward
    reads the top's gradient at the mask positions. With one bottom the fork had no
    backward; decaffe gives the exact one (the sum over each block), see docs/compat.md.
    """

    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.upsample_param
        f = "upsample_param"
        self.with_mask = len(self.bottom_names) == 2
        # the schema's default 2 is SegNet's (two bottoms); the one-bottom form's forks
        # (eric612/MobileNet-YOLO, inisis/caffe) default to 1
        scale = int(p.scale) if has_field(p, "scale") else (2 if self.with_mask else 1)
        if self.with_mask:
            if has_field(p, "upsample_h") and has_field(p, "upsample_w"):
                self.size = (int(p.upsample_h), int(p.upsample_w))
                self.check(self.size[0] > 1 and self.size[1] > 1,
                           f"upsample_h and upsample_w must be > 1, not {self.size}",
                           f"{f}.upsample_h")
            else:
                self.size = None
                if has_field(p, "scale_h"):
                    self.scale = (int(p.scale_h), int(field(p, "scale_w", p.scale_h)))
                else:
                    self.scale = (scale, scale)
                self.check(self.scale[0] > 1 and self.scale[1] > 1,
                           f"the scale must be > 1, not {self.scale}", f"{f}.scale")
                self.pad_out = (int(bool(field(p, "pad_out_h", False))),
                                int(bool(field(p, "pad_out_w", False))))
                self.check(not self.pad_out[0] or self.scale[0] == 2,
                           "pad_out_h is only for scale 2", f"{f}.pad_out_h")
                self.check(not self.pad_out[1] or self.scale[1] == 2,
                           "pad_out_w is only for scale 2", f"{f}.pad_out_w")
        else:
            self.scale = scale
            self.check(scale >= 1, f"the scale must be >= 1, not {scale}", f"{f}.scale")
            self.dims_num = int(field(p, "dims_num", 4))
            self.check(self.dims_num in (3, 4), f"must be 3 or 4, not {self.dims_num}",
                       f"{f}.dims_num")

    def _mask_size(self, shape: Shape, mshape: Shape) -> tuple[int, int]:
        self.check(len(shape) == 4, f"the bottom must have 4 axes, not shape {tuple(shape)}")
        self.check(tuple(mshape) == tuple(shape), f"the mask (bottom 1) has shape "
                   f"{tuple(mshape)}; it must match bottom 0's {tuple(shape)}")
        if self.size is not None:
            return self.size
        return (shape[2] * self.scale[0] - self.pad_out[0],
                shape[3] * self.scale[1] - self.pad_out[1])

    def _nearest_shape(self, shape: Shape) -> tuple[int, ...]:
        k = 2 if self.dims_num == 4 else 1
        self.check(len(shape) >= k, f"dims_num {self.dims_num} needs at least {k} axes, "
                   f"the bottom has shape {tuple(shape)}")
        return tuple(shape[:-k]) + tuple(d * self.scale for d in shape[-k:])

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        if self.with_mask:
            return [shape[:2] + self._mask_size(shape, bottom_shapes[1])]
        return [self._nearest_shape(shape)]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None=None) -> Tops:
        if mask is not None:
            h, w = self._mask_size(tuple(x.shape), tuple(mask.shape))
            return _unpool(self, x, mask, h, w)
        self._nearest_shape(tuple(x.shape))
        y = x.repeat_interleave(self.scale, dim=-1)
        if self.dims_num == 4:
            y = y.repeat_interleave(self.scale, dim=-2)
        return y

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0


@register("MaxUnPool")
class MaxUnPoolLayer(Layer):
    """Max-unpooling: each value goes to its index's place in a zero top of dst_h × dst_w.

    Bottoms: x, N×C×H×W; mask, N×C×H×W, a MAX Pooling's argmax top (or any flat index
    blob into each dst_h×dst_w plane; it gets no gradient).
    Tops: y, N×C×dst_h×dst_w.
    Blobs: none.
    Params: max_unpool_param (MaxUnPoolParameter): dst_h, dst_w (both required).
    Source: inisis/caffe src/caffe/layers/maxunpool_layer.cpp.

    An index outside the top is refused (the fork aborts). The fork had no backward;
    decaffe's reads the top's gradient at the mask positions (docs/compat.md).
    """

    exact_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.max_unpool_param
        self.check(has_field(p, "dst_h") and has_field(p, "dst_w"),
                   "dst_h and dst_w are required", "max_unpool_param.dst_h")
        self.size = (int(p.dst_h), int(p.dst_w))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.check(len(shape) == 4, f"the bottom must have 4 axes, not shape {shape}")
        self.check(tuple(bottom_shapes[1]) == shape, f"the mask (bottom 1) has shape "
                   f"{tuple(bottom_shapes[1])}; it must match bottom 0's {shape}")
        return [shape[:2] + self.size]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Tops:
        self.reshape([tuple(x.shape), tuple(mask.shape)])
        return _unpool(self, x, mask, *self.size)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0


# ----------------------------------------------------------------------------------------------
# Resize, BilinearInterpolate, PixelShuffle
# ----------------------------------------------------------------------------------------------
def _resize_axis(n_in: int, n_out: int) -> np.ndarray:
    """zhujin's bilinear rule along one axis: source d·(in/out) in float32, floor and
    fraction f; weight |1 − f| on floor, |f| on floor + 1 when that is inside."""
    a = np.zeros((n_out, n_in), np.float64)
    scale = np.float32(n_in) / np.float32(n_out)
    for d in range(n_out):
        f = np.float32(np.float32(d) * scale)
        i = int(math.floor(f))
        f = np.float32(f - np.float32(i))
        a[d, i] += abs(np.float32(1) - f)
        if i + 1 < n_in:
            a[d, i + 1] += abs(f)
    return a


@register("Resize")
class ResizeLayer(_Separable):
    """Bilinear resize anchored at the top-left pixel (zhujin's util_img, as inisis/caffe has it).

    Bottoms: x, N×C×H×W.
    Tops: y, N×C×height×width, or with is_pyramid_test N×C×int(H·out_height_scale)×
    int(W·out_width_scale).
    Blobs: none.
    Params: resize_param (ResizeLayerParameter, inisis' number 251): height, width (required
    without is_pyramid_test); is_pyramid_test (default false); out_height_scale,
    out_width_scale (required with it).
    Source: inisis/caffe src/caffe/layers/resize_layer.cpp, src/caffe/util/util_img.cpp.

    Output (h, w) reads source (h·H/height, w·W/width); a neighbour beyond the last
    row/column is dropped (its weight is not redistributed). Backward scatters the top's
    gradient with the same weights, as the fork's.
    """

    exact_bottoms = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.resize_param
        self.pyramid = bool(field(p, "is_pyramid_test", False))
        if self.pyramid:
            self.check(has_field(p, "out_height_scale"), "output height scale is required",
                       "resize_param.out_height_scale")
            self.check(has_field(p, "out_width_scale"), "output width scale is required",
                       "resize_param.out_width_scale")
        else:
            self.check(has_field(p, "height"), "output height is required",
                       "resize_param.height")
            self.check(has_field(p, "width"), "output width is required", "resize_param.width")

    def _out(self, shape: Shape) -> tuple[int, int]:
        self._check_4d(shape)
        p = self.lp.resize_param
        if self.pyramid:
            ho = int(np.float32(p.out_height_scale) * np.float32(shape[2]))
            wo = int(np.float32(p.out_width_scale) * np.float32(shape[3]))
        else:
            ho, wo = int(p.height), int(p.width)
        self.check(ho > 0 and wo > 0, f"the output size {ho}x{wo} is not positive",
                   "resize_param")
        return ho, wo

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        return [shape[:2] + self._out(shape)]

    def _matrices(self, key: tuple[int, int, int, int]):
        h, w, ho, wo = key
        return _resize_axis(h, ho), _resize_axis(w, wo)

    def forward(self, x: torch.Tensor) -> Tops:
        ho, wo = self._out(tuple(x.shape))
        return self._resample(x, (x.shape[2], x.shape[3], ho, wo))


def _bilinear_axis(n_in: int, n_out: int, align: bool) -> np.ndarray:
    """inisis/caffe's BilinearInterpolate along one axis: source (in−1)/(out−1)·d with
    align_corners, else in/out·(d + 0.5) − 0.5; clamped to [0, in − 1]; neighbours
    i0 = clamp(floor, 0, in − 2), i1 = i0 + 1 with weights i1 − s and s − i0."""
    a = np.zeros((n_out, n_in), np.float64)
    for d in range(n_out):
        if align:
            s = np.float32(np.float32(n_in - 1) / np.float32(n_out - 1) * np.float32(d))
        else:
            s = np.float32(float(np.float32(n_in) / np.float32(n_out)) * (d + 0.5) - 0.5)
        s = min(max(s, np.float32(0)), np.float32(n_in - 1))
        i0 = min(max(int(math.floor(s)), 0), n_in - 2)
        a[d, i0] += np.float32(np.float32(i0 + 1) - s)
        a[d, i0 + 1] += np.float32(s - np.float32(i0))
    return a


@register("BilinearInterpolate")
class BilinearInterpolateLayer(_Separable):
    """Bilinear resize to a fixed size, ONNX Resize/Upsample's bilinear mode.

    Bottoms: x, N×C×H×W with H, W >= 2.
    Tops: y, N×C×dst_h×dst_w (fixed at setup from the first bottom shape).
    Blobs: none.
    Params: bilinear_interpolate_param (BilinearInterpolateParameter): dst_h, dst_w (either
    one; the other keeps the bottom's size) or scale_factor (default 1; used when set; sizes
    truncated); align_corners (default true).
    Source: inisis/caffe src/caffe/layers/bilinear_interpolate_layer.cpp.

    align_corners maps the corners onto each other, otherwise half-pixel centres. The fork's
    backward is empty; decaffe's is the transpose of the interpolation (docs/compat.md).
    Refused: both a size and a scale_factor, neither, a bottom axis of size 1 (the fork reads
    outside it), and align_corners with an output axis of 1 (the fork divides by zero).
    """

    exact_bottoms = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.bilinear_interpolate_param
        f = "bilinear_interpolate_param"
        has_size = has_field(p, "dst_h") or has_field(p, "dst_w")
        has_scale = has_field(p, "scale_factor")
        self.check(has_size != has_scale, "give dst_h/dst_w or scale_factor (exactly one)",
                   f"{f}.scale_factor")
        self.align = bool(field(p, "align_corners", True))
        shape = tuple(bottom_shapes[0])
        self._check_4d(shape)
        # the fork fixes the top size at set-up, from the first bottom shape
        if has_size:
            self.size = (int(p.dst_h) if has_field(p, "dst_h") else shape[2],
                         int(p.dst_w) if has_field(p, "dst_w") else shape[3])
        else:
            sf = np.float32(p.scale_factor)
            self.size = (int(np.float32(shape[2]) * sf), int(np.float32(shape[3]) * sf))
        self.check(self.size[0] > 0 and self.size[1] > 0,
                   f"the output size {self.size} is not positive", f"{f}.dst_h")
        if self.align:
            self.check(self.size[0] > 1 and self.size[1] > 1, f"align_corners needs an output "
                       f"of at least 2x2, not {self.size}", f"{f}.align_corners")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self._check_4d(shape)
        self.check(shape[2] > 1 and shape[3] > 1, f"the bottom's height and width must be at "
                   f"least 2 (the fork reads a 2x2 neighbourhood), not {shape[2:]}")
        return [shape[:2] + self.size]

    def _matrices(self, key: tuple[int, int]):
        h, w = key
        return (_bilinear_axis(h, self.size[0], self.align),
                _bilinear_axis(w, self.size[1], self.align))

    def forward(self, x: torch.Tensor) -> Tops:
        self.reshape([tuple(x.shape)])
        return self._resample(x, (x.shape[2], x.shape[3]))


@register("PixelShuffle")
class PixelShuffleLayer(Layer):
    """Depth to space (PyTorch's pixel_shuffle): N×C·r²×H×W → N×C×H·r×W·r.

    Bottoms: x, N×C·r²×H×W.
    Tops: y, N×C×H·r×W·r; top (n, c, h·r + i, w·r + j) is bottom (n, c·r² + i·r + j, h, w).
    Blobs: none.
    Params: pixelshuffle_param (PixelShuffleParameter): upscale_factor r (required in the
    fork; unset reads 0 and is refused, as is any r < 1).
    Source: inisis/caffe src/caffe/layers/pixelshuffle_layer.cpp.

    The fork had no backward; decaffe's is the inverse permutation.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self.r = int(field(self.lp.pixelshuffle_param, "upscale_factor", 1))
        self.check(self.r >= 1, f"must be >= 1, not {self.r}",
                   "pixelshuffle_param.upscale_factor")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.check(len(shape) == 4, f"the bottom must have 4 axes, not shape {shape}")
        self.check(shape[1] % (self.r * self.r) == 0, f"the bottom's {shape[1]} channels are "
                   f"not a multiple of upscale_factor² = {self.r * self.r}",
                   "pixelshuffle_param.upscale_factor")
        return [(shape[0], shape[1] // (self.r * self.r), shape[2] * self.r, shape[3] * self.r)]

    def forward(self, x: torch.Tensor) -> Tops:
        self.reshape([tuple(x.shape)])
        return F.pixel_shuffle(x, self.r)

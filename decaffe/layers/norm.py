"""Normalisation layers: BatchNorm (Caffe's exact statistics), Scale, Bias and MVN."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import fillers, sync_bn
from .. import mode as _mode
from ..layer import Layer, Shape, Tops, register
from ..proto import caffe_pb2
from .common import canonical_axis


@register("BatchNorm")
class BatchNormLayer(Layer):
    """Batch normalisation per channel (axis 1) with running sums; no learned scale or shift.

    Bottoms: x, N×C×… (at least 2 axes; N and C > 0).
    Tops: y, of x's shape.
    Blobs: 0, the running sum of batch means, (C,); 1, the running sum of unbiased batch
        variances, (C,); 2, the scale factor (a running count), (1,). All start at zero and
        get no gradient.
    Params: batch_norm_param.use_global_stats (unset: false in TRAIN, true in TEST),
        moving_average_fraction (default 0.999), eps (default 1e-5); the inisis/caffe fields
        (weight_filler, bias_filler, use_alpha_beta, do_all_reduce) are not read. Also `param`:
        an lr_mult 0 entry per blob (see below).
    Source: src/caffe/layers/batch_norm_layer.cpp.

    With batch statistics (use_global_stats false) the layer normalises with the batch mean and
    biased variance and updates

        factor ← λ·factor + 1,  mean_sum ← λ·mean_sum + μ,  var_sum ← λ·var_sum + m/(m−1)·σ²

    (λ = moving_average_fraction, m = values per channel). With global statistics it
    normalises with mean_sum/factor and var_sum/factor (zero when the factor is zero). eps
    goes inside the square root.

    As in Caffe 1.0's BatchNormLayer::LayerSetUp no solver changes the blobs: each blob
    without a ``param`` entry gets one with ``lr_mult: 0`` (written into the layer's parameter,
    so a saved net carries it), and an entry with a non-zero lr_mult is refused
    (LayerParamError naming the layer and ``param[i].lr_mult``).
    """

    # Caffe's backward reads its forward's normalised values and variance
    # (batch_norm_layer.cpp): the recorded graph stays exact
    backward_reads = "kept"

    exact_bottoms = 1
    exact_tops = 1
    no_grad_blobs = (0, 1, 2)

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.batch_norm_param
        shape = bottom_shapes[0]
        # Caffe 1.0 reads the bottom's shape(1) in set-up and reshape: fewer axes are fatal
        self.check(len(shape) >= 2, f"the bottom must have at least 2 axes (num, channels, ...), "
                   f"its shape is {tuple(shape)}")
        self.fraction = p.moving_average_fraction
        self.use_global_stats = (self.phase == caffe_pb2.TEST) if not p.HasField(
            "use_global_stats") else p.use_global_stats
        self.eps = p.eps
        self.channels = shape[1]
        # (mean, unbiased variance) of the last batch normalised with batch statistics
        self.batch_stats: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.num_blobs == 0:
            for s in ((self.channels,), (self.channels,), (1,)):
                self.add_blob(torch.zeros(s), requires_grad=False)
        # Caffe 1.0 masks the statistics from the solver with lr_mult 0 (weight decay still
        # enters the solver's history, but an lr_mult of 0 makes every update zero).
        for i in range(self.num_blobs):
            if len(self.lp.param) == i:
                self.lp.param.add().lr_mult = 0.0
            else:
                self.check(self.lp.param[i].lr_mult == 0,
                           f"Cannot configure batch normalization statistics as layer "
                           f"parameters (lr_mult is {self.lp.param[i].lr_mult:g}, must be 0)",
                           f"param[{i}].lr_mult")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = bottom_shapes[0]
        self.check(len(shape) >= 2, f"the bottom must have at least 2 axes (num, channels, ...), "
                   f"its shape is {tuple(shape)}")
        self.check(shape[1] == self.channels,
                   f"bottom has {shape[1]} channels, the layer was set up for {self.channels}")
        # Caffe divides the count by num·channels here (a crash when either is 0)
        self.check(all(d > 0 for d in shape[:2]), f"the bottom's num and channels must be "
                   f"positive, not shape {tuple(shape)} (BatchNorm has nothing to normalize)")
        return [shape]

    def forward(self, x: torch.Tensor) -> Tops:
        return self.normalize(x)

    def normalize(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output; with weight/bias, also a following per-channel Scale's, fused
        into the same kernel (the net does this where the Scale's input is visible to no one)."""
        shape = x.shape
        x3 = x.reshape(shape[0], 1) if x.dim() == 1 else x
        mean_sum, var_sum, factor = self.blob_params[0], self.blob_params[1], self.blob_params[2]
        if x3.dtype != mean_sum.dtype and x3.device.type == "cpu":
            x3 = x3.to(mean_sum.dtype)  # bf16/fp16 autocast: the statistics stay float32
        if self.use_global_stats:
            inv = torch.where(factor == 0, torch.zeros_like(factor), 1.0 / factor)
            y = F.batch_norm(x3, mean_sum * inv, var_sum * inv, weight, bias, False, 0.0,
                             self.eps)
            return y.reshape(shape)
        if _mode.sync_bn() and self.phase == caffe_pb2.TRAIN and x3.dim() >= 2:
            if sync_bn.active():
                return self._normalize_global_batch(x3, weight, bias).reshape(shape)
        # Batch statistics: the fused kernel with momentum 1 leaves exactly the batch mean
        # and the unbiased batch variance in the scratch buffers, then Caffe's sums update.
        m = x3.numel() // self.channels
        # the statistics stay float32 under autocast (bf16/fp16 activations on a GPU)
        stat_dtype = mean_sum.dtype
        run_mean = torch.zeros(self.channels, dtype=stat_dtype, device=x.device)
        run_var = torch.zeros(self.channels, dtype=stat_dtype, device=x.device)
        if x3.dim() > 2 or x3.shape[0] > 1:
            y = torch.batch_norm(x3, weight, bias, run_mean, run_var, True, 1.0, self.eps,
                                 torch.backends.cudnn.enabled)
        else:  # one value per channel: no unbiased variance to take
            y = torch.zeros_like(x3)
            if bias is not None:
                y = y + bias.reshape(1, -1)
            run_mean.copy_(x3.detach().reshape(-1))
            run_var.zero_()
        if m <= 1:
            run_var.zero_()
        with torch.no_grad():
            factor.mul_(self.fraction).add_(1.0)
            mean_sum.mul_(self.fraction).add_(run_mean)
            var_sum.mul_(self.fraction).add_(run_var)
        self._keep_batch_stats(run_mean, run_var)
        return y if x3 is x else y.reshape(shape)

    def _keep_batch_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        # the last batch's mean and unbiased variance, for run recording (decaffe.runs): a
        # reference to tensors the pass made anyway; not inside a compiled graph
        if not torch.compiler.is_compiling():
            self.batch_stats = (mean.detach(), var.detach())

    def _normalize_global_batch(self, x3: torch.Tensor, weight: torch.Tensor | None,
                                bias: torch.Tensor | None) -> torch.Tensor:
        """-sync_bn with several workers: statistics of the global batch (see
        decaffe.sync_bn)."""
        mean_sum, var_sum, factor = self.blob_params[0], self.blob_params[1], self.blob_params[2]
        y, mean, var = sync_bn.normalize(x3, weight, bias, self.eps)
        with torch.no_grad():
            factor.mul_(self.fraction).add_(1.0)
            mean_sum.mul_(self.fraction).add_(mean.to(mean_sum.dtype))
            var_sum.mul_(self.fraction).add_(var.to(var_sum.dtype))
        self._keep_batch_stats(mean, var)
        return y

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, channels={self.channels}, eps={self.eps}, "
                f"fraction={self.fraction}, use_global_stats={self.use_global_stats}")


def _param_axes(layer: Layer, bottom_shape: Shape, axis: int, num_axes: int,
                field: str) -> tuple[int, int]:
    """The axes [axis, axis+num_axes) of the bottom that a blob spans (num_axes -1: to the
    end)."""
    n = len(bottom_shape)
    if n == 0:
        layer.check(axis in (0, -1), f"axis {axis} out of range for a scalar bottom", field)
        return 0, 0
    axis = canonical_axis(axis, n, layer, field) if not (axis == n and num_axes == 0) else axis
    if num_axes == -1:
        end = n
    else:
        layer.check(num_axes >= 0, f"num_axes must be -1 or >= 0, not {num_axes}", field)
        end = axis + num_axes
        layer.check(end <= n, f"axis {axis} + num_axes {num_axes} exceeds the bottom's {n} axes",
                    field)
    return axis, end


class _Broadcast(Layer):
    """Shared by Scale and Bias: a blob (or second bottom) spanning some axes of bottom 0."""

    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def _setup_axes(self, bottom_shapes: list[Shape],
                    p: caffe_pb2.ScaleParameter | caffe_pb2.BiasParameter, field: str) -> Shape:
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            other = bottom_shapes[1]
            n = len(shape)
            self.axis = canonical_axis(p.axis, n, self, f"{field}.axis") if n else 0
            self.end = self.axis + len(other)
            self.check(self.end <= n and tuple(shape[self.axis:self.end]) == tuple(other),
                       f"second bottom's shape {tuple(other)} must equal bottom 0's axes "
                       f"{self.axis}.. of {tuple(shape)}")
            return tuple(other)
        self.axis, self.end = _param_axes(self, shape, p.axis, p.num_axes, field)
        return tuple(shape[self.axis:self.end])

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """t reshaped to broadcast against x over axes [axis, end)."""
        return t.reshape(tuple(x.shape[self.axis:self.end]) + (1,) * (x.dim() - self.end))


@register("Scale")
class ScaleLayer(_Broadcast):
    """Scale: y = x · s (+ b), s spanning some axes of x and broadcast over the rest.

    Bottoms: x, any shape; optionally s, of x's shape over axes [axis, axis + s's axes),
        which then gets a gradient too.
    Tops: y, of x's shape.
    Blobs: with one bottom, the scale s, of x's shape over axes [axis, axis + num_axes)
        (num_axes −1: to the end); then, when bias_term, the bias b of s's shape (with two
        bottoms the bias is the only blob).
    Params: scale_param.axis (default 1, negative counts from the end), num_axes (default 1;
        not read with two bottoms), filler (default constant 1), bias_term (default false),
        bias_filler (default constant 0).
    Source: src/caffe/layers/scale_layer.cpp (its bias: bias_layer.cpp).
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.scale_param
        span = self._setup_axes(bottom_shapes, p, "scale_param")
        self._own = len(bottom_shapes) == 1
        self.bias_term = p.bias_term
        if self.num_blobs == 0:
            if self._own:
                fp = p.filler if p.HasField("filler") else fillers.filler_param(type="constant",
                                                                                 value=1.0)
                self.add_blob(fillers.fill(fp, span, where=self.name))
            if self.bias_term:
                fp = p.bias_filler if p.HasField("bias_filler") else fillers.filler_param(
                    type="constant", value=0.0)
                self.add_blob(fillers.fill(fp, span, where=self.name))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = bottom_shapes[0]
        span = tuple(shape[self.axis:self.end])
        want = tuple(self.blob_params[0].shape) if self._own else tuple(bottom_shapes[1])
        self.check(span == want, f"bottom shape {tuple(shape)} does not match the scale's "
                   f"{want} at axis {self.axis}")
        return [shape]

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> Tops:
        s = self.blob_params[0] if self._own else rest[0]
        s = self._view(s, x)
        if self.bias_term:
            b = self._view(self.blob_params[1 if self._own else 0], x)
            return torch.addcmul(b, x, s)
        return x * s


@register("Bias")
class BiasLayer(_Broadcast):
    """Bias: y = x + b, b spanning some axes of x and broadcast over the rest.

    Bottoms: x, any shape; optionally b, of x's shape over axes [axis, axis + b's axes),
        which then gets a gradient too.
    Tops: y, of x's shape.
    Blobs: with one bottom, the bias b, of x's shape over axes [axis, axis + num_axes)
        (num_axes −1: to the end); with two, none.
    Params: bias_param.axis (default 1, negative counts from the end), num_axes (default 1; not
        read with two bottoms), filler (default constant 0).
    Source: src/caffe/layers/bias_layer.cpp.
    """

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.bias_param
        span = self._setup_axes(bottom_shapes, p, "bias_param")
        self._own = len(bottom_shapes) == 1
        if self._own and self.num_blobs == 0:
            fp = p.filler if p.HasField("filler") else fillers.filler_param(type="constant",
                                                                             value=0.0)
            self.add_blob(fillers.fill(fp, span, where=self.name))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = bottom_shapes[0]
        span = tuple(shape[self.axis:self.end])
        want = tuple(self.blob_params[0].shape) if self._own else tuple(bottom_shapes[1])
        self.check(span == want, f"bottom shape {tuple(shape)} does not match the bias's "
                   f"{want} at axis {self.axis}")
        return [shape]

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> Tops:
        b = self.blob_params[0] if self._own else rest[0]
        return x + self._view(b, x)


@register("MVN")
class MVNLayer(Layer):
    """Mean-variance normalisation per (num, channel), or per num across channels.

    Bottoms: x, N×C×… (N > 0, and C > 0 unless across_channels).
    Tops: y, of x's shape.
    Blobs: none.
    Params: mvn_param.normalize_variance (default true), across_channels (default false), eps
        (default 1e-9).
    Source: src/caffe/layers/mvn_layer.cpp.

    y = (x − mean) / (std + eps), or x − mean when normalize_variance is false.
    Backward from the blobs follows mvn_layer.cpp, which reads the top: dx = (dy − (Σ y·dy·y +
    Σ dy)/m) / (std + eps) over each row of m values (std from the bottom, as Caffe's forward
    keeps it), or dy − mean(dy) without normalize_variance.
    """

    exact_bottoms = 1
    exact_tops = 1
    backward_reads = "tops"

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = p.eps

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        # Caffe divides the count by num (and channels): a crash when either is 0
        self.check(len(shape) >= 1 and all(d > 0 for d in shape[:1 if self.across_channels
                                                                 else 2]),
                   f"an empty batch or zero channels (shape {shape}) has no mean or variance")
        return [bottom_shapes[0]]

    def forward(self, x: torch.Tensor) -> Tops:
        shape = x.shape
        n = shape[0]
        rows = x.reshape(n, -1) if self.across_channels else x.reshape(
            n * (shape[1] if x.dim() > 1 else 1), -1)
        centred = rows - rows.mean(dim=1, keepdim=True)
        if self.normalize_variance:
            std = centred.pow(2).mean(dim=1, keepdim=True).sqrt()
            centred = centred / (std + self.eps)
        return centred.reshape(shape)

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        n = t.shape[0]
        return t.reshape(n, -1) if self.across_channels else t.reshape(
            n * (t.shape[1] if t.dim() > 1 else 1), -1)

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        x, y, dy = self._rows(bottoms[0]), self._rows(tops[0]), self._rows(top_diffs[0])
        m = x.shape[1]
        if not self.normalize_variance:
            return [(dy - dy.sum(dim=1, keepdim=True) / m).reshape(bottoms[0].shape)]
        # Caffe's forward keeps std + eps with std = sqrt(E[x²] − E[x]²)
        mean = x.sum(dim=1, keepdim=True) / m
        std = ((x * x).sum(dim=1, keepdim=True) / m - mean * mean).sqrt() + self.eps
        g = y * (y * dy).sum(dim=1, keepdim=True) + dy.sum(dim=1, keepdim=True)
        return [((dy - g / m) / std).reshape(bottoms[0].shape)]

"""Face-recognition fork layers: MarginInnerProduct (wy1iu/sphereface's A-Softmax).
CenterLoss (ydwen/caffe-face) lives in fork_misc.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd.function import FunctionCtx

from ... import fillers
from ...layer import Layer, Shape, Tops, register
from ..common import canonical_axis

# ------------------------------------------------------------------------------------------
# MarginInnerProduct (sphereface's A-Softmax)
# ------------------------------------------------------------------------------------------
_MARGIN = {0: "SINGLE", 1: "DOUBLE", 2: "TRIPLE", 3: "QUADRUPLE"}


def _sign(t: torch.Tensor) -> torch.Tensor:
    return (t > 0).to(t.dtype) - (t < 0).to(t.dtype)


def _margin_terms(cos: torch.Tensor, margin: str):
    """(psi(θ)/|x| on the label column, coeff_w, coeff_x·|x|) of the fork's forward/backward."""
    s0 = _sign(cos)
    c2 = cos * cos
    if margin == "DOUBLE":
        return 2 * s0 * c2 - 1, 4 * s0 * cos, -(2 * s0 * c2 + 1)
    if margin == "TRIPLE":
        c3 = c2 * cos
        s1 = _sign(cos.abs() - 0.5)
        s2 = s0 * (1 + s1) - 2
        return s1 * (4 * c3 - 3 * cos) + s2, s1 * (12 * c2 - 3), -(8 * s1 * c3 - s2)
    c3, c4 = c2 * cos, c2 * c2
    s3 = s0 * _sign(2 * c2 - 1)
    s4 = 2 * s0 + s3 - 3
    return (s3 * (8 * c4 - 8 * c2 + 1) + s4, s3 * (32 * c3 - 16 * cos),
            -(s3 * (24 * c4 - 8 * c2 - 1) - s4))


class _MarginFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, w: torch.Tensor, index: torch.Tensor, lam: float,
                margin: str):
        xw = x @ w.t()
        ctx.save_for_backward(x, w, index)
        ctx.lam, ctx.margin = lam, margin
        if margin == "SINGLE":
            return xw
        norm = torch.sqrt((x * x).sum(1))
        rows = torch.arange(x.shape[0], device=x.device)
        cos = xw[rows, index] / norm
        psi, _, _ = _margin_terms(cos, margin)
        out = xw.clone()
        out[rows, index] = norm * psi
        return (out + lam * xw) / (1 + lam)

    @staticmethod
    def backward(ctx: FunctionCtx, g: torch.Tensor):
        x, w, index = ctx.saved_tensors
        lam, margin = ctx.lam, ctx.margin
        grad_w = g.t() @ x if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            if margin == "SINGLE":
                grad_x = g @ w
            else:
                rows = torch.arange(x.shape[0], device=x.device)
                norm = torch.sqrt((x * x).sum(1))
                cos = (x * w[index]).sum(1) / norm
                _, cw, cx_scaled = _margin_terms(cos, margin)
                cx = cx_scaled / norm
                unit = torch.sqrt(cw * cw + cx * cx)
                cw, cx = cw / unit, cx / unit
                g_off = g.clone()
                g_off[rows, index] = 0
                gl = g[rows, index] / (1 + lam)
                grad_x = (g_off @ w) / (1 + lam) + gl[:, None] * (cw[:, None] * w[index]
                                                                  + cx[:, None] * x)
                grad_x = grad_x + (lam / (1 + lam)) * (g @ w)
        return grad_x, grad_w, None, None, None


@register("MarginInnerProduct")
class MarginInnerProductLayer(Layer):
    """SphereFace's A-Softmax inner product: x·Wᵀ with a margin on the label's column.

    Bottoms: x, N×... flattened from axis into K values per row; label, N values in
    [0, num_output) (it gets no gradient).
    Tops: scores, x's shape up to axis then num_output (N×num_output for axis 1); optionally
    lambda, shape 1.
    Blobs: W, num_output×K (no bias); every forward normalises its rows in place.
    Params: margin_inner_product_param (MarginInnerProductParameter): num_output (> 0), type
    SINGLE (default), DOUBLE, TRIPLE or QUADRUPLE (m = 1..4), weight_filler, axis (default 1),
    base (default 1), gamma (default 0), power (default 1), lambda_min (default 0), iteration
    (default 0).
    Source: wy1iu/sphereface tools/caffe-sphereface/src/caffe/layers/
    margin_inner_product_layer.cpp.

    The label column becomes |x|·ψ(θ), blended as (that + λ·x·Wᵀ)/(1 + λ); each forward
    (TRAIN or TEST) advances the iteration counter (starting at `iteration`) and
    λ = max(base·(1 + gamma·iter)^−power, lambda_min). ψ follows the fork's sign tables:
    DOUBLE 2·s0·cos² − 1; TRIPLE s1·(4cos³ − 3cos) + s2; QUADRUPLE s3·(8cos⁴ − 8cos² + 1) +
    s4. Backward is the fork's: W gets top_diffᵀ·x, x gets the plain-product gradient off
    the label column and, on it, (coeff_w·w + coeff_x·x) with the two coefficients
    normalised to unit length — not the derivative of ψ, so only SINGLE has a
    finite-difference check.
    """

    exact_bottoms = 2
    min_tops = 1
    max_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.margin_inner_product_param
        f = "margin_inner_product_param"
        self.check(p.num_output > 0, "num_output must be > 0", f"{f}.num_output")
        self.margin = _MARGIN.get(p.type)
        self.check(self.margin is not None, f"Unknown margin type {p.type}", f"{f}.type")
        self.num_output = int(p.num_output)
        shape = tuple(bottom_shapes[0])
        self.axis = canonical_axis(p.axis, len(shape), self, f"{f}.axis")
        self.iteration = float(np.float32(p.iteration))
        self.base, self.gamma = np.float32(p.base), np.float32(p.gamma)
        self.power, self.lambda_min = np.float32(p.power), np.float32(p.lambda_min)
        if self.num_blobs == 0:
            k = math.prod(shape[self.axis:])
            self.add_blob(fillers.fill(p.weight_filler, (self.num_output, k), where=self.name))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(label[0] == shape[0], "Number of labels must match number of output; DO "
                   f"NOT support multi-label this version: {label} labels for {shape}")
        k = math.prod(shape[self.axis:])
        self.check(k == self.blob(0).shape[1], "Input size incompatible with inner product "
                   f"parameters: {k} values per feature, weights take {self.blob(0).shape[1]}")
        tops = [shape[:self.axis] + (self.num_output,)]
        if len(self.top_names) > 1:
            tops.append((1,))
        return tops

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> Tops:
        if torch.is_grad_enabled() and label.requires_grad:
            raise self.error("MarginInnerProduct cannot back-propagate to its labels",
                             "propagate_down")
        self.iteration = float(np.float32(self.iteration + 1))
        f = np.float32
        lam = f(self.base * np.power(f(1) + self.gamma * f(self.iteration), -self.power))
        lam = float(max(lam, self.lambda_min))
        w = self.blob(0)
        with torch.no_grad():  # the fork normalises the stored weights themselves
            w.div_(torch.sqrt((w * w).sum(1, keepdim=True)))
        outer = math.prod(x.shape[:self.axis])
        feats = x.reshape(outer, -1)
        index = label.detach().reshape(-1).long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_output):
            raise self.error(f"labels must be in [0, {self.num_output})")
        out = _MarginFn.apply(feats, w, index, lam, self.margin)
        out = out.reshape(x.shape[:self.axis] + (self.num_output,))
        if len(self.top_names) > 1:
            return out, torch.full((1,), lam, dtype=x.dtype, device=x.device)
        return out

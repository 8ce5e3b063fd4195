"""`decaffe train -sync_bn`: BatchNorm with the statistics of the global batch.

Caffe 1.0 normalises each worker's batch with that batch's own statistics (and each worker
keeps its own running sums). With -sync_bn, a TRAIN-phase BatchNorm that uses batch
statistics computes them over every worker's batch: the per-channel sum and count are summed
over the workers, then the sum of squared deviations from that global mean (two collectives,
the two passes one process makes), so the mean and the biased variance are those of the
global batch of M values per channel. The layer normalises with them and updates Caffe's
three blobs with the global mean and the unbiased variance M/(M−1)·σ², exactly as one
process seeing the whole batch would (up to float summation order).

The backward pass is that of batch normalisation over the global batch: with x̂ the
normalised input and dy the gradient of the summed loss of all workers,
dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂)), the two means over the global batch (one more
collective). γ's and β's gradients are local sums; the solver's gradient exchange sums and
scales them as any parameter's, giving the global batch's gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import mode as _mode


def active() -> bool:
    """Whether batch statistics are synchronised now (-sync_bn and a group of > 1)."""
    if not _mode.sync_bn():
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        moved = t.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(moved)
        return moved.to(t.device)
    dist.all_reduce(t)
    return t


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor,
                weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        xf = x.float()
        count = xf.numel() // c
        sums = torch.cat([xf.sum(dims), xf.new_tensor([float(count)])])
        sums = _all_reduce(sums)
        total = sums[c]
        mean = sums[:c] / total
        view = [1, c] + [1] * (x.dim() - 2)
        centred = xf - mean.view(view)
        sq = _all_reduce(centred.square().sum(dims))
        var = sq / total
        invstd = torch.rsqrt(var + eps)
        xhat = centred * invstd.view(view)
        y = xhat
        if weight is not None:
            y = y * weight.float().view(view)
        if bias is not None:
            y = y + bias.float().view(view)
        m = float(total)
        unbiased = var * (m / (m - 1.0)) if m > 1 else torch.zeros_like(var)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.total = m
        ctx.has_bias = bias is not None
        ctx.in_dtype = x.dtype
        ctx.mark_non_differentiable(mean, unbiased)
        return y.to(x.dtype) if x.dtype != torch.float32 else y, mean, unbiased

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor,
                 _dmean: torch.Tensor, _dvar: torch.Tensor,
                 ) -> tuple[torch.Tensor | None, ...]:
        xhat, invstd, weight = ctx.saved_tensors
        c = xhat.shape[1]
        dims = [d for d in range(xhat.dim()) if d != 1]
        view = [1, c] + [1] * (xhat.dim() - 2)
        dyf = dy.float()
        sum_dy = dyf.sum(dims)
        sum_dy_xhat = (dyf * xhat).sum(dims)
        dx = dweight = dbias = None
        if weight is not None and ctx.needs_input_grad[1]:
            dweight = sum_dy_xhat.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = sum_dy.clone()
        if ctx.needs_input_grad[0]:
            both = _all_reduce(torch.cat([sum_dy, sum_dy_xhat]))
            mean_dy = (both[:c] / ctx.total).view(view)
            mean_dy_xhat = (both[c:] / ctx.total).view(view)
            scale = invstd if weight is None else invstd * weight.float()
            dx = scale.view(view) * (dyf - mean_dy - xhat * mean_dy_xhat)
            dx = dx.to(ctx.in_dtype)
        return dx, dweight, dbias, None


def normalize(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
              eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, global batch mean, global unbiased variance) for x of shape N×C×…, normalised
    over the global batch and scaled by weight, shifted by bias (both optional, C values)."""
    return _SyncBatchNorm.apply(x, weight, bias, float(eps))

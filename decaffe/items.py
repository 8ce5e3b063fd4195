"""Batch independence: in TEST phase on the CPU each item's outputs are what it gives alone.

Caffe computes image by image, so an image's outputs never depend on the rest of the batch
(BVLC's 02-fine-tuning.ipynb asserts a squared fc7 difference below 1e-8 between a batch of 1
and a batch of 50). The CPU libraries PyTorch calls do not promise that: oneDNN chooses a
convolution algorithm, and MKL a GEMM kernel (GEMV for one row), from the whole problem's
size, the batch included, and the order in which they sum changes with it; which sizes
switch differs from CPU to CPU.

A layer whose kernels may do this sets ``Layer.item_group = g``. decaffe's arithmetic for an
item is then, by definition, the layer run on a group of exactly g items that contains it (g
is 2 for convolutions, since oneDNN treats a batch of one apart, and 4 for InnerProduct, whose
single rows would go through GEMV), or alone where a first probe per item shape and thread
count shows the layer computes an item alone exactly as in such a group (then a batch of one
costs nothing extra). For each bottom shape and thread count a probe on random
bottoms and random weights (a fixed seed; the global generator is not touched) measures how
this machine's kernels behave, and :func:`run` picks the fastest way that gives every item
exactly that arithmetic:

- ``"whole"``: the batch padded with zero items to a multiple of g, in one call (the kernels
  give each item of the whole batch its group's result bit for bit; the common case);
- ``"groups"``: one call per group of g items, the last padded with zero items;
- ``"alone"``: one call per item, padded with g − 1 zero items (a group's result depends on
  where in the group an item sits).

Layers with g = 1 (the elementwise layers with exp, pow or tanh, LRN, Softmax) always run one
call per item, without a probe: torch's vectorised loop and its scalar loop for the last
values of a thread's chunk round those functions differently, the chunks' ends move with the
batch and the thread count, and whether the rounding differs depends on the values (random
probe data near 1 showed none where CaffeNet's LRN inputs differed).

An item's result is therefore the same for every batch size, at any position in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .layer import Layer, Shape

_SEED = 0x1D1


def _pad(x: torch.Tensor, num: int) -> torch.Tensor:
    """A copy of x (fresh memory, so no part's alignment depends on its place in the batch)
    with zero items appended along axis 0 up to num items."""
    if x.shape[0] == num:
        return x.clone()
    return torch.cat([x, x.new_zeros((num - x.shape[0],) + tuple(x.shape[1:]))])


def _tuple(out: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _same(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def probe(layer: Layer, shapes: Sequence[Shape], group: int) -> str:
    """How to run bottoms of these shapes so that each item gets its group's arithmetic
    ("whole", "groups" or "alone", see the module), measured with random bottoms and random
    weights of the layer's shapes."""
    gen = torch.Generator().manual_seed(_SEED)
    params = {name: torch.randn(p.shape, generator=gen, dtype=p.dtype)
              for name, p in layer.named_parameters()}
    params.update(dict(layer.named_buffers()))
    like = next(iter(params.values())).dtype if params else torch.float32
    num = -(-shapes[0][0] // group) * group
    xs = [torch.randn((num,) + tuple(s[1:]), generator=gen, dtype=like) for s in shapes]

    def call(*bottoms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _tuple(torch.func.functional_call(layer, params, tuple(bottoms)))

    with torch.no_grad():
        first = call(*[x[:group] for x in xs])
        rolled = call(*[torch.roll(x[:group], 1, 0) for x in xs])
        if not _same([torch.roll(y, 1, 0) for y in first], rolled):
            return "alone"
        if num == group:
            return "whole"
        parts = [first] + [call(*[x[i:i + group] for x in xs]) for i in range(group, num, group)]
        groups = [torch.cat(ys) for ys in zip(*parts)]
        return "whole" if _same(call(*xs), groups) else "groups"


def own_group(layer: Layer, shapes: Sequence[Shape], group: int) -> int:
    """1 where the layer computes an item alone exactly as inside a group of `group` items
    (then no item needs company and a batch of one runs as it is), else group; measured once
    per item shape and thread count, so the choice never depends on the batch size."""
    key = (tuple(tuple(s[1:]) for s in shapes), torch.get_num_threads())
    groups = layer.__dict__.setdefault("_item_groups", {})
    got = groups.get(key)
    if got is None:
        gen = torch.Generator().manual_seed(_SEED)
        params = {name: torch.randn(p.shape, generator=gen, dtype=p.dtype)
                  for name, p in layer.named_parameters()}
        params.update(dict(layer.named_buffers()))
        like = next(iter(params.values())).dtype if params else torch.float32
        xs = [torch.randn((group,) + tuple(s[1:]), generator=gen, dtype=like) for s in shapes]
        with torch.no_grad():
            together = _tuple(torch.func.functional_call(layer, params, tuple(xs)))
            alone = [_tuple(torch.func.functional_call(layer, params,
                                                       tuple(x[i:i + 1].clone() for x in xs)))
                     for i in range(group)]
        same = all(torch.equal(together[k][i:i + 1], alone[i][k])
                   for i in range(group) for k in range(len(together)))
        got = groups[key] = 1 if same else group
    return got


def plan(layer: Layer, shapes: Sequence[Shape], group: int) -> str:
    """probe's answer for these shapes at the current thread count, measured once."""
    key = (tuple(tuple(s) for s in shapes), torch.get_num_threads(), group)
    plans = layer.__dict__.setdefault("_item_plans", {})
    got = plans.get(key)
    if got is None:
        got = plans[key] = probe(layer, shapes, group)
    return got


def run(layer: Layer, bottoms: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """layer(*bottoms) with each item's outputs (axis 0) computed as in a group of
    layer.item_group items, whatever the batch size (see the module)."""
    group = layer.item_group
    if group <= 0 or not bottoms or bottoms[0].dim() == 0:
        return layer(*bottoms)
    num = bottoms[0].shape[0]
    if any(b.dim() == 0 or b.shape[0] != num for b in bottoms):
        return layer(*bottoms)
    shapes = [tuple(b.shape) for b in bottoms]
    if group > 1:
        group = own_group(layer, shapes, group)
    if group == 1 and num == 1:
        return layer(*bottoms)
    if group == 1 and layer.item_group == 1:
        how = "groups"
    else:
        how = plan(layer, shapes, group)
    if how == "whole":
        total = -(-num // group) * group
        if total == num:
            return layer(*bottoms)
        out = layer(*[torch.cat([b, b.new_zeros((total - num,) + tuple(b.shape[1:]))])
                      for b in bottoms])
        if isinstance(out, torch.Tensor):
            return out[:num]
        return tuple(y[:num] for y in out)
    step = group if how == "groups" else 1
    parts, single = [], False
    for i in range(0, num, step):
        out = layer(*[_pad(b[i:i + step], group) for b in bottoms])
        single = isinstance(out, torch.Tensor)
        parts.append([y[:min(step, num - i)] for y in _tuple(out)])
    outs = [torch.cat(ys) for ys in zip(*parts)]
    return outs[0] if single else tuple(outs)

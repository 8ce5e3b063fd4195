"""Backward from what the blobs hold, as Caffe's Net::BackwardFromTo computes it.

Caffe's backward reads the blobs as they are when it runs: each layer's Backward_cpu takes
its tops' diffs and, as the layer needs them, its bottoms' and tops' data and its own blobs.
No forward has to run first, and what a user wrote into a blob since the forward counts.

pycaffe's ``Net.backward()`` in decaffe differentiates the graph the last forward recorded:
fast, and exactly Caffe's while the blobs still hold what that forward left in them. This
module is the rest, one layer at a time:

- :class:`Records` says whether a layer's recorded graph still fits the blobs: the layer ran
  in a recorded forward, the blob shapes are the recorded ones, and no blob that the layer's
  Caffe backward reads (``Layer.backward_reads``) holds anything else than that forward left
  in it (a write through a blob's numpy array is found by comparing contents, for blobs
  whose array was handed out; a blob whose memory nobody outside holds cannot have changed);
- :func:`from_blobs` computes a layer's backward from the blobs' current contents: a Python
  layer's own ``backward(top, propagate_down, bottom)`` on the blobs; a layer whose Caffe
  backward reads its tops' data (``backward_reads = "tops"``: Sigmoid, TanH, Exp, ELU,
  Softmax, Power, Swish, ...) its ``backward_from_blobs``, Caffe's formula; any other layer
  by re-running its forward on the bottoms' current data under autograd, with the tops'
  diffs as the incoming gradients, leaving no trace (random generators and the layer's
  statistics blobs are put back as they were).

A layer whose Caffe backward reads only what its own forward kept (``"kept"``: Dropout's
mask, max pooling's argmax, BatchNorm's normalised values) keeps its recorded graph whatever
was written since; with no recorded forward, its state comes from a forward on the blobs'
current data (Caffe would read the zero-filled state of a layer that never ran).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .blob import Blob
from .layer import Layer


class Records:
    """The net's last recorded forward, as one backward call sees it: which blobs still hold
    what that forward left in them (each blob checked at most once per call).

    records[i] is layer i's (bottom tensors, top tensors) from the forward, or None; bottom_ids
    and top_ids are the layers' blob indices into blobs."""

    def __init__(self, records: Sequence, bottom_ids: Sequence[Sequence[int]],
                 top_ids: Sequence[Sequence[int]], blobs: Sequence[Blob]) -> None:
        self._records, self._bottom_ids, self._top_ids = records, bottom_ids, top_ids
        self._blobs = blobs
        self._left: dict[int, torch.Tensor] | None = None
        self._changed: dict[int, bool] = {}

    def _left_by_forward(self) -> dict[int, torch.Tensor]:
        # the last tensor a recorded forward put in (or first read from) each blob
        if self._left is None:
            left: dict[int, torch.Tensor] = {}
            for li, rec in enumerate(self._records):
                if rec is None:
                    continue
                bottoms, tops = rec
                for bid, t in zip(self._bottom_ids[li], bottoms):
                    left.setdefault(bid, t)
                for tid, t in zip(self._top_ids[li], tops):
                    left[tid] = t
            self._left = left
        return self._left

    def changed(self, bid: int) -> bool:
        """Whether blob bid's data is other than what the recorded forward left in it."""
        got = self._changed.get(bid)
        if got is None:
            got = self._changed[bid] = self._compare(bid)
        return got

    def _compare(self, bid: int) -> bool:
        blob = self._blobs[bid]
        now = blob._get("data")
        left = self._left_by_forward().get(bid)
        if now is None or left is None or tuple(now.shape) != tuple(left.shape):
            return True
        if now is left and not blob.handed_out:
            return False  # the engine's own tensor, which no array outside shares
        if now.dtype != left.dtype or now.device != left.device:
            return True
        return not torch.equal(now, left.detach())

    def fits(self, li: int, layer: Layer) -> bool:
        """Whether layer li's recorded graph gives Caffe's backward for the blobs as they
        are: recorded, of the blobs' shapes, and no blob its backward reads changed."""
        rec = self._records[li]
        if rec is None:
            return False
        bottoms, tops = rec
        bids, tids = self._bottom_ids[li], self._top_ids[li]
        if len(tops) != len(tids):
            return False
        for ids, ts in ((bids, bottoms), (tids, tops)):
            for bid, t in zip(ids, ts):
                if tuple(self._blobs[bid].shape) != tuple(t.shape):
                    return False
        reads = layer.backward_reads
        if reads == "kept":
            return True
        if any(self.changed(bid) for bid in bids):
            return False
        return reads != "tops" or not any(self.changed(tid) for tid in tids)


class _Untouched:
    """Puts back what re-running a layer's forward changes besides its outputs: the random
    generators (Dropout's draw) and the blobs no gradient reaches (BatchNorm's statistics)."""

    def __init__(self, layer: Layer) -> None:
        self._layer = layer

    def __enter__(self) -> _Untouched:
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self._kept = [(t, t.detach().clone()) for t in
                      [*(p for p in self._layer.parameters() if not p.requires_grad),
                       *self._layer.buffers()]]
        return self

    def __exit__(self, *exc: object) -> bool:
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        with torch.no_grad():
            for t, saved in self._kept:
                t.copy_(saved)
        return False


def rerun_backward(layer: Layer, bottoms: Sequence[torch.Tensor],
                   top_diffs: Sequence[torch.Tensor], need: Sequence[bool]
                   ) -> tuple[list[torch.Tensor | None], list]:
    """(bottom diffs, parameter gradients) of a layer whose Caffe backward reads its bottoms'
    data: its forward re-run on these bottoms under autograd, differentiated with the top
    diffs. Bottom diffs are None where not needed; gradients pair each parameter that
    requires one with its gradient (None if none reaches it)."""
    with _Untouched(layer), torch.enable_grad():
        ins = [b.detach().requires_grad_() if n and b.is_floating_point() else b.detach()
               for b, n in zip(bottoms, need)]
        outs = layer(*ins)
    if isinstance(outs, torch.Tensor):
        outs = (outs,)
    ys, gs = [], []
    for y, g in zip(outs, top_diffs):
        if y.requires_grad:
            ys.append(y)
            gs.append(g.reshape(y.shape).to(y.dtype))
    want = [j for j, t in enumerate(ins) if t.requires_grad]
    params = [p for p in layer.blob_params if p.requires_grad]
    diffs: list[torch.Tensor | None] = [None] * len(ins)
    if not ys or not (want or params):
        for j in want:
            diffs[j] = torch.zeros_like(ins[j])
        return diffs, [(p, None) for p in params]
    got = torch.autograd.grad(ys, [ins[j] for j in want] + params, gs, allow_unused=True)
    for j, g in zip(want, got):
        diffs[j] = torch.zeros_like(ins[j]) if g is None else g
    return diffs, list(zip(params, got[len(want):]))


def from_blobs(layer: Layer, bottoms: Sequence[Blob], tops: Sequence[Blob],
               need: Sequence[bool]) -> None:
    """One layer's backward from the blobs' current contents (Caffe's Layer::Backward):
    reads the bottoms' and tops' data and the tops' diffs, writes the needed bottoms'
    diffs (a bottom named twice gets the sum, as Caffe's split gives) and adds to the
    layer's parameter diffs. A layer with no tops (Silence) zeroes its bottoms' diffs."""
    if not bottoms:
        return  # Input, data layers: nothing below them
    if not tops:
        for blob, n in zip(bottoms, need):
            if n:
                blob.set_diff(torch.zeros(blob.shape, dtype=blob.tensor().dtype,
                                          device=blob.tensor().device))
        return
    data = [b.tensor() for b in bottoms]
    top_diffs = [t.tensor("diff") for t in tops]
    grads: list = []
    if layer.backward_reads == "tops":
        diffs = layer.backward_from_blobs(data, [t.tensor() for t in tops], top_diffs,
                                          list(need))
    else:
        diffs, grads = rerun_backward(layer, data, top_diffs, need)
    summed: dict[int, tuple[Blob, torch.Tensor]] = {}
    for blob, n, g in zip(bottoms, need, diffs):
        if not n or g is None:
            continue
        g = g.detach()
        if id(blob) in summed:
            g = summed[id(blob)][1] + g
        summed[id(blob)] = (blob, g)
    for blob, g in summed.values():
        blob.set_diff(g)
    add_param_grads(grads)


def add_param_grads(pairs: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
    """Accumulate each (parameter, gradient) into parameter.grad, as Caffe adds to a param
    blob's diff; a None gradient (none reached the parameter) adds nothing."""
    for p, g in pairs:
        if g is None:
            continue
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad.add_(g)

"""pycaffe's Net: the engine's Net (decaffe.net) with the methods pycaffe writes in Python on
top of the C++ binding (python/caffe/pycaffe.py), as a mixin class.

``NetMixin`` adds:

- ``forward_all(blobs=None, **inputs)``: forward over inputs of any length in batches of
  the net's batch size, the last batch padded with zeros and the padding dropped from the
  outputs; returns ``{blob: array}`` for the outputs and the extra ``blobs``.
- ``forward_backward_all(blobs=None, diffs=None, **inputs_and_output_diffs)``: the same
  with a backward pass after each forward; returns ``({blob: array}, {blob: diff array})``.
- ``_batch(arrays)``: the batches forward_all feeds (pycaffe's ``Net._batch``); the batch
  size is the first axis of the net's first blob.
- ``set_input_arrays(data, labels)`` (and the binding's ``_set_input_arrays``): feed a
  MemoryData net (1-d labels become N×1×1×1).
- ``_bottom_ids(i)`` / ``_top_ids(i)``: blob indices of layer i's bottoms/tops, with
  pycaffe's range check (a NetError for an index out of range; negative indices count from
  the end).

``Net`` is ``NetMixin`` over the engine's Net: what ``decaffe.Net`` and ``caffe.Net`` are.
The engine never imports this module; the nets solvers build are of this class once it is
imported (it registers itself with ``decaffe.solvers.base.set_net_class``), so
``solver.net.forward_all`` works as in pycaffe. See docs/architecture.md, "pycaffe".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from ..errors import DecaffeError, NetError
from ..layers.data import set_input_arrays as _feed_memory_data
from ..net import Net as _EngineNet
from ..solvers.base import set_net_class


def _first(mapping: Mapping):
    return next(iter(mapping.values()))


def _batch_size(net: _EngineNet) -> int:
    blobs = net.blobs
    if not blobs:
        raise NetError("the net has no blobs to take a batch size from")
    shape = _first(blobs).shape
    if not shape:
        raise NetError(f"the net's first blob '{next(iter(blobs))}' has no batch axis")
    return int(shape[0])


def _batches(net: _EngineNet, blobs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Split {name: array of N rows} into batches of the net's batch size.

    Full batches are slices; a last partial batch is completed with rows of zeros (as
    pycaffe does) so that every batch fills the input blobs exactly."""
    if not blobs:
        return
    arrays = {name: np.asarray(value) for name, value in blobs.items()}
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DecaffeError(f"the input arrays have different lengths: {lengths}")
    num = _first(lengths)
    batch_size = _batch_size(net)
    for start in range(0, num - num % batch_size, batch_size):
        yield {name: a[start:start + batch_size] for name, a in arrays.items()}
    remainder = num % batch_size
    if remainder:
        padded = {}
        for name, a in arrays.items():
            pad = np.zeros((batch_size - remainder,) + a.shape[1:], dtype=a.dtype)
            padded[name] = np.concatenate([a[num - remainder:], pad])
        yield padded


def _forward_all(net: _EngineNet, blobs: Iterable[str] | None = None,
                 **kwargs: np.ndarray) -> dict[str, np.ndarray]:
    """Forward every row of the given inputs, a batch at a time (pycaffe's Net.forward_all).

    Returns {name: array} for the net's outputs and `blobs`, with one row per input row
    (batch padding removed). Without inputs, runs one forward pass (data layers feed it)."""
    names = set(net.outputs + list(blobs or []))
    if not kwargs:
        outs = net.forward(blobs=blobs)
        return {name: np.array(outs[name]) for name in names}
    num = len(_first(kwargs))
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in _batches(net, kwargs):
        outs = net.forward(blobs=blobs, **batch)
        for name, arr in outs.items():
            collected[name].append(np.array(arr))  # the blob is reused by the next batch
    return {name: _stack(parts, num) for name, parts in collected.items()}


def _stack(parts: list[np.ndarray], num: int | None) -> np.ndarray:
    """Concatenate per-batch arrays and drop the padding rows past num (None: keep all)."""
    if not parts:
        return np.zeros((0,), dtype=np.float32)
    if parts[0].ndim == 0:
        # a scalar output (a loss) per batch: one value per batch
        return np.asarray(parts)
    out = np.concatenate(parts)
    return out if num is None else out[:num]


def _forward_backward_all(net: _EngineNet, blobs: Iterable[str] | None = None,
                          diffs: Iterable[str] | None = None, **kwargs: np.ndarray
                          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Forward and backward over inputs and output diffs of any length, a batch at a time
    (pycaffe's Net.forward_backward_all).

    kwargs holds arrays for input blobs (forward) and for output blobs (their diffs, for
    backward); either may be missing, in which case the blobs' current contents are used.
    Returns ({name: data} for outputs and `blobs`, {name: diff} for inputs and `diffs`)."""
    out_names = set(net.outputs + list(blobs or []))
    diff_names = set(net.inputs + list(diffs or []))
    unknown = set(kwargs) - set(net.inputs) - set(net.outputs)
    if unknown:
        raise DecaffeError(f"{sorted(unknown)} are neither inputs {net.inputs} nor outputs "
                           f"{net.outputs} of the net")
    fwd = {k: kwargs[k] for k in net.inputs if k in kwargs}
    bwd = {k: kwargs[k] for k in net.outputs if k in kwargs}
    fwd_batches = list(_batches(net, fwd)) if fwd else []
    bwd_batches = list(_batches(net, bwd)) if bwd else []
    steps = max(len(fwd_batches), len(bwd_batches), 1)
    all_outs: dict[str, list[np.ndarray]] = {k: [] for k in out_names}
    all_diffs: dict[str, list[np.ndarray]] = {k: [] for k in diff_names}
    for i in range(steps):
        fb = fwd_batches[i] if i < len(fwd_batches) else {}
        bb = bwd_batches[i] if i < len(bwd_batches) else {}
        outs = net.forward(blobs=blobs, **fb)
        grads = net.backward(diffs=diffs, **bb)
        for k, v in outs.items():
            all_outs[k].append(np.array(v))
        for k, v in grads.items():
            all_diffs[k].append(np.array(v))
    num = len(_first(kwargs)) if kwargs else None
    return ({k: _stack(v, num) for k, v in all_outs.items()},
            {k: _stack(v, num) for k, v in all_diffs.items()})


class NetMixin:
    """pycaffe's Python-side Net methods (python/caffe/pycaffe.py) for a class derived from the
    engine's Net; each raises DecaffeError/NetError naming the input or index at fault."""

    def forward_all(self, blobs: list[str] | None = None, **kwargs: np.ndarray
                    ) -> dict[str, np.ndarray]:
        """pycaffe's Net.forward_all (see the module docstring)."""
        return _forward_all(self, blobs, **kwargs)

    def forward_backward_all(self, blobs: list[str] | None = None,
                             diffs: list[str] | None = None, **kwargs: np.ndarray
                             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """pycaffe's Net.forward_backward_all (see the module docstring)."""
        return _forward_backward_all(self, blobs, diffs, **kwargs)

    def _batch(self, blobs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """pycaffe's Net._batch: {name: array of N rows} in batches of the net's batch size,
        the last one padded with rows of zeros."""
        return _batches(self, blobs)

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """pycaffe's Net.set_input_arrays: hand arrays to the net's first layer, a MemoryData
        layer (data N×C×H×W float32 C-contiguous; labels float32, N or N×1×1×1; N a multiple
        of the batch size). The checks and the layer live with the data layers."""
        _feed_memory_data(self, data, labels)

    # pycaffe's binding name for the checked, non-reshaping half of set_input_arrays
    _set_input_arrays = set_input_arrays

    def _layer_checked(self, i: int) -> int:
        n = len(self.layer_records)
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise NetError(f"layer index {i!r} out of range for a net of {n} layers")
        return int(i) % n

    def _bottom_ids(self, i: int) -> list[int]:
        """Indices into net._blobs of layer i's bottoms (pycaffe's Net._bottom_ids(i))."""
        return super()._bottom_ids(self._layer_checked(i))

    def _top_ids(self, i: int) -> list[int]:
        """Indices into net._blobs of layer i's tops (pycaffe's Net._top_ids(i))."""
        return super()._top_ids(self._layer_checked(i))


class Net(NetMixin, _EngineNet):
    """pycaffe's caffe.Net: the engine's Net (decaffe.net.Net, which documents the arguments
    and the blobs/params/forward/backward API) with pycaffe's Python-side methods."""


set_net_class(Net)

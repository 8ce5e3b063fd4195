"""The rest of pycaffe's Net API (python/caffe/pycaffe.py and _caffe.cpp), as functions of a
decaffe Net, to be attached to the Net class: ``Net.forward_all = forward_all`` and so on.

- ``forward_all(net, blobs=None, **inputs)``: forward over inputs of any length in batches of
  the net's batch size, the last batch padded with zeros and the padding dropped from the
  outputs; returns ``{blob: array}`` for the outputs and the extra ``blobs``.
- ``forward_backward_all(net, blobs=None, diffs=None, **inputs_and_output_diffs)``: the same
  with a backward pass after each forward; returns ``({blob: array}, {blob: diff array})``.
- ``_batch(net, arrays)``: the batches forward_all feeds (pycaffe's ``Net._batch``); the batch
  size is the first axis of the net's first blob.
- ``set_input_arrays(net, data, labels)``: feed a MemoryData net (1-d labels become N×1×1×1).
- ``bottom_ids(net, i)`` / ``top_ids(net, i)``: blob indices of layer i's bottoms/tops
  (pycaffe's ``Net._bottom_ids(i)`` / ``Net._top_ids(i)``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np

from .errors import DecaffeError, NetError


def _first(mapping: Mapping):
    return next(iter(mapping.values()))


def _batch_size(net) -> int:
    blobs = net.blobs
    if not blobs:
        raise NetError("the net has no blobs to take a batch size from")
    shape = _first(blobs).shape
    if not shape:
        raise NetError(f"the net's first blob '{next(iter(blobs))}' has no batch axis")
    return int(shape[0])


def _batch(net, blobs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
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


def forward_all(net, blobs=None, **kwargs) -> dict[str, np.ndarray]:
    """Forward every row of the given inputs, a batch at a time (pycaffe's Net.forward_all).

    Returns {name: array} for the net's outputs and `blobs`, with one row per input row
    (batch padding removed). Without inputs, runs one forward pass (data layers feed it)."""
    names = set(net.outputs + list(blobs or []))
    if not kwargs:
        outs = net.forward(blobs=blobs)
        return {name: np.array(outs[name]) for name in names}
    num = len(_first(kwargs))
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in _batch(net, kwargs):
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


def forward_backward_all(net, blobs=None, diffs=None, **kwargs):
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
    fwd_batches = list(_batch(net, fwd)) if fwd else []
    bwd_batches = list(_batch(net, bwd)) if bwd else []
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


def set_input_arrays(net, data: np.ndarray, labels: np.ndarray) -> None:
    """pycaffe's Net.set_input_arrays: hand arrays to the net's first layer, a MemoryData
    layer (data N×C×H×W float32 C-contiguous; labels float32, N or N×1×1×1; N a multiple of
    the batch size). The checks and the layer live with the data layers."""
    from .layers.data import set_input_arrays as _set

    _set(net, data, labels)


# pycaffe's binding name for the checked, non-reshaping half of set_input_arrays
_set_input_arrays = set_input_arrays


def _layer_checked(net, i: int) -> int:
    n = len(net.layer_records)
    if not isinstance(i, (int, np.integer)) or not -n <= i < n:
        raise NetError(f"layer index {i!r} out of range for a net of {n} layers")
    return int(i) % n


def bottom_ids(net, i: int) -> list[int]:
    """Indices into net._blobs of layer i's bottoms (pycaffe's Net._bottom_ids(i))."""
    return list(net.layer_records[_layer_checked(net, i)].bottoms)


def top_ids(net, i: int) -> list[int]:
    """Indices into net._blobs of layer i's tops (pycaffe's Net._top_ids(i))."""
    return list(net.layer_records[_layer_checked(net, i)].tops)


# ----------------------------------------------------------------------------------------------
# pycaffe's Net constructors
# ----------------------------------------------------------------------------------------------
_PATHS = (str, bytes, os.PathLike)


def _is_phase(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def net_init_args(args: tuple, phase=None, weights=None, level=None, stages=None):
    """(phase, weights, level, stages) from the arguments after the network, in pycaffe's
    forms (python/caffe/_caffe.cpp, BVLC master):

    - ``Net(network_file, phase, level=0, stages=None, weights=None)`` (the positional order
      is network_file, phase, level, stages, weights);
    - ``Net(network_file, weights, phase)``, the legacy form; ``weights`` may be None (no
      weights), as scripts and Classifier pass it.

    Raises DecaffeError naming the argument for anything else (a phase that is not
    caffe.TRAIN/caffe.TEST, weights that are not a path, stages that are not a list of names,
    an argument given twice, too many arguments)."""
    args = list(args)
    given = {"phase": phase, "weights": weights, "level": level, "stages": stages}
    if args and not _is_phase(args[0]) and (args[0] is None or isinstance(args[0], _PATHS)):
        # the legacy (network_file, weights, phase)
        if len(args) > 2:
            raise DecaffeError(f"Net(network_file, weights, phase): {len(args) + 1} positional "
                               "arguments given, at most 3")
        names = ["weights", "phase"]
    else:
        if len(args) > 4:
            raise DecaffeError(f"Net(network_file, phase, level, stages, weights): "
                               f"{len(args) + 1} positional arguments given, at most 5")
        names = ["phase", "level", "stages", "weights"]
    for name, value in zip(names, args):
        if given[name] is not None:
            raise DecaffeError(f"Net(): '{name}' given both by position and by keyword")
        given[name] = value
    if names[0] == "weights" and args[0] is not None:
        from . import log

        # pycaffe's Net_Init_Load logs the same deprecation
        log.warning("DEPRECATION WARNING - deprecated use of Python interface: use "
                    "Net(network_file, phase, weights=...) instead")
    phase, weights, level, stages = (given[k] for k in ("phase", "weights", "level", "stages"))
    if phase is not None and not (_is_phase(phase) and int(phase) in (0, 1)):
        raise DecaffeError(f"Net(): phase must be caffe.TRAIN (0) or caffe.TEST (1), not "
                           f"{phase!r}")
    if weights is not None:
        if not isinstance(weights, _PATHS):
            raise DecaffeError(f"Net(): weights must be the path of a .caffemodel or "
                               f".caffemodel.h5 file (or None), not {type(weights).__name__}")
        weights = os.fsdecode(weights)
        if not os.path.isfile(weights):
            raise DecaffeError(f"Net(): Could not open file {weights} (the weights)")
    if level is not None:
        if not isinstance(level, (int, np.integer)) or isinstance(level, bool):
            raise DecaffeError(f"Net(): level must be an integer, not {level!r}")
        level = int(level)
    if stages is not None:
        if isinstance(stages, (str, bytes)) or not all(isinstance(s, str) for s in stages):
            raise DecaffeError(f"Net(): stages must be a list of stage names, not {stages!r}")
        stages = list(stages)
    return None if phase is None else int(phase), weights, level, stages

"""pycaffe's caffe.coord_map: how coordinates in one NetSpec top relate to those in another.

A coordinate map is ``(axis, scale, shift)``: a position ``i`` in a layer's bottom lands at
``i * scale + shift`` in its top, along every spatial axis from ``axis`` on (``scale`` and
``shift`` are numpy arrays with one value per spatial axis, or scalars when the same for all).
Point-wise layers map as the identity ``(None, 1, 0)``: they have no axis of their own.

- Convolution, Pooling and Im2col (stride s, effective kernel k = (kernel-1)·dilation+1, pad
  p): ``(axis, 1/s, (p - (k-1)/2) / s)``; Deconvolution is the inverse:
  ``(axis, s, (k-1)/2 - p)``. The axis is convolution_param.axis (default 1: the channel axis,
  so spatial axes start after it).
- Crop (axis a, offset o): ``(a - 1, 1, -o)``.
- The point-wise layers in PASS_THROUGH_LAYERS: identity.

``coord_map_from_to(top_from, top_to)`` walks back from both tops to a blob they share,
composing maps on the way, and returns the map taking ``top_from``'s coordinates to
``top_to``'s: position ``i`` of top_from is position ``i * scale + shift`` of top_to.
``crop(top_from, top_to)`` turns that map into the Crop layer that cuts ``top_from`` to line
up with ``top_to`` (FCN's score crops): the scale must be 1 and the shift a non-positive
integer.
"""

from __future__ import annotations

import collections

import numpy as np

from ..errors import DecaffeError
from ..netspec import Function, Top
from ..netspec import layers as L

# pycaffe's list, plus the element-wise layers Caffe gained after it was written (Clip, Swish)
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log",
                       "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split",
                       "TanH", "Threshold", "Clip", "Swish"]


class CoordMapError(DecaffeError):
    """A coordinate map that cannot be computed or used."""


class UndefinedMapException(CoordMapError):
    """The layer has no coordinate mapping (InnerProduct, global pooling, ...)."""


class AxisMismatchException(CoordMapError):
    """Two maps along different axes cannot be composed."""


class UnconnectedTopsError(CoordMapError, RuntimeError):
    """The two tops share no blob reachable through spatial layers (pycaffe: RuntimeError)."""


class CropError(CoordMapError, AssertionError):
    """The map does not describe a crop (pycaffe signalled these with assert)."""


def _fn_params(fn: Function, message: str) -> dict:
    """The layer's fields, with those given inside `<message>` dict taking precedence."""
    params = dict(fn.params)
    inner = params.get(message)
    if isinstance(inner, dict):
        params.update(inner)
    return params


def _axis_values(params: dict, name: str, legacy: str, default: float | None,
                 fn: Function) -> np.ndarray:
    """One value per spatial axis, from `name` or from the legacy `<legacy>_h`/`_w` pair."""
    h, w = params.get(legacy + "_h"), params.get(legacy + "_w")
    if h is not None or w is not None:
        if name in params:
            raise CoordMapError(f"{fn.type_name}: give {name} or {legacy}_h/{legacy}_w, "
                                "not both")
        if h is None or w is None:
            raise CoordMapError(f"{fn.type_name}: {legacy}_h and {legacy}_w must be given "
                                "together")
        return np.array([h, w], dtype=np.float64)
    value = params.get(name, default)
    if value is None:
        raise CoordMapError(f"{fn.type_name} layer has no {name}; its coordinate map is "
                            "undefined")
    return np.array(value, dtype=np.float64, ndmin=1)


def conv_params(fn: Function) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(axis, stride, effective kernel extent, pad) of a Convolution/Deconvolution/Im2col/Pooling.

    Pooling's fields live in pooling_param (no dilation, axis 1); the others' in
    convolution_param. Rectangular kernel_h/kernel_w (stride_h.., pad_h..) give one value per
    axis. Global pooling has no map (it reduces the spatial axes away)."""
    if fn.type_name == "Pooling":
        params = _fn_params(fn, "pooling_param")
        if params.get("global_pooling"):
            raise UndefinedMapException(f"{fn.type_name} with global_pooling has no "
                                        "coordinate map")
        axis = 1
        dilation = np.array(1.0, ndmin=1)
    else:
        params = _fn_params(fn, "convolution_param")
        axis = int(params.get("axis", 1))
        dilation = np.array(params.get("dilation", 1), dtype=np.float64, ndmin=1)
    ks = _axis_values(params, "kernel_size", "kernel", None, fn)
    stride = _axis_values(params, "stride", "stride", 1, fn)
    pad = _axis_values(params, "pad", "pad", 0, fn)
    return axis, stride, (ks - 1) * dilation + 1, pad


def crop_params(fn: Function) -> tuple[int, np.ndarray]:
    """(axis, offset) of a Crop layer; axis defaults to 2 (crop H and W of N×C×H×W)."""
    params = _fn_params(fn, "crop_param")
    axis = int(params.get("axis", 2))
    offset = np.array(params.get("offset", 0), dtype=np.float64, ndmin=1)
    return axis, offset


def coord_map(fn: Function) -> tuple:
    """The (axis, scale, shift) map of one layer function, bottom to top."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, ks, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, ks, pad = conv_params(fn)
        return axis, stride, (ks - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        # the map's axis is the last non-spatial one, as for convolution
        return axis - 1, 1, -offset
    raise UndefinedMapException(f"{fn.type_name} layers have no coordinate map")


def compose(base_map: tuple, next_map: tuple) -> tuple:
    """The map of base followed by next: scales multiply, next's shift is scaled by base's."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException(f"cannot compose maps along axes {ax1} and {ax2}")
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map: tuple) -> tuple:
    """The map undoing coord_map (scale inverted, shift undone)."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mappable_bottoms(top: Top) -> list:
    # a Crop's second bottom only gives the output size; its coordinates are not carried over
    bottoms = list(top.fn.inputs)
    if top.fn.type_name == "Crop":
        bottoms = bottoms[:1]
    return bottoms


def coord_map_from_to(top_from: Top, top_to: Top) -> tuple:
    """The map from top_from's coordinates into top_to's, through their nearest shared blob.

    Walks back from top_from composing layer maps (stopping at layers without one), then
    breadth-first from top_to until it reaches a blob seen in the first walk. Raises
    UnconnectedTopsError (a RuntimeError) when none is found. Each blob is visited once: a
    blob reached along several paths is assumed to map the same way along each (pycaffe's
    assumption too), which keeps residual nets from exploding into exponentially many paths."""
    from_maps = {top_from: (None, 1, 0)}
    frontier = collections.deque([top_from])
    while frontier:
        top = frontier.popleft()
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            if bottom not in from_maps:
                from_maps[bottom] = compose(from_maps[top], step)
                frontier.append(bottom)
    to_maps = {top_to: (None, 1, 0)}
    frontier = collections.deque([top_to])
    while frontier:
        top = frontier.popleft()
        if top in from_maps:
            return compose(to_maps[top], inverse(from_maps[top]))
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            if bottom not in to_maps:
                to_maps[bottom] = compose(to_maps[top], step)
                frontier.append(bottom)
    raise UnconnectedTopsError("could not compute the map between the tops; are they connected "
                               "by spatial layers?")


def crop(top_from: Top, top_to: Top) -> object:
    """A Crop layer (a NetSpec top) cutting top_from to line up with top_to.

    Its crop_param has axis = map axis + 1 and offset = -shift per spatial axis. Raises
    CropError (an AssertionError, as pycaffe's asserts) when the scales differ, the shift is
    positive (top_from would have to grow) or not a whole number."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (a == 1).all():
        raise CropError(f"scale mismatch on crop (a = {a})")
    if not (b <= 0).all():
        raise CropError(f"cannot crop negative offset (b = {b})")
    if not (np.round(b) == b).all():
        raise CropError(f"cannot crop noninteger offset (b = {b})")
    offset = [int(v) for v in np.atleast_1d(-np.round(b))]
    crop_param = {"offset": offset}
    if ax is not None:
        crop_param["axis"] = int(ax) + 1
    return L.Crop(top_from, top_to, crop_param=crop_param)

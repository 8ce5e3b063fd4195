"""pycaffe's ``caffe.io``: conversions between numpy arrays and Caffe's protobufs, image
loading and resizing, oversampling, and the ``Transformer`` that prepares images for a net.

Images are loaded as pycaffe loads them: float32 in [0, 1], H×W×K, channels in RGB order
(so models trained on Caffe's BGR data use ``set_channel_swap(in_, (2, 1, 0))``), a gray
image tiled to 3 channels when colour is asked for, an alpha channel dropped. pycaffe used
scikit-image; decaffe decodes and resizes with OpenCV (bilinear by default), so resized
values can differ from scikit-image's in the last bits and at the borders.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Protocol

import cv2
import numpy as np

from ..errors import DataError, DecaffeError
from ..proto import caffe_pb2


class _Readable(Protocol):
    """A binary file-like object: what load_image reads besides paths."""

    def read(self) -> bytes: ...

__all__ = ["blobproto_to_array", "array_to_blobproto", "arraylist_to_blobprotovector_str",
           "blobprotovector_str_to_arraylist", "array_to_datum", "datum_to_array",
           "Transformer", "load_image", "resize_image", "oversample"]


class IOValueError(DecaffeError, ValueError):
    """A bad argument to a caffe.io function (a ValueError too, as pycaffe raised)."""


# ----------------------------------------------------------------------------------------------
# proto / datum / ndarray conversion
# ----------------------------------------------------------------------------------------------
def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as a float64 array of its shape (legacy 4-D N×C×H×W
    when any legacy dimension is set, else ``shape.dim``)."""
    values = blob.diff if return_diff else blob.data
    if not len(values):
        values = blob.double_diff if return_diff else blob.double_data
    data = np.array(values, dtype=np.float64)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if data.size != int(np.prod(shape)):
        raise IOValueError(f"BlobProto has {data.size} values for shape {shape}")
    return data.reshape(shape)


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    """A BlobProto with ``shape.dim`` = arr.shape and the values as floats (diff likewise)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(float).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist: Iterable[np.ndarray]) -> bytes:
    """A serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(a) for a in arraylist])
    return vec.SerializeToString()


# the name older pycaffe releases spelled it with
arraylist_to_blobprotovecor_str = arraylist_to_blobprotovector_str


def blobprotovector_str_to_arraylist(s: bytes) -> list[np.ndarray]:
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    try:
        vec.ParseFromString(s)
    except Exception as e:
        raise DataError(f"not a serialized BlobProtoVector: {e}") from None
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr: np.ndarray, label: int | None = None) -> caffe_pb2.Datum:
    """A Datum from a C×H×W array: uint8 arrays as raw bytes in ``data``, others as
    ``float_data``."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise IOValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(s) for s in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """A Datum's C×H×W array: uint8 from ``data``, float64 from ``float_data`` (the label is
    ``datum.label``)."""
    shape = (datum.channels, datum.height, datum.width)
    try:
        if len(datum.data):
            return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
        return np.array(datum.float_data, dtype=float).reshape(shape)
    except ValueError:
        n = max(len(datum.data), len(datum.float_data))
        raise IOValueError(f"Datum of shape {shape} holds {n} values") from None


# ----------------------------------------------------------------------------------------------
# Pre-processing
# ----------------------------------------------------------------------------------------------
class Transformer:
    """Prepares H×W×K images for a net's inputs and back (pycaffe's caffe.io.Transformer).

    ``inputs`` maps input names to their blob shapes (N, K, H, W). preprocess: to float32,
    resize to (H, W), transpose, channel swap, ×raw_scale, −mean, ×input_scale; deprocess
    undoes them in reverse order.
    """

    def __init__(self, inputs: dict) -> None:
        self.inputs = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
        self.transpose: dict = {}
        self.channel_swap: dict = {}
        self.raw_scale: dict = {}
        self.mean: dict = {}
        self.input_scale: dict = {}

    def __check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise IOValueError(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Format an H'×W'×K image as the K×H×W input ``in_`` expects."""
        self.__check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if tuple(caffe_in.shape[:2]) != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in = caffe_in * raw_scale
        if mean is not None:
            caffe_in = caffe_in - mean
        if input_scale is not None:
            caffe_in = caffe_in * input_scale
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Undo preprocess (except the resize): a K×H×W input back to an H×W×K image."""
        self.__check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in = decaf_in / input_scale
        if mean is not None:
            decaf_in = decaf_in + mean
        if raw_scale is not None:
            decaf_in = decaf_in / raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """The axis order taking an image to the input's layout, e.g. (2, 0, 1) for H×W×K."""
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise IOValueError("Transpose order needs to have the same number of dimensions "
                               "as the input.")
        self.transpose[in_] = order

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """The channel order after transposing, e.g. (2, 1, 0) for RGB to BGR."""
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise IOValueError("Channel swap needs to have the same number of dimensions as "
                               "the input channels.")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """The factor applied before the mean (255 for models trained on [0, 255] pixels)."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """The mean subtracted: one value per channel (K,), or a K×H'×W' (or H'×W') array,
        resized to the input's H×W when its size differs (BVLC master's pycaffe: the values
        are scaled to [0, 1], resized bilinearly by resize_image, and scaled back), e.g. the
        3×256×256 ImageNet mean for a 3×227×227 input. Raises IOValueError (a ValueError)
        for a channel count other than the input's or a mean of other than 1 to 3 axes."""
        self.__check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise IOValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise IOValueError("Mean shape invalid")
            in_shape = self.inputs[in_][1:]
            if tuple(ms) != in_shape:
                if len(in_shape) != 3 or ms[0] != in_shape[0]:
                    raise IOValueError(f"Mean shape incompatible with input shape: mean "
                                       f"{tuple(ms)}, input {in_shape}")
                mean = _resize_mean(mean.reshape(ms), in_shape[1:])
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """The factor applied after the mean."""
        self.__check_input(in_)
        self.input_scale[in_] = scale


def _resize_mean(mean: np.ndarray, new_dims: Sequence[int]) -> np.ndarray:
    """A K×H'×W' mean resized to K×new_dims as BVLC master's set_mean does: scaled to [0, 1]
    by its own min and max, resized as an image, scaled back."""
    m_min, m_max = float(mean.min()), float(mean.max())
    if not m_max > m_min:  # a constant mean stays constant
        return np.full((mean.shape[0],) + tuple(new_dims), m_min, dtype=mean.dtype)
    normal = (mean - m_min) / (m_max - m_min)
    resized = resize_image(normal.transpose((1, 2, 0)), new_dims).transpose((2, 0, 1))
    return resized * (m_max - m_min) + m_min


# ----------------------------------------------------------------------------------------------
# Image IO
# ----------------------------------------------------------------------------------------------
_GRAY = np.array([0.2125, 0.7154, 0.0721], np.float64)  # pycaffe's gray (R, G, B weights)


def load_image(filename: str | bytes | os.PathLike[str] | _Readable,
               color: bool = True) -> np.ndarray:
    """An image as float32 in [0, 1]: H×W×3 RGB (color) or H×W×1 intensity.

    filename is a path (str or os.PathLike) or a binary file-like object (anything with
    ``read()``, e.g. io.BytesIO of a downloaded JPEG), as scikit-image's imread, which pycaffe
    used, accepts. Raises DataError for an unreadable or undecodable image."""
    if hasattr(filename, "read"):
        return _decoded(_decode(filename.read(), _describe(filename)), color)
    if isinstance(filename, (bytes, os.PathLike)):
        filename = os.fsdecode(filename)
    if not isinstance(filename, str):
        raise IOValueError(f"load_image takes a path or a file-like object, not "
                           f"{type(filename).__name__}")
    img = cv2.imread(filename, cv2.IMREAD_UNCHANGED)
    if img is None:
        try:
            with open(filename, "rb") as f:
                img = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_UNCHANGED)
        except OSError as e:
            raise DataError(f"cannot read image '{filename}': {e.strerror or e}") from None
        if img is None:
            raise DataError(f"cannot decode image '{filename}'")
    return _decoded(img, color)


def _describe(f: _Readable) -> str:
    name = getattr(f, "name", None)
    return f"'{name}'" if isinstance(name, str) else f"from a {type(f).__name__}"


def _decode(data: object, where: str) -> np.ndarray:
    if isinstance(data, str):
        raise IOValueError(f"cannot read image {where}: the file-like object gives text; "
                           "open it in binary mode")
    try:
        buf = np.frombuffer(memoryview(data), np.uint8)
    except TypeError:
        raise IOValueError(f"cannot read image {where}: read() gave "
                           f"{type(data).__name__}, not bytes") from None
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise DataError(f"cannot decode image {where}")
    return img


def _decoded(img: np.ndarray, color: bool) -> np.ndarray:
    """A decoded OpenCV image (BGR(A) or gray, any depth) as pycaffe's float image."""
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    else:
        scale = 1.0
    img = img.astype(np.float64) / scale
    if img.ndim == 3:
        # gray (with alpha) to H×W; BGR(A) to RGB, alpha dropped
        img = img[:, :, 0] if img.shape[2] <= 2 else img[:, :, [2, 1, 0]]
    if not color and img.ndim == 3:
        img = img @ _GRAY
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return img


_INTERP = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 2: cv2.INTER_CUBIC, 3: cv2.INTER_CUBIC,
           4: cv2.INTER_LANCZOS4, 5: cv2.INTER_LANCZOS4}


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """An H×W×K image resized to new_dims = (height, width), keeping K; float32."""
    h, w = (int(d) for d in new_dims[:2])
    im = np.asarray(im)
    if im.ndim != 3:
        raise IOValueError(f"resize_image needs an H x W x K image, not shape {im.shape}")
    if h <= 0 or w <= 0:
        raise IOValueError(f"cannot resize to {h}x{w}")
    im_min, im_max = im.min(), im.max()
    if not im_max > im_min:
        # a constant image stays constant
        return np.full((h, w, im.shape[-1]), im_min, dtype=np.float32)
    src = np.ascontiguousarray(im, dtype=np.float32)
    k = src.shape[2]
    if k <= 4:
        out = cv2.resize(src, (w, h), interpolation=_INTERP.get(interp_order, cv2.INTER_LINEAR))
    else:  # OpenCV resizes at most 4 channels at a time
        out = np.concatenate([cv2.resize(src[:, :, i:i + 4], (w, h),
                                         interpolation=_INTERP.get(interp_order,
                                                                   cv2.INTER_LINEAR)
                                         ).reshape(h, w, -1) for i in range(0, k, 4)], axis=2)
    return out.reshape(h, w, k).astype(np.float32, copy=False)


def oversample(images: Sequence[np.ndarray] | np.ndarray, crop_dims: Sequence[int]) -> np.ndarray:
    """The four corner crops and the centre crop of each H×W×K image, then their mirror
    images: 10·N crops, float32 (pycaffe's oversample)."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = np.empty((5, 4), dtype=int)
    curr = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[curr] = (i, j, i + crop_dims[0], j + crop_dims[1])
            curr += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0,
                                                               crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]),
                     dtype=np.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]  # the last five mirrored
    return crops

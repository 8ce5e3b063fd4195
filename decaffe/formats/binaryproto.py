""".binaryproto files: one serialized BlobProto, most often a mean image.

Caffe's tools write mean files with the legacy num/channels/height/width fields
(``compute_image_mean``); pycaffe's ``caffe.io.array_to_blobproto`` writes ``shape``.
Reading accepts both (the legacy fields win when any is present, as in Blob::FromProto).
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

from ..errors import DecaffeError, FormatError
from ..proto import caffe_pb2
from . import wire
from .atomic import atomic_write
from .weights import (
    _read_bytes,
    _write_pieces,
    blobproto_message_to_record,
    encode_blob,
    parse_blob,
)

__all__ = ["read_blobproto", "write_blobproto", "blobproto_to_array", "array_to_blobproto"]


def read_blobproto(path: str, return_diff: bool = False) -> np.ndarray:
    """The array stored in a .binaryproto file, shaped by ``shape`` or by the legacy
    (num, channels, height, width).  Values are float32 as Caffe's Blob<float> reads them
    (float64 when the file stores ``double_data``).  With return_diff, the stored diff."""
    path = os.fspath(path)
    data = _read_bytes(path)
    if not data:
        raise FormatError(f"{path}: the file is empty")
    rec = parse_blob(data, path)
    if return_diff:
        if rec.diff is None:
            raise FormatError(f"{path}: the blob stores no diff")
        return rec.diff
    return rec.array


def write_blobproto(array: npt.ArrayLike, path: str, diff: npt.ArrayLike | None = None,
                    legacy: bool = False) -> None:
    """Write array as a BlobProto file, atomically: ``shape`` and float32 ``data`` as
    pycaffe writes it, or with legacy=True the num/channels/height/width fields Caffe's
    compute_image_mean writes (fewer than 4 axes are padded with leading 1s)."""
    arr = np.asarray(array)
    if arr.dtype == np.float64:
        # pycaffe stores float values; double_data is only for double blobs
        arr = arr.astype(np.float32)
    pieces = encode_blob(arr, None if diff is None else np.asarray(diff, dtype=np.float32),
                         legacy=legacy)
    with atomic_write(os.fspath(path), "wb") as f:
        _write_pieces(f, pieces)


def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """pycaffe's caffe.io.blobproto_to_array: the blob's data (or diff) reshaped by the
    legacy 4-D fields when any is set, else by ``shape``.  As in pycaffe the result is
    float64 (the float32 values widened exactly)."""
    try:
        rec = blobproto_message_to_record(blob)
    except wire.Corrupt as e:
        raise FormatError(f"BlobProto: {e}") from None
    if return_diff:
        if rec.diff is None:
            # pycaffe reshapes an empty diff, which fails unless the blob is empty
            if rec.array.size:
                raise FormatError("BlobProto: the blob stores no diff")
            return np.zeros(rec.array.shape, dtype=np.float64)
        return rec.diff.astype(np.float64)
    return rec.array.astype(np.float64)


def array_to_blobproto(arr: npt.ArrayLike,
                       diff: npt.ArrayLike | None = None) -> caffe_pb2.BlobProto:
    """pycaffe's caffe.io.array_to_blobproto: a BlobProto with ``shape`` = arr.shape and the
    values as float ``data`` (and ``diff`` when given, which must have as many values)."""
    a = np.asarray(arr)
    # pycaffe goes through Python floats (float64) before protobuf rounds to float32
    values = a.astype(np.float64).astype(np.float32)
    d = None
    if diff is not None:
        d = np.asarray(diff).astype(np.float64).astype(np.float32)
        if d.size != values.size:
            raise DecaffeError(f"array_to_blobproto: diff has {d.size} values, the array "
                               f"{values.size}")
        d = d.reshape(values.shape)
    # build the wire bytes and let protobuf parse them: no Python float per value
    pieces = encode_blob(values, d)
    msg = caffe_pb2.BlobProto()
    msg.ParseFromString(b"".join(p.tobytes() if isinstance(p, np.ndarray) else p
                                 for p in pieces))
    return msg

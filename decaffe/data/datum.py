"""Datum records and images, read and written as Caffe's io utilities do.

A Datum holds one C×H×W example: raw uint8 pixels in ``data`` (channel-major, BGR for
colour images), or floats in ``float_data``, or (``encoded``) the bytes of a JPEG/PNG file
in ``data``; plus an integer ``label``. Images are decoded and resized through OpenCV as
Caffe does: BGR channel order, ``cv::resize`` with bilinear interpolation, colour or
grayscale decoding chosen by flags.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from google.protobuf.message import DecodeError

from ..errors import DataError
from ..proto import caffe_pb2

Datum = caffe_pb2.Datum


def record_name(key: bytes | str | None, source: str | None = None) -> str:
    """'record KEY of SOURCE', for error messages."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "backslashreplace")
    where = f"record '{key}'" if key is not None else "a record"
    return f"{where} of '{source}'" if source else where


def parse_datum(value: bytes, key: bytes | str | None = None, source: str | None = None) -> Datum:
    """A Datum from its serialized bytes; a DataError naming the record if they don't parse."""
    d = Datum()
    try:
        d.ParseFromString(value)
    except (DecodeError, TypeError, ValueError) as e:
        raise DataError(f"{record_name(key, source)} is not a Datum: {e}") from None
    return d


def hwc_to_chw(img: np.ndarray) -> np.ndarray:
    """An OpenCV image (H×W or H×W×C) as a C×H×W array (a view where possible)."""
    if img.ndim == 2:
        return img[None]
    return img.transpose(2, 0, 1)


def decode_image_bytes(buf: bytes | np.ndarray, color: bool | None) -> np.ndarray | None:
    """Decode encoded image bytes as Caffe does: color True -> 3-channel BGR, False ->
    grayscale, None -> as stored (DecodeDatumToCVMatNative). None when undecodable."""
    flag = cv2.IMREAD_UNCHANGED if color is None else (
        cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    arr = np.frombuffer(buf, np.uint8) if isinstance(buf, (bytes, bytearray, memoryview)) else buf
    if arr.size == 0:
        return None
    try:
        return cv2.imdecode(arr, flag)
    except cv2.error:
        return None


def _check_depth(img: np.ndarray, what: str) -> None:
    # Caffe's CVMatToDatum and the transformer accept 8-bit images only.
    if img.dtype != np.uint8:
        raise DataError(f"{what}: image data type must be unsigned byte, the image has "
                        f"{img.dtype}")


def datum_array(d: Datum, key: bytes | str | None = None, source: str | None = None,
                color: bool | None = None) -> np.ndarray:
    """The C×H×W array a Datum holds: uint8 for raw or encoded data, float32 for float_data.

    Encoded datums are decoded with ``color`` (None: native channels; True/False:
    force colour/gray), as the transformer's force_color/force_gray ask.
    """
    if d.encoded:
        img = decode_image_bytes(d.data, color)
        if img is None:
            raise DataError(f"{record_name(key, source)}: could not decode the encoded image "
                            f"({len(d.data)} bytes)")
        _check_depth(img, record_name(key, source))
        return hwc_to_chw(img)
    c, h, w = d.channels, d.height, d.width
    if c <= 0 or h <= 0 or w <= 0:
        raise DataError(f"{record_name(key, source)}: Datum shape {c}x{h}x{w} is not positive")
    n = c * h * w
    if len(d.data):
        if len(d.data) != n:
            raise DataError(f"{record_name(key, source)}: {len(d.data)} data bytes for a "
                            f"{c}x{h}x{w} Datum ({n} expected)")
        return np.frombuffer(d.data, np.uint8).reshape(c, h, w)
    if len(d.float_data) != n:
        raise DataError(f"{record_name(key, source)}: {len(d.float_data)} float_data values "
                        f"for a {c}x{h}x{w} Datum ({n} expected)")
    return np.asarray(d.float_data, np.float32).reshape(c, h, w)


def read_image(path: str, height: int = 0, width: int = 0, is_color: bool = True
               ) -> np.ndarray | None:
    """Caffe's ReadImageToCVMat: an H×W×3 BGR (or H×W gray) uint8 image, resized with
    bilinear interpolation when height and width are both positive; None if unreadable."""
    flag = cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE
    if not os.path.isfile(path):
        return None  # (OpenCV would print its own warning)
    try:
        img = cv2.imread(path, flag)
    except cv2.error:
        img = None
    if img is None:
        # cv2.imread refuses some paths it cannot represent; read the bytes ourselves.
        try:
            with open(path, "rb") as f:
                img = decode_image_bytes(f.read(), is_color)
        except OSError:
            return None
    if img is None:
        return None
    if height > 0 and width > 0:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return img


def image_to_datum(img: np.ndarray, label: int = 0) -> Datum:
    """Caffe's CVMatToDatum: raw uint8 C×H×W pixels, encoded explicitly false."""
    _check_depth(img, "CVMatToDatum")
    chw = np.ascontiguousarray(hwc_to_chw(img))
    d = Datum()
    d.channels, d.height, d.width = (int(s) for s in chw.shape)
    d.data = chw.tobytes()
    d.label = int(label)
    d.encoded = False
    return d


def _ext_matches(filename: str, encoding: str) -> bool:
    ext = os.path.splitext(filename)[1][1:].lower()
    enc = encoding.lower()
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def read_image_to_datum(path: str, label: int, height: int = 0, width: int = 0,
                        is_color: bool = True, encoding: str = "") -> Datum | None:
    """Caffe's ReadImageToDatum: raw pixels, or (encoding given) the image encoded in that
    format — the file's own bytes when nothing would change them. None if unreadable."""
    img = read_image(path, height, width, is_color)
    if img is None:
        return None
    if encoding:
        channels = 1 if img.ndim == 2 else img.shape[2]
        d = Datum()
        if (channels == 3) == is_color and not height and not width and \
                _ext_matches(path, encoding):
            with open(path, "rb") as f:
                d.data = f.read()
        else:
            ok, buf = cv2.imencode("." + encoding, img)
            if not ok:
                raise DataError(f"{path}: OpenCV cannot encode as '{encoding}'")
            d.data = buf.tobytes()
        d.label = int(label)
        d.encoded = True
        return d
    return image_to_datum(img, label)

"""Caffe's weight files: ``.caffemodel`` (a binary NetParameter) and Caffe's HDF5 layout.

A caffemodel is a NetParameter whose layers carry their parameter blobs (BlobProto: float
values as one packed run of little-endian float32).  Building a Python float for each of a
model's hundreds of millions of values is what makes protobuf's generic parser slow, so the
reader here walks the protobuf wire format itself down to the blobs and hands each packed
payload to ``numpy.frombuffer``; only the small per-layer parameters go through protobuf.
Unusual encodings (non-packed repeated floats, V0 nets whose blobs sit inside the nested
``layer`` message) fall back to protobuf's parser.

Semantics follow Caffe:

- Loading upgrades as ``ReadNetParamsFromBinaryFileOrDie`` does: V1 ``layers`` become
  layers with the same names and blobs (a file with ``layer`` entries beside them is
  refused, as Caffe 1.0 refuses it), V0 nets
  are upgraded through :mod:`decaffe.formats.upgrade`, old input fields become an ``Input``
  layer named "input".
- A blob's shape is ``shape.dim`` or, when any of num/channels/height/width is present, the
  legacy 4-D (num, channels, height, width); ``double_data`` wins over ``data``
  (Blob::FromProto).  :func:`shapes_match` is Blob::ShapeEquals.
- Writing (:func:`save_caffemodel`) produces the bytes C++ protobuf serializes for
  Net::ToProto: fields in number order, each float blob as ``data`` then ``shape``.
- HDF5 (Net::ToHDF5): group ``data`` (and ``diff``), one subgroup per layer, datasets
  ``"0"``, ``"1"``, ... per blob.

Every failure to read a file raises :class:`~decaffe.errors.FormatError` naming the file
and, where known, the layer and blob.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor as _pbdescriptor
from google.protobuf import message as _pbmessage

from .. import log
from ..errors import DecaffeError, FormatError
from ..proto import caffe_pb2
from . import upgrade, wire
from .atomic import atomic_path, atomic_write
from .upgrade import V1_LAYER_TYPES

if TYPE_CHECKING:
    import h5py

# A file's bytes as read: bytes, or a read-only mmap of it (_map_file), or a view
Buffer = bytes | bytearray | memoryview | mmap.mmap

__all__ = [
    "BlobRecord", "RawBlob", "RawLayer", "RawCaffemodel", "load_weights", "shapes_match",
    "save_caffemodel", "load_hdf5", "save_hdf5", "read_caffemodel_raw",
    "write_caffemodel_raw", "read_message", "write_message", "parse_blob",
    "encode_blob", "MAX_BLOB_AXES",
]

MAX_BLOB_AXES = 32  # Caffe's kMaxBlobAxes

_F4 = np.dtype("<f4")
_F8 = np.dtype("<f8")
_LITTLE = sys.byteorder == "little"

# field numbers
_NET_LAYERS_V1, _NET_LAYER = 2, 100
_V2_BLOBS, _V1_BLOBS = 7, 6
_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH = 1, 2, 3, 4
_B_DATA, _B_DIFF, _B_SHAPE, _B_DDATA, _B_DDIFF = 5, 6, 7, 8, 9


@dataclass(eq=False)
class BlobRecord:
    """One parameter blob as stored: ``array`` has the stored shape (float32, or float64
    for ``double_data``); ``legacy`` is True when the shape came from the deprecated
    num/channels/height/width fields (Caffe then matches it against the last four axes of
    the target); ``diff`` is the stored gradient, if any."""

    array: np.ndarray
    legacy: bool = False
    diff: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Blobs
# ---------------------------------------------------------------------------------------------
class _BlobSpans:
    """Where a BlobProto's parts lie in the buffer (before any copy)."""

    __slots__ = ("legacy", "dims", "data", "diff", "ddata", "ddiff")

    def __init__(self) -> None:
        self.legacy: dict[int, int] = {}
        self.dims: list[int] = []
        self.data: list[tuple[int, int]] = []
        self.diff: list[tuple[int, int]] = []
        self.ddata: list[tuple[int, int]] = []
        self.ddiff: list[tuple[int, int]] = []


def _scan_blob(buf: Buffer, pos: int, end: int) -> _BlobSpans:
    s = _BlobSpans()
    packed = {_B_DATA: (s.data, 4), _B_DIFF: (s.diff, 4), _B_DDATA: (s.ddata, 8),
              _B_DDIFF: (s.ddiff, 8)}
    for number, wt, value, _, _ in wire.fields(buf, pos, end):
        if number in packed:
            spans, size = packed[number]
            if wt != wire.LEN:
                raise wire.Unusual("non-packed repeated values")
            a, b = value
            if (b - a) % size:
                raise wire.Corrupt(f"corrupt: a packed run of {b - a} bytes is not a whole "
                                    f"number of {size}-byte values")
            spans.append(value)
        elif number in (_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH):
            if wt != wire.VARINT:
                raise wire.Corrupt(f"corrupt: field {number} of a blob has wire type {wt}")
            s.legacy[number] = wire.int32(value)  # last one wins, as protobuf does
        elif number == _B_SHAPE:
            if wt != wire.LEN:
                raise wire.Corrupt("corrupt: a blob's shape is not a message")
            # a repeated singular message merges: dims accumulate
            for n2, w2, v2, _, _ in wire.fields(buf, value[0], value[1]):
                if n2 != 1:
                    continue
                if w2 == wire.VARINT:
                    s.dims.append(wire.int64(v2))
                elif w2 == wire.LEN:
                    p, e = v2
                    while p < e:
                        d, p = wire.decode_varint(buf, p, e)
                        s.dims.append(wire.int64(d))
                else:
                    raise wire.Corrupt(f"corrupt: a shape dim has wire type {w2}")
    return s


def _gather(buf: Buffer, spans: list[tuple[int, int]], dtype: np.dtype, copy: bool) -> np.ndarray:
    itemsize = dtype.itemsize
    if len(spans) == 1:
        a, b = spans[0]
        arr = np.frombuffer(buf, dtype=dtype, count=(b - a) // itemsize, offset=a)
        if copy or not _LITTLE:
            arr = arr.astype(dtype.newbyteorder("="), copy=True)
        return arr
    total = sum(b - a for a, b in spans) // itemsize
    out = np.empty(total, dtype=dtype.newbyteorder("="))
    k = 0
    for a, b in spans:
        n = (b - a) // itemsize
        out[k:k + n] = np.frombuffer(buf, dtype=dtype, count=n, offset=a)
        k += n
    return out


def _blob_shape(s: _BlobSpans) -> tuple[tuple[int, ...], bool]:
    if s.legacy:
        shape = tuple(s.legacy.get(k, 0) for k in (_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH))
        return shape, True
    return tuple(s.dims), False


def _check_shape(shape: tuple[int, ...]) -> int:
    if len(shape) > MAX_BLOB_AXES:
        raise wire.Corrupt(f"a blob has {len(shape)} axes; Caffe allows at most {MAX_BLOB_AXES}")
    if any(d < 0 for d in shape):
        raise wire.Corrupt(f"a blob has a negative dimension in its shape {shape}")
    count = 1
    for d in shape:
        count *= d
    if count > 2**31 - 1:  # Caffe's Blob::Reshape refuses it (blob size exceeds INT_MAX)
        raise wire.Corrupt(f"a blob's shape {shape} has more than INT_MAX elements")
    return count


def _blob_from_spans(buf: Buffer, s: _BlobSpans, copy: bool,
                     cls: type[BlobRecord] = BlobRecord) -> BlobRecord:
    shape, legacy = _blob_shape(s)
    count = _check_shape(shape)
    if s.ddata:
        values, what = _gather(buf, s.ddata, _F8, copy), "double_data"
    else:
        values, what = _gather(buf, s.data, _F4, copy), "data"
    if values.size != count:
        raise wire.Corrupt(f"its shape {shape} holds {count} values but it stores {values.size} "
                            f"{what} values")
    diff = None
    if s.ddiff or s.diff:
        diff, what = ((_gather(buf, s.ddiff, _F8, copy), "double_diff") if s.ddiff
                      else (_gather(buf, s.diff, _F4, copy), "diff"))
        if diff.size != count:
            raise wire.Corrupt(f"its shape {shape} holds {count} values but it stores "
                                f"{diff.size} {what} values")
        diff = diff.reshape(shape)
    return cls(values.reshape(shape), legacy, diff)


def _blob_via_protobuf(raw: bytes, copy: bool,
                       cls: type[BlobRecord] = BlobRecord) -> BlobRecord:
    """Slow path for blobs in unusual encodings: protobuf parses, numpy converts."""
    try:
        msg = caffe_pb2.BlobProto.FromString(bytes(raw))
    except _pbmessage.DecodeError as e:
        raise wire.Corrupt(f"corrupt blob: {e}") from None
    return blobproto_message_to_record(msg, cls)


def blobproto_message_to_record(msg: caffe_pb2.BlobProto,
                                cls: type[BlobRecord] = BlobRecord) -> BlobRecord:
    """A BlobRecord from a parsed BlobProto message (Blob::FromProto's shape rules)."""
    s = _BlobSpans()
    for k, name in ((_B_NUM, "num"), (_B_CHANNELS, "channels"), (_B_HEIGHT, "height"),
                    (_B_WIDTH, "width")):
        if msg.HasField(name):
            s.legacy[k] = getattr(msg, name)
    s.dims = list(msg.shape.dim)
    shape, legacy = _blob_shape(s)
    count = _check_shape(shape)

    def arr(values: Sequence[float], dtype: npt.DTypeLike, what: str) -> np.ndarray:
        a = np.array(values, dtype=dtype)
        if a.size != count:
            raise wire.Corrupt(f"its shape {shape} holds {count} values but it stores {a.size} "
                                f"{what} values")
        return a.reshape(shape)

    data = (arr(msg.double_data, np.float64, "double_data") if len(msg.double_data)
            else arr(msg.data, np.float32, "data"))
    diff = None
    if len(msg.double_diff):
        diff = arr(msg.double_diff, np.float64, "double_diff")
    elif len(msg.diff):
        diff = arr(msg.diff, np.float32, "diff")
    return cls(data, legacy, diff)


def _parse_blob_at(buf: Buffer, a: int, b: int, copy: bool,
                   cls: type[BlobRecord] = BlobRecord) -> BlobRecord:
    try:
        spans = _scan_blob(buf, a, b)
    except wire.Unusual:
        return _blob_via_protobuf(buf[a:b], copy, cls)
    return _blob_from_spans(buf, spans, copy, cls)


def parse_blob(data: bytes, where: str = "<blob>") -> BlobRecord:
    """A BlobRecord from a serialized BlobProto (a .binaryproto's contents)."""
    try:
        return _parse_blob_at(data, 0, len(data), copy=True)
    except wire.Corrupt as e:
        raise FormatError(f"{where}: {e}") from None


def encode_blob(array: np.ndarray, diff: np.ndarray | None = None,
                legacy: bool = False) -> list:
    """The pieces (bytes and arrays, in order) of a BlobProto as Caffe's Blob::ToProto
    writes it: ``data`` and ``diff`` (when given) then ``shape`` for float blobs, ``shape``
    then ``double_data``/``double_diff`` for float64 ones; with legacy=True,
    num/channels/height/width instead of ``shape``."""
    array = np.asarray(array)
    dtype = _F8 if array.dtype == np.float64 else _F4
    data_field, diff_field = (_B_DDATA, _B_DDIFF) if dtype == _F8 else (_B_DATA, _B_DIFF)
    pieces: list = []
    shape = array.shape
    if legacy:
        if array.ndim > 4:
            raise DecaffeError(f"a legacy (num, channels, height, width) blob cannot have "
                               f"{array.ndim} axes")
        dims4 = (1,) * (4 - array.ndim) + tuple(shape)
        for number, d in zip((_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH), dims4):
            pieces.append(wire.tag(number, wire.VARINT) + wire.encode_varint(wire.int32(int(d))))
    values: list = []
    flat = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    if flat.size:
        values += [wire.tag(data_field, wire.LEN) + wire.encode_varint(flat.nbytes), flat]
    if diff is not None:
        d = np.ascontiguousarray(diff, dtype=dtype).reshape(-1)
        if d.size != flat.size:
            raise DecaffeError(f"diff has {d.size} values but the data has {flat.size}")
        if d.size:
            values += [wire.tag(diff_field, wire.LEN) + wire.encode_varint(d.nbytes), d]
    shape_piece = []
    if not legacy and len(shape):
        dims = b"".join(wire.encode_varint(int(x)) for x in shape)
        inner = wire.tag(1, wire.LEN) + wire.encode_varint(len(dims)) + dims
        shape_piece = [wire.tag(_B_SHAPE, wire.LEN) + wire.encode_varint(len(inner)) + inner]
    # fields go in number order: data 5, diff 6, shape 7, double_data 8, double_diff 9
    if dtype == _F8:
        return pieces + shape_piece + values
    return pieces + values + shape_piece


def _pieces_size(pieces: Iterable) -> int:
    return sum(p.nbytes if isinstance(p, np.ndarray) else len(p) for p in pieces)


def _write_pieces(f: BinaryIO, pieces: Iterable) -> None:
    for p in pieces:
        if isinstance(p, np.ndarray):
            f.write(memoryview(p).cast("B"))
        else:
            f.write(p)


def shapes_match(target_shape: Sequence[int], source_shape: Sequence[int],
                 legacy: bool) -> bool:
    """Caffe's Blob::ShapeEquals.  A legacy source shape (num, channels, height, width)
    matches a target of at most 4 axes whose shape, padded with leading 1s to 4 axes,
    equals it (old biases were 1x1x1xN, old weights 1x1xMxN); otherwise the shapes must be
    equal."""
    target = tuple(int(d) for d in target_shape)
    source = tuple(int(d) for d in source_shape)
    if legacy:
        if len(target) > 4 or len(source) != 4:
            return False
        return (1,) * (4 - len(target)) + target == source
    return target == source


# ---------------------------------------------------------------------------------------------
# Whole files: a raw, re-writable view of a caffemodel
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class RawBlob(BlobRecord):
    """A blob of a :class:`RawCaffemodel`.  Its arrays are read-only views of the file's
    bytes; assign new arrays to ``array``/``diff`` to change the blob."""

    _span: tuple[int, int] = (0, 0)
    _orig: tuple = ()

    def changed(self) -> bool:
        a, d, legacy = self._orig
        return self.array is not a or self.diff is not d or self.legacy != legacy


@dataclass(eq=False)
class RawLayer:
    """One layer of a :class:`RawCaffemodel`: ``version`` 2 for ``layer`` entries, 1 for V1
    ``layers``; ``param`` is the layer without its blobs (LayerParameter or
    V1LayerParameter); ``blobs`` are its blobs in order."""

    name: str
    version: int
    param: object
    blobs: list[RawBlob]
    _span: tuple[int, int] = (0, 0)
    # the layer's own fields in order: ("raw", start, stop) or ("blob", index)
    _parts: list = field(default_factory=list)

    @property
    def type(self) -> str:
        if self.version == 2:
            return self.param.type
        return V1_LAYER_TYPES.get(self.param.type, "")

    def changed(self) -> bool:
        return any(b.changed() for b in self.blobs)


class RawCaffemodel:
    """A caffemodel as read, keeping its bytes: :func:`write_caffemodel_raw` writes it back
    byte for byte, re-encoding only the layers whose blobs were replaced."""

    def __init__(self, data: bytes, header: caffe_pb2.NetParameter, layers: list[RawLayer],
                 parts: list, source: str) -> None:
        self._data = data
        self.header = header  # the NetParameter without its layers
        self.layers = layers
        self._parts = parts  # ("raw", start, stop) or ("layer", index)
        self.source = source

    @property
    def name(self) -> str:
        return self.header.name

    def records(self) -> list[tuple[str, list[BlobRecord]]]:
        """(layer name, blobs) for every layer, in file order (no upgrade applied)."""
        return [(lay.name, list(lay.blobs)) for lay in self.layers]


def _no_nul(path: str) -> str:
    if "\0" in path:
        raise FormatError(f"{path!r}: the path holds a NUL byte")
    return path


_H5_ERRORS = (KeyError, RuntimeError, TypeError, ValueError, OSError, AttributeError,
              IndexError, OverflowError)  # what h5py raises on a damaged file


def h5_array(ds: h5py.Dataset | h5py.Group, path: str, where: str, kinds: str = "fiub",
             expected: str = "a float or integer array") -> np.ndarray:
    """A dataset's values after checking, before reading, that it is a dataset of the
    expected kind whose size Caffe could hold (INT_MAX elements) and memory can; any
    failure is a FormatError naming the file, the dataset and what was expected."""
    import h5py  # h5py loads libhdf5: only .h5 weights need it, the file tools start without it

    # blob imports torch: the file tools read caffemodels without it
    from ..blob import check_memory, check_shape

    if not isinstance(ds, h5py.Dataset):
        raise FormatError(f"{path}: {where} is a group; expected {expected}")
    try:
        dtype, shape = ds.dtype, tuple(ds.shape)
    except _H5_ERRORS as e:
        raise FormatError(f"{path}: {where} cannot be read ({type(e).__name__}: {e}); "
                          f"expected {expected}") from None
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise FormatError(f"{path}: {where} has type {dtype}; expected {expected}")
    try:
        check_memory(check_shape(shape, f"{path}: {where}"), max(4, dtype.itemsize), "cpu",
                     f"{path}: {where}")
    except FormatError:
        raise
    except DecaffeError as e:
        raise FormatError(str(e)) from None
    try:
        return np.asarray(ds[()])
    except _H5_ERRORS as e:
        raise FormatError(f"{path}: {where} (shape {shape}, type {dtype}) cannot be read "
                          f"({type(e).__name__}: {e})") from None


def _read_bytes(path: str) -> bytes:
    path = _no_nul(os.fspath(path))
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read: {e.strerror}") from None


def _layer_label(name: str | None, index: int) -> str:
    return f"layer '{name}' (#{index})" if name else f"layer #{index}"


def _scan_layer(buf: Buffer, a: int, b: int, version: int, index: int, path: str,
                copy: bool, blob_cls: type[BlobRecord]) -> tuple[str, object, list, list]:
    """Split a layer into its small fields (parsed by protobuf) and its blobs (read fast)."""
    blob_field = _V2_BLOBS if version == 2 else _V1_BLOBS
    cls = caffe_pb2.LayerParameter if version == 2 else caffe_pb2.V1LayerParameter
    label = _layer_label(None, index)
    parts: list = []
    blob_spans: list[tuple[int, int]] = []
    small: list[bytes] = []
    name_field = 1 if version == 2 else 4
    try:
        for number, wt, value, start, stop in wire.fields(buf, a, b):
            if number == blob_field and wt == wire.LEN:
                parts.append(("blob", len(blob_spans)))
                blob_spans.append(value)
            else:
                parts.append(("raw", start, stop))
                small.append(buf[start:stop])
                if number == name_field and wt == wire.LEN:
                    # name the layer in errors about the rest of it
                    label = _layer_label(bytes(buf[value[0]:value[1]]).decode(
                        "utf-8", "replace"), index)
    except wire.Corrupt as e:
        raise FormatError(f"{path}: {label}: {e}") from None
    try:
        param = cls.FromString(b"".join(small))
    except _pbmessage.DecodeError as e:
        raise FormatError(f"{path}: {label}: corrupt layer parameters: {e}") from None
    if version == 1 and param.HasField("layer"):
        raise wire.Unusual("V0 layer")
    name = param.name
    label = _layer_label(name, index)
    blobs = []
    for k, (p, q) in enumerate(blob_spans):
        try:
            rec = _parse_blob_at(buf, p, q, copy, blob_cls)
        except wire.Corrupt as e:
            raise FormatError(f"{path}: {label}, blob {k}: {e}") from None
        if blob_cls is RawBlob:
            rec._span = (p, q)
            rec._orig = (rec.array, rec.diff, rec.legacy)
        blobs.append(rec)
    return name, param, blobs, parts


def _scan_net(buf: Buffer, path: str, copy: bool, blob_cls: type[BlobRecord]):
    """(header NetParameter, [(version, name, param, blobs, span, parts)], top-level parts)."""
    end = len(buf)
    layers = []
    parts: list = []
    header_bytes: list[bytes] = []
    try:
        for number, wt, value, start, stop in wire.fields(buf, 0, end):
            if number in (_NET_LAYER, _NET_LAYERS_V1) and wt == wire.LEN:
                version = 2 if number == _NET_LAYER else 1
                name, param, blobs, lparts = _scan_layer(buf, value[0], value[1], version,
                                                         len(layers), path, copy, blob_cls)
                parts.append(("layer", len(layers)))
                layers.append((version, name, param, blobs, (start, stop), lparts))
            else:
                parts.append(("raw", start, stop))
                header_bytes.append(buf[start:stop])
    except wire.Corrupt as e:
        where = f", after {len(layers)} layers" if layers else ""
        raise FormatError(f"{path}: not a valid caffemodel{where}: {e}") from None
    try:
        header = caffe_pb2.NetParameter.FromString(b"".join(header_bytes))
    except _pbmessage.DecodeError as e:
        raise FormatError(f"{path}: corrupt net parameters: {e}") from None
    return header, layers, parts


def read_caffemodel_raw(path: str) -> RawCaffemodel:
    """Read a caffemodel keeping its bytes (see :class:`RawCaffemodel`)."""
    path = os.fspath(path)
    data = _read_bytes(path)
    if not data:
        raise FormatError(f"{path}: the file is empty")
    try:
        header, layers, parts = _scan_net(data, path, copy=False, blob_cls=RawBlob)
    except wire.Unusual:
        raise FormatError(f"{path}: the raw reader does not handle this encoding (V0 "
                          "layers or protobuf groups); use load_weights") from None
    raw_layers = [RawLayer(name, version, param, blobs, span, lparts)
                  for version, name, param, blobs, span, lparts in layers]
    return RawCaffemodel(data, header, raw_layers, parts, path)


def _raw_layer_pieces(model: RawCaffemodel, layer: RawLayer) -> list:
    data = model._data
    if not layer.changed():
        a, b = layer._span
        return [memoryview(data)[a:b]]
    body: list = []
    blob_field = _V2_BLOBS if layer.version == 2 else _V1_BLOBS
    for part in layer._parts:
        if part[0] == "raw":
            body.append(memoryview(data)[part[1]:part[2]])
            continue
        blob = layer.blobs[part[1]]
        if blob.changed():
            inner = encode_blob(blob.array, blob.diff, blob.legacy)
        else:
            inner = [memoryview(data)[blob._span[0]:blob._span[1]]]
        body.append(wire.tag(blob_field, wire.LEN) + wire.encode_varint(_pieces_size(inner)))
        body.extend(inner)
    number = _NET_LAYER if layer.version == 2 else _NET_LAYERS_V1
    return [wire.tag(number, wire.LEN) + wire.encode_varint(_pieces_size(body))] + body


def write_caffemodel_raw(model: RawCaffemodel, path: str) -> None:
    """Write a :class:`RawCaffemodel` atomically; unchanged parts are copied byte for byte."""
    with atomic_write(os.fspath(path), "wb") as f:
        for part in model._parts:
            if part[0] == "raw":
                f.write(memoryview(model._data)[part[1]:part[2]])
            else:
                _write_pieces(f, _raw_layer_pieces(model, model.layers[part[1]]))


# ---------------------------------------------------------------------------------------------
# Loading weights for a Net
# ---------------------------------------------------------------------------------------------
def _map_file(path: str):
    """The file's bytes: a read-only mmap (no copy), or bytes for files mmap refuses."""
    _no_nul(path)
    try:
        with open(path, "rb") as f:
            try:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):
                return f.read()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read: {e.strerror}") from None


def _upgraded_records(header: caffe_pb2.NetParameter, layers: Sequence[tuple], path: str) -> list:
    """(name, blobs) after Caffe's upgrade: V1 layers become layers (a file that has both
    kinds is refused, as Caffe 1.0's UpgradeV1Net refuses it); old input fields add a
    blob-less Input layer named "input" first."""
    v1 = [(name, blobs) for version, name, _, blobs, *_ in layers if version == 1]
    if v1 and len(v1) != len(layers):
        v2 = next(name for version, name, *_ in layers if version == 2)
        raise FormatError(
            f"{path}: Refusing to upgrade inconsistent NetParameter input; the definition "
            "includes both 'layer' and 'layers' fields (first 'layer': "
            f"'{v2}', first 'layers': '{v1[0][0]}')")
    if v1:
        # the lines Caffe's UpgradeNetAsNeeded logs on the way
        log.info("Attempting to upgrade input file specified using deprecated "
                 f"V1LayerParameter: {path}")
        log.info("Successfully upgraded file specified using deprecated V1LayerParameter")
        out = v1
    else:
        out = [(name, blobs) for version, name, _, blobs, *_ in layers if version == 2]
    if len(header.input):
        log.info("Attempting to upgrade input file specified using deprecated input fields: "
                 f"{path}")
        if len(header.input_dim) or len(header.input_shape):
            out.insert(0, ("input", []))
        log.info("Successfully upgraded file specified using deprecated input fields.")
        log.warning("Note that future Caffe releases will only support input layers and not "
                    "input fields.")
    if any(version == 2 and param.type == "BatchNorm" and len(param.param) == 3
           for version, _, param, *_ in layers):
        # weights carry no param specs to act on, but Caffe says it upgrades them
        log.info(f"Attempting to upgrade batch norm layers using deprecated params: {path}")
        log.info("Successfully upgraded batch norm layers using deprecated params.")
    return out


def _load_via_protobuf(buf: Buffer, path: str) -> list[tuple[str, list[BlobRecord]]]:
    """Generic path: protobuf parses the whole file, Caffe's upgrade runs, numpy converts."""
    try:
        param = caffe_pb2.NetParameter.FromString(bytes(buf))
    except _pbmessage.DecodeError as e:
        raise FormatError(f"{path}: not a valid caffemodel: {e}") from None
    try:
        upgrade.upgrade_net(param, path)
    except DecaffeError as e:
        raise FormatError(str(e)) from None
    out = []
    for i, lp in enumerate(param.layer):
        blobs = []
        for k, b in enumerate(lp.blobs):
            try:
                blobs.append(blobproto_message_to_record(b))
            except wire.Corrupt as e:
                raise FormatError(f"{path}: {_layer_label(lp.name, i)}, blob {k}: {e}"
                                  ) from None
        out.append((lp.name, blobs))
    return out


def load_weights(path: str) -> list[tuple[str, list[BlobRecord]]]:
    """(layer name, [BlobRecord, ...]) for every layer of a weights file, in file order.

    ``.h5`` files (Caffe's rule: the name ends in ".h5") are read as Caffe's HDF5 layout,
    anything else as a binary NetParameter upgraded as Caffe upgrades it on load.  Arrays
    are fresh, writable and aligned."""
    path = os.fspath(path)
    if path.endswith(".h5"):
        return load_hdf5(path)
    buf = _map_file(path)
    try:
        if len(buf) == 0:
            raise FormatError(f"{path}: the file is empty")
        try:
            header, layers, _ = _scan_net(buf, path, copy=True, blob_cls=BlobRecord)
        except wire.Unusual:
            return _load_via_protobuf(buf, path)
        return _upgraded_records(header, layers, path)
    finally:
        if isinstance(buf, mmap.mmap):
            # every array was copied out, so nothing should still point into the map
            with contextlib.suppress(BufferError):
                buf.close()


# ---------------------------------------------------------------------------------------------
# Writing a caffemodel
# ---------------------------------------------------------------------------------------------
def _known_numbers(desc: _pbdescriptor.Descriptor) -> set[int]:
    return {f.number for f in desc.fields}


def _split_serialized(data: bytes, known: set[int], before: int) -> int:
    """Offset in a message serialized by protobuf (known fields in number order, then
    unknown ones) where a field numbered `before` belongs."""
    for number, _, _, start, _ in wire.fields(data, 0, len(data)):
        if number not in known or number > before:
            return start
    return len(data)


_LAYER_KNOWN = _known_numbers(caffe_pb2.LayerParameter.DESCRIPTOR)
_NET_KNOWN = _known_numbers(caffe_pb2.NetParameter.DESCRIPTOR)


def _serialized_around(message: _pbmessage.Message, field: str, number: int,
                       known: set[int]) -> tuple[bytes, bytes]:
    """message serialized without its repeated `field`, split where that field's records
    (field number `number`) belong, so the caller can write them in between."""
    if len(getattr(message, field)):
        rest = type(message)()
        rest.CopyFrom(message)
        rest.ClearField(field)
    else:
        rest = message
    body = rest.SerializeToString()
    cut = _split_serialized(body, known, number)
    return body[:cut], body[cut:]


def _layer_pieces(lp: caffe_pb2.LayerParameter, arrays: Sequence[np.ndarray] | None,
                  diffs: Sequence[np.ndarray] | None, index: int) -> list:
    before, after = _serialized_around(lp, "blobs", _V2_BLOBS, _LAYER_KNOWN)
    pieces: list = [before]
    arrays = arrays or []
    if diffs is not None and len(diffs) != len(arrays):
        raise DecaffeError(f"{_layer_label(lp.name, index)}: {len(arrays)} blobs but "
                           f"{len(diffs)} diffs")
    for k, arr in enumerate(arrays):
        inner = encode_blob(arr, None if diffs is None else diffs[k])
        pieces.append(wire.tag(_V2_BLOBS, wire.LEN) + wire.encode_varint(_pieces_size(inner)))
        pieces.extend(inner)
    pieces.append(after)
    return [wire.tag(_NET_LAYER, wire.LEN) + wire.encode_varint(_pieces_size(pieces))] + pieces


def save_caffemodel(path: str, net_param: caffe_pb2.NetParameter,
                    data: dict[int, Sequence[np.ndarray]],
                    diffs: dict[int, Sequence[np.ndarray]] | None = None) -> None:
    """Write net_param as a caffemodel whose layer i carries the blobs data[i] (Caffe's
    Net::ToProto: any blobs already in net_param are replaced; layers not in data get none;
    diffs, when given, are written beside the data as with ``snapshot_diff``).  float64
    arrays are written as ``double_data``, anything else as float32.  The file is written
    atomically and is byte-identical to C++ protobuf's serialization of the same message."""
    before, after = _serialized_around(net_param, "layer", _NET_LAYER, _NET_KNOWN)
    with atomic_write(os.fspath(path), "wb") as f:
        f.write(before)
        for i, lp in enumerate(net_param.layer):
            _write_pieces(f, _layer_pieces(lp, data.get(i), None if diffs is None
                                           else diffs.get(i), i))
        f.write(after)


# ---------------------------------------------------------------------------------------------
# Generic messages (solverstates, NetParameters)
# ---------------------------------------------------------------------------------------------
def read_message(path: str, cls: type[_pbmessage.Message]) -> _pbmessage.Message:
    """Parse a binary protobuf file into a new cls message; FormatError on any failure."""
    path = os.fspath(path)
    data = _read_bytes(path)
    try:
        return cls.FromString(data)
    except _pbmessage.DecodeError as e:
        raise FormatError(f"{path}: not a valid {cls.DESCRIPTOR.name} file: {e}") from None


def write_message(msg: _pbmessage.Message, path: str) -> None:
    """Serialize msg to path atomically (protobuf's serialization is deterministic)."""
    with atomic_write(os.fspath(path), "wb") as f:
        f.write(msg.SerializeToString())


# ---------------------------------------------------------------------------------------------
# HDF5 (Net::ToHDF5 / CopyTrainedLayersFromHDF5)
# ---------------------------------------------------------------------------------------------
def _h5_layers(group: h5py.Group, prefix: str = "") -> list[tuple[str, object]]:
    """(layer name, group) for each layer group; a '/' in a layer name nests groups."""
    import h5py  # h5py loads libhdf5 (only .h5 weights need it)

    out = []
    for key in group:
        item = group[key]
        if isinstance(item, h5py.Group):
            out.append((prefix + key, item))
            out.extend(_h5_layers(item, prefix + key + "/"))
    return out


def _h5_blobs(group: h5py.Group, path: str, name: str) -> list[np.ndarray | None]:
    """Datasets "0", "1", ... of a layer group as arrays; a gap (a shared parameter Caffe
    did not save) is None."""
    import h5py  # h5py loads libhdf5 (only .h5 weights need it)

    indices = {}
    for key in group:
        if isinstance(group[key], h5py.Dataset):
            if not key.isdigit() or len(key) > 9:
                raise FormatError(f"{path}: layer '{name}': unexpected dataset '{key}' "
                                  "(expected blob datasets '0', '1', ...)")
            indices[int(key)] = key
    if indices and max(indices) >= 4096:
        raise FormatError(f"{path}: layer '{name}': blob dataset '{max(indices)}' (expected "
                          "'0', '1', ... one per blob)")
    out: list[np.ndarray | None] = [None] * (max(indices) + 1 if indices else 0)
    for i, key in indices.items():
        arr = h5_array(group[key], path, f"layer '{name}', blob {i} (dataset '{key}')")
        out[i] = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32, copy=False)
    return out


def load_hdf5(path: str) -> list[tuple[str, list[BlobRecord | None]]]:
    """(layer name, blobs) from Caffe's HDF5 weights: group "data"/<layer>/<i> (and
    "diff"/<layer>/<i> as the records' diffs when present).  A blob Caffe skipped because
    it shares another layer's parameter is None."""
    import h5py  # h5py loads libhdf5 (only .h5 weights need it)

    path = _no_nul(os.fspath(path))
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: not an HDF5 file: {e}") from None
    try:
        with f:
            return _load_hdf5_file(f, path)
    except FormatError:
        raise
    except _H5_ERRORS as e:
        raise FormatError(f"{path}: the HDF5 weights cannot be read ({type(e).__name__}: "
                          f"{e}); expected Caffe's layout (group 'data'/<layer>/<blob>)") \
            from None


def _load_hdf5_file(f: h5py.File, path: str) -> list[tuple[str, list[BlobRecord | None]]]:
    import h5py  # h5py loads libhdf5 (only .h5 weights need it)

    if "data" not in f or not isinstance(f["data"], h5py.Group):
        raise FormatError(f"{path}: no 'data' group: not Caffe HDF5 weights")
    diff_group = f["diff"] if "diff" in f else None
    if diff_group is not None and not isinstance(diff_group, h5py.Group):
        raise FormatError(f"{path}: 'diff' is a dataset; expected a group of layers")
    out = []
    for name, group in _h5_layers(f["data"]):
        arrays = _h5_blobs(group, path, name)
        diffs: list = []
        if diff_group is not None and name in diff_group:
            if not isinstance(diff_group[name], h5py.Group):
                raise FormatError(f"{path}: 'diff/{name}' is a dataset; expected a group")
            diffs = _h5_blobs(diff_group[name], path, name)
        records: list[BlobRecord | None] = []
        for i, arr in enumerate(arrays):
            if arr is None:
                records.append(None)
                continue
            d = diffs[i] if i < len(diffs) else None
            records.append(BlobRecord(arr, False, d))
        out.append((name, records))
    return out


def save_hdf5(path: str, layers: Sequence[tuple[str, Sequence[np.ndarray]]],
              diffs: Sequence[tuple[str, Sequence[np.ndarray]]] | None = None) -> None:
    """Write weights in Caffe's HDF5 layout (Net::ToHDF5), atomically: group "data" with a
    subgroup per layer holding datasets "0", "1", ...; group "diff" likewise when diffs are
    given.  float64 arrays stay float64, anything else is written as float32."""
    import h5py  # h5py loads libhdf5 (only .h5 weights need it)

    def write(group: h5py.Group,
              entries: Sequence[tuple[str, Sequence[np.ndarray | None]]]) -> None:
        for name, arrays in entries:
            g = group.require_group(name)
            for i, arr in enumerate(arrays):
                if arr is None:
                    continue
                a = np.asarray(arr)
                dtype = np.float64 if a.dtype == np.float64 else np.float32
                g.create_dataset(str(i), data=np.ascontiguousarray(a, dtype=dtype))

    with atomic_path(os.fspath(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            write(f.create_group("data"), layers)
            if diffs is not None:
                write(f.create_group("diff"), diffs)

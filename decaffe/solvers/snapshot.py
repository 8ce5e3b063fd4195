"""Solver snapshots: Caffe's file names and its two .solverstate layouts.

- binary (snapshot_format BINARYPROTO): a SolverState message — iter, learned_net (the
  .caffemodel written with it), history (one BlobProto per history blob, in the solver's
  order), current_step;
- HDF5 (snapshot_format HDF5, SGDSolver::SnapshotSolverStateToHDF5's layout): scalar
  datasets ``iter`` and ``current_step`` (int), ``learned_net`` (string), and a group
  ``history`` holding datasets ``0`` … ``N-1``.

Files are written to a temporary file beside the target and renamed over it, so a crash
never leaves a truncated snapshot under the final name; :func:`remove_orphans` removes the
temporaries a killed process left for a prefix. Caffe picks the reader by the file name: a
name ending in ``.h5`` is HDF5, anything else binary.

Beyond Caffe, a state also records where each data layer is in its source (records, shuffle
and random state) and torch's random state, so a resumed run sees the batches an
uninterrupted one would: as field ``POSITIONS_FIELD`` of the binary message (a number
Caffe's SolverState does not use; its parser keeps it as an unknown field and reads the rest
as before) and as the HDF5 dataset ``POSITIONS_DATASET`` (Caffe reads only its own
datasets). Both hold UTF-8 JSON: ``{"format": 1, "nets": {"train"|"testN": {layer:
position}}, "torch_rng": hex}``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..blob import check_memory, check_shape
from ..errors import DecaffeError, FormatError, SolverError
from ..formats import atomic, wire
from ..formats.atomic import atomic_path, atomic_write
from ..proto import caffe_pb2

POSITIONS_FIELD = 1000
POSITIONS_DATASET = "decaffe_data_positions"


@dataclass
class SolverStateData:
    """What a .solverstate holds, format-independent."""

    iter: int = 0
    learned_net: str | None = None
    current_step: int = 0
    history: list[np.ndarray] = field(default_factory=list)
    minimum_loss: float | None = None  # SSD's plateau policy only
    iter_last_event: int | None = None
    positions: dict | None = None  # decaffe's data positions (see the module's docstring)


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's SnapshotFilename: PREFIX_iter_N + extension."""
    return f"{prefix}_iter_{iteration}{extension}"


def is_hdf5_name(path: str) -> bool:
    return os.fspath(path).endswith(".h5")


def remove_orphans(prefix: str) -> list[str]:
    """Remove the temporaries that atomic writes of PREFIX_iter_N snapshots left behind (a
    process killed while writing); only decaffe's own temporaries of this prefix's names."""
    folder, base = os.path.split(os.fspath(prefix))
    name = re.escape(base) + r"_iter_\d+\.(?:caffemodel|solverstate)(?:\.h5)?"
    return atomic.remove_orphans(folder, name)


def prefix_of(state_path: str) -> str | None:
    """The snapshot prefix a PREFIX_iter_N.solverstate(.h5) name was written with."""
    m = re.fullmatch(r"(.*)_iter_\d+\.solverstate(?:\.h5)?", os.fspath(state_path))
    return m.group(1) if m else None


def _encode_positions(positions: dict) -> bytes:
    return json.dumps(positions, separators=(",", ":"), sort_keys=True).encode()


def _decode_positions(raw: bytes, path: str) -> dict:
    try:
        out = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: decaffe's data positions are not valid JSON ({e})") from None
    if not isinstance(out, dict) or out.get("format") != 1:
        raise FormatError(f"{path}: decaffe's data positions have an unknown layout")
    return out


def _field_payload(raw: bytes, number: int) -> bytes | None:
    """The last length-delimited top-level field `number` of a parsed message's bytes."""
    found = None
    try:
        for n, wt, value, _, _ in wire.fields(raw, 0, len(raw)):
            if n == number and wt == wire.LEN:
                found = raw[value[0]:value[1]]
    except wire.Unusual:  # groups: never in a SolverState
        pass
    return found


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _blob_bytes(arr: np.ndarray) -> bytes:
    """A BlobProto as C++ Caffe serializes Blob::ToProto: packed float data (field 5),
    then the shape (field 7). Encoded here directly: protobuf's per-value path is slow
    for the millions of values a history holds."""
    flat = np.ascontiguousarray(arr, dtype="<f4").reshape(-1)
    shape = caffe_pb2.BlobShape()
    shape.dim.extend(int(d) for d in np.shape(arr))
    out = wire.len_field(5, flat.tobytes()) if flat.size else b""
    return out + wire.len_field(7, shape.SerializeToString())


def write_binary(path: str, state: SolverStateData) -> None:
    head = caffe_pb2.SolverState()
    head.iter = int(state.iter)
    if state.learned_net is not None:
        head.learned_net = state.learned_net
    tail = caffe_pb2.SolverState()
    tail.current_step = int(state.current_step)
    if state.minimum_loss is not None:
        tail.minimum_loss = float(state.minimum_loss)
    if state.iter_last_event is not None:
        tail.iter_last_event = int(state.iter_last_event)
    # fields in number order (iter, learned_net, history, current_step), as C++ writes them
    parts = [head.SerializeToString()]
    parts.extend(wire.len_field(3, _blob_bytes(a)) for a in state.history)
    parts.append(tail.SerializeToString())
    if state.positions is not None:
        parts.append(wire.len_field(POSITIONS_FIELD, _encode_positions(state.positions)))
    with atomic_write(path, "wb") as f:
        for part in parts:
            f.write(part)


def write_hdf5(path: str, state: SolverStateData) -> None:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("iter", data=np.int32(state.iter))
            if state.learned_net is not None:
                f.create_dataset("learned_net", data=np.bytes_(state.learned_net.encode()))
            f.create_dataset("current_step", data=np.int32(state.current_step))
            if state.minimum_loss is not None:
                f.create_dataset("minimum_loss", data=np.float32(state.minimum_loss))
            if state.iter_last_event is not None:
                f.create_dataset("iter_last_event", data=np.int32(state.iter_last_event))
            if state.positions is not None:
                f.create_dataset(POSITIONS_DATASET,
                                 data=np.bytes_(_encode_positions(state.positions)))
            g = f.create_group("history")
            for i, arr in enumerate(state.history):
                g.create_dataset(str(i), data=np.ascontiguousarray(arr, dtype=np.float32))


def write_state(path: str, state: SolverStateData) -> None:
    (write_hdf5 if is_hdf5_name(path) else write_binary)(path, state)


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def _blob_array(blob: caffe_pb2.BlobProto, where: str) -> np.ndarray:
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:  # legacy 4-D fields
        shape = tuple(int(getattr(blob, a)) for a in ("num", "channels", "height", "width"))
    _check_size(shape, where)
    count = math.prod(shape)
    if len(blob.double_data):
        arr = np.asarray(blob.double_data, dtype=np.float64)
    else:
        arr = np.asarray(blob.data, dtype=np.float32)
    if arr.size != count:
        raise FormatError(f"{where}: {arr.size} values for shape {shape} ({count} expected)")
    return arr.reshape(shape)


def _check_size(shape: tuple[int, ...], where: str) -> None:
    """Refuse an array over Caffe's INT_MAX elements or the free memory, before reading it."""
    try:
        check_memory(check_shape(shape, where), 4, "cpu", where)
    except FormatError:
        raise
    except DecaffeError as e:
        raise FormatError(str(e)) from None


def _check_counters(state: SolverStateData, path: str) -> SolverStateData:
    """Caffe takes these on trust; here a value that breaks the arithmetic is refused."""
    if state.iter < 0:
        raise FormatError(f"{path}: iter is {state.iter}; an iteration count is never negative")
    if state.current_step < 0:
        raise FormatError(f"{path}: current_step is {state.current_step}; a step count is "
                          "never negative")
    if state.learned_net is not None and "\0" in state.learned_net:
        raise FormatError(f"{path}: learned_net {state.learned_net!r} holds a NUL byte")
    return state


def read_binary(path: str) -> SolverStateData:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (OSError, ValueError) as e:
        raise SolverError(f"cannot read solver state '{path}': "
                          f"{getattr(e, 'strerror', None) or e}") from None
    msg = caffe_pb2.SolverState()
    try:
        msg.ParseFromString(raw)
    except Exception as e:  # protobuf's DecodeError
        raise FormatError(f"{path}: not a SolverState message ({e})") from None
    try:
        learned = msg.learned_net if msg.HasField("learned_net") else None
        if isinstance(learned, bytes):  # protobuf hands back invalid UTF-8 as bytes
            learned = learned.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{path}: learned_net is not UTF-8 text") from None
    extra = _field_payload(raw, POSITIONS_FIELD)
    return _check_counters(SolverStateData(
        iter=msg.iter,
        learned_net=learned,
        current_step=msg.current_step,
        history=[_blob_array(b, f"{path}: history blob {i}") for i, b in enumerate(msg.history)],
        minimum_loss=msg.minimum_loss if msg.HasField("minimum_loss") else None,
        iter_last_event=msg.iter_last_event if msg.HasField("iter_last_event") else None,
        positions=None if extra is None else _decode_positions(extra, path),
    ), path)


_INT, _FLOAT, _TEXT = "an integer scalar", "a float scalar", "a string scalar"


def _scalar(f: h5py.Group, name: str, path: str, kind: str, required: bool = True):
    """Dataset `name` of f, a scalar (shape () or (1,)) of the kind asked for, else a
    FormatError naming the file, the dataset and what was expected."""
    if name not in f:
        if required:
            raise FormatError(f"{path}: no '{name}' dataset in the HDF5 solver state "
                              f"(expected {kind})")
        return None
    ds = f[name]
    if not isinstance(ds, h5py.Dataset) or ds.shape not in ((), (1,)):
        shape = getattr(ds, "shape", "a group")
        raise FormatError(f"{path}: dataset '{name}' is {shape}; expected {kind}")
    dt = ds.dtype
    ok = {_INT: dt.kind in "iu", _FLOAT: dt.kind in "fiu",
          _TEXT: dt.kind in "SUO" and (dt.kind != "O" or h5py.check_string_dtype(dt))}[kind]
    if not ok:
        raise FormatError(f"{path}: dataset '{name}' has type {dt}; expected {kind}")
    value = ds[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if kind == _TEXT:
        if isinstance(value, bytes | np.bytes_):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"{path}: dataset '{name}' is not UTF-8 text") from None
        return str(value)
    if kind == _INT:
        value = int(value)
        if not -2**31 <= value < 2**31:
            raise FormatError(f"{path}: dataset '{name}' is {value}; expected a 32-bit integer")
        return value
    return float(value)


def read_hdf5(path: str) -> SolverStateData:
    if "\0" in path:
        raise SolverError(f"cannot read solver state {path!r}: the path holds a NUL byte")
    if not os.path.exists(path):
        raise SolverError(f"cannot read solver state '{path}': No such file or directory")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: not an HDF5 file ({e})") from None
    where = "the file"
    try:
        with f:
            state = SolverStateData(iter=_scalar(f, "iter", path, _INT),
                                    current_step=_scalar(f, "current_step", path, _INT))
            state.learned_net = _scalar(f, "learned_net", path, _TEXT, required=False)
            state.minimum_loss = _scalar(f, "minimum_loss", path, _FLOAT, required=False)
            state.iter_last_event = _scalar(f, "iter_last_event", path, _INT, required=False)
            extra = _scalar(f, POSITIONS_DATASET, path, _TEXT, required=False)
            if extra is not None:
                state.positions = _decode_positions(extra.encode(), path)
            if "history" not in f or not isinstance(f["history"], h5py.Group):
                raise FormatError(f"{path}: no 'history' group in the HDF5 solver state")
            g = f["history"]
            n = len(g)
            for i in range(n):
                where = f"dataset 'history/{i}'"
                if str(i) not in g:
                    raise FormatError(f"{path}: history dataset '{i}' missing ({n} entries)")
                ds = g[str(i)]
                if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
                    raise FormatError(f"{path}: {where} is {getattr(ds, 'dtype', 'a group')}; "
                                      "expected a float array")
                _check_size(ds.shape, f"{path}: {where}")
                state.history.append(np.asarray(ds[()], dtype=np.float32))
    except FormatError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError, OSError, AttributeError,
            IndexError, OverflowError) as e:  # h5py's own errors on a damaged file
        raise FormatError(f"{path}: {where} cannot be read ({type(e).__name__}: {e})") \
            from None
    return _check_counters(state, path)


def read_state(path: str) -> SolverStateData:
    """Read a .solverstate (binary) or .solverstate.h5 (HDF5), chosen by the name as Caffe does."""
    path = os.fspath(path)
    if "\0" in path:
        raise SolverError(f"cannot read solver state {path!r}: the path holds a NUL byte")
    return read_hdf5(path) if is_hdf5_name(path) else read_binary(path)


def resolve_learned_net(learned_net: str, state_path: str) -> str:
    """Where the caffemodel named in a state is: as written (relative to the working
    directory, as Caffe opens it), else beside the state file."""
    if os.path.exists(learned_net):
        return learned_net
    folder = os.path.dirname(os.path.abspath(state_path))
    for candidate in (os.path.join(folder, learned_net),
                      os.path.join(folder, os.path.basename(learned_net))):
        if os.path.exists(candidate):
            return candidate
    raise SolverError(f"{state_path}: the weights it names, '{learned_net}', were not found "
                      "(looked in the working directory and beside the state file)")

"""Solver snapshots: Caffe's file names and its two .solverstate layouts.

- binary (snapshot_format BINARYPROTO): a SolverState message — iter, learned_net (the
  .caffemodel written with it), history (one BlobProto per history blob, in the solver's
  order), current_step;
- HDF5 (snapshot_format HDF5, SGDSolver::SnapshotSolverStateToHDF5's layout): scalar
  datasets ``iter`` and ``current_step`` (int), ``learned_net`` (string), and a group
  ``history`` holding datasets ``0`` … ``N-1``.

Files are written to a temporary file beside the target and renamed over it, so a crash
never leaves a truncated snapshot under the final name. Caffe picks the reader by the
file name: a name ending in ``.h5`` is HDF5, anything else binary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, SolverError
from ..formats.atomic import atomic_path, atomic_write
from ..proto import caffe_pb2


@dataclass
class SolverStateData:
    """What a .solverstate holds, format-independent."""

    iter: int = 0
    learned_net: str | None = None
    current_step: int = 0
    history: list[np.ndarray] = field(default_factory=list)
    minimum_loss: float | None = None  # SSD's plateau policy only
    iter_last_event: int | None = None


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's SnapshotFilename: PREFIX_iter_N + extension."""
    return f"{prefix}_iter_{iteration}{extension}"


def is_hdf5_name(path: str) -> bool:
    return os.fspath(path).endswith(".h5")


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _blob_bytes(arr: np.ndarray) -> bytes:
    """A BlobProto as C++ Caffe serializes Blob::ToProto: packed float data (field 5),
    then the shape (field 7). Encoded here directly: protobuf's per-value path is slow
    for the millions of values a history holds."""
    flat = np.ascontiguousarray(arr, dtype="<f4").reshape(-1)
    shape = caffe_pb2.BlobShape()
    shape.dim.extend(int(d) for d in np.shape(arr))
    out = _len_field(5, flat.tobytes()) if flat.size else b""
    return out + _len_field(7, shape.SerializeToString())


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
    parts.extend(_len_field(3, _blob_bytes(a)) for a in state.history)
    parts.append(tail.SerializeToString())
    with atomic_write(path, "wb") as f:
        for part in parts:
            f.write(part)


def write_hdf5(path: str, state: SolverStateData) -> None:
    import h5py

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
            g = f.create_group("history")
            for i, arr in enumerate(state.history):
                g.create_dataset(str(i), data=np.ascontiguousarray(arr, dtype=np.float32))


def write_state(path: str, state: SolverStateData) -> None:
    (write_hdf5 if is_hdf5_name(path) else write_binary)(path, state)


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def _blob_array(blob, where: str) -> np.ndarray:
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:  # legacy 4-D fields
        shape = tuple(int(getattr(blob, a)) for a in ("num", "channels", "height", "width"))
    if len(blob.double_data):
        arr = np.asarray(blob.double_data, dtype=np.float64)
    else:
        arr = np.asarray(blob.data, dtype=np.float32)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if arr.size != count:
        raise FormatError(f"{where}: {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def read_binary(path: str) -> SolverStateData:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SolverError(f"cannot read solver state '{path}': {e.strerror}") from None
    msg = caffe_pb2.SolverState()
    try:
        msg.ParseFromString(raw)
    except Exception as e:  # protobuf's DecodeError
        raise FormatError(f"{path}: not a SolverState message ({e})") from None
    return SolverStateData(
        iter=msg.iter,
        learned_net=msg.learned_net if msg.HasField("learned_net") else None,
        current_step=msg.current_step,
        history=[_blob_array(b, f"{path}: history blob {i}") for i, b in enumerate(msg.history)],
        minimum_loss=msg.minimum_loss if msg.HasField("minimum_loss") else None,
        iter_last_event=msg.iter_last_event if msg.HasField("iter_last_event") else None,
    )


def _scalar(f, name: str, path: str, required: bool = True):
    if name not in f:
        if required:
            raise FormatError(f"{path}: no '{name}' dataset in the HDF5 solver state")
        return None
    value = f[name][()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else None
    return value


def read_hdf5(path: str) -> SolverStateData:
    import h5py

    if not os.path.exists(path):
        raise SolverError(f"cannot read solver state '{path}': No such file or directory")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FormatError(f"{path}: not an HDF5 file ({e})") from None
    with f:
        state = SolverStateData(iter=int(_scalar(f, "iter", path)),
                                current_step=int(_scalar(f, "current_step", path)))
        net = _scalar(f, "learned_net", path, required=False)
        if net is not None:
            state.learned_net = net.decode() if isinstance(net, bytes) else str(net)
        mloss = _scalar(f, "minimum_loss", path, required=False)
        if mloss is not None:
            state.minimum_loss = float(mloss)
        last = _scalar(f, "iter_last_event", path, required=False)
        if last is not None:
            state.iter_last_event = int(last)
        if "history" not in f:
            raise FormatError(f"{path}: no 'history' group in the HDF5 solver state")
        g = f["history"]
        n = len(g)
        for i in range(n):
            if str(i) not in g:
                raise FormatError(f"{path}: history dataset '{i}' missing ({n} entries)")
            state.history.append(np.asarray(g[str(i)][()]))
    return state


def read_state(path: str) -> SolverStateData:
    """Read a .solverstate (binary) or .solverstate.h5 (HDF5), chosen by the name as Caffe does."""
    path = os.fspath(path)
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

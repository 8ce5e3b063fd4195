"""Record sources of the data layers: what reads the records a data layer's batches are made
of, in the layer's prefetch thread, and records and restores its position for exact resume.

- ``CursorSource``: a database (LMDB/LevelDB) read through a cursor (Data's ``_DatumSource``,
  the SSD fork's AnnotatedData), with Caffe's multi-solver record filter ``SolverKeep``;
- ``ListSource``: a list file of examples read in order, shuffled at setup and at every wrap
  (ImageData's ``_ImageSource``, the forks' DenseImageData, ImageSegData, VideoData);
- ``_HDF5Source``: the rows of HDF5Data's listed files;
- ``_WindowSource``: WindowData's foreground/background windows (R-CNN);
- the list readers (``read_image_list``, ``read_hdf5_list``, ``read_window_file``,
  ``open_list``), ``load_hdf5_tops`` and ``skip_records`` (rand_skip).

Errors are DataError/DataLayerError naming the file, line, record or layer. The layers are
in decaffe.layers.data (BVLC's) and decaffe.layers.forks.data (the forks').
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TextIO, TypeVar

import cv2
import h5py
import numpy as np
import torch

from .. import mode as _mode
from ..errors import DataError, FormatError, LayerParamError
from ..formats.weights import h5_array
from ..proto import caffe_pb2
from ..threads import decode_workers
from .datum import (
    datum_array,
    decode_image_bytes,
    hwc_to_chw,
    parse_datum,
    read_image,
    record_name,
)
from .db import DB, Cursor
from .prefetch import Prefetcher, SyncLoader
from .transformer import DataTransformer

_T = TypeVar("_T")
_R = TypeVar("_R")
# An image list's entry: (name as listed, label, absolute path)
ImageLine = tuple[str, int, str]
# A window file's image: (root + path, (channels, height, width))
WindowImage = tuple[str, tuple[int, int, int]]
# A window: (image index, label, overlap, x1, y1, x2, y2)
Window = tuple[int, int, float, int, int, int, int]


class Source(Protocol):
    """What a data layer reads batches from (_start): produce() a batch, state() its position
    after the batches produced so far, restore() a recorded one, close() its files."""

    def produce(self) -> tuple: ...

    def state(self) -> dict | None: ...

    def restore(self, state: dict) -> None: ...

    def close(self) -> None: ...


class DataLayerError(DataError, LayerParamError):
    """A data source problem found by a data layer: names the layer (and field or record)."""


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """Threads shared by every data layer for decoding images (OpenCV releases the GIL)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=decode_workers(max(2, min(4, os.cpu_count() or 2))),
                                   thread_name_prefix="decaffe-decode")
    return _POOL


def _parallel_map(fn: Callable[[_T], _R], items: list[_T]) -> list[_R]:
    if len(items) < 4:
        return [fn(x) for x in items]
    return list(_pool().map(fn, items))


class SolverKeep:
    """Caffe's Skip(): with several solvers each keeps every size-th record (offset counts
    the records passed over); called once per record, says whether to keep it."""

    def __init__(self, size: int, rank: int, offset: int = 0) -> None:
        self.size, self.rank, self.offset = size, rank, offset

    def __call__(self) -> bool:
        ok = self.offset % self.size == self.rank
        self.offset += 1
        return ok


def _solver_keep(phase: int) -> SolverKeep | None:
    """The record filter of this solver process (TRAIN with several solvers), else None."""
    size, rank = _mode.solver_count(), _mode.solver_rank()
    if size <= 1 or phase == caffe_pb2.TEST:
        return None
    return SolverKeep(size, rank)


class _CallableSource:
    """A produce() callable as a source that keeps no position and holds no files."""

    def __init__(self, produce: Callable[[], tuple]) -> None:
        self.produce = produce

    def state(self) -> None:
        return None

    def restore(self, state: dict) -> None:
        raise ValueError("this layer records no position")

    def close(self) -> None:
        pass


class CursorSource:
    """What a source reading a database through a cursor records and releases: the next
    record's key, the multi-solver skip offset and its random generators' states. Needs
    attributes cursor, db, keep, source (the path) and layer_name; _rngs() lists the
    generators (default: the transformer's, else `rng`)."""

    def _rngs(self) -> list:
        tr = getattr(self, "transformer", None)
        return [tr.rng] if tr is not None else [getattr(self, "rng", None)]

    def state(self) -> dict:
        return {"kind": type(self).__name__, "key": self.cursor.key.hex(),
                "offset": None if self.keep is None else self.keep.offset,
                "rngs": [rng_state(g) for g in self._rngs()]}

    def restore(self, state: dict) -> None:
        key = bytes.fromhex(state["key"])
        if hasattr(self.cursor, "seek"):
            found = self.cursor.seek(key)
        else:
            self.cursor.seek_to_first()
            while self.cursor.key < key:
                if self.cursor.advance():
                    break
            found = self.cursor.key == key
        if not found:
            raise DataLayerError(f"record {key!r} recorded as the next one is not in "
                                 f"'{self.source}' (was the database changed?)",
                                 layer=self.layer_name)
        if self.keep is not None and state.get("offset") is not None:
            self.keep.offset = int(state["offset"])
        for g, st in zip(self._rngs(), state.get("rngs") or []):
            set_rng_state(g, st)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.close()
        self.db.close()


def _with_state(source: Source) -> Callable[[], tuple]:
    """produce() that appends the source's state to each batch and releases the source's
    files as soon as it fails (the failure is final)."""
    def produce() -> tuple:
        try:
            return tuple(source.produce()) + (source.state(),)
        except BaseException:
            source.close()
            raise
    return produce


def _close_all(loader: Prefetcher | SyncLoader, source: Source) -> None:
    loader.close()
    source.close()


def rng_state(rng: np.random.Generator | None) -> dict | None:
    return None if rng is None else rng.bit_generator.state


def set_rng_state(rng: np.random.Generator | None, state: dict | None) -> None:
    if rng is not None and state is not None:
        rng.bit_generator.state = state


# ----------------------------------------------------------------------------------------------
# Data: a database of Datums
# ----------------------------------------------------------------------------------------------
class _DatumSource(CursorSource):
    """Reads batches of Datums from a cursor and transforms them (runs in the worker)."""

    def __init__(self, layer_name: str, db: DB, cursor: Cursor, transformer: DataTransformer,
                 batch_size: int, labels: bool, phase: int, color: bool | None) -> None:
        self.layer_name, self.db, self.cursor = layer_name, db, cursor
        self.transformer, self.batch_size, self.labels = transformer, batch_size, labels
        self.phase, self.color, self.source = phase, color, db.path
        self.keep = _solver_keep(phase)

    def _fail(self, e: DataError) -> DataLayerError:
        return DataLayerError(str(e), layer=self.layer_name)

    def produce(self) -> tuple:
        try:
            recs = self.cursor.take(self.batch_size, self.keep)
            datums = [parse_datum(v, k, self.source) for k, v in recs]
            data = self._pixels(recs, datums)
        except DataLayerError:
            raise
        except DataError as e:
            raise self._fail(e) from None
        if not self.labels:
            return (data,)
        return data, torch.tensor([d.label for d in datums], dtype=torch.float32)

    def _pixels(self, recs: Sequence[tuple[bytes, bytes]],
                datums: Sequence[caffe_pb2.Datum]) -> torch.Tensor:
        d0 = datums[0]
        shape = (d0.channels, d0.height, d0.width)
        n = shape[0] * shape[1] * shape[2]
        if all(not d.encoded and len(d.data) == n and n > 0
               and (d.channels, d.height, d.width) == shape for d in datums):
            # Raw uint8 records of one shape: one buffer, one array.
            buf = bytearray(b"".join(d.data for d in datums))
            batch = np.frombuffer(buf, np.uint8).reshape((len(datums),) + shape)
            return self.transformer.transform(batch, [record_name(recs[0][0], self.source)])
        names = [record_name(k, self.source) for k, _ in recs]
        if any(d.encoded for d in datums):
            arrays = _parallel_map(lambda i: datum_array(datums[i], recs[i][0], self.source,
                                                         self.color), list(range(len(datums))))
        else:
            arrays = [datum_array(d, k, self.source) for d, (k, _) in zip(datums, recs)]
        return self.transformer.transform_list(arrays, names)


# ----------------------------------------------------------------------------------------------
# ImageData: a list of image files and labels
# ----------------------------------------------------------------------------------------------
_LABEL = re.compile(r"[+-]?\d+")


def skip_records(cursor: Cursor, n: int) -> None:
    """Move a database cursor n records on (rand_skip), wrapping as the cursor does; the
    reader process's single skip where the cursor has one, else n steps."""
    if hasattr(cursor, "skip"):
        cursor.skip(n)
    else:
        for _ in range(n):
            cursor.advance()


def open_list(path: str) -> TextIO:
    """A list file opened as text (undecodable bytes kept as surrogates, so names in any
    encoding survive); a DataError naming the file if it cannot be opened."""
    try:
        return open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise DataError(f"cannot open the list file '{path}': {e.strerror or e}") from None


def read_image_list(path: str) -> list[tuple[str, int]]:
    """The (filename, label) pairs of a Caffe image list: one 'FILENAME LABEL' per line,
    split at the last blank (so names may hold spaces); blank lines are skipped. A line
    without an integer label raises a DataError naming the file and line number."""
    out = []
    with open_list(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip()
            if not line.strip():
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not _LABEL.fullmatch(parts[1]):
                raise DataError(f"{path}:{lineno}: expected 'FILENAME LABEL', got {line!r}")
            label = int(parts[1])
            if not -2**31 <= label < 2**31:
                raise DataError(f"{path}:{lineno}: label {label} does not fit in 32 bits")
            out.append((parts[0], label))
    return out


class ListSource:
    """A list of examples read in order, `batch_size` at a time, wrapping around and (with a
    shuffle generator) reshuffled at setup and at every wrap, as the list-reading data layers
    of Caffe and its forks do. Records and restores its position for exact resume: the index
    of the next example, how many shuffles were made (replayed from the setup's order) and
    the states of the generators that `rngs()` lists. Subclasses write produce()."""

    what = "entries"  # what the list holds, in errors

    def __init__(self, layer: str, lines: list, batch_size: int,
                 shuffle_rng: np.random.Generator | None, start: int) -> None:
        self.layer, self.lines, self.batch_size = layer, lines, batch_size
        self.shuffle_rng, self.pos = shuffle_rng, start
        self.base_lines = list(lines)  # the order before the first shuffle
        self.shuffle_start = rng_state(shuffle_rng)
        self.shuffles = -1
        if shuffle_rng is not None:
            self.shuffle()  # shuffled at setup, then at every wrap-around

    def rngs(self) -> list:
        """The generators whose states a position records (default: the transformer's)."""
        return [self.transformer.rng]

    def shuffle(self) -> None:
        self.shuffle_rng.shuffle(self.lines)
        self.shuffles += 1

    def advance(self) -> None:
        """Move past the current example; at the end, wrap (and reshuffle)."""
        self.pos += 1
        if self.pos >= len(self.lines):
            self.pos = 0
            if self.shuffle_rng is not None:
                self.shuffle()

    def next_item(self) -> object:
        item = self.lines[self.pos]
        self.advance()
        return item

    def next_items(self) -> list:
        return [self.next_item() for _ in range(self.batch_size)]

    def state(self) -> dict:
        return {"kind": type(self).__name__, "pos": self.pos, "shuffles": self.shuffles,
                "lines": len(self.lines), "rngs": [rng_state(g) for g in self.rngs()]}

    def restore(self, state: dict) -> None:
        if int(state["lines"]) != len(self.lines):
            raise DataLayerError(f"the position was recorded for a list of {state['lines']} "
                                 f"{self.what}; the list now has {len(self.lines)}",
                                 layer=self.layer)
        if self.shuffle_rng is not None:  # replay the shuffles from the setup's order
            self.lines[:] = self.base_lines
            set_rng_state(self.shuffle_rng, self.shuffle_start)
            self.shuffles = -1
            for _ in range(int(state["shuffles"]) + 1):
                self.shuffle()
        pos = int(state["pos"])
        if not 0 <= pos < len(self.lines):
            raise ValueError(f"position {pos} outside the list")  # set_position names the layer
        self.pos = pos
        for g, st in zip(self.rngs(), state.get("rngs") or [state.get("rng")]):
            set_rng_state(g, st)

    def close(self) -> None:
        pass



class _ImageSource(ListSource):
    """Reads, resizes and transforms a batch of listed images (runs in the worker)."""

    what = "images"

    def __init__(self, layer_name: str, lines: list[ImageLine], root: str, new_h: int,
                 new_w: int, is_color: bool, transformer: DataTransformer, batch_size: int,
                 shuffle_rng: np.random.Generator | None, start: int,
                 phase: int = caffe_pb2.TRAIN) -> None:
        self.root, self.new_h, self.new_w, self.is_color = root, new_h, new_w, is_color
        self.transformer = transformer
        # several solvers: each keeps every solver_count-th image, as the Data layer does
        self.keep = _solver_keep(phase)
        super().__init__(layer_name, lines, batch_size, shuffle_rng, start)  # Caffe shuffles

    def _next_indices(self) -> list[int]:
        out = []
        while len(out) < self.batch_size:
            if self.keep is None or self.keep():
                out.append(self.pos)
            self.advance()
        return out

    def state(self) -> dict:
        return {**super().state(), "offset": None if self.keep is None else self.keep.offset}

    def restore(self, state: dict) -> None:
        super().restore(state)
        if self.keep is not None and state.get("offset") is not None:
            self.keep.offset = int(state["offset"])

    def _load(self, item: ImageLine) -> np.ndarray:
        name = self.root + item[0]
        img = read_image(item[2], self.new_h, self.new_w, self.is_color)
        if img is None:
            raise DataLayerError(f"could not load image '{name}'", layer=self.layer)
        if img.dtype != np.uint8:
            raise DataLayerError(f"image '{name}' is not 8-bit", layer=self.layer)
        return hwc_to_chw(img)

    def produce(self) -> tuple:
        # The lines are captured before reading: a reshuffle at the wrap changes the list.
        items = [self.lines[i] for i in self._next_indices()]
        arrays = _parallel_map(self._load, items)
        try:
            data = self.transformer.transform_list(arrays, [f"image '{self.root + it[0]}'"
                                                            for it in items])
        except DataError as e:
            raise DataLayerError(str(e), layer=self.layer) from None
        return data, torch.tensor([it[1] for it in items], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# HDF5Data / HDF5Output
# ----------------------------------------------------------------------------------------------
def read_hdf5_list(path: str) -> list[str]:
    """The file names of an HDF5Data source list (whitespace-separated, as Caffe reads it)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read().split()
    except OSError as e:
        raise DataError(f"cannot open the list file '{path}': {e.strerror or e}") from None


def load_hdf5_tops(path: str, names: list[str]) -> list[np.ndarray]:
    """The datasets named after the tops, as float32 arrays with one row count (float or
    integer data of at least 1 axis, as Caffe's hdf5_load_nd_dataset takes). Any failure,
    reading included, is a DataError naming the file, the dataset and what was expected."""

    if "\0" in path:
        raise DataError(f"HDF5 file {path!r}: the path holds a NUL byte")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot open HDF5 file '{path}': {e}") from None
    out = []
    try:
        with f:
            for name in names:
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise DataError(f"HDF5 file '{path}' has no dataset '{name}' "
                                    f"(datasets: {sorted(k for k in f)})")
                ds = f[name]
                if ds.ndim < 1:
                    raise DataError(f"HDF5 dataset '{name}' in '{path}' must have at least 1 "
                                    f"axis (rows), not shape {ds.shape}")
                arr = h5_array(ds, path, f"dataset '{name}'", "fiub",
                               "float or integer data, at least 1 axis")
                out.append(np.ascontiguousarray(arr, dtype=np.float32))
    except FormatError as e:
        raise DataError(str(e)) from None
    except (KeyError, RuntimeError, TypeError, ValueError, OSError, AttributeError,
            IndexError) as e:
        raise DataError(f"HDF5 file '{path}' cannot be read ({type(e).__name__}: {e}); "
                        f"expected datasets {names}") from None
    rows = out[0].shape[0]
    for name, arr in zip(names, out):
        if arr.shape[0] != rows:
            raise DataError(f"HDF5 file '{path}': dataset '{name}' has {arr.shape[0]} rows, "
                            f"'{names[0]}' has {rows}")
    if rows == 0:
        raise DataError(f"HDF5 file '{path}' has no rows")
    return out


class _HDF5Source:
    """Rows of the listed files in order (or shuffled), file after file, wrapping around."""

    def __init__(self, layer_name: str, files: list[str], names: list[str], batch_size: int,
                 shuffle_rng: np.random.Generator | None, phase: int,
                 first_arrays: list[np.ndarray] | None) -> None:
        self.layer_name, self.files, self.names = layer_name, files, names
        self.batch_size, self.rng, self.phase = batch_size, shuffle_rng, phase
        self.file_perm = np.arange(len(files))
        if self.rng is not None:
            self.rng.shuffle(self.file_perm)
        self.current_file = 0
        self.arrays = first_arrays if first_arrays is not None else self._load()
        self.shapes = [a.shape[1:] for a in self.arrays]
        self.row_perm = self._row_perm()
        self.row = 0
        self.offset = 0

    def _load(self) -> list[np.ndarray]:
        path = self.files[self.file_perm[self.current_file]]
        try:
            arrays = load_hdf5_tops(path, self.names)
        except DataError as e:
            raise DataLayerError(str(e), layer=self.layer_name) from None
        if hasattr(self, "shapes"):
            for name, a, s in zip(self.names, arrays, self.shapes):
                if a.shape[1:] != s:
                    raise DataLayerError(f"HDF5 file '{path}': dataset '{name}' rows have shape "
                                         f"{a.shape[1:]}, the first file's have {s}",
                                         layer=self.layer_name)
        return arrays

    def _row_perm(self):
        if self.rng is None:
            return None
        self.rng_before_rows = rng_state(self.rng)
        return self.rng.permutation(self.arrays[0].shape[0])

    def state(self) -> dict:
        return {"kind": "_HDF5Source", "files": len(self.files),
                "file_perm": [int(i) for i in self.file_perm],
                "current_file": int(self.current_file), "row": int(self.row),
                "offset": int(self.offset),
                "rng": getattr(self, "rng_before_rows", None)}

    def restore(self, state: dict) -> None:
        perm = [int(i) for i in state["file_perm"]]
        if int(state["files"]) != len(self.files) or sorted(perm) != list(range(len(self.files))):
            raise DataLayerError(f"the position was recorded for a list of {state['files']} "
                                 f"HDF5 files; the list now has {len(self.files)}",
                                 layer=self.layer_name)
        current = int(state["current_file"])
        if not 0 <= current < len(self.files):
            raise ValueError(f"file {current} outside the list")
        reload = perm != [int(i) for i in self.file_perm] or current != self.current_file
        self.file_perm = np.asarray(perm)
        self.current_file = current
        if reload:
            self.arrays = self._load()
        # the rows' order, drawn again from the generator's state before it was drawn
        set_rng_state(self.rng, state.get("rng"))
        self.row_perm = self._row_perm()
        row = int(state["row"])
        if not 0 <= row < self.arrays[0].shape[0]:
            raise ValueError(f"row {row} outside the file")
        self.row, self.offset = row, int(state["offset"])

    def close(self) -> None:
        pass

    def _next_file(self) -> None:
        # Caffe's Next() at the end of a file: the next file (reshuffled at the wrap).
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.rng is not None:
                    self.rng.shuffle(self.file_perm)
            self.arrays = self._load()
        self.row = 0
        self.row_perm = self._row_perm()

    def produce(self) -> tuple:
        outs = [np.empty((self.batch_size,) + s, np.float32) for s in self.shapes]
        keep_all = _mode.solver_count() <= 1 or self.phase == caffe_pb2.TEST
        size, rank = _mode.solver_count(), _mode.solver_rank()
        filled = 0
        while filled < self.batch_size:
            rows = self.arrays[0].shape[0]
            idx = np.arange(self.row, rows)
            if not keep_all:
                kept = np.nonzero((self.offset + np.arange(len(idx))) % size == rank)[0]
                kept = kept[: self.batch_size - filled]
                used = int(kept[-1]) + 1 if len(kept) and \
                    len(kept) == self.batch_size - filled else len(idx)
                idx = idx[kept]
            else:
                idx = idx[: self.batch_size - filled]
                used = len(idx)
            src_rows = idx if self.row_perm is None else self.row_perm[idx]
            for out, arr in zip(outs, self.arrays):
                out[filled:filled + len(idx)] = arr[src_rows]
            filled += len(idx)
            self.row += used
            self.offset += used
            if self.row >= rows:
                self._next_file()
        return tuple(torch.from_numpy(o) for o in outs)


# ----------------------------------------------------------------------------------------------
# WindowData
# ----------------------------------------------------------------------------------------------
def _cround(x: float) -> int:
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def read_window_file(path: str, root: str = "") -> tuple[list, list]:
    """Parse an R-CNN window file: blocks of '# IMAGE_INDEX', PATH, CHANNELS, HEIGHT, WIDTH,
    NUM_WINDOWS, then NUM_WINDOWS lines 'LABEL OVERLAP X1 Y1 X2 Y2' (whitespace-separated,
    as Caffe reads them). Returns ([(root + path, (c, h, w))], [(image_index, label,
    overlap, x1, y1, x2, y2)]); errors name the file and line."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            tokens = [(tok, n) for n, line in enumerate(f, 1) for tok in line.split()]
    except OSError as e:
        raise DataError(f"cannot open the window file '{path}': {e.strerror or e}") from None
    pos = 0

    def take(kind: Callable[[str], _T], what: str) -> _T:
        nonlocal pos
        if pos >= len(tokens):
            raise DataError(f"{path}: the file ends where {what} was expected")
        tok, line = tokens[pos]
        pos += 1
        try:
            return kind(tok) if kind is not str else tok
        except ValueError:
            raise DataError(f"{path}:{line}: expected {what}, got {tok!r}") from None

    images, windows = [], []
    if not tokens:
        raise DataError(f"the window file '{path}' is empty")
    while pos < len(tokens):
        if take(str, "'#'") != "#":
            raise DataError(f"{path}:{tokens[pos - 1][1]}: expected '#' to start an image")
        index = take(int, "an image index")
        image = root + take(str, "an image path")
        size = (take(int, "channels"), take(int, "height"), take(int, "width"))
        images.append((image, size))
        for _ in range(take(int, "a window count")):
            windows.append((index, take(int, "a label"), take(float, "an overlap"),
                            take(int, "x1"), take(int, "y1"), take(int, "x2"), take(int, "y2")))
    return images, windows


class _WindowSource:
    """Samples background then foreground windows, warps them to crop×crop (worker)."""

    def __init__(self, layer_name: str, images: list[WindowImage], fg: list[Window],
                 bg: list[Window], p: caffe_pb2.WindowDataParameter, crop: int, mirror: bool,
                 scale: float, mean: np.ndarray | None, mean_values: np.ndarray | None,
                 channels: int, rng: np.random.Generator, cache: list[bytes] | None) -> None:
        self.layer_name, self.images, self.fg, self.bg = layer_name, images, fg, bg
        self.batch_size, self.context_pad = int(p.batch_size), int(p.context_pad)
        self.fg_fraction, self.square = float(np.float32(p.fg_fraction)), p.crop_mode == "square"
        self.crop, self.mirror, self.scale = crop, mirror, np.float32(scale)
        self.mean, self.mean_values, self.channels = mean, mean_values, channels
        self.rng, self.cache = rng, cache

    def state(self) -> dict:
        return {"kind": "_WindowSource", "rng": rng_state(self.rng)}

    def restore(self, state: dict) -> None:
        set_rng_state(self.rng, state["rng"])

    def close(self) -> None:
        pass

    def _image(self, index: int) -> np.ndarray:
        path = self.images[index][0]
        if self.cache is not None:
            img = decode_image_bytes(self.cache[index], True)
        else:
            img = read_image(path)
        if img is None:
            raise DataLayerError(f"could not load image '{path}'", layer=self.layer_name)
        return img

    def _warp(self, img: np.ndarray, window: Window,
              do_mirror: bool) -> tuple[np.ndarray, int, int]:
        # Caffe's arithmetic, in single precision like its Dtype.
        f32 = np.float32
        crop, pad = self.crop, self.context_pad
        x1, y1, x2, y2 = window[3:]
        out_w = out_h = crop
        pad_w = pad_h = 0
        if pad > 0 or self.square:
            context_scale = f32(crop) / f32(crop - 2 * pad)
            half_h, half_w = f32(y2 - y1 + 1) / f32(2), f32(x2 - x1 + 1) / f32(2)
            cx, cy = f32(x1) + half_w, f32(y1) + half_h
            if self.square:
                half_h = half_w = max(half_h, half_w)
            x1, x2 = _cround(cx - half_w * context_scale), _cround(cx + half_w * context_scale)
            y1, y2 = _cround(cy - half_h * context_scale), _cround(cy + half_h * context_scale)
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            px1, py1 = max(0, -x1), max(0, -y1)
            px2, py2 = max(0, x2 - img.shape[1] + 1), max(0, y2 - img.shape[0] + 1)
            x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
            sx, sy = f32(crop) / f32(unclipped_w), f32(crop) / f32(unclipped_h)
            out_w, out_h = _cround(f32(x2 - x1 + 1) * sx), _cround(f32(y2 - y1 + 1) * sy)
            px1, px2 = _cround(f32(px1) * sx), _cround(f32(px2) * sx)
            py1 = _cround(f32(py1) * sy)
            pad_h = py1
            pad_w = px2 if do_mirror else px1  # the padding mirrors too
            out_h = min(out_h, crop - pad_h)
            out_w = min(out_w, crop - pad_w)
        if not (0 <= x1 <= x2 < img.shape[1] and 0 <= y1 <= y2 < img.shape[0]) \
                or out_w <= 0 or out_h <= 0:
            raise DataLayerError(f"window {tuple(window[3:])} of image "
                                 f"'{self.images[window[0]][0]}' ({img.shape[1]}x"
                                 f"{img.shape[0]}) is empty or outside it",
                                 layer=self.layer_name)
        patch = cv2.resize(img[y1:y2 + 1, x1:x2 + 1], (out_w, out_h),
                           interpolation=cv2.INTER_LINEAR)
        if do_mirror:
            patch = patch[:, ::-1]
        return hwc_to_chw(patch), pad_h, pad_w

    def produce(self) -> tuple:
        b, crop = self.batch_size, self.crop
        data = np.zeros((b, self.channels, crop, crop), np.float32)
        labels = np.zeros(b, np.float32)
        num_fg = int(np.float32(b) * np.float32(self.fg_fraction))
        item = 0
        for pool, count in ((self.bg, b - num_fg), (self.fg, num_fg)):
            for _ in range(count):
                window = pool[int(self.rng.integers(2**32)) % len(pool)]
                do_mirror = bool(self.mirror and self.rng.integers(2))
                chw, pad_h, pad_w = self._warp(self._image(window[0]), window, do_mirror)
                c, h, w = chw.shape
                if c != self.channels:
                    raise DataLayerError(f"image '{self.images[window[0]][0]}' has {c} "
                                         f"channels, the top has {self.channels}",
                                         layer=self.layer_name)
                px = chw.astype(np.float32)
                if self.mean is not None:
                    mh, mw = self.mean.shape[1:]
                    off = int((mw - crop) / 2)  # C's division, from the mean's width
                    px -= self.mean[:, off + pad_h:off + pad_h + h, off + pad_w:off + pad_w + w]
                elif self.mean_values is not None:
                    px -= self.mean_values[:c, None, None]
                data[item, :, pad_h:pad_h + h, pad_w:pad_w + w] = px * self.scale
                labels[item] = window[1]
                item += 1
        return torch.from_numpy(data), torch.from_numpy(labels)

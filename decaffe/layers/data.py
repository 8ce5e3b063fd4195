"""Data layers: Data (LMDB/LevelDB of Datums), ImageData (an image list), HDF5Data,
HDF5Output, MemoryData (pycaffe's set_input_arrays) and WindowData (R-CNN windows).

They read no bottoms. Their top shapes are known at setup, as Caffe's DataLayerSetUp
gives them (batch size, and the first example's shape after the transformer's crop); each
forward returns the next batch on the net's device, with labels as a float vector of the
batch's length. Data, ImageData and WindowData prepare their batches in a background
thread (``data_param.prefetch`` batches ahead, default 4; 0 loads each batch in forward);
file paths are resolved against the working directory at setup, as Caffe resolves them. Each
data layer draws its random numbers (rand_skip, shuffles, crops, mirrors) from its own
generator, seeded from torch's global generator at setup, so a seeded run repeats exactly
and the prefetch thread never disturbs other random draws.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import weakref
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch

from .. import mode as _mode
from ..data.datum import (
    datum_array,
    decode_image_bytes,
    hwc_to_chw,
    parse_datum,
    read_image,
    record_name,
)
from ..data.db import READ, open_db
from ..data.prefetch import Prefetcher, SyncLoader
from ..data.transformer import DataTransformer, load_mean_file
from ..errors import DataError, DecaffeError, LayerParamError
from ..layer import Layer, register
from ..proto import caffe_pb2


class DataLayerError(DataError, LayerParamError):
    """A data source problem found by a data layer: names the layer (and field or record)."""


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """Threads shared by every data layer for decoding images (OpenCV releases the GIL)."""
    global _POOL
    if _POOL is None:
        from ..threads import decode_workers

        _POOL = ThreadPoolExecutor(max_workers=decode_workers(max(2, min(4, os.cpu_count() or 2))),
                                   thread_name_prefix="decaffe-decode")
    return _POOL


def _parallel_map(fn, items: list) -> list:
    if len(items) < 4:
        return [fn(x) for x in items]
    return list(_pool().map(fn, items))


def layer_rng() -> np.random.Generator:
    """A generator for one layer, seeded from torch's global generator (set_random_seed)."""
    seed = int(torch.empty((), dtype=torch.int64).random_())
    return np.random.default_rng(seed)


def transform_param_of(lp, legacy=None):
    """The layer's TransformationParameter, with the legacy fields of its data parameter
    (scale, mean_file, crop_size, mirror) moved in where transform_param lacks them, as
    Caffe's upgrade of old data layers does."""
    tp = caffe_pb2.TransformationParameter()
    tp.CopyFrom(lp.transform_param)
    if legacy is not None:
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if legacy.HasField(field) and not tp.HasField(field):
                setattr(tp, field, getattr(legacy, field))
    return tp


class SolverKeep:
    """Caffe's Skip(): with several solvers each keeps every size-th record (offset counts
    the records passed over); called once per record, says whether to keep it."""

    def __init__(self, size: int, rank: int, offset: int = 0):
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


class _BaseDataLayer(Layer):
    """No bottoms; tops of shapes fixed at setup; batches from a loader (thread or inline)."""

    exact_bottoms = 0
    is_data = True

    def __init__(self, lp, phase):
        super().__init__(lp, phase)
        # Follows the net's device and dtype (Net moves and casts its layers' buffers).
        self.register_buffer("_where", torch.empty(0), persistent=False)
        self._loader = None
        self._source = None
        self._depth = 0
        self._position = None
        self._finalizer = None
        self._top_shapes: list[tuple[int, ...]] = []

    def reshape(self, bottom_shapes):
        return list(self._top_shapes)

    @contextlib.contextmanager
    def _guard(self, field: str | None = None):
        """Turn data errors from the helpers into errors naming this layer and field."""
        try:
            yield
        except DataLayerError:
            raise
        except DataError as e:
            msg = f"{field}: {e}" if field else str(e)
            raise DataLayerError(msg, layer=self.name) from None

    def _error(self, message: str, field: str | None = None) -> DataLayerError:
        return DataLayerError(f"{field}: {message}" if field else message, layer=self.name)

    def _start(self, source, depth: int) -> None:
        """Serve batches from source.produce(): `depth` ahead in a thread, or inline (0).
        Each batch carries the source's position after it (source.state()), so the layer
        knows where the batches it handed out end, however far the thread has read. A bare
        produce() callable is taken too (its layer then records no position)."""
        if not hasattr(source, "produce"):
            source = _CallableSource(source)
        self.close()
        self._source, self._depth = source, int(depth)
        self._position = source.state()
        name = f"layer '{self.name}'"
        produce = _with_state(source)
        loader = Prefetcher(produce, depth, name) if depth > 0 else SyncLoader(produce, name)
        self._loader = loader
        # Stop the thread and release the source's files when the layer goes away, and at
        # interpreter exit.
        self._finalizer = weakref.finalize(self, _close_all, loader, source)

    def close(self) -> None:
        """Stop this layer's prefetch thread and release its files (databases, reader
        processes); also done when the layer is collected and at interpreter exit."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._loader = None

    def position(self) -> dict | None:
        """Where this layer is in its source after the batches it has handed out (records,
        shuffle and random state), as JSON-able values; None for a layer that keeps none."""
        return self._position

    def set_position(self, state: dict) -> None:
        """Continue from a position() of a layer built from the same definition (what
        prefetching read beyond it is discarded)."""
        src = self._source
        if src is None or self._loader is None:
            raise self._error("the layer is closed or was never set up")
        if not isinstance(state, dict) or state.get("kind") != type(src).__name__:
            raise self._error(f"the recorded data position is not one of a {self.type} layer "
                              f"(got {state!r:.80})")
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        loader, self._loader = self._loader, None
        loader.close(timeout=120.0)  # the thread must be done with the source before it moves
        if loader.alive:
            raise self._error("the prefetch thread did not stop; cannot move its source")
        try:
            src.restore(state)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise self._error(f"the recorded data position cannot be used ({e})") from None
        self._start(src, self._depth)

    def forward(self):
        if self._loader is None:
            raise self._error("the layer is closed or was never set up")
        dev, dtype = self._where.device, self._where.dtype
        if dev.type == "cuda":
            self._loader.pin = True
        *batch, self._position = self._loader.get()
        return tuple(t.to(device=dev, dtype=dtype, non_blocking=True) for t in batch)


class _CallableSource:
    """A produce() callable as a source that keeps no position and holds no files."""

    def __init__(self, produce):
        self.produce = produce

    def state(self) -> None:
        return None

    def restore(self, state) -> None:
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


def _with_state(source):
    """produce() that appends the source's state to each batch and releases the source's
    files as soon as it fails (the failure is final)."""
    def produce() -> tuple:
        try:
            return tuple(source.produce()) + (source.state(),)
        except BaseException:
            source.close()
            raise
    return produce


def _close_all(loader, source) -> None:
    loader.close()
    source.close()


def rng_state(rng: np.random.Generator | None):
    return None if rng is None else rng.bit_generator.state


def set_rng_state(rng: np.random.Generator | None, state) -> None:
    if rng is not None and state is not None:
        rng.bit_generator.state = state


# ----------------------------------------------------------------------------------------------
# Data: a database of Datums
# ----------------------------------------------------------------------------------------------
class _DatumSource(CursorSource):
    """Reads batches of Datums from a cursor and transforms them (runs in the worker)."""

    def __init__(self, layer_name, db, cursor, transformer, batch_size, labels, phase, color):
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

    def _pixels(self, recs, datums) -> torch.Tensor:
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


@register("Data")
class DataLayer(_BaseDataLayer):
    """Caffe's Data layer: Datums from an LMDB or LevelDB (``data_param.backend``, LEVELDB by
    default), read in key order from the start (after skipping a random number of records below
    ``rand_skip``),
    wrapping around at the end; tops ``data`` (transformed) and optionally ``label``.

    The data top's shape comes from the first record (Caffe reshapes to each batch's first
    record; a batch whose first record has another size gives a top of that size).
    """

    min_tops = 1
    max_tops = 2

    def setup(self, bottom_shapes):
        p = self.lp.data_param
        self.check(p.batch_size > 0, "must be positive", "data_param.batch_size")
        self.check(bool(p.source), "a database path must be given", "data_param.source")
        rng = layer_rng()
        with self._guard("transform_param"):
            tr = DataTransformer(transform_param_of(self.lp, p), self.phase, rng=rng)
        color = tr.decode_color
        if color is None and p.force_encoded_color:
            color = True
        with self._guard("data_param.source"):
            db = open_db(p.source, p.backend, READ)
        try:  # a failure here releases the database at once
            with self._guard("data_param.source"):
                cursor = db.cursor()
                if not cursor.valid:
                    raise self._error(f"the database '{p.source}' is empty", "data_param.source")
                if p.rand_skip:
                    skip_records(cursor, int(rng.integers(p.rand_skip)))
                key = cursor.key
                first = datum_array(parse_datum(cursor.value, key, p.source), key, p.source,
                                    color)
                shape = tr.output_shape(first.shape)
        except BaseException:
            db.close()
            raise
        labels = len(self.top_names) > 1
        self._top_shapes = [(p.batch_size,) + shape] + ([(p.batch_size,)] if labels else [])
        src = _DatumSource(self.name, db, cursor, tr, p.batch_size, labels, self.phase, color)
        self.transformer = tr
        self._start(src, p.prefetch)


# ----------------------------------------------------------------------------------------------
# ImageData: a list of image files and labels
# ----------------------------------------------------------------------------------------------
_LABEL = re.compile(r"[+-]?\d+")


def skip_records(cursor, n: int) -> None:
    """Move a database cursor n records on (rand_skip), wrapping as the cursor does; the
    reader process's single skip where the cursor has one, else n steps."""
    if hasattr(cursor, "skip"):
        cursor.skip(n)
    else:
        for _ in range(n):
            cursor.advance()


def open_list(path: str):
    """A list file opened as text (undecodable bytes kept as surrogates, so names in any
    encoding survive); a DataError naming the file if it cannot be opened."""
    try:
        return open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise DataError(f"cannot open the list file '{path}': {e.strerror or e}") from None


def shuffle_and_skip(layer, p, rng: np.random.Generator, count: int, field: str,
                     what: str = "images") -> tuple[np.random.Generator | None, int]:
    """A list-reading data layer's shuffle generator (drawn first from rng when p.shuffle)
    and start position (p.rand_skip: a random skip drawn next, refused past the list's
    count entries), in the order ImageData draws them."""
    shuffle_rng = None
    if p.shuffle:
        shuffle_rng = np.random.default_rng(int(rng.integers(2**63 - 1)))
    start = 0
    if p.rand_skip:
        start = int(rng.integers(p.rand_skip))
        layer.check(start < count, f"cannot skip {start} of {count} {what}",
                    f"{field}.rand_skip")
    return shuffle_rng, start


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
                 shuffle_rng: np.random.Generator | None, start: int):
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

    def next_item(self):
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

    def __init__(self, layer_name, lines, root, new_h, new_w, is_color, transformer, batch_size,
                 shuffle_rng, start, phase=caffe_pb2.TRAIN):
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

    def _load(self, item):
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


@register("ImageData")
class ImageDataLayer(_BaseDataLayer):
    """Caffe's ImageData layer: images named in ``source`` ('FILENAME LABEL' lines), read
    from ``root_folder`` + FILENAME through OpenCV (colour BGR or gray by ``is_color``),
    resized bilinearly to new_height×new_width when both are set, then transformed.
    ``shuffle`` shuffles the list at setup and at every wrap-around."""

    exact_tops = 2

    def setup(self, bottom_shapes):
        p = self.lp.image_data_param
        new_h, new_w = int(p.new_height), int(p.new_width)
        self.check((new_h == 0) == (new_w == 0),
                   "new_height and new_width must be set together", "image_data_param.new_height")
        self.check(p.batch_size > 0, "must be positive", "image_data_param.batch_size")
        self.check(bool(p.source), "a list file must be given", "image_data_param.source")
        if new_h and new_w:  # the resize would allocate it: refuse what a blob cannot hold
            from ..blob import check_memory, check_shape

            try:
                shape = check_shape((p.batch_size, 3, new_h, new_w), "image_data_param")
                check_memory(shape, 4, "cpu", "image_data_param")
            except DecaffeError as e:
                raise self._error(f"new_height x new_width: {e}") from None
        rng = layer_rng()
        with self._guard("transform_param"):
            tr = DataTransformer(transform_param_of(self.lp, p), self.phase, rng=rng)
        with self._guard("image_data_param.source"):
            lines = read_image_list(p.source)
        if not lines:
            raise self._error(f"the list file '{p.source}' lists no images",
                              "image_data_param.source")
        shuffle_rng, start = shuffle_and_skip(self, p, rng, len(lines), "image_data_param")
        root = p.root_folder
        # Resolved now, as the working directory is now: reading ahead never depends on it.
        lines = [(name, label, os.path.abspath(root + name)) for name, label in lines]
        src = _ImageSource(self.name, lines, root, new_h, new_w, p.is_color, tr, p.batch_size,
                           shuffle_rng, start, self.phase)
        lines = src.lines
        first = read_image(lines[start][2], new_h, new_w, p.is_color)
        if first is None:
            raise self._error(f"could not load image '{root + lines[start][0]}'",
                              "image_data_param.source")
        with self._guard("image_data_param.source"):
            shape = tr.output_shape(hwc_to_chw(first).shape)
        self._top_shapes = [(p.batch_size,) + shape, (p.batch_size,)]
        self.transformer = tr
        self._start(src, self.lp.data_param.prefetch)


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
    import h5py

    from ..errors import FormatError
    from ..formats.weights import h5_array

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

    def __init__(self, layer_name, files, names, batch_size, shuffle_rng, phase, first_arrays):
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


@register("HDF5Data")
class HDF5DataLayer(_BaseDataLayer):
    """Caffe's HDF5Data layer: each top reads the dataset of its own name (float or integer
    data, as float) from the HDF5 files listed in ``source`` (whitespace-separated names,
    relative to the working directory); rows in order (or shuffled, files and rows, with
    ``shuffle``), file after file, one file in memory at a time, wrapping around. No
    transformation is allowed. As in Caffe, batches are copied in forward (no thread)."""

    min_tops = 1

    def setup(self, bottom_shapes):
        p = self.lp.hdf5_data_param
        if self.lp.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data", "transform_param")
        self.check(p.batch_size > 0, "must be positive", "hdf5_data_param.batch_size")
        self.check(bool(p.source), "a list file must be given", "hdf5_data_param.source")
        with self._guard("hdf5_data_param.source"):
            files = [os.path.abspath(f) for f in read_hdf5_list(p.source)]
        if not files:
            raise self._error(f"the list file '{p.source}' names no HDF5 file",
                              "hdf5_data_param.source")
        rng = layer_rng() if p.shuffle else None
        src = _HDF5Source(self.name, files, list(self.top_names), p.batch_size, rng, self.phase,
                          None)
        self._top_shapes = [(p.batch_size,) + tuple(s) for s in src.shapes]
        # As in Caffe, no prefetching: rows come from memory; h5py stays in this thread.
        self._start(src, 0)


@register("HDF5Output")
class HDF5OutputLayer(Layer):
    """Caffe's HDF5Output layer: writes its two bottoms as datasets ``data`` and ``label``
    (float32, Caffe's legacy 4-axis shapes N×C×H×W) to ``hdf5_output_param.file_name``,
    created (truncated) at setup. Caffe can write one batch only; here each further forward
    appends its rows. It computes nothing, and passes no gradient back."""

    exact_bottoms = 2
    exact_tops = 0

    def setup(self, bottom_shapes):
        import h5py

        name = self.lp.hdf5_output_param.file_name
        self.check(bool(name), "a file name must be given", "hdf5_output_param.file_name")
        self.close()
        try:
            self._file = h5py.File(name, "w")
        except (OSError, ValueError) as e:
            raise DataLayerError(f"hdf5_output_param.file_name: cannot create HDF5 file "
                                 f"'{name}': {e}", layer=self.name) from None
        self._finalizer = weakref.finalize(self, self._file.close)
        self.file_name = name

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def reshape(self, bottom_shapes):
        self.check(bottom_shapes[0][:1] == bottom_shapes[1][:1],
                   f"data and label must have the same batch size ({bottom_shapes[0]} and "
                   f"{bottom_shapes[1]})")
        return []

    def _legacy(self, a: np.ndarray) -> np.ndarray:
        if a.ndim > 4:
            raise self.error(f"cannot save a {a.ndim}-axis blob (at most 4 axes)")
        return a.reshape(a.shape + (1,) * (4 - a.ndim))

    def forward(self, data, label):
        if data.shape[0] != label.shape[0]:
            raise self.error(f"data and label must have the same batch size "
                             f"({data.shape[0]} and {label.shape[0]})")
        f = getattr(self, "_file", None)
        if f is None:
            raise self.error("the output file is closed")
        for key, t in (("data", data), ("label", label)):
            a = self._legacy(t.detach().to("cpu", torch.float32).numpy())
            if key not in f:
                f.create_dataset(key, data=a, maxshape=(None,) + a.shape[1:],
                                 chunks=True)
            else:
                ds = f[key]
                if ds.shape[1:] != a.shape[1:]:
                    raise self.error(f"{key} rows of shape {a.shape[1:]} cannot follow the "
                                     f"file's rows of shape {ds.shape[1:]}")
                n = ds.shape[0]
                ds.resize(n + a.shape[0], axis=0)
                ds[n:] = a
        f.flush()
        return ()

    def close(self) -> None:
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin()
            self._finalizer = None
            self._file = None


# ----------------------------------------------------------------------------------------------
# MemoryData
# ----------------------------------------------------------------------------------------------
@register("MemoryData")
class MemoryDataLayer(_BaseDataLayer):
    """Caffe's MemoryData layer: batches of batch_size×channels×height×width data and their
    labels, taken in turn from arrays given by ``reset`` (pycaffe's
    ``net.set_input_arrays(data, labels)``), wrapping around. The arrays are not copied
    (as in Caffe) and not transformed. The label top keeps its setup shape (batch,), where
    Caffe's forward reshapes it to batch×1×1×1."""

    exact_tops = 2

    def setup(self, bottom_shapes):
        p = self.lp.memory_data_param
        for f in ("batch_size", "channels", "height", "width"):
            self.check(getattr(p, f) > 0, "batch_size, channels, height and width must be "
                       "given and positive", f"memory_data_param.{f}")
        self.batch_size = int(p.batch_size)
        self.channels, self.height, self.width = int(p.channels), int(p.height), int(p.width)
        self._data = self._labels = None
        self._n = self._pos = 0
        self._top_shapes = [(self.batch_size, self.channels, self.height, self.width),
                            (self.batch_size,)]

    def reset(self, data: np.ndarray, labels: np.ndarray, n: int | None = None) -> None:
        """Use these arrays (n rows, a multiple of the batch size) from the next forward."""
        n = int(len(data) if n is None else n)
        if n <= 0 or n % self.batch_size:
            raise self.error(f"the number of rows ({n}) must be a positive multiple of the "
                             f"batch size ({self.batch_size})")
        self._data = torch.from_numpy(data).reshape(len(data), -1)[:n]
        self._labels = torch.from_numpy(labels).reshape(len(labels), -1)[:n, 0]
        self._n, self._pos = n, 0

    def set_batch_size(self, new_size: int) -> None:
        """Caffe's MemoryDataLayer::set_batch_size."""
        self.check(new_size > 0, "must be positive", "batch_size")
        self.batch_size = int(new_size)
        self._top_shapes = [(self.batch_size, self.channels, self.height, self.width),
                            (self.batch_size,)]

    def forward(self):
        if self._data is None:
            raise self._error("MemoryData needs its arrays first: call "
                              "net.set_input_arrays(data, labels)")
        b, pos = self.batch_size, self._pos
        dev, dtype = self._where.device, self._where.dtype
        data = self._data[pos:pos + b].reshape(b, self.channels, self.height, self.width)
        labels = self._labels[pos:pos + b]
        self._pos = (pos + b) % self._n
        return (data.to(device=dev, dtype=dtype, non_blocking=True),
                labels.to(device=dev, dtype=dtype, non_blocking=True))


def set_input_arrays(net, data: np.ndarray, labels: np.ndarray) -> None:
    """pycaffe's Net.set_input_arrays: feed a net whose first layer is MemoryData.

    data: float32, C-contiguous, N×C×H×W matching the layer; labels: float32 with N rows
    (N or N×1×1×1). N must be a multiple of the batch size.
    """
    layer = net.layers[0].layer if len(net.layers) else None
    if not isinstance(layer, MemoryDataLayer):
        raise DecaffeError("set_input_arrays may only be called if the first layer is a "
                           "MemoryData layer")
    if isinstance(labels, np.ndarray) and labels.ndim == 1:
        labels = np.ascontiguousarray(labels[:, None, None, None])
    for what, arr, dims in (("data array", data, (layer.channels, layer.height, layer.width)),
                            ("labels array", labels, (1, 1, 1))):
        if not isinstance(arr, np.ndarray):
            raise DecaffeError(f"{what} must be a numpy array")
        if not arr.flags.c_contiguous:
            raise DecaffeError(f"{what} must be C contiguous")
        if arr.ndim != 4:
            raise DecaffeError(f"{what} must be 4-d")
        if arr.dtype != np.float32:
            raise DecaffeError(f"{what} must be float32")
        if tuple(arr.shape[1:]) != dims:
            raise DecaffeError(f"{what} has shape {arr.shape}; each row must be "
                               f"{'x'.join(map(str, dims))}")
    if data.shape[0] != labels.shape[0]:
        raise DecaffeError("data and labels must have the same first dimension")
    if data.shape[0] % layer.batch_size:
        raise DecaffeError("first dimensions of input arrays must be a multiple of batch size")
    net._input_arrays = [data, labels]  # as pycaffe, keep the arrays alive with the net
    layer.reset(data, labels, data.shape[0])


# ----------------------------------------------------------------------------------------------
# WindowData
# ----------------------------------------------------------------------------------------------
def _cround(x: float) -> int:
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def read_window_file(path: str, root: str = ""):
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

    def take(kind, what):
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

    def __init__(self, layer_name, images, fg, bg, p, crop, mirror, scale, mean, mean_values,
                 channels, rng, cache):
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

    def _warp(self, img, window, do_mirror):
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


@register("WindowData")
class WindowDataLayer(_BaseDataLayer):
    """Caffe's WindowData layer (R-CNN fine-tuning): windows from a window file, each
    batch ``batch_size - int(batch_size·fg_fraction)`` background windows (overlap <
    bg_threshold, label 0) then foreground ones (overlap >= fg_threshold), drawn at random;
    each warped bilinearly to crop×crop (transform_param.crop_size, required), enlarged by
    ``context_pad`` pixels of context (``crop_mode: "square"`` squares it first) with
    out-of-image parts left zero, mirrored at random with transform_param.mirror, then
    (pixel − mean) × window_data_param.scale, the mean file read at its centre."""

    exact_tops = 2

    def setup(self, bottom_shapes):
        p = self.lp.window_data_param
        self.check(bool(p.source), "a window file must be given", "window_data_param.source")
        self.check(p.batch_size > 0, "must be positive", "window_data_param.batch_size")
        self.check(p.crop_mode in ("warp", "square"),
                   f"must be 'warp' or 'square', not {p.crop_mode!r}",
                   "window_data_param.crop_mode")
        tp = transform_param_of(self.lp, p)
        crop = int(tp.crop_size)
        self.check(crop > 0, "WindowData needs a positive crop_size", "transform_param.crop_size")
        self.check(crop > 2 * p.context_pad, f"context_pad {p.context_pad} leaves nothing of a "
                   f"{crop}-pixel crop", "window_data_param.context_pad")
        with self._guard("window_data_param.source"):
            images, windows = read_window_file(p.source, p.root_folder)
        images = [(os.path.abspath(path), size) for path, size in images]
        fg_t, bg_t = np.float32(p.fg_threshold), np.float32(p.bg_threshold)
        fg, bg = [], []
        for w in windows:
            if not 0 <= w[0] < len(images):
                raise self._error(f"a window refers to image {w[0]}, the file lists "
                                  f"{len(images)}", "window_data_param.source")
            if np.float32(w[2]) >= fg_t:
                self.check(w[1] > 0, f"foreground window {w[3:]} of image {w[0]} has label "
                           f"{w[1]}; foreground labels must be positive",
                           "window_data_param.source")
                fg.append(w)
            elif np.float32(w[2]) < bg_t:
                bg.append((w[0], 0, 0.0) + w[3:])
        if not fg or not bg:
            raise self._error(f"the window file has {len(fg)} foreground and {len(bg)} "
                              "background windows; both kinds are needed",
                              "window_data_param.source")
        channels = images[-1][1][0]
        mean = mean_values = None
        if tp.HasField("mean_file"):
            self.check(not len(tp.mean_value), "cannot specify mean_file and mean_value at the "
                       "same time", "transform_param")
            with self._guard("transform_param.mean_file"):
                mean = load_mean_file(tp.mean_file)
            off = int((mean.shape[2] - crop) / 2)
            self.check(off >= 0 and off + crop <= min(mean.shape[1:]),
                       f"the mean ({'x'.join(map(str, mean.shape))}) is smaller than the crop "
                       f"{crop}", "transform_param.mean_file")
        elif len(tp.mean_value):
            self.check(len(tp.mean_value) in (1, channels), "specify either 1 mean_value or "
                       f"as many as channels ({channels})", "transform_param.mean_value")
            mean_values = np.asarray(list(tp.mean_value) * (channels if len(tp.mean_value) == 1
                                                            else 1), np.float32)
        cache = None
        if p.cache_images:
            cache = []
            for path, _ in images:
                try:
                    with open(path, "rb") as f:
                        cache.append(f.read())
                except OSError as e:
                    raise self._error(f"cannot read image '{path}': {e.strerror}",
                                      "window_data_param.cache_images") from None
        scale = p.scale if p.HasField("scale") else tp.scale
        src = _WindowSource(self.name, images, fg, bg, p, crop, bool(tp.mirror), scale, mean,
                            mean_values, channels, layer_rng(), cache)
        self._top_shapes = [(int(p.batch_size), channels, crop, crop), (int(p.batch_size),)]
        self._start(src, self.lp.data_param.prefetch)

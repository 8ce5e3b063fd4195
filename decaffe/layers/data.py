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
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import h5py
import numpy as np
import torch
from google.protobuf.message import Message

from ..blob import check_memory, check_shape
from ..data.datum import (
    datum_array,
    hwc_to_chw,
    parse_datum,
    read_image,
)
from ..data.db import READ, open_db
from ..data.prefetch import Prefetcher, SyncLoader
from ..data.sources import (
    DataLayerError,
    Source,
    _CallableSource,
    _close_all,
    _DatumSource,
    _HDF5Source,
    _ImageSource,
    _WindowSource,
    _with_state,
    read_hdf5_list,
    read_image_list,
    read_window_file,
    skip_records,
)
from ..data.transformer import DataTransformer, load_mean_file
from ..errors import DataError, DecaffeError
from ..layer import Layer, Shape, Tops, register
from ..proto import caffe_pb2

if TYPE_CHECKING:
    from ..net import Net


class _ListParam(Protocol):
    """A list-reading data layer's parameter message (ImageData's and the forks')."""

    shuffle: bool
    rand_skip: int


def layer_rng() -> np.random.Generator:
    """A generator for one layer, seeded from torch's global generator (set_random_seed)."""
    seed = int(torch.empty((), dtype=torch.int64).random_())
    return np.random.default_rng(seed)


def transform_param_of(lp: caffe_pb2.LayerParameter,
                       legacy: Message | None = None) -> caffe_pb2.TransformationParameter:
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


class _BaseDataLayer(Layer):
    """No bottoms; tops of shapes fixed at setup; batches from a loader (thread or inline)."""

    exact_bottoms = 0
    is_data = True

    def __init__(self, lp: caffe_pb2.LayerParameter, phase: int) -> None:
        super().__init__(lp, phase)
        # Follows the net's device and dtype (Net moves and casts its layers' buffers).
        self.register_buffer("_where", torch.empty(0), persistent=False)
        self._loader = None
        self._source = None
        self._depth = 0
        self._position = None
        self._finalizer = None
        self._top_shapes: list[tuple[int, ...]] = []

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
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

    def _start(self, source: Source | Callable[[], tuple], depth: int) -> None:
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

    def forward(self) -> Tops:
        if self._loader is None:
            raise self._error("the layer is closed or was never set up")
        dev, dtype = self._where.device, self._where.dtype
        if dev.type == "cuda":
            self._loader.pin = True
        *batch, self._position = self._loader.get()
        return tuple(t.to(device=dev, dtype=dtype, non_blocking=True) for t in batch)


@register("Data")
class DataLayer(_BaseDataLayer):
    """Caffe's Data layer: batches of Datums from an LMDB or LevelDB, transformed.

    Bottoms: none.
    Tops: data, batch_size×C×H×W (C×H×W: the first record's, after transform_param's crop);
        optionally label, (batch_size,).
    Blobs: none.
    Params: data_param.source (required), batch_size (required, > 0), backend (default
        LEVELDB), rand_skip (default 0), force_encoded_color (default false), prefetch (default
        4), and the legacy scale, mean_file, crop_size, mirror (moved into transform_param where
        it lacks them); transform_param.
    Source: src/caffe/layers/data_layer.cpp (and base_data_layer.cpp, data_transformer.cpp).

    Records are read in key order from the start (after skipping a random number of records
    below ``rand_skip``), wrapping around at the end. The data top's shape comes from the first
    record (Caffe reshapes to each batch's first record; a batch whose first record has another
    size gives a top of that size).
    """

    min_tops = 1
    max_tops = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
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


def shuffle_and_skip(layer: Layer, p: _ListParam, rng: np.random.Generator, count: int, field: str,
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


@register("ImageData")
class ImageDataLayer(_BaseDataLayer):
    """Caffe's ImageData layer: images named in a list file, with their labels, transformed.

    Bottoms: none.
    Tops: data, batch_size×C×H×W (C 3 or 1 by is_color; H×W the first image's, or
        new_height×new_width, after transform_param's crop); label, (batch_size,).
    Blobs: none.
    Params: image_data_param.source (required), batch_size (default 1, > 0), rand_skip
        (default 0), shuffle (default false), new_height and new_width (default 0: no resize;
        set both or neither), is_color (default true), root_folder (default ""), and the legacy
        scale, mean_file, crop_size, mirror (moved into transform_param where it lacks them);
        transform_param; data_param.prefetch (default 4).
    Source: src/caffe/layers/image_data_layer.cpp.

    ``source`` holds 'FILENAME LABEL' lines; each image is read from ``root_folder`` + FILENAME
    through OpenCV (colour BGR or gray by ``is_color``), resized bilinearly to
    new_height×new_width when both are set, then transformed. ``shuffle`` shuffles the list at
    setup and at every wrap-around.
    """

    exact_tops = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.image_data_param
        new_h, new_w = int(p.new_height), int(p.new_width)
        self.check((new_h == 0) == (new_w == 0),
                   "new_height and new_width must be set together", "image_data_param.new_height")
        self.check(p.batch_size > 0, "must be positive", "image_data_param.batch_size")
        self.check(bool(p.source), "a list file must be given", "image_data_param.source")
        if new_h and new_w:  # the resize would allocate it: refuse what a blob cannot hold
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


@register("HDF5Data")
class HDF5DataLayer(_BaseDataLayer):
    """Caffe's HDF5Data layer: each top reads the dataset of its own name from a list of HDF5 files.

    Bottoms: none.
    Tops: one or more, each batch_size × its dataset's row shape (float).
    Blobs: none.
    Params: hdf5_data_param.source (required), batch_size (required, > 0), shuffle (default
        false); a transform_param is refused.
    Source: src/caffe/layers/hdf5_data_layer.cpp.

    Float or integer data is read as float from the HDF5 files listed in ``source``
    (whitespace-separated names, relative to the working directory); rows in order (or
    shuffled, files and rows, with ``shuffle``), file after file, one file in memory at a time,
    wrapping around. As in Caffe, batches are copied in forward (no thread).
    """

    min_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
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
    """Caffe's HDF5Output layer: writes its two bottoms to an HDF5 file as ``data`` and ``label``.

    Bottoms: data, N×… ; label, N×… (at most 4 axes each); neither gets a gradient.
    Tops: none.
    Blobs: none.
    Params: hdf5_output_param.file_name (required).
    Source: src/caffe/layers/hdf5_output_layer.cpp.

    The datasets are float32 in Caffe's legacy 4-axis shapes N×C×H×W, in a file created
    (truncated) at setup. Caffe can write one batch only; here each further forward appends its
    rows. It computes nothing, and passes no gradient back.
    """

    exact_bottoms = 2
    exact_tops = 0

    def setup(self, bottom_shapes: list[Shape]) -> None:
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

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self.check(bottom_shapes[0][:1] == bottom_shapes[1][:1],
                   f"data and label must have the same batch size ({bottom_shapes[0]} and "
                   f"{bottom_shapes[1]})")
        return []

    def _legacy(self, a: np.ndarray) -> np.ndarray:
        if a.ndim > 4:
            raise self.error(f"cannot save a {a.ndim}-axis blob (at most 4 axes)")
        return a.reshape(a.shape + (1,) * (4 - a.ndim))

    def forward(self, data: torch.Tensor, label: torch.Tensor) -> Tops:
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
    """Caffe's MemoryData layer: batches taken in turn from arrays given by pycaffe.

    Bottoms: none.
    Tops: data, batch_size×channels×height×width; label, (batch_size,).
    Blobs: none.
    Params: memory_data_param.batch_size, channels, height, width (all required, > 0; no
        defaults); transform_param is not read.
    Source: src/caffe/layers/memory_data_layer.cpp.

    The arrays come from ``reset`` (pycaffe's ``net.set_input_arrays(data, labels)``), wrapping
    around. They are not copied (as in Caffe) and not transformed. The label top keeps its
    setup shape (batch_size,), where Caffe's forward reshapes it to batch_size×1×1×1.
    """

    exact_tops = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
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

    def forward(self) -> Tops:
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


def set_input_arrays(net: Net, data: np.ndarray, labels: np.ndarray) -> None:
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


@register("WindowData")
class WindowDataLayer(_BaseDataLayer):
    """Caffe's WindowData layer (R-CNN fine-tuning): warped foreground and background windows.

    Bottoms: none.
    Tops: data, batch_size×C×crop×crop (C the images' channels); label, (batch_size,).
    Blobs: none.
    Params: window_data_param.source (required), batch_size (required, > 0), fg_threshold
        (default 0.5), bg_threshold (default 0.5), fg_fraction (default 0.25), context_pad
        (default 0), crop_mode (default "warp"), cache_images (default false), root_folder
        (default ""), scale (default 1), and the legacy mean_file, crop_size, mirror (moved into
        transform_param where it lacks them); transform_param.crop_size (required), mirror,
        mean_file or mean_value; data_param.prefetch (default 4).
    Source: src/caffe/layers/window_data_layer.cpp.

    Each batch is ``batch_size - int(batch_size·fg_fraction)`` background windows (overlap <
    bg_threshold, label 0) then foreground ones (overlap >= fg_threshold), drawn at random;
    each warped bilinearly to crop×crop (transform_param.crop_size), enlarged by
    ``context_pad`` pixels of context (``crop_mode: "square"`` squares it first) with
    out-of-image parts left zero, mirrored at random with transform_param.mirror, then
    (pixel − mean) × window_data_param.scale, the mean file read at its centre.
    """

    exact_tops = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
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

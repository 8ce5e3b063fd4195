"""The forks' data layers.

- ``DenseImageData`` (alexgkendall/caffe-segnet, TimoSaemann/caffe-enet): image and label-image
  pairs listed in a text file, for per-pixel labels.
- ``ImageSegData`` (DeepLab v2, used by PSPNet's nets): image and label-image (or class) lists
  with DeepLab's joint image/label transformer (scale factors, mean padding, crop, mirror).
- ``VideoData`` (yjxiong/caffe, Temporal Segment Networks): frame-folder lists, segment
  sampling, RGB/flow stacks.
- ``AnnotatedData`` (the SSD fork): labelled boxes with the images; ``LaneData``
  (eric612/MobileNet-YOLO): its variant for lane points and masks.

VideoData (TSN): each entry of the list is a folder of extracted frames (RGB images, or the
x and y optical flow images) with its frame count and class. A batch item samples
``num_segments`` snippets of ``new_length`` consecutive frames, one from each equal part of
the video (at random in TRAIN, in the part's middle in TEST), stacks all their channels into
one C×H×W example (C = channels per frame × new_length × num_segments) and transforms it
with TSN's transformer (multi-scale and fixed-corner crops, mirror that turns the x flow
around).

AnnotatedData (SSD): AnnotatedDatum records (an image Datum plus labelled boxes) from an
LMDB or LevelDB, with the fork's photometric distortion, expansion, batch sampling (random
crops under constraints) and resizing, then the usual scale, mean, crop and mirror.
"""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import torch
from google.protobuf.message import DecodeError

from ... import bbox as B
from ...data import annotation as A
from ...data.datum import decode_image_bytes, hwc_to_chw, read_image, record_name
from ...data.db import DB, READ, Cursor, open_db
from ...data.sources import (
    CursorSource,
    DataLayerError,
    ListSource,
    _solver_keep,
    open_list,
    skip_records,
)
from ...data.transformer import DataTransformer, load_mean_file
from ...errors import DataError
from ...layer import Shape, Tops, register
from ...proto import caffe_pb2
from ..data import _BaseDataLayer, layer_rng, shuffle_and_skip, transform_param_of


def read_pair_list(path: str) -> list[tuple[str, str]]:
    """The (image, label image) names of a DenseImageData list: whitespace-separated pairs,
    read as the fork's `infile >> filename >> label_filename` loop does."""
    with open_list(path) as f:
        words = f.read().split()
    if len(words) % 2:
        raise DataError(f"the list file '{path}' has an image '{words[-1]}' without a label "
                        "image")
    return list(zip(words[0::2], words[1::2]))


class _DenseSource(ListSource):
    """Reads one batch of image/label pairs (runs in the prefetch worker)."""

    def __init__(self, layer: str, lines: list[tuple[str, str]], new_hw: tuple[int, int],
                 label_hw: tuple[int, int], is_color: bool, transformer: DataTransformer,
                 batch_size: int, shuffle_rng: np.random.Generator | None, start: int) -> None:
        self.new_hw, self.label_hw = new_hw, label_hw
        self.is_color, self.transformer = is_color, transformer
        super().__init__(layer, lines, batch_size, shuffle_rng, start)

    def produce(self) -> tuple:
        items = self.next_items()
        images, labels = [], []
        for img_path, lab_path in items:
            img = read_image(img_path, *self.new_hw, self.is_color)
            if img is None:
                raise DataLayerError(f"could not load image '{img_path}'", layer=self.layer)
            images.append(hwc_to_chw(img))
            labels.append(read_label(lab_path, self.label_hw, self.layer))
        try:
            data = self.transformer.transform_list(images, [f"image '{p}'" for p, _ in items])
        except DataError as e:
            raise DataLayerError(str(e), layer=self.layer) from None
        label = torch.from_numpy(np.stack(labels)[:, None].astype(np.float32))
        return data, label


def read_label(path: str, hw: tuple[int, int], layer: str) -> np.ndarray:
    """A label image as a grayscale H×W array, resized nearest-neighbour to hw (h, w > 0)."""
    lab = read_image(path, 0, 0, False)
    if lab is None:
        raise DataLayerError(f"could not load label image '{path}'", layer=layer)
    if hw[0] > 0 and hw[1] > 0:
        lab = cv2.resize(lab, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return lab


@register("DenseImageData")
class DenseImageDataLayer(_BaseDataLayer):
    """SegNet's DenseImageData: batches of images and their per-pixel label images from a list.

    Bottoms: none.
    Tops: data, N×C×H×W (C = 3 in colour, 1 in gray); label, N×1×H/f×W/f (f =
    label_divide_factor), the label images' raw values.
    Blobs: none.
    Params: dense_image_data_param (DenseImageDataParameter): source (required; 'IMAGE
    LABEL_IMAGE' pairs), root_folder (default ""), batch_size (required, > 0), new_height,
    new_width (default 0: keep; set both or neither), is_color (default true), shuffle
    (default false), rand_skip (default 0), label_divide_factor (ENet's, decaffe's number
    30101; default 1); transform_param (mean, scale; mirror and crop_size are refused);
    data_param.prefetch.
    Source: alexgkendall/caffe-segnet src/caffe/layers/dense_image_data_layer.cpp;
    TimoSaemann/caffe-enet for label_divide_factor.

    Images are read in colour (BGR) or gray and resized bilinearly to new_height × new_width
    when both are set, then go through transform_param; label images are read as gray and
    resized nearest-neighbour to (new_height, new_width) divided by label_divide_factor, and
    keep their raw values (no mean, no scale). shuffle reshuffles at setup and every
    wrap-around; rand_skip skips a random number of pairs at the start. mirror and crop_size
    are refused because the fork would transform the image and its label differently.
    """

    exact_tops = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.dense_image_data_param
        f = "dense_image_data_param"
        new_h, new_w = int(p.new_height), int(p.new_width)
        self.check((new_h == 0) == (new_w == 0), "new_height and new_width must be set "
                   "together", f"{f}.new_height")
        self.check(p.batch_size > 0, "must be positive", f"{f}.batch_size")
        self.check(bool(p.source), "a list file must be given", f"{f}.source")
        factor = int(p.label_divide_factor)
        self.check(factor >= 1, f"must be >= 1, not {factor}", f"{f}.label_divide_factor")
        tp = transform_param_of(self.lp)
        self.check(not tp.mirror and not tp.crop_size, "mirror and crop_size would transform "
                   "the image and its label differently", "transform_param")
        rng = layer_rng()
        with self._guard("transform_param"):
            tr = DataTransformer(tp, self.phase, rng=rng)
        with self._guard(f"{f}.source"):
            pairs = read_pair_list(p.source)
        if not pairs:
            raise self._error(f"the list file '{p.source}' lists no images", f"{f}.source")
        root = p.root_folder
        lines = [(os.path.abspath(root + a), os.path.abspath(root + b)) for a, b in pairs]
        shuffle_rng, start = shuffle_and_skip(self, p, rng, len(lines), f, "pairs")
        src = _DenseSource(self.name, lines, (new_h, new_w), (0, 0), p.is_color, tr,
                           p.batch_size, shuffle_rng, start)
        first = read_image(src.lines[start][0], new_h, new_w, p.is_color)
        if first is None:
            raise self._error(f"could not load image '{src.lines[start][0]}'", f"{f}.source")
        h, w = first.shape[:2]
        label_hw = (new_h // factor, new_w // factor) if new_h else (h // factor, w // factor)
        with self._guard(f"{f}.source"):
            shape = tr.output_shape(hwc_to_chw(first).shape)
        self._top_shapes = [(p.batch_size,) + shape, (p.batch_size, 1) + label_hw]
        src.label_hw = label_hw
        self.transformer = tr
        self._start(src, self.lp.data_param.prefetch)


# ----------------------------------------------------------------------------------------------
# ImageSegData (DeepLab v2)
# ----------------------------------------------------------------------------------------------
_INT = re.compile(r"[+-]?\d+")


def read_seg_list(path: str, label_type: int) -> list[tuple[str, str]]:
    """The (image, label) entries of an ImageSegData list, one per line as DeepLab reads them
    (`iss >> imgfn >> segfn`; words after these are ignored): the label is a label image's
    name (PIXEL), an integer class (IMAGE) or absent (NONE). Blank lines are skipped. A line
    without the label its type needs raises a DataError naming the file and line."""
    try:
        f = open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise DataError(f"cannot open the list file '{path}': {e.strerror or e}") from None
    out = []
    kind = caffe_pb2.ImageDataParameter.LabelType.Name(label_type)
    with f:
        for lineno, line in enumerate(f, 1):
            words = line.split()
            if not words:
                continue
            if label_type == caffe_pb2.ImageDataParameter.NONE:
                out.append((words[0], ""))
                continue
            if len(words) < 2:
                raise DataError(f"{path}:{lineno}: label_type {kind} needs 'IMAGE LABEL', got "
                                f"{line.rstrip()!r}")
            if label_type == caffe_pb2.ImageDataParameter.IMAGE and \
                    not _INT.fullmatch(words[1]):
                raise DataError(f"{path}:{lineno}: label_type IMAGE needs an integer class, "
                                f"got {words[1]!r}")
            out.append((words[0], words[1]))
    return out


class SegTransformer:
    """DeepLab v2's DataTransformer::TransformImgAndSeg for one image and its label map: a
    scale drawn from `scale_factors` (image bilinear, label nearest; size int(side·s)), the
    image padded at the bottom and right with the mean values and the label with
    ignore_label up to the crop, a random (TRAIN) or centred (TEST) crop of both, then
    (pixel − mean_value[c])·scale for the image and the raw values for the label, both
    mirrored together. Draws: mirror, then the scale, then the crop's h_off and w_off."""

    def __init__(self, tp: caffe_pb2.TransformationParameter, phase: int,
                 rng: np.random.Generator) -> None:
        self.phase, self.rng = phase, rng
        self.scale = np.float32(tp.scale)
        self.mirror = bool(tp.mirror)
        self.mean_values = [float(v) for v in tp.mean_value]
        self.scale_factors = [float(np.float32(v)) for v in tp.scale_factors]
        if tp.HasField("crop_size"):
            self.crop_h = self.crop_w = int(tp.crop_size)
        elif tp.HasField("crop_height"):
            self.crop_h, self.crop_w = int(tp.crop_height), int(tp.crop_width)
        else:  # hszhao/PSPNet names them crop_h and crop_w
            self.crop_h, self.crop_w = int(tp.crop_h), int(tp.crop_w)

    def mean_for(self, channels: int) -> np.ndarray:
        """The mean value of each channel (one value serves all), as float32."""
        mv = self.mean_values
        if not mv:
            return np.zeros(channels, np.float32)
        if len(mv) not in (1, channels):
            raise DataError(f"transform_param.mean_value: specify either 1 mean_value or as "
                            f"many as channels ({channels}), not {len(mv)}")
        return np.asarray(mv * channels if len(mv) == 1 else mv, np.float32)

    def transform(self, img: np.ndarray, seg: np.ndarray, ignore_label: int,
                  out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """img: H×W×C (or H×W) uint8; seg: H×W uint8 of the same size. Returns the C×h×w
        float32 data and the h×w float32 label, (h, w) = out_hw; a DataError where the
        transformed image is not of that size (the fork would read past it)."""
        if img.ndim == 2:
            img = img[:, :, None]
        channels = img.shape[2]
        mean = self.mean_for(channels)
        do_mirror = self.mirror and bool(self.rng.integers(2))
        h, w = img.shape[:2]
        if self.scale_factors:
            s = np.float32(self.scale_factors[int(self.rng.integers(len(self.scale_factors)))])
            if s != 1:
                h, w = int(np.float32(h) * s), int(np.float32(w) * s)
                if h <= 0 or w <= 0:
                    raise DataError(f"scale factor {float(s)} makes the image empty")
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
                if img.ndim == 2:
                    img = img[:, :, None]
                seg = cv2.resize(seg, (w, h), interpolation=cv2.INTER_NEAREST)
        pixels = img.astype(np.float32)
        pad_h, pad_w = max(self.crop_h - h, 0), max(self.crop_w - w, 0)
        if pad_h or pad_w:
            # cv::copyMakeBorder with the mean pixel (a uint8 label saturates ignore_label)
            pixels = np.concatenate([pixels, np.broadcast_to(mean, (pad_h, w, channels))], 0)
            pixels = np.concatenate([pixels, np.broadcast_to(mean, (h + pad_h, pad_w,
                                                                    channels))], 1)
            seg = np.pad(seg, ((0, pad_h), (0, pad_w)), constant_values=min(max(
                ignore_label, 0), 255))
            h, w = h + pad_h, w + pad_w
        if self.crop_h and self.crop_w:
            if self.phase == caffe_pb2.TRAIN:
                h_off = int(self.rng.integers(h - self.crop_h + 1))
                w_off = int(self.rng.integers(w - self.crop_w + 1))
            else:
                h_off, w_off = (h - self.crop_h) // 2, (w - self.crop_w) // 2
            pixels = pixels[h_off:h_off + self.crop_h, w_off:w_off + self.crop_w]
            seg = seg[h_off:h_off + self.crop_h, w_off:w_off + self.crop_w]
        if pixels.shape[:2] != tuple(out_hw):
            raise DataError(f"is {pixels.shape[0]}x{pixels.shape[1]} after the "
                            f"transformation but the data top is {out_hw[0]}x{out_hw[1]} "
                            "(every image must have the first one's size without a crop)")
        data = (pixels - mean) * self.scale
        label = seg.astype(np.float32)
        if do_mirror:
            data, label = data[:, ::-1], label[:, ::-1]
        return np.ascontiguousarray(data.transpose(2, 0, 1)), np.ascontiguousarray(label)


class _SegSource(ListSource):
    """Reads and transforms one batch of ImageSegData entries (runs in the prefetch worker)."""

    def __init__(self, layer: str, lines: list[tuple[str, str]], new_hw: tuple[int, int],
                 is_color: bool, label_type: int, ignore_label: int, transformer: SegTransformer,
                 out_hw: tuple[int, int], batch_size: int, shuffle_rng: np.random.Generator | None,
                 start: int) -> None:
        self.new_hw, self.is_color, self.label_type = new_hw, is_color, label_type
        self.ignore_label, self.transformer, self.out_hw = ignore_label, transformer, out_hw
        super().__init__(layer, lines, batch_size, shuffle_rng, start)

    def _label(self, item: tuple[str, str], hw: tuple[int, int]) -> np.ndarray:
        if self.label_type == caffe_pb2.ImageDataParameter.PIXEL:
            # DeepLab reads the label map with ReadImageToCVMat: gray, resized bilinearly
            seg = read_image(item[1], *self.new_hw, False)
            if seg is None:
                raise DataLayerError(f"could not load label image '{item[1]}'", layer=self.layer)
            if seg.dtype != np.uint8:
                raise DataLayerError(f"label image '{item[1]}' is not 8-bit", layer=self.layer)
            if seg.shape[:2] != hw:
                raise DataLayerError(f"label image '{item[1]}' is {seg.shape[0]}x"
                                     f"{seg.shape[1]} but its image '{item[0]}' is "
                                     f"{hw[0]}x{hw[1]}", layer=self.layer)
            return seg
        value = int(item[1]) if self.label_type == caffe_pb2.ImageDataParameter.IMAGE \
            else self.ignore_label
        return np.full(hw, min(max(value, 0), 255), np.uint8)  # cv::Scalar saturates

    def produce(self) -> tuple:
        items = self.next_items()
        n = len(items)
        data = np.empty((n, self.channels) + self.out_hw, np.float32)
        label = np.empty((n, 1) + self.out_hw, np.float32)
        dims = np.empty((n, 1, 1, 2), np.float32)
        for k, item in enumerate(items):
            img = read_image(item[0], *self.new_hw, self.is_color)
            if img is None:
                raise DataLayerError(f"could not load image '{item[0]}'", layer=self.layer)
            if img.dtype != np.uint8:
                raise DataLayerError(f"image '{item[0]}' is not 8-bit", layer=self.layer)
            hw = img.shape[:2]
            dims[k, 0, 0] = (min(self.out_hw[0], hw[0]), min(self.out_hw[1], hw[1]))
            seg = self._label(item, hw)
            try:
                data[k], label[k, 0] = self.transformer.transform(img, seg, self.ignore_label,
                                                                  self.out_hw)
            except DataError as e:
                raise DataLayerError(f"image '{item[0]}': {e}", layer=self.layer) from None
        return torch.from_numpy(data), torch.from_numpy(label), torch.from_numpy(dims)


@register("ImageSegData")
class ImageSegDataLayer(_BaseDataLayer):
    """DeepLab v2's ImageSegData: images with label maps (or classes), transformed together.

    Bottoms: none.
    Tops: data, N×C×H×W; optionally label, N×1×H×W; optionally data_dim, N×1×1×2: each
    image's (height, width) before the transformer, capped at the data top's. H × W is the
    crop, else the first image's size.
    Blobs: none.
    Params: image_data_param (ImageDataParameter): source (required; 'IMAGE LABEL' lines),
    root_folder (default ""), batch_size (default 1, > 0), label_type (IMAGE, default; PIXEL;
    NONE), ignore_label (default 255), new_height, new_width (default 0: keep; set both or
    neither), is_color (default true), shuffle (default false), rand_skip (default 0);
    transform_param: scale, mirror, mean_value, scale_factors, crop_size or
    crop_height/crop_width (PSPNet's crop_h/crop_w); mean_file is refused, as DeepLab
    refuses it; data_param.prefetch.
    Source: DeepLab v2 src/caffe/layers/image_seg_data_layer.cpp and
    DataTransformer::TransformImgAndSeg (data_transformer.cpp), as hszhao/PSPNet carries
    them.

    The label is a label image (PIXEL), one class for the whole image (IMAGE) or absent
    (NONE: every pixel ignore_label). Images are read in colour (BGR) or gray, images and
    label images resized bilinearly to new_height × new_width when both are set (DeepLab's
    ReadImageToCVMat, bilinear for the labels too), then go through SegTransformer
    (scale_factors, padding, crop, mirror, mean_value, scale). shuffle reshuffles at setup and
    every wrap-around; rand_skip skips a random number of entries at the start.
    """

    min_tops = 1
    max_tops = 3

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.image_data_param
        f = "image_data_param"
        tp = self.lp.transform_param
        self.check(not tp.HasField("mean_file"), "ImageSegData does not support a mean file "
                   "(as in DeepLab)", "transform_param.mean_file")
        pairs = [tp.HasField("crop_height") or tp.HasField("crop_width"),
                 tp.HasField("crop_h") or tp.HasField("crop_w")]
        self.check(tp.HasField("crop_height") == tp.HasField("crop_width")
                   and tp.HasField("crop_h") == tp.HasField("crop_w")
                   and tp.HasField("crop_size") + sum(pairs) <= 1,
                   "give either crop_size or both crop_height and crop_width (or PSPNet's "
                   "crop_h and crop_w)", "transform_param.crop_size")
        new_h, new_w = int(p.new_height), int(p.new_width)
        self.check((new_h == 0) == (new_w == 0), "new_height and new_width must be set "
                   "together", f"{f}.new_height")
        self.check(p.batch_size > 0, "must be positive", f"{f}.batch_size")
        self.check(bool(p.source), "a list file must be given", f"{f}.source")
        for v in tp.scale_factors:
            self.check(v > 0, f"must be positive, not {v}", "transform_param.scale_factors")
        rng = layer_rng()
        tr = SegTransformer(tp, self.phase, rng)
        with self._guard(f"{f}.source"):
            entries = read_seg_list(p.source, p.label_type)
        if not entries:
            raise self._error(f"the list file '{p.source}' lists no images", f"{f}.source")
        root = p.root_folder
        pixel = p.label_type == caffe_pb2.ImageDataParameter.PIXEL
        # Resolved now, as the working directory is now: reading ahead never depends on it.
        lines = [(os.path.abspath(root + a), os.path.abspath(root + b) if pixel else b)
                 for a, b in entries]
        shuffle_rng, start = shuffle_and_skip(self, p, rng, len(lines), f)
        src = _SegSource(self.name, lines, (new_h, new_w), p.is_color, p.label_type,
                         int(p.ignore_label), tr, (0, 0), p.batch_size, shuffle_rng, start)
        first = read_image(src.lines[start][0], new_h, new_w, p.is_color)
        if first is None:
            raise self._error(f"could not load image '{src.lines[start][0]}'", f"{f}.source")
        channels = 1 if first.ndim == 2 else first.shape[2]
        with self._guard("transform_param.mean_value"):
            tr.mean_for(channels)
        out_hw = (tr.crop_h, tr.crop_w) if tr.crop_h and tr.crop_w else first.shape[:2]
        src.out_hw, src.channels = tuple(int(v) for v in out_hw), channels
        n = int(p.batch_size)
        shapes = [(n, channels) + src.out_hw, (n, 1) + src.out_hw, (n, 1, 1, 2)]
        self._top_shapes = shapes[:len(self.top_names)]
        self._ntops = len(self.top_names)
        self.transformer = tr
        self._start(src, self.lp.data_param.prefetch)

    def forward(self) -> Tops:
        return super().forward()[:self._ntops]


# ----------------------------------------------------------------------------------------------
# TSN's VideoData
# ----------------------------------------------------------------------------------------------
_P = caffe_pb2.VideoDataParameter


def read_video_list(path: str) -> list[tuple[str, int, int]]:
    """The (folder, frame count, label) entries of a TSN list: 'FOLDER NUM_FRAMES LABEL' per
    line (the fork's `infile >> filename >> length >> label`). Blank lines are skipped; a line
    that does not parse raises a DataError naming the file and line."""
    out = []
    with open_list(path) as f:
        for lineno, line in enumerate(f, 1):
            words = line.split()
            if not words:
                continue
            try:
                if len(words) != 3:
                    raise ValueError
                length, label = int(words[1]), int(words[2])
            except ValueError:
                raise DataError(f"{path}:{lineno}: expected 'FOLDER NUM_FRAMES LABEL', got "
                                f"{line.rstrip()!r}") from None
            if length < 0 or not -2**31 <= label < 2**31:
                raise DataError(f"{path}:{lineno}: frame count {length} or label {label} out "
                                "of range")
            out.append((words[0], length, label))
    return out


def segment_offsets(duration: int, num_segments: int, new_length: int, train: bool,
                    rng: np.random.Generator | None) -> list[int]:
    """The 0-based start of each snippet (frames offset+1 .. offset+new_length are read):
    segments of int(duration / num_segments) frames; in TRAIN a random start in each
    (`rng() % (avg − new_length + 1)`), in TEST (avg − new_length + 1) / 2 into each; 0 for
    every snippet when a segment is shorter than new_length (the fork's choice)."""
    avg = duration // num_segments
    out = []
    for i in range(num_segments):
        if avg < new_length:
            out.append(0)
        elif train:
            out.append(int(rng.integers(avg - new_length + 1)) + i * avg)
        else:
            out.append((avg - new_length + 1) // 2 + i * avg)
    return out


def _fill_crop_sizes(h: int, w: int, crop: int, ratios: list[float], max_distort: int
                     ) -> list[tuple[int, int]]:
    """TSN's fillCropSize: (crop_h, crop_w) = int(min(h, w)·ratio) pairs whose ratio indices
    differ by at most max_distort; a side within 2 pixels of the crop becomes the crop."""
    base = np.float32(min(h, w))
    sizes = []
    for side in ratios:
        s = int(base * np.float32(side))
        sizes.append(crop if abs(s - crop) < 3 else s)
    return [(sizes[i], sizes[j]) for i in range(len(sizes)) for j in range(len(sizes))
            if abs(i - j) <= max_distort]


def _fix_offsets(h: int, w: int, ch: int, cw: int, more: bool) -> list[tuple[int, int]]:
    """TSN's fillFixOffset: the four corners and the centre (and eight more with
    more_fix_crop), on a grid of quarters of the room left by the crop."""
    hq, wq = (h - ch) // 4, (w - cw) // 4
    out = [(0, 0), (0, 4 * wq), (4 * hq, 0), (4 * hq, 4 * wq), (2 * hq, 2 * wq)]
    if more:
        out += [(0, 2 * wq), (4 * hq, 2 * wq), (2 * hq, 0), (2 * hq, 4 * wq),
                (hq, wq), (hq, 3 * wq), (3 * hq, wq), (3 * hq, 3 * wq)]
    return out


class TSNTransformer:
    """yjxiong/caffe's DataTransformer::Transform(Datum) for one C×H×W uint8 stack: with
    crop_size, in TRAIN a crop size drawn from the multi-scale sizes (multi_scale) and an
    offset drawn from the fixed corners (fix_crop) or uniformly, the crop resized bilinearly
    to crop_size when its size differs; in TEST the centred crop. Then (x − mean)·scale with
    the mean file's value (at the crop's place, or at the top-left with multi_scale) or the
    channel's mean_value, mirrored with probability ½ when `mirror`; with is_flow a mirrored
    even channel (x flow) is read as 255 − x. Draws: mirror, the crop size, the offset."""

    def __init__(self, tp: caffe_pb2.TransformationParameter, phase: int,
                 rng: np.random.Generator) -> None:
        self.phase, self.rng = phase, rng
        self.crop = int(tp.crop_size)
        self.scale = np.float32(tp.scale)
        self.mirror = bool(tp.mirror)
        self.multi_scale, self.max_distort = bool(tp.multi_scale), int(tp.max_distort)
        self.ratios = [float(r) for r in tp.scale_ratios] or [1.0, .875, .75, .66]
        self.fix_crop, self.more_fix_crop = bool(tp.fix_crop), bool(tp.more_fix_crop)
        self.is_flow = bool(tp.is_flow)
        self.mean_values = [float(v) for v in tp.mean_value]
        if tp.HasField("mean_file") and self.mean_values:
            raise DataError("cannot specify mean_file and mean_value at the same time")
        self.mean = load_mean_file(tp.mean_file) if tp.HasField("mean_file") else None

    def check(self, shape: tuple[int, int, int]) -> None:
        """Caffe's CHECKs for a stack of this shape."""
        c, h, w = shape
        if h < self.crop or w < self.crop:
            raise DataError(f"the frames are {h}x{w}, smaller than crop_size {self.crop}")
        if self.mean is not None and tuple(self.mean.shape) != shape:
            raise DataError(f"transform_param.mean_file has shape "
                            f"{'x'.join(map(str, self.mean.shape))} but the stack is "
                            f"{c}x{h}x{w}")
        if self.mean_values and len(self.mean_values) not in (1, c):
            raise DataError(f"transform_param.mean_value: specify either 1 mean_value or as "
                            f"many as channels ({c}), not {len(self.mean_values)}")

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        self.check(shape)
        c, h, w = shape
        return (c, self.crop, self.crop) if self.crop else (c, h, w)

    def transform(self, x: np.ndarray) -> np.ndarray:
        c, h, w = x.shape
        self.check(x.shape)
        do_mirror = self.mirror and bool(self.rng.integers(2))
        crop = self.crop
        ch, cw, h_off, w_off = h, w, 0, 0
        if crop:
            if self.phase == caffe_pb2.TRAIN:
                ch = cw = crop
                if self.multi_scale:
                    sizes = _fill_crop_sizes(h, w, crop, self.ratios, self.max_distort)
                    ch, cw = sizes[int(self.rng.integers(len(sizes)))]
                if self.fix_crop:
                    offs = _fix_offsets(h, w, ch, cw, self.more_fix_crop)
                    h_off, w_off = offs[int(self.rng.integers(len(offs)))]
                else:
                    h_off = int(self.rng.integers(h - ch + 1))
                    w_off = int(self.rng.integers(w - cw + 1))
            else:
                ch = cw = crop
                h_off, w_off = (h - crop) // 2, (w - crop) // 2
        if ch > h or cw > w or h_off + ch > h or w_off + cw > w:
            raise DataError(f"the multi-scale crop {ch}x{cw} does not fit the {h}x{w} frames")
        window = x[:, h_off:h_off + ch, w_off:w_off + cw]
        if crop and self.multi_scale and (ch != crop or cw != crop):
            # cv::resize (bilinear) of each channel's crop to crop_size, kept as uint8
            window = np.stack([cv2.resize(np.ascontiguousarray(p), (crop, crop),
                                          interpolation=cv2.INTER_LINEAR) for p in window])
        out = window.astype(np.float32)
        if self.is_flow and do_mirror:
            out[0::2] = np.float32(255) - out[0::2]
        oh, ow = out.shape[1:]
        if self.mean is not None:
            if self.multi_scale:
                out -= self.mean[:, :oh, :ow]
            else:
                out -= self.mean[:, h_off:h_off + oh, w_off:w_off + ow]
        elif self.mean_values:
            mv = self.mean_values * c if len(self.mean_values) == 1 else self.mean_values
            out -= np.asarray(mv, np.float32)[:, None, None]
        out *= self.scale
        if do_mirror:
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out)


class _VideoSource(ListSource):
    """Reads, stacks and transforms one batch of videos (runs in the prefetch worker)."""

    def __init__(self, layer: str, lines: list[tuple[str, int, int]],
                 p: caffe_pb2.VideoDataParameter, pattern: str, transformer: TSNTransformer,
                 frame_rng: np.random.Generator, train: bool,
                 shuffle_rng: np.random.Generator | None,
                 stack_shape: tuple[int, int, int] | None) -> None:
        self.p, self.pattern, self.transformer = p, pattern, transformer
        self.frame_rng, self.train, self.stack_shape = frame_rng, train, stack_shape
        self.flow = p.modality == _P.FLOW
        self.is_color = not p.grayscale
        self.new_hw = (int(p.new_height), int(p.new_width))
        super().__init__(layer, lines, int(p.batch_size), shuffle_rng, 0)

    def rngs(self) -> list:
        return [self.transformer.rng, self.frame_rng]

    def _frame(self, path: str, color: bool) -> np.ndarray:
        img = read_image(path, *self.new_hw, color)
        if img is None:
            raise DataLayerError(f"could not load frame '{path}'", layer=self.layer)
        if img.dtype != np.uint8:
            raise DataLayerError(f"frame '{path}' is not 8-bit", layer=self.layer)
        planes = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        if planes.shape[1:] != self.stack_shape[1:]:
            raise DataLayerError(f"frame '{path}' is {planes.shape[1]}x{planes.shape[2]}, "
                                 f"not {self.stack_shape[1]}x{self.stack_shape[2]} as the "
                                 "first video's frames", layer=self.layer)
        return planes

    def stack(self, folder: str, offsets: list[int]) -> np.ndarray:
        """The frames of every snippet, channels stacked in the fork's order (segment, frame,
        then B, G, R or flow x, flow y)."""
        planes = []
        for off in offsets:
            for k in range(1, int(self.p.new_length) + 1):
                if self.flow:
                    for axis in ("x", "y"):
                        planes.append(self._frame(os.path.join(
                            folder, self.pattern % (axis, off + k)), False))
                else:
                    planes.append(self._frame(os.path.join(folder, self.pattern % (off + k,)),
                                              self.is_color))
        return np.concatenate(planes)

    def produce(self) -> tuple:
        items = self.next_items()
        n = len(items)
        data = np.empty((n,) + self.out_shape, np.float32)
        for k, (folder, duration, _) in enumerate(items):
            offsets = segment_offsets(duration, int(self.p.num_segments),
                                      int(self.p.new_length), self.train, self.frame_rng)
            x = self.stack(folder, offsets)
            try:
                data[k] = self.transformer.transform(x)
            except DataError as e:
                raise DataLayerError(f"video '{folder}': {e}", layer=self.layer) from None
        label = torch.tensor([it[2] for it in items], dtype=torch.float32).reshape(n, 1, 1, 1)
        return torch.from_numpy(data), label


@register("VideoData")
class VideoDataLayer(_BaseDataLayer):
    """TSN's VideoData: snippets of frames sampled from each listed video, stacked as channels.

    Bottoms: none.
    Tops: data, N×C·new_length·num_segments×H×W (C = 3 for RGB, 1 for grayscale RGB, 2 for
    FLOW), after TSNTransformer; label, N×1×1×1.
    Blobs: none.
    Params: video_data_param (VideoDataParameter, TSN's fields at decaffe's numbers
    101-116): source (required; 'FOLDER NUM_FRAMES LABEL' lines, folders as written),
    batch_size (required, > 0), num_segments (default 1), new_length (default 1), modality
    (FLOW, default; RGB), name_pattern (default 'image_%04d.jpg' for RGB, 'flow_%c_%04d.jpg'
    for FLOW), new_height, new_width (default 0: keep; set both or neither), grayscale
    (default false), shuffle (default false); SSD's video_type, device_id, video_file and
    skip_frames (webcam/video file) are refused; transform_param with TSN's fix_crop,
    more_fix_crop, multi_scale, scale_ratios, max_distort, is_flow; data_param.prefetch.
    Source: yjxiong/caffe src/caffe/layers/video_data_layer.cpp, src/caffe/util/io.cpp
    (ReadSegmentRGBToDatum, ReadSegmentFlowToDatum), src/caffe/data_transformer.cpp.

    Each item reads num_segments snippets of new_length frames (frames numbered from 1; %c
    of a FLOW pattern is the axis x or y), one from each equal part of the video (at random
    in TRAIN, in the part's middle in TEST), resized bilinearly to new_height × new_width
    when both are set; RGB frames are read in colour (BGR) or gray (grayscale), flow frames
    in gray. shuffle reshuffles at setup and at every wrap-around. A frame that cannot be
    read is refused (the fork skips the item, leaving its slot's old data).
    """

    exact_tops = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.video_data_param
        f = "video_data_param"
        self.check(not (p.HasField("video_type") or p.HasField("video_file")
                        or p.HasField("device_id") or p.HasField("skip_frames"))
                   or p.HasField("source"), "SSD's webcam/video-file VideoData is not "
                   "supported; TSN's VideoData reads frame folders listed in `source`",
                   f"{f}.video_type")
        self.check(bool(p.source), "a list file must be given", f"{f}.source")
        self.check(p.batch_size > 0, "must be positive", f"{f}.batch_size")
        self.check(p.num_segments > 0, "must be positive", f"{f}.num_segments")
        self.check(p.new_length > 0, "must be positive", f"{f}.new_length")
        new_h, new_w = int(p.new_height), int(p.new_width)
        self.check((new_h == 0) == (new_w == 0), "new_height and new_width must be set "
                   "together", f"{f}.new_height")
        flow = p.modality == _P.FLOW
        pattern = p.name_pattern or ("flow_%c_%04d.jpg" if flow else "image_%04d.jpg")
        try:
            pattern % (("x", 1) if flow else (1,))
        except (TypeError, ValueError) as e:
            raise self._error(f"'{pattern}' is not a printf pattern of "
                              f"{'an axis (%c) and a frame number' if flow else 'a frame number'}"
                              f" ({e})", f"{f}.name_pattern") from None
        tp = self.lp.transform_param
        rng = layer_rng()
        with self._guard("transform_param"):
            tr = TSNTransformer(tp, self.phase, rng)
        with self._guard(f"{f}.source"):
            lines = read_video_list(p.source)
        if not lines:
            raise self._error(f"the list file '{p.source}' lists no videos", f"{f}.source")
        shuffle_rng = None
        if p.shuffle:
            shuffle_rng = np.random.default_rng(int(rng.integers(2**63 - 1)))
        frame_rng = np.random.default_rng(int(rng.integers(2**63 - 1)))
        train = self.phase == caffe_pb2.TRAIN
        src = _VideoSource(self.name, lines, p, pattern, tr, frame_rng, train, shuffle_rng,
                           None)
        # The first video (after the shuffle) gives the frame size, read at its TEST offsets.
        folder, duration, _ = src.lines[0]
        per = 2 if flow else (1 if p.grayscale else 3)
        offsets = segment_offsets(duration, int(p.num_segments), int(p.new_length), False,
                                  None)
        name = os.path.join(folder, pattern % (("x", offsets[0] + 1) if flow
                                               else (offsets[0] + 1,)))
        first = read_image(name, new_h, new_w, bool(per == 3))
        if first is None:
            raise self._error(f"could not load frame '{name}'", f"{f}.source")
        stack_shape = (per * int(p.new_length) * int(p.num_segments),) + first.shape[:2]
        src.stack_shape = stack_shape
        with self._guard("transform_param"):
            src.out_shape = tr.output_shape(stack_shape)
        n = int(p.batch_size)
        self._top_shapes = [(n,) + src.out_shape, (n, 1, 1, 1)]
        self.transformer = tr
        self._start(src, self.lp.data_param.prefetch)


# ----------------------------------------------------------------------------------------------
# SSD's AnnotatedData and MobileNet-YOLO's LaneData
# ----------------------------------------------------------------------------------------------
F32 = np.float32
_RESIZE = caffe_pb2.ResizeParameter


def parse_annotated(value: bytes, key: bytes | str | None = None,
                    source: str | None = None) -> caffe_pb2.AnnotatedDatum:
    """An AnnotatedDatum from its bytes; a DataError naming the record if they don't parse."""
    ad = caffe_pb2.AnnotatedDatum()
    try:
        ad.ParseFromString(value)
    except (DecodeError, TypeError, ValueError) as e:
        raise DataError(f"{record_name(key, source)} is not an AnnotatedDatum: {e}") from None
    return ad


class _Example:
    """One record's image (H×W×C uint8), boxes and whether it is still 'encoded'."""

    kind = None  # the record's AnnotationType, where a source needs it

    def __init__(self, img: np.ndarray, boxes: list[A.Box], encoded: bool, label: int) -> None:
        self.img, self.boxes, self.encoded, self.label = img, boxes, encoded, label


class _AnnotatedSource(CursorSource):
    """Reads and transforms batches of AnnotatedDatums (runs in the prefetch worker)."""

    def __init__(self, layer: AnnotatedDataLayer, db: DB, cursor: Cursor,
                 rng: np.random.Generator) -> None:
        self.layer_name = layer.name
        self.db, self.cursor, self.rng = db, cursor, rng
        self.tp, self.samplers = layer.tp, layer.samplers
        self.batch_size = layer.batch_size
        self.phase, self.color = layer.phase, layer.color
        self.labels, self.anno_type = layer.labels, layer.anno_type
        self.mean, self.mean_values = layer.mean, layer.mean_values
        self.keep = _solver_keep(layer.phase)
        self.source = db.path
        self.layer_anno_overrides = layer.anno_override
        self.policies, self.policy_probs = layer.policies, layer.policy_probs

    def _fail(self, msg: str) -> DataLayerError:
        return DataLayerError(msg, layer=self.layer_name)

    def example(self, key: bytes, value: bytes) -> _Example:
        return self._from_datum(parse_annotated(value, key, self.source), key)

    def _from_datum(self, ad: caffe_pb2.AnnotatedDatum, key: bytes) -> _Example:
        """The record's image (decoded, or its raw bytes) and boxes."""
        d = ad.datum
        name = record_name(key, self.source)
        if self.anno_type is not None and not ad.HasField("type") and \
                not self.layer_anno_overrides:
            raise self._fail(f"{name} misses its AnnotationType")
        if d.encoded:
            img = decode_image_bytes(d.data, self.color)
            if img is None:
                raise self._fail(f"{name}: could not decode the encoded image")
            if img.ndim == 2:
                img = img[..., None]
        else:
            c, h, w = d.channels, d.height, d.width
            if len(d.data) == c * h * w and c * h * w > 0:
                img = np.frombuffer(d.data, np.uint8).reshape(c, h, w).transpose(1, 2, 0).copy()
            elif not len(d.data) and len(d.float_data) == c * h * w and c * h * w > 0:
                img = np.asarray(d.float_data, F32).reshape(c, h, w).transpose(1, 2, 0).copy()
            else:
                raise self._fail(f"{name}: {len(d.data)} data bytes and {len(d.float_data)} "
                                 f"float_data values for a {c}x{h}x{w} Datum")
        return _Example(img, A.datum_boxes(ad), bool(d.encoded), int(d.label))

    def _augment(self, ex: _Example, name: str) -> _Example:
        tp, rng = self.tp, self.rng
        if ex.img.dtype != np.uint8 and (self.samplers or tp.HasField("expand_param")
                                         or tp.HasField("distort_param")):
            raise self._fail(f"{name}: float_data records cannot be distorted, expanded or "
                             "sampled (the fork crops and expands byte pixels only)")
        if tp.HasField("distort_param"):
            self._distort(ex, name)
        if tp.HasField("expand_param"):
            self._expand(ex, name)
        if self.samplers:
            samples = A.generate_samples(ex.boxes, self.samplers, rng)
            if samples:
                box = samples[int(rng.integers(2**31 - 1)) % len(samples)]
                self._crop(ex, box, name)
                emit = tp.emit_constraint if tp.HasField("emit_constraint") else None
                ex.boxes = A.transform_boxes(ex.boxes, B.clip_bbox(box), False, emit)
        return ex

    def _distort(self, ex: _Example, name: str) -> None:
        """DistortImage: random photometric changes, stored back as JPEG."""
        if not ex.encoded:
            raise self._fail(f"{name}: distort_param works on encoded images only (the "
                             "fork's DistortImage)")
        distorted = A.distort_image(_squeeze(ex.img), self.tp.distort_param, self.rng)
        ex.img = _chan(A.reencode_jpg(distorted))

    def _expand(self, ex: _Example, name: str) -> None:
        """ExpandImage: with probability prob, the image on a larger canvas (boxes moved)."""
        ep, rng = self.tp.expand_param, self.rng
        if float(rng.uniform(0, 1)) <= ep.prob and abs(ep.max_expand_ratio - 1) >= 1e-2:
            ratio = float(rng.uniform(1, ep.max_expand_ratio))
            if ex.encoded:
                fill = self.mean_values if self.mean_values is not None else 0
                if self.mean is not None:
                    fill = 0  # (a mean image fills per pixel; see below)
            else:
                fill = 32  # the fork's raw path fills its buffer with ' '
            canvas, box = A.expand_image(_squeeze(ex.img), ratio, fill, rng)
            canvas = _chan(canvas)
            if ex.encoded and self.mean is not None:
                self._fill_mean(canvas, box, ex.img.shape)
            self._expand_boxes(ex, box, name)
            ex.img = _chan(A.reencode_jpg(_squeeze(canvas))) if ex.encoded else canvas

    def _expand_boxes(self, ex: _Example, box: np.ndarray, name: str) -> None:
        tp = self.tp
        emit = tp.emit_constraint if tp.HasField("emit_constraint") else None
        ex.boxes = A.transform_boxes(ex.boxes, box, False, emit)

    def _crop(self, ex: _Example, box: np.ndarray, name: str) -> None:
        """CropImage: the pixels of the (clipped) box, stored back as JPEG when encoded."""
        img = A.crop_image(ex.img, box)
        if img.size == 0:
            raise self._fail(f"{name}: the sampled crop {box.tolist()} is empty")
        ex.img = _chan(A.reencode_jpg(_squeeze(img))) if ex.encoded else img

    def _fill_mean(self, canvas: np.ndarray, box: np.ndarray, shape: tuple[int, ...]) -> None:
        mh, mw = self.mean.shape[1:]
        if (mh, mw) != canvas.shape[:2]:
            raise self._fail(f"the mean file is {mh}x{mw}, the expanded image "
                             f"{canvas.shape[0]}x{canvas.shape[1]}")
        h, w = shape[:2]
        y, x = int(round(-box[1] * h)), int(round(-box[0] * w))
        saved = canvas[y:y + h, x:x + w].copy()
        canvas[...] = np.clip(self.mean.transpose(1, 2, 0), 0, 255).astype(np.uint8)
        canvas[y:y + h, x:x + w] = saved

    def _policy(self):
        """The resize_param for this image: the only one, or one drawn by the policies'
        probabilities (eric612's repeated resize_param); None without any."""
        if not self.policies:
            return None
        if len(self.policies) == 1:
            return self.policies[0]
        return self.policies[int(self.rng.choice(len(self.policies), p=self.policy_probs))]

    def _transform(self, ex: _Example, name: str):
        """(C×h×w float32 pixels, boxes) after resize, crop, mirror, mean and scale."""
        px, crop, mirror, resize, size = self._pixels(ex, name)
        tp = self.tp
        emit = tp.emit_constraint if tp.HasField("emit_constraint") else None
        boxes = A.transform_boxes(ex.boxes, crop, mirror, emit, resize, size)
        return px, boxes

    def _pixels(self, ex: _Example, name: str):
        """The pixels after resize, crop, mean, scale and mirror, with what moves boxes:
        (C×h×w float32, crop box, mirrored, resize policy or None, size before resize)."""
        tp, rng = self.tp, self.rng
        img = ex.img
        resize = self._policy()
        size = img.shape[:2]
        if resize is not None:
            img = A.resize_image(img, resize, rng)
        h, w = img.shape[:2]
        ch, cw = crop_hw(tp)
        mirror = bool(tp.mirror) and bool(rng.integers(2))
        y0 = x0 = 0
        if ch and cw:
            if h < ch or w < cw:
                raise self._fail(f"{name} is {h}x{w}, smaller than the crop {ch}x{cw}")
            if self.phase == caffe_pb2.TRAIN:
                y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            else:
                y0, x0 = (h - ch) // 2, (w - cw) // 2
        else:
            ch, cw = h, w
        px = img[y0:y0 + ch, x0:x0 + cw].transpose(2, 0, 1).astype(F32)
        if self.mean is not None:
            if self.mean.shape[1:] != (h, w) or self.mean.shape[0] != px.shape[0]:
                raise self._fail(f"{name}: the mean file has shape {self.mean.shape}, the "
                                 f"image {px.shape[0]}x{h}x{w}")
            px -= self.mean[:, y0:y0 + ch, x0:x0 + cw]
        elif self.mean_values is not None:
            mv = self.mean_values
            if len(mv) not in (1, px.shape[0]):
                raise self._fail(f"specify either 1 mean_value or as many as channels "
                                 f"({px.shape[0]})")
            px -= np.resize(mv, px.shape[0]).reshape(-1, 1, 1)
        if tp.scale != 1:
            px *= F32(tp.scale)
        if mirror:
            px = px[:, :, ::-1]
        # The goldens' build (inisis/caffe) moves boxes with transform_param's crop for raw
        # records only; decoded images report the whole image as their crop.
        crop = A.UNIT
        if not ex.encoded:
            crop = np.array([F32(x0) / F32(w), F32(y0) / F32(h), F32(x0 + cw) / F32(w),
                             F32(y0 + ch) / F32(h)], F32)
        return px, crop, mirror, resize, size

    def produce(self) -> tuple:
        try:
            recs = self.cursor.take(self.batch_size, self.keep)
        except DataError as e:
            raise self._fail(str(e)) from None
        data = None  # shaped by the batch's first example, as the fork reshapes per batch
        rows, labels = [], []
        for item, (key, value) in enumerate(recs):
            name = record_name(key, self.source)
            try:
                ex = self.example(key, value)
                ex = self._augment(ex, name)
                px, boxes = self._transform(ex, name)
            except DataLayerError:
                raise
            except DataError as e:
                raise self._fail(str(e)) from None
            if data is None:
                data = np.empty((self.batch_size,) + px.shape, F32)
            elif px.shape != data.shape[1:]:
                raise self._fail(f"{name} gives a {'x'.join(map(str, px.shape))} example, the "
                                 f"batch's first gives {'x'.join(map(str, data.shape[1:]))} "
                                 "(resize or crop to one size)")
            data[item] = px
            labels.append(ex.label)
            for group, inst, box, diff in boxes:
                rows.append([item, group, inst, *box, float(diff)])
        out = [torch.from_numpy(data)]
        if self.labels:
            if self.anno_type is None:
                out.append(torch.tensor(labels, dtype=torch.float32).reshape(-1, 1, 1, 1))
            elif rows:
                out.append(torch.tensor(rows, dtype=torch.float32).reshape(1, 1, -1, 8))
            else:
                out.append(torch.full((1, 1, 1, 8), -1.0))
        return tuple(out)


def crop_hw(tp: caffe_pb2.TransformationParameter) -> tuple[int, int]:
    """The crop (height, width) of an SSD transform_param: crop_size, when set, overrides
    crop_h and crop_w (the fork's DataTransformer); 0 means no crop."""
    if tp.crop_size:
        return int(tp.crop_size), int(tp.crop_size)
    return int(tp.crop_h), int(tp.crop_w)


def resize_policies(tp: caffe_pb2.TransformationParameter) -> list:
    """transform_param's resize_param entries (one in SSD; several, each with a
    probability, in eric612/MobileNet-YOLO)."""
    if hasattr(tp.resize_param, "add"):  # a repeated field
        return list(tp.resize_param)
    return [tp.resize_param] if tp.HasField("resize_param") else []


def _squeeze(img: np.ndarray) -> np.ndarray:
    return img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img


def _chan(img: np.ndarray) -> np.ndarray:
    return img[..., None] if img.ndim == 2 else img


@register("AnnotatedData")
class AnnotatedDataLayer(_BaseDataLayer):
    """SSD's AnnotatedData: images with labelled boxes from a database, with SSD's augmentation.

    Bottoms: none.
    Tops: data, N×C×H×W; optionally label: 1×1×B×8, one row per box in the batch [item,
    group_label, instance_id, xmin, ymin, xmax, ymax, difficult] (a single row of −1 when the
    batch has no box), or, for records without an annotation type (and no anno_type given),
    the Datum's label, N×1×1×1.
    Blobs: none.
    Params: data_param (DataParameter): source (required), backend (LMDB, default; LEVELDB),
    batch_size (> 0), rand_skip, prefetch; annotated_data_param (AnnotatedDataParameter):
    batch_sampler (repeated), anno_type (BBOX; default: the records'); transform_param
    (TransformationParameter): scale, mirror, crop_size or crop_h/crop_w, mean_file or
    mean_value, force_color, force_gray, resize_param (one policy, or eric612's several
    drawn by prob), distort_param, expand_param, emit_constraint; noise_param is refused.
    Source: weiliu89/caffe (ssd) src/caffe/layers/annotated_data_layer.cpp,
    src/caffe/data_transformer.cpp, src/caffe/util/sampler.cpp, src/caffe/util/im_transforms.cpp.

    For each record, in the fork's order: distort_param (random brightness, contrast,
    saturation, hue, channel order; encoded images), expand_param (with probability prob the
    image goes on a canvas up to max_expand_ratio times larger, filled with the mean), each
    batch_sampler proposes random crops meeting its constraints and one is taken at random
    (boxes are kept per emit_constraint, projected and clipped), then resize_param,
    crop_size (random in TRAIN, centred in TEST), mirror (boxes mirrored too), mean and
    scale. Images re-stored by the fork as JPEG (distorted, expanded or cropped encoded
    records) go through the same JPEG round trip. Random draws follow decaffe's seed, not
    Caffe's stream.
    """

    min_tops = 1
    max_tops = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p, ap = self._setup_transform()
        db, cursor, rng, first = self._open(p)
        try:  # a failure here releases the database at once
            self.anno_type = None
            if first.HasField("type") or ap.HasField("anno_type"):
                self.anno_type = int(ap.anno_type if ap.HasField("anno_type") else first.type)
                self.check(self.anno_type == caffe_pb2.AnnotatedDatum.BBOX,
                           "unknown annotation type", "annotated_data_param.anno_type")
            self.anno_override = ap.HasField("anno_type")
            self.labels = len(self.top_names) > 1
            self.data_shape = self._probe(first, cursor.key, p.source)
            src = _AnnotatedSource(self, db, cursor, rng)
        except BaseException:
            db.close()
            raise
        boxes = sum(len(g.annotation) for g in first.annotation_group)
        label_shape = ((1, 1, max(boxes, 1), 8) if self.anno_type is not None
                       else (self.batch_size, 1, 1, 1))
        self._top_shapes = [(self.batch_size,) + self.data_shape] + (
            [label_shape] if self.labels else [])
        self._start(src, p.prefetch)

    def _setup_transform(self):
        """data_param, transform_param and the batch samplers: checked and kept; returns
        (data_param, annotated_data_param)."""
        p, ap = self.lp.data_param, self.lp.annotated_data_param
        self.check(p.batch_size > 0, "must be positive", "data_param.batch_size")
        self.check(bool(p.source), "a database path must be given", "data_param.source")
        self.batch_size = int(p.batch_size)
        tp = transform_param_of(self.lp, p)
        self.tp = tp
        self.check(not (tp.force_color and tp.force_gray),
                   "cannot set both force_color and force_gray", "transform_param")
        self.color = True if tp.force_color else (False if tp.force_gray else None)
        if tp.HasField("noise_param"):
            raise self.error("the SSD noise transformations are not supported",
                             "transform_param.noise_param")
        self.policies = resize_policies(tp)
        self.policy_probs = None
        for rp in self.policies:
            self.check(rp.height > 0 and rp.width > 0, "height and width must be positive",
                       "transform_param.resize_param")
        self._check_policies()
        if tp.HasField("expand_param"):
            self.check(tp.expand_param.max_expand_ratio >= 1, "must be at least 1",
                       "transform_param.expand_param.max_expand_ratio")
        self.samplers = list(ap.batch_sampler)
        for i, bs in enumerate(self.samplers):
            with self._guard():
                A.check_sampler(bs, f"annotated_data_param.batch_sampler[{i}]")
        self.mean = self.mean_values = None
        if tp.HasField("mean_file"):
            self.check(not len(tp.mean_value), "cannot specify mean_file and mean_value at "
                       "the same time", "transform_param")
            with self._guard("transform_param.mean_file"):
                self.mean = load_mean_file(tp.mean_file)
        elif len(tp.mean_value):
            self.mean_values = np.asarray(tp.mean_value, F32)
        return p, ap

    def _check_policies(self, tolerance: float = 1e-6) -> None:
        """The resize policies' probabilities: each in [0, 1], summing to 1."""
        for rp in self.policies:
            self.check(not (rp.resize_mode == _RESIZE.FIT_SMALL_SIZE and rp.height_scale
                            and rp.width_scale), "FIT_SMALL_SIZE with height_scale/width_scale "
                       "(the fork's box extrapolation) is not supported",
                       "transform_param.resize_param.height_scale")
        if len(self.policies) > 1:
            probs = np.asarray([rp.prob for rp in self.policies], np.float64)
            self.check(((probs >= 0) & (probs <= 1)).all()
                       and abs(probs.sum() - 1) <= tolerance,
                       f"the policies' probabilities must each be in [0, 1] and sum to 1, not "
                       f"{probs.tolist()}", "transform_param.resize_param.prob")
            self.policy_probs = probs / probs.sum()

    def _open(self, p: caffe_pb2.DataParameter):
        """The database, its cursor (past rand_skip), the layer's generator and the first
        record; the database is closed again if any of it fails."""
        with self._guard("data_param.source"):
            db = open_db(p.source, p.backend, READ)
        try:
            cursor = db.cursor()
            if not cursor.valid:
                raise self._error(f"the database '{p.source}' is empty", "data_param.source")
            rng = layer_rng()
            if p.rand_skip:
                skip_records(cursor, int(rng.integers(p.rand_skip)))
            with self._guard("data_param.source"):
                first = parse_annotated(cursor.value, cursor.key, p.source)
        except BaseException:
            db.close()
            raise
        return db, cursor, rng, first

    def _probe(self, first: caffe_pb2.AnnotatedDatum, key: bytes,
               source: str) -> tuple[int, int, int]:
        """InferBlobShape from the first record: channels, then the resize / crop size."""
        d = first.datum
        if d.encoded:
            img = decode_image_bytes(d.data, self.color)
            if img is None:
                raise self._error(f"{record_name(key, source)}: could not decode the encoded "
                                  "image", "data_param.source")
            c = 1 if img.ndim == 2 else img.shape[2]
            h, w = img.shape[:2]
        else:
            c, h, w = int(d.channels), int(d.height), int(d.width)
        tp = self.tp
        if self.policies:
            h, w = A.resized_size(self.policies[0], h, w)
        ch, cw = crop_hw(tp)
        if ch and cw:
            self.check(h >= ch and w >= cw, f"the first image is {h}x{w}, smaller than the "
                       f"crop {ch}x{cw}", "transform_param.crop_size")
            h, w = ch, cw
        return (c, h, w)


# ----------------------------------------------------------------------------------------------
# eric612/MobileNet-YOLO's LaneData (lane_data_layer.cpp)
# ----------------------------------------------------------------------------------------------
_SEG_SCALE = F32(1 / 255.0)  # DataTransformer::Transform2's scale of the drawn mask
_LANE_TYPE = caffe_pb2.AnnotatedDatum.LANE


class _LaneSource(_AnnotatedSource):
    """Reads and transforms batches of lane records (runs in the prefetch worker)."""

    def __init__(self, layer: LaneDataLayer, db: DB, cursor: Cursor,
                 rng: np.random.Generator) -> None:
        super().__init__(layer, db, cursor, rng)
        self.seg, self.yolo_type, self.jitter = layer.seg, layer.yolo_type, layer.jitter
        self.seg_hw = layer.seg_hw
        self.iters, self.policy_num = 0, 0

    def state(self) -> dict:
        st = super().state()
        st.update(iters=self.iters, policy=self.policy_num)
        return st

    def restore(self, state: dict) -> None:
        super().restore(state)
        self.iters, self.policy_num = int(state["iters"]), int(state["policy"])

    def _policy(self):
        # one policy for ten batches at a time (the fork's iters_ % 10)
        return self.policies[self.policy_num] if self.policies else None

    def _expand_boxes(self, ex: _Example, box: np.ndarray, name: str) -> None:
        if ex.kind == _LANE_TYPE:
            raise self._fail(f"{name}: expand_param on a LANE record (the fork's "
                             "TransformAnnotation stops with 'Unknown annotation type')")
        super()._expand_boxes(ex, box, name)

    def _lanes(self, ad: caffe_pb2.AnnotatedDatum, name: str) -> list:
        lanes = [[(a.lanes.x, a.lanes.y) for a in g.annotation] for g in ad.annotation_group]
        if self.labels:
            if len(lanes) > A.LANES:
                raise self._fail(f"{name} has {len(lanes)} lanes; the label top holds "
                                 f"{A.LANES} per image (the fork writes the rest over the "
                                 "next image's)")
            for i, points in enumerate(lanes):
                if len(points) > A.LANE_POINTS:
                    raise self._fail(f"{name}: lane {i} has {len(points)} points; the label "
                                     f"top holds {A.LANE_POINTS} per lane (the fork writes "
                                     "the rest over the next lane's)")
        return lanes

    def _shape(self, img: np.ndarray,
               policy: caffe_pb2.ResizeParameter | None) -> tuple[int, int, int]:
        """InferBlobShape of the batch's first image under this batch's policy."""
        h, w = img.shape[:2]
        if policy is not None:
            h, w = A.resized_size(policy, h, w)
        tp = self.tp
        ch, cw = crop_hw(tp)
        if ch and cw:
            h, w = ch, cw
        return (img.shape[2], h, w)

    def _sample(self, ex: _Example, name: str, policy: caffe_pb2.ResizeParameter | None):
        """Distortion or (only without it) expansion, then a batch-sampler or jitter box
        cropped out; returns the box (None when nothing was sampled)."""
        tp, rng = self.tp, self.rng
        if tp.HasField("distort_param"):
            self._distort(ex, name)
        elif tp.HasField("expand_param"):
            self._expand(ex, name)
        box = None
        if self.samplers:
            samples = A.generate_samples(ex.boxes, self.samplers, rng)
            if samples:
                box = samples[int(rng.integers(2**31 - 1)) % len(samples)]
        elif self.yolo_type == 1:
            keep = policy.resize_mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD
            box = A.jitter_sample(self.jitter, keep, rng)
        if box is not None:
            self._crop(ex, box, name)
        return box

    def produce(self) -> tuple:
        try:
            recs = self.cursor.take(self.batch_size, self.keep)
        except DataError as e:
            raise self._fail(str(e)) from None
        if self.policies and self.iters % 10 == 0:
            self.policy_num = int(self.rng.choice(len(self.policies), p=self.policy_probs))
        policy = self._policy()
        fit_small = policy is not None and policy.resize_mode == _RESIZE.FIT_SMALL_SIZE
        n = self.batch_size
        data = seg = None
        label = np.zeros((n, A.LANES, A.LANE_POINTS, 3), F32) if self.labels else None
        crop = np.zeros(4, F32)  # an unset NormalizedBBox, kept from item to item
        for item, (key, value) in enumerate(recs):
            name = record_name(key, self.source)
            try:
                ad = parse_annotated(value, key, self.source)
                if not ad.datum.encoded:
                    raise self._fail(f"{name} is not an encoded image: LaneData reads encoded "
                                     "records (the fork's raw path skips resize_param and "
                                     "leaves seg_label's mirror stale)")
                ex = self._from_datum(ad, key)
                ex.kind = int(ad.type) if ad.HasField("type") else None
                lanes = self._lanes(ad, name)
                if item == 0:
                    shape = self._shape(ex.img, policy)
                    seg_hw = self.seg_hw(shape[1:]) if self.seg else (0, 0)
                box = self._sample(ex, name, policy)
                if box is not None:
                    crop = box
                px, _, mirror, _, _ = self._pixels(ex, name)
            except DataLayerError:
                raise
            except DataError as e:
                raise self._fail(str(e)) from None
            if data is None:
                data = np.empty((n,) + (px.shape if fit_small else shape), F32)
            if px.shape != data.shape[1:]:
                raise self._fail(f"{name} gives a {'x'.join(map(str, px.shape))} example, "
                                 f"the batch needs {'x'.join(map(str, data.shape[1:]))} "
                                 "(without resize_param a sampled crop must keep the size)")
            data[item] = px
            if self.labels:
                label[item], mask = A.lane_targets(lanes, crop, seg_hw)
                if self.seg:
                    if seg is None:
                        seg = np.empty((n, 1) + seg_hw, F32)
                    # Transform2 flips the mask with the image; the lane points stay unflipped
                    seg[item, 0] = (mask[:, ::-1] if mirror else mask).astype(F32) * _SEG_SCALE
        self.iters += 1
        out = [torch.from_numpy(data)]
        if self.labels:
            out.append(torch.from_numpy(label))
        if self.seg:
            out.append(torch.from_numpy(seg))
        return tuple(out)


@register("LaneData")
class LaneDataLayer(AnnotatedDataLayer):
    """MobileNet-YOLO's LaneData: images with lane points and lane masks from a database.

    Bottoms: none.
    Tops: data, N×C×H×W; optionally label, N×5×64×3: lane i's points in reverse record order
    as [x, y, i], x and y relative to the crop box, i = −1 for a point outside the crop,
    unfilled slots 0; optionally seg_label, N×1×H/seg_scales×W/seg_scales (of the batch's
    first image's H, W) or N×1×seg_resize_height×seg_resize_width.
    Blobs: none.
    Params: as AnnotatedData's (data_param, annotated_data_param.batch_sampler,
    transform_param with its resize_param policies, distort_param, expand_param), plus
    annotated_data_param: yolo_data_type (default 0; 1: jitter crops), yolo_data_jitter
    (default 0.3, in [0, 1)), seg_scales (default 8, > 0), seg_resize_width,
    seg_resize_height (default 0: use seg_scales). distort_param with expand_param is
    refused.
    Source: eric612/MobileNet-YOLO src/caffe/layers/lane_data_layer.cpp (tusimple lane nets).

    AnnotatedDatums whose annotation groups are lanes and whose annotations are lane points
    (Annotation.lanes: normalized x, y). Per record, in the fork's order: distort_param, or
    expand_param only without it; then a crop: one box of the batch_samplers, or with
    yolo_data_type 1 a jitter box (sides in [1 − yolo_data_jitter, 1], or
    [1 − jitter/2, 1], or the whole image, each a third of the time; square when the policy
    is FIT_LARGE_SIZE_AND_PAD); then resize_param (one of several policies, drawn by prob
    every 10 batches), crop_size, mirror, mean and scale as AnnotatedData.

    The label's points are relative to the crop box of the image's own sample (an earlier
    image's in the batch when none was sampled; an all-zero box before any, which gives
    inf/nan) and are **not mirrored**. seg_label is 1 on 1-pixel lines joining each lane's
    consecutive in-crop points, 0 elsewhere, mirrored with the image. Random draws follow
    decaffe's seed, not Caffe's stream. Errors: DataLayerError naming the record for raw
    (non-encoded) records, more than 5 lanes or 64 points, and expansion of LANE-typed
    records.
    """

    min_tops = 1
    max_tops = 3

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p, ap = self._setup_transform()
        tp = self.tp
        self.check(not (tp.HasField("distort_param") and tp.HasField("expand_param")),
                   "cannot be given with distort_param (the fork's LaneData then frees a "
                   "copy it does not own)", "transform_param.expand_param")
        self.yolo_type, self.jitter = int(ap.yolo_data_type), float(ap.yolo_data_jitter)
        if self.yolo_type == 1 and not self.samplers:
            self.check(bool(self.policies), "yolo_data_type 1 needs one (the fork reads the "
                       "policy's resize_mode for its jitter crop)", "transform_param.resize_param")
            self.check(0 <= self.jitter < 1, f"must be in [0, 1), not {self.jitter}",
                       "annotated_data_param.yolo_data_jitter")
        self.labels = len(self.top_names) > 1
        self.seg = len(self.top_names) > 2
        sw, sh = int(ap.seg_resize_width), int(ap.seg_resize_height)
        self.check(sw >= 0 and sh >= 0, "must not be negative",
                   "annotated_data_param.seg_resize_width/height")
        scales = int(ap.seg_scales)
        if self.seg and not (sw and sh):
            self.check(scales > 0, "must be positive", "annotated_data_param.seg_scales")
        self.seg_hw = ((lambda hw: (sh, sw)) if sw and sh
                       else (lambda hw: (hw[0] // scales, hw[1] // scales)))
        self.anno_type, self.anno_override = None, False
        db, cursor, rng, first = self._open(p)
        try:
            if not first.datum.encoded:
                raise self._error(f"{record_name(cursor.key, p.source)} is not an encoded "
                                  "image: LaneData reads encoded records", "data_param.source")
            self.data_shape = self._probe(first, cursor.key, p.source)
            src = _LaneSource(self, db, cursor, rng)
        except BaseException:
            db.close()
            raise
        n = self.batch_size
        self._top_shapes = [(n,) + self.data_shape]
        if self.labels:
            self._top_shapes.append((n, A.LANES, A.LANE_POINTS, 3))
        if self.seg:
            self._top_shapes.append((n, 1) + self.seg_hw(self.data_shape[1:]))
        self._start(src, p.prefetch)

    def _check_policies(self, tolerance: float = 0.01) -> None:
        """The fork's checks, every policy count: each prob in [0, 1], their sum within
        0.01 of 1; FIT_SMALL_SIZE as the first policy only with batch_size 1."""
        if not self.policies:
            return
        probs = np.asarray([rp.prob for rp in self.policies], np.float64)
        self.check(((probs >= 0) & (probs <= 1)).all() and abs(probs.sum() - 1) <= tolerance,
                   f"the policies' probabilities must each be in [0, 1] and sum to 1 (within "
                   f"0.01), not {probs.tolist()}", "transform_param.resize_param.prob")
        self.policy_probs = probs / probs.sum()
        if self.policies[0].resize_mode == _RESIZE.FIT_SMALL_SIZE:
            self.check(self.batch_size == 1, "only batch_size 1 with FIT_SMALL_SIZE",
                       "data_param.batch_size")

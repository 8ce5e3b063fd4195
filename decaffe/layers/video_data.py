"""VideoData of yjxiong/caffe, the fork of Temporal Segment Networks (TSN).

Each entry of the list is a folder of extracted frames (RGB images, or the x and y optical
flow images) with its frame count and class. A batch item samples ``num_segments`` snippets
of ``new_length`` consecutive frames, one from each equal part of the video (at random in
TRAIN, in the part's middle in TEST), stacks all their channels into one C×H×W example
(C = channels per frame × new_length × num_segments) and transforms it with TSN's
transformer (multi-scale and fixed-corner crops, mirror that turns the x flow around).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from ..data.datum import read_image
from ..data.transformer import load_mean_file
from ..errors import DataError
from ..layer import register
from ..proto import caffe_pb2
from .data import DataLayerError, ListSource, _BaseDataLayer, layer_rng, open_list

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

    def __init__(self, tp, phase: int, rng: np.random.Generator):
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

    def __init__(self, layer, lines, p, pattern, transformer, frame_rng, train, shuffle_rng,
                 stack_shape):
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
    """TSN's VideoData (yjxiong/caffe): `video_data_param.source` lists 'FOLDER NUM_FRAMES
    LABEL' lines (folders as written, relative to the working directory). Each item reads
    num_segments snippets of new_length frames named by `name_pattern` (printf-style; default
    'image_%04d.jpg' for RGB, 'flow_%c_%04d.jpg' for FLOW with %c the axis x or y, frames
    numbered from 1), resized bilinearly to new_height × new_width when both are set; RGB
    frames are read in colour (BGR) or gray (`grayscale`), flow frames in gray. Tops: data
    (N, C·new_length·num_segments, H, W) after TSNTransformer (transform_param, with TSN's
    fix_crop, more_fix_crop, multi_scale, scale_ratios, max_distort, is_flow), and label
    (N, 1, 1, 1). `shuffle` reshuffles at setup and at every wrap-around. A frame that cannot
    be read is refused (the fork skips the item, leaving its slot's old data). SSD's
    VideoData (webcam, video file) shares the type name and is refused. Follows
    src/caffe/layers/video_data_layer.cpp, util/io.cpp's ReadSegment{RGB,Flow}ToDatum and
    data_transformer.cpp of yjxiong/caffe."""

    exact_tops = 2

    def setup(self, bottom_shapes):
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


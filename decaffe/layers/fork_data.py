"""Data layers of the segmentation forks.

- ``DenseImageData`` (alexgkendall/caffe-segnet, TimoSaemann/caffe-enet): image and label-image
  pairs listed in a text file, for per-pixel labels.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from ..data.datum import hwc_to_chw, read_image
from ..data.transformer import DataTransformer
from ..errors import DataError
from ..layer import register
from .data import (
    DataLayerError,
    _BaseDataLayer,
    layer_rng,
    rng_state,
    set_rng_state,
    transform_param_of,
)


def read_pair_list(path: str) -> list[tuple[str, str]]:
    """The (image, label image) names of a DenseImageData list: whitespace-separated pairs,
    read as the fork's `infile >> filename >> label_filename` loop does."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            words = f.read().split()
    except OSError as e:
        raise DataError(f"cannot open the list file '{path}': {e.strerror or e}") from None
    if len(words) % 2:
        raise DataError(f"the list file '{path}' has an image '{words[-1]}' without a label "
                        "image")
    return list(zip(words[0::2], words[1::2]))


class _DenseSource:
    """Reads one batch of image/label pairs (runs in the prefetch worker)."""

    def __init__(self, layer, lines, new_hw, label_hw, is_color, transformer, batch_size,
                 shuffle_rng, start):
        self.layer, self.lines, self.new_hw, self.label_hw = layer, lines, new_hw, label_hw
        self.is_color, self.transformer, self.batch_size = is_color, transformer, batch_size
        self.shuffle_rng, self.pos = shuffle_rng, start
        self.base_lines = list(lines)  # the order before the first shuffle
        self.shuffle_start = rng_state(shuffle_rng)
        self.shuffles = -1
        if shuffle_rng is not None:
            self.shuffle()  # shuffled at setup, then at every wrap-around

    def shuffle(self) -> None:
        self.shuffle_rng.shuffle(self.lines)
        self.shuffles += 1

    def _next(self):
        item = self.lines[self.pos]
        self.pos += 1
        if self.pos >= len(self.lines):
            self.pos = 0
            if self.shuffle_rng is not None:
                self.shuffle()
        return item

    def state(self) -> dict:
        return {"kind": "_DenseSource", "pos": self.pos, "shuffles": self.shuffles,
                "lines": len(self.lines), "rng": rng_state(self.transformer.rng)}

    def restore(self, state: dict) -> None:
        if int(state["lines"]) != len(self.lines):
            raise DataLayerError(f"the position was recorded for a list of {state['lines']} "
                                 f"pairs; the list now has {len(self.lines)}", layer=self.layer)
        if self.shuffle_rng is not None:  # replay the shuffles from the setup's order
            self.lines[:] = self.base_lines
            set_rng_state(self.shuffle_rng, self.shuffle_start)
            self.shuffles = -1
            for _ in range(int(state["shuffles"]) + 1):
                self.shuffle()
        pos = int(state["pos"])
        if not 0 <= pos < len(self.lines):
            raise DataLayerError(f"position {pos} outside the list", layer=self.layer)
        self.pos = pos
        set_rng_state(self.transformer.rng, state.get("rng"))

    def close(self) -> None:
        pass

    def produce(self) -> tuple:
        items = [self._next() for _ in range(self.batch_size)]
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
    """SegNet's DenseImageData: `source` lists 'IMAGE LABEL_IMAGE' pairs (paths after
    root_folder). Images are read in colour (BGR) or gray (`is_color`) and resized bilinearly
    to new_height × new_width when both are set, then go through transform_param (mean, scale);
    label images are read as gray and resized nearest-neighbour to (new_height, new_width)
    divided by ENet's `label_divide_factor` (default 1), and keep their raw values (no mean,
    no scale). Tops: data (N, C, H, W) and label (N, 1, H/f, W/f). `shuffle` reshuffles at
    setup and every wrap-around; `rand_skip` skips a random number of pairs at the start.
    transform_param's mirror and crop_size are refused (the fork would transform the image
    and its label differently)."""

    exact_tops = 2

    def setup(self, bottom_shapes):
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
        shuffle_rng = None
        if p.shuffle:
            shuffle_rng = np.random.default_rng(int(rng.integers(2**63 - 1)))
        start = 0
        if p.rand_skip:
            start = int(rng.integers(p.rand_skip))
            self.check(start < len(lines), f"cannot skip {start} of {len(lines)} pairs",
                       f"{f}.rand_skip")
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

"""AnnotatedDatum images and boxes, transformed as the SSD fork's DataTransformer and sampler
do (weiliu89/caffe: data_transformer.cpp, util/im_transforms.cpp, util/sampler.cpp).

An example is an image (H×W×C uint8, OpenCV's BGR order) with boxes: a list of
``(group_label, instance_id, [xmin, ymin, xmax, ymax], difficult)`` in normalized
coordinates. Random draws come from a numpy Generator (seeded by the data layer from
decaffe's seed), so a seeded run repeats exactly; they are not Caffe's random numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
import numpy.typing as npt

from .. import bbox as B
from ..errors import DataError
from ..proto import caffe_pb2

F32 = np.float32
_EMIT = caffe_pb2.EmitConstraint
_RESIZE = caffe_pb2.ResizeParameter
_INTERP = {_RESIZE.LINEAR: cv2.INTER_LINEAR, _RESIZE.AREA: cv2.INTER_AREA,
           _RESIZE.NEAREST: cv2.INTER_NEAREST, _RESIZE.CUBIC: cv2.INTER_CUBIC,
           _RESIZE.LANCZOS4: cv2.INTER_LANCZOS4}
UNIT = np.array([0, 0, 1, 1], F32)

Box = tuple[int, int, np.ndarray, bool]  # (group_label, instance_id, box, difficult)


def datum_boxes(ad: caffe_pb2.AnnotatedDatum) -> list[Box]:
    """The boxes of an AnnotatedDatum, group by group."""
    out = []
    for g in ad.annotation_group:
        for a in g.annotation:
            b = a.bbox
            out.append((int(g.group_label), int(a.instance_id),
                        np.array([b.xmin, b.ymin, b.xmax, b.ymax], F32), bool(b.difficult)))
    return out


def meets_emit(src: np.ndarray, box: np.ndarray, emit: caffe_pb2.EmitConstraint) -> bool:
    """MeetEmitConstraint: CENTER — the box's centre lies in src; MIN_OVERLAP — more than
    emit_overlap of the box lies in src."""
    if emit.emit_type == _EMIT.CENTER:
        cx, cy = (box[0] + box[2]) / F32(2), (box[1] + box[3]) / F32(2)
        return bool(src[0] <= cx <= src[2] and src[1] <= cy <= src[3])
    return bool(B.coverage(box[None], src[None])[0, 0] > F32(emit.emit_overlap))


def transform_boxes(boxes: list[Box], crop: np.ndarray, mirror: bool,
                    emit: caffe_pb2.EmitConstraint | None = None,
                    resize: caffe_pb2.ResizeParameter | None = None,
                    size: tuple[int, int] = (0, 0)) -> list[Box]:
    """TransformAnnotation: the boxes (first moved by resize_param's policy on an image of
    size (height, width), when given) that meet the emit constraint (when given), projected
    into crop (and dropped when nothing is left), then mirrored left-right."""
    out = []
    for group, inst, box, diff in boxes:
        if resize is not None:
            box = resize_box(box, resize, size[1], size[0])
        if emit is not None and not meets_emit(crop, box, emit):
            continue
        proj = B.project(crop, box)
        if proj is None:
            continue
        if mirror:
            proj = np.array([1 - proj[2], proj[1], 1 - proj[0], proj[3]], F32)
        out.append((group, inst, proj, diff))
    return out


# -- batch sampling (sampler.cpp) ---------------------------------------------------------------
def sample_bbox(sampler: caffe_pb2.Sampler, rng: np.random.Generator) -> np.ndarray:
    """SampleBBox: a random box of scale in [min_scale, max_scale] and aspect ratio in
    [min_aspect_ratio, max_aspect_ratio] (clamped so the box fits), placed uniformly."""
    scale = F32(rng.uniform(sampler.min_scale, sampler.max_scale))
    ar = F32(rng.uniform(sampler.min_aspect_ratio, sampler.max_aspect_ratio))
    ar = max(ar, F32(scale ** 2))
    ar = min(ar, F32(1 / scale ** 2))
    w, h = F32(scale * np.sqrt(ar)), F32(scale / np.sqrt(ar))
    x0 = F32(rng.uniform(0, 1 - w)) if w < 1 else F32(0)
    y0 = F32(rng.uniform(0, 1 - h)) if h < 1 else F32(0)
    return np.array([x0, y0, x0 + w, y0 + h], F32)


def satisfies(sample: np.ndarray, objects: np.ndarray, c: caffe_pb2.SampleConstraint) -> bool:
    """SatisfySampleConstraint: with no constraint, always; else some object box has its
    Jaccard overlap / sample coverage / object coverage within the given bounds."""
    has_j = c.HasField("min_jaccard_overlap") or c.HasField("max_jaccard_overlap")
    has_s = c.HasField("min_sample_coverage") or c.HasField("max_sample_coverage")
    has_o = c.HasField("min_object_coverage") or c.HasField("max_object_coverage")
    if not (has_j or has_s or has_o):
        return True
    found = False  # the fork's flag outlives each object: one passed check is enough later
    for obj in objects:
        checks = []
        if has_j:
            checks.append((B.jaccard(sample[None], obj[None])[0, 0], "jaccard_overlap"))
        if has_s:
            checks.append((B.coverage(sample[None], obj[None])[0, 0], "sample_coverage"))
        if has_o:
            checks.append((B.coverage(obj[None], sample[None])[0, 0], "object_coverage"))
        skip = False
        for value, name in checks:
            lo, hi = "min_" + name, "max_" + name
            if (c.HasField(lo) and value < F32(getattr(c, lo))) or \
                    (c.HasField(hi) and value > F32(getattr(c, hi))):
                skip = True
                break
            found = True
        if not skip and found:
            return True
    return found


def generate_samples(boxes: list[Box], samplers: Iterable[caffe_pb2.BatchSampler],
                     rng: np.random.Generator) -> list[np.ndarray]:
    """GenerateBatchSamples: for each batch_sampler (with use_original_image), up to
    max_trials random boxes, keeping those that satisfy its constraint, at most max_sample."""
    objects = np.array([b[2] for b in boxes], F32).reshape(-1, 4)
    out = []
    for bs in samplers:
        if not bs.use_original_image:
            continue
        found = 0
        for _ in range(int(bs.max_trials)):
            if bs.HasField("max_sample") and found >= bs.max_sample:
                break
            s = B.locate(UNIT, sample_bbox(bs.sampler, rng))
            if satisfies(s, objects, bs.sample_constraint):
                found += 1
                out.append(s)
    return out


def check_sampler(bs: caffe_pb2.BatchSampler, where: str) -> None:
    """The fork's CHECKs on a batch_sampler's ranges."""
    s = bs.sampler
    if not (0 < s.min_scale <= s.max_scale <= 1):
        raise DataError(f"{where}.sampler: need 0 < min_scale <= max_scale <= 1, got "
                        f"{s.min_scale}, {s.max_scale}")
    if not (0 < s.min_aspect_ratio <= s.max_aspect_ratio):
        raise DataError(f"{where}.sampler: need 0 < min_aspect_ratio <= max_aspect_ratio, got "
                        f"{s.min_aspect_ratio}, {s.max_aspect_ratio}")


# -- image operations -----------------------------------------------------------------------
def crop_image(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """CropImage: the pixels of the (clipped) normalized box, offsets and sizes truncated."""
    h, w = img.shape[:2]
    s = B.scale_bbox(B.clip_bbox(box), h, w)
    x0, y0 = int(s[0]), int(s[1])
    cw, ch = int(s[2] - s[0]), int(s[3] - s[1])
    return img[y0:y0 + ch, x0:x0 + cw].copy()


def expand_image(img: np.ndarray, ratio: float, fill: npt.ArrayLike,
                 rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """ExpandImage: the image placed at a random whole-pixel offset on a canvas ratio times
    its size filled with ``fill`` (per channel); returns (canvas, the canvas as a box in the
    image's normalized coordinates)."""
    h, w = img.shape[:2]
    eh, ew = int(h * F32(ratio)), int(w * F32(ratio))
    h_off = float(np.floor(F32(rng.uniform(0, eh - h)))) if eh > h else 0.0
    w_off = float(np.floor(F32(rng.uniform(0, ew - w)))) if ew > w else 0.0
    box = np.array([-w_off / w, -h_off / h, (ew - w_off) / w, (eh - h_off) / h], F32)
    canvas = np.empty((eh, ew) + img.shape[2:], np.uint8)
    canvas[...] = np.asarray(fill, np.float64).clip(0, 255).round().astype(np.uint8) \
        if np.ndim(fill) else int(fill)
    y, x = int(h_off), int(w_off)
    canvas[y:y + h, x:x + w] = img
    return canvas, box


def _convert(img: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    # cv::Mat::convertTo(out, -1, alpha, beta): saturate_cast<uchar>(alpha·x + beta).
    return cv2.convertScaleAbs(img, alpha=alpha, beta=beta) if alpha >= 0 else \
        np.clip(np.rint(img.astype(np.float32) * alpha + beta), 0, 255).astype(np.uint8)


def distort_image(img: np.ndarray, p: caffe_pb2.DistortionParameter,
                  rng: np.random.Generator) -> np.ndarray:
    """ApplyDistort: random brightness, contrast, saturation and hue changes (contrast
    first or after hue, at random) and a random channel order, each with its probability."""
    def u():
        return float(rng.uniform(0, 1))

    def brightness(im: np.ndarray) -> np.ndarray:
        if u() < p.brightness_prob:
            d = float(rng.uniform(-p.brightness_delta, p.brightness_delta))
            if abs(d) > 0:
                return _convert(im, 1.0, d)
        return im

    def contrast(im: np.ndarray) -> np.ndarray:
        if u() < p.contrast_prob:
            d = float(rng.uniform(p.contrast_lower, p.contrast_upper))
            if abs(d - 1) > 1e-3:
                return _convert(im, d, 0.0)
        return im

    def hsv(im: np.ndarray, channel: int, alpha: float, beta: float) -> np.ndarray:
        if im.ndim != 3 or im.shape[2] != 3:
            return im
        x = cv2.cvtColor(im, cv2.COLOR_BGR2HSV)
        x[..., channel] = _convert(x[..., channel], alpha, beta)
        return cv2.cvtColor(x, cv2.COLOR_HSV2BGR)

    def saturation(im: np.ndarray) -> np.ndarray:
        if u() < p.saturation_prob:
            d = float(rng.uniform(p.saturation_lower, p.saturation_upper))
            if abs(d - 1) != 1e-3:  # the fork's comparison, kept as written
                return hsv(im, 1, d, 0.0)
        return im

    def hue(im: np.ndarray) -> np.ndarray:
        if u() < p.hue_prob:
            d = float(rng.uniform(-p.hue_delta, p.hue_delta))
            if abs(d) > 0:
                return hsv(im, 0, 1.0, d)
        return im

    def order(im: np.ndarray) -> np.ndarray:
        if u() < p.random_order_prob and im.ndim == 3:
            perm = rng.permutation(im.shape[2])
            return np.ascontiguousarray(im[..., perm])
        return im

    steps = ([brightness, contrast, saturation, hue, order] if u() > 0.5
             else [brightness, saturation, hue, contrast, order])
    for step in steps:
        img = step(img)
    return img


def reencode_jpg(img: np.ndarray) -> np.ndarray:
    """The fork stores a distorted/expanded/cropped encoded image back as JPEG (OpenCV's
    default quality) before decoding it again: the same loss, here."""
    ok, buf = cv2.imencode(".jpg", img)
    if not ok:
        raise DataError("OpenCV cannot encode the image as JPEG")
    flag = cv2.IMREAD_UNCHANGED
    out = cv2.imdecode(buf, flag)
    return out


_PAD = {_RESIZE.CONSTANT: cv2.BORDER_CONSTANT, _RESIZE.MIRRORED: cv2.BORDER_REFLECT_101,
        _RESIZE.REPEAT_NEAREST: cv2.BORDER_REPLICATE}


def resized_size(p: caffe_pb2.ResizeParameter, height: int, width: int) -> tuple[int, int]:
    """InferNewSize: the (height, width) resize_param gives an image of this size."""
    if p.resize_mode != _RESIZE.FIT_SMALL_SIZE:
        return int(p.height), int(p.width)
    aspect = F32(width) / F32(height)
    if aspect < F32(p.width) / F32(p.height):
        return int(np.floor(F32(p.width) / aspect)), int(p.width)
    return int(p.height), int(np.floor(aspect * F32(p.height)))


def resize_image(img: np.ndarray, p: caffe_pb2.ResizeParameter,
                 rng: np.random.Generator) -> np.ndarray:
    """ApplyResize: WARP (cv::resize to width×height), FIT_SMALL_SIZE (keep the aspect ratio,
    the short side reaching its target) or FIT_LARGE_SIZE_AND_PAD (keep the aspect ratio
    inside width×height, pad the rest by pad_mode / pad_value), with one of interp_mode
    chosen uniformly (LINEAR when none is given)."""
    interp = cv2.INTER_LINEAR
    if len(p.interp_mode):
        interp = _INTERP[p.interp_mode[int(rng.integers(len(p.interp_mode)))]]
    h, w = img.shape[:2]
    nh, nw = int(p.height), int(p.width)
    if p.resize_mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD:
        aspect = F32(w) / F32(h)
        if aspect > F32(nw) / F32(nh):
            rh, rw = int(np.floor(F32(nw) / aspect)), nw
        else:
            rh, rw = nh, int(np.floor(aspect * F32(nh)))
        out = cv2.resize(img, (rw, rh), interpolation=interp)
        pad = list(p.pad_value) or [0.0]
        channels = 1 if img.ndim == 2 else img.shape[2]
        if len(pad) not in (1, channels):
            raise DataError(f"resize_param.pad_value: give 1 value or one per channel "
                            f"({channels}), not {len(pad)}")
        value = [float(pad[0])] * channels if len(pad) == 1 else [float(v) for v in pad]
        top, left = (nh - rh) // 2, (nw - rw) // 2
        out = cv2.copyMakeBorder(out, top, nh - rh - top, left, nw - rw - left,
                                 _PAD[p.pad_mode], value=value)
    else:
        nh, nw = resized_size(p, h, w)
        out = cv2.resize(img, (nw, nh), interpolation=interp)
    return out if out.ndim == img.ndim else out[..., None]


def resize_box(box: np.ndarray, p: caffe_pb2.ResizeParameter, width: int,
               height: int) -> np.ndarray:
    """UpdateBBoxByResizePolicy: a normalized box of a width×height image, in the image
    resize_param makes (padding included for FIT_LARGE_SIZE_AND_PAD)."""
    nh, nw = F32(p.height), F32(p.width)
    w, h = F32(width), F32(height)
    aspect = w / h
    x0, y0, x1, y1 = (F32(v) for v in (box[0] * w, box[1] * h, box[2] * w, box[3] * h))
    zero = F32(0)
    if p.resize_mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD:
        if aspect > nw / nh:
            pad = (nh - nw / aspect) / F32(2)
            x0, x1 = max(zero, x0 * nw / w), min(nw, x1 * nw / w)
            y0 = pad + max(zero, y0 * (nh - F32(2) * pad) / h)
            y1 = pad + min(nh, y1 * (nh - F32(2) * pad) / h)
        else:
            pad = (nw - aspect * nh) / F32(2)
            x0 = pad + max(zero, x0 * (nw - F32(2) * pad) / w)
            x1 = pad + min(nw, x1 * (nw - F32(2) * pad) / w)
            y0, y1 = max(zero, y0 * nh / h), min(nh, y1 * nh / h)
    else:
        if p.resize_mode == _RESIZE.FIT_SMALL_SIZE:
            if aspect < nw / nh:
                nh = nw / aspect
            else:
                nw = aspect * nh
        x0, x1 = max(zero, x0 * nw / w), min(nw, x1 * nw / w)
        y0, y1 = max(zero, y0 * nh / h), min(nh, y1 * nh / h)
    return np.array([x0 / nw, y0 / nh, x1 / nw, y1 / nh], F32)


# -- lanes (eric612/MobileNet-YOLO: sampler.cpp GenerateJitterSamples, lane_data_layer.cpp) ----
LANES, LANE_POINTS = 5, 64  # the fork's label top: 5 lanes of at most 64 points each


def jitter_sample(jitter: float, keep_aspect: bool, rng: np.random.Generator) -> np.ndarray:
    """GenerateJitterSamples: with probability 0.334 the whole image; else a box whose sides
    are drawn in [1 - j, 1] (j = jitter with probability 0.333, jitter / 2 with 0.333; the
    height equals the width when keep_aspect), placed uniformly inside the image."""
    cumulative = np.cumsum(np.array([0.334, 0.333, 0.333], F32), dtype=F32)
    change = int(np.searchsorted(cumulative, F32(rng.uniform(0, cumulative[-1])), "left"))
    if change == 0:
        return UNIT.copy()
    j = F32(jitter) if change == 2 else F32(jitter) / F32(2)
    w = F32(rng.uniform(F32(1) - j, 1))
    h = w if keep_aspect else F32(rng.uniform(F32(1) - j, 1))
    x0 = F32(rng.uniform(0, F32(1) - w))
    y0 = F32(rng.uniform(0, F32(1) - h))
    return np.array([x0, y0, x0 + w, y0 + h], F32)


def lane_targets(lanes: list[list[tuple[float, float]]], crop: np.ndarray,
                 seg_hw: tuple[int, int], thickness: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """LaneDataLayer's labels of one image: lanes (each a list of normalized (x, y) points,
    as recorded) seen through the crop box; returns (label (5, 64, 3) float32, mask
    seg_hw uint8).

    Lane i's points go in reverse order to label[i, j] = [x, y, i], with x, y relative to
    the crop (float32; a zero-width crop gives inf/nan) and i replaced by -1 for a point
    outside [0, 1]. Each point inside is joined to the previous point inside by a line of
    255 (cv::line, 8-connected) on the seg_hw mask, at int(x·width), int(y·height).
    Slots no point fills stay 0."""
    label = np.zeros((LANES, LANE_POINTS, 3), F32)
    mask = np.zeros(seg_hw, np.uint8)
    rows, cols = F32(seg_hw[0]), F32(seg_hw[1])
    x0, y0 = F32(crop[0]), F32(crop[1])
    cw, ch = F32(crop[2]) - x0, F32(crop[3]) - y0
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, points in enumerate(lanes):
            prev = None
            for j, (x, y) in enumerate(reversed(points)):
                x, y = (F32(x) - x0) / cw, (F32(y) - y0) / ch
                inside = bool(0 <= x <= 1 and 0 <= y <= 1)
                label[i, j] = (x, y, i if inside else -1)
                if not inside:
                    continue
                if prev is not None and mask.size:
                    cv2.line(mask, (int(x * cols), int(y * rows)),
                             (int(prev[0] * cols), int(prev[1] * rows)), 255, thickness)
                prev = (x, y)
    return label, mask

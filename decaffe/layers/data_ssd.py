"""The SSD fork's AnnotatedData layer: AnnotatedDatum records (an image Datum plus labelled
boxes) from an LMDB or LevelDB, with the fork's photometric distortion, expansion, batch
sampling (random crops under constraints) and resizing, then the usual scale, mean, crop
and mirror."""

from __future__ import annotations

import numpy as np
import torch
from google.protobuf.message import DecodeError

from .. import bbox as B
from ..data import annotation as A
from ..data.datum import decode_image_bytes, record_name
from ..data.db import READ, open_db
from ..data.transformer import load_mean_file
from ..errors import DataError
from ..layer import register
from ..proto import caffe_pb2
from .data import (
    CursorSource,
    DataLayerError,
    _BaseDataLayer,
    _solver_keep,
    layer_rng,
    transform_param_of,
)

F32 = np.float32
_RESIZE = caffe_pb2.ResizeParameter


def parse_annotated(value: bytes, key=None, source: str | None = None):
    """An AnnotatedDatum from its bytes; a DataError naming the record if they don't parse."""
    ad = caffe_pb2.AnnotatedDatum()
    try:
        ad.ParseFromString(value)
    except (DecodeError, TypeError, ValueError) as e:
        raise DataError(f"{record_name(key, source)} is not an AnnotatedDatum: {e}") from None
    return ad


class _Example:
    """One record's image (H×W×C uint8), boxes and whether it is still 'encoded'."""

    def __init__(self, img, boxes, encoded, label):
        self.img, self.boxes, self.encoded, self.label = img, boxes, encoded, label


class _AnnotatedSource(CursorSource):
    """Reads and transforms batches of AnnotatedDatums (runs in the prefetch worker)."""

    def __init__(self, layer, db, cursor, rng):
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

    def example(self, key, value) -> _Example:
        ad = parse_annotated(value, key, self.source)
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
            if not ex.encoded:
                raise self._fail(f"{name}: distort_param works on encoded images only (the "
                                 "fork's DistortImage)")
            distorted = A.distort_image(_squeeze(ex.img), tp.distort_param, rng)
            ex.img = _chan(A.reencode_jpg(distorted))
        if tp.HasField("expand_param"):
            ep = tp.expand_param
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
                emit = tp.emit_constraint if tp.HasField("emit_constraint") else None
                ex.boxes = A.transform_boxes(ex.boxes, box, False, emit)
                ex.img = _chan(A.reencode_jpg(_squeeze(canvas))) if ex.encoded else canvas
        if self.samplers:
            samples = A.generate_samples(ex.boxes, self.samplers, rng)
            if samples:
                box = samples[int(rng.integers(2**31 - 1)) % len(samples)]
                img = A.crop_image(ex.img, box)
                if img.size == 0:
                    raise self._fail(f"{name}: the sampled crop {box.tolist()} is empty")
                emit = tp.emit_constraint if tp.HasField("emit_constraint") else None
                ex.boxes = A.transform_boxes(ex.boxes, B.clip_bbox(box), False, emit)
                ex.img = _chan(A.reencode_jpg(_squeeze(img))) if ex.encoded else img
        return ex

    def _fill_mean(self, canvas, box, shape) -> None:
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
        tp, rng = self.tp, self.rng
        img = ex.img
        resize = self._policy()
        size = img.shape[:2]
        if resize is not None:
            img = A.resize_image(img, resize, rng)
        h, w = img.shape[:2]
        ch = int(tp.crop_h) or int(tp.crop_size)
        cw = int(tp.crop_w) or int(tp.crop_size)
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
        emit = tp.emit_constraint if tp.HasField("emit_constraint") else None
        boxes = A.transform_boxes(ex.boxes, crop, mirror, emit, resize, size)
        return px, boxes

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


def resize_policies(tp) -> list:
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
    """SSD's AnnotatedData layer: AnnotatedDatums from ``data_param.source`` (LMDB or LevelDB,
    ``backend``), read in key order and wrapping around; tops ``data`` and optionally ``label``.

    For each record, in the fork's order: ``distort_param`` (random brightness, contrast,
    saturation, hue, channel order; encoded images), ``expand_param`` (with probability
    ``prob`` the image goes on a canvas up to ``max_expand_ratio`` times larger, filled with
    the mean), each ``annotated_data_param.batch_sampler`` proposes random crops meeting its
    constraints and one is taken at random (boxes are kept per ``emit_constraint``, projected
    and clipped), then ``resize_param`` (one policy; several are drawn by their ``prob``),
    crop_size (random in TRAIN, centred in TEST), mirror (boxes mirrored too), mean and scale.
    Images re-stored by the fork as JPEG (distorted, expanded or cropped encoded records) go
    through the same JPEG round trip.

    The label top is ``[1, 1, B, 8]``, one row per box in the batch: [item, group_label,
    instance_id, xmin, ymin, xmax, ymax, difficult]; a single row of -1 when the batch has
    no box. Records without an annotation type (and no ``anno_type`` given) give the Datum's
    label instead, ``[N, 1, 1, 1]``. Random draws follow decaffe's seed, not Caffe's stream.
    """

    min_tops = 1
    max_tops = 2

    def setup(self, bottom_shapes):
        p = self.lp.data_param
        ap = self.lp.annotated_data_param
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
            self.check(not (rp.resize_mode == _RESIZE.FIT_SMALL_SIZE and rp.height_scale
                            and rp.width_scale), "FIT_SMALL_SIZE with height_scale/width_scale "
                       "(the fork's box extrapolation) is not supported",
                       "transform_param.resize_param.height_scale")
        if len(self.policies) > 1:
            probs = np.asarray([rp.prob for rp in self.policies], np.float64)
            self.check(((probs >= 0) & (probs <= 1)).all() and abs(probs.sum() - 1) < 1e-6,
                       f"the policies' probabilities must each be in [0, 1] and sum to 1, not "
                       f"{probs.tolist()}", "transform_param.resize_param.prob")
            self.policy_probs = probs / probs.sum()
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
        with self._guard("data_param.source"):
            db = open_db(p.source, p.backend, READ)
        try:  # a failure here releases the database at once
            cursor = db.cursor()
            if not cursor.valid:
                raise self._error(f"the database '{p.source}' is empty", "data_param.source")
            rng = layer_rng()
            if p.rand_skip:
                skip = int(rng.integers(p.rand_skip))
                if hasattr(cursor, "skip"):
                    cursor.skip(skip)
                else:
                    for _ in range(skip):
                        cursor.advance()
            with self._guard("data_param.source"):
                first = parse_annotated(cursor.value, cursor.key, p.source)
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

    def _probe(self, first, key, source) -> tuple[int, int, int]:
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
        ch = int(tp.crop_h) or int(tp.crop_size)
        cw = int(tp.crop_w) or int(tp.crop_size)
        if ch and cw:
            self.check(h >= ch and w >= cw, f"the first image is {h}x{w}, smaller than the "
                       f"crop {ch}x{cw}", "transform_param.crop_size")
            h, w = ch, cw
        return (c, h, w)

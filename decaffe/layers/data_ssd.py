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
    skip_records,
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

    kind = None  # the record's AnnotationType, where a source needs it

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
        return self._from_datum(parse_annotated(value, key, self.source), key)

    def _from_datum(self, ad, key) -> _Example:
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


def crop_hw(tp) -> tuple[int, int]:
    """The crop (height, width) of an SSD transform_param: crop_size, when set, overrides
    crop_h and crop_w (the fork's DataTransformer); 0 means no crop."""
    if tp.crop_size:
        return int(tp.crop_size), int(tp.crop_size)
    return int(tp.crop_h), int(tp.crop_w)


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

    def _open(self, p):
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

    def __init__(self, layer, db, cursor, rng):
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

    def _lanes(self, ad, name: str) -> list:
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

    def _shape(self, img: np.ndarray, policy) -> tuple[int, int, int]:
        """InferBlobShape of the batch's first image under this batch's policy."""
        h, w = img.shape[:2]
        if policy is not None:
            h, w = A.resized_size(policy, h, w)
        tp = self.tp
        ch, cw = crop_hw(tp)
        if ch and cw:
            h, w = ch, cw
        return (img.shape[2], h, w)

    def _sample(self, ex: _Example, name: str, policy):
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
    """eric612/MobileNet-YOLO's LaneData layer (lane_data_layer.cpp, tusimple lane nets):
    AnnotatedDatums whose annotation groups are lanes and whose annotations are lane
    points (``Annotation.lanes``: normalized x, y), from ``data_param.source``; tops
    ``data``, optionally ``label`` and ``seg_label``.

    Per record, in the fork's order: ``distort_param``, or ``expand_param`` only without
    it; then a crop: one box of the ``annotated_data_param.batch_sampler``s, or with
    ``yolo_data_type: 1`` a jitter box (sides in [1 - yolo_data_jitter, 1], or
    [1 - jitter/2, 1], or the whole image, each a third of the time; square when the
    policy is FIT_LARGE_SIZE_AND_PAD); then ``resize_param`` (one of several policies,
    drawn by prob every 10 batches), crop_size, mirror, mean and scale as AnnotatedData.

    ``label`` is (N, 5, 64, 3): lane i's points in reverse record order as [x, y, i],
    x and y relative to the crop box of the image's own sample (an earlier image's in the
    batch when none was sampled; an all-zero box before any, which gives inf/nan), i = -1
    for a point outside the crop; the points are **not mirrored**; unfilled slots are 0.
    ``seg_label`` is (N, 1, H / seg_scales, W / seg_scales) of the batch's first image's
    (H, W), or (seg_resize_height, seg_resize_width): 1 on 1-pixel lines joining each
    lane's consecutive in-crop points, 0 elsewhere, mirrored with the image.
    Random draws follow decaffe's seed, not Caffe's stream. Errors: DataLayerError naming
    the record for raw (non-encoded) records, more than 5 lanes or 64 points, and
    expansion of LANE-typed records.
    """

    min_tops = 1
    max_tops = 3

    def setup(self, bottom_shapes):
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

"""eric612/MobileNet-YOLO's LaneData layer: lane records (AnnotatedDatum groups of lane points)
in an LMDB, their data, label (N, 5, 64, 3) and seg_label tops checked against references
written here from lane_data_layer.cpp (crop-relative points in reverse order, -1 outside the
crop, no mirror of the points; 1-pixel lines on a 1/seg_scales mask that follows the image's
mirror), the jitter crop's bookkeeping, policies held for ten batches, seeding, exact
resume, refusals, and the tusimple corpus net's own LaneData definition on that data."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from data_helpers import write_lmdb

import decaffe
from decaffe.data.sources import DataLayerError
from decaffe.errors import DecaffeError
from decaffe.proto import caffe_pb2
from decaffe.solvers import snapshot as snap

F32 = np.float32
H, W = 40, 60  # the records' images


def lane_record(img: np.ndarray, lanes, kind=caffe_pb2.AnnotatedDatum.LANE,
                encode: str | None = ".png") -> bytes:
    """An AnnotatedDatum as the fork's lane tools store one: one group per lane, one
    annotation per point (Annotation.lanes: normalized x, y)."""
    ad = caffe_pb2.AnnotatedDatum()
    if kind is not None:
        ad.type = kind
    d = ad.datum
    d.channels, d.height, d.width = img.shape[2], img.shape[0], img.shape[1]
    if encode:
        d.data, d.encoded = cv2.imencode(encode, img)[1].tobytes(), True
    else:
        d.data = img.transpose(2, 0, 1).tobytes()
    d.label = -1
    for i, points in enumerate(lanes):
        g = ad.annotation_group.add()
        g.group_label = 1
        for k, (x, y) in enumerate(points):
            a = g.annotation.add()
            a.instance_id = k
            a.lanes.x, a.lanes.y = x, y
            a.lanes.id = i
    return ad.SerializeToString()


def some_lanes(rng, n_lanes=3, n_points=7):
    """Lanes running up the image, some points outside it as tusimple's are not."""
    out = []
    for _ in range(n_lanes):
        x0, x1 = rng.uniform(0.05, 0.95, 2)
        ys = np.linspace(0.95, 0.3, n_points)
        out.append([(float(x0 + (x1 - x0) * t), float(y))
                    for t, y in zip(np.linspace(0, 1, n_points), ys)])
    return out


@pytest.fixture
def lanes_db(tmp_path):
    """Six 40x60 images with three lanes each; returns (db path, images, lanes)."""
    rng = np.random.default_rng(7)
    imgs, lanes, recs = [], [], []
    for k in range(6):
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        ln = some_lanes(rng)
        imgs.append(img)
        lanes.append(ln)
        recs.append((f"{k:08d}".encode(), lane_record(img, ln)))
    return write_lmdb(str(tmp_path / "lanes"), recs), imgs, lanes


def lane_net(db, batch=2, transform="", anno="", tops=("data", "label", "seg_label"),
             prefetch=0) -> str:
    top_text = " ".join(f'top: "{t}"' for t in tops)
    return (f'layer {{ name: "data" type: "LaneData" {top_text} '
            f'transform_param {{ {transform} }} '
            f'data_param {{ source: "{db}" batch_size: {batch} backend: LMDB '
            f'prefetch: {prefetch} }} annotated_data_param {{ {anno} }} }}\n')


def run(text, n=1, phase=decaffe.TRAIN):
    net = decaffe.Net(text, phase)
    out = []
    for _ in range(n):
        net.forward()
        out.append({t: net.blobs[t].data.copy() for t in net.blobs})
    net.close()
    return out


# -- references from lane_data_layer.cpp ------------------------------------------------------
def ref_label(lanes, box):
    """label[i, j] = [x, y, i] for lane i's point point_size-1-j, relative to the crop box;
    i is -1 outside [0, 1]; unfilled slots 0."""
    out = np.zeros((5, 64, 3), F32)
    x0, y0 = F32(box[0]), F32(box[1])
    bw, bh = F32(box[2]) - x0, F32(box[3]) - y0
    for i, pts in enumerate(lanes):
        for j in range(len(pts)):
            px, py = pts[len(pts) - 1 - j]
            x = (F32(px) - x0) / bw
            y = (F32(py) - y0) / bh
            out[i, j] = [x, y, i if (0 <= x <= 1 and 0 <= y <= 1) else -1]
    return out


def ref_mask(label, hw, lanes):
    """The seg map from the label rows of the recorded lanes: a 255 line (cv::line,
    thickness 1) from each in-crop point back to the lane's previous in-crop point, at
    int(x·W), int(y·H)."""
    m = np.zeros(hw, np.uint8)
    for lane, pts in zip(label, lanes):
        prev = None
        for x, y, flag in lane[:len(pts)]:
            if flag < 0:
                continue
            if prev is not None:
                cv2.line(m, (int(x * F32(hw[1])), int(y * F32(hw[0]))),
                         (int(prev[0] * F32(hw[1])), int(prev[1] * F32(hw[0]))), 255, 1)
            prev = (x, y)
    return m


def jpeg(img):
    return cv2.imdecode(cv2.imencode(".jpg", img)[1], cv2.IMREAD_UNCHANGED)


def crop_pixels(img, box):
    """CropImage: offsets and sizes of the clipped box truncated to whole pixels."""
    h, w = img.shape[:2]
    b = np.clip(np.asarray(box, F32), 0, 1) * np.array([w, h, w, h], F32)
    x0, y0 = int(b[0]), int(b[1])
    return img[y0:y0 + int(b[3] - b[1]), x0:x0 + int(b[2] - b[0])]


# -- labels, mask and pixels ------------------------------------------------------------------
def test_whole_image_crop_labels_mask_and_pixels(lanes_db):
    """yolo_data_jitter 0: every jitter box is the whole image, so every top is known."""
    db, imgs, lanes = lanes_db
    # a point right of the image (x 1.2) is flagged -1 and bridged over by the line
    lanes[0][0][1] = (1.2, lanes[0][0][1][1])
    write_lmdb(db, [(b"00000000", lane_record(imgs[0], lanes[0]))])
    text = lane_net(db, batch=3, transform="resize_param { resize_mode: WARP height: 32 "
                    "width: 48 }", anno="yolo_data_type: 1 yolo_data_jitter: 0 seg_scales: 2")
    (b,) = run(text, phase=decaffe.TEST)
    assert b["data"].shape == (3, 3, 32, 48)
    assert b["label"].shape == (3, 5, 64, 3)
    assert b["seg_label"].shape == (3, 1, 16, 24)
    for k in range(3):
        want = cv2.resize(jpeg(imgs[k]), (48, 32), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(b["data"][k], want.transpose(2, 0, 1).astype(F32))
        lab = ref_label(lanes[k], [0, 0, 1, 1])
        np.testing.assert_array_equal(b["label"][k], lab)
        np.testing.assert_array_equal(b["seg_label"][k, 0],
                                      ref_mask(lab, (16, 24), lanes[k]) / 255.0)
    assert b["label"][0, 0, 5, 2] == -1 and b["label"][0, 0, 5, 0] == F32(1.2)
    assert (b["label"][:, 3:] == 0).all() and (b["label"][:, :, 7:] == 0).all()
    assert set(np.unique(b["seg_label"])) == {0.0, 1.0}


def test_mask_of_a_vertical_lane_without_opencv():
    """A lane at x = 0.5 from y 0.2 to 0.8 draws column int(0.5·W) from int(0.2·H) to
    int(0.8·H) — checked without cv::line."""
    from decaffe.data import annotation as A

    lab, mask = A.lane_targets([[(0.5, 0.8), (0.5, 0.5), (0.5, 0.2)]],
                               np.array([0, 0, 1, 1], F32), (10, 8))
    want = np.zeros((10, 8), np.uint8)
    want[2:9, 4] = 255
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_array_equal(lab[0, :3],
                                  np.array([[0.5, 0.2, 0], [0.5, 0.5, 0], [0.5, 0.8, 0]], F32))


def _recover_box(lab, pts):
    """(xmin, ymin, width, height) of the crop box from one lane's label rows and its
    recorded points (x = (p - xmin) / width)."""
    rev = pts[::-1]
    xs = np.array([p[0] for p in rev], np.float64)
    ys = np.array([p[1] for p in rev], np.float64)
    lx, ly = lab[:len(rev), 0].astype(np.float64), lab[:len(rev), 1].astype(np.float64)
    bw = (xs[-1] - xs[0]) / (lx[-1] - lx[0])
    bh = (ys[-1] - ys[0]) / (ly[-1] - ly[0])
    return xs[0] - lx[0] * bw, ys[0] - ly[0] * bh, bw, bh


def test_jitter_crop_moves_points_and_pixels_together_and_mirror_flips_only_the_mask(
        lanes_db):
    db, imgs, lanes = lanes_db
    text = lane_net(db, batch=3, transform="mirror: true resize_param { resize_mode: WARP "
                    "height: 24 width: 36 }",
                    anno="yolo_data_type: 1 yolo_data_jitter: 0.4 seg_scales: 3")
    decaffe.set_random_seed(4)
    batches = run(text, n=4)
    mirrored = whole = 0
    for n, b in enumerate(batches):
        for k in range(3):
            r = (3 * n + k) % 6
            lab = b["label"][k]
            x0, y0, bw, bh = _recover_box(lab[0], lanes[r][0])
            box = np.array([x0, y0, x0 + bw, y0 + bh])
            # every lane's points follow the same box (the points are never mirrored)
            for i, pts in enumerate(lanes[r]):
                np.testing.assert_allclose(lab[i, :len(pts), :2],
                                           ref_label([pts], box)[0, :len(pts), :2],
                                           rtol=1e-4, atol=1e-5)
            # the fork's jitter: the whole image, or sides in [1 - j, 1] (j = 0.4 or 0.2)
            if np.allclose(box, [0, 0, 1, 1], atol=1e-6):
                whole += 1
            else:
                assert 0.6 - 1e-5 <= bw <= 1 + 1e-6 and 0.6 - 1e-5 <= bh <= 1 + 1e-6
                assert x0 >= -1e-6 and y0 >= -1e-6 and x0 + bw <= 1 + 1e-5
            # the pixels: the crop (whole pixels), JPEG round trip, resize, maybe mirrored
            # (the box read back from float32 labels is exact to ~1e-6: try its neighbours)
            cands = []
            for d in itertools.product((-1e-5, 0, 1e-5), repeat=4):
                img = cv2.resize(jpeg(crop_pixels(imgs[r], box + d)), (36, 24))
                cands.append(img.transpose(2, 0, 1).astype(F32))
            got = b["data"][k]
            flip = any(np.array_equal(got, c[..., ::-1]) for c in cands)
            assert flip or any(np.array_equal(got, c) for c in cands)
            mask = ref_mask(lab, (8, 12), lanes[r]) / 255.0
            np.testing.assert_array_equal(b["seg_label"][k, 0], mask[:, ::-1] if flip else mask)
            mirrored += flip
    assert 0 < mirrored < 12 and whole < 12


def test_batch_sampler_box_crops_points(lanes_db):
    """With batch_samplers the crop is a sampled box (here half the image's side)."""
    db, _, lanes = lanes_db
    text = lane_net(db, batch=2, transform="resize_param { resize_mode: WARP height: 20 "
                    "width: 30 }", anno="batch_sampler { sampler { min_scale: 0.5 "
                    "max_scale: 0.5 } max_sample: 1 max_trials: 1 } seg_scales: 2")
    (b,) = run(text)
    for k in range(2):
        _, _, bw, bh = _recover_box(b["label"][k, 0], lanes[k][0])
        assert bw == pytest.approx(0.5, rel=1e-4) and bh == pytest.approx(0.5, rel=1e-4)


def test_without_any_crop_box_points_divide_by_zero_as_in_the_fork(lanes_db):
    """No batch_sampler and yolo_data_type 0: the fork's crop box is an unset
    NormalizedBBox (all 0), so every point is inf/nan, flagged -1, and nothing is drawn."""
    db, _, lanes = lanes_db
    (b,) = run(lane_net(db, batch=2, anno="seg_scales: 4"), phase=decaffe.TEST)
    n = len(lanes[0][0])
    assert np.isinf(b["label"][0, 0, :n, 0]).all()
    assert (b["label"][:, :3, :n, 2] == -1).all()
    assert (b["seg_label"] == 0).all() and b["seg_label"].shape == (2, 1, 10, 15)


def test_policy_is_drawn_every_ten_batches_and_seg_follows_it(tmp_path):
    rng = np.random.default_rng(1)
    recs = [(f"{k:08d}".encode(),
             lane_record(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), some_lanes(rng, 1)))
            for k in range(3)]
    db = write_lmdb(str(tmp_path / "db"), recs)
    text = lane_net(db, batch=1, transform="resize_param { prob: 0.5 height: 8 width: 8 } "
                    "resize_param { prob: 0.5 height: 16 width: 12 }",
                    anno="yolo_data_type: 1 yolo_data_jitter: 0.2 seg_scales: 4")
    decaffe.set_random_seed(2)
    shapes = [(b["data"].shape, b["seg_label"].shape) for b in run(text, n=40)]
    for block in range(4):
        assert len(set(shapes[10 * block:10 * block + 10])) == 1
    assert {s[0][2:] for s in shapes} == {(8, 8), (16, 12)}
    assert all(s[1][2:] == (s[0][2] // 4, s[0][3] // 4) for s in shapes)


def test_seg_resize_gives_the_mask_size_and_two_tops_give_labels_only(lanes_db):
    db, _, lanes = lanes_db
    anno = "yolo_data_type: 1 yolo_data_jitter: 0 seg_resize_width: 10 seg_resize_height: 6"
    tf = "resize_param { height: 16 width: 16 }"
    (b,) = run(lane_net(db, transform=tf, anno=anno))
    assert b["seg_label"].shape == (2, 1, 6, 10)
    want = ref_mask(ref_label(lanes[1], [0, 0, 1, 1]), (6, 10), lanes[1]) / 255.0
    np.testing.assert_array_equal(b["seg_label"][1, 0], want)
    (two,) = run(lane_net(db, transform=tf, anno=anno, tops=("data", "label")))
    assert set(two) == {"data", "label"}
    np.testing.assert_array_equal(two["label"], b["label"])


def test_setup_shapes(lanes_db):
    db, _, _ = lanes_db
    net = decaffe.Net(lane_net(db, batch=4, transform="crop_size: 20", anno="seg_scales: 4"),
                      decaffe.TEST)
    assert net.blobs["data"].data.shape == (4, 3, 20, 20)
    assert net.blobs["label"].data.shape == (4, 5, 64, 3)
    assert net.blobs["seg_label"].data.shape == (4, 1, 5, 5)
    net.close()


# -- seeding and resume -----------------------------------------------------------------------
TF = ("mirror: true mean_value: 127.5 scale: 0.0078 resize_param { prob: 0.5 height: 16 "
      "width: 16 interp_mode: LINEAR interp_mode: AREA } resize_param { prob: 0.5 height: 12 "
      "width: 20 } distort_param { brightness_prob: 0.5 brightness_delta: 32 hue_prob: 0.5 "
      "hue_delta: 18 }")
ANNO = "yolo_data_type: 1 yolo_data_jitter: 0.4 seg_scales: 4"


def test_seeded_runs_repeat_and_other_seeds_differ(lanes_db):
    db, _, _ = lanes_db
    decaffe.set_random_seed(9)
    a = run(lane_net(db, transform=TF, anno=ANNO, prefetch=2), n=5)
    decaffe.set_random_seed(9)
    b = run(lane_net(db, transform=TF, anno=ANNO), n=5)
    decaffe.set_random_seed(10)
    c = run(lane_net(db, transform=TF, anno=ANNO), n=5)
    for x, y in zip(a, b):
        for t in x:
            np.testing.assert_array_equal(x[t], y[t])
    assert any(not np.array_equal(x["data"], z["data"]) for x, z in zip(a, c))


def test_position_resumes_the_same_batches_across_a_policy_draw(lanes_db):
    db, _, _ = lanes_db
    decaffe.set_random_seed(3)
    full = run(lane_net(db, transform=TF, anno=ANNO, prefetch=3), n=14)
    decaffe.set_random_seed(3)
    net = decaffe.Net(lane_net(db, transform=TF, anno=ANNO, prefetch=3), decaffe.TRAIN)
    for _ in range(8):
        net.forward()
    pos = net._layers[0].position()
    assert pos["kind"] == "_LaneSource" and pos["iters"] == 8
    net.close()
    decaffe.set_random_seed(77)  # another seed: the position carries the random state
    other = decaffe.Net(lane_net(db, transform=TF, anno=ANNO, prefetch=3), decaffe.TRAIN)
    other.forward()
    other._layers[0].set_position(pos)
    for k in range(8, 14):  # batch 10 draws the next policy
        other.forward()
        for t in ("data", "label", "seg_label"):
            np.testing.assert_array_equal(other.blobs[t].data, full[k][t])
    other.close()


# -- refusals ---------------------------------------------------------------------------------
def _db_with(tmp_path, value: bytes, good: int = 1) -> str:
    rng = np.random.default_rng(0)
    recs = [(f"{k:08d}".encode(),
             lane_record(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), some_lanes(rng)))
            for k in range(good)]
    recs.append((b"zz_bad", value))
    return write_lmdb(str(tmp_path / "db"), recs)


@pytest.mark.parametrize("value, match", [
    (b"\xff\xff\xff", "'zz_bad'.* is not an AnnotatedDatum"),
    (lane_record(np.zeros((H, W, 3), np.uint8), [[(0.5, 0.5)]] * 6),
     "'zz_bad'.* has 6 lanes; the label top holds 5"),
    (lane_record(np.zeros((H, W, 3), np.uint8), [[(0.5, 0.5)] * 65]),
     "'zz_bad'.*: lane 0 has 65 points; the label top holds 64"),
    (lane_record(np.zeros((H, W, 3), np.uint8), [[(0.5, 0.5)]], encode=None),
     "'zz_bad'.* is not an encoded image"),
])
def test_bad_records_name_record_and_source(tmp_path, value, match):
    db = _db_with(tmp_path, value)
    net = decaffe.Net(lane_net(db, batch=2, anno="seg_scales: 4"), decaffe.TEST)
    with pytest.raises(DataLayerError, match=match) as e:
        net.forward()
    assert db in str(e.value) and "'data'" in str(e.value)
    net.close()


def test_expanding_a_lane_record_is_refused_as_the_fork_aborts(tmp_path):
    db = _db_with(tmp_path, lane_record(np.zeros((H, W, 3), np.uint8), [[(0.5, 0.5)]]),
                  good=0)
    text = lane_net(db, batch=1, transform="expand_param { prob: 1 max_expand_ratio: 2 }")
    with pytest.raises(DataLayerError, match="'zz_bad'.*expand_param on a LANE record"):
        run(text)
    # untyped records expand (their lanes are still read from the record, unmoved)
    untyped = write_lmdb(str(tmp_path / "db2"), [(b"a", lane_record(
        np.zeros((H, W, 3), np.uint8), [[(0.5, 0.5), (0.5, 0.9)]], kind=None))])
    (b,) = run(lane_net(untyped, batch=1, transform="expand_param { prob: 1 "
                        "max_expand_ratio: 2 }", anno="yolo_data_type: 1 "
                        "yolo_data_jitter: 0 seg_scales: 4", tops=("data", "label")).replace(
        "transform_param {", "transform_param { resize_param { height: 8 width: 8 }"))
    np.testing.assert_array_equal(b["label"][0, 0, :2],
                                  np.array([[0.5, 0.9, 0], [0.5, 0.5, 0]], F32))


@pytest.mark.parametrize("transform, anno, batch, match", [
    ("distort_param { brightness_prob: 1 } expand_param { prob: 1 max_expand_ratio: 2 }", "",
     1, "expand_param: cannot be given with distort_param"),
    ("", "yolo_data_type: 1", 1, "resize_param: yolo_data_type 1 needs one"),
    ("resize_param { height: 8 width: 8 }", "yolo_data_type: 1 yolo_data_jitter: 1.5", 1,
     "yolo_data_jitter: must be in"),
    ("resize_param { prob: 0.5 height: 8 width: 8 }", "", 1, "sum to 1"),
    ("resize_param { resize_mode: FIT_SMALL_SIZE height: 8 width: 8 }", "", 2,
     "batch_size: only batch_size 1 with FIT_SMALL_SIZE"),
    ("", "seg_scales: 0", 1, "seg_scales: must be positive"),
    ("", "seg_resize_width: -2 seg_resize_height: 4", 1, "must not be negative"),
])
def test_bad_definitions_are_refused(lanes_db, transform, anno, batch, match):
    db, _, _ = lanes_db
    with pytest.raises(DecaffeError, match=match):
        decaffe.Net(lane_net(db, batch=batch, transform=transform, anno=anno), decaffe.TRAIN)


def test_raw_first_record_is_refused_at_setup(tmp_path):
    db = write_lmdb(str(tmp_path / "db"), [(b"raw", lane_record(
        np.zeros((H, W, 3), np.uint8), [[(0.5, 0.5)]], encode=None))])
    with pytest.raises(DataLayerError, match="'raw'.* is not an encoded image"):
        decaffe.Net(lane_net(db, batch=1), decaffe.TRAIN)


# -- the corpus net's own definition ----------------------------------------------------------
CORPUS_LAYER = """
layer {
  name: "data"
  type: "LaneData"
  top: "data"
  top: "label"
  top: "seg_label"
  include {
    phase: TRAIN
  }
  transform_param {
    scale: 0.007843
    mirror: true
    mean_value: 127.5
    mean_value: 127.5
    mean_value: 127.5
    resize_param {
      prob: 1.0
      resize_mode: WARP
      height: 32
      width: 32
      interp_mode: LINEAR
      interp_mode: AREA
      interp_mode: LANCZOS4
    }
    emit_constraint {
      emit_type: CENTER
    }
    distort_param {
      brightness_prob: 0.5
      brightness_delta: 32.0
      contrast_prob: 0.5
      contrast_lower: 0.5
      contrast_upper: 1.5
      hue_prob: 0.5
      hue_delta: 18.0
      saturation_prob: 0.5
      saturation_lower: 0.5
      saturation_upper: 1.5
      random_order_prob: 0.0
    }
  }
  data_param {
    source: "DB"
    batch_size: 4
    backend: LMDB
  }
  annotated_data_param {
    yolo_data_type : 1
    yolo_data_jitter : 0.4
    seg_scales : 4
    label_map_file:  "data/VOC0712/labelmap_voc.prototxt"
  }
}
"""


def test_corpus_tusimple_definition_runs(lanes_db):
    """models/tusimple/mobilenet_yolov3_lite_train.prototxt's LaneData (source, batch size
    and the 512x512 resize made small), with its Silence and Reductions of the tops."""
    db, _, lanes = lanes_db
    text = CORPUS_LAYER.replace('"DB"', f'"{db}"') + (
        'layer { name: "silence" type: "Silence" bottom: "label" } '
        'layer { name: "reduction_h" type: "Reduction" bottom: "seg_label" '
        'top: "reduction_h" reduction_param { axis: 3 } } '
        'layer { name: "reduction_w" type: "Reduction" bottom: "reduction_h" '
        'top: "reduction_w" reduction_param { axis: 2 } }')
    decaffe.set_random_seed(1)
    net = decaffe.Net(text, decaffe.TRAIN)
    lo, hi = F32(-127.5) * F32(0.007843), F32(127.5) * F32(0.007843)
    for n in range(3):
        net.forward()
        data, lab, seg = (net.blobs[t].data for t in ("data", "label", "seg_label"))
        assert data.shape == (4, 3, 32, 32) and lab.shape == (4, 5, 64, 3)
        assert seg.shape == (4, 1, 8, 8)
        assert lo - 1e-6 <= data.min() and data.max() <= hi + 1e-6
        assert set(np.unique(seg)) <= {0.0, 1.0}
        for k in range(4):
            pts = lanes[(4 * n + k) % 6]
            assert set(np.unique(lab[k, :3, :len(pts[0]), 2])) <= {-1.0, 0.0, 1.0, 2.0}
        np.testing.assert_allclose(net.blobs["reduction_w"].data, seg.sum(axis=(2, 3)))
    net.close()


def test_jitter_box_is_square_under_fit_large_size_and_pad(lanes_db):
    """GenerateJitterSamples keeps the aspect ratio (height = width) when the batch's
    policy pads to fit."""
    db, _, lanes = lanes_db
    text = lane_net(db, batch=3, transform="resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD "
                    "height: 16 width: 16 }", anno="yolo_data_type: 1 yolo_data_jitter: 0.4",
                    tops=("data", "label"))
    decaffe.set_random_seed(6)
    sides = []
    for n, b in enumerate(run(text, n=4)):
        assert b["data"].shape == (3, 3, 16, 16)
        for k in range(3):
            _, _, bw, bh = _recover_box(b["label"][k, 0], lanes[(3 * n + k) % 6][0])
            assert bw == pytest.approx(bh, rel=1e-4)
            sides.append(bw)
    assert min(sides) < 0.99  # some boxes were jittered


def test_solver_snapshot_resumes_bitwise(lanes_db, tmp_path, monkeypatch):
    """A snapshot records LaneData's position (records, random state, batch count and
    policy) and -snapshot continues as the uninterrupted run, across a policy draw."""
    db, _, _ = lanes_db
    monkeypatch.chdir(tmp_path)
    tf = ("mirror: true scale: 0.0039 resize_param { prob: 0.5 height: 8 width: 8 } "
          "resize_param { prob: 0.5 height: 8 width: 8 interp_mode: AREA }")
    net = lane_net(db, batch=2, transform=tf, anno=ANNO.replace("seg_scales: 4",
                                                                "seg_scales: 2"), prefetch=2)
    net += ('layer { name: "s" type: "Silence" bottom: "label" } '
            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
            'inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.1 } } } '
            'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "seg_label" '
            'top: "loss" }')
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" max_iter: 13 '
        'snapshot: 6 snapshot_prefix: "snap" random_seed: 5 display: 0\n')

    def weights(s):
        return [p.detach().clone().numpy() for p in s.net.learnable_params]

    full = decaffe.get_solver("solver.prototxt")
    full.solve()
    want = weights(full)
    full.net.close()
    resumed = decaffe.get_solver("solver.prototxt")
    resumed.solve("snap_iter_6.solverstate")
    assert all(np.array_equal(a, b) for a, b in zip(want, weights(resumed)))
    resumed.net.close()
    # without the recorded position (as Caffe resumes) the batches differ
    data = snap.read_state("snap_iter_6.solverstate")
    assert data.positions["nets"]["train"]["data"]["iters"] == 6
    data.positions = None
    snap.write_state("plain_iter_6.solverstate", data)
    plain = decaffe.get_solver("solver.prototxt")
    plain.solve("plain_iter_6.solverstate")
    assert not all(np.array_equal(a, b) for a, b in zip(want, weights(plain)))
    plain.net.close()


def test_corpus_tusimple_train_net_trains_on_lane_records(lanes_db):
    """The whole corpus net (tests/models/forks) with its LaneData reading the records at
    64x64: YoloSeg's loss takes seg_label at conv16's 1/4 size, forward and backward."""
    from fork_corpus import nets
    from google.protobuf import text_format

    from decaffe.formats import prototxt

    db, _, _ = lanes_db
    (fork_net,) = [n for n in nets()
                   if n.local_path.endswith("tusimple/mobilenet_yolov3_lite_train.prototxt")]
    param = prototxt.parse_text(fork_net.text, caffe_pb2.NetParameter(), fork_net.local_path)
    lp = param.layer[0]
    assert lp.type == "LaneData"
    lp.data_param.source, lp.data_param.batch_size = db, 2
    lp.transform_param.resize_param[0].height = lp.transform_param.resize_param[0].width = 64
    decaffe.set_random_seed(0)
    net = decaffe.Net(text_format.MessageToString(param), decaffe.TRAIN)
    loss = net.forward()["Seg_loss"]
    assert np.isfinite(loss) and loss > 0
    assert net.blobs["seg_label"].data.shape == net.blobs["conv16"].data.shape == (2, 1, 16, 16)
    net.backward()
    assert np.abs(net.params["conv16"][0].diff).sum() > 0
    net.close()

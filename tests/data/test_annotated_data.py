"""SSD's AnnotatedData layer and `decaffe convert_annoset`: the fork's golden batches, box
bookkeeping through mirror, expansion, batch sampling and resize, seeding, refusals, and the
tool's VOC XML / txt conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest
from data_helpers import GOLDEN
from golden_replay import ATOL_FWD, RTOL_FWD, assert_close

import caffe
import decaffe
from decaffe.cli.convert_annoset import convert_annoset
from decaffe.data import annotation as A
from decaffe.errors import DecaffeError
from decaffe.proto import caffe_pb2

with open(os.path.join(GOLDEN, "INDEX.json")) as _f:
    CASES = [c for c in json.load(_f)["cases"]
             if c["kind"] == "data" and c["name"].startswith("fork_annotated")]


def test_annotated_cases_exist():
    assert len(CASES) >= 2


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_annotated_data_golden(case, monkeypatch):
    """Every batch and its boxes, in Caffe's order, wrap-around included."""
    monkeypatch.chdir(GOLDEN)
    z = np.load(case["name"] + ".npz")
    net = caffe.Net(case["name"] + ".prototxt",
                    caffe.TEST if case["phase"] == "TEST" else caffe.TRAIN)
    for p in range(case["passes"]):
        net.forward()
        for t in case["tops"]:
            assert_close(net.blobs[t].data, z[f"output/{p}/{t}"], RTOL_FWD, ATOL_FWD,
                         f"{case['name']} batch {p} top {t}")


# ------------------------------------------------------------------------------------------
# a small VOC-style dataset made with convert_annoset
# ------------------------------------------------------------------------------------------
LABEL_MAP = """item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "cat" label: 1 display_name: "Cat" }
item { name: "dog" label: 2 display_name: "Dog" }
"""


def voc_xml(w, h, objects) -> str:
    objs = "".join(
        f"<object><name>{n}</name><pose>Left</pose><difficult>{int(d)}</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
        f"</bndbox></object>" for n, d, (x0, y0, x1, y1) in objects)
    return (f"<annotation><filename>x</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


@pytest.fixture
def voc(tmp_path):
    """Three 40x30 images with XML boxes, a label map and the list file."""
    rng = np.random.default_rng(0)
    objects = [[("cat", 0, (4, 3, 20, 15)), ("dog", 1, (22, 10, 38, 28)),
                ("cat", 0, (10, 12, 18, 20))],
               [("dog", 0, (0, 0, 39, 29))],
               []]
    lines = []
    for i, objs in enumerate(objects):
        img = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"img{i}.png"), img)
        (tmp_path / f"img{i}.xml").write_text(voc_xml(40, 30, objs))
        lines.append(f"img{i}.png img{i}.xml")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "labelmap.prototxt").write_text(LABEL_MAP)
    return tmp_path


def make_db(d, **kw) -> str:
    db = str(d / "db")
    convert_annoset(str(d) + "/", str(d / "list.txt"), db, anno_type="detection",
                    label_map_file=str(d / "labelmap.prototxt"), **kw, log=open(os.devnull, "w"))
    return db


def records(db: str):
    env = lmdb.open(db, readonly=True, lock=False)
    with env.begin() as txn:
        out = [(k.decode(), caffe_pb2.AnnotatedDatum.FromString(v)) for k, v in txn.cursor()]
    env.close()
    return out


def test_convert_annoset_voc_xml(voc):
    recs = records(make_db(voc, encoded=True, encode_type="png"))
    assert [k for k, _ in recs] == ["00000000_img0.png", "00000001_img1.png",
                                    "00000002_img2.png"]
    ad = recs[0][1]
    assert ad.type == caffe_pb2.AnnotatedDatum.BBOX
    assert ad.datum.encoded and ad.datum.label == -1
    assert (ad.datum.channels, ad.datum.height, ad.datum.width) == (3, 30, 40)
    # cats first (first seen), instance ids counting within the group
    groups = [(g.group_label, [(a.instance_id, a.bbox.xmin, a.bbox.ymin, a.bbox.xmax,
                                a.bbox.ymax, a.bbox.difficult) for a in g.annotation])
              for g in ad.annotation_group]
    f = np.float32
    assert groups == [
        (1, [(0, f(4) / 40, f(3) / 30, f(20) / 40, f(15) / 30, False),
             (1, f(10) / 40, f(12) / 30, f(18) / 40, f(20) / 30, False)]),
        (2, [(0, f(22) / 40, f(10) / 30, f(38) / 40, f(28) / 30, True)])]
    assert len(recs[2][1].annotation_group) == 0
    img = cv2.imdecode(np.frombuffer(ad.datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(img, cv2.imread(str(voc / "img0.png")))


def test_convert_annoset_txt_resize_and_classification(tmp_path):
    img = np.full((20, 50, 3), 7, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "a.txt").write_text("3 5 2 25 10\n1 0 0 50 20\n")
    (tmp_path / "det.txt").write_text("a.png a.txt\n")
    db = str(tmp_path / "det")
    convert_annoset(str(tmp_path) + "/", str(tmp_path / "det.txt"), db, anno_type="detection",
                    label_type="txt", min_dim=40, log=open(os.devnull, "w"))
    (_, ad), = records(db)
    assert not ad.datum.encoded
    # min_dim 40: the short side 20 doubles: 40 x 100
    assert (ad.datum.channels, ad.datum.height, ad.datum.width) == (3, 40, 100)
    groups = [(g.group_label, [round(a.bbox.xmax, 6) for a in g.annotation])
              for g in ad.annotation_group]
    assert groups == [(3, [0.5]), (1, [1.0])]
    (tmp_path / "cls.txt").write_text("a.png 4\n")
    db2 = str(tmp_path / "cls")
    convert_annoset(str(tmp_path) + "/", str(tmp_path / "cls.txt"), db2, resize_height=5,
                    resize_width=6, log=open(os.devnull, "w"))
    (_, ad2), = records(db2)
    assert not ad2.HasField("type") and ad2.datum.label == 4
    assert (ad2.datum.height, ad2.datum.width) == (5, 6)


def test_convert_annoset_errors(voc):
    (voc / "img0.xml").write_text(voc_xml(40, 30, [("bird", 0, (1, 1, 2, 2))]))
    with pytest.raises(DecaffeError, match="bird"):
        make_db(voc)
    with pytest.raises(DecaffeError, match="anno_type"):
        convert_annoset(str(voc) + "/", str(voc / "list.txt"), str(voc / "x"),
                        anno_type="segmentation")
    (voc / "dup.prototxt").write_text(LABEL_MAP + 'item { name: "cat" label: 3 }\n')
    with pytest.raises(DecaffeError, match="duplicates"):
        convert_annoset(str(voc) + "/", str(voc / "list.txt"), str(voc / "y"),
                        anno_type="detection", label_map_file=str(voc / "dup.prototxt"),
                        check_label=True)


def test_convert_annoset_command_line(voc):
    r = subprocess.run([sys.executable, "-m", "decaffe", "convert_annoset", "-anno_type",
                        "detection", "-label_map_file", "labelmap.prototxt", "-encoded",
                        "-encode_type=png", "-resize_height", "24", "-resize_width", "32",
                        "./", "list.txt", "clidb"], cwd=voc, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    recs = records(str(voc / "clidb"))
    assert len(recs) == 3 and recs[0][1].datum.height == 24 and recs[0][1].datum.width == 32


# ------------------------------------------------------------------------------------------
# the layer on that dataset
# ------------------------------------------------------------------------------------------
def net_text(db, batch=3, transform="", anno="") -> str:
    return (f'layer {{ name: "data" type: "AnnotatedData" top: "data" top: "label" '
            f'transform_param {{ {transform} }} '
            f'data_param {{ source: "{db}" batch_size: {batch} backend: LMDB prefetch: 0 }} '
            f'annotated_data_param {{ {anno} }} }}\n')


def batch(text, phase=decaffe.TRAIN, n=1):
    net = decaffe.Net(text, phase)
    out = []
    for _ in range(n):
        net.forward()
        out.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
    return out


def test_layer_reads_boxes_and_pixels(voc):
    db = make_db(voc, encoded=True, encode_type="png")
    (data, label), = batch(net_text(db), decaffe.TEST)
    assert data.shape == (3, 3, 30, 40) and label.shape == (1, 1, 4, 8)
    np.testing.assert_array_equal(data[1], cv2.imread(str(voc / "img1.png")).transpose(2, 0, 1))
    np.testing.assert_allclose(label[0, 0, :, :3], [[0, 1, 0], [0, 1, 1], [0, 2, 0], [1, 2, 0]])
    np.testing.assert_allclose(label[0, 0, 3, 3:], [0, 0, 39 / 40, 29 / 30, 0], rtol=1e-6)


def test_layer_mirror_flips_boxes_with_pixels(voc):
    db = make_db(voc)
    decaffe.set_random_seed(3)
    plain = batch(net_text(db, batch=1), decaffe.TEST, n=6)
    decaffe.set_random_seed(3)
    mir = batch(net_text(db, batch=1, transform="mirror: true"), decaffe.TEST, n=6)
    flipped = 0
    for (d0, l0), (d1, l1) in zip(plain, mir):
        if np.array_equal(d1, d0[..., ::-1]) and not np.array_equal(d0, d1):
            flipped += 1
            if l0[0, 0, 0, 0] >= 0:
                np.testing.assert_allclose(l1[0, 0, :, 3], 1 - l0[0, 0, :, 5], atol=1e-6)
                np.testing.assert_allclose(l1[0, 0, :, 5], 1 - l0[0, 0, :, 3], atol=1e-6)
        else:
            np.testing.assert_array_equal(d1, d0)
            np.testing.assert_array_equal(l1, l0)
    assert 0 < flipped < 6


def test_layer_resize_expand_and_sampler_keep_boxes_consistent(voc):
    """With expansion, batch sampling and a WARP resize, every box stays in [0, 1] and the
    run repeats exactly under the same seed."""
    db = make_db(voc, encoded=True, encode_type="png")
    transform = ("mean_value: 104 mean_value: 117 mean_value: 123 "
                 "resize_param { resize_mode: WARP height: 24 width: 24 interp_mode: LINEAR "
                 "interp_mode: NEAREST } emit_constraint { emit_type: CENTER } "
                 "expand_param { prob: 0.5 max_expand_ratio: 3 } "
                 "distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 "
                 "contrast_lower: 0.5 contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 "
                 "saturation_prob: 0.5 saturation_lower: 0.5 saturation_upper: 1.5 "
                 "random_order_prob: 0.2 }")
    anno = ("batch_sampler { max_sample: 1 max_trials: 1 } "
            "batch_sampler { sampler { min_scale: 0.3 max_scale: 1 min_aspect_ratio: 0.5 "
            "max_aspect_ratio: 2 } sample_constraint { min_jaccard_overlap: 0.3 } "
            "max_sample: 1 max_trials: 50 }")
    decaffe.set_random_seed(5)
    run1 = batch(net_text(db, transform=transform, anno=anno), n=4)
    decaffe.set_random_seed(5)
    run2 = batch(net_text(db, transform=transform, anno=anno), n=4)
    for (d1, l1), (d2, l2) in zip(run1, run2):
        assert d1.shape == (3, 3, 24, 24)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
        real = l1[0, 0][l1[0, 0, :, 0] >= 0]
        assert ((real[:, 3:7] >= 0) & (real[:, 3:7] <= 1)).all()
        assert (real[:, 5] > real[:, 3]).all() and (real[:, 6] > real[:, 4]).all()


def test_expand_and_crop_move_boxes_exactly():
    rng = np.random.default_rng(0)
    img = np.zeros((10, 20, 3), np.uint8)
    canvas, ebox = A.expand_image(img, 2.0, [1, 2, 3], rng)
    assert canvas.shape == (20, 40, 3)
    boxes = [(1, 0, np.array([0, 0, 0.5, 0.5], np.float32), False)]
    moved = A.transform_boxes(boxes, ebox, False)
    # the image's top-left corner sits at -ebox.xmin·w, -ebox.ymin·h on the canvas
    x0, y0 = -ebox[0] * 20, -ebox[1] * 10
    np.testing.assert_allclose(moved[0][2], [x0 / 40, y0 / 20, (x0 + 10) / 40, (y0 + 5) / 20],
                               atol=1e-6)
    assert (canvas[0, 0] == [1, 2, 3]).all() or x0 == 0 or y0 == 0
    # a crop keeps the boxes whose centre lies inside (CENTER emit), clipped
    emit = caffe_pb2.EmitConstraint()
    crop = np.array([0.25, 0, 1, 1], np.float32)
    boxes = [(1, 0, np.array([0, 0, 0.6, 0.5], np.float32), False),
             (2, 0, np.array([0, 0, 0.2, 0.5], np.float32), False)]
    kept = A.transform_boxes(boxes, crop, False, emit)
    assert [b[0] for b in kept] == [1]
    np.testing.assert_allclose(kept[0][2], [0, 0, 0.35 / 0.75, 0.5], atol=1e-6)


def test_sample_constraint_semantics():
    c = caffe_pb2.SampleConstraint()
    objs = np.array([[0, 0, 0.5, 0.5]], np.float32)
    assert A.satisfies(np.array([0, 0, 1, 1], np.float32), objs, c)  # no constraint
    c.min_jaccard_overlap = 0.5
    assert not A.satisfies(np.array([0, 0, 1, 1], np.float32), objs, c)  # IoU 0.25
    assert A.satisfies(np.array([0, 0, 0.6, 0.6], np.float32), objs, c)
    c2 = caffe_pb2.SampleConstraint(min_object_coverage=0.9)
    assert A.satisfies(np.array([0, 0, 1, 1], np.float32), objs, c2)


def test_layer_classification_records_give_datum_labels(tmp_path):
    img = np.full((6, 5, 3), 9, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "cls.txt").write_text("a.png 7\na.png 2\n")
    db = str(tmp_path / "cls")
    convert_annoset(str(tmp_path) + "/", str(tmp_path / "cls.txt"), db,
                    log=open(os.devnull, "w"))
    (data, label), = batch(net_text(db, batch=2), decaffe.TEST)
    assert label.shape == (2, 1, 1, 1) and label.ravel().tolist() == [7, 2]


def test_layer_refusals(voc):
    db = make_db(voc)
    with pytest.raises(DecaffeError, match="distort_param"):
        batch(net_text(db, transform="distort_param { brightness_prob: 1 "
                                     "brightness_delta: 3 }"))
    with pytest.raises(DecaffeError, match="height_scale"):
        batch(net_text(db, transform="resize_param { resize_mode: FIT_SMALL_SIZE height: 5 "
                                     "width: 5 height_scale: 4 width_scale: 4 }"))
    with pytest.raises(DecaffeError, match="min_scale"):
        batch(net_text(db, anno="batch_sampler { sampler { min_scale: 0 } }"))
    with pytest.raises(DecaffeError, match="source"):
        batch(net_text(str(voc / "missing")))


def test_transform_crop_moves_boxes_of_raw_records_only(voc):
    """crop_size in TEST (centred): raw records' boxes are projected into the crop; encoded
    records keep theirs (the goldens' build reports the whole image as their crop)."""
    raw = make_db(voc)
    (d_raw, l_raw), = batch(net_text(raw, batch=1, transform="crop_size: 20"), decaffe.TEST)
    # image 0 is 40x30: the crop is x 10..30, y 5..25 (normalized 0.25..0.75, 1/6..5/6)
    crop = np.array([0.25, 5 / 30, 0.75, 25 / 30])
    box = np.array([4 / 40, 3 / 30, 20 / 40, 15 / 30])  # the first cat
    w, h = crop[2] - crop[0], crop[3] - crop[1]
    want = np.clip([(box[0] - crop[0]) / w, (box[1] - crop[1]) / h, (box[2] - crop[0]) / w,
                    (box[3] - crop[1]) / h], 0, 1)
    np.testing.assert_allclose(l_raw[0, 0, 0, 3:7], want, rtol=1e-5, atol=1e-6)
    d2 = voc / "e"
    d2.mkdir()
    for f in voc.iterdir():
        if f.is_file():
            (d2 / f.name).write_bytes(f.read_bytes())
    encdb = make_db(d2, encoded=True, encode_type="png")
    (d_enc, l_enc), = batch(net_text(encdb, batch=1, transform="crop_size: 20"), decaffe.TEST)
    np.testing.assert_array_equal(d_enc, d_raw)
    np.testing.assert_allclose(l_enc[0, 0, 0, 3:7], box, rtol=1e-6)


def test_crop_size_overrides_crop_h_and_crop_w(voc):
    """The fork's DataTransformer: crop_size, when set, replaces crop_h/crop_w."""
    db = make_db(voc)
    (d_size, l_size), = batch(net_text(db, batch=1, transform="crop_size: 20"), decaffe.TEST)
    (d_both, l_both), = batch(net_text(db, batch=1, transform="crop_size: 20 crop_h: 10 "
                                       "crop_w: 12"), decaffe.TEST)
    assert d_both.shape[-2:] == (20, 20)
    np.testing.assert_array_equal(d_both, d_size)
    np.testing.assert_array_equal(l_both, l_size)
    (d_hw, _), = batch(net_text(db, batch=1, transform="crop_h: 10 crop_w: 12"), decaffe.TEST)
    assert d_hw.shape[-2:] == (10, 12)


def _anno_lmdb(path, examples) -> str:
    """An LMDB of AnnotatedDatums written directly: (C×H×W array, [(label, box)])."""
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (arr, boxes) in enumerate(examples):
            ad = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
            d = ad.datum
            d.channels, d.height, d.width = arr.shape
            if arr.dtype == np.uint8:
                d.data = arr.tobytes()
            else:
                d.float_data.extend(arr.ravel().tolist())
            for label, box in boxes:
                g = ad.annotation_group.add(group_label=label)
                b = g.annotation.add(instance_id=0).bbox
                b.xmin, b.ymin, b.xmax, b.ymax = box
            txn.put(f"{i:08d}".encode(), ad.SerializeToString())
    env.close()
    return path


def test_layer_batch_shape_follows_its_first_record_and_reads_float_data(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(3, 6, 5), dtype=np.uint8)
    b = rng.integers(0, 256, size=(3, 4, 7), dtype=np.uint8)
    db = _anno_lmdb(str(tmp_path / "sizes"), [(a, [(1, (0.1, 0.1, 0.5, 0.5))]), (b, [])])
    net = decaffe.Net(net_text(db, batch=1, transform="scale: 0.5"), decaffe.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data[0], a * np.float32(0.5))
    net.forward()
    assert net.blobs["data"].data.shape == (1, 3, 4, 7)
    np.testing.assert_array_equal(net.blobs["label"].data, -np.ones((1, 1, 1, 8)))
    f = rng.normal(size=(1, 3, 3)).astype(np.float32)
    fdb = _anno_lmdb(str(tmp_path / "float"), [(f, [(2, (0, 0, 1, 1))])])
    net = decaffe.Net(net_text(fdb, batch=2, transform="mean_value: 1"), decaffe.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data, np.stack([f, f]) - 1, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["label"].data[0, 0, :, :2], [[0, 2], [1, 2]])
    with pytest.raises(DecaffeError, match="float_data"):
        batch(net_text(fdb, anno="batch_sampler { }"))


def test_layer_fit_large_size_and_pad_and_fit_small_size(voc):
    """A 40x30 image into 24x24, keeping its aspect: 24x18 pixels between 3-row pads, boxes
    moved with it; FIT_SMALL_SIZE to 12x12 gives 16x12."""
    db = make_db(voc)
    (data, label), = batch(net_text(db, batch=1, transform=(
        "resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD height: 24 width: 24 "
        "pad_value: 7 }")), decaffe.TEST)
    assert data.shape == (1, 3, 24, 24)
    assert (data[0, :, :3] == 7).all() and (data[0, :, 21:] == 7).all()
    img = cv2.resize(cv2.imread(str(voc / "img0.png")), (24, 18))
    np.testing.assert_array_equal(data[0, :, 3:21], img.transpose(2, 0, 1))
    x0, y0, x1, y1 = 4 / 40, 3 / 30, 20 / 40, 15 / 30  # the first cat
    np.testing.assert_allclose(label[0, 0, 0, 3:7], [x0, (3 + y0 * 18) / 24, x1,
                                                     (3 + y1 * 18) / 24], rtol=1e-5)
    (small, label2), = batch(net_text(db, batch=1, transform=(
        "resize_param { resize_mode: FIT_SMALL_SIZE height: 12 width: 12 }")), decaffe.TEST)
    assert small.shape == (1, 3, 12, 16)
    np.testing.assert_allclose(label2[0, 0, 0, 3:7], [x0, y0, x1, y1], rtol=1e-5)


def test_layer_draws_one_of_several_resize_policies(voc):
    """eric612's repeated resize_param: one policy per image, by probability."""
    db = make_db(voc)
    two = ("resize_param { prob: 0.5 resize_mode: WARP height: 12 width: 12 } "
           "resize_param { prob: 0.5 resize_mode: FIT_LARGE_SIZE_AND_PAD height: 12 width: 12 }")
    (data, _), = batch(net_text(db, batch=3, transform=two))
    assert data.shape == (3, 3, 12, 12)
    bad = two.replace("prob: 0.5 resize_mode: WARP", "prob: 0.2 resize_mode: WARP")
    with pytest.raises(DecaffeError, match="sum to 1"):
        batch(net_text(db, transform=bad))


def test_layer_position_resumes_the_same_batches(voc):
    """position()/set_position(): after a recorded position the layer repeats its batches,
    random transformations included."""
    db = make_db(voc, encoded=True, encode_type="png")
    net = decaffe.Net(net_text(db, batch=2, transform="mirror: true resize_param { "
                               "resize_mode: WARP height: 16 width: 16 }",
                               anno="batch_sampler { sampler { min_scale: 0.5 } "
                                    "max_trials: 5 max_sample: 1 }"), decaffe.TRAIN)
    layer = net.layers[0].layer if hasattr(net.layers[0], "layer") else net.layers[0]
    net.forward()
    pos = layer.position()
    assert pos["kind"] == "_AnnotatedSource"
    after = []
    for _ in range(2):
        net.forward()
        after.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
    layer.set_position(pos)
    for d, lab in after:
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, d)
        np.testing.assert_array_equal(net.blobs["label"].data, lab)

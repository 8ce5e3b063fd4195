"""pycaffe's caffe.io (decaffe.pycaffe.io), caffe.Classifier and caffe.Detector."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from decaffe.errors import DecaffeError
from decaffe.proto import caffe_pb2
from decaffe.pycaffe import io as pyio
from decaffe.pycaffe.classifier import Classifier
from decaffe.pycaffe.detector import Detector


def test_datum_round_trips():
    a = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    d = pyio.array_to_datum(a, 7)
    assert (d.channels, d.height, d.width, d.label) == (3, 4, 5, 7) and len(d.data) == 60
    back = pyio.datum_to_array(caffe_pb2.Datum.FromString(d.SerializeToString()))
    np.testing.assert_array_equal(back, a)
    assert back.dtype == np.uint8 and back.flags.writeable
    f = np.random.default_rng(1).standard_normal((2, 3, 1)).astype(np.float32)
    df = pyio.array_to_datum(f)
    assert not df.HasField("label") and len(df.float_data) == 6
    np.testing.assert_array_equal(pyio.datum_to_array(df), f.astype(np.float64))
    with pytest.raises(ValueError, match="Incorrect array shape"):
        pyio.array_to_datum(np.zeros((2, 2)))


def test_blobproto_round_trips():
    a = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    diff = a * 2
    b = pyio.array_to_blobproto(a, diff)
    assert list(b.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(pyio.blobproto_to_array(b), a)
    np.testing.assert_array_equal(pyio.blobproto_to_array(b, return_diff=True), diff)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    assert pyio.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    arrays = [a, np.arange(5.0)]
    s = pyio.arraylist_to_blobprotovector_str(arrays)
    back = pyio.blobprotovector_str_to_arraylist(s)
    for x, y in zip(arrays, back):
        np.testing.assert_array_equal(x, y)


def _transformer():
    t = pyio.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_transformer_preprocess_formula_and_deprocess_inverts_it():
    img = np.random.default_rng(3).uniform(0, 1, (4, 5, 3)).astype(np.float32)
    t = _transformer()
    x = t.preprocess("data", img)
    assert x.shape == (3, 4, 5) and x.dtype == np.float32
    want = (img.transpose(2, 0, 1)[::-1] * 255 - np.array([104, 117, 123])[:, None, None]) * 0.5
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(t.deprocess("data", x), img, rtol=1e-5, atol=1e-6)


def test_transformer_resizes_and_checks():
    t = _transformer()
    big = np.random.default_rng(4).uniform(0, 1, (8, 10, 3)).astype(np.float32)
    assert t.preprocess("data", big).shape == (3, 4, 5)
    with pytest.raises(DecaffeError, match="not one of the net inputs"):
        t.preprocess("nope", big)
    with pytest.raises(ValueError, match="Mean channels incompatible"):
        t.set_mean("data", np.zeros(2))
    with pytest.raises(ValueError, match="Mean shape incompatible"):
        t.set_mean("data", np.zeros((2, 4, 5)))  # other channels cannot be resized
    with pytest.raises(ValueError, match="Mean shape invalid"):
        t.set_mean("data", np.zeros((1, 3, 4, 5)))
    t.set_mean("data", np.zeros((3, 4, 5)))  # elementwise mean of the input's shape
    with pytest.raises(DecaffeError, match="Transpose order"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(DecaffeError, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))


def test_load_image_rgb_gray_alpha(tmp_path):
    bgr = np.random.default_rng(5).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    p = str(tmp_path / "c.png")
    cv2.imwrite(p, bgr)
    img = pyio.load_image(p)
    assert img.shape == (4, 6, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, bgr[:, :, ::-1] / 255.0, rtol=1e-6)
    gray = pyio.load_image(p, color=False)
    rgb = bgr[:, :, ::-1] / 255.0
    np.testing.assert_allclose(gray[:, :, 0], rgb @ [0.2125, 0.7154, 0.0721], rtol=1e-5)
    g = bgr[:, :, 0]
    pg = str(tmp_path / "g.png")
    cv2.imwrite(pg, g)
    tiled = pyio.load_image(pg)
    assert tiled.shape == (4, 6, 3)
    np.testing.assert_allclose(tiled[:, :, 2], g / 255.0, rtol=1e-6)
    assert pyio.load_image(pg, color=False).shape == (4, 6, 1)
    pa = str(tmp_path / "a.png")
    cv2.imwrite(pa, np.dstack([bgr, np.full((4, 6), 9, np.uint8)]))
    np.testing.assert_allclose(pyio.load_image(pa), img)
    with pytest.raises(DecaffeError, match="cannot read image"):
        pyio.load_image(str(tmp_path / "missing.png"))


def test_resize_image():
    im = np.random.default_rng(6).uniform(-3, 7, (5, 6, 3)).astype(np.float32)
    out = pyio.resize_image(im, (10, 12))
    assert out.shape == (10, 12, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, cv2.resize(im, (12, 10), interpolation=cv2.INTER_LINEAR),
                               rtol=1e-5, atol=1e-5)
    one = pyio.resize_image(im[:, :, :1], (3, 3))
    assert one.shape == (3, 3, 1)
    many = pyio.resize_image(np.repeat(im, 3, axis=2), (3, 4))  # 9 channels
    np.testing.assert_allclose(many[:, :, 4], pyio.resize_image(im, (3, 4))[:, :, 1],
                               rtol=1e-5, atol=1e-5)
    flat = pyio.resize_image(np.full((2, 2, 3), 0.25, np.float32), (4, 5))
    assert flat.shape == (4, 5, 3) and (flat == 0.25).all()


def test_oversample_corners_centre_and_mirrors():
    im = np.arange(6 * 8 * 2, dtype=np.float32).reshape(6, 8, 2)
    crops = pyio.oversample([im, im + 1000], (4, 5))
    assert crops.shape == (20, 4, 5, 2)
    want = [im[0:4, 0:5], im[0:4, 3:8], im[2:6, 0:5], im[2:6, 3:8], im[1:5, 1:6]]
    for k in range(5):
        np.testing.assert_array_equal(crops[k], want[k])
        np.testing.assert_array_equal(crops[5 + k], want[k][:, ::-1])
        np.testing.assert_array_equal(crops[10 + k], want[k] + 1000)


NET = """
input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def _model(tmp_path):
    import decaffe

    proto = tmp_path / "net.prototxt"
    proto.write_text(NET)
    net = decaffe.Net(str(proto), decaffe.TEST)
    weights = str(tmp_path / "w.caffemodel")
    try:
        net.save(weights)
    except (ImportError, ModuleNotFoundError, AttributeError):
        pytest.skip("caffemodel writing is not available yet")
    return str(proto), weights, net


def test_classifier_predicts_like_a_manual_pipeline(tmp_path):
    proto, weights, _ = _model(tmp_path)
    clf = Classifier(proto, weights, image_dims=(6, 6), raw_scale=255.0,
                     channel_swap=(2, 1, 0), mean=np.array([0.5, 0.25, 0.1]))
    rng = np.random.default_rng(7)
    imgs = [rng.uniform(0, 1, (9, 7, 3)).astype(np.float32) for _ in range(3)]
    w, b = (p.data for p in clf.params["ip"])
    scores = clf.predict(imgs, oversample=False)
    assert scores.shape == (3, 3)
    for i, img in enumerate(imgs):
        x = pyio.resize_image(img, (6, 6))[1:5, 1:5]
        x = x.transpose(2, 0, 1)[::-1] * 255 - np.array([0.5, 0.25, 0.1])[:, None, None]
        np.testing.assert_allclose(scores[i], w @ x.ravel() + b, rtol=1e-4, atol=1e-3)
    over = clf.predict(imgs)  # ten crops averaged
    crops = pyio.oversample(np.stack([pyio.resize_image(im, (6, 6)) for im in imgs]), (4, 4))
    pre = np.stack([clf.transformer.preprocess("data", c) for c in crops])
    want = (pre.reshape(30, -1) @ w.T + b).reshape(3, 10, 3).mean(1)
    np.testing.assert_allclose(over, want, rtol=1e-4, atol=1e-3)


def test_forward_all_pads_the_last_batch(tmp_path):
    proto, weights, _ = _model(tmp_path)
    clf = Classifier(proto, weights)
    x = np.random.default_rng(8).standard_normal((5, 3, 4, 4)).astype(np.float32)
    out = clf.forward_all(data=x)["ip"]
    w, b = (p.data for p in clf.params["ip"])
    np.testing.assert_allclose(out, x.reshape(5, -1) @ w.T + b, rtol=1e-4, atol=1e-4)


def test_detector_windows_and_context_pad(tmp_path):
    proto, weights, _ = _model(tmp_path)
    img = np.random.default_rng(9).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    path = str(tmp_path / "im.png")
    cv2.imwrite(path, img)
    det = Detector(proto, weights, raw_scale=255.0)
    wins = [np.array([0, 0, 4, 4]), np.array([2, 3, 10, 9])]
    dets = det.detect_windows([(path, wins)])
    assert [d["filename"] for d in dets] == [path, path]
    w, b = (p.data for p in det.params["ip"])
    rgb = pyio.load_image(path)
    for d, win in zip(dets, wins):
        crop = rgb[win[0]:win[2], win[1]:win[3]]
        x = det.transformer.preprocess("data", crop)
        np.testing.assert_allclose(d["prediction"], w @ x.ravel() + b, rtol=1e-4, atol=1e-3)
    padded = Detector(proto, weights, raw_scale=255.0, mean=np.array([1.0, 2.0, 3.0]),
                      context_pad=1)
    c = padded.crop(rgb, np.array([0, 0, 4, 4]))
    assert c.shape == (4, 4, 3)
    # the window touches the image corner: the padding rows/columns hold the mean / raw_scale
    np.testing.assert_allclose(c[0, 0], np.array([1.0, 2.0, 3.0]) / 255.0, rtol=1e-6)

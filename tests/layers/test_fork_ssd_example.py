"""examples/ssd runs end to end: convert_annoset builds the LMDB, MultiBoxLoss training
lowers the loss, and the deploy net's DetectionOutput gives [1, 1, N, 7] boxes that are
drawn into a PNG."""

from __future__ import annotations

import importlib.util
import os

import cv2
import numpy as np

import decaffe

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "ssd",
                       "ssd_example.py")


def load_example():
    spec = importlib.util.spec_from_file_location("ssd_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ssd_example_trains_and_detects(tmp_path):
    ex = load_example()
    r = ex.run(str(tmp_path), iters=12, images=6)
    losses = r["losses"]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    for key in ("random_detections", "detections"):
        dets = r[key]
        assert dets.ndim == 4 and dets.shape[:2] == (1, 1) and dets.shape[3] == 7
        assert dets.shape[2] >= 1
        assert ((dets[0, 0, :, 0] == 0) | (dets[0, 0, :, 0] == -1)).all()  # one image
    png = cv2.imread(str(tmp_path / "detections.png"))
    assert png is not None and png.shape == (256, 256, 3)
    # the deploy net reloads the trained weights: the same detections again
    img, _ = ex.synthetic_image(np.random.default_rng(100))
    again = ex.detect(r["paths"]["deploy"], r["weights"], img)
    np.testing.assert_allclose(again, r["detections"], rtol=1e-5, atol=1e-6)
    # the written train net is a plain prototxt with the SSD layers
    text = open(r["paths"]["train"]).read()
    for t in ("AnnotatedData", "PriorBox", "Permute", "MultiBoxLoss"):
        assert f'type: "{t}"' in text
    assert decaffe.Net(r["paths"]["deploy"], decaffe.TEST).blobs["data"].data.shape == \
        (1, 3, 64, 64)

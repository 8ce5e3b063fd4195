"""SSD's DetectionOutput exports to ONNX (decoding, TopK, NonMaxSuppression, keep_top_k) and to
the generated PyTorch source (an eager copy of the layer), and the exporter's own checks find
their rows equal to decaffe's, row for row, over the layer's settings; what a form cannot
reproduce is refused with -end (torch.export: the layer; ONNX: adaptive NMS)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from export_helpers import randomize

import caffe
from decaffe.export import ExportError, to_onnx, to_pytorch_source, to_torch_program
from decaffe.export.pytorch_source import instantiate
from decaffe.formats import prototxt
from decaffe.layer import layer_type_list

pytestmark = pytest.mark.skipif("DetectionOutput" not in layer_type_list(),
                                reason="the SSD fork's layers are not part of decaffe here")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _head(name: str, bottom: str, min_size: float, max_size: float, locs: int,
          classes: int) -> str:
    """loc/conf convolutions, Permute + Flatten, and a PriorBox (4 priors per cell)."""
    text = ""
    for kind, out in (("loc", 4 * 4 * locs), ("conf", 4 * classes)):
        text += (f'layer {{ name: "{name}_{kind}" type: "Convolution" bottom: "{bottom}" top: '
                 f'"{name}_{kind}" convolution_param {{ num_output: {out} kernel_size: 3 pad: 1 '
                 f'}} }} layer {{ name: "{name}_{kind}_perm" type: "Permute" bottom: '
                 f'"{name}_{kind}" top: "{name}_{kind}_perm" permute_param {{ order: 0 order: 2 '
                 f'order: 3 order: 1 }} }} layer {{ name: "{name}_{kind}_flat" type: "Flatten" '
                 f'bottom: "{name}_{kind}_perm" top: "{name}_{kind}_flat" }} ')
    text += (f'layer {{ name: "{name}_priorbox" type: "PriorBox" bottom: "{bottom}" bottom: '
             f'"data" top: "{name}_priorbox" prior_box_param {{ min_size: {min_size} max_size: '
             f'{max_size} aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 variance: 0.2 '
             f'variance: 0.2 offset: 0.5 }} }} ')
    return text


def ssd_text(batch: int = 1, classes: int = 4, detection: str = "") -> str:
    """A small SSD deploy net: two feature maps (8×8, 4×4) with heads, 320 priors."""
    share = "share_location: false" not in detection
    locs = 1 if share else classes
    text = (f'name: "tiny_ssd" layer {{ name: "data" type: "Input" top: "data" input_param {{ '
            f'shape {{ dim: {batch} dim: 3 dim: 32 dim: 32 }} }} }} '
            'layer { name: "f1" type: "Convolution" bottom: "data" top: "f1" convolution_param '
            '{ num_output: 4 kernel_size: 3 pad: 1 stride: 4 } } '
            'layer { name: "f1_relu" type: "ReLU" bottom: "f1" top: "f1" } '
            'layer { name: "f2" type: "Convolution" bottom: "f1" top: "f2" convolution_param '
            '{ num_output: 4 kernel_size: 3 pad: 1 stride: 2 } } ')
    text += _head("f1", "f1", 6, 12, locs, classes) + _head("f2", "f2", 12, 24, locs, classes)
    for kind, axis, parts in (("loc", 1, "flat"), ("conf", 1, "flat"), ("priorbox", 2, "")):
        bottoms = " ".join(f'bottom: "{f}_{kind}{"_" + parts if parts else ""}"'
                           for f in ("f1", "f2"))
        text += (f'layer {{ name: "mbox_{kind}" type: "Concat" {bottoms} top: "mbox_{kind}" '
                 f'concat_param {{ axis: {axis} }} }} ')
    text += (f'layer {{ name: "mbox_conf_reshape" type: "Reshape" bottom: "mbox_conf" top: '
             f'"mbox_conf_reshape" reshape_param {{ shape {{ dim: 0 dim: -1 dim: {classes} }} }} '
             '} layer { name: "mbox_conf_softmax" type: "Softmax" bottom: "mbox_conf_reshape" '
             'top: "mbox_conf_softmax" softmax_param { axis: 2 } } layer { name: '
             '"mbox_conf_flatten" type: "Flatten" bottom: "mbox_conf_softmax" top: '
             '"mbox_conf_flatten" } ')
    text += ('layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" bottom: '
             '"mbox_conf_flatten" bottom: "mbox_priorbox" top: "detection_out" '
             f'detection_output_param {{ num_classes: {classes} {detection} }} }}')
    return text


def ssd_net(batch: int = 1, classes: int = 4, detection: str = "", seed: int = 3):
    net = caffe.Net(prototxt.read_net(ssd_text(batch, classes, detection)), phase=caffe.TEST)
    randomize(net, seed=seed)
    return net


NMS = "nms_param { nms_threshold: 0.45 top_k: 100 } "
SETTINGS = {
    "center_size": NMS + "code_type: CENTER_SIZE keep_top_k: 200 confidence_threshold: 0.3",
    "corner": NMS + "code_type: CORNER keep_top_k: 200 confidence_threshold: 0.3",
    "corner_size": NMS + "code_type: CORNER_SIZE keep_top_k: 200 confidence_threshold: 0.3",
    "variance_in_target": NMS + "code_type: CENTER_SIZE variance_encoded_in_target: true "
                                "confidence_threshold: 0.3",
    "no_share_location": NMS + "share_location: false code_type: CENTER_SIZE keep_top_k: 100 "
                               "confidence_threshold: 0.3",
    "no_share_corner": NMS + "share_location: false code_type: CORNER confidence_threshold: "
                             "0.35",
    "keep_top_k_cuts": NMS + "code_type: CENTER_SIZE keep_top_k: 7 confidence_threshold: 0.3",
    "no_threshold_no_top_k": "nms_param { nms_threshold: 0.3 } code_type: CENTER_SIZE "
                             "keep_top_k: 50",
    "background_2": NMS + "background_label_id: 2 code_type: CENTER_SIZE keep_top_k: 60 "
                          "confidence_threshold: 0.3",
    "background_none": NMS + "share_location: false background_label_id: -1 code_type: "
                             "CENTER_SIZE confidence_threshold: 0.3",
    "nothing_detected": NMS + "code_type: CENTER_SIZE keep_top_k: 200 confidence_threshold: "
                              "0.99",
    "no_nms": "nms_param { nms_threshold: 1.0 top_k: 20 } code_type: CENTER_SIZE "
              "keep_top_k: 30 confidence_threshold: 0.3",
    "eta_fixed": "nms_param { nms_threshold: 0.45 eta: 0.9 top_k: 100 } code_type: "
                 "CENTER_SIZE confidence_threshold: 0.3",
    "nms_threshold_1": "nms_param { nms_threshold: 1.0 top_k: 30 } code_type: CORNER "
                       "confidence_threshold: 0.3",
}
ADAPTIVE = "nms_param { nms_threshold: 0.7 eta: 0.8 } code_type: CENTER_SIZE " \
    "confidence_threshold: 0.3"


def _rows(net, report) -> np.ndarray:
    """decaffe's detections for the exporter's own random input (as the check ran them)."""
    from decaffe.export.verify import random_inputs

    inputs = random_inputs(report.graph, 0)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    return net.forward()["detection_out"].reshape(-1, 7)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_detection_output_exports_to_onnx(setting, batch, tmp_path):
    net = ssd_net(batch, detection=SETTINGS[setting])
    report = to_onnx(net, str(tmp_path / "ssd.onnx"))  # raises when the rows differ
    assert report.verified and report.differences["detection_out"] <= 1e-4
    model = onnx.load(report.path)
    ops = {n.op_type for n in model.graph.node}
    assert "NonMaxSuppression" in ops or setting in ("no_nms", "nothing_detected")
    source = to_pytorch_source(net, str(tmp_path / "src"))  # the eager copy, checked too
    assert source.verified and source.differences["detection_out"] <= 1e-4
    rows = _rows(net, report)
    if setting == "nothing_detected":
        assert rows.tolist() == [[i, -1, -1, -1, -1, -1, -1] for i in range(batch)]
    else:
        assert len(rows) > 1 and (rows[:, 1] >= 0).all()  # the check compared real rows
    if setting == "keep_top_k_cuts":
        assert len(rows) == 7 * batch
    if setting.startswith("background_2"):
        assert 2 not in set(rows[:, 1].tolist())


def test_detection_output_rows_are_ordered_as_caffe(tmp_path):
    """Rows by image, then label ascending, then score descending; the NMS really removed
    overlapping candidates (fewer rows than candidates above the threshold)."""
    import onnxruntime as ort

    net = ssd_net(2, detection=SETTINGS["center_size"])
    report = to_onnx(net, str(tmp_path / "ssd.onnx"))
    x = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)
    got = ort.InferenceSession(report.path, providers=["CPUExecutionProvider"]).run(
        None, {"data": x})[0].reshape(-1, 7)
    net.blobs["data"].data[...] = x
    ref = net.forward()["detection_out"].reshape(-1, 7)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    keys = [(r[0], r[1], -r[2]) for r in got]
    assert keys == sorted(keys)
    conf = net.blobs["mbox_conf_flatten"].data.reshape(2, -1, 4)
    assert len(got) < int((conf[:, :, 1:] > 0.3).sum())


def test_detection_output_with_dynamic_batch(tmp_path):
    net = ssd_net(1, detection=SETTINGS["keep_top_k_cuts"])
    report = to_onnx(net, str(tmp_path / "ssd.onnx"), dynamic_batch=True)  # checks 1 and 2
    assert report.verified
    dims = report and onnx.load(report.path).graph.output[0].type.tensor_type.shape.dim
    assert dims[2].dim_param  # the row count is symbolic


@pytest.mark.parametrize("detection,match", [
    (ADAPTIVE, r"nms_param\.eta 0\.8 < 1 .*adaptive.*-pytorch.*-end mbox_conf_flatten"),
    ("background_label_id: -1", r"background_label_id -1 with share_location.*-end"),
])
def test_detection_output_refusals_name_end(detection, match, tmp_path):
    net = ssd_net(detection=detection)
    with pytest.raises(ExportError, match=r"\(DetectionOutput\) " + match):
        to_onnx(net, str(tmp_path / "ssd.onnx"))
    assert not list(tmp_path.iterdir())


def test_adaptive_nms_exports_to_the_pytorch_source(tmp_path):
    """eta < 1 shrinks the threshold after each kept box: the eager copy follows it (and a
    fixed threshold would keep other rows, so the check tells them apart)."""
    net = ssd_net(2, detection=ADAPTIVE)
    report = to_pytorch_source(net, str(tmp_path / "src"))
    assert report.verified
    fixed = ssd_net(2, detection=ADAPTIVE.replace("eta: 0.8", "eta: 1"))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    rows = []
    for n in (net, fixed):
        n.blobs["data"].data[...] = x
        rows.append(n.forward()["detection_out"].shape[2])
    assert rows[0] < rows[1]


def test_detection_output_read_by_a_later_layer_is_refused(tmp_path):
    text = ssd_text(detection=SETTINGS["center_size"]) + (
        ' layer { name: "scaled" type: "Power" bottom: "detection_out" top: "scaled" '
        'power_param { scale: 2 } }')
    net = caffe.Net(prototxt.read_net(text), phase=caffe.TEST)
    randomize(net, seed=3)
    with pytest.raises(ExportError, match=r"\(DetectionOutput\) its top has a data-dependent "
                       r"number of rows .*-end mbox_conf_flatten"):
        to_onnx(net, str(tmp_path / "ssd.onnx"))
    assert to_onnx(net, str(tmp_path / "ssd.onnx"), end="detection_out").verified


def test_detection_output_torch_program_says_onnx_and_pytorch_take_it(tmp_path):
    net = ssd_net(detection=SETTINGS["center_size"])
    with pytest.raises(ExportError, match=r"\(DetectionOutput\) the torch.export form \(-torch\)"
                       r" .*-onnx.*-pytorch.*-end mbox_conf_flatten"):
        to_torch_program(net, str(tmp_path / "ssd.pt2"))
    assert not list(tmp_path.iterdir())
    assert to_torch_program(net, end="mbox_conf_flatten") is not None  # the way out works


def test_generated_source_runs_detection_output_without_decaffe(tmp_path):
    """model.py carries the eager DetectionOutput (torch only) and runs in a fresh process
    with decaffe's path removed."""
    net = ssd_net(2, detection=SETTINGS["keep_top_k_cuts"])
    report = to_pytorch_source(net, str(tmp_path / "src"))
    assert report.verified
    text = (tmp_path / "src" / "model.py").read_text()
    assert "def caffe_detection_output" in text and "decaffe" not in text.split('"""', 2)[2]
    code = ("import importlib.abc, sys\n"
            "class NoDecaffe(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('decaffe', 'caffe'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, NoDecaffe())\n"
            "sys.path.insert(0, '.')\n"
            "import model, torch\n"
            "out = model.load()(torch.randn(2, 3, 32, 32))\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('decaffe', 'caffe')]\n"
            "print(tuple(out.shape))\n")
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                       cwd=str(tmp_path / "src"), timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 1, 14, 7)"


def test_cli_exports_the_ssd_example_end_to_end(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "examples", "ssd"))
    try:
        import ssd_example
    finally:
        sys.path.pop(0)
    paths = ssd_example.write_nets(str(tmp_path), source=str(tmp_path / "none_lmdb"),
                                   iters=1, batch=1)
    net = caffe.Net(paths["deploy"], caffe.TEST)
    randomize(net, seed=5)  # the fillers' untrained BatchNorm would overflow the boxes
    weights = str(tmp_path / "ssd.caffemodel")
    net.save(weights)
    out = tmp_path / "ssd.onnx"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "decaffe", "export", "-model", paths["deploy"],
                        "-weights", weights, "-onnx", str(out)], capture_output=True,
                       text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.is_file() and not (tmp_path / "ssd.onnx.unverified").exists()
    assert "detection_out" in r.stdout + r.stderr


def _bare_net(detection: str, batch: int = 2, priors: int = 60, classes: int = 3,
              locs: int = 1):
    """DetectionOutput on three Input bottoms: the check feeds it arbitrary loc, conf and
    priors (inverted and overlapping boxes, negative variances, unsorted scores)."""
    text = (f'layer {{ name: "loc" type: "Input" top: "loc" input_param {{ shape {{ dim: {batch} '
            f'dim: {priors * locs * 4} }} }} }} layer {{ name: "conf" type: "Input" top: "conf" '
            f'input_param {{ shape {{ dim: {batch} dim: {priors * classes} }} }} }} layer {{ '
            f'name: "prior" type: "Input" top: "prior" input_param {{ shape {{ dim: 1 dim: 2 '
            f'dim: {priors * 4} }} }} }} layer {{ name: "det" type: "DetectionOutput" bottom: '
            f'"loc" bottom: "conf" bottom: "prior" top: "det" detection_output_param {{ '
            f'num_classes: {classes} {detection} }} }}')
    return caffe.Net(prototxt.read_net(text), phase=caffe.TEST)


@pytest.mark.parametrize("code", ["CENTER_SIZE", "CORNER", "CORNER_SIZE"])
@pytest.mark.parametrize("share", [True, False])
def test_detection_output_on_arbitrary_bottoms_and_tied_scores(code, share, tmp_path):
    """Random bottoms (the exporter's check), then scores quantised to a few values so that
    many tie: TopK keeps the fork's stable order (its std::stable_sort), row for row. No
    keep_top_k here: over more than 16 pairs the fork's std::sort leaves equal scores in
    introsort's order, which the graph's stable ranking does not reproduce."""
    import onnxruntime as ort

    classes = 3
    detection = (f"share_location: {str(share).lower()} code_type: {code} "
                 "confidence_threshold: 0.1 nms_param { nms_threshold: 0.3 top_k: 40 }")
    net = _bare_net(detection, classes=classes, locs=1 if share else classes)
    report = to_onnx(net, str(tmp_path / "det.onnx"))
    session = ort.InferenceSession(report.path, providers=["CPUExecutionProvider"])
    src = to_pytorch_source(net, str(tmp_path / "src"))
    module = instantiate(open(os.path.join(src.path, "model.py")).read(), torch.load(
        os.path.join(src.path, "weights.pth"), weights_only=True))
    rng = np.random.default_rng(11)
    for trial in range(4):
        feed = {name: rng.standard_normal(net.blobs[name].shape).astype(np.float32)
                for name in ("loc", "conf", "prior")}
        feed["conf"] = np.round(feed["conf"] * 2) / 2  # ties everywhere
        feed["prior"][0, 0] = np.abs(feed["prior"][0, 0])  # some ordered priors
        feed["loc"] *= 0.5
        if trial == 3:  # NaN scores never pass the threshold (nor take TopK's places)
            feed["conf"][:, ::2] = np.nan
        got = session.run(None, feed)[0].reshape(-1, 7)
        for name, arr in feed.items():
            net.blobs[name].data[...] = arr
        ref = net.forward()["det"].reshape(-1, 7)
        assert got.shape == ref.shape, trial
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        assert len(np.unique(ref[:, 2])) < len(ref) - 5  # the scores did tie
        with torch.no_grad():
            eager = module(*(torch.from_numpy(feed[v]) for v in ("loc", "conf", "prior")))
        np.testing.assert_allclose(eager.numpy().reshape(-1, 7), ref, rtol=1e-5, atol=1e-6)


def test_detection_output_needs_opset_11(tmp_path):
    net = _bare_net("code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 20 }")
    with pytest.raises(ExportError, match=r"\(DetectionOutput\) ONNX \w+ needs opset 11"):
        to_onnx(net, str(tmp_path / "det.onnx"), opset=10)
    assert not list(tmp_path.iterdir())
    assert to_onnx(net, str(tmp_path / "det.onnx"), opset=11).verified


@pytest.mark.parametrize("detection", [
    NMS + "code_type: CENTER_SIZE keep_top_k: 400 confidence_threshold: 0.3"])
def test_tied_scores_keep_index_order_in_every_runtime(detection, tmp_path):
    """Scores of exactly 1.0 tie (a Threshold in place of the Softmax makes them 0 or 1 in
    every implementation): the rows keep the fork's stable order in every runtime (OpenVINO's
    TopK orders equal values its own way; the graph does not rely on it). keep_top_k does not
    cut here: there decaffe follows libstdc++'s std::sort for equal scores, which the graph
    does not (docs/compat.md)."""
    from decaffe.export.verify import check_runtimes, random_inputs

    text = ssd_text(detection=detection).replace(
        'type: "Softmax" bottom: "mbox_conf_reshape" top: "mbox_conf_softmax" softmax_param { '
        'axis: 2 }', 'type: "Threshold" bottom: "mbox_conf_reshape" top: "mbox_conf_softmax"')
    assert '"Threshold"' in text
    net = caffe.Net(prototxt.read_net(text), phase=caffe.TEST)
    randomize(net, seed=3)
    report = to_onnx(net, str(tmp_path / "ssd.onnx"), check="all")
    assert report.verified and tuple(report.by_runtime) == check_runtimes("all")
    for k, v in random_inputs(report.graph, 0).items():
        net.blobs[k].data[...] = v
    rows = net.forward()["detection_out"].reshape(-1, 7)
    labels, counts = np.unique(rows[rows[:, 2] == 1.0, 1], return_counts=True)
    assert counts.max() >= 2  # equal scores within a label: their order is the tie rule

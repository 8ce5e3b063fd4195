"""Every deploy/test net of the forks' corpus (tests/models/forks, read through
tests/fork_corpus.py) that decaffe builds exports to ONNX, to a torch.export program and to
PyTorch source, each matching decaffe within 1e-4 relative on random weights and inputs
(checked inside the exporters; export_all asserts each form was verified). The ONNX form
runs in every installed runtime of onnxruntime, OpenVINO (f32) and OpenCV's dnn.

Deploy nets are those whose TEST phase has no loss or accuracy layer. Data layers become
Inputs at the smallest size the net takes (as tests/core/test_fork_corpus.py builds them;
DummyData image sources too). Random weights are calibrated so every convolution's output has
unit deviation: nets whose BN is merged into their convolutions otherwise reach activations
of 1e7, where no two float32 implementations agree on a final Softmax.
Layers with a data-dependent output count (DetectionOutput, YOLO's detection outputs,
Proposal and py-faster-rcnn's Python proposal layer) are refused by the exporter (SSD's
DetectionOutput by the torch.export form only, YOLO's by both torch forms;
tests/export/test_export_detection.py and test_export_yolo.py cover their ONNX forms), so
those nets export up to the layer before the first of them. A net decaffe cannot build is skipped
with the reason; a net that builds and fails to export fails. One net per repository (its
smallest) runs by default, the rest with DECAFFE_SLOW=1."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from export_helpers import SLOW, calibrate, export_all, randomize
from fork_corpus import nets

import caffe
from decaffe.errors import DecaffeError
from decaffe.formats import prototxt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "core"))
from test_fork_corpus import REPO_PYTHON_MODULES, SIZES, with_inputs  # noqa: E402

# data-dependent output counts: the exporter refuses them and the export stops before
CUT_TYPES = {"DetectionOutput", "Proposal", "YoloDetectionOutput", "Yolov3DetectionOutput"}
PROPOSAL_MODULES = {"rpn.proposal_layer"}
ROIS = 4


def _in_test(lp) -> bool:
    """Whether a layer is part of the TEST phase (include/exclude phase rules only)."""
    if any(r.HasField("phase") and r.phase == caffe.TEST for r in lp.exclude):
        return False
    return not lp.include or any(not r.HasField("phase") or r.phase == caffe.TEST
                                 for r in lp.include)


def _is_scoring(lp) -> bool:
    return "Loss" in lp.type or lp.type in ("Accuracy", "DetectionEvaluate", "SegAccuracy")


def deploy_paths() -> list[str]:
    out = []
    for n in nets():
        if n.local_path.startswith("ShaoqingRen__SPP_net/"):  # V0 fork types (no parse)
            continue
        try:
            param = prototxt.read_net(n.text)
        except DecaffeError:
            continue
        if not any(_is_scoring(lp) for lp in param.layer if _in_test(lp)):
            out.append(n.local_path)
    return out


NETS = {n.local_path: n for n in nets()}
PATHS = deploy_paths()


def _size(path: str) -> int:
    text = NETS[path].text
    return text.count("layer {") + text.count("layer{") + text.count("layers {")


def _sample() -> set[str]:
    best: dict[str, tuple[int, str]] = {}
    for p in PATHS:
        repo = p.split("/")[0]
        if repo not in best or _size(p) < best[repo][0]:
            best[repo] = (_size(p), p)
    return {p for _, p in best.values()}


SAMPLE = _sample()


def _cut(lp) -> bool:
    return lp.type in CUT_TYPES or (lp.type == "Python"
                                    and lp.python_param.module in PROPOSAL_MODULES)


def _build(path: str):
    """The TEST net with Inputs at the smallest size it takes, random weights; its -end."""
    param = prototxt.read_net(NETS[path].text)
    foreign = {lp.python_param.module for lp in param.layer if lp.type == "Python"
               and _in_test(lp) and lp.bottom} & REPO_PYTHON_MODULES
    cut = next((lp.name for lp in param.layer if _in_test(lp) and _cut(lp)), None)
    if foreign:
        # the proposal layer is py-faster-rcnn's own code: build the net up to it
        keep = []
        for lp in param.layer:
            if lp.name == cut:
                break
            keep.append(lp)
        del param.layer[len(keep):]
    for lp in param.layer:  # DummyData stands for the images: an Input of its shapes
        if lp.type == "DummyData" and not lp.bottom:
            dp = lp.dummy_data_param
            shapes = [list(sh.dim) for sh in dp.shape] or [
                [dp.num[i], dp.channels[i], dp.height[i], dp.width[i]]
                for i in range(len(dp.num))]
            lp.type = "Input"
            lp.ClearField("dummy_data_param")
            for dims in shapes:
                lp.input_param.shape.add().dim.extend(dims)
    last: Exception | None = None
    for size in [(s, s) for s in SIZES] + [None]:
        try:
            net = caffe.Net(with_inputs(param, size), phase=caffe.TEST)
            break
        except DecaffeError as e:
            if "unknown layer type" in str(e) or "cannot import module" in str(e):
                pytest.skip(f"decaffe does not build this net: {e}")
            last = e
    else:
        pytest.skip(f"decaffe does not build this net at any input size: {last}")
    for name in net.inputs:  # a few ROIs (R, 5): the exported pooling works per ROI
        blob = net.blobs[name]
        if len(blob.shape) in (2, 4) and blob.shape[1] == 5 and blob.data[0, 0].size == 1:
            blob.reshape(min(blob.shape[0], ROIS), *blob.shape[1:])
    net.reshape()
    randomize(net)
    names = [ly for ly in net._layer_names]
    end = None
    if cut in names:
        i = names.index(cut)
        assert i > 0, f"{cut} is the first layer"
        end = names[i - 1]
    calibrate(net, end)
    return net, end


CASES = [pytest.param(p, marks=[] if p in SAMPLE else SLOW, id=p) for p in PATHS]


@pytest.mark.parametrize("path", CASES)
def test_fork_deploy_net_exports_in_every_form(path, tmp_path):
    net, end = _build(path)
    reports = export_all(net, str(tmp_path), end=end, onnx_check="all")
    assert set(reports) == {"onnx", "pytorch", "torch"}
    if end is None:
        # an input no layer reads (an unused label) is no output of the exported graph
        assert reports["onnx"].graph.outputs == sorted(set(net.outputs) - set(net.inputs))
    shutil.rmtree(tmp_path, ignore_errors=True)  # a big net's three exports: GBs over a run


def test_the_corpus_has_deploy_nets_of_every_kind():
    assert len(PATHS) >= 100
    for repo in ("soeaver__caffe-model", "sanghoon__pva-faster-rcnn", "TimoSaemann__ENet",
                 "chuanqi305__MobileNet-SSD"):
        assert any(p.startswith(repo) for p in SAMPLE), repo

"""Every deploy net of the corpus (tests/models: BVLC Caffe's and the model zoo's nets with
Input layers) that decaffe builds exports to ONNX, to a torch.export program and to PyTorch
source, each matching decaffe within 1e-4 relative on random weights and inputs (checked
inside the exporters; export_all asserts each form was verified). The ONNX form runs in
every installed runtime of onnxruntime, OpenVINO (f32) and OpenCV 5's dnn, at the default
opset (17 for all of them). Small inputs where the net
allows; the nets whose fully connected layers fix a large input, and the deep ones, are slow
tests (a sample of every family runs by default)."""

from __future__ import annotations

import csv
import os
import shutil

import pytest
from conftest import MODELS
from export_helpers import SLOW as SLOW_MARKS
from export_helpers import deploy_net, export_all

from decaffe.errors import NetError
from decaffe.export.verify import check_runtimes
from decaffe.formats import prototxt

# smaller inputs than the prototxt's where the net's layers allow them
SMALL = {
    "zoo/forresti__SqueezeNet/SqueezeNet_v1.0/deploy.prototxt": "data:1,3,64,64",
    "zoo/forresti__SqueezeNet/SqueezeNet_v1.1/deploy.prototxt": "data:1,3,64,64",
    "zoo/shicai__MobileNet-Caffe/mobilenet_deploy.prototxt": "data:1,3,64,64",
    "zoo/shicai__MobileNet-Caffe/mobilenet_v2_deploy.prototxt": "data:1,3,64,64",
    "zoo/chuanqi305__MobileNet-SSD/deploy.prototxt": "data:1,3,128,128",
    "zoo/chuanqi305__MobileNet-SSD/voc/MobileNetSSD_deploy.prototxt": "data:1,3,128,128",
}
# > ~5 s each on two cores (large fully connected weights, or > 50 layers)
SLOW = ("alexnet", "caffenet", "rcnn", "flickr", "full_conv", "googlenet", "ResNet",
        "v0.9/models/imagenet")


def deploy_nets() -> list[str]:
    with open(os.path.join(MODELS, "MANIFEST.tsv")) as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "net"]
    out = []
    for r in rows:
        if "template" in r["local_path"]:
            continue
        param = prototxt.read_net(os.path.join(MODELS, r["local_path"]))
        if any(lp.type == "Input" for lp in param.layer) or len(param.input):
            out.append(r["local_path"])
    return out


def _param(path: str):
    marks = SLOW_MARKS if any(s in path for s in SLOW) else []
    return pytest.param(path, marks=marks, id=path)


@pytest.mark.parametrize("path", [_param(p) for p in deploy_nets()])
def test_deploy_net_exports_in_every_form(path, tmp_path):
    try:
        net = deploy_net(os.path.join(MODELS, path), batch=1)
    except NetError as e:
        if "unknown layer type" in str(e):
            pytest.skip(f"decaffe does not build this net: {e}")
        raise
    names = [ly.name for ly in net.layers]
    types = [ly.type for ly in net.layers]
    # torch.export refuses SSD's DetectionOutput (greedy NMS): all three forms stop before it
    end = names[types.index("DetectionOutput") - 1] if "DetectionOutput" in types else None
    reports = export_all(net, str(tmp_path), input_shapes=SMALL.get(path), end=end,
                         onnx_check="all")
    assert set(reports) == {"onnx", "pytorch", "torch"}
    assert tuple(reports["onnx"].by_runtime) == check_runtimes("all")
    assert reports["onnx"].opset == 17
    if end is None:
        assert reports["onnx"].graph.outputs == sorted(net.outputs)
    shutil.rmtree(tmp_path, ignore_errors=True)  # a big net's three exports: GBs over a run


def test_every_family_has_a_default_sample():
    fast = [p for p in deploy_nets() if not any(s in p for s in SLOW)]
    for family in ("mnist", "cifar10", "siamese", "SqueezeNet", "MobileNet-Caffe"):
        assert any(family in p for p in fast), family

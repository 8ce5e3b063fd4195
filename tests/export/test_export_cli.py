"""`decaffe export`: flags as the other verbs take them, every requested form written and
checked, the differences printed, exit status 1 and `.unverified` files on a failed check."""

from __future__ import annotations

import os

import onnx
import pytest
from export_helpers import randomize

import caffe
from decaffe.cli import main
from decaffe.export.registry import EXPORTS, LayerExport

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "batchnorm",
                       "cnn_bn_deploy.prototxt")


@pytest.fixture
def weights(tmp_path):
    net = caffe.Net(EXAMPLE, caffe.TEST)
    randomize(net)
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    return path


def test_export_every_form(weights, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["export", "-model", EXAMPLE, "-weights", weights, "-onnx", str(out / "n.onnx"),
               "--torch=" + str(out / "n.pt2"), "-pytorch", str(out / "pt"), "-opset", "17",
               "-input_shape", "data:4,1,8,8"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.count("output prob: largest relative difference") == 3
    assert "onnx: wrote" in text and "opset 17" in text and "inputs data (4, 1, 8, 8)" in text
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "model.py", "n.onnx", "n.pt2", "weights.pth"]
    model = onnx.load(str(out / "n.onnx"))
    assert model.opset_import[0].version == 17
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [4, 1, 8, 8]


def test_fold_bn_end_dynamic_batch_no_check(weights, tmp_path, capsys):
    path = str(tmp_path / "n.onnx")
    rc = main(["export", "-model", EXAMPLE, "-weights", weights, "-onnx", path, "-fold_bn",
               "-end", "ip", "-dynamic_batch", "-check=false"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "3 BatchNorm layer(s) folded" in text and "not run (-check false)" in text
    model = onnx.load(path)
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    assert [o.name for o in model.graph.output] == ["ip"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


class _Wrong(LayerExport):
    def onnx(self, b, node):
        b.op("Sigmoid", node.bottoms, node.tops[0])

    def torch(self, s, node):
        return f"torch.sigmoid({s.v(node.bottoms[0])})"


def test_failed_check_exits_1_and_keeps_unverified(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(EXPORTS, "ReLU", _Wrong())
    path = str(tmp_path / "n.onnx")
    rc = main(["export", "-model", EXAMPLE, "-weights", weights, "-onnx", path])
    captured = capsys.readouterr()
    assert rc == 1
    assert "output prob: largest relative difference" in captured.out
    assert "kept as" in captured.err and os.path.exists(path + ".unverified")
    assert not os.path.exists(path)


def test_bad_flags(tmp_path, capsys):
    assert main(["export", "-model", EXAMPLE]) == 1
    assert "give at least one of -onnx" in capsys.readouterr().err
    assert main(["export", "-model", EXAMPLE, "-onnx", str(tmp_path / "n.onnx"), "-end",
                 "nope"]) == 1
    assert "-end: no layer named 'nope'" in capsys.readouterr().err
    assert main(["export", "-model", EXAMPLE, "-onnx", str(tmp_path / "n.onnx"),
                 "-input_shape", "data:1,x"]) == 1
    assert "-input_shape" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

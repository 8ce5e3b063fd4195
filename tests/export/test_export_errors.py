"""Bad input to the exporters: a clear ExportError naming the layer (type and reason), never a
tracing traceback, and no file left that looks verified."""

from __future__ import annotations

import os

import pytest
from export_helpers import randomize

import caffe
from decaffe.errors import DecaffeError
from decaffe.export import ExportError, to_onnx, to_pytorch_source, to_torch_program
from decaffe.export.registry import (
    EXPORTS,
    NOT_EXPORTED,
    LayerExport,
    refuse_types,
    register_export,
)
from decaffe.formats import prototxt

INPUT = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 '
         'dim: 1 dim: 6 dim: 6 } } } ')
CONV = ('layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        'convolution_param { num_output: 2 kernel_size: 3 } } ')


def _net(text: str, phase=caffe.TEST):
    net = caffe.Net(prototxt.read_net(text), phase=phase)
    randomize(net)
    return net


def _left(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.rglob("*") if p.is_file())


def _every_form(net, tmp_path, **kw):
    for fn, target in ((to_onnx, "n.onnx"), (to_pytorch_source, "pt"),
                       (to_torch_program, "n.pt2")):
        with pytest.raises(ExportError) as info:
            fn(net, str(tmp_path / target), **kw)
        yield str(info.value)


def test_unsupported_layer_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                             "layers", "pylayers"))
    net = _net(INPUT + CONV + 'layer { name: "py" type: "Python" bottom: "conv" top: "out" '
               'python_param { module: "decaffe_test_pylayer_caffe" layer: "TimesTen" } } ')
    for msg in _every_form(net, tmp_path):
        assert "layer 'py': (Python) a Python layer runs arbitrary Python code" in msg
        assert "-end" in msg and "Traceback" not in msg
    assert _left(tmp_path) == []


def test_loss_and_data_layers_are_refused_with_the_way_out(tmp_path):
    text = INPUT + CONV + ('layer { name: "label" type: "Input" top: "label" input_param { '
                           'shape { dim: 1 } } } layer { name: "loss" type: "SoftmaxWithLoss" '
                           'bottom: "conv" bottom: "label" top: "loss" } ')
    text = text.replace("dim: 6 dim: 6", "dim: 3 dim: 3")
    net = _net(text)
    for msg in _every_form(net, tmp_path, end="loss"):  # asked to export the loss itself
        assert "layer 'loss': (SoftmaxWithLoss)" in msg and "-end" in msg
    assert _left(tmp_path) == []
    # -end stops before it: the rest exports
    report = to_onnx(net, str(tmp_path / "n.onnx"), end="conv")
    assert report.verified and report.graph.outputs == ["conv"]
    # without -end the net is exported as its deploy form (the loss dropped)
    report = to_onnx(net, str(tmp_path / "d.onnx"))
    assert report.verified and report.graph.outputs == ["conv"]
    assert report.graph.deploy_changes == ["dropped layer 'loss' (SoftmaxWithLoss): a loss or "
                                           "scoring layer"]


def test_layer_type_without_exporter(tmp_path, monkeypatch):
    net = _net(INPUT + CONV + 'layer { name: "act" type: "TanH" bottom: "conv" top: "conv" } ')
    monkeypatch.delitem(EXPORTS, "TanH")
    for msg in _every_form(net, tmp_path):
        assert "layer 'act': (TanH) no exporter for layer type 'TanH'" in msg
    assert _left(tmp_path) == []


def test_net_without_inputs(tmp_path):
    net = _net('layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 3 '
               '} } } layer { name: "s" type: "Sigmoid" bottom: "p" top: "s" }')
    for msg in _every_form(net, tmp_path):
        assert "the net has no inputs" in msg
    assert _left(tmp_path) == []


def test_opset_too_low_names_the_layer(tmp_path):
    net = _net(INPUT + CONV + 'layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }')
    with pytest.raises(ExportError, match=r"layer 'prob': \(Softmax\) ONNX Softmax needs opset "
                                          r"13 or newer; -opset 11 is too low"):
        to_onnx(net, str(tmp_path / "n.onnx"), opset=11)
    with pytest.raises(ExportError, match="opset 9 or newer"):
        to_onnx(net, str(tmp_path / "n.onnx"), opset=7)
    assert _left(tmp_path) == []
    # without the Softmax, opset 11 is enough for a convolution
    assert to_onnx(net, str(tmp_path / "n.onnx"), opset=11, end="conv").verified


def test_train_phase_dropout_is_refused(tmp_path):
    net = _net(INPUT + CONV + 'layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" }',
               phase=caffe.TRAIN)
    with pytest.raises(ExportError, match=r"layer 'drop': \(Dropout\) a TRAIN-phase Dropout"):
        to_onnx(net, str(tmp_path / "n.onnx"))


def test_unknown_end_and_input_names(tmp_path):
    net = _net(INPUT + CONV)
    with pytest.raises(ExportError, match="-end: no layer named 'cnov'.*'conv'"):
        to_onnx(net, str(tmp_path / "n.onnx"), end="cnov")
    with pytest.raises(ExportError, match="-input_shape: the net has no input 'dta'"):
        to_onnx(net, str(tmp_path / "n.onnx"), input_shapes={"dta": (1, 1, 6, 6)})
    with pytest.raises(ExportError, match=r"layer 'conv': \(Convolution\) cannot take bottom "
                                          r"shapes \[\(1, 1, 2, 2\)\]"):
        to_onnx(net, str(tmp_path / "n.onnx"), input_shapes="data:1,1,2,2")
    assert _left(tmp_path) == []


class _WrongTanH(LayerExport):
    """An exporter that computes the wrong function: verification must catch it."""

    def onnx(self, b, node):
        b.op("Sigmoid", node.bottoms, node.tops[0])

    def torch(self, s, node):
        return f"torch.sigmoid({s.v(node.bottoms[0])})"


def test_a_wrong_export_is_kept_unverified(tmp_path, monkeypatch):
    net = _net(INPUT + CONV + 'layer { name: "act" type: "TanH" bottom: "conv" top: "act" } ')
    monkeypatch.setitem(EXPORTS, "TanH", _WrongTanH())
    (tmp_path / "n.onnx").write_bytes(b"stale")  # a stale file must not look verified
    with pytest.raises(ExportError, match="output 'act' by .* > tolerance 0.0001; kept as"):
        to_onnx(net, str(tmp_path / "n.onnx"))
    with pytest.raises(ExportError, match="kept as"):
        to_pytorch_source(net, str(tmp_path / "pt"))
    with pytest.raises(ExportError, match="kept as"):
        to_torch_program(net, str(tmp_path / "n.pt2"))
    assert _left(tmp_path) == ["model.py.unverified", "n.onnx.unverified", "n.pt2.unverified",
                               "weights.pth.unverified"]
    with pytest.raises(ExportError, match="the torch.export export differs"):
        to_torch_program(net)  # in memory: checked all the same
    # without the run only onnx's checker stands between the export and its name
    report = to_onnx(net, str(tmp_path / "n.onnx"), check=False)
    assert not report.verified and os.path.exists(report.path)


def test_any_loss_layer_is_refused_by_its_kind(tmp_path, monkeypatch):
    """A loss layer without its own entry (a fork's) gets the loss message."""
    net = _net(INPUT + 'layer { name: "l" type: "Input" top: "l" input_param { shape { dim: 1 '
               'dim: 1 dim: 6 dim: 6 } } } layer { name: "loss" type: "EuclideanLoss" bottom: '
               '"data" bottom: "l" top: "loss" }')
    monkeypatch.delitem(NOT_EXPORTED, "EuclideanLoss")
    with pytest.raises(ExportError, match=r"layer 'loss': \(EuclideanLoss\) a loss or accuracy"):
        to_onnx(net, str(tmp_path / "n.onnx"), end="loss")


def test_registering_a_type_twice_is_an_error():
    """The registry refuses a second entry for a type (an exporter or a refusal), naming the
    type and the entry already there, instead of silently replacing it."""
    class Another(LayerExport):
        pass

    with pytest.raises(DecaffeError, match=r"layer type 'ReLU' already has an export entry "
                                           r"\(ReLUExport\); Another would replace it"):
        register_export("ReLU")(Another)
    with pytest.raises(DecaffeError, match="'Convolution' already has an export entry"):
        refuse_types("no reason", "Convolution")
    with pytest.raises(DecaffeError, match=r"'EuclideanLoss' already has an export entry "
                                           r"\(refused: "):
        register_export("EuclideanLoss")(Another)
    assert type(EXPORTS["ReLU"]).__name__ == "ReLUExport"
    assert "Convolution" not in NOT_EXPORTED and "EuclideanLoss" not in EXPORTS

"""caffe.draw and `decaffe draw_net`: Caffe's picture of a net (styles, labels, phases),
rendered through graphviz (dot, or graphviz-pure here)."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import MODELS

from decaffe.cli import main as cli_main
from decaffe.errors import DecaffeError
from decaffe.proto import caffe_pb2
from decaffe.pycaffe import draw

pydot = pytest.importorskip("pydot")

LENET = os.path.join(MODELS, "bvlc/examples/mnist/lenet_train_test.prototxt")
RESNET50 = os.path.join(MODELS,
                        "zoo/KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt")
CAFFENET_V1 = os.path.join(MODELS, "bvlc_legacy/rc/models/bvlc_reference_caffenet/deploy.prototxt")

RED, ORANGE, PURPLE, BLUE, GREEN, GREY = ("#FF5050", "#FF9900", "#CC33FF", "#6495ED", "#90EE90",
                                          "#E0E0E0")


def _nodes(graph) -> dict[str, dict]:
    return {n.get_name().strip('"'): n.get_attributes() for n in graph.get_nodes()}


def _edges(graph) -> list[tuple[str, str, str]]:
    return [(e.get_source().strip('"'), e.get_destination().strip('"'), str(e.get("label")))
            for e in graph.get_edges()]


def _read(path):
    from decaffe.formats.prototxt import read_net

    return read_net(path, upgrade=False)


def test_lenet_train_graph_matches_caffes_styles():
    graph = draw.get_pydot_graph(_read(LENET), "LR", phase=caffe_pb2.TRAIN)
    nodes = _nodes(graph)
    sep = r"\n"
    layer_labels = {
        "mnist" + sep + "(Data)": BLUE,
        sep.join(["conv1", "(Convolution)", "kernel size: 5", "stride: 1", "pad: 0"]): RED,
        sep.join(["pool1", "(Pooling MAX)", "kernel size: 2", "stride: 2", "pad: 0"]): ORANGE,
        "ip1" + sep + "(InnerProduct)": PURPLE,
        "relu1" + sep + "(ReLU)": GREEN,  # in place
        "loss" + sep + "(SoftmaxWithLoss)": BLUE,
    }
    for label, colour in layer_labels.items():
        assert label in nodes, (label, sorted(nodes))
        assert nodes[label]["fillcolor"].strip('"') == colour
        assert nodes[label]["shape"] == "record"
    # TEST-only layers are left out in TRAIN
    assert not any("accuracy" in n for n in nodes)
    # blobs read by a layer are grey octagons; the unread loss top stays a plain ellipse
    for blob in ("data", "label", "conv1", "pool2", "ip1", "ip2"):
        assert nodes[blob]["shape"] == "octagon"
        assert nodes[blob]["fillcolor"].strip('"') == GREY
    assert "shape" not in nodes["loss"]
    assert len(nodes) == 9 + 9
    edges = _edges(graph)
    assert len(edges) == 19
    conv1 = sep.join(["conv1", "(Convolution)", "kernel size: 5", "stride: 1", "pad: 0"])
    assert (conv1, "conv1", "20") in edges
    assert ("data", conv1, '""') in edges
    assert ("mnist" + sep + "(Data)", "data", "Batch 64") in edges
    assert ("ip1" + sep + "(InnerProduct)", "ip1", "500") in edges


def test_phase_test_and_all():
    test_nodes = _nodes(draw.get_pydot_graph(_read(LENET), "LR", phase=caffe_pb2.TEST))
    assert r"accuracy\n(Accuracy)" in test_nodes
    edges = _edges(draw.get_pydot_graph(_read(LENET), "LR", phase=caffe_pb2.TEST))
    assert (r"mnist\n(Data)", "data", "Batch 100") in edges
    all_edges = _edges(draw.get_pydot_graph(_read(LENET), "LR"))
    # both Data layers (TRAIN batch 64, TEST batch 100) are drawn without a phase
    assert {e[2] for e in all_edges if e[1] == "data"} == {"Batch 64", "Batch 100"}
    # the phase may be given by name too
    assert _nodes(draw.get_pydot_graph(_read(LENET), "LR", phase="TEST")) == test_nodes
    with pytest.raises(DecaffeError, match="phase"):
        draw.get_pydot_graph(_read(LENET), "LR", phase="VALIDATE")


def test_vertical_layout_uses_spaces_and_lr_mults():
    graph = draw.get_pydot_graph(_read(LENET), "TB", phase=caffe_pb2.TRAIN, display_lrm=True)
    nodes = _nodes(graph)
    assert "conv1 (Convolution) kernel size: 5 stride: 1 pad: 0 lr mult: 1.0, 2.0" in nodes
    assert "ip2 (InnerProduct) lr mult: 1.0, 2.0" in nodes
    assert graph.get("rankdir") == "TB"


def test_lr_mult_rules():
    lp = caffe_pb2.LayerParameter(name="c", type="Convolution")
    assert draw.get_layer_lr_mult(lp) == (1.0, 1.0)
    lp.param.add().lr_mult = 0.5
    assert draw.get_layer_lr_mult(lp) == (0.5, 1.0)
    lp.param.add().lr_mult = 0
    assert draw.get_layer_lr_mult(lp) == (0.5, 0.0)
    lp.param.add()
    with pytest.raises(ValueError):
        draw.get_layer_lr_mult(lp)
    with pytest.raises(DecaffeError, match="ReLU"):
        draw.get_layer_lr_mult(caffe_pb2.LayerParameter(name="r", type="ReLU"))
    # a frozen layer (both multipliers 0) shows no lr line
    frozen = caffe_pb2.LayerParameter(name="f", type="InnerProduct")
    frozen.param.add().lr_mult = 0
    frozen.param.add().lr_mult = 0
    assert draw.get_layer_label(frozen, "LR", display_lrm=True) == '"f\\n(InnerProduct)"'


def test_rectangular_and_deconvolution_labels():
    net = caffe_pb2.NetParameter(name="rect")
    d = net.layer.add(name="up", type="Deconvolution", bottom=["x"], top=["y"])
    d.convolution_param.num_output = 7
    d.convolution_param.kernel_size.append(4)
    d.convolution_param.stride.append(2)
    c = net.layer.add(name="c", type="Convolution", bottom=["y"], top=["z"])
    c.convolution_param.kernel_h, c.convolution_param.kernel_w = 3, 5
    c.convolution_param.num_output = 2
    graph = draw.get_pydot_graph(net, "TB")
    nodes = _nodes(graph)
    assert nodes["up (Deconvolution) kernel size: 4 stride: 2 pad: 0"]["fillcolor"].strip('"') \
        == RED
    assert "c (Convolution) kernel size: 3x5 stride: 1 pad: 0" in nodes
    assert ("up (Deconvolution) kernel size: 4 stride: 2 pad: 0", "y", "7") in _edges(graph)


def test_awkward_names_stay_single_nodes():
    net = caffe_pb2.NetParameter(name="odd")
    net.layer.add(name="inception_3a/1x1", type="Convolution", bottom=["node"], top=["3a/out"])
    net.layer.add(name="l|{x}", type="ReLU", bottom=["3a/out"], top=["edge"])
    source = draw.render(draw.get_pydot_graph(net, "LR"), "raw").decode()
    assert '"node"' in source and '"3a/out"' in source and '"edge"' in source
    assert r"l\|\{x\}" in source
    svg = draw.draw_net(net, "LR", "svg").decode()
    assert "inception_3a/1x1" in svg and "3a/out" in svg


def test_include_and_exclude_together_is_an_error():
    net = caffe_pb2.NetParameter()
    lp = net.layer.add(name="bad", type="ReLU", bottom=["a"], top=["a"])
    lp.include.add().phase = caffe_pb2.TRAIN
    lp.exclude.add().phase = caffe_pb2.TEST
    with pytest.raises(DecaffeError, match="bad"):
        draw.get_pydot_graph(net, "LR", phase=caffe_pb2.TRAIN)


def test_resnet50_png(tmp_path):
    out = tmp_path / "resnet50.png"
    draw.draw_net_to_file(RESNET50, str(out))
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None
    h, w = img.shape[:2]
    assert w > 5 * h  # a long left-to-right chain of 16 blocks
    def pixels(hex_colour):
        r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        lo = np.array([max(b - 2, 0), max(g - 2, 0), max(r - 2, 0)], np.uint8)
        hi = np.array([min(b + 2, 255), min(g + 2, 255), min(r + 2, 255)], np.uint8)
        return int(cv2.countNonZero(cv2.inRange(img, lo, hi)))

    # 53 red convolutions, 106 green in-place BN/Scale/ReLU pairs... each box is thousands of
    # pixels; the two poolings (orange) and the fc layer (purple) too
    assert pixels(RED) > 53 * 2000
    assert pixels(GREEN) > 100 * 1000
    assert pixels(GREY) > 100 * 1000
    assert pixels(ORANGE) > 2 * 2000
    assert pixels(PURPLE) > 1000
    graph = draw.get_pydot_graph(RESNET50, "LR")
    nodes = _nodes(graph)
    assert sum(1 for n in nodes if r"\n(Convolution)\n" in n) == 53
    assert sum(1 for n in nodes if n.endswith(r"\n(Eltwise)")) == 16
    assert nodes[r"bn_conv1\n(BatchNorm)"]["fillcolor"].strip('"') == GREEN


def test_formats(tmp_path):
    for ext, magic in (("svg", b"<?xml"), ("pdf", b"%PDF"), ("jpg", b"\xff\xd8\xff"),
                       ("png", b"\x89PNG")):
        path = tmp_path / f"lenet.{ext}"
        draw.draw_net_to_file(LENET, str(path), "TB", phase=caffe_pb2.TEST)
        assert path.read_bytes().startswith(magic), ext
    raw = tmp_path / "lenet.raw"
    draw.draw_net_to_file(LENET, str(raw))
    text = raw.read_text()
    assert text.startswith("digraph") and "rankdir=LR" in text
    with pytest.raises(DecaffeError, match="extension"):
        draw.draw_net_to_file(LENET, str(tmp_path / "noext"))
    with pytest.raises(DecaffeError):
        draw.draw_net_to_file(LENET, str(tmp_path / "x.notaformat"))
    assert not (tmp_path / "x.notaformat").exists()


def test_upgrades_v1_nets_but_keeps_v2_inputs():
    nodes = _nodes(draw.get_pydot_graph(CAFFENET_V1, "LR"))
    assert r"conv1\n(Convolution)\nkernel size: 11\nstride: 4\npad: 0" in nodes
    # ResNet's `input: "data"` stays a blob, as in Caffe's picture: no Input layer box
    nodes = _nodes(draw.get_pydot_graph(RESNET50, "LR"))
    assert not any("(Input)" in n for n in nodes)
    with pytest.raises(DecaffeError):
        draw.get_pydot_graph(12, "LR")


def test_missing_renderer(monkeypatch, tmp_path):
    monkeypatch.setenv("DECAFFE_DOT", "no-such-graphviz-program")
    with pytest.raises(DecaffeError, match="DECAFFE_DOT"):
        draw.draw_net(_read(LENET), "LR", "png")
    monkeypatch.delenv("DECAFFE_DOT")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(DecaffeError, match="graphviz"):
        draw.draw_net(_read(LENET), "LR", "png")


def test_cli(tmp_path, capsys):
    out = tmp_path / "lenet.png"
    assert cli_main(["draw_net", LENET, str(out), "--rankdir", "TB", "--phase", "TEST"]) == 0
    assert "Drawing net to" in capsys.readouterr().out
    img = cv2.imread(str(out))
    assert img.shape[0] > img.shape[1]  # top-to-bottom is tall
    assert cli_main(["draw_net", LENET, str(tmp_path / "x.png"), "-phase", "BOTH"]) == 1
    assert "phase" in capsys.readouterr().err
    assert cli_main(["draw_net", str(tmp_path / "missing.prototxt"), str(out)]) == 1
    # the installed command, as a user runs it
    svg = tmp_path / "lenet.svg"
    proc = subprocess.run([sys.executable, "-m", "decaffe", "draw_net", LENET, str(svg),
                           "-display_lrm"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "lr mult: 1.0, 2.0" in svg.read_text()


def _corpus_nets():
    import csv

    with open(os.path.join(MODELS, "MANIFEST.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r for r in rows if r["kind"] == "net" and r["parses_with_ssd_caffe_proto"] == "ok"]


@pytest.mark.parametrize("row", _corpus_nets(), ids=lambda r: r["local_path"])
def test_every_corpus_net_draws(row):
    """As pycaffe's own test draws every model: one node per layer name/type and per blob."""
    path = os.path.join(MODELS, row["local_path"])
    graph = draw.get_pydot_graph(path, "LR")
    param = draw._as_net_param(path)
    layer_keys = {f"{lp.name}_{lp.type}" for lp in param.layer}
    blobs = {b for lp in param.layer for b in list(lp.bottom) + list(lp.top)}
    assert len(graph.get_nodes()) == len(layer_keys | {b + "_blob" for b in blobs})
    assert len(graph.get_edges()) == sum(len(lp.bottom) + len(lp.top) for lp in param.layer)
    if len(param.layer) <= 60:
        import html

        svg = html.unescape(draw.render(graph, "svg").decode())  # dot writes '-' as &#45;
        assert svg.lstrip().startswith("<?xml") and param.layer[-1].name in svg

"""The export's own check (issue 21): Interp with pads or a side of 1 exports; an empty output
fails the check; the report's repr is its differences; MAX pooling indices stay int64 into
unpooling; a runtime's choice on an arg-max near-tie is checked as a tie (and a wrong graph
still fails); the check runs in onnxruntime, OpenVINO and OpenCV's dnn where installed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from export_helpers import randomize

import caffe
from decaffe.cli import main
from decaffe.errors import DecaffeError
from decaffe.export import ExportError, to_onnx, to_pytorch_source
from decaffe.export.layers import PoolingExport
from decaffe.export.registry import EXPORTS, LayerExport
from decaffe.export.verify import (
    check_runtimes,
    compare,
    onnx_runtime_runner,
    runtime_installed,
)
from decaffe.formats import prototxt


def _net(text: str):
    net = caffe.Net(prototxt.read_net(text), phase=caffe.TEST)
    randomize(net)
    return net


def _interp_reference(x, ho, wo, pb=0, pe=0):
    """DeepLab's caffe_cpu_interp2 over the effective input (pads <= 0 crop), float32 ratios."""
    n, c, h, w = x.shape
    he, we, off = h + pb + pe, w + pb + pe, -pb
    rh = np.float32((he - 1) / (ho - 1)) if ho > 1 else np.float32(0)
    rw = np.float32((we - 1) / (wo - 1)) if wo > 1 else np.float32(0)
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        h1r = rh * np.float32(i)
        h1 = int(h1r)
        hp = 1 if h1 < he - 1 else 0
        lh = h1r - h1
        for j in range(wo):
            w1r = rw * np.float32(j)
            w1 = int(w1r)
            wp = 1 if w1 < we - 1 else 0
            lw = w1r - w1
            a, b = x[:, :, off + h1, off + w1], x[:, :, off + h1, off + w1 + wp]
            cc, d = x[:, :, off + h1 + hp, off + w1], x[:, :, off + h1 + hp, off + w1 + wp]
            out[:, :, i, j] = (1 - lh) * ((1 - lw) * a + lw * b) + lh * ((1 - lw) * cc + lw * d)
    return out


@pytest.mark.parametrize("spec,size,pads", [
    ("zoom_factor: 2 pad_beg: -1 pad_end: -1", (9, 13), (-1, -1)),
    ("height: 1 width: 4", (1, 4), (0, 0)),
    ("shrink_factor: 8", (1, 2), (0, 0)),
    ("height: 5 width: 1 pad_beg: -2 pad_end: 0", (5, 1), (-2, 0)),
])
def test_interp_with_pads_or_a_side_of_one_exports(spec, size, pads, tmp_path):
    net = _net('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 '
               'dim: 7 dim: 9 } } } layer { name: "interp" type: "Interp" bottom: "x" top: "y" '
               'interp_param { ' + spec + ' } }')
    report = to_onnx(net, str(tmp_path / "i.onnx"))
    assert report.verified and report.graph.shapes["y"][2:] == size
    assert to_pytorch_source(net, str(tmp_path / "pt")).verified
    import onnxruntime as ort

    x = np.random.default_rng(5).standard_normal((1, 2, 7, 9)).astype(np.float32)
    (y,) = ort.InferenceSession(str(tmp_path / "i.onnx")).run(None, {"x": x})
    assert np.abs(y - _interp_reference(x, *size, *pads)).max() < 1e-5


def test_an_empty_output_fails_the_check(tmp_path):
    net = _net('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 0 dim: 3 '
               '} } } layer { name: "t" type: "TanH" bottom: "x" top: "t" }')
    with pytest.raises(ExportError, match=r"output 't' is empty \(shape \(0, 3\)\).*kept as"):
        to_onnx(net, str(tmp_path / "e.onnx"))
    assert not (tmp_path / "e.onnx").exists() and (tmp_path / "e.onnx.unverified").exists()
    with pytest.raises(ExportError, match="is empty"):
        to_pytorch_source(net, str(tmp_path / "pt"))
    report = to_onnx(net, str(tmp_path / "e.onnx"), check=False)  # unchecked: written
    assert not report.verified and (tmp_path / "e.onnx").exists()


def test_the_report_repr_is_the_differences(tmp_path):
    net = _net('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 '
               'dim: 8 dim: 8 } } } layer { name: "conv" type: "Convolution" bottom: "x" '
               'top: "conv" convolution_param { num_output: 64 kernel_size: 3 } }')
    report = to_onnx(net, str(tmp_path / "c.onnx"))
    text = repr(report)
    assert text.startswith("ExportReport(onnx ") and "opset 17" in text and "verified" in text
    assert f"ort: conv {report.differences['conv']:.3g}" in text
    assert len(text) < 300 and "array" not in text and "Net" not in text


UNPOOL = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 '
          'dim: 4 dim: 4 } } } layer { name: "pool" type: "Pooling" bottom: "x" top: "pool" '
          'top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } } '
          'layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" '
          'upsample_param { scale: 2 } }')


def _index_chain(model, start: str) -> set[str]:
    """The operators between MaxPool's indices and an input of the unpooling."""
    producers = {o: n for n in model.graph.node for o in n.output}
    chain, todo = set(), [start]
    while todo:
        node = producers.get(todo.pop())
        if node is None or node.op_type == "MaxPool":
            continue
        chain.add(node.op_type)
        todo.extend(i for i in node.input[:1])
    return chain


@pytest.mark.parametrize("kernel,stride,unpool", [(2, 2, "Equal"), (3, 2, "ScatterElements")])
def test_pooling_indices_stay_integer_into_unpooling(kernel, stride, unpool, tmp_path):
    """Windows that tile the plane unpool by comparing indices per window offset (no
    ScatterElements, version 16 at opset 17); overlapping ones scatter. Either way the
    indices stay int64 from MaxPool on (no Cast through float)."""
    text = UNPOOL.replace("kernel_size: 2 stride: 2", f"kernel_size: {kernel} stride: {stride}")
    report = to_onnx(_net(text), str(tmp_path / "u.onnx"), check="all")
    model = onnx.load(str(tmp_path / "u.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "Cast" not in ops and ops.count(unpool) == 1
    assert ("ScatterElements" in ops) == (unpool == "ScatterElements")
    (node,) = [n for n in model.graph.node if n.op_type == unpool]
    chain = _index_chain(model, node.input[0] if unpool == "Equal" else node.input[1])
    assert chain <= {"Reshape", "Mod", "Identity", "Slice", "Where"}, chain
    assert report.graph.onnx_indices.keys() == {"mask"}


def test_a_mask_that_is_an_output_is_caffes_float_blob(tmp_path):
    net = _net(UNPOOL.replace('bottom: "mask" ', ""))
    report = to_onnx(net, str(tmp_path / "m.onnx"))
    assert report.graph.outputs == ["mask", "up"]
    assert "Cast" in {n.op_type for n in onnx.load(report.path).graph.node}


def _tie_inputs():
    x = np.random.default_rng(3).standard_normal((1, 2, 4, 4)).astype(np.float32) * 0.1
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.0, np.float32(1.0 + 2e-7)  # decaffe picks index 1
    return x


def test_a_near_tie_in_pooling_is_checked_as_a_tie(tmp_path):
    """A runtime whose float32 layers before the pooling order a near-tie the other way moves
    one unpooled value: the check sees it is a tie and passes; a real gap still fails."""
    from decaffe.export import _runtime_masks

    net = _net(UNPOOL)
    path = str(tmp_path / "u.onnx")
    graph = to_onnx(net, path, check=False).graph
    inputs = {"x": _tie_inputs()}

    def nudged(first):  # the runtime's own computation of x: x[0, 0, 0, 0] as it has it
        def change(inp):
            x = inp["x"].copy()
            x[0, 0, 0, 0] = np.float32(first)
            return {"x": x}
        return change

    run = onnx_runtime_runner("ort", path, graph)

    def check(first, x00=1.0):
        ins = {"x": inputs["x"].copy()}
        ins["x"][0, 0, 0, 0] = x00
        change = nudged(first)
        plain = compare(graph, lambda inp: run(change(inp)), inputs=ins)
        assert plain.differences["up"] > 0.5  # the unpooled value moved
        return compare(graph, lambda inp: run(change(inp)), tolerance=1e-4, inputs=ins,
                       masks_run=lambda inp: _runtime_masks("ort", graph, path, change(inp)))

    # decaffe's pair is a tie (2e-7 apart), the runtime orders it the other way
    result = check(1.0 + 4e-7)
    assert result.differences["up"] <= 1e-4, result
    assert "pooling 'pool': 1 of 8 argmax indices differ on near-ties" in result.notes[0]
    # a tie in decaffe, but the runtime's value is 0.05 off: that difference remains
    result = check(1.05)
    assert 0.04 < result.differences["up"] < 0.06
    # decaffe's values are 0.1 apart: no tie, the first difference stands
    result = check(1.1, x00=0.9)
    assert result.differences["up"] > 0.5
    assert "are no tie: the values there differ by 0.1" in result.notes[0]


class _WrongMask(PoolingExport):
    """MAX pooling whose indices point at the next pixel: verification must refuse it."""

    def onnx(self, b, node):
        super().onnx(b, node)
        if len(node.tops) > 1:
            h, w = b.shape(node.bottoms[0])[2:]
            one, size = (b.const(np.int64(v), np.int64) for v in (1, h * w))
            idx = b.indices[node.tops[1]]
            b.indices[node.tops[1]] = b.op("Mod", [b.op("Add", [idx, one]), size])


def test_a_wrong_pooling_graph_is_still_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(EXPORTS, "Pooling", _WrongMask())
    with pytest.raises(ExportError, match="differs from decaffe in ort: output 'up'") as info:
        to_onnx(_net(UNPOOL), str(tmp_path / "w.onnx"))
    assert any("no tie" in n for n in info.value.report.notes)


def test_check_names_runtimes():
    assert check_runtimes(True) == ("ort",) and check_runtimes("false") == ()
    assert check_runtimes("onnxruntime") == ("ort",)
    with pytest.raises(DecaffeError, match="unknown runtime 'tensorrt'"):
        check_runtimes("ort,tensorrt")
    installed = tuple(r for r in ("ort", "openvino", "opencv") if runtime_installed(r))
    assert check_runtimes("all") == installed
    assert check_runtimes("opencv,ort") == ("ort", "opencv")


@pytest.mark.skipif(not runtime_installed("openvino"), reason="openvino is not installed")
def test_every_runtime_checks_the_export(tmp_path, capsys):
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 '
            'dim: 12 dim: 12 } } } layer { name: "conv" type: "Convolution" bottom: "x" '
            'top: "conv" convolution_param { num_output: 4 kernel_size: 3 } } '
            'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { '
            'pool: AVE kernel_size: 3 stride: 2 } }')
    path = tmp_path / "n.prototxt"
    path.write_text(text)
    rc = main(["export", "-model", str(path), "-onnx", str(tmp_path / "n.onnx"), "-check",
               "ort,openvino,opencv"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for name in ("onnxruntime", "OpenVINO (CPU, f32)", "OpenCV dnn"):
        assert "output pool: largest relative difference" in out and f"({name}" in out
    report = to_onnx(_net(text), str(tmp_path / "m.onnx"), check="all")
    assert set(report.by_runtime) == {"ort", "openvino", "opencv"}
    assert main(["export", "-model", str(path), "-onnx", str(tmp_path / "x.onnx"), "-check",
                 "bogus"]) != 0
    assert "-check: unknown runtime 'bogus'" in capsys.readouterr().err


ROI_NET = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 '
           'dim: 14 dim: 14 } } } layer { name: "rois" type: "Input" top: "rois" input_param { '
           'shape { dim: 3 dim: 5 } } } layer { name: "pool" type: "ROIPooling" bottom: "data" '
           'bottom: "rois" top: "pool" roi_pooling_param { pooled_w: 6 pooled_h: 6 '
           'spatial_scale: 0.0625 } }')


def test_roi_bins_are_caffes_float_quotients_in_every_runtime(tmp_path):
    """Fast R-CNN's bins: extent 7 over 6 bins puts the last edge at ceil(6 · fl(7/6)) = 7;
    a runtime dividing by multiplying with the reciprocal (OpenVINO) got 8, so the graph
    reads the quotient from a table made in float32."""
    from decaffe.export.verify import RUNTIMES

    net = _net(ROI_NET)
    report = to_onnx(net, str(tmp_path / "r.onnx"), check="all")
    assert report.verified
    x = np.random.default_rng(1).standard_normal((1, 2, 14, 14)).astype(np.float32)
    # rows 6..12 (extent 7) and 3..5 (extent 3), a wide one, one past the table (extent 200)
    rois = np.array([[0, 41.774, 98.9489, 78.8455, 197.4059],
                     [0, 0.0, 0.0, 223.0, 223.0],
                     [0, -1600.0, -1600.0, 1600.0, 1600.0]], np.float32)
    net.blobs["data"].data[...] = x
    net.blobs["rois"].data[...] = rois
    ref = net.forward()["pool"]
    for rt in (r for r in RUNTIMES if runtime_installed(r)):
        got = onnx_runtime_runner(rt, report.path, report.graph)({"data": x, "rois": rois})
        assert np.array_equal(got["pool"], ref), rt
    model = onnx.load(report.path)
    assert any(i.name.startswith("pool/bin_sizes") for i in model.graph.initializer)


class _NeedsOpset18(LayerExport):
    """A TanH written with an operator form that exists from opset 18 on."""

    def onnx(self, b, node):
        b.need("Tanh", 18, "a form from opset 18")
        b.op("Tanh", node.bottoms, node.tops[0])

    def torch(self, s, node):
        return f"torch.tanh({s.v(node.bottoms[0])})"


def test_the_default_opset_is_the_lowest_the_net_needs(tmp_path, monkeypatch):
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 '
            'dim: 5 dim: 5 } } } layer { name: "act" type: "TanH" bottom: "x" top: "act" }')
    assert to_onnx(_net(text), str(tmp_path / "a.onnx")).opset == 17
    assert onnx.load(str(tmp_path / "a.onnx")).ir_version == 8  # what opset 17 needs
    monkeypatch.setitem(EXPORTS, "TanH", _NeedsOpset18())
    report = to_onnx(_net(text), str(tmp_path / "b.onnx"))
    assert report.opset == 18 and report.opset_reason == "layer 'act' (TanH) needs opset 18"
    assert "opset 18 (layer 'act' (TanH) needs opset 18)" in report.lines()[0]
    assert to_onnx(_net(text), str(tmp_path / "c.onnx"), opset=19).opset == 19  # -opset wins
    with pytest.raises(ExportError, match=r"\(TanH\) ONNX Tanh \(a form from opset 18\) needs "
                                          "opset 18 or newer; -opset 17 is too low"):
        to_onnx(_net(text), str(tmp_path / "d.onnx"), opset=17)


def test_operators_are_their_lowest_versions_at_the_default_opset(tmp_path):
    """At opset 17 no operator of version 16 where an older one says the same: comparisons
    >= as Or(Greater, Equal) (ROIPooling's rounding and cells), AveragePool's uneven pads as
    an explicit Pad (converters such as onnx2torch refuse both)."""
    text = ROI_NET + (' layer { name: "ave" type: "Pooling" bottom: "data" top: "ave" '
                      'pooling_param { pool: AVE kernel_size: 3 stride: 2 } }')
    report = to_onnx(_net(text), str(tmp_path / "n.onnx"), check="all")
    model = onnx.load(report.path)
    ops = {n.op_type for n in model.graph.node}
    assert report.opset == 17 and "GreaterOrEqual" not in ops and "Or" in ops
    for n in model.graph.node:
        if n.op_type == "AveragePool":
            pads = next(list(a.ints) for a in n.attribute if a.name == "pads")
            assert pads[:2] == pads[2:], pads

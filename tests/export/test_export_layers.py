"""What BVLC layers' exports pin beyond computing what decaffe computes: the ONNX graph where
a case fixes an operator choice (Caffe's pooling windows, Caffe's names), dynamic batch and
its refusals. That every exporting sample of tests/layer_db.py exports in every form within
1e-4 is tests/layers/test_layer_table.py's check."""

from __future__ import annotations

import numpy as np
import pytest
from export_helpers import export_all, randomize
from layer_db import LAYERS
from netbuild import input_layers

import caffe
from decaffe.formats import prototxt


def net_of(text: str, inputs: dict[str, tuple[int, ...]], phase=caffe.TEST):
    param = prototxt.read_net(input_layers(inputs) + text)
    net = caffe.Net(param, phase=phase)
    randomize(net, seed=3)
    return net


SAMPLES = {s.id: s for row in LAYERS.values() for s in row.samples}


def sample_net(id: str):
    """The table's sample `id` (tests/layer_db.py) as a TEST net with random weights."""
    return net_of(SAMPLES[id].net, SAMPLES[id].inputs)


def test_pooling_keeps_caffe_windows_in_onnx(tmp_path):
    """Caffe's ceil rounding with the last window clipped: explicit pads, no ceil_mode."""
    import onnx

    net = sample_net("export_pool_max_ceil_clip")
    from decaffe.export import to_onnx

    to_onnx(net, str(tmp_path / "p.onnx"))
    model = onnx.load(str(tmp_path / "p.onnx"))
    (pool,) = [n for n in model.graph.node if n.op_type == "MaxPool"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
    assert "ceil_mode" not in attrs
    # 8 rows, pad 1, kernel 3, stride 2: Caffe gives 5 rows (ceil), torch's floor would give 4
    assert net.blobs["y"].data.shape[2:] == (5, 6)
    assert list(attrs["pads"]) == [1, 1, 2, 2]  # begin h, w; end h, w (past the image)


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch(batch, tmp_path):
    """-dynamic_batch: one export answers at the export batch and at another (checked inside
    at batch+1); the ONNX input's axis 0 is symbolic."""
    import onnx

    text = ('layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { '
            'num_output: 3 kernel_size: 3 } } layer { name: "f" type: "Flatten" bottom: "c" '
            'top: "f" } layer { name: "ip" type: "InnerProduct" bottom: "f" top: "y" '
            'inner_product_param { num_output: 4 } } layer { name: "r" type: "Reshape" bottom: '
            '"y" top: "r" reshape_param { shape { dim: -1 dim: 2 dim: 2 } } } layer { name: '
            '"m" type: "MVN" bottom: "c" top: "m" }')
    net = net_of(text, {"x": (batch, 2, 5, 5)})
    reports = export_all(net, str(tmp_path), dynamic_batch=True)
    model = onnx.load(reports["onnx"].path)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # the net itself keeps its shapes
    assert net.blobs["x"].data.shape[0] == batch


def test_dynamic_batch_refuses_recurrent(tmp_path):
    from decaffe.export import ExportError, to_onnx

    net = sample_net("export_rnn")
    with pytest.raises(ExportError, match=r"layer 'r': \(RNN\).*timesteps"):
        to_onnx(net, str(tmp_path / "r.onnx"), dynamic_batch=True)
    assert not list(tmp_path.iterdir())


def test_onnx_uses_caffe_names(tmp_path):
    """Blob names stay value names, weights are initializers named layer/k."""
    import onnx

    net = sample_net("export_batchnorm_scale_bias")
    from decaffe.export import to_onnx

    to_onnx(net, str(tmp_path / "n.onnx"))
    model = onnx.load(str(tmp_path / "n.onnx"))
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["y"]
    inits = {i.name for i in model.graph.initializer}
    assert {"sc/0", "sc/1", "bi/0"} <= inits
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == 1
    np.testing.assert_equal(len(model.opset_import), 1)

"""Each BVLC layer type's export (ONNX, torch.export, generated PyTorch source) computes what
decaffe computes, including Caffe's details ONNX lacks natively: one small net per case,
random weights and inputs, every form checked within 1e-4 relative (inside the exporters)
and the ONNX graph inspected where the case pins an operator choice."""

from __future__ import annotations

import numpy as np
import pytest
from export_helpers import export_all, randomize
from netbuild import input_layers

import caffe
from decaffe.formats import prototxt


def net_of(text: str, inputs: dict[str, tuple[int, ...]], phase=caffe.TEST):
    param = prototxt.read_net(input_layers(inputs) + text)
    net = caffe.Net(param, phase=phase)
    randomize(net, seed=3)
    return net


# (id, layers, inputs); each layer's prototxt uses bottom "x" (1, 4, 9, 11) unless it says
X = {"x": (2, 4, 9, 11)}
CASES = [
    ("conv_pad_stride_dilation", 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" '
     'convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 dilation: 2 '
     'weight_filler { type: "gaussian" std: 0.1 } } }', X),
    ("conv_group_nobias", 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" '
     'convolution_param { num_output: 6 kernel_size: 3 group: 2 bias_term: false } }', X),
    ("conv_1d", 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" '
     'convolution_param { num_output: 3 kernel_size: 3 stride: 2 } }', {"x": (2, 4, 10)}),
    ("conv_3d", 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" '
     'convolution_param { num_output: 3 kernel_size: 2 pad: 1 } }', {"x": (1, 2, 4, 5, 3)}),
    ("deconv_groups", 'layer { name: "d" type: "Deconvolution" bottom: "x" top: "y" '
     'convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2 dilation: 2 } '
     '}', X),
    ("pool_max_ceil_clip", 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
     'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }', {"x": (2, 3, 8, 10)}),
    ("pool_max_ceil_empty", 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
     'pooling_param { pool: MAX kernel_size: 1 stride: 3 } }', {"x": (1, 2, 5, 7)}),
    ("pool_ave_ceil_clip", 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
     'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }', {"x": (2, 3, 8, 10)}),
    ("pool_ave_big_pad", 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
     'pooling_param { pool: AVE kernel_size: 3 stride: 3 pad: 2 } }', {"x": (1, 2, 7, 8)}),
    ("pool_floor", 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
     'pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }', X),
    ("pool_max_mask", 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "m" '
     'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }', {"x": (2, 3, 8, 10)}),
    ("pool_max_mask_empty", 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "m" '
     'pooling_param { pool: MAX kernel_size: 1 stride: 3 } }', {"x": (1, 2, 5, 7)}),
    ("pool_global", 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
     'pooling_param { pool: AVE global_pooling: true } } layer { name: "q" type: "Pooling" '
     'bottom: "x" top: "z" pooling_param { pool: MAX global_pooling: true } }', X),
    ("pool_stochastic_test", 'layer { name: "a" type: "AbsVal" bottom: "x" top: "a" } '
     'layer { name: "p" type: "Pooling" bottom: "a" top: "y" pooling_param { pool: STOCHASTIC '
     'kernel_size: 3 stride: 2 } }', X),
    ("spp", 'layer { name: "s" type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 3 '
     '} }', X),
    ("lrn_across", 'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { '
     'local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }', X),
    ("lrn_within", 'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { '
     'local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }', X),
    ("im2col", 'layer { name: "i" type: "Im2col" bottom: "x" top: "y" convolution_param { '
     'kernel_size: 3 stride: 2 pad: 1 } }', X),
    ("neurons", 'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
     'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" } '
     'layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { channel_shared: '
     'true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" } layer { name: "t" '
     'type: "TanH" bottom: "x" top: "t" } layer { name: "e" type: "ELU" bottom: "x" top: "e" '
     'elu_param { alpha: 0.5 } } layer { name: "a" type: "AbsVal" bottom: "x" top: "a" } '
     'layer { name: "b" type: "BNLL" bottom: "x" top: "b" } layer { name: "th" type: '
     '"Threshold" bottom: "x" top: "th" threshold_param { threshold: 0.2 } } layer { name: '
     '"cl" type: "Clip" bottom: "x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { '
     'name: "sw" type: "Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { '
     'name: "d" type: "Dropout" bottom: "x" top: "d" }', X),
    ("dropout_scale_train_false", 'layer { name: "d" type: "Dropout" bottom: "x" top: "y" '
     'dropout_param { dropout_ratio: 0.3 scale_train: false } }', X),
    ("power_exp_log", 'layer { name: "a" type: "AbsVal" bottom: "x" top: "a" } layer { '
     'name: "pw" type: "Power" bottom: "a" top: "pw" power_param { power: 1.5 scale: 2 shift: '
     '0.5 } } layer { name: "p2" type: "Power" bottom: "x" top: "p2" power_param { power: 2 } '
     '} layer { name: "pc" type: "Power" bottom: "x" top: "pc" power_param { power: 3 scale: 0 '
     'shift: 2 } } layer { name: "ex" type: "Exp" bottom: "x" top: "ex" exp_param { base: 2 '
     'scale: 0.5 shift: 1 } } layer { name: "lg" type: "Log" bottom: "pw" top: "lg" '
     'log_param { base: 10 scale: 3 shift: 1 } } layer { name: "ln" type: "Log" bottom: "a" '
     'top: "ln" }', X),
    ("batchnorm_scale_bias", 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" } '
     'layer { name: "sc" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } } '
     'layer { name: "bi" type: "Bias" bottom: "x" top: "y" }', X),
    ("batchnorm_batch_stats", 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" '
     'batch_norm_param { use_global_stats: false } }', X),
    ("scale_axis_range", 'layer { name: "sc" type: "Scale" bottom: "x" top: "y" scale_param '
     '{ axis: 2 num_axes: 2 bias_term: true } } layer { name: "bi" type: "Bias" bottom: "x" '
     'top: "z" bias_param { axis: 1 num_axes: 2 } } layer { name: "s0" type: "Scale" bottom: '
     '"x" top: "w" scale_param { axis: 0 num_axes: 0 } }', X),
    ("scale_bias_bottoms", 'layer { name: "sc" type: "Scale" bottom: "x" bottom: "s" top: "y" '
     'scale_param { axis: 1 } } layer { name: "bi" type: "Bias" bottom: "x" bottom: "b" top: '
     '"z" bias_param { axis: 2 } }', {"x": (2, 4, 3, 5), "s": (4, 3), "b": (3, 5)}),
    ("mvn", 'layer { name: "m" type: "MVN" bottom: "x" top: "y" } layer { name: "m2" type: '
     '"MVN" bottom: "x" top: "z" mvn_param { across_channels: true normalize_variance: false '
     '} }', X),
    ("eltwise", 'layer { name: "s" type: "Eltwise" bottom: "x" bottom: "w" bottom: "x" top: '
     '"s" eltwise_param { coeff: 0.5 coeff: -2 coeff: 1 } } layer { name: "p" type: "Eltwise" '
     'bottom: "x" bottom: "w" top: "p" eltwise_param { operation: PROD } } layer { name: "m" '
     'type: "Eltwise" bottom: "x" bottom: "w" bottom: "s" top: "m" eltwise_param { operation: '
     'MAX } }', {"x": (2, 3, 4, 5), "w": (2, 3, 4, 5)}),
    ("concat_slice", 'layer { name: "c" type: "Concat" bottom: "x" bottom: "w" top: "c" '
     'concat_param { axis: 2 } } layer { name: "s" type: "Slice" bottom: "c" top: "a" top: '
     '"b" top: "d" slice_param { axis: 2 slice_point: 1 slice_point: 5 } } layer { name: "s2" '
     'type: "Slice" bottom: "x" top: "e" top: "f" }', {"x": (2, 4, 3, 5), "w": (2, 4, 4, 5)}),
    ("flatten_reshape", 'layer { name: "f" type: "Flatten" bottom: "x" top: "f" flatten_param '
     '{ axis: 1 end_axis: 2 } } layer { name: "r" type: "Reshape" bottom: "x" top: "r" '
     'reshape_param { shape { dim: 0 dim: -1 dim: 11 } } } layer { name: "r2" type: "Reshape" '
     'bottom: "x" top: "r2" reshape_param { axis: 2 shape { dim: 3 dim: 3 } num_axes: 1 } }',
     X),
    ("crop_tile", 'layer { name: "c" type: "Crop" bottom: "x" bottom: "w" top: "c" crop_param '
     '{ axis: 2 offset: 1 offset: 3 } } layer { name: "t" type: "Tile" bottom: "c" top: "t" '
     'tile_param { axis: 1 tiles: 3 } }', {"x": (2, 4, 9, 11), "w": (1, 1, 5, 6)}),
    ("reduction_argmax", 'layer { name: "r" type: "Reduction" bottom: "x" top: "r" '
     'reduction_param { axis: 1 operation: ASUM coeff: 0.5 } } layer { name: "r2" type: '
     '"Reduction" bottom: "x" top: "r2" reduction_param { operation: MEAN } } layer { name: '
     '"r3" type: "Reduction" bottom: "x" top: "r3" reduction_param { axis: 2 operation: SUMSQ '
     '} } layer { name: "a" type: "ArgMax" bottom: "x" top: "a" argmax_param { top_k: 3 '
     'out_max_val: true } } layer { name: "a2" type: "ArgMax" bottom: "x" top: "a2" '
     'argmax_param { axis: 1 } } layer { name: "a3" type: "ArgMax" bottom: "x" top: "a3" '
     'argmax_param { axis: 3 top_k: 2 out_max_val: true } }', X),
    ("argmax_ties", 'layer { name: "t" type: "Threshold" bottom: "x" top: "t" } layer { name: '
     '"a" type: "ArgMax" bottom: "t" top: "a" argmax_param { axis: 1 } } layer { name: "a2" '
     'type: "ArgMax" bottom: "t" top: "a2" argmax_param { top_k: 2 } }', X),
    ("inner_product_axes", 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
     'inner_product_param { num_output: 5 axis: 2 } } layer { name: "ipt" type: "InnerProduct" '
     'bottom: "x" top: "z" inner_product_param { num_output: 3 transpose: true bias_term: false '
     '} } layer { name: "sm" type: "Softmax" bottom: "y" top: "s" softmax_param { axis: 2 } }',
     X),
    ("embed_reindex", 'layer { name: "e" type: "Embed" bottom: "i" top: "e" embed_param { '
     'num_output: 4 input_dim: 7 } } layer { name: "b" type: "BatchReindex" bottom: "x" bottom: '
     '"k" top: "b" }', {"i": (2, 3), "x": (4, 3, 2), "k": (5,)}),
    ("parameter_dummy_silence", 'layer { name: "p" type: "Parameter" top: "p" parameter_param '
     '{ shape { dim: 2 dim: 3 } } } layer { name: "d" type: "DummyData" top: "d" '
     'dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "constant" value: 1.5 } } '
     '} layer { name: "e" type: "Eltwise" bottom: "x" bottom: "p" bottom: "d" top: "e" } '
     'layer { name: "s" type: "Silence" bottom: "x" }', {"x": (2, 3)}),
    ("rnn", 'layer { name: "r" type: "RNN" bottom: "x" bottom: "c" top: "o" recurrent_param { '
     'num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }',
     {"x": (4, 2, 3), "c": (4, 2)}),
    ("lstm_static_exposed", 'layer { name: "l" type: "LSTM" bottom: "x" bottom: "c" bottom: '
     '"s" bottom: "h0" bottom: "c0" top: "o" top: "hT" top: "cT" recurrent_param { num_output: '
     '4 expose_hidden: true } }', {"x": (3, 2, 5), "c": (3, 2), "s": (2, 6), "h0": (1, 2, 4),
                                  "c0": (1, 2, 4)}),
    ("lstm_unit", 'layer { name: "u" type: "LSTMUnit" bottom: "cp" bottom: "g" bottom: "c" '
     'top: "cn" top: "h" }', {"cp": (1, 3, 4), "g": (1, 3, 16), "c": (1, 3)}),
]


CASE = {c[0]: c for c in CASES}


@pytest.mark.parametrize("name,text,inputs", CASES, ids=[c[0] for c in CASES])
def test_layer_exports_match_decaffe(name, text, inputs, tmp_path):
    net = net_of(text, inputs)
    export_all(net, str(tmp_path))


def test_pooling_keeps_caffe_windows_in_onnx(tmp_path):
    """Caffe's ceil rounding with the last window clipped: explicit pads, no ceil_mode."""
    import onnx

    net = net_of(*CASE["pool_max_ceil_clip"][1:])
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

    net = net_of(*CASE["rnn"][1:])
    with pytest.raises(ExportError, match=r"layer 'r': \(RNN\).*timesteps"):
        to_onnx(net, str(tmp_path / "r.onnx"), dynamic_batch=True)
    assert not list(tmp_path.iterdir())


def test_onnx_uses_caffe_names(tmp_path):
    """Blob names stay value names, weights are initializers named layer/k."""
    import onnx

    net = net_of(*CASE["batchnorm_scale_bias"][1:])
    from decaffe.export import to_onnx

    to_onnx(net, str(tmp_path / "n.onnx"))
    model = onnx.load(str(tmp_path / "n.onnx"))
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["y"]
    inits = {i.name for i in model.graph.initializer}
    assert {"sc/0", "sc/1", "bi/0"} <= inits
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == 1
    np.testing.assert_equal(len(model.opset_import), 1)

"""The audit of BVLC Caffe 1.0's fatal checks (CHECK*, LOG(FATAL)) against decaffe, as data.

Each row names the check in Caffe's source (file, function) and its message, what decaffe
does with the same input, and the input. `tests/core/test_refusals.py` runs every row: a
"refused" row must raise the named DecaffeError subclass naming the layer (or the solver
field); a "logged" row must log the line; an "accepted" row documents a difference (see
docs/compat.md) and is checked to build. Where a row was fixed by the Caffe 1.0 audit
(issue 11), `fixed` says so.

Rows are grouped by Caffe file: upgrade_proto.cpp, net.cpp, insert_splits.cpp, layer.hpp
(Layer::SetUp), layer_factory.cpp, each BVLC layer's LayerSetUp/Reshape, solver.cpp,
sgd_solver.cpp and the sgd_solvers. Data layers (Data, ImageData, HDF5Data, WindowData,
MemoryData's data) are audited with the data readers and are not listed here.

Not carried over, on purpose (documented in docs/compat.md):
- `engine: CUDNN` on a CPU-only Caffe build ("Layer X has unknown engine"): decaffe has one
  implementation per layer and ignores `engine`, as a GPU build with cuDNN accepts it.
- DCHECKs (debug builds only), e.g. Dropout's ratio in (0, 1) and Embed's index range:
  release Caffe does not stop on them. decaffe refuses a dropout_ratio outside [0, 1) and an
  Embed index out of range, since both make the output meaningless.
- Caffe 1.0's SoftmaxWithLoss/InfogainLoss with two tops and two loss_weight entries
  crashes in its internal Softmax (BVLC/caffe#2968, never fixed); decaffe computes the
  documented probability top. Without loss_weight entries both refuse ("once per top").
"""

from __future__ import annotations

from netbuild import input_layer
from netbuild import layer as lay


def inp(shape, name: str = "data") -> str:
    return input_layer(name, shape)


D4 = inp((2, 4, 6, 6))
X2 = inp((2, 3))
LABEL = inp((2,), "label")


def conv(extra: str, name: str = "c", type_: str = "Convolution", data: str = D4) -> str:
    return data + lay(name, type_, ["data"], [name], f"convolution_param {{ {extra} }}")


def pool(extra: str, data: str = D4) -> str:
    return data + lay("p", "Pooling", ["data"], ["p"], f"pooling_param {{ {extra} }}")


# (id, Caffe source, Caffe's check, decaffe, error class, layer named, text matched, net text)
# decaffe: "refused" (DecaffeError subclass named), "fixed" (refused since the 1.0 audit)
NET_ROWS: list[tuple] = [
    # --- upgrade_proto.cpp ----------------------------------------------------------------
    ("mixed_layer_layers", "upgrade_proto.cpp UpgradeV1Net",
     "Refusing to upgrade inconsistent NetParameter input; the definition includes both "
     "'layer' and 'layers' fields", "fixed", "ParseError", None,
     "Refusing to upgrade inconsistent NetParameter",
     'layers { name: "old" type: RELU bottom: "data" top: "r" }\n' + D4),
    ("v0_unknown_type", "upgrade_proto.cpp UpgradeV0LayerType", "Unknown layer name: X",
     "refused", "ParseError", None, "unknown V0 layer type 'quux'",
     'input: "data" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 '
     'layers { layer { name: "q" type: "quux" } bottom: "data" top: "y" }'),
    ("v0_unknown_bottom", "upgrade_proto.cpp UpgradeV0PaddingLayers",
     "Unknown blob input X to layer J", "refused", "ParseError", None, "unknown bottom blob",
     'layers { layer { name: "c" type: "relu" } bottom: "nope" top: "y" }'),
    ("v0_padding_into_relu", "upgrade_proto.cpp UpgradeV0PaddingLayers",
     "Padding layer input to non-convolutional / non-pooling layer type", "refused",
     "ParseError", None, "only conv and pool layers can absorb padding",
     'input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4 '
     'layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "p" } '
     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }'),
    # --- net.cpp / insert_splits.cpp -------------------------------------------------------
    ("include_and_exclude", "net.cpp Net::FilterNet",
     "Specify either include rules or exclude rules; not both.", "refused", "NetError", "r",
     "include rules or exclude rules",
     D4 + lay("r", "ReLU", ["data"], ["r"], "include { phase: TRAIN } exclude { phase: TEST }")),
    ("propagate_down_count", "net.cpp Net::Init",
     "propagate_down param must be specified either 0 or bottom_size times", "refused",
     "NetError", "r", "propagate_down must be given 0 or bottom-count times",
     D4 + lay("r", "ReLU", ["data"], ["r"], "propagate_down: true propagate_down: false")),
    ("unknown_bottom", "insert_splits.cpp InsertSplits / net.cpp AppendBottom",
     "Unknown bottom blob 'X' (layer 'Y', bottom index J)", "refused", "NetError", "r",
     "unknown bottom blob 'nope'", D4 + lay("r", "ReLU", ["nope"], ["r"])),
    ("top_twice", "net.cpp Net::AppendTop", "Top blob 'X' produced by multiple sources.",
     "refused", "NetError", "b", "produced by more than one layer",
     D4 + lay("a", "ReLU", ["data"], ["x"]) + lay("b", "ReLU", ["data"], ["x"])),
    ("too_many_params", "net.cpp Net::Init", "Too many params specified for layer X",
     "refused", "NetError", "r", "param specs given",
     D4 + lay("r", "ReLU", ["data"], ["r"], "param { lr_mult: 1 }")),
    ("share_shape", "net.cpp Net::AppendParam",
     "Cannot share param 'w' owned by layer 'a' with layer 'b'; shape mismatch.", "refused",
     "NetError", "b", "shared parameter 'w' has shape",
     X2 + lay("a", "InnerProduct", ["data"], ["a"],
              'param { name: "w" } inner_product_param { num_output: 3 bias_term: false }')
     + lay("b", "InnerProduct", ["a"], ["b"],
           'param { name: "w" } inner_product_param { num_output: 2 bias_term: false }')),
    ("share_permissive_count", "net.cpp Net::AppendParam",
     "Cannot share param 'w' owned by layer 'a' with layer 'b'; count mismatch.", "refused",
     "NetError", "b", "shared parameter 'w' has 6 values here and 9",
     X2 + lay("a", "InnerProduct", ["data"], ["a"],
              'param { name: "w" } inner_product_param { num_output: 3 bias_term: false }')
     + lay("b", "InnerProduct", ["a"], ["b"], 'param { name: "w" share_mode: PERMISSIVE } '
                                             'inner_product_param { num_output: 2 '
                                             'bias_term: false }')),
    ("share_lr_mult", "net.cpp Net::AppendParam", "Shared param 'w' has mismatched lr_mult.",
     "refused", "NetError", "b", "mismatched lr_mult",
     X2 + lay("a", "InnerProduct", ["data"], ["a"],
              'param { name: "w" lr_mult: 1 } inner_product_param { num_output: 3 '
              'bias_term: false }')
     + lay("b", "InnerProduct", ["a"], ["b"],
           'param { name: "w" lr_mult: 2 } inner_product_param { num_output: 3 '
           'bias_term: false }')),
    ("share_decay_mult", "net.cpp Net::AppendParam",
     "Shared param 'w' has mismatched decay_mult.", "refused", "NetError", "b",
     "mismatched decay_mult",
     X2 + lay("a", "InnerProduct", ["data"], ["a"],
              'param { name: "w" decay_mult: 1 } inner_product_param { num_output: 3 '
              'bias_term: false }')
     + lay("b", "InnerProduct", ["a"], ["b"],
           'param { name: "w" decay_mult: 0 } inner_product_param { num_output: 3 '
           'bias_term: false }')),
    # --- layer.hpp Layer::SetUp (CheckBlobCounts, SetLossWeights) -----------------------------
    ("exact_bottoms", "layer.hpp Layer::CheckBlobCounts",
     "X Layer takes N bottom blob(s) as input.", "refused", "NetError", "r",
     "takes 1 bottom blob", D4 + lay("r", "ReLU", ["data", "data"], ["r"])),
    ("loss_weight_count", "layer.hpp Layer::SetLossWeights",
     "loss_weight must be unspecified or specified once per top blob.", "fixed", "NetError",
     "s", "loss_weight must be unspecified or specified once per top blob",
     D4 + lay("s", "Slice", ["data"], ["a", "b"], "loss_weight: 1 slice_param { axis: 1 }")),
    ("loss_layer_two_tops_default_weight", "layer.hpp Layer::SetLossWeights (after "
     "LossLayer::LayerSetUp adds loss_weight 1)", "loss_weight must be unspecified or "
     "specified once per top blob. (2 vs. 1)", "fixed", "NetError", "l",
     "1 given for 2 tops", X2 + LABEL + lay("l", "SoftmaxWithLoss", ["data", "label"],
                                           ["loss", "prob"])),
    # --- layer_factory.cpp ----------------------------------------------------------------
    ("unknown_type", "layer_factory.hpp LayerRegistry::CreateLayer",
     "Unknown layer type: X (known types: ...)", "refused", "NetError", "r",
     "unknown layer type 'ReLu'", D4 + lay("r", "ReLu", ["data"], ["r"])),
    ("python_import", "layer_factory.cpp GetPythonLayer", "(Python exception, then abort)",
     "refused", "PythonLayerError", "p", "cannot import module",
     D4 + lay("p", "Python", ["data"], ["p"],
              'python_param { module: "no_such_module_xyz" layer: "L" }')),
    # --- layers: in-place ------------------------------------------------------------------
    ("absval_in_place", "absval_layer.cpp LayerSetUp",
     "AbsVal Layer does not allow in-place computation.", "fixed", "LayerParamError", "a",
     "does not allow in-place", D4 + lay("a", "AbsVal", ["data"], ["data"])),
    ("flatten_in_place", "flatten_layer.cpp Reshape",
     "Flatten layer does not allow in-place computation.", "refused", "LayerParamError", "f",
     "does not allow in-place", D4 + lay("f", "Flatten", ["data"], ["data"])),
    ("reshape_in_place", "reshape_layer.cpp LayerSetUp",
     "Reshape Layer does not allow in-place computation.", "fixed", "LayerParamError", "r",
     "does not allow in-place",
     D4 + lay("r", "Reshape", ["data"], ["data"], "reshape_param { shape { dim: 0 dim: -1 } }")),
    ("split_in_place", "split_layer.cpp Reshape",
     "Split Layer does not allow in-place computation.", "fixed", "LayerParamError", "s",
     "does not allow in-place", D4 + lay("s", "Split", ["data"], ["data", "b"])),
    # a later top named as the bottom is not in place (only top i = bottom i is): the net
    # refuses it before Split's own check, which looks at every top
    ("split_later_top_is_bottom", "net.cpp AppendTop",
     "Top blob 'data' produced by multiple sources.", "refused", "NetError", "s",
     "produced by more than one layer", D4 + lay("s", "Split", ["data"], ["b", "data"])),
    # --- layers: parameters and shapes -----------------------------------------------------
    ("accuracy_top_k", "accuracy_layer.cpp Reshape",
     "top_k must be less than or equal to the number of classes.", "refused",
     "LayerParamError", "acc", "top_k",
     X2 + LABEL + lay("acc", "Accuracy", ["data", "label"], ["acc"],
                      "accuracy_param { top_k: 4 }")),
    ("accuracy_labels", "accuracy_layer.cpp Reshape",
     "Number of labels must match number of predictions", "refused", "LayerParamError", "acc",
     "number of labels must match",
     X2 + inp((3,), "label") + lay("acc", "Accuracy", ["data", "label"], ["acc"])),
    ("argmax_top_k", "argmax_layer.cpp LayerSetUp", "top k must not be less than 1.",
     "refused", "LayerParamError", "am", "top_k",
     X2 + lay("am", "ArgMax", ["data"], ["am"], "argmax_param { top_k: 0 }")),
    ("argmax_top_k_classes", "argmax_layer.cpp LayerSetUp",
     "top_k must be less than or equal to the number of classes.", "refused",
     "LayerParamError", "am", "top_k",
     X2 + lay("am", "ArgMax", ["data"], ["am"], "argmax_param { top_k: 4 }")),
    ("batchnorm_lr_mult", "batch_norm_layer.cpp LayerSetUp",
     "Cannot configure batch normalization statistics as layer parameters.", "fixed",
     "LayerParamError", "bn", r"param\[0\]\.lr_mult",
     D4 + lay("bn", "BatchNorm", ["data"], ["bn"], "param { lr_mult: 1 }")),
    ("batchnorm_1d", "batch_norm_layer.cpp LayerSetUp/Reshape",
     "bottom[0]->shape(1) on a 1-axis blob (CanonicalAxisIndex: axis out of range)", "fixed",
     "LayerParamError", "bn", "at least 2 axes",
     inp((5,)) + lay("bn", "BatchNorm", ["data"], ["bn"])),
    ("batchreindex_axes", "batch_reindex_layer.cpp Reshape", "CHECK_EQ(1, bottom[1]->num_axes())",
     "refused", "LayerParamError", "f", "one axis",
     X2 + inp((2, 1), "s") + lay("f", "BatchReindex", ["data", "s"], ["a"])),
    ("bias_shape", "bias_layer.cpp Reshape", "dimension mismatch between bottom[0]->shape(i) "
     "and bias->shape(j)", "refused", "LayerParamError", "s", "shape",
     D4 + inp((3,), "b") + lay("s", "Bias", ["data", "b"], ["s"])),
    ("concat_axis_and_dim", "concat_layer.cpp LayerSetUp",
     "Either axis or concat_dim should be specified; not both.", "refused", "LayerParamError",
     "c", "not both",
     D4 + lay("c", "Concat", ["data", "data"], ["c"], "concat_param { axis: 1 concat_dim: 1 }")),
    ("concat_shape", "concat_layer.cpp Reshape",
     "All inputs must have the same shape, except at concat_axis.", "refused",
     "LayerParamError", "c", "concat axis",
     D4 + inp((2, 4, 5, 6), "b") + lay("c", "Concat", ["data", "b"], ["c"])),
    ("concat_axes", "concat_layer.cpp Reshape", "All inputs must have the same #axes.",
     "refused", "LayerParamError", "c", "same number of axes",
     D4 + inp((2, 4, 6), "b") + lay("c", "Concat", ["data", "b"], ["c"])),
    ("contrastive_shape", "contrastive_loss_layer.cpp LayerSetUp",
     "CHECK_EQ(bottom[0]->height(), 1)", "refused", "LayerParamError", "l", "N x C",
     inp((2, 3, 2, 1)) + inp((2, 3, 2, 1), "b") + inp((2, 1, 1, 1), "y")
     + lay("l", "ContrastiveLoss", ["data", "b", "y"], ["l"])),
    ("conv_kernel_both", "base_conv_layer.cpp LayerSetUp",
     "Either kernel_size or kernel_h/w should be specified; not both.", "refused",
     "LayerParamError", "c", "convolution_param.kernel_size",
     conv("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3")),
    ("conv_kernel_hw_3d", "base_conv_layer.cpp LayerSetUp",
     "kernel_h & kernel_w can only be used for 2D convolution.", "refused", "LayerParamError",
     "c", "kernel_h", conv("num_output: 2 kernel_h: 3 kernel_w: 3", data=inp((1, 2, 4, 4, 4)))),
    ("conv_kernel_count", "base_conv_layer.cpp LayerSetUp",
     "kernel_size must be specified once, or once per spatial dimension", "refused",
     "LayerParamError", "c", "once per spatial dimension",
     conv("num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3")),
    ("conv_kernel_zero", "base_conv_layer.cpp LayerSetUp", "Filter dimensions must be nonzero.",
     "refused", "LayerParamError", "c", "nonzero", conv("num_output: 2 kernel_size: 0")),
    ("conv_stride_both", "base_conv_layer.cpp LayerSetUp",
     "Either stride or stride_h/w should be specified; not both.", "refused",
     "LayerParamError", "c", "convolution_param.stride",
     conv("num_output: 2 kernel_size: 3 stride: 1 stride_h: 1 stride_w: 1")),
    ("conv_stride_zero", "base_conv_layer.cpp LayerSetUp", "Stride dimensions must be nonzero.",
     "refused", "LayerParamError", "c", "nonzero", conv("num_output: 2 kernel_size: 3 stride: 0")),
    ("conv_pad_both", "base_conv_layer.cpp LayerSetUp",
     "Either pad or pad_h/w should be specified; not both.", "refused", "LayerParamError", "c",
     "convolution_param.pad", conv("num_output: 2 kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1")),
    ("conv_dilation_count", "base_conv_layer.cpp LayerSetUp",
     "dilation must be specified once, or once per spatial dimension", "refused",
     "LayerParamError", "c", "convolution_param.dilation",
     conv("num_output: 2 kernel_size: 3 dilation: 1 dilation: 1 dilation: 1")),
    ("conv_num_output", "base_conv_layer.cpp LayerSetUp", "CHECK_GT(num_output_, 0)",
     "refused", "LayerParamError", "c", "num_output", conv("num_output: 0 kernel_size: 3")),
    ("conv_group_channels", "base_conv_layer.cpp LayerSetUp", "CHECK_EQ(channels_ % group_, 0)",
     "refused", "LayerParamError", "c", "group", conv("num_output: 6 group: 3 kernel_size: 3")),
    ("conv_group_outputs", "base_conv_layer.cpp LayerSetUp",
     "Number of output should be multiples of group.", "refused", "LayerParamError", "c",
     "num_output", conv("num_output: 3 group: 2 kernel_size: 3")),
    ("deconv_group_outputs", "base_conv_layer.cpp LayerSetUp",
     "Number of output should be multiples of group.", "refused", "LayerParamError", "c",
     "num_output", conv("num_output: 3 group: 2 kernel_size: 3", type_="Deconvolution")),
    ("im2col_kernel_zero", "base_conv_layer.cpp (Im2col) LayerSetUp",
     "Filter dimensions must be nonzero.", "refused", "LayerParamError", "c", "nonzero",
     conv("kernel_size: 0", type_="Im2col")),
    ("conv_negative_output", "blob.cpp Blob::Reshape (from BaseConvolutionLayer::Reshape)",
     "CHECK_GE(shape[i], 0)", "refused", "LayerParamError", "c", "does not fit",
     conv("num_output: 1 kernel_size: 5", data=inp((1, 1, 2, 2)))),
    ("conv_bottoms_shape", "base_conv_layer.cpp Reshape", "shape mismatch - bottom[0]: ...",
     "refused", "LayerParamError", "c", "same shape",
     D4 + inp((2, 4, 5, 5), "b") + lay("c", "Convolution", ["data", "b"], ["c", "d"],
                                      "convolution_param { num_output: 2 kernel_size: 3 }")),
    ("conv_definition_blob_count", "base_conv_layer.cpp LayerSetUp (blobs read from the "
     "definition by Layer's constructor)", "Incorrect number of weight blobs.", "fixed",
     "NetError", "c", "Incorrect number of weight blobs",
     D4 + lay("c", "Convolution", ["data"], ["c"],
              "convolution_param { num_output: 1 kernel_size: 1 } "
              "blobs { shape { dim: 1 dim: 4 dim: 1 dim: 1 } data: 1 data: 2 data: 3 data: 4 }")),
    ("conv_definition_blob_shape", "base_conv_layer.cpp LayerSetUp",
     "Incorrect weight shape: expected shape ...; instead, shape was ...", "fixed", "NetError",
     "c", "Incorrect weight shape",
     D4 + lay("c", "Convolution", ["data"], ["c"],
              "convolution_param { num_output: 1 kernel_size: 1 bias_term: false } "
              "blobs { shape { dim: 1 dim: 2 dim: 1 dim: 1 } data: 1 data: 2 }")),
    ("crop_offsets", "crop_layer.cpp LayerSetUp", "number of offset values specified must be "
     "equal to the number of dimensions following axis.", "refused", "LayerParamError", "c",
     "crop_param.offset",
     D4 + inp((2, 4, 3, 3), "b") + lay("c", "Crop", ["data", "b"], ["c"],
                                      "crop_param { axis: 2 offset: 1 offset: 1 offset: 1 }")),
    ("crop_out_of_bounds", "crop_layer.cpp Reshape", "invalid crop parameters in dimension: i",
     "refused", "LayerParamError", "c", "out of bounds",
     D4 + inp((2, 4, 3, 3), "b") + lay("c", "Crop", ["data", "b"], ["c"],
                                      "crop_param { axis: 2 offset: 4 }")),
    ("dummy_fillers", "dummy_data_layer.cpp LayerSetUp",
     "Number of data fillers must be 0, 1 or equal to the number of tops", "refused",
     "LayerParamError", "d", "data_filler",
     lay("d", "DummyData", [], ["a", "b", "c"], 'dummy_data_param { shape { dim: 2 } '
         'data_filler { type: "constant" } data_filler { type: "constant" } }')),
    ("dummy_shape_and_legacy", "dummy_data_layer.cpp LayerSetUp",
     "Both shape and legacy fields were specified", "refused", "LayerParamError", "d",
     "not both", lay("d", "DummyData", [], ["a"], "dummy_data_param { shape { dim: 2 } "
                                                   "num: 2 channels: 1 height: 1 width: 1 }")),
    ("dummy_shape_count", "dummy_data_layer.cpp LayerSetUp",
     "Must specify 'shape' once, or once per top blob", "refused", "LayerParamError", "d",
     "once per top", lay("d", "DummyData", [], ["a", "b", "c"],
                         "dummy_data_param { shape { dim: 2 } shape { dim: 2 } }")),
    ("eltwise_coeffs", "eltwise_layer.cpp LayerSetUp",
     "Eltwise Layer takes one coefficient per bottom blob.", "refused", "LayerParamError", "e",
     "one coefficient per bottom",
     D4 + lay("e", "Eltwise", ["data", "data"], ["e"], "eltwise_param { coeff: 1 }")),
    ("eltwise_prod_coeffs", "eltwise_layer.cpp LayerSetUp",
     "Eltwise layer only takes coefficients for summation.", "refused", "LayerParamError", "e",
     "only taken for SUM", D4 + lay("e", "Eltwise", ["data", "data"], ["e"],
                                    "eltwise_param { operation: PROD coeff: 1 coeff: 1 }")),
    ("eltwise_shapes", "eltwise_layer.cpp Reshape", "bottom[i] has shape ..., bottom[0] has "
     "shape ...", "refused", "LayerParamError", "e", "same shape",
     D4 + inp((2, 4, 6, 5), "b") + lay("e", "Eltwise", ["data", "b"], ["e"])),
    ("embed_num_output", "embed_layer.cpp LayerSetUp", "EmbedLayer num_output must be positive.",
     "refused", "LayerParamError", "e", "num_output",
     inp((2,)) + lay("e", "Embed", ["data"], ["e"], "embed_param { num_output: 0 input_dim: 3 }")),
    ("embed_input_dim", "embed_layer.cpp LayerSetUp", "EmbedLayer input_dim must be positive.",
     "refused", "LayerParamError", "e", "input_dim",
     inp((2,)) + lay("e", "Embed", ["data"], ["e"], "embed_param { num_output: 2 input_dim: 0 }")),
    ("euclidean_dims", "euclidean_loss_layer.cpp Reshape", "Inputs must have the same dimension.",
     "refused", "LayerParamError", "l", "same dimension",
     X2 + inp((2, 4), "label") + lay("l", "EuclideanLoss", ["data", "label"], ["l"])),
    ("loss_first_dim", "loss_layer.cpp LossLayer::Reshape",
     "The data and label should have the same first dimension.", "refused", "LayerParamError",
     "l", "same first dimension",
     X2 + inp((3, 3), "label") + lay("l", "EuclideanLoss", ["data", "label"], ["l"])),
    ("exp_base", "exp_layer.cpp LayerSetUp", "base must be strictly positive.", "refused",
     "LayerParamError", "e", "exp_param.base",
     D4 + lay("e", "Exp", ["data"], ["e"], "exp_param { base: -2 }")),
    ("log_base", "log_layer.cpp LayerSetUp", "base must be strictly positive.", "refused",
     "LayerParamError", "e", "log_param.base",
     D4 + lay("e", "Log", ["data"], ["e"], "log_param { base: 0 }")),
    ("filter_tops", "filter_layer.cpp LayerSetUp", "CHECK_EQ(top.size(), bottom.size() - 1)",
     "refused", "LayerParamError", "f", "need 1 tops",
     X2 + inp((2,), "s") + lay("f", "Filter", ["data", "s"], ["a", "b"])),
    ("filter_first_dim", "filter_layer.cpp Reshape",
     "Each bottom should have the same 0th dimension as the selector blob", "refused",
     "LayerParamError", "f", "first dimensions must match",
     X2 + inp((3,), "s") + lay("f", "Filter", ["data", "s"], ["a"])),
    ("infogain_h", "infogain_loss_layer.cpp Reshape", "CHECK_EQ(infogain->count(), "
     "num_labels * num_labels)", "refused", "LayerParamError", "l", "H must be",
     X2 + LABEL + inp((2, 2), "H") + lay("l", "InfogainLoss", ["data", "label", "H"], ["l"])),
    ("input_shapes", "input_layer.cpp LayerSetUp",
     "Must specify 'shape' once, once per top blob, or not at all", "refused",
     "LayerParamError", "i", "input_param.shape",
     lay("i", "Input", [], ["a", "b", "c"], "input_param { shape { dim: 1 } shape { dim: 2 } }")),
    ("lrn_even", "lrn_layer.cpp LayerSetUp", "LRN only supports odd values for local_size",
     "refused", "LayerParamError", "n", "local_size",
     D4 + lay("n", "LRN", ["data"], ["n"], "lrn_param { local_size: 4 }")),
    ("lrn_axes", "lrn_layer.cpp Reshape", "Input must have 4 axes, corresponding to (num, "
     "channels, height, width)", "refused", "LayerParamError", "n", "4 axes",
     inp((2, 4, 6)) + lay("n", "LRN", ["data"], ["n"])),
    ("lstm_num_output", "lstm_layer.cpp / recurrent_layer.cpp", "num_output must be positive",
     "refused", "LayerParamError", "l", "num_output",
     inp((3, 2, 4)) + inp((3, 2), "cont") + lay("l", "LSTM", ["data", "cont"], ["l"],
                                               "recurrent_param { num_output: 0 }")),
    ("recurrent_cont_axes", "recurrent_layer.cpp LayerSetUp",
     "bottom[1] must have exactly 2 axes -- (#timesteps, #streams)", "refused",
     "LayerParamError", "l", "exactly 2 axes",
     inp((3, 2, 4)) + inp((3, 2, 1), "cont") + lay("l", "LSTM", ["data", "cont"], ["l"],
                                                  "recurrent_param { num_output: 2 }")),
    ("lstm_unit_gates", "lstm_unit_layer.cpp Reshape", "CHECK_EQ(4 * hidden_dim_, x_dim)",
     "refused", "LayerParamError", "l", "gate inputs",
     inp((1, 2, 3)) + inp((1, 2, 10), "x") + inp((1, 2), "c")
     + lay("l", "LSTMUnit", ["data", "x", "c"], ["a", "b"])),
    ("memory_data_sizes", "memory_data_layer.cpp DataLayerSetUp", "batch_size, channels, height, "
     "and width must be specified and positive in memory_data_param", "refused",
     "LayerParamError", "m", "memory_data_param",
     lay("m", "MemoryData", [], ["a", "b"], "memory_data_param { batch_size: 0 channels: 1 "
                                            "height: 1 width: 1 }")),
    ("multinomial_label", "multinomial_logistic_loss_layer.cpp Reshape",
     "CHECK_EQ(bottom[1]->channels(), 1)", "refused", "LayerParamError", "l", "one label",
     X2 + inp((2, 2), "label") + lay("l", "MultinomialLogisticLoss", ["data", "label"], ["l"])),
    ("pool_global_kernel", "pooling_layer.cpp LayerSetUp",
     "With Global_pooling: true Filter size cannot specified", "refused", "LayerParamError",
     "p", "global_pooling", pool("global_pooling: true kernel_size: 2")),
    ("pool_kernel_both", "pooling_layer.cpp LayerSetUp",
     "Filter size is kernel_size OR kernel_h and kernel_w; not both", "refused",
     "LayerParamError", "p", "not both", pool("kernel_size: 2 kernel_h: 2 kernel_w: 2")),
    ("pool_kernel_h_only", "pooling_layer.cpp LayerSetUp",
     "For non-square filters both kernel_h and kernel_w are required.", "refused",
     "LayerParamError", "p", "kernel", pool("kernel_h: 2")),
    ("pool_pad_both", "pooling_layer.cpp LayerSetUp", "pad is pad OR pad_h and pad_w are "
     "required.", "refused", "LayerParamError", "p", "pad",
     pool("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1")),
    ("pool_stride_both", "pooling_layer.cpp LayerSetUp", "Stride is stride OR stride_h and "
     "stride_w are required.", "refused", "LayerParamError", "p", "stride",
     pool("kernel_size: 2 stride: 1 stride_h: 1 stride_w: 1")),
    ("pool_kernel_zero", "pooling_layer.cpp LayerSetUp", "Filter dimensions cannot be zero.",
     "refused", "LayerParamError", "p", "cannot be zero", pool("kernel_size: 0")),
    ("pool_global_stride", "pooling_layer.cpp LayerSetUp",
     "With Global_pooling: true; only pad = 0 and stride = 1", "refused", "LayerParamError",
     "p", "only pad = 0 and stride = 1", pool("global_pooling: true stride: 2")),
    ("pool_stochastic_pad", "pooling_layer.cpp LayerSetUp",
     "Padding implemented only for average and max pooling.", "refused", "LayerParamError",
     "p", "padding is implemented only", pool("pool: STOCHASTIC kernel_size: 2 pad: 1")),
    ("pool_pad_kernel", "pooling_layer.cpp LayerSetUp", "CHECK_LT(pad_h_, kernel_h_)",
     "refused", "LayerParamError", "p", "smaller than the kernel",
     pool("kernel_size: 2 pad: 2")),
    ("pool_axes", "pooling_layer.cpp Reshape", "Input must have 4 axes, corresponding to (num, "
     "channels, height, width)", "refused", "LayerParamError", "p", "4 axes",
     pool("kernel_size: 2", data=inp((2, 4, 6)))),
    ("prelu_axes", "prelu_layer.cpp LayerSetUp", "Number of axes of bottom blob must be >=2.",
     "refused", "LayerParamError", "p", "at least 2 axes",
     inp((4,)) + lay("p", "PReLU", ["data"], ["p"])),
    ("reshape_two_inferred", "reshape_layer.cpp LayerSetUp",
     "new shape contains multiple -1 dims; at most a single (1) value of -1 may be specified",
     "refused", "LayerParamError", "r", "-1",
     D4 + lay("r", "Reshape", ["data"], ["r"], "reshape_param { shape { dim: -1 dim: -1 } }")),
    ("reshape_axis", "reshape_layer.cpp Reshape", "axis X out of range", "refused",
     "LayerParamError", "r", "reshape_param.axis",
     D4 + lay("r", "Reshape", ["data"], ["r"], "reshape_param { axis: 5 shape { dim: -1 } }")),
    ("reshape_num_axes", "reshape_layer.cpp Reshape", "num_axes must be >= 0, or -1 for all",
     "refused", "LayerParamError", "r", "num_axes",
     D4 + lay("r", "Reshape", ["data"], ["r"], "reshape_param { num_axes: -2 shape { dim: -1 } }")),
    ("reshape_copy", "reshape_layer.cpp Reshape", "new shape contains a 0, but there was no "
     "corresponding bottom axis to copy", "refused", "LayerParamError", "r", "no axis 2 to copy",
     X2 + lay("r", "Reshape", ["data"], ["r"], "reshape_param { shape { dim: 0 dim: 0 dim: 0 } }")),
    ("reshape_divisible", "reshape_layer.cpp Reshape", "bottom count (N) must be divisible by "
     "the product of the specified dimensions (M)", "refused", "LayerParamError", "r",
     "not divisible",
     D4 + lay("r", "Reshape", ["data"], ["r"], "reshape_param { shape { dim: 5 dim: -1 } }")),
    ("reshape_count", "reshape_layer.cpp Reshape", "output count must match input count",
     "refused", "LayerParamError", "r", "values",
     D4 + lay("r", "Reshape", ["data"], ["r"], "reshape_param { shape { dim: 5 dim: 5 } }")),
    ("scale_num_axes", "scale_layer.cpp LayerSetUp", "num_axes must be non-negative, or -1 to "
     "extend to the end of bottom[0]", "refused", "LayerParamError", "s", "num_axes",
     D4 + lay("s", "Scale", ["data"], ["s"], "scale_param { num_axes: -2 }")),
    ("scale_past_end", "scale_layer.cpp LayerSetUp", "scale blob's shape extends past "
     "bottom[0]'s shape", "refused", "LayerParamError", "s", "exceeds",
     D4 + lay("s", "Scale", ["data"], ["s"], "scale_param { axis: 2 num_axes: 3 }")),
    ("sigmoid_ce_count", "sigmoid_cross_entropy_loss_layer.cpp Reshape",
     "SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same count.", "refused",
     "LayerParamError", "l", "same count",
     X2 + inp((2, 2), "label") + lay("l", "SigmoidCrossEntropyLoss", ["data", "label"], ["l"])),
    ("slice_axis_and_dim", "slice_layer.cpp LayerSetUp",
     "Either axis or slice_dim should be specified; not both.", "refused", "LayerParamError",
     "s", "not both",
     D4 + lay("s", "Slice", ["data"], ["a", "b"], "slice_param { axis: 1 slice_dim: 1 }")),
    ("slice_points_count", "slice_layer.cpp Reshape", "CHECK_EQ(slice_point_.size(), "
     "top.size() - 1)", "refused", "LayerParamError", "s", "slice_point",
     D4 + lay("s", "Slice", ["data"], ["a", "b"],
              "slice_param { axis: 1 slice_point: 1 slice_point: 2 }")),
    ("slice_points_order", "slice_layer.cpp Reshape", "CHECK_GT(slice_point_[i], prev)",
     "refused", "LayerParamError", "s", "strictly increasing",
     D4 + lay("s", "Slice", ["data"], ["a", "b", "c"],
              "slice_param { axis: 1 slice_point: 2 slice_point: 1 }")),
    ("slice_uneven", "slice_layer.cpp Reshape", "Number of top blobs (N) should evenly divide "
     "input slice axis (M)", "refused", "LayerParamError", "s", "evenly",
     D4 + lay("s", "Slice", ["data"], ["a", "b", "c"], "slice_param { axis: 1 }")),
    ("softmax_loss_labels", "softmax_loss_layer.cpp Reshape", "Number of labels must match "
     "number of predictions", "refused", "LayerParamError", "l", "labels",
     inp((2, 3, 2)) + inp((2, 3), "label")
     + lay("l", "SoftmaxWithLoss", ["data", "label"], ["l"])),
    ("spp_axes", "spp_layer.cpp Reshape", "Input must have 4 axes, corresponding to (num, "
     "channels, height, width)", "refused", "LayerParamError", "p", "4 axes",
     inp((2, 4, 6)) + lay("p", "SPP", ["data"], ["p"], "spp_param { pyramid_height: 2 }")),
    ("tile_missing", "tile_layer.cpp Reshape", "Number of tiles must be specified", "refused",
     "LayerParamError", "t", "tiles",
     D4 + lay("t", "Tile", ["data"], ["t"], "tile_param { axis: 1 }")),
    ("tile_zero", "tile_layer.cpp Reshape", "Number of tiles must be positive.", "refused",
     "LayerParamError", "t", "positive",
     D4 + lay("t", "Tile", ["data"], ["t"], "tile_param { tiles: 0 }")),
    ("axis_out_of_range", "blob.hpp Blob::CanonicalAxisIndex (Softmax, InnerProduct, ...)",
     "axis X out of range for N-D Blob with shape ...", "refused", "LayerParamError", "r",
     "out of range", D4 + lay("r", "Softmax", ["data"], ["r"], "softmax_param { axis: 5 }")),
]

# Checks at weight loading, tested elsewhere or in test_refusals.py:
# - net.cpp CopyTrainedLayersFrom "Incompatible number of blobs for layer X" (NetError;
#   test_refusals.py::test_weights_with_another_blob_count_are_refused)
# - net.cpp CopyTrainedLayersFrom "Cannot copy param N weights from layer 'X'; shape
#   mismatch." (NetError; test_net.py::test_copy_from_shape_mismatch_names_layer_blob_and_shapes)
# - sgd_solver.cpp RestoreSolverStateFromBinaryProto "Incorrect length of history blobs."
#   (SolverError; test_solver_snapshot.py)

# What Caffe only logs (net.cpp), and where decaffe logs the same line
LOGGED = [
    ("net.cpp Net::CopyTrainedLayersFrom(NetParameter)", "LOG(INFO) Ignoring source layer X"),
    ("net.cpp Net::CopyTrainedLayersFromHDF5", "LOG(INFO) Ignoring source layer X"),
    ("upgrade_proto.cpp UpgradeV0LayerParameter",
     "LOG(ERROR) Unknown parameter X for layer type Y"),
    ("upgrade_proto.cpp UpgradeNetAsNeeded",
     "LOG(ERROR) Warning: had one or more problems upgrading ... continuing anyway."),
]

# Checks at weight loading and solver level (net.cpp, solver.cpp, sgd_solver.cpp, the rules):
# (id, Caffe source, Caffe's check, decaffe's error class, text matched, solver text)
_SNET = ('net_param { layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 '
         'dim: 3 } } } layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" '
         'inner_product_param { num_output: 2 } } layer { name: "l" type: "Power" bottom: "ip" '
         'top: "l" loss_weight: 1 } }\n')
_BASE = 'base_lr: 0.1 lr_policy: "fixed" max_iter: 1 display: 0\n'
SOLVER_ROWS: list[tuple] = [
    ("no_train_net", "solver.cpp Solver::InitTrainNet", "SolverParameter must specify a train "
     "net using one of these fields: net, net_param, train_net, train_net_param", "SolverError",
     "must specify a train net", _BASE),
    ("two_train_nets", "solver.cpp Solver::InitTrainNet", "SolverParameter must not contain "
     "more than one of these fields specifying a train_net", "SolverError", "more than one",
     _SNET + _SNET.replace("net_param", "train_net_param") + _BASE),
    ("test_iter_missing", "solver.cpp Solver::InitTestNets",
     "test_iter must be specified for each test network.", "SolverError", "test_iter",
     _SNET.replace("net_param", "train_net_param") + _SNET.replace("net_param", "test_net_param")
     + _BASE + "test_interval: 1"),
    ("test_interval_zero", "solver.cpp Solver::InitTestNets", "CHECK_GT(param_.test_interval(), 0)",
     "SolverError", "test_interval", _SNET + _BASE + "test_iter: 1"),
    ("test_state_count", "solver.cpp Solver::InitTestNets",
     "test_state must be unspecified or specified once per test net.", "SolverError",
     "test_state", _SNET + _BASE + 'test_iter: 1 test_interval: 1 test_state { stage: "a" } '
                                   'test_state { stage: "b" }'),
    ("average_loss", "solver.cpp Solver::Init", "average_loss should be non-negative.",
     "SolverError", "average_loss", _SNET + _BASE + "average_loss: 0"),
    ("snapshot_unwritable", "solver.cpp Solver::CheckSnapshotWritePermissions",
     "Cannot write to snapshot prefix 'X'.  Make sure that the directory exists and is "
     "writeable.", "SolverError", "cannot write to snapshot prefix",
     _SNET + _BASE + 'snapshot: 1 snapshot_prefix: "/nonexistent_dir_xyz/p"'),
    ("unknown_solver", "solver_factory.hpp SolverRegistry::CreateSolver",
     "Unknown solver type: X (known types: ...)", "SolverError", "unknown solver type",
     _SNET + _BASE + 'type: "Foo"'),
    ("both_type_fields", "upgrade_proto.cpp UpgradeSolverType", "Failed to upgrade solver: old "
     "solver_type field (enum) and new type field (string) cannot be both specified",
     "ParseError", "cannot both be specified", _SNET + _BASE + 'type: "SGD" solver_type: SGD'),
    ("unknown_policy", "sgd_solver.cpp GetLearningRate", "Unknown learning rate policy: X",
     "SolverError", "lr_policy", _SNET + 'base_lr: 0.1 lr_policy: "foo" max_iter: 1'),
    ("step_stepsize", "sgd_solver.cpp GetLearningRate", "CHECK_GT(stepsize, 0)", "SolverError",
     "stepsize", _SNET + 'base_lr: 0.1 lr_policy: "step" gamma: 0.1 max_iter: 1'),
    ("sigmoid_gamma", "sgd_solver.cpp GetLearningRate", "CHECK_GE(gamma, 0) (sigmoid)",
     "SolverError", "gamma",
     _SNET + 'base_lr: 0.1 lr_policy: "sigmoid" gamma: -1 stepsize: 2 max_iter: 1'),
    ("sigmoid_stepsize", "sgd_solver.cpp GetLearningRate", "CHECK_GT(stepsize, 0) (sigmoid)",
     "SolverError", "stepsize", _SNET + 'base_lr: 0.1 lr_policy: "sigmoid" gamma: 1 max_iter: 1'),
    ("exp_gamma", "sgd_solver.cpp GetLearningRate", "CHECK_GE(gamma, 0) (exp)", "SolverError",
     "gamma", _SNET + 'base_lr: 0.1 lr_policy: "exp" gamma: -1 max_iter: 1'),
    ("regularization", "sgd_solver.cpp Regularize", "Unknown regularization type: X",
     "SolverError", "regularization_type",
     _SNET + _BASE + 'weight_decay: 0.1 regularization_type: "L3"'),
    ("adagrad_momentum", "adagrad_solver.cpp constructor", "Momentum cannot be used with "
     "AdaGrad.", "SolverError", "momentum", _SNET + _BASE + 'type: "AdaGrad" momentum: 0.9'),
    ("rmsprop_momentum", "rmsprop_solver.cpp constructor", "Momentum cannot be used with "
     "RMSProp.", "SolverError", "momentum", _SNET + _BASE + 'type: "RMSProp" momentum: 0.9'),
    ("rmsprop_decay", "rmsprop_solver.cpp constructor", "rms_decay should lie between 0 and 1.",
     "SolverError", "rms_decay", _SNET + _BASE + 'type: "RMSProp" rms_decay: 1'),
]

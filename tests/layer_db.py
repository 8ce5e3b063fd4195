"""The table of layers (issue 19, as PyTorch's ModuleInfo): for every registered Caffe layer
type, sample nets (the layer behind Input layers, several where parameters change behaviour),
whether it has a backward, which golden cases (tests/golden) cover it, whether it exports
(decaffe.export), and, for the types whose samples need files or labelled data (data layers,
detection losses), the family test module that covers them instead.

tests/layers/test_layer_table.py runs every generic check over this table and fails when a
registered type is missing from it. The samples are the golden cases, the export cases
(export_*) and the parameter variants the family modules once checked by finite differences
one by one (their one-layer nets, layer "l"); a new layer adds one row here, a new variant one
sample."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One small net: `net` holds the layers (prototxt) behind Input layers of `inputs`
    (name -> shape); `golden` when it is a golden case, whose recorded inputs it runs on."""

    id: str
    net: str
    inputs: dict[str, tuple[int, ...]]
    phase: str = "TRAIN"
    golden: bool = False
    # where its parameters need a domain (STOCHASTIC pooling's non-negative values, a Power's
    # base): the range the checks draw its float inputs from, uniformly
    values: tuple[float, float] | None = None
    # inputs where this sample's parameters make the layer not differentiable (a Clip's
    # bounds), besides its row's kinks
    kinks: tuple[float, ...] = ()
    # why the finite-difference check leaves this sample out ("": it checks it)
    grad: str = ""
    # what the exporter's refusal says, where it refuses this sample ("": it exports it)
    export_error: str = ""


@dataclass(frozen=True)
class LayerInfo:
    """A row: the samples, whether backward is defined (None: no sample to tell), the golden
    cases naming the type, whether decaffe.export has an entry, and the covering module."""

    samples: list[Sample] = field(default_factory=list)
    backward: bool | None = None
    golden: list[str] = field(default_factory=list)
    exports: bool = False
    covered_by: str | None = None
    # Forward sets the top shapes (Caffe's DetectionOutput: one row per detection kept),
    # so Reshape's shapes are placeholders
    shapes_in_forward: bool = False
    # inputs where the layer is not differentiable (Caffe's GradientChecker kinks): the
    # gradient check keeps its inputs away from them
    kinks: tuple[float, ...] = ()
    # the gradient check feeds distinct values (no ties for MAX pooling to break)
    distinct_inputs: bool = False
    # the finite-difference step (smaller where the curvature is high: L2 normalisation)
    grad_step: float = 1e-2
    # the export forms that carry it (torch.export cannot trace a data-dependent box count)
    export_forms: tuple[str, ...] = ("onnx", "pytorch", "torch")


def _s(id: str, net: str, inputs: dict, phase: str = "TRAIN", golden: bool = False,
       **kw) -> Sample:
    return Sample(id, net, {k: tuple(v) for k, v in inputs.items()}, phase, golden, **kw)


def _one(id: str, type_: str, params: str, inputs: dict, phase: str = "TRAIN",
         tops: tuple[str, ...] = ("y",), **kw) -> Sample:
    """A sample of one layer "l" of `type_` reading `inputs` in order, with `params` (its
    parameter messages) and `tops`."""
    bottoms = " ".join(f'bottom: "{b}"' for b in inputs)
    t = " ".join(f'top: "{x}"' for x in tops)
    return _s(id, f'layer {{ name: "l" type: "{type_}" {bottoms} {t} {params} }}', inputs,
              phase, **kw)


_X4 = {"x": (2, 3, 4, 5)}  # the one input of most one-layer samples


def _conv(id: str, type_: str, nout: int, geometry: str, shape: tuple, **kw) -> Sample:
    """A Convolution-like layer of `nout` outputs and that geometry, Gaussian weights and
    biases, reading "x" of `shape`."""
    return _one(id, type_, f"convolution_param {{ num_output: {nout} {geometry} weight_filler "
                f'{{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} }}',
                {"x": shape}, **kw)

# why a sample leaves the gradient check (Sample.grad)
_STEEP_LOG = ("skip: Log of |x| near AbsVal's kink curves too fast for step 1e-2 (agrees at "
              "1e-4)")
_STATS = ("skip: TEST phase reads the running statistics, which have no gradient (Caffe's "
          "param_propagate_down false)")
_IN_PLACE_INPUT = "skip: its layers run in place on the input the check perturbs"
_INNER_KINK = ("skip: the ReLU's kink lies at convolution outputs, which the input kinks do "
               "not keep away (agrees at step 1e-4)")
_LSTM_STATIC_EXPOSED = ("skip: hT and cT are outputs here, and Caffe sends no gradient back "
                        "through them (test_recurrent's test_expose_hidden_passes_no_gradient)")
_EMPTY_WINDOW = ("skip: its empty windows output -FLT_MAX, which swamps the objective's sum "
                 "(numeric gradient 0)")
_MAX_OF_SUM = ("skip: its MAX reads a SUM of its own inputs, which distinct inputs cannot keep "
               "from crossing the others under the step")
_NORMALIZE_SPATIAL = ("skip: with unequal channel scales the SSD fork's backward is not the "
                      "true gradient (test_fork_ssd's "
                      "test_normalize_backward_is_the_forks_with_unequal_scales)")


LAYERS: dict[str, LayerInfo] = {
    "AbsVal": LayerInfo(
        samples=[
            _s('absval',
               'layer { name: "a" type: "AbsVal" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_pool_stochastic_test',
               'layer { name: "a" type: "AbsVal" bottom: "x" top: "a" } layer { name: "p" '
               'type: "Pooling" bottom: "a" top: "y" pooling_param { pool: STOCHASTIC '
               'kernel_size: 3 stride: 2 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _s('export_power_exp_log',
               'layer { name: "a" type: "AbsVal" bottom: "x" top: "a" } layer { name: "pw" '
               'type: "Power" bottom: "a" top: "pw" power_param { power: 1.5 scale: 2 shift: '
               '0.5 } } layer { name: "p2" type: "Power" bottom: "x" top: "p2" power_param { '
               'power: 2 } } layer { name: "pc" type: "Power" bottom: "x" top: "pc" '
               'power_param { power: 3 scale: 0 shift: 2 } } layer { name: "ex" type: "Exp" '
               'bottom: "x" top: "ex" exp_param { base: 2 scale: 0.5 shift: 1 } } layer { '
               'name: "lg" type: "Log" bottom: "pw" top: "lg" log_param { base: 10 scale: 3 '
               'shift: 1 } } layer { name: "ln" type: "Log" bottom: "a" top: "ln" }',
               {'x': (2, 4, 9, 11)}, 'TEST',
               grad=_STEEP_LOG),
        ],
        backward=True,
        golden=['absval'],
        exports=True,
        kinks=(0.0,),
    ),
    "Accuracy": LayerInfo(
        samples=[
            _s('accuracy_top2',
               'layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "label" top: "acc" '
               'accuracy_param { top_k: 2 } }',
               {'x': (8, 5), 'label': (8,)}, 'TRAIN', golden=True),
        ],
        backward=False,
        golden=['accuracy_top2'],
    ),
    "AnnotatedData": LayerInfo(
        golden=['fork_annotated_data_plain', 'fork_annotated_data_crop_test'],
        covered_by='tests/data/test_annotated_data.py',
    ),
    "ArgMax": LayerInfo(
        samples=[
            _s('argmax',
               'layer { name: "a" type: "ArgMax" bottom: "x" top: "y" argmax_param { '
               'out_max_val: true top_k: 2 } }',
               {'x': (2, 10)}, 'TRAIN', golden=True),
            _s('export_argmax_ties',
               'layer { name: "t" type: "Threshold" bottom: "x" top: "t" } layer { name: "a" '
               'type: "ArgMax" bottom: "t" top: "a" argmax_param { axis: 1 } } layer { name: '
               '"a2" type: "ArgMax" bottom: "t" top: "a2" argmax_param { top_k: 2 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _s('export_reduction_argmax',
               'layer { name: "r" type: "Reduction" bottom: "x" top: "r" reduction_param { '
               'operation: ASUM axis: 1 coeff: 0.5 } } layer { name: "r2" type: "Reduction" '
               'bottom: "x" top: "r2" reduction_param { operation: MEAN } } layer { name: "r3"'
               ' type: "Reduction" bottom: "x" top: "r3" reduction_param { operation: SUMSQ '
               'axis: 2 } } layer { name: "a" type: "ArgMax" bottom: "x" top: "a" argmax_param'
               ' { out_max_val: true top_k: 3 } } layer { name: "a2" type: "ArgMax" bottom: '
               '"x" top: "a2" argmax_param { axis: 1 } } layer { name: "a3" type: "ArgMax" '
               'bottom: "x" top: "a3" argmax_param { out_max_val: true top_k: 2 axis: 3 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=False,
        golden=['argmax'],
        exports=True,
    ),
    "AssistedExcitation": LayerInfo(
        covered_by='tests/layers/test_fork_detection_yolo.py',
    ),
    "Axpy": LayerInfo(
        samples=[
            _s('axpy',
               'layer { name: "a" type: "Axpy" bottom: "s" bottom: "x" bottom: "y" top: "z" }',
               {'s': (2, 3, 1, 1), 'x': (2, 3, 4, 5), 'y': (2, 3, 4, 5)}),
        ],
        backward=True,
        exports=True,
    ),
    "BN": LayerInfo(
        samples=[
            _s('export_segnet_bn',
               'layer { name: "b" type: "BN" bottom: "x" top: "b" bn_param { bn_mode: '
               'INFERENCE } } layer { name: "l" type: "BN" bottom: "x" top: "l" bn_param { '
               'bn_mode: LEARN } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
            _s('export_fork_bn',
               'layer { name: "b" type: "BN" bottom: "x" top: "b" } layer { name: "k" type: '
               '"BatchNormKyle" bottom: "x" top: "k" batch_norm_param { use_alpha_beta: true }'
               ' } layer { name: "k2" type: "BatchNormKyle" bottom: "x" top: "k2" }',
               {'x': (2, 4, 6, 5)}, 'TEST',
               grad=_STATS),
            _one('bn_yjxiong', 'BN', 'bn_param { slope_filler { type: "gaussian" } bias_filler { '
                 'type: "gaussian" } momentum: 0.8 eps: 0.01 }',
                 {'x': (2, 3, 3, 2)}),
            _one('bn_segnet_learn', 'BN', 'bn_param { scale_filler { type: "constant" value: 1.5 '
                 '} shift_filler { type: "constant" value: 0.25 } }',
                 {'x': (2, 2, 3, 3)}),
            _one('bn_segnet_inference', 'BN', 'bn_param { scale_filler { type: "constant" value: '
                 '1.5 } shift_filler { type: "constant" value: 0.25 } bn_mode: INFERENCE }',
                 {'x': (2, 2, 3, 3)}),
        ],
        backward=True,
        exports=True,
    ),
    "BNLL": LayerInfo(
        samples=[
            _s('bnll',
               'layer { name: "b" type: "BNLL" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=['bnll'],
        exports=True,
    ),
    "BatchNorm": LayerInfo(
        samples=[
            _s('batchnorm_train_4d',
               'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { '
               'moving_average_fraction: 0.99 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('batchnorm_train_2d',
               'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { '
               'moving_average_fraction: 0.99 } }',
               {'x': (8, 3)}, 'TRAIN', golden=True),
            _s('batchnorm_train_3d',
               'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" }',
               {'x': (2, 3, 7)}, 'TRAIN', golden=True),
            _s('export_batchnorm_batch_stats',
               'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { '
               'use_global_stats: false } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=[
            'batchnorm_train_4d',
            'batchnorm_train_2d',
            'batchnorm_train_3d',
            'batchnorm_global_test',
            'batchnorm_global_forced_train',
            'batchnorm_local_forced_test',
            'batchnorm_zero_scale_factor',
            'bn_scale_relu_block',
        ],
        exports=True,
    ),
    "BatchNormKyle": LayerInfo(
        samples=[
            _s('fork_batchnormkyle_train_alpha_beta',
               'layer { name: "bn" type: "BatchNormKyle" bottom: "x" top: "y" batch_norm_param'
               ' { moving_average_fraction: 0.99 use_alpha_beta: true } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_batchnormkyle_global_test',
               'layer { name: "bn" type: "BatchNormKyle" bottom: "x" top: "y" batch_norm_param'
               ' { use_alpha_beta: true } }',
               {'x': (2, 3, 7, 7)}, 'TEST', golden=True,
               grad=_STATS),
            _s('fork_batchnormkyle_plain_train',
               'layer { name: "bn" type: "BatchNormKyle" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
        ],
        backward=True,
        golden=[
            'fork_batchnormkyle_train_alpha_beta',
            'fork_batchnormkyle_global_test',
            'fork_batchnormkyle_plain_train',
        ],
        exports=True,
    ),
    "BatchReindex": LayerInfo(
        samples=[
            _s('export_embed_reindex',
               'layer { name: "e" type: "Embed" bottom: "i" top: "e" embed_param { num_output:'
               ' 4 input_dim: 7 } } layer { name: "b" type: "BatchReindex" bottom: "x" bottom:'
               ' "k" top: "b" }',
               {'i': (2, 3), 'x': (4, 3, 2), 'k': (5,)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "Bias": LayerInfo(
        samples=[
            _s('bias',
               'layer { name: "b" type: "Bias" bottom: "x" top: "y" bias_param { filler { '
               'type: "gaussian" std: 1 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_scale_bias_bottoms',
               'layer { name: "sc" type: "Scale" bottom: "x" bottom: "s" top: "y" scale_param '
               '{ axis: 1 } } layer { name: "bi" type: "Bias" bottom: "x" bottom: "b" top: "z"'
               ' bias_param { axis: 2 } }',
               {'x': (2, 4, 3, 5), 's': (4, 3), 'b': (3, 5)}, 'TEST'),
            _s('export_batchnorm_scale_bias',
               'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" } layer { name: "sc"'
               ' type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } } layer { '
               'name: "bi" type: "Bias" bottom: "x" top: "y" }',
               {'x': (2, 4, 9, 11)}, 'TEST',
               grad=_IN_PLACE_INPUT),
        ],
        backward=True,
        golden=['bias', 'fork_multiboxloss_maxneg', 'fork_multiboxloss_l2_logistic'],
        exports=True,
    ),
    "BilinearInterpolate": LayerInfo(
        samples=[
            _s('fork_bilinear_dst_align',
               'layer { name: "b" type: "BilinearInterpolate" bottom: "x" top: "y" '
               'bilinear_interpolate_param { dst_h: 12 dst_w: 13 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_bilinear_scale_noalign',
               'layer { name: "b" type: "BilinearInterpolate" bottom: "x" top: "y" '
               'bilinear_interpolate_param { scale_factor: 2 align_corners: false } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _one('bilinear_7x3', 'BilinearInterpolate', 'bilinear_interpolate_param { dst_h: 7 '
                 'dst_w: 3 }',
                 {'x': (1, 4, 4, 3)}),
            _one('bilinear_scale_noalign', 'BilinearInterpolate', 'bilinear_interpolate_param { '
                 'scale_factor: 1.5 align_corners: false }',
                 {'x': (1, 4, 4, 3)}),
        ],
        backward=True,
        golden=['fork_bilinear_dst_align', 'fork_bilinear_scale_noalign'],
        exports=True,
    ),
    "BoxAnnotatorOHEM": LayerInfo(
        covered_by='tests/layers/test_fork_detection_ohem.py',
    ),
    "CenterLoss": LayerInfo(
        covered_by='tests/layers/test_fork_detection_misc_losses.py',
    ),
    "Clip": LayerInfo(
        samples=[
            _s('clip',
               'layer { name: "cl" type: "Clip" bottom: "x" top: "y" clip_param { min: -0.55 '
               'max: 0.75 } }',
               {'x': (2, 3, 4, 5)}),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('clip_straddle', 'Clip', 'clip_param { min: -1 max: 0.5 }', _X4,
                 kinks=(-1.0, 0.5)),
            _one('clip_positive', 'Clip', 'clip_param { min: 0.25 max: 3 }', _X4,
                 kinks=(0.25, 3.0)),
        ],
        backward=True,
        exports=True,
        kinks=(-0.55, 0.75),
    ),
    "Concat": LayerInfo(
        samples=[
            _s('concat_ch',
               'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" }',
               {'a': (2, 3, 7, 7), 'b': (2, 2, 7, 7)}, 'TRAIN', golden=True),
            _s('concat_axis0',
               'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" concat_param'
               ' { axis: 0 } }',
               {'a': (2, 3, 7, 7), 'b': (1, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_concat_slice',
               'layer { name: "c" type: "Concat" bottom: "x" bottom: "w" top: "c" concat_param'
               ' { axis: 2 } } layer { name: "s" type: "Slice" bottom: "c" top: "a" top: "b" '
               'top: "d" slice_param { slice_point: 1 slice_point: 5 axis: 2 } } layer { name:'
               ' "s2" type: "Slice" bottom: "x" top: "e" top: "f" }',
               {'x': (2, 4, 3, 5), 'w': (2, 4, 4, 5)}, 'TEST'),
            _one('concat_default', 'Concat', '',
                 {'a': (2, 3, 4), 'b': (2, 5, 4)}),
            _one('concat_axis0_3d', 'Concat', 'concat_param { axis: 0 }',
                 {'a': (2, 3, 4), 'b': (1, 3, 4)}),
            _one('concat_last_three', 'Concat', 'concat_param { axis: -1 }',
                 {'a': (2, 3, 4), 'b': (2, 3, 2), 'c': (2, 3, 1)}),
            _one('concat_dim2', 'Concat', 'concat_param { concat_dim: 2 }',
                 {'a': (2, 3, 4), 'b': (2, 3, 6)}),
        ],
        backward=True,
        golden=['concat_ch', 'concat_axis0'],
        exports=True,
    ),
    "ContrastiveLoss": LayerInfo(
        samples=[
            _s('contrastive',
               'layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: '
               '"sim" top: "loss" contrastive_loss_param { margin: 2 } }',
               {'a': (4, 4), 'b': (4, 4), 'sim': (4,)}, 'TRAIN', golden=True),
        ],
        backward=True,
        golden=['contrastive'],
    ),
    "Convolution": LayerInfo(
        samples=[
            _s('conv_basic',
               'layer { name: "conv" type: "Convolution" bottom: "x" top: "y" '
               'convolution_param { num_output: 4 pad: 1 kernel_size: 3 weight_filler { type: '
               '"gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('conv_stride',
               'layer { name: "conv" type: "Convolution" bottom: "x" top: "y" '
               'convolution_param { num_output: 2 kernel_size: 3 stride: 2 weight_filler { '
               'type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('conv_rect_nobias',
               'layer { name: "conv" type: "Convolution" bottom: "x" top: "y" '
               'convolution_param { num_output: 3 bias_term: false weight_filler { type: '
               '"xavier" } pad_h: 1 pad_w: 0 kernel_h: 3 kernel_w: 1 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _conv('conv_group_stride', 'Convolution', 4, 'kernel_size: 3 stride: 2 pad: 1 group: 2',
                  (2, 4, 6, 5)),
            _conv('conv_rect_dilated', 'Convolution', 3, 'kernel_h: 3 kernel_w: 2 dilation: 2 '
                  'pad_h: 2 pad_w: 1',
                  (1, 2, 7, 6)),
            _conv('conv_1d', 'Convolution', 2, 'kernel_size: 3 stride: 2 pad: 1',
                  (2, 3, 9)),
            _conv('conv_3d', 'Convolution', 2, 'kernel_size: 2 stride: 2 pad: 1',
                  (1, 2, 4, 5, 4)),
            _conv('conv_4d', 'Convolution', 2, 'kernel_size: 2',
                  (1, 2, 3, 3, 2, 3), export_error="4 spatial axes"),
            _conv('conv_one_row', 'Convolution', 2, 'kernel_size: 3 stride: 2',
                  (1, 2, 2, 5)),
            _s('conv_two_bottoms', 'layer { name: "l" type: "Convolution" bottom: "a" bottom: "b" '
               'top: "ya" top: "yb" convolution_param { num_output: 2 kernel_size: 3 pad: 1 '
               'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: '
               '0.5 } } }',
               {'a': (1, 2, 4, 4), 'b': (1, 2, 4, 4)}),
            _s('export_conv_pad_stride_dilation',
               'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
               'num_output: 6 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 dilation: 2 weight_filler '
               '{ type: "gaussian" std: 0.1 } } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _s('export_conv_group_nobias',
               'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
               'num_output: 6 kernel_size: 3 group: 2 bias_term: false } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _s('export_conv_1d',
               'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
               'num_output: 3 kernel_size: 3 stride: 2 } }',
               {'x': (2, 4, 10)}, 'TEST'),
            _s('export_conv_3d',
               'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
               'num_output: 3 kernel_size: 2 pad: 1 } }',
               {'x': (1, 2, 4, 5, 3)}, 'TEST'),
        ],
        backward=True,
        golden=[
            'conv_basic',
            'conv_stride',
            'conv_rect_nobias',
            'conv_dilated',
            'conv_group',
            'relu_inplace',
            'bn_scale_relu_block',
        ],
        exports=True,
    ),
    "ConvolutionDepthwise": LayerInfo(
        samples=[
            _s('export_mobile',
               'layer { name: "r" type: "ReLU6" bottom: "x" top: "r" } layer { name: "hs" '
               'type: "HardSwish" bottom: "x" top: "hs" } layer { name: "hg" type: '
               '"HardSigmoid" bottom: "x" top: "hg" } layer { name: "sc" type: '
               '"ShuffleChannel" bottom: "x" top: "sc" shuffle_channel_param { group: 2 } } '
               'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "x" top: "dw" '
               'convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
            _one('convdw_stride2', 'ConvolutionDepthwise', 'convolution_param { num_output: 4 '
                 'kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "gaussian" std: 1 } '
                 'bias_filler { type: "gaussian" } }',
                 {'x': (1, 4, 4, 4)}),
        ],
        backward=True,
        exports=True,
    ),
    "Crop": LayerInfo(
        samples=[
            _s('crop',
               'layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "y" crop_param {'
               ' axis: 2 offset: 1 offset: 2 } }',
               {'x': (2, 3, 7, 7), 'ref': (2, 3, 5, 4)}, 'TRAIN', golden=True),
            _s('export_crop_tile',
               'layer { name: "c" type: "Crop" bottom: "x" bottom: "w" top: "c" crop_param { '
               'axis: 2 offset: 1 offset: 3 } } layer { name: "t" type: "Tile" bottom: "c" '
               'top: "t" tile_param { axis: 1 tiles: 3 } }',
               {'x': (2, 4, 9, 11), 'w': (1, 1, 5, 6)}, 'TEST'),
            _one('crop0', 'Crop', 'crop_param { axis: 2 offset: 1 offset: 2 }',
                 {'x': (2, 4, 7, 7), 'r': (2, 2, 3, 3)}),
            _one('crop1', 'Crop', '',
                 {'x': (2, 4, 7, 7), 'r': (2, 2, 3, 3)}),
            _one('crop2', 'Crop', 'crop_param { offset: 2 }',
                 {'x': (2, 4, 7, 7), 'r': (2, 2, 3, 3)}),
            _one('crop3', 'Crop', 'crop_param { axis: 1 offset: 1 }',
                 {'x': (2, 4, 7, 7), 'r': (2, 2, 3, 3)}),
            _one('crop4', 'Crop', 'crop_param { axis: -1 offset: 4 }',
                 {'x': (2, 4, 7, 7), 'r': (2, 2, 3, 3)}),
        ],
        backward=True,
        golden=['crop'],
        exports=True,
    ),
    "Data": LayerInfo(
        golden=[
            'data_lmdb_meanfile_crop_test',
            'data_lmdb_meanvalue_train',
            'data_lmdb_encoded_gray',
        ],
        covered_by='tests/data/test_data_layers.py',
    ),
    "Deconvolution": LayerInfo(
        samples=[
            _s('deconv',
               'layer { name: "deconv" type: "Deconvolution" bottom: "x" top: "y" '
               'convolution_param { num_output: 2 pad: 1 kernel_size: 4 stride: 2 '
               'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" '
               'std: 0.2 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_deconv_groups',
               'layer { name: "d" type: "Deconvolution" bottom: "x" top: "y" convolution_param'
               ' { num_output: 6 pad: 1 kernel_size: 3 group: 2 stride: 2 dilation: 2 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _conv('deconv_group', 'Deconvolution', 2, 'kernel_size: 4 stride: 2 pad: 1 group: 2',
                  (2, 4, 4, 3)),
            _conv('deconv_dilated', 'Deconvolution', 3, 'kernel_size: 3 stride: 2 dilation: 2 '
                  'pad: 2',
                  (1, 2, 3, 4)),
            _conv('deconv_1d', 'Deconvolution', 2, 'kernel_size: 3 stride: 3',
                  (1, 2, 5)),
            _conv('deconv_3d', 'Deconvolution', 2, 'kernel_size: 2 stride: 2 pad: 1',
                  (1, 2, 3, 2, 3)),
            _conv('deconv_4d', 'Deconvolution', 1, 'kernel_size: 2 stride: 2',
                  (1, 2, 2, 2, 2, 2), export_error="4 spatial axes"),
        ],
        backward=True,
        golden=['deconv'],
        exports=True,
    ),
    "DenseImageData": LayerInfo(
        covered_by='tests/layers/test_fork_misc.py',
    ),
    "DepthwiseConvolution": LayerInfo(
        samples=[
            _s('depthwise',
               'layer { name: "dw" type: "DepthwiseConvolution" bottom: "x" top: "y" '
               'convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 4 weight_filler'
               ' { type: "gaussian" std: 0.3 } } }',
               {'x': (2, 4, 5, 6)}),
        ],
        backward=True,
        exports=True,
    ),
    "DetectionEvaluate": LayerInfo(
        samples=[
            _s('fork_detection_evaluate',
               'layer { name: "ev" type: "DetectionEvaluate" bottom: "det" bottom: "gt" top: '
               '"y" detection_evaluate_param { num_classes: 4 background_label_id: 0 '
               'overlap_threshold: 0.5 evaluate_difficult_gt: true } }',
               {'det': (1, 1, 12, 7), 'gt': (1, 1, 4, 8)}, 'TEST', golden=True),
        ],
        backward=False,
        golden=['fork_detection_evaluate'],
    ),
    "DetectionOutput": LayerInfo(
        samples=[
            _s('fork_detection_output_center',
               'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
               'bottom: "prior" top: "y" detection_output_param { num_classes: 4 '
               'share_location: true background_label_id: 0 nms_param { nms_threshold: 0.45 '
               'top_k: 20 } code_type: CENTER_SIZE keep_top_k: 10 confidence_threshold: 0.1 } '
               '}',
               {'loc': (2, 192), 'conf': (2, 192), 'prior': (1, 2, 192)}, 'TEST', golden=True),
            _s('fork_detection_output_noshare_corner',
               'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
               'bottom: "prior" top: "y" detection_output_param { num_classes: 4 '
               'share_location: false background_label_id: 0 nms_param { nms_threshold: 0.3 '
               'top_k: 25 } code_type: CORNER keep_top_k: -1 confidence_threshold: 0.15 } }',
               {'loc': (2, 768), 'conf': (2, 192), 'prior': (1, 2, 192)}, 'TEST', golden=True),
            _s('fork_detection_output_variance_in_target',
               'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
               'bottom: "prior" top: "y" detection_output_param { num_classes: 4 '
               'share_location: true background_label_id: 0 nms_param { nms_threshold: 0.45 '
               'top_k: 40 eta: 1 } code_type: CENTER_SIZE keep_top_k: 8 '
               'variance_encoded_in_target: true confidence_threshold: 0.2 } }',
               {'loc': (2, 192), 'conf': (2, 192), 'prior': (1, 2, 192)}, 'TEST', golden=True),
        ],
        backward=False,
        golden=[
            'fork_detection_output_center',
            'fork_detection_output_noshare_corner',
            'fork_detection_output_variance_in_target',
        ],
        exports=True,
        shapes_in_forward=True,
        export_forms=("onnx", "pytorch"),
    ),
    "Dropout": LayerInfo(
        samples=[
            _s('dropout_test',
               'layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { '
               'dropout_ratio: 0.3 } }',
               {'x': (2, 3, 7, 7)}, 'TEST', golden=True),
            _s('export_dropout_scale_train_false',
               'layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { '
               'dropout_ratio: 0.3 scale_train: false } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('dropout_train', 'Dropout', 'dropout_param { dropout_ratio: 0.3 }', _X4),
            _one('dropout_test_06', 'Dropout', 'dropout_param { dropout_ratio: 0.6 }', _X4,
                 'TEST'),
        ],
        backward=True,
        golden=['dropout_test'],
        exports=True,
    ),
    "DummyData": LayerInfo(
        samples=[
            _s('export_parameter_dummy_silence',
               'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 '
               'dim: 3 } } } layer { name: "d" type: "DummyData" top: "d" dummy_data_param { '
               'data_filler { type: "constant" value: 1.5 } shape { dim: 2 dim: 3 } } } layer '
               '{ name: "e" type: "Eltwise" bottom: "x" bottom: "p" bottom: "d" top: "e" } '
               'layer { name: "s" type: "Silence" bottom: "x" }',
               {'x': (2, 3)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "ELU": LayerInfo(
        samples=[
            _s('elu',
               'layer { name: "elu" type: "ELU" bottom: "x" top: "y" elu_param { alpha: 0.7 } '
               '}',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('elu_default', 'ELU', '', _X4),
            _one('elu_alpha03', 'ELU', 'elu_param { alpha: 0.3 }', _X4),
        ],
        backward=True,
        golden=['elu'],
        exports=True,
        kinks=(0.0,),
    ),
    "Eltwise": LayerInfo(
        samples=[
            _s('eltwise_sum_coeff',
               'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "y" '
               'eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }',
               {'a': (2, 3, 7, 7), 'b': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('eltwise_prod',
               'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "y" '
               'eltwise_param { operation: PROD } }',
               {'a': (2, 3, 7, 7), 'b': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('eltwise_max',
               'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "y" '
               'eltwise_param { operation: MAX } }',
               {'a': (2, 3, 7, 7), 'b': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _one('eltwise3_sum', 'Eltwise', '',
                 {'a': (2, 3, 4), 'b': (2, 3, 4), 'c': (2, 3, 4)}),
            _one('eltwise3_coeff', 'Eltwise', 'eltwise_param { coeff: 0.5 coeff: -2 coeff: 1.5 }',
                 {'a': (2, 3, 4), 'b': (2, 3, 4), 'c': (2, 3, 4)}),
            _one('eltwise3_prod', 'Eltwise', 'eltwise_param { operation: PROD }',
                 {'a': (2, 3, 4), 'b': (2, 3, 4), 'c': (2, 3, 4)}),
            _one('eltwise3_prod_unstable', 'Eltwise', 'eltwise_param { operation: PROD '
                 'stable_prod_grad: false }',
                 {'a': (2, 3, 4), 'b': (2, 3, 4), 'c': (2, 3, 4)}),
            _one('eltwise3_max', 'Eltwise', 'eltwise_param { operation: MAX }',
                 {'a': (2, 3, 4), 'b': (2, 3, 4), 'c': (2, 3, 4)}),
            _one('eltwise2_max', 'Eltwise', 'eltwise_param { operation: MAX }',
                 {'a': (2, 3, 4), 'b': (2, 3, 4)}),
            _one('eltwise2_prod', 'Eltwise', 'eltwise_param { operation: PROD }',
                 {'a': (2, 3, 4), 'b': (2, 3, 4)}),
            _one('eltwise2_coeff', 'Eltwise', 'eltwise_param { coeff: -1 coeff: 2 }',
                 {'a': (2, 3, 4), 'b': (2, 3, 4)}),
            _s('export_eltwise',
               'layer { name: "s" type: "Eltwise" bottom: "x" bottom: "w" bottom: "x" top: "s" '
               'eltwise_param { coeff: 0.5 coeff: -2 coeff: 1 } } layer { name: "p" type: '
               '"Eltwise" bottom: "x" bottom: "w" top: "p" eltwise_param { operation: PROD } } '
               'layer { name: "m" type: "Eltwise" bottom: "x" bottom: "w" bottom: "s" top: "m" '
               'eltwise_param { operation: MAX } }',
               {'x': (2, 3, 4, 5), 'w': (2, 3, 4, 5)}, 'TEST', grad=_MAX_OF_SUM),
        ],
        backward=True,
        golden=['eltwise_sum_coeff', 'eltwise_prod', 'eltwise_max'],
        exports=True,
        # no two bottoms tie (MAX) nor cross under the finite-difference step
        distinct_inputs=True,
    ),
    "Embed": LayerInfo(
        samples=[
            _s('embed',
               'layer { name: "e" type: "Embed" bottom: "x" top: "y" embed_param { num_output:'
               ' 3 input_dim: 7 weight_filler { type: "gaussian" std: 0.3 } bias_filler { '
               'type: "gaussian" std: 0.2 } } }',
               {'x': (2, 4)}, 'TRAIN', golden=True),
            _s('export_embed_reindex',
               'layer { name: "e" type: "Embed" bottom: "i" top: "e" embed_param { num_output:'
               ' 4 input_dim: 7 } } layer { name: "b" type: "BatchReindex" bottom: "x" bottom:'
               ' "k" top: "b" }',
               {'i': (2, 3), 'x': (4, 3, 2), 'k': (5,)}, 'TEST'),
            _one('embed_nobias', 'Embed', 'embed_param { input_dim: 4 num_output: 3 '
                 'bias_term: false weight_filler { type: "uniform" } }', {'x': (2, 2)}),
        ],
        backward=True,
        golden=['embed'],
        exports=True,
    ),
    "EuclideanLoss": LayerInfo(
        samples=[
            _s('euclidean',
               'layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"'
               ' }',
               {'a': (2, 6), 'b': (2, 6)}, 'TRAIN', golden=True),
            _one('euclidean_reshaped', 'EuclideanLoss', '', {'a': (3, 2, 2), 'b': (3, 4)},
                 tops=('loss',)),
        ],
        backward=True,
        golden=['euclidean'],
    ),
    "Exp": LayerInfo(
        samples=[
            _s('exp',
               'layer { name: "e" type: "Exp" bottom: "x" top: "y" exp_param { base: 2 scale: '
               '0.5 shift: 0.1 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_power_exp_log',
               'layer { name: "a" type: "AbsVal" bottom: "x" top: "a" } layer { name: "pw" '
               'type: "Power" bottom: "a" top: "pw" power_param { power: 1.5 scale: 2 shift: '
               '0.5 } } layer { name: "p2" type: "Power" bottom: "x" top: "p2" power_param { '
               'power: 2 } } layer { name: "pc" type: "Power" bottom: "x" top: "pc" '
               'power_param { power: 3 scale: 0 shift: 2 } } layer { name: "ex" type: "Exp" '
               'bottom: "x" top: "ex" exp_param { base: 2 scale: 0.5 shift: 1 } } layer { '
               'name: "lg" type: "Log" bottom: "pw" top: "lg" log_param { base: 10 scale: 3 '
               'shift: 1 } } layer { name: "ln" type: "Log" bottom: "a" top: "ln" }',
               {'x': (2, 4, 9, 11)}, 'TEST',
               grad=_STEEP_LOG),
            _one('exp_default', 'Exp', '', _X4),
            _one('exp_base3', 'Exp', 'exp_param { base: 3 scale: 0.4 shift: -0.5 }', _X4),
        ],
        backward=True,
        golden=['exp'],
        exports=True,
    ),
    "Filter": LayerInfo(
        covered_by='tests/layers/test_shape.py',
    ),
    "Flatten": LayerInfo(
        samples=[
            _s('flatten',
               'layer { name: "f" type: "Flatten" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_flatten_reshape',
               'layer { name: "f" type: "Flatten" bottom: "x" top: "f" flatten_param { axis: 1'
               ' end_axis: 2 } } layer { name: "r" type: "Reshape" bottom: "x" top: "r" '
               'reshape_param { shape { dim: 0 dim: -1 dim: 11 } } } layer { name: "r2" type: '
               '"Reshape" bottom: "x" top: "r2" reshape_param { shape { dim: 3 dim: 3 } axis: '
               '2 num_axes: 1 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('flatten0', 'Flatten', '',
                 _X4),
            _one('flatten1', 'Flatten', 'flatten_param { axis: 0 }',
                 _X4),
            _one('flatten2', 'Flatten', 'flatten_param { axis: 2 }',
                 _X4),
            _one('flatten3', 'Flatten', 'flatten_param { axis: 1 end_axis: 2 }',
                 _X4),
            _one('flatten4', 'Flatten', 'flatten_param { axis: -3 end_axis: -2 }',
                 _X4),
            _one('flatten5', 'Flatten', 'flatten_param { axis: 3 end_axis: 3 }',
                 _X4),
        ],
        backward=True,
        golden=['flatten'],
        exports=True,
    ),
    "GuidedDropout": LayerInfo(
        samples=[
            _s('export_guided_dropout',
               'layer { name: "d" type: "GuidedDropout" bottom: "x" bottom: "g" top: "d" '
               'guided_dropout_param { guidance_threshold: 0.3 } } layer { name: "s" type: '
               '"GuidedDropout" bottom: "x" bottom: "g" top: "s" guided_dropout_param { type: '
               '"stochastic" } }',
               {'x': (2, 4, 6, 5), 'g': (2, 4)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "HDF5Data": LayerInfo(
        golden=['data_hdf5'],
        covered_by='tests/data/test_data_layers.py',
    ),
    "HDF5Output": LayerInfo(
        covered_by='tests/data/test_data_layers.py',
    ),
    "HardSigmoid": LayerInfo(
        samples=[
            _s('fork_hardsigmoid',
               'layer { name: "h" type: "HardSigmoid" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_hardsigmoid_alpha_beta',
               'layer { name: "h" type: "HardSigmoid" bottom: "x" top: "y" hardsigmoid_param {'
               ' alpha: 0.25 beta: 0.4 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True, kinks=(-1.6, 2.4)),
            _s('export_mobile',
               'layer { name: "r" type: "ReLU6" bottom: "x" top: "r" } layer { name: "hs" '
               'type: "HardSwish" bottom: "x" top: "hs" } layer { name: "hg" type: '
               '"HardSigmoid" bottom: "x" top: "hg" } layer { name: "sc" type: '
               '"ShuffleChannel" bottom: "x" top: "sc" shuffle_channel_param { group: 2 } } '
               'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "x" top: "dw" '
               'convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
            _one('hardsigmoid_04_03', 'HardSigmoid', 'hardsigmoid_param { alpha: 0.4 beta: 0.3 }',
                 _X4, kinks=(-0.75, 1.75)),
        ],
        backward=True,
        golden=['fork_hardsigmoid', 'fork_hardsigmoid_alpha_beta'],
        exports=True,
        kinks=(-3.0, -2.5, 2.5, 3.0),
    ),
    "HardSwish": LayerInfo(
        samples=[
            _s('fork_hardswish',
               'layer { name: "h" type: "HardSwish" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_mobile',
               'layer { name: "r" type: "ReLU6" bottom: "x" top: "r" } layer { name: "hs" '
               'type: "HardSwish" bottom: "x" top: "hs" } layer { name: "hg" type: '
               '"HardSigmoid" bottom: "x" top: "hg" } layer { name: "sc" type: '
               '"ShuffleChannel" bottom: "x" top: "sc" shuffle_channel_param { group: 2 } } '
               'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "x" top: "dw" '
               'convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
        ],
        backward=True,
        golden=['fork_hardswish'],
        exports=True,
        kinks=(-3.0, 3.0),
    ),
    "HingeLoss": LayerInfo(
        samples=[
            _s('hinge_l1',
               'layer { name: "loss" type: "HingeLoss" bottom: "x" bottom: "label" top: "loss"'
               ' }',
               {'x': (4, 5), 'label': (4,)}, 'TRAIN', golden=True),
            _s('hinge_l2',
               'layer { name: "loss" type: "HingeLoss" bottom: "x" bottom: "label" top: "loss"'
               ' hinge_loss_param { norm: L2 } }',
               {'x': (4, 5), 'label': (4,)}, 'TRAIN', golden=True),
        ],
        backward=True,
        golden=['hinge_l1', 'hinge_l2'],
        kinks=(-1.0, 1.0),  # the margin, either sign
    ),
    "Im2col": LayerInfo(
        samples=[
            _s('export_im2col',
               'layer { name: "i" type: "Im2col" bottom: "x" top: "y" convolution_param { pad:'
               ' 1 kernel_size: 3 stride: 2 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('im2col_stride', 'Im2col', 'convolution_param { kernel_size: 3 pad: 1 stride: 2 }',
                 {'x': (1, 2, 5, 4)}),
            _one('im2col_1d_dilated', 'Im2col', 'convolution_param { kernel_size: 3 dilation: 2 }',
                 {'x': (2, 2, 7)}, export_error="only 2-D Im2col"),
            _one('im2col_3d', 'Im2col', 'convolution_param { kernel_size: 2 pad: 1 }',
                 {'x': (1, 2, 3, 4, 3)}, export_error="only 2-D Im2col"),
        ],
        backward=True,
        exports=True,
    ),
    "ImageData": LayerInfo(
        golden=['data_imagedata_resize'],
        covered_by='tests/data/test_data_layers.py',
    ),
    "ImageSegData": LayerInfo(
        covered_by='tests/data/test_fork_seg_video_data.py',
    ),
    "InfogainLoss": LayerInfo(
        covered_by='tests/layers/test_loss.py',
    ),
    "InnerProduct": LayerInfo(
        samples=[
            _s('innerproduct',
               'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
               'inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 '
               '} bias_filler { type: "gaussian" std: 0.2 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('innerproduct_transpose',
               'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
               'inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 '
               '} bias_filler { type: "gaussian" std: 0.2 } transpose: true } }',
               {'x': (2, 6)}, 'TRAIN', golden=True),
            _s('export_inner_product_axes',
               'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
               'inner_product_param { num_output: 5 axis: 2 } } layer { name: "ipt" type: '
               '"InnerProduct" bottom: "x" top: "z" inner_product_param { num_output: 3 '
               'bias_term: false transpose: true } } layer { name: "sm" type: "Softmax" '
               'bottom: "y" top: "s" softmax_param { axis: 2 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=['innerproduct', 'innerproduct_transpose'],
        exports=True,
    ),
    "Input": LayerInfo(
        covered_by='tests/core/test_net.py',
    ),
    "Interp": LayerInfo(
        samples=[
            _s('export_interp',
               'layer { name: "i" type: "Interp" bottom: "x" top: "i" interp_param { '
               'zoom_factor: 2 } } layer { name: "i2" type: "Interp" bottom: "x" top: "i2" '
               'interp_param { height: 4 width: 9 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
            _one('interp_zoom_pad_end', 'Interp', 'interp_param { zoom_factor: 2 pad_end: -1 }',
                 {'x': (2, 2, 4, 5)}),
            _one('interp_size', 'Interp', 'interp_param { height: 3 width: 7 }',
                 {'x': (2, 2, 4, 5)}),
        ],
        backward=True,
        exports=True,
    ),
    "LRN": LayerInfo(
        samples=[
            _s('lrn_across',
               'layer { name: "lrn" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3'
               ' alpha: 0.5 beta: 0.75 k: 1.5 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('lrn_within',
               'layer { name: "lrn" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3'
               ' alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_lrn_across',
               'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 '
               'alpha: 0.5 beta: 0.75 k: 2 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('lrn_across0', 'LRN', 'lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 '
                 'k: 1.0 norm_region: ACROSS_CHANNELS }', {'x': (2, 7, 3, 4)}),
            _one('lrn_across1', 'LRN', 'lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 '
                 'k: 2.0 norm_region: ACROSS_CHANNELS }', {'x': (1, 2, 4, 3)}),
            _one('lrn_across2', 'LRN', 'lrn_param { local_size: 1 alpha: 2.0 beta: 1.3 '
                 'k: 1.5 norm_region: ACROSS_CHANNELS }', {'x': (2, 3, 2, 2)}),
            _one('lrn_within3', 'LRN', 'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 '
                 'k: 9.0 norm_region: WITHIN_CHANNEL }', {'x': (2, 3, 5, 6)}),
            _one('lrn_within4', 'LRN', 'lrn_param { local_size: 5 alpha: 2.0 beta: 0.4 '
                 'k: 1.0 norm_region: WITHIN_CHANNEL }', {'x': (1, 2, 3, 7)}),
            _s('export_lrn_within',
               'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 '
               'alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=['lrn_across', 'lrn_within'],
        exports=True,
    ),
    "LSTM": LayerInfo(
        samples=[
            _s('lstm',
               'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
               'recurrent_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } '
               'bias_filler { type: "gaussian" std: 0.2 } } }',
               {'x': (4, 2, 3), 'cont': (4, 2)}, 'TRAIN', golden=True),
            _s('export_lstm_static_exposed',
               'layer { name: "l" type: "LSTM" bottom: "x" bottom: "c" bottom: "s" bottom: '
               '"h0" bottom: "c0" top: "o" top: "hT" top: "cT" recurrent_param { num_output: 4'
               ' expose_hidden: true } }',
               {'x': (3, 2, 5),
                'c': (3, 2),
                's': (2,
               6),
                'h0': (1, 2, 4),
                'c0': (1, 2, 4)}, 'TEST',
               grad=_LSTM_STATIC_EXPOSED),
        ],
        backward=True,
        golden=['lstm'],
        exports=True,
    ),
    "LSTMUnit": LayerInfo(
        samples=[
            _s('export_lstm_unit',
               'layer { name: "u" type: "LSTMUnit" bottom: "cp" bottom: "g" bottom: "c" top: '
               '"cn" top: "h" }',
               {'cp': (1, 3, 4), 'g': (1, 3, 16), 'c': (1, 3)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "LaneData": LayerInfo(
        covered_by='tests/data/test_lane_data.py',
    ),
    "Log": LayerInfo(
        samples=[
            _s('log',
               'layer { name: "l" type: "Log" bottom: "x" top: "y" log_param { scale: 0.5 '
               'shift: 0.1 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_power_exp_log',
               'layer { name: "a" type: "AbsVal" bottom: "x" top: "a" } layer { name: "pw" '
               'type: "Power" bottom: "a" top: "pw" power_param { power: 1.5 scale: 2 shift: '
               '0.5 } } layer { name: "p2" type: "Power" bottom: "x" top: "p2" power_param { '
               'power: 2 } } layer { name: "pc" type: "Power" bottom: "x" top: "pc" '
               'power_param { power: 3 scale: 0 shift: 2 } } layer { name: "ex" type: "Exp" '
               'bottom: "x" top: "ex" exp_param { base: 2 scale: 0.5 shift: 1 } } layer { '
               'name: "lg" type: "Log" bottom: "pw" top: "lg" log_param { base: 10 scale: 3 '
               'shift: 1 } } layer { name: "ln" type: "Log" bottom: "a" top: "ln" }',
               {'x': (2, 4, 9, 11)}, 'TEST',
               grad=_STEEP_LOG),
            _one('log_shift3', 'Log', 'log_param { shift: 3 }', _X4, values=(-2, 2)),
            _one('log_base2', 'Log', 'log_param { base: 2 scale: 0.5 shift: 2 }', _X4,
                 values=(-2, 2)),
        ],
        backward=True,
        golden=['log'],
        exports=True,
    ),
    "MVN": LayerInfo(
        samples=[
            _s('mvn',
               'layer { name: "m" type: "MVN" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('mvn_across',
               'layer { name: "m" type: "MVN" bottom: "x" top: "y" mvn_param { '
               'normalize_variance: true across_channels: true } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('mvn_meanonly',
               'layer { name: "m" type: "MVN" bottom: "x" top: "y" mvn_param { '
               'normalize_variance: false } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_mvn',
               'layer { name: "m" type: "MVN" bottom: "x" top: "y" } layer { name: "m2" type: '
               '"MVN" bottom: "x" top: "z" mvn_param { across_channels: true normalize_variance: '
               'false } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=['mvn', 'mvn_across', 'mvn_meanonly'],
        exports=True,
    ),
    "MarginInnerProduct": LayerInfo(
        covered_by='tests/layers/test_fork_detection_misc_losses.py',
    ),
    "MaxUnPool": LayerInfo(
        samples=[
            _s('fork_maxunpool_mask_input',
               'layer { name: "unpool" type: "MaxUnPool" bottom: "x" bottom: "mask" top: "y" '
               'max_unpool_param { dst_h: 6 dst_w: 6 } }',
               {'x': (2, 3, 3, 3), 'mask': (2, 3, 3, 3)}, 'TRAIN', golden=True),
            _s('fork_maxunpool_from_pool',
               'layer { name: "pool" type: "Pooling" bottom: "x" top: "p" top: "mask" '
               'pooling_param { pool: MAX kernel_size: 2 stride: 2 } } layer { name: "unpool" '
               'type: "MaxUnPool" bottom: "p" bottom: "mask" top: "y" max_unpool_param { '
               'dst_h: 8 dst_w: 8 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_segnet_unpool',
               'layer { name: "mp" type: "Pooling" bottom: "x" top: "mp" top: "mask" '
               'pooling_param { pool: MAX kernel_size: 2 stride: 2 } } layer { name: "u" type:'
               ' "Upsample" bottom: "mp" bottom: "mask" top: "u" upsample_param { scale: 2 '
               'upsample_h: 6 upsample_w: 5 } } layer { name: "mu" type: "MaxUnPool" bottom: '
               '"mp" bottom: "mask" top: "mu" max_unpool_param { dst_h: 6 dst_w: 5 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
        ],
        backward=True,
        golden=['fork_maxunpool_from_pool', 'fork_maxunpool_mask_input'],
        exports=True,
        distinct_inputs=True,
    ),
    "MemoryData": LayerInfo(
        covered_by='tests/data/test_data_layers.py',
    ),
    "MultiBoxLoss": LayerInfo(
        golden=['fork_multiboxloss_maxneg', 'fork_multiboxloss_l2_logistic'],
        covered_by='tests/layers/test_fork_ssd.py',
    ),
    "MultinomialLogisticLoss": LayerInfo(
        samples=[
            _s('multinomial_logistic',
               'layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "p" bottom: '
               '"label" top: "loss" }',
               {'p': (4, 5), 'label': (4,)}, 'TRAIN', golden=True, values=(0.2, 1.0)),
        ],
        backward=True,
        golden=['multinomial_logistic'],
    ),
    "Normalize": LayerInfo(
        samples=[
            _s('fork_normalize_ssd',
               'layer { name: "n" type: "Normalize" bottom: "x" top: "y" norm_param { '
               'across_spatial: false scale_filler { type: "constant" value: 20 } '
               'channel_shared: false } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_normalize_across_shared',
               'layer { name: "n" type: "Normalize" bottom: "x" top: "y" norm_param { '
               'across_spatial: true scale_filler { type: "uniform" min: 0.5 max: 2 } '
               'channel_shared: true eps: 1e-06 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_normalize_spatial_perchannel',
               'layer { name: "n" type: "Normalize" bottom: "x" top: "y" norm_param { '
               'across_spatial: true scale_filler { type: "gaussian" mean: 1 std: 0.5 } '
               'channel_shared: false } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True,
               grad=_NORMALIZE_SPATIAL),
            _one('normalize_shared_across_true', 'Normalize', 'norm_param { across_spatial: true '
                 'channel_shared: true scale_filler { type: "constant" value: 1.7 } }',
                 {'x': (2, 3, 2, 2)}),
            _one('normalize_equal_scales_across_true', 'Normalize', 'norm_param { '
                 'across_spatial: true channel_shared: false scale_filler { type: "constant" '
                 'value: 0.8 } }', {'x': (2, 3, 2, 2)}),
            _one('normalize_shared_across_false', 'Normalize', 'norm_param { across_spatial: false '
                 'channel_shared: true scale_filler { type: "constant" value: 1.7 } }',
                 {'x': (2, 3, 2, 2)}),
            _one('normalize_equal_scales_across_false', 'Normalize', 'norm_param { '
                 'across_spatial: false channel_shared: false scale_filler { type: "constant" '
                 'value: 0.8 } }', {'x': (2, 3, 2, 2)}),
            _s('export_normalize',
               'layer { name: "n" type: "Normalize" bottom: "x" top: "n" norm_param { '
               'across_spatial: false channel_shared: false scale_filler { type: "constant" '
               'value: 20 } } } layer { name: "n2" type: "Normalize" bottom: "x" top: "n2" }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
        ],
        backward=True,
        golden=[
            'fork_normalize_ssd',
            'fork_normalize_across_shared',
            'fork_normalize_spatial_perchannel',
        ],
        exports=True,
        grad_step=1e-3,
    ),
    "PReLU": LayerInfo(
        samples=[
            _s('prelu',
               'layer { name: "prelu" type: "PReLU" bottom: "x" top: "y" prelu_param { filler '
               '{ type: "uniform" min: 0.1 max: 0.4 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('prelu_shared',
               'layer { name: "prelu" type: "PReLU" bottom: "x" top: "y" prelu_param { filler '
               '{ type: "constant" value: 0.3 } channel_shared: true } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('prelu_4d', 'PReLU', 'prelu_param { channel_shared: false }',
                 _X4),
            _one('prelu_4d_shared', 'PReLU', 'prelu_param { channel_shared: true }',
                 _X4),
            _one('prelu_2d', 'PReLU', 'prelu_param { channel_shared: false }',
                 {'x': (4, 3)}),
            _one('prelu_2d_shared', 'PReLU', 'prelu_param { channel_shared: true }',
                 {'x': (4, 3)}),
            _one('prelu_3d', 'PReLU', 'prelu_param { channel_shared: false }',
                 {'x': (2, 3, 5)}),
            _one('prelu_3d_shared', 'PReLU', 'prelu_param { channel_shared: true }',
                 {'x': (2, 3, 5)}),
        ],
        backward=True,
        golden=['prelu', 'prelu_shared'],
        exports=True,
        kinks=(0.0,),
    ),
    "PSROIPooling": LayerInfo(
        samples=[
            _s('export_psroi_pooling',
               'layer { name: "p" type: "PSROIPooling" bottom: "x" bottom: "r" top: "p" '
               'psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 } }',
               {'x': (2, 18, 6, 4), 'r': (7, 5)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "Pad": LayerInfo(
        samples=[
            _s('fork_pad_constant',
               'layer { name: "p" type: "Pad" bottom: "x" top: "y" pad_param { pad_type: '
               'CONSTANT pad_u: 2 pad_d: 1 pad_l: 1 pad_r: 2 pad_value: -0.5 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_pad_replicate',
               'layer { name: "p" type: "Pad" bottom: "x" top: "y" pad_param { pad_type: '
               'REPLICATE pad_u: 2 pad_d: 1 pad_l: 1 pad_r: 2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_pad_reflect',
               'layer { name: "p" type: "Pad" bottom: "x" top: "y" pad_param { pad_type: '
               'REFLECT pad_u: 2 pad_d: 1 pad_l: 1 pad_r: 2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _one('pad_reflect_uneven', 'Pad', 'pad_param { pad_type: REFLECT pad_u: 1 pad_d: 2 '
                 'pad_l: 2 pad_r: 0 }',
                 {'x': (1, 4, 4, 3)}),
            _one('pad_replicate_two_sides', 'Pad', 'pad_param { pad_type: REPLICATE pad_u: 2 '
                 'pad_r: 1 }',
                 {'x': (1, 4, 4, 3)}),
            _one('pad_value2', 'Pad', 'pad_param { pad_value: 2 pad_u: 1 pad_l: 1 }',
                 {'x': (1, 4, 4, 3)}),
            _one('pad_negative', 'Pad', 'pad_param { pad_u: -1 pad_r: -2 }',
                 {'x': (1, 4, 4, 3)}),
            _s('export_pad',
               'layer { name: "p" type: "Pad" bottom: "x" top: "p" pad_param { pad_u: 1 pad_d: 2 '
               'pad_l: 0 pad_r: 3 pad_value: 0.5 } } layer { name: "e" type: "Pad" bottom: "x" '
               'top: "e" pad_param { pad_u: 2 pad_l: 1 pad_type: REPLICATE } } layer { name: "f" '
               'type: "Pad" bottom: "x" top: "f" pad_param { pad_d: 3 pad_r: 2 pad_type: REFLECT '
               '} } layer { name: "c" type: "Pad" bottom: "x" top: "c" pad_param { pad_u: -1 '
               'pad_r: -2 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
        ],
        backward=True,
        golden=[
            'fork_pad_constant',
            'fork_pad_replicate',
            'fork_pad_reflect',
            'fork_pad_negative_crop',
        ],
        exports=True,
    ),
    "Parameter": LayerInfo(
        samples=[
            _s('export_parameter_dummy_silence',
               'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 '
               'dim: 3 } } } layer { name: "d" type: "DummyData" top: "d" dummy_data_param { '
               'data_filler { type: "constant" value: 1.5 } shape { dim: 2 dim: 3 } } } layer '
               '{ name: "e" type: "Eltwise" bottom: "x" bottom: "p" bottom: "d" top: "e" } '
               'layer { name: "s" type: "Silence" bottom: "x" }',
               {'x': (2, 3)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "Permute": LayerInfo(
        samples=[
            _s('fork_permute_ssd',
               'layer { name: "p" type: "Permute" bottom: "x" top: "y" permute_param { order: '
               '0 order: 2 order: 3 order: 1 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_permute_other',
               'layer { name: "p" type: "Permute" bottom: "x" top: "y" permute_param { order: '
               '0 order: 3 order: 1 order: 2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_priorbox_permute',
               'layer { name: "pb" type: "PriorBox" bottom: "x" bottom: "img" top: "pb" '
               'prior_box_param { min_size: 10 max_size: 20 aspect_ratio: 2 flip: true clip: '
               'true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } } layer { name:'
               ' "pm" type: "Permute" bottom: "x" top: "pm" permute_param { order: 0 order: 2 '
               'order: 3 order: 1 } }',
               {'img': (2, 3, 60, 50), 'x': (2, 4, 6, 5)}, 'TEST'),
            _one('permute_0231', 'Permute', 'permute_param { order: 0 order: 2 order: 3 order: 1 }',
                 {'x': (2, 3, 2, 4)}),
        ],
        backward=True,
        golden=['fork_permute_ssd', 'fork_permute_other'],
        exports=True,
    ),
    "PixelShuffle": LayerInfo(
        samples=[
            _s('fork_pixelshuffle',
               'layer { name: "p" type: "PixelShuffle" bottom: "x" top: "y" pixelshuffle_param'
               ' { upscale_factor: 2 } }',
               {'x': (2, 12, 4, 5)}, 'TRAIN', golden=True),
            _one('pixelshuffle_2', 'PixelShuffle', 'pixelshuffle_param { upscale_factor: 2 }',
                 {'x': (1, 4, 4, 3)}),
        ],
        backward=True,
        golden=['fork_pixelshuffle'],
        exports=True,
    ),
    "Pooling": LayerInfo(
        samples=[
            _s('pool_max_k3s2',
               'layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { '
               'pool: MAX kernel_size: 3 stride: 2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('pool_max_k3s2p1',
               'layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { '
               'pool: MAX kernel_size: 3 stride: 2 pad: 1 } }',
               {'x': (2, 3, 8, 8)}, 'TRAIN', golden=True),
            _s('pool_max_global',
               'layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { '
               'pool: MAX global_pooling: true } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _one('pool_max0', 'Pooling', 'pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_max1', 'Pooling', 'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: '
                 '1 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_max2', 'Pooling', 'pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 '
                 'stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_max3', 'Pooling', 'pooling_param { pool: MAX kernel_size: 3 stride: 3 pad: '
                 '2 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_max4', 'Pooling', 'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: '
                 '1 round_mode: FLOOR }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_ave5', 'Pooling', 'pooling_param { pool: AVE kernel_size: 3 stride: 2 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_ave6', 'Pooling', 'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: '
                 '1 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_ave7', 'Pooling', 'pooling_param { pool: AVE kernel_size: 3 stride: 3 pad: '
                 '2 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_ave8', 'Pooling', 'pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 '
                 'stride_h: 2 stride_w: 2 pad_h: 1 pad_w: 2 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_ave9', 'Pooling', 'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: '
                 '1 round_mode: FLOOR }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_ave10', 'Pooling', 'pooling_param { pool: AVE kernel_size: 1 stride: 3 }',
                 {'x': (2, 2, 7, 6)}),
            _one('pool_ave_global', 'Pooling', 'pooling_param { pool: AVE global_pooling: true }',
                 {'x': (2, 3, 4, 5)}),
            _one('pool_max_mask', 'Pooling', 'pooling_param { pool: MAX kernel_size: 2 stride: 2 }',
                 {'x': (1, 2, 6, 6)}, tops=('y', 'mask')),
            _one('pool_stochastic_train', 'Pooling', 'pooling_param { pool: STOCHASTIC '
                 'kernel_size: 3 '
                 'stride: 2 }', {'x': (1, 2, 5, 5)}, values=(1.0, 2.0)),
            _one('pool_stochastic_test', 'Pooling', 'pooling_param { pool: STOCHASTIC '
                 'kernel_size: 3 '
                 'stride: 2 }', {'x': (1, 2, 5, 5)}, 'TEST', values=(1.0, 2.0)),
            _s('export_pool_max_ceil_clip',
               'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX '
               'kernel_size: 3 stride: 2 pad: 1 } }',
               {'x': (2, 3, 8, 10)}, 'TEST'),
            _s('export_pool_max_ceil_empty',
               'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX '
               'kernel_size: 1 stride: 3 } }',
               {'x': (1, 2, 5, 7)}, 'TEST',
               grad=_EMPTY_WINDOW),
            _s('export_pool_ave_ceil_clip',
               'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE '
               'kernel_size: 3 stride: 2 pad: 1 } }',
               {'x': (2, 3, 8, 10)}, 'TEST'),
            _s('export_pool_ave_big_pad',
               'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE '
               'kernel_size: 3 stride: 3 pad: 2 } }',
               {'x': (1, 2, 7, 8)}, 'TEST'),
            _s('export_pool_floor',
               'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX '
               'kernel_size: 2 stride: 2 round_mode: FLOOR } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _s('export_pool_max_mask',
               'layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "m" pooling_param { '
               'pool: MAX kernel_size: 3 stride: 2 pad: 1 } }',
               {'x': (2, 3, 8, 10)}, 'TEST'),
            _s('export_pool_max_mask_empty',
               'layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "m" pooling_param { '
               'pool: MAX kernel_size: 1 stride: 3 } }',
               {'x': (1, 2, 5, 7)}, 'TEST',
               grad=_EMPTY_WINDOW),
            _s('export_pool_global',
               'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE '
               'global_pooling: true } } layer { name: "q" type: "Pooling" bottom: "x" top: "z" '
               'pooling_param { pool: MAX global_pooling: true } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=[
            'pool_max_k3s2',
            'pool_max_k3s2p1',
            'pool_max_global',
            'pool_ave_k3s2',
            'pool_ave_k3s2p1',
            'pool_ave_global',
            'pool_max_k2s2_mask',
            'fork_maxunpool_from_pool',
        ],
        exports=True,
        distinct_inputs=True,
    ),
    "Power": LayerInfo(
        samples=[
            _s('power',
               'layer { name: "p" type: "Power" bottom: "x" top: "y" power_param { power: 2 '
               'scale: 0.5 shift: 1.5 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('implicit_fanout',
               'layer { name: "p1" type: "Power" bottom: "x" top: "y1" power_param { scale: 2 '
               '} } layer { name: "p2" type: "Power" bottom: "x" top: "y2" power_param { '
               'power: 2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_power_exp_log',
               'layer { name: "a" type: "AbsVal" bottom: "x" top: "a" } layer { name: "pw" '
               'type: "Power" bottom: "a" top: "pw" power_param { power: 1.5 scale: 2 shift: '
               '0.5 } } layer { name: "p2" type: "Power" bottom: "x" top: "p2" power_param { '
               'power: 2 } } layer { name: "pc" type: "Power" bottom: "x" top: "pc" '
               'power_param { power: 3 scale: 0 shift: 2 } } layer { name: "ex" type: "Exp" '
               'bottom: "x" top: "ex" exp_param { base: 2 scale: 0.5 shift: 1 } } layer { '
               'name: "lg" type: "Log" bottom: "pw" top: "lg" log_param { base: 10 scale: 3 '
               'shift: 1 } } layer { name: "ln" type: "Log" bottom: "a" top: "ln" }',
               {'x': (2, 4, 9, 11)}, 'TEST',
               grad=_STEEP_LOG),
            _one('power_sq', 'Power', 'power_param { power: 2 scale: 0.5 shift: 1.5 }', _X4),
            _one('power_cube', 'Power', 'power_param { power: 3 scale: -0.7 shift: 0.2 }', _X4),
            _one('power_neg', 'Power', 'power_param { power: -1.5 scale: 0.5 shift: 3 }', _X4,
                 values=(-2, 2)),
            _one('power_one', 'Power', 'power_param { power: 1 scale: 2.5 shift: -1 }', _X4),
            _one('power_zero', 'Power', 'power_param { power: 0 }', _X4),
        ],
        backward=True,
        golden=['power', 'split_fanout', 'implicit_fanout'],
        exports=True,
    ),
    "PriorBox": LayerInfo(
        samples=[
            _s('fork_priorbox_minmax_flip_clip',
               'layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "img" top: "y" '
               'prior_box_param { min_size: 16 max_size: 40 aspect_ratio: 2 flip: true clip: '
               'true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }',
               {'feat': (2, 3, 4, 4), 'img': (2, 3, 64, 64)}, 'TRAIN', golden=True),
            _s('fork_priorbox_step_offset',
               'layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "img" top: "y" '
               'prior_box_param { min_size: 10 min_size: 30 max_size: 24 max_size: 50 '
               'aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false variance: 0.1 img_size:'
               ' 70 step: 16 offset: 0.3 } }',
               {'feat': (2, 3, 4, 4), 'img': (2, 3, 64, 64)}, 'TRAIN', golden=True),
            _s('export_priorbox_permute',
               'layer { name: "pb" type: "PriorBox" bottom: "x" bottom: "img" top: "pb" '
               'prior_box_param { min_size: 10 max_size: 20 aspect_ratio: 2 flip: true clip: '
               'true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } } layer { name:'
               ' "pm" type: "Permute" bottom: "x" top: "pm" permute_param { order: 0 order: 2 '
               'order: 3 order: 1 } }',
               {'img': (2, 3, 60, 50), 'x': (2, 4, 6, 5)}, 'TEST'),
        ],
        backward=True,
        golden=['fork_priorbox_minmax_flip_clip', 'fork_priorbox_step_offset'],
        exports=True,
    ),
    "Proposal": LayerInfo(
        samples=[
            _s('fork_proposal',
               'layer { name: "rpn" type: "Proposal" bottom: "score" bottom: "delta" bottom: '
               '"im_info" top: "rois" top: "scores" proposal_param { feat_stride: 16 '
               'base_size: 16 min_size: 16 ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16 '
               'scale: 32 pre_nms_topn: 200 post_nms_topn: 30 nms_thresh: 0.7 } }',
               {'score': (1, 18, 10, 12), 'delta': (1, 36, 10, 12), 'im_info': (1, 3)}, 'TEST',
               golden=True),
            _s('fork_proposal_one_top',
               'layer { name: "rpn" type: "Proposal" bottom: "score" bottom: "delta" bottom: '
               '"im_info" top: "rois" proposal_param { feat_stride: 16 base_size: 16 min_size:'
               ' 16 ratio: 0.333 ratio: 0.5 ratio: 0.667 ratio: 1 ratio: 1.5 ratio: 2 ratio: 3'
               ' scale: 2 scale: 3 scale: 5 scale: 9 scale: 16 scale: 32 pre_nms_topn: 300 '
               'post_nms_topn: 40 nms_thresh: 0.6 } }',
               {'score': (1, 84, 8, 10), 'delta': (1, 168, 8, 10), 'im_info': (1, 6)}, 'TEST',
               golden=True),
        ],
        backward=False,
        golden=['fork_proposal', 'fork_proposal_one_top'],
    ),
    "Python": LayerInfo(
        covered_by='tests/layers/test_python_layer.py',
    ),
    "RNN": LayerInfo(
        samples=[
            _s('rnn',
               'layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "h" '
               'recurrent_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } '
               'bias_filler { type: "gaussian" std: 0.2 } } }',
               {'x': (4, 2, 3), 'cont': (4, 2)}, 'TRAIN', golden=True),
            _s('export_rnn',
               'layer { name: "r" type: "RNN" bottom: "x" bottom: "c" top: "o" recurrent_param'
               ' { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }',
               {'x': (4, 2, 3), 'c': (4, 2)}, 'TEST'),
        ],
        backward=True,
        golden=['rnn'],
        exports=True,
    ),
    "ROIPooling": LayerInfo(
        samples=[
            _s('export_roi_pooling',
               'layer { name: "p" type: "ROIPooling" bottom: "x" bottom: "r" top: "p" '
               'roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.25 } } layer { '
               'name: "q" type: "ROIPooling" bottom: "x" bottom: "r" top: "q" '
               'roi_pooling_param { pooled_h: 4 pooled_w: 7 spatial_scale: 0.5 } }',
               {'x': (2, 4, 6, 5), 'r': (9, 5)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "ReLU": LayerInfo(
        samples=[
            _s('relu',
               'layer { name: "relu" type: "ReLU" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('relu_leaky',
               'layer { name: "relu" type: "ReLU" bottom: "x" top: "y" relu_param { '
               'negative_slope: 0.1 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('relu_inplace',
               'layer { name: "conv" type: "Convolution" bottom: "x" top: "c" '
               'convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: '
               '"gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 } } } layer { '
               'name: "relu" type: "ReLU" bottom: "c" top: "c" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True,
               grad=_INNER_KINK),
            _one('relu_slope_neg', 'ReLU', 'relu_param { negative_slope: -0.5 }', _X4),
        ],
        backward=True,
        golden=['relu', 'relu_leaky', 'relu_inplace', 'bn_scale_relu_block'],
        exports=True,
        kinks=(0.0,),
    ),
    "ReLU6": LayerInfo(
        samples=[
            _s('fork_relu6',
               'layer { name: "r" type: "ReLU6" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_relu6_slope_threshold',
               'layer { name: "r" type: "ReLU6" bottom: "x" top: "y" relu6_param { '
               'negative_slope: 0.1 threshold: 3 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_mobile',
               'layer { name: "r" type: "ReLU6" bottom: "x" top: "r" } layer { name: "hs" '
               'type: "HardSwish" bottom: "x" top: "hs" } layer { name: "hg" type: '
               '"HardSigmoid" bottom: "x" top: "hg" } layer { name: "sc" type: '
               '"ShuffleChannel" bottom: "x" top: "sc" shuffle_channel_param { group: 2 } } '
               'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "x" top: "dw" '
               'convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
        ],
        backward=True,
        golden=['fork_relu6', 'fork_relu6_slope_threshold'],
        exports=True,
        kinks=(0.0, 6.0),
    ),
    "Reduction": LayerInfo(
        samples=[
            _s('reduction_sum',
               'layer { name: "r" type: "Reduction" bottom: "x" top: "y" reduction_param { '
               'operation: SUM axis: 1 coeff: 0.5 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('reduction_asum',
               'layer { name: "r" type: "Reduction" bottom: "x" top: "y" reduction_param { '
               'operation: ASUM axis: 1 coeff: 0.5 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('reduction_sumsq',
               'layer { name: "r" type: "Reduction" bottom: "x" top: "y" reduction_param { '
               'operation: SUMSQ axis: 1 coeff: 0.5 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _one('reduction_sum_0_1.0', 'Reduction', 'reduction_param { operation: SUM axis: 0 '
                 'coeff: 1.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_sum_1_0.5', 'Reduction', 'reduction_param { operation: SUM axis: 1 '
                 'coeff: 0.5 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_sum_-1_-2.0', 'Reduction', 'reduction_param { operation: SUM axis: -1 '
                 'coeff: -2.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_sum_2_1.0', 'Reduction', 'reduction_param { operation: SUM axis: 2 '
                 'coeff: 1.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_asum_0_1.0', 'Reduction', 'reduction_param { operation: ASUM axis: 0 '
                 'coeff: 1.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_asum_1_0.5', 'Reduction', 'reduction_param { operation: ASUM axis: 1 '
                 'coeff: 0.5 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_asum_-1_-2.0', 'Reduction', 'reduction_param { operation: ASUM axis: '
                 '-1 coeff: -2.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_asum_2_1.0', 'Reduction', 'reduction_param { operation: ASUM axis: 2 '
                 'coeff: 1.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_sumsq_0_1.0', 'Reduction', 'reduction_param { operation: SUMSQ axis: '
                 '0 coeff: 1.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_sumsq_1_0.5', 'Reduction', 'reduction_param { operation: SUMSQ axis: '
                 '1 coeff: 0.5 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_sumsq_-1_-2.0', 'Reduction', 'reduction_param { operation: SUMSQ '
                 'axis: -1 coeff: -2.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_sumsq_2_1.0', 'Reduction', 'reduction_param { operation: SUMSQ axis: '
                 '2 coeff: 1.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_mean_0_1.0', 'Reduction', 'reduction_param { operation: MEAN axis: 0 '
                 'coeff: 1.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_mean_1_0.5', 'Reduction', 'reduction_param { operation: MEAN axis: 1 '
                 'coeff: 0.5 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_mean_-1_-2.0', 'Reduction', 'reduction_param { operation: MEAN axis: '
                 '-1 coeff: -2.0 }',
                 {'x': (2, 3, 4)}),
            _one('reduction_mean_2_1.0', 'Reduction', 'reduction_param { operation: MEAN axis: 2 '
                 'coeff: 1.0 }',
                 {'x': (2, 3, 4)}),
        ],
        backward=True,
        golden=['reduction_sum', 'reduction_asum', 'reduction_sumsq', 'reduction_mean'],
        exports=True,
        kinks=(0.0,),  # ASUM's
    ),
    "RegionLoss": LayerInfo(
        covered_by='tests/layers/test_fork_detection_yolo.py',
    ),
    "Reorg": LayerInfo(
        samples=[
            _s('export_yolo_misc',
               'layer { name: "ro" type: "Reorg" bottom: "x" top: "ro" reorg_param { stride: 2'
               ' } } layer { name: "rr" type: "Reorg" bottom: "x" top: "rr" reorg_param { '
               'stride: 2 reverse: true } } layer { name: "se" type: "SeLu" bottom: "x" top: '
               '"se" } layer { name: "sd" type: "SeLuDropout" bottom: "x" top: "sd" } layer { '
               'name: "u" type: "Unsqueeze" bottom: "x" top: "u" unsqueeze_param { dim: 1 } }',
               {'x': (2, 8, 6, 4)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "Reshape": LayerInfo(
        samples=[
            _s('reshape',
               'layer { name: "r" type: "Reshape" bottom: "x" top: "y" reshape_param { shape {'
               ' dim: 0 dim: -1 dim: 1 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_flatten_reshape',
               'layer { name: "f" type: "Flatten" bottom: "x" top: "f" flatten_param { axis: 1'
               ' end_axis: 2 } } layer { name: "r" type: "Reshape" bottom: "x" top: "r" '
               'reshape_param { shape { dim: 0 dim: -1 dim: 11 } } } layer { name: "r2" type: '
               '"Reshape" bottom: "x" top: "r2" reshape_param { shape { dim: 3 dim: 3 } axis: '
               '2 num_axes: 1 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('reshape0', 'Reshape', 'reshape_param { shape { dim: 0 dim: -1 dim: 1 } }',
                 _X4),
            _one('reshape1', 'Reshape', 'reshape_param { shape { dim: 6 dim: 4 dim: 5 } }',
                 _X4),
            _one('reshape2', 'Reshape', 'reshape_param { shape { dim: -1 } }',
                 _X4),
            _one('reshape3', 'Reshape', 'reshape_param { shape { dim: 0 dim: 0 dim: 0 dim: 0 } }',
                 _X4),
            _one('reshape4', 'Reshape', 'reshape_param { shape { dim: 1 dim: 1 dim: 1 } axis: 0 '
                 'num_axes: 0 }',
                 _X4),
            _one('reshape5', 'Reshape', 'reshape_param { shape { dim: 1 dim: 1 dim: 1 } axis: 2 '
                 'num_axes: 0 }',
                 _X4),
            _one('reshape6', 'Reshape', 'reshape_param { shape { dim: 1 dim: 1 dim: 1 } axis: -1 '
                 'num_axes: 0 }',
                 _X4),
            _one('reshape7', 'Reshape', 'reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 }',
                 _X4),
            _one('reshape8', 'Reshape', 'reshape_param { shape { dim: 2 dim: -1 } axis: 1 '
                 'num_axes: -1 }',
                 _X4),
            _one('reshape9', 'Reshape', 'reshape_param { shape { dim: 0 dim: 2 dim: -1 } axis: 1 '
                 'num_axes: 2 }',
                 _X4),
            _one('reshape10', 'Reshape', 'reshape_param { shape {  } axis: 1 num_axes: 0 }',
                 _X4),
            _one('reshape11', 'Reshape', 'reshape_param { shape { dim: 1 } axis: 4 num_axes: 0 }',
                 _X4),
            _one('reshape_3d', 'Reshape', 'reshape_param { shape { dim: 0 dim: -1 } }',
                 {'x': (2, 3, 4)}),
        ],
        backward=True,
        golden=['reshape'],
        exports=True,
    ),
    "Resize": LayerInfo(
        samples=[
            _s('fork_resize_fixed',
               'layer { name: "r" type: "Resize" bottom: "x" top: "y" resize_param { height: '
               '11 width: 10 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_resize_pyramid_scale',
               'layer { name: "r" type: "Resize" bottom: "x" top: "y" resize_param { '
               'is_pyramid_test: true out_height_scale: 2 out_width_scale: 0.5 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _one('resize_5x3', 'Resize', 'resize_param { height: 5 width: 3 }',
                 {'x': (1, 4, 4, 3)}),
            _one('resize_pyramid', 'Resize', 'resize_param { is_pyramid_test: true '
                 'out_height_scale: 1.5 out_width_scale: 2 }',
                 {'x': (1, 4, 4, 3)}),
        ],
        backward=True,
        golden=['fork_resize_fixed', 'fork_resize_pyramid_scale'],
        exports=True,
    ),
    "SPP": LayerInfo(
        samples=[
            _s('spp',
               'layer { name: "s" type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height:'
               ' 2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_spp',
               'layer { name: "s" type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height:'
               ' 3 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('spp_1_ave', 'SPP', 'spp_param { pyramid_height: 1 pool: AVE }',
                 {'x': (1, 2, 7, 6)}),
            _one('spp_2_max', 'SPP', 'spp_param { pyramid_height: 2 pool: MAX }',
                 {'x': (1, 2, 7, 6)}),
            _one('spp_3_ave', 'SPP', 'spp_param { pyramid_height: 3 pool: AVE }',
                 {'x': (1, 2, 7, 6)}),
        ],
        backward=True,
        golden=['spp'],
        exports=True,
        distinct_inputs=True,
    ),
    "Scale": LayerInfo(
        samples=[
            _s('scale_bias',
               'layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { filler { '
               'type: "gaussian" std: 1 } bias_term: true bias_filler { type: "gaussian" std: '
               '1 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('scale_two_bottoms',
               'layer { name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y" scale_param {'
               ' axis: 0 } }',
               {'x': (2, 3, 7, 7), 's': (2, 3)}, 'TRAIN', golden=True),
            _s('scale_axis2',
               'layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { axis: 2 '
               'num_axes: 1 filler { type: "gaussian" std: 1 } } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_scale_axis_range',
               'layer { name: "sc" type: "Scale" bottom: "x" top: "y" scale_param { axis: 2 '
               'num_axes: 2 bias_term: true } } layer { name: "bi" type: "Bias" bottom: "x" top: '
               '"z" bias_param { axis: 1 num_axes: 2 } } layer { name: "s0" type: "Scale" '
               'bottom: "x" top: "w" scale_param { axis: 0 num_axes: 0 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=['bn_scale_relu_block', 'scale_bias', 'scale_two_bottoms', 'scale_axis2'],
        exports=True,
    ),
    "SeLu": LayerInfo(
        samples=[
            _s('export_yolo_misc',
               'layer { name: "ro" type: "Reorg" bottom: "x" top: "ro" reorg_param { stride: 2'
               ' } } layer { name: "rr" type: "Reorg" bottom: "x" top: "rr" reorg_param { '
               'stride: 2 reverse: true } } layer { name: "se" type: "SeLu" bottom: "x" top: '
               '"se" } layer { name: "sd" type: "SeLuDropout" bottom: "x" top: "sd" } layer { '
               'name: "u" type: "Unsqueeze" bottom: "x" top: "u" unsqueeze_param { dim: 1 } }',
               {'x': (2, 8, 6, 4)}, 'TEST'),
        ],
        backward=True,
        exports=True,
        kinks=(0.0,),
    ),
    "SeLuDropout": LayerInfo(
        samples=[
            _s('export_yolo_misc',
               'layer { name: "ro" type: "Reorg" bottom: "x" top: "ro" reorg_param { stride: 2'
               ' } } layer { name: "rr" type: "Reorg" bottom: "x" top: "rr" reorg_param { '
               'stride: 2 reverse: true } } layer { name: "se" type: "SeLu" bottom: "x" top: '
               '"se" } layer { name: "sd" type: "SeLuDropout" bottom: "x" top: "sd" } layer { '
               'name: "u" type: "Unsqueeze" bottom: "x" top: "u" unsqueeze_param { dim: 1 } }',
               {'x': (2, 8, 6, 4)}, 'TEST'),
        ],
        backward=True,
        exports=True,
        kinks=(0.0,),
    ),
    "SegAccuracy": LayerInfo(
        covered_by='tests/layers/test_fork_detection_misc_losses.py',
    ),
    "SegmentationEvaluate": LayerInfo(
        covered_by='tests/layers/test_fork_misc.py',
    ),
    "ShuffleChannel": LayerInfo(
        samples=[
            _s('export_mobile',
               'layer { name: "r" type: "ReLU6" bottom: "x" top: "r" } layer { name: "hs" '
               'type: "HardSwish" bottom: "x" top: "hs" } layer { name: "hg" type: '
               '"HardSigmoid" bottom: "x" top: "hg" } layer { name: "sc" type: '
               '"ShuffleChannel" bottom: "x" top: "sc" shuffle_channel_param { group: 2 } } '
               'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "x" top: "dw" '
               'convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
        ],
        backward=True,
        exports=True,
    ),
    "Sigmoid": LayerInfo(
        samples=[
            _s('sigmoid',
               'layer { name: "s" type: "Sigmoid" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=['sigmoid'],
        exports=True,
    ),
    "SigmoidCrossEntropyLoss": LayerInfo(
        samples=[
            _s('sigmoid_xent',
               'layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" '
               'top: "loss" }',
               {'x': (2, 6), 't': (2, 6)}, 'TRAIN', golden=True),
        ],
        backward=True,
        golden=['sigmoid_xent'],
    ),
    "Silence": LayerInfo(
        samples=[
            _s('export_parameter_dummy_silence',
               'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 '
               'dim: 3 } } } layer { name: "d" type: "DummyData" top: "d" dummy_data_param { '
               'data_filler { type: "constant" value: 1.5 } shape { dim: 2 dim: 3 } } } layer '
               '{ name: "e" type: "Eltwise" bottom: "x" bottom: "p" bottom: "d" top: "e" } '
               'layer { name: "s" type: "Silence" bottom: "x" }',
               {'x': (2, 3)}, 'TEST'),
        ],
        backward=False,
        exports=True,
    ),
    "Slice": LayerInfo(
        samples=[
            _s('slice',
               'layer { name: "s" type: "Slice" bottom: "x" top: "y1" top: "y2" top: "y3" '
               'slice_param { slice_point: 1 slice_point: 4 axis: 1 } }',
               {'x': (2, 6, 7, 7)}, 'TRAIN', golden=True),
            _s('export_concat_slice',
               'layer { name: "c" type: "Concat" bottom: "x" bottom: "w" top: "c" concat_param'
               ' { axis: 2 } } layer { name: "s" type: "Slice" bottom: "c" top: "a" top: "b" '
               'top: "d" slice_param { slice_point: 1 slice_point: 5 axis: 2 } } layer { name:'
               ' "s2" type: "Slice" bottom: "x" top: "e" top: "f" }',
               {'x': (2, 4, 3, 5), 'w': (2, 4, 4, 5)}, 'TEST'),
            _one('slice_points', 'Slice', 'slice_param { slice_point: 1 slice_point: 4 }',
                 {'x': (4, 6, 5)}, tops=('y0', 'y1', 'y2')),
            _one('slice_axis0', 'Slice', 'slice_param { axis: 0 }',
                 {'x': (4, 6, 5)}, tops=('y0', 'y1')),
            _one('slice_last', 'Slice', 'slice_param { axis: -1 slice_point: 2 }',
                 {'x': (4, 6, 5)}, tops=('y0', 'y1')),
            _one('slice_dim2', 'Slice', 'slice_param { slice_dim: 2 }',
                 {'x': (4, 6, 5)}, tops=('y0', 'y1', 'y2', 'y3', 'y4')),
            _one('slice_even', 'Slice', '',
                 {'x': (4, 6, 5)}, tops=('y0', 'y1', 'y2')),
        ],
        backward=True,
        golden=['slice'],
        exports=True,
    ),
    "SmoothL1Loss": LayerInfo(
        samples=[
            _s('fork_smoothl1',
               'layer { name: "loss" type: "SmoothL1Loss" bottom: "a" bottom: "b" top: "loss" '
               '}',
               {'a': (2, 12, 2, 1), 'b': (2, 12, 2, 1)}, 'TRAIN', golden=True),
            _s('fork_smoothl1_loss_weight',
               'layer { name: "loss" type: "SmoothL1Loss" bottom: "a" bottom: "b" top: "loss" '
               'loss_weight: 2 }',
               {'a': (8, 4), 'b': (8, 4)}, 'TRAIN', golden=True),
        ],
        backward=True,
        golden=['fork_smoothl1', 'fork_smoothl1_loss_weight'],
    ),
    "SmoothL1LossOHEM": LayerInfo(
        covered_by='tests/layers/test_fork_detection_ohem.py',
    ),
    "Softmax": LayerInfo(
        samples=[
            _s('softmax',
               'layer { name: "s" type: "Softmax" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('softmax_axis2',
               'layer { name: "s" type: "Softmax" bottom: "x" top: "y" softmax_param { axis: 2'
               ' } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_inner_product_axes',
               'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
               'inner_product_param { num_output: 5 axis: 2 } } layer { name: "ipt" type: '
               '"InnerProduct" bottom: "x" top: "z" inner_product_param { num_output: 3 '
               'bias_term: false transpose: true } } layer { name: "sm" type: "Softmax" '
               'bottom: "y" top: "s" softmax_param { axis: 2 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=['softmax', 'softmax_axis2'],
        exports=True,
    ),
    "SoftmaxWithLoss": LayerInfo(
        samples=[
            _s('softmaxloss',
               'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: '
               '"loss" }',
               {'x': (4, 5), 'label': (4,)}, 'TRAIN', golden=True),
            _s('softmaxloss_spatial_ignore',
               'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: '
               '"loss" loss_param { ignore_label: 2 normalization: VALID } }',
               {'x': (2, 5, 3, 2), 'label': (2, 1, 3, 2)}, 'TRAIN', golden=True),
            _s('softmaxloss_batchnorm_norm',
               'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: '
               '"loss" loss_weight: 2.5 loss_param { normalization: BATCH_SIZE } }',
               {'x': (2, 5, 3, 2), 'label': (2, 1, 3, 2)}, 'TRAIN', golden=True),
            _one('softmaxloss_ignore_full', 'SoftmaxWithLoss', 'loss_param { ignore_label: 2 '
                 'normalization: FULL }', {'x': (2, 5, 3, 2), 'label': (2, 1, 3, 2)},
                 tops=('loss',)),
            _one('softmaxloss_ignore0_none', 'SoftmaxWithLoss', 'loss_param { ignore_label: 0 '
                 'normalization: NONE }', {'x': (2, 5, 3, 2), 'label': (2, 1, 3, 2)},
                 tops=('loss',)),
            _one('softmaxloss_axis2_ignore', 'SoftmaxWithLoss', 'softmax_param { axis: 2 } '
                 'loss_param { ignore_label: 1 }', {'x': (2, 3, 4, 2), 'label': (2, 3, 2)},
                 tops=('loss',)),
        ],
        backward=True,
        golden=['softmaxloss', 'softmaxloss_spatial_ignore', 'softmaxloss_batchnorm_norm'],
    ),
    "SoftmaxWithLossOHEM": LayerInfo(
        covered_by='tests/layers/test_fork_detection_ohem.py',
    ),
    "Split": LayerInfo(
        golden=['split_fanout'],
        covered_by='tests/core/test_net.py',
    ),
    "Swish": LayerInfo(
        samples=[
            _s('swish',
               'layer { name: "sw" type: "Swish" bottom: "x" top: "y" swish_param { beta: 1.5 '
               '} }',
               {'x': (2, 3, 4, 5)}),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _one('swish_default', 'Swish', '', _X4),
            _one('swish_beta2', 'Swish', 'swish_param { beta: 2 }', _X4),
        ],
        backward=True,
        exports=True,
    ),
    "TanH": LayerInfo(
        samples=[
            _s('tanh',
               'layer { name: "t" type: "TanH" bottom: "x" top: "y" }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=True,
        golden=['tanh'],
        exports=True,
    ),
    "Threshold": LayerInfo(
        samples=[
            _s('threshold',
               'layer { name: "t" type: "Threshold" bottom: "x" top: "y" threshold_param { '
               'threshold: 0.2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_argmax_ties',
               'layer { name: "t" type: "Threshold" bottom: "x" top: "t" } layer { name: "a" '
               'type: "ArgMax" bottom: "t" top: "a" argmax_param { axis: 1 } } layer { name: '
               '"a2" type: "ArgMax" bottom: "t" top: "a2" argmax_param { top_k: 2 } }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
            _s('export_neurons',
               'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { '
               'negative_slope: 0.1 } } layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
               ' layer { name: "ps" type: "PReLU" bottom: "x" top: "ps" prelu_param { '
               'channel_shared: true } } layer { name: "s" type: "Sigmoid" bottom: "x" top: '
               '"s" } layer { name: "t" type: "TanH" bottom: "x" top: "t" } layer { name: "e" '
               'type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.5 } } layer { name: "a" '
               'type: "AbsVal" bottom: "x" top: "a" } layer { name: "b" type: "BNLL" bottom: '
               '"x" top: "b" } layer { name: "th" type: "Threshold" bottom: "x" top: "th" '
               'threshold_param { threshold: 0.2 } } layer { name: "cl" type: "Clip" bottom: '
               '"x" top: "cl" clip_param { min: -0.5 max: 0.7 } } layer { name: "sw" type: '
               '"Swish" bottom: "x" top: "sw" swish_param { beta: 1.5 } } layer { name: "d" '
               'type: "Dropout" bottom: "x" top: "d" }',
               {'x': (2, 4, 9, 11)}, 'TEST'),
        ],
        backward=False,
        golden=['threshold'],
        exports=True,
    ),
    "Tile": LayerInfo(
        samples=[
            _s('tile',
               'layer { name: "t" type: "Tile" bottom: "x" top: "y" tile_param { axis: 1 '
               'tiles: 2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('export_crop_tile',
               'layer { name: "c" type: "Crop" bottom: "x" bottom: "w" top: "c" crop_param { '
               'axis: 2 offset: 1 offset: 3 } } layer { name: "t" type: "Tile" bottom: "c" '
               'top: "t" tile_param { axis: 1 tiles: 3 } }',
               {'x': (2, 4, 9, 11), 'w': (1, 1, 5, 6)}, 'TEST'),
            _one('tile2', 'Tile', 'tile_param { tiles: 2 }',
                 {'x': (2, 3, 4)}),
            _one('tile_axis0', 'Tile', 'tile_param { axis: 0 tiles: 3 }',
                 {'x': (2, 3, 4)}),
            _one('tile_last', 'Tile', 'tile_param { axis: -1 tiles: 2 }',
                 {'x': (2, 3, 4)}),
        ],
        backward=True,
        golden=['tile'],
        exports=True,
    ),
    "Unsqueeze": LayerInfo(
        samples=[
            _s('fork_unsqueeze_dim1',
               'layer { name: "u" type: "Unsqueeze" bottom: "x" top: "y" unsqueeze_param { '
               'dim: 1 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_unsqueeze_neg',
               'layer { name: "u" type: "Unsqueeze" bottom: "x" top: "y" unsqueeze_param { '
               'dim: -1 } }',
               {'x': (2, 3, 7)}, 'TRAIN', golden=True),
            _s('export_yolo_misc',
               'layer { name: "ro" type: "Reorg" bottom: "x" top: "ro" reorg_param { stride: 2'
               ' } } layer { name: "rr" type: "Reorg" bottom: "x" top: "rr" reorg_param { '
               'stride: 2 reverse: true } } layer { name: "se" type: "SeLu" bottom: "x" top: '
               '"se" } layer { name: "sd" type: "SeLuDropout" bottom: "x" top: "sd" } layer { '
               'name: "u" type: "Unsqueeze" bottom: "x" top: "u" unsqueeze_param { dim: 1 } }',
               {'x': (2, 8, 6, 4)}, 'TEST'),
            _one('unsqueeze_dim2', 'Unsqueeze', 'unsqueeze_param { dim: 2 }',
                 {'x': (1, 4, 4, 3)}),
        ],
        backward=True,
        golden=['fork_unsqueeze_dim1', 'fork_unsqueeze_neg'],
        exports=True,
    ),
    "Upsample": LayerInfo(
        samples=[
            _s('fork_upsample_4d',
               'layer { name: "u" type: "Upsample" bottom: "x" top: "y" upsample_param { '
               'scale: 2 } }',
               {'x': (2, 3, 7, 7)}, 'TRAIN', golden=True),
            _s('fork_upsample_3d',
               'layer { name: "u" type: "Upsample" bottom: "x" top: "y" upsample_param { '
               'scale: 3 dims_num: 3 } }',
               {'x': (2, 3, 7)}, 'TRAIN', golden=True),
            _s('export_upsample_nearest',
               'layer { name: "u" type: "Upsample" bottom: "x" top: "u" upsample_param { '
               'scale: 2 } }',
               {'x': (2, 4, 6, 5)}, 'TEST'),
            _one('upsample_scale3', 'Upsample', 'upsample_param { scale: 3 }',
                 {'x': (1, 2, 3, 2)}),
            _one('upsample_3d_scale2', 'Upsample', 'upsample_param { scale: 2 dims_num: 3 }',
                 {'x': (2, 2, 3)}),
        ],
        backward=True,
        golden=['fork_upsample_4d', 'fork_upsample_3d'],
        exports=True,
    ),
    "VideoData": LayerInfo(
        covered_by='tests/data/test_fork_seg_video_data.py',
    ),
    "WindowData": LayerInfo(
        covered_by='tests/data/test_data_layers.py',
    ),
    "YoloDetectionOutput": LayerInfo(
        covered_by='tests/layers/test_fork_detection_yolo.py',
        shapes_in_forward=True,
        exports=True,  # ONNX only: tests/export/test_export_yolo.py
    ),
    "YoloSeg": LayerInfo(
        covered_by='tests/layers/test_fork_misc.py',
    ),
    "Yolov3": LayerInfo(
        covered_by='tests/layers/test_fork_detection_yolo.py',
    ),
    "Yolov3DetectionOutput": LayerInfo(
        covered_by='tests/layers/test_fork_detection_yolo.py',
        shapes_in_forward=True,
        exports=True,  # ONNX only: tests/export/test_export_yolo.py
    ),
}

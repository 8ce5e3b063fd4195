"""Caffe's upgrade_proto: bring old net and solver definitions to the current schema.

Caffe has changed its net format several times and upgrades old files as it reads them
(``UpgradeNetAsNeeded`` / ``UpgradeSolverAsNeeded``).  The steps, in Caffe's order:

1. V0 -> V1: ``layers { layer { type: "conv" kernelsize: 5 ... } bottom: ... }``.  Padding
   layers are removed and their ``pad`` moved into the convolution or pooling layer that
   reads their output; every V0 field moves to its typed parameter message; the net keeps
   only its name, layers, ``input``, ``input_dim`` and ``force_backward``.
2. Data transformation: ``scale``/``mean_file``/``crop_size``/``mirror`` move from the
   Data, ImageData and WindowData parameters into ``transform_param``.
3. V1 -> V2: ``layers { type: ENUM }`` becomes ``layer { type: "String" }``; ``blobs_lr``,
   ``weight_decay``, ``param`` (names) and ``blob_share_mode`` become ``param { ... }``
   entries; blobs (weights) are kept.  A net that also has ``layer`` entries is refused
   (Caffe 1.0's "Refusing to upgrade inconsistent NetParameter input").
4. Input fields: ``input`` with ``input_shape`` or ``input_dim`` becomes an ``Input`` layer
   named "input" placed first; the fields are cleared either way.
5. BatchNorm: a BatchNorm layer declaring exactly three ``param`` entries (the old way of
   freezing its statistics) has them removed.

Solvers: the ``solver_type`` enum becomes the ``type`` string.

Caffe 1.0's upgrade_proto.cpp is the reference. What Caffe only logs (a V0 field given to
a layer type that has no such field, the "Attempting to upgrade ..." progress lines) is
logged with Caffe's own words through :mod:`decaffe.log` (glog's line format) and makes
:func:`upgrade_net_as_needed` return False where Caffe's does; what Caffe aborts on raises
:class:`~decaffe.errors.ParseError` naming the file and the layer.
"""

from __future__ import annotations

from .. import log
from ..errors import ParseError
from ..proto import caffe_pb2

__all__ = [
    "net_needs_upgrade", "upgrade_net", "upgrade_net_as_needed", "solver_needs_upgrade",
    "upgrade_solver", "upgrade_solver_as_needed", "net_needs_v0_to_v1_upgrade",
    "net_needs_v1_to_v2_upgrade", "net_needs_data_upgrade", "net_needs_input_upgrade",
    "net_needs_batchnorm_upgrade", "V1_LAYER_TYPES", "V0_LAYER_TYPES",
]

V1 = caffe_pb2.V1LayerParameter

# V0 type strings -> V1 enum values (Caffe's UpgradeV0LayerType); anything else is fatal.
V0_LAYER_TYPES: dict[str, int] = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# V1 enum values -> current type strings (Caffe's UpgradeV1LayerType).
V1_LAYER_TYPES: dict[int, str] = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

# The typed parameter messages a V1 layer carries over unchanged, in Caffe's order.
_V1_COPIED_PARAMS = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
    "image_data_param", "infogain_loss_param", "inner_product_param", "lrn_param",
    "memory_data_param", "mvn_param", "pooling_param", "power_param", "relu_param",
    "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
)

_SOLVER_TYPES = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}

# (V1 layer type, name of its data parameter field) for the transformation upgrade
_DATA_LAYERS = ((V1.DATA, "data_param"), (V1.IMAGE_DATA, "image_data_param"),
                (V1.WINDOW_DATA, "window_data_param"))
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _layer_label(name: str, index: int) -> str:
    return f"layer '{name}'" if name else f"layer #{index}"


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------
def net_needs_v0_to_v1_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """True when some V1 ``layers`` entry still nests a V0 ``layer`` message."""
    return any(lc.HasField("layer") for lc in param.layers)


def net_needs_v1_to_v2_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """True when the net uses the V1 ``layers`` field at all."""
    return len(param.layers) > 0


def net_needs_data_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """True when a V1 data layer still sets transformation fields in its data parameter."""
    for lc in param.layers:
        for ltype, field in _DATA_LAYERS:
            if lc.type == ltype:
                sub = getattr(lc, field)
                if any(sub.HasField(f) for f in _TRANSFORM_FIELDS):
                    return True
    return False


def net_needs_input_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """True when the net declares its inputs with the top-level ``input`` field."""
    return len(param.input) > 0


def net_needs_batchnorm_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """True when a BatchNorm layer declares exactly three ``param`` entries."""
    return any(lp.type == "BatchNorm" and len(lp.param) == 3 for lp in param.layer)


def net_needs_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """Caffe's NetNeedsUpgrade: any of the V0, V1, data, input or BatchNorm upgrades apply."""
    return (net_needs_v0_to_v1_upgrade(param) or net_needs_v1_to_v2_upgrade(param)
            or net_needs_data_upgrade(param) or net_needs_input_upgrade(param)
            or net_needs_batchnorm_upgrade(param))


# ---------------------------------------------------------------------------------------------
# V0 -> V1
# ---------------------------------------------------------------------------------------------
def _fold_padding_layers(param: caffe_pb2.NetParameter, source: str | None
                         ) -> caffe_pb2.NetParameter:
    """A copy of param without V0 padding layers, their pad moved into the layer after them."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layers[:]
    last_top: dict[str, int] = {name: -1 for name in param.input}
    for i, lc in enumerate(param.layers):
        v0 = lc.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(lc)
        for j, blob in enumerate(lc.bottom):
            if blob not in last_top:
                raise ParseError(f"{_layer_label(v0.name, i)}: unknown bottom blob '{blob}' "
                                 f"(no earlier layer or input produces it)", source)
            src_idx = last_top[blob]
            if src_idx == -1:
                continue
            src = param.layers[src_idx]
            if src.layer.type != "padding":
                continue
            # Caffe defines padding only in front of one-input conv/pool layers
            if v0.type not in ("conv", "pool"):
                raise ParseError(f"{_layer_label(v0.name, i)}: padding layer "
                                 f"'{src.layer.name}' feeds a layer of type '{v0.type}'; "
                                 "only conv and pool layers can absorb padding", source)
            if len(lc.bottom) != 1:
                raise ParseError(f"{_layer_label(v0.name, i)}: a layer fed by a padding layer "
                                 "must have exactly one bottom", source)
            if len(src.bottom) != 1 or len(src.top) != 1:
                raise ParseError(f"padding layer '{src.layer.name}' must have exactly one "
                                 "bottom and one top", source)
            target = out.layers[len(out.layers) - 1]
            target.layer.pad = src.layer.pad
            target.bottom[j] = src.bottom[0]
        for blob in lc.top:
            last_top[blob] = i
    return out


def _upgrade_v0_layer(lc: caffe_pb2.V1LayerParameter, index: int,
                      source: str | None) -> tuple[caffe_pb2.V1LayerParameter, bool]:
    """One V0 layer connection as a V1 layer; the flag is False if a field had no home."""
    out = caffe_pb2.V1LayerParameter()
    ok = True
    out.bottom.extend(lc.bottom)
    out.top.extend(lc.top)
    if not lc.HasField("layer"):
        return out, ok
    v0 = lc.layer
    label = _layer_label(v0.name, index)
    if v0.HasField("name"):
        out.name = v0.name
    t = v0.type
    if v0.HasField("type"):
        if t not in V0_LAYER_TYPES:
            raise ParseError(f"{label}: unknown V0 layer type '{t}'", source)
        out.type = V0_LAYER_TYPES[t]
    for b in v0.blobs:
        out.blobs.add().CopyFrom(b)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)

    def unknown(field: str) -> None:
        nonlocal ok
        log.error(f"Unknown parameter {field} for layer type {t}")
        ok = False

    def route(field: str, targets: dict[str, tuple[str, str, str]]) -> None:
        """Move a V0 field to targets[type] = (parameter message, its field, how): 'set' a
        scalar, 'add' to a repeated field, 'copy' a sub-message, or copy the 'whole'
        message."""
        if not v0.HasField(field):
            return
        if t not in targets:
            unknown(field)
            return
        msg_name, dst, how = targets[t]
        msg = getattr(out, msg_name)
        value = getattr(v0, field)
        if how == "add":
            getattr(msg, dst).append(value)
        elif how == "copy":
            getattr(msg, dst).CopyFrom(value)
        elif how == "whole":
            msg.CopyFrom(value)
        else:
            setattr(msg, dst, value)

    def conv_ip(dst: str, how: str = "set") -> dict[str, tuple[str, str, str]]:
        return {"conv": ("convolution_param", dst, how),
                "innerproduct": ("inner_product_param", dst, how)}

    route("num_output", conv_ip("num_output"))
    route("biasterm", conv_ip("bias_term"))
    route("weight_filler", conv_ip("weight_filler", "copy"))
    route("bias_filler", conv_ip("bias_filler", "copy"))
    route("pad", {"conv": ("convolution_param", "pad", "add"),
                  "pool": ("pooling_param", "pad", "set")})
    route("kernelsize", {"conv": ("convolution_param", "kernel_size", "add"),
                         "pool": ("pooling_param", "kernel_size", "set")})
    route("group", {"conv": ("convolution_param", "group", "set")})
    route("stride", {"conv": ("convolution_param", "stride", "add"),
                     "pool": ("pooling_param", "stride", "set")})
    if v0.HasField("pool"):
        if t == "pool":
            # V0 and current PoolMethod enums share names and numbers
            name = caffe_pb2.V0LayerParameter.PoolMethod.Name(v0.pool)
            out.pooling_param.pool = caffe_pb2.PoolingParameter.PoolMethod.Value(name)
        else:
            unknown("pool")
    route("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio", "set")})
    for f in ("local_size", "alpha", "beta", "k"):
        route(f, {"lrn": ("lrn_param", f, "set")})
    route("source", {"data": ("data_param", "source", "set"),
                     "hdf5_data": ("hdf5_data_param", "source", "set"),
                     "images": ("image_data_param", "source", "set"),
                     "window_data": ("window_data_param", "source", "set"),
                     "infogain_loss": ("infogain_loss_param", "source", "set")})
    if v0.HasField("scale"):
        out.transform_param.scale = v0.scale
    if v0.HasField("meanfile"):
        out.transform_param.mean_file = v0.meanfile
    route("batchsize", {"data": ("data_param", "batch_size", "set"),
                        "hdf5_data": ("hdf5_data_param", "batch_size", "set"),
                        "images": ("image_data_param", "batch_size", "set"),
                        "window_data": ("window_data_param", "batch_size", "set")})
    if v0.HasField("cropsize"):
        out.transform_param.crop_size = v0.cropsize
    if v0.HasField("mirror"):
        out.transform_param.mirror = v0.mirror
    route("rand_skip", {"data": ("data_param", "rand_skip", "set"),
                        "images": ("image_data_param", "rand_skip", "set")})
    route("shuffle_images", {"images": ("image_data_param", "shuffle", "set")})
    route("new_height", {"images": ("image_data_param", "new_height", "set")})
    route("new_width", {"images": ("image_data_param", "new_width", "set")})
    route("concat_dim", {"concat": ("concat_param", "concat_dim", "set")})
    route("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold", "set")})
    route("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold", "set")})
    route("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction", "set")})
    route("det_context_pad", {"window_data": ("window_data_param", "context_pad", "set")})
    route("det_crop_mode", {"window_data": ("window_data_param", "crop_mode", "set")})
    route("hdf5_output_param", {"hdf5_output": ("hdf5_output_param", "", "whole")})
    return out, ok


def _upgrade_v0_net(param: caffe_pb2.NetParameter, source: str | None) -> bool:
    padded = _fold_padding_layers(param, source)
    ok = True
    layers = []
    for i, lc in enumerate(padded.layers):
        layer, fine = _upgrade_v0_layer(lc, i, source)
        layers.append(layer)
        ok &= fine
    param.Clear()
    if padded.HasField("name"):
        param.name = padded.name
    param.layers.extend(layers)
    param.input.extend(padded.input)
    param.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        param.force_backward = padded.force_backward
    return ok


# ---------------------------------------------------------------------------------------------
# Data transformation, V1 -> V2, input fields, BatchNorm
# ---------------------------------------------------------------------------------------------
def _upgrade_data_transformation(param: caffe_pb2.NetParameter) -> None:
    for lc in param.layers:
        for ltype, field in _DATA_LAYERS:
            if lc.type != ltype:
                continue
            sub = getattr(lc, field)
            # Caffe touches both messages for every such layer, so both become present
            sub.SetInParent()
            lc.transform_param.SetInParent()
            for f in _TRANSFORM_FIELDS:
                if sub.HasField(f):
                    setattr(lc.transform_param, f, getattr(sub, f))
                    sub.ClearField(f)


def _upgrade_v1_layer(v1: caffe_pb2.V1LayerParameter, out: caffe_pb2.LayerParameter,
                      index: int, source: str | None) -> bool:
    ok = True
    out.Clear()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    for rule in v1.include:
        out.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        out.exclude.add().CopyFrom(rule)
    if v1.HasField("type"):
        if v1.type not in V1_LAYER_TYPES:
            raise ParseError(f"{_layer_label(v1.name, index)}: unknown V1 layer type "
                             f"{v1.type}", source)
        out.type = V1_LAYER_TYPES[v1.type]
    for b in v1.blobs:
        out.blobs.add().CopyFrom(b)

    def spec(i: int) -> caffe_pb2.ParamSpec:
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        # V1 and ParamSpec DimCheckMode enums share names and numbers
        name = caffe_pb2.V1LayerParameter.DimCheckMode.Name(mode)
        spec(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(name)
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for field in _V1_COPIED_PARAMS:
        if v1.HasField(field):
            getattr(out, field).CopyFrom(getattr(v1, field))
    if v1.HasField("layer"):
        log.error("Input NetParameter has V0 layer -- ignoring.")
        ok = False
    return ok


def _upgrade_v1_net(param: caffe_pb2.NetParameter, source: str | None) -> bool:
    ok = True
    if len(param.layer) > 0:
        # Caffe 1.0 stops here (LOG(FATAL)); older Caffe dropped the `layer` entries silently
        raise ParseError(
            "Refusing to upgrade inconsistent NetParameter input; the definition includes "
            "both 'layer' and 'layers' fields. The current format defines 'layer' fields "
            "with string type like layer { type: 'Layer' ... } and not layers { type: "
            "LAYER ... }. Manually switch the definition to 'layer' format to continue. "
            f"({len(param.layer)} 'layer' and {len(param.layers)} 'layers' entries; first "
            f"'layer': '{param.layer[0].name}', first 'layers': '{param.layers[0].name}')",
            source)
    v1_layers = list(param.layers)
    upgraded = []
    for i, v1 in enumerate(v1_layers):
        lp = caffe_pb2.LayerParameter()
        if not _upgrade_v1_layer(v1, lp, i, source):
            log.error(f"Upgrade of input layer {i} failed.")
            ok = False
        upgraded.append(lp)
    del param.layers[:]
    param.layer.extend(upgraded)
    return ok


def _upgrade_input(param: caffe_pb2.NetParameter, source: str | None) -> None:
    has_shape = len(param.input_shape) > 0
    has_dim = len(param.input_dim) > 0
    if has_shape or has_dim:
        n = len(param.input)
        if has_shape and len(param.input_shape) < n:
            raise ParseError(f"{n} inputs but only {len(param.input_shape)} input_shape "
                             "entries", source)
        if not has_shape and len(param.input_dim) < 4 * n:
            raise ParseError(f"{n} inputs need {4 * n} input_dim values (4 per input), "
                             f"found {len(param.input_dim)}", source)
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.input_param.SetInParent()
        for i, top in enumerate(param.input):
            layer.top.append(top)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(param.input_shape[i])
            else:
                shape.dim.extend(param.input_dim[4 * i: 4 * i + 4])
        # the Input layer goes first so every later layer finds its bottoms
        rest = list(param.layer)
        del param.layer[:]
        param.layer.append(layer)
        param.layer.extend(rest)
    param.ClearField("input")
    param.ClearField("input_shape")
    param.ClearField("input_dim")


def _upgrade_batchnorm(param: caffe_pb2.NetParameter) -> None:
    for lp in param.layer:
        if lp.type == "BatchNorm" and len(lp.param) == 3:
            del lp.param[:]


def upgrade_net_as_needed(param: caffe_pb2.NetParameter, source: str | None = None,
                          keep_batchnorm_params: bool = False) -> bool:
    """Caffe's UpgradeNetAsNeeded, in place.  Returns False when some V0/V1 field could not
    be carried over (logged, as Caffe does, and the upgrade goes on); raises ParseError
    where Caffe aborts (a net with both ``layer`` and ``layers``, an unknown V0 type, a
    padding layer Caffe cannot fold, an input without a shape).

    keep_batchnorm_params leaves a BatchNorm layer's three ``param`` entries in place, which
    Caffe never does (it drops them, and Caffe 1.0's BatchNorm adds ``lr_mult: 0`` ones);
    decaffe's own net building follows Caffe and does not use it."""
    ok = True
    where = source or ""
    if net_needs_v0_to_v1_upgrade(param):
        log.info("Attempting to upgrade input file specified using deprecated "
                 f"V0LayerParameter: {where}")
        if not _upgrade_v0_net(param, source):
            ok = False
            log.error("Warning: had one or more problems upgrading V0NetParameter to "
                      "NetParameter (see above); continuing anyway.")
        else:
            log.info("Successfully upgraded file specified using deprecated V0LayerParameter")
        log.warning("Note that future Caffe releases will not support V0NetParameter; use "
                    "./build/tools/upgrade_net_proto_text for prototxt and "
                    "./build/tools/upgrade_net_proto_binary for model weights upgrade this "
                    "and any other net protos to the new format.")
    if net_needs_data_upgrade(param):
        log.info("Attempting to upgrade input file specified using deprecated "
                 f"transformation parameters: {where}")
        _upgrade_data_transformation(param)
        log.info("Successfully upgraded file specified using deprecated data transformation "
                 "parameters.")
        log.warning("Note that future Caffe releases will only support transform_param "
                    "messages for transformation fields.")
    if net_needs_v1_to_v2_upgrade(param):
        log.info("Attempting to upgrade input file specified using deprecated "
                 f"V1LayerParameter: {where}")
        if not _upgrade_v1_net(param, source):
            ok = False
            log.error("Warning: had one or more problems upgrading V1LayerParameter (see "
                      "above); continuing anyway.")
        else:
            log.info("Successfully upgraded file specified using deprecated V1LayerParameter")
    if net_needs_input_upgrade(param):
        log.info("Attempting to upgrade input file specified using deprecated input fields: "
                 f"{where}")
        _upgrade_input(param, source)
        log.info("Successfully upgraded file specified using deprecated input fields.")
        log.warning("Note that future Caffe releases will only support input layers and not "
                    "input fields.")
    if net_needs_batchnorm_upgrade(param) and not keep_batchnorm_params:
        log.info(f"Attempting to upgrade batch norm layers using deprecated params: {where}")
        _upgrade_batchnorm(param)
        log.info("Successfully upgraded batch norm layers using deprecated params.")
    return ok


def upgrade_net(param: caffe_pb2.NetParameter, source: str | None = None,
                keep_batchnorm_params: bool = False) -> caffe_pb2.NetParameter:
    """Upgrade param to the current format in place (Caffe's UpgradeNetAsNeeded) and return
    it.  source names the file in messages and errors; keep_batchnorm_params as in
    upgrade_net_as_needed."""
    upgrade_net_as_needed(param, source, keep_batchnorm_params)
    return param


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------
def solver_needs_upgrade(param: caffe_pb2.SolverParameter) -> bool:
    """Caffe's SolverNeedsTypeUpgrade: the deprecated ``solver_type`` enum is set."""
    return param.HasField("solver_type")


def upgrade_solver_as_needed(param: caffe_pb2.SolverParameter,
                             source: str | None = None) -> bool:
    """Caffe's UpgradeSolverAsNeeded, in place: ``solver_type: ADAGRAD`` becomes
    ``type: "AdaGrad"``.  Setting both fields is an error, as in Caffe."""
    if not solver_needs_upgrade(param):
        return True
    log.info("Attempting to upgrade input file specified using deprecated 'solver_type' "
             f"field (enum)': {source or ''}")
    if param.HasField("type"):
        raise ParseError("failed to upgrade solver: the old solver_type field (enum) and the "
                         "new type field (string) cannot both be specified", source)
    if param.solver_type not in _SOLVER_TYPES:
        raise ParseError(f"unknown solver_type {param.solver_type}", source)
    param.type = _SOLVER_TYPES[param.solver_type]
    param.ClearField("solver_type")
    log.info("Successfully upgraded file specified using deprecated 'solver_type' field "
             "(enum) to 'type' field (string).")
    log.warning("Note that future Caffe releases will only support 'type' field (string) for "
                "a solver's type.")
    return True


def upgrade_solver(param: caffe_pb2.SolverParameter, source: str | None = None
                   ) -> caffe_pb2.SolverParameter:
    """Upgrade param in place (solver_type -> type) and return it."""
    upgrade_solver_as_needed(param, source)
    return param

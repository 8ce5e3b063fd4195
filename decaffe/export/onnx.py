"""ONNX export: each layer of the export graph written as ONNX nodes by its LayerExport.

The graph is built directly with onnx's helpers (no tracing): every Caffe detail is spelled
out with standard operators (explicit pads for Caffe's pooling windows, a divisor correction
for its AVE border rule, select_last_index for its ArgMax ties, unrolled RNN/LSTM steps),
weights become initializers named ``layer/k`` (Caffe's blob k of that layer), values keep
Caffe's blob names, and every operator is checked against the requested opset: a layer that
needs a newer one is named in the error.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..errors import DecaffeError
from .graph import ExportGraph, Node
from .registry import ExportError, exporter_for

if TYPE_CHECKING:
    import numpy.typing as npt
    import onnx  # only for the annotation: onnx is optional

# The lowest opset at which each operator takes the form written here; operators not listed
# take theirs at MIN_OPSET.
MIN_OPSET = 9
OP_MIN_OPSET = {
    "Softmax": 13,          # one axis (before 13: coerced to 2-D)
    "Split": 13,            # split sizes as an input
    "Squeeze": 13, "Unsqueeze": 13,  # axes as an input
    "ReduceSum": 13,        # axes as an input
    "Slice": 10,            # starts/ends/axes/steps as inputs
    "Pad": 11,              # pads as an input
    "Clip": 11,             # min/max as inputs
    "ArgMax": 12,           # select_last_index: Caffe's ties go to the larger index
    "TopK": 11,             # largest/sorted attributes
    "Resize": 13,           # roi/scales/sizes inputs, optional roi
    "NonMaxSuppression": 11,
    "Range": 11,
    "GatherElements": 11,
    "ScatterND": 11,
    "ScatterElements": 11,
    "GatherND": 11,
    "CumSum": 11,
}
_OR_EQUAL = {"GreaterOrEqual": "Greater", "LessOrEqual": "Less"}
# operators whose axes turned from an attribute into an input at opset 18
_REDUCE_AXES_INPUT_18 = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                         "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


def _onnx():
    try:
        import onnx  # onnx is optional (the export extra): loaded when an ONNX graph is written
    except ImportError:  # pragma: no cover - depends on the installation
        raise DecaffeError("ONNX export needs the onnx package: pip install "
                           "'decaffe[export]'") from None
    return onnx


# The default opset's floor: opset 17 is what TensorRT 8.6+, OpenVINO, OpenCV 5's dnn and
# onnx2torch all read, and it has every operator form decaffe writes (LayerNormalization
# aside); newer opsets only raise operator versions (Conv-22) that older runtimes refuse.
DEFAULT_OPSET = 17


def default_opset() -> int:
    """The floor of the default opset (DEFAULT_OPSET); build_default raises it only for a
    layer whose operators need more."""
    return DEFAULT_OPSET


class OpsetTooLow(ExportError):
    """A layer's operator needs a newer opset than the one being written."""

    def __init__(self, message: str, needed: int, layer: str | None,
                 type: str | None) -> None:
        super().__init__(message, layer=layer, type=type)
        self.needed = needed


def build_default(graph: ExportGraph) -> tuple:
    """(model, opset, reason) at the default opset: the lowest at least DEFAULT_OPSET at which
    every layer's operators exist (reason names the layer that needed more, else "")."""
    onnx = _onnx()
    opset, reason = DEFAULT_OPSET, ""
    while True:
        try:
            model = build_model(graph, opset)
        except OpsetTooLow as e:
            if e.needed <= opset or e.needed > onnx.defs.onnx_opset_version():
                raise
            opset = e.needed
            reason = f"layer '{e.layer}' ({e.type}) needs opset {opset}"
            continue
        check_model(model)
        return model, opset, reason


class OnnxBuilder:
    """What a LayerExport's ``onnx`` method writes through: operators, constants, blobs."""

    def __init__(self, graph: ExportGraph, opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._blob_names: dict[int, str] = {}
        self._names: set[str] = set()
        self._count = 0
        self.node: Node | None = None
        # {value: {axis: name}}: output axes whose size the data decides (DetectionOutput)
        self.dims: dict[str, dict[int, str]] = {}
        # {MAX pooling mask top: its int64 index value}: unpooling reads the indices as
        # integers (never through float, which bf16 inference rounds), and the check reads
        # the runtime's choices of near-tied maxima from them
        self.indices: dict[str, str] = {}

    # -- names ----------------------------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        prefix = self.node.name if self.node is not None else "graph"
        while True:
            self._count += 1
            name = f"{prefix}/{hint}{self._count}"
            if name not in self._names:
                self._names.add(name)
                return name

    # -- shapes ---------------------------------------------------------------------------------
    def shape(self, value: str) -> tuple[int, ...]:
        return self.graph.shape(value)

    def target(self, value: str) -> list[int]:
        return self.graph.target_shape(value, self.node)

    # -- operators ------------------------------------------------------------------------------
    def need(self, op_type: str, opset: int, why: str = "") -> None:
        if self.opset < opset:
            what = f"ONNX {op_type}{' (' + why + ')' if why else ''}"
            raise OpsetTooLow(f"{what} needs opset {opset} or newer; -opset {self.opset} is too "
                              "low", opset, layer=self.node.name if self.node else None,
                              type=self.node.type if self.node else None)

    def op(self, op_type: str, inputs: list[str], out: str | list[str] | int | None = None,
           **attrs: object) -> str | list[str]:
        """Add one operator; returns its output name (or names when out is a count/list)."""
        from onnx import helper  # onnx is optional (the export extra)

        if not (op_type == "ReduceSum" and "axes" in attrs):  # the attribute form: any opset
            self.need(op_type, OP_MIN_OPSET.get(op_type, MIN_OPSET))
        if op_type in _OR_EQUAL and self.opset >= 16:
            # GreaterOrEqual/LessOrEqual became version 16 at opset 16 (bfloat16), which
            # converters such as onnx2torch refuse: Or(Greater, Equal) is the same predicate
            # (NaN included) in operators of version 13
            a, c = inputs
            strict = self.op(_OR_EQUAL[op_type], [a, c])
            return self.op("Or", [strict, self.op("Equal", [a, c])], out)
        if out is None:
            outs = [self.fresh(op_type.lower())]
        elif isinstance(out, int):
            outs = [self.fresh(op_type.lower()) for _ in range(out)]
        elif isinstance(out, str):
            outs = [out]
        else:
            outs = list(out)
        name = self.fresh(op_type) if self.node is None else f"{self.node.name}/{op_type}" \
            f"{len(self.nodes)}"
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0] if isinstance(out, (str, type(None))) else outs

    def const(self, array: npt.ArrayLike, dtype: npt.DTypeLike = np.float32,
              hint: str = "c") -> str:
        from onnx import numpy_helper  # onnx is optional (the export extra)

        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def ints(self, values: npt.ArrayLike) -> str:
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1), np.int64, "i")

    def scalar(self, value: float) -> str:
        return self.const(np.float32(value), hint="s")

    def blob(self, node: Node, k: int,
             transform: Callable[[np.ndarray], np.ndarray] | None = None) -> str:
        """Blob k of the node's layer as an initializer named ``layer/k`` (shared parameters
        once); with transform, a new constant transform(array)."""
        p = node.layer.blob_params[k]
        arr = p.detach().cpu().float().numpy()
        if transform is not None:  # blob k reshaped or transposed: still named layer/k
            from onnx import numpy_helper  # onnx is optional (the export extra)

            name = f"{node.name}/{k}"
            if name in self._names:
                return self.const(transform(arr), hint=f"blob{k}_")
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(
                np.ascontiguousarray(transform(arr), dtype=np.float32), name))
            return name
        key = id(p)
        if key not in self._blob_names:
            from onnx import numpy_helper  # onnx is optional (the export extra)

            name = f"{node.name}/{k}"
            while name in self._names:
                name += "_"
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
            self._blob_names[key] = name
        return self._blob_names[key]

    # -- common patterns ------------------------------------------------------------------------
    def reshape(self, x: str, shape: Sequence[int], out: str | None = None) -> str:
        return self.op("Reshape", [x, self.ints(shape)], out)

    def reduce(self, op_type: str, x: str, axes: Iterable[int], keepdims: bool,
               out: str | None = None) -> str:
        axes = [int(a) for a in axes]
        if (op_type == "ReduceSum" and self.opset >= 13) or (
                op_type in _REDUCE_AXES_INPUT_18 and self.opset >= 18):
            return self.op(op_type, [x, self.ints(axes)], out, keepdims=int(keepdims))
        return self.op(op_type, [x], out, axes=axes, keepdims=int(keepdims))

    def mul_scalar(self, x: str, value: float, out: str | None = None) -> str:
        if value == 1.0 and out is None:
            return x
        return self.op("Mul", [x, self.scalar(value)], out)

    def identity(self, x: str, out: str) -> str:
        return self.op("Identity", [x], out)

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
              out: str | None = None, steps: Sequence[int] | None = None) -> str:
        ins = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            ins.append(self.ints(steps))
        return self.op("Slice", ins, out)


def build_model(graph: ExportGraph, opset: int) -> onnx.ModelProto:
    """The ONNX ModelProto of an export graph at this opset."""
    onnx = _onnx()
    from onnx import TensorProto, helper  # onnx is optional (the export extra)

    if opset < MIN_OPSET:
        raise ExportError(f"-opset {opset}: decaffe writes ONNX opset {MIN_OPSET} or newer")
    if opset > onnx.defs.onnx_opset_version():
        raise ExportError(f"-opset {opset}: the installed onnx {onnx.__version__} knows opsets "
                          f"up to {onnx.defs.onnx_opset_version()}")
    b = OnnxBuilder(graph, opset)
    b._names.update(graph.inputs)
    for node in graph.nodes:
        b._names.update(node.tops)
    for node in graph.nodes:
        ex = exporter_for(node, graph)
        b.node = node
        ex.onnx(b, node)
    b.node = None
    graph.onnx_indices = dict(b.indices)

    def info(v: str):
        shape = list(graph.shapes[v])
        if graph.dynamic_batch and shape and graph.varying.get(v, (False,))[0]:
            shape[0] = "batch"
        for axis, name in b.dims.get(v, {}).items():
            shape[axis] = name
        return helper.make_tensor_value_info(v, TensorProto.FLOAT, shape)

    inputs = [info(v) for v in graph.inputs]
    outputs = []
    for v in graph.outputs:
        if graph.dynamic_batch and any(graph.varying.get(v, ())[1:]):
            # an axis other than 0 grows with the batch: leave the shape to the runtime
            outputs.append(helper.make_tensor_value_info(v, TensorProto.FLOAT, None))
        else:
            outputs.append(info(v))
    g = helper.make_graph(b.nodes, graph.net.name or "decaffe_net", inputs, outputs,
                          initializer=b.initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="decaffe", producer_version=_version())
    # the IR version the opset needs (8 for opset 17), not the newest onnx writes: runtimes
    # that bundle an older onnxruntime (pnnx's) or parser refuse newer IR versions
    needed = helper.find_min_ir_version_for(list(model.opset_import), True)
    model.ir_version = min(max(needed, 7), _max_ir_version())
    return model


def _version() -> str:
    return __version__


@functools.lru_cache(maxsize=1)
def _max_ir_version() -> int:
    """The newest IR version both onnx and onnxruntime read."""
    onnx = _onnx()
    best = onnx.IR_VERSION
    try:
        import onnxruntime as ort  # onnxruntime is optional (the export extra)
        from onnx import TensorProto, helper  # onnx is optional (the export extra)
    except ImportError:
        return best
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    for ir in range(best, 6, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = ir
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:
            continue
        return ir
    return best


def with_outputs(path: str, values: dict[str, str], graph: ExportGraph) -> onnx.ModelProto:
    """The model at path with these int64 values (of {top: value}) as extra outputs."""
    onnx = _onnx()
    from onnx import TensorProto, helper  # onnx is optional (the export extra)

    model = onnx.load(path)
    for top, v in values.items():
        model.graph.output.append(helper.make_tensor_value_info(
            v, TensorProto.INT64, list(graph.shapes[top]) if not graph.dynamic_batch else None))
    return model


def check_model(model: onnx.ModelProto, path: str | None = None) -> None:
    """onnx's checker (full check, with shape inference); raises ExportError on a failure."""
    onnx = _onnx()
    try:
        if path is not None and model.ByteSize() > 1_900_000_000:
            onnx.checker.check_model(path, full_check=True)
        else:
            onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"onnx's checker rejects the exported model: {e}") from e


def save_model(model: onnx.ModelProto, path: str) -> None:
    onnx = _onnx()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    onnx.save_model(model, path)

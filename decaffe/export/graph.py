"""The export graph: a built Net seen as a list of layer nodes over named values.

Every exporter (ONNX, torch.export, generated PyTorch source) walks the same graph:

- the net's Input tops are the graph inputs (shapes as the net has them, or as
  ``input_shapes`` overrides them);
- the Split layers the net inserted are dropped (their tops alias the bottom's value);
- every other layer of the range [0, end] becomes a Node whose bottoms and tops are
  *values*: an in-place layer writes a new value under the same blob name, so each
  value gets a unique name (a blob's last value keeps the blob's name; earlier ones are
  ``blob/layer``);
- the outputs are Caffe's: the blobs written in the range and read by no later layer
  of the range (sorted by name, as the Net's outputs are).

A layer type reaches the exporters through the ``EXPORTS`` table of
:mod:`decaffe.export.registry` (``register_export``), one entry per Caffe type with its ONNX
and PyTorch forms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DecaffeError, suggest
from .registry import ExportError, exporter_for

if TYPE_CHECKING:  # for annotations only
    from ..net import Net


# ----------------------------------------------------------------------------------------------
# the graph
# ----------------------------------------------------------------------------------------------
@dataclass
class Node:
    """One exported layer: its LayerParameter, the built layer, and its values."""

    index: int
    name: str
    type: str
    lp: Any
    layer: Any
    bottoms: list[str]
    tops: list[str]
    bottom_blobs: list[str]
    top_blobs: list[str]

    def fail(self, message: str) -> ExportError:
        return ExportError(message, layer=self.name, type=self.type)


@dataclass
class ExportGraph:
    net: Any
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]]
    # per value, which axes change with the inputs' axis 0 (only with dynamic_batch)
    varying: dict[str, tuple[bool, ...]] = field(default_factory=dict)
    dynamic_batch: bool = False
    end: int = -1
    blob_of: dict[str, str] = field(default_factory=dict)  # value -> the blob it is a value of
    # the net the checks compare with, and its last layer (the unfolded net with fold_bn)
    reference: Any = None
    reference_end: int = -1
    # {MAX pooling mask top: the int64 value holding its indices} of the last ONNX model built
    onnx_indices: dict[str, str] = field(default_factory=dict)
    # how a train_val net was made its deploy form (decaffe.export.deploy), one line each
    deploy_changes: list[str] = field(default_factory=list)

    def readers(self, value: str) -> list[tuple[Node, int]]:
        """The (node, bottom position) pairs that read a value."""
        return [(n, j) for n in self.nodes for j, b in enumerate(n.bottoms) if b == value]

    def shape(self, value: str) -> tuple[int, ...]:
        return self.shapes[value]

    def target_shape(self, value: str, node: Node | None = None) -> list[int]:
        """The static shape of a value, with the one axis that grows with the batch as −1
        when the batch is dynamic (for Reshape-like operations)."""
        shape = list(self.shapes[value])
        if not self.dynamic_batch:
            return shape
        vary = [i for i, v in enumerate(self.varying.get(value, ())) if v]
        if len(vary) > 1:
            raise ExportError(f"its output '{value}' has several axes {vary} that change with "
                              "the batch size; export without -dynamic_batch",
                              layer=node.name if node else None,
                              type=node.type if node else None)
        for i in vary:
            shape[i] = -1
        return shape

    def varies(self, value: str, axis: int) -> bool:
        v = self.varying.get(value, ())
        return self.dynamic_batch and axis < len(v) and v[axis]


def _infer_shapes(net: Net, nodes: list[Node], inputs: dict[str, tuple[int, ...]]
                  ) -> dict[str, tuple[int, ...]]:
    """Each value's shape for these input shapes, by the layers' own Reshape."""
    shapes = dict(inputs)
    for node in nodes:
        bshapes = [shapes[v] for v in node.bottoms]
        try:
            tshapes = node.layer.reshape(bshapes)
        except DecaffeError as e:
            msg = str(e).removeprefix(f"layer '{node.name}': ")
            raise ExportError(f"cannot take bottom shapes {bshapes}: {msg}", layer=node.name,
                              type=node.type) from e
        except Exception as e:  # a torch shape error inside a layer's reshape
            raise ExportError(f"cannot take bottom shapes {bshapes}: {e}", layer=node.name,
                              type=node.type) from e
        for v, s in zip(node.tops, tshapes):
            shapes[v] = tuple(int(d) for d in s)
    return shapes


def parse_input_shapes(spec: str) -> dict[str, tuple[int, ...]]:
    """`-input_shape data:1,3,224,224;im_info:1,3` -> {name: shape}."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in spec.replace(";", " ").split())):
        if ":" not in part:
            raise DecaffeError(f"-input_shape: '{part}' is not NAME:D0,D1,...")
        name, dims = part.rsplit(":", 1)
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise DecaffeError(f"-input_shape: '{dims}' is not a list of integers (in "
                               f"'{part}')") from None
        if not shape or any(d <= 0 for d in shape):
            raise DecaffeError(f"-input_shape: '{part}' needs positive dimensions")
        out[name] = shape
    return out


def build_graph(net: Net, end: str | None = None,
                input_shapes: dict[str, tuple[int, ...]] | None = None,
                dynamic_batch: bool = False) -> ExportGraph:
    """The export graph of a built net (see the module docstring).

    end: the last layer exported (its name); input_shapes: {input blob: shape} replacing
    the net's own input shapes; dynamic_batch: axis 0 of every input is symbolic.
    Raises ExportError for a net without inputs, an unknown end layer or input name, and
    for any layer in the range that cannot be exported.
    """
    records = net.layer_records
    names = [rec.name for rec in records]
    if end is not None:
        if end not in names:
            raise ExportError(f"-end: no layer named '{end}'{suggest(end, names)}")
        last = names.index(end)
    else:
        last = len(names) - 1
    blob_names = list(net.blobs)
    blob_list = net._blobs
    # the index of each blob's last writer in the range: its value keeps the blob's name
    last_writer: dict[int, int] = {}
    for rec in records[:last + 1]:
        for bid in rec.tops:
            last_writer[bid] = rec.index
    current: dict[int, str] = {}
    used: set[str] = set()

    input_blobs = {bid for rec in records[:last + 1] if rec.is_input for bid in rec.tops}

    def new_value(bid: int, li: int) -> str:
        blob = blob_names[bid]
        # inputs keep their blob's name even when a layer later writes the blob in place
        keep = (li == last_writer.get(bid) and bid not in input_blobs) or \
            records[li].is_input
        name = blob if keep else f"{blob}/{names[li]}"
        k = 1
        base = name
        while name in used:
            k += 1
            name = f"{base}#{k}"
        used.add(name)
        return name

    inputs: list[str] = []
    input_shape_of: dict[str, tuple[int, ...]] = {}
    nodes: list[Node] = []
    read_later: set[str] = set()
    blob_of: dict[str, str] = {}
    for rec in records[:last + 1]:
        li, layer = rec.index, rec.layer
        lp = net.net_param.layer[li]
        bottoms = [current[bid] for bid in rec.bottoms]
        if layer.type == "Input":
            for bid in rec.tops:
                v = new_value(bid, li)
                current[bid] = v
                blob_of[v] = blob_names[bid]
                inputs.append(v)
                input_shape_of[v] = tuple(blob_list[bid].shape)
            continue
        if layer.type == "Split":
            for bid in rec.tops:
                current[bid] = bottoms[0]
            read_later.update(bottoms)
            continue
        tops = [new_value(bid, li) for bid in rec.tops]
        read_later.update(bottoms)
        nodes.append(Node(li, lp.name, layer.type, lp, layer, bottoms, tops,
                          list(rec.bottom_names), list(rec.top_names)))
        for bid, v in zip(rec.tops, tops):
            current[bid] = v
            blob_of[v] = blob_names[bid]
    if input_shapes:
        for name, shape in input_shapes.items():
            if name not in input_shape_of:
                raise ExportError(f"-input_shape: the net has no input '{name}' (its inputs: "
                                  f"{', '.join(inputs) or 'none'}){suggest(name, inputs)}")
            input_shape_of[name] = tuple(shape)
    graph = ExportGraph(net, nodes, inputs, [], {}, dynamic_batch=dynamic_batch, end=last,
                        blob_of=blob_of)
    for node in nodes:  # unsupported layers first: their message says what to do
        exporter_for(node, graph, refuse=False)
    if not inputs:
        raise ExportError("the net has no inputs: a deploy net declares them with Input "
                          "layers (or input/input_shape fields), and the exported graph "
                          "takes them as its arguments")
    outputs = sorted({v for v in current.values() if v not in read_later and v not in inputs})
    graph.outputs = outputs
    graph.shapes = _infer_shapes(net, nodes, input_shape_of)
    if dynamic_batch:
        bigger = {v: (s[0] + 1,) + tuple(s[1:]) if s else s for v, s in input_shape_of.items()}
        try:
            other = _infer_shapes(net, nodes, bigger)
        except ExportError as e:
            raise ExportError(f"-dynamic_batch: the net does not take another size on axis 0 "
                              f"of its inputs: {e}", layer=e.layer, type=None) from e
        finally:
            _infer_shapes(net, nodes, input_shape_of)  # layers keep plans for the real shapes
        graph.varying = {v: tuple(a != b for a, b in zip(graph.shapes[v], other[v]))
                         if len(other[v]) == len(graph.shapes[v])
                         else (True,) * len(graph.shapes[v]) for v in graph.shapes}
    for node in nodes:
        exporter_for(node, graph)
    return graph


def blob_arrays(node: Node) -> list[np.ndarray]:
    """The layer's parameter blobs as float32 arrays."""
    return [p.detach().cpu().float().numpy() for p in node.layer.blob_params]


def count(shape: Iterable[int]) -> int:
    return math.prod(shape)


"""Layer: the base class of every Caffe layer, and the registry keyed by Caffe's type string.

A layer is a torch.nn.Module built from its LayerParameter:

- ``setup(bottom_shapes)`` reads and checks its parameters and creates its blobs
  (Caffe's LayerSetUp), with ``add_blob``;
- ``reshape(bottom_shapes)`` returns the top shapes (Caffe's Reshape); the default
  runs ``forward`` on PyTorch's meta device, which computes shapes and no values;
- ``forward(*bottoms)`` computes the tops with torch operations; autograd gives the
  backward, so a layer writes no backward unless torch cannot differentiate it.

Bottom and top counts are checked by the net from the class attributes below,
as Caffe's ExactNumBottomBlobs and friends do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, TypeVar

import torch

from .errors import LayerParamError, NetError, suggest

if TYPE_CHECKING:
    from .proto import caffe_pb2

_REGISTRY: dict[str, type[Layer]] = {}
_L = TypeVar("_L", bound="Layer")


def register(*type_names: str) -> Callable[[type[_L]], type[_L]]:
    """Class decorator: make the class the implementation of these Caffe layer types."""

    def deco(cls: type[_L]) -> type[_L]:
        for name in type_names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise RuntimeError(f"layer type {name!r} registered twice")
            _REGISTRY[name] = cls
        # its own name, not one inherited from the registered class it extends
        if "type" not in cls.__dict__:
            cls.type = type_names[0]
        return cls

    return deco


def layer_class(type_name: str, layer_name: str = "?") -> type[Layer]:
    """The class registered for a Caffe type, or a NetError suggesting close names."""
    importlib.import_module(f"{__package__}.layers")  # registers every layer type

    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise NetError(f"unknown layer type '{type_name}'{suggest(type_name, _REGISTRY)}",
                       layer=layer_name) from None


def layer_type_list() -> list[str]:
    """Every registered Caffe layer type, sorted (pycaffe's caffe.layer_type_list)."""
    importlib.import_module(f"{__package__}.layers")
    return sorted(_REGISTRY)


# What a layer's forward returns: its top, or its tops in order
Tops = torch.Tensor | tuple[torch.Tensor, ...]
Shape = tuple[int, ...]


class Layer(torch.nn.Module):
    """Base class: one Caffe layer, configured by its LayerParameter."""

    type: ClassVar[str] = ""
    # Blob-count constraints, checked by the net before setup (None: no constraint).
    exact_bottoms: ClassVar[int | None] = None
    min_bottoms: ClassVar[int | None] = None
    max_bottoms: ClassVar[int | None] = None
    exact_tops: ClassVar[int | None] = None
    min_tops: ClassVar[int | None] = None
    max_tops: ClassVar[int | None] = None
    # Layers that make their required tops even when the prototxt names fewer (AutoTopBlobs).
    auto_tops: ClassVar[bool] = False
    # Loss layers put loss_weight 1 on their first top unless the prototxt says otherwise.
    is_loss: ClassVar[bool] = False
    # Indices of blobs that never receive a gradient (BatchNorm's statistics: Caffe's
    # backward computes no diff for them; the solver still applies their ParamSpec).
    no_grad_blobs: ClassVar[tuple[int, ...]] = ()
    # Layers that read no bottoms and produce data (Data, Input, ...): run without a graph.
    is_data: ClassVar[bool] = False
    # What Caffe's Backward_cpu reads of the blobs besides the tops' diffs and the layer's own
    # blobs (decaffe.backward uses it when no forward recorded a graph, or a blob was written
    # since): "bottoms", their data (the backward re-runs the forward on the blobs under
    # autograd); "tops", the tops' data too (backward_from_blobs is Caffe's formula); "kept",
    # only what the layer's forward kept (a mask, an argmax), so a recorded graph stays exact.
    backward_reads: ClassVar[str] = "bottoms"
    # Layers whose CPU kernels sum in an order that depends on the batch size: in TEST phase
    # each item is computed as in a group of this many items (decaffe.items); 0: not needed.
    item_group: ClassVar[int] = 0

    def __init__(self, lp: caffe_pb2.LayerParameter, phase: int) -> None:
        super().__init__()
        self.lp = lp
        self.name = lp.name
        self.phase = phase
        self.blob_params = torch.nn.ParameterList()
        self.bottom_names: list[str] = list(lp.bottom)
        self.top_names: list[str] = list(lp.top)

    # -- to be written by each layer -------------------------------------------------------
    def setup(self, bottom_shapes: list[Shape]) -> None:
        """Read and check parameters; create blobs. Default: nothing to set up."""

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        """Top shapes for these bottom shapes. Default: a forward on the meta device."""
        params = {n: torch.empty(p.shape, device="meta", dtype=p.dtype)
                  for n, p in self.named_parameters()}
        buffers = {n: torch.empty(b.shape, device="meta", dtype=b.dtype)
                   for n, b in self.named_buffers()}
        bottoms = [torch.empty(s, device="meta") for s in bottom_shapes]
        with torch.no_grad():
            out = torch.func.functional_call(self, {**params, **buffers}, tuple(bottoms))
        if isinstance(out, torch.Tensor):
            out = (out,)
        return [tuple(t.shape) for t in out]

    def forward(self, *bottoms: torch.Tensor) -> Tops:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor],
                            need: list[bool]) -> list[torch.Tensor | None]:
        """Caffe's Backward_cpu for a layer whose backward reads its tops' data
        (``backward_reads = "tops"``): the bottoms' diffs (None where not needed) from the
        blobs' current data and the tops' diffs, each tensor of its blob's shape."""
        raise NotImplementedError(f"{type(self).__name__}.backward_from_blobs")

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Whether force_backward may ask for this bottom's gradient (labels: no)."""
        return True

    def set_iter(self, iteration: int, max_iter: int) -> None:
        """The solver's iteration and max_iter, given before each forward-backward (the
        eric612/MobileNet-YOLO fork's Layer::set_iter, for layers with a training schedule).
        Default: ignored."""

    # -- helpers for layers ---------------------------------------------------------------------
    def add_blob(self, tensor: torch.Tensor, requires_grad: bool = True) -> torch.nn.Parameter:
        """Append a parameter blob (weights, bias, statistics) in Caffe's order."""
        p = torch.nn.Parameter(tensor, requires_grad=requires_grad)
        self.blob_params.append(p)
        return p

    def blob(self, i: int) -> torch.nn.Parameter:
        return self.blob_params[i]

    @property
    def num_blobs(self) -> int:
        return len(self.blob_params)

    def error(self, message: str, field: str | None = None) -> LayerParamError:
        """An error naming this layer (and the offending field)."""
        if field:
            message = f"{field}: {message}"
        return LayerParamError(message, layer=self.name)

    def check(self, condition: bool, message: str, field: str | None = None) -> None:
        if not condition:
            raise self.error(message, field)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, type={self.type!r}"


class ElementwiseLayer(Layer):
    """A layer whose single top has its single bottom's shape (neurons)."""

    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [bottom_shapes[0]]

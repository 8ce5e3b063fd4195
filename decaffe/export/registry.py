"""The table of layer exports: one ``LayerExport`` per Caffe layer type, keyed by type.

An exporter module (``export/layers.py`` for BVLC's types, ``export/forks.py`` for the
forks') registers its classes with ``@register_export("Type")``; types that never belong in
a deploy graph are named with ``refuse_types``. Registering a type twice (or both exporting
and refusing it) raises DecaffeError naming the type and the entry already there. This
module imports no exporter: ``decaffe.export`` imports them, which fills the table before
any exporter looks a type up through ``exporter_for``. ``node`` and ``graph`` arguments are
``decaffe.export.graph.Node`` and ``ExportGraph``, ``b`` an ``onnx.OnnxBuilder`` and ``s`` a
``pytorch_source.SourceBuilder``: typed Any here, as those modules import this one (the
exporters' own methods name them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from ..errors import DecaffeError, NetError, suggest


class ExportError(NetError):
    """A net or layer that cannot be exported; names the layer, its type and the reason."""

    def __init__(self, message: str, layer: str | None = None, type: str | None = None,
                 blob: str | None = None) -> None:
        self.type = type
        if layer is not None and type:
            message = f"({type}) {message}"
        super().__init__(message, layer=layer, blob=blob)


class LayerExport:
    """How one Caffe layer type exports. Subclasses write:

    - ``refuse(node, graph) -> str | None``: why this layer (its parameters, phase or
      shapes) cannot be exported, or None;
    - ``onnx(b, node)``: ONNX nodes (through ``b``, an OnnxBuilder) writing node.tops;
    - ``torch(s, node) -> str``: one Python expression (through ``s``, a SourceBuilder)
      whose value is the top (a tuple for several tops).
    """

    # the tops' values may not change with axis 0 of the inputs (-dynamic_batch)
    fixed_batch: ClassVar[str | None] = None

    def refuse(self, node: Any, graph: Any) -> str | None:
        return None

    def onnx(self, b: Any, node: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def torch(self, s: Any, node: Any) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


EXPORTS: dict[str, LayerExport] = {}

# Types that have no place in a deploy graph, and why (the message names the way out).
NOT_EXPORTED: dict[str, str] = {}


_Export = TypeVar("_Export", bound=type[LayerExport])


def register_export(*type_names: str) -> Callable[[_Export], _Export]:
    """Class decorator: the LayerExport of these Caffe layer types (one instance each)."""

    def deco(cls: _Export) -> _Export:
        for name in type_names:
            if name in EXPORTS or name in NOT_EXPORTED:
                raise DecaffeError(f"layer type '{name}' already has an export entry "
                                   f"({_entry_name(name)}); {cls.__name__} would replace it")
            EXPORTS[name] = cls()
        return cls

    return deco


def refuse_types(reason: str, *type_names: str) -> None:
    """Layer types that are never exported, with the reason given to the user."""
    for name in type_names:
        if name in EXPORTS or name in NOT_EXPORTED:
            raise DecaffeError(f"layer type '{name}' already has an export entry "
                               f"({_entry_name(name)}); it cannot also be refused")
        NOT_EXPORTED[name] = reason


def _entry_name(name: str) -> str:
    if name in EXPORTS:
        return type(EXPORTS[name]).__name__
    return f"refused: {NOT_EXPORTED[name]}"


def exporter_for(node: Any, graph: Any, refuse: bool = True) -> LayerExport:
    """The LayerExport of a node, or an ExportError saying why it has none (refuse: also
    ask the entry whether it takes this layer's configuration)."""
    ex = EXPORTS.get(node.type)
    if ex is None:
        reason = NOT_EXPORTED.get(node.type)
        if reason is None and getattr(node.layer, "is_loss", False):
            reason = NOT_EXPORTED.get("SoftmaxWithLoss")
        elif reason is None and getattr(node.layer, "is_data", False) and node.type != "Input":
            reason = NOT_EXPORTED.get("Data")
        if reason is None:
            reason = (f"no exporter for layer type '{node.type}'"
                      f"{suggest(node.type, EXPORTS)}; the exportable types are listed in "
                      "docs/compat.md (## Export)")
        raise ExportError(reason, layer=node.name, type=node.type)
    if not refuse:
        return ex
    why = ex.refuse(node, graph)
    if why:
        raise ExportError(why, layer=node.name, type=node.type)
    if graph.dynamic_batch and ex.fixed_batch:
        raise ExportError(f"{ex.fixed_batch}; export without -dynamic_batch",
                          layer=node.name, type=node.type)
    return ex

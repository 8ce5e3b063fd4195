"""Prototxt text for one-layer test nets: an Input layer and a layer with its bottoms/tops."""

from netbuild import input_layer as inp  # noqa: F401  (the layer tests' name)
from netbuild import layer


def lay(type_: str, bottoms, tops, body: str = "", name: str = "l") -> str:
    """netbuild.layer with the type first and the name last (this helper's order)."""
    return layer(name, type_, bottoms, tops, body)

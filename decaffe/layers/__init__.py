"""Every Caffe layer type, one module per family; importing this package registers them all."""

import importlib as _importlib

from . import common, norm  # noqa: F401

# Families written as separate modules; each registers its types on import.
for _name in ("vision", "neuron", "shape", "loss", "data", "recurrent", "python_layer"):
    try:
        _importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _e:  # a family not written yet
        if _e.name != f"{__name__}.{_name}":
            raise

"""decaffe: Caffe, decaffeinated. Caffe's formats, layers, solvers and pycaffe API on PyTorch."""

import importlib as _importlib

from .errors import (  # noqa: F401
    DataError,
    DecaffeError,
    FormatError,
    LayerParamError,
    NetError,
    ParseError,
    SolverError,
)
from .mode import TEST, TRAIN, set_device, set_mode_cpu, set_mode_gpu, set_random_seed  # noqa: F401
from .proto import caffe_pb2  # noqa: F401

__version__ = "1.0.0"

# Names whose modules import torch load on first use, so that tools which only read and
# write Caffe's files (upgrades, conversions) start in a fraction of a second.
_LAZY = {
    "Net": ("pycaffe.net", "Net"),  # the engine's Net with pycaffe's methods
    "Blob": ("blob", "Blob"),
    "TorchLayer": ("layer", "Layer"),
    "layer_type_list": ("layer", "layer_type_list"),
    "register": ("layer", "register"),
    # NetSpec's L and P are caffe.layers / caffe.params (or decaffe.netspec.layers/params):
    # decaffe.layers is the package of layer implementations.
    "NetSpec": ("netspec", "NetSpec"),
    "to_proto": ("netspec", "to_proto"),
    "get_solver": ("solvers", "get_solver"),
    "SGDSolver": ("solvers", "SGDSolver"),
    "NesterovSolver": ("solvers", "NesterovSolver"),
    "AdaGradSolver": ("solvers", "AdaGradSolver"),
    "RMSPropSolver": ("solvers", "RMSPropSolver"),
    "AdaDeltaSolver": ("solvers", "AdaDeltaSolver"),
    "AdamSolver": ("solvers", "AdamSolver"),
    "set_precision": ("precision", "set_precision"),
    "compile_net": ("compile", "compile_net"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(_importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'decaffe' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

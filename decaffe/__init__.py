"""decaffe: Caffe, decaffeinated. Caffe's formats, layers, solvers and pycaffe API on PyTorch."""

from .errors import (DataError, DecaffeError, FormatError, LayerParamError, NetError,  # noqa: F401
                     ParseError, SolverError)
from .layer import Layer as TorchLayer, layer_type_list, register  # noqa: F401
from .mode import (TEST, TRAIN, set_device, set_mode_cpu, set_mode_gpu,  # noqa: F401
                   set_random_seed)
from .blob import Blob  # noqa: F401
from .net import Net  # noqa: F401
from .proto import caffe_pb2  # noqa: F401

__version__ = "1.0.0"

"""pycaffe's ``caffe._caffe``: the names BVLC's C++ binding (python/caffe/_caffe.cpp) defines,
here decaffe's classes and functions under those names.

Scripts rarely import it directly; ``caffe`` and ``caffe.pycaffe`` re-export what they need.
The binding's vector wrappers (BlobVec, LayerVec, StringVec, ...) are Python lists in decaffe,
except ``BlobVec``, a Python layer's ``self.blobs`` (with ``add_blob``).
"""

from decaffe import TEST, TRAIN, Net, __version__, layer_type_list  # noqa: F401
from decaffe.blob import Blob  # noqa: F401
from decaffe.layers.python_layer import BlobVec, Layer  # noqa: F401
from decaffe.log import init_log, log  # noqa: F401
from decaffe.mode import (  # noqa: F401
    set_device,
    set_mode_cpu,
    set_mode_gpu,
    set_multiprocess,
    set_random_seed,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)
from decaffe.proto.caffe_pb2 import LayerParameter, SolverParameter  # noqa: F401
from decaffe.pycaffe.parallel import NCCL, has_nccl  # noqa: F401
from decaffe.pycaffe.timer import Timer  # noqa: F401
from decaffe.solvers import (  # noqa: F401
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    Solver,
    get_solver,
)

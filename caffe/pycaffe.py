"""pycaffe's ``caffe.pycaffe``: the module that wraps the binding's Net with the Python-side
methods (blobs, params, forward, backward, forward_all, ...) and re-exports the solvers,
NCCL and Timer. In decaffe the Net carries those methods itself."""

from . import io  # noqa: F401
from ._caffe import (  # noqa: F401
    NCCL,
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    Net,
    RMSPropSolver,
    SGDSolver,
    Timer,
)

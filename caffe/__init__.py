"""pycaffe, decaffeinated: `import caffe` gives decaffe under pycaffe's names.

Every public name of pycaffe's `caffe` package is here, with pycaffe's behaviour:
Net, the solvers, NetSpec (layers/params/to_proto), io, Classifier, Detector, draw,
coord_map, Timer, logging, mode and device settings, and the multi-process API.
"""

from decaffe import (  # noqa: F401
                     TEST,
                     TRAIN,
                     Net,
                     __version__,  # noqa: F401
                     layer_type_list,
                     set_device,
                     set_mode_cpu,
                     set_mode_gpu,
                     set_random_seed,
)
from decaffe.layers.python_layer import Layer  # noqa: F401
from decaffe.log import init_log, log  # noqa: F401
from decaffe.mode import (  # noqa: F401
                     set_multiprocess,
                     set_solver_count,
                     set_solver_rank,
                     solver_count,
                     solver_rank,
)
from decaffe.precision import set_precision  # noqa: F401  (decaffe's: bf16/fp16/tf32 passes)
from decaffe.pycaffe.parallel import NCCL, has_nccl  # noqa: F401
from decaffe.pycaffe.timer import Timer  # noqa: F401
from decaffe.solvers import (  # noqa: F401
                     AdaDeltaSolver,
                     AdaGradSolver,
                     AdamSolver,
                     NesterovSolver,
                     RMSPropSolver,
                     SGDSolver,
                     get_solver,
)
from decaffe.threads import set_num_threads  # noqa: F401  (decaffe's: fixes the CPU threads)

# pycaffe's __init__ imports these submodules, so they are attributes of the package:
# caffe.proto.caffe_pb2.BlobProto() works after a plain `import caffe`.
from . import _caffe, io, proto, pycaffe  # noqa: F401
from .classifier import Classifier  # noqa: F401
from .detector import Detector  # noqa: F401
from .net_spec import NetSpec, layers, params, to_proto  # noqa: F401

"""pycaffe, decaffeinated: `import caffe` gives decaffe under pycaffe's names."""

from decaffe import (TEST, TRAIN, Net, layer_type_list, set_device,  # noqa: F401
                     set_mode_cpu, set_mode_gpu, set_random_seed)
from decaffe import __version__  # noqa: F401
from decaffe.layers.python_layer import Layer  # noqa: F401

from .net_spec import NetSpec, layers, params, to_proto  # noqa: F401

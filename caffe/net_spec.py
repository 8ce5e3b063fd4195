"""pycaffe's caffe.net_spec module."""

from decaffe.netspec import (Function, Layers, NetSpec, Parameters, Top,  # noqa: F401
                             assign_proto, layers, param_name_dict, params, to_proto)

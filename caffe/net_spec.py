"""pycaffe's caffe.net_spec module."""

from decaffe.netspec import (  # noqa: F401
                             Function,
                             Layers,
                             NetSpec,
                             Parameters,
                             Top,
                             assign_proto,
                             layers,
                             param_name_dict,
                             params,
                             to_proto,
)

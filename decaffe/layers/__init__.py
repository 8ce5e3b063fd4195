"""Every Caffe layer type, one module per family; importing this package registers them all."""

# isort: off
from . import common, data, loss, neuron, norm, python_layer, recurrent, shape, vision  # noqa: F401
from . import data_ssd, detection_ssd  # noqa: F401
# isort: on

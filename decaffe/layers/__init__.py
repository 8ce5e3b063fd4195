"""Every Caffe layer type, one module per family; importing this package registers them all."""

from . import common, data, loss, neuron, norm, python_layer, recurrent, shape, vision  # noqa: F401

# The forks' layer families, one line each (so that each family's branch adds one line).
# isort: off
from . import data_ssd  # noqa: F401
from . import detection_ssd  # noqa: F401
from . import face  # noqa: F401
from . import fork_data  # noqa: F401
from . import fork_misc  # noqa: F401
from . import fork_norm  # noqa: F401
from . import fork_shape  # noqa: F401
from . import mobile  # noqa: F401
from . import rcnn  # noqa: F401
from . import resize  # noqa: F401
from . import video_data  # noqa: F401
from . import yolo  # noqa: F401
# isort: on

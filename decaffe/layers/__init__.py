"""Every Caffe layer type, one module per family; importing this package registers them all."""

from . import (  # noqa: F401
    common,
    data,
    data_ssd,
    detection_ssd,
    face,
    loss,
    neuron,
    norm,
    python_layer,
    rcnn,
    recurrent,
    segeval,
    shape,
    vision,
    yolo,
)

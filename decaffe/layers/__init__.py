"""Every Caffe layer type, one module per family; importing this package registers them all."""

from . import (  # noqa: F401
    common,
    data,
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

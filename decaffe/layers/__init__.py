"""Every Caffe layer type, one module per family; importing this package registers them all.

BVLC Caffe's families are the modules here; the forks' are in ``layers/forks/``."""

from . import (  # noqa: F401
    common,
    data,
    forks,
    loss,
    neuron,
    norm,
    python_layer,
    recurrent,
    shape,
    vision,
)

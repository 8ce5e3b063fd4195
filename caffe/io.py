"""pycaffe's caffe.io: image loading, the Transformer, and array/proto conversions."""

from decaffe.pycaffe.io import *  # noqa: F401,F403
from decaffe.pycaffe.io import __all__  # noqa: F401

"""pycaffe's caffe.io: image loading, the Transformer, and array/proto conversions."""

from decaffe.pyio import *  # noqa: F401,F403
from decaffe.pyio import __all__  # noqa: F401

"""pycaffe's caffe.detector module."""

from decaffe.pycaffe.detector import Detector  # noqa: F401

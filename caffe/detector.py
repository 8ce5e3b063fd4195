"""pycaffe's caffe.detector module."""

from decaffe.detector import Detector  # noqa: F401

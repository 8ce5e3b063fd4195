"""pycaffe's caffe.classifier module."""

from decaffe.pycaffe.classifier import Classifier  # noqa: F401

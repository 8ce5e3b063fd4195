"""pycaffe's caffe.classifier module."""

from decaffe.classifier import Classifier  # noqa: F401

"""pycaffe's caffe.proto package: `from caffe.proto import caffe_pb2`."""

from decaffe.proto import caffe_pb2  # noqa: F401

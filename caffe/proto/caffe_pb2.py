"""`import caffe.proto.caffe_pb2` as pycaffe allows: decaffe's generated schema module."""

import sys

from decaffe.proto import caffe_pb2 as _caffe_pb2

sys.modules[__name__] = _caffe_pb2

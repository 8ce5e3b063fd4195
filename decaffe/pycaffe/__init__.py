"""pycaffe's surface on decaffe's engine: what BVLC's python/caffe adds to the C++ binding.

- :mod:`~decaffe.pycaffe.net`: ``Net``, the engine's Net with pycaffe's Python-side methods
  (``forward_all``, ``forward_backward_all``, ``_batch``, ``set_input_arrays``) as a mixin;
- :mod:`~decaffe.pycaffe.io`: ``caffe.io`` (image loading, the Transformer, array/proto
  conversions);
- :mod:`~decaffe.pycaffe.classifier`, :mod:`~decaffe.pycaffe.detector`: ``Classifier`` and
  ``Detector``;
- :mod:`~decaffe.pycaffe.draw`, :mod:`~decaffe.pycaffe.coord_map`: ``caffe.draw`` and
  ``caffe.coord_map``;
- :mod:`~decaffe.pycaffe.timer`: ``caffe.Timer``;
- :mod:`~decaffe.pycaffe.parallel`: ``caffe.NCCL`` (implemented in decaffe.distributed.nccl).

The ``caffe`` package re-exports these under pycaffe's names. The engine (net, blob, layer,
layers/, solvers/, formats/, data/) never imports this package. It imports none of its
modules itself, so that `decaffe draw_net -help` (which imports draw) loads no PyTorch.
"""

"""Multi-process training on torch.distributed: Caffe 1.0's multi-GPU semantics for the same
solver file on several devices or hosts.

- :mod:`~decaffe.distributed.nccl`: pycaffe's ``caffe.NCCL`` (the gradient exchange) and the
  process group (``init_group``, ``new_uid``, ``shutdown``); ``decaffe.pycaffe.parallel``
  re-exports it.
- :mod:`~decaffe.distributed.launch`: ``decaffe train -gpu 0,1,...`` / ``-workers N``, one worker
  process per device.
- :mod:`~decaffe.distributed.worker`: what a worker does under torchrun or that parent.
- :mod:`~decaffe.distributed.watchdog`: heartbeats, so a dead worker is named, not waited for.
- ``-sync_bn``'s BatchNorm over the global batch is engine arithmetic: :mod:`decaffe.sync_bn`.
- :mod:`~decaffe.distributed.resume`: ``-snapshot auto``.
"""

from .nccl import (  # noqa: F401
    NCCL,
    ParallelError,
    backend,
    has_nccl,
    init_group,
    new_uid,
    shutdown,
)

"""pycaffe's ``caffe.NCCL`` on torch.distributed. The code lives in
:mod:`decaffe.distributed.nccl` with the rest of multi-process training."""

from ..distributed.nccl import (  # noqa: F401
    NCCL,
    ParallelError,
    backend,
    has_nccl,
    init_group,
    new_uid,
    shutdown,
)

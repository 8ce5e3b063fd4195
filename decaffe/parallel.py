"""pycaffe's NCCL on torch.distributed; kept at this path for existing imports. The code
lives in :mod:`decaffe.distributed.nccl` with the rest of multi-process training."""

from .distributed.nccl import (  # noqa: F401
    NCCL,
    ParallelError,
    backend,
    has_nccl,
    init_group,
    new_uid,
    shutdown,
)

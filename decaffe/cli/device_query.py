"""`decaffe device_query [-gpu N|N,M|all]`: Caffe's `caffe device_query`, the CUDA devices
PyTorch sees and their properties (all of them when -gpu is not given).

With no CUDA device: a line saying so, exit status 0, unless -gpu asked for a device (then
an error, status 1).
"""

from __future__ import annotations

from .. import log
from ..errors import DecaffeError
from .common import parse_gpus
from .flags import FlagParser, gpu_ids

# (label, property name, formatter) in Caffe's DeviceQuery order, where torch reports it
_FIELDS = (
    ("Major revision number", "major", str),
    ("Minor revision number", "minor", str),
    ("Name", "name", str),
    ("Total global memory", "total_memory", str),
    ("Total shared memory per block", "shared_memory_per_block", str),
    ("Registers per multiprocessor", "regs_per_multiprocessor", str),
    ("Warp size", "warp_size", str),
    ("Maximum threads per multiprocessor", "max_threads_per_multi_processor", str),
    ("L2 cache size", "L2_cache_size", str),
    ("Number of multiprocessors", "multi_processor_count", str),
    ("Integrated", "is_integrated", lambda v: "Yes" if v else "No"),
    ("Multi-GPU board", "is_multi_gpu_board", lambda v: "Yes" if v else "No"),
)


def device_lines(device_id: int) -> list[str]:
    """'Label: value' lines for one device, as Caffe's Caffe::DeviceQuery prints them."""
    import torch  # after parsing: -help loads no PyTorch

    props = torch.cuda.get_device_properties(device_id)
    lines = [f"{'Device id:':31s}{device_id}"]
    for label, attr, fmt in _FIELDS:
        if hasattr(props, attr):
            lines.append(f"{label + ':':31s}{fmt(getattr(props, attr))}")
    return lines


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Show diagnostic information for GPU devices (caffe "
                    "device_query).")
    fp.flag("gpu", default="", check=gpu_ids,
            help="device ids separated by ',' or 'all' (default: all)")
    args = fp.parse(argv[1:])
    import torch  # after flag parsing: -help answers without loading PyTorch

    log.info(f"Querying GPUs {args.gpu}")
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    if args.gpu:
        gpus = parse_gpus(args.gpu)
        if not available:
            raise DecaffeError(f"-gpu {args.gpu}: no CUDA device is available to PyTorch "
                               f"(torch {torch.__version__})")
        for g in gpus:
            if g >= count:
                raise DecaffeError(f"-gpu {g}: no such device ({count} CUDA devices)")
    else:
        gpus = list(range(count))
    if not gpus:
        cuda = torch.version.cuda or "none"
        log.info(f"No CUDA device is available to PyTorch (torch {torch.__version__}, CUDA "
                 f"build {cuda}); decaffe runs on the CPU")
        return 0
    for g in gpus:
        for line in device_lines(g):
            log.info(line)
    return 0

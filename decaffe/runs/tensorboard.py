"""`decaffe train -tensorboard DIR`: a run's records as TensorBoard event files.

The same values as the run folder's events (decaffe.runs): scalars ``train/loss``,
``train/lr``, ``train/images_per_s`` (train/loss is the displayed, smoothed loss), each
train net output as ``output/<name>`` (``output/<name>/<j>`` for an output of several
values: the last pass's value), ``test/<score>`` for test net 0 and ``test<i>/<score>`` for
test net i; histograms of each BatchNorm layer's stored statistics ``bn/<layer>/mean``,
``bn/<layer>/var`` and its Scale's ``bn/<layer>/gamma`` and ``bn/<layer>/beta``; each at
the record's iteration. torch's SummaryWriter writes them from its own thread.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DecaffeError

EXTRA = "tensorboard"


class TensorBoardSink:
    """Writes run records into TensorBoard event files under `log_dir`."""

    def __init__(self, log_dir: str, flush_secs: int = 10):
        try:
            # tensorboard is an optional extra; torch's writer needs it installed
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DecaffeError(f"-tensorboard needs the tensorboard package: pip install "
                               f"'decaffe[{EXTRA}]'") from None
        try:
            self.writer = SummaryWriter(log_dir=log_dir, flush_secs=flush_secs)
        except OSError as e:
            raise DecaffeError(f"-tensorboard: cannot write to '{log_dir}': {e}") from None
        self.log_dir = log_dir

    def write(self, record: dict) -> None:
        kind = record.get("kind")
        it = int(record.get("iter", 0))
        w = self.writer
        if kind == "train":
            for key in ("loss", "lr", "images_per_s"):
                _scalar(w, f"train/{key}", record.get(key), it)
            for name, value in (record.get("outputs") or {}).items():
                if isinstance(value, list):
                    for j, v in enumerate(value):
                        _scalar(w, f"output/{name}/{j}", v, it)
                else:
                    _scalar(w, f"output/{name}", value, it)
        elif kind == "test":
            net = int(record.get("net", 0))
            group = "test" if net == 0 else f"test{net}"
            for name, value in (record.get("scores") or {}).items():
                _scalar(w, f"{group}/{name}", value, it)
        elif kind == "bn":
            for layer, entry in (record.get("layers") or {}).items():
                for key in ("mean", "var", "gamma", "beta"):
                    values = entry.get(key)
                    if values:
                        arr = np.asarray([np.nan if v is None else v for v in values],
                                         dtype=np.float64)
                        arr = arr[np.isfinite(arr)]
                        if arr.size:
                            w.add_histogram(f"bn/{layer}/{key}", arr, it)
        elif kind == "end":
            w.flush()

    def close(self) -> None:
        self.writer.close()


def _scalar(writer, tag: str, value, step: int) -> None:
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        writer.add_scalar(tag, float(value), step)

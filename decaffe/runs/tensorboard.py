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
import time

import numpy as np

from ..errors import DecaffeError

EXTRA = "tensorboard"


class TensorBoardSink:
    """Writes run records into TensorBoard event files under `log_dir`. Each record's values
    make one event, and the events go to the writer's thread in batches, at most every
    `handover_secs` seconds (and at the end): each hand-over wakes that thread, which then
    holds the GIL the training thread needs (measured here: ~4 ms a wake-up on a loaded
    2-core machine, a few % of the step if it happened per record)."""

    def __init__(self, log_dir: str, flush_secs: int = 10, bins: int = 64,
                 handover_secs: float = 5.0) -> None:
        try:
            # tensorboard is an optional extra; torch's writer needs it installed
            from torch.utils.tensorboard import SummaryWriter, summary
        except ImportError:
            raise DecaffeError(f"-tensorboard needs the tensorboard package: pip install "
                               f"'decaffe[{EXTRA}]'") from None
        try:
            self.writer = SummaryWriter(log_dir=log_dir, flush_secs=flush_secs)
        except OSError as e:
            raise DecaffeError(f"-tensorboard: cannot write to '{log_dir}': {e}") from None
        self._summary = summary
        self.log_dir = log_dir
        self.bins = bins
        self.handover_secs = handover_secs
        self._batch: list[tuple] = []
        self._last_handover = time.monotonic()

    def write(self, record: dict) -> None:
        kind = record.get("kind")
        it = int(record.get("iter", 0))
        values: list = []
        if kind == "train":
            for key in ("loss", "lr", "images_per_s"):
                self._scalar(values, f"train/{key}", record.get(key))
            for name, value in (record.get("outputs") or {}).items():
                if isinstance(value, list):
                    for j, v in enumerate(value):
                        self._scalar(values, f"output/{name}/{j}", v)
                else:
                    self._scalar(values, f"output/{name}", value)
        elif kind == "test":
            net = int(record.get("net", 0))
            group = "test" if net == 0 else f"test{net}"
            for name, value in (record.get("scores") or {}).items():
                self._scalar(values, f"{group}/{name}", value)
        elif kind == "bn":
            for layer, entry in (record.get("layers") or {}).items():
                for key in ("mean", "var", "gamma", "beta"):
                    data = entry.get(key)
                    if data:
                        arr = np.asarray([np.nan if v is None else v for v in data],
                                         dtype=np.float64)
                        arr = arr[np.isfinite(arr)]
                        if arr.size:
                            values.append(self._histogram(f"bn/{layer}/{key}", arr))
        if values:
            merged = type(self._summary.scalar("x", 0.0))(value=values)
            self._batch.append((merged, it, time.time()))
        if kind == "end" or time.monotonic() - self._last_handover >= self.handover_secs:
            self.hand_over()
            if kind == "end":
                self.writer.flush()

    def hand_over(self) -> None:
        """Give the waiting events to the writer's thread."""
        batch, self._batch = self._batch, []
        file_writer = self.writer.file_writer
        for summary, step, walltime in batch:
            file_writer.add_summary(summary, step, walltime)
        self._last_handover = time.monotonic()

    def _histogram(self, tag: str, arr: np.ndarray):
        """One Summary.Value with a histogram of `bins` equal buckets (torch's add_histogram
        spends ~1 ms a call on its bucket search; this one np.histogram)."""
        # the optional tensorboard package (the extra), present once the writer was made
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

        lo, hi = float(arr.min()), float(arr.max())
        counts, edges = np.histogram(arr, bins=self.bins if hi > lo else 1,
                                     range=(lo, hi) if hi > lo else (lo - 0.5, lo + 0.5))
        hist = HistogramProto(min=lo, max=hi, num=int(arr.size), sum=float(arr.sum()),
                              sum_squares=float(np.dot(arr, arr)),
                              bucket_limit=edges[1:].tolist(), bucket=counts.tolist())
        return Summary.Value(tag=tag, histo=hist)

    def _scalar(self, out: list, tag: str, value: object) -> None:
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out.extend(self._summary.scalar(tag, float(value)).value)

    def close(self) -> None:
        self.hand_over()
        self.writer.close()

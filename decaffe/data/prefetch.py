"""Prefetching: batches prepared by a background thread while the net computes.

Caffe's BasePrefetchingDataLayer keeps ``data_param.prefetch`` batches (default 4) loading
in an internal thread; this is the same idea. A :class:`Prefetcher` runs ``produce()`` (which
returns one batch, a tuple of CPU tensors) in a daemon thread, keeping at most ``depth``
batches ready, in order. The thread holds no reference to the layer that owns it, so the
layer (and the net) can be garbage collected; the layer's finaliser then stops the thread.
An exception in the thread is handed to the consumer and raised from :meth:`get` in the
main thread. LMDB, OpenCV and torch release the GIL, so a thread overlaps the I/O and
decoding with the net's own compute.

With ``pin`` set (a CUDA net), batches are placed in pinned host memory so the layer's
copy to the GPU can be asynchronous.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch

from ..errors import DataError, DecaffeError


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher:
    """Run ``produce`` ahead of the consumer in a daemon thread, ``depth`` batches deep."""

    def __init__(self, produce: Callable[[], tuple], depth: int,
                 name: str = "decaffe-data") -> None:
        self.name = name
        self.pin = False
        self._depth = max(1, int(depth))
        self._queue: queue.Queue = queue.Queue(maxsize=self._depth)
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=_work, name=name, daemon=True,
                                        args=(produce, self._queue, self._stop, self))
        self._thread.start()

    def get(self) -> tuple:
        """The next batch, waiting for it if needed; re-raises the worker's error."""
        if self._failure is not None:
            raise self._failure
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    if self._stop.is_set():
                        raise DataError(f"{self.name}: the prefetch thread was stopped") \
                            from None
                    raise DataError(f"{self.name}: the prefetch thread ended") from None
        if isinstance(item, _Failure):
            self._failure = item.exc
            raise item.exc
        return item

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (idempotent)."""
        self._stop.set()
        # Free a slot so a worker blocked on a full queue sees the stop.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class SyncLoader:
    """prefetch: 0 — each batch is produced when asked for, in the caller's thread."""

    def __init__(self, produce: Callable[[], tuple], name: str = "decaffe-data") -> None:
        self._produce = produce
        self.name = name
        self.pin = False
        self.alive = False

    def get(self) -> tuple:
        return self._produce()

    def close(self, timeout: float = 0.0) -> None:
        pass


def _pinned(batch: tuple) -> tuple:
    return tuple(t.pin_memory() if isinstance(t, torch.Tensor) else t for t in batch)


def _work(produce: Callable[[], tuple], q: queue.Queue, stop: threading.Event,
          owner: Prefetcher) -> None:
    # `owner` is the Prefetcher (not the layer): read for its pin flag only.
    while not stop.is_set():
        try:
            batch = produce()
            if owner.pin:
                batch = _pinned(batch)
        except BaseException as e:  # handed to the consumer, raised there
            if not isinstance(e, DecaffeError):
                wrapped = DataError(f"{owner.name}: {type(e).__name__}: {e}")
                wrapped.__cause__ = e
                e = wrapped
            _put(q, _Failure(e), stop)
            return
        if not _put(q, batch, stop):
            return


def _put(q: queue.Queue, item: tuple | _Failure, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False

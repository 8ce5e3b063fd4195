"""caffe.Timer: Caffe's stopwatch (util/benchmark.cpp), as pycaffe exposes it.

``start()`` begins timing unless already running; ``stop()`` ends it unless already stopped;
``ms`` (pycaffe's one property) and ``milliseconds()``/``microseconds()``/``seconds()`` read
the last start-to-stop interval, stopping a running timer first, and give 0 (with a warning)
for a timer never started. Restarting begins a new interval: times do not accumulate.

In GPU mode the interval is measured with CUDA events on the current stream, as Caffe
does, so it covers the device work queued in between, not just the host's; in CPU mode the
wall clock. Caffe's CPU timer rounded milliseconds down to whole numbers; decaffe keeps the
fraction.
"""

from __future__ import annotations

import logging
import time

import torch

from .. import mode as _mode

_log = logging.getLogger("decaffe")


class Timer:
    """A start/stop stopwatch reading the last interval (pycaffe's caffe.Timer)."""

    def __init__(self) -> None:
        self._running = False
        self._has_run = False
        self._gpu = False
        self._start_cpu = 0.0
        self._stop_cpu = 0.0
        self._start_ev = None
        self._stop_ev = None
        self._elapsed_ms = 0.0

    # -- state, as Caffe's Timer reports it -----------------------------------------------
    @property
    def initted(self) -> bool:
        return True

    @property
    def running(self) -> bool:
        return self._running

    @property
    def has_run_at_least_once(self) -> bool:
        return self._has_run

    # -- control ----------------------------------------------------------------------------
    def start(self) -> None:
        """Begin an interval (ignored while running)."""
        if self._running:
            return
        self._gpu = _mode.mode() == "gpu" and torch.cuda.is_available()
        if self._gpu:
            self._start_ev = torch.cuda.Event(enable_timing=True)
            self._stop_ev = torch.cuda.Event(enable_timing=True)
            self._start_ev.record()
        else:
            self._start_cpu = time.perf_counter()
        self._running = True
        self._has_run = True

    def stop(self) -> None:
        """End the interval (ignored while stopped); on GPU, waits for the queued work."""
        if not self._running:
            return
        if self._gpu:
            self._stop_ev.record()
            self._stop_ev.synchronize()
            self._elapsed_ms = float(self._start_ev.elapsed_time(self._stop_ev))
        else:
            self._stop_cpu = time.perf_counter()
            self._elapsed_ms = (self._stop_cpu - self._start_cpu) * 1000.0
        self._running = False

    # -- reading ----------------------------------------------------------------------------
    def milliseconds(self) -> float:
        """The last interval in milliseconds (stops a running timer first)."""
        if not self._has_run:
            _log.warning("Timer has never been run before reading time.")
            return 0.0
        if self._running:
            self.stop()
        return self._elapsed_ms

    def microseconds(self) -> float:
        return self.milliseconds() * 1000.0

    def seconds(self) -> float:
        return self.milliseconds() / 1000.0

    @property
    def ms(self) -> float:
        """pycaffe's Timer.ms: the last interval in milliseconds."""
        return self.milliseconds()

    # Caffe's C++ spellings, for scripts ported from C++ or from `caffe time`
    Start = start
    Stop = stop
    MilliSeconds = milliseconds
    MicroSeconds = microseconds
    Seconds = seconds

    def __repr__(self) -> str:
        state = "running" if self._running else f"{self._elapsed_ms:.3f} ms"
        return f"<Timer {state}>"

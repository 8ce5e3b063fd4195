"""How many CPU threads decaffe's commands use: intra-op (PyTorch's kernels), inter-op, and
image decoding.

PyTorch's default (one intra-op thread per core) is the fast choice on an idle machine and
the slow one on a busy one: every parallel kernel waits for its slowest thread, and a
thread that the scheduler parks behind other processes stalls each of the thousands of small
kernels of a training step (7-9× slower on a loaded 2-core machine than with one thread).
decaffe therefore sizes the intra-op pool to the cores that are free:

    free = cores available to this process − (1-minute load average − this process's share)
    threads = clamp(round(free), 1, cores / workers on this host)

(cores from the CPU affinity mask and the cgroup quota), re-checked while training
(:class:`Retuner`), so a run that starts on an idle machine drops to fewer threads when other
work arrives and goes back up when it leaves. Inter-op threads are 1 (decaffe issues no
inter-op parallel work), and image decoding uses at most the same count. ``-threads N`` (or
``DECAFFE_THREADS``) fixes the intra-op count instead; OMP_NUM_THREADS, when set, is honoured
as a fixed count too.
"""

from __future__ import annotations

import math
import os
import time

import torch

_state = {"fixed": None, "decode": None, "applied": None}


def available_cores() -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _workers_on_host() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose(own_share: float = 0.0, cores: int | None = None, load: float | None = None,
           workers: int | None = None) -> int:
    """The intra-op thread count for the current load (see the module docstring).
    ``own_share``: how many cores this process itself kept busy lately (its part of the
    load average)."""
    cores = available_cores() if cores is None else cores
    load = load_average() if load is None else load
    workers = _workers_on_host() if workers is None else workers
    per_worker = max(1, cores // workers)
    others = max(0.0, load - own_share - (workers - 1) * own_share)
    free = cores - others
    return int(min(per_worker, max(1, math.floor(free / workers + 0.5))))


def _fixed_from_env() -> int | None:
    for name in ("DECAFFE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name)
        if value:
            try:
                n = int(value)
            except ValueError:
                continue
            if n > 0:
                return n
    return None


def configure(threads: int = 0) -> int:
    """Set the thread counts for a decaffe command; ``threads`` > 0 fixes the intra-op
    count (-threads N). Returns the intra-op count in use."""
    fixed = threads if threads > 0 else _fixed_from_env()
    _state["fixed"] = fixed
    n = fixed if fixed else choose()
    _apply(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed by earlier parallel work in this process
    return n


def _apply(n: int) -> None:
    if _state["applied"] != n:
        torch.set_num_threads(n)
        _state["applied"] = n
    _state["decode"] = max(1, n)


def decode_workers(default: int) -> int:
    """Threads for decoding images in data layers: the intra-op count when decaffe chose it."""
    chosen = _state["decode"]
    return default if chosen is None else max(1, min(default, chosen))


class Retuner:
    """Re-checks the load every ``period`` seconds (call :meth:`poll` from the training loop's
    thread: the thread count belongs to the thread that sets it) and resizes the intra-op
    pool; does nothing when the count is fixed."""

    def __init__(self, period: float = 20.0):
        self.period = float(period)
        self._t0 = time.monotonic()
        self._cpu0 = _cpu_time()

    def poll(self) -> None:
        if _state["fixed"]:
            return
        now = time.monotonic()
        if now - self._t0 < self.period:
            return
        cpu = _cpu_time()
        share = (cpu - self._cpu0) / max(now - self._t0, 1e-6)
        self._t0, self._cpu0 = now, cpu
        _apply(choose(own_share=share))


def _cpu_time() -> float:
    t = os.times()
    return t.user + t.system

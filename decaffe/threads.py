"""How many CPU threads decaffe uses: intra-op (PyTorch's kernels), inter-op, and
image decoding.

PyTorch's default (one intra-op thread per core) is the fast choice on an idle machine and
the slow one on a busy one: every parallel kernel waits for its slowest thread, and a
thread that the scheduler parks behind other processes stalls each of the thousands of small
kernels of a training step (7-9× slower on a loaded 2-core machine than with one thread).
decaffe therefore sizes the intra-op pool to the cores that are free:

    free = cores available to this process − (load − this process's share)
    threads = clamp(round(free), 1, cores / workers on this host)

(cores from the CPU affinity mask and the cgroup quota; load: the larger of the 1-minute load
average and the tasks runnable right now, :func:`load_average`), re-checked while training
(:class:`Retuner`, polled by every solver's step), so a run that starts on an idle machine
drops to fewer threads when other work arrives and goes back up when it leaves. Inter-op
threads are 1 (decaffe issues no inter-op parallel work), and image decoding uses at most the
same count.

One policy for every entry point: the `decaffe` verbs that run nets set it up front
(:func:`configure`), and everything else (``import caffe`` scripts, the other verbs,
benchmarks) gets it when the first Net is built (:func:`on_first_use`; a Solver builds its
nets). The user's own choice always wins and is never overridden: ``-threads N``,
``caffe.set_num_threads(n)`` (:func:`set_num_threads`), ``DECAFFE_THREADS``,
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (which PyTorch itself reads), or a
``torch.set_num_threads`` call — seen as a count that differs from the one PyTorch starts
with (:func:`torch_start_threads`) before decaffe chose, or from decaffe's choice after.
"""

from __future__ import annotations

import glob
import math
import os
import statistics
import time

import torch

from . import log
from .errors import DecaffeError

# fixed: the count the user fixed (None: decaffe chooses); applied: the count decaffe set
# last (None: decaffe has not set one); decode: image-decoding threads
_state = {"fixed": None, "decode": None, "applied": None, "retuner": None}


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


def runnable_now(samples: int = 5, gap: float = 0.002) -> float:
    """Tasks runnable right now, less the one reading: the running count of /proc/loadavg
    (median of a few samples; 0 where there is none)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return 0.0
        if i + 1 < samples:
            time.sleep(gap)
    return max(0.0, statistics.median(counts) - 1)


def load_average() -> float:
    """The load the pool is sized for: the larger of the 1-minute load average and the tasks
    runnable right now (the average takes a minute to see work that has just started)."""
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):
        average = 0.0
    return max(average, runnable_now())


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
    for name in ("DECAFFE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name)
        if value:
            try:
                n = int(value)
            except ValueError:
                continue
            if n > 0:
                return n
    return None


def physical_cores() -> int:
    """Physical cores of the machine (all of them, as PyTorch's cpuinfo counts: not the
    affinity mask): distinct (package, core) pairs in sysfs, else the logical CPU count."""
    pairs = set()
    for topo in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/topology"):
        try:
            with open(os.path.join(topo, "physical_package_id")) as f:
                package = f.read().strip()
            with open(os.path.join(topo, "core_id")) as f:
                pairs.add((package, f.read().strip()))
        except OSError:
            continue
    return len(pairs) or os.cpu_count() or 1


def torch_start_threads() -> int:
    """The intra-op count PyTorch starts a process with: MKL_NUM_THREADS, else
    OMP_NUM_THREADS, else the physical cores (ATen's intraop_default_num_threads)."""
    for name in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):  # ATen lets MKL's override OMP's
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return physical_cores()


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


def set_num_threads(n: int) -> None:
    """Fix the intra-op thread count (pycaffe's ``caffe.set_num_threads``): decaffe then
    never changes it. ``n`` must be >= 1."""
    if int(n) < 1:
        raise DecaffeError(f"set_num_threads: need at least 1 thread, not {n}")
    configure(int(n))


def user_fixed() -> bool:
    """Whether the user chose the thread count (see the module docstring)."""
    if _state["fixed"] or _fixed_from_env():
        return True
    current = torch.get_num_threads()
    if _state["applied"] is None:
        return current != torch_start_threads()
    return current != _state["applied"]


def on_first_use() -> None:
    """Apply the load-aware choice once per process, when a Net is built, unless decaffe
    already set the threads (a verb's configure) or the user chose a count. Logs the choice."""
    if _state["applied"] is not None or _state["fixed"]:
        return
    if _fixed_from_env():
        configure(0)  # DECAFFE_THREADS is decaffe's to apply (PyTorch reads only OMP/MKL's)
        return
    if user_fixed():
        _state["fixed"] = torch.get_num_threads()
        return
    n = configure(0)
    log.info(f"Using {n} CPU thread{'s' if n != 1 else ''} for kernels (chosen from the free "
             f"cores; caffe.set_num_threads(n) or DECAFFE_THREADS=n fixes it)")


def poll() -> None:
    """Re-check the load (cheap: at most every Retuner.period seconds); solvers call it each
    iteration. Nothing while the count is the user's."""
    if _state["fixed"] or _state["applied"] is None:
        return
    if _state["retuner"] is None:
        _state["retuner"] = Retuner()
    _state["retuner"].poll()


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
        if _state["applied"] is not None and user_fixed():
            _state["fixed"] = torch.get_num_threads()  # the user called torch.set_num_threads
            return
        cpu = _cpu_time()
        share = (cpu - self._cpu0) / max(now - self._t0, 1e-6)
        self._t0, self._cpu0 = now, cpu
        _apply(choose(own_share=share))


def _cpu_time() -> float:
    t = os.times()
    return t.user + t.system

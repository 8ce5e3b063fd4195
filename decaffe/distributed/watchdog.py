"""Fail fast, naming the worker: heartbeats through the group's key-value store.

A collective waits for every worker, so one worker that dies (SIGKILL, out of memory, a lost
host) would leave the others waiting in it: gloo notices a closed connection, NCCL may
wait until its timeout (30 minutes). Each worker therefore runs a daemon thread that, every
``interval`` seconds, bumps its own counter ``hb/<rank>`` in a TCPStore (the rendezvous
store torchrun or ``decaffe train`` hosts) and watches one neighbour's counter (rank r
watches r+1 mod N, so the traffic grows with N, not N²). A neighbour whose counter stands
still for ``timeout`` seconds, and that has not said it finished, is declared dead: the
watcher writes ``failed`` (which worker, and why) and every worker, polling that one key,
prints the message and exits with status 1. A worker that fails by itself (an error in its
own code) writes ``failed`` with its error before it exits, so the others name it too.

When the main thread's collective fails first (gloo reports a lost peer at once),
:meth:`Watchdog.diagnose` looks at every counter for a few intervals and names the workers
whose counters stopped.

The store is the rendezvous address (MASTER_ADDR:MASTER_PORT): hosted by torchrun's agent,
by the ``decaffe train`` parent, or (a bare env:// group) by rank 0, in which case losing
the store means losing rank 0, and the message says so.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .nccl import ParallelError

if TYPE_CHECKING:
    from torch.distributed import Store


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat before a worker counts as dead (DECAFFE_HEARTBEAT_TIMEOUT,
    default 30)."""
    try:
        return max(1.0, float(os.environ.get("DECAFFE_HEARTBEAT_TIMEOUT", "30")))
    except ValueError:
        return 30.0


class Watchdog:
    """Heartbeats of one worker; see the module docstring. ``store`` is a torch.distributed
    Store (keys are prefixed by the caller); ``on_failure(message)`` is called once, from the
    watchdog thread, when some worker is known to have failed (default: print and exit 1)."""

    def __init__(self, store: Store, rank: int, world_size: int, *, interval: float = 0.5,
                 timeout: float | None = None, on_failure: Callable[[str],
                 None] | None = None) -> None:
        self.store, self.rank, self.world_size = store, int(rank), int(world_size)
        self.interval = float(interval)
        self.timeout = heartbeat_timeout() if timeout is None else float(timeout)
        self.on_failure = on_failure or _exit_with
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._reported = threading.Event()
        self.verdict: str | None = None
        self._thread = threading.Thread(target=self._run, name="decaffe-watchdog", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Watchdog:
        self._beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def mark_done(self) -> None:
        """This worker ends normally from now on: its neighbour stops watching it."""
        self._closing.set()
        try:
            self.store.set(f"done/{self.rank}", "1")
        except Exception:  # noqa: BLE001 - the store may already be gone at exit
            pass

    def report_failure(self, message: str) -> None:
        """Tell every worker that this one fails (its own error), so they stop and name it."""
        text = f"worker rank {self.rank} (pid {os.getpid()}) failed: {message}"
        try:
            self.store.compare_set("failed", "", text)
        except Exception:  # noqa: BLE001 - the store may be gone; the others will time out
            pass

    # -- the thread -----------------------------------------------------------------------------
    def _beat(self) -> int:
        return int(self.store.add(f"hb/{self.rank}", 1))

    def _count(self, rank: int) -> int:
        return int(self.store.add(f"hb/{rank}", 0))

    def _done(self, rank: int) -> bool:
        return bool(self.store.check([f"done/{rank}"]))

    def _failed(self) -> str | None:
        if not self.store.check(["failed"]):
            return None
        value = self.store.get("failed").decode("utf-8", "replace")
        return value or None

    def _run(self) -> None:
        n = self.world_size
        watched = (self.rank + 1) % n
        last, since = -1, time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                self._beat()
                failed = self._failed()
                if failed:
                    self._declare(failed)
                    return
                if watched == self.rank:
                    continue
                count = self._count(watched)
                now = time.monotonic()
                if count != last:
                    last, since = count, now
                elif now - since > self.timeout and not self._done(watched):
                    text = (f"worker rank {watched} stopped: no heartbeat for "
                            f"{self.timeout:.0f} s (killed, or its host lost)")
                    self.store.compare_set("failed", "", text)
                    self._declare(self._failed() or text)
                    return
            except Exception:  # noqa: BLE001 - a store that went away
                if self._stop.is_set() or self._closing.is_set():
                    return
                self._declare("worker rank 0 or the rendezvous store it hosts is gone "
                              "(killed, or its host lost)")
                return

    def _declare(self, message: str) -> None:
        if self._reported.is_set() or self._stop.is_set():
            return
        self.verdict = message
        self._reported.set()
        if self._closing.is_set() and "stopped:" not in message and "failed:" not in message:
            return
        self.on_failure(f"rank {self.rank}: stopping because {message}")

    # -- the main thread's question ---------------------------------------------------------------
    def diagnose(self, error: BaseException) -> ParallelError:
        """A collective failed with ``error``: find which workers stopped (their counters no
        longer move over a few intervals) and return an error that names them."""
        deadline = time.monotonic() + max(3.0, 6 * self.interval)
        known = None
        try:
            first = {r: self._count(r) for r in range(self.world_size) if r != self.rank}
            while time.monotonic() < deadline and known is None:
                known = self._failed()
                time.sleep(self.interval)
            if known is None:
                time.sleep(max(0.0, 2 * self.interval))
                stuck = [r for r, c in first.items()
                         if self._count(r) == c and not self._done(r)]
                if stuck:
                    names = ", ".join(str(r) for r in stuck)
                    known = (f"worker rank{'s' if len(stuck) > 1 else ''} {names} stopped "
                             "(no heartbeat since the collective failed)")
                    self.store.compare_set("failed", "", known)
        except Exception:  # noqa: BLE001 - no store: rank 0 (its host) is gone
            known = self.verdict or ("worker rank 0 or the rendezvous store it hosts is gone "
                                     "(killed, or its host lost)")
        if known is None:
            known = f"a collective failed ({error})"
        self.verdict = known
        self._reported.set()
        return ParallelError(f"rank {self.rank}: {known}")


def _exit_with(message: str) -> None:
    """Print the error as `decaffe train` prints errors, then leave at once: the main thread
    may be blocked inside a collective that will never finish."""
    try:
        sys.stderr.write(f"decaffe train: error: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(1)

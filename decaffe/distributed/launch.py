"""`decaffe train -gpu 0,1,2,3` (or `-workers N` on the CPU): one worker process per device.

The parent is a small torchrun: it hosts the rendezvous store (a TCPStore on a free port of
127.0.0.1), starts N copies of `python -m decaffe train` with the same flags and torchrun's
variables (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
TORCHELASTIC_USE_AGENT_STORE=True so no worker hosts the store), forwards SIGINT, SIGHUP and
SIGTERM to them, and waits. When a worker ends with an error or a signal, the parent names it
and gives the others a grace period to stop by themselves (their heartbeats name it too)
before terminating them. The exit status is 0 only when every worker succeeded; when the
workers stopped on SIGTERM (status 75, `decaffe train`'s EXIT_PREEMPTED) and none failed, it
is 75 too, so a job script requeues the whole run.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from torch.distributed import TCPStore

from .. import log
from ..mode import EXIT_PREEMPTED
from .watchdog import heartbeat_timeout


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def run(argv: list[str], count: int, devices: list[int] | None = None) -> int:
    """Start `count` workers running `decaffe <argv>` and wait for them; returns the exit
    status (0 when all succeed). ``devices`` names each worker's GPU for the log."""

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                     timeout=datetime.timedelta(seconds=300))
    port = store.port
    run_id = f"{os.getpid()}-{int(time.time())}"
    where = ", ".join(f"GPU {d}" for d in devices) if devices else f"{count} CPU processes"
    log.info(f"Starting {count} workers ({where}); rendezvous at 127.0.0.1:{port}")
    procs: list[subprocess.Popen] = []
    base = dict(os.environ)
    for rank in range(count):
        env = dict(base, WORLD_SIZE=str(count), RANK=str(rank), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(count), GROUP_RANK="0", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True",
                   DECAFFE_RUN_ID=run_id)
        procs.append(subprocess.Popen([sys.executable, "-m", "decaffe", *argv], env=env))

    def forward(signum: int, frame: FrameType | None) -> None:
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signum)
                except ProcessLookupError:
                    pass

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            previous[sig] = signal.signal(sig, forward)
    try:
        return _wait(procs)
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        del store


def _wait(procs: list[subprocess.Popen]) -> int:
    status = 0
    preempted = False
    first_failure: float | None = None
    grace = heartbeat_timeout() + 15.0
    while True:
        running = 0
        for rank, p in enumerate(procs):
            code = p.poll()
            if code is None:
                running += 1
                continue
            if code == EXIT_PREEMPTED:
                preempted = True  # stopped on SIGTERM with the others, not a failure
                continue
            if code != 0 and status == 0:
                status = code if code > 0 else 128 - code
                first_failure = time.monotonic()
                log.error(f"worker rank {rank} (pid {p.pid}) {_describe(code)}")
        if not running:
            return status if status or not preempted else EXIT_PREEMPTED
        if first_failure is not None and time.monotonic() - first_failure > grace:
            for rank, p in enumerate(procs):
                if p.poll() is None:
                    log.error(f"worker rank {rank} (pid {p.pid}) did not stop within "
                              f"{grace:.0f} s after the failure; terminating it")
                    p.terminate()
            first_failure = time.monotonic() + 1e9  # terminate once
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.1)
        time.sleep(0.1)

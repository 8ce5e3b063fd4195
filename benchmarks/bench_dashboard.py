"""What watching a run costs: the BatchNorm example's training step with the run folder and
TensorBoard files (and the live dashboard with a client reading its stream, where
decaffe.dashboard is installed) against the same training with none of them, as a ratio.

    python benchmarks/bench_dashboard.py [--rounds 20] [--block 40] [--display 20]
                                         [--threads 1] [--no-dashboard]

Two solvers of examples/batchnorm/solver_bn.prototxt (the digits CNN with BatchNorm,
batch 64; its LMDBs are built first if missing) live in one process, with `display` set so
the recorder samples as it does in use:

    watched: a RunRecorder (run folder + -tensorboard files, as `decaffe train -tensorboard
             DIR` makes it), and `decaffe train -dashboard`'s server on a free port with one
             client reading /api/stream (a browser tab left open)
    plain:   no recorder (`decaffe train -record false`)

They train alternately, `block` iterations at a time, in A B B A order (so neither always
goes first), after a warm-up; each round gives watched / plain for the same stretch of the
machine's load. Reported: each configuration's ms per step (total time / steps), the ratio
of the totals and the median of the per-round ratios (target: <= 1.02), and the recorder's
own time on the training thread as a share of the watched solver's time (the part of the
cost that does not drown in the machine's noise; the TensorBoard writer's and the
dashboard's threads are outside it).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from decaffe import log  # noqa: E402
from decaffe.data.digits import ensure_digits  # noqa: E402
from decaffe.runs import RunRecorder  # noqa: E402
from decaffe.solvers import get_solver  # noqa: E402

SOLVER = os.path.join(REPO, "examples", "batchnorm", "solver_bn.prototxt")


def _solver_file(folder: str, max_iter: int, display: int) -> str:
    text = open(SOLVER).read()
    for key, value in (("max_iter", max_iter), ("display", display),
                       ("snapshot_prefix", f'"{os.path.join(folder, "bn")}"')):
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w") as f:
        f.write(text)
    return path


def _dashboard(run_dir: str):
    """decaffe train -dashboard's server over the run folder, and a client on its stream;
    None where the dashboard (its package or extra) is not installed."""
    try:
        # starlette/uvicorn: the optional dashboard extra
        from decaffe.dashboard.server import Server
        from decaffe.dashboard.sources import RunFolder
    except ImportError:
        return None
    server = Server([RunFolder(run_dir)], "127.0.0.1", 0).start()
    received = [0]

    def read_stream() -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/stream") as r:
                while True:
                    chunk = r.read1(65536)
                    if not chunk:
                        return
                    received[0] += len(chunk)
        except (OSError, http.client.HTTPException):  # the server stopped mid-stream
            return

    threading.Thread(target=read_stream, daemon=True).start()
    return server, received


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=40, help="iterations per turn")
    ap.add_argument("--display", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-dashboard", action="store_true")
    opts = ap.parse_args()

    torch.set_num_threads(opts.threads)
    log.set_min_level(1)  # the display lines cost both the same; keep the output short
    os.chdir(REPO)
    ensure_digits(os.path.join("data", "digits"))
    folder = tempfile.mkdtemp(prefix="bench_dashboard_")
    board = None
    try:
        total = (opts.rounds * 2 + 2) * opts.block
        path = _solver_file(folder, total, opts.display)
        plain, watched = get_solver(path), get_solver(path)
        run_dir = os.path.join(folder, "bn.run")
        recorder = RunRecorder(watched, run_dir, tensorboard=os.path.join(folder, "tb"),
                               command=["bench_dashboard.py"]).start()
        if not opts.no_dashboard:
            board = _dashboard(run_dir)
        for s in (watched, plain):  # warm-up: first passes, allocations, the first sample
            s.step(opts.block)
        times: dict[str, list[float]] = {"watched": [], "plain": []}
        spent_before = recorder.seconds
        for r in range(opts.rounds):
            order = [("watched", watched), ("plain", plain)]
            if r % 2:
                order.reverse()
            for name, s in order:
                t0 = time.perf_counter()
                s.step(opts.block)
                times[name].append(time.perf_counter() - t0)
        spent = recorder.seconds - spent_before
        recorder.close()
        samples = sum(1 for line in open(os.path.join(run_dir, "events.jsonl"))
                      if line.startswith('{"kind":"bn"'))
    finally:
        if board is not None:
            board[0].stop()
        shutil.rmtree(folder, ignore_errors=True)
    steps = opts.rounds * opts.block
    ms = {k: sum(v) / steps * 1e3 for k, v in times.items()}
    ratios = [w / p for w, p in zip(times["watched"], times["plain"])]
    what = "run folder + TensorBoard" + (" + dashboard (1 client)" if board else "")
    print(f"BatchNorm example (batch 64), {opts.rounds} rounds x {opts.block} iterations, "
          f"display {opts.display}, {opts.threads} thread(s), alternating A B B A")
    print(f"  {'plain (no recorder)':48s} {ms['plain']:8.3f} ms/step")
    print(f"  {what:48s} {ms['watched']:8.3f} ms/step  ({samples} BN samples"
          + (f", {board[1][0]} bytes streamed" if board else "") + ")")
    print(f"  ratio of totals: {ms['watched'] / ms['plain']:.3f}; median per-round ratio: "
          f"{statistics.median(ratios):.3f} (target <= 1.02)")
    print(f"  the recorder's own time on the training thread: {spent * 1e3:.1f} ms of "
          f"{sum(times['watched']) * 1e3:.0f} ms ({spent / sum(times['watched']) * 100:.2f}%)")
    if board is None and not opts.no_dashboard:
        print("  (decaffe.dashboard is not installed here: measured without the dashboard)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

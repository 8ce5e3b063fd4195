#!/usr/bin/env python3
"""Fuzz every reader of decaffe with thousands of mutated files and print a table per format.

Each case runs in a worker process with a memory cap (RLIMIT_AS) and a time limit, and must
end loaded or with a decaffe error naming its source; the table counts how cases ended
(see tests/fuzz/fuzzlib.py): loaded, named (a decaffe error naming its source), and the
faults unnamed, other (not a decaffe error), crash, hang, overcap. Faults are listed after
the table with their details; the exit status is 1 when there is any.

Usage: python tools/fuzz.py [--count 5000] [--seed 20261130] [--formats a,b] [--jobs N]
       [--timeout 30] [--minutes M] [--keep DIR]
With --jobs N, N formats run at once, each in its own runner and worker.
CI runs a small count with other seeds (tests/fuzz/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fuzz"))
sys.path.insert(0, ROOT)

import fuzzlib  # noqa: E402


def _one_format(fmt: str, *, count: int, seed: int, timeout: float, cap: int,
                keep: str | None, share: float | None) -> tuple[str, fuzzlib.Report]:
    deadline = time.time() + share if share else None
    return fmt, fuzzlib.run([fmt], count, seed, timeout=timeout, cap=cap, keep=keep,
                            deadline=deadline)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=5000, help="cases per format")
    ap.add_argument("--seed", type=int, default=20261130, help="mutation seed")
    ap.add_argument("--formats", default="", help="comma-separated (default: all): "
                    + ", ".join(fuzzlib.FORMATS))
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="stop each format after its share of this many minutes (0: no limit)")
    ap.add_argument("--cap-gib", type=float, default=fuzzlib.MEMORY_CAP / 2**30,
                    help="address-space cap of a worker, GiB")
    ap.add_argument("--keep", default=None, help="keep the cases that fault in this folder")
    ap.add_argument("--jobs", type=int, default=1, help="formats fuzzed at once")
    args = ap.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f] or fuzzlib.available_formats()
    unknown = set(formats) - set(fuzzlib.FORMATS)
    if unknown:
        ap.error(f"unknown formats {sorted(unknown)}")
    share = args.minutes * 60 * max(1, args.jobs) / len(formats) if args.minutes else None
    report = fuzzlib.Report()
    t_all = time.time()
    kw = dict(count=args.count, seed=args.seed, timeout=args.timeout,
              cap=int(args.cap_gib * 2**30), keep=args.keep, share=share)
    # spawn: each runner starts clean rather than from a copy of this process
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max(1, args.jobs), mp_context=ctx) as pool:
        futures = [pool.submit(_one_format, fmt, **kw) for fmt in formats]
        done = {}
        for fut in concurrent.futures.as_completed(futures):
            fmt, r = fut.result()
            done[fmt] = r
            c = r.counts[fmt]
            print(f"{fmt}: {sum(c.values())} cases in {r.seconds[fmt]:.0f} s "
                  f"({dict(c)})", flush=True)
    for fmt in formats:  # the table in the formats' order, whatever order they ended in
        r = done[fmt]
        report.counts.update(r.counts)
        report.seconds.update(r.seconds)
        report.faults += r.faults
    print()
    print(f"seed {args.seed}, cap {args.cap_gib:g} GiB, timeout {args.timeout:g} s, "
          f"{time.time() - t_all:.0f} s in all")
    print(report.table())
    for fmt, i, outcome, detail in report.faults:
        print(f"\n[{outcome}] {fmt} case {i}:\n{detail}")
    return 1 if report.faults else 0


if __name__ == "__main__":
    sys.exit(main())

"""One benchmark, two revisions of decaffe: is any step slower after a change?

    python benchmarks/bench_revisions.py BEFORE [--after REV] [--rounds 5] -- SCRIPT [ARGS...]

e.g. `python benchmarks/bench_revisions.py 140870c -- bench_engine.py --nets cifar_bn`.

BEFORE (and --after, default: this working tree) are git revisions; each is checked out
into a temporary worktree, and this tree's benchmarks/ folder is copied over it, so both
revisions run the same benchmark code against their own engine (every benchmark puts its
own checkout first on sys.path). The two run in turn, a fresh process each, for --rounds
rounds (before, after, before, after, ...), so a machine that grows busier or quieter
affects both alike.

SCRIPT must print lines of the form `LABEL torch T ms   decaffe D ms ...` (bench_engine.py,
bench_train_step.py): per label this reports the median decaffe time of each revision and
the median of decaffe/torch, whose torch half is the hand-written net timed in the same
process, a control for the machine's load. Ratios after/before above 1 are slower.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LINE = re.compile(r"^(?P<label>.*?)\btorch\s+(?P<torch>[\d.]+)\s*ms\s+decaffe\s+"
                  r"(?P<decaffe>[\d.]+)\s*ms")


def checkout(rev: str, into: str) -> str:
    """A detached worktree of `rev` at `into`, with this tree's benchmarks/ copied over."""
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "--force", into, rev],
                   check=True, capture_output=True)
    shutil.rmtree(os.path.join(into, "benchmarks"), ignore_errors=True)
    shutil.copytree(HERE, os.path.join(into, "benchmarks"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return into


def run_once(tree: str, script: list[str]) -> dict[str, tuple[float, float]]:
    """{label: (torch ms, decaffe ms)} from one run of the benchmark in `tree`."""
    env = dict(os.environ, PYTHONPATH=tree)
    path = os.path.join(tree, "benchmarks", script[0])
    r = subprocess.run([sys.executable, path, *script[1:]], cwd=tree, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{path} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    got = {}
    for line in r.stdout.splitlines():
        m = LINE.match(line)
        if m:
            got[m["label"].strip()] = (float(m["torch"]), float(m["decaffe"]))
    if not got:
        raise SystemExit(f"{path} printed no 'torch T ms decaffe D ms' line:\n{r.stdout}")
    return got


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: bench_revisions.py BEFORE [--after REV] [--rounds N] -- "
                         "SCRIPT [ARGS...]")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("--after", default=None, help="a revision (default: this working tree)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv[:cut])
    script = argv[cut + 1:]
    tmp = tempfile.mkdtemp(prefix="decaffe-revs-")
    trees = {"before": checkout(args.before, os.path.join(tmp, "before"))}
    trees["after"] = (checkout(args.after, os.path.join(tmp, "after")) if args.after
                      else ROOT)
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {"before": {}, "after": {}}
    try:
        for i in range(args.rounds):
            for name in ("before", "after") if i % 2 == 0 else ("after", "before"):
                for label, pair in run_once(trees[name], script).items():
                    samples[name].setdefault(label, []).append(pair)
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree],
                               capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{' '.join(script)}: {args.rounds} rounds, alternating; medians")
    print(f"{'':14s} {'before ms':>10s} {'after ms':>10s} {'after/before':>13s}   "
          f"{'dec/torch before':>16s} {'after':>7s} {'after/before':>13s}")
    for label, before in samples["before"].items():
        after = samples["after"].get(label, [])
        if not after:
            continue
        d_b = statistics.median(d for _, d in before)
        d_a = statistics.median(d for _, d in after)
        r_b = statistics.median(d / t for t, d in before)
        r_a = statistics.median(d / t for t, d in after)
        print(f"{label:14s} {d_b:10.2f} {d_a:10.2f} {d_a / d_b:13.3f}   {r_b:16.3f} "
              f"{r_a:7.3f} {r_a / r_b:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

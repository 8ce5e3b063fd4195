"""`decaffe train` on the bundled example (the digits BN net) with decaffe's default thread
count against one thread, on the machine as it is and with extra load, in the same run.

    python benchmarks/bench_threads.py [--iters 80] [--load 2] [--torch-default]

"loaded" starts --load busy processes (pure Python spin loops, one core each) for the
duration of those runs. Times come from the runs' logs (display lines at iterations 10 and
--iters), so start-up is left out. --torch-default adds runs with PyTorch's own default
(-threads set to every core), the slow choice decaffe's default avoids on a busy machine.
Reported: ms per iteration and the ratio default / 1 thread for each condition (≤ 1 means
the default is never the slow choice).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_workers import _seconds_per_iter  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "batchnorm")
_SPIN = "import time\nt = time.time() + 600\nwhile time.time() < t:\n    pass\n"


def _solver(tmp: str, iters: int) -> str:
    from decaffe.data.digits import ensure_digits

    train_db, test_db = ensure_digits(os.path.join(tmp, "digits"))
    paths = {}
    for name in ("cnn_bn_train", "cnn_bn_test"):
        with open(os.path.join(EXAMPLE, name + ".prototxt")) as f:
            text = f.read().replace("data/digits/digits_train_lmdb", train_db)
        paths[name] = os.path.join(tmp, name + ".prototxt")
        with open(paths[name], "w") as f:
            f.write(text.replace("data/digits/digits_test_lmdb", test_db))
    solver = os.path.join(tmp, "solver.prototxt")
    with open(os.path.join(EXAMPLE, "solver_bn.prototxt")) as f:
        text = f.read()
    text = (text.replace("examples/batchnorm/cnn_bn_train.prototxt", paths["cnn_bn_train"])
            .replace("examples/batchnorm/cnn_bn_test.prototxt", paths["cnn_bn_test"])
            .replace("max_iter: 600", f"max_iter: {iters}").replace("display: 0", "display: 10"))
    with open(solver, "w") as f:
        f.write(text)
    return solver


def _run(solver: str, threads: int, iters: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                              "DECAFFE_THREADS")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "decaffe", "train", "-solver", solver, "-threads",
           str(threads)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise SystemExit(f"bench_threads: {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return _seconds_per_iter(r.stderr, iters)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=80)
    ap.add_argument("--load", type=int, default=2)
    ap.add_argument("--torch-default", action="store_true")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    print(f"{cores} cores; load average now {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        solver = _solver(tmp, args.iters)
        for condition in ("as is", "loaded"):
            spinners = []
            if condition == "loaded":
                spinners = [subprocess.Popen([sys.executable, "-c", _SPIN])
                            for _ in range(args.load)]
            try:
                kinds = {"default": 0, "1 thread": 1}
                if args.torch_default:
                    kinds[f"{cores} threads"] = cores
                t = {k: _run(solver, n, args.iters) for k, n in kinds.items()}
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()
            extra = f" (+{args.load} busy processes)" if spinners else ""
            row = "   ".join(f"{k} {v * 1e3:7.1f} ms/iter" for k, v in t.items())
            print(f"{condition}{extra}: {row}   default / 1 thread "
                  f"{t['default'] / t['1 thread']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

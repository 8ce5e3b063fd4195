"""The thread trap, as a new user meets it: an `import caffe` script doing 100 SGDSolver steps
of LeNet while two other processes keep cores busy. decaffe's default thread count against
every fixed count, in the same run.

    python benchmarks/bench_thread_trap.py [--steps 100] [--busy 2] [--rounds 3] [--batch 64]

The benchmark starts --busy spin-loop processes itself (pure Python, one core each) and
stops them at the end. Each contender is a fresh interpreter running the same script:
`default` calls nothing (decaffe picks the count when the solver builds its nets); `N` calls
`caffe.set_num_threads(N)` first (N = every core is PyTorch's own default). The contenders
run in turn, --rounds times (A B C A B C ...), so drifts in the load touch each alike.
Timed: the --steps solver steps after 5 warm-up steps (not the import or the set-up).
Reported: median seconds of each, the threads it ran with, and default / best fixed count
(the goal: at most 1.3).

LeNet: Caffe's examples/mnist/lenet_train_test.prototxt layers (conv 20, pool, conv 50,
pool, ip 500, ReLU, ip 10, SoftmaxWithLoss) on DummyData batches of 1×28×28 images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

LENET = """name: 'LeNet'
layer {{ name: 'data' type: 'DummyData' top: 'data' top: 'label'
  dummy_data_param {{ shape {{ dim: {batch} dim: 1 dim: 28 dim: 28 }}
                      shape {{ dim: {batch} }}
                      data_filler {{ type: 'uniform' min: 0 max: 1 }}
                      data_filler {{ type: 'constant' value: 3 }} }} }}
layer {{ name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1'
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  convolution_param {{ num_output: 20 kernel_size: 5 stride: 1
    weight_filler {{ type: 'xavier' }} bias_filler {{ type: 'constant' }} }} }}
layer {{ name: 'pool1' type: 'Pooling' bottom: 'conv1' top: 'pool1'
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: 'conv2' type: 'Convolution' bottom: 'pool1' top: 'conv2'
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  convolution_param {{ num_output: 50 kernel_size: 5 stride: 1
    weight_filler {{ type: 'xavier' }} bias_filler {{ type: 'constant' }} }} }}
layer {{ name: 'pool2' type: 'Pooling' bottom: 'conv2' top: 'pool2'
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: 'ip1' type: 'InnerProduct' bottom: 'pool2' top: 'ip1'
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  inner_product_param {{ num_output: 500
    weight_filler {{ type: 'xavier' }} bias_filler {{ type: 'constant' }} }} }}
layer {{ name: 'relu1' type: 'ReLU' bottom: 'ip1' top: 'ip1' }}
layer {{ name: 'ip2' type: 'InnerProduct' bottom: 'ip1' top: 'ip2'
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  inner_product_param {{ num_output: 10
    weight_filler {{ type: 'xavier' }} bias_filler {{ type: 'constant' }} }} }}
layer {{ name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip2' bottom: 'label' top: 'loss' }}
"""

SOLVER = ("net: '{net}' base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'inv' "
          "gamma: 0.0001 power: 0.75 display: 0 max_iter: 100000 snapshot_after_train: false "
          "random_seed: 1\n")

# the user's script: nothing about threads (default) or caffe.set_num_threads(N)
SCRIPT = r"""
import json, sys, time
import torch
import caffe
mode, solver_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode != "default":
    caffe.set_num_threads(int(mode))
solver = caffe.SGDSolver(solver_path)
solver.step(5)
t0 = time.perf_counter()
solver.step(steps)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))
"""

SPIN = "import time\nt = time.time() + 3600\nwhile time.time() < t:\n    pass\n"


def _run(mode: str, solver: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DECAFFE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", SCRIPT, mode, solver, str(steps)],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"bench_thread_trap: the {mode} script failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--busy", type=int, default=2, help="busy processes beside the script")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    from decaffe.threads import available_cores

    cores = available_cores()
    modes = ["default"] + [str(n) for n in range(1, cores + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        net = os.path.join(tmp, "lenet.prototxt")
        with open(net, "w") as f:
            f.write(LENET.format(batch=args.batch))
        solver = os.path.join(tmp, "solver.prototxt")
        with open(solver, "w") as f:
            f.write(SOLVER.format(net=net))
        busy = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
        try:
            time.sleep(1.0)
            results: dict[str, list[dict]] = {m: [] for m in modes}
            for _ in range(args.rounds):
                for mode in modes:
                    results[mode].append(_run(mode, solver, args.steps))
        finally:
            for p in busy:
                p.terminate()
            for p in busy:
                p.wait()
    print(f"{args.steps} SGDSolver steps of LeNet (batch {args.batch}) in an `import caffe` "
          f"script, {args.busy} busy processes beside it, {cores} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end; median of {args.rounds}")
    median = {m: statistics.median(r["seconds"] for r in results[m]) for m in modes}
    best = min(modes[1:], key=median.get)
    print(f"{'threads':36s} {'ran with':>8s} {'seconds':>9s} {'/ best fixed':>13s}")
    for m in modes:
        used = sorted({r["threads"] for r in results[m]})
        label = ("default (decaffe's choice)" if m == "default" else
                 f"caffe.set_num_threads({m})" + (" = PyTorch's" if int(m) == cores else ""))
        print(f"{label:36s} {','.join(map(str, used)):>8s} {median[m]:9.2f} "
              f"{median[m] / median[best]:13.2f}")
    ratio = median["default"] / median[best]
    print(f"default / best fixed ({best} thread(s)): {ratio:.2f} "
          f"({'within' if ratio <= 1.3 else 'NOT within'} 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

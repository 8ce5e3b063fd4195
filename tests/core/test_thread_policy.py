"""One thread policy for every entry point (issue 22, item 2): an `import caffe` script gets
the load-aware thread count when it builds its first Net or Solver, unless the user chose a
count (OMP_NUM_THREADS, DECAFFE_THREADS, torch.set_num_threads, caffe.set_num_threads), which
always wins, also against the solver's re-checks. Each case runs in a fresh interpreter (the
count PyTorch starts with is a per-process fact); the machine's cores and load are replaced
by fixed numbers there, so the expected counts do not depend on the machine. No timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from decaffe import threads

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NET = """
name: 'tiny' force_backward: true
layer { name: 'data' type: 'DummyData' top: 'x' top: 'y'
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: 'gaussian' } data_filler { type: 'gaussian' } } }
layer { name: 'fc' type: 'InnerProduct' bottom: 'x' top: 'z'
  inner_product_param { num_output: 2 weight_filler { type: 'xavier' } } }
layer { name: 'loss' type: 'EuclideanLoss' bottom: 'z' bottom: 'y' top: 'loss' }
"""

# `before` runs after `import caffe` and before the first Net; `after` after it; then three
# solver steps with the solver's re-check made due at every iteration.
DRIVER = r"""
import json, sys
import torch
import caffe
from decaffe import threads
cores, load, before, after = sys.argv[1:5]
threads.available_cores = lambda: int(cores)
threads.load_average = lambda: float(load)
threads.Retuner.__init__.__defaults__ = (0.0,)
out = {"start": torch.get_num_threads(), "torch_start": threads.torch_start_threads()}
exec(before)
net = caffe.Net(sys.argv[5], caffe.TRAIN)
out["net"] = torch.get_num_threads()
exec(after)
solver = caffe.SGDSolver(sys.argv[6])
solver.step(3)
out["steps"] = torch.get_num_threads()
print(json.dumps(out))
"""


def _run(tmp_path, cores=4, load=0.0, before="", after="", env=None) -> dict:
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f"net: '{net}' base_lr: 0.01 lr_policy: 'fixed' max_iter: 10 "
                      f"display: 0 snapshot_after_train: false\n")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DECAFFE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", DRIVER, str(cores), str(load), before, after,
                        str(net), str(solver)], capture_output=True, text=True,
                       env={**clean, "PYTHONPATH": ROOT, **(env or {})}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_script_on_a_busy_machine_gets_one_thread(tmp_path):
    out = _run(tmp_path, cores=4, load=50.0)
    assert out["start"] == out["torch_start"]  # PyTorch's start value, as decaffe predicts it
    assert out["net"] == 1 and out["steps"] == 1


def test_a_script_on_an_idle_machine_gets_every_free_core(tmp_path):
    out = _run(tmp_path, cores=4, load=0.0)
    assert out["net"] == 4 and out["steps"] == 4


def test_the_solver_follows_the_load(tmp_path):
    # idle when the net is built, busy by the time the solver steps
    out = _run(tmp_path, cores=4, load=0.0,
               after="threads.load_average = lambda: 50.0")
    assert out["net"] == 4 and out["steps"] == 1


def test_torch_set_num_threads_before_the_first_net_wins(tmp_path):
    out = _run(tmp_path, cores=4, load=50.0, before="torch.set_num_threads(3)")
    assert out["net"] == 3 and out["steps"] == 3


def test_torch_set_num_threads_after_decaffe_chose_wins(tmp_path):
    out = _run(tmp_path, cores=4, load=50.0, after="torch.set_num_threads(3)")
    assert out["net"] == 1 and out["steps"] == 3


def test_caffe_set_num_threads_wins(tmp_path):
    out = _run(tmp_path, cores=4, load=0.0, before="caffe.set_num_threads(2)",
               after="threads.load_average = lambda: 50.0")
    assert out["net"] == 2 and out["steps"] == 2


@pytest.mark.parametrize("name", ["DECAFFE_THREADS", "OMP_NUM_THREADS"])
def test_the_environment_wins(tmp_path, name):
    out = _run(tmp_path, cores=4, load=50.0, env={name: "3"})
    assert out["net"] == 3 and out["steps"] == 3


def test_set_num_threads_refuses_zero():
    from decaffe.errors import DecaffeError

    with pytest.raises(DecaffeError, match="at least 1 thread"):
        threads.set_num_threads(0)


def test_the_load_is_the_average_or_what_runs_now_whichever_is_larger(monkeypatch):
    """Busy processes that started a moment ago are not in the 1-minute average yet."""
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.5, 0.4, 0.3))
    monkeypatch.setattr(threads, "runnable_now", lambda: 3.0)
    assert threads.load_average() == 3.0
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (5.0, 0.4, 0.3))
    assert threads.load_average() == 5.0

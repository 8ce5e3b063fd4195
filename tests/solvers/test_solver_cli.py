"""The `decaffe` training commands as a user drives them: train (log lines, snapshots, resume,
finetuning, signals, non-finite losses, bad flags), test, time, device_query, parse_log and
plot_log."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from solver_testlib import GLOG_LINE, RE_LOSS, RE_TEST_OUTPUT, RE_TRAIN_OUTPUT, write_h5

from decaffe.cli import main as cli
from decaffe.formats.weights import load_weights
from decaffe.solvers.snapshot import read_state

NET = """name: "tiny"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "train_list.txt" batch_size: 4 } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
  hdf5_data_param { source: "test_list.txt" batch_size: 4 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 6 weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "ip1" top: "ip1" }
layer { name: "scale1" type: "Scale" bottom: "ip1" top: "ip1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""

SOLVER = """net: "net.prototxt"
test_iter: 4
test_interval: 8
base_lr: 0.1
lr_policy: "step"
gamma: 0.5
stepsize: 8
momentum: 0.9
weight_decay: 0.0005
display: 4
max_iter: 24
snapshot: 8
snapshot_prefix: "snap/tiny"
random_seed: 3
solver_mode: CPU
"""


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32) + (x[:, 1] > 0.5)
    return x, y


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A folder with a classifier, its data (32 train samples: an epoch is 8 iterations,
    16 test samples) and its solver."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLOG_minloglevel", "0")
    write_h5(str(tmp_path), "train", *_data(32, 0))
    write_h5(str(tmp_path), "test", *_data(16, 1))
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    (tmp_path / "snap").mkdir()
    return tmp_path


def _run(capsys, *argv) -> tuple[int, str]:
    rc = cli(list(argv))
    return rc, capsys.readouterr().err


def _same_files(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def test_train_log_and_snapshots(job, capsys):
    rc, err = _run(capsys, "train", "-solver", "solver.prototxt")
    assert rc == 0, err
    lines = err.splitlines()
    assert all(GLOG_LINE.match(ln) for ln in lines if ln.strip())
    assert "Use CPU." in err and "Starting Optimization" in err and "Solving tiny" in err
    assert [int(i) for i, _ in RE_LOSS.findall(err)] == [0, 4, 8, 12, 16, 20, 24]
    lrs = re.findall(r"Iteration (\d+), lr = (\S+)", err)
    assert [(int(i), float(v)) for i, v in lrs] == [
        (0, 0.1), (4, 0.1), (8, 0.05), (12, 0.05), (16, 0.025), (20, 0.025)]
    assert len(RE_TRAIN_OUTPUT.findall(err)) == 6
    tests = re.findall(r"Iteration (\d+), Testing net \(#0\)", err)
    assert [int(i) for i in tests] == [0, 8, 16, 24]
    outs = RE_TEST_OUTPUT.findall(err)
    assert [(k, n) for k, n, _ in outs] == [("0", "accuracy"), ("1", "loss")] * 4
    assert re.search(r"Test net output #1: loss = \S+ \(\* 1 = \S+ loss\)", err)
    assert all(0 <= float(v) <= 1 for k, n, v in outs if n == "accuracy")
    shots = re.findall(r"Snapshotting to binary proto file (\S+)", err)
    assert shots == ["snap/tiny_iter_8.caffemodel", "snap/tiny_iter_16.caffemodel",
                     "snap/tiny_iter_24.caffemodel"]
    # the snapshots, and the run folder decaffe train records beside them
    assert sorted(os.listdir("snap")) == sorted(
        [f"tiny_iter_{i}.{ext}" for i in (8, 16, 24) for ext in ("caffemodel", "solverstate")]
        + ["tiny.run"])
    assert lines[-1].endswith("Optimization Done.")
    # the log is what Caffe's parse_log reads
    (job / "log.txt").write_text(err)
    assert cli(["parse_log", "log.txt", "."]) == 0
    with open("log.txt.train", newline="") as f:
        train = list(csv.DictReader(f))
    with open("log.txt.test", newline="") as f:
        test = list(csv.DictReader(f))
    assert [float(r["NumIters"]) for r in train] == [0, 4, 8, 12, 16, 20]
    assert list(train[0]) == ["NumIters", "Seconds", "LearningRate", "loss"]
    # as in Caffe's parse_log, a row carries the last rate printed before its outputs (the
    # previous display's), and the first row copies the second's
    assert [float(r["LearningRate"]) for r in train] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    assert [float(r["NumIters"]) for r in test] == [0, 8, 16, 24]
    assert list(test[0]) == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert all(float(r["Seconds"]) >= 0 for r in train + test)


def test_resume_matches_an_uninterrupted_run(job, capsys):
    rc, _ = _run(capsys, "train", "-solver", "solver.prototxt")
    assert rc == 0
    os.rename("snap", "full")
    os.mkdir("snap")
    for ext in ("caffemodel", "solverstate"):
        os.link(f"full/tiny_iter_8.{ext}", f"snap/tiny_iter_8.{ext}")
    rc, err = _run(capsys, "train", "--solver=solver.prototxt",
                   "--snapshot", "snap/tiny_iter_8.solverstate")
    assert rc == 0, err
    assert "Resuming from snap/tiny_iter_8.solverstate" in err
    assert [int(i) for i, _ in RE_LOSS.findall(err)] == [8, 12, 16, 20, 24]
    for it in (16, 24):
        # the same weights, bit for bit (an epoch boundary: the data restart where they were)
        a, b = load_weights(f"full/tiny_iter_{it}.caffemodel"), load_weights(
            f"snap/tiny_iter_{it}.caffemodel")
        assert [n for n, _ in a] == [n for n, _ in b]
        for (name, ra), (_, rb) in zip(a, b):
            for x, y in zip(ra, rb):
                np.testing.assert_array_equal(x.array, y.array, err_msg=f"{name} at {it}")
        sa, sb = read_state(f"full/tiny_iter_{it}.solverstate"), read_state(
            f"snap/tiny_iter_{it}.solverstate")
        for x, y in zip(sa.history, sb.history):
            np.testing.assert_array_equal(x, y)
        assert sa.iter == sb.iter == it


def test_finetune_from_weights(job, capsys):
    assert _run(capsys, "train", "-solver", "solver.prototxt")[0] == 0
    (job / "frozen.prototxt").write_text(SOLVER.replace("base_lr: 0.1", "base_lr: 0")
                                         .replace("max_iter: 24", "max_iter: 2")
                                         .replace("snap/tiny", "ft"))
    rc, err = _run(capsys, "train", "-solver", "frozen.prototxt", "-weights",
                   "snap/tiny_iter_16.caffemodel,snap/tiny_iter_24.caffemodel")
    assert rc == 0, err
    assert err.index("Finetuning from snap/tiny_iter_16") < err.index(
        "Finetuning from snap/tiny_iter_24")
    # base_lr 0: the learned weights stay those of the last model given
    want = dict(load_weights("snap/tiny_iter_24.caffemodel"))
    got = dict(load_weights("ft_iter_2.caffemodel"))
    for name in ("ip1", "scale1", "ip2"):
        for x, y in zip(want[name], got[name]):
            np.testing.assert_array_equal(x.array, y.array)


@pytest.mark.parametrize("args,message", [
    ([], "-solver: need a solver definition"),
    (["-solver", "missing.prototxt"], "cannot open 'missing.prototxt'"),
    (["-solver", "solver.prototxt", "-weights", "nope.caffemodel"],
     "-weights: cannot open 'nope.caffemodel'"),
    (["-solver", "solver.prototxt", "-snapshot", "s.solverstate", "-weights", "w"],
     "but not both"),
    (["-solver", "solver.prototxt", "-snapshot", "gone.solverstate"],
     "-snapshot: cannot open 'gone.solverstate'"),
    (["-solver", "solver.prototxt", "-gpu", "0,1"], "no CUDA device is available"),
    (["-solver", "solver.prototxt", "-gpu", "x"], "-gpu: expected device ids"),
    (["-solver", "solver.prototxt", "-sigint_effect", "explode"],
     '-sigint_effect: invalid signal effect "explode"'),
])
def test_train_errors(job, capsys, args, message):
    if "0,1" in args and torch.cuda.is_available():
        pytest.skip("asks for two devices; the message differs when CUDA is present")
    rc, err = _run(capsys, "train", *args)
    assert rc == 1
    assert "decaffe train: error:" in err and message in err


def test_train_on_a_gpu_that_is_not_there(job, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    rc, err = _run(capsys, "train", "-solver", "solver.prototxt", "-gpu", "0")
    assert rc == 1 and "no CUDA device is available" in err
    # a solver asking for the GPU trains on the CPU, with a warning
    (job / "gpu.prototxt").write_text(SOLVER.replace("solver_mode: CPU", "solver_mode: GPU")
                                      .replace("max_iter: 24", "max_iter: 1"))
    rc, err = _run(capsys, "train", "-solver", "gpu.prototxt")
    assert rc == 0 and "solver_mode is GPU but no CUDA device" in err


def test_nan_loss_stops_training(job, capsys):
    x, y = _data(32, 0)
    x[6, 1] = np.inf  # batch 1: iteration 1
    write_h5(str(job), "train", x, y)
    rc, err = _run(capsys, "train", "-solver", "solver.prototxt")
    assert rc == 1
    assert "error: Iteration 1: the loss is" in err
    assert "the first layer whose output is not finite is 'data'" in err
    rc, err = _run(capsys, "train", "-solver", "solver.prototxt", "-nan_effect=continue")
    assert rc == 0 and "Optimization Done." in err


def test_test_command(job, capsys):
    assert _run(capsys, "train", "-solver", "solver.prototxt")[0] == 0
    rc, err = _run(capsys, "test", "-model", "net.prototxt", "-weights",
                   "snap/tiny_iter_24.caffemodel", "-iterations", "3")
    assert rc == 0, err
    assert "Running for 3 iterations." in err
    batches = re.findall(r"Batch (\d+), (\w+) = (\S+)", err)
    assert [(int(i), n) for i, n, _ in batches] == [
        (i, n) for i in range(3) for n in ("accuracy", "loss")]
    import decaffe

    net = decaffe.Net("net.prototxt", decaffe.TEST, weights="snap/tiny_iter_24.caffemodel")
    acc, loss = [], []
    for _ in range(3):
        net.forward()
        acc.append(float(net.blobs["accuracy"].data))
        loss.append(float(net.blobs["loss"].data))
    assert float(re.search(r"\] accuracy = (\S+)", err).group(1)) == pytest.approx(
        np.mean(acc), rel=1e-5)
    m = re.search(r"\] loss = (\S+) \(\* 1 = (\S+) loss\)", err)
    assert float(m.group(1)) == pytest.approx(np.mean(loss), rel=1e-5)
    assert float(re.search(r"Loss: (\S+)", err).group(1)) == pytest.approx(np.mean(loss),
                                                                           rel=1e-5)
    rc, err = _run(capsys, "test", "-model", "net.prototxt")
    assert rc == 1 and "-weights: need model weights" in err
    rc, err = _run(capsys, "test", "-model", "net.prototxt", "-weights", "nope.caffemodel")
    assert rc == 1 and "cannot open 'nope.caffemodel'" in err


def test_time_command(job, capsys):
    rc, err = _run(capsys, "time", "-model", "net.prototxt", "-iterations", "2")
    assert rc == 0, err
    for line in ("Performing Forward", "Initial loss: ", "Performing Backward",
                 "*** Benchmark begins ***", "Testing for 2 iterations.",
                 "Average time per layer: ", "*** Benchmark ends ***"):
        assert line in err
    assert len(re.findall(r"Iteration: \d forward-backward time: \S+ ms\.", err)) == 2
    for name in ("data", "ip1", "bn1", "scale1", "relu1", "ip2", "loss"):
        assert re.search(rf"\s*{name}\tforward: [\d.e+-]+ ms\.", err), name
        assert re.search(rf"\s*{name}\tbackward: [\d.e+-]+ ms\.", err), name
    for what in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward",
                 "Total Time"):
        assert re.search(rf"{what}: [\d.e+-]+ ms\.", err), what
    rc, err = _run(capsys, "time", "-model", "net.prototxt", "-phase", "VAL")
    assert rc == 1 and '-phase: must be "TRAIN" or "TEST"' in err


def test_device_query(capsys):
    rc, err = _run(capsys, "device_query")
    assert rc == 0
    if torch.cuda.is_available():
        assert "Device id:" in err and "Name:" in err
    else:
        assert "No CUDA device is available to PyTorch" in err
        rc, err = _run(capsys, "device_query", "-gpu", "0")
        assert rc == 1 and "no CUDA device" in err


CAFFE_LOG = """\
I0210 13:39:22.000000 25210 solver.cpp:280] Solving LeNet
I0210 13:39:22.000001 25210 solver.cpp:281] Learning Rate Policy: inv
I0210 13:39:22.100000 25210 solver.cpp:338] Iteration 0, Testing net (#0)
I0210 13:39:23.000000 25210 solver.cpp:406]     Test net output #0: accuracy = 0.0925
I0210 13:39:23.000000 25210 solver.cpp:406]     Test net output #1: loss = 2.31 (* 1 = 2.31 loss)
I0210 13:39:23.100000 25210 solver.cpp:229] Iteration 0, loss = 2.29
I0210 13:39:23.100000 25210 solver.cpp:245]     Train net output #0: loss = 2.29 (* 1 = 2.29 loss)
I0210 13:39:23.100000 25210 sgd_solver.cpp:106] Iteration 0, lr = 0.01
not a glog line: a progress bar or a traceback
I0210 13:39:25.500000 25210 solver.cpp:229] Iteration 100, loss = 0.2
I0210 13:39:25.500000 25210 solver.cpp:245]     Train net output #0: loss = 0.18 (* 1 = 0.18 loss)
I0210 13:39:25.500000 25210 sgd_solver.cpp:106] Iteration 100, lr = 0.00992565
I0210 13:39:26.000000 25210 solver.cpp:338] Iteration 200, Testing net (#0)
I0210 13:39:27.000000 25210 solver.cpp:406]     Test net output #0: accuracy = 0.97
I0210 13:39:27.000000 25210 solver.cpp:406]     Test net output #1: loss = 0.09 (* 1 = 0.09 loss)
"""


def test_parse_log_reads_caffes_log(tmp_path, capsys):
    log = tmp_path / "caffe.INFO"
    log.write_text(CAFFE_LOG)
    assert cli(["parse_log", str(log), str(tmp_path)]) == 0
    with open(tmp_path / "caffe.INFO.train", newline="") as f:
        text = f.read()
    assert text.splitlines()[0] == "NumIters,Seconds,LearningRate,loss"
    rows = list(csv.DictReader(text.splitlines()))
    assert [(float(r["NumIters"]), float(r["Seconds"]), float(r["LearningRate"]),
             float(r["loss"])) for r in rows] == [(0, 1.1, 0.01, 2.29), (100, 3.5, 0.01, 0.18)]
    with open(tmp_path / "caffe.INFO.test", newline="") as f:
        rows = list(csv.DictReader(f))
    # the first row's lr is only printed after it: Caffe's parse_log copies the second's
    assert [(float(r["NumIters"]), float(r["LearningRate"]), float(r["accuracy"]),
             float(r["loss"])) for r in rows] == [(0, 0.00992565, 0.0925, 2.31),
                                                   (200, 0.00992565, 0.97, 0.09)]
    assert cli(["parse_log", str(log), str(tmp_path / "absent")]) == 1
    png = tmp_path / "curves.png"
    assert cli(["plot_log", str(log), str(png)]) == 0
    assert "loss, accuracy, learning rate" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert cli(["plot_log", str(tmp_path / "empty.log"), str(png)]) == 1


def test_signal_handler_effects():
    from decaffe.cli.train import SignalHandler

    h = SignalHandler("stop", "snapshot")
    assert h.action() == "none"
    h._handle(signal.SIGHUP, None)
    assert h.action() == "snapshot" and h.action() == "none"
    h._handle(signal.SIGINT, None)
    assert h.action() == "stop"
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C while stopping
        h._handle(signal.SIGINT, None)
    quiet = SignalHandler("none", "none")
    quiet._handle(signal.SIGINT, None)
    assert quiet.action() == "none"


def test_signal_handlers_are_in_place_before_the_solver_is_built(tmp_path, monkeypatch):
    import decaffe.solvers as solvers

    seen = []

    def spy(kind):
        seen.append(signal.getsignal(signal.SIGINT))
        raise RuntimeError("stop here")

    monkeypatch.setattr(solvers, "solver_class", spy)
    solver = tmp_path / "s.prototxt"
    solver.write_text('net: "n.prototxt" base_lr: 0.1 max_iter: 1 lr_policy: "fixed"\n')
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError, match="stop here"):
        from decaffe.cli.train import main

        main(["train", "-solver", str(solver)])
    assert seen and getattr(seen[0], "__self__", None).__class__.__name__ == "SignalHandler"
    assert signal.getsignal(signal.SIGINT) is before  # and restored afterwards


def _wait_for(path: str, pattern: str, proc, timeout: float = 240.0) -> re.Match:
    start = time.time()
    while time.time() - start < timeout:
        with open(path) as f:
            m = re.search(pattern, f.read())
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    with open(path) as f:
        raise AssertionError(f"'{pattern}' never appeared; log:\n{f.read()[-3000:]}")


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="needs POSIX signals")
def test_sighup_snapshots_and_sigint_stops_with_one_snapshot(job):
    (job / "long.prototxt").write_text(SOLVER.replace("max_iter: 24", "max_iter: 1000000")
                                       .replace("display: 4", "display: 1")
                                       .replace("snapshot: 8", "snapshot: 0")
                                       .replace("test_interval: 8", "test_interval: 100000"))
    env = dict(os.environ, GLOG_minloglevel="0", OMP_NUM_THREADS="1")
    with open("train.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "decaffe", "train", "-solver",
                                 "long.prototxt"], stderr=log, stdout=log, env=env)
    try:
        _wait_for("train.log", r"Iteration 3 \(", proc)
        proc.send_signal(signal.SIGHUP)  # default effect: snapshot and go on
        hup = _wait_for("train.log", r"Snapshotting to binary proto file snap/tiny_iter_(\d+)"
                                     r"\.caffemodel", proc)
        first = int(hup.group(1))
        _wait_for("train.log", rf"Iteration {first + 2} \(", proc)
        proc.send_signal(signal.SIGINT)  # default effect: stop (with a snapshot)
        rc = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = open("train.log").read()
    assert rc == 0, text[-3000:]
    assert "Optimization stopped early." in text
    shots = [int(i) for i in re.findall(r"Snapshotting to binary proto file snap/tiny_iter_"
                                        r"(\d+)\.caffemodel", text)]
    assert len(shots) == 2 and shots[0] == first and shots[1] > first + 1
    assert sorted(os.listdir("snap")) == sorted(
        [f"tiny_iter_{i}.{ext}" for i in shots for ext in ("caffemodel", "solverstate")]
        + ["tiny.run"])
    state = read_state(f"snap/tiny_iter_{shots[1]}.solverstate")
    assert state.iter == shots[1] and len(state.history) == 9
    assert not [f for f in os.listdir("snap") if f.endswith(".tmp")]


def test_train_level_and_stage_select_layers(job, capsys):
    extra = ('layer { name: "aux" type: "Power" bottom: "ip2" top: "aux" '
             'include { phase: TRAIN stage: "aux" } }\n'
             'layer { name: "deep" type: "Power" bottom: "ip2" top: "deep" '
             'include { phase: TRAIN min_level: 2 } }\n')
    (job / "net.prototxt").write_text(NET + extra)
    (job / "short.prototxt").write_text(SOLVER.replace("max_iter: 24", "max_iter: 1")
                                        .replace("display: 4", "display: 1"))

    def outputs(*flags):
        rc, err = _run(capsys, "train", "-solver", "short.prototxt", *flags)
        assert rc == 0, err
        return sorted({name for _, name, _ in RE_TRAIN_OUTPUT.findall(err)})

    assert outputs() == ["loss"]
    assert outputs("-stage", "aux") == ["aux", "loss"]
    assert outputs("-level=2", "--stage=aux,other") == ["aux", "deep", "loss"]

"""`decaffe train` records its run (the BatchNorm example's solvers, a few dozen iterations):
the run folder's files and events, a folder read while it grows and after a SIGKILL,
SIGTERM's snapshot and exit status with an exact `-snapshot auto` resume, the Ctrl-C
without a snapshot, -record false, -run_dir, -tensorboard."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import numpy as np
import pytest
import runs_testlib as R

from decaffe.cli import main as cli
from decaffe.cli.train import EXIT_PREEMPTED
from decaffe.formats import prototxt
from decaffe.formats.weights import load_weights
from decaffe.runs import read_events

posix = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


@pytest.fixture
def job(tmp_path, digits, monkeypatch):
    R.example_folder(str(tmp_path), digits)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLOG_minloglevel", "0")
    return tmp_path


def _kinds(records) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["kind"], []).append(r)
    return out


def test_train_records_the_run_beside_its_snapshots(job, capsys):
    solver = R.solver(str(job), max_iter=40, display=10, test_interval=20, snapshot=20,
                      test_initialization="false")
    assert cli(["train", "-solver", solver]) == 0
    err = capsys.readouterr().err
    run = job / "out" / "cnn_bn.run"
    assert "Recording the run in out/cnn_bn.run" in err
    assert sorted(os.listdir(run)) == ["events.jsonl", "meta.json", "net.json",
                                       "solver.prototxt", "train_net.prototxt"]
    meta = json.loads((run / "meta.json").read_text())
    started = meta.pop("started")
    assert abs(started - time.time()) < 600
    assert meta["format"] == "decaffe-run" and meta["version"] == 1
    assert meta["name"] == "cnn_bn" and meta["command"] == ["decaffe", "train", "-solver",
                                                            solver]
    assert meta["cwd"] == str(job) and meta["solver_file"] == solver
    assert (meta["snapshot_prefix"], meta["max_iter"], meta["display"],
            meta["test_interval"]) == ("out/cnn_bn", 40, 10, 20)
    assert meta["batch_size"] == 64 and meta["world_size"] == 1
    assert meta["resumed_from"] is None
    # the solver and the train net (filtered to TRAIN) as text that parses back
    assert prototxt.read_solver(str(run / "solver.prototxt")).max_iter == 40
    train_net = prototxt.read_net(str(run / "train_net.prototxt"))
    assert [lp.name for lp in train_net.layer][:3] == ["data", "conv1", "conv1_bn"]
    graph = json.loads((run / "net.json").read_text())
    names = [layer["name"] for layer in graph["layers"]]
    assert names == [lp.name for lp in train_net.layer]
    bn = graph["layers"][2]
    assert bn == {"name": "conv1_bn", "type": "BatchNorm", "bottoms": ["conv1"],
                  "tops": ["conv1"], "phase": "TRAIN"}

    read = read_events(str(run / "events.jsonl"))
    assert read.malformed == 0 and not read.partial_tail
    kinds = _kinds(read.records)
    # one train record per display line, with the displayed loss and learning rate
    logged = [(int(i), float(v)) for i, v in
              re.findall(r"Iteration (\d+) \([^)]*\), loss = (\S+)", err)]
    assert [(r["iter"], round(r["loss"], 4)) for r in kinds["train"]] == \
        [(i, round(v, 4)) for i, v in logged]
    assert all(r["lr"] == 0.01 for r in kinds["train"])
    assert kinds["train"][0]["images_per_s"] is None
    assert all(r["images_per_s"] > 0 for r in kinds["train"][1:])
    assert set(kinds["train"][0]["outputs"]) == {"loss"}
    times = [r["time"] for r in read.records]
    assert times == sorted(times) and times[0] >= 0
    # test scores as logged
    logged_acc = re.findall(r"Test net output #0: accuracy = (\S+)", err)
    assert [(r["iter"], r["net"]) for r in kinds["test"]] == [(20, 0), (40, 0)]
    assert [round(r["scores"]["accuracy"], 5) for r in kinds["test"]] == \
        [round(float(a), 5) for a in logged_acc]
    # the snapshots, each with the command that resumes from it
    shots = kinds["snapshot"]
    assert [s["iter"] for s in shots] == [20, 40]
    assert shots[0]["model"] == "out/cnn_bn_iter_20.caffemodel"
    assert shots[0]["state"] == "out/cnn_bn_iter_20.solverstate"
    assert shots[0]["resume"] == (f"decaffe train -solver {solver} -snapshot "
                                  "out/cnn_bn_iter_20.solverstate")
    # BatchNorm samples: every BN layer, its channels, the Scale's gamma and beta
    first = kinds["bn"][0]
    assert first["iter"] == 0
    assert list(first["layers"]) == ["conv1_bn", "conv2_bn", "conv3_bn"]
    for name, channels in (("conv1_bn", 16), ("conv2_bn", 32), ("conv3_bn", 64)):
        entry = first["layers"][name]
        assert entry["channels"] == channels and "channel_stride" not in entry
        for key in ("mean", "var", "batch_mean", "batch_var", "gamma", "beta"):
            assert len(entry[key]) == channels, (name, key)
        assert entry["factor"] == 1  # after the first pass: 0.9 * 0 + 1
        # the stored statistics after one pass are that batch's (sum = 0.9·0 + batch)
        np.testing.assert_allclose(entry["mean"], entry["batch_mean"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(entry["var"], entry["batch_var"], rtol=1e-5, atol=1e-6)
        # γ and β after the first update: moved off their fillers' 1 and 0, a little
        assert entry["gamma"] != [1] * channels
        np.testing.assert_allclose(entry["gamma"], 1, atol=0.05)
        np.testing.assert_allclose(entry["beta"], 0, atol=0.05)
    params = kinds["params"][0]["layers"]
    assert [p["shape"] for p in params["conv1"]["param"]] == [[16, 1, 3, 3]]
    assert all(p["grad_norm"] > 0 for p in params["conv1"]["param"])
    assert kinds["end"] == [{"kind": "end", "iter": 40, "time": kinds["end"][0]["time"],
                             "reason": "finished", "message": None}]
    assert read.records[-1]["kind"] == "end"
    # a sample at iteration k follows k + 1 passes: factor (1 - 0.9^(k+1)) / (1 - 0.9)
    for sample in kinds["bn"]:
        k = sample["iter"]
        np.testing.assert_allclose(sample["layers"]["conv3_bn"]["factor"],
                                   (1 - 0.9 ** (k + 1)) / 0.1, rtol=1e-5)


def test_record_false_and_run_dir(job, capsys):
    solver = R.solver(str(job), max_iter=4, display=2)
    assert cli(["train", "-solver", solver, "-record", "false"]) == 0
    assert not os.path.exists("out/cnn_bn.run")
    assert cli(["train", "-solver", solver, "-run_dir", "elsewhere/myrun.run"]) == 0
    meta = json.loads(open("elsewhere/myrun.run/meta.json").read())
    assert meta["name"] == "myrun"
    assert [r["iter"] for r in read_events("elsewhere/myrun.run/events.jsonl").records
            if r["kind"] == "train"] == [0, 2]
    assert not os.path.exists("out/cnn_bn.run")
    # a fresh start over an earlier run moves the earlier folder aside, under its start time
    assert cli(["train", "-solver", solver, "-run_dir", "elsewhere/myrun.run"]) == 0
    kept = [d for d in os.listdir("elsewhere") if d != "myrun.run"]
    assert len(kept) == 1 and re.fullmatch(r"myrun-\d{8}-\d{6}\.run", kept[0])
    assert json.loads(open(f"elsewhere/{kept[0]}/meta.json").read())["started"] == \
        meta["started"]


def test_a_solver_that_displays_nothing_is_recorded_200_times(job, capsys):
    solver = R.solver(str(job), max_iter=400, display=0)  # the example's own display: 0
    assert cli(["train", "-solver", solver]) == 0
    run = "out/cnn_bn.run"
    assert json.loads(open(f"{run}/meta.json").read())["record_every"] == 2
    iters = [r["iter"] for r in read_events(f"{run}/events.jsonl").records
             if r["kind"] == "train"]
    assert iters == list(range(0, 400, 2))


def test_tensorboard_event_files(job, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    solver = R.solver(str(job), max_iter=20, display=5, test_interval=10)
    assert cli(["train", "-solver", solver, "-tensorboard", "tb"]) == 0
    acc = EventAccumulator("tb", size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/images_per_s", "output/loss", "test/accuracy",
            "test/loss"} <= set(tags["scalars"])
    assert {f"bn/{layer}/{key}" for layer in ("conv1_bn", "conv2_bn", "conv3_bn")
            for key in ("mean", "var", "gamma", "beta")} <= set(tags["histograms"])
    loss = acc.Scalars("train/loss")
    train = [r for r in read_events("out/cnn_bn.run/events.jsonl").records
             if r["kind"] == "train"]
    assert [e.step for e in loss] == [r["iter"] for r in train] == [0, 5, 10, 15]
    np.testing.assert_allclose([e.value for e in loss], [r["loss"] for r in train], rtol=1e-5)
    assert [e.step for e in acc.Scalars("test/accuracy")] == [10, 20]
    hist = acc.Histograms("bn/conv1_bn/mean")[0]
    assert hist.step == 0 and hist.histogram_value.num == 16


def test_tensorboard_without_the_package_names_the_extra(job, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    solver = R.solver(str(job), max_iter=2, display=1)
    assert cli(["train", "-solver", solver, "-tensorboard", "tb"]) == 1
    assert "pip install 'decaffe[tensorboard]'" in capsys.readouterr().err


@posix
def test_a_run_read_while_it_grows_and_after_sigkill(job):
    solver = R.solver(str(job), max_iter=100000, display=2)
    proc = R.start_train(str(job), "-solver", solver)
    events = "out/cnn_bn.run/events.jsonl"
    try:
        # iteration 4's record is written after its display line, before iteration 6's
        R.wait_for("train.log", r"Iteration 6 \(", proc)
        first = read_events(events)
        assert [r["iter"] for r in first.records if r["kind"] == "train"][:3] == [0, 2, 4]
        # read on from where the first read ended: only what was appended since (under load
        # the first read may come late, so wait for displays past what it saw)
        seen = [r["iter"] for r in first.records if r["kind"] == "train"]
        R.wait_for("train.log", rf"Iteration {seen[-1] + 6} \(", proc)
        more = read_events(events, first.offset)
        iters = [r["iter"] for r in more.records if r["kind"] == "train"]
        assert iters and iters[0] == seen[-1] + 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    data = open(events, "rb").read()
    whole = read_events(events)
    assert whole.malformed == 0
    assert whole.offset == data.rfind(b"\n") + 1
    assert len(whole.records) == data.count(b"\n")  # every complete line parses
    kinds = [r["kind"] for r in whole.records]
    assert "end" not in kinds and kinds.count("train") >= 7
    # a line cut by a kill inside its write is skipped, the rest still read
    with open(events, "ab") as f:
        f.write(b'{"kind":"train","iter":99')
    cut = read_events(events)
    assert cut.partial_tail and cut.records == whole.records
    json.loads(open("out/cnn_bn.run/meta.json").read())


def _final_blobs(path: str) -> dict:
    return {k: [np.asarray(b) for b in v] for k, v in load_weights(path).items()}


@posix
def test_sigterm_snapshots_exits_75_and_snapshot_auto_resumes_exactly(tmp_path, digits):
    # the same run twice: uninterrupted, and stopped by SIGTERM then resumed
    fields = dict(max_iter=60, display=1, snapshot=0, snapshot_after_train="true",
                  test_interval=30)
    full = R.example_folder(str(tmp_path / "full"), digits)
    R.solver(full, **fields)
    rc, text = R.train(full, "-solver", "solver.prototxt")
    assert rc == 0, text[-3000:]

    cut = R.example_folder(str(tmp_path / "cut"), digits)
    R.solver(cut, **fields)
    proc = R.start_train(cut, "-solver", "solver.prototxt", "-snapshot", "auto")
    log = os.path.join(cut, "train.log")
    try:
        R.wait_for(log, r"Iteration 5 \(", proc)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = open(log).read()
    assert rc == EXIT_PREEMPTED == 75, text[-3000:]
    stop = int(re.search(r"SIGTERM: stopped at iteration (\d+); the snapshot "
                         r"out/cnn_bn_iter_(\d+)\.solverstate holds iteration \2; exiting "
                         r"with status 75", text).group(1))
    assert 5 <= stop < 60
    assert sorted(os.listdir(os.path.join(cut, "out"))) == sorted([
        f"cnn_bn_iter_{stop}.caffemodel", f"cnn_bn_iter_{stop}.solverstate", "cnn_bn.run"])
    run = os.path.join(cut, "out", "cnn_bn.run")
    records = read_events(os.path.join(run, "events.jsonl")).records
    assert records[-1]["kind"] == "end" and records[-1]["reason"] == "sigterm"
    shot = [r for r in records if r["kind"] == "snapshot"][-1]
    assert shot["iter"] == stop and shot["resume"] == (
        f"decaffe train -solver solver.prototxt -snapshot out/cnn_bn_iter_{stop}.solverstate")

    rc, text = R.train(cut, "-solver", "solver.prototxt", "-snapshot", "auto")
    assert rc == 0, text[-3000:]
    assert f"Resuming from out/cnn_bn_iter_{stop}.solverstate" in text
    a = open(os.path.join(full, "out", "cnn_bn_iter_60.caffemodel"), "rb").read()
    b = open(os.path.join(cut, "out", "cnn_bn_iter_60.caffemodel"), "rb").read()
    assert a == b  # bitwise: weights, BN statistics and all
    # the resumed process continued the same run folder on the same clock
    meta = json.loads(open(os.path.join(run, "meta.json")).read())
    assert meta["resumed_from"] == f"out/cnn_bn_iter_{stop}.solverstate"
    assert [s["iter"] for s in meta["starts"]] == [0, stop]
    records = read_events(os.path.join(run, "events.jsonl")).records
    ends = [r["reason"] for r in records if r["kind"] == "end"]
    assert ends == ["sigterm", "finished"]
    train = [r["iter"] for r in records if r["kind"] == "train"]
    assert train[-1] == 59 and stop in train


@posix
def test_sigterm_effect_none_ignores_it_and_stop_honours_snapshot_after_train(job):
    solver = R.solver(str(job), max_iter=100000, display=1, snapshot_after_train="false")
    proc = R.start_train(str(job), "-solver", solver, "-sigterm_effect", "stop")
    try:
        R.wait_for("train.log", r"Iteration 2 \(", proc)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = open("train.log").read()
    assert rc == 75, text[-2000:]
    assert "no snapshot was written; exiting with status 75" in text
    assert [f for f in os.listdir("out") if "_iter_" in f] == []

    proc = R.start_train(str(job), "-solver", solver, "-sigterm_effect", "none",
                         log_name="none.log")
    try:
        R.wait_for("none.log", r"Iteration 2 \(", proc)
        proc.send_signal(signal.SIGTERM)
        R.wait_for("none.log", r"Iteration 8 \(", proc)  # still training
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = open("none.log").read()
    assert rc == 0, text[-2000:]
    # the Ctrl-C wrote nothing (snapshot_after_train: false) and says so, in one line
    lines = [ln for ln in text.splitlines() if "without a snapshot" in ln]
    assert len(lines) == 1 and "snapshot_after_train: false" in lines[0]
    assert "-sigint_effect snapshot" in lines[0]
    records = read_events("out/cnn_bn.run/events.jsonl").records
    assert records[-1]["kind"] == "end" and records[-1]["reason"] == "sigint"
    assert "without a snapshot" in records[-1]["message"]

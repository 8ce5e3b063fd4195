"""`decaffe dashboard` as a command: it opens a log written by the original C++ Caffe and a
run folder whose writer was killed with SIGKILL mid-record, and prints one URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from dash_fixtures import CAFFE_LOG, ROOT, get, start_dashboard

from decaffe.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))


def killed_run(folder: str) -> int:
    """A run folder whose writer dies with SIGKILL halfway through writing a record; returns
    how many whole records it wrote."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {HERE!r})
        from dash_fixtures import write_run
        write_run({folder!r}, 60, end=False)
        with open({folder!r} + "/events.jsonl", "a") as f:
            f.write('{{"kind": "bn", "iter": 70, "time": 3.5, "layers": {{"bn1": {{"mean": [0.1,')
            f.flush()
            print("ready", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    with open(os.path.join(folder, "events.jsonl")) as f:
        return sum(1 for line in f if line.endswith("\n"))


def test_dashboard_opens_a_caffe_log_and_a_killed_run(tmp_path):
    folder = str(tmp_path / "killed.run")
    whole = killed_run(folder)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc, url, lines = start_dashboard([CAFFE_LOG, folder], env=env)
    try:
        assert lines[0] == "Serving 2 runs (caffe_cifar10_quick.log, killed)"
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        status, page = get(url)
        assert status == 200 and b"decaffe dashboard" in page
        log, run = json.loads(get(url + "api/runs")[1])["runs"]
        assert log["kind"] == "log" and log["records"] == 41 + 9 + 1 + 1 and log["errors"] == []
        assert log["meta"]["max_iter"] == 4000
        assert run["records"] == whole and run["errors"] == []
        assert any("last line is incomplete" in n for n in run["notes"])
        records = json.loads(get(url + "api/run/1/records")[1])["records"]
        assert records[-1]["iter"] == 60 and not any(r["kind"] == "end" for r in records)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops it
        assert proc.wait(30) == 0


def test_dashboard_flags_and_errors(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path / "nothing")]) == 1
    assert "no such run folder or log" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # -help prints the flags and exits, as gflags does
        main(["dashboard", "-help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "-host" in out and "-port" in out and "token" in out


def test_train_both_dashboard_serves_the_four_runs(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples", "batchnorm"))
    import train_both

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        assert train_both.main(["--iters", "12", "--test-every", "6", "--out", str(out),
                                "-dashboard", "0"]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "Dashboard: http://127.0.0.1:" in printed
    # no terminal holds the page open: the script says it stops and how to reopen the runs
    assert "stops with this script" in printed
    assert "decaffe dashboard " in printed and "cnn_bn_lr0.2.run" in printed
    for name in ("cnn_plain_lr0.01", "cnn_bn_lr0.01", "cnn_plain_lr0.2", "cnn_bn_lr0.2"):
        with open(out / f"{name}.run" / "events.jsonl") as f:
            kinds = [json.loads(line)["kind"] for line in f]
        assert "train" in kinds and "test" in kinds and kinds[-1] == "end", name
        assert ("bn" in kinds) == ("_bn_" in name), name


def test_train_dashboard_needs_the_run_folder_and_a_valid_address(tmp_path, capsys,
                                                                   monkeypatch):
    from google.protobuf import text_format

    from decaffe.data.digits import ensure_digits
    from decaffe.proto import caffe_pb2

    example = os.path.join(ROOT, "examples", "batchnorm")
    ensure_digits(str(tmp_path / "data" / "digits"))
    param = caffe_pb2.SolverParameter()
    with open(os.path.join(example, "solver_bn.prototxt")) as f:
        text_format.Merge(f.read(), param)
    param.train_net = os.path.join(example, "cnn_bn_train.prototxt")
    param.test_net[0] = os.path.join(example, "cnn_bn_test.prototxt")
    param.max_iter = 2
    param.snapshot_prefix = str(tmp_path / "bn")
    solver = tmp_path / "solver.prototxt"
    solver.write_text(text_format.MessageToString(param))
    monkeypatch.chdir(tmp_path)  # the nets read data/digits/ relative to here
    assert main(["train", "-solver", str(solver), "-record", "false", "-dashboard", "0"]) == 1
    assert "-dashboard shows the run folder" in capsys.readouterr().err
    assert main(["train", "-solver", str(solver), "-dashboard", "localhost:port"]) == 1
    assert "expected [HOST:]PORT" in capsys.readouterr().err


def test_a_real_training_run_killed_with_sigkill_opens(tmp_path):
    import time

    from google.protobuf import text_format

    from decaffe.data.digits import ensure_digits
    from decaffe.proto import caffe_pb2

    example = os.path.join(ROOT, "examples", "batchnorm")
    ensure_digits(str(tmp_path / "data" / "digits"))
    param = caffe_pb2.SolverParameter()
    with open(os.path.join(example, "solver_bn.prototxt")) as f:
        text_format.Merge(f.read(), param)
    param.train_net = os.path.join(example, "cnn_bn_train.prototxt")
    param.test_net[0] = os.path.join(example, "cnn_bn_test.prototxt")
    param.max_iter, param.display, param.snapshot_prefix = 100000, 2, str(tmp_path / "bn")
    solver = tmp_path / "solver.prototxt"
    solver.write_text(text_format.MessageToString(param))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    train = subprocess.Popen([sys.executable, "-m", "decaffe", "train", "-solver", str(solver),
                              "-threads", "1"], cwd=str(tmp_path), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = tmp_path / "bn.run" / "events.jsonl"
    deadline = time.monotonic() + 120

    def bn_samples() -> int:
        if not events.exists():
            return 0
        return sum(json.loads(line)["kind"] == "bn"
                   for line in events.read_text().splitlines()[:-1])  # last may be partial

    while time.monotonic() < deadline and bn_samples() < 3:
        time.sleep(0.2)
    train.send_signal(signal.SIGKILL)  # mid-run, no end record, no clean close
    train.wait(30)
    assert train.returncode == -signal.SIGKILL
    proc, url, _ = start_dashboard([str(tmp_path / "bn.run")], env=env)
    try:
        (run,) = json.loads(get(url + "api/runs")[1])["runs"]
        assert run["errors"] == [] and run["records"] > 3 and run["meta"]["max_iter"] == 100000
        assert [layer["type"] for layer in run["net"]].count("BatchNorm") == 3
        records = json.loads(get(url + "api/run/0/records")[1])["records"]
        assert {"train", "bn", "params"} <= {r["kind"] for r in records}
        assert not any(r["kind"] == "end" for r in records)
        assert get(url)[0] == 200
    finally:
        proc.kill()
        proc.wait(30)

"""Run recording from Python (get_solver(record=...), solver.record_run) and its parts: the
BatchNorm and parameter samples against the net's own blobs, channel subsampling, the
event log's writer and reader, the resume command, the progress bar's first frame and
plot_log's log scale."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest
import torch

import caffe
from decaffe import log
from decaffe.cli import logtools
from decaffe.errors import DecaffeError
from decaffe.runs import EventWriter, RunError, encode, read_events, resume_command
from decaffe.solvers import TERMINATE, get_solver

DUMMY_NET = """name: "wide"
layer {{ name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {{ shape {{ dim: 8 dim: 5 }} shape {{ dim: 8 }}
    data_filler {{ type: "gaussian" std: 1 }} data_filler {{ type: "constant" value: 1 }} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param {{ num_output: {channels} weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "ip1" top: "ip1"
  batch_norm_param {{ moving_average_fraction: 0.5 }} }}
layer {{ name: "sc1" type: "Scale" bottom: "ip1" top: "ip1" scale_param {{ bias_term: true }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""


def _solver_file(folder, channels: int = 6, **extra) -> str:
    (folder / "net.prototxt").write_text(DUMMY_NET.format(channels=channels))
    fields = dict(net='"net.prototxt"', base_lr=0.1, momentum=0.9, lr_policy='"fixed"',
                  max_iter=10, display=1, snapshot_prefix='"snap/wide"', random_seed=3,
                  snapshot_after_train="false")
    fields.update(extra)
    text = "".join(f"{k}: {v}\n" for k, v in fields.items())
    (folder / "solver.prototxt").write_text(text)
    (folder / "snap").mkdir(exist_ok=True)
    return str(folder / "solver.prototxt")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_get_solver_records_when_asked_and_samples_match_the_blobs(folder):
    path = _solver_file(folder)
    plain = caffe.get_solver(path)
    plain.step(1)
    assert not os.path.exists("snap/wide.run")  # nothing unless asked

    solver = caffe.get_solver(path, record=True)
    net = solver.net
    weights_before = [p.detach().clone() for p in net.learnable_params]
    solver.step(1)
    recorder = solver._observers[0]
    records = read_events("snap/wide.run/events.jsonl").records
    kinds = [r["kind"] for r in records]
    assert kinds == ["train", "params", "bn"]
    meta = json.loads(open("snap/wide.run/meta.json").read())
    assert meta["solver_file"] == path and meta["batch_size"] == 8

    bn = records[2]["layers"]["bn1"]
    mean_sum, var_sum, factor = (net.params["bn1"][i].data.copy() for i in range(3))
    assert bn["factor"] == pytest.approx(float(factor[0]))
    np.testing.assert_allclose(bn["mean"], mean_sum / factor[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn["var"], var_sum / factor[0], rtol=1e-6, atol=1e-7)
    # one pass so far: the stored statistics are that batch's
    np.testing.assert_allclose(bn["batch_mean"], bn["mean"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn["gamma"], net.params["sc1"][0].data, rtol=1e-6)
    np.testing.assert_allclose(bn["beta"], net.params["sc1"][1].data, rtol=1e-6, atol=1e-7)
    # the batch statistics from the batch itself: ip1's output before BN
    x = torch.from_numpy(net.blobs["data"].data.copy())
    w, b = (torch.from_numpy(a) for a in (net.params["ip1"][0].data, net.params["ip1"][1].data))
    # ip1's weights moved in the update; the pass used the weights from before it
    w0, b0 = weights_before[0], weights_before[1]
    ip1 = x @ w0.T + b0
    np.testing.assert_allclose(bn["batch_mean"], ip1.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn["batch_var"], ip1.var(0, unbiased=True).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not torch.equal(w, w0)
    # parameter norms: the weight before the update, the update that was subtracted
    params = records[1]["layers"]
    ip1_w = params["ip1"]["param"][0]
    assert ip1_w["shape"] == [6, 5]
    assert ip1_w["weight_norm"] == pytest.approx(float(w0.norm()), rel=1e-6)
    step = float((w0 - w).norm())
    assert ip1_w["update_ratio"] == pytest.approx(step / float(w0.norm()), rel=1e-4)
    # SGD's first step with momentum 0.9 from zero history: update = lr · gradient
    assert ip1_w["grad_norm"] == pytest.approx(step / 0.1, rel=1e-4)
    assert "bn1" not in params  # the statistics are no learnable parameters
    recorder.close()
    end = read_events("snap/wide.run/events.jsonl").records[-1]
    assert end["kind"] == "end" and end["reason"] == "finished"


def test_record_run_to_a_folder_and_a_terminate_action(folder):
    solver = get_solver(_solver_file(folder, max_iter=100))
    rec = solver.record_run(str(folder / "mine.run"))
    calls = iter(["none", "none", TERMINATE])
    solver.set_action_function(lambda: next(calls, "none"))
    solver.solve()
    rec.close()
    # terminate: stopped after the third iteration with a snapshot, even though
    # snapshot_after_train is false
    assert solver.iter == 3 and solver.terminate_requested
    assert os.path.exists("snap/wide_iter_3.caffemodel")
    records = read_events(str(folder / "mine.run" / "events.jsonl")).records
    assert [r["iter"] for r in records if r["kind"] == "train"] == [0, 1, 2]
    shot = [r for r in records if r["kind"] == "snapshot"]
    assert len(shot) == 1 and shot[0]["state"] == "snap/wide_iter_3.solverstate"
    assert shot[0]["resume"] == (f"decaffe train -solver {folder / 'solver.prototxt'} "
                                 "-snapshot snap/wide_iter_3.solverstate")


def test_no_snapshot_prefix_needs_a_folder(folder):
    text = DUMMY_NET.format(channels=4)
    (folder / "net.prototxt").write_text(text)
    solver = get_solver('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 2')
    with pytest.raises(RunError, match="no snapshot_prefix"):
        solver.record_run()


def test_wide_batch_norm_is_subsampled(folder):
    solver = caffe.get_solver(_solver_file(folder, channels=1200), record=True)
    solver.step(1)
    solver._observers[0].close()
    bn = [r for r in read_events("snap/wide.run/events.jsonl").records
          if r["kind"] == "bn"][0]["layers"]["bn1"]
    assert bn["channels"] == 1200 and bn["channel_stride"] == 3
    assert all(len(bn[k]) == 400 for k in ("mean", "var", "batch_mean", "batch_var", "gamma",
                                           "beta"))
    mean = solver.net.params["bn1"][0].data / solver.net.params["bn1"][2].data[0]
    np.testing.assert_allclose(bn["mean"], mean[::3], rtol=1e-6, atol=1e-7)


def test_event_writer_and_reader(tmp_path):
    path = str(tmp_path / "events.jsonl")
    w = EventWriter(path)
    w.write({"kind": "train", "iter": 0, "loss": float("nan"), "outputs": {"a": [1.5, -math.inf]}})
    w.write({"kind": "test", "iter": 2, "scores": {"acc": 0.25}})
    w.close()
    lines = open(path, "rb").read().split(b"\n")
    assert lines[0] == b'{"kind":"train","iter":0,"loss":null,"outputs":{"a":[1.5,null]}}'
    first = read_events(path)
    assert [r["iter"] for r in first.records] == [0, 2] and first.malformed == 0
    # a line being written (or cut by a kill) is left for the next read
    with open(path, "ab") as f:
        f.write(b'{"kind":"train","iter":4')
    again = read_events(path, first.offset)
    assert again.records == [] and again.partial_tail and again.offset == first.offset
    with open(path, "ab") as f:
        f.write(b',"loss":1}\nnot json\n[1,2]\n')
    last = read_events(path, first.offset)
    assert last.records == [{"kind": "train", "iter": 4, "loss": 1}]
    assert last.malformed == 2 and not last.partial_tail
    assert encode({"x": 1e-30, "y": 123456789.0, "s": 'a"b'}) == \
        b'{"x":1e-30,"y":1.234568e+08,"s":"a\\"b"}\n'


def test_resume_command():
    cmd = ["decaffe", "train", "-solver", "s.prototxt", "-snapshot", "auto", "-gpu", "0",
           "--weights=w.caffemodel", "-tensorboard", "tb dir"]
    assert resume_command(cmd, "out/x_iter_5.solverstate", "s.prototxt") == (
        "decaffe train -solver s.prototxt -gpu 0 -tensorboard 'tb dir' -snapshot "
        "out/x_iter_5.solverstate")
    assert resume_command(["train.py"], "a.solverstate", "s.prototxt") == \
        "decaffe train -solver s.prototxt -snapshot a.solverstate"
    assert resume_command(["train.py"], "a.solverstate", None) == \
        "solver.restore('a.solverstate')"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_first_frame_shows_no_nan():
    bar = log.ProgressBar(100, stream=_Tty(), interval=0.0)
    try:
        first = bar.line()
        assert "nan" not in first and "loss" not in first and "left" not in first
        assert "iter 0/100" in first
        bar._t0 -= 2.0
        bar.update(10, 0.5, 0.01)
        later = bar.line()
        assert "loss 0.5" in later and "lr 0.01" in later and "left 00:18" in later
        bar.update(11, float("nan"), 0.01)  # a loss that went NaN is shown as it is
        assert "loss nan" in bar.line()
    finally:
        bar.close()


LOG = """I1207 10:00:00.000000 1 solver.cpp:1] Solving net
I1207 10:00:01.000000 1 solver.cpp:2] Iteration 0 (0 iter/s, 0s/10 iters), loss = 2.3
I1207 10:00:01.000000 1 solver.cpp:3]     Train net output #0: loss = 2.3
I1207 10:00:01.000000 1 solver.cpp:4] Iteration 0, lr = 0.01
I1207 10:00:02.000000 1 solver.cpp:2] Iteration 10 (1 iter/s, 1s/10 iters), loss = 0.02
I1207 10:00:02.000000 1 solver.cpp:3]     Train net output #0: loss = 0.02
I1207 10:00:02.000000 1 solver.cpp:4] Iteration 10, lr = 0.01
I1207 10:00:03.000000 1 solver.cpp:2] Iteration 20 (1 iter/s, 1s/10 iters), loss = 0.001
I1207 10:00:03.000000 1 solver.cpp:3]     Train net output #0: loss = 0.001
I1207 10:00:03.000000 1 solver.cpp:4] Iteration 20, lr = 0.01
"""


def test_plot_log_draws_the_loss_on_a_log_axis_by_default(tmp_path, monkeypatch):
    import matplotlib.figure

    scales = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: scales.append([ax.get_yscale() for ax in fig.axes]))
    path = tmp_path / "train.log"
    path.write_text(LOG)
    assert logtools.main(["plot_log", str(path), str(tmp_path / "a.png")]) == 0
    assert logtools.main(["plot_log", str(path), str(tmp_path / "b.png"), "-log_scale",
                          "none"]) == 0
    assert logtools.main(["plot_log", str(path), str(tmp_path / "c.png"), "-log_scale",
                          "loss,lr"]) == 0
    # panels: loss, learning rate (a constant lr stays linear unless asked)
    assert scales == [["log", "linear"], ["linear", "linear"], ["log", "log"]]
    with pytest.raises(DecaffeError, match="unknown panel 'los'.*did you mean 'loss'"):
        logtools.parse_log_scale("los")


def test_sigterm_handler_effects():
    import signal

    from decaffe.cli.train import SignalHandler

    h = SignalHandler()  # sigterm_effect snapshot: the solver's terminate action, once
    h._handle(signal.SIGTERM, None)
    h._handle(signal.SIGTERM, None)  # a second SIGTERM while pending changes nothing
    assert (h.action(), h.action(), h.sigterm_seen) == ("terminate", "none", True)
    stop = SignalHandler(sigterm_effect="stop")
    stop._handle(signal.SIGTERM, None)
    assert stop.action() == "stop"
    ignore = SignalHandler(sigterm_effect="none")
    ignore._handle(signal.SIGTERM, None)
    assert (ignore.action(), ignore.sigterm_seen) == ("none", False)
    with pytest.raises(DecaffeError, match='-sigterm_effect: invalid signal effect "later"'):
        SignalHandler(sigterm_effect="later")


class _Link:
    """The part of distributed.nccl.NCCL that AgreedActions uses: the control values that
    travel with the gradients (control_out summed over the workers into control_in)."""

    def __init__(self):
        self.control_out: list[float] = []
        self.control_in: list[float] = []


def test_agreed_actions_terminate_wins_and_travels_in_its_own_slot():
    from decaffe.distributed.worker import AgreedActions

    local = iter(["terminate", "none"])
    link = _Link()
    acts = AgreedActions(lambda: next(local, "none"), link, root=False)
    assert acts.action() == "none"  # nothing agreed yet; the local request goes out
    assert link.control_out == [0.0, 0.0, 1.0]
    link.control_in = [1.0, 1.0, 1.0]  # after the exchange: some worker asked each
    assert acts.action() == "terminate" and link.control_out == [0.0, 0.0, 0.0]
    link.control_in = [1.0, 1.0, 0.0]
    assert acts.action() == "stop"
    link.control_in = [1.0, 0.0, 0.0]
    assert acts.action() == "none"  # a snapshot request: rank 0's alone
    root = AgreedActions(lambda: "none", _Link(), root=True)
    root.nccl.control_in = [1.0, 0.0, 0.0]
    assert root.action() == "snapshot"

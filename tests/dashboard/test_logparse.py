"""decaffe/logparse.py: Caffe's training log (C++ Caffe's and decaffe's) as run-folder
records, whole or fed as it grows."""

from __future__ import annotations

from dash_fixtures import CAFFE_LOG

from decaffe import log
from decaffe.cli.logtools import parse_log
from decaffe.logparse import GlogReader


def read_all(lines: list[str]) -> tuple[GlogReader, list[dict]]:
    reader = GlogReader(2019)
    return reader, reader.feed(lines) + reader.flush()


def test_caffe_log_records_agree_with_parse_log():
    lines = open(CAFFE_LOG).read().splitlines()
    reader, records = read_all(lines)
    train, test = parse_log(CAFFE_LOG)
    trains = [r for r in records if r["kind"] == "train"]
    tests = [r for r in records if r["kind"] == "test"]
    # parse_log keeps rows with outputs; the final "Iteration 4000, loss" line has none
    with_outputs = [r for r in trains if r["outputs"]]
    assert [r["iter"] for r in with_outputs] == [row["NumIters"] for row in train]
    assert [r["outputs"]["loss"] for r in with_outputs] == [row["loss"] for row in train]
    assert [r["iter"] for r in tests] == [row["NumIters"] for row in test]
    assert [r["scores"]["accuracy"] for r in tests] == [row["accuracy"] for row in test]
    assert trains[1]["lr"] == 0.001 and trains[1]["loss"] == 1.69312
    # images/s: batch 100 at the timestamps' rate
    assert 20000 < trains[2]["images_per_s"] < 40000
    (snap,) = [r for r in records if r["kind"] == "snapshot"]
    assert snap["iter"] == 4000 and snap["model"].endswith("cifar10_quick_iter_4000.caffemodel.h5")
    assert snap["state"].endswith(".solverstate.h5") and "-snapshot " + snap["state"] in \
        snap["resume"]
    assert records[-1]["kind"] == "end" and records[-1]["reason"] == "done"
    assert reader.meta["max_iter"] == 4000 and reader.meta["test_interval"] == 500
    names = [layer["name"] for layer in reader.layers]
    assert names[:3] == ["cifar", "conv1", "pool1"] and names[-1] == "loss"
    relu = reader.layers[names.index("relu1")]
    assert relu["type"] == "ReLU" and relu["bottoms"] == relu["tops"] == ["pool1"]


def test_fed_line_by_line_gives_the_same_records():
    lines = open(CAFFE_LOG).read().splitlines()
    _, whole = read_all(lines)
    reader = GlogReader(2019)
    pieces = []
    for line in lines:
        pieces += reader.feed([line])
    assert pieces + reader.flush() == whole


def test_decaffe_log_lines_and_nan():
    def line(msg: str) -> str:
        return log.format_prefix(log.INFO, "solver.py", 1, 1700000000.0 + len(msg)) + msg

    text = [line("Iteration 10 (5.5 iter/s, 1.8s/10 iters), loss = nan"),
            line("    Train net output #0: loss = nan (* 1 = nan loss)"),
            line("Iteration 10, lr = 0.01"),
            line("Snapshotting to binary proto file x/net_iter_10.caffemodel"),
            line("Snapshotting solver state to binary proto file x/net_iter_10.solverstate"),
            "a progress bar or traceback line that is not glog's",
            line("Optimization stopped early.")]
    _, records = read_all(text)
    train, snap, end = records
    assert train["loss"] is None and train["outputs"] == {"loss": None}
    assert train["lr"] == 0.01 and train["iter"] == 10
    assert snap["model"] == "x/net_iter_10.caffemodel" and snap["iter"] == 10
    assert snap["state"] == "x/net_iter_10.solverstate"
    assert end["reason"] == "stopped"

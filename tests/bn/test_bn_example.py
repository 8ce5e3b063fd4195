"""examples/batchnorm: the committed prototxts are what the NetSpec script writes, and the
train-both command runs end to end (shortened) and writes its figure and tables."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from conftest import HERE

EXAMPLE = os.path.join(os.path.dirname(HERE), "examples", "batchnorm")


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLE)
    import make_nets
    import train_both

    return make_nets, train_both


def test_committed_prototxts_are_what_make_nets_writes(example, tmp_path):
    make_nets, _ = example
    for name, path in make_nets.write_nets(str(tmp_path)).items():
        with open(path) as f, open(os.path.join(EXAMPLE, os.path.basename(path))) as g:
            assert f.read() == g.read(), name


def test_nets_differ_only_by_batchnorm(example):
    make_nets, _ = example
    plain = make_nets.cnn(False, "x", 4).to_proto()
    bn = make_nets.cnn(True, "x", 4).to_proto()
    ptypes = [lp.type for lp in plain.layer]
    btypes = [lp.type for lp in bn.layer if lp.type not in ("BatchNorm", "Scale")]
    assert ptypes == btypes
    blocks = [lp.type for lp in bn.layer][2:6]
    assert blocks == ["BatchNorm", "Scale", "ReLU", "Convolution"]
    assert all(lp.scale_param.bias_term for lp in bn.layer if lp.type == "Scale")
    assert not any(lp.batch_norm_param.HasField("use_global_stats") for lp in bn.layer
                   if lp.type == "BatchNorm")


def test_train_both_runs_and_writes_its_report(example, tmp_path, monkeypatch, capsys):
    _, train_both = example
    monkeypatch.chdir(tmp_path)  # the script moves to the repository root; come back after
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        assert train_both.main(["--iters", "30", "--test-every", "10", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the script pins one thread; don't leak it
    printed = capsys.readouterr().out
    for name in ("bn_vs_plain.png", "results.md", "results.json",
                 "solver_bn_lr0.01.prototxt", "solver_plain_lr0.2.prototxt",
                 "cnn_bn_lr0.01.caffemodel", "cnn_bn_deploy_batch_stats.prototxt"):
        assert (out / name).exists(), name
    table = (out / "results.md").read_text()
    assert printed.startswith(table)
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert [(r["net"], r["base_lr"]) for r in runs] == [
        ("plain", pytest.approx(0.01)), ("bn", pytest.approx(0.01)), ("plain", 0.2), ("bn", 0.2)]
    for r in runs:
        assert len(r["loss"]) == 30
        assert [it for it, _ in r["test"]] == [0, 10, 20, 30]
    assert len(results["statistics"]["rows"]) == 10
    assert results["statistics"]["changed"]["global"]["predictions"] == 0
    assert results["fold"]["folded"] == 3 and results["fold"]["max_rel_diff"] < 1e-4
    assert "| BN | 0.01 |" in table and "| plain | 0.2 |" in table
    assert sys.modules["train_both"] is train_both

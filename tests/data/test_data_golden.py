"""Caffe's own batches (tests/golden data cases) and tools (the tool case), replayed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lmdb
import numpy as np
import pytest
from data_helpers import GOLDEN
from golden_replay import ATOL_FWD, RTOL_FWD, assert_close

import caffe
from decaffe.proto import caffe_pb2

with open(os.path.join(GOLDEN, "INDEX.json")) as _f:
    _CASES = json.load(_f)["cases"]
# The forks' data cases (AnnotatedData) are replayed by the fork layers' own tests.
DATA_CASES = [c for c in _CASES if c["kind"] == "data" and not c["name"].startswith("fork_")]
TOOL_CASES = [c for c in _CASES if c["kind"] == "tool"]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c["name"] for c in DATA_CASES])
def test_data_case_batches(case, monkeypatch):
    """Every batch, in Caffe's order, wrap-around included (paths relative to the goldens)."""
    monkeypatch.chdir(GOLDEN)
    z = np.load(case["name"] + ".npz")
    net = caffe.Net(case["name"] + ".prototxt",
                    caffe.TEST if case["phase"] == "TEST" else caffe.TRAIN)
    for p in range(case["passes"]):
        net.forward()
        for t in case["tops"]:
            assert_close(net.blobs[t].data, z[f"output/{p}/{t}"], RTOL_FWD, ATOL_FWD,
                         f"{case['name']} batch {p} top {t}")


def _cli(args, cwd):
    r = subprocess.run([sys.executable, "-m", "decaffe"] + args, cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("case", TOOL_CASES, ids=[c["name"] for c in TOOL_CASES])
def test_tool_case(case, tmp_path):
    """convert_imageset (resize 8x10) and compute_image_mean reproduce Caffe's Datums and mean
    byte for byte (the goldens keep Caffe's own LMDB and mean file)."""
    z = np.load(os.path.join(GOLDEN, case["name"] + ".npz"))
    db, mean = str(tmp_path / "db"), str(tmp_path / "mean.binaryproto")
    _cli(["convert_imageset", "-resize_height", "8", "-resize_width", "10", "-backend", "lmdb",
          "./", "data_img_list.txt", db], GOLDEN)
    _cli(["compute_image_mean", "-backend", "lmdb", db, mean], GOLDEN)
    env = lmdb.open(db, readonly=True, lock=False)
    with env.begin() as txn:
        got = list(txn.cursor())
    env.close()
    keys = sorted(k.split("/")[1] for k in z.files if k.endswith("/data"))
    assert [k.decode() for k, _ in got] == keys
    for k, v in got:
        d = caffe_pb2.Datum.FromString(v)
        arr = np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)
        np.testing.assert_array_equal(arr, z[f"datum/{k.decode()}/data"])
        assert d.label == z[f"datum/{k.decode()}/label"]
    ref = lmdb.open(os.path.join(GOLDEN, "tool_convert_lmdb"), readonly=True, lock=False)
    with ref.begin() as txn:
        assert list(txn.cursor()) == got  # Caffe's serialized Datums, exactly
    ref.close()
    m = caffe_pb2.BlobProto.FromString(open(mean, "rb").read())
    np.testing.assert_array_equal(np.array(m.data, np.float32).reshape(z["mean"].shape),
                                  z["mean"])
    assert open(mean, "rb").read() == open(os.path.join(GOLDEN, "tool_mean.binaryproto"),
                                           "rb").read()

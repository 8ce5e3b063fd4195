"""Database handles: a script's own lmdb handle and a Data layer's coexist (case 10 of
issue 11); a database rebuilt after a failure is read afresh, and handles end with their net
(case 11)."""

from __future__ import annotations

import gc
import os
import shutil

import lmdb
import numpy as np
import pytest

import caffe
from decaffe.errors import DecaffeError


def _write(path, labels, bad_at=None):
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, lab in enumerate(labels):
            d = caffe.io.array_to_datum(np.full((1, 4, 4), i, np.uint8), int(lab))
            if i == bad_at:
                d.channels = 100  # claims more data than it holds
            txn.put(b"%08d" % i, d.SerializeToString())
    return env


def _proto(tmp_path, db):
    path = str(tmp_path / "net.prototxt")
    with open(path, "w") as f:
        f.write('layer { name: "d" type: "Data" top: "data" top: "label" '
                f'data_param {{ source: "{db}" backend: LMDB batch_size: 2 }} }}')
    return path


def _labels(proto, batches=2, phase=caffe.TRAIN):
    net = caffe.Net(proto, phase)
    out = []
    for _ in range(batches):
        net.forward()
        out += [int(x) for x in net.blobs["label"].data]
    net.close()
    return out


def test_client_handle_then_net_and_net_then_client_handle(tmp_path):
    db = str(tmp_path / "db")
    env = _write(db, [0, 1, 2, 3])  # the script keeps its handle open
    proto = _proto(tmp_path, db)
    net = caffe.Net(proto, caffe.TEST)
    net.forward()
    assert list(net.blobs["label"].data) == [0, 1]
    env.close()
    net2 = caffe.Net(proto, caffe.TEST)
    net2.forward()
    client = lmdb.open(db, readonly=True)  # opened while the net reads the database
    assert client.stat()["entries"] == 4
    net2.forward()
    assert list(net2.blobs["label"].data) == [2, 3]
    client.close()


def test_rebuilt_after_failure_is_read_afresh(tmp_path):
    db = str(tmp_path / "db")
    _write(db, [0, 1, 2, 3], bad_at=2).close()
    proto = _proto(tmp_path, db)
    with pytest.raises(DecaffeError, match="100x4x4"):
        _labels(proto)
    gc.collect()
    shutil.rmtree(db)
    _write(db, [10, 11, 12, 13]).close()
    assert _labels(proto) == [10, 11, 12, 13]


def test_rebuilt_while_an_old_net_still_reads_it(tmp_path):
    db = str(tmp_path / "db")
    _write(db, [0, 1, 2, 3]).close()
    proto = _proto(tmp_path, db)
    old = caffe.Net(proto, caffe.TRAIN)
    old.forward()
    shutil.rmtree(db)
    _write(db, [20, 21, 22, 23]).close()
    assert _labels(proto) == [20, 21, 22, 23]  # never the old files through the old handle
    old.close()


def _reader_procs(net):
    out = []
    for layer in net.layers:
        src = getattr(getattr(layer, "layer", layer), "_source", None)
        db = getattr(src, "db", None)
        reader = getattr(db, "_reader", None)
        if reader is not None:
            out.append(reader.proc)
    return out


def test_handles_end_with_close_del_and_failure(tmp_path):
    db = str(tmp_path / "db")
    _write(db, [0, 1, 2, 3]).close()
    proto = _proto(tmp_path, db)
    net = caffe.Net(proto, caffe.TRAIN)
    procs = _reader_procs(net)
    assert procs and all(p.poll() is None for p in procs)
    net.close()
    assert all(p.wait(5) is not None for p in procs)
    net = caffe.Net(proto, caffe.TRAIN)
    procs = _reader_procs(net)
    del net
    gc.collect()
    assert all(p.wait(5) is not None for p in procs)
    # a failing reader releases its database at once, before the net is collected
    shutil.rmtree(db)
    _write(db, [0, 1, 2, 3], bad_at=3).close()
    net = caffe.Net(proto, caffe.TRAIN)
    procs = _reader_procs(net)
    with pytest.raises(DecaffeError):
        for _ in range(3):
            net.forward()
    assert all(p.wait(5) is not None for p in procs)
    assert os.path.isdir(db)

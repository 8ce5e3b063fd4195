"""Exact resume at any iteration (beyond Caffe): a snapshot records each data layer's
position, shuffle and random state with prefetching on, and -snapshot restores it, so the
resumed run equals the uninterrupted one bitwise; the files stay readable by plain BVLC
Caffe (its schema, built here without decaffe's extension)."""

from __future__ import annotations

import os

import cv2
import h5py
import numpy as np
import pytest
from data_helpers import image_lmdb, images
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import decaffe
from decaffe.solvers import snapshot as snap

N = 10  # records; batch 3 puts iteration 4 mid-epoch


def _sources(tmp_path):
    arrs = images(N, c=1, h=6, w=6, seed=3)
    labels = [i % 3 for i in range(N)]
    lmdb_path = image_lmdb(str(tmp_path / "db"), arrs, labels)
    lines = []
    for i, a in enumerate(arrs):
        name = f"im{i}.png"
        cv2.imwrite(str(tmp_path / name), a[0])
        lines.append(f"{name} {labels[i]}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["data"] = arrs.astype(np.float32) / 255
        f["label"] = np.asarray(labels, np.float32)
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["data"] = arrs[:7].astype(np.float32)[:, :, ::-1] / 255
        f["label"] = np.asarray(labels[:7], np.float32)
    (tmp_path / "h5.txt").write_text(f"{tmp_path / 'd.h5'}\n{tmp_path / 'e.h5'}\n")
    return lmdb_path


DATA = {
    "lmdb": 'type: "Data" transform_param {{ mirror: true crop_size: 5 scale: 0.0039 }} '
            'data_param {{ source: "{db}" backend: LMDB batch_size: 3 }}',
    "imagedata": 'type: "ImageData" transform_param {{ mirror: true crop_size: 5 '
                 'scale: 0.0039 }} image_data_param {{ source: "list.txt" batch_size: 3 '
                 'shuffle: true is_color: false }}',
    "hdf5": 'type: "HDF5Data" hdf5_data_param {{ source: "h5.txt" batch_size: 3 '
            'shuffle: true }}',
}


def _write_solver(tmp_path, kind, fmt):
    db = _sources(tmp_path)
    net = (f'name: "r" layer {{ name: "d" {DATA[kind].format(db=db)} top: "data" top: "label" }} '
           'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
           'inner_product_param { num_output: 3 weight_filler { type: "gaussian" '
           'std: 0.1 } } } layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" } '
           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" '
           'top: "loss" }')
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" max_iter: 7 '
        f'snapshot: 4 snapshot_prefix: "snap" random_seed: 5 display: 0 '
        f'snapshot_format: {fmt}\n')
    return "solver.prototxt"


def _weights(solver):
    return [p.detach().clone().numpy() for p in solver.net.learnable_params]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("kind", ["lmdb", "imagedata", "hdf5"])
@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_resume_mid_epoch_is_bitwise_exact(workdir, kind, fmt):
    path = _write_solver(workdir, kind, fmt)
    full = decaffe.get_solver(path)
    full.solve()
    want = _weights(full)
    full.net.close()
    ext = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    state = f"snap_iter_4{ext}"
    resumed = decaffe.get_solver(path)
    resumed.solve(state)
    got = _weights(resumed)
    resumed.net.close()
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    # without the recorded positions (as Caffe resumes) the batches differ
    data = snap.read_state(state)
    assert data.positions["nets"]["train"]["d"]
    data.positions = None
    plain = f"plain_iter_4{ext}"
    snap.write_state(plain, data)
    caffe_like = decaffe.get_solver(path)
    caffe_like.solve(plain)
    assert not all(np.array_equal(a, b) for a, b in zip(want, _weights(caffe_like)))
    caffe_like.net.close()


def test_resume_at_every_iteration_with_prefetch_deeper_than_an_epoch(workdir):
    path = _write_solver(workdir, "lmdb", "BINARYPROTO")
    text = (workdir / "net.prototxt").read_text().replace("batch_size: 3",
                                                          "batch_size: 3 prefetch: 8")
    (workdir / "net.prototxt").write_text(text)
    (workdir / "solver.prototxt").write_text(
        (workdir / "solver.prototxt").read_text().replace("snapshot: 4", "snapshot: 1"))
    full = decaffe.get_solver(path)
    full.solve()
    want = _weights(full)
    full.net.close()
    for it in (1, 2, 3, 5, 6):
        s = decaffe.get_solver(path)
        s.solve(f"snap_iter_{it}.solverstate")
        assert all(np.array_equal(a, b) for a, b in zip(want, _weights(s))), it
        s.net.close()


def _bvlc_solverstate_class():
    """BVLC Caffe's SolverState, BlobProto and BlobShape (caffe.proto of BVLC master), built
    here without decaffe's extension."""
    fd = descriptor_pb2.FileDescriptorProto(name="bvlc_caffe_min.proto", package="bvlc",
                                            syntax="proto2")
    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED

    def msg(name, fields):
        m = fd.message_type.add(name=name)
        for fname, num, label, ftype, tname, packed in fields:
            f = m.field.add(name=fname, number=num, label=label, type=ftype)
            if tname:
                f.type_name = tname
            if packed:
                f.options.packed = True

    msg("BlobShape", [("dim", 1, rep, F.TYPE_INT64, None, True)])
    msg("BlobProto", [("shape", 7, opt, F.TYPE_MESSAGE, ".bvlc.BlobShape", False),
                      ("data", 5, rep, F.TYPE_FLOAT, None, True),
                      ("diff", 6, rep, F.TYPE_FLOAT, None, True),
                      ("double_data", 8, rep, F.TYPE_DOUBLE, None, True),
                      ("double_diff", 9, rep, F.TYPE_DOUBLE, None, True),
                      ("num", 1, opt, F.TYPE_INT32, None, False),
                      ("channels", 2, opt, F.TYPE_INT32, None, False),
                      ("height", 3, opt, F.TYPE_INT32, None, False),
                      ("width", 4, opt, F.TYPE_INT32, None, False)])
    msg("SolverState", [("iter", 1, opt, F.TYPE_INT32, None, False),
                        ("learned_net", 2, opt, F.TYPE_STRING, None, False),
                        ("history", 3, rep, F.TYPE_MESSAGE, ".bvlc.BlobProto", False),
                        ("current_step", 4, opt, F.TYPE_INT32, None, False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bvlc.SolverState"))


def test_states_parse_with_plain_bvlc_schema(workdir):
    path = _write_solver(workdir, "lmdb", "BINARYPROTO")
    s = decaffe.get_solver(path)
    s.step(4)
    model, state = s.snapshot()
    s.net.close()
    raw = open(state, "rb").read()
    msg = _bvlc_solverstate_class()()
    msg.ParseFromString(raw)  # as BVLC's ReadProtoFromBinaryFile does
    assert msg.iter == 4 and msg.learned_net == model and msg.current_step == 0
    assert len(msg.history) == 2
    hist = snap.read_state(state).history
    for blob, arr in zip(msg.history, hist):
        assert list(blob.shape.dim) == list(arr.shape)
        assert np.array_equal(np.asarray(blob.data, np.float32), arr.ravel())
    assert msg.SerializeToString() == raw  # nothing lost: re-serialized with the unknown field
    # HDF5: exactly the datasets SGDSolver::RestoreSolverStateFromHDF5 reads, history 0..N-1
    s = decaffe.get_solver(path)
    s.param.snapshot_format = decaffe.caffe_pb2.SolverParameter.HDF5
    s.step(4)
    _, state_h5 = s.snapshot()
    s.net.close()
    with h5py.File(state_h5, "r") as f:
        assert int(f["iter"][()]) == 4 and int(f["current_step"][()]) == 0
        assert f["learned_net"][()].decode().endswith(".caffemodel.h5")
        assert sorted(f["history"].keys()) == ["0", "1"]
        assert snap.POSITIONS_DATASET in f


def test_orphaned_temporaries_are_removed_on_next_write_and_resume(workdir):
    path = _write_solver(workdir, "lmdb", "BINARYPROTO")
    orphans = [".snap_iter_4.caffemodel.abcd1234.tmp", ".snap_iter_8.solverstate.h5.x_y_z123.tmp"]
    keep = [".other_iter_4.caffemodel.abcd1234.tmp", ".snap_iter_4.caffemodel.tmp", "notes.tmp"]
    for name in orphans + keep:
        (workdir / name).write_bytes(b"x")
    s = decaffe.get_solver(path)
    s.step(1)
    s.snapshot()
    assert not any(os.path.exists(n) for n in orphans)
    assert all(os.path.exists(n) for n in keep)
    (workdir / orphans[0]).write_bytes(b"x")
    s.restore("snap_iter_1.solverstate")
    assert not os.path.exists(orphans[0])
    s.net.close()


def test_test_nets_resume_where_they_were(workdir):
    path = _write_solver(workdir, "lmdb", "BINARYPROTO")
    text = (workdir / "net.prototxt").read_text()
    test_layer = text.split('layer { name: "ip"')[0].replace('name: "d"', 'name: "dt"').replace(
        'name: "r" ', "")
    text = text.replace('top: "label" }', 'top: "label" include { phase: TRAIN } }', 1)
    text = text.replace('layer { name: "ip"',
                        test_layer.replace('top: "label" }',
                                           'top: "label" include { phase: TEST } }')
                        + ' layer { name: "ip"', 1)
    (workdir / "net.prototxt").write_text(text)
    (workdir / "solver.prototxt").write_text(
        (workdir / "solver.prototxt").read_text() + "test_iter: 1\ntest_interval: 3\n")
    full = decaffe.get_solver(path)
    full.solve()
    want = full.test_nets[0]._layers[0].position()
    full.net.close(), full.test_nets[0].close()
    resumed = decaffe.get_solver(path)
    resumed.solve("snap_iter_4.solverstate")
    assert snap.read_state("snap_iter_4.solverstate").positions["nets"]["test0"]["dt"]
    assert resumed.test_nets[0]._layers[0].position() == want
    resumed.net.close(), resumed.test_nets[0].close()

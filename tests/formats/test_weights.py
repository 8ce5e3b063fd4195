"""Caffemodel / HDF5 weights and generic binary messages: golden files written by C++ Caffe
round-trip byte for byte, legacy (V1, V0) models load, and corrupt files fail cleanly."""

from __future__ import annotations

import glob
import os
import struct
import tracemalloc

import h5py
import numpy as np
import pytest

from decaffe.errors import DecaffeError, FormatError
from decaffe.formats import weights as w
from decaffe.formats.wire import encode_varint as _varint
from decaffe.formats.wire import len_field as _field
from decaffe.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "golden")
CAFFEMODELS = sorted(glob.glob(os.path.join(GOLDEN, "*.caffemodel")))
SOLVERSTATES = sorted(glob.glob(os.path.join(GOLDEN, "*.solverstate")))


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _proto_arrays(blob: caffe_pb2.BlobProto) -> np.ndarray:
    """A blob's data the slow, obvious way (protobuf + numpy), for comparison."""
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or \
            blob.HasField("width"):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if len(blob.double_data):
        return np.array(blob.double_data, np.float64).reshape(shape)
    return np.array(blob.data, np.float32).reshape(shape)


def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _small_model() -> caffe_pb2.NetParameter:
    """A two-layer V2 model with float blobs, as Caffe writes them."""
    rng = np.random.default_rng(0)
    net = caffe_pb2.NetParameter(name="small")
    for name, shapes in (("conv", [(4, 3, 3, 3), (4,)]), ("relu", []), ("ip", [(5, 36), (5,)])):
        lp = net.layer.add(name=name, type={"conv": "Convolution", "relu": "ReLU",
                                            "ip": "InnerProduct"}[name])
        for shape in shapes:
            b = lp.blobs.add()
            b.shape.dim.extend(shape)
            b.data.extend(rng.standard_normal(int(np.prod(shape))).astype(np.float32))
    return net


# ---------------------------------------------------------------------------------------------
# Golden files from C++ Caffe
# ---------------------------------------------------------------------------------------------
def test_golden_files_exist():
    assert len(CAFFEMODELS) >= 50 and len(SOLVERSTATES) >= 15


@pytest.mark.parametrize("path", CAFFEMODELS, ids=os.path.basename)
def test_golden_caffemodel_raw_roundtrip_is_byte_identical(path, tmp_path):
    raw = w.read_caffemodel_raw(path)
    out = tmp_path / "copy.caffemodel"
    w.write_caffemodel_raw(raw, str(out))
    assert out.read_bytes() == _read(path)


@pytest.mark.parametrize("path", CAFFEMODELS, ids=os.path.basename)
def test_save_caffemodel_reproduces_caffes_bytes(path, tmp_path):
    msg = caffe_pb2.NetParameter.FromString(_read(path))
    data = {i: [_proto_arrays(b) for b in lp.blobs] for i, lp in enumerate(msg.layer)
            if len(lp.blobs)}
    out = tmp_path / "saved.caffemodel"
    w.save_caffemodel(str(out), msg, data)
    assert out.read_bytes() == _read(path)


@pytest.mark.parametrize("path", CAFFEMODELS, ids=os.path.basename)
def test_load_weights_matches_protobuf(path):
    msg = caffe_pb2.NetParameter.FromString(_read(path))
    records = w.load_weights(path)
    assert [name for name, _ in records] == [lp.name for lp in msg.layer]
    for (_, blobs), lp in zip(records, msg.layer):
        assert len(blobs) == len(lp.blobs)
        for rec, b in zip(blobs, lp.blobs):
            want = _proto_arrays(b)
            assert rec.array.dtype == np.float32 and rec.array.shape == want.shape
            assert np.array_equal(rec.array, want)
            assert rec.array.flags.writeable and rec.array.flags.aligned
            assert rec.legacy is False and rec.diff is None


@pytest.mark.parametrize("path", SOLVERSTATES, ids=os.path.basename)
def test_golden_solverstate_roundtrip_is_byte_identical(path, tmp_path):
    state = w.read_message(path, caffe_pb2.SolverState)
    assert state.iter == 8 and len(state.history) > 0
    out = tmp_path / "copy.solverstate"
    w.write_message(state, str(out))
    assert out.read_bytes() == _read(path)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def test_save_caffemodel_matches_protobuf_serialization(tmp_path):
    rng = np.random.default_rng(1)
    net = caffe_pb2.NetParameter(name="n")
    net.layer.add(name="in", type="Input", top=["x"])
    lp = net.layer.add(name="ip", type="InnerProduct", bottom=["x"], top=["y"])
    lp.param.add(lr_mult=1)
    lp.include.add(phase=caffe_pb2.TEST)  # a field numbered after blobs
    lp.inner_product_param.num_output = 3
    lp.blobs.add().data.append(99)  # stale blobs are replaced, as Layer::ToProto does
    weight = rng.standard_normal((3, 4)).astype(np.float32)
    bias = rng.standard_normal(3)  # float64: written as double_data like Blob<double>
    wdiff = rng.standard_normal((3, 4)).astype(np.float32)
    bdiff = rng.standard_normal(3)
    out = tmp_path / "n.caffemodel"
    w.save_caffemodel(str(out), net, {1: [weight, bias]}, {1: [wdiff, bdiff]})

    want = caffe_pb2.NetParameter()
    want.CopyFrom(net)
    del want.layer[1].blobs[:]
    b0 = want.layer[1].blobs.add()
    b0.shape.dim.extend([3, 4])
    b0.data.extend(weight.ravel())
    b0.diff.extend(wdiff.ravel())
    b1 = want.layer[1].blobs.add()
    b1.shape.dim.extend([3])
    b1.double_data.extend(bias)
    b1.double_diff.extend(bdiff)
    assert out.read_bytes() == want.SerializeToString()

    (_, none), (_, blobs) = w.load_weights(str(out))
    assert none == []
    assert np.array_equal(blobs[0].array, weight) and np.array_equal(blobs[0].diff, wdiff)
    assert blobs[1].array.dtype == np.float64 and np.array_equal(blobs[1].array, bias)
    assert np.array_equal(blobs[1].diff, bdiff)


def test_save_caffemodel_scalar_and_empty_blobs(tmp_path):
    net = caffe_pb2.NetParameter(name="s")
    net.layer.add(name="p", type="Parameter")
    out = tmp_path / "s.caffemodel"
    w.save_caffemodel(str(out), net, {0: [np.float32(2.5), np.zeros((0, 3), np.float32)]})
    want = caffe_pb2.NetParameter()
    want.CopyFrom(net)
    want.layer[0].blobs.add().data.append(2.5)  # no shape for a 0-axis blob
    want.layer[0].blobs.add().shape.dim.extend([0, 3])
    assert out.read_bytes() == want.SerializeToString()
    (_, (scalar, empty)), = w.load_weights(str(out))
    assert scalar.array.shape == () and scalar.array == 2.5
    assert empty.array.shape == (0, 3)


def test_save_caffemodel_is_atomic(tmp_path):
    out = tmp_path / "m.caffemodel"
    out.write_bytes(b"previous")
    net = _small_model()
    with pytest.raises(DecaffeError):
        # a diff of the wrong size fails half-way through writing
        w.save_caffemodel(str(out), net, {0: [np.zeros((4, 3, 3, 3)), np.zeros(4)]},
                          {0: [np.zeros(3), np.zeros(4)]})
    assert out.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.caffemodel"]


# ---------------------------------------------------------------------------------------------
# The raw API
# ---------------------------------------------------------------------------------------------
def test_raw_edit_reencodes_only_the_changed_layer(tmp_path):
    src = _write(tmp_path / "a.caffemodel", _small_model().SerializeToString())
    raw = w.read_caffemodel_raw(src)
    assert [(lay.name, lay.type, len(lay.blobs)) for lay in raw.layers] == [
        ("conv", "Convolution", 2), ("relu", "ReLU", 0), ("ip", "InnerProduct", 2)]
    assert raw.name == "small"
    with pytest.raises(ValueError):
        raw.layers[2].blobs[1].array[0] = 1  # views of the file are read-only
    new_bias = np.arange(5, dtype=np.float32)
    raw.layers[2].blobs[1].array = new_bias
    out = tmp_path / "b.caffemodel"
    w.write_caffemodel_raw(raw, str(out))
    got = caffe_pb2.NetParameter.FromString(out.read_bytes())
    want = _small_model()
    del want.layer[2].blobs[1].data[:]
    want.layer[2].blobs[1].data.extend(new_bias)
    assert got == want
    assert out.read_bytes() == want.SerializeToString()


# ---------------------------------------------------------------------------------------------
# Legacy models
# ---------------------------------------------------------------------------------------------
def _v1_model() -> caffe_pb2.NetParameter:
    """An old-style caffemodel: V1 `layers`, 4-D legacy blob shapes, input fields."""
    net = caffe_pb2.NetParameter(name="old")
    net.input.append("data")
    net.input_dim.extend([1, 3, 6, 6])
    conv = net.layers.add(name="conv1", type=caffe_pb2.V1LayerParameter.CONVOLUTION,
                          bottom=["data"], top=["conv1"])
    conv.blobs_lr.extend([1, 2])
    conv.convolution_param.num_output = 4
    conv.convolution_param.kernel_size.append(3)
    for shape in ((4, 3, 3, 3), (1, 1, 1, 4)):
        b = conv.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
        b.data.extend(np.arange(np.prod(shape), dtype=np.float32) / 7)
    net.layers.add(name="relu1", type=caffe_pb2.V1LayerParameter.RELU, bottom=["conv1"],
                   top=["conv1"])
    ip = net.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT,
                        bottom=["conv1"], top=["ip"])
    for shape in ((1, 1, 5, 64), (1, 1, 1, 5)):
        b = ip.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
        b.data.extend(-np.arange(np.prod(shape), dtype=np.float32))
    return net


def test_v1_caffemodel_loads_with_legacy_shapes(tmp_path):
    path = _write(tmp_path / "old.caffemodel", _v1_model().SerializeToString())
    records = w.load_weights(path)
    assert [(n, len(b)) for n, b in records] == [("input", 0), ("conv1", 2), ("relu1", 0),
                                                 ("ip", 2)]
    conv = records[1][1]
    assert conv[0].legacy and conv[0].array.shape == (4, 3, 3, 3)
    assert np.array_equal(conv[0].array.ravel(), np.arange(108, dtype=np.float32) / 7)
    assert conv[1].array.shape == (1, 1, 1, 4)
    assert w.shapes_match((4,), conv[1].array.shape, conv[1].legacy)
    assert w.shapes_match((5, 64), records[3][1][0].array.shape, True)


def test_v1_caffemodel_with_layer_entries_too_is_refused(tmp_path):
    """Caffe 1.0's UpgradeV1Net refuses a net with both 'layer' and 'layers' (older Caffe
    dropped the 'layer' entries)."""
    from decaffe.errors import FormatError

    net = _v1_model()
    net.layer.add(name="extra", type="ReLU").blobs.add().data.append(1)
    path = _write(tmp_path / "mixed.caffemodel", net.SerializeToString())
    with pytest.raises(FormatError, match=r"mixed.caffemodel: Refusing to upgrade inconsistent "
                       r"NetParameter input.*first 'layer': 'extra', first 'layers': 'conv1'"):
        w.load_weights(path)


def test_upgrade_net_proto_binary_keeps_the_blobs(tmp_path, capsys):
    from decaffe.cli import main

    src = _write(tmp_path / "old.caffemodel", _v1_model().SerializeToString())
    out = tmp_path / "new.caffemodel"
    assert main(["upgrade_net_proto_binary", src, str(out)]) == 0
    new = caffe_pb2.NetParameter.FromString(out.read_bytes())
    assert not new.layers and not new.input
    assert [(lp.name, lp.type) for lp in new.layer] == [
        ("input", "Input"), ("conv1", "Convolution"), ("relu1", "ReLU"),
        ("ip", "InnerProduct")]
    old = _v1_model()
    assert list(new.layer[1].blobs) == list(old.layers[0].blobs)
    assert list(new.layer[3].blobs) == list(old.layers[2].blobs)
    assert [p.lr_mult for p in new.layer[1].param] == [1, 2]
    # and the fast reader agrees with the upgraded file
    a = w.load_weights(src)
    b = w.load_weights(str(out))
    assert [n for n, _ in a] == [n for n, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert all(np.array_equal(p.array, q.array) for p, q in zip(x, y))
    assert main(["upgrade_net_proto_binary", str(tmp_path / "none.caffemodel"),
                 str(out)]) == 2
    assert "none.caffemodel" in capsys.readouterr().err


def test_v0_caffemodel_goes_through_protobuf_and_the_upgrade(tmp_path):
    net = caffe_pb2.NetParameter(name="v0")
    net.input.append("data")
    pad = net.layers.add(bottom=["data"], top=["pad1"])
    pad.layer.name, pad.layer.type, pad.layer.pad = "pad1", "padding", 1
    conv = net.layers.add(bottom=["pad1"], top=["conv1"])
    conv.layer.name, conv.layer.type, conv.layer.num_output = "conv1", "conv", 2
    b = conv.layer.blobs.add(num=2, channels=1, height=1, width=1)
    b.data.extend([3.0, 4.0])
    path = _write(tmp_path / "v0.caffemodel", net.SerializeToString())
    records = w.load_weights(path)
    assert [n for n, _ in records] == ["conv1"]
    (blob,) = records[0][1]
    assert blob.legacy and blob.array.shape == (2, 1, 1, 1)
    assert blob.array.ravel().tolist() == [3.0, 4.0]


# ---------------------------------------------------------------------------------------------
# Unusual encodings
# ---------------------------------------------------------------------------------------------
def _model_with_blob(blob: bytes, name: bytes = b"L") -> bytes:
    return _field(100, _field(1, name) + _field(7, blob))


def test_non_packed_floats_fall_back_to_protobuf(tmp_path):
    values = [1.5, -2.0, 3.25]
    blob = b"".join(_varint(5 << 3 | 5) + struct.pack("<f", v) for v in values)
    blob += _field(7, _varint(1 << 3 | 0) + _varint(3))  # a non-packed dim
    path = _write(tmp_path / "np.caffemodel", _model_with_blob(blob))
    ((name, (rec,)),) = w.load_weights(path)
    assert name == "L" and rec.array.tolist() == values
    # and protobuf reads the same
    assert list(caffe_pb2.NetParameter.FromString(_read(path)).layer[0].blobs[0].data) == \
        values


def test_split_packed_runs_and_repeated_shapes_merge(tmp_path):
    part1 = np.array([1, 2], np.float32).tobytes()
    part2 = np.array([3, 4, 5, 6], np.float32).tobytes()
    blob = _field(5, part1) + _field(7, _field(1, _varint(2))) + _field(5, part2) + \
        _field(7, _field(1, _varint(3)))
    path = _write(tmp_path / "split.caffemodel", _model_with_blob(blob))
    ((_, (rec,)),) = w.load_weights(path)
    want = caffe_pb2.NetParameter.FromString(_read(path)).layer[0].blobs[0]
    assert rec.array.shape == tuple(want.shape.dim) == (2, 3)
    assert rec.array.ravel().tolist() == list(want.data)


def test_legacy_fields_win_over_shape(tmp_path):
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=1)
    blob.shape.dim.extend([7])
    blob.data.extend([1, 2])
    path = _write(tmp_path / "l.caffemodel", _model_with_blob(blob.SerializeToString()))
    ((_, (rec,)),) = w.load_weights(path)
    assert rec.legacy and rec.array.shape == (1, 2, 1, 1)


def test_unknown_fields_are_skipped(tmp_path):
    blob = _field(15, b"xyz") + _field(5, np.ones(2, np.float32).tobytes()) + \
        _field(7, _field(1, _varint(2)))
    model = _field(42, b"future") + _model_with_blob(blob)
    ((_, (rec,)),) = w.load_weights(_write(tmp_path / "u.caffemodel", model))
    assert rec.array.tolist() == [1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# shapes_match is Blob::ShapeEquals
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target,source,legacy,ok", [
    ((4, 3, 3, 3), (4, 3, 3, 3), False, True),
    ((4, 3, 3, 3), (4, 3, 3, 2), False, False),
    ((5, 64), (5, 64), False, True),
    ((5, 64), (1, 1, 5, 64), False, False),
    ((5, 64), (1, 1, 5, 64), True, True),
    ((5,), (1, 1, 1, 5), True, True),
    ((5,), (1, 1, 5, 1), True, False),
    ((2, 5), (1, 1, 1, 5), True, False),
    ((), (1, 1, 1, 1), True, True),
    ((1, 2, 3, 4, 5), (2, 3, 4, 5), True, False),
    ((), (), False, True),
])
def test_shapes_match(target, source, legacy, ok):
    assert w.shapes_match(target, source, legacy) is ok


# ---------------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------------
def test_hdf5_layout_is_caffes(tmp_path):
    rng = np.random.default_rng(2)
    conv = [rng.standard_normal((2, 1, 3, 3)).astype(np.float32), np.ones(2, np.float32)]
    dw = [rng.standard_normal((2, 1, 1, 1))]
    diffs = [("conv", [np.full((2, 1, 3, 3), 0.5, np.float32), np.zeros(2, np.float32)])]
    out = tmp_path / "w.caffemodel.h5"
    w.save_hdf5(str(out), [("conv", conv), ("conv2_1/dw", dw)], diffs)
    with h5py.File(out, "r") as f:
        assert set(f) == {"data", "diff"}
        assert f["data/conv/0"].dtype == np.float32
        assert np.array_equal(f["data/conv/0"][()], conv[0])
        assert np.array_equal(f["data/conv/1"][()], conv[1])
        assert f["data/conv2_1/dw/0"].dtype == np.float64
        assert np.array_equal(f["diff/conv/0"][()], diffs[0][1][0])
    records = dict(w.load_weights(str(out)))
    assert np.array_equal(records["conv"][0].array, conv[0])
    assert np.array_equal(records["conv"][0].diff, diffs[0][1][0])
    assert np.array_equal(records["conv2_1/dw"][0].array, dw[0])
    assert records["conv2_1/dw"][0].diff is None
    assert os.listdir(tmp_path) == ["w.caffemodel.h5"]


def test_hdf5_shared_param_gap_is_none(tmp_path):
    path = tmp_path / "shared.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/ip2/1", data=np.arange(3, dtype=np.float32))
        f.create_group("data/relu")
    records = dict(w.load_hdf5(str(path)))
    assert records["relu"] == []
    assert records["ip2"][0] is None
    assert records["ip2"][1].array.tolist() == [0, 1, 2]


def test_hdf5_errors(tmp_path):
    with pytest.raises(FormatError, match="nothing.h5"):
        w.load_hdf5(str(tmp_path / "nothing.h5"))
    not_h5 = _write(tmp_path / "text.h5", b"hello, not hdf5")
    with pytest.raises(FormatError, match="text.h5"):
        w.load_weights(not_h5)
    with h5py.File(tmp_path / "nodata.h5", "w") as f:
        f.create_group("weights")
    with pytest.raises(FormatError, match="'data'"):
        w.load_hdf5(str(tmp_path / "nodata.h5"))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FormatError, match="missing.caffemodel"):
        w.load_weights(str(tmp_path / "missing.caffemodel"))
    with pytest.raises(FormatError, match="missing.caffemodel"):
        w.read_caffemodel_raw(str(tmp_path / "missing.caffemodel"))
    with pytest.raises(FormatError, match="missing.solverstate"):
        w.read_message(str(tmp_path / "missing.solverstate"), caffe_pb2.SolverState)
    empty = _write(tmp_path / "empty.caffemodel", b"")
    with pytest.raises(FormatError, match="empty"):
        w.load_weights(empty)
    with pytest.raises(FormatError, match="directory"):
        w.load_weights(str(tmp_path))


def test_truncated_caffemodel_names_file_and_layer(tmp_path):
    data = _small_model().SerializeToString()
    # inside the last blob's payload, and one byte short of the end
    weights_at = data.find(np.float32(_small_model().layer[2].blobs[0].data[10]).tobytes())
    for cut in (weights_at, len(data) - 1):
        path = _write(tmp_path / f"cut{cut}.caffemodel", data[:cut])
        with pytest.raises(FormatError) as info:
            w.load_weights(path)
        msg = str(info.value)
        assert f"cut{cut}.caffemodel" in msg and "truncated" in msg
        assert "2 layers" in msg
        with pytest.raises(FormatError):
            w.read_caffemodel_raw(path)


def test_blob_overrunning_its_layer_names_the_layer(tmp_path):
    # the layer's length is consistent with the file; its blob claims more than the layer
    inner = _field(1, b"conv9") + _varint(7 << 3 | 2) + _varint(100) + b"\x00" * 10
    path = _write(tmp_path / "t.caffemodel", _field(100, inner))
    with pytest.raises(FormatError) as info:
        w.load_weights(path)
    assert "t.caffemodel" in str(info.value) and "'conv9'" in str(info.value)
    assert "claims 100 bytes" in str(info.value)


@pytest.mark.parametrize("seed", range(8))
def test_garbage_is_a_format_error(tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    path = _write(tmp_path / "garbage.caffemodel", data)
    with pytest.raises(FormatError, match="garbage.caffemodel"):
        w.load_weights(path)
    with pytest.raises(FormatError, match="garbage.caffemodel"):
        w.read_caffemodel_raw(path)


def test_text_file_as_caffemodel(tmp_path):
    path = _write(tmp_path / "deploy.caffemodel", b'name: "net"\nlayer {\n}\n')
    with pytest.raises(FormatError, match="deploy.caffemodel"):
        w.load_weights(path)


def test_blob_count_disagreeing_with_shape_names_layer_and_blob(tmp_path):
    net = _small_model()
    del net.layer[2].blobs[1].data[-1]
    path = _write(tmp_path / "bad.caffemodel", net.SerializeToString())
    with pytest.raises(FormatError) as info:
        w.load_weights(path)
    msg = str(info.value)
    assert "bad.caffemodel" in msg and "'ip'" in msg and "blob 1" in msg
    assert "holds 5 values" in msg and "4 data values" in msg
    net = _small_model()
    net.layer[0].blobs[0].diff.extend([1.0, 2.0])
    path = _write(tmp_path / "baddiff.caffemodel", net.SerializeToString())
    with pytest.raises(FormatError, match="'conv'.*blob 0.*2 diff"):
        w.load_weights(path)


def test_negative_or_too_many_dims(tmp_path):
    neg = caffe_pb2.BlobProto()
    neg.shape.dim.extend([-1, 2])
    path = _write(tmp_path / "neg.caffemodel", _model_with_blob(neg.SerializeToString()))
    with pytest.raises(FormatError, match="negative"):
        w.load_weights(path)
    many = caffe_pb2.BlobProto()
    many.shape.dim.extend([1] * 33)
    many.data.append(1)
    path = _write(tmp_path / "many.caffemodel", _model_with_blob(many.SerializeToString()))
    with pytest.raises(FormatError, match="33 axes"):
        w.load_weights(path)


@pytest.mark.parametrize("where", ["net", "layer", "blob", "shape"])
def test_huge_length_prefix_fails_without_allocating(tmp_path, where):
    huge = _varint(1 << 62)
    if where == "net":
        data = _varint(100 << 3 | 2) + huge + b"\x0a\x01L"
    elif where == "layer":
        data = _field(100, _field(1, b"L") + _varint(7 << 3 | 2) + huge + b"\x00" * 8)
    elif where == "blob":
        data = _model_with_blob(_varint(5 << 3 | 2) + huge + b"\x00" * 8)
    else:
        data = _model_with_blob(_field(7, _varint(1 << 3 | 2) + huge))
    path = _write(tmp_path / "huge.caffemodel", data)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as info:
            w.load_weights(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "huge.caffemodel" in str(info.value)
    assert peak < 16 << 20


def test_overlong_varint_is_corrupt(tmp_path):
    path = _write(tmp_path / "v.caffemodel", b"\x0a" + b"\xff" * 12)
    with pytest.raises(FormatError, match="v.caffemodel"):
        w.load_weights(path)


def test_truncated_solverstate(tmp_path):
    data = _read(SOLVERSTATES[0])
    path = _write(tmp_path / "cut.solverstate", data[: len(data) // 2])
    with pytest.raises(FormatError, match="cut.solverstate"):
        w.read_message(path, caffe_pb2.SolverState)


# ---------------------------------------------------------------------------------------------
# Through the Net
# ---------------------------------------------------------------------------------------------
def test_net_loads_and_saves_golden_weights(tmp_path):
    import decaffe

    g = os.path.join(GOLDEN, "solver_sgd_step")
    net = decaffe.Net(g + ".net.prototxt", g + ".init.caffemodel", decaffe.TRAIN)
    records = dict(w.load_weights(g + ".init.caffemodel"))
    for name, blobs in net.params.items():
        for k, blob in enumerate(blobs):
            assert np.array_equal(blob.data, records[name][k].array)
    out = tmp_path / "saved.caffemodel"
    net.save(str(out))
    again = dict(w.load_weights(str(out)))
    h5 = tmp_path / "saved.caffemodel.h5"
    net.save_hdf5(str(h5))
    from_h5 = dict(w.load_weights(str(h5)))
    for name, blobs in net.params.items():
        for k, blob in enumerate(blobs):
            assert np.array_equal(again[name][k].array, blob.data)
            assert np.array_equal(from_h5[name][k].array, blob.data)

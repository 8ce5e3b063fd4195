""".binaryproto mean files and pycaffe's caffe.io blob conversions."""

from __future__ import annotations

import os

import numpy as np
import pytest

from decaffe.errors import DecaffeError, FormatError
from decaffe.formats import binaryproto as bp
from decaffe.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "golden")


def _proto(path) -> caffe_pb2.BlobProto:
    with open(path, "rb") as f:
        return caffe_pb2.BlobProto.FromString(f.read())


@pytest.mark.parametrize("name,shape", [("data_mean", (1, 3, 10, 12)),
                                        ("tool_mean", (1, 3, 8, 10))])
def test_golden_mean_files_load(name, shape):
    path = os.path.join(GOLDEN, name + ".binaryproto")
    arr = bp.read_blobproto(path)
    msg = _proto(path)
    assert arr.shape == shape == (msg.num, msg.channels, msg.height, msg.width)
    assert arr.dtype == np.float32
    assert np.array_equal(arr.ravel(), np.array(msg.data, np.float32))


def test_tool_mean_is_the_mean_caffe_computed():
    z = np.load(os.path.join(GOLDEN, "tool_convert_and_mean.npz"))
    arr = bp.read_blobproto(os.path.join(GOLDEN, "tool_mean.binaryproto"))
    assert np.allclose(arr[0], z["mean"], rtol=0, atol=1e-3)


def test_write_read_roundtrip_and_pycaffe_layout(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    path = tmp_path / "m.binaryproto"
    bp.write_blobproto(a, str(path))
    msg = _proto(path)
    assert list(msg.shape.dim) == [3, 4, 5] and not msg.HasField("num")
    assert np.array_equal(np.array(msg.data, np.float32), a.ravel())
    # byte for byte what pycaffe's array_to_blobproto(...).SerializeToString() gives
    want = caffe_pb2.BlobProto()
    want.shape.dim.extend(a.shape)
    want.data.extend(a.astype(float).flat)
    assert path.read_bytes() == want.SerializeToString()
    assert np.array_equal(bp.read_blobproto(str(path)), a)


def test_legacy_write_matches_compute_image_mean(tmp_path):
    mean = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "mean.binaryproto"
    bp.write_blobproto(mean, str(path), legacy=True)
    msg = _proto(path)
    assert (msg.num, msg.channels, msg.height, msg.width) == (1, 2, 3, 4)
    assert not len(msg.shape.dim)
    want = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4)
    want.data.extend(mean.ravel())
    assert path.read_bytes() == want.SerializeToString()
    assert bp.read_blobproto(str(path)).shape == (1, 2, 3, 4)


def test_diff_roundtrip(tmp_path):
    a = np.ones((2, 2), np.float32)
    d = np.full((2, 2), -3, np.float32)
    path = tmp_path / "d.binaryproto"
    bp.write_blobproto(a, str(path), diff=d)
    assert np.array_equal(bp.read_blobproto(str(path), return_diff=True), d)
    bp.write_blobproto(a, str(path))
    with pytest.raises(FormatError, match="no diff"):
        bp.read_blobproto(str(path), return_diff=True)


def test_double_data_is_read_as_float64(tmp_path):
    msg = caffe_pb2.BlobProto()
    msg.shape.dim.extend([2])
    msg.double_data.extend([0.1, 0.2])
    path = tmp_path / "dd.binaryproto"
    path.write_bytes(msg.SerializeToString())
    arr = bp.read_blobproto(str(path))
    assert arr.dtype == np.float64 and arr.tolist() == [0.1, 0.2]


def test_blobproto_to_array_follows_pycaffe():
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3)
    legacy.data.extend([1, 2, 3, 4, 5, 6])
    legacy.diff.extend([6, 5, 4, 3, 2, 1])
    arr = bp.blobproto_to_array(legacy)
    assert arr.shape == (1, 2, 1, 3) and arr.dtype == np.float64
    assert arr.ravel().tolist() == [1, 2, 3, 4, 5, 6]
    assert bp.blobproto_to_array(legacy, return_diff=True).ravel().tolist() == \
        [6, 5, 4, 3, 2, 1]
    shaped = caffe_pb2.BlobProto()
    shaped.shape.dim.extend([3, 2])
    shaped.data.extend([0.1] * 6)
    got = bp.blobproto_to_array(shaped)
    assert got.shape == (3, 2)
    # the float32 value widened exactly, as np.array(blob.data) does
    assert got[0, 0] == np.float64(np.float32(0.1))


def test_array_to_blobproto_follows_pycaffe():
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    msg = bp.array_to_blobproto(a, diff=np.ones((2, 3)))
    assert list(msg.shape.dim) == [2, 3]
    assert list(msg.data) == [0, 1, 2, 3, 4, 5] and list(msg.diff) == [1] * 6
    want = caffe_pb2.BlobProto()
    want.shape.dim.extend(a.shape)
    want.data.extend(a.astype(float).flat)
    want.diff.extend(np.ones((2, 3)).astype(float).flat)
    assert msg == want
    big = np.array([16777217.0])  # rounds to float32 exactly as protobuf does
    assert list(bp.array_to_blobproto(big).data) == [16777216.0]
    with pytest.raises(DecaffeError):
        bp.array_to_blobproto(a, diff=np.ones(5))


def test_errors(tmp_path):
    with pytest.raises(FormatError, match="nope.binaryproto"):
        bp.read_blobproto(str(tmp_path / "nope.binaryproto"))
    empty = tmp_path / "empty.binaryproto"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        bp.read_blobproto(str(empty))
    bad = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2)
    bad.data.extend([1, 2, 3])
    path = tmp_path / "bad.binaryproto"
    path.write_bytes(bad.SerializeToString())
    with pytest.raises(FormatError, match="bad.binaryproto.*holds 4 values.*3 data"):
        bp.read_blobproto(str(path))
    with pytest.raises(FormatError):
        bp.blobproto_to_array(bad)
    cut = tmp_path / "cut.binaryproto"
    cut.write_bytes(_golden_bytes()[:-3])
    with pytest.raises(FormatError, match="cut.binaryproto"):
        bp.read_blobproto(str(cut))


def _golden_bytes() -> bytes:
    with open(os.path.join(GOLDEN, "data_mean.binaryproto"), "rb") as f:
        return f.read()

"""The data tools: convert_imageset, compute_image_mean, extract_features, prepare_digits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import decaffe
from decaffe.cli import main as cli
from decaffe.data.db import open_db
from decaffe.data.digits import NUM_TEST, NUM_TRAIN, ensure_digits
from decaffe.errors import DataError
from decaffe.proto import caffe_pb2


def _images(tmp_path, n=4):
    arrs = []
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 256, (5 + i % 2, 7, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"i{i}.png"), img)
        arrs.append(img)
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"i{i}.png {i}\n" for i in range(n)))
    return arrs, str(lst)


def _records(path, backend="lmdb"):
    with open_db(path, backend) as db:
        return [(k.decode(), caffe_pb2.Datum.FromString(v)) for k, v in db.items()]


def test_convert_imageset_raw_gray_and_leveldb(tmp_path):
    arrs, lst = _images(tmp_path)
    root = str(tmp_path) + "/"
    assert cli(["convert_imageset", root, lst, str(tmp_path / "db")]) == 0
    recs = _records(str(tmp_path / "db"))
    assert [k for k, _ in recs] == [f"{i:08d}_i{i}.png" for i in range(4)]
    for (_, d), a in zip(recs, arrs):
        got = np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)
        np.testing.assert_array_equal(got, a.transpose(2, 0, 1))
    assert cli(["convert_imageset", "-gray", "-backend", "leveldb", "-resize_height", "4",
                "-resize_width", "3", root, lst, str(tmp_path / "ldb")]) == 0
    recs = _records(str(tmp_path / "ldb"), "leveldb")
    want = cv2.resize(cv2.imread(root + "i2.png", cv2.IMREAD_GRAYSCALE), (3, 4))
    d = recs[2][1]
    assert (d.channels, d.height, d.width, d.label) == (1, 4, 3, 2)
    np.testing.assert_array_equal(np.frombuffer(d.data, np.uint8).reshape(4, 3), want)


def test_convert_imageset_encoded_shuffle_and_check_size(tmp_path, capsys):
    arrs, lst = _images(tmp_path)
    root = str(tmp_path) + "/"
    assert cli(["convert_imageset", "-encoded", "-shuffle", root, lst,
                str(tmp_path / "enc")]) == 0
    recs = _records(str(tmp_path / "enc"))
    assert sorted(k.split("_", 1)[1] for k, _ in recs) == [f"i{i}.png" for i in range(4)]
    for k, d in recs:
        i = int(k.split("_i")[1][0])
        assert d.encoded and d.label == i
        assert d.data == open(root + f"i{i}.png", "rb").read()  # the file's own bytes
    assert cli(["convert_imageset", "-encode_type", "jpg", root, lst,
                str(tmp_path / "jpg")]) == 0
    d = _records(str(tmp_path / "jpg"))[0][1]
    assert d.encoded and d.data[:2] == b"\xff\xd8"
    assert cli(["convert_imageset", "-check_size", root, lst, str(tmp_path / "chk")]) == 1
    assert "incorrect data field size" in capsys.readouterr().err


def test_convert_imageset_errors(tmp_path, capsys):
    arrs, lst = _images(tmp_path, 2)
    root = str(tmp_path) + "/"
    assert cli(["convert_imageset", root, lst, str(tmp_path / "db")]) == 0
    assert cli(["convert_imageset", root, lst, str(tmp_path / "db")]) == 1
    assert "already exists" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("i0.png 0\ni1.png one\n")
    assert cli(["convert_imageset", root, str(bad), str(tmp_path / "db2")]) == 1
    assert "bad.txt:2" in capsys.readouterr().err
    ghost = tmp_path / "ghost.txt"
    ghost.write_text("i0.png 0\nghost.png 1\ni1.png 2\n")
    assert cli(["convert_imageset", root, str(ghost), str(tmp_path / "db3")]) == 0
    assert [k for k, _ in _records(str(tmp_path / "db3"))] == ["00000000_i0.png",
                                                              "00000002_i1.png"]


def test_compute_image_mean_accumulates_in_float32(tmp_path, capsys):
    from decaffe.cli.compute_image_mean import compute_image_mean

    rng = np.random.default_rng(0)
    arrs = rng.integers(0, 256, (50, 2, 3, 3), dtype=np.uint8)
    path = str(tmp_path / "db")
    with open_db(path, "lmdb", "new") as db:
        txn = db.transaction()
        for i, a in enumerate(arrs):
            d = caffe_pb2.Datum(channels=2, height=3, width=3, data=a.tobytes(), label=0)
            txn.put(f"{i:04d}", d.SerializeToString())
        txn.commit()
    total = np.zeros((2, 3, 3), np.float32)
    for a in arrs:
        total = (total + a.astype(np.float32)).astype(np.float32)
    want = total / np.float32(50)
    np.testing.assert_array_equal(compute_image_mean(path), want)
    out = str(tmp_path / "mean.binaryproto")
    assert cli(["compute_image_mean", path, out]) == 0
    blob = caffe_pb2.BlobProto.FromString(open(out, "rb").read())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 2, 3, 3)
    np.testing.assert_array_equal(np.array(blob.data, np.float32).reshape(2, 3, 3), want)
    assert "mean_value channel [1]" in capsys.readouterr().err
    empty = str(tmp_path / "empty")
    open_db(empty, "lmdb", "new").close()
    with pytest.raises(DataError, match="empty"):
        compute_image_mean(empty)


def test_extract_features_writes_float_datums(tmp_path):
    rng = np.random.default_rng(1)
    arrs = rng.integers(0, 256, (5, 1, 2, 2), dtype=np.uint8)
    src = str(tmp_path / "src")
    with open_db(src, "lmdb", "new") as db:
        txn = db.transaction()
        for i, a in enumerate(arrs):
            txn.put(f"{i:02d}", caffe_pb2.Datum(channels=1, height=2, width=2,
                                                data=a.tobytes(), label=i).SerializeToString())
        txn.commit()
    proto = tmp_path / "net.prototxt"
    proto.write_text(f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ '
                     f'source: "{src}" batch_size: 2 backend: LMDB }} }}\n'
                     'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                     'inner_product_param { num_output: 3 weight_filler { type: "gaussian" } '
                     'bias_filler { type: "constant" value: 0.5 } } }')
    net = decaffe.Net(str(proto), decaffe.TEST)
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    w, b = (p.data.copy() for p in net.params["ip"])
    del net
    out_ip, out_data = str(tmp_path / "f_ip"), str(tmp_path / "f_data")
    assert cli(["extract_features", weights, str(proto), "ip,data", f"{out_ip},{out_data}",
                "3", "lmdb", "CPU"]) == 0
    recs = _records(out_ip)
    assert [k for k, _ in recs] == [f"{i:010d}" for i in range(6)]
    order = [0, 1, 2, 3, 4, 0]
    for (_, d), i in zip(recs, order):
        assert (d.channels, d.height, d.width) == (3, 1, 1) and not d.HasField("label")
        np.testing.assert_allclose(d.float_data, w @ arrs[i].ravel() + b, rtol=1e-5)
    d = _records(out_data)[4][1]
    assert (d.channels, d.height, d.width) == (1, 2, 2)
    np.testing.assert_array_equal(d.float_data, arrs[4].ravel())
    assert cli(["extract_features", weights, str(proto), "nope", str(tmp_path / "x"), "1"]) == 1


def test_digits_dataset_and_command(tmp_path):
    pytest.importorskip("sklearn")
    root = tmp_path / "digits"
    assert cli(["prepare_digits", "-out", str(root)]) == 0
    train, test = ensure_digits(str(root))  # second call: already there
    tr, te = _records(train), _records(test)
    assert len(tr) == NUM_TRAIN and len(te) == NUM_TEST
    d = tr[0][1]
    assert (d.channels, d.height, d.width) == (1, 8, 8)
    from sklearn.datasets import load_digits

    ref = load_digits()
    last = te[-1][1]
    want = np.rint(ref.images[-1] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(np.frombuffer(last.data, np.uint8).reshape(8, 8), want)
    assert last.label == ref.target[-1]
    labels = sorted(r[1].label for r in tr)
    assert labels == sorted(ref.target[:NUM_TRAIN].tolist())
    pix = np.concatenate([np.frombuffer(r[1].data, np.uint8) for r in tr])
    assert pix.max() == 255 and pix.min() == 0

"""The data layers in nets: Data, ImageData, HDF5Data, HDF5Output, MemoryData, WindowData."""

from __future__ import annotations

import gc

import cv2
import h5py
import numpy as np
import pytest
import torch
from data_helpers import (
    data_net,
    datum_bytes,
    image_lmdb,
    images,
    reference_transform,
    write_lmdb,
    write_mean,
)

import decaffe
from decaffe import mode
from decaffe.data.db import NEW, open_db
from decaffe.errors import DataError, DecaffeError, NetError
from decaffe.layers.data import set_input_arrays


def _batches(net, n, tops=("data", "label")):
    out = []
    for _ in range(n):
        net.forward()
        out.append(tuple(np.array(net.blobs[t].data) for t in tops))
    return out


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def test_data_lmdb_batches_in_key_order_with_wrap_around(tmp_path):
    x = images(7, c=3, h=4, w=5)
    src = image_lmdb(str(tmp_path / "db"), x, labels=[10 + i for i in range(7)])
    net = data_net(src, batch=3, transform="scale: 0.5 mean_value: 1 mean_value: 2 "
                   "mean_value: 3")
    assert net.blobs["data"].shape == (3, 3, 4, 5) and net.blobs["label"].shape == (3,)
    order = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0]
    for b, (data, label) in enumerate(_batches(net, 5)):
        idx = order[3 * b:3 * b + 3]
        want = np.stack([reference_transform(x[i], scale=0.5, mean_values=[1, 2, 3])
                         for i in idx])
        np.testing.assert_array_equal(data, want)
        np.testing.assert_array_equal(label, np.array([10 + i for i in idx], np.float32))
        assert data.dtype == np.float32 and label.dtype == np.float32


def test_data_leveldb_is_the_default_backend(tmp_path):
    x = images(3, c=1, h=3, w=3)
    path = str(tmp_path / "ldb")
    with open_db(path, "leveldb", NEW) as db:
        txn = db.transaction()
        for i, a in enumerate(x):
            txn.put(f"{i:08d}", datum_bytes(a, i))
        txn.commit()
    net = decaffe.Net(f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
                      f'data_param {{ source: "{path}" batch_size: 2 }} }}', decaffe.TEST)
    (d0, l0), (d1, l1) = _batches(net, 2)
    np.testing.assert_array_equal(d0, x[:2].astype(np.float32))
    np.testing.assert_array_equal(d1, x[[2, 0]].astype(np.float32))
    np.testing.assert_array_equal(l1, [2, 0])


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_data_encoded_images_decoded_by_opencv(tmp_path, ext):
    x = images(4, c=3, h=8, w=6)
    src = image_lmdb(str(tmp_path / "db"), x, encode=ext)
    recs = [datum_bytes(a, 0, ext) for a in x]
    net = data_net(src, batch=4)
    data, _ = _batches(net, 1)[0]
    for i, r in enumerate(recs):
        from decaffe.proto import caffe_pb2

        d = caffe_pb2.Datum.FromString(r)
        img = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(data[i], img.transpose(2, 0, 1).astype(np.float32))
    gray = data_net(src, batch=4, transform="force_gray: true")
    g, _ = _batches(gray, 1)[0]
    assert g.shape == (4, 1, 8, 6)
    d = caffe_pb2.Datum.FromString(recs[1])
    want = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(g[1, 0], want.astype(np.float32))


def test_data_float_datums_and_single_top(tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 2, 2, 3)).astype(np.float32)
    src = write_lmdb(str(tmp_path / "db"), [(f"{i}".encode(), datum_bytes(a, i))
                                            for i, a in enumerate(x)])
    net = data_net(src, batch=3, tops=("data",), transform="scale: 2")
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, x * np.float32(2))
    assert "label" not in net.blobs


def test_data_top_follows_each_batchs_first_record(tmp_path):
    small, big = images(2, c=1, h=3, w=3), images(2, c=1, h=4, w=5, seed=1)
    recs = [(f"{i}".encode(), datum_bytes(a, 0)) for i, a in enumerate(list(small) + list(big))]
    net = data_net(write_lmdb(str(tmp_path / "db"), recs), batch=2)
    (a, _), (b, _) = _batches(net, 2)
    assert a.shape == (2, 1, 3, 3) and b.shape == (2, 1, 4, 5)
    mixed = data_net(str(tmp_path / "db"), batch=3, extra="prefetch: 0")
    with pytest.raises(DataError, match="batch's first"):
        mixed.forward()


def test_data_same_seed_same_batches_prefetch_or_not(tmp_path):
    src = image_lmdb(str(tmp_path / "db"), images(10, h=9, w=9))
    runs = []
    for prefetch in (4, 0, 4):
        decaffe.set_random_seed(42)
        net = data_net(src, batch=4, phase=decaffe.TRAIN, transform="crop_size: 5 mirror: true",
                       extra=f"rand_skip: 5 prefetch: {prefetch}")
        runs.append(_batches(net, 4))
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    decaffe.set_random_seed(43)
    other = _batches(data_net(src, batch=4, phase=decaffe.TRAIN,
                              transform="crop_size: 5 mirror: true"), 4)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(runs[0], other))


def test_data_rand_skip_starts_within_the_skip(tmp_path):
    src = image_lmdb(str(tmp_path / "db"), images(10, c=1, h=2, w=2))
    starts = set()
    for seed in range(12):
        decaffe.set_random_seed(seed)
        net = data_net(src, batch=3, extra="rand_skip: 4")
        (_, label), = _batches(net, 1)
        s = int(label[0])
        np.testing.assert_array_equal(label, [(s + k) % 10 for k in range(3)])
        starts.add(s)
    assert starts <= {0, 1, 2, 3} and len(starts) > 1


def test_data_several_solvers_take_turns(tmp_path):
    src = image_lmdb(str(tmp_path / "db"), images(7, c=1, h=2, w=2))
    mode.set_solver_count(2)
    mode.set_solver_rank(1)
    try:
        net = data_net(src, batch=3, phase=decaffe.TRAIN, extra="prefetch: 0")
        labels = [b[1].tolist() for b in _batches(net, 2)]
        assert labels == [[1, 3, 5], [0, 2, 4]]  # odd offsets, counted across the wrap
    finally:
        mode.set_solver_count(1)
        mode.set_solver_rank(0)


def test_data_legacy_transform_fields_in_data_param(tmp_path):
    x = images(2, c=2, h=5, w=5)
    mean = np.full((2, 5, 5), 3.0, np.float32)
    mf = write_mean(str(tmp_path / "m.binaryproto"), mean)
    src = image_lmdb(str(tmp_path / "db"), x)
    net = data_net(src, batch=2, extra=f'scale: 0.5 crop_size: 3 mean_file: "{mf}"')
    data, _ = _batches(net, 1)[0]
    want = np.stack([reference_transform(a, scale=0.5, mean=mean, crop=3, h_off=1, w_off=1)
                     for a in x])
    np.testing.assert_array_equal(data, want)


def test_data_in_a_double_precision_net(tmp_path):
    src = image_lmdb(str(tmp_path / "db"), images(2, c=1, h=2, w=2))
    text = (f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
            f'data_param {{ source: "{src}" batch_size: 2 backend: LMDB }} }}')
    net = decaffe.Net(text, decaffe.TEST, dtype=torch.float64)
    net.forward()
    assert net.blobs["data"].data.dtype == np.float64


def test_data_errors_name_layer_field_and_record(tmp_path):
    with pytest.raises(DataError, match=r"layer 'd'.*data_param.source.*nowhere"):
        data_net(str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()
    empty = write_lmdb(str(tmp_path / "empty"), [])
    with pytest.raises(DataError, match=r"layer 'd'.*is empty"):
        data_net(empty)
    good = [(f"k{i}".encode(), datum_bytes(images(1, c=1, h=2, w=2)[0], i)) for i in range(3)]
    bad = write_lmdb(str(tmp_path / "bad"), good + [(b"k3", b"\x0a\xff\xff\xff")])
    net = data_net(bad, batch=2)
    net.forward()
    with pytest.raises(DataError, match=r"layer 'd'.*record 'k3'"):
        net.forward()
    with pytest.raises(DataError, match=r"record 'k3'"):
        net.forward()  # the failure stays
    undecodable = good + [(b"k3", b"\x38\x01\x22\x04junk")]  # encoded: true, data: junk
    net = data_net(write_lmdb(str(tmp_path / "undec"), undecodable), batch=4)
    with pytest.raises(DataError, match=r"record 'k3'.*could not decode"):
        net.forward()
    src = image_lmdb(str(tmp_path / "db"), images(2, c=3, h=4, w=4))
    mf = write_mean(str(tmp_path / "m.binaryproto"), np.zeros((3, 5, 4), np.float32))
    with pytest.raises(DataError, match=r"layer 'd'.*shape 3x5x4.*shape 3x4x4"):
        data_net(src, transform=f'mean_file: "{mf}"')
    with pytest.raises(NetError, match="batch_size"):
        data_net(src, batch=0)
    with pytest.raises(NetError, match="0 bottom"):
        decaffe.Net('input: "x" input_shape { dim: 1 }\n'
                    f'layer {{ name: "d" type: "Data" bottom: "x" top: "data" '
                    f'data_param {{ source: "{src}" batch_size: 1 backend: LMDB }} }}',
                    decaffe.TEST)


def test_prefetch_thread_stops_with_the_net(tmp_path):
    src = image_lmdb(str(tmp_path / "db"), images(4, c=1, h=2, w=2))
    net = data_net(src, batch=2)
    net.forward()
    thread = net.layers[0].layer._loader._thread
    assert thread.is_alive() and thread.daemon
    del net
    gc.collect()
    assert not thread.is_alive()
    net2 = data_net(src, batch=2)
    thread = net2.layers[0].layer._loader._thread
    net2.layers[0].layer.close()
    assert not thread.is_alive()
    with pytest.raises(DataError, match="closed"):
        net2.forward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_data_on_gpu_pinned_and_equal_to_cpu(tmp_path):
    src = image_lmdb(str(tmp_path / "db"), images(8, h=6, w=6))
    cpu = _batches(data_net(src, batch=4, transform="scale: 0.5"), 3)
    decaffe.set_mode_gpu()
    net = data_net(src, batch=4, transform="scale: 0.5")
    gpu = _batches(net, 3)
    for a, b in zip(cpu, gpu):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert net.layers[0].layer._loader.pin


# ----------------------------------------------------------------------------------------------
# ImageData
# ----------------------------------------------------------------------------------------------
def _image_folder(tmp_path, n=5, gray=False):
    folder = tmp_path / "imgs"
    folder.mkdir()
    arrs = []
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 256, (6 + i, 9 - i, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"im {i}.png"), img)  # a space in the name
        arrs.append(img)
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"im {i}.png {i % 3}\n" for i in range(n)))
    return str(folder) + "/", str(lst), arrs


def _image_net(lst, root, *, batch=2, extra="", transform="", phase=decaffe.TEST):
    return decaffe.Net(f'layer {{ name: "im" type: "ImageData" top: "data" top: "label" '
                       f'transform_param {{ {transform} }} image_data_param {{ source: "{lst}" '
                       f'root_folder: "{root}" batch_size: {batch} {extra} }} }}', phase)


def test_imagedata_resize_gray_and_order(tmp_path):
    root, lst, arrs = _image_folder(tmp_path)
    net = _image_net(lst, root, batch=3, extra="new_height: 4 new_width: 5",
                     transform="mean_value: 100 scale: 0.5")
    order = [0, 1, 2, 3, 4, 0]
    for b, (data, label) in enumerate(_batches(net, 2)):
        for j, i in enumerate(order[3 * b:3 * b + 3]):
            img = cv2.resize(arrs[i], (5, 4), interpolation=cv2.INTER_LINEAR)
            want = reference_transform(img.transpose(2, 0, 1), scale=0.5, mean_values=[100])
            np.testing.assert_array_equal(data[j], want)
            assert label[j] == i % 3
    gray = _image_net(lst, root, batch=2, extra="new_height: 4 new_width: 5 is_color: false")
    g, _ = _batches(gray, 1)[0]
    want = cv2.resize(cv2.imread(root + "im 0.png", cv2.IMREAD_GRAYSCALE), (5, 4))
    np.testing.assert_array_equal(g[0, 0], want.astype(np.float32))


def test_imagedata_paths_are_resolved_at_setup(tmp_path, monkeypatch):
    root, lst, arrs = _image_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    net = _image_net("list.txt", "imgs/", batch=5, extra="new_height: 3 new_width: 3")
    monkeypatch.chdir(tmp_path.parent)  # reading ahead must not depend on the cwd any more
    for _ in range(3):
        net.forward()
    want = cv2.resize(arrs[4], (3, 3)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(net.blobs["data"].data[4], want)


def test_imagedata_shuffle_is_seeded_and_covers_every_image(tmp_path):
    root, lst, _ = _image_folder(tmp_path)
    runs = []
    for _ in range(2):
        decaffe.set_random_seed(7)
        net = _image_net(lst, root, batch=5, extra="shuffle: true new_height: 3 new_width: 3",
                         phase=decaffe.TRAIN)
        runs.append([b[1].tolist() for b in _batches(net, 3)])
    assert runs[0] == runs[1]
    for labels in runs[0]:
        assert sorted(labels) == [0, 0, 1, 1, 2]


def test_imagedata_different_sizes_need_crop_or_resize(tmp_path):
    root, lst, arrs = _image_folder(tmp_path)
    net = _image_net(lst, root, batch=2, transform="crop_size: 4")
    data, _ = _batches(net, 1)[0]
    for i in range(2):
        h, w = arrs[i].shape[:2]
        want = reference_transform(arrs[i].transpose(2, 0, 1), crop=4, h_off=(h - 4) // 2,
                                   w_off=(w - 4) // 2)
        np.testing.assert_array_equal(data[i], want)
    bad = _image_net(lst, root, batch=2, extra="")
    with pytest.raises(DataError, match="batch's first"):
        bad.forward()


def test_imagedata_errors(tmp_path):
    root, lst, _ = _image_folder(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("im 0.png 1\n\nim 1.png\n")
    with pytest.raises(DataError, match=r"bad.txt:3: expected 'FILENAME LABEL'"):
        _image_net(str(bad), root)
    with pytest.raises(DataError, match=r"layer 'im'.*cannot open the list file"):
        _image_net(str(tmp_path / "none.txt"), root)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DataError, match="lists no images"):
        _image_net(str(empty), root)
    missing = tmp_path / "missing.txt"
    missing.write_text("im 0.png 0\nim 0.png 0\nghost.png 1\n")
    with pytest.raises(DataError, match="could not load image .*ghost.png"):
        _image_net(str(missing), root, batch=3).forward()
    with pytest.raises(NetError, match="new_height and new_width"):
        _image_net(lst, root, extra="new_height: 3")
    with pytest.raises(NetError, match="rand_skip"):
        decaffe.set_random_seed(0)
        for _ in range(20):  # some draw lands beyond the 5 images
            _image_net(lst, root, extra="rand_skip: 1000")


# ----------------------------------------------------------------------------------------------
# HDF5Data / HDF5Output
# ----------------------------------------------------------------------------------------------
def _h5_files(tmp_path, sizes=(3, 4)):
    names, rows = [], []
    start = 0
    for i, n in enumerate(sizes):
        path = tmp_path / f"f{i}.h5"
        data = np.arange(start, start + n, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2))
        with h5py.File(path, "w") as f:
            f["data"] = data.astype(np.float64)
            f["label"] = np.arange(start, start + n, dtype=np.int32)
            f["extra"] = np.arange(start, start + n, dtype=np.float32)[:, None] * 10
        names.append(str(path))
        rows.extend(range(start, start + n))
        start += n
    lst = tmp_path / "h5.txt"
    lst.write_text("\n".join(names) + "\n")
    return str(lst), rows


def _h5_net(lst, tops=("data", "label"), batch=3, extra="", phase=decaffe.TEST):
    top_text = " ".join(f'top: "{t}"' for t in tops)
    return decaffe.Net(f'layer {{ name: "h" type: "HDF5Data" {top_text} hdf5_data_param {{ '
                       f'source: "{lst}" batch_size: {batch} {extra} }} }}', phase)


def test_hdf5data_tops_across_files_and_wrap(tmp_path):
    lst, rows = _h5_files(tmp_path)
    net = _h5_net(lst, tops=("data", "label", "extra"), batch=3)
    assert net.blobs["extra"].shape == (3, 1) and net.blobs["data"].shape == (3, 2, 2)
    seq = rows * 3
    for b, (data, label, extra) in enumerate(_batches(net, 5, ("data", "label", "extra"))):
        want = np.array(seq[3 * b:3 * b + 3], np.float32)
        np.testing.assert_array_equal(label, want)
        np.testing.assert_array_equal(data[:, 1, 1], want)
        np.testing.assert_array_equal(extra[:, 0], want * 10)


def test_hdf5data_shuffle_permutes_each_epoch(tmp_path):
    lst, rows = _h5_files(tmp_path, sizes=(4, 4))
    decaffe.set_random_seed(3)
    net = _h5_net(lst, batch=4, extra="shuffle: true", phase=decaffe.TRAIN)
    labels = [b[1].tolist() for b in _batches(net, 6)]
    for epoch in range(3):
        got = labels[2 * epoch] + labels[2 * epoch + 1]
        assert sorted(got) == rows
        # a file's rows stay together: each batch is one file here
        assert {int(v) // 4 for v in labels[2 * epoch]} in ({0}, {1})
    assert any(lab != sorted(lab) for lab in labels)


def test_hdf5data_errors(tmp_path):
    lst, _ = _h5_files(tmp_path)
    with pytest.raises(DataError, match=r"no dataset 'nope'"):
        _h5_net(lst, tops=("data", "nope"))
    with pytest.raises(DataError, match="cannot open the list file"):
        _h5_net(str(tmp_path / "none.txt"))
    empty = tmp_path / "e.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="names no HDF5 file"):
        _h5_net(str(empty))
    with pytest.raises(NetError, match="does not transform"):
        decaffe.Net(f'layer {{ name: "h" type: "HDF5Data" top: "data" transform_param '
                    f'{{ scale: 2 }} hdf5_data_param {{ source: "{lst}" batch_size: 1 }} }}',
                    decaffe.TEST)
    with h5py.File(tmp_path / "uneven.h5", "w") as f:
        f["data"] = np.zeros((3, 2))
        f["label"] = np.zeros(2)
    (tmp_path / "u.txt").write_text(str(tmp_path / "uneven.h5"))
    with pytest.raises(DataError, match="'label' has 2 rows"):
        _h5_net(str(tmp_path / "u.txt"))


def test_hdf5output_writes_legacy_shapes_and_appends(tmp_path):
    out = tmp_path / "out.h5"
    net = decaffe.Net(f'input: "x" input_shape {{ dim: 2 dim: 3 }} input: "y" input_shape '
                      f'{{ dim: 2 }}\nlayer {{ name: "o" type: "HDF5Output" bottom: "x" '
                      f'bottom: "y" hdf5_output_param {{ file_name: "{out}" }} }}',
                      decaffe.TEST)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    net.blobs["x"].data[...] = x
    net.blobs["y"].data[...] = [4, 5]
    net.forward()
    with h5py.File(out, "r") as f:
        assert f["data"].shape == (2, 3, 1, 1) and f["label"].shape == (2, 1, 1, 1)
        np.testing.assert_array_equal(f["data"][:, :, 0, 0], x)
    net.blobs["x"].data[...] = -x
    net.forward()
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["data"][2:, :, 0, 0], -x)
        np.testing.assert_array_equal(f["label"][:, 0, 0, 0], [4, 5, 4, 5])
    with pytest.raises(NetError, match="file_name"):
        decaffe.Net('input: "x" input_shape { dim: 2 } input: "y" input_shape { dim: 2 }\n'
                    'layer { name: "o" type: "HDF5Output" bottom: "x" bottom: "y" }',
                    decaffe.TEST)


# ----------------------------------------------------------------------------------------------
# MemoryData / WindowData
# ----------------------------------------------------------------------------------------------
MEMORY = ('layer { name: "m" type: "MemoryData" top: "data" top: "label" memory_data_param '
          '{ batch_size: 2 channels: 1 height: 2 width: 3 } }')


def test_memorydata_set_input_arrays_wraps(tmp_path):
    net = decaffe.Net(MEMORY, decaffe.TEST)
    with pytest.raises(DataError, match="set_input_arrays"):
        net.forward()
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([7, 8, 9, 10], np.float32)
    set_input_arrays(net, data, labels)
    for b in range(3):
        net.forward()
        i = (2 * b) % 4
        np.testing.assert_array_equal(net.blobs["data"].data, data[i:i + 2])
        np.testing.assert_array_equal(net.blobs["label"].data, labels[i:i + 2])


def test_memorydata_checks_like_pycaffe():
    net = decaffe.Net(MEMORY, decaffe.TEST)
    good = np.zeros((4, 1, 2, 3), np.float32)
    lab = np.zeros(4, np.float32)
    for data, labels, msg in [(good.astype(np.float64), lab, "float32"),
                              (good[:, :, :, :2], lab, "C contiguous"),
                              (good.reshape(4, 6), lab, "4-d"),
                              (np.zeros((4, 2, 2, 3), np.float32), lab, "each row"),
                              (good, np.zeros(3, np.float32), "same first dimension"),
                              (good[:3], lab[:3], "multiple of batch size")]:
        with pytest.raises(DecaffeError, match=msg):
            set_input_arrays(net, data, labels)
    with pytest.raises(NetError, match="channels"):
        decaffe.Net('layer { name: "m" type: "MemoryData" top: "data" top: "label" '
                    'memory_data_param { batch_size: 2 height: 2 width: 3 } }', decaffe.TEST)
    other = decaffe.Net('input: "x" input_shape { dim: 1 }', decaffe.TEST)
    with pytest.raises(DecaffeError, match="first layer is a MemoryData"):
        set_input_arrays(other, good, lab)


def _window_setup(tmp_path, extra_windows=""):
    rng = np.random.default_rng(0)
    img0 = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    img1 = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img0)
    cv2.imwrite(str(tmp_path / "b.png"), img1)
    wf = tmp_path / "windows.txt"
    wf.write_text("# 0\na.png\n3\n16\n16\n2\n"
                  "2 0.9 4 4 7 7\n"       # foreground, label 2
                  "5 0.1 0 0 3 3\n"       # background: label forced to 0
                  f"# 1\nb.png\n3\n12\n10\n1\n7 0.45 1 1 5 5\n{extra_windows}")
    return str(wf), img0, img1


def _window_net(wf, root, *, batch=4, extra="", transform="crop_size: 8"):
    return decaffe.Net(f'layer {{ name: "w" type: "WindowData" top: "data" top: "label" '
                       f'transform_param {{ {transform} }} window_data_param {{ source: "{wf}" '
                       f'root_folder: "{root}" batch_size: {batch} {extra} }} }}',
                       decaffe.TRAIN)


def test_windowdata_warps_background_then_foreground(tmp_path):
    wf, img0, _ = _window_setup(tmp_path)
    root = str(tmp_path) + "/"
    # overlap 0.45 is neither >= 0.5 nor < 0.3: dropped; one window of each kind remains
    net = _window_net(wf, root, extra="fg_fraction: 0.5 bg_threshold: 0.3 scale: 0.5",
                      transform="crop_size: 8 mean_value: 10 mean_value: 20 mean_value: 30")
    data, label = _batches(net, 1)[0]
    assert data.shape == (4, 3, 8, 8)
    np.testing.assert_array_equal(label, [0, 0, 2, 2])
    mv = np.array([10, 20, 30], np.float32)[:, None, None]
    fg = cv2.resize(img0[4:8, 4:8], (8, 8), interpolation=cv2.INTER_LINEAR)
    bg = cv2.resize(img0[0:4, 0:4], (8, 8), interpolation=cv2.INTER_LINEAR)
    for i, patch in enumerate([bg, bg, fg, fg]):
        want = (patch.transpose(2, 0, 1).astype(np.float32) - mv) * np.float32(0.5)
        np.testing.assert_array_equal(data[i], want)


def test_windowdata_context_padding_and_mirror(tmp_path):
    wf, img0, _ = _window_setup(tmp_path)
    root = str(tmp_path) + "/"
    net = _window_net(wf, root, batch=2,
                      extra="fg_fraction: 0.5 context_pad: 2 bg_threshold: 0.3",
                      transform="crop_size: 8 mirror: true")
    # foreground 4..7 widened by 8/(8-4): 2..10, inside the image, warped to 8x8
    fg = cv2.resize(img0[2:11, 2:11], (8, 8)).transpose(2, 0, 1).astype(np.float32)
    # background 0..3 widened to -2..6: clipped to 0..6, 6x6 placed after 2 rows/cols of 0
    bg = cv2.resize(img0[0:7, 0:7], (6, 6)).transpose(2, 0, 1).astype(np.float32)
    seen = set()
    for data, label in _batches(net, 12):
        np.testing.assert_array_equal(label, [0, 2])
        plain = np.array_equal(data[1], fg)
        assert plain or np.array_equal(data[1], fg[:, :, ::-1])
        b0 = np.zeros((3, 8, 8), np.float32)
        b0[:, 2:, 2:] = bg
        b1 = np.zeros((3, 8, 8), np.float32)
        b1[:, 2:, :6] = bg[:, :, ::-1]  # mirrored: the padding moves to the other side
        assert np.array_equal(data[0], b0) or np.array_equal(data[0], b1)
        seen.add((plain, np.array_equal(data[0], b0)))
    assert len(seen) > 1


def test_windowdata_errors(tmp_path):
    wf, _, _ = _window_setup(tmp_path)
    root = str(tmp_path) + "/"
    with pytest.raises(NetError, match="crop_size"):
        _window_net(wf, root, transform="")
    with pytest.raises(DataError, match="cannot open the window file"):
        _window_net(str(tmp_path / "none.txt"), root)
    bad = tmp_path / "bad.txt"
    bad.write_text("# 0\na.png\n3\n16\nsixteen\n0\n")
    with pytest.raises(DataError, match=r"bad.txt:5: expected width"):
        _window_net(str(bad), root)
    only_bg = tmp_path / "bg.txt"
    only_bg.write_text("# 0\na.png\n3\n16\n16\n1\n1 0.1 0 0 3 3\n")
    with pytest.raises(NetError, match="0 foreground and 1 background"):
        _window_net(str(only_bg), root)
    missing = tmp_path / "missing.txt"
    missing.write_text("# 0\nghost.png\n3\n16\n16\n2\n1 0.9 0 0 3 3\n0 0.0 0 0 3 3\n")
    with pytest.raises(DataError, match="could not load image .*ghost.png"):
        _window_net(str(missing), root).forward()

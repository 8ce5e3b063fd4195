"""What a file or a caller can do that breaks arithmetic or asks for the impossible is refused
with a decaffe error naming it: blob sizes (case 12 of issue 15), writes into missing
folders, devices that do not exist, solver states and solver values, empty normalizations."""

from __future__ import annotations

import os

import numpy as np
import pytest

import caffe
import decaffe
from decaffe.errors import DecaffeError, FormatError, NetError, SolverError
from decaffe.proto import caffe_pb2
from decaffe.solvers import snapshot as snap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IP = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } } '
      'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
      'inner_product_param { num_output: 4 } }')


@pytest.mark.parametrize("dims,match", [((2.5, 3), "not an integer"),
                                        ((2**20, 2**20, 8, 8), "INT_MAX"),
                                        ((-1, 3), "negative"),
                                        (("2", 3), "not an integer")])
def test_blob_reshape_refuses_bad_dimensions(dims, match):
    net = caffe.Net(IP, caffe.TEST)
    with pytest.raises(DecaffeError, match=match) as e:
        net.blobs["data"].reshape(*dims)
    assert "blob 'data'" in str(e.value)
    assert net.blobs["data"].shape == (2, 3)  # unchanged
    net.blobs["data"].reshape(np.int64(4), 3)
    assert net.blobs["data"].shape == (4, 3)


def test_blob_over_free_memory_is_refused_before_allocation(monkeypatch):
    from decaffe import blob

    net = caffe.Net(IP, caffe.TEST)
    monkeypatch.setattr(blob, "free_memory", lambda device=None: 100 << 20)
    with pytest.raises(DecaffeError, match=r"blob 'data': shape \(8192, 8192\) needs 256.0 "
                       r"MiB, more than the 100.0 MiB free"):
        net.blobs["data"].reshape(8192, 8192)
    net.blobs["data"].reshape(1024, 1024)  # 4 MiB fits
    assert blob.free_memory.__name__ == "<lambda>"


def test_free_memory_follows_the_address_space_limit():
    import resource
    import subprocess
    import sys

    code = ("import resource; from decaffe.blob import free_memory; "
            "resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)); "
            "print(free_memory() <= 8 << 30)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.stdout.strip() == "True", out.stderr
    assert resource.getrlimit(resource.RLIMIT_AS)  # this process is untouched


def test_net_refuses_a_top_over_int_max_naming_layer_and_shape():
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 65536 '
            'dim: 65536 } } }')
    with pytest.raises(NetError, match="layer 'data'.*INT_MAX"):
        decaffe.Net(text, decaffe.TEST)
    huge = IP.replace("num_output: 4", "num_output: 2000000000")
    with pytest.raises(DecaffeError, match="layer 'ip'.*INT_MAX"):
        decaffe.Net(huge, decaffe.TEST)


def test_save_into_a_missing_folder_names_the_path(tmp_path):
    net = caffe.Net(IP, caffe.TEST)
    target = str(tmp_path / "nodir" / "x.caffemodel")
    for save in (net.save, net.save_hdf5):
        with pytest.raises(DecaffeError) as e:
            save(target)
        assert target in str(e.value) and ".tmp" not in str(e.value)
        assert isinstance(e.value, OSError)
    assert not os.path.exists(tmp_path / "nodir")


def test_set_device_refuses_a_missing_device():
    with pytest.raises(DecaffeError, match="device 99 does not exist"):
        decaffe.set_device(99)
    with pytest.raises(DecaffeError, match="integer"):
        decaffe.set_device(0.5)
    decaffe.set_device(0)


@pytest.mark.parametrize("field,value", [("momentum", 1.0), ("momentum2", 1e30),
                                         ("momentum2", -0.5), ("momentum", 1.5)])
def test_adam_refuses_momenta_that_break_its_correction(tmp_path, field, value):
    (tmp_path / "n.prototxt").write_text(IP)
    param = caffe_pb2.SolverParameter(net=str(tmp_path / "n.prototxt"), base_lr=0.1,
                                      lr_policy="fixed", type="Adam", max_iter=1)
    setattr(param, field, value)
    with pytest.raises(SolverError, match=f"{field}: Adam needs a value in"):
        decaffe.AdamSolver(param)


def _state_bytes(**fields) -> bytes:
    msg = caffe_pb2.SolverState(**fields)
    return msg.SerializeToString()


def test_solverstate_values_that_break_arithmetic(tmp_path):
    bad = tmp_path / "neg.solverstate"
    bad.write_bytes(_state_bytes(iter=-5))
    with pytest.raises(FormatError, match="iter is -5"):
        snap.read_state(str(bad))
    bad.write_bytes(_state_bytes(iter=1, current_step=-2))
    with pytest.raises(FormatError, match="current_step"):
        snap.read_state(str(bad))
    # learned_net (field 2) with bytes that are not UTF-8
    bad.write_bytes(b"\x08\x01\x12\x02\xff\xfe")
    with pytest.raises(FormatError, match=str(bad)):
        snap.read_state(str(bad))
    with pytest.raises(SolverError, match="NUL"):
        snap.read_state(str(tmp_path / "a\0b.solverstate"))
    import h5py

    h5 = tmp_path / "s.solverstate.h5"
    with h5py.File(h5, "w") as f:
        f["iter"] = np.int32(-1)
        f["current_step"] = np.int32(0)
        f.create_group("history")
    with pytest.raises(FormatError, match="iter is -1"):
        snap.read_state(str(h5))
    with h5py.File(h5, "w") as f:
        f["iter"] = np.float64(3.5)
        f["current_step"] = np.int32(0)
        f.create_group("history")
    with pytest.raises(FormatError, match="dataset 'iter'.*expected an integer scalar"):
        snap.read_state(str(h5))
    with h5py.File(h5, "w") as f:
        f["iter"] = np.int32(1)
        f["current_step"] = np.int32(0)
        f["learned_net"] = np.bytes_(b"\xff\xfe")
        f.create_group("history")
    with pytest.raises(FormatError, match="learned_net.*UTF-8"):
        snap.read_state(str(h5))


@pytest.mark.parametrize("layer,shape", [
    ('type: "BatchNorm"', (2, 0, 3, 3)), ('type: "BatchNorm"', (0, 2, 3, 3)),
    ('type: "LRN"', (2, 0, 3, 3)),
    ('type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL }', (2, 0, 3, 3)),
    ('type: "MVN"', (0, 2, 3, 3)), ('type: "MVN" mvn_param { across_channels: true }',
                                    (0, 2, 3, 3))])
@pytest.mark.parametrize("phase", [decaffe.TRAIN, decaffe.TEST])
def test_empty_normalizations_are_refused_naming_the_layer(layer, shape, phase):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = (f'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }} '
            f'layer {{ name: "norm" {layer} bottom: "x" top: "y" }}')
    with pytest.raises(NetError, match="layer 'norm'"):
        decaffe.Net(text, phase).forward()


def test_nul_byte_in_paths_is_a_decaffe_error(tmp_path):
    net = caffe.Net(IP, caffe.TEST)
    with pytest.raises(DecaffeError, match="NUL"):
        net.save(str(tmp_path / "a\0b.caffemodel"))
    with pytest.raises(DecaffeError):
        caffe.Net(IP, str(tmp_path / "w\0.caffemodel"), caffe.TEST)
    with pytest.raises(DecaffeError):
        caffe.Net(str(tmp_path / "n\0.prototxt"), caffe.TEST)
    text = ('layer { name: "d" type: "Data" top: "data" data_param { source: "a\\000b" '
            'backend: LMDB batch_size: 1 } }')
    with pytest.raises(DecaffeError, match="NUL"):
        decaffe.Net(text, decaffe.TEST)


def test_nul_in_snapshot_prefix_and_huge_image_resize(tmp_path):
    (tmp_path / "n.prototxt").write_text(IP)
    param = caffe_pb2.SolverParameter(net=str(tmp_path / "n.prototxt"), base_lr=0.1,
                                      lr_policy="fixed", max_iter=1, snapshot=1,
                                      snapshot_prefix=str(tmp_path / "a\0b"))
    with pytest.raises(SolverError, match="snapshot_prefix"):
        decaffe.SGDSolver(param)
    import cv2

    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "l.txt").write_text("i.png 0\n")
    text = ('layer { name: "img" type: "ImageData" top: "data" top: "label" image_data_param { '
            f'source: "{tmp_path / "l.txt"}" root_folder: "{tmp_path}/" batch_size: 1 '
            'new_height: 2000000000 new_width: 2000000000 } }')
    with pytest.raises(NetError, match="layer 'img'.*INT_MAX"):
        decaffe.Net(text, decaffe.TEST)

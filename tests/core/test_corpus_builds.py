"""Every net in the corpus (tests/models, from BVLC Caffe and the model zoo) that uses only
BVLC layers builds in both phases and runs a forward pass at batch 2. Data layers whose
sources are not shipped are replaced by Input layers of the shapes their nets expect."""

import csv
import os
import sys

import numpy as np
import pytest
from conftest import HERE, MODELS

import caffe
from decaffe.formats import prototxt
from decaffe.proto import caffe_pb2

DATA_TYPES = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData"}


def bvlc_nets() -> list[str]:
    with open(os.path.join(MODELS, "MANIFEST.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["local_path"] for r in rows
            if r["kind"] == "net" and r["non_bvlc_layer_types"] in ("-", "")]


def data_shape(path: str, lp) -> tuple[int, ...]:
    """The per-image shape a data layer of this net produces."""
    crop = lp.transform_param.crop_size
    folders = set(path.split("/"))
    if "siamese" in folders:
        return (2, 28, 28)
    if folders & {"mnist", "lenet"}:
        return (1, 28, 28)
    if "cifar10" in folders:
        return (3, 32, 32)
    if "hdf5_classification" in folders:
        return (4,)
    if crop:
        return (3, crop, crop)
    return (3, 227, 227)


def with_inputs(path: str, param) -> caffe_pb2.NetParameter:
    """param with its data layers replaced by Input layers (batch 2)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if lp.type not in DATA_TYPES:
            out.layer.add().CopyFrom(lp)
            continue
        inp = out.layer.add()
        inp.name, inp.type = lp.name, "Input"
        inp.top.extend(lp.top)
        inp.include.extend(lp.include)
        inp.exclude.extend(lp.exclude)
        for i, _ in enumerate(lp.top):
            shape = inp.input_param.shape.add()
            shape.dim.extend((2,) + (data_shape(path, lp) if i == 0 else ()))
    return out


@pytest.mark.parametrize("path", bvlc_nets())
@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST], ids=["TRAIN", "TEST"])
def test_corpus_net_builds_and_runs(path, phase, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(HERE, "layers", "pylayers"))  # linreg's pyloss
    param = with_inputs(path, prototxt.read_net(os.path.join(MODELS, path)))
    # nets whose test data layers need a stage (mnist_autoencoder's 'test-on-test') get the
    # first stage their TEST rules name, as their solvers' test_state does
    stages = [s for lp in param.layer for r in lp.include if r.phase == phase for s in r.stage]
    net = caffe.Net(param, phase=phase, stages=stages[:1])
    for name in net.inputs:
        if net.blobs[name].shape and net.blobs[name].shape[0] != 2:
            net.blobs[name].reshape(2, *net.blobs[name].shape[1:])
    net.reshape()
    rng = np.random.default_rng(0)
    for lname, blobs in net.params.items():  # unit statistics: deploy nets stay finite
        if net.layer_dict[lname].type == "BatchNorm":
            for b, v in zip(blobs, (0.0, 1.0, 1.0)):
                b.data[...] = v
    for name in net.inputs:
        if "label" in name or name == "sim":
            net.blobs[name].data[...] = rng.integers(0, 2, net.blobs[name].shape)
        else:
            net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].shape)
    loss = net._forward(0, len(net.layers) - 1)
    assert np.isfinite(loss)
    # V0 nets' loss layers have no named top: their loss is the net's only result
    assert net.outputs or any(net._blob_loss_weights)
    for name in net.outputs:
        assert np.all(np.isfinite(net.blobs[name].data)), name
    assert sys.modules.get("caffe") is caffe

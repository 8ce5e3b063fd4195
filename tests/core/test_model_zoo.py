"""Real deploy nets from BVLC Caffe and the model zoo load, reshape to batch 2, and run
forward and backward (with random weights; data layers are not involved)."""

import os

import numpy as np
import pytest
from conftest import MODELS

import caffe
from decaffe.formats import prototxt

DEPLOY_NETS = [
    "bvlc/examples/mnist/lenet.prototxt",
    "bvlc/examples/cifar10/cifar10_quick.prototxt",
    "bvlc/examples/cifar10/cifar10_full.prototxt",
    "bvlc/models/bvlc_alexnet/deploy.prototxt",
    "bvlc/models/bvlc_reference_caffenet/deploy.prototxt",
    "bvlc/models/bvlc_googlenet/deploy.prototxt",
    "bvlc_legacy/rc/models/bvlc_reference_caffenet/deploy.prototxt",
    "bvlc_legacy/v0.9/examples/lenet/lenet.prototxt",
    "zoo/forresti__SqueezeNet/SqueezeNet_v1.0/deploy.prototxt",
    "zoo/forresti__SqueezeNet/SqueezeNet_v1.1/deploy.prototxt",
    "zoo/shicai__MobileNet-Caffe/mobilenet_deploy.prototxt",
    "zoo/shicai__MobileNet-Caffe/mobilenet_v2_deploy.prototxt",
    "zoo/KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt",
    "zoo/KaimingHe__deep-residual-networks/prototxt/ResNet-101-deploy.prototxt",
    "zoo/KaimingHe__deep-residual-networks/prototxt/ResNet-152-deploy.prototxt",
]


def randomize(net, rng):
    """He-scaled random weights, unit statistics: activations stay finite through deep nets."""
    for lname, blobs in net.params.items():
        kind = net.layer_dict[lname].type
        for i, b in enumerate(blobs):
            if kind == "BatchNorm":
                b.data[...] = (0.0, 1.0, 1.0)[i]
            elif kind == "Scale":
                b.data[...] = 1.0 if i == 0 else 0.0
            elif b.data.ndim > 1:
                fan_in = b.data[0].size
                b.data[...] = rng.standard_normal(b.shape) * np.sqrt(2.0 / fan_in)
            else:
                b.data[...] = 0.0


@pytest.mark.parametrize("path", DEPLOY_NETS)
def test_deploy_net_forward_backward_batch2(path):
    param = prototxt.read_net(os.path.join(MODELS, path))
    param.force_backward = True
    # random weights saturate a final softmax (zero gradients): check the logits instead
    keep = [lp for lp in param.layer if lp.type != "Softmax"]
    del param.layer[:]
    param.layer.extend(keep)
    net = caffe.Net(param, phase=caffe.TEST)
    for name in net.inputs:
        shape = list(net.blobs[name].shape)
        net.blobs[name].reshape(2, *shape[1:])
    net.reshape()
    rng = np.random.default_rng(0)
    randomize(net, rng)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].shape)
    out = net.forward()
    for name, value in out.items():
        assert value.shape[0] == 2, name
        assert np.isfinite(value).all(), name
    for name in net.outputs:
        net.blobs[name].diff[...] = rng.standard_normal(net.blobs[name].shape)
    diffs = net.backward()
    for name in net.inputs:
        d = diffs[name]
        assert d.shape == net.blobs[name].shape
        assert np.isfinite(d).all() and np.abs(d).sum() > 0, name

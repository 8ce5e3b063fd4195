"""TEST-phase outputs do not depend on the batch (issue 21): Caffe computes image by image, and
BVLC's 02-fine-tuning.ipynb asserts a squared fc7 difference below 1e-8 between CaffeNet at a
batch of 1 and at a batch of 50. Here CaffeNet (227×227), GoogLeNet and ResNet-50 (224×224),
random weights of trained-like magnitudes, at batches 1, 10 and 50 with 1 and 2 threads: each
item's outputs in every blob (ResNet-50: every tenth), fc7, the pooled features and the final
outputs included, must agree across batch sizes within that bound (decaffe.items aims at
bit-for-bit equality, which is also checked on the items' final outputs). The default run
takes CaffeNet at 10 and 1 with 1 and 2 threads; DECAFFE_SLOW=1 runs the matrix."""

import os

import numpy as np
import pytest
import torch

import caffe
from decaffe import items
from decaffe.formats import prototxt

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
NETS = {
    "caffenet": ("bvlc/models/bvlc_reference_caffenet/deploy.prototxt", 227, "fc7"),
    "googlenet": ("bvlc/models/bvlc_googlenet/deploy.prototxt", 224, "pool5/7x7_s1"),
    "resnet50": ("zoo/KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt",
                 224, "pool5"),
}
SLOW = pytest.mark.skipif(os.environ.get("DECAFFE_SLOW") != "1",
                          reason="a full-size net at batch 50: set DECAFFE_SLOW=1 to run it")
CASES = [pytest.param(net, threads, batches,
                      marks=() if (net, batches) == ("caffenet", (10, 1)) else SLOW)
         for net in NETS for threads in (1, 2) for batches in ((10, 1), (50, 10, 1))]


def build(name: str, batch: int):
    path, size, _ = NETS[name]
    param = prototxt.read_net(os.path.join(MODELS, path))
    if len(param.layer) and param.layer[0].type == "Input":
        param.layer[0].input_param.shape[0].dim[:] = [batch, 3, size, size]
    else:
        del param.input_shape[:]
        param.input_dim[:] = [batch, 3, size, size]
    net = caffe.Net(param, caffe.TEST)
    rng = np.random.RandomState(0)
    for lname, blobs in net.params.items():
        kind = net.layer_dict[lname].type
        for k, b in enumerate(blobs):
            d = b.data
            if kind == "BatchNorm":  # running sums with factor 1: mean ~0, variance ~1
                d[...] = (rng.standard_normal(d.shape) * 0.1, rng.uniform(0.5, 1.5, d.shape),
                          np.ones(d.shape))[k]
            elif k == 0 and d.ndim > 1:  # He-scaled weights: activations of trained size
                d[...] = rng.standard_normal(d.shape) * np.sqrt(2.0 / np.prod(d.shape[1:]))
            else:
                d[...] = rng.uniform(-0.1, 0.1, d.shape)
    return net


def outputs(net, x, keep=(0, 9)):
    """{blob: {item: its outputs}} after a forward of x, for the items kept; ResNet-50's every
    tenth blob, its pooled features and its outputs (an array taken from every blob would give
    each its own copy: 15 GB at batch 50)."""
    net.blobs[net.inputs[0]].data[...] = x
    net.forward()
    n = x.shape[0]
    names = list(net.blobs)
    if "res5c" in names:
        names = [k for j, k in enumerate(names) if j % 10 == 0 or k in ("pool5", *net.outputs)]
    return {k: {i: net.blobs[k].data[i].copy() for i in keep if i < n}
            for k in names if net.blobs[k].shape and net.blobs[k].shape[0] == n}


@pytest.mark.parametrize("name,threads,batches", CASES)
def test_each_items_outputs_do_not_depend_on_the_batch(name, threads, batches):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, size, feature = NETS[name]
        x = np.random.RandomState(1).uniform(-120, 135, (batches[0], 3, size, size)) \
            .astype(np.float32)
        net = build(name, batches[0])
        torch.set_num_threads(threads)  # after the first net, which may apply DECAFFE_THREADS
        full = outputs(net, x)
        assert np.abs(full[feature][0]).max() > 0.1  # activations big enough to show rounding
        finals = net.outputs
        for n in batches[1:]:
            net.blobs[net.inputs[0]].reshape(n, 3, size, size)
            net.reshape()
            got = outputs(net, x[:n])
            assert torch.get_num_threads() == threads
            for i in sorted({0, n - 1}):
                for blob, value in got.items():
                    sq = float(((value[i].astype(np.float64) - full[blob][i]) ** 2).sum())
                    assert sq < 1e-8, f"{blob}: item {i} differs by {sq} between batch " \
                                      f"{batches[0]} and {n}"
                for blob in finals:
                    np.testing.assert_array_equal(got[blob][i], full[blob][i], err_msg=blob)
    finally:
        torch.set_num_threads(old)


# -- decaffe.items on one layer: every item is its group's result ------------------------------
class _RowOrder(torch.nn.Module):
    """A stand-in for a kernel whose summation order depends on the batch: sums each row's
    products in reverse when the batch has more than 4 rows, and rounds through float16 at
    odd positions of a group when position_matters."""

    item_group = 2

    def __init__(self, position_matters=False):
        super().__init__()
        self.blob_params = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(3, 40))])
        self.position_matters = position_matters

    def forward(self, x):
        w = self.blob_params[0]
        prod = x[:, None, :] * w[None]
        order = range(39, -1, -1) if x.shape[0] > 4 else range(40)
        y = torch.zeros(prod.shape[:2])
        for k in order:  # float32 additions, in this order
            y = y + prod[..., k]
        if self.position_matters:
            odd = torch.arange(x.shape[0]) % 2 == 1
            y = torch.where(odd[:, None], y.half().float(), y)
        return y


@pytest.mark.parametrize("position_matters,how", [(False, "groups"), (True, "alone")])
def test_items_run_gives_every_item_its_groups_result(position_matters, how):
    layer = _RowOrder(position_matters)
    x = torch.randn(9, 40) * 100
    assert items.plan(layer, [(9, 40)], 2) == how
    got = items.run(layer, [x])
    for i in range(9):
        alone = layer(torch.cat([x[i:i + 1], torch.zeros(1, 40)]))[0]
        torch.testing.assert_close(got[i], alone, rtol=0, atol=0)
    # a batch whose kernels give each item its group's arithmetic runs in one call
    assert items.plan(layer, [(3, 40)], 2) == ("alone" if position_matters else "whole")


def test_softmax_across_the_batch_axis_is_not_split_into_items():
    net = caffe.Net('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 '
                    'dim: 2 } } }\nlayer { name: "s" type: "Softmax" bottom: "x" top: "s" '
                    'softmax_param { axis: 0 } }\n', caffe.TEST)
    x = np.random.RandomState(2).standard_normal((3, 2)).astype(np.float32)
    out = net.forward(x=x)["s"]
    np.testing.assert_allclose(out, np.exp(x) / np.exp(x).sum(0), rtol=1e-5)

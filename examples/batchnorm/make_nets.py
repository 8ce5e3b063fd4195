"""The same small CNN with and without batch normalization, written with pycaffe's NetSpec.

Each block is Convolution -> [BatchNorm -> Scale(bias_term)] -> ReLU, the BatchNorm after the
convolution and before the activation, a Scale layer carrying the learned γ and β. In the BN
net the convolutions have no bias (the Scale's β replaces it). Both nets start from the
same MSRA (He) initialisation. BatchNorm's use_global_stats is left unset, so Caffe's
default applies: batch statistics in the TRAIN net, the stored global statistics in the
TEST net.

    python examples/batchnorm/make_nets.py      # writes the prototxts next to this file

The nets read the bundled 8x8 digits (1,437 training and 360 test images) from
data/digits/, relative to the repository root (`decaffe prepare_digits` builds them).
"""

from __future__ import annotations

import os

import caffe
from caffe import layers as L
from caffe import params as P

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "data/digits"  # relative to the repository root, where the example runs
TRAIN_BATCH = 64
TEST_BATCH = 120  # 3 batches cover the 360 test images exactly
# Caffe's default 0.999 averages the statistics over ~1000 iterations, longer than these
# runs: the global statistics would lag far behind the weights. 0.9 follows the last ~10.
MOVING_AVERAGE = 0.9


def _block(n, name: str, bottom, num_output: int, bn: bool):
    """conv -> [BatchNorm -> Scale] -> ReLU, in place after the convolution."""
    conv = L.Convolution(bottom, num_output=num_output, kernel_size=3, pad=1,
                         bias_term=not bn, weight_filler=dict(type="msra"),
                         bias_filler=dict(type="constant"))
    setattr(n, name, conv)
    top = conv
    if bn:
        # lr_mult 0 keeps the solver off the statistics (no weight decay on them)
        setattr(n, f"{name}_bn", L.BatchNorm(top, moving_average_fraction=MOVING_AVERAGE,
                                             param=[dict(lr_mult=0, decay_mult=0)] * 3,
                                             in_place=True))
        setattr(n, f"{name}_scale", L.Scale(top, bias_term=True, in_place=True))
    setattr(n, f"{name}_relu", L.ReLU(top, in_place=True))
    return top


def cnn(bn: bool, source: str | None, batch_size: int, deploy: bool = False,
        test_global_stats: bool | None = None):
    """The CNN as a NetSpec. source: the LMDB the Data layer reads (None for deploy, which
    gets an Input blob 'data' of batch_size images); test_global_stats, when given, is
    written as every BatchNorm's use_global_stats (for the train/test statistics demo)."""
    n = caffe.NetSpec()
    if deploy:
        n.data = L.Input(shape=dict(dim=[batch_size, 1, 8, 8]))
    else:
        n.data, n.label = L.Data(source=source, backend=P.Data.LMDB, batch_size=batch_size,
                                 transform_param=dict(scale=1.0 / 255), ntop=2)
    top = _block(n, "conv1", n.data, 16, bn)
    top = _block(n, "conv2", top, 32, bn)
    n.pool1 = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)  # 8x8 -> 4x4
    top = _block(n, "conv3", n.pool1, 64, bn)
    n.pool2 = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)  # 4x4 -> 2x2
    n.ip = L.InnerProduct(n.pool2, num_output=10,
                          weight_filler=dict(type="msra"),
                          bias_filler=dict(type="constant"))
    if test_global_stats is not None:
        for name in n.keys():
            if name.endswith("_bn"):
                n[name].fn.params["use_global_stats"] = test_global_stats
    if deploy:
        n.prob = L.Softmax(n.ip)
    else:
        n.loss = L.SoftmaxWithLoss(n.ip, n.label)
        if source is not None and "test" in source:
            n.accuracy = L.Accuracy(n.ip, n.label)
    return n


def write_nets(out_dir: str = HERE) -> dict[str, str]:
    """Write every prototxt the example uses; returns {name: path}."""
    nets = {
        "plain_train": cnn(False, f"{DATA}/digits_train_lmdb", TRAIN_BATCH),
        "plain_test": cnn(False, f"{DATA}/digits_test_lmdb", TEST_BATCH),
        "bn_train": cnn(True, f"{DATA}/digits_train_lmdb", TRAIN_BATCH),
        "bn_test": cnn(True, f"{DATA}/digits_test_lmdb", TEST_BATCH),
        "bn_deploy": cnn(True, None, 1, deploy=True),
    }
    paths = {}
    for name, spec in nets.items():
        path = os.path.join(out_dir, f"cnn_{name}.prototxt")
        proto = spec.to_proto()
        proto.name = f"digits_cnn_{name}"
        with open(path, "w") as f:
            f.write(str(proto))
        paths[name] = path
    return paths


if __name__ == "__main__":
    for path in write_nets().values():
        print(path)

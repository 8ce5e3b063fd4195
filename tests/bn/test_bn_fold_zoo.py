"""fold_bn on real deploy nets (ResNet-50/101/152, MobileNet v1/v2) with random weights and
random statistics: every BatchNorm and Scale folded, every output and every blob both nets
keep within 1e-4 relative of the unfolded net."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bn_helpers import randomize, types
from conftest import MODELS

import decaffe
from decaffe.bn import compare, fold

ZOO = [
    ("zoo/KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt", 53),
    ("zoo/KaimingHe__deep-residual-networks/prototxt/ResNet-101-deploy.prototxt", 104),
    ("zoo/KaimingHe__deep-residual-networks/prototxt/ResNet-152-deploy.prototxt", 155),
    ("zoo/shicai__MobileNet-Caffe/mobilenet_deploy.prototxt", 27),
    ("zoo/shicai__MobileNet-Caffe/mobilenet_v2_deploy.prototxt", 53),
]


@pytest.mark.parametrize("path,n_bn", ZOO, ids=[os.path.basename(p) for p, _ in ZOO])
def test_zoo_net_folds_completely_and_matches(path, n_bn):
    net = decaffe.Net(os.path.join(MODELS, path), decaffe.TEST)
    assert types(net).count("BatchNorm") == n_bn
    randomize(net, np.random.default_rng(42))
    folded, res = fold(net, report=True)
    assert len(res.folded) == n_bn and res.kept == []
    assert "BatchNorm" not in types(folded) and "Scale" not in types(folded)
    assert len(folded.layers) == len(net.layers) - sum(len(c.layers) for c in res.folded)
    diffs = compare(net, folded, seed=7, blobs="all")
    assert set(net.outputs) <= set(diffs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 1e-4, (worst, diffs[worst])

"""Every `layer` case in the goldens replays through decaffe within Caffe's tolerances, on the
CPU and, where PyTorch sees a CUDA device, on the GPU (set_mode_gpu)."""

import pytest
import torch
from golden_replay import cases, replay_layer_case

import caffe

LAYER_CASES = cases("layer")


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c["name"] for c in LAYER_CASES])
def test_layer_golden(case):
    replay_layer_case(caffe, case["name"], case["phase"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", LAYER_CASES, ids=[c["name"] for c in LAYER_CASES])
def test_layer_golden_on_gpu(case):
    caffe.set_mode_gpu()
    try:
        replay_layer_case(caffe, case["name"], case["phase"])
    finally:
        caffe.set_mode_cpu()

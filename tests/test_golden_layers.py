"""Every `layer` case in the goldens replays through decaffe within Caffe's tolerances."""

import pytest
from golden_replay import cases, replay_layer_case

import caffe

LAYER_CASES = cases("layer")


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c["name"] for c in LAYER_CASES])
def test_layer_golden(case):
    replay_layer_case(caffe, case["name"], case["phase"])

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


def _module(relpath: str):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), relpath)
    spec = importlib.util.spec_from_file_location("_golden_cover_" + relpath.replace("/", "_"),
                                                  path)
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, os.path.dirname(path))  # its helpers, as pytest's rootdir import gives
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(os.path.dirname(path))
    return mod


def test_every_fork_case_is_replayed_by_its_family():
    """Each `fork_*` golden case is replayed by one fork family's tests (misc, SSD, R-CNN,
    AnnotatedData): none is left out."""
    from golden_replay import cases

    replayed = {c["name"] for c in _module("layers/test_fork_misc.py").GOLDEN}
    replayed |= {c["name"] for c in _module("layers/test_fork_ssd.py").SSD_CASES}
    replayed |= {c["name"] for c in _module("data/test_annotated_data.py").CASES}
    rcnn = _module("layers/test_fork_detection_rcnn.py")
    for fn in (rcnn.test_smooth_l1_golden, rcnn.test_proposal_golden):
        for mark in getattr(fn, "pytestmark", []):
            if mark.name == "parametrize":
                replayed |= set(mark.args[1])
    wanted = {c["name"] for kind in ("layer", "data") for c in cases(kind, fork=True)}
    assert wanted - replayed == set()

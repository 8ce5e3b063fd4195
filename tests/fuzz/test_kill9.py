"""kill -9 during `decaffe train` with a snapshot every iteration: whatever is left loads,
resume works, and the next run leaves no temporary file. Two rounds by default; 20 with
DECAFFE_SLOW=1 (or `python tests/fuzz/killtrain.py --rounds 20`)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import killtrain  # noqa: E402


def test_kill9_sample(tmp_path):
    results = killtrain.run(str(tmp_path), rounds=2, seed=11)
    assert len(results) == 2


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DECAFFE_SLOW") != "1", reason="20 rounds: DECAFFE_SLOW=1")
def test_kill9_twenty_rounds(tmp_path):
    results = killtrain.run(str(tmp_path), rounds=20, seed=5)
    assert len(results) == 20

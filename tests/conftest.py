"""Test configuration: tests import helpers from this folder and read goldens from tests/golden."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
MODELS = os.path.join(HERE, "models")
sys.path.insert(0, HERE)


@pytest.fixture(autouse=True)
def _cpu_mode_and_seed():
    """Every test starts in CPU mode with a fixed seed."""
    import decaffe

    decaffe.set_mode_cpu()
    decaffe.set_random_seed(1701)
    yield
    decaffe.set_mode_cpu()

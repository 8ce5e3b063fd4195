"""Test configuration: tests import helpers from this folder and read goldens from tests/golden."""

import os
import sys

import pytest
import torch

# Tests run tiny tensors, often two pytest workers at once on two cores: one thread each
# avoids the thread pool's contention (a 2x2 max-pool took 12 ms with 2 threads, 5 µs with 1).
torch.set_num_threads(1)
# the same for decaffe's commands run in or from the tests (decaffe.threads reads it)
os.environ.setdefault("DECAFFE_THREADS", "1")

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


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The digits LMDBs (`decaffe prepare_digits`), built once per session in a folder of
    its own (no race with tests that build the repository's copy)."""
    from decaffe.data.digits import ensure_digits

    root = tmp_path_factory.mktemp("digits")
    ensure_digits(str(root))
    return str(root)

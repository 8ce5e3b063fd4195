"""Thread counts: the default follows the free cores (never PyTorch's all-cores on a busy
machine); -threads / DECAFFE_THREADS / OMP_NUM_THREADS fix it."""

from __future__ import annotations

import pytest
import torch

from decaffe import threads


@pytest.fixture(autouse=True)
def _restore(monkeypatch):
    before = torch.get_num_threads()
    for name in ("DECAFFE_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)
    threads._state.update(fixed=None, decode=None, applied=None)


def test_idle_machine_uses_every_core():
    assert threads.choose(cores=2, load=0.1, workers=1) == 2
    assert threads.choose(cores=16, load=0.0, workers=1) == 16


def test_busy_machine_uses_one_thread():
    """Ten runnable processes on two cores: one thread, not PyTorch's two."""
    assert threads.choose(cores=2, load=10.0, workers=1) == 1
    assert threads.choose(cores=8, load=5.0, workers=1) == 3


def test_own_load_is_not_counted_as_others():
    # this process kept two cores busy: the load average of 2.2 is mostly its own
    assert threads.choose(own_share=2.0, cores=2, load=2.2, workers=1) == 2


def test_workers_on_one_host_share_the_cores():
    assert threads.choose(cores=8, load=0.0, workers=2) == 4
    assert threads.choose(cores=2, load=0.0, workers=2) == 1


def test_threads_flag_fixes_the_count_and_the_retuner_leaves_it():
    assert threads.configure(3) == 3
    assert torch.get_num_threads() == 3
    r = threads.Retuner(period=0.0)
    r.poll()
    assert torch.get_num_threads() == 3
    assert threads.decode_workers(4) == 3


def test_environment_fixes_the_count(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.configure(0) == 1
    monkeypatch.setenv("DECAFFE_THREADS", "2")
    assert threads.configure(0) == 2


def test_retuner_follows_the_load(monkeypatch):
    threads.configure(0)
    monkeypatch.setattr(threads, "load_average", lambda: 50.0)
    r = threads.Retuner(period=0.0)
    r.poll()
    assert torch.get_num_threads() == 1


def test_available_cores_is_positive():
    assert threads.available_cores() >= 1

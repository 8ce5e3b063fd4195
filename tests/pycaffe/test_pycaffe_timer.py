"""caffe.Timer: start/stop intervals as Caffe's Timer measures them."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from decaffe.pycaffe.timer import Timer


def test_interval_is_measured():
    t = Timer()
    assert not t.running and not t.has_run_at_least_once
    t.start()
    assert t.running and t.has_run_at_least_once
    time.sleep(0.03)
    t.stop()
    assert not t.running
    ms = t.ms
    assert 25.0 <= ms < 2000.0
    assert t.milliseconds() == ms  # reading does not change it
    assert t.seconds() == pytest.approx(ms / 1000.0)
    assert t.microseconds() == pytest.approx(ms * 1000.0)
    assert t.MilliSeconds() == ms and t.Seconds() == pytest.approx(ms / 1000)


def test_restart_measures_a_new_interval():
    t = Timer()
    t.start()
    time.sleep(0.05)
    t.stop()
    first = t.ms
    t.start()
    t.stop()
    assert t.ms < first  # not accumulated: the second interval is nearly empty


def test_start_while_running_and_stop_while_stopped_are_ignored():
    t = Timer()
    t.start()
    time.sleep(0.02)
    t.start()  # ignored: the interval still begins at the first start
    t.stop()
    ms = t.ms
    assert ms >= 15.0
    time.sleep(0.02)
    t.stop()  # ignored: the interval is unchanged
    assert t.ms == ms


def test_reading_a_running_timer_stops_it():
    t = Timer()
    t.start()
    time.sleep(0.01)
    ms = t.ms
    assert not t.running and ms >= 5.0
    time.sleep(0.02)
    assert t.ms == ms


def test_never_started_reads_zero_with_a_warning(caplog):
    t = Timer()
    with caplog.at_level(logging.WARNING, logger="decaffe"):
        assert t.ms == 0.0
    assert "never been run" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_mode_uses_cuda_events():
    from decaffe import mode

    mode.set_mode_gpu()
    try:
        t = Timer()
        x = torch.randn(2048, 2048, device="cuda")
        t.start()
        for _ in range(10):
            x = x @ x
            x = x / x.norm()
        t.stop()
        assert t._gpu and t.ms > 0.0
    finally:
        mode.set_mode_cpu()

"""glog-format logging (decaffe.log) and the training progress bar."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest
from solver_testlib import GLOG_LINE

from decaffe import log


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stream():
    s = io.StringIO()
    log.set_stream(s)
    log.set_min_level(0)
    yield s
    log.set_stream(None)
    log.set_min_level(None)


def test_line_format(stream):
    log.info("Iteration 100, loss = 0.3")
    line = stream.getvalue()
    assert GLOG_LINE.match(line)
    m = re.match(r"^I(\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6}) +(\d+) (\S+):(\d+)\] (.*)\n$",
                 line)
    assert m and m.group(8) == "test_solver_log.py" and m.group(10) == "Iteration 100, loss = 0.3"
    t = time.localtime()
    assert (int(m.group(1)), int(m.group(2))) == (t.tm_mon, t.tm_mday)
    # what Caffe's extract_seconds.py takes from a line
    fields = line.split()
    assert fields[0][0] == "I" and len(fields[0]) == 5 and fields[1].count(":") == 2


def test_severities_levels_and_multiline(stream, monkeypatch):
    log.warning("careful\nsecond line")
    log.error("bad")
    lines = stream.getvalue().splitlines()
    assert [ln[0] for ln in lines] == ["W", "W", "E"]
    assert lines[1].endswith("] second line")
    log.set_min_level(None)
    monkeypatch.setenv("GLOG_minloglevel", "2")
    log.info("hidden")
    log.warning("hidden too")
    log.error("shown")
    assert stream.getvalue().count("\n") == 4


def test_pycaffe_init_log_and_log(stream):
    log.init_log(1)
    log.log("not shown at level 1")
    log.init_log(0)
    log.log("shown")
    assert "not shown" not in stream.getvalue() and "] shown" in stream.getvalue()


def test_numbers_print_as_cpp_does():
    assert [log.fmt(v) for v in (0.3, 1e-5, 2.302585093, 100000.0, 1e6, 0.0, float("inf"),
                                 float("nan"), -float("nan"))] == [
        "0.3", "1e-05", "2.30259", "100000", "1e+06", "0", "inf", "nan", "-nan"]


def test_sinks_and_python_logging(stream):
    sink = io.StringIO()
    log.add_sink(sink)
    handler = log.install_python_logging()
    try:
        log.info("to both")
        logging.getLogger("decaffe.something").warning("from logging")
    finally:
        log.uninstall_python_logging(handler)
        log.remove_sink(sink)
    assert sink.getvalue() == stream.getvalue()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(GLOG_LINE.match(ln) for ln in lines)
    assert lines[1].startswith("W") and lines[1].endswith("] from logging")


def test_progress_bar_only_on_a_terminal():
    plain = io.StringIO()
    bar = log.ProgressBar(100, stream=plain)
    bar.update(5, 0.5, 0.01)
    bar.close()
    assert not bar.enabled and plain.getvalue() == ""


def test_progress_bar_line_and_log_interleaving(stream):
    tty = _Tty()
    log.set_stream(tty)
    bar = log.ProgressBar(200, start=0, images_per_iter=64, stream=tty, interval=0.0)
    try:
        bar._t0 -= 10.0  # ten seconds in
        bar.update(50, 0.25, 0.001)
        text = bar.line()
        assert "iter 50/200" in text and "25%" in text and "loss 0.25" in text
        assert "lr 0.001" in text and "320.0 img/s" in text and "left 00:30" in text
        log.info("Iteration 50, loss = 0.25")
    finally:
        bar.close()
    out = tty.getvalue()
    # the bar is cleared before the log line and drawn again after it
    before, after = out.split("Iteration 50, loss = 0.25\n")
    drawn, prefix = before.rsplit("\r\x1b[K", 1)
    assert "iter 50/200" in drawn and GLOG_LINE.match(prefix + "x")
    assert after.startswith("[") and "iter 50/200" in after
    assert out.endswith("\r\x1b[K")

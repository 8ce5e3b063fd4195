"""Logging in Caffe's (glog's) line format, so tools written for Caffe logs read ours.

Every line looks like glog's::

    I1126 13:34:11.123456 12345 solver.py:228] Iteration 100, loss = 0.3

severity letter (I, W, E, F), month and day, wall-clock time with microseconds, thread id
(right-aligned in 5 columns), the calling file and line, then the message. Lines go to
stderr, as the `caffe` tool sends them (it sets glog's alsologtostderr), and to any extra
sinks added with `add_sink`. The minimum severity printed comes from GLOG_minloglevel
(0 INFO, 1 WARNING, 2 ERROR, 3 FATAL), as it does for Caffe, or from `set_min_level`.

pycaffe's ``caffe.init_log([level[, use_stderr]])`` and ``caffe.log(message)`` are
`init_log` and `log` here.

A `ProgressBar` draws a one-line status (iteration, loss, learning rate, images/s, time
left) below the log on a terminal; log lines clear it and it is redrawn after them, so a
piped or redirected log never contains it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

INFO, WARNING, ERROR, FATAL = 0, 1, 2, 3
_LETTERS = "IWEF"

_lock = threading.RLock()
_state: dict = {
    "min_level": None,  # None: read GLOG_minloglevel at each call
    "stream": None,  # None: sys.stderr at each call (so pytest's capture sees it)
    "sinks": [],
    "bar": None,  # the ProgressBar on screen, if any
}


def _env_level() -> int:
    try:
        return int(os.environ.get("GLOG_minloglevel", "0"))
    except ValueError:
        return 0


def min_level() -> int:
    """The lowest severity that is printed."""
    lvl = _state["min_level"]
    return _env_level() if lvl is None else lvl


def set_min_level(level: int | None) -> None:
    """Print only messages of this severity or worse; None goes back to GLOG_minloglevel."""
    _state["min_level"] = None if level is None else int(level)


def set_stream(stream: IO[str] | None) -> None:
    """Send log lines to this text stream instead of stderr (None: stderr again)."""
    _state["stream"] = stream


def add_sink(sink: IO[str]) -> None:
    """Also write every printed line to this text stream (a log file, say)."""
    with _lock:
        _state["sinks"].append(sink)


def remove_sink(sink: IO[str]) -> None:
    with _lock:
        if sink in _state["sinks"]:
            _state["sinks"].remove(sink)


def init_log(level: int | None = None, use_stderr: bool | None = None) -> None:
    """pycaffe's caffe.init_log: set the minimum level printed (lines always go to stderr)."""
    if level is not None:
        set_min_level(level)


def format_prefix(severity: int, filename: str, line: int, when: float | None = None) -> str:
    """glog's line prefix: 'I1126 13:34:11.123456 12345 file.py:12] '."""
    when = time.time() if when is None else when
    t = datetime.datetime.fromtimestamp(when)
    tid = threading.get_native_id()
    return (f"{_LETTERS[severity]}{t.month:02d}{t.day:02d} {t.hour:02d}:{t.minute:02d}:"
            f"{t.second:02d}.{t.microsecond:06d} {tid:5d} {filename}:{line}] ")


def _caller(depth: int) -> tuple[str, int]:
    try:
        f = sys._getframe(depth + 1)
    except ValueError:
        return "?", 0
    return os.path.basename(f.f_code.co_filename), f.f_lineno


def _write(text: str) -> None:
    """Write already formatted lines to the stream and sinks, around the progress bar."""
    with _lock:
        stream = _state["stream"] or sys.stderr
        bar = _state["bar"]
        if bar is not None and bar.stream is stream:
            bar._clear()
        stream.write(text)
        stream.flush()
        for sink in _state["sinks"]:
            sink.write(text)
            sink.flush()
        if bar is not None and bar.stream is stream:
            bar._draw()


def _emit(severity: int, message: str, depth: int) -> None:
    if severity < min_level():
        return
    filename, line = _caller(depth + 1)
    prefix = format_prefix(severity, filename, line)
    _write("".join(prefix + part + "\n" for part in str(message).split("\n")))


def info(message: str, depth: int = 0) -> None:
    """LOG(INFO) << message (depth: how many callers up the reported file:line is)."""
    _emit(INFO, message, depth + 1)


def warning(message: str, depth: int = 0) -> None:
    _emit(WARNING, message, depth + 1)


def error(message: str, depth: int = 0) -> None:
    _emit(ERROR, message, depth + 1)


def log(message: str) -> None:
    """pycaffe's caffe.log: one INFO line."""
    _emit(INFO, message, 1)


def fmt(value: float) -> str:
    """A number as C++'s ostream prints a float by default (printf's %g, 6 digits)."""
    value = float(value)
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return f"{value:g}"


# ----------------------------------------------------------------------------------------------
# Progress bar
# ----------------------------------------------------------------------------------------------
def _hms(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """A status line at the bottom of a terminal: iteration, loss, lr, images/s, time left.

    Drawn only when the stream is a terminal (never into files or pipes), redrawn at most
    every `interval` seconds, cleared around each log line so the two never mix.
    """

    def __init__(self, total: int, start: int = 0, images_per_iter: int = 0,
                 stream: IO[str] | None = None, interval: float = 0.2,
                 enabled: bool | None = None) -> None:
        self.stream = stream or _state["stream"] or sys.stderr
        if enabled is None:
            enabled = _isatty(self.stream) and os.environ.get("DECAFFE_PROGRESS", "1") != "0"
        self.enabled = enabled
        self.total, self.start_iter = int(total), int(start)
        self.images_per_iter = int(images_per_iter)
        self.interval = interval
        self.iter, self.loss, self.lr = start, float("nan"), float("nan")
        self._loss_known = self._lr_known = False  # shown once an iteration reports them
        self._t0 = time.monotonic()
        self._last_draw = 0.0
        self._text = ""
        if self.enabled:
            with _lock:
                _state["bar"] = self

    def update(self, iteration: int, loss: float | None = None, lr: float | None = None) -> None:
        """Record progress; redraws when the last draw is older than the interval."""
        self.iter = iteration
        if loss is not None:
            self.loss, self._loss_known = loss, True
        if lr is not None:
            self.lr, self._lr_known = lr, True
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            with _lock:
                self._clear()
                self._draw()

    def line(self) -> str:
        """The status text for the current state."""
        done = self.iter - self.start_iter
        elapsed = time.monotonic() - self._t0
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        left = (self.total - self.iter) / rate if rate == rate and rate > 0 else float("nan")
        parts = [f"iter {self.iter}/{self.total}"]
        if self.total > 0:
            frac = min(max(self.iter / self.total, 0.0), 1.0)
            width = 20
            filled = int(frac * width)
            parts.insert(0, "[" + "#" * filled + "." * (width - filled) + f"] {frac * 100:3.0f}%")
        # what is not known yet is left out (a first frame shows no 'nan'); a loss that
        # became NaN while training is shown as such
        if self._loss_known:
            parts.append(f"loss {fmt(self.loss)}")
        if self._lr_known:
            parts.append(f"lr {fmt(self.lr)}")
        if self.images_per_iter and rate == rate:
            parts.append(f"{rate * self.images_per_iter:.1f} img/s")
        elif rate == rate:
            parts.append(f"{rate:.2f} it/s")
        if left == left:
            parts.append(f"left {_hms(left)}")
        return "  ".join(parts)

    def _clear(self) -> None:
        if self.enabled and self._text:
            self.stream.write("\r\x1b[K")
            self._text = ""

    def _draw(self) -> None:
        if self.enabled:
            self._text = self.line()
            self.stream.write(self._text)
            self.stream.flush()

    def close(self) -> None:
        """Remove the bar from the screen."""
        with _lock:
            self._clear()
            if self.enabled:
                self.stream.flush()
            if _state["bar"] is self:
                _state["bar"] = None
        self.enabled = False


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# Python's logging, in glog's format
# ----------------------------------------------------------------------------------------------
class GlogHandler(logging.Handler):
    """A logging.Handler writing records as glog lines through this module (so modules that
    use Python's logging, and warnings, do not break a Caffe-format log)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.ERROR:
                severity = ERROR
            elif record.levelno >= logging.WARNING:
                severity = WARNING
            else:
                severity = INFO
            if severity < min_level():
                return
            prefix = format_prefix(severity, os.path.basename(record.pathname or "?"),
                                   record.lineno or 0, record.created)
            msg = self.format(record).rstrip("\n")
            _write("".join(prefix + part + "\n" for part in msg.split("\n")))
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def install_python_logging(level: int = logging.INFO) -> GlogHandler:
    """Route the 'decaffe' logger and Python warnings through glog-format lines; returns the
    handler (remove it with uninstall_python_logging)."""
    handler = GlogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("decaffe", "py.warnings"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > level:
            lg.setLevel(level)
        lg.propagate = False
    logging.captureWarnings(True)
    return handler


@contextlib.contextmanager
def python_logging(level: int = logging.INFO) -> Iterator[None]:
    """Python logging routed through glog-format lines for the duration of a command."""
    handler = install_python_logging(level)
    try:
        yield handler
    finally:
        uninstall_python_logging(handler)


def uninstall_python_logging(handler: GlogHandler) -> None:
    for name in ("decaffe", "py.warnings"):
        lg = logging.getLogger(name)
        lg.removeHandler(handler)
        lg.propagate = True
    logging.captureWarnings(False)

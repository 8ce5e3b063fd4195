"""Run folders: a training run recorded as it happens, for the dashboard, for TensorBoard,
and for anyone who reads JSON (format: docs/runs.md).

A run folder (by default PREFIX.run beside the snapshots PREFIX_iter_N.*) holds
``meta.json`` (what ran, where, when), ``solver.prototxt``, ``train_net.prototxt``,
``net.json`` (the layers, for drawing) and ``events.jsonl``: one JSON object per line,
appended and written whole, of kinds train, test, snapshot, bn, params and end.

This package sits beside the engine: it imports the engine's modules (log, proto, net,
formats) and nothing above them; the solver knows it only as an observer
(Solver.add_observer). `decaffe train` records every run unless `-record false`;
pycaffe code asks with ``solver.record_run(path)`` or ``get_solver(path, record=True)``.
"""

from __future__ import annotations

from .events import EventRead, EventWriter, encode, read_events
from .recorder import (
    END_REASONS,
    FORMAT,
    VERSION,
    RunError,
    RunRecorder,
    default_run_dir,
    net_graph,
    resume_command,
)
from .sample import Sampler

__all__ = ["RunRecorder", "RunError", "EventWriter", "EventRead", "read_events", "encode",
           "default_run_dir", "resume_command", "net_graph", "Sampler", "FORMAT", "VERSION",
           "END_REASONS"]

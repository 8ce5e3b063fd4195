"""Caffe's solvers: the six update rules, the learning-rate policies, the training loop,
snapshots and restore.

``get_solver(path)`` builds the solver its ``type`` names (SGD, Nesterov, AdaGrad, RMSProp,
AdaDelta, Adam; the legacy ``solver_type`` enum is upgraded); the classes build one rule
whatever the file's type says, as pycaffe's ``caffe.SGDSolver(path)`` does.
"""

from __future__ import annotations

import os

from ..errors import SolverError, suggest
from . import updates
from .base import (
    NONE,
    SNAPSHOT,
    STOP,
    TERMINATE,
    NonFiniteLossError,
    Solver,
    SolverObserver,
    SolverSource,
    read_solver_param,
)

__all__ = ["Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "get_solver", "solver_class", "SOLVERS",
           "NonFiniteLossError", "NONE", "STOP", "SNAPSHOT", "TERMINATE", "SolverObserver"]


class SGDSolver(Solver):
    """Stochastic gradient descent with momentum: h = momentum·h + local_rate·g; w −= h."""

    rule_class = updates.UpdateRule


class NesterovSolver(Solver):
    """Nesterov's accelerated gradient, Caffe's form: w −= (1+momentum)·h_new − momentum·h_old."""

    rule_class = updates.NesterovRule


class AdaGradSolver(Solver):
    """AdaGrad: h += g²; w −= local_rate·g / (√h + delta). Momentum must be 0."""

    rule_class = updates.AdaGradRule


class RMSPropSolver(Solver):
    """RMSProp: h = rms_decay·h + (1−rms_decay)·g²; w −= local_rate·g / (√h + delta)."""

    rule_class = updates.RMSPropRule


class AdaDeltaSolver(Solver):
    """AdaDelta: running averages of g² and of the update², momentum their decay."""

    rule_class = updates.AdaDeltaRule


class AdamSolver(Solver):
    """Adam with Caffe's bias-corrected rate: local_rate·√(1−β2^t)/(1−β1^t)."""

    rule_class = updates.AdamRule


SOLVERS: dict[str, type[Solver]] = {
    "SGD": SGDSolver, "Nesterov": NesterovSolver, "AdaGrad": AdaGradSolver,
    "RMSProp": RMSPropSolver, "AdaDelta": AdaDeltaSolver, "Adam": AdamSolver,
}


def solver_class(type_name: str) -> type[Solver]:
    """The class for a solver type string, or a SolverError naming the `type` field."""
    try:
        return SOLVERS[type_name]
    except KeyError:
        known = ", ".join(sorted(SOLVERS))
        raise SolverError(f"type: unknown solver type '{type_name}'{suggest(type_name, SOLVERS)}"
                          f" (known types: {known})") from None


def get_solver(source: SolverSource, *, record: bool | str = False) -> Solver:
    """The solver a prototxt (path or text) or SolverParameter describes (pycaffe's
    caffe.get_solver). Beyond pycaffe: ``record=True`` records the training as a run folder
    beside the snapshots (snapshot_prefix + '.run'), ``record="DIR"`` in DIR (see
    Solver.record_run and decaffe.runs)."""
    param, path = read_solver_param(source)
    solver = solver_class(param.type)(param)
    solver.solver_file = path
    if record:
        solver.record_run(None if record is True else os.fspath(record))
    return solver

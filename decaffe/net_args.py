"""The argument forms of ``Net(...)``: pycaffe's (python/caffe/_caffe.cpp, BVLC master), which
decaffe's Net takes too: ``Net(network_file, phase, level=0, stages=None, weights=None)`` and
the legacy ``Net(network_file, weights, phase)``."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from . import log
from .errors import DecaffeError

_PATHS = (str, bytes, os.PathLike)
# (phase, weights, level, stages), each None where not given
NetArgs = tuple[int | None, str | None, int | None, list[str] | None]


def _is_phase(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def net_init_args(args: tuple, phase: int | None = None,
                  weights: str | bytes | os.PathLike[str] | None = None,
                  level: int | None = None, stages: Sequence[str] | None = None) -> NetArgs:
    """(phase, weights, level, stages) from the arguments after the network, in pycaffe's
    forms (python/caffe/_caffe.cpp, BVLC master):

    - ``Net(network_file, phase, level=0, stages=None, weights=None)`` (the positional order
      is network_file, phase, level, stages, weights);
    - ``Net(network_file, weights, phase)``, the legacy form; ``weights`` may be None (no
      weights), as scripts and Classifier pass it.

    Raises DecaffeError naming the argument for anything else (a phase that is not
    caffe.TRAIN/caffe.TEST, weights that are not a path, stages that are not a list of names,
    an argument given twice, too many arguments)."""
    args = list(args)
    given = {"phase": phase, "weights": weights, "level": level, "stages": stages}
    if args and not _is_phase(args[0]) and (args[0] is None or isinstance(args[0], _PATHS)):
        # the legacy (network_file, weights, phase)
        if len(args) > 2:
            raise DecaffeError(f"Net(network_file, weights, phase): {len(args) + 1} positional "
                               "arguments given, at most 3")
        names = ["weights", "phase"]
    else:
        if len(args) > 4:
            raise DecaffeError(f"Net(network_file, phase, level, stages, weights): "
                               f"{len(args) + 1} positional arguments given, at most 5")
        names = ["phase", "level", "stages", "weights"]
    for name, value in zip(names, args):
        if given[name] is not None:
            raise DecaffeError(f"Net(): '{name}' given both by position and by keyword")
        given[name] = value
    if names[0] == "weights" and args[0] is not None:
        # pycaffe's Net_Init_Load logs the same deprecation
        log.warning("DEPRECATION WARNING - deprecated use of Python interface: use "
                    "Net(network_file, phase, weights=...) instead")
    phase, weights, level, stages = (given[k] for k in ("phase", "weights", "level", "stages"))
    if phase is not None and not (_is_phase(phase) and int(phase) in (0, 1)):
        raise DecaffeError(f"Net(): phase must be caffe.TRAIN (0) or caffe.TEST (1), not "
                           f"{phase!r}")
    if weights is not None:
        if not isinstance(weights, _PATHS):
            raise DecaffeError(f"Net(): weights must be the path of a .caffemodel or "
                               f".caffemodel.h5 file (or None), not {type(weights).__name__}")
        weights = os.fsdecode(weights)
        if not os.path.isfile(weights):
            raise DecaffeError(f"Net(): Could not open file {weights} (the weights)")
    if level is not None:
        if not isinstance(level, (int, np.integer)) or isinstance(level, bool):
            raise DecaffeError(f"Net(): level must be an integer, not {level!r}")
        level = int(level)
    if stages is not None:
        if isinstance(stages, (str, bytes)) or not all(isinstance(s, str) for s in stages):
            raise DecaffeError(f"Net(): stages must be a list of stage names, not {stages!r}")
        stages = list(stages)
    return None if phase is None else int(phase), weights, level, stages

"""`decaffe train -snapshot auto`: resume from the newest complete snapshot, or start fresh.

Snapshots are PREFIX_iter_N.solverstate (or .solverstate.h5) beside PREFIX_iter_N.caffemodel
(.h5). Each file is written under a temporary name and renamed into place, the state after
the weights, so a state file whose weights file exists and which reads back whole is a
complete snapshot; a snapshot cut short by a kill is skipped. With several workers, rank 0
chooses and every worker restores the same file (rank 0's state is then broadcast, so the
other hosts need not see the files), which lets `torchrun --max_restarts N` carry on from
where a lost worker left the run.
"""

from __future__ import annotations

import glob
import os
import re

from .. import log
from ..errors import DecaffeError
from ..solvers import snapshot as snap


def snapshot_candidates(prefix: str) -> list[tuple[int, str]]:
    """(iteration, state file) for every PREFIX_iter_N.solverstate[.h5], newest first."""
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"_iter_(\d+)\.solverstate(\.h5)?$")
    found = []
    for path in glob.glob(glob.escape(prefix) + "_iter_*.solverstate*"):
        m = pattern.match(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    found.sort(key=lambda t: (t[0], t[1].endswith(".h5")), reverse=True)
    return found


def newest_complete_snapshot(prefix: str) -> str | None:
    """The state file of the newest snapshot whose state reads back and whose weights file
    exists, or None."""
    for iteration, path in snapshot_candidates(prefix):
        try:
            state = snap.read_state(path)
            if state.learned_net:
                snap.resolve_learned_net(state.learned_net, path)
        except (DecaffeError, OSError) as e:
            log.warning(f"-snapshot auto: skipping {path}: {e}")
            continue
        if int(state.iter) != iteration:
            log.warning(f"-snapshot auto: skipping {path}: it holds iteration {state.iter}")
            continue
        return path
    return None

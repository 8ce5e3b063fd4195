"""`decaffe dashboard`: a live web page over training runs (run folders and Caffe logs).

The page shows loss, each training output and test score and the learning rate against
iteration and time, ETA and images/s, BatchNorm's statistics per layer and channel,
per-layer parameter and gradient norms, the net as a graph and the snapshots with the
commands that resume from them, for one run or several on one chart. It is pushed live over
server-sent events while the runs grow.

The package never imports torch (the page starts in a fraction of a second and runs from a
wheel without it); it needs the `dashboard` extra (Starlette and uvicorn). `require()` names
the extra when they are missing. `sources` reads runs, `app` is the ASGI application,
`server` binds and serves it (in this thread or beside training). docs/dashboard.md
describes the run folder and the page.
"""

from __future__ import annotations

import importlib.util

from ..errors import DecaffeError

EXTRA_HINT = "pip install 'decaffe[dashboard]'"


class MissingExtraError(DecaffeError):
    """The dashboard's dependencies (Starlette, uvicorn) are not installed."""


def require() -> None:
    """Raise MissingExtraError naming the `dashboard` extra when Starlette or uvicorn is
    missing."""
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"the dashboard needs {' and '.join(missing)}, which are not "
                                f"installed: {EXTRA_HINT}")

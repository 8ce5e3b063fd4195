"""Atomic file writes: write to a temporary file beside the target, then rename over it,
so a crash or a full disk never leaves a truncated file where a good one was."""

from __future__ import annotations

import contextlib
import os
import tempfile


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (0666 less the umask), which mkstemp's
    private 0600 would otherwise replace."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """Open a temporary file in path's folder; on success it replaces path, else it is removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_path(path: str):
    """A context giving a temporary path in path's folder, renamed onto path on success
    (for libraries such as h5py and lmdb that open files themselves)."""
    return _AtomicPath(os.fspath(path))


class _AtomicPath:
    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> str:
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".",
                                        suffix=".tmp", dir=folder)
        os.close(fd)
        os.chmod(self.tmp, _umask_mode())
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
        return False

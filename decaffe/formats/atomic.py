"""Atomic writes: write to a temporary file beside the target, then rename over it,
so a crash or a full disk never leaves a truncated file where a good one was.

The temporary is ``.<target name>.<8 random characters>.tmp`` in the target's folder
(:func:`temporary_pattern` matches exactly these); a write that fails removes it, and
:func:`remove_orphans` removes those a killed process left behind. A write that cannot be
made raises :class:`WriteError`, naming the file asked for (never the temporary).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from types import TracebackType
from typing import IO

from ..errors import FormatError


class WriteError(FormatError, OSError):
    """A file that cannot be written; names the path asked for (also an OSError)."""


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (0666 less the umask), which mkstemp's
    private 0600 would otherwise replace."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_error(path: str, e: OSError) -> WriteError:
    folder = os.path.dirname(os.path.abspath(path))
    why = e.strerror or str(e)
    if isinstance(e, FileNotFoundError) and not os.path.isdir(folder):
        why = f"the folder '{folder}' does not exist"
    err = WriteError(f"cannot write '{path}': {why}")
    return err


def _temporary(path: str) -> tuple[int, str]:
    if "\0" in path:
        raise WriteError(f"cannot write {path!r}: the path holds a NUL byte")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        return tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                dir=folder)
    except OSError as e:
        raise _write_error(path, e) from None


def temporary_pattern(name: str) -> re.Pattern:
    """The names atomic writes give their temporaries for a target whose name matches the
    regular expression `name` (a file name, no folder)."""
    return re.compile(r"\." + name + r"\.[A-Za-z0-9_]{8}\.tmp")


def remove_orphans(folder: str, name: str) -> list[str]:
    """Remove the temporaries of atomic writes in folder whose target name matches the
    regular expression `name` (left by a process killed while writing); returns them."""
    pattern = temporary_pattern(name)
    removed = []
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return removed
    for entry in names:
        if pattern.fullmatch(entry):
            full = os.path.join(folder, entry)
            with contextlib.suppress(OSError):
                os.unlink(full)
                removed.append(full)
    return removed


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file in path's folder; on success it replaces path, else it is removed."""
    path = os.fspath(path)
    fd, tmp = _temporary(path)
    os.chmod(tmp, _umask_mode())
    try:
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except WriteError:
            raise
        except OSError as e:
            raise _write_error(path, e) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_path(path: str) -> _AtomicPath:
    """A context giving a temporary path in path's folder, renamed onto path on success
    (for libraries such as h5py and lmdb that open files themselves)."""
    return _AtomicPath(os.fspath(path))


class _AtomicPath:
    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> str:
        fd, self.tmp = _temporary(self.path)
        os.close(fd)
        os.chmod(self.tmp, _umask_mode())
        return self.tmp

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc_type is None:
            try:
                os.replace(self.tmp, self.path)
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.unlink(self.tmp)
                raise _write_error(self.path, e) from None
        else:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
        return False

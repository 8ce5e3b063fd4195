"""Atomic writes: the file appears whole or not at all, with a normal file's permissions."""

import os

import pytest

from decaffe.formats.atomic import atomic_path, atomic_write


def test_atomic_write_replaces_and_keeps_umask_permissions(tmp_path):
    target = tmp_path / "w.caffemodel"
    target.write_bytes(b"old")
    with atomic_write(str(target)) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert os.listdir(tmp_path) == ["w.caffemodel"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "w.caffemodel"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as f:
            f.write(b"partial")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["w.caffemodel"]


def test_atomic_path_for_libraries(tmp_path):
    target = tmp_path / "w.h5"
    with atomic_path(str(target)) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"x")
        assert not target.exists()
    assert target.read_bytes() == b"x"

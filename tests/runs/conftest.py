"""The digits LMDBs the BatchNorm example trains on, built once per session."""

import pytest


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The digits LMDBs (`decaffe prepare_digits`), built once."""
    from decaffe.data.digits import ensure_digits

    root = tmp_path_factory.mktemp("digits")
    ensure_digits(str(root))
    return str(root)

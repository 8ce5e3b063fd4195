"""A Python-layer module that cannot be imported (its own import fails)."""

import decaffe_test_no_such_module  # noqa: F401

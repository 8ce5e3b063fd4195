"""Test modules have unique basenames: the tests folders are not packages, so pytest imports
each module by its basename and two of one name collide."""

import collections
import os

ROOT = os.path.dirname(os.path.abspath(__file__))


def test_test_module_names_are_unique():
    names = collections.Counter(
        f for d, _s, files in os.walk(ROOT) if "golden" not in d and "models" not in d
        for f in files if f.startswith("test_") and f.endswith(".py"))
    assert [n for n, c in names.items() if c > 1] == []

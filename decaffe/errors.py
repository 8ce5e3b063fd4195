"""decaffe's errors: everything a user can cause raises a DecaffeError subclass.

Each error names where the problem is: a file with line and column for text
files, a layer and blob for nets and weights.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DecaffeError(Exception):
    """Base class of every error decaffe raises for bad input."""


class ParseError(DecaffeError):
    """A text file (prototxt) that does not parse; names file:line:column."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 column: int | None = None):
        self.path, self.line, self.column, self.reason = path, line, column, message
        where = path or "<string>"
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class FormatError(DecaffeError):
    """A binary file (caffemodel, binaryproto, solverstate, HDF5) that is corrupt or
    inconsistent."""


class NetError(DecaffeError):
    """A net that cannot be built or run: names the layer (and blob) at fault."""

    def __init__(self, message: str, layer: str | None = None, blob: str | None = None):
        self.layer, self.blob = layer, blob
        prefix = ""
        if layer is not None:
            prefix = f"layer '{layer}'"
            if blob is not None:
                prefix += f", blob '{blob}'"
            prefix += ": "
        elif blob is not None:
            prefix = f"blob '{blob}': "
        super().__init__(prefix + message)


class LayerParamError(NetError):
    """A layer parameter that Caffe would reject; names the layer and the field."""


class SolverError(DecaffeError):
    """A solver definition or state that cannot be used; names the field or file."""


class DataError(DecaffeError):
    """A data source (database, list file, HDF5 file, mean file) that cannot be read."""


def suggest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean X, Y?)' for close matches of word among choices, else ''."""
    choices = list(choices)
    # a match that differs only in case ('ReLu' for 'ReLU') is what the user meant: name it first
    same = [c for c in choices if c.lower() == word.lower() and c != word]
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    close = (same + [c for c in close if c not in same])[:n]
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(c) for c in close) + "?)"

"""gflags-style flags on argparse: every flag answers to -name and --name, with a value
given as `-name value` or `-name=value`; booleans also take -name=true/false and -noname."""

from __future__ import annotations

import argparse


class FlagParser(argparse.ArgumentParser):
    def __init__(self, prog: str, description: str = "", **kw):
        super().__init__(prog=f"decaffe {prog}", description=description,
                         add_help=False, allow_abbrev=False, **kw)
        self.add_argument("-help", "--help", "-h", action="help",
                          help="show this help and exit")

    def flag(self, name: str, **kw):
        """A valued flag: -name / --name."""
        return self.add_argument(f"-{name}", f"--{name}", dest=name, **kw)

    def bool_flag(self, name: str, default: bool = False, help: str = ""):
        """A boolean flag: -name, -name=true|false, -noname."""
        self.add_argument(f"-{name}", f"--{name}", dest=name, nargs="?", const="true",
                          default="true" if default else "false", type=_boolstr, help=help)
        self.add_argument(f"-no{name}", f"--no{name}", dest=name, action="store_const",
                          const=False, help=argparse.SUPPRESS)

    def parse(self, argv: list[str]) -> argparse.Namespace:
        ns = self.parse_args(argv)
        for k, v in vars(ns).items():
            if isinstance(v, str) and v in ("true", "false") and k in self._bools():
                setattr(ns, k, v == "true")
        return ns

    def _bools(self):
        return {a.dest for a in self._actions if a.type is _boolstr}


def _boolstr(v):
    if isinstance(v, bool):
        return v
    s = str(v).lower()
    if s in ("1", "true", "t", "yes", "y"):
        return True
    if s in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {v!r}")

"""gflags-style flags on argparse: every flag answers to -name and --name, with a value
given as `-name value` or `-name=value`. Booleans, as in gflags, are `-name` (true),
`-name=true|false` and `-noname`; a bare boolean never takes the next word as its value."""

from __future__ import annotations

import argparse

# The name the command was run as: `decaffe` or Caffe's own `caffe` (set by cli.main).
COMMAND_NAME = "decaffe"


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows each flag's default, as gflags' --help does, where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, "", argparse.SUPPRESS)
                or isinstance(default, bool) or not action.option_strings):
            return text
        return f"{text} (default: {default})"


class FlagParser(argparse.ArgumentParser):
    def __init__(self, prog: str, description: str = "", **kw):
        kw.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(prog=f"{COMMAND_NAME} {prog}", description=description,
                         add_help=False, allow_abbrev=False, **kw)
        self.add_argument("-help", "--help", "-h", action="help",
                          help="show this help and exit")
        self._bool_names: set[str] = set()

    def flag(self, name: str, **kw):
        """A valued flag: -name / --name."""
        return self.add_argument(f"-{name}", f"--{name}", dest=name, **kw)

    def bool_flag(self, name: str, default: bool = False, help: str = ""):
        """A boolean flag: -name, -name=true|false, -noname."""
        self._bool_names.add(name)
        self.add_argument(f"-{name}", f"--{name}", dest=name, action="store_true",
                          default=default, help=f"{help} (default: {str(default).lower()}; "
                          f"also -no{name}, -{name}=false)")
        self.add_argument(f"-no{name}", f"--no{name}", dest=name, action="store_false",
                          help=argparse.SUPPRESS)

    def parse(self, argv: list[str]) -> argparse.Namespace:
        return self.parse_args([self._spell_bool(a) for a in argv])

    def _spell_bool(self, arg: str) -> str:
        """-name=value for a boolean flag becomes -name or -noname."""
        if not arg.startswith("-") or "=" not in arg:
            return arg
        key, value = arg.split("=", 1)
        name = key.lstrip("-")
        if name not in self._bool_names:
            return arg
        dashes = key[: len(key) - len(name)]
        return f"{dashes}{name}" if _boolstr(value) else f"{dashes}no{name}"


def add_net_flags(fp: FlagParser, weights_help: str, phase_default: str) -> None:
    """The flags `caffe test` and `caffe time` share: the model, its weights, how many
    iterations, the device and the NetState (phase, level, stages)."""
    fp.flag("model", default="", help="the model definition protocol buffer text file")
    fp.flag("weights", default="", help=weights_help)
    fp.flag("iterations", type=int, default=50, help="the number of iterations to run")
    fp.flag("gpu", default="", help="optional; run in GPU mode on the given device id")
    fp.flag("phase", default="", help=f"optional; network phase (TRAIN or TEST), default "
            f"{phase_default}")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")


def _boolstr(v: str) -> bool:
    s = str(v).lower()
    if s in ("1", "true", "t", "yes", "y"):
        return True
    if s in ("0", "false", "f", "no", "n"):
        return False
    raise SystemExit(f"decaffe: expected true or false for a boolean flag, not {v!r}")

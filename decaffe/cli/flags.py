"""gflags-style flags on argparse: every flag answers to -name and --name, with a value
given as `-name value` or `-name=value`. Booleans, as in gflags, are `-name` (true),
`-name=true|false` and `-noname`; a bare boolean never takes the next word as its value.

A verb declares each flag's whole contract here (``required``, a ``check`` of its value,
``exists`` for a file that must be there) and whole-command ``rule``s, so that
:meth:`FlagParser.parse` reports every missing or malformed flag before the verb imports
PyTorch (several seconds): this module and the verbs' modules import no torch at their top.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from ..errors import DecaffeError

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


class FlagError(DecaffeError):
    """A flag that is missing or whose value is malformed, found while parsing (before the
    verb loads PyTorch). The message starts with the flag: "-model: required"."""


# A value check: returns what is wrong with the value ("must be >= 0, not -1"), or None.
Check = Callable[[object], "str | None"]


class FlagParser(argparse.ArgumentParser):
    def __init__(self, prog: str, description: str = "", **kw: object) -> None:
        kw.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(prog=f"{COMMAND_NAME} {prog}", description=description,
                         add_help=False, allow_abbrev=False, **kw)
        self.add_argument("-help", "--help", "-h", action="help",
                          help="show this help and exit")
        self._bool_names: set[str] = set()
        # (name, required message or None, value check or None, must-exist file)
        self._specs: list[tuple[str, str | None, Check | None, bool]] = []
        self._rules: list[Callable[[argparse.Namespace], str | None]] = []

    def flag(self, name: str, required: bool | str = False, check: Check | None = None,
             exists: bool = False, **kw: object) -> argparse.Action:
        """A valued flag: -name / --name.

        ``required``: the flag must be given (a message string replaces "required");
        ``check(value)``: what is wrong with a given value, or None; ``exists``: a given value
        names a file or folder that must exist. All are verified by :meth:`parse`."""
        action = self.add_argument(f"-{name}", f"--{name}", dest=name, **kw)
        if required or check is not None or exists:
            message = required if isinstance(required, str) else ("required" if required
                                                                  else None)
            self._specs.append((name, message, check, exists))
        return action

    def rule(self, check: Callable[[argparse.Namespace], str | None]) -> None:
        """A check over several flags, run by :meth:`parse` after the required flags are
        found; returns the whole message (naming the flags) or None."""
        self._rules.append(check)

    def validate(self, args: argparse.Namespace) -> None:
        """Every declared contract, in order: the required flags, the rules, each given
        value's check, then the files that must exist. Raises FlagError."""
        for name, message, _, _ in self._specs:
            if message and _missing(getattr(args, name)):
                raise FlagError(f"-{name}: {message}")
        for rule in self._rules:
            problem = rule(args)
            if problem:
                raise FlagError(problem)
        for name, _, check, _ in self._specs:
            value = getattr(args, name)
            problem = check(value) if check is not None and not _missing(value) else None
            if problem:
                raise FlagError(f"-{name}: {problem}")
        for name, _, _, exists in self._specs:
            value = getattr(args, name)
            if exists and not _missing(value) and not os.path.exists(value):
                raise FlagError(f"-{name}: cannot open '{value}': no such file")

    def bool_flag(self, name: str, default: bool = False, help: str = "") -> None:
        """A boolean flag: -name, -name=true|false, -noname."""
        self._bool_names.add(name)
        self.add_argument(f"-{name}", f"--{name}", dest=name, action="store_true",
                          default=default, help=f"{help} (default: {str(default).lower()}; "
                          f"also -no{name}, -{name}=false)")
        self.add_argument(f"-no{name}", f"--no{name}", dest=name, action="store_false",
                          help=argparse.SUPPRESS)

    def parse(self, argv: list[str]) -> argparse.Namespace:
        """The flags of ``argv``, every declared contract verified (FlagError otherwise)."""
        args = self.parse_args([self._spell_bool(a) for a in argv])
        self.validate(args)
        return args

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


def _missing(value: object) -> bool:
    return value is None or value == ""


def at_least(low: int) -> Check:
    """A check that a number is >= low."""
    def check(value: float) -> str | None:
        if value >= low:
            return None
        return f"must be >= 0, not {value}" if low == 0 else f"must be at least {low}, not {value}"
    return check


def gpu_ids(value: object) -> str | None:
    """-gpu's syntax: 'all' or device ids >= 0 separated by ','."""
    text = str(value).strip()
    if text == "all":
        return None
    try:
        ids = [int(s) for s in text.split(",")]
    except ValueError:
        return f"expected device ids separated by ',' or 'all', not '{text}'"
    if any(i < 0 for i in ids):
        return f"device ids must be >= 0, not '{text}'"
    return None


def phase_name(value: object) -> str | None:
    return None if value in ("TRAIN", "TEST") else f'must be "TRAIN" or "TEST", not "{value}"'


def add_net_flags(fp: FlagParser, weights_help: str, phase_default: str,
                  model_required: str = "required", weights_required: bool | str = False,
                  iterations_min: int = 1) -> None:
    """The flags `caffe test` and `caffe time` share: the model, its weights, how many
    iterations, the device and the NetState (phase, level, stages)."""
    fp.flag("model", default="", required=model_required, exists=True,
            help="the model definition protocol buffer text file")
    fp.flag("weights", default="", required=weights_required, exists=True, help=weights_help)
    fp.flag("iterations", type=int, default=50, check=at_least(iterations_min),
            help="the number of iterations to run")
    fp.flag("gpu", default="", check=gpu_ids,
            help="optional; run in GPU mode on the given device id")
    fp.flag("phase", default="", check=phase_name,
            help=f"optional; network phase (TRAIN or TEST), default {phase_default}")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")


def _boolstr(v: str) -> bool:
    s = str(v).lower()
    if s in ("1", "true", "t", "yes", "y"):
        return True
    if s in ("0", "false", "f", "no", "n"):
        return False
    raise SystemExit(f"decaffe: expected true or false for a boolean flag, not {v!r}")

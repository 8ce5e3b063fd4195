"""Caffe's upgrade tools: ``upgrade_net_proto_text``, ``upgrade_net_proto_binary`` and
``upgrade_solver_proto_text``, each ``IN OUT``.

As in Caffe, a file already in the current format is written back unchanged (with a note),
an input that does not parse exits with status 2, and an upgrade that had to drop fields
still writes its output but exits with status 1.
"""

from __future__ import annotations

import logging
import sys

from ..errors import DecaffeError
from ..formats import prototxt, upgrade, weights
from ..proto import caffe_pb2
from .flags import FlagParser

_VERBS = {
    "upgrade_net_proto_text": "upgrade a V0/V1 net prototxt (and old input fields) to the "
                              "current format",
    "upgrade_net_proto_binary": "upgrade a binary net (a .caffemodel) to the current format, "
                                "keeping its weights",
    "upgrade_solver_proto_text": "upgrade a solver prototxt (solver_type enum -> type string)",
}


def _parser(verb: str) -> FlagParser:
    p = FlagParser(verb, _VERBS[verb])
    p.add_argument("input", metavar="IN", help="the file to upgrade")
    p.add_argument("output", metavar="OUT", help="where to write the upgraded file")
    return p


def _print_errors() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    return handler


def main(argv: list[str]) -> int:
    """Run the verb argv[0] on argv[1:] (IN OUT); returns the process exit status."""
    if not argv or argv[0] not in _VERBS:
        print(f"decaffe upgrade: expected one of {', '.join(_VERBS)}", file=sys.stderr)
        return 1
    verb = argv[0]
    args = _parser(verb).parse(argv[1:])
    upgrade_log = logging.getLogger(upgrade.__name__)
    printer = _print_errors()
    upgrade_log.addHandler(printer)
    try:
        if verb == "upgrade_solver_proto_text":
            return _solver_text(args.input, args.output)
        return _net(args.input, args.output, binary=verb == "upgrade_net_proto_binary")
    finally:
        upgrade_log.removeHandler(printer)


def _net(src: str, dst: str, binary: bool) -> int:
    param = caffe_pb2.NetParameter()
    try:
        if binary:
            param = weights.read_message(src, caffe_pb2.NetParameter)
        else:
            prototxt.read_text(src, param)
    except DecaffeError as e:
        kind = "binary" if binary else "text"
        print(f"Failed to parse input {kind} file as NetParameter: {e}", file=sys.stderr)
        return 2
    success = True
    if upgrade.net_needs_upgrade(param):
        try:
            success = upgrade.upgrade_net_as_needed(param, src)
        except DecaffeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if not success:
            print("Encountered error(s) while upgrading prototxt; see details above.",
                  file=sys.stderr)
    else:
        print(f"File already in latest proto format: {src}", file=sys.stderr)
    if binary:
        weights.write_message(param, dst)
    else:
        prototxt.write_text(param, dst)
    return 0 if success else 1


def _solver_text(src: str, dst: str) -> int:
    param = caffe_pb2.SolverParameter()
    try:
        prototxt.read_text(src, param)
    except DecaffeError as e:
        print(f"Failed to parse input text file as SolverParameter: {e}", file=sys.stderr)
        return 2
    if upgrade.solver_needs_upgrade(param):
        try:
            upgrade.upgrade_solver_as_needed(param, src)
        except DecaffeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    else:
        print(f"File already in latest proto format: {src}", file=sys.stderr)
    prototxt.write_text(param, dst)
    return 0

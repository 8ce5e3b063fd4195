"""The `decaffe` command: Caffe's `caffe` tool and its companion tools, one module per verb.

Each verb module defines ``main(argv: list[str]) -> int``. Flags are Caffe's (gflags style):
``-solver x``, ``-solver=x``, ``--solver x`` and ``--solver=x`` all work.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata

from .. import __version__
from ..errors import DecaffeError, suggest
from . import flags

# verb -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "upgrade_net_proto_text": ("upgrade", "upgrade a V0/V1 net prototxt to the current format"),
    "upgrade_net_proto_binary": ("upgrade", "upgrade a binary net (caffemodel) to the current "
                                 "format"),
    "upgrade_solver_proto_text": ("upgrade", "upgrade a solver prototxt (solver_type -> type)"),
    "train": ("train", "train a net from a solver prototxt (caffe train)"),
    "test": ("test", "score a net's outputs over some iterations (caffe test)"),
    "time": ("time", "time each layer's forward and backward (caffe time)"),
    "device_query": ("device_query", "show the CUDA devices PyTorch sees"),
    "parse_log": ("logtools", "turn a training log into train/test CSV tables"),
    "plot_log": ("logtools", "plot loss, accuracy and learning rate from a training log"),
    "convert_imageset": ("convert_imageset", "make an LMDB/LevelDB of Datums from an image list"),
    "convert_annoset": ("convert_annoset", "make an LMDB/LevelDB of SSD's AnnotatedDatums"),
    "compute_image_mean": ("compute_image_mean", "compute a database's mean image"),
    "extract_features": ("extract_features", "save a net's blobs over a database into databases"),
    "prepare_digits": ("prepare_digits", "build the bundled handwritten-digits LMDBs"),
    "draw_net": ("draw_net", "draw a net as a graph (PNG/SVG/PDF)"),
    "fold_bn": ("fold_bn", "fold BatchNorm/Scale into the preceding layer's weights"),
    "bn_stats": ("bn_stats", "show or recompute BatchNorm statistics"),
    "export": ("export", "export a net to ONNX, torch.export or PyTorch source, verified"),
    "deploy_net": ("deploy_net", "write the deploy form of a train_val/train_test prototxt"),
    "dashboard": ("dashboard", "serve a live page over run folders and Caffe training logs"),
}


def register(verb: str, module: str, summary: str) -> None:
    COMMANDS[verb] = (module, summary)


def _usage(name: str) -> str:
    lines = [f"{name}: command line brew", f"usage: {name} <command> [flags]", "", "commands:"]
    for verb in sorted(COMMANDS):
        lines.append(f"  {verb:28s} {COMMANDS[verb][1]}")
    lines.append("")
    lines.append(f"Run `{name} <command> -help` for a command's flags, `{name} --version` for "
                 "the version.")
    return "\n".join(lines)


def version_line(name: str) -> str:
    """What --version prints; read from package metadata so that PyTorch is not imported."""

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return (f"{name} version {__version__} (decaffe {__version__}: BVLC Caffe 1.0 semantics; "
            f"PyTorch {torch_version})")


def _command_name() -> str:
    """`caffe` when run through the `caffe` console script, else `decaffe`."""
    base = os.path.basename(sys.argv[0] or "")
    return "caffe" if base in ("caffe", "caffe.exe") else "decaffe"


def main(argv: list[str] | None = None) -> int:
    """Run one verb: ``main(["train", "-solver", "s.prototxt"])``; returns the exit status."""
    name = _command_name()
    flags.COMMAND_NAME = name
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-version", "--version"):
        print(version_line(name))
        return 0
    if not argv or argv[0] in ("-h", "-help", "--help", "help"):
        print(_usage(name))
        return 0 if argv else 1
    verb = argv[0]
    if verb not in COMMANDS:
        print(f"{name}: unknown command '{verb}'{suggest(verb, COMMANDS)}\n", file=sys.stderr)
        print(_usage(name), file=sys.stderr)
        return 1
    module = importlib.import_module(f"{__name__}.{COMMANDS[verb][0]}")
    try:
        return int(module.main(argv) or 0)
    except DecaffeError as e:
        print(f"{name} {verb}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

"""The `decaffe` command: Caffe's `caffe` tool and its companion tools, one module per verb.

Each verb module defines ``main(argv: list[str]) -> int``. Flags are Caffe's (gflags style):
``-solver x``, ``-solver=x``, ``--solver x`` and ``--solver=x`` all work.
"""

from __future__ import annotations

import importlib
import sys

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
    "compute_image_mean": ("compute_image_mean", "compute a database's mean image"),
    "extract_features": ("extract_features", "save a net's blobs over a database into databases"),
    "prepare_digits": ("prepare_digits", "build the bundled handwritten-digits LMDBs"),
    "draw_net": ("draw_net", "draw a net as a graph (PNG/SVG/PDF)"),
    "fold_bn": ("fold_bn", "fold BatchNorm/Scale into the preceding layer's weights"),
    "bn_stats": ("bn_stats", "show or recompute BatchNorm statistics"),
    "export": ("export", "export a net to ONNX, torch.export or PyTorch source, verified"),
}


def register(verb: str, module: str, summary: str) -> None:
    COMMANDS[verb] = (module, summary)


def _usage() -> str:
    lines = ["usage: decaffe <command> [flags]", "", "commands:"]
    for verb in sorted(COMMANDS):
        lines.append(f"  {verb:28s} {COMMANDS[verb][1]}")
    lines.append("")
    lines.append("Run `decaffe <command> -help` for a command's flags.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..errors import DecaffeError

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "-help", "--help", "help"):
        print(_usage())
        return 0 if argv else 1
    verb = argv[0]
    if verb not in COMMANDS:
        from ..errors import suggest

        print(f"decaffe: unknown command '{verb}'{suggest(verb, COMMANDS)}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 1
    module = importlib.import_module(f"{__name__}.{COMMANDS[verb][0]}")
    try:
        return int(module.main(argv) or 0)
    except DecaffeError as e:
        print(f"decaffe {verb}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

"""`decaffe draw_net IN.prototxt OUT.png|svg|pdf|jpg|raw [--rankdir LR] [--phase ALL]
[--display_lrm]`: Caffe's python/draw_net.py, drawing a net as a graph with graphviz."""

from __future__ import annotations

from ..errors import DecaffeError
from ..pycaffe import draw
from .flags import FlagParser


def main(argv: list[str]) -> int:
    p = FlagParser("draw_net", "Draw a graph of the net architecture (layers as boxes, blobs "
                   "as octagons), in the format the output file's extension names.")
    p.add_argument("input_net_proto_file", help="input network prototxt file")
    p.add_argument("output_image_file", help="output image file (.png, .svg, .pdf, .jpg; "
                   ".raw for the graph's dot source)")
    p.flag("rankdir", default="LR", help="direction of the graph's layout: LR (left-right), "
           "TB (top-bottom), BT or RL (default LR)")
    p.flag("phase", default="ALL", help="draw the layers of phase TRAIN or TEST, or ALL "
           "(default)")
    p.add_argument("-display_lrm", "--display_lrm", dest="display_lrm", action="store_true",
                   help="show the learning-rate multipliers of learning layers")
    args = p.parse(argv[1:])
    phase_name = args.phase.upper()
    if phase_name == "ALL":
        phase = None
    elif phase_name in ("TRAIN", "TEST"):
        phase = 0 if phase_name == "TRAIN" else 1
    else:
        raise DecaffeError(f"-phase: unknown phase {args.phase!r} (TRAIN, TEST or ALL)")
    rankdir = args.rankdir.upper()
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise DecaffeError(f"-rankdir: {args.rankdir!r} is not LR, RL, TB or BT")
    print(f"Drawing net to {args.output_image_file}")
    draw.draw_net_to_file(args.input_net_proto_file, args.output_image_file, rankdir,
                          phase=phase, display_lrm=args.display_lrm)
    return 0

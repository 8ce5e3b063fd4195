"""`decaffe deploy_net IN OUT`: write the deploy form of a train_val / train_test prototxt
(decaffe.export.deploy): the TEST phase's layers, each data layer an Input of its batch's
shape, loss and accuracy layers dropped; each change is printed. `-input_shape` gives data
shapes that only the data layer's source would tell (a database that is not here).
"""

from __future__ import annotations

from ..formats import prototxt
from ..proto import caffe_pb2
from .common import parse_phase, parse_stages, require_file
from .flags import FlagParser


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Write the deploy form of a train_val/train_test net prototxt.")
    fp.add_argument("input", metavar="IN", help="the train_val / train_test net prototxt")
    fp.add_argument("output", metavar="OUT", help="where to write the deploy prototxt")
    fp.flag("input_shape", default="", help="data shapes the prototxt cannot tell, e.g. "
            "data:64,1,28,28 (several separated by ';')")
    fp.flag("phase", default="TEST", help="the phase whose layers are kept (TRAIN or TEST)")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")
    args = fp.parse(argv[1:])
    from ..export.deploy import deploy_form  # after parsing: -help loads no PyTorch
    from ..export.graph import parse_input_shapes  # after parsing: -help loads no PyTorch

    require_file(args.input, "IN")
    param = prototxt.read_net(args.input)
    form = deploy_form(param, parse_input_shapes(args.input_shape) if args.input_shape else None,
                       phase=parse_phase(args.phase, caffe_pb2.TEST), level=args.level,
                       stages=parse_stages(args.stage))
    for line in form.changes:
        print(line)
    prototxt.write_text(form.param, args.output)
    print(f"wrote {args.output}: {len(form.param.layer)} layers")
    return 0

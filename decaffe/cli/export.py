"""`decaffe export -model deploy.prototxt -weights w.caffemodel -onnx net.onnx` (and/or
`-torch net.pt2`, `-pytorch out_dir/`): export a Caffe net to ONNX, to a torch.export
program, or to readable PyTorch source (model.py + weights.pth).

The net is built in the TEST phase. Every export is checked before the command returns:
onnx's checker (ONNX), then the exported form and decaffe run the same random inputs and
the largest relative difference of each output is printed; above -tolerance (1e-4), or
with an empty output, the command fails (exit status 1) and the file keeps a `.unverified`
suffix. The ONNX form runs in onnxruntime, or in the runtimes `-check` names
(`-check ort,openvino,opencv`, `-check all`); `-check false` skips the run (not onnx's
checker).
"""

from __future__ import annotations

import argparse
import sys

from ..formats import prototxt
from ..proto import caffe_pb2
from .common import parse_stages
from .flags import FlagParser, at_least


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Export a Caffe net to ONNX, torch.export or PyTorch source.")
    fp.flag("model", default="", required=True, exists=True, help="the deploy net (prototxt)")
    fp.flag("weights", default="", exists=True,
            help="its trained weights (.caffemodel or .caffemodel.h5); "
            "without it the fillers' values are exported")
    fp.flag("onnx", default="", help="write the ONNX model here")
    fp.flag("torch", default="", help="write the torch.export program here (.pt2)")
    fp.flag("pytorch", default="", help="write model.py and weights.pth into this folder")
    fp.flag("opset", type=int, default=0, check=at_least(0),
            help="ONNX opset (default: the lowest the net's layers need, at least 17)")
    fp.bool_flag("dynamic_batch", default=False, help="make axis 0 of every input symbolic")
    fp.bool_flag("fold_bn", default=False, help="fold BatchNorm/Scale into the layer before "
                 "them first (as decaffe fold_bn)")
    fp.flag("input_shape", default="", help="input shapes replacing the prototxt's, e.g. "
            "data:1,3,224,224 (several separated by ';')")
    fp.flag("end", default="", help="export up to and including this layer")
    fp.flag("check", nargs="?", const="true", default="true",
            help="run the export against decaffe on random inputs: true (onnxruntime for "
            "-onnx), false, all (every installed runtime), or a list of ort, openvino, "
            "opencv (e.g. ort,openvino,opencv)")
    fp.add_argument("-nocheck", "--nocheck", dest="check", action="store_const",
                    const="false", help=argparse.SUPPRESS)
    fp.flag("tolerance", type=float, default=1e-4,
            help="largest relative difference accepted")
    fp.flag("seed", type=int, default=0, help="seed of the random check inputs")
    fp.flag("level", type=int, default=0, help="optional; network level")
    fp.flag("stage", default="", help="optional; network stages, separated by ','")
    fp.rule(lambda a: None if (a.onnx or a.torch or a.pytorch) else
            "give at least one of -onnx FILE, -torch FILE.pt2, -pytorch DIR")
    args = fp.parse(argv[1:])
    return _export(args)


def _export(args: argparse.Namespace) -> int:
    from .. import export as ex  # after parsing: -help loads no PyTorch
    from ..export.deploy import (  # after parsing: -help loads no PyTorch
        deploy_form,
        needs_deploy_form,
    )
    from ..export.graph import parse_input_shapes  # after parsing: -help loads no PyTorch
    from ..export.registry import ExportError  # after parsing: -help loads no PyTorch
    from ..export.verify import check_runtimes  # after parsing: -help loads no PyTorch
    from ..net import Net  # after parsing: -help loads no PyTorch

    args.check = check_runtimes(args.check)  # an unknown or missing runtime fails first
    source = prototxt.read_net(args.model)
    if not args.end and needs_deploy_form(source, caffe_pb2.TEST, args.level,
                                          parse_stages(args.stage)):
        # a train_val/train_test net: exported as its deploy form (decaffe deploy_net)
        form = deploy_form(source, parse_input_shapes(args.input_shape)
                           if args.input_shape else None, caffe_pb2.TEST, args.level,
                           parse_stages(args.stage))
        print(f"'{args.model}' is a training net; exporting its deploy form:")
        for line in form.changes:
            print(f"  {line}")
        net = Net(form.param, caffe_pb2.TEST, weights=args.weights or None)
        net.source = args.model
    else:
        net = Net(args.model, caffe_pb2.TEST, weights=args.weights or None, level=args.level,
                  stages=parse_stages(args.stage))
    graph, folded = ex.prepare(net, fold_bn=args.fold_bn, input_shapes=args.input_shape or None,
                               end=args.end or None, dynamic_batch=args.dynamic_batch)
    if folded is not None:
        print(folded.summary())
    shapes = ", ".join(f"{v} {tuple(graph.shapes[v])}" for v in graph.inputs)
    print(f"net '{net.name}': {len(graph.nodes)} layers exported, inputs {shapes}"
          f"{' (batch dynamic)' if args.dynamic_batch else ''}, outputs "
          f"{', '.join(graph.outputs)}")
    failed = False
    jobs = [(args.onnx, lambda p: ex.write_onnx(graph, p, args.opset or None, args.check,
                                                args.tolerance, args.seed)),
            (args.torch, lambda p: ex.write_torch_program(graph, p, args.check,
                                                          args.tolerance, args.seed)),
            (args.pytorch, lambda p: ex.write_pytorch_source(graph, p, args.check,
                                                             args.tolerance, args.seed))]
    for path, job in jobs:
        if not path:
            continue
        try:
            report = job(path)
        except ExportError as e:
            if "kept as" not in str(e):
                raise
            if getattr(e, "report", None) is not None:
                print("\n".join(e.report.lines()))
            print(f"decaffe export: error: {e}", file=sys.stderr)
            failed = True
            continue
        print("\n".join(report.lines()))
    return 1 if failed else 0

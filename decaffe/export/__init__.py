"""Export a Caffe net to ONNX, to a torch.export program, or to readable PyTorch source.

    from decaffe.export import to_onnx, to_torch_program, to_pytorch_source
    net = caffe.Net("deploy.prototxt", "w.caffemodel", caffe.TEST)
    to_onnx(net, "net.onnx")                 # checked by onnx, run by onnxruntime
    program = to_torch_program(net)          # torch.export.ExportedProgram
    to_pytorch_source(net, "net_pytorch/")   # model.py + weights.pth

Every written export is verified before it is given its name: onnx's checker (ONNX), then
the exported form and decaffe run the same random inputs and each output's largest
relative difference max|a − b| / max|a| must be within ``tolerance`` (1e-4). A failed check
raises ExportError and leaves the file(s) with a ``.unverified`` suffix; ``check=False``
skips the run (not onnx's checker).

Common options: ``fold_bn`` (fold BatchNorm/Scale into the layer before them first, as
``decaffe fold_bn`` does), ``input_shapes`` ({input: shape} or "data:1,3,224,224"),
``end`` (export up to and including that layer), ``dynamic_batch`` (axis 0 of every input
symbolic). The net is left as it was (its input shapes are restored after the checks).
Layers map to their exports through ``decaffe.export.registry.EXPORTS``; ``register_export``
adds a type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..bn.fold import fold
from ..net import Net
from . import forks, layers  # noqa: F401  (fill the EXPORTS table on import)
from . import onnx as onnx_export
from .graph import (
    ExportGraph,  # noqa: F401
    build_graph,
    parse_input_shapes,
)
from .pytorch_source import generate, instantiate, write
from .registry import EXPORTS, ExportError, LayerExport, register_export  # noqa: F401
from .torch_module import export_program
from .verify import compare, onnx_runner, onnxruntime_session, torch_runner

TOLERANCE = 1e-4

__all__ = ["to_onnx", "to_torch_program", "to_pytorch_source", "ExportError", "ExportReport",
           "register_export", "LayerExport", "EXPORTS", "prepare"]


@dataclass
class ExportReport:
    """What an export wrote and how it compared with decaffe."""

    form: str                       # "onnx", "torch.export" or "pytorch"
    path: str
    differences: dict[str, float] = field(default_factory=dict)
    verified: bool = False
    tolerance: float = TOLERANCE
    opset: int | None = None
    graph: ExportGraph | None = None
    folded: Any = None              # decaffe.bn.fold.FoldResult with fold_bn
    program: Any = None             # the ExportedProgram (torch.export form)

    def lines(self) -> list[str]:
        what = {"onnx": "onnxruntime", "torch.export": "torch.export program",
                "pytorch": "generated model.py"}[self.form]
        out = []
        extra = f", opset {self.opset}" if self.opset else ""
        out.append(f"{self.form}: wrote {self.path}{extra}")
        if not self.differences:
            out.append(f"  not run (-check false){'; onnx checker: ok' if self.opset else ''}")
        for name, d in self.differences.items():
            out.append(f"  output {name}: largest relative difference {d:.3g} ({what} vs "
                       "decaffe)")
        return out


def _as_net(net):
    if not isinstance(net, Net):
        raise ExportError(f"expected a decaffe/caffe Net, not {type(net).__name__}")
    return net


def prepare(net, *, fold_bn: bool = False, input_shapes=None, end: str | None = None,
            dynamic_batch: bool = False) -> tuple[ExportGraph, Any]:
    """(export graph, FoldResult or None) for a net and the export options."""
    net = original = _as_net(net)
    folded = None
    if fold_bn:
        shapes = {name: tuple(net.blobs[name].shape) for name in net.inputs}
        net, folded = fold(net, report=True)
        # the folded net is built from the prototxt: give it the shapes the net had
        if any(tuple(net.blobs[n].shape) != s for n, s in shapes.items() if n in net.blobs):
            for n, s in shapes.items():
                if n in net.blobs:
                    net.blobs[n].reshape(*s)
            net.reshape()
    if isinstance(input_shapes, str):
        input_shapes = parse_input_shapes(input_shapes)
    graph = build_graph(net, end=end, input_shapes=input_shapes, dynamic_batch=dynamic_batch)
    if folded is not None:  # the checks compare with the net as it was before folding
        graph.reference = original
        last = net.layer_records[graph.end].name
        graph.reference_end = [rec.name for rec in original.layer_records].index(last)
    return graph, folded


def _differences(graph: ExportGraph, run, seed: int) -> dict[str, float]:
    diffs = compare(graph, run, seed)
    if graph.dynamic_batch:  # the symbolic batch must also hold at another size
        batch = graph.shapes[graph.inputs[0]][0] + 1 if graph.shapes[graph.inputs[0]] else 2
        other = compare(graph, run, seed + 1, batch=batch)
        diffs = {k: max(v, other[k]) for k, v in diffs.items()}
    return diffs


def _judge(report: ExportReport, tmp_paths: list[str], final_paths: list[str]) -> None:
    worst = max(report.differences.values(), default=0.0)
    if not worst <= report.tolerance:
        bad = max(report.differences, key=report.differences.get)
        err = ExportError(f"the {report.form} export differs from decaffe: output '{bad}' by "
                          f"{report.differences[bad]:.3g} > tolerance {report.tolerance:g}"
                          + (f"; kept as {', '.join(tmp_paths)}" if tmp_paths else ""))
        err.report = report
        raise err
    for tmp, final in zip(tmp_paths, final_paths):
        os.replace(tmp, final)
    report.verified = True


def _clear(*paths: str) -> None:
    for p in paths:
        if os.path.isfile(p):
            os.remove(p)


def _runtime_has_kernels(model) -> bool:
    """Whether onnxruntime (when installed) has a kernel for every operator of the model."""
    try:
        onnxruntime_session(model.SerializeToString())
    except ImportError:
        return True
    except Exception as e:
        return "NOT_IMPLEMENTED" not in str(e) and "Could not find an implementation" \
            not in str(e)
    return True


def write_onnx(graph: ExportGraph, path: str, opset: int | None = None, check: bool = True,
               tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Write and verify the ONNX form of an export graph (see to_onnx)."""
    path = os.fspath(path)
    chosen = opset if opset is not None else onnx_export.default_opset()
    model = onnx_export.build_model(graph, chosen)
    onnx_export.check_model(model)
    if opset is None:  # the default: step down while onnxruntime lacks a kernel at this opset
        while chosen > 17 and not _runtime_has_kernels(model):
            chosen -= 1
            model = onnx_export.build_model(graph, chosen)
            onnx_export.check_model(model)
    tmp = path + ".unverified"
    _clear(path, tmp)
    onnx_export.save_model(model, tmp)
    report = ExportReport("onnx", path, tolerance=tolerance, opset=chosen, graph=graph)
    if not check:
        os.replace(tmp, path)
        return report
    try:
        session = onnxruntime_session(tmp)
    except ImportError:
        raise ExportError("checking the ONNX export needs onnxruntime (pip install "
                          "'decaffe[export]'), or -check false; kept as " + tmp) from None
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported model: {e}; kept as "
                          f"{tmp}") from e
    try:
        report.differences = _differences(graph, onnx_runner(session, graph), seed)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"onnxruntime failed to run the exported model: {e}; kept as "
                          f"{tmp}") from e
    _judge(report, [tmp], [path])
    return report


def write_torch_program(graph: ExportGraph, path: str, check: bool = True,
                        tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Write (torch.export.save) and verify the torch.export form of an export graph."""

    path = os.fspath(path)
    program = export_program(graph)
    tmp = path + ".unverified"
    _clear(path, tmp)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "wb") as f:  # a file object: torch.export names files .pt2 only
        torch.export.save(program, f)
    report = ExportReport("torch.export", path, tolerance=tolerance, graph=graph,
                          program=program)
    if not check:
        os.replace(tmp, path)
        return report
    with open(tmp, "rb") as f:
        loaded = torch.export.load(f).module()
    report.differences = _differences(graph, torch_runner(loaded, graph), seed)
    _judge(report, [tmp], [path])
    return report


def write_pytorch_source(graph: ExportGraph, out_dir: str, check: bool = True,
                         tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Write model.py + weights.pth into out_dir and verify them (see to_pytorch_source)."""

    out_dir = os.fspath(out_dir)
    source, state = generate(graph)
    finals = [os.path.join(out_dir, "model.py"), os.path.join(out_dir, "weights.pth")]
    tmps = [p + ".unverified" for p in finals]
    _clear(*finals, *tmps)
    write(out_dir, source, state, ".unverified")
    report = ExportReport("pytorch", out_dir, tolerance=tolerance, graph=graph)
    if not check:
        for tmp, final in zip(tmps, finals):
            os.replace(tmp, final)
        return report
    with open(tmps[0]) as f:
        written = f.read()
    module = instantiate(written, torch.load(tmps[1], map_location="cpu", weights_only=True))
    report.differences = _differences(graph, torch_runner(module, graph), seed)
    _judge(report, tmps, finals)
    return report


def to_onnx(net, path: str, *, opset: int | None = None, dynamic_batch: bool = False,
            fold_bn: bool = False, input_shapes=None, end: str | None = None,
            check: bool = True, tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Write the net as an ONNX model at path and verify it (onnx's checker, then
    onnxruntime against decaffe on random inputs). opset: default the highest that onnx and
    onnxruntime both support (at least 17). Raises ExportError naming the layer for a layer
    that cannot be exported or an opset too low for its operators; on a failed check the
    file is left as path + '.unverified'."""
    graph, folded = prepare(net, fold_bn=fold_bn, input_shapes=input_shapes, end=end,
                            dynamic_batch=dynamic_batch)
    report = write_onnx(graph, path, opset, check, tolerance, seed)
    report.folded = folded
    return report


def to_torch_program(net, path: str | None = None, *, dynamic_batch: bool = False,
                     fold_bn: bool = False, input_shapes=None, end: str | None = None,
                     check: bool = True, tolerance: float = TOLERANCE,
                     seed: int = 0) -> torch.export.ExportedProgram:
    """The net as a torch.export ExportedProgram (its weights inside; torch.export.load runs
    it without decaffe), checked against decaffe like to_onnx (ExportError above
    tolerance). With path, also written there (torch.export.save; '.unverified' when the
    check fails)."""
    graph, _ = prepare(net, fold_bn=fold_bn, input_shapes=input_shapes, end=end,
                       dynamic_batch=dynamic_batch)
    if path is None:
        program = export_program(graph)
        if check:
            report = ExportReport("torch.export", "<memory>", tolerance=tolerance, graph=graph)
            report.differences = _differences(graph, torch_runner(program.module(), graph),
                                              seed)
            _judge(report, [], [])
        return program
    return write_torch_program(graph, path, check, tolerance, seed).program


def to_pytorch_source(net, out_dir: str, *, dynamic_batch: bool = False,
                      fold_bn: bool = False, input_shapes=None, end: str | None = None,
                      check: bool = True, tolerance: float = TOLERANCE,
                      seed: int = 0) -> ExportReport:
    """Write out_dir/model.py (one nn.Module, one line per Caffe layer, torch only) and
    out_dir/weights.pth, verified against decaffe like to_onnx (the files keep a
    '.unverified' suffix when the check fails)."""
    graph, folded = prepare(net, fold_bn=fold_bn, input_shapes=input_shapes, end=end,
                            dynamic_batch=dynamic_batch)
    report = write_pytorch_source(graph, out_dir, check, tolerance, seed)
    report.folded = folded
    return report

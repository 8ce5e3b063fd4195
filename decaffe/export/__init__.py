"""Export a Caffe net to ONNX, to a torch.export program, or to readable PyTorch source.

    from decaffe.export import to_onnx, to_torch_program, to_pytorch_source
    net = caffe.Net("deploy.prototxt", "w.caffemodel", caffe.TEST)
    to_onnx(net, "net.onnx")                 # checked by onnx, run by onnxruntime
    program = to_torch_program(net)          # torch.export.ExportedProgram
    to_pytorch_source(net, "net_pytorch/")   # model.py + weights.pth

Every written export is verified before it is given its name: onnx's checker (ONNX), then
the exported form and decaffe run the same random inputs and each output's largest
relative difference max|a − b| / max|a| must be within ``tolerance`` (1e-4). The ONNX
form runs in onnxruntime, or in the runtimes ``check`` names ("ort,openvino,opencv",
"all"). An output that is empty fails the check (nothing was compared). Where a runtime's
MAX pooling picks another index of a near-tie than decaffe (two float32 computations of
the same values), the check compares again with decaffe taking that choice, after making
sure it is a tie (verify.reconcile_ties). A failed check raises ExportError and leaves the
file(s) with a ``.unverified`` suffix; ``check=False`` skips the run (not onnx's checker).

Common options: ``fold_bn`` (fold BatchNorm/Scale into the layer before them first, as
``decaffe fold_bn`` does), ``input_shapes`` ({input: shape} or "data:1,3,224,224"),
``end`` (export up to and including that layer), ``dynamic_batch`` (axis 0 of every input
symbolic). The net is left as it was (its input shapes are restored after the checks).
Layers map to their exports through ``decaffe.export.graph.EXPORTS``; ``register_export``
adds a type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..bn.fold import fold
from ..net import Net
from . import forks, layers  # noqa: F401  (fill the EXPORTS table on import)
from . import onnx as onnx_export
from .deploy import deploy_net_of, net_has_training_layers
from .graph import ExportGraph, build_graph, parse_input_shapes
from .pytorch_source import generate, instantiate, write
from .registry import EXPORTS, ExportError, LayerExport, register_export  # noqa: F401
from .torch_module import export_program
from .verify import (
    RUNTIME_NAMES,
    Check,
    Comparison,
    Runner,
    check_runtimes,
    compare,
    onnx_runtime_runner,
    torch_runner,
)

TOLERANCE = 1e-4
# -input_shape as its text ("data:1,3,224,224;im_info:1,3") or parsed ({blob: shape})
InputShapes = str | dict[str, tuple[int, ...]] | None

__all__ = ["to_onnx", "to_torch_program", "to_pytorch_source", "ExportError", "ExportReport",
           "register_export", "LayerExport", "EXPORTS", "prepare"]


@dataclass(repr=False)
class ExportReport:
    """What an export wrote and how it compared with decaffe: ``differences`` holds each
    output's largest relative difference (the worst over the runtimes checked),
    ``by_runtime`` the same per runtime ("ort", "openvino", "opencv", or "torch" for the
    torch forms), ``empty`` the outputs that held no value (a failed check), ``notes`` what
    the check resolved (arg-max near-ties) or could not. Its repr is those differences."""

    form: str                       # "onnx", "torch.export" or "pytorch"
    path: str
    differences: dict[str, float] = field(default_factory=dict)
    verified: bool = False
    tolerance: float = TOLERANCE
    opset: int | None = None
    graph: ExportGraph | None = None
    folded: Any = None              # decaffe.bn.fold.FoldResult with fold_bn
    program: Any = None             # the ExportedProgram (torch.export form)
    by_runtime: dict[str, dict[str, float]] = field(default_factory=dict)
    empty: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    opset_reason: str = ""          # which layer needs the opset above 17 (default opset)

    def __repr__(self) -> str:
        state = "verified" if self.verified else ("not run" if not self.by_runtime
                                                  else "NOT verified")
        parts = [f"{self.form} {self.path!r}"]
        if self.opset:
            parts.append(f"opset {self.opset}")
        diffs = []
        for rt, d in self.by_runtime.items():
            diffs.append(f"{rt}: " + ", ".join(f"{k} {v:.3g}" for k, v in d.items()))
        if self.empty:
            diffs.append("empty: " + ", ".join(self.empty))
        return (f"ExportReport({', '.join(parts)}, {state}"
                + (f"; {'; '.join(diffs)}" if diffs else "") + ")")

    def lines(self) -> list[str]:
        what = {"torch": {"torch.export": "torch.export program",
                          "pytorch": "generated model.py"}.get(self.form, "torch"),
                **RUNTIME_NAMES}
        out = []
        extra = f", opset {self.opset}" if self.opset else ""
        if self.opset_reason:
            extra += f" ({self.opset_reason})"
        out.append(f"{self.form}: wrote {self.path}{extra}")
        changes = getattr(self.graph, "deploy_changes", None) or []
        out.extend(f"  deploy form: {c}" for c in changes)
        if not self.by_runtime:
            out.append(f"  not run (-check false){'; onnx checker: ok' if self.opset else ''}")
        for rt, diffs in self.by_runtime.items():
            for name, d in diffs.items():
                out.append(f"  output {name}: largest relative difference {d:.3g} "
                           f"({what.get(rt, rt)} vs decaffe)")
        for name, shape in self.empty.items():
            out.append(f"  output {name}: EMPTY (shape {shape}): nothing to compare")
        out.extend(f"  note: {n}" for n in self.notes)
        return out


def _as_net(net: object) -> Net:
    if not isinstance(net, Net):
        raise ExportError(f"expected a decaffe/caffe Net, not {type(net).__name__}")
    return net


def prepare(net: Net, *, fold_bn: bool = False, input_shapes: InputShapes = None,
            end: str | None = None, dynamic_batch: bool = False) -> tuple[ExportGraph, Any]:
    """(export graph, FoldResult or None) for a net and the export options. A net with data
    or loss/accuracy layers (a train_val net) is exported as its deploy form
    (decaffe.export.deploy; graph.deploy_changes lists what changed) unless end is given."""
    net = original = _as_net(net)
    folded = None
    changes: list[str] = []
    if end is None:
        if net_has_training_layers(net):  # a train_val net: its deploy form is exported
            shapes = parse_input_shapes(input_shapes) if isinstance(input_shapes, str) \
                else input_shapes
            net, form = deploy_net_of(net, shapes)
            original = net
            changes = form.changes
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
    graph.deploy_changes = changes
    if folded is not None:  # the checks compare with the net as it was before folding
        graph.reference = original
        last = net.layer_records[graph.end].name
        graph.reference_end = [rec.name for rec in original.layer_records].index(last)
    return graph, folded


def _comparison(graph: ExportGraph, run: Runner, seed: int, tolerance: float | None = None,
                masks_run: Runner | None = None):
    result = compare(graph, run, seed, tolerance=tolerance, masks_run=masks_run)
    if graph.dynamic_batch:  # the symbolic batch must also hold at another size
        batch = graph.shapes[graph.inputs[0]][0] + 1 if graph.shapes[graph.inputs[0]] else 2
        result = result.merge(compare(graph, run, seed + 1, batch=batch, tolerance=tolerance,
                                      masks_run=masks_run))
    return result


def _record(report: ExportReport, runtime: str, result: Comparison) -> None:
    report.by_runtime[runtime] = dict(result.differences)
    for k, v in result.differences.items():
        report.differences[k] = max(v, report.differences.get(k, v))
    report.empty.update(result.empty)
    report.notes.extend(f"{runtime}: {n}" for n in result.notes)


def _judge(report: ExportReport, tmp_paths: list[str], final_paths: list[str]) -> None:
    kept = f"; kept as {', '.join(tmp_paths)}" if tmp_paths else ""
    if report.empty:
        name, shape = next(iter(report.empty.items()))
        err = ExportError(f"the {report.form} export's output '{name}' is empty (shape "
                          f"{shape}) on the check's inputs: nothing was compared (-check "
                          f"false writes it unchecked){kept}")
        err.report = report
        raise err
    worst = max(report.differences.values(), default=0.0)
    if not worst <= report.tolerance:
        bad = max(report.differences, key=report.differences.get)
        where = [rt for rt, d in report.by_runtime.items()
                 if not d.get(bad, 0.0) <= report.tolerance]
        runtimes = f" in {', '.join(where)}" if report.form == "onnx" else ""
        err = ExportError(f"the {report.form} export differs from decaffe{runtimes}: output "
                          f"'{bad}' by {report.differences[bad]:.3g} > tolerance "
                          f"{report.tolerance:g}" + kept)
        err.report = report
        raise err
    for tmp, final in zip(tmp_paths, final_paths):
        os.replace(tmp, final)
    report.verified = True


def _clear(*paths: str) -> None:
    for p in paths:
        if os.path.isfile(p):
            os.remove(p)


def write_onnx(graph: ExportGraph, path: str, opset: int | None = None, check: Check = True,
               tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Write and verify the ONNX form of an export graph (see to_onnx)."""
    path = os.fspath(path)
    runtimes = check_runtimes(check)
    if opset is None:
        model, chosen, reason = onnx_export.build_default(graph)
    else:
        chosen, reason = opset, ""
        model = onnx_export.build_model(graph, chosen)
        onnx_export.check_model(model)
    tmp = path + ".unverified"
    _clear(path, tmp)
    onnx_export.save_model(model, tmp)
    report = ExportReport("onnx", path, tolerance=tolerance, opset=chosen, graph=graph,
                          opset_reason=reason)
    if not runtimes:
        os.replace(tmp, path)
        return report
    for runtime in runtimes:
        _check_in_runtime(report, graph, runtime, tmp, tolerance, seed)
    _judge(report, [tmp], [path])
    return report


def _check_in_runtime(report: ExportReport, graph: ExportGraph, runtime: str, tmp: str,
                      tolerance: float, seed: int) -> None:
    """Run the written model in one runtime against decaffe; record the differences."""
    name = RUNTIME_NAMES[runtime]
    try:
        run = onnx_runtime_runner(runtime, tmp, graph)
    except ImportError:
        raise ExportError(f"checking the ONNX export needs {name} (pip install "
                          "'decaffe[export]'), or -check false; kept as " + tmp) from None
    except Exception as e:
        raise ExportError(f"{name} cannot load the exported model: {e}; kept as "
                          f"{tmp}") from e
    try:
        result = _comparison(graph, run, seed, tolerance,
                             lambda inputs: _runtime_masks(runtime, graph, tmp, inputs))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{name} failed to run the exported model: {e}; kept as "
                          f"{tmp}") from e
    _record(report, runtime, result)


def _runtime_masks(runtime: str, graph: ExportGraph, tmp: str, inputs: dict[str, np.ndarray]
                   ) -> dict:
    """The runtime's own MAX pooling indices for these inputs: the model written again with
    the integer index values as extra outputs (a copy next to it, removed afterwards)."""
    values = getattr(graph, "onnx_indices", {})
    if not values:
        return {}
    extra = tmp + ".ties.onnx"
    try:
        onnx_export.save_model(onnx_export.with_outputs(tmp, values, graph), extra)
        run = onnx_runtime_runner(runtime, extra, graph, list(values.values()))
        got = run(inputs)
    finally:
        _clear(extra)
    return {top: got[v] for top, v in values.items()}


def write_torch_program(graph: ExportGraph, path: str, check: Check = True,
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
    if not check_runtimes(check):
        os.replace(tmp, path)
        return report
    with open(tmp, "rb") as f:
        loaded = torch.export.load(f).module()
    _record(report, "torch", _comparison(graph, torch_runner(loaded, graph), seed))
    _judge(report, [tmp], [path])
    return report


def write_pytorch_source(graph: ExportGraph, out_dir: str, check: Check = True,
                         tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Write model.py + weights.pth into out_dir and verify them (see to_pytorch_source)."""
    out_dir = os.fspath(out_dir)
    source, state = generate(graph)
    finals = [os.path.join(out_dir, "model.py"), os.path.join(out_dir, "weights.pth")]
    tmps = [p + ".unverified" for p in finals]
    _clear(*finals, *tmps)
    write(out_dir, source, state, ".unverified")
    report = ExportReport("pytorch", out_dir, tolerance=tolerance, graph=graph)
    if not check_runtimes(check):
        for tmp, final in zip(tmps, finals):
            os.replace(tmp, final)
        return report
    with open(tmps[0]) as f:
        written = f.read()
    module = instantiate(written, torch.load(tmps[1], map_location="cpu", weights_only=True))
    _record(report, "torch", _comparison(graph, torch_runner(module, graph), seed))
    _judge(report, tmps, finals)
    return report


def to_onnx(net: Net, path: str, *, opset: int | None = None, dynamic_batch: bool = False,
            fold_bn: bool = False, input_shapes: InputShapes = None, end: str | None = None,
            check: Check = True, tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Write the net as an ONNX model at path and verify it: onnx's checker, then each
    runtime ``check`` names against decaffe on random inputs (True: onnxruntime; "all":
    every installed one of onnxruntime, OpenVINO (f32) and OpenCV's dnn; "ort,openvino";
    False: no run). opset: default the lowest the net's layers need, at least 17 (the
    report's opset_reason names the layer that needs more). Raises ExportError naming the
    layer for a layer that cannot be exported or an opset too low for its operators, and
    for a check that fails (an output above tolerance, or an empty output); the file is then
    left as path + '.unverified'. Returns an ExportReport whose repr is the per-output,
    per-runtime differences."""
    graph, folded = prepare(net, fold_bn=fold_bn, input_shapes=input_shapes, end=end,
                            dynamic_batch=dynamic_batch)
    report = write_onnx(graph, path, opset, check, tolerance, seed)
    report.folded = folded
    return report


def to_torch_program(net: Net, path: str | None = None, *, dynamic_batch: bool = False,
                     fold_bn: bool = False, input_shapes: InputShapes = None,
                     end: str | None = None, check: Check = True, tolerance: float = TOLERANCE,
                     seed: int = 0) -> torch.export.ExportedProgram:
    """The net as a torch.export ExportedProgram (its weights inside; torch.export.load runs
    it without decaffe), checked against decaffe like to_onnx (ExportError above
    tolerance). With path, also written there (torch.export.save; '.unverified' when the
    check fails)."""
    graph, _ = prepare(net, fold_bn=fold_bn, input_shapes=input_shapes, end=end,
                       dynamic_batch=dynamic_batch)
    if path is None:
        program = export_program(graph)
        if check_runtimes(check):
            report = ExportReport("torch.export", "<memory>", tolerance=tolerance, graph=graph)
            _record(report, "torch", _comparison(graph, torch_runner(program.module(), graph),
                                                 seed))
            _judge(report, [], [])
        return program
    return write_torch_program(graph, path, check, tolerance, seed).program


def to_pytorch_source(net: Net, out_dir: str, *, dynamic_batch: bool = False,
                      fold_bn: bool = False, input_shapes: InputShapes = None,
                      end: str | None = None, check: Check = True,
                      tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Write out_dir/model.py (one nn.Module, one line per Caffe layer, torch only) and
    out_dir/weights.pth, verified against decaffe like to_onnx (the files keep a
    '.unverified' suffix when the check fails)."""
    graph, folded = prepare(net, fold_bn=fold_bn, input_shapes=input_shapes, end=end,
                            dynamic_batch=dynamic_batch)
    report = write_pytorch_source(graph, out_dir, check, tolerance, seed)
    report.folded = folded
    return report

"""Checking an export: the exported form and decaffe itself run the same random inputs, and
each output's largest relative difference max|a − b| / max|a| must stay within tolerance.

Inputs are standard-normal, except where a layer reads indices or indicators: Embed's
input gets integers in [0, input_dim), BatchReindex's indices integers in [0, N), the
sequence indicators (cont) of RNN/LSTM/LSTMUnit zeros and ones. Recurrent layers start
from a zero hidden state on both sides (the exported graph has no state between passes).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..errors import DecaffeError
from .graph import ExportGraph, Node

# the ONNX runtimes an export can be checked in, in the order they run
RUNTIMES = ("ort", "openvino", "opencv")
RUNTIME_NAMES = {"ort": "onnxruntime", "openvino": "OpenVINO (CPU, f32)",
                 "opencv": "OpenCV dnn (readNetFromONNX)"}
_RUNTIME_MODULES = {"ort": "onnxruntime", "openvino": "openvino", "opencv": "cv2"}
_RUNTIME_PIP = {"ort": "onnxruntime", "openvino": "openvino",
                "opencv": "opencv-python-headless"}
_ALIASES = {"onnxruntime": "ort", "ov": "openvino", "cv2": "opencv", "cv": "opencv"}

# run(inputs by name) -> outputs by name, for one exported form
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# which runtimes check an export (check_runtimes): True, False, "all", "ort,openvino", names
Check = bool | str | Iterable[str] | None

if TYPE_CHECKING:
    import onnxruntime as ort  # only for the annotation: onnxruntime is optional

    from ..layers.vision import _PoolGeom
    from ..net import Net


def random_inputs(graph: ExportGraph, seed: int = 0, batch: int | None = None
                  ) -> dict[str, np.ndarray]:
    """Random inputs for the graph's inputs (axis 0 set to batch when given)."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        shape = tuple(graph.shapes[v])
        if batch is not None and shape:
            shape = (batch,) + shape[1:]
        kind = _input_kind(graph, v)
        if kind is not None and kind[0] == "int":
            arr = rng.integers(0, max(kind[1], 1), shape).astype(np.float32)
        elif kind is not None and kind[0] == "rois":
            arr = _random_rois(rng, shape, *kind[1:])
        elif kind is not None and kind[0] == "binary":
            arr = rng.integers(0, 2, shape).astype(np.float32)
        else:
            arr = rng.standard_normal(shape).astype(np.float32)
        out[v] = arr
    return out


def _random_rois(rng: np.random.Generator, shape: tuple[int, ...], batch: int, height: float,
                 width: float) -> np.ndarray:
    """Valid ROI rows [batch index, x1, y1, x2, y2] inside a height x width image (input
    pixels), some of them crossing its edges as proposals may."""
    num = shape[0]
    x1 = rng.uniform(-0.1, 0.9, num) * width
    y1 = rng.uniform(-0.1, 0.9, num) * height
    x2 = x1 + rng.uniform(0.05, 0.6, num) * width
    y2 = y1 + rng.uniform(0.05, 0.6, num) * height
    rows = np.stack([rng.integers(0, batch, num), x1, y1, x2, y2], axis=1)
    return rows.astype(np.float32).reshape(shape)


def _input_kind(graph: ExportGraph, value: str):
    for node in graph.nodes:
        for j, b in enumerate(node.bottoms):
            if b != value:
                continue
            if node.type in ("ROIPooling", "PSROIPooling") and j == 1:
                n, _, h, w = graph.shapes[node.bottoms[0]]
                scale = float(node.layer.spatial_scale) or 1.0
                return ("rois", n, h / scale, w / scale)
            if node.type == "Embed":
                return ("int", node.layer.K)
            if node.type == "BatchReindex" and j == 1:
                return ("int", graph.shapes[node.bottoms[0]][0])
            if (node.type in ("RNN", "LSTM") and j == 1) or (node.type == "LSTMUnit" and j == 2):
                return ("binary", 2)
    return None


def runtime_installed(runtime: str) -> bool:
    """Whether the runtime's Python package is importable (OpenCV: with readNetFromONNX)."""
    if importlib.util.find_spec(_RUNTIME_MODULES[runtime]) is None:
        return False
    if runtime == "opencv":
        return hasattr(getattr(cv2, "dnn", None), "readNetFromONNX")
    return True


def check_runtimes(check: Check) -> tuple[str, ...]:
    """The runtimes a ``check`` value names: True/"true" -> onnxruntime; False/"false" ->
    none; "all" -> every installed one of RUNTIMES; "ort,openvino,opencv" (or an iterable)
    -> those, in RUNTIMES order. Raises DecaffeError for an unknown name or, when a named
    runtime is not installed, saying what to install."""
    if check is None or check is True:
        return ("ort",)
    if check is False:
        return ()
    if isinstance(check, str):
        word = check.strip().lower()
        if word in ("true", "1", "yes", "t", "y"):
            return ("ort",)
        if word in ("false", "0", "no", "f", "n", "none", ""):
            return ()
        if word == "all":
            found = tuple(r for r in RUNTIMES if runtime_installed(r))
            if not found:
                raise DecaffeError("-check all: none of onnxruntime, openvino, opencv is "
                                   "installed (pip install 'decaffe[export]')")
            return found
        names = [w.strip() for w in word.split(",") if w.strip()]
    else:
        names = [str(w).strip().lower() for w in check]
    chosen = set()
    for name in names:
        name = _ALIASES.get(name, name)
        if name not in RUNTIMES:
            raise DecaffeError(f"-check: unknown runtime '{name}' (use true, false, all or a "
                               f"comma-separated list of {', '.join(RUNTIMES)})")
        if not runtime_installed(name):
            raise DecaffeError(f"-check {name}: {RUNTIME_NAMES[name]} is not installed "
                               f"(pip install {_RUNTIME_PIP[name]})")
        chosen.add(name)
    return tuple(r for r in RUNTIMES if r in chosen)


def onnx_runtime_runner(runtime: str, path: str, graph: ExportGraph,
                        outputs: Iterable[str] | None = None) -> Runner:
    """run(inputs) -> {output: array} for the ONNX model at path in one runtime: onnxruntime
    (CPU), OpenVINO (CPU, inference precision f32, as its default would be bf16 on CPUs
    that have it) or OpenCV's dnn (cv2.dnn.readNetFromONNX). outputs: the values fetched
    (default the graph's outputs). Loading errors propagate (the caller names the runtime)."""
    names = list(outputs if outputs is not None else graph.outputs)
    if runtime == "ort":
        session = onnxruntime_session(path)

        def run(inputs: dict[str, np.ndarray]):
            return dict(zip(names, session.run(names, {v: inputs[v] for v in graph.inputs})))
    elif runtime == "openvino":
        import openvino as ov  # optional: only where -check names it

        core = ov.Core()
        compiled = core.compile_model(core.read_model(path), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})
        ports = {n: compiled.output(n) for n in names}

        def run(inputs: dict[str, np.ndarray]):
            res = compiled({v: inputs[v] for v in graph.inputs})
            return {n: np.asarray(res[ports[n]]) for n in names}
    elif runtime == "opencv":
        net = cv2.dnn.readNetFromONNX(path)

        def run(inputs: dict[str, np.ndarray]):
            for v in graph.inputs:
                net.setInput(inputs[v], v)
            outs = net.forward(names)
            return {n: np.asarray(o) for n, o in zip(names, outs)}
    else:
        raise DecaffeError(f"unknown runtime '{runtime}'")
    return run


def relative_difference(ref: np.ndarray, got: np.ndarray) -> float:
    """max|ref − got| / max|ref| over the positions where ref is finite (NaN or infinite
    values must appear in both at the same places; else the difference is infinite)."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        return float("inf")
    if ref.size == 0:
        return 0.0
    same_special = (np.isnan(ref) & np.isnan(got)) | (np.isinf(ref) & (ref == got))
    finite = np.isfinite(ref) & np.isfinite(got)
    if not np.all(same_special | finite):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = float(np.abs(ref[finite]).max())
    err = float(np.abs(ref[finite] - got[finite]).max())
    return err / scale if scale > 0 else err


@contextlib.contextmanager
def _zero_recurrent_state(net: Net):
    """Run with every RNN/LSTM layer's carried state zeroed; restore it afterwards."""
    saved = []
    for layer in (rec.layer for rec in net.layer_records):
        if hasattr(layer, "state_names") and hasattr(layer, "reset"):
            bufs = [getattr(layer, f"_carry{k}") for k in range(len(layer.state_names))]
            saved.append((layer, bufs))
            layer.reset()
    try:
        yield
    finally:
        for layer, bufs in saved:
            for k, b in enumerate(bufs):
                setattr(layer, f"_carry{k}", b)


def _with_inputs(net: Net, graph: ExportGraph, inputs: dict[str, np.ndarray]):
    """Context: the net's input blobs reshaped to and filled with inputs (shapes restored
    afterwards)."""

    @contextlib.contextmanager
    def ctx():
        original = {v: tuple(net.blobs[v].shape) for v in graph.inputs}
        try:
            changed = False
            for v, arr in inputs.items():
                if tuple(net.blobs[v].shape) != arr.shape:
                    net.blobs[v].reshape(*arr.shape)
                    changed = True
            if changed:
                net.reshape()
            for v, arr in inputs.items():
                net.blobs[v].data[...] = arr
            with _zero_recurrent_state(net), torch.no_grad():
                yield
        finally:
            if any(tuple(net.blobs[v].shape) != s for v, s in original.items()):
                for v, s in original.items():
                    net.blobs[v].reshape(*s)
                net.reshape()

    return ctx()


def _reference_net(graph: ExportGraph):
    """The net the checks compare with and the index of its last exported layer."""
    if graph.reference is not None:
        return graph.reference, graph.reference_end
    return graph.net, graph.end


def _outputs_of(net: Net, graph: ExportGraph) -> dict[str, np.ndarray]:
    return {v: np.array(net.blobs[graph.blob_of.get(v, v)].data, dtype=np.float32, copy=True)
            for v in graph.outputs}


def reference_outputs(graph: ExportGraph, inputs: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """decaffe's own outputs of the exported range for these inputs (of the net before
    folding, with fold_bn)."""
    net, end = _reference_net(graph)
    with _with_inputs(net, graph, inputs):
        net._forward(0, end)
        return _outputs_of(net, graph)


# ----------------------------------------------------------------------------------------------
# arg-max near-ties of MAX pooling's mask
# ----------------------------------------------------------------------------------------------
def mask_pooling_nodes(graph: ExportGraph) -> list[Node]:
    """The MAX pooling nodes with Caffe's argmax mask top (SegNet/ENet's unpooling reads it)."""
    return [n for n in graph.nodes if n.type == "Pooling" and len(n.tops) > 1]


class NotATie(Exception):
    """A runtime's pooling mask differs from decaffe's where the values are no tie."""


def _window_holds(g: _PoolGeom, i: np.ndarray, j: np.ndarray, index: np.ndarray, width: int
                  ) -> np.ndarray:
    """Whether flat plane index lies inside the pooling window of output (i, j) (Caffe's
    window clipped to the image)."""
    row, col = index // width, index % width
    hs = i * g.stride[0] - g.pad[0]
    ws = j * g.stride[1] - g.pad[1]
    he = np.minimum(hs + g.kernel[0], g.size[0])
    we = np.minimum(ws + g.kernel[1], g.size[1])
    hs, ws = np.maximum(hs, 0), np.maximum(ws, 0)
    return (index >= 0) & (row >= hs) & (row < he) & (col >= ws) & (col < we)


def reconcile_ties(graph: ExportGraph, inputs: dict[str, np.ndarray],
                   masks: dict[str, np.ndarray], tolerance: float
                   ) -> tuple[dict[str, np.ndarray], list[str]]:
    """decaffe's outputs recomputed with each MAX pooling taking the runtime's choice of
    maximum where the two differ and the choice is a near-tie.

    masks: {mask top value: the runtime's flat indices (N, C, H_out, W_out), int}. A
    runtime's index is accepted where it lies in the same pooling window as decaffe's and
    the pooled values there differ by at most tolerance · max|bottom| (two float32
    implementations of the layers before may order such values either way); decaffe's
    mask and top then take the runtime's choice before the later layers run. Returns the
    recomputed outputs and one note per pooling layer whose choice changed. Raises NotATie
    naming the layer, the position and the gap where a differing index is no tie."""
    net, end = _reference_net(graph)
    names = list(net._layer_names)
    notes = []
    with _with_inputs(net, graph, inputs):
        pos = 0
        for node in mask_pooling_nodes(graph):
            if node.tops[1] not in masks:
                continue
            li = names.index(node.name)
            net._forward(pos, li)
            pos = li + 1
            x = np.asarray(net.blobs[node.bottom_blobs[0]].data, np.float64)
            n, c, h, w = x.shape
            top = net.blobs[node.top_blobs[0]]
            mask = net.blobs[node.top_blobs[1]]
            ours = np.asarray(mask.data).astype(np.int64)
            theirs = np.asarray(masks[node.tops[1]]).reshape(ours.shape).astype(np.int64)
            differ = np.argwhere(ours != theirs)
            if not len(differ):
                continue
            g = node.layer._geom((n, c, h, w))
            a, b, i, j = differ.T
            t_idx, o_idx = theirs[a, b, i, j], ours[a, b, i, j]
            inside = _window_holds(g, i, j, t_idx, w)
            flat = x.reshape(n, c, h * w)
            t_val = np.where(inside, flat[a, b, np.clip(t_idx, 0, h * w - 1)], np.nan)
            o_val = flat[a, b, np.clip(o_idx, 0, h * w - 1)]
            scale = float(np.abs(x).max()) or 1.0
            gap = np.abs(t_val - o_val)
            bad = ~(gap <= tolerance * scale)  # NaN (outside the window) is bad too
            if bad.any():
                k = int(np.argmax(bad))
                where = f"(n={a[k]}, c={b[k]}, h={i[k]}, w={j[k]})"
                why = ("outside the pooling window" if not inside[k] else
                       f"the values there differ by {gap[k]:.3g} (tolerance "
                       f"{tolerance * scale:.3g})")
                raise NotATie(f"pooling '{node.name}': the runtime's argmax {t_idx[k]} and "
                              f"decaffe's {o_idx[k]} at {where} are no tie: {why}")
            mask_data = np.array(mask.data, copy=True)
            mask_data[a, b, i, j] = t_idx
            mask.data[...] = mask_data
            top_data = np.array(top.data, copy=True)
            top_data[a, b, i, j] = t_val
            top.data[...] = top_data
            notes.append(f"pooling '{node.name}': {len(differ)} of {ours.size} argmax indices "
                         f"differ on near-ties (largest gap {float(gap.max()):.3g}); compared "
                         "with decaffe taking the runtime's choice there")
        if pos <= end:
            net._forward(pos, end)
        return _outputs_of(net, graph), notes


@dataclass
class Comparison:
    """One runtime against decaffe: per-output relative differences, the outputs that are
    empty (nothing compared), and notes (near-ties resolved, or why they were not)."""

    differences: dict[str, float] = field(default_factory=dict)
    empty: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: Comparison) -> Comparison:
        diffs = {k: max(v, other.differences.get(k, v)) for k, v in self.differences.items()}
        return Comparison(diffs, {**self.empty, **other.empty},
                          self.notes + [n for n in other.notes if n not in self.notes])


def compare(graph: ExportGraph, run: Runner, seed: int = 0, batch: int | None = None,
            tolerance: float | None = None, masks_run: Runner | None = None,
            inputs: dict[str, np.ndarray] | None = None) -> Comparison:
    """run(inputs) -> {output: array} against decaffe on random inputs (or these inputs).

    With tolerance and masks_run (run(inputs) -> {mask top: the runtime's pooling indices}),
    outputs above tolerance are compared again against decaffe taking the runtime's pooling
    choices where they are near-ties (reconcile_ties); choices that are no tie keep the first
    differences and say why in the notes."""
    if inputs is None:
        inputs = random_inputs(graph, seed, batch)
    ref = reference_outputs(graph, inputs)
    got = run(inputs)
    out = Comparison()
    for v in graph.outputs:
        out.differences[v] = relative_difference(ref[v], got[v])
        if np.asarray(ref[v]).size == 0 or np.asarray(got[v]).size == 0:
            out.empty[v] = tuple(np.asarray(got[v]).shape)
    over = tolerance is not None and any(not d <= tolerance for d in out.differences.values())
    if over and masks_run is not None and mask_pooling_nodes(graph):
        try:
            ref2, notes = reconcile_ties(graph, inputs, masks_run(inputs), tolerance)
        except NotATie as e:
            out.notes.append(str(e))
        else:
            if notes:
                out.differences = {v: relative_difference(ref2[v], got[v])
                                   for v in graph.outputs}
                out.notes.extend(notes)
    return out


def torch_runner(module: torch.nn.Module, graph: ExportGraph) -> Runner:
    """run(inputs) for a torch module taking the graph's inputs in order."""

    def run(inputs: dict[str, np.ndarray]):
        args = [torch.from_numpy(inputs[v]) for v in graph.inputs]
        with torch.no_grad():
            outs = module(*args)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        return {v: o.detach().cpu().numpy() for v, o in zip(graph.outputs, outs)}

    return run


def onnxruntime_session(model_bytes_or_path: bytes | str, threads: int = 0
                        ) -> ort.InferenceSession:
    import onnxruntime as ort  # onnxruntime is optional (the export extra): loaded to check a graph

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes_or_path, so, providers=["CPUExecutionProvider"])


def onnx_runner(session: ort.InferenceSession, graph: ExportGraph) -> Runner:
    def run(inputs: dict[str, np.ndarray]):
        outs = session.run(list(graph.outputs), {v: inputs[v] for v in graph.inputs})
        return dict(zip(graph.outputs, outs))

    return run

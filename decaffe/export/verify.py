"""Checking an export: the exported form and decaffe itself run the same random inputs, and
each output's largest relative difference max|a − b| / max|a| must stay within tolerance.

Inputs are standard-normal, except where a layer reads indices or indicators: Embed's
input gets integers in [0, input_dim), BatchReindex's indices integers in [0, N), the
sequence indicators (cont) of RNN/LSTM/LSTMUnit zeros and ones. Recurrent layers start
from a zero hidden state on both sides (the exported graph has no state between passes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from .graph import ExportGraph

# run(inputs by name) -> outputs by name, for one exported form
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

if TYPE_CHECKING:
    import onnxruntime as ort  # only for the annotation: onnxruntime is optional


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


def _random_rois(rng, shape, batch: int, height: float, width: float) -> np.ndarray:
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
def _zero_recurrent_state(net):
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


def reference_outputs(graph: ExportGraph, inputs: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """decaffe's own outputs of the exported range for these inputs (of the net before
    folding, with fold_bn)."""
    net = graph.reference if graph.reference is not None else graph.net
    end = graph.reference_end if graph.reference is not None else graph.end
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
            net._forward(0, end)
        return {v: np.array(net.blobs[graph.blob_of.get(v, v)].data, dtype=np.float32,
                            copy=True) for v in graph.outputs}
    finally:
        if any(tuple(net.blobs[v].shape) != s for v, s in original.items()):
            for v, s in original.items():
                net.blobs[v].reshape(*s)
            net.reshape()


def compare(graph: ExportGraph, run, seed: int = 0, batch: int | None = None
            ) -> dict[str, float]:
    """{output: relative difference} between run(inputs) -> {output: array} and decaffe."""
    inputs = random_inputs(graph, seed, batch)
    ref = reference_outputs(graph, inputs)
    got = run(inputs)
    return {v: relative_difference(ref[v], got[v]) for v in graph.outputs}


def torch_runner(module, graph: ExportGraph) -> Runner:
    """run(inputs) for a torch module taking the graph's inputs in order."""

    def run(inputs):
        args = [torch.from_numpy(inputs[v]) for v in graph.inputs]
        with torch.no_grad():
            outs = module(*args)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        return {v: o.detach().cpu().numpy() for v, o in zip(graph.outputs, outs)}

    return run


def onnxruntime_session(model_bytes_or_path, threads: int = 0) -> ort.InferenceSession:
    import onnxruntime as ort  # onnxruntime is optional (the export extra): loaded to check a graph

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes_or_path, so, providers=["CPUExecutionProvider"])


def onnx_runner(session, graph: ExportGraph) -> Runner:
    def run(inputs):
        outs = session.run(list(graph.outputs), {v: inputs[v] for v in graph.inputs})
        return dict(zip(graph.outputs, outs))

    return run

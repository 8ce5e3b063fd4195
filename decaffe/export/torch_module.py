"""A Caffe net as a torch.export program: the generated PyTorch module (pytorch_source)
traced by torch.export, with its weights, so that ``torch.export.load`` runs it without
decaffe (the graph holds ATen operators only)."""

from __future__ import annotations

import traceback

import torch

from .graph import ExportGraph
from .pytorch_source import generate, instantiate
from .registry import ExportError


def export_program(graph: ExportGraph):
    """The torch.export ExportedProgram of an export graph (axis 0 of every input symbolic
    when graph.dynamic_batch)."""
    source, state = generate(graph, traced=True)
    module = instantiate(source, state).requires_grad_(False)  # an inference program
    args = []
    for v in graph.inputs:
        shape = list(graph.shapes[v])
        # torch.export specialises sizes 0 and 1: trace a dynamic batch at 2 or more
        if graph.dynamic_batch and shape and shape[0] < 2:
            shape[0] = 2
        args.append(torch.zeros(shape))
    dynamic = None
    if graph.dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic = tuple({0: batch} if len(graph.shapes[v]) else None for v in graph.inputs)
    try:
        return torch.export.export(module, tuple(args), dynamic_shapes=dynamic, strict=False)
    except Exception as e:  # name the layer whose line failed, not torch's traceback
        raise ExportError(f"torch.export could not trace the generated module: "
                          f"{_first_line(e)}{_layer_hint(e, source)}") from e


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _layer_hint(e: Exception, source: str) -> str:
    """' (at layer X (Type))' from the generated line in the traceback, when there is one."""
    lines = source.splitlines()
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if frame.filename == "<decaffe generated model.py>" and 0 < frame.lineno <= len(lines):
            text = lines[frame.lineno - 1]
            if "  # " in text:
                return f" (at layer {text.split('  # ', 1)[1]})"
    return ""

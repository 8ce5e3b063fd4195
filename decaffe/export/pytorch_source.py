"""A Caffe net as readable PyTorch source: ``model.py`` (one nn.Module, one line per Caffe
layer) plus ``weights.pth`` (its state dict), needing torch only.

Each layer with blobs becomes an attribute named after the Caffe layer (characters Python
does not allow in names become ``_``) holding its blobs in Caffe's order, so ``self.conv1[0]``
is what pycaffe calls ``net.params['conv1'][0]``; the forward's variables are the blobs'
names. Caffe semantics that take more than one torch call come from small helper functions
(decaffe.export.runtime) copied into the file.
"""

from __future__ import annotations

import inspect
import keyword
import os
import re
import types
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import __version__
from ..formats.atomic import atomic_write
from . import runtime
from .graph import ExportGraph, Node
from .registry import exporter_for

if TYPE_CHECKING:
    import numpy.typing as npt

_RESERVED = {"torch", "F", "math", "np", "os", "self", "Net", "load", "INPUTS", "OUTPUTS",
             "CAFFE_NAMES"} | set(dir(__builtins__) if isinstance(__builtins__, dict) else
                                   dir(__builtins__)) | set(runtime.HELPERS)


def identifier(name: str, taken: set[str] | None = None) -> str:
    """A Python identifier for a Caffe name: other characters become '_', a leading digit or
    a keyword gets a '_' prefix, a name already taken a numeric suffix."""
    ident = re.sub(r"\W", "_", name) or "_"
    if ident[0].isdigit() or keyword.iskeyword(ident) or ident in _RESERVED:
        ident = "_" + ident
    if taken is not None:
        base, k = ident, 1
        while ident in taken:
            k += 1
            ident = f"{base}_{k}"
    return ident


class SourceBuilder:
    """What a LayerExport's ``torch`` method writes through: variables, blobs, helpers."""

    def __init__(self, graph: ExportGraph, traced: bool = False) -> None:
        self.graph = graph
        # the source is traced by torch.export (-torch), not only run eagerly (-pytorch)
        self.traced = traced
        self.helpers: list[str] = []
        self.state: dict[str, torch.Tensor] = {}
        self.init_lines: list[str] = []
        self.caffe_names: dict[str, str] = {}
        self._attrs: dict[str, str] = {}      # layer name -> attribute
        self._taken_attrs: set[str] = set(dir(torch.nn.Module))
        self._param_ref: dict[int, str] = {}  # id(parameter) -> self.attr[k]
        self._vars: dict[str, str] = {}       # value -> variable
        self._taken_vars: set[str] = set()

    # -- shapes ---------------------------------------------------------------------------------
    def shape(self, value: str) -> tuple[int, ...]:
        return self.graph.shape(value)

    def target(self, value: str) -> list[int]:
        return self.graph.target_shape(value)

    # -- names ----------------------------------------------------------------------------------
    def v(self, value: str) -> str:
        return self._vars[value]

    def attr(self, node: Node) -> str:
        a = self._attrs.get(node.name)
        if a is None:
            a = identifier(node.name, self._taken_attrs)
            self._taken_attrs.add(a)
            self._attrs[node.name] = a
            if a != node.name:
                self.caffe_names[a] = node.name
        return a

    def h(self, name: str) -> str:
        """Use helper `name` from decaffe.export.runtime (copied into the file)."""
        for dep in runtime.HELPER_NEEDS.get(name, ()):
            self.h(dep)
        if name not in self.helpers:
            self.helpers.append(name)
        return name

    # -- blobs and constants --------------------------------------------------------------------
    def declare_blobs(self, node: Node) -> None:
        params = list(node.layer.blob_params)
        if not params:
            return
        a = self.attr(node)
        items = []
        for k, p in enumerate(params):
            ref = self._param_ref.get(id(p))
            if ref is not None:  # a parameter shared with an earlier layer (Caffe's param name)
                items.append(ref)
                continue
            t = p.detach().cpu().float().clone()
            self.state[f"{a}.{k}"] = t
            self._param_ref[id(p)] = f"self.{a}[{k}]"
            frozen = ", requires_grad=False" if k in node.layer.no_grad_blobs else ""
            items.append(f"torch.nn.Parameter(torch.empty({tuple(t.shape)!r}){frozen})")
        self.init_lines.append(f"self.{a} = torch.nn.ParameterList([{', '.join(items)}])"
                               f"  # {node.name} ({node.type})")

    def p(self, node: Node, k: int) -> str:
        return self._param_ref[id(node.layer.blob_params[k])]

    def const(self, node: Node, array: npt.ArrayLike, tag: str) -> str:
        """A constant tensor, kept as a buffer `<layer>_<tag>` in weights.pth."""
        name = identifier(f"{self.attr(node)}_{tag}", self._taken_attrs)
        self._taken_attrs.add(name)
        t = torch.as_tensor(np.asarray(array, dtype=np.float32)).clone()
        self.state[name] = t
        self.init_lines.append(f"self.register_buffer({name!r}, torch.empty("
                               f"{tuple(t.shape)!r}))  # {node.name} ({node.type}): a constant")
        return f"self.{name}"

    # -- the forward ----------------------------------------------------------------------------
    def assign(self, node_index: int, values: list[str], last_read: dict[str, int]) -> list[str]:
        """Variables for the tops of node `node_index`: the blob's name, unless that variable
        still holds a value read later."""
        holders = {var: val for val, var in self._vars.items()}
        out = []
        for val in values:
            blob = self.graph.blob_of.get(val, val)
            var = identifier(blob)
            k = 1
            base = var
            while var in out or (var in holders and last_read.get(holders[var], -1) > node_index):
                k += 1
                var = f"{base}_{k}"
            self._vars[val] = var
            holders[var] = val
            out.append(var)
        return out


def generate(graph: ExportGraph, traced: bool = False) -> tuple[str, dict[str, torch.Tensor]]:
    """(model.py source, state dict) for an export graph; traced: for torch.export (layers
    that only run eagerly refuse)."""
    s = SourceBuilder(graph, traced)
    last_read: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.bottoms:
            last_read[v] = i
    for v in graph.outputs:
        last_read[v] = len(graph.nodes) + 1
    args = []
    for v in graph.inputs:
        var = identifier(v, set(args))
        s._vars[v] = var
        args.append(var)
    lines = []
    for i, node in enumerate(graph.nodes):
        ex = exporter_for(node, graph)
        s.declare_blobs(node)
        expr = ex.torch(s, node)
        comment = f"# {node.name} ({node.type})"
        if not node.tops:
            lines.append(f"{comment}: nothing to compute")
            continue
        tops = s.assign(i, node.tops, last_read)
        lhs = tops[0] if len(tops) == 1 else ", ".join(tops)
        lines.append(f"{lhs} = {expr}  {comment}")
    outs = [s.v(v) for v in graph.outputs]
    net = graph.net
    src: list[str] = []
    src.append(f'"""{net.name or "net"}: a Caffe net as PyTorch, generated by decaffe '
               f'{__version__} (decaffe export -pytorch).')
    src.append("")
    src.append("`Net` is one nn.Module whose forward has one line per Caffe layer. Each layer "
               "with blobs is an")
    src.append("attribute named after the Caffe layer, holding its blobs in Caffe's order "
               "(self.conv1[0] is")
    src.append("pycaffe's net.params['conv1'][0]); CAFFE_NAMES maps renamed attributes back. "
               "Needs torch only.")
    src.append("")
    src.append("    import model")
    src.append("    net = model.load()            # weights.pth next to this file")
    src.append(f"    outputs = net({', '.join(args)})   # shapes in INPUTS; returns "
               + ("OUTPUTS[0]" if len(outs) == 1 else "a tuple in OUTPUTS' order"))
    src.append('"""')
    src.append("")
    src.append("import math  # noqa: F401  (-math.inf pads of Caffe's MAX pooling)")
    src.append("import os")
    src.append("")
    src.append("import torch")
    src.append("import torch.nn.functional as F")
    src.append("")
    inputs = {v: tuple(graph.shapes[v]) for v in graph.inputs}
    src.append(f"INPUTS = {inputs!r}")
    src.append(f"OUTPUTS = {list(graph.outputs)!r}")
    if s.caffe_names:  # attribute -> Caffe layer name, one per line
        src.append("CAFFE_NAMES = {")
        src.extend(f"    {a!r}: {n!r}," for a, n in s.caffe_names.items())
        src.append("}")
    else:
        src.append("CAFFE_NAMES = {}")
    src.append("")
    for name in s.helpers:
        src.append("")
        src.append(inspect.getsource(runtime.HELPERS[name]).rstrip())
        src.append("")
    src.append("")
    src.append("class Net(torch.nn.Module):")
    src.append("    def __init__(self):")
    src.append("        super().__init__()")
    for line in s.init_lines:
        src.append("        " + line)
    src.append("")
    src.append(f"    def forward(self, {', '.join(args)}):")
    for line in lines:
        src.append("        " + line)
    src.append(f"        return {', '.join(outs)}")
    src.append("")
    src.append("")
    src.append("def load(path=None, map_location='cpu'):")
    src.append('    """The net with its weights (default: weights.pth next to this file), in eval '
               'mode."""')
    src.append("    if path is None:")
    src.append("        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "
               "'weights.pth')")
    src.append("    net = Net()")
    src.append("    net.load_state_dict(torch.load(path, map_location=map_location, "
               "weights_only=True))")
    src.append("    return net.eval()")
    src.append("")
    src.append("")
    src.append("if __name__ == '__main__':")
    src.append("    net = load()")
    src.append("    with torch.no_grad():")
    src.append("        outs = net(*(torch.randn(shape) for shape in INPUTS.values()))")
    src.append("    outs = outs if isinstance(outs, tuple) else (outs,)")
    src.append("    for name, out in zip(OUTPUTS, outs):")
    src.append("        print(name, tuple(out.shape))")
    return "\n".join(src) + "\n", s.state


def instantiate(source: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The generated Net from its source and state dict, in eval mode (in this process)."""
    mod = types.ModuleType("decaffe_generated_model")
    mod.__file__ = "<decaffe generated model.py>"
    exec(compile(source, "<decaffe generated model.py>", "exec"), mod.__dict__)
    net = mod.Net()
    net.load_state_dict(state)
    return net.eval()


def write(out_dir: str, source: str, state: dict[str, torch.Tensor], suffix: str = "") -> None:
    """Write model.py and weights.pth (each with suffix) into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, "model.py" + suffix), "w") as f:
        f.write(source)
    with atomic_write(os.path.join(out_dir, "weights.pth" + suffix)) as f:
        torch.save(state, f)

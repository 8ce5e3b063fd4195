"""The generated model.py and the .pt2 program run where decaffe cannot be imported: a fresh
interpreter (-I: no PYTHONPATH, no user site) whose import system refuses `decaffe` and
`caffe` and whose path holds no decaffe checkout, with torch from the same environment."""

from __future__ import annotations

import ast
import inspect
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from conftest import MODELS
from export_helpers import deploy_net, export_all

from decaffe.export import runtime
from decaffe.export.verify import random_inputs, reference_outputs, relative_difference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUNNER = textwrap.dedent("""
    import importlib.abc, os, sys

    class NoDecaffe(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('decaffe', 'caffe'):
                raise ImportError('decaffe is not installed here: ' + name)
            return None

    sys.meta_path.insert(0, NoDecaffe())
    root = os.path.realpath(sys.argv[1])
    # the checkout's own folders go; a virtual environment inside it (CI's .venv) stays
    def _checkout(p):
        rp = os.path.realpath(p)
        inside = rp == root or rp.startswith(root + os.sep)
        return inside and 'site-packages' not in rp.split(os.sep)
    sys.path[:] = [p for p in sys.path if p and not _checkout(p)]
    out_dir = sys.argv[2]
    try:
        import decaffe  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit('decaffe is importable')
    import torch
    sys.path.insert(0, out_dir)
    os.chdir(out_dir)
    import model
    inputs = torch.load('inputs.pt')
    net = model.load()
    with torch.no_grad():
        outs = net(*inputs)
        program = torch.export.load(sys.argv[3]).module()
        outs2 = program(*inputs)
    as_tuple = lambda o: tuple(o) if isinstance(o, (tuple, list)) else (o,)
    torch.save({'model': as_tuple(outs), 'program': as_tuple(outs2)}, 'outputs.pt')
    assert not [m for m in sys.modules if m.split('.')[0] in ('decaffe', 'caffe')]
    import runpy
    runpy.run_path('model.py', run_name='__main__')
""")


def test_generated_model_runs_without_decaffe(tmp_path):
    # cifar10_full: Caffe's ceil-mode pooling and WITHIN_CHANNEL LRN (a helper function)
    net = deploy_net(os.path.join(MODELS, "bvlc/examples/cifar10/cifar10_full.prototxt"), batch=2)
    reports = export_all(net, str(tmp_path), forms=("pytorch", "torch"))
    out_dir = reports["pytorch"].path
    graph = reports["pytorch"].graph
    source = open(os.path.join(out_dir, "model.py")).read()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"math", "os", "torch", "torch.nn.functional", "numpy"}, imported
    # one line per Caffe layer, named as in Caffe
    for node in graph.nodes:
        assert source.count(f"  # {node.name} ({node.type})") >= 1, node.name
    inputs = random_inputs(graph, seed=7)
    torch.save(tuple(torch.from_numpy(inputs[v]) for v in graph.inputs),
               os.path.join(out_dir, "inputs.pt"))
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([sys.executable, "-I", str(script), ROOT, out_dir,
                           reports["torch"].path], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{graph.outputs[0]} (2," in proc.stdout  # model.py run as a script
    got = torch.load(os.path.join(out_dir, "outputs.pt"))
    ref = reference_outputs(graph, inputs)
    for form in ("model", "program"):
        for v, out in zip(graph.outputs, got[form]):
            assert relative_difference(ref[v], out.numpy()) <= 1e-4, (form, v)
    assert np.isfinite(ref[graph.outputs[0]]).all()


def test_every_helper_defines_with_only_model_py_imports():
    """model.py copies a helper's source and evaluates its annotations (it has no
    `from __future__ import annotations`) with only its own imports in scope."""
    namespace = {"math": math, "os": os, "torch": torch, "F": torch.nn.functional}
    for name, f in runtime.HELPERS.items():
        exec(compile(inspect.getsource(f), f"<{name}>", "exec"), namespace)
        assert callable(namespace[name]), name

"""pycaffe's whole public surface, as data: every class member and module name of BVLC master's
binding (python/caffe/_caffe.cpp) and Python files, recorded with its source in
pycaffe_surface.json. Each must exist on decaffe's objects and be exercised by some other
test."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys

import pytest

import caffe

NET = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""

SOLVER = """
base_lr: 0.01 lr_policy: "fixed" max_iter: 2 display: 0 snapshot_after_train: false
test_iter: 1 test_interval: 100 test_initialization: false
net_param {
  layer { name: "data" type: "DummyData" top: "x" top: "y"
          dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 }
                             data_filler { type: "gaussian" } data_filler { type: "constant" } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
          inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }
}
"""

SURFACE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pycaffe_surface.json")
SURFACE = json.load(open(SURFACE_FILE))
TESTS_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PY_LAYER_NET = """
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "py" type: "Python" bottom: "ip" top: "y"
        python_param { module: "pycaffe_surface_layer" layer: "Scaled" param_str: "2" } }
"""

PY_LAYER_MODULE = """
import caffe


class Scaled(caffe.Layer):
    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.blobs[0].data[0]

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff * self.blobs[0].data[0]
"""


@pytest.fixture
def objects(tmp_path, monkeypatch):
    """One live instance of each pycaffe class, keyed by the class names of the surface file."""
    (tmp_path / "pycaffe_surface_layer.py").write_text(PY_LAYER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    net_file = tmp_path / "py.prototxt"
    net_file.write_text(PY_LAYER_NET)
    net = caffe.Net(str(net_file), caffe.TRAIN)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(SOLVER)
    solver = caffe.get_solver(str(solver_file))
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(NET)
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 2]))
    yield {"Net": [net], "Blob": [net.blobs["ip"], net.params["ip"][0]],
           "Layer": [net.layers[1], net.layers[2]], "python_layer": [net.layers[2]],
           "BlobVec": [net.layers[2].blobs], "SolverParameter": [solver.param],
           "Solver": [solver], "NCCL": [caffe.NCCL], "Timer": [caffe.Timer()],
           "Transformer": [caffe.io.Transformer({"data": (1, 3, 4, 4)})],
           "Classifier": [caffe.Classifier(str(deploy), None)],
           "Detector": [caffe.Detector(str(deploy), None)], "NetSpec": [caffe.NetSpec]}
    sys.modules.pop("pycaffe_surface_layer", None)


def _members():
    for cls, groups in SURFACE["classes"].items():
        for group, names in groups.items():
            if group == "subclasses":
                continue
            for name in names:
                yield cls, group, name


def test_surface_file_names_its_source():
    src = SURFACE["source"]
    assert src["repo"] == "BVLC/caffe" and src["branch"] == "master"
    assert any(f.startswith("python/caffe/_caffe.cpp") for f in src["files"])
    assert sum(1 for _ in _members()) > 80


def test_every_member_exists_on_decaffes_objects(objects):
    missing = []
    for cls, group, name in _members():
        key = "python_layer" if group == "python_layer" else cls
        for obj in objects[key]:
            if group == "gpu_builds_only":
                ok = isinstance(getattr(type(obj), name, None), property)
            else:
                ok = hasattr(obj, name)
            if not ok:
                missing.append(f"{cls}.{name} on {obj!r}")
    for sub in SURFACE["classes"]["Solver"]["subclasses"]:
        if not issubclass(getattr(caffe, sub), caffe._caffe.Solver):
            missing.append(f"{sub} is not a caffe._caffe.Solver")
    for name in SURFACE["package"]["names"] + SURFACE["package"]["submodules"]:
        if not hasattr(caffe, name):
            missing.append(f"caffe.{name}")
    for key in ("binding_module", "pycaffe_module"):
        mod = importlib.import_module(SURFACE[key]["module"])
        missing += [f"{mod.__name__}.{n}" for n in SURFACE[key]["names"] if not hasattr(mod, n)]
    for module, names in SURFACE["modules"].items():
        mod = importlib.import_module(module)
        missing += [f"{module}.{n}" for n in names if not hasattr(mod, n)]
    assert not missing, missing


def test_vector_types_are_sequences(objects):
    net, solver = objects["Net"][0], objects["Solver"][0]
    vectors = {"BlobVec": net.layers[2].blobs, "LayerVec": net.layers, "StringVec":
               net._layer_names, "IntVec": net._inputs, "DtypeVec": net._blob_loss_weights,
               "NetVec": solver.test_nets, "BoolVec": net.bottom_need_backward(1),
               "RawBlobVec": [net.blobs[n] for n in net.bottom_names["py"]]}
    assert set(vectors) == set(SURFACE["vector_types"]["names"])
    for name, vec in vectors.items():
        items = [vec[i] for i in range(len(vec))]
        assert items == list(iter(vec)), name


def _test_sources() -> str:
    me = os.path.abspath(__file__)
    texts = []
    for dirpath, _, files in os.walk(TESTS_ROOT):
        for f in files:
            path = os.path.join(dirpath, f)
            if f.endswith(".py") and path != me:
                with open(path, encoding="utf-8") as fh:
                    texts.append(fh.read())
    return "\n".join(texts)


def test_every_name_is_exercised_by_some_test():
    """Each class member is reached as `.name` and each module name as `mod.name` (or
    imported) in some test besides this file; protocol methods by the test named for them."""
    src = _test_sources()
    explicit = {k: v for k, v in SURFACE["exercised_by"].items() if k != "note"}
    unexercised = []

    def seen(pattern: str) -> bool:
        return re.search(pattern, src) is not None

    for cls, _, name in _members():
        key = f"{cls}.{name}"
        if key in explicit:
            path, func = explicit[key].split("::")
            with open(os.path.join(os.path.dirname(TESTS_ROOT), path), encoding="utf-8") as f:
                if f"def {func}(" not in f.read():
                    unexercised.append(f"{key} (no {explicit[key]})")
            continue
        if not seen(rf"\.{re.escape(name)}\b"):
            unexercised.append(key)
    for name in SURFACE["package"]["names"] + SURFACE["package"]["submodules"]:
        if not seen(rf"\bcaffe\.{re.escape(name)}\b"):
            unexercised.append(f"caffe.{name}")
    modules = [(SURFACE[k]["module"], SURFACE[k]["names"])
               for k in ("binding_module", "pycaffe_module")] + list(SURFACE["modules"].items())
    for module, names in modules:
        for name in names:
            if not seen(rf"(?:\.|\bimport\s+|,\s*){re.escape(name)}\b"):
                unexercised.append(f"{module}.{name}")
    assert not unexercised, unexercised

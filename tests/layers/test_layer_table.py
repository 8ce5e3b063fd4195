"""Every generic check over the table of layers (tests/layer_db.py), for every registered
layer type: the table lists each type; each sample builds in both phases; the layer's Reshape
predicts the shapes its forward makes; forward is deterministic; backward agrees with finite
differences (tests/gradcheck.py); every golden case it names replays (on the CPU, and on a
GPU where PyTorch sees one); the types that export export to ONNX and PyTorch and back within
1e-4; fuzzed parameters give errors that name the layer. Family test modules keep only what
is special to their family.

The gradient and export checks run on every sample (the gradient check on at most 24
elements a blob by default, 400 with DECAFFE_SLOW=1); the fuzz check runs on a small sample by
default (the first sample of every tenth type) and on the whole table with DECAFFE_SLOW=1."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from conftest import GOLDEN
from export_helpers import export_all, randomize
from golden_replay import replay_layer_case
from gradcheck import check_gradients
from layer_db import LAYERS
from netbuild import build, input_kinds, net_text, random_inputs

import caffe
import decaffe.export
from decaffe.errors import DecaffeError
from decaffe.export.registry import EXPORTS, ExportError
from decaffe.formats import prototxt
from decaffe.layer import layer_type_list
from decaffe.proto import caffe_pb2

SLOW = bool(os.environ.get("DECAFFE_SLOW"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = [(t, s) for t, row in sorted(LAYERS.items()) for s in row.samples]
FIRSTS = [(t, row.samples[0]) for t, row in sorted(LAYERS.items()) if row.samples]


def _ids(pairs):
    return [f"{t}-{s.id}" for t, s in pairs]


def _subset(pairs):
    """The whole list with DECAFFE_SLOW=1, else every tenth (a small, fixed sample)."""
    return pairs if SLOW else pairs[::10]


def _phase(sample) -> int:
    return caffe.TEST if sample.phase == "TEST" else caffe.TRAIN


def _inputs(sample, seed: int = 0) -> dict[str, np.ndarray]:
    """The golden case's recorded inputs (its first pass), else values its layers accept."""
    if not sample.golden:
        got = random_inputs(sample.net, sample.inputs, seed)
        if sample.values:
            rng = np.random.default_rng(seed)
            kinds = input_kinds(sample.net)
            for n in got:
                if n not in kinds:
                    got[n] = rng.uniform(*sample.values, np.shape(got[n])).astype(np.float32)
        return got
    z = np.load(os.path.join(GOLDEN, sample.id + ".npz"))
    got = {k[len("input/"):]: z[k] for k in z.files if k.startswith("input/")}
    if any("/" in k for k in got):
        got = {k[2:]: v for k, v in got.items() if k.startswith("0/")}
    return got


def _fed(net, inputs: dict[str, np.ndarray]):
    for name, arr in inputs.items():
        net.blobs[name].data[...] = arr
    return net


# ----------------------------------------------------------------------------------------------
# the table itself
# ----------------------------------------------------------------------------------------------
def test_every_registered_type_has_a_row():
    assert sorted(set(layer_type_list()) - set(LAYERS)) == []
    assert sorted(set(LAYERS) - set(layer_type_list())) == []


def test_each_row_has_samples_or_names_the_module_covering_it():
    for t, row in LAYERS.items():
        for s in row.samples:
            param = prototxt.parse_text(s.net, caffe_pb2.NetParameter())
            assert t in {lp.type for lp in param.layer}, (t, s.id)
        if not row.samples:
            path = os.path.join(ROOT, row.covered_by or "")
            assert row.covered_by and os.path.isfile(path), t
            text = open(path, encoding="utf-8").read()
            assert re.search(rf"\b{t}\b", text), (t, row.covered_by)


def test_the_exports_column_is_the_export_registry():
    assert decaffe.export.EXPORTS is EXPORTS
    assert {t for t, r in LAYERS.items() if r.exports} == set(EXPORTS) & set(LAYERS)


def test_the_golden_column_lists_the_cases_naming_each_type():
    with open(os.path.join(GOLDEN, "INDEX.json")) as f:
        index = json.load(f)["cases"]
    want: dict[str, set[str]] = {}
    for c in index:
        if c["kind"] in ("layer", "data"):
            param = prototxt.read_net(os.path.join(GOLDEN, c["name"] + ".prototxt"))
            for lp in param.layer:
                if lp.type != "Input":
                    want.setdefault(lp.type, set()).add(c["name"])
    got = {t: set(r.golden) for t, r in LAYERS.items() if r.golden}
    assert got == want


# ----------------------------------------------------------------------------------------------
# every sample
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_, sample", SAMPLES, ids=_ids(SAMPLES))
def test_builds_in_both_phases(type_, sample):
    param = prototxt.parse_text(sample.net, caffe_pb2.NetParameter())
    names = [lp.name for lp in param.layer if lp.type == type_]
    for phase in (caffe.TRAIN, caffe.TEST):
        net = build(sample.net, sample.inputs, phase)
        assert set(names) <= set(net.layer_dict), (names, list(net.layer_dict))


@pytest.mark.parametrize("type_, sample", SAMPLES, ids=_ids(SAMPLES))
def test_reshape_predicts_forward_and_forward_repeats(type_, sample):
    """Caffe's Reshape gives the top shapes before any data flows; forward makes tops of those
    shapes; two seeded forwards of the same inputs give the same tops."""
    net = build(sample.net, sample.inputs, _phase(sample))
    predicted = {name: tuple(b.shape) for name, b in net.blobs.items()}
    inputs = _inputs(sample)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        _fed(net, inputs).forward()
        outs.append({name: np.array(b.data) for name, b in net.blobs.items()})
    for name, arr in outs[0].items():
        if not LAYERS[type_].shapes_in_forward:
            assert arr.shape == predicted[name], (name, arr.shape, predicted[name])
        np.testing.assert_array_equal(arr, outs[1][name], err_msg=name)


def _types(sample) -> set[str]:
    return {lp.type for lp in prototxt.parse_text(sample.net, caffe_pb2.NetParameter()).layer}


def _gradable(t: str, s) -> bool:
    return bool(LAYERS[t].backward) and all(LAYERS[x].backward for x in _types(s)) and not s.grad


# every sample whose layers all have a backward, once (under the first type listing it); all
# of them by default (each checks at most 24 elements a blob, about 0.05 s), 400 when slow
GRAD = [(t, s) for t, s in SAMPLES if _gradable(t, s)]
GRAD = [(t, s) for i, (t, s) in enumerate(GRAD) if s.id not in {x.id for _, x in GRAD[:i]}]


def _grad_inputs(sample, seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The inputs of a gradient check and the names of those to check: the sample's own
    values for labels, indices and flags; random values for the rest, moved 0.1 past any kink
    they fall within 0.05 of, or distinct values 0.05 apart over all the inputs together (no
    ties) where the layers ask."""
    kinds = input_kinds(sample.net)
    values = _inputs(sample, seed)
    rng = np.random.default_rng(seed)
    types = _types(sample)
    kinks = [k for t in types for k in LAYERS[t].kinks] + list(sample.kinks)
    floats = [n for n in sample.inputs if n not in kinds]
    shapes = [np.shape(values[name]) for name in floats]
    if any(LAYERS[t].distinct_inputs for t in types):  # distinct over all inputs together
        n = sum(int(np.prod(s)) for s in shapes)
        flat = (rng.permutation(n) - n / 2) * 0.05 + 0.025
        if sample.values:  # spread over the range instead, as far apart as it allows
            lo, hi = sample.values
            flat = lo + (rng.permutation(n) + 0.5) * (hi - lo) / n
        parts = np.split(flat, np.cumsum([int(np.prod(s)) for s in shapes])[:-1])
    for i, (name, shape) in enumerate(zip(floats, shapes)):
        if any(LAYERS[t].distinct_inputs for t in types):
            x = parts[i]
        else:
            x = rng.uniform(*sample.values, shape) if sample.values else rng.standard_normal(shape)
            for k in kinks:
                x = np.where(np.abs(x - k) < 0.05, k + 0.1, x)
        values[name] = np.asarray(x, np.float64).reshape(shape)
    return values, floats


@pytest.mark.parametrize("type_, sample", GRAD, ids=_ids(GRAD))
def test_backward_agrees_with_finite_differences(type_, sample):
    inputs, floats = _grad_inputs(sample, seed=1)
    check_gradients(net_text(sample.net, sample.inputs), inputs, phase=_phase(sample),
                    check_inputs=floats, step=LAYERS[type_].grad_step,
                    max_checks=400 if SLOW else 24)


def _golden_cases() -> list[dict]:
    """The `layer` golden cases the golden column names (every one: the column is checked
    against INDEX.json above), each once; the `data` ones replay in tests/data."""
    with open(os.path.join(GOLDEN, "INDEX.json")) as f:
        index = {c["name"]: c for c in json.load(f)["cases"]}
    names = sorted({n for r in LAYERS.values() for n in r.golden})
    return [index[n] for n in names if index[n]["kind"] == "layer"]


GOLDEN_CASES = _golden_cases()
# the cases replayed on a GPU so far (BVLC's and SSD's); the other forks' are CPU-only here
GPU_CASES = [c for c in GOLDEN_CASES if not c["name"].startswith("fork_") or c["name"].startswith(
    ("fork_priorbox", "fork_permute", "fork_normalize", "fork_detection_output",
     "fork_multiboxloss", "fork_detection_evaluate"))]


def test_every_golden_case_is_replayed():
    """The `layer` cases here; the `data` ones by tests/data/test_data_golden.py (BVLC's) and
    test_annotated_data.py (the SSD fork's AnnotatedData, the one fork data layer)."""
    with open(os.path.join(GOLDEN, "INDEX.json")) as f:
        index = json.load(f)["cases"]
    assert {c["name"] for c in index if c["kind"] == "layer"} == {c["name"] for c in GOLDEN_CASES}
    data = [c["name"] for c in index if c["kind"] == "data"]
    assert [n for n in data if n.startswith("fork_") and not n.startswith("fork_annotated")] == []


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=[c["name"] for c in GOLDEN_CASES])
def test_every_golden_case_replays(case):
    """Forward and backward within the goldens' tolerances (tests/golden/README.md)."""
    replay_layer_case(caffe, case["name"], case["phase"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", GPU_CASES, ids=[c["name"] for c in GPU_CASES])
def test_every_golden_case_replays_on_gpu(case):
    caffe.set_mode_gpu()
    try:
        replay_layer_case(caffe, case["name"], case["phase"])
    finally:
        caffe.set_mode_cpu()


# every sample whose layers all export, once, whose inputs the exporter's checks can draw (not
# MaxUnPool's positions, which only a Pooling in the net makes valid)
def _drawable(sample) -> bool:
    kinds = input_kinds(sample.net)
    return all(kinds.get(n, ("normal",))[0] != "fixed" for n in sample.inputs)


EXPORTING = [(t, s) for t, s in SAMPLES
             if all(LAYERS[x].exports for x in _types(s)) and _drawable(s)]
EXPORTING = [(t, s) for i, (t, s) in enumerate(EXPORTING)
             if s.id not in {x.id for _, x in EXPORTING[:i]}]


@pytest.mark.parametrize("type_, sample", EXPORTING, ids=_ids(EXPORTING))
def test_exports_and_comes_back(type_, sample, tmp_path):
    net = build(sample.net, sample.inputs, caffe.TEST)
    randomize(net, seed=3)
    forms = [f for f in LAYERS[type_].export_forms
             if all(f in LAYERS[x].export_forms for x in _types(sample))]
    if sample.export_error:  # a refusal that names the layer and says why
        with pytest.raises(ExportError, match=f"layer '.*'.*{re.escape(sample.export_error)}"):
            export_all(net, str(tmp_path), forms=tuple(forms))
    else:
        export_all(net, str(tmp_path), forms=tuple(forms))


def _mutants(sample):
    """The sample's layer with one numeric field of its parameter messages set to -1, 0 or
    2**31 - 1 (within the field's type), one mutant per field and value."""
    param = prototxt.parse_text(sample.net, caffe_pb2.NetParameter())
    for li, lp in enumerate(param.layer):
        for fd, msg in lp.ListFields():
            if fd.message_type is None or not fd.name.endswith("_param") or fd.is_repeated:
                continue
            for f2 in msg.DESCRIPTOR.fields:
                if f2.type not in (f2.TYPE_INT32, f2.TYPE_UINT32, f2.TYPE_INT64,
                                   f2.TYPE_FLOAT, f2.TYPE_DOUBLE) or f2.is_repeated:
                    continue
                for value in (-1, 0, 2**31 - 1):
                    if value < 0 and f2.type == f2.TYPE_UINT32:
                        continue
                    mutant = caffe_pb2.NetParameter()
                    mutant.CopyFrom(param)
                    setattr(getattr(mutant.layer[li], fd.name), f2.name, value)
                    yield f"{lp.name}.{fd.name}.{f2.name}={value}", lp.name, mutant


FUZZ = _subset(FIRSTS)


@pytest.mark.parametrize("type_, sample", FUZZ, ids=_ids(FUZZ))
def test_fuzzed_parameters_build_or_name_the_layer(type_, sample):
    """A layer given an out-of-range parameter builds (and runs) or raises a DecaffeError
    that names it; never another exception."""
    head = prototxt.parse_text(net_text("", sample.inputs), caffe_pb2.NetParameter())
    inputs = _inputs(sample)
    bad = []
    for what, lname, mutant in _mutants(sample):
        full = caffe_pb2.NetParameter()
        full.CopyFrom(head)
        full.layer.extend(mutant.layer)
        try:
            net = caffe.Net(full, phase=_phase(sample))
            for name, arr in inputs.items():
                net.blobs[name].data[...] = arr
            net.forward()
        except DecaffeError as e:
            if lname not in str(e):
                bad.append(f"{what}: {e}")
        except (MemoryError, RuntimeError) as e:  # a shape too large to allocate
            if "memory" not in str(e).lower() and "alloc" not in str(e).lower():
                bad.append(f"{what}: {type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - the check is that nothing else escapes
            bad.append(f"{what}: {type(e).__name__}: {e}")
    assert bad == []

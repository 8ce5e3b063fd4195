"""Prototxt parsing and printing over the real-model corpus (tests/models) and the goldens,
and the errors a user gets for bad text."""

from __future__ import annotations

import csv
import glob
import json
import os
import re

import pytest
from google.protobuf import text_format

from decaffe.errors import DecaffeError, ParseError
from decaffe.formats import prototxt
from decaffe.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")
GOLDEN = os.path.join(HERE, "..", "golden")

with open(os.path.join(MODELS, "MANIFEST.tsv"), newline="") as _f:
    MANIFEST = list(csv.DictReader(_f, delimiter="\t"))

KINDS = {"net": caffe_pb2.NetParameter, "solver": caffe_pb2.SolverParameter,
         "other": caffe_pb2.LabelMap}
OK_ROWS = [r for r in MANIFEST if not r["parses_with_ssd_caffe_proto"].startswith("FAIL")]
FAIL_ROWS = [r for r in MANIFEST if r["parses_with_ssd_caffe_proto"].startswith("FAIL")]


def _path(row) -> str:
    return os.path.join(MODELS, row["local_path"])


def _golden_prototxts() -> list[tuple[str, type]]:
    with open(os.path.join(GOLDEN, "INDEX.json")) as f:
        solver_upgrades = {c["name"] for c in json.load(f)["cases"]
                           if c.get("tool") == "upgrade_solver_proto_text"}
    out = []
    for p in sorted(glob.glob(os.path.join(GOLDEN, "*.prototxt"))):
        base = os.path.basename(p)
        stem = base.rsplit(".", 2)[0]
        solver = base.endswith(".solver.prototxt") or stem in solver_upgrades
        out.append((p, caffe_pb2.SolverParameter if solver else caffe_pb2.NetParameter))
    return out


def test_manifest_covers_every_file():
    files = {os.path.relpath(p, MODELS) for p in
             glob.glob(os.path.join(MODELS, "**", "*.prototxt"), recursive=True)}
    assert files == {r["local_path"] for r in MANIFEST}
    assert len(FAIL_ROWS) == 3


@pytest.mark.parametrize("row", OK_ROWS, ids=lambda r: r["local_path"])
def test_corpus_file_parses(row):
    msg = prototxt.read_text(_path(row), KINDS[row["kind"]]())
    if row["kind"] == "net":
        declared = int(row["num_layers"])
        assert len(msg.layer) + len(msg.layers) == declared
    elif row["kind"] == "other":
        assert len(msg.item) > 0
    else:
        assert msg.ListFields()


@pytest.mark.parametrize("row", FAIL_ROWS, ids=lambda r: r["local_path"])
def test_template_placeholders_fail_at_caffes_position(row):
    m = re.match(r"FAIL: input:(\d+):(\d+): (.*)", row["parses_with_ssd_caffe_proto"])
    line, column, caffe_reason = int(m.group(1)), int(m.group(2)), m.group(3)
    with pytest.raises(ParseError) as info:
        prototxt.read_text(_path(row), caffe_pb2.NetParameter())
    err = info.value
    assert (err.line, err.column) == (line, column)
    assert err.path == _path(row)
    assert f"{_path(row)}:{line}:{column}:" in str(err)
    placeholder = caffe_reason.rsplit(" ", 1)[-1]
    assert placeholder in str(err)


def _roundtrip_cases():
    cases = [(_path(r), KINDS[r["kind"]]) for r in OK_ROWS]
    return cases + _golden_prototxts()


@pytest.mark.parametrize("path,kind", _roundtrip_cases(),
                         ids=lambda x: os.path.basename(x) if isinstance(x, str) else "")
def test_roundtrip_through_caffe_layout_and_python_text(path, kind):
    original = prototxt.read_text(path, kind())
    again = prototxt.parse_text(prototxt.to_text(original), kind())
    assert again == original
    via_str = kind()
    text_format.Parse(str(original), via_str)
    assert via_str == original
    # and python's own printing parses back through ours
    assert prototxt.parse_text(str(original), kind()) == original


def test_to_text_uses_caffes_layout():
    p = caffe_pb2.NetParameter(name="n")
    lp = p.layer.add(name="c", type="Convolution", bottom=["data"], top=["c"])
    lp.convolution_param.num_output = 8
    lp.convolution_param.weight_filler.std = 0.01
    lp.param.add(lr_mult=1.0)
    text = prototxt.to_text(p)
    assert text == (
        'name: "n"\n'
        "layer {\n"
        '  name: "c"\n'
        '  type: "Convolution"\n'
        '  bottom: "data"\n'
        '  top: "c"\n'
        "  param {\n"
        "    lr_mult: 1\n"
        "  }\n"
        "  convolution_param {\n"
        "    num_output: 8\n"
        "    weight_filler {\n"
        "      std: 0.01\n"
        "    }\n"
        "  }\n"
        "}\n")


def test_write_text_is_atomic_and_parses(tmp_path):
    p = prototxt.read_text(os.path.join(MODELS, "bvlc/examples/mnist/lenet.prototxt"),
                           caffe_pb2.NetParameter())
    out = tmp_path / "lenet.prototxt"
    prototxt.write_text(p, str(out))
    assert prototxt.read_text(str(out), caffe_pb2.NetParameter()) == p
    assert os.listdir(tmp_path) == ["lenet.prototxt"]


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
def _fail(text: str, kind=caffe_pb2.NetParameter) -> ParseError:
    with pytest.raises(ParseError) as info:
        prototxt.parse_text(text, kind(), "net.prototxt")
    assert isinstance(info.value, DecaffeError)
    return info.value


def test_typo_in_field_name_names_position_and_suggests():
    err = _fail('name: "n"\nlayer {\n  name: "r"\n  tpye: "ReLU"\n}\n')
    assert (err.line, err.column) == (4, 3)
    assert str(err).startswith("net.prototxt:4:3:")
    assert "tpye" in str(err) and "did you mean 'type'" in str(err)


def test_typo_in_nested_field_suggests_from_that_message():
    err = _fail("layer {\n  convolution_param {\n    num_outptu: 3\n  }\n}\n")
    assert (err.line, err.column) == (3, 5)
    assert "'num_output'" in str(err)


def test_unknown_enum_value_lists_the_valid_ones():
    err = _fail("layer {\n  pooling_param {\n    pool: MAXIMUM\n  }\n}\n")
    assert err.line == 3
    assert "MAXIMUM" in str(err)
    assert "valid: MAX, AVE, STOCHASTIC" in str(err)


def test_unknown_solver_enum_value():
    err = _fail("solver_mode: TPU\n", caffe_pb2.SolverParameter)
    assert err.line == 1
    assert "valid: CPU, GPU" in str(err)


def test_missing_closing_brace_points_at_the_end():
    text = 'layer {\n  name: "a"\n  type: "ReLU"\n'
    err = _fail(text)
    assert (err.line, err.column) == (4, 1)
    assert 'Expected "}"' in str(err) and "ended" in str(err)
    err = _fail('layer {\n  name: "a"\n  type: "ReLU"')
    assert (err.line, err.column) == (3, 15)


def test_extra_closing_brace():
    err = _fail('layer {\n  name: "a"\n}\n}\n')
    assert (err.line, err.column) == (4, 1)


def test_value_of_wrong_type():
    err = _fail("layer {\n  convolution_param {\n    num_output: many\n  }\n}\n")
    assert (err.line, err.column) == (3, 17)
    assert "many" in str(err)


def test_duplicate_singular_field_is_an_error_as_in_caffe():
    err = _fail('name: "a"\nname: "b"\n')
    assert err.line == 2


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(ParseError) as info:
        prototxt.read_text(str(tmp_path / "nope.prototxt"), caffe_pb2.NetParameter())
    assert "nope.prototxt" in str(info.value)
    bad = tmp_path / "weights.prototxt"
    bad.write_bytes(b"\x0a\x03abc\xff\xfe\x00")
    with pytest.raises(ParseError):
        prototxt.read_text(str(bad), caffe_pb2.NetParameter())


def test_read_net_accepts_text_and_upgrades():
    p = prototxt.read_net('name: "t"\ninput: "data"\ninput_dim: 1\ninput_dim: 2\n'
                          'input_dim: 3\ninput_dim: 4\n')
    assert [(lp.name, lp.type) for lp in p.layer] == [("input", "Input")]
    assert list(p.layer[0].input_param.shape[0].dim) == [1, 2, 3, 4]
    raw = prototxt.read_net('name: "t"\ninput: "data"\ninput_dim: 1\ninput_dim: 2\n'
                            'input_dim: 3\ninput_dim: 4\n', upgrade=False)
    assert list(raw.input) == ["data"]


def test_read_solver_upgrades_solver_type():
    s = prototxt.read_solver('base_lr: 0.1\nsolver_type: NESTEROV\n')
    assert s.type == "Nesterov" and not s.HasField("solver_type")


def test_a_suggestion_differing_only_in_case_comes_first():
    from decaffe.errors import suggest

    assert suggest("ReLu", ["SeLu", "ReLU6", "ReLU", "PReLU"]).startswith(" (did you mean 'ReLU', ")
    assert suggest("Convolution", ["Deconvolution"]) == " (did you mean 'Deconvolution'?)"

"""Caffe's upgrade_proto: the golden cases through the CLI, the corpus of legacy files, and
each upgrade step on small hand-written nets."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from google.protobuf import text_format

from decaffe.errors import DecaffeError, ParseError
from decaffe.formats import prototxt, upgrade
from decaffe.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")
GOLDEN = os.path.join(HERE, "..", "golden")

with open(os.path.join(GOLDEN, "INDEX.json")) as _f:
    UPGRADE_CASES = [c for c in json.load(_f)["cases"] if c["kind"] == "upgrade"]
with open(os.path.join(MODELS, "MANIFEST.tsv"), newline="") as _f:
    MANIFEST = list(csv.DictReader(_f, delimiter="\t"))
LEGACY_NETS = [r for r in MANIFEST if r["kind"] == "net"
               and (r["format"] in ("V0", "V1") or r["old_input"])
               and not r["parses_with_ssd_caffe_proto"].startswith("FAIL")]
LEGACY_SOLVERS = [r for r in MANIFEST if r["kind"] == "solver" and r["format"] in ("V0", "V1")]

GLOG_E = re.compile(r"^E\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [^ ]+:\d+\] ")


def _main(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process (fast): exit status, stdout, stderr."""
    from decaffe.cli import main

    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse's usage errors and -help
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "decaffe", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def _net(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


# ---------------------------------------------------------------------------------------------
# Golden cases: Caffe's own upgrade tools on legacy files
# ---------------------------------------------------------------------------------------------
def test_there_are_36_golden_upgrade_cases():
    assert len(UPGRADE_CASES) == 36


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory):
    """Run Caffe's upgrade verbs on every golden input, a few processes at a time (each
    process pays the interpreter's start-up)."""
    out_dir = tmp_path_factory.mktemp("upgrade")

    def run(case):
        out = out_dir / (case["name"] + ".prototxt")
        r = _cli(case["tool"], os.path.join(GOLDEN, case["name"] + ".input.prototxt"),
                 str(out))
        return case["name"], (r, out)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, UPGRADE_CASES))


@pytest.mark.parametrize("case", UPGRADE_CASES, ids=lambda c: c["name"])
def test_golden_upgrade_through_cli(case, golden_runs):
    r, out = golden_runs[case["name"]]
    assert r.returncode == 0, r.stderr
    kind = (caffe_pb2.SolverParameter if case["tool"] == "upgrade_solver_proto_text"
            else caffe_pb2.NetParameter)
    got, want = kind(), kind()
    text_format.Parse(out.read_text(), got)
    with open(os.path.join(GOLDEN, case["name"] + ".expected.prototxt")) as f:
        text_format.Parse(f.read(), want)
    assert got == want


def test_console_script_runs_the_verb(tmp_path):
    exe = shutil.which("decaffe", path=os.path.dirname(sys.executable)) or \
        shutil.which("decaffe")
    if exe is None:
        pytest.skip("the decaffe console script is not installed")
    src = os.path.join(GOLDEN, "upgrade__bvlc_legacy__rc__examples__mnist__lenet.input.prototxt")
    out = tmp_path / "lenet.prototxt"
    r = subprocess.run([exe, "upgrade_net_proto_text", src, str(out)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    net = prototxt.read_text(str(out), caffe_pb2.NetParameter())
    assert net.layer[0].type == "Input" and not net.layers


# ---------------------------------------------------------------------------------------------
# The corpus: every legacy file upgrades to the layers Caffe's rules give
# ---------------------------------------------------------------------------------------------
# Expected current type strings, written out independently of decaffe's tables.
_V1_TYPE_NAMES = {
    "CONVOLUTION": "Convolution", "POOLING": "Pooling", "RELU": "ReLU", "LRN": "LRN",
    "INNER_PRODUCT": "InnerProduct", "DROPOUT": "Dropout", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "ACCURACY": "Accuracy", "DATA": "Data",
    "HDF5_DATA": "HDF5Data", "WINDOW_DATA": "WindowData", "IMAGE_DATA": "ImageData",
    "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "FLATTEN": "Flatten", "SLICE": "Slice",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "SPLIT": "Split",
    "TANH": "TanH", "ELTWISE": "Eltwise", "SILENCE": "Silence",
}
_V0_TYPE_NAMES = {
    "data": "Data", "conv": "Convolution", "relu": "ReLU", "pool": "Pooling",
    "lrn": "LRN", "innerproduct": "InnerProduct", "dropout": "Dropout",
    "softmax_loss": "SoftmaxWithLoss", "softmax": "Softmax", "accuracy": "Accuracy",
}


def _expected_layers(net: caffe_pb2.NetParameter) -> list[tuple[str, str]]:
    out = []
    for lc in net.layers:
        if lc.HasField("layer"):
            if lc.layer.type == "padding":
                continue
            out.append((lc.layer.name, _V0_TYPE_NAMES[lc.layer.type]))
        else:
            enum = caffe_pb2.V1LayerParameter.LayerType.Name(lc.type)
            out.append((lc.name, _V1_TYPE_NAMES[enum]))
    if not net.layers:
        out = [(lp.name, lp.type) for lp in net.layer]
    if len(net.input) and (len(net.input_dim) or len(net.input_shape)):
        out.insert(0, ("input", "Input"))
    return out


@pytest.mark.parametrize("row", LEGACY_NETS, ids=lambda r: r["local_path"])
def test_legacy_corpus_net_upgrades(row):
    path = os.path.join(MODELS, row["local_path"])
    net = prototxt.read_text(path, caffe_pb2.NetParameter())
    assert upgrade.net_needs_upgrade(net)
    expected = _expected_layers(net)
    inputs = list(net.input)
    assert upgrade.upgrade_net_as_needed(net, path)
    assert not upgrade.net_needs_upgrade(net)
    assert not net.layers and not net.input and not net.input_dim and not net.input_shape
    assert [(lp.name, lp.type) for lp in net.layer] == expected
    if expected and expected[0] == ("input", "Input"):
        assert list(net.layer[0].top) == inputs
    # every bottom is produced by an earlier layer (padding layers folded away)
    seen: set[str] = set()
    for lp in net.layer:
        for b in lp.bottom:
            assert b in seen, (lp.name, b)
        seen.update(lp.top)


@pytest.mark.parametrize("row", LEGACY_SOLVERS, ids=lambda r: r["local_path"])
def test_legacy_solver_embedded_nets_upgrade(row):
    path = os.path.join(MODELS, row["local_path"])
    solver = prototxt.read_text(path, caffe_pb2.SolverParameter())
    nets = ([solver.net_param] if solver.HasField("net_param") else []) + \
        ([solver.train_net_param] if solver.HasField("train_net_param") else []) + \
        list(solver.test_net_param)
    assert nets
    for net in nets:
        assert upgrade.net_needs_upgrade(net)
        expected = _expected_layers(net)
        upgrade.upgrade_net(net, path)
        assert not upgrade.net_needs_upgrade(net)
        assert [(lp.name, lp.type) for lp in net.layer] == expected


def test_current_corpus_nets_need_no_upgrade():
    current = [r for r in MANIFEST if r["kind"] == "net" and r["format"] == "V2"
               and not r["old_input"] and not r["parses_with_ssd_caffe_proto"].startswith("F")]
    assert current
    for row in current:
        net = prototxt.read_text(os.path.join(MODELS, row["local_path"]),
                                 caffe_pb2.NetParameter())
        before = caffe_pb2.NetParameter()
        before.CopyFrom(net)
        # BVLC's own BN examples still declare the three frozen params
        bn3 = [i for i, lp in enumerate(net.layer)
               if lp.type == "BatchNorm" and len(lp.param) == 3]
        assert upgrade.net_needs_upgrade(net) == bool(bn3), row["local_path"]
        upgrade.upgrade_net(net)
        for i in bn3:
            del before.layer[i].param[:]
        assert net == before


# ---------------------------------------------------------------------------------------------
# V0 -> V1
# ---------------------------------------------------------------------------------------------
V0_NET = """
name: "v0"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
force_backward: true
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 group: 1
          biasterm: false weight_filler { type: "gaussian" std: 0.5 }
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
         bottom: "pad2" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.5 beta: 0.25 k: 2 }
         bottom: "pool1" top: "norm1" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.25 } bottom: "norm1" top: "norm1" }
layers { layer { name: "ip" type: "innerproduct" num_output: 7
                 bias_filler { type: "constant" value: 0.5 } }
         bottom: "norm1" top: "ip" }
layers { layer { name: "cat" type: "concat" concat_dim: 0 } bottom: "ip" bottom: "ip" top: "cat" }
"""


def test_v0_padding_layers_fold_into_conv_and_pool():
    net = _net(V0_NET)
    assert upgrade.net_needs_upgrade(net)
    assert upgrade.upgrade_net_as_needed(net, "v0.prototxt")
    names = [lp.name for lp in net.layer]
    assert names == ["input", "conv1", "pool1", "norm1", "drop", "ip", "cat"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"]
    assert list(conv.convolution_param.pad) == [2]
    pool = net.layer[2]
    assert list(pool.bottom) == ["conv1"]
    assert pool.pooling_param.pad == 1


def test_v0_fields_move_to_their_parameter_messages():
    net = upgrade.upgrade_net(_net(V0_NET))
    by = {lp.name: lp for lp in net.layer}
    cp = by["conv1"].convolution_param
    assert cp.num_output == 4 and list(cp.kernel_size) == [3] and list(cp.stride) == [2]
    assert cp.group == 1 and cp.HasField("group") and cp.bias_term is False
    assert cp.weight_filler.type == "gaussian" and cp.weight_filler.std == 0.5
    assert [(p.lr_mult, p.decay_mult) for p in by["conv1"].param] == [(1, 1), (2, 0)]
    pp = by["pool1"].pooling_param
    assert pp.pool == caffe_pb2.PoolingParameter.AVE
    assert pp.kernel_size == 3 and pp.stride == 2
    lrn = by["norm1"].lrn_param
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == (3, 0.5, 0.25, 2)
    assert by["drop"].dropout_param.dropout_ratio == 0.25
    ip = by["ip"].inner_product_param
    assert ip.num_output == 7 and ip.bias_filler.value == 0.5
    assert by["cat"].concat_param.concat_dim == 0
    assert net.force_backward is True and net.name == "v0"
    assert list(by["input"].input_param.shape[0].dim) == [2, 3, 8, 8]


def test_v0_data_layer_fields():
    net = upgrade.upgrade_net(_net("""
      layers { layer { name: "d" type: "data" source: "db" batchsize: 16 rand_skip: 3
                       scale: 0.5 meanfile: "m.binaryproto" cropsize: 7 mirror: true }
               top: "data" top: "label" }
      layers { layer { name: "img" type: "images" source: "list.txt" batchsize: 2
                       shuffle_images: true new_height: 5 new_width: 6 } top: "i" top: "l" }
      layers { layer { name: "win" type: "window_data" source: "w.txt" det_fg_threshold: 0.6
                       det_bg_threshold: 0.4 det_fg_fraction: 0.3 det_context_pad: 4
                       det_crop_mode: "square" } top: "w" top: "wl" }
    """))
    d = net.layer[0]
    assert (d.type, d.data_param.source, d.data_param.batch_size, d.data_param.rand_skip) == \
        ("Data", "db", 16, 3)
    t = d.transform_param
    assert (t.scale, t.mean_file, t.crop_size, t.mirror) == (0.5, "m.binaryproto", 7, True)
    img = net.layer[1].image_data_param
    assert (net.layer[1].type, img.source, img.batch_size, img.shuffle, img.new_height,
            img.new_width) == ("ImageData", "list.txt", 2, True, 5, 6)
    w = net.layer[2].window_data_param
    assert net.layer[2].type == "WindowData"
    assert (w.source, w.context_pad, w.crop_mode) == ("w.txt", 4, "square")
    assert np.isclose([w.fg_threshold, w.bg_threshold, w.fg_fraction], [0.6, 0.4, 0.3]).all()


def test_v0_field_without_a_home_is_logged_and_reported(capsys):
    """Caffe logs (ERROR, glog format) and goes on; the result says it was not clean."""
    net = _net('layers { layer { name: "r" type: "relu" num_output: 3 } '
               'bottom: "x" top: "x" } input: "x"')
    assert upgrade.upgrade_net_as_needed(net, "odd.prototxt") is False
    err = capsys.readouterr().err.splitlines()
    assert any(GLOG_E.match(ln) and ln.endswith("] Unknown parameter num_output for layer "
                                                "type relu") for ln in err), err
    assert any(ln.endswith("] Attempting to upgrade input file specified using deprecated "
                           "V0LayerParameter: odd.prototxt") for ln in err)
    assert any(GLOG_E.match(ln) and ln.endswith(
        "] Warning: had one or more problems upgrading V0NetParameter to NetParameter (see "
        "above); continuing anyway.") for ln in err)
    assert net.layer[0].type == "ReLU"


def test_v0_unknown_type_and_unknown_bottom_raise():
    with pytest.raises(ParseError) as info:
        upgrade.upgrade_net(_net('layers { layer { name: "q" type: "quux" } top: "x" }'),
                            "bad.prototxt")
    assert "quux" in str(info.value) and "'q'" in str(info.value)
    assert "bad.prototxt" in str(info.value)
    with pytest.raises(ParseError) as info:
        upgrade.upgrade_net(_net('layers { layer { name: "c" type: "conv" } bottom: "nope" '
                                 'top: "x" }'), "bad.prototxt")
    assert "nope" in str(info.value) and "'c'" in str(info.value)


def test_v0_padding_before_a_non_conv_layer_is_an_error():
    with pytest.raises(ParseError) as info:
        upgrade.upgrade_net(_net("""
          input: "data"
          layers { layer { name: "p" type: "padding" pad: 1 } bottom: "data" top: "p" }
          layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }"""), "pad.prototxt")
    assert "'r'" in str(info.value) and "relu" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Data transformation and V1 -> V2
# ---------------------------------------------------------------------------------------------
def test_data_transformation_fields_move_to_transform_param():
    net = _net("""
      layers { name: "d" type: DATA top: "data"
               data_param { source: "db" scale: 0.25 mean_file: "m" crop_size: 5 mirror: true } }
      layers { name: "d2" type: DATA top: "data2" data_param { source: "db2" } }
      layers { name: "i" type: IMAGE_DATA top: "im" image_data_param { scale: 2 } }
      layers { name: "w" type: WINDOW_DATA top: "w" window_data_param { mirror: false } }
    """)
    assert upgrade.net_needs_data_upgrade(net)
    upgrade.upgrade_net(net)
    d, d2, i, w = net.layer
    assert (d.transform_param.scale, d.transform_param.mean_file,
            d.transform_param.crop_size, d.transform_param.mirror) == (0.25, "m", 5, True)
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        assert not d.data_param.HasField(f)
    assert d.data_param.source == "db"
    # Caffe touches transform_param of every data layer once the upgrade runs
    assert d2.HasField("transform_param") and not d2.transform_param.ListFields()
    assert i.transform_param.scale == 2 and not i.image_data_param.HasField("scale")
    assert w.transform_param.HasField("mirror") and w.transform_param.mirror is False


def test_v1_layers_become_layer_with_param_specs():
    net = _net("""
      name: "v1"
      layers { name: "c" type: CONVOLUTION bottom: "x" top: "c"
               blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
               param: "shared_w" blob_share_mode: PERMISSIVE
               include { phase: TRAIN } exclude { stage: "deploy" }
               convolution_param { num_output: 3 kernel_size: 1 }
               blobs { shape { dim: 3 dim: 1 dim: 1 dim: 1 } data: 1 data: 2 data: 3 }
               blobs { data: 4 data: 5 data: 6 num: 1 channels: 1 height: 1 width: 3 } }
      layers { name: "l" type: SOFTMAX_LOSS bottom: "c" bottom: "y" top: "loss"
               loss_weight: 2 loss_param { ignore_label: 4 } }
      layers { name: "d" type: DECONVOLUTION bottom: "c" top: "d" }
      layers { name: "a" type: ABSVAL bottom: "d" top: "a" }
    """)
    upgrade.upgrade_net(net)
    c, loss, d, a = net.layer
    assert (c.name, c.type, list(c.bottom), list(c.top)) == ("c", "Convolution", ["x"], ["c"])
    assert [(p.name, p.share_mode, p.lr_mult, p.decay_mult) for p in c.param] == [
        ("shared_w", caffe_pb2.ParamSpec.PERMISSIVE, 1, 1), ("", 0, 2, 0)]
    assert not c.param[1].HasField("share_mode") and not c.param[1].HasField("name")
    assert c.include[0].phase == caffe_pb2.TRAIN and list(c.exclude[0].stage) == ["deploy"]
    assert c.convolution_param.num_output == 3
    assert [list(b.data) for b in c.blobs] == [[1, 2, 3], [4, 5, 6]]
    assert c.blobs[1].width == 3
    assert (loss.type, list(loss.loss_weight), loss.loss_param.ignore_label) == \
        ("SoftmaxWithLoss", [2], 4)
    assert d.type == "Deconvolution" and a.type == "AbsVal"


def test_v1_net_with_layer_entries_too_is_refused():
    """Caffe 1.0's UpgradeV1Net: LOG(FATAL) "Refusing to upgrade inconsistent NetParameter
    input" (older Caffe dropped the `layer` entries, BVLC/caffe#3381)."""
    net = _net('layer { name: "new" type: "ReLU" } '
               'layers { name: "old" type: RELU bottom: "x" top: "x" }')
    with pytest.raises(ParseError, match="mixed.prototxt: Refusing to upgrade inconsistent "
                       "NetParameter input; the definition includes both 'layer' and "
                       "'layers' fields.*first 'layer': 'new', first 'layers': 'old'"):
        upgrade.upgrade_net_as_needed(net, "mixed.prototxt")


def test_every_v1_enum_value_has_a_type():
    for value in caffe_pb2.V1LayerParameter.LayerType.values():
        assert value in upgrade.V1_LAYER_TYPES


# ---------------------------------------------------------------------------------------------
# Input fields and BatchNorm
# ---------------------------------------------------------------------------------------------
def test_input_shape_becomes_an_input_layer_first():
    net = _net("""
      input: "a" input_shape { dim: 1 dim: 2 } input: "b" input_shape { dim: 3 }
      layer { name: "r" type: "ReLU" bottom: "a" top: "r" }""")
    upgrade.upgrade_net(net)
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["a", "b"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 2], [3]]
    assert [lp.name for lp in net.layer] == ["input", "r"]


def test_input_dims_four_per_input():
    net = _net('input: "a" input: "b" ' + " ".join(f"input_dim: {d}" for d in range(1, 9)))
    upgrade.upgrade_net(net)
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 2, 3, 4],
                                                                    [5, 6, 7, 8]]


def test_input_without_shape_is_only_removed():
    net = _net('input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert upgrade.net_needs_upgrade(net)
    upgrade.upgrade_net(net)
    assert [lp.name for lp in net.layer] == ["r"] and not net.input


def test_too_few_input_dims_is_an_error():
    with pytest.raises(ParseError) as info:
        upgrade.upgrade_net(_net('input: "a" input_dim: 1 input_dim: 2'), "in.prototxt")
    assert "input_dim" in str(info.value) and "in.prototxt" in str(info.value)
    with pytest.raises(ParseError):
        upgrade.upgrade_net(_net('input: "a" input: "b" input_shape { dim: 1 }'))


def test_batchnorm_with_three_params_loses_them():
    net = _net("""
      layer { name: "bn" type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 0 }
              param { lr_mult: 0 } }
      layer { name: "bn2" type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 0 } }
      layer { name: "s" type: "Scale" param { lr_mult: 1 } param { lr_mult: 1 }
              param { lr_mult: 1 } }""")
    assert upgrade.net_needs_upgrade(net)
    upgrade.upgrade_net(net)
    assert [len(lp.param) for lp in net.layer] == [0, 2, 3]
    assert not upgrade.net_needs_upgrade(net)


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("enum,name", [("SGD", "SGD"), ("NESTEROV", "Nesterov"),
                                       ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
                                       ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_upgrade(enum, name):
    s = text_format.Parse(f"base_lr: 0.1 solver_type: {enum}", caffe_pb2.SolverParameter())
    assert upgrade.solver_needs_upgrade(s)
    upgrade.upgrade_solver(s)
    assert s.type == name and not s.HasField("solver_type")
    assert not upgrade.solver_needs_upgrade(s)


def test_solver_with_both_type_fields_is_an_error():
    s = text_format.Parse('solver_type: ADAM type: "Adam"', caffe_pb2.SolverParameter())
    with pytest.raises(ParseError) as info:
        upgrade.upgrade_solver(s, "solver.prototxt")
    assert "solver.prototxt" in str(info.value)
    assert isinstance(info.value, DecaffeError)


def test_current_solver_is_left_alone():
    s = text_format.Parse('type: "Adam" base_lr: 0.1', caffe_pb2.SolverParameter())
    assert not upgrade.solver_needs_upgrade(s)
    before = caffe_pb2.SolverParameter()
    before.CopyFrom(s)
    assert upgrade.upgrade_solver(s) == before


# ---------------------------------------------------------------------------------------------
# The CLI around the edges
# ---------------------------------------------------------------------------------------------
def test_cli_current_file_is_copied_with_a_note(tmp_path, capsys):
    src = os.path.join(MODELS, "bvlc/examples/mnist/lenet.prototxt")
    out = tmp_path / "o.prototxt"
    rc, out_, err = _main(capsys, "upgrade_net_proto_text", src, str(out))
    assert rc == 0
    assert "already in latest proto format" in err
    assert prototxt.read_text(str(out), caffe_pb2.NetParameter()) == \
        prototxt.read_text(src, caffe_pb2.NetParameter())


def test_cli_unparsable_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer {\n  nmae: "x"\n}\n')
    out = tmp_path / "o.prototxt"
    rc, out_, err = _main(capsys, "upgrade_net_proto_text", str(bad), str(out))
    assert rc == 2
    assert "bad.prototxt:2:3" in err and "'name'" in err
    assert "Traceback" not in err and not out.exists()
    rc, out_, err = _main(capsys, "upgrade_solver_proto_text",
                          str(tmp_path / "missing.prototxt"), str(out))
    assert rc == 2 and "missing.prototxt" in err


def test_cli_fatal_upgrade_problem_exits_nonzero_without_traceback(tmp_path, capsys):
    bad = tmp_path / "v0.prototxt"
    bad.write_text('layers { layer { name: "q" type: "quux" } top: "x" }\n')
    rc, out_, err = _main(capsys, "upgrade_net_proto_text", str(bad), str(tmp_path / "o.prototxt"))
    assert rc != 0 and "quux" in err and "Traceback" not in err


def test_cli_lossy_upgrade_writes_and_exits_1(tmp_path, capsys):
    src = tmp_path / "lossy.prototxt"
    src.write_text('input: "x"\nlayers { layer { name: "r" type: "relu" num_output: 3 } '
                   'bottom: "x" top: "x" }\n')
    out = tmp_path / "o.prototxt"
    rc, out_, err = _main(capsys, "upgrade_net_proto_text", str(src), str(out))
    assert rc == 1 and "num_output" in err
    assert prototxt.read_text(str(out), caffe_pb2.NetParameter()).layer[0].type == "ReLU"


def test_cli_usage_errors(capsys):
    rc, out_, err = _main(capsys, "upgrade_net_proto_text", "only_one_arg")
    assert rc != 0 and "usage" in err.lower()
    rc, out_, err = _main(capsys, "upgrade_net_proto_text", "-help")
    assert rc == 0 and "IN" in out_


def test_cli_solver_upgrade(tmp_path, capsys):
    src = tmp_path / "s.prototxt"
    src.write_text('net: "n.prototxt"\nbase_lr: 0.01\nsolver_type: RMSPROP\n')
    out = tmp_path / "o.prototxt"
    assert _main(capsys, "upgrade_solver_proto_text", str(src), str(out))[0] == 0
    s = prototxt.read_text(str(out), caffe_pb2.SolverParameter())
    assert s.type == "RMSProp" and not s.HasField("solver_type") and s.net == "n.prototxt"

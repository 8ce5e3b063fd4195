"""A missing or malformed flag is reported before PyTorch loads (issue 22, item 4).

Every verb declares its flags' contracts (required, value checks, files that must exist,
rules over several flags) in its FlagParser, and `FlagParser.parse` verifies them before the
verb imports anything heavy. One subprocess runs every bad command line below through
`decaffe.cli.main` and reports, at the point of each error, its message and whether torch is
in `sys.modules`: the check has no wall time in it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from decaffe.cli import COMMANDS
from decaffe.cli.flags import FlagError, FlagParser, at_least, gpu_ids, phase_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (argv, text the error must contain); M, W and S are files that exist, X does not
CASES = [
    (["test"], "-model: need a model definition to score"),
    (["test", "-model", "M"], "-weights: need model weights to score"),
    (["test", "-model", "X", "-weights", "W"], "-model: cannot open 'X': no such file"),
    (["test", "-model", "M", "-weights", "W", "-iterations", "0"],
     "-iterations: must be at least 1, not 0"),
    (["test", "-model", "M", "-weights", "W", "-iterations", "many"], "invalid int value"),
    (["test", "-model", "M", "-weights", "W", "-gpu", "one"], "-gpu: expected device ids"),
    (["test", "-model", "M", "-weights", "W", "-phase", "VAL"], '-phase: must be "TRAIN"'),
    (["test", "-model", "M", "-weights", "W", "-threads", "-1"], "-threads: must be >= 0"),
    (["test", "-model", "M", "-weights", "W", "-precision", "fp8"], "invalid choice"),
    (["time"], "-model: need a model definition to time"),
    (["time", "-model", "M", "-weights", "X"], "-weights: cannot open 'X'"),
    (["time", "-model", "M", "-iterations", "0"], "-iterations: must be at least 1"),
    (["export"], "-model: required"),
    (["export", "-model", "M"], "give at least one of -onnx FILE"),
    (["export", "-model", "M", "-onnx", "o.onnx", "-opset", "-2"], "-opset: must be >= 0"),
    (["export", "-model", "M", "-onnx", "o.onnx", "-weights", "X"], "-weights: cannot open"),
    (["fold_bn"], "-model: required"),
    (["fold_bn", "-model", "M", "-weights", "W", "-out_model", "a"], "-out_weights: required"),
    (["fold_bn", "-model", "M", "-weights", "W", "-out_model", "a", "-out_weights", "b",
      "-iterations", "-1"], "-iterations: must be >= 0"),
    (["bn_stats", "show"], "-model: required"),
    (["bn_stats", "show", "-model", "M", "-phase", "val"], '-phase: must be "TRAIN"'),
    (["bn_stats", "recompute", "-model", "M", "-weights", "W"], "-out: required"),
    (["bn_stats", "recompute", "-model", "M", "-weights", "W", "-out", "o"],
     "-iterations: must be at least 1, not 0"),
    (["bn_stats", "recompute", "-model", "M", "-weights", "W", "-out", "o", "-iterations",
      "2", "-test_model", "X"], "-test_model: cannot open"),
    (["bn_stats", "fold"], "unknown action 'fold'"),
    (["train"], "-solver: need a solver definition to train"),
    (["train", "-solver", "S", "-snapshot", "a", "-weights", "b"], "but not both"),
    (["train", "-solver", "S", "-snapshot", "X"], "-snapshot: cannot open 'X'"),
    (["train", "-solver", "S", "-workers", "-1"], "-workers: must be >= 0"),
    (["train", "-solver", "S", "-sigint_effect", "pause"], "invalid signal effect"),
    (["device_query", "-gpu", "0,x"], "-gpu: expected device ids"),
]

DRIVER = r"""
import contextlib, io, json, sys
from decaffe.cli import COMMANDS, main
cases = json.loads(sys.argv[1])
# a flag no verb has: every verb, including ones added later, must refuse it before torch
cases += [([v, "show", "-no_such_flag_zz"] if v == "bn_stats" else [v, "-no_such_flag_zz"],
           "") for v in sorted(COMMANDS)]
results = []
for argv, _ in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    results.append({"argv": argv, "rc": rc, "err": err.getvalue(),
                    "torch": "torch" in sys.modules})
    if "torch" in sys.modules:
        break
print(json.dumps(results))
"""


def test_every_flag_error_comes_before_torch_loads(tmp_path):
    for name in ("M", "W", "S"):
        (tmp_path / name).write_text("# exists; never read: the flags fail first\n")
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(CASES)], capture_output=True,
                       text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.strip().splitlines()[-1])
    loaded = [res["argv"] for res in results if res["torch"]]
    assert not loaded, f"torch was loaded before the flag error of {loaded[0]}"
    assert len(results) == len(CASES) + len(COMMANDS)
    for res, (argv, text) in zip(results, CASES):
        assert res["rc"] not in (0, None), (argv, res)
        assert text in res["err"], (argv, res["err"])
    for res in results[len(CASES):]:
        assert res["rc"] not in (0, None), res


def test_importtime_of_a_flag_error_shows_no_torch(tmp_path):
    """`python -X importtime -m decaffe test` (no -model): no torch module in the import log."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "decaffe", "test"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 1
    assert "-model: need a model definition to score" in r.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")]
    assert "decaffe.cli.common" in imported  # the verb's own imports are in the log
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]


# ---- the contract pieces themselves ------------------------------------------------------
def _parser() -> FlagParser:
    fp = FlagParser("demo")
    fp.flag("model", default="", required=True, exists=True)
    fp.flag("out", default="", required="need somewhere to write")
    fp.flag("n", type=int, default=1, check=at_least(1))
    fp.rule(lambda a: "-a and -b together" if a.a and a.b else None)
    fp.flag("a", default="")
    fp.flag("b", default="")
    return fp


@pytest.mark.parametrize("argv, message", [
    ([], "-model: required"),
    (["-model", "m"], "-out: need somewhere to write"),
    (["-model", "m", "-out", "o", "-a", "1", "-b", "2"], "-a and -b together"),
    (["-model", "m", "-out", "o", "-n", "0"], "-n: must be at least 1, not 0"),
    (["-model", "/no/such/file", "-out", "o"], "-model: cannot open '/no/such/file'"),
])
def test_parse_verifies_the_declared_contract(argv, message):
    with pytest.raises(FlagError, match=message.replace("(", r"\(")):
        _parser().parse(argv)


def test_parse_accepts_a_good_command_line(tmp_path):
    model = tmp_path / "m.prototxt"
    model.write_text("")
    args = _parser().parse(["-model", str(model), "-out", "o", "-n=3"])
    assert isinstance(args, argparse.Namespace) and args.n == 3 and args.out == "o"


@pytest.mark.parametrize("value, ok", [("0", True), ("0,1", True), ("all", True),
                                       ("x", False), ("0,-1", False), ("1,", False)])
def test_gpu_ids_syntax(value, ok):
    assert (gpu_ids(value) is None) == ok


def test_phase_name():
    assert phase_name("TRAIN") is None and phase_name("TEST") is None
    assert "not \"train\"" in phase_name("train")


def test_at_least_messages():
    assert at_least(0)(-1) == "must be >= 0, not -1"
    assert at_least(2)(1) == "must be at least 2, not 1"
    assert at_least(2)(2) is None

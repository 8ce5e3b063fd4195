"""The command as Caffe users type it: `decaffe` and `caffe` console scripts, --version, and
-help for every verb answering without loading PyTorch (so it returns in well under a second)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import decaffe
from decaffe.cli import COMMANDS, main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script(name: str) -> str:
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if exe is None:
        pytest.skip(f"the `{name}` console script is not installed (pip install -e .)")
    return exe


def test_version(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert decaffe.__version__ in out and "version" in out


def test_every_verb_help_imports_no_torch():
    """One subprocess runs every verb's -help and reports which heavy modules got imported."""
    code = (
        "import json, sys\n"
        "from decaffe.cli import COMMANDS, main\n"
        "bad = {}\n"
        "for verb in sorted(COMMANDS):\n"
        "    argv = [verb, 'show', '-help'] if verb == 'bn_stats' else [verb, '-help']\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (verb, e.code)\n"
        "    heavy = [m for m in ('torch', 'cv2') if m in sys.modules]\n"
        "    if heavy:\n"
        "        bad[verb] = heavy\n"
        "        break\n"
        "print(json.dumps(bad))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {}, (
        "these verbs load heavy modules just to print their flags")
    assert len(COMMANDS) >= 16


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "-help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: stop)" in out  # -sigint_effect
    assert "(default: snapshot)" in out  # -sighup_effect
    with pytest.raises(SystemExit):
        main(["test", "-help"])
    assert "(default: 50)" in " ".join(capsys.readouterr().out.split())  # -iterations


def test_usage_lists_verbs(capsys):
    assert main([]) == 1
    out = capsys.readouterr().out
    for verb in ("train", "test", "time", "device_query"):
        assert f"  {verb} " in out


def test_unknown_verb_suggests(capsys):
    assert main(["trian"]) == 1
    assert "train" in capsys.readouterr().err


def test_caffe_script_version_and_usage():
    caffe = _script("caffe")
    r = subprocess.run([caffe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("caffe version ")
    r = subprocess.run([caffe], capture_output=True, text=True)
    assert r.returncode == 1 and "usage: caffe <command>" in r.stdout


NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""


def test_caffe_train_runs(tmp_path):
    """`caffe train -solver S` trains and snapshots, as Caffe's own command did."""
    caffe = _script("caffe")
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 3\ndisplay: 1\n'
        'snapshot_prefix: "tiny"\nrandom_seed: 1\n')
    r = subprocess.run([caffe, "train", "-solver", "solver.prototxt"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Optimization Done." in r.stderr
    assert (tmp_path / "tiny_iter_3.caffemodel").exists()
    assert (tmp_path / "tiny_iter_3.solverstate").exists()

"""The dashboard works from an installed wheel, not only from the checkout: the wheel is built,
carries the page's assets and the `dashboard` extra, installs into a fresh virtual
environment, and `decaffe dashboard` from there serves the page and its assets."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile

from dash_fixtures import ROOT, get, start_dashboard, write_run

ASSETS = ("index.html", "app.js", "plot.js", "style.css")
# The `dashboard` extra (Starlette, uvicorn) and what they and `import decaffe` need (numpy
# and protobuf, of decaffe's own dependencies). Tests
# never reach the network, so these are not downloaded into the fresh environment: the copies
# this test run already has are linked into it (one .pth line). Torch is not among them: the
# dashboard must start without it, as from `pip install 'decaffe[dashboard]'` on a machine
# that has not installed torch's wheels yet.
DEPENDENCIES = ("starlette", "uvicorn", "anyio", "h11", "click", "idna", "sniffio",
                "typing_extensions", "exceptiongroup", "google.protobuf", "numpy")


def build_wheel(tmp_path) -> str:
    """`pip wheel` of a copy of the project (so that the checkout gets no build/ folder),
    offline: no build isolation, the installed setuptools (the test extra's, >= 70.1, which
    writes wheels itself) builds it."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("decaffe", "caffe"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(dist), str(src)], check=True,
                   capture_output=True, text=True)
    (wheel,) = dist.glob("decaffe-*.whl")
    return str(wheel)


def link_dependencies(site: str, into: str) -> None:
    os.makedirs(into)
    for name in DEPENDENCIES:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue  # not needed on this Python (sniffio, exceptiongroup)
        top = name.split(".")[0]
        if spec.submodule_search_locations:
            location = list(spec.submodule_search_locations)[0]
            if "." in name:  # a namespace package's part: link its parent folder
                location = os.path.dirname(location)
        else:
            location = spec.origin
        target = os.path.join(into, top + ("" if os.path.isdir(location) else ".py"))
        if not os.path.exists(target):
            os.symlink(location, target)
    with open(os.path.join(site, "dashboard_deps.pth"), "w") as f:
        f.write(into + "\n")


def test_wheel_installs_and_serves_the_page(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for asset in ASSETS:
            assert f"decaffe/dashboard/static/{asset}" in names, asset
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta_name).decode()
    assert "Provides-Extra: dashboard" in metadata
    assert any(line.startswith("Requires-Dist: starlette") and 'extra == "dashboard"' in line
               for line in metadata.splitlines())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                    "--no-index", "-q", wheel], check=True, capture_output=True, text=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True,
                          text=True).stdout.strip()
    link_dependencies(site, str(tmp_path / "deps"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    probe = subprocess.run(
        [python, "-c", "import sys, decaffe.cli.dashboard, decaffe.dashboard.server; "
         "print(decaffe.__file__); print('torch' in sys.modules); import torch"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path))
    where, torch_loaded = probe.stdout.split()[:2]
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout
    assert torch_loaded == "False" and "No module named 'torch'" in probe.stderr

    run = write_run(str(tmp_path / "net.run"), 60)
    proc, url, lines = start_dashboard([run], python=python, env=env, cwd=str(tmp_path))
    try:
        status, page = get(url)
        assert status == 200
        for asset in ASSETS[1:]:
            status, body = get(url + "static/" + asset)
            with open(os.path.join(ROOT, "decaffe", "dashboard", "static", asset), "rb") as f:
                assert status == 200 and body == f.read(), asset
        runs = json.loads(get(url + "api/runs")[1])["runs"]
        assert runs[0]["name"] == "net" and runs[0]["records"] > 0 and runs[0]["errors"] == []
    finally:
        proc.kill()
        proc.wait(30)

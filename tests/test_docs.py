"""The repository's documents name only what exists, and the README's commands write into
ignored folders, never the repository root."""

from __future__ import annotations

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PATHLIKE = re.compile(r"`([A-Za-z0-9_./-]+\.(?:py|md|txt|toml|proto|json|prototxt|png)|"
                       r"[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]*)`")


def _exists_somewhere(name: str) -> bool:
    """A path relative to the root or to decaffe/, or a bare file name found in the tree."""
    name = name.rstrip("/")
    if any(os.path.exists(os.path.join(ROOT, base, name)) for base in ("", "decaffe")):
        return True
    if "/" in name:
        return False
    for _dir, _subdirs, files in os.walk(ROOT):
        if ".git" in _dir or ".venv" in _dir:
            continue
        if name in files or name in _subdirs:
            return True
    return False


def test_architecture_names_only_existing_files():
    text = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    missing = sorted({m for m in _PATHLIKE.findall(text)
                      if not m.startswith(("torch.", "caffe.")) and m != "/"
                      and not _exists_somewhere(m)})
    assert missing == [], f"docs/architecture.md names files that do not exist: {missing}"


def test_project_documents_exist():
    for name in ("LICENSE", "CONTRIBUTING.md", "CHANGELOG.md"):
        assert os.path.isfile(os.path.join(ROOT, name)), name
    assert "BSD 2-Clause" in open(os.path.join(ROOT, "LICENSE")).read()


def _readme_commands() -> list[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    return [line for b in blocks for line in b.splitlines()
            if line.startswith(("decaffe ", "caffe ", "python ", "python3 ", "torchrun "))]


def _ignored(path: str) -> bool:
    r = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
    return r.returncode == 0


def test_readme_outputs_go_to_ignored_folders():
    out_flags = re.compile(r"-(?:out|out_model|out_weights|onnx|torch|pytorch|outfile)[ =](\S+)")
    outputs = [p for cmd in _readme_commands() for p in out_flags.findall(cmd)]
    bad = [p for p in outputs if not _ignored(p)]
    assert bad == [], f"README commands write outside ignored folders: {bad}"


def test_install_commands_use_this_checkout():
    """decaffe is installed from the checkout: no command asks a package index for it."""
    docs = ["README.md", "CONTRIBUTING.md"]
    for root, _dirs, files in os.walk(os.path.join(ROOT, "examples")):
        docs += [os.path.relpath(os.path.join(root, f), ROOT) for f in files if f.endswith(".md")]
    for doc in docs:
        text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
        for line in text.splitlines():
            if "pip install" in line:
                assert not re.search(r"pip install [^|&]*['\"]?decaffe\b", line), (doc, line)

"""The fork-model corpus: 260 net prototxts from public repositories of Caffe's forks.

They live in ``tests/models/forks/nets.tar.xz`` (94 KB instead of 13 MB of text), with
``MANIFEST.tsv`` beside it: one row per net (repo, commit, path, ``local_path`` inside the
archive, the layer types it uses, ``non_bvlc_layer_types``, and how BVLC's and SSD's
caffe.proto fared on it). ``nets()`` reads both; ``extract(dir)`` writes the files out for
tests that need paths (e.g. to build a net from its file).

chuanqi305/MobileNet-SSD's ``template/*`` files hold placeholders (``cls3x``) that the
fork's ``gen_model.sh`` replaces by multiples of the class count before Caffe reads them;
``text`` returns them with that substitution made (``TEMPLATE_CLASSES`` classes).
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
import tarfile
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
FORKS = os.path.join(HERE, "models", "forks")
ARCHIVE = os.path.join(FORKS, "nets.tar.xz")
MANIFEST = os.path.join(FORKS, "MANIFEST.tsv")

# gen_model.sh's default: the 20 VOC classes plus background
TEMPLATE_CLASSES = 21
_PLACEHOLDER = re.compile(r"\bcls(\d+)x\b")


@dataclass(frozen=True)
class ForkNet:
    """One corpus net: its MANIFEST row and its prototxt text."""

    row: dict
    raw: str

    @property
    def local_path(self) -> str:
        return self.row["local_path"]

    @property
    def is_template(self) -> bool:
        return "/template/" in "/" + self.local_path

    @property
    def text(self) -> str:
        """The prototxt as Caffe would read it (templates after gen_model.sh's substitution)."""
        if not self.is_template:
            return self.raw
        return _PLACEHOLDER.sub(lambda m: str(int(m.group(1)) * TEMPLATE_CLASSES), self.raw)

    @property
    def non_bvlc_types(self) -> list[str]:
        return [t for t in self.row["non_bvlc_layer_types"].split(",") if t]


@functools.lru_cache(maxsize=1)
def nets() -> tuple[ForkNet, ...]:
    """Every corpus net, in MANIFEST order."""
    with open(MANIFEST, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    with tarfile.open(ARCHIVE, "r:xz") as tar:
        texts = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    out = []
    for row in rows:
        data = texts[row["local_path"]]
        out.append(ForkNet(row, io.TextIOWrapper(io.BytesIO(data), encoding="utf-8",
                                                 errors="replace").read()))
    return tuple(out)


def extract(directory: str) -> str:
    """Write every net (templates substituted) under ``directory``; returns it."""
    for net in nets():
        path = os.path.join(directory, net.local_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(net.text)
    return directory

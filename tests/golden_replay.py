"""Replaying Caffe's golden cases (tests/golden, made by the original C++ Caffe) through
decaffe's pycaffe API. Tolerances are the goldens' own: forward rtol 1e-4, backward 1e-3,
relative to max(|expected|, 1)."""

from __future__ import annotations

import json
import os

import numpy as np

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
RTOL_FWD, ATOL_FWD = 1e-4, 1e-5
RTOL_BWD, ATOL_BWD = 1e-3, 1e-4


def cases(kind: str, fork: bool = False) -> list[dict]:
    """The INDEX.json cases of one kind: BVLC's by default, the forks' (`fork_*`) with fork=True."""
    with open(os.path.join(GOLDEN, "INDEX.json")) as f:
        return [c for c in json.load(f)["cases"]
                if c["kind"] == kind and c["name"].startswith("fork_") == fork]


def assert_close(got, want, rtol, atol, what: str) -> None:
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        assert got.size == want.size, f"{what}: shape {got.shape} != {want.shape}"
        got = got.reshape(want.shape)
    err = np.abs(got - want)
    bad = err > atol + rtol * np.maximum(np.abs(want), 1.0)
    assert not bad.any(), (f"{what}: max abs err {err.max():.3g} at "
                           f"{np.unravel_index(err.argmax(), err.shape)}")


def _split(z):
    out: dict[str, dict[str, np.ndarray]] = {}
    for k in z.files:
        kind, rest = k.split("/", 1)
        out.setdefault(kind, {})[rest] = z[k]
    return out


def _passes(g):
    tags = {k.split("/", 1)[0] for k in g.get("input", {}) if "/" in k}
    if tags and all(t.isdigit() for t in tags):
        return sorted(tags, key=int)
    return [None]


def _pick(d, tag):
    if tag is None:
        return dict(d)
    pre = tag + "/"
    return {k[len(pre):]: v for k, v in d.items() if k.startswith(pre)}


def replay_layer_case(caffe, name: str, phase: str) -> None:
    """Build the case's net, load its params, and check every pass as the golden recorded it."""
    g = _split(np.load(os.path.join(GOLDEN, name + ".npz")))
    net = caffe.Net(os.path.join(GOLDEN, name + ".prototxt"),
                    caffe.TEST if phase == "TEST" else caffe.TRAIN)
    for key, arr in g.get("param", {}).items():
        lname, i = key.rsplit("/", 1)
        net.params[lname][int(i)].data[...] = arr
    for tag in _passes(g):
        inputs = _pick(g["input"], tag)
        for b, arr in inputs.items():
            net.blobs[b].data[...] = arr
        net.forward()
        for b, want in _pick(g.get("output", {}), tag).items():
            if b not in inputs:
                assert_close(net.blobs[b].data, want, RTOL_FWD, ATOL_FWD,
                             f"forward {b} (pass {tag})")
        if "bottom_diff" in g or "param_diff" in g:
            for b, d in _pick(g.get("top_diff", {}), tag).items():
                net.blobs[b].diff[...] = d
            for blobs in net.params.values():
                for p in blobs:
                    p.diff[...] = 0
            net.backward()
            for b, want in _pick(g.get("bottom_diff", {}), tag).items():
                assert_close(net.blobs[b].diff, want, RTOL_BWD, ATOL_BWD,
                             f"backward {b} (pass {tag})")
            for key, want in _pick(g.get("param_diff", {}), tag).items():
                lname, i = key.rsplit("/", 1)
                assert_close(net.params[lname][int(i)].diff, want, RTOL_BWD, ATOL_BWD,
                             f"param diff {key} (pass {tag})")
        for key, want in _pick(g.get("param_after", {}), tag).items():
            lname, i = key.rsplit("/", 1)
            assert_close(net.params[lname][int(i)].data, want, RTOL_FWD, ATOL_FWD,
                         f"blob {key} after pass {tag}")

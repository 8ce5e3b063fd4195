"""Finite-difference gradient checks, in the spirit of Caffe's GradientChecker.

A net (usually one layer behind Input layers) is built in float64 with
force_backward. The objective is L = Σ_outputs Σ(top · W) with fixed random
weights W (so no gradient is trivially symmetric). Analytic gradients come
from pycaffe's backward with the outputs' diffs set to W; numeric gradients
from central differences of L. Each element must agree within
threshold · max(|analytic|, |numeric|, 1) (Caffe's step 1e-2, threshold 1e-3).
"""

from __future__ import annotations

import numpy as np
import torch

import decaffe


def _objective(net, weights: dict[str, np.ndarray], seed: int) -> float:
    torch.manual_seed(seed)
    net.forward()
    return float(sum((np.asarray(net.blobs[k].data, np.float64) * w).sum()
                     for k, w in weights.items()))


def check_gradients(prototxt: str, inputs: dict[str, np.ndarray], *, phase=decaffe.TRAIN,
                    step: float = 1e-2, threshold: float = 1e-3, check_inputs=None,
                    check_params: bool = True, params: dict | None = None,
                    seed: int = 1701, max_checks: int = 400) -> None:
    """Assert that backward agrees with finite differences for every input and parameter
    element (at most max_checks of each blob, spread evenly).

    prototxt: a net whose Input layers provide `inputs`; force_backward is set here.
    check_inputs: names of inputs to check (default: all). params: {layer: [arrays]} to load.
    """
    text = "force_backward: true\n" + prototxt
    net = decaffe.Net(text, phase, dtype=torch.float64)
    for name, arr in inputs.items():
        net.blobs[name].reshape(*np.shape(arr))
    net.reshape()
    for name, arr in inputs.items():
        net.blobs[name].data[...] = arr
    if params:
        for lname, arrs in params.items():
            for i, a in enumerate(arrs):
                net.params[lname][i].data[...] = a
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net.forward()
    weights = {k: rng.uniform(-1, 1, size=np.shape(net.blobs[k].data)) for k in net.outputs}
    # analytic
    for blobs in net.params.values():
        for b in blobs:
            b.diff[...] = 0
    for k, w in weights.items():
        net.blobs[k].diff[...] = w
    torch.manual_seed(seed)
    net.forward()
    for k, w in weights.items():
        net.blobs[k].diff[...] = w
    net.backward()
    targets = []
    names = list(inputs) if check_inputs is None else list(check_inputs)
    for name in names:
        targets.append((f"input {name}", net.blobs[name], np.array(net.blobs[name].diff)))
    if check_params:
        for lname, blobs in net.params.items():
            layer = net._layers[list(net.layer_dict).index(lname)]
            for i, b in enumerate(blobs):
                if i in layer.no_grad_blobs:
                    continue
                targets.append((f"param {lname}[{i}]", b, np.array(b.diff)))
    assert targets, "nothing to check"
    failures = []
    for label, blob, analytic in targets:
        data = blob.data
        flat = data.reshape(-1)
        idx = np.arange(flat.size)
        if flat.size > max_checks:
            idx = np.linspace(0, flat.size - 1, max_checks).astype(int)
        for i in idx:
            orig = flat[i]
            flat[i] = orig + step
            plus = _objective(net, weights, seed)
            flat[i] = orig - step
            minus = _objective(net, weights, seed)
            flat[i] = orig
            numeric = (plus - minus) / (2 * step)
            a = analytic.reshape(-1)[i]
            scale = max(abs(a), abs(numeric), 1.0)
            if abs(a - numeric) > threshold * scale:
                failures.append(f"{label} element {np.unravel_index(i, data.shape)}: "
                                f"analytic {a:.6g} vs numeric {numeric:.6g}")
    assert not failures, f"{len(failures)} gradient mismatches:\n" + "\n".join(failures[:20])

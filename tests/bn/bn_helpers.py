"""Helpers for the BatchNorm tool tests: random weights with random statistics."""

from __future__ import annotations

import numpy as np

import decaffe


def randomize(net, rng: np.random.Generator, factor: float | None = None) -> None:
    """He-scaled random weights, random biases; BatchNorm statistics as sums over a random
    scale factor (or `factor`), means around 0 and variances in [0.5, 2]; Scale γ in
    [0.5, 1.5] and β around 0."""
    for lname, blobs in net.params.items():
        kind = net.layer_dict[lname].type
        if kind == "BatchNorm":
            f = rng.uniform(1, 100) if factor is None else factor
            c = blobs[0].shape
            blobs[0].data[...] = rng.normal(0, 0.3, c) * f
            blobs[1].data[...] = rng.uniform(0.5, 2.0, c) * f
            blobs[2].data[...] = f
            continue
        for i, b in enumerate(blobs):
            if kind == "Scale" and i == 0:
                b.data[...] = rng.uniform(0.5, 1.5, b.shape)
            elif b.data.ndim > 1:
                fan_in = b.data[0].size
                b.data[...] = rng.standard_normal(b.shape) * np.sqrt(2.0 / fan_in)
            else:
                b.data[...] = rng.normal(0, 0.2, b.shape)


def make_net(text: str, seed: int = 0, factor: float | None = None):
    """A TEST-phase net from prototxt text, with random weights and statistics."""
    net = decaffe.Net(text, decaffe.TEST)
    randomize(net, np.random.default_rng(seed), factor)
    return net


def types(net) -> list[str]:
    return [layer.type for layer in net.layers]


def bn_stats(net, name: str, eps: float = 1e-5):
    """(mean, var) a global-statistics BatchNorm uses, computed in numpy from its blobs."""
    mean_sum, var_sum, factor = (np.asarray(b.data, np.float64) for b in net.params[name])
    s = 0.0 if factor[0] == 0 else 1.0 / factor[0]
    return mean_sum * s, var_sum * s

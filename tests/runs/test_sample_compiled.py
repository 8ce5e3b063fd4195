"""Under -compile the recorder's BatchNorm sample still has the batch's statistics: the
compiled graph keeps them inside, and reading a BN top the pass left unmade reruns it eagerly
(decaffe.compile), equal to an eager step's."""

from __future__ import annotations

import numpy as np
import torch

from decaffe import compile as dc
from decaffe.netspec import NetSpec
from decaffe.netspec import layers as L
from decaffe.proto import caffe_pb2
from decaffe.runs.sample import Sampler
from decaffe.solvers import SGDSolver

BATCH = 5


def _solver(compiled: bool) -> SGDSolver:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[BATCH, 2, 5, 5]))
    n.label = L.Input(shape=dict(dim=[BATCH]))
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=3, pad=1,
                           weight_filler=dict(type="xavier"))
    n.bn = L.BatchNorm(n.conv, in_place=True)
    n.scale = L.Scale(n.conv, bias_term=True, in_place=True)
    n.ip = L.InnerProduct(n.conv, num_output=2, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    sp = caffe_pb2.SolverParameter()
    sp.net_param.CopyFrom(n.to_proto())
    sp.base_lr, sp.lr_policy, sp.max_iter, sp.display = 0.1, "fixed", 10, 0
    torch.manual_seed(0)
    solver = SGDSolver(sp)
    rng = np.random.default_rng(0)
    solver.net.blobs["data"].data[...] = rng.normal(2.0, 3.0, (BATCH, 2, 5, 5))
    solver.net.blobs["label"].data[...] = rng.integers(0, 2, BATCH)
    if compiled:
        # dynamo's graph with the eager backend: the same outputs, no C compiler needed
        assert dc.compile_net(solver.net, backend="eager")
    return solver


def _bn_sample(solver: SGDSolver) -> dict[str, np.ndarray]:
    sampler = Sampler(solver.net)
    values, layout = sampler.bn_values()
    flat = torch.cat([v.reshape(-1) for v in values]).numpy()
    out, at = {}, 0
    for _, keys in layout:
        for key, n in keys:
            out[key] = flat[at:at + n]
            at += n
    return out


def test_compiled_run_samples_the_batch_statistics_as_eager():
    eager, compiled = _solver(False), _solver(True)
    for _ in range(2):
        eager.step(1)
        compiled.step(1)
    assert compiled.net.blobs["conv"]._lazy is not None  # the pass left the BN top unmade
    want, got = _bn_sample(eager), _bn_sample(compiled)
    assert "batch_mean" in got and "batch_var" in got
    for key in ("batch_mean", "batch_var", "mean", "var"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)
    # the batch mean of a step, not the running average: the input's mean is about 2·weights
    assert not np.allclose(got["batch_mean"], got["mean"])
